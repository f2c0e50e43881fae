#include "enforcer/nflog/event_aggregator.hpp"

#include "enforcer/nflog/attribution.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <unordered_map>

namespace bulkhead::nflog {

std::string_view to_string(CloseReason reason) {
    switch (reason) {
    case CloseReason::Window:
        return "window";
    case CloseReason::Evicted:
        return "evicted";
    case CloseReason::Flush:
        return "flush";
    }
    return "window";
}

namespace {

// What identifies "the same target" beyond addresses: the destination port, or for ICMP
// the type and code.
struct Target {
    std::uint8_t protocol = 0;
    std::uint8_t kind = 0; // 0 none, 1 port, 2 icmp
    std::uint16_t value = 0;
    bool operator==(const Target&) const = default;
};

Target target_of(const DropEvent& e) {
    if (e.dport) {
        return {e.protocol, 1, *e.dport};
    }
    if (e.icmp_type) {
        return {
            e.protocol, 2,
            static_cast<std::uint16_t>((unsigned{*e.icmp_type} << 8) | e.icmp_code.value_or(0))};
    }
    return {e.protocol, 0, 0};
}

struct Hasher {
    std::size_t h = 1469598103934665603ULL;
    void mix(std::uint64_t v) { h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2); }
    void mix(const std::string& s) { mix(std::hash<std::string>{}(s)); }
    void mix(const policy::IpAddress& a) {
        mix(static_cast<std::uint64_t>(a.family));
        std::uint64_t hi = 0, lo = 0;
        for (std::size_t i = 0; i < 8; ++i) {
            hi = (hi << 8) | a.bytes[i];
            lo = (lo << 8) | a.bytes[8 + i];
        }
        mix(hi);
        mix(lo);
    }
    void mix(const Target& t) {
        mix((std::uint64_t{t.protocol} << 24) | (std::uint64_t{t.kind} << 16) | t.value);
    }
};

struct DropKey {
    std::string workload;
    std::uint32_t indev = 0, outdev = 0;
    policy::IpAddress src, dst;
    Target target;
    Direction direction = Direction::Out;
    Reason reason = Reason::Default;
    policy::Mode mode = policy::Mode::Enforce;
    std::uint64_t generation = 0;
    bool operator==(const DropKey&) const = default;
};

struct DropKeyHash {
    std::size_t operator()(const DropKey& k) const {
        Hasher h;
        h.mix(k.workload);
        h.mix((std::uint64_t{k.indev} << 32) | k.outdev);
        h.mix(k.src);
        h.mix(k.dst);
        h.mix(k.target);
        h.mix((static_cast<std::uint64_t>(k.direction) << 16) |
              (static_cast<std::uint64_t>(k.reason) << 8) | static_cast<std::uint64_t>(k.mode));
        h.mix(k.generation);
        return h.h;
    }
};

struct AllowedKey {
    std::string workload;
    std::string interface;
    Direction direction = Direction::Out;
    policy::IpAddress peer; // zero for direction out
    policy::IpAddress dst;
    Target target;
    std::uint64_t generation = 0;
    bool operator==(const AllowedKey&) const = default;
};

struct AllowedKeyHash {
    std::size_t operator()(const AllowedKey& k) const {
        Hasher h;
        h.mix(k.workload);
        h.mix(k.interface);
        h.mix(static_cast<std::uint64_t>(k.direction));
        h.mix(k.peer);
        h.mix(k.dst);
        h.mix(k.target);
        h.mix(k.generation);
        return h.h;
    }
};

// Open windows in a hash map plus a FIFO of their keys in opening order. Windows have one
// length, so opening order is closing order: expiry and eviction both pop the front.
// (References to unordered_map elements survive rehashing; the FIFO holds pointers.)
template <typename Key, typename Hash, typename Value> struct WindowTable {
    struct Entry {
        std::int64_t opened_ns = 0;
        Value value;
    };
    std::unordered_map<Key, Entry, Hash> entries;
    std::deque<const Key*> order;

    Entry* find(const Key& key) {
        auto it = entries.find(key);
        return it == entries.end() ? nullptr : &it->second;
    }
    Entry& open(Key key, std::int64_t now_ns, Value value) {
        auto [it, inserted] = entries.emplace(std::move(key), Entry{now_ns, std::move(value)});
        order.push_back(&it->first);
        return it->second;
    }
    // Pops the oldest window and hands its value to `close`.
    template <typename Close> void pop_front(Close&& close) {
        auto it = entries.find(*order.front());
        order.pop_front();
        close(it->second.value);
        entries.erase(it);
    }
    std::optional<std::int64_t> front_opened() const {
        if (order.empty())
            return std::nullopt;
        return entries.find(*order.front())->second.opened_ns;
    }
};

} // namespace

struct EventAggregator::State {
    AggregatorConfig config;
    AggregatorStats stats;
    WindowTable<DropKey, DropKeyHash, DropSummary> drops;
    WindowTable<AllowedKey, AllowedKeyHash, AllowedFlowSummary> allowed;

    void close_drop(DropSummary& summary, CloseReason reason, std::vector<AggregatedRecord>& out) {
        if (summary.count == 0) {
            return; // nothing beyond the first occurrence, which was emitted already
        }
        summary.closed_by = reason;
        ++stats.drop_summaries;
        out.emplace_back(std::move(summary));
    }
    void close_allowed(AllowedFlowSummary& summary, CloseReason reason,
                       std::vector<AggregatedRecord>& out) {
        summary.closed_by = reason;
        ++stats.allowed_summaries;
        out.emplace_back(std::move(summary));
    }

    void advance(std::int64_t now_ns, std::vector<AggregatedRecord>& out) {
        while (auto opened = drops.front_opened()) {
            if (now_ns - *opened < config.drop_window_ns)
                break;
            drops.pop_front([&](DropSummary& s) { close_drop(s, CloseReason::Window, out); });
        }
        while (auto opened = allowed.front_opened()) {
            if (now_ns - *opened < config.allowed_interval_ns)
                break;
            allowed.pop_front(
                [&](AllowedFlowSummary& s) { close_allowed(s, CloseReason::Window, out); });
        }
    }

    // Whether `e` opens a connection attempt the window has not seen (a source port of its
    // own) and may still be emitted; if so, the window remembers the port.
    bool new_attempt(DropSummary& window, const DropEvent& e) const {
        // What a new attempt changes: the source port, or an ICMP echo's identifier.
        auto attempt_of = [](const DropEvent& d) { return d.sport ? d.sport : d.icmp_id; };
        const auto attempt = attempt_of(e);
        if (!attempt || *attempt == 0 || *attempt == attempt_of(window.first).value_or(0)) {
            return false;
        }
        const std::size_t limit = std::min(config.max_attempts_per_window, window.attempt_sports.size());
        for (std::size_t k = 0; k < window.attempts; ++k) {
            if (window.attempt_sports[k] == *attempt) {
                return false;
            }
        }
        if (window.attempts >= limit) {
            return false;
        }
        window.attempt_sports[window.attempts++] = *attempt;
        return true;
    }

    void add_drop(const DropEvent& e, std::int64_t now_ns, std::vector<AggregatedRecord>& out) {
        ++stats.drops_in;
        DropKey key{e.workload,   e.indev,     e.outdev, e.src,  e.dst,
                    target_of(e), e.direction, e.reason, e.mode, e.policy_generation};
        if (auto* entry = drops.find(key)) {
            if (new_attempt(entry->value, e)) {
                out.emplace_back(e);
                ++stats.drops_emitted;
                ++stats.attempts_emitted;
                return;
            }
            ++entry->value.count;
            entry->value.last_seen_ns = e.timestamp_ns;
            ++stats.repeats_counted;
            return;
        }
        while (!drops.entries.empty() && drops.entries.size() >= config.max_drop_keys) {
            ++stats.drop_keys_evicted;
            drops.pop_front([&](DropSummary& s) { close_drop(s, CloseReason::Evicted, out); });
        }
        out.emplace_back(e);
        ++stats.drops_emitted;
        if (config.max_drop_keys == 0) {
            return; // aggregation disabled: every event is emitted
        }
        DropSummary summary;
        summary.first = e;
        summary.first_seen_ns = e.timestamp_ns;
        summary.last_seen_ns = e.timestamp_ns;
        summary.window_ns = config.drop_window_ns;
        drops.open(std::move(key), now_ns, std::move(summary));
    }

    void add_allowed(const DropEvent& e, std::int64_t now_ns, std::vector<AggregatedRecord>& out) {
        ++stats.allowed_in;
        const Target target = target_of(e);
        AllowedKey key{e.workload,
                       attribution_interface(e),
                       e.direction,
                       e.direction == Direction::In ? e.src : policy::IpAddress{},
                       e.dst,
                       target,
                       e.policy_generation};
        if (auto* entry = allowed.find(key)) {
            ++entry->value.count;
            entry->value.last_seen_ns = e.timestamp_ns;
            return;
        }
        while (!allowed.entries.empty() && allowed.entries.size() >= config.max_allowed_keys) {
            ++stats.allowed_keys_evicted;
            allowed.pop_front(
                [&](AllowedFlowSummary& s) { close_allowed(s, CloseReason::Evicted, out); });
        }
        AllowedFlowSummary s;
        s.workload = e.workload;
        s.interface = key.interface;
        s.direction = e.direction;
        s.subject = e.subject;
        if (e.direction == Direction::In) {
            s.peer = e.src;
        }
        s.dst = e.dst;
        s.protocol = e.protocol;
        s.dport = e.dport;
        s.icmp_type = e.icmp_type;
        s.icmp_code = e.icmp_code;
        s.count = 1;
        s.first_seen_ns = e.timestamp_ns;
        s.last_seen_ns = e.timestamp_ns;
        s.interval_ns = config.allowed_interval_ns;
        s.policy_generation = e.policy_generation;
        if (config.max_allowed_keys == 0) {
            close_allowed(s, CloseReason::Evicted, out);
            return;
        }
        allowed.open(std::move(key), now_ns, std::move(s));
    }
};

EventAggregator::EventAggregator(AggregatorConfig config) : state_(std::make_unique<State>()) {
    state_->config = config;
}
EventAggregator::~EventAggregator() = default;
EventAggregator::EventAggregator(EventAggregator&&) noexcept = default;
EventAggregator& EventAggregator::operator=(EventAggregator&&) noexcept = default;

void EventAggregator::add(const DropEvent& event, std::int64_t now_ns,
                          std::vector<AggregatedRecord>& out) {
    state_->advance(now_ns, out);
    if (event.is_allowed_flow()) {
        state_->add_allowed(event, now_ns, out);
    } else {
        state_->add_drop(event, now_ns, out);
    }
}

void EventAggregator::advance(std::int64_t now_ns, std::vector<AggregatedRecord>& out) {
    state_->advance(now_ns, out);
}

void EventAggregator::flush(std::vector<AggregatedRecord>& out) {
    auto& s = *state_;
    while (!s.drops.order.empty()) {
        s.drops.pop_front([&](DropSummary& d) { s.close_drop(d, CloseReason::Flush, out); });
    }
    while (!s.allowed.order.empty()) {
        s.allowed.pop_front(
            [&](AllowedFlowSummary& a) { s.close_allowed(a, CloseReason::Flush, out); });
    }
}

std::optional<std::int64_t> EventAggregator::next_deadline_ns() const {
    std::optional<std::int64_t> deadline;
    if (auto opened = state_->drops.front_opened()) {
        deadline = *opened + state_->config.drop_window_ns;
    }
    if (auto opened = state_->allowed.front_opened()) {
        const std::int64_t d = *opened + state_->config.allowed_interval_ns;
        if (!deadline || d < *deadline)
            deadline = d;
    }
    return deadline;
}

std::size_t EventAggregator::open_drop_keys() const {
    return state_->drops.entries.size();
}
std::size_t EventAggregator::open_allowed_keys() const {
    return state_->allowed.entries.size();
}
const AggregatorStats& EventAggregator::stats() const {
    return state_->stats;
}

namespace {

void put_time(nlohmann::json& j, const char* key, std::int64_t ns) {
    j[std::string(key) + "_ns"] = ns;
    j[key] = format_time_utc(ns);
}

void put_target(nlohmann::json& j, std::uint8_t protocol, const std::optional<std::uint16_t>& dport,
                const std::optional<std::uint8_t>& icmp_type,
                const std::optional<std::uint8_t>& icmp_code) {
    j["proto"] = protocol;
    if (auto name = protocol_name(protocol); !name.empty()) {
        j["proto_name"] = std::string(name);
    }
    if (dport)
        j["dport"] = *dport;
    if (icmp_type)
        j["icmp_type"] = *icmp_type;
    if (icmp_code)
        j["icmp_code"] = *icmp_code;
}

} // namespace

nlohmann::json to_json(const DropSummary& s) {
    nlohmann::json j = to_json(s.first);
    // Per-packet fields of the first occurrence do not describe the repeats.
    for (const char* key : {"seq", "seq_global", "sport", "tcp_flags", "tcp_flags_raw", "ip_len",
                            "mark", "notes", "time", "time_ns", "time_source", "received_ns"}) {
        j.erase(key);
    }
    j["type"] = "drop_summary";
    j["count"] = s.count;
    j["total"] = s.total();
    j["time_unix_ms"] = s.last_seen_ns / 1'000'000;
    put_time(j, "first_seen", s.first_seen_ns);
    put_time(j, "last_seen", s.last_seen_ns);
    j["window_ms"] = s.window_ns / 1'000'000;
    j["closed_by"] = std::string(to_string(s.closed_by));
    return j;
}

nlohmann::json to_json(const AllowedFlowSummary& s) {
    nlohmann::json j;
    j["type"] = "allowed_flows";
    j["count"] = s.count;
    j["time_unix_ms"] = s.last_seen_ns / 1'000'000;
    put_time(j, "first_seen", s.first_seen_ns);
    put_time(j, "last_seen", s.last_seen_ns);
    j["interval_ms"] = s.interval_ns / 1'000'000;
    j["workload"] = s.workload;
    j["interface"] = s.interface;
    j["direction"] = std::string(to_string(s.direction));
    j["subject"] = s.subject;
    if (s.peer)
        j["src"] = policy::to_string(*s.peer);
    j["dst"] = policy::to_string(s.dst);
    j["family"] = s.dst.family == policy::Family::Ipv4 ? 4 : 6;
    put_target(j, s.protocol, s.dport, s.icmp_type, s.icmp_code);
    j["policy_generation"] = s.policy_generation;
    j["closed_by"] = std::string(to_string(s.closed_by));
    return j;
}

nlohmann::json to_json(const AggregatedRecord& record) {
    return std::visit([](const auto& r) { return to_json(r); }, record);
}

std::uint64_t record_count(const AggregatedRecord& record) {
    if (std::holds_alternative<DropEvent>(record))
        return 1;
    if (const auto* s = std::get_if<DropSummary>(&record))
        return s->count;
    return std::get<AllowedFlowSummary>(record).count;
}

} // namespace bulkhead::nflog
