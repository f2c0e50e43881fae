// EventAggregator: bursts without losing meaning.
#include "enforcer/nflog/event_aggregator.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

using namespace bulkhead;
using namespace bulkhead::nflog;

namespace {

constexpr std::int64_t ms = 1'000'000;
constexpr std::int64_t s = 1'000 * ms;
constexpr std::int64_t t0 = 1'700'000'000 * s;

DropEvent drop(std::uint16_t dport, std::int64_t at = t0, Reason reason = Reason::Deny) {
    DropEvent e;
    e.timestamp_ns = at;
    e.group = 10;
    e.prefix = "bh:enf:out:deny:c1";
    e.direction = Direction::Out;
    e.reason = reason;
    e.subject = "c1";
    e.indev = 4;
    e.indev_name = "vdi1";
    e.outdev = 2;
    e.outdev_name = "uplink";
    e.src = *policy::parse_ip_address("10.1.0.5");
    e.dst = *policy::parse_ip_address("10.9.0.1");
    e.protocol = 6;
    e.sport = 40000;
    e.dport = dport;
    e.tcp_flags = 0x02;
    e.workload = "vdi-001";
    e.policy_generation = 3;
    return e;
}

// An ICMP echo request: no ports, no identifier unless the test sets one.
DropEvent echo_request(std::int64_t at) {
    auto e = drop(0, at);
    e.protocol = 1;
    e.sport.reset();
    e.dport.reset();
    e.icmp_type = 8;
    return e;
}

std::uint64_t total_count(const std::vector<AggregatedRecord>& records) {
    return std::accumulate(records.begin(), records.end(), std::uint64_t{0},
                           [](std::uint64_t sum, const auto& r) { return sum + record_count(r); });
}

template <typename T> std::size_t count_of(const std::vector<AggregatedRecord>& records) {
    return static_cast<std::size_t>(
        std::count_if(records.begin(), records.end(),
                      [](const auto& r) { return std::holds_alternative<T>(r); }));
}

} // namespace

TEST_CASE("nflog aggregator: a 1,000-port scan is 1,000 distinct events, emitted at once") {
    EventAggregator aggregator;
    std::vector<AggregatedRecord> out;
    for (std::uint16_t port = 1; port <= 1000; ++port) {
        aggregator.add(drop(port, t0 + port), t0 + port, out);
    }
    REQUIRE(out.size() == 1000);
    std::set<std::uint16_t> ports;
    for (const auto& r : out) {
        REQUIRE(std::holds_alternative<DropEvent>(r));
        ports.insert(*std::get<DropEvent>(r).dport);
    }
    CHECK(ports.size() == 1000);
    // Closing the windows adds nothing: no key was repeated.
    aggregator.advance(t0 + 10 * s, out);
    CHECK(out.size() == 1000);
    CHECK(aggregator.open_drop_keys() == 0);
}

TEST_CASE("nflog aggregator: a new source port within the window is a new attempt, emitted at once, "
          "up to the limit; its retransmits and ports beyond the limit are counted") {
    EventAggregator aggregator; // max_attempts_per_window 3
    std::vector<AggregatedRecord> out;
    auto at = [](std::int64_t t, std::uint16_t sport) {
        auto e = drop(443, t);
        e.sport = sport;
        return e;
    };
    aggregator.add(at(t0, 40000), t0, out);                       // opens the window
    aggregator.add(at(t0 + 100 * ms, 40000), t0 + 100 * ms, out); // its retransmit: counted
    aggregator.add(at(t0 + 200 * ms, 40001), t0 + 200 * ms, out); // a new attempt: emitted
    aggregator.add(at(t0 + 300 * ms, 40001), t0 + 300 * ms, out); // its retransmit: counted
    aggregator.add(at(t0 + 400 * ms, 40002), t0 + 400 * ms, out);
    aggregator.add(at(t0 + 500 * ms, 40003), t0 + 500 * ms, out);
    aggregator.add(at(t0 + 600 * ms, 40004), t0 + 600 * ms, out); // beyond the limit: counted
    REQUIRE(out.size() == 4);
    std::vector<std::uint16_t> emitted;
    for (const auto& r : out) {
        REQUIRE(std::holds_alternative<DropEvent>(r));
        emitted.push_back(*std::get<DropEvent>(r).sport);
    }
    CHECK(emitted == std::vector<std::uint16_t>{40000, 40001, 40002, 40003});
    CHECK(aggregator.stats().attempts_emitted == 3);
    CHECK(aggregator.stats().repeats_counted == 3);
    aggregator.advance(t0 + 1 * s, out);
    REQUIRE(out.size() == 5);
    REQUIRE(std::holds_alternative<DropSummary>(out[4]));
    CHECK(std::get<DropSummary>(out[4]).count == 3);
    CHECK(total_count(out) == 7); // every packet counted once

    // ICMP echo: a new identifier (another ping process) is a new attempt; the same one with
    // the next sequence number (one `ping` running on) is a repeat.
    EventAggregator pings;
    std::vector<AggregatedRecord> ping_out;
    for (int i = 0; i < 6; ++i) {
        auto e = echo_request(t0 + i * 100 * ms);
        e.icmp_id = static_cast<std::uint16_t>(i < 3 ? 700 : 700 + i); // 700 x3, then 703, 704, 705
        e.icmp_seq = static_cast<std::uint16_t>(i + 1);
        pings.add(e, t0 + i * 100 * ms, ping_out);
    }
    CHECK(ping_out.size() == 4);

    // Without a source port or an identifier (other ICMP), nothing counts as an attempt.
    EventAggregator icmp;
    std::vector<AggregatedRecord> icmp_out;
    for (int i = 0; i < 5; ++i) {
        icmp.add(echo_request(t0 + i * 100 * ms), t0 + i * 100 * ms, icmp_out);
    }
    CHECK(icmp_out.size() == 1);
}

TEST_CASE("nflog aggregator: 100 identical repeats are one event plus one summary of 99") {
    EventAggregator aggregator;
    std::vector<AggregatedRecord> out;
    for (int i = 0; i < 100; ++i) {
        aggregator.add(drop(3389, t0 + i * 5 * ms), t0 + i * 5 * ms, out); // one source port
    }
    REQUIRE(out.size() == 1);
    CHECK(std::holds_alternative<DropEvent>(out[0]));
    CHECK(aggregator.stats().repeats_counted == 99);

    aggregator.advance(t0 + 999 * ms, out); // the window is still open
    CHECK(out.size() == 1);
    aggregator.advance(t0 + 1 * s, out);
    REQUIRE(out.size() == 2);
    REQUIRE(std::holds_alternative<DropSummary>(out[1]));
    const auto& summary = std::get<DropSummary>(out[1]);
    CHECK(summary.count == 99);
    CHECK(summary.total() == 100);
    CHECK(summary.first_seen_ns == t0);
    CHECK(summary.last_seen_ns == t0 + 99 * 5 * ms);
    CHECK(summary.closed_by == CloseReason::Window);
    CHECK(total_count(out) == 100);

    auto j = to_json(out[1]);
    CHECK(j["type"] == "drop_summary");
    CHECK(j["count"] == 99);
    CHECK(j["total"] == 100);
    CHECK(j["dport"] == 3389);
    CHECK(j["workload"] == "vdi-001");
    CHECK(j["first_seen_ns"] == t0);
    CHECK(j["window_ms"] == 1000);
    CHECK_FALSE(j.contains("sport")); // the first packet's, not the repeats'
    CHECK_FALSE(j.contains("seq"));
}

TEST_CASE("nflog aggregator: after the window a repeat is a new first occurrence") {
    EventAggregator aggregator;
    std::vector<AggregatedRecord> out;
    aggregator.add(drop(22, t0), t0, out);
    aggregator.add(drop(22, t0 + 400 * ms), t0 + 400 * ms, out);
    CHECK(aggregator.next_deadline_ns() == t0 + 1 * s);
    // add() closes expired windows first
    aggregator.add(drop(22, t0 + 1200 * ms), t0 + 1200 * ms, out);
    REQUIRE(out.size() == 3);
    CHECK(std::holds_alternative<DropEvent>(out[0]));
    CHECK(std::holds_alternative<DropSummary>(out[1]));
    CHECK(std::get<DropSummary>(out[1]).count == 1);
    CHECK(std::holds_alternative<DropEvent>(out[2]));
    CHECK(total_count(out) == 3);
}

TEST_CASE("nflog aggregator: what distinguishes keys") {
    EventAggregator aggregator;
    std::vector<AggregatedRecord> out;
    auto base = drop(80);
    std::vector<DropEvent> variants(8, base);
    variants[1].dst = *policy::parse_ip_address("10.9.0.2");
    variants[2].src = *policy::parse_ip_address("10.1.0.6");
    variants[3].protocol = 17;
    variants[4].reason = Reason::Default;
    variants[5].direction = Direction::In;
    variants[6].workload = "vdi-002";
    variants[7].mode = policy::Mode::Monitor;
    for (const auto& v : variants) {
        aggregator.add(v, t0, out);
    }
    CHECK(count_of<DropEvent>(out) == 8);
    auto same_but_sport = base;
    same_but_sport.sport = 1;
    aggregator.add(same_but_sport, t0, out);
    CHECK(count_of<DropEvent>(out) == 9);        // emitted as a new attempt,
    CHECK(aggregator.open_drop_keys() == 8);     // but the source port is not part of the key
    aggregator.add(same_but_sport, t0, out);
    CHECK(count_of<DropEvent>(out) == 9);        // and its retransmit is counted
}

TEST_CASE("nflog aggregator: memory is capped, the oldest window closes early and is counted") {
    AggregatorConfig config;
    config.max_drop_keys = 10;
    EventAggregator aggregator(config);
    std::vector<AggregatedRecord> out;
    aggregator.add(drop(1), t0, out);
    aggregator.add(drop(1), t0, out); // a repeat for the oldest key
    for (std::uint16_t port = 2; port <= 11; ++port) {
        aggregator.add(drop(port), t0, out);
    }
    CHECK(aggregator.open_drop_keys() == 10);
    CHECK(aggregator.stats().drop_keys_evicted == 1);
    CHECK(count_of<DropEvent>(out) == 11);
    REQUIRE(count_of<DropSummary>(out) == 1);
    auto summary = std::find_if(out.begin(), out.end(), [](const auto& r) {
        return std::holds_alternative<DropSummary>(r);
    });
    CHECK(std::get<DropSummary>(*summary).closed_by == CloseReason::Evicted);
    CHECK(*std::get<DropSummary>(*summary).first.dport == 1);
    CHECK(total_count(out) == 12);

    SUBCASE("a flood of distinct keys never loses a first occurrence") {
        for (std::uint16_t port = 100; port < 5100; ++port) {
            aggregator.add(drop(port), t0, out);
        }
        CHECK(aggregator.open_drop_keys() == 10);
        CHECK(total_count(out) == 5012);
    }
}

TEST_CASE("nflog aggregator: allowed connections are summarised per interval") {
    EventAggregator aggregator;
    std::vector<AggregatedRecord> out;
    for (int i = 0; i < 5; ++i) {
        auto e = drop(443, t0 + i * s, Reason::Allow);
        e.group = 11;
        e.sport = static_cast<std::uint16_t>(50000 + i);
        aggregator.add(e, t0 + i * s, out);
    }
    auto other = drop(53, t0 + 2 * s, Reason::Allow);
    other.protocol = 17;
    aggregator.add(other, t0 + 2 * s, out);
    CHECK(out.empty()); // never one by one
    CHECK(aggregator.open_allowed_keys() == 2);

    aggregator.advance(t0 + 59 * s, out);
    CHECK(out.empty());
    aggregator.advance(t0 + 60 * s, out);
    REQUIRE(out.size() == 1);
    const auto& https = std::get<AllowedFlowSummary>(out[0]);
    CHECK(https.count == 5);
    CHECK(https.workload == "vdi-001");
    CHECK(https.interface == "vdi1");
    CHECK(*https.dport == 443);
    CHECK(https.first_seen_ns == t0);
    CHECK(https.last_seen_ns == t0 + 4 * s);
    CHECK_FALSE(https.peer); // direction out: the source is the workload

    aggregator.flush(out);
    REQUIRE(out.size() == 2);
    CHECK(std::get<AllowedFlowSummary>(out[1]).closed_by == CloseReason::Flush);
    CHECK(total_count(out) == 6);

    auto j = to_json(out[0]);
    CHECK(j["type"] == "allowed_flows");
    CHECK(j["count"] == 5);
    CHECK(j["dst"] == "10.9.0.1");
    CHECK(j["proto_name"] == "tcp");
    CHECK(j["interval_ms"] == 60'000);
    CHECK_FALSE(j.contains("src"));
}

TEST_CASE("nflog aggregator: allowed inbound connections keep the peer") {
    EventAggregator aggregator;
    std::vector<AggregatedRecord> out;
    for (const char* peer : {"10.5.0.1", "10.5.0.2", "10.5.0.1"}) {
        auto e = drop(3389, t0, Reason::Allow);
        e.direction = Direction::In;
        e.src = *policy::parse_ip_address(peer);
        aggregator.add(e, t0, out);
    }
    aggregator.flush(out);
    REQUIRE(out.size() == 2);
    std::map<std::string, std::uint64_t> by_peer;
    for (const auto& r : out) {
        const auto& a = std::get<AllowedFlowSummary>(r);
        REQUIRE(a.peer);
        CHECK(a.interface == "uplink"); // direction in: the output interface
        by_peer[policy::to_string(*a.peer)] = a.count;
    }
    CHECK(by_peer["10.5.0.1"] == 2);
    CHECK(by_peer["10.5.0.2"] == 1);
}

TEST_CASE("nflog aggregator: the sum of counts equals the events added, whatever the mix") {
    AggregatorConfig config;
    config.max_drop_keys = 64;
    config.max_allowed_keys = 16;
    EventAggregator aggregator(config);
    std::vector<AggregatedRecord> out;
    std::uint64_t added = 0;
    std::uint32_t x = 12345;
    for (int i = 0; i < 20'000; ++i) {
        x = x * 1103515245U + 12345U; // deterministic pseudo-random mix
        const auto reason = (x >> 8) % 4 == 0 ? Reason::Allow : Reason::Deny;
        const auto at = t0 + i * ms / 4;
        aggregator.add(drop(static_cast<std::uint16_t>((x >> 16) % 200), at, reason), at, out);
        ++added;
    }
    aggregator.flush(out);
    CHECK(total_count(out) == added);
    CHECK(aggregator.open_drop_keys() == 0);
    CHECK(aggregator.open_allowed_keys() == 0);
}
