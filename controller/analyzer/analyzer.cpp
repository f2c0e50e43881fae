#include "controller/analyzer/analyzer.hpp"

#include "controller/analyzer/checkpoint_codec.hpp"
#include "controller/analyzer/flat_map.hpp"
#include "policies/net_address.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <deque>
#include <functional>
#include <limits>
#include <tuple>

namespace bulkhead::analyzer {

namespace {

constexpr std::int64_t kSecond = 1'000'000'000;
constexpr std::int64_t kNever = std::numeric_limits<std::int64_t>::min();
constexpr std::uint32_t kNone = ~std::uint32_t{0};
constexpr std::size_t kSamples = 10;
// Interned addresses and names are collected once their count grew by a quarter since the
// last collection, and never below this count (a collection walks every source and, for
// addresses, every window: a quarter's growth pays for it many times over).
constexpr std::size_t kCollectFloor = 4'096;
std::size_t next_collection(std::size_t live) {
    return std::max(kCollectFloor, live + live / 4);
}

enum Flag : std::uint32_t { FlagUser = 1, FlagAdmin = 2, FlagVdi = 4, FlagDecoy = 8, FlagIgnored = 16 };

std::int64_t seconds(std::uint32_t s) {
    return static_cast<std::int64_t>(s) * kSecond;
}

// Strings to dense integer ids: open addressing over (hash, id) slots, names in a deque
// (stable: views into them survive later interning). One probe run per lookup, usually one
// cache line, instead of a node-based map's pointer chase. Ids of erased names are reused
// (last erased first), so the id space stays as large as the most names ever held at once.
class Interner {
  public:
    std::uint32_t intern(std::string_view text, bool& fresh) {
        if ((live_ + 1) * 4 > slots_.size() * 3) {
            grow();
        }
        const std::uint64_t h = std::hash<std::string_view>{}(text);
        std::size_t i = static_cast<std::size_t>(h) & mask_;
        for (;; i = (i + 1) & mask_) {
            const auto& slot = slots_[i];
            if (slot.id == kNone) {
                break;
            }
            if (slot.hash == h && names_[slot.id] == text) {
                fresh = false;
                return slot.id;
            }
        }
        fresh = true;
        return insert(i, h, text);
    }
    std::uint32_t intern(std::string_view text) {
        bool fresh = false;
        return intern(text, fresh);
    }
    std::uint32_t find(std::string_view text) const {
        if (slots_.empty()) {
            return kNone;
        }
        const std::uint64_t h = std::hash<std::string_view>{}(text);
        for (std::size_t i = static_cast<std::size_t>(h) & mask_;; i = (i + 1) & mask_) {
            const auto& slot = slots_[i];
            if (slot.id == kNone) {
                return kNone;
            }
            if (slot.hash == h && names_[slot.id] == text) {
                return slot.id;
            }
        }
    }
    // Forgets `id` (which must be held); the id is handed out again later.
    void erase(std::uint32_t id) {
        const std::uint64_t h = std::hash<std::string_view>{}(names_[id]);
        std::size_t i = static_cast<std::size_t>(h) & mask_;
        while (slots_[i].id != id) {
            i = (i + 1) & mask_;
        }
        // Backward shift, as in FlatMap: no tombstones.
        std::size_t j = i;
        for (;;) {
            j = (j + 1) & mask_;
            if (slots_[j].id == kNone) {
                break;
            }
            const std::size_t k = static_cast<std::size_t>(slots_[j].hash) & mask_;
            const bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
            if (stays) {
                continue;
            }
            slots_[i] = slots_[j];
            i = j;
        }
        slots_[i] = Slot{};
        std::string().swap(names_[id]);
        used_[id] = false;
        free_ids_.push_back(id);
        --live_;
    }
    std::string_view name(std::uint32_t id) const { return names_[id]; }
    bool holds(std::uint32_t id) const { return id < used_.size() && used_[id]; }
    std::size_t size() const { return names_.size(); } // ids handed out so far (bound of ids)
    std::size_t live() const { return live_; }
    std::size_t memory_bytes() const {
        std::size_t bytes = slots_.capacity() * sizeof(Slot) + names_.size() * sizeof(std::string) +
                            used_.capacity() / 8 + free_ids_.capacity() * sizeof(std::uint32_t);
        for (const auto& name : names_) {
            bytes += name.capacity() > 15 ? name.capacity() + 1 : 0;
        }
        return bytes;
    }

    // Checkpoint: every id's name (empty when free) and the free list in its order, so
    // restored ids, and the ids handed out next, are those the saved engine would use.
    void save(detail::CheckpointWriter& w) const {
        w.u(names_.size());
        for (std::size_t id = 0; id < names_.size(); ++id) {
            w.u(used_[id] ? 1 : 0);
            if (used_[id]) {
                w.str(names_[id]);
            }
        }
        w.u(free_ids_.size());
        for (const auto id : free_ids_) {
            w.u(id);
        }
    }
    bool restore(detail::CheckpointReader& r) {
        const auto n = r.count(1);
        for (std::size_t id = 0; id < n && r.ok(); ++id) {
            const bool used = r.flag();
            names_.emplace_back(used ? r.str() : std::string());
            used_.push_back(used);
            if (used) {
                bool fresh = false;
                if (intern_at(static_cast<std::uint32_t>(id), fresh); !fresh) {
                    r.invalid("a name is interned twice");
                }
            }
        }
        const auto free = r.count(1);
        std::vector<bool> listed(names_.size(), false);
        for (std::size_t k = 0; k < free && r.ok(); ++k) {
            const auto id = r.u32();
            if (id >= names_.size() || used_[id] || listed[id]) {
                r.invalid("bad free id");
                break;
            }
            listed[id] = true;
            free_ids_.push_back(id);
        }
        if (r.ok() && live_ + free_ids_.size() != names_.size()) {
            r.invalid("free ids do not add up");
        }
        return r.ok();
    }

  private:
    struct Slot {
        std::uint64_t hash = 0;
        std::uint32_t id = kNone;
    };
    // A new name into empty slot `i` (out of line: the per-event lookup stays small).
    [[gnu::noinline]] std::uint32_t insert(std::size_t i, std::uint64_t h, std::string_view text) {
        std::uint32_t id = 0;
        if (!free_ids_.empty()) {
            id = free_ids_.back();
            free_ids_.pop_back();
            names_[id] = text;
            used_[id] = true;
        } else {
            id = static_cast<std::uint32_t>(names_.size());
            names_.emplace_back(text);
            used_.push_back(true);
        }
        slots_[i] = Slot{h, id};
        ++live_;
        return id;
    }
    // Restore: indexes names_[id] (already stored) under its own id.
    void intern_at(std::uint32_t id, bool& fresh) {
        if ((live_ + 1) * 4 > slots_.size() * 3) {
            grow();
        }
        const std::uint64_t h = std::hash<std::string_view>{}(names_[id]);
        std::size_t i = static_cast<std::size_t>(h) & mask_;
        for (; slots_[i].id != kNone; i = (i + 1) & mask_) {
            if (slots_[i].hash == h && names_[slots_[i].id] == names_[id]) {
                fresh = false;
                return;
            }
        }
        slots_[i] = Slot{h, id};
        ++live_;
        fresh = true;
    }
    void grow() {
        std::vector<Slot> bigger(slots_.empty() ? 64 : slots_.size() * 2);
        const std::size_t mask = bigger.size() - 1;
        for (const auto& slot : slots_) {
            if (slot.id == kNone) {
                continue;
            }
            std::size_t i = static_cast<std::size_t>(slot.hash) & mask;
            while (bigger[i].id != kNone) {
                i = (i + 1) & mask;
            }
            bigger[i] = slot;
        }
        slots_.swap(bigger);
        mask_ = mask;
    }
    std::vector<Slot> slots_;
    std::size_t mask_ = 0;
    std::deque<std::string> names_;
    std::vector<bool> used_;
    std::vector<std::uint32_t> free_ids_;
    std::size_t live_ = 0;
};

// A target: destination address id, protocol, port, packed into one key.
std::uint64_t target_key(std::uint32_t host, std::uint8_t protocol, std::uint16_t port) {
    return (static_cast<std::uint64_t>(host) << 24) | (static_cast<std::uint64_t>(protocol) << 16) |
           port;
}
std::uint32_t key_host(std::uint64_t key) {
    return static_cast<std::uint32_t>(key >> 24);
}
std::uint32_t key_protoport(std::uint64_t key) {
    return static_cast<std::uint32_t>(key & 0xFFFFFF);
}
std::uint8_t protoport_protocol(std::uint32_t pp) {
    return static_cast<std::uint8_t>(pp >> 16);
}
std::uint16_t protoport_port(std::uint32_t pp) {
    return static_cast<std::uint16_t>(pp & 0xFFFF);
}

std::string protocol_text(std::uint8_t protocol) {
    const auto name = policy::ip_protocol_name(protocol);
    return name.empty() ? "proto " + std::to_string(protocol) : std::string(name);
}
bool has_ports(std::uint8_t protocol) {
    return protocol == 6 || protocol == 17 || protocol == 33 || protocol == 132 || protocol == 136;
}
std::string protoport_text(std::uint32_t pp) {
    const auto protocol = protoport_protocol(pp);
    if (!has_ports(protocol)) {
        return protocol_text(protocol);
    }
    return protocol_text(protocol) + "/" + std::to_string(protoport_port(pp));
}

Severity bump(Severity severity, int levels) {
    const int value =
        std::min(static_cast<int>(severity) + levels, static_cast<int>(Severity::Critical));
    return static_cast<Severity>(value);
}

// Distinct (host, protocol, port) targets of one source in a sliding window. Each target
// holds the time it was last pushed on the FIFO; a repeat is pushed again only when it is
// `resolution` (window/16) newer, so a storm on one target costs at most 16 FIFO entries
// per window. A target may thus leave the window up to window/16 early: counts err low,
// never high (no false positives from retries).
struct PairEntry {
    std::int64_t first_ns = 0;
    std::int64_t pushed_ns = 0;
};
struct Window {
    detail::FlatMap<PairEntry> pairs;
    detail::FlatMap<std::uint32_t> hosts; // host -> live pairs
    detail::FlatMap<std::uint32_t> ports; // protocol/port -> live pairs
    detail::Ring<std::pair<std::int64_t, std::uint64_t>> fifo;
    std::size_t multi_port_hosts = 0; // hosts tried on two ports or more

    void expire(std::int64_t now, std::int64_t window) {
        while (!fifo.empty() && fifo.front().first <= now - window) {
            const auto [t, key] = fifo.front();
            fifo.pop_front();
            auto* entry = pairs.find(key);
            if (entry == nullptr || entry->pushed_ns != t) {
                continue; // pushed again later
            }
            pairs.erase(key);
            if (auto* n = hosts.find(key_host(key)); n != nullptr && *n == 2) {
                --multi_port_hosts;
            }
            release(hosts, key_host(key));
            release(ports, key_protoport(key));
        }
    }
    static void release(detail::FlatMap<std::uint32_t>& map, std::uint64_t key) {
        if (auto* n = map.find(key); n != nullptr && --*n == 0) {
            map.erase(key);
        }
    }
    // True when `key` is new in the window.
    bool add(std::uint64_t key, std::int64_t t, std::int64_t window, std::size_t cap,
             bool& saturated) {
        expire(t, window);
        const std::int64_t resolution = std::max<std::int64_t>(window / 16, 1);
        if (auto* entry = pairs.find(key)) {
            // Re-pushes are also capped (4 per held target on average), so a storm over
            // many targets bounds the FIFO too; a target denied its re-push may leave
            // early, which again errs low.
            if (t - entry->pushed_ns >= resolution && fifo.size() < 4 * cap) {
                entry->pushed_ns = t;
                fifo.push_back({t, key});
            }
            return false;
        }
        if (pairs.size() >= cap) {
            saturated = true;
            return false;
        }
        bool inserted = false;
        pairs.get_or_insert(key, inserted) = PairEntry{t, t};
        fifo.push_back({t, key});
        if (++hosts.get_or_insert(key_host(key), inserted) == 2) {
            ++multi_port_hosts;
        }
        ++ports.get_or_insert(key_protoport(key), inserted);
        return true;
    }
    void reset() {
        pairs.clear_and_release();
        hosts.clear_and_release();
        ports.clear_and_release();
        fifo.release();
        multi_port_hosts = 0;
    }
    bool empty() const { return pairs.empty(); }
    std::size_t memory_bytes() const {
        return pairs.memory_bytes() + hosts.memory_bytes() + ports.memory_bytes() +
               fifo.memory_bytes();
    }
    template <class F> void for_each_key(F&& f) const {
        pairs.for_each([&](std::uint64_t key, const PairEntry&) { f(key); });
        fifo.for_each([&](const std::pair<std::int64_t, std::uint64_t>& e) { f(e.second); });
    }

    // Checkpoint: the targets and the FIFO; the per-host and per-port counts follow from
    // the targets and are rebuilt (they cannot disagree with them after a restore). Times
    // are written relative to `base` (the engine's clock) and to each other: a few bytes
    // each instead of nine.
    void save(detail::CheckpointWriter& w, std::int64_t base) const {
        w.u(pairs.size());
        pairs.for_each([&](std::uint64_t key, const PairEntry& e) {
            w.u(key);
            w.i(base - e.first_ns);
            w.i(e.pushed_ns - e.first_ns);
        });
        w.u(fifo.size());
        std::int64_t previous = base;
        fifo.for_each([&](const std::pair<std::int64_t, std::uint64_t>& e) {
            w.i(e.first - previous);
            previous = e.first;
            w.u(e.second);
        });
    }
    // `valid_key` says whether a target key refers to a held address.
    template <class Valid>
    void restore(detail::CheckpointReader& r, std::int64_t base, Valid&& valid_key) {
        const auto n = r.count(3);
        for (std::size_t k = 0; k < n && r.ok(); ++k) {
            const auto key = r.u();
            const auto first = static_cast<std::int64_t>(static_cast<std::uint64_t>(base) - static_cast<std::uint64_t>(r.i()));
            const auto pushed = static_cast<std::int64_t>(static_cast<std::uint64_t>(first) + static_cast<std::uint64_t>(r.i()));
            bool inserted = false;
            if (!valid_key(key)) {
                return r.invalid("a window's target refers to an unknown address");
            }
            pairs.get_or_insert(key, inserted) = PairEntry{first, pushed};
            if (!inserted) {
                return r.invalid("a window holds a target twice");
            }
            if (++hosts.get_or_insert(key_host(key), inserted) == 2) {
                ++multi_port_hosts;
            }
            ++ports.get_or_insert(key_protoport(key), inserted);
        }
        const auto queued = r.count(2);
        std::int64_t previous = base;
        for (std::size_t k = 0; k < queued && r.ok(); ++k) {
            const auto t = static_cast<std::int64_t>(static_cast<std::uint64_t>(previous) + static_cast<std::uint64_t>(r.i()));
            previous = t;
            const auto key = r.u();
            if (!valid_key(key)) {
                return r.invalid("a window's queue refers to an unknown address");
            }
            fifo.push_back({t, key});
        }
    }
};

constexpr std::size_t kBeaconRing = 16;
static_assert((kBeaconRing & (kBeaconRing - 1)) == 0, "the ring is indexed with a mask");
struct BeaconState {
    std::int64_t first_ns = 0;
    std::int64_t attempt_ns = 0; // start of the last attempt
    std::int64_t last_ns = 0;    // last drop
    std::uint32_t attempts = 0;
    std::uint8_t filled = 0;
    std::uint8_t head = 0;
    // Tenths of a second (a 16-bit count reaches 109 min, beyond max_interval's default): 16
    // intervals in 32 bytes keep a series in one cache line with its times.
    std::array<std::uint16_t, kBeaconRing> intervals{};
};

// (Hot members first, the bookkeeping of identity reuse last: the per-event path reads the
// first cache line.)
struct SourceState {
    bool used = false;   // this id holds a source identity (else it is free for reuse)
    bool active = false; // windows live (not idle)
    std::uint32_t enforcer = kNone, workload = kNone, port = kNone, mac = kNone, address = kNone,
                  user = kNone;
    std::uint32_t flags = 0;
    std::vector<std::uint32_t> segments;
    std::int64_t last_ns = kNever;
    std::int64_t last_fast_scan_ns = kNever; // a sweep, vertical or box scan fired
    Window scan, lateral; // the slow-scan window lives apart (Impl::slow): rarely touched
    detail::FlatMap<BeaconState> beacons;
    std::array<std::int64_t, rule_count> quiet_until{};
    std::int64_t incident = -1; // slot in Impl::incidents of its open incident
    // Bumped each time the id is handed to another identity: fan-in entries and incidents
    // that name the id by number tell the old identity from the new one.
    std::uint32_t generation = 0;
    std::uint64_t key_hash = 0; // identity key's FNV-1a: the repeat-offender record's key
};

struct DestInfo {
    std::uint32_t flags = 0;
    std::uint32_t workload = kNone; // strings_ id
};

struct FanSource {
    std::int64_t first_ns = 0;
    std::int64_t pushed_ns = 0;
    std::int64_t last_ns = 0;
    std::uint32_t attempts = 0;
    std::uint32_t generation = 0; // SourceState::generation when recorded
};
struct TargetState {
    bool active = false;
    std::uint64_t key = 0;
    detail::FlatMap<FanSource> sources;
    detail::Ring<std::pair<std::int64_t, std::uint64_t>> fifo;
    std::int64_t last_ns = kNever;
    std::int64_t quiet_until = kNever;
};

struct IncidentAux {
    Severity max_finding = Severity::Low;
    std::uint32_t detector_kinds = 0; // bit per detector name
    std::uint64_t target_key = 0;     // about_target
    std::uint32_t source = kNone;     // source id
    std::uint32_t source_generation = 0;
};

// The Totals members that are counters (the gauges are computed), for the checkpoint.
template <class T> auto counters(T& t) {
    static_assert(std::is_same_v<std::size_t, std::uint64_t>, "Totals::sources is a size_t");
    return std::array{&t.observations, &t.findings, &t.suppressed, &t.exempted, &t.saturated,
                      &t.ignored, &t.incidents, &t.sources, &t.released_sources, &t.evicted_sources,
                      &t.released_incidents, &t.evicted_incidents,
                      &t.expired_repeat_offender_records, &t.evicted_repeat_offender_records};
}

std::uint32_t detector_bit(Rule rule) {
    switch (rule) {
    case Rule::Decoy:
    case Rule::UserToAdmin:
    case Rule::VdiFileSharing:
        return 1u << 4;
    case Rule::DistinctTargets:
        // The policy's catch-all rule fires beside whichever scan shape crossed it; it does
        // not count as a second detector (that would escalate every scan).
        return 0;
    default:
        return 1u << static_cast<unsigned>(rule);
    }
}

} // namespace

// ------------------------------------------------------------------ names ---------------

std::string_view to_string(DropReason reason) {
    switch (reason) {
    case DropReason::Default:
        return "default";
    case DropReason::Deny:
        return "deny";
    case DropReason::Decoy:
        return "decoy";
    case DropReason::Quarantine:
        return "quarantine";
    }
    return "?";
}

std::optional<DropReason> drop_reason_from_string(std::string_view text) {
    for (auto r :
         {DropReason::Default, DropReason::Deny, DropReason::Decoy, DropReason::Quarantine}) {
        if (to_string(r) == text) {
            return r;
        }
    }
    return std::nullopt;
}

std::string_view detector_name(Rule rule) {
    switch (rule) {
    case Rule::HostSweep:
        return "host-sweep";
    case Rule::VerticalScan:
        return "port-scan-vertical";
    case Rule::BoxScan:
        return "port-scan-box";
    case Rule::LateralMovement:
        return "lateral-movement";
    case Rule::Decoy:
    case Rule::UserToAdmin:
    case Rule::VdiFileSharing:
        return "forbidden-zone";
    case Rule::Beaconing:
        return "beaconing";
    case Rule::FanIn:
        return "fan-in";
    case Rule::SlowScan:
        return "slow-scan";
    case Rule::DistinctTargets:
        return "distinct-targets";
    }
    return "?";
}

std::optional<Rule> rule_from_name(std::string_view name) {
    for (std::size_t r = 0; r < rule_count; ++r) {
        if (rule_name(static_cast<Rule>(r)) == name) {
            return static_cast<Rule>(r);
        }
    }
    return std::nullopt;
}

std::string_view rule_name(Rule rule) {
    switch (rule) {
    case Rule::Decoy:
        return "decoy";
    case Rule::UserToAdmin:
        return "user-to-admin";
    case Rule::VdiFileSharing:
        return "vdi-file-sharing";
    default:
        return detector_name(rule);
    }
}

std::vector<std::string> default_ignored_destinations() {
    return {"255.255.255.255/32", "224.0.0.0/4", "ff00::/8"};
}

std::vector<LateralService> default_lateral_services() {
    return {{"SMB", 6, 445},     {"NetBIOS", 6, 139}, {"RDP", 6, 3389},  {"RDP", 17, 3389},
            {"WinRM", 6, 5985},  {"WinRM", 6, 5986},  {"SSH", 6, 22},    {"RPC", 6, 135},
            {"LDAP", 6, 389},    {"LDAP", 17, 389},   {"LDAPS", 6, 636}, {"LDAP-GC", 6, 3268},
            {"LDAP-GC", 6, 3269}};
}

std::string format_duration(std::int64_t ns) {
    ns = std::max<std::int64_t>(ns, 0);
    char text[64];
    if (ns < kSecond) {
        std::snprintf(text, sizeof text, "%lld ms", static_cast<long long>(ns / 1'000'000));
    } else if (ns < 10 * kSecond) {
        std::snprintf(text, sizeof text, "%.1f s", static_cast<double>(ns) / 1e9);
    } else {
        const long long s = (ns + kSecond / 2) / kSecond;
        if (s < 120) {
            std::snprintf(text, sizeof text, "%lld s", s);
        } else if (s < 7200) {
            if (s % 60 == 0) {
                std::snprintf(text, sizeof text, "%lld min", s / 60);
            } else {
                std::snprintf(text, sizeof text, "%lld min %lld s", s / 60, s % 60);
            }
        } else {
            std::snprintf(text, sizeof text, "%lld h %lld min", s / 3600, (s % 3600) / 60);
        }
    }
    return text;
}

// ------------------------------------------------------------------ engine --------------

struct Analyzer::Impl {
    AnalyzerConfig config;
    Interner source_ids; // identity keys -> dense source ids
    Interner addresses;  // destination addresses -> dense host ids
    Interner strings;    // names, users, segments
    std::vector<SourceState> sources;
    std::vector<Window> slow; // per source id: the slow-scan window
    std::vector<DestInfo> destinations;
    detail::FlatMap<std::uint32_t> target_index; // target key -> index into targets
    std::vector<TargetState> targets;
    std::vector<std::uint32_t> free_targets;
    detail::FlatMap<std::int64_t> target_incident; // target key -> incident slot
    // Incidents in memory, in slots reused once an incident leaves (aux beside each).
    std::vector<Incident> incidents;
    std::vector<IncidentAux> aux;
    std::vector<std::uint32_t> free_incident_slots;
    detail::FlatMap<std::uint32_t> incident_slot; // incident id -> slot
    std::vector<std::size_t> open_incidents;      // slots
    detail::Ring<std::uint64_t> resolved_ids;     // resolved ids in memory, oldest first
    std::uint64_t next_incident_id = 1;
    // Repeat-offender memory that outlives sources and incidents: identity key hash ->
    // time of the last resolve.
    detail::FlatMap<std::int64_t> resolved_at;
    // Interned addresses and strings are collected (unreferenced ones forgotten) when
    // their count reaches these marks (next_collection).
    std::size_t address_collect_at = kCollectFloor;
    std::size_t string_collect_at = kCollectFloor;
    std::vector<Finding> emitted;
    std::vector<std::uint8_t> lateral_index; // (protocol class, port) -> service + 1
    std::vector<std::uint32_t> user_segments, admin_segments, vdi_segments;
    std::vector<std::uint32_t> exemption_segments; // per exemption, strings id or kNone
    std::vector<policy::IpRange> ignored_ranges;
    std::string key_buffer;
    std::int64_t now = kNever;
    std::int64_t last_sweep = kNever;
    std::uint64_t last_incident = 0;
    std::size_t active_sources = 0;
    std::size_t active_targets = 0;
    Totals totals;

    explicit Impl(AnalyzerConfig c) : config(std::move(c)) { derive(); }
    struct Blank {};
    // For restore_state: empty interners, derive() once the state is in.
    Impl(AnalyzerConfig c, Blank) : config(std::move(c)) {}

    // What the configuration implies: the lateral service table, segment ids, decoys.
    void derive() {
        lateral_index.assign(3 * 65536, 0);
        user_segments.clear();
        admin_segments.clear();
        vdi_segments.clear();
        exemption_segments.clear();
        for (std::size_t i = 0; i < config.lateral.services.size() && i < 255; ++i) {
            const auto& s = config.lateral.services[i];
            if (auto cls = protocol_class(s.protocol); cls >= 0) {
                lateral_index[static_cast<std::size_t>(cls) * 65536 + s.port] =
                    static_cast<std::uint8_t>(i + 1);
            }
        }
        for (const auto& s : config.user_segments)
            user_segments.push_back(strings.intern(s));
        for (const auto& s : config.admin_segments)
            admin_segments.push_back(strings.intern(s));
        for (const auto& s : config.vdi_segments)
            vdi_segments.push_back(strings.intern(s));
        for (const auto& a : config.forbidden.decoy_addresses) {
            bool fresh = false;
            const auto id = addresses.intern(a, fresh);
            ensure_destination(id).flags |= FlagDecoy;
        }
        for (const auto& e : config.exemptions) {
            exemption_segments.push_back(e.segment.empty() ? kNone : strings.intern(e.segment));
        }
        ignored_ranges.clear();
        for (const auto& text : config.ignored_destinations) {
            if (auto range = policy::parse_cidr(text)) {
                ignored_ranges.push_back(*range);
            }
        }
        // Destinations already seen are judged again against the new list.
        for (std::uint32_t id = 0; id < destinations.size() && id < addresses.size(); ++id) {
            destinations[id].flags &= ~static_cast<std::uint32_t>(FlagIgnored);
            if (ignored(addresses.name(id))) {
                destinations[id].flags |= FlagIgnored;
            }
        }
    }

    bool ignored(std::string_view address) const {
        if (ignored_ranges.empty()) {
            return false;
        }
        auto parsed = policy::parse_ip_address(address);
        return parsed && std::any_of(ignored_ranges.begin(), ignored_ranges.end(),
                                     [&](const policy::IpRange& r) { return r.contains(*parsed); });
    }

    // The source of an incident, if that identity is still the one in memory.
    SourceState* source_of_incident(std::size_t index) {
        const auto& a = aux[index];
        if (a.source >= sources.size() || !sources[a.source].used ||
            sources[a.source].generation != a.source_generation) {
            return nullptr;
        }
        return &sources[a.source];
    }

    void rearm(std::size_t index) {
        auto* source = source_of_incident(index);
        if (source == nullptr) {
            return;
        }
        auto& s = *source;
        s.quiet_until.fill(kNever);
        s.last_fast_scan_ns = kNever;
        s.scan.reset();
        s.lateral.reset();
        slow[aux[index].source].reset();
        s.beacons.clear_and_release();
    }

    static int protocol_class(std::uint8_t protocol) {
        return protocol == 6 ? 0 : protocol == 17 ? 1 : protocol == 132 ? 2 : -1;
    }
    const LateralService* lateral_service(std::uint8_t protocol, std::uint16_t port) const {
        const int cls = protocol_class(protocol);
        if (cls < 0) {
            return nullptr;
        }
        const auto index = lateral_index[static_cast<std::size_t>(cls) * 65536 + port];
        return index == 0 ? nullptr : &config.lateral.services[index - 1];
    }
    bool is_lateral(std::uint32_t pp) const {
        return lateral_service(protoport_protocol(pp), protoport_port(pp)) != nullptr;
    }

    DestInfo& ensure_destination(std::uint32_t id) {
        if (id >= destinations.size()) {
            destinations.resize(id + 1);
        }
        return destinations[id];
    }

    std::uint32_t segment_flags(std::span<const std::string> segments,
                                std::vector<std::uint32_t>* ids) {
        std::uint32_t flags = 0;
        for (const auto& s : segments) {
            const auto id = ids != nullptr ? strings.intern(s) : strings.find(s);
            if (ids != nullptr) {
                ids->push_back(id);
            }
            if (id == kNone) {
                continue;
            }
            if (std::find(user_segments.begin(), user_segments.end(), id) != user_segments.end())
                flags |= FlagUser;
            if (std::find(admin_segments.begin(), admin_segments.end(), id) != admin_segments.end())
                flags |= FlagAdmin;
            if (std::find(vdi_segments.begin(), vdi_segments.end(), id) != vdi_segments.end())
                flags |= FlagVdi;
        }
        return flags;
    }

    // ---- identity ----

    std::uint32_t source_of(const Observation& o) {
        auto& k = key_buffer;
        k.clear();
        k.append(o.source.enforcer);
        k.push_back('\x1f');
        if (!o.source.workload.empty()) {
            k.append(o.source.workload);
        } else {
            k.push_back('\x1f');
            k.append(o.source.port);
            k.push_back('\x1f');
            k.append(o.source.address);
        }
        bool fresh = false;
        const auto id = source_ids.intern(k, fresh);
        if (fresh) {
            if (id == sources.size()) {
                sources.emplace_back();
                slow.emplace_back();
            }
            auto& slot = sources[id]; // new, or reset by release_source
            slot.used = true;
            slot.key_hash = record_key(k);
            slot.quiet_until.fill(kNever);
            ++totals.sources;
            if (source_ids.live() > config.limits.max_sources) {
                evict_sources(id);
            }
        }
        auto& s = sources[id];
        if (!s.active) {
            s.active = true;
            ++active_sources;
            s.enforcer = strings.intern(o.source.enforcer);
            s.workload = strings.intern(o.source.workload);
            s.port = strings.intern(o.source.port);
            s.mac = strings.intern(o.source.mac);
            s.address = strings.intern(o.source.address);
            s.user = strings.intern(o.user);
            s.segments.clear();
            s.flags = segment_flags(o.source_segments, &s.segments);
        }
        return id;
    }

    // Never ~0 (FlatMap's empty key).
    static std::uint64_t record_key(std::string_view identity_key) {
        const auto h = detail::fnv1a64(identity_key);
        return h == detail::FlatMap<std::int64_t>::empty_key ? h - 1 : h;
    }

    // The source leaves memory; its id goes back to the interner for reuse.
    void release_source(std::uint32_t id) {
        auto& s = sources[id];
        if (s.active) {
            --active_sources;
        }
        const auto generation = s.generation + 1;
        s = SourceState{};
        s.generation = generation;
        slow[id].reset();
        source_ids.erase(id);
    }

    // Above max_sources: the least recently seen sources without an open incident leave, a
    // sixteenth of the cap at once so the selection's cost spreads over many new sources.
    void evict_sources(std::uint32_t keep) {
        std::vector<std::pair<std::int64_t, std::uint32_t>> candidates;
        for (std::uint32_t i = 0; i < sources.size(); ++i) {
            if (sources[i].used && i != keep && sources[i].incident < 0) {
                candidates.emplace_back(sources[i].last_ns, i);
            }
        }
        const std::size_t target = config.limits.max_sources - config.limits.max_sources / 16;
        const std::size_t excess = source_ids.live() > target ? source_ids.live() - target : 0;
        const std::size_t n = std::min(std::max<std::size_t>(excess, 1), candidates.size());
        std::nth_element(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(n),
                         candidates.end());
        for (std::size_t k = 0; k < n; ++k) {
            release_source(candidates[k].second);
            ++totals.evicted_sources;
        }
    }

    std::string who(const SourceState& s) const {
        std::string text;
        if (!strings.name(s.workload).empty()) {
            text = std::string(strings.name(s.workload));
        } else {
            text = std::string(strings.name(s.address)) + " (unattributed, " +
                   std::string(strings.name(s.enforcer));
            if (!strings.name(s.port).empty()) {
                text += "/" + std::string(strings.name(s.port));
            }
            text += ")";
        }
        if (!strings.name(s.user).empty()) {
            text += " (user " + std::string(strings.name(s.user)) + ")";
        }
        return text;
    }

    std::string target_text(std::uint64_t key) const {
        const auto pp = key_protoport(key);
        const auto protocol = protoport_protocol(pp);
        std::string text =
            std::string(addresses.name(key_host(key))) + " " + protocol_text(protocol);
        if (has_ports(protocol)) {
            text += "/" + std::to_string(protoport_port(pp));
        }
        return text;
    }

    std::string host_text(std::uint32_t host) const {
        const auto& d = destinations[host];
        if (d.workload != kNone && !strings.name(d.workload).empty()) {
            return std::string(strings.name(d.workload)) + " (" +
                   std::string(addresses.name(host)) + ")";
        }
        return std::string(addresses.name(host));
    }

    // ---- correlator ----

    bool exempt(const SourceState& s, std::int64_t t) const {
        for (std::size_t i = 0; i < config.exemptions.size(); ++i) {
            const auto& e = config.exemptions[i];
            if (t >= e.expires_ns) {
                continue;
            }
            if (!e.workload.empty()) {
                if (e.workload == strings.name(s.workload) &&
                    (e.enforcer.empty() || e.enforcer == strings.name(s.enforcer))) {
                    return true;
                }
            } else if (exemption_segments[i] != kNone &&
                       std::find(s.segments.begin(), s.segments.end(), exemption_segments[i]) !=
                           s.segments.end()) {
                return true;
            }
        }
        return false;
    }

    // Storm suppression and exemptions, before any finding is built. True: build and fire.
    bool may_fire(SourceState& s, Rule rule, std::int64_t t, std::int64_t quiet_ns) {
        auto& quiet = s.quiet_until[static_cast<std::size_t>(rule)];
        if (t < quiet) {
            ++totals.suppressed;
            if (s.incident >= 0) {
                ++incidents[static_cast<std::size_t>(s.incident)]
                      .suppressed[static_cast<std::size_t>(rule)];
            }
            return false;
        }
        // An exempted crossing leaves no quiet period behind: once the exemption ends or is
        // withdrawn, the next crossing fires.
        if (exempt(s, t)) {
            ++totals.exempted;
            return false;
        }
        quiet = t + quiet_ns;
        return true;
    }

    void escalate(Incident& incident, IncidentAux& a, const Finding& f) {
        a.max_finding = std::max(a.max_finding, f.severity);
        a.detector_kinds |= detector_bit(f.rule);
        int levels = 0;
        if (config.correlator.escalate_multiple_detectors && std::popcount(a.detector_kinds) >= 2) {
            ++levels;
        }
        if (incident.repeat_offender) {
            ++levels;
        }
        incident.severity = std::max(incident.severity, bump(a.max_finding, levels));
    }

    std::size_t open_incident(std::int64_t t) {
        if (open_incidents.size() >= std::max<std::uint32_t>(config.limits.max_open_incidents, 1)) {
            evict_open_incident();
        }
        std::size_t index = 0;
        if (!free_incident_slots.empty()) {
            index = free_incident_slots.back();
            free_incident_slots.pop_back();
        } else {
            index = incidents.size();
            incidents.emplace_back();
            aux.emplace_back();
        }
        auto& incident = incidents[index];
        incident.id = next_incident_id++;
        incident.opened_ns = t;
        incident.last_ns = t;
        bool inserted = false;
        incident_slot.get_or_insert(incident.id, inserted) = static_cast<std::uint32_t>(index);
        open_incidents.push_back(index);
        ++totals.incidents;
        return index;
    }

    std::size_t slot_of(std::uint64_t id) const {
        const auto* slot = incident_slot.find(id);
        return slot == nullptr ? kNone : *slot;
    }

    // The incident leaves memory (its slot is reused).
    void release_incident(std::size_t index) {
        incident_slot.erase(incidents[index].id);
        incidents[index] = Incident{};
        aux[index] = IncidentAux{};
        free_incident_slots.push_back(static_cast<std::uint32_t>(index));
    }

    // At max_open_incidents: the open incident quiet the longest leaves memory unresolved;
    // its subject is unlinked, so a new finding opens a new incident.
    void evict_open_incident() {
        auto oldest = open_incidents.begin();
        for (auto it = open_incidents.begin(); it != open_incidents.end(); ++it) {
            if (incidents[*it].last_ns < incidents[*oldest].last_ns) {
                oldest = it;
            }
        }
        const auto index = *oldest;
        open_incidents.erase(oldest);
        if (incidents[index].about_target) {
            target_incident.erase(aux[index].target_key);
        } else if (auto* s = source_of_incident(index)) {
            s->incident = -1;
        }
        release_incident(index);
        ++totals.evicted_incidents;
    }

    void record(std::size_t index, Finding&& f) {
        auto& incident = incidents[index];
        f.incident_id = incident.id;
        ++incident.findings[static_cast<std::size_t>(f.rule)];
        incident.last_ns = std::max(incident.last_ns, f.last_ns);
        escalate(incident, aux[index], f);
        if (incident.timeline.size() < config.correlator.max_timeline) {
            incident.timeline.push_back(f);
        } else {
            ++incident.timeline_dropped;
        }
        ++totals.findings;
        emitted.push_back(std::move(f));
    }

    void accept(std::uint32_t source_id, Finding&& f) {
        auto& s = sources[source_id];
        if (s.incident < 0) {
            const auto index = open_incident(f.last_ns);
            auto& incident = incidents[index];
            incident.subject =
                std::string(strings.name(s.enforcer)) + "/" +
                std::string(strings.name(s.workload).empty() ? strings.name(s.address)
                                                             : strings.name(s.workload));
            incident.enforcer = strings.name(s.enforcer);
            incident.workload = strings.name(s.workload);
            incident.port = strings.name(s.port);
            incident.mac = strings.name(s.mac);
            incident.address = strings.name(s.address);
            incident.user = strings.name(s.user);
            const auto* resolved = resolved_at.find(s.key_hash);
            incident.repeat_offender =
                resolved != nullptr &&
                f.last_ns - *resolved <= seconds(config.correlator.repeat_offender_seconds);
            aux[index].source = source_id;
            aux[index].source_generation = s.generation;
            s.incident = static_cast<std::int64_t>(index);
        }
        record(static_cast<std::size_t>(s.incident), std::move(f));
    }

    void accept_target(std::uint64_t key, Finding&& f) {
        std::size_t index = 0;
        if (auto* existing = target_incident.find(key)) {
            index = static_cast<std::size_t>(*existing);
        } else {
            index = open_incident(f.last_ns);
            auto& incident = incidents[index];
            incident.about_target = true;
            incident.subject = target_text(key);
            incident.address = addresses.name(key_host(key));
            aux[index].target_key = key;
            bool inserted = false;
            target_incident.get_or_insert(key, inserted) = static_cast<std::int64_t>(index);
        }
        record(index, std::move(f));
    }

    void close(std::size_t index, std::int64_t at_ns) {
        auto& incident = incidents[index];
        if (incident.state == IncidentState::Resolved) {
            return;
        }
        incident.state = IncidentState::Resolved;
        incident.resolved_ns = at_ns;
        if (incident.about_target) {
            const auto key = aux[index].target_key;
            target_incident.erase(key);
            if (auto* t = target_index.find(key)) {
                targets[*t].quiet_until = kNever;
            }
        } else if (auto* s = source_of_incident(index)) {
            s->incident = -1;
            s->quiet_until.fill(kNever);
            bool inserted = false;
            resolved_at.get_or_insert(s->key_hash, inserted) = at_ns;
            if (resolved_at.size() > config.limits.max_repeat_offender_records) {
                evict_repeat_offender_records();
            }
        }
        std::erase(open_incidents, index);
        resolved_ids.push_back(incident.id);
        while (resolved_ids.size() > config.limits.max_resolved_incidents) {
            const auto released = slot_of(resolved_ids.front());
            resolved_ids.pop_front();
            if (released != kNone) {
                release_incident(released);
                ++totals.released_incidents;
            }
        }
    }

    // Above max_repeat_offender_records: the oldest records go, a sixteenth of the cap at once.
    void evict_repeat_offender_records() {
        std::vector<std::pair<std::int64_t, std::uint64_t>> records;
        resolved_at.for_each([&](std::uint64_t key, std::int64_t at) { records.emplace_back(at, key); });
        const std::size_t cap = config.limits.max_repeat_offender_records;
        const std::size_t target = cap - cap / 16;
        const std::size_t n = std::min(records.size() - std::min(records.size(), target), records.size());
        std::nth_element(records.begin(), records.begin() + static_cast<std::ptrdiff_t>(n), records.end());
        for (std::size_t k = 0; k < n; ++k) {
            resolved_at.erase(records[k].second);
            ++totals.evicted_repeat_offender_records;
        }
    }

    // ---- detectors ----

    struct Scan {
        std::int64_t first_ns = std::numeric_limits<std::int64_t>::max();
        std::vector<std::pair<std::int64_t, std::uint64_t>> pairs; // (first seen, key), by time
        std::size_t lateral = 0;
    };
    Scan collect(const Window& w, std::optional<std::uint32_t> host) const {
        Scan scan;
        w.pairs.for_each([&](std::uint64_t key, const PairEntry& e) {
            if (host && key_host(key) != *host) {
                return;
            }
            scan.pairs.emplace_back(e.first_ns, key);
            scan.first_ns = std::min(scan.first_ns, e.first_ns);
            if (is_lateral(key_protoport(key))) {
                ++scan.lateral;
            }
        });
        std::sort(scan.pairs.begin(), scan.pairs.end());
        return scan;
    }

    Finding make(Rule rule, Severity severity, std::int64_t first_ns, std::int64_t last_ns) const {
        Finding f;
        f.rule = rule;
        f.detector = detector_name(rule);
        f.rule_text = rule_name(rule);
        f.severity = severity;
        f.first_ns = first_ns;
        f.last_ns = last_ns;
        return f;
    }

    void samples(Finding& f, const Scan& scan) const {
        for (std::size_t i = 0; i < scan.pairs.size() && i < kSamples; ++i) {
            f.sample_targets.push_back(target_text(scan.pairs[i].second));
        }
    }

    // Ports of a scan, most targets first: "tcp/445" or "3 ports (tcp/445, tcp/139, tcp/22)".
    std::string ports_text(const Scan& scan, std::size_t& distinct) const {
        std::vector<std::pair<std::uint32_t, std::uint32_t>> counts; // (protoport, n)
        for (const auto& [t, key] : scan.pairs) {
            const auto pp = key_protoport(key);
            auto it =
                std::find_if(counts.begin(), counts.end(), [&](auto& c) { return c.first == pp; });
            if (it == counts.end()) {
                counts.emplace_back(pp, 1);
            } else {
                ++it->second;
            }
        }
        std::stable_sort(counts.begin(), counts.end(), [](auto& a, auto& b) {
            return a.second != b.second ? a.second > b.second : a.first < b.first;
        });
        distinct = counts.size();
        if (counts.size() == 1) {
            return protoport_text(counts[0].first);
        }
        std::string text = std::to_string(counts.size()) + " ports (";
        for (std::size_t i = 0; i < counts.size() && i < 3; ++i) {
            text += (i == 0 ? "" : ", ") + protoport_text(counts[i].first);
        }
        return text + (counts.size() > 3 ? ", ...)" : ")");
    }

    Severity lateral_weighted(const SourceState& s, Severity severity, const Scan& scan) const {
        // Lateral-movement services weigh more: a user workload's scan that is mostly SMB,
        // RDP, WinRM, SSH, RPC or LDAP is one level more severe.
        if ((s.flags & FlagUser) != 0 && scan.lateral * 2 >= scan.pairs.size()) {
            return bump(severity, 1);
        }
        return severity;
    }

    // True when `key` is new in the source's scan window (only then can a count grow), or was
    // refused there because the window is full (the slow-scan window may still take it).
    bool scan_detectors(std::uint32_t id, std::uint64_t key, std::int64_t t) {
        auto& s = sources[id];
        const std::int64_t window = seconds(config.scan.window_seconds);
        bool saturated = false;
        if (!s.scan.add(key, t, window, config.scan.max_targets_per_source, saturated)) {
            totals.saturated += saturated ? 1 : 0;
            return saturated;
        }
        const auto host = key_host(key);
        // Crossing a fast threshold (whether its rule is enabled, exempted or quiet) makes
        // this a fast scan: the slow-scan rule is for what stays below them.
        if (const auto* n = s.scan.hosts.find(host);
            s.scan.hosts.size() >= config.host_sweep.min_hosts ||
            (n != nullptr && *n >= config.vertical_scan.min_ports) ||
            (s.scan.ports.size() >= config.box_scan.min_ports &&
             s.scan.multi_port_hosts >= config.box_scan.min_hosts)) {
            s.last_fast_scan_ns = t;
        }
        if (config.host_sweep.enabled && s.scan.hosts.size() >= config.host_sweep.min_hosts &&
            may_fire(s, Rule::HostSweep, t, window)) {
            auto scan = collect(s.scan, std::nullopt);
            auto f = make(Rule::HostSweep, lateral_weighted(s, config.host_sweep.severity, scan),
                          scan.first_ns, t);
            f.distinct_hosts = s.scan.hosts.size();
            f.distinct_targets = s.scan.pairs.size();
            const auto ports = ports_text(scan, f.distinct_ports);
            f.score = static_cast<double>(f.distinct_hosts) / config.host_sweep.min_hosts;
            f.explanation = who(s) + " tried " + std::to_string(f.distinct_hosts) + " hosts on " +
                            ports + " in " + format_duration(t - scan.first_ns);
            samples(f, scan);
            accept(id, std::move(f));
        }
        const auto* on_host = s.scan.hosts.find(host);
        if (config.vertical_scan.enabled && on_host != nullptr &&
            *on_host >= config.vertical_scan.min_ports &&
            may_fire(s, Rule::VerticalScan, t, window)) {
            auto scan = collect(s.scan, host);
            auto f =
                make(Rule::VerticalScan, lateral_weighted(s, config.vertical_scan.severity, scan),
                     scan.first_ns, t);
            f.distinct_hosts = 1;
            f.distinct_targets = scan.pairs.size();
            f.distinct_ports = scan.pairs.size();
            f.score = static_cast<double>(f.distinct_ports) / config.vertical_scan.min_ports;
            std::string list;
            for (std::size_t i = 0; i < scan.pairs.size() && i < 3; ++i) {
                list += (i == 0 ? "" : ", ") + protoport_text(key_protoport(scan.pairs[i].second));
            }
            f.explanation = who(s) + " tried " + std::to_string(f.distinct_ports) + " ports on " +
                            host_text(host) + " in " + format_duration(t - scan.first_ns) + " (" +
                            list + (scan.pairs.size() > 3 ? ", ...)" : ")");
            samples(f, scan);
            accept(id, std::move(f));
        }
        // Box: many ports over several hosts, each of those hosts tried on two ports or more
        // (a sweep of one port plus a vertical scan of one host is not a box).
        if (config.box_scan.enabled && s.scan.ports.size() >= config.box_scan.min_ports &&
            s.scan.multi_port_hosts >= config.box_scan.min_hosts &&
            may_fire(s, Rule::BoxScan, t, window)) {
            auto scan = collect(s.scan, std::nullopt);
            auto f = make(Rule::BoxScan, lateral_weighted(s, config.box_scan.severity, scan),
                          scan.first_ns, t);
            f.distinct_hosts = s.scan.hosts.size();
            f.distinct_ports = s.scan.ports.size();
            f.distinct_targets = s.scan.pairs.size();
            f.score = std::min(static_cast<double>(f.distinct_ports) / config.box_scan.min_ports,
                               static_cast<double>(f.distinct_hosts) / config.box_scan.min_hosts);
            std::size_t distinct = 0;
            const auto ports = ports_text(scan, distinct);
            f.explanation = who(s) + " tried " + ports + " on " + std::to_string(f.distinct_hosts) +
                            " hosts (" + std::to_string(f.distinct_targets) + " targets) in " +
                            format_duration(t - scan.first_ns);
            samples(f, scan);
            accept(id, std::move(f));
        }
        if (config.distinct_targets.enabled && config.distinct_targets.min_targets > 0 &&
            s.scan.pairs.size() >= config.distinct_targets.min_targets &&
            may_fire(s, Rule::DistinctTargets, t, window)) {
            auto scan = collect(s.scan, std::nullopt);
            auto f = make(Rule::DistinctTargets, config.distinct_targets.severity, scan.first_ns, t);
            f.distinct_hosts = s.scan.hosts.size();
            f.distinct_ports = s.scan.ports.size();
            f.distinct_targets = s.scan.pairs.size();
            f.score = static_cast<double>(f.distinct_targets) / config.distinct_targets.min_targets;
            std::size_t distinct = 0;
            const auto ports = ports_text(scan, distinct);
            f.explanation = who(s) + " tried " + std::to_string(f.distinct_targets) +
                            " targets on " + std::to_string(f.distinct_hosts) +
                            (f.distinct_hosts == 1 ? " host (" : " hosts (") + ports + ") in " +
                            format_duration(t - scan.first_ns);
            samples(f, scan);
            accept(id, std::move(f));
        }
        return true;
    }

    void slow_scan_detector(std::uint32_t id, std::uint64_t key, std::int64_t t) {
        const auto& c = config.slow_scan;
        if (!c.enabled) {
            return;
        }
        auto& s = sources[id];
        const std::int64_t window = seconds(c.window_seconds);
        bool saturated = false;
        auto& w = slow[id];
        if (!w.add(key, t, window, std::max<std::uint32_t>(c.max_targets, 1), saturated)) {
            totals.saturated += saturated ? 1 : 0;
            return;
        }
        const bool hosts = c.min_hosts > 0 && w.hosts.size() >= c.min_hosts;
        const bool ports = c.min_ports > 0 && w.ports.size() >= c.min_ports;
        if (!hosts && !ports) {
            return;
        }
        // A fast scan of this source inside the long window was reported already.
        if (s.last_fast_scan_ns != kNever && t - s.last_fast_scan_ns < window) {
            return;
        }
        if (!may_fire(s, Rule::SlowScan, t, window)) {
            return;
        }
        auto scan = collect(w, std::nullopt);
        auto f = make(Rule::SlowScan, lateral_weighted(s, c.severity, scan), scan.first_ns, t);
        f.distinct_hosts = w.hosts.size();
        f.distinct_ports = w.ports.size();
        f.distinct_targets = w.pairs.size();
        f.score = std::max(c.min_hosts > 0 ? static_cast<double>(f.distinct_hosts) / c.min_hosts : 0.0,
                           c.min_ports > 0 ? static_cast<double>(f.distinct_ports) / c.min_ports : 0.0);
        std::size_t distinct = 0;
        const auto port_list = ports_text(scan, distinct);
        f.explanation = who(s) + " slowly tried " + std::to_string(f.distinct_hosts) +
                        (f.distinct_hosts == 1 ? " host on " : " hosts on ") + port_list + " over " +
                        format_duration(t - scan.first_ns) + " (" + std::to_string(f.distinct_targets) +
                        " targets, below the fast scan thresholds)";
        samples(f, scan);
        accept(id, std::move(f));
    }

    void lateral_detector(std::uint32_t id, std::uint64_t key, std::int64_t t) {
        if (!config.lateral.enabled || !is_lateral(key_protoport(key))) {
            return;
        }
        auto& s = sources[id];
        const std::int64_t window = seconds(config.lateral.window_seconds);
        bool saturated = false;
        if (!s.lateral.add(key, t, window, config.scan.max_targets_per_source, saturated)) {
            totals.saturated += saturated ? 1 : 0;
            return;
        }
        const bool user = (s.flags & FlagUser) != 0;
        const auto threshold =
            user ? config.lateral.min_targets_user : config.lateral.min_targets_other;
        const auto min_hosts = user ? config.lateral.min_hosts_user : config.lateral.min_hosts_other;
        if (threshold == 0 || s.lateral.pairs.size() < threshold || s.lateral.hosts.size() < min_hosts ||
            !may_fire(s, Rule::LateralMovement, t, window)) {
            return;
        }
        auto scan = collect(s.lateral, std::nullopt);
        auto f = make(Rule::LateralMovement,
                      user ? config.lateral.severity_user : config.lateral.severity_other,
                      scan.first_ns, t);
        f.distinct_hosts = s.lateral.hosts.size();
        f.distinct_ports = s.lateral.ports.size();
        f.distinct_targets = s.lateral.pairs.size();
        f.score = static_cast<double>(f.distinct_targets) / threshold;
        // Services in order of first attempt: "SMB tcp/445, RDP tcp/3389".
        std::vector<std::uint32_t> seen;
        std::string services;
        for (const auto& [first, k] : scan.pairs) {
            const auto pp = key_protoport(k);
            if (std::find(seen.begin(), seen.end(), pp) != seen.end()) {
                continue;
            }
            seen.push_back(pp);
            const auto* service = lateral_service(protoport_protocol(pp), protoport_port(pp));
            services += (services.empty() ? "" : ", ") + service->name + " " + protoport_text(pp);
        }
        f.explanation = who(s) + " tried " + std::to_string(f.distinct_targets) +
                        " lateral-movement targets on " + std::to_string(f.distinct_hosts) +
                        (f.distinct_hosts == 1 ? " host (" : " hosts (") + services + ") in " +
                        format_duration(t - scan.first_ns);
        samples(f, scan);
        accept(id, std::move(f));
    }

    void forbidden_detector(std::uint32_t id, const Observation& o, std::uint32_t host,
                            std::uint64_t key, std::int64_t t) {
        if (!config.forbidden.enabled) {
            return;
        }
        auto& s = sources[id];
        const auto& d = destinations[host];
        const std::int64_t quiet = seconds(config.forbidden.quiet_seconds);
        const auto pp = key_protoport(key);
        auto fire = [&](Rule rule, Severity severity, const std::string& what) {
            if (!may_fire(s, rule, t, quiet)) {
                return;
            }
            auto f = make(rule, severity, t, t);
            f.distinct_hosts = f.distinct_ports = f.distinct_targets = 1;
            f.score = 1;
            f.explanation = who(s) + " " + what;
            f.sample_targets.push_back(target_text(key));
            accept(id, std::move(f));
        };
        if (o.reason == DropReason::Decoy || (d.flags & FlagDecoy) != 0) {
            fire(Rule::Decoy, config.forbidden.decoy_severity,
                 "touched decoy " + host_text(host) + " on " + protoport_text(pp));
        }
        if ((s.flags & FlagUser) != 0 && (d.flags & FlagAdmin) != 0) {
            fire(Rule::UserToAdmin, config.forbidden.user_to_admin_severity,
                 "tried admin terminal " + host_text(host) + " on " + protoport_text(pp));
        }
        if ((s.flags & FlagVdi) != 0 && (d.flags & FlagVdi) != 0 && o.protocol == 6 && o.dport &&
            std::find(config.forbidden.file_sharing_ports.begin(),
                      config.forbidden.file_sharing_ports.end(),
                      *o.dport) != config.forbidden.file_sharing_ports.end()) {
            fire(Rule::VdiFileSharing, config.forbidden.vdi_file_sharing_severity,
                 "tried file sharing on VDI " + host_text(host) + " on " + protoport_text(pp));
        }
    }

    // Series whose last drop is older than max_interval can no longer continue.
    void purge_beacons(SourceState& s, std::int64_t t) {
        std::vector<std::uint64_t> stale;
        s.beacons.for_each([&](std::uint64_t key, const BeaconState& b) {
            if (t - b.last_ns > seconds(config.beaconing.max_interval_seconds)) {
                stale.push_back(key);
            }
        });
        for (auto key : stale) {
            s.beacons.erase(key);
        }
    }

    void beacon_detector(std::uint32_t id, std::uint64_t key, std::int64_t t) {
        const auto& c = config.beaconing;
        if (!c.enabled) {
            return;
        }
        auto& s = sources[id];
        auto* b = s.beacons.find(key);
        if (b == nullptr) {
            if (s.beacons.size() >= c.max_tracked_per_source) {
                purge_beacons(s, t);
            }
            if (s.beacons.size() >= c.max_tracked_per_source) {
                ++totals.saturated;
                return;
            }
            bool inserted = false;
            auto& fresh = s.beacons.get_or_insert(key, inserted);
            fresh.first_ns = fresh.last_ns = fresh.attempt_ns = t;
            fresh.attempts = 1;
            return;
        }
        // An attempt ends after min_interval of silence: drops closer together (SYN
        // retransmits, a continuous retry loop) are one attempt. Intervals are measured
        // between the starts of attempts.
        const std::int64_t silence = t - b->last_ns;
        b->last_ns = t;
        if (silence < seconds(c.min_interval_seconds)) {
            return;
        }
        const std::int64_t gap = t - b->attempt_ns;
        b->attempt_ns = t;
        if (gap > seconds(c.max_interval_seconds)) {
            b->filled = 0; // too long a pause: a new series
            b->head = 0;
            b->first_ns = t;
            b->attempts = 1;
            return;
        }
        ++b->attempts;
        b->intervals[b->head] = static_cast<std::uint16_t>(
            std::min<std::int64_t>(gap / 100'000'000, std::numeric_limits<std::uint16_t>::max()));
        b->head = static_cast<std::uint8_t>((b->head + 1) % kBeaconRing);
        if (b->filled < kBeaconRing) {
            ++b->filled;
        }
        // The last `want` intervals: the ring holds 16, the usual test reads min_intervals.
        // The last `want` intervals in one pass (sum and sum of squares, in tenths of a second).
        auto interval_stats = [&](std::size_t want, double& mean, double& cv) {
            std::uint64_t sum = 0, squares = 0;
            for (std::size_t k = 1; k <= want; ++k) {
                const std::uint64_t v = b->intervals[(b->head + kBeaconRing - k) & (kBeaconRing - 1)];
                sum += v;
                squares += v * v;
            }
            const double n = static_cast<double>(want);
            const double m = static_cast<double>(sum) / n;
            const double variance = std::max(0.0, static_cast<double>(squares) / n - m * m);
            mean = 100.0 * m; // ms
            cv = m > 0 ? std::sqrt(variance) / m : 1.0;
        };
        const std::size_t filled = b->filled;
        const std::size_t usual = std::min<std::size_t>(std::max<std::uint32_t>(c.min_intervals, 2), kBeaconRing);
        if (filled < usual) {
            return;
        }
        double mean = 0, cv = 1;
        interval_stats(usual, mean, cv);
        bool regular = cv <= c.max_cv && mean >= 1000.0 * c.min_period_seconds;
        // (The longer test only where the usual window already looks nearly regular: most
        // fast series are retry loops with cv of 0.3 or more, and skip it.)
        if (!regular && mean < 1000.0 * c.min_period_seconds && cv <= 2 * c.short_max_cv) {
            // Intervals are at least min_interval by construction; close to it, that floor
            // alone makes random retries look regular: a fast series must be longer and tighter.
            const std::size_t longer =
                std::min<std::size_t>(std::max<std::uint32_t>(c.short_min_intervals, 2), kBeaconRing);
            if (filled >= longer) {
                interval_stats(longer, mean, cv);
                regular = cv <= c.short_max_cv;
            }
        }
        if (!regular || !may_fire(s, Rule::Beaconing, t, seconds(c.quiet_seconds))) {
            return;
        }
        auto f = make(Rule::Beaconing, c.severity, b->first_ns, t);
        f.distinct_hosts = f.distinct_ports = f.distinct_targets = 1;
        f.score = std::max(0.0, 1.0 - cv);
        char stats[96];
        std::snprintf(stats, sizeof stats, " (cv %.2f, periodicity %.2f)", cv, f.score);
        f.explanation = who(s) + " retried " + target_text(key) + " " +
                        std::to_string(b->attempts) + " times every " +
                        format_duration(static_cast<std::int64_t>(mean * 1e6)) + stats;
        f.sample_targets.push_back(target_text(key));
        accept(id, std::move(f));
    }

    TargetState* target_state(std::uint64_t key) {
        if (auto* index = target_index.find(key)) {
            return &targets[*index];
        }
        if (active_targets >= config.fan_in.max_targets) {
            ++totals.saturated;
            return nullptr;
        }
        std::uint32_t index = 0;
        if (!free_targets.empty()) {
            index = free_targets.back();
            free_targets.pop_back();
        } else {
            index = static_cast<std::uint32_t>(targets.size());
            targets.emplace_back();
        }
        bool inserted = false;
        target_index.get_or_insert(key, inserted) = index;
        auto& ts = targets[index];
        ts.active = true;
        ts.key = key;
        ts.last_ns = kNever;
        ts.quiet_until = kNever;
        ++active_targets;
        return &ts;
    }

    void expire_target(TargetState& ts, std::int64_t now_ns) {
        const std::int64_t window = seconds(config.fan_in.window_seconds);
        while (!ts.fifo.empty() && ts.fifo.front().first <= now_ns - window) {
            const auto [t, source] = ts.fifo.front();
            ts.fifo.pop_front();
            if (auto* e = ts.sources.find(source); e != nullptr && e->pushed_ns == t) {
                ts.sources.erase(source);
            }
        }
    }

    void fan_in_detector(std::uint32_t id, std::uint64_t key, std::int64_t t_source) {
        const auto& c = config.fan_in;
        if (!c.enabled) {
            return;
        }
        auto* ts = target_state(key);
        if (ts == nullptr) {
            return;
        }
        const std::int64_t t = std::max(t_source, ts->last_ns);
        ts->last_ns = t;
        expire_target(*ts, t);
        const std::int64_t window = seconds(c.window_seconds);
        const std::int64_t resolution = std::max<std::int64_t>(window / 16, 1);
        const auto generation = sources[id].generation;
        auto* e = ts->sources.find(id);
        if (e != nullptr && e->generation != generation) {
            ts->sources.erase(id); // an earlier identity that held this id: not this source
            e = nullptr;
        }
        if (e != nullptr) {
            if (t - e->last_ns >= seconds(config.beaconing.min_interval_seconds)) {
                ++e->attempts; // after a silence: a new attempt (as for beaconing)
            }
            e->last_ns = t;
            if (t - e->pushed_ns >= resolution) {
                e->pushed_ns = t;
                ts->fifo.push_back({t, id});
            }
            return;
        }
        if (ts->sources.size() >= c.max_sources_per_target) {
            ++totals.saturated;
            return;
        }
        bool inserted = false;
        ts->sources.get_or_insert(id, inserted) = FanSource{t, t, t, 1, generation};
        ts->fifo.push_back({t, id});
        if (ts->sources.size() < c.min_sources) {
            return;
        }
        if (t < ts->quiet_until) {
            ++totals.suppressed;
            if (auto* incident = target_incident.find(key)) {
                ++incidents[static_cast<std::size_t>(*incident)]
                      .suppressed[static_cast<std::size_t>(Rule::FanIn)];
            }
            return;
        }
        ts->quiet_until = t + window;
        fire_fan_in(*ts, key, t);
    }

    // Classification (README.md, "fan-in"): misconfigured service when every source shares a
    // segment, at least half of them retried the target min_attempts times and none tried
    // more than misconfig_max_hosts hosts; else worm-like when the port is a lateral-movement
    // service and at least half the sources are user workloads; else undetermined.
    void fire_fan_in(TargetState& ts, std::uint64_t key, std::int64_t t) {
        const auto& c = config.fan_in;
        // Earliest first; sources first seen at the same time in the order they arrived (their
        // first entry in the target's FIFO), not by source id: ids are reused once a source
        // leaves memory, so their order says nothing.
        detail::FlatMap<std::uint32_t> arrival;
        std::uint32_t position = 0;
        ts.fifo.for_each([&](const std::pair<std::int64_t, std::uint64_t>& e) {
            bool inserted = false;
            auto& first = arrival.get_or_insert(e.second, inserted);
            if (inserted) {
                first = position;
            }
            ++position;
        });
        std::vector<std::tuple<std::int64_t, std::uint32_t, std::uint32_t>> arrived; // first, arrival, source
        ts.sources.for_each([&](std::uint64_t source, const FanSource& e) {
            // (Entries of identities that left memory are not this crowd.)
            if (source < sources.size() && sources[source].used &&
                sources[source].generation == e.generation) {
                const auto* at = arrival.find(source);
                arrived.emplace_back(e.first_ns, at == nullptr ? position : *at,
                                     static_cast<std::uint32_t>(source));
            }
        });
        if (arrived.empty()) {
            return;
        }
        std::sort(arrived.begin(), arrived.end());
        std::vector<std::pair<std::int64_t, std::uint32_t>> list; // (first, source)
        for (const auto& [first, at, source] : arrived) {
            list.emplace_back(first, source);
        }
        std::vector<std::uint32_t> common = sources[list.front().second].segments;
        std::size_t retrying = 0, users = 0, roaming = 0;
        for (const auto& [first, source] : list) {
            const auto& s = sources[source];
            std::erase_if(common, [&](std::uint32_t seg) {
                return std::find(s.segments.begin(), s.segments.end(), seg) == s.segments.end();
            });
            if (ts.sources.find(source)->attempts >= c.misconfig_min_attempts)
                ++retrying;
            if ((s.flags & FlagUser) != 0)
                ++users;
            if (s.scan.hosts.size() > c.misconfig_max_hosts)
                ++roaming;
        }
        const std::size_t n = list.size();
        const bool lateral = is_lateral(key_protoport(key));
        const auto* service = lateral_service(protoport_protocol(key_protoport(key)),
                                              protoport_port(key_protoport(key)));
        auto f = make(Rule::FanIn, c.undetermined_severity, list.front().first, t);
        std::string why;
        if (!common.empty() && retrying * 2 >= n && roaming == 0) {
            f.classification = "misconfigured-service";
            f.severity = c.misconfig_severity;
            why = "looks like a misconfigured service (all in segment " +
                  std::string(strings.name(common.front())) + ", " + std::to_string(retrying) +
                  " retrying it, none trying other hosts)";
        } else if (lateral && users * 2 >= n) {
            f.classification = "worm-like";
            f.severity = c.worm_severity;
            why = "worm-like spread (" + std::to_string(users) + " of " + std::to_string(n) +
                  " are user workloads, " + service->name + " is a lateral-movement service)";
        } else {
            f.classification = "undetermined";
            why = "cause undetermined";
        }
        f.distinct_targets = n;
        f.distinct_hosts = 1;
        f.distinct_ports = 1;
        f.score = static_cast<double>(n) / c.min_sources;
        f.explanation = std::to_string(n) + " sources failed toward " + target_text(key) + " in " +
                        format_duration(t - list.front().first) + ": " + why;
        for (std::size_t i = 0; i < list.size() && i < kSamples; ++i) {
            f.sample_targets.push_back(who(sources[list[i].second])); // fan-in: sample sources
        }
        accept_target(key, std::move(f));
    }

    // ---- expiry ----

    std::int64_t source_idle_ns() const {
        // At least the fan-in window too: a target's source list reads its sources' state.
        return std::max(
            {seconds(config.scan.window_seconds), seconds(config.lateral.window_seconds),
             config.slow_scan.enabled ? seconds(config.slow_scan.window_seconds) : 0,
             seconds(config.fan_in.window_seconds),
             config.beaconing.enabled ? seconds(config.beaconing.max_interval_seconds) : 0});
    }

    void sweep(std::int64_t now_ns) {
        const std::int64_t idle = source_idle_ns();
        for (std::uint32_t i = 0; i < sources.size(); ++i) {
            auto& s = sources[i];
            if (!s.used || now_ns - s.last_ns <= idle) {
                // An active source's windows expire on its own next event (lazily), bounded
                // by the caps meanwhile; the pass only frees what went idle.
                continue;
            }
            // A source leaving memory forgets its quiet periods: it leaves once they are over
            // (else, back, it would fire again early) and no open incident names it.
            if (s.incident < 0 &&
                *std::max_element(s.quiet_until.begin(), s.quiet_until.end()) <= now_ns) {
                release_source(i);
                ++totals.released_sources;
                continue;
            }
            // Idle, but its open incident or a quiet period holds it: the identity stays, the
            // windows go.
            if (s.active) {
                s.scan.reset();
                s.lateral.reset();
                slow[i].reset();
                s.beacons.clear_and_release();
                std::vector<std::uint32_t>().swap(s.segments);
                s.active = false;
                --active_sources;
            }
        }
        if (!resolved_at.empty()) {
            const std::int64_t keep = seconds(config.correlator.repeat_offender_seconds);
            std::vector<std::uint64_t> expired;
            resolved_at.for_each([&](std::uint64_t key, std::int64_t at) {
                if (now_ns - at > keep) {
                    expired.push_back(key);
                }
            });
            for (const auto key : expired) {
                resolved_at.erase(key);
            }
            totals.expired_repeat_offender_records += expired.size();
        }
        const std::int64_t fan_window = seconds(config.fan_in.window_seconds);
        for (std::uint32_t i = 0; i < targets.size(); ++i) {
            auto& ts = targets[i];
            if (!ts.active) {
                continue;
            }
            if (now_ns - ts.last_ns > fan_window) {
                target_index.erase(ts.key);
                ts.sources.clear_and_release();
                ts.fifo.release();
                ts.active = false;
                free_targets.push_back(i);
                --active_targets;
            }
        }
        if (config.correlator.auto_resolve_idle_seconds > 0) {
            const std::int64_t after = seconds(config.correlator.auto_resolve_idle_seconds);
            for (std::size_t k = open_incidents.size(); k-- > 0;) {
                const auto index = open_incidents[k];
                if (now_ns - incidents[index].last_ns >= after) {
                    close(index, incidents[index].last_ns + after);
                }
            }
        }
        if (addresses.live() >= address_collect_at) {
            collect_addresses();
            address_collect_at = next_collection(addresses.live());
        }
        if (strings.live() >= string_collect_at) {
            collect_strings();
            string_collect_at = next_collection(strings.live());
        }
    }

    // Destination addresses no window, beacon series, fan-in target or incident refers to
    // any more (nor the configuration's decoys) are forgotten; their ids are reused.
    void collect_addresses() {
        std::vector<bool> held(addresses.size(), false);
        auto mark = [&](std::uint64_t key) { held[key_host(key)] = true; };
        for (std::uint32_t i = 0; i < sources.size(); ++i) {
            const auto& s = sources[i];
            if (!s.used) {
                continue;
            }
            s.scan.for_each_key(mark);
            s.lateral.for_each_key(mark);
            slow[i].for_each_key(mark);
            s.beacons.for_each([&](std::uint64_t key, const BeaconState&) { mark(key); });
        }
        for (const auto& ts : targets) {
            if (ts.active) {
                mark(ts.key);
            }
        }
        for (std::size_t k = 0; k < incidents.size(); ++k) {
            if (incidents[k].id != 0 && incidents[k].about_target) {
                mark(aux[k].target_key);
            }
        }
        for (const auto& a : config.forbidden.decoy_addresses) {
            if (const auto id = addresses.find(a); id != kNone) {
                held[id] = true;
            }
        }
        for (std::uint32_t id = 0; id < held.size(); ++id) {
            if (!held[id] && addresses.holds(id)) {
                addresses.erase(id);
                destinations[id] = DestInfo{};
            }
        }
    }

    // Names, users and segments no held source, destination or configuration list uses.
    void collect_strings() {
        std::vector<bool> held(strings.size(), false);
        auto mark = [&](std::uint32_t id) {
            if (id < held.size()) {
                held[id] = true;
            }
        };
        for (const auto& s : sources) {
            if (!s.used) {
                continue;
            }
            for (const auto id : {s.enforcer, s.workload, s.port, s.mac, s.address, s.user}) {
                mark(id);
            }
            for (const auto id : s.segments) {
                mark(id);
            }
        }
        for (std::uint32_t id = 0; id < destinations.size(); ++id) {
            if (addresses.holds(id)) {
                mark(destinations[id].workload);
            }
        }
        for (const auto* list : {&user_segments, &admin_segments, &vdi_segments, &exemption_segments}) {
            for (const auto id : *list) {
                mark(id);
            }
        }
        for (std::uint32_t id = 0; id < held.size(); ++id) {
            if (!held[id] && strings.holds(id)) {
                strings.erase(id);
            }
        }
    }

    // ---- one observation ----

    void observe(const Observation& o) {
        emitted.clear();
        ++totals.observations;
        if (now == kNever || o.time_ns > now) {
            now = o.time_ns;
        }
        if (last_sweep == kNever) {
            last_sweep = now;
        } else if (now - last_sweep >= seconds(config.sweep_seconds)) {
            sweep(now);
            last_sweep = now;
        }
        const auto id = source_of(o);
        auto& s = sources[id];
        // Events of one source arrive nearly in order; a late one never moves its windows back.
        const std::int64_t t = std::max(o.time_ns, s.last_ns);
        s.last_ns = t;
        if (s.incident >= 0 && config.correlator.auto_resolve_idle_seconds > 0) {
            const auto& incident = incidents[static_cast<std::size_t>(s.incident)];
            const std::int64_t after = seconds(config.correlator.auto_resolve_idle_seconds);
            if (t - incident.last_ns >= after) {
                close(static_cast<std::size_t>(s.incident), incident.last_ns + after);
            }
        }
        bool fresh = false;
        const auto host = addresses.intern(o.destination, fresh);
        auto& d = ensure_destination(host);
        if (fresh) {
            d.flags |= segment_flags(o.destination_segments, nullptr);
            d.workload =
                o.destination_workload.empty() ? kNone : strings.intern(o.destination_workload);
            if (ignored(o.destination)) {
                d.flags |= FlagIgnored;
            }
        }
        const std::uint16_t port = has_ports(o.protocol) ? o.dport.value_or(0) : 0;
        const auto key = target_key(host, o.protocol, port);
        if ((d.flags & FlagIgnored) != 0 && o.reason != DropReason::Decoy) {
            ++totals.ignored;
            count_on_incidents(id, key, t, o.count);
            return;
        }
        // The slow window sees a target when the fast one takes it anew (first sight, or back
        // after a minute away): a target repeated every second costs one lookup, not two.
        if (scan_detectors(id, key, t)) {
            slow_scan_detector(id, key, t);
        }
        lateral_detector(id, key, t);
        forbidden_detector(id, o, host, key, t);
        beacon_detector(id, key, t);
        fan_in_detector(id, key, t);
        count_on_incidents(id, key, t, o.count);
    }

    void count_on_incidents(std::uint32_t id, std::uint64_t key, std::int64_t t, std::uint64_t count) {
        last_incident = 0;
        if (auto* ti = target_incident.find(key)) {
            auto& incident = incidents[static_cast<std::size_t>(*ti)];
            incident.events += count;
            incident.last_ns = std::max(incident.last_ns, t);
            last_incident = incident.id;
        }
        if (auto& src = sources[id]; src.incident >= 0) {
            auto& incident = incidents[static_cast<std::size_t>(src.incident)];
            incident.events += count;
            incident.last_ns = std::max(incident.last_ns, t);
            last_incident = incident.id;
        }
    }


    // ---- checkpoint ----
    // Layout (all varints unless said): the three interners, destinations, sources (with
    // their windows and beacon series), incidents (with timelines), the open and resolved
    // lists, fan-in targets, repeat-offender records, clocks and counters. What follows from
    // other state (per-host counts, target index, free lists of slots) is rebuilt on restore.

    static void save_id(detail::CheckpointWriter& w, std::uint32_t id) { w.u(id == kNone ? 0 : std::uint64_t{id} + 1); }

    static void save_finding(detail::CheckpointWriter& w, const Finding& f) {
        w.u(static_cast<std::uint64_t>(f.rule));
        w.u(static_cast<std::uint64_t>(f.severity));
        w.f64(f.score);
        w.str(f.explanation);
        w.str(f.classification);
        w.u(f.distinct_hosts);
        w.u(f.distinct_ports);
        w.u(f.distinct_targets);
        w.i(f.first_ns);
        w.i(f.last_ns);
        w.u(f.sample_targets.size());
        for (const auto& sample : f.sample_targets) {
            w.str(sample);
        }
        w.u(f.incident_id);
    }

    void save(detail::CheckpointWriter& w) const {
        w.i(now); // first: the base of the windows' relative times
        source_ids.save(w);
        addresses.save(w);
        strings.save(w);
        w.u(destinations.size());
        for (const auto& d : destinations) {
            w.u(d.flags);
            save_id(w, d.workload);
        }
        w.u(sources.size());
        for (std::size_t i = 0; i < sources.size(); ++i) {
            const auto& s = sources[i];
            w.u(s.used ? 1 : 0);
            w.u(s.generation);
            if (!s.used) {
                continue;
            }
            w.u(s.active ? 1 : 0);
            w.u(s.key_hash);
            for (const auto id : {s.enforcer, s.workload, s.port, s.mac, s.address, s.user}) {
                save_id(w, id);
            }
            w.u(s.flags);
            w.u(s.segments.size());
            for (const auto id : s.segments) {
                save_id(w, id);
            }
            w.i(s.last_ns);
            w.i(s.last_fast_scan_ns);
            s.scan.save(w, now);
            s.lateral.save(w, now);
            slow[i].save(w, now);
            w.u(s.beacons.size());
            s.beacons.for_each([&](std::uint64_t key, const BeaconState& b) {
                w.u(key);
                w.i(now - b.first_ns);
                w.i(now - b.attempt_ns);
                w.i(now - b.last_ns);
                w.u(b.attempts);
                w.u(b.filled);
                w.u(b.head);
                for (const auto v : b.intervals) {
                    w.u(v);
                }
            });
            for (const auto q : s.quiet_until) {
                w.i(q);
            }
            w.u(s.incident < 0 ? 0 : incidents[static_cast<std::size_t>(s.incident)].id);
        }
        const auto held = held_by_id();
        w.u(held.size());
        for (const auto index : held) {
            const auto& incident = incidents[index];
            const auto& a = aux[index];
            w.u(incident.id);
            w.u(incident.about_target ? 1 : 0);
            for (const auto* text : {&incident.subject, &incident.enforcer, &incident.workload,
                                     &incident.port, &incident.mac, &incident.address, &incident.user}) {
                w.str(*text);
            }
            w.u(static_cast<std::uint64_t>(incident.severity));
            w.u(incident.repeat_offender ? 1 : 0);
            w.u(static_cast<std::uint64_t>(incident.state));
            w.i(incident.opened_ns);
            w.i(incident.last_ns);
            w.i(incident.resolved_ns);
            w.u(incident.events);
            for (const auto n : incident.findings) {
                w.u(n);
            }
            for (const auto n : incident.suppressed) {
                w.u(n);
            }
            w.u(incident.timeline.size());
            for (const auto& f : incident.timeline) {
                save_finding(w, f);
            }
            w.u(incident.timeline_dropped);
            w.u(static_cast<std::uint64_t>(a.max_finding));
            w.u(a.detector_kinds);
            w.u(a.target_key);
            save_id(w, a.source);
            w.u(a.source_generation);
        }
        w.u(open_incidents.size());
        for (const auto index : open_incidents) {
            w.u(incidents[index].id);
        }
        w.u(resolved_ids.size());
        resolved_ids.for_each([&](std::uint64_t id) { w.u(id); });
        w.u(targets.size());
        for (const auto& ts : targets) {
            w.u(ts.active ? 1 : 0);
            if (!ts.active) {
                continue;
            }
            w.u(ts.key);
            w.i(ts.last_ns);
            w.i(ts.quiet_until);
            w.u(ts.sources.size());
            ts.sources.for_each([&](std::uint64_t source, const FanSource& e) {
                w.u(source);
                w.i(e.first_ns);
                w.i(e.pushed_ns);
                w.i(e.last_ns);
                w.u(e.attempts);
                w.u(e.generation);
            });
            w.u(ts.fifo.size());
            ts.fifo.for_each([&](const std::pair<std::int64_t, std::uint64_t>& e) {
                w.i(e.first);
                w.u(e.second);
            });
        }
        w.u(resolved_at.size());
        resolved_at.for_each([&](std::uint64_t key, std::int64_t at) {
            w.u(key);
            w.i(at);
        });
        w.i(last_sweep);
        w.u(last_incident);
        w.u(next_incident_id);
        w.u(address_collect_at);
        w.u(string_collect_at);
        for (const auto n : counters(totals)) {
            w.u(*n);
        }
    }


    std::vector<std::size_t> held_by_id() const {
        std::vector<std::size_t> held;
        for (std::size_t k = 0; k < incidents.size(); ++k) {
            if (incidents[k].id != 0) {
                held.push_back(k);
            }
        }
        std::sort(held.begin(), held.end(),
                  [&](std::size_t a, std::size_t b) { return incidents[a].id < incidents[b].id; });
        return held;
    }

    bool valid_key(std::uint64_t key) const {
        return (key >> 24) <= 0xFFFFFFFFULL && addresses.holds(key_host(key));
    }

    void restore(detail::CheckpointReader& r) {
        now = r.i();
        // Relative times back to absolute ones (wrapping: damaged input must not overflow).
        auto before_now = [&](std::int64_t delta) {
            return static_cast<std::int64_t>(static_cast<std::uint64_t>(now) - static_cast<std::uint64_t>(delta));
        };
        if (!source_ids.restore(r) || !addresses.restore(r) || !strings.restore(r)) {
            return;
        }
        // A string id: 0 is none (allowed only where `optional`), else id + 1 of a held name.
        auto string_id = [&](bool optional) -> std::uint32_t {
            const auto v = r.u();
            if (v == 0 && optional) {
                return kNone;
            }
            if (v == 0 || v - 1 > 0xFFFFFFFFULL || !strings.holds(static_cast<std::uint32_t>(v - 1))) {
                r.invalid("a name id refers to no name");
                return kNone;
            }
            return static_cast<std::uint32_t>(v - 1);
        };
        const auto destination_count = r.count(2);
        if (r.ok() && destination_count != addresses.size()) {
            return r.invalid("destinations do not match the addresses");
        }
        destinations.resize(destination_count);
        for (auto& d : destinations) {
            d.flags = r.u32();
            d.workload = string_id(true);
        }
        const auto source_count = r.count(2);
        if (r.ok() && source_count != source_ids.size()) {
            return r.invalid("sources do not match the source identities");
        }
        sources.resize(source_count);
        slow.resize(source_count);
        std::vector<std::uint64_t> source_incident(source_count, 0);
        auto key_ok = [&](std::uint64_t key) { return valid_key(key); };
        for (std::size_t i = 0; i < source_count && r.ok(); ++i) {
            auto& s = sources[i];
            s.used = r.flag();
            s.generation = r.u32();
            if (s.used != source_ids.holds(static_cast<std::uint32_t>(i))) {
                return r.invalid("a source slot disagrees with the source identities");
            }
            if (!s.used) {
                continue;
            }
            s.active = r.flag();
            s.key_hash = r.u();
            for (auto* id : {&s.enforcer, &s.workload, &s.port, &s.mac, &s.address, &s.user}) {
                *id = string_id(false);
            }
            s.flags = r.u32();
            const auto segments = r.count(1);
            for (std::size_t k = 0; k < segments && r.ok(); ++k) {
                s.segments.push_back(string_id(false));
            }
            s.last_ns = r.i();
            s.last_fast_scan_ns = r.i();
            s.scan.restore(r, now, key_ok);
            s.lateral.restore(r, now, key_ok);
            slow[i].restore(r, now, key_ok);
            const auto beacons = r.count(1 + 3 + 3 + kBeaconRing);
            for (std::size_t k = 0; k < beacons && r.ok(); ++k) {
                const auto key = r.u();
                BeaconState b;
                b.first_ns = before_now(r.i());
                b.attempt_ns = before_now(r.i());
                b.last_ns = before_now(r.i());
                b.attempts = r.u32();
                b.filled = r.u8(kBeaconRing);
                b.head = r.u8(kBeaconRing - 1);
                for (auto& v : b.intervals) {
                    v = static_cast<std::uint16_t>(std::min<std::uint64_t>(r.u(), 0xFFFF));
                }
                bool inserted = false;
                if (!valid_key(key)) {
                    return r.invalid("a beacon series refers to an unknown address");
                }
                s.beacons.get_or_insert(key, inserted) = b;
                if (!inserted) {
                    return r.invalid("a beacon series is held twice");
                }
            }
            for (auto& q : s.quiet_until) {
                q = r.i();
            }
            source_incident[i] = r.u();
            if (s.active) {
                ++active_sources;
            }
        }
        const auto incident_count = r.count(40);
        incidents.resize(incident_count);
        aux.resize(incident_count);
        for (std::size_t k = 0; k < incident_count && r.ok(); ++k) {
            auto& incident = incidents[k];
            auto& a = aux[k];
            incident.id = r.u();
            incident.about_target = r.flag();
            for (auto* text : {&incident.subject, &incident.enforcer, &incident.workload,
                               &incident.port, &incident.mac, &incident.address, &incident.user}) {
                *text = r.str();
            }
            incident.severity = static_cast<Severity>(r.u8(3));
            incident.repeat_offender = r.flag();
            incident.state = static_cast<IncidentState>(r.u8(1));
            incident.opened_ns = r.i();
            incident.last_ns = r.i();
            incident.resolved_ns = r.i();
            incident.events = r.u();
            for (auto& n : incident.findings) {
                n = r.u();
            }
            for (auto& n : incident.suppressed) {
                n = r.u();
            }
            const auto timeline = r.count(16);
            for (std::size_t n = 0; n < timeline && r.ok(); ++n) {
                Finding f;
                f.rule = static_cast<Rule>(r.u8(rule_count - 1));
                f.detector = detector_name(f.rule);
                f.rule_text = rule_name(f.rule);
                f.severity = static_cast<Severity>(r.u8(3));
                f.score = r.f64();
                f.explanation = r.str();
                f.classification = r.str();
                f.distinct_hosts = r.u();
                f.distinct_ports = r.u();
                f.distinct_targets = r.u();
                f.first_ns = r.i();
                f.last_ns = r.i();
                const auto samples = r.count(1);
                for (std::size_t m = 0; m < samples && r.ok(); ++m) {
                    f.sample_targets.push_back(r.str());
                }
                f.incident_id = r.u();
                incident.timeline.push_back(std::move(f));
            }
            incident.timeline_dropped = r.u();
            a.max_finding = static_cast<Severity>(r.u8(3));
            a.detector_kinds = r.u32();
            a.target_key = r.u();
            const auto source = r.u();
            a.source = source == 0 || source - 1 >= source_count ? kNone : static_cast<std::uint32_t>(source - 1);
            a.source_generation = r.u32();
            bool inserted = false;
            if (r.ok() && (incident.id == 0 || incident.id == detail::FlatMap<std::uint32_t>::empty_key)) {
                return r.invalid("an incident id is 0");
            }
            if (r.ok()) {
                incident_slot.get_or_insert(incident.id, inserted) = static_cast<std::uint32_t>(k);
                if (!inserted) {
                    return r.invalid("an incident id is used twice");
                }
            }
            if (r.ok() && incident.about_target && !valid_key(a.target_key)) {
                return r.invalid("a fan-in incident refers to an unknown address");
            }
        }
        if (!r.ok()) {
            return;
        }
        // Sources and their open incidents name each other.
        std::size_t open_count = 0;
        for (std::size_t k = 0; k < incidents.size(); ++k) {
            const auto& incident = incidents[k];
            if (incident.state != IncidentState::Open) {
                continue;
            }
            ++open_count;
            if (incident.about_target) {
                bool inserted = false;
                target_incident.get_or_insert(aux[k].target_key, inserted) = static_cast<std::int64_t>(k);
                if (!inserted) {
                    return r.invalid("two open fan-in incidents about one target");
                }
            } else if (auto* s = source_of_incident(k); s == nullptr ||
                       source_incident[aux[k].source] != incident.id) {
                return r.invalid("an open incident's source does not name it");
            }
        }
        for (std::size_t i = 0; i < sources.size(); ++i) {
            if (source_incident[i] == 0) {
                continue;
            }
            const auto slot = slot_of(source_incident[i]);
            if (slot == kNone || incidents[slot].state != IncidentState::Open ||
                incidents[slot].about_target || aux[slot].source != i) {
                return r.invalid("a source names an incident that is not its open incident");
            }
            sources[i].incident = static_cast<std::int64_t>(slot);
        }
        std::vector<bool> listed(incidents.size(), false);
        const auto open_listed = r.count(1);
        for (std::size_t k = 0; k < open_listed && r.ok(); ++k) {
            const auto slot = slot_of(r.u());
            if (slot == kNone || listed[slot] || incidents[slot].state != IncidentState::Open) {
                return r.invalid("the open incident list is wrong");
            }
            listed[slot] = true;
            open_incidents.push_back(slot);
        }
        const auto resolved_listed = r.count(1);
        for (std::size_t k = 0; k < resolved_listed && r.ok(); ++k) {
            const auto id = r.u();
            const auto slot = slot_of(id);
            if (slot == kNone || listed[slot] || incidents[slot].state != IncidentState::Resolved) {
                return r.invalid("the resolved incident list is wrong");
            }
            listed[slot] = true;
            resolved_ids.push_back(id);
        }
        if (r.ok() && (open_listed != open_count || open_listed + resolved_listed != incidents.size())) {
            return r.invalid("incidents missing from the open and resolved lists");
        }
        const auto target_count = r.count(1);
        targets.resize(target_count);
        for (std::uint32_t k = 0; k < target_count && r.ok(); ++k) {
            auto& ts = targets[k];
            ts.active = r.flag();
            if (!ts.active) {
                free_targets.push_back(k);
                continue;
            }
            ts.key = r.u();
            ts.last_ns = r.i();
            ts.quiet_until = r.i();
            bool inserted = false;
            if (r.ok() && !valid_key(ts.key)) {
                return r.invalid("a fan-in target refers to an unknown address");
            }
            if (r.ok()) {
                target_index.get_or_insert(ts.key, inserted) = k;
                if (!inserted) {
                    return r.invalid("a fan-in target is held twice");
                }
            }
            ++active_targets;
            const auto fan_sources = r.count(6);
            for (std::size_t n = 0; n < fan_sources && r.ok(); ++n) {
                const auto source = r.u();
                FanSource e;
                e.first_ns = r.i();
                e.pushed_ns = r.i();
                e.last_ns = r.i();
                e.attempts = r.u32();
                e.generation = r.u32();
                if (source >= sources.size()) {
                    return r.invalid("a fan-in entry names an unknown source");
                }
                ts.sources.get_or_insert(source, inserted) = e;
            }
            const auto queued = r.count(2);
            for (std::size_t n = 0; n < queued && r.ok(); ++n) {
                const auto t = r.i();
                const auto source = r.u();
                if (source >= sources.size()) {
                    return r.invalid("a fan-in queue names an unknown source");
                }
                ts.fifo.push_back({t, source});
            }
        }
        const auto records = r.count(2);
        for (std::size_t k = 0; k < records && r.ok(); ++k) {
            const auto key = r.u();
            const auto at = r.i();
            if (key == detail::FlatMap<std::int64_t>::empty_key) {
                return r.invalid("a repeat-offender record has the reserved key");
            }
            bool inserted = false;
            resolved_at.get_or_insert(key, inserted) = at;
        }
        last_sweep = r.i();
        last_incident = r.u();
        next_incident_id = r.u();
        address_collect_at = std::max<std::size_t>(r.u(), kCollectFloor);
        string_collect_at = std::max<std::size_t>(r.u(), kCollectFloor);
        for (auto* n : counters(totals)) {
            *n = r.u();
        }
        if (r.ok() && !incidents.empty() &&
            incidents[held_by_id().back()].id >= next_incident_id) {
            return r.invalid("an incident id is beyond the next incident id");
        }
        if (r.ok() && !r.at_end()) {
            return r.invalid("bytes left after the state");
        }
    }

    std::size_t memory_bytes() const {
        std::size_t bytes =
            source_ids.memory_bytes() + addresses.memory_bytes() + strings.memory_bytes();
        bytes +=
            sources.capacity() * sizeof(SourceState) + destinations.capacity() * sizeof(DestInfo);
        for (const auto& w : slow) {
            bytes += w.memory_bytes();
        }
        bytes += slow.capacity() * sizeof(Window);
        for (const auto& s : sources) {
            bytes += s.scan.memory_bytes() + s.lateral.memory_bytes() + s.beacons.memory_bytes() +
                     s.segments.capacity() * sizeof(std::uint32_t);
        }
        bytes += target_index.memory_bytes() + targets.capacity() * sizeof(TargetState) +
                 target_incident.memory_bytes() + lateral_index.capacity();
        for (const auto& ts : targets) {
            bytes += ts.sources.memory_bytes() + ts.fifo.memory_bytes();
        }
        bytes += incidents.capacity() * sizeof(Incident) + aux.capacity() * sizeof(IncidentAux) +
                 free_incident_slots.capacity() * sizeof(std::uint32_t) +
                 incident_slot.memory_bytes() + open_incidents.capacity() * sizeof(std::size_t) +
                 resolved_ids.memory_bytes() + resolved_at.memory_bytes() +
                 free_targets.capacity() * sizeof(std::uint32_t);
        for (const auto& incident : incidents) {
            bytes += incident.subject.capacity() + incident.timeline.capacity() * sizeof(Finding);
            for (const auto& f : incident.timeline) {
                bytes += f.explanation.capacity();
                for (const auto& sample : f.sample_targets) {
                    bytes += sizeof(std::string) + sample.capacity();
                }
            }
        }
        return bytes;
    }
};

Analyzer::Analyzer(AnalyzerConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}
Analyzer::~Analyzer() = default;
Analyzer::Analyzer(Analyzer&&) noexcept = default;
Analyzer& Analyzer::operator=(Analyzer&&) noexcept = default;

std::span<const Finding> Analyzer::observe(const Observation& observation) {
    impl_->observe(observation);
    return impl_->emitted;
}

bool Analyzer::resolve(std::uint64_t incident_id, std::int64_t at_ns) {
    const auto slot = impl_->slot_of(incident_id);
    if (slot == kNone || impl_->incidents[slot].state == IncidentState::Resolved) {
        return false;
    }
    impl_->close(slot, at_ns);
    return true;
}

void Analyzer::reconfigure(AnalyzerConfig config) {
    impl_->config = std::move(config);
    impl_->derive();
}

bool Analyzer::rearm(std::uint64_t incident_id) {
    const auto slot = impl_->slot_of(incident_id);
    if (slot == kNone || impl_->incidents[slot].about_target) {
        return false;
    }
    impl_->rearm(slot);
    return true;
}

std::uint64_t Analyzer::last_incident() const {
    return impl_->last_incident;
}

void Analyzer::add_exemption(Exemption exemption) {
    impl_->exemption_segments.push_back(
        exemption.segment.empty() ? kNone : impl_->strings.intern(exemption.segment));
    impl_->config.exemptions.push_back(std::move(exemption));
}

std::vector<const Incident*> Analyzer::incidents() const {
    std::vector<const Incident*> held;
    for (const auto& incident : impl_->incidents) {
        if (incident.id != 0) {
            held.push_back(&incident);
        }
    }
    std::sort(held.begin(), held.end(), [](const Incident* a, const Incident* b) { return a->id < b->id; });
    return held;
}

const Incident* Analyzer::incident(std::uint64_t id) const {
    const auto slot = impl_->slot_of(id);
    return slot == kNone ? nullptr : &impl_->incidents[slot];
}

Totals Analyzer::totals() const {
    Totals totals = impl_->totals;
    totals.active_sources = impl_->active_sources;
    totals.tracked_targets = impl_->active_targets;
    totals.held_sources = impl_->source_ids.live();
    totals.open_incidents = impl_->open_incidents.size();
    totals.held_incidents = impl_->incident_slot.size();
    totals.repeat_offender_records = impl_->resolved_at.size();
    return totals;
}

std::size_t Analyzer::memory_bytes() const {
    return impl_->memory_bytes();
}

const AnalyzerConfig& Analyzer::config() const {
    return impl_->config;
}

namespace {
constexpr std::string_view kCheckpointMagic = "BHAE"; // Bulkhead analyzer engine
// Bump on any change of what save() writes (a rule added changes rule_count, hence the layout).
constexpr std::uint8_t kCheckpointVersion = 1;
static_assert(rule_count == 11, "a new rule changes the checkpoint layout: bump its version");
} // namespace

std::string Analyzer::save_state() const {
    detail::CheckpointWriter w(kCheckpointMagic, kCheckpointVersion);
    impl_->save(w);
    return std::move(w).finish();
}

std::expected<Analyzer, std::string> Analyzer::restore_state(std::string_view bytes,
                                                             AnalyzerConfig config) {
    detail::CheckpointReader r(bytes, kCheckpointMagic, kCheckpointVersion, "analyzer");
    auto impl = std::make_unique<Impl>(std::move(config), Impl::Blank{});
    if (r.ok()) {
        impl->restore(r);
    }
    if (!r.ok()) {
        return std::unexpected(r.error());
    }
    impl->derive();
    Analyzer engine;
    engine.impl_ = std::move(impl);
    return engine;
}

} // namespace bulkhead::analyzer
