// The analyzer engine's state (Analyzer::Impl) and the helpers its source files share.
// Internal to controller/analyzer: only the engine's .cpp files include it (README.md, the
// table of files).
#pragma once

#include "controller/analyzer/analyzer.hpp"
#include "controller/analyzer/checkpoint_codec.hpp"
#include "controller/analyzer/flat_map.hpp"
#include "controller/analyzer/interner.hpp"
#include "policies/net_address.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace bulkhead::analyzer::detail {

constexpr std::int64_t kSecond = 1'000'000'000;
constexpr std::int64_t kNever = std::numeric_limits<std::int64_t>::min();
constexpr std::size_t kSamples = 10;
// Interned addresses and names are collected once their count grew by a quarter since the
// last collection, and never below this count (a collection walks every source and, for
// addresses, every window: a quarter's growth pays for it many times over).
constexpr std::size_t kCollectFloor = 4'096;
inline std::size_t next_collection(std::size_t live) {
    return std::max(kCollectFloor, live + live / 4);
}

enum Flag : std::uint32_t { FlagUser = 1, FlagAdmin = 2, FlagVdi = 4, FlagDecoy = 8, FlagIgnored = 16 };

inline std::int64_t seconds(std::uint32_t s) {
    return static_cast<std::int64_t>(s) * kSecond;
}

// A target: destination address id, protocol, port, packed into one key.
inline std::uint64_t target_key(std::uint32_t host, std::uint8_t protocol, std::uint16_t port) {
    return (static_cast<std::uint64_t>(host) << 24) | (static_cast<std::uint64_t>(protocol) << 16) |
           port;
}
inline std::uint32_t key_host(std::uint64_t key) {
    return static_cast<std::uint32_t>(key >> 24);
}
inline std::uint32_t key_protoport(std::uint64_t key) {
    return static_cast<std::uint32_t>(key & 0xFFFFFF);
}
inline std::uint8_t protoport_protocol(std::uint32_t pp) {
    return static_cast<std::uint8_t>(pp >> 16);
}
inline std::uint16_t protoport_port(std::uint32_t pp) {
    return static_cast<std::uint16_t>(pp & 0xFFFF);
}

inline std::string protocol_text(std::uint8_t protocol) {
    const auto name = policy::ip_protocol_name(protocol);
    return name.empty() ? "proto " + std::to_string(protocol) : std::string(name);
}
inline bool has_ports(std::uint8_t protocol) {
    return protocol == 6 || protocol == 17 || protocol == 33 || protocol == 132 || protocol == 136;
}
inline std::string protoport_text(std::uint32_t pp) {
    const auto protocol = protoport_protocol(pp);
    if (!has_ports(protocol)) {
        return protocol_text(protocol);
    }
    return protocol_text(protocol) + "/" + std::to_string(protoport_port(pp));
}

inline Severity bump(Severity severity, int levels) {
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
    // Source ports of the last attempts, newest at [0] (0: none known). A retransmit repeats
    // its attempt's port, and an attempt's retransmits can come after the next attempt began
    // (a 2 s beacon whose SYN is retried at 1 s and 3 s), hence more than the current one.
    std::array<std::uint16_t, 4> attempt_sports{};
    // The series was reported (a finding) or counted as a scheduled job (Totals::scheduled_jobs)
    // since it began: its first report passes the source's quiet period, so that a second
    // beacon of the same source to another destination is a finding of its own.
    bool reported = false;
    // Other ports that joined the current attempt (a burst of parallel connects), one bit per
    // port modulo 64, so their retransmits are not taken for new attempts. A collision errs
    // toward fewer attempts.
    std::uint64_t burst_ports = 0;
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

inline std::uint32_t detector_bit(Rule rule) {
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

} // namespace bulkhead::analyzer::detail

namespace bulkhead::analyzer {

// The engine's files name these helpers unqualified, as when they were one file's own.
using namespace detail; // NOLINT(google-build-using-namespace): private header

// The engine's state. Members called per event that are small stay defined here (inline);
// the rest live in the .cpp file of what they do (README.md, the table of files).
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

    void derive();

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
                                std::vector<std::uint32_t>* ids);

    // ---- identity ----

    std::uint32_t source_of(const Observation& o);

    // Never ~0 (FlatMap's empty key).
    static std::uint64_t record_key(std::string_view identity_key) {
        const auto h = detail::fnv1a64(identity_key);
        return h == detail::FlatMap<std::int64_t>::empty_key ? h - 1 : h;
    }

    void release_source(std::uint32_t id);
    void evict_sources(std::uint32_t keep);
    std::string who(const SourceState& s) const;
    std::string target_text(std::uint64_t key) const;
    std::string host_text(std::uint32_t host) const;

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

    void escalate(Incident& incident, IncidentAux& a, const Finding& f);
    std::size_t open_incident(std::int64_t t);

    std::size_t slot_of(std::uint64_t id) const {
        const auto* slot = incident_slot.find(id);
        return slot == nullptr ? kNone : *slot;
    }

    void release_incident(std::size_t index);
    void evict_open_incident();
    void record(std::size_t index, Finding&& f);
    void accept(std::uint32_t source_id, Finding&& f);
    void accept_target(std::uint64_t key, Finding&& f);
    void close(std::size_t index, std::int64_t at_ns);
    void evict_repeat_offender_records();

    // ---- detectors ----

    struct Scan {
        std::int64_t first_ns = std::numeric_limits<std::int64_t>::max();
        std::vector<std::pair<std::int64_t, std::uint64_t>> pairs; // (first seen, key), by time
        std::size_t lateral = 0;
    };
    Scan collect(const Window& w, std::optional<std::uint32_t> host) const;

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

    void samples(Finding& f, const Scan& scan) const;
    std::string ports_text(const Scan& scan, std::size_t& distinct) const;

    Severity lateral_weighted(const SourceState& s, Severity severity, const Scan& scan) const {
        // Lateral-movement services weigh more: a user workload's scan that is mostly SMB,
        // RDP, WinRM, SSH, RPC or LDAP is one level more severe.
        if ((s.flags & FlagUser) != 0 && scan.lateral * 2 >= scan.pairs.size()) {
            return bump(severity, 1);
        }
        return severity;
    }

    bool scan_detectors(std::uint32_t id, std::uint64_t key, std::int64_t t);
    void slow_scan_detector(std::uint32_t id, std::uint64_t key, std::int64_t t);
    void lateral_detector(std::uint32_t id, std::uint64_t key, std::int64_t t);

    void forbidden_detector(std::uint32_t id, const Observation& o, std::uint32_t host,
                            std::uint64_t key, std::int64_t t);

    void purge_beacons(SourceState& s, std::int64_t t);
    void beacon_detector(std::uint32_t id, std::uint64_t key, std::int64_t t, std::uint8_t protocol,
                         std::uint16_t sport);
    TargetState* target_state(std::uint64_t key);
    void expire_target(TargetState& ts, std::int64_t now_ns);
    void fan_in_detector(std::uint32_t id, std::uint64_t key, std::int64_t t_source);
    void fire_fan_in(TargetState& ts, std::uint64_t key, std::int64_t t);

    // ---- expiry ----

    std::int64_t source_idle_ns() const;
    void sweep(std::int64_t now_ns);
    void collect_addresses();
    void collect_strings();

    // ---- one observation ----

    void observe(const Observation& o);
    void count_on_incidents(std::uint32_t id, std::uint64_t key, std::int64_t t,
                            std::uint64_t count);

    // ---- checkpoint ----
    // Layout (all varints unless said): the three interners, destinations, sources (with
    // their windows and beacon series), incidents (with timelines), the open and resolved
    // lists, fan-in targets, repeat-offender records, clocks and counters. What follows from
    // other state (per-host counts, target index, free lists of slots) is rebuilt on restore.

    static void save_id(detail::CheckpointWriter& w, std::uint32_t id);
    static void save_finding(detail::CheckpointWriter& w, const Finding& f);
    void save(detail::CheckpointWriter& w) const;

    std::vector<std::size_t> held_by_id() const;
    bool valid_key(std::uint64_t key) const;
    void restore(detail::CheckpointReader& r);
    std::size_t memory_bytes() const;
};

} // namespace bulkhead::analyzer
