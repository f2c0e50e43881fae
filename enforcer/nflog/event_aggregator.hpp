// EventAggregator: bursts of drop events in, records out, without losing meaning. Pure:
// the current time is a parameter of every call (any clock, as long as it is the same one).
//
// Drops are keyed by (workload, in/out interface, src, dst, protocol, dport or ICMP
// type/code, direction, reason, mode, policy generation); the source port is not part of
// the key, so retried connection attempts to one target are one fact.
//   - the first occurrence of a key is emitted at once, as the DropEvent itself;
//   - identical repeats within the window (default 1 s, from the first occurrence) are
//     counted and emitted as one DropSummary when the window closes (if there were any);
//   - except a new connection attempt: a packet whose source port is not one already seen in
//     the window (a retransmit repeats its attempt's port, a new connect gets a new one) is
//     emitted at once as well, up to max_attempts_per_window of them, so that the analyzer
//     sees when each attempt began (a beacon every 2 s would otherwise hide its new attempts
//     behind the window its previous attempt's retransmit opened). A burst of new ports beyond
//     that (a SYN flood) is counted as before;
//   - distinct keys are never merged: a scan of 1,000 ports is 1,000 records.
// Memory is bounded: at most max_drop_keys open windows; a new key beyond that closes the
// oldest window early (its summary is emitted, marked "evicted") and is counted.
// Invariant: the sum of "count" over every emitted record equals the number of events
// added (a DropEvent counts 1, a DropSummary counts its repeats, an AllowedFlowSummary its
// connections).
//
// Allowed new connections (reason allow) are never emitted one by one: they are counted per
// (workload, interface, direction, peer address for "in", destination address, protocol,
// dport or ICMP type/code, generation) over an interval (default 60 s from the key's first
// connection) and emitted as one AllowedFlowSummary with count and first/last seen.
#pragma once

#include "enforcer/nflog/drop_event.hpp"

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace bulkhead::nflog {

struct AggregatorConfig {
    std::int64_t drop_window_ns = 1'000'000'000;
    std::size_t max_drop_keys = 16'384;
    std::size_t max_attempts_per_window = 3; // new source ports emitted within one window
    std::int64_t allowed_interval_ns = 60'000'000'000;
    std::size_t max_allowed_keys = 65'536;
};

enum class CloseReason : std::uint8_t { Window, Evicted, Flush };
std::string_view to_string(CloseReason reason);

struct DropSummary {
    DropEvent first;                // the occurrence that opened the window (already emitted)
    // Source ports of the new attempts emitted within the window (0: unused).
    std::array<std::uint16_t, 4> attempt_sports{};
    std::size_t attempts = 0;
    std::uint64_t count = 0;        // repeats after `first`, not emitted individually
    std::int64_t first_seen_ns = 0; // event timestamps: first's and the last repeat's
    std::int64_t last_seen_ns = 0;
    std::int64_t window_ns = 0;
    CloseReason closed_by = CloseReason::Window;
    std::uint64_t total() const { return count + 1; }
};

struct AllowedFlowSummary {
    std::string workload;  // source workload (out) or destination workload (in); "" unknown
    std::string interface; // the interface the workload was attributed through
    Direction direction = Direction::Out;
    std::string subject;                   // policy class
    std::optional<policy::IpAddress> peer; // direction in: the source address
    policy::IpAddress dst;
    std::uint8_t protocol = 0;
    std::optional<std::uint16_t> dport;
    std::optional<std::uint8_t> icmp_type, icmp_code;
    std::uint64_t count = 0; // new connections
    std::int64_t first_seen_ns = 0;
    std::int64_t last_seen_ns = 0;
    std::int64_t interval_ns = 0;
    std::uint64_t policy_generation = 0;
    CloseReason closed_by = CloseReason::Window;
};

using AggregatedRecord = std::variant<DropEvent, DropSummary, AllowedFlowSummary>;

// "type": "drop_summary" / "allowed_flows"; see README.md for the fields.
nlohmann::json to_json(const DropSummary& summary);
nlohmann::json to_json(const AllowedFlowSummary& summary);
nlohmann::json to_json(const AggregatedRecord& record);
std::uint64_t record_count(const AggregatedRecord& record); // its "count"

struct AggregatorStats {
    std::uint64_t drops_in = 0;
    std::uint64_t drops_emitted = 0;   // first occurrences emitted as DropEvent
    std::uint64_t attempts_emitted = 0; // of which new attempts within an open window
    std::uint64_t repeats_counted = 0; // folded into summaries
    std::uint64_t drop_summaries = 0;
    std::uint64_t drop_keys_evicted = 0;
    std::uint64_t allowed_in = 0;
    std::uint64_t allowed_summaries = 0;
    std::uint64_t allowed_keys_evicted = 0;
};

class EventAggregator {
  public:
    explicit EventAggregator(AggregatorConfig config = {});
    ~EventAggregator();
    EventAggregator(EventAggregator&&) noexcept;
    EventAggregator& operator=(EventAggregator&&) noexcept;

    // Windows that have closed by `now_ns` are emitted first, then the event is taken in.
    void add(const DropEvent& event, std::int64_t now_ns, std::vector<AggregatedRecord>& out);
    // Emits what has closed by `now_ns` (call it from the loop's timer).
    void advance(std::int64_t now_ns, std::vector<AggregatedRecord>& out);
    // Emits every open window (shutdown).
    void flush(std::vector<AggregatedRecord>& out);
    // When the next window closes, if any is open (for the loop's poll timeout).
    std::optional<std::int64_t> next_deadline_ns() const;

    std::size_t open_drop_keys() const;
    std::size_t open_allowed_keys() const;
    const AggregatorStats& stats() const;

  private:
    struct State;
    std::unique_ptr<State> state_;
};

} // namespace bulkhead::nflog
