// Beaconing: attempts told apart by their source port, not only by time.
#include "test_analyzer_support.hpp"

#include <cmath>
#include <doctest/doctest.h>
#include <initializer_list>
#include <set>

using namespace bulkhead::test::analyzer;

namespace {

constexpr std::int64_t MS = 1'000'000;

// One connection attempt: the first SYN at t and the kernel's retransmits (offsets from t),
// all from the attempt's source port.
void attempt(std::vector<DropRecord>& records, std::int64_t t, std::uint16_t sport,
             std::initializer_list<std::int64_t> retransmits = {0, S, 3 * S},
             const std::string& destination = "203.0.113.7", std::uint16_t dport = 443) {
    for (const auto offset : retransmits) {
        auto r = drop(Source{}, destination, dport, t + offset);
        r.sport = sport;
        records.push_back(std::move(r));
    }
}

// Records in time order (an attempt's retransmits interleave with the next attempts).
std::vector<DropRecord> in_time_order(std::vector<DropRecord> records) {
    std::stable_sort(records.begin(), records.end(),
                     [](const DropRecord& a, const DropRecord& b) { return a.time_ns < b.time_ns; });
    return records;
}

} // namespace

TEST_CASE("beaconing: a new source port is a new attempt, the same one a retransmit") {
    SUBCASE("a 3 s beacon whose SYNs are retransmitted at 1 s and 3 s is seen") {
        // Before source ports were read, drops under 5 s apart were one endless attempt.
        Analyzer a;
        std::vector<DropRecord> records;
        for (int i = 0; i < 17; ++i) {
            attempt(records, T0 + i * 3 * S, static_cast<std::uint16_t>(50000 + 7 * i));
        }
        auto findings = feed_all(a, in_time_order(records));
        REQUIRE(count_rule(findings, Rule::Beaconing) == 1);
        CHECK(first_of(findings, Rule::Beaconing)->explanation.find(" 17 times every 3.0 s") !=
              std::string::npos);
    }
    SUBCASE("the same 3 s beacon without source ports falls back to silence, and is not seen") {
        Analyzer a;
        std::vector<DropRecord> records;
        for (int i = 0; i < 17; ++i) {
            attempt(records, T0 + i * 3 * S, 0);
        }
        for (auto& r : records) {
            r.sport.reset();
        }
        CHECK(count_rule(feed_all(a, in_time_order(records)), Rule::Beaconing) == 0);
    }
    SUBCASE("a retransmit long after its SYN stays in its attempt") {
        // Linux with a 30 s connect timeout: 0, 1, 3, 7, 15 s. The 7 s and 15 s retransmits
        // are past the silence rule's 5 s, yet they are the same attempt.
        Analyzer a;
        std::vector<DropRecord> records;
        for (int i = 0; i < 9; ++i) {
            attempt(records, T0 + i * 60 * S, static_cast<std::uint16_t>(40000 + i),
                    {0, S, 3 * S, 7 * S, 15 * S});
        }
        auto findings = feed_all(a, in_time_order(records));
        REQUIRE(count_rule(findings, Rule::Beaconing) == 1);
        CHECK(first_of(findings, Rule::Beaconing)->explanation.find(" 9 times every 60 s") !=
              std::string::npos);
    }
    SUBCASE("a burst of parallel connections is one attempt, not a fast beacon") {
        Analyzer a;
        std::vector<DropRecord> records;
        for (int i = 0; i < 40; ++i) { // a browser's 40 connects, 10 ms apart, each retried
            attempt(records, T0 + i * 10 * MS, static_cast<std::uint16_t>(50000 + i));
        }
        CHECK(count_rule(feed_all(a, in_time_order(records)), Rule::Beaconing) == 0);
    }
    SUBCASE("bursts every 60 s are one attempt each") {
        Analyzer a;
        std::vector<DropRecord> records;
        for (int i = 0; i < 9; ++i) {
            for (int k = 0; k < 6; ++k) {
                attempt(records, T0 + i * 60 * S + k * 20 * MS,
                        static_cast<std::uint16_t>(50000 + 10 * i + k));
            }
        }
        auto findings = feed_all(a, in_time_order(records));
        REQUIRE(count_rule(findings, Rule::Beaconing) == 1);
        CHECK(first_of(findings, Rule::Beaconing)->explanation.find(" 9 times every 60 s") !=
              std::string::npos);
    }
}

namespace {

// A beacon: one attempt (SYN and retransmits at 1 s and 3 s, a new port each) per period,
// the period stretched by the factors in turn (the jitter), `attempts` attempts.
std::vector<DropRecord> beacon(double period_s, std::initializer_list<double> factors, int attempts,
                               const Source& source = Source{}, const std::string& destination = "203.0.113.7") {
    std::vector<DropRecord> records;
    std::int64_t t = T0;
    const std::vector<double> jitter(factors);
    for (int i = 0; i < attempts; ++i) {
        for (const std::int64_t offset : {std::int64_t{0}, S, 3 * S}) {
            auto r = drop(source, destination, 443, t + offset);
            r.sport = static_cast<std::uint16_t>(50000 + i);
            records.push_back(std::move(r));
        }
        t += static_cast<std::int64_t>(period_s * jitter[static_cast<std::size_t>(i) % jitter.size()] * 1e9);
    }
    return in_time_order(std::move(records));
}

// The attempt (1-based, by source port) whose drop raised the first beaconing finding; 0: none.
std::size_t attempt_that_fired(Analyzer& a, const std::vector<DropRecord>& records) {
    std::set<std::uint16_t> ports;
    for (const auto& r : records) {
        ports.insert(r.sport.value_or(0));
        for (const auto& f : feed(a, r)) {
            if (f.rule == Rule::Beaconing) {
                return ports.size();
            }
        }
    }
    return 0;
}

} // namespace

TEST_CASE("beaconing: a period and its jitter are judged over 8 intervals or more, 16 under 15 s") {
    // The widest +-30 % jitter, in turn: more intervals are needed than with little jitter,
    // since 8 random intervals look that regular too often (beaconing.cpp, max_variation).
    const auto jitter30 = {1.3, 0.7, 1.15, 0.85, 1.0, 1.25, 0.75, 1.1, 0.9, 1.2, 0.8, 1.05};
    const auto jitter10 = {1.1, 0.9, 1.05, 0.95, 1.0, 1.08, 0.92, 1.02};
    SUBCASE("30 s with +-10 % jitter: found on the 9th attempt, 8 intervals") {
        Analyzer a;
        CHECK(attempt_that_fired(a, beacon(30, jitter10, 20)) == 9);
    }
    SUBCASE("30 s with +-30 % jitter: found on the 13th attempt, 12 intervals") {
        Analyzer a;
        CHECK(attempt_that_fired(a, beacon(30, jitter30, 20)) == 13);
    }
    SUBCASE("1 h with +-30 % jitter: found on the 13th attempt") {
        Analyzer a;
        CHECK(attempt_that_fired(a, beacon(3600, jitter30, 16)) == 13);
    }
    SUBCASE("2 s with +-30 % jitter: found on the 17th attempt, 16 intervals") {
        Analyzer a;
        CHECK(attempt_that_fired(a, beacon(2, jitter30, 30)) == 17);
    }
    SUBCASE("the explanation gives period, jitter and count") {
        Analyzer a;
        auto findings = feed_all(a, beacon(60, {1.0, 1.1, 0.9}, 9));
        REQUIRE(count_rule(findings, Rule::Beaconing) == 1);
        const auto* f = first_of(findings, Rule::Beaconing);
        CHECK(f->explanation.starts_with("vdi-001 (user kimura) retried 203.0.113.7 tcp/443 9 times every 60 s "
                                         "±10 % (8 intervals: median absolute deviation 10 %, skew "));
        CHECK(f->severity == Severity::Medium);
    }
    SUBCASE("a managed server's check of an inventory workload on a schedule is a job: counted, not reported") {
        Analyzer a;
        std::vector<DropRecord> records = beacon(60, {1.0}, 12, server(), "10.0.0.62");
        for (auto& r : records) {
            r.destination_workload = "app-02";
        }
        CHECK(count_rule(feed_all(a, records), Rule::Beaconing) == 0);
        CHECK(a.totals().scheduled_jobs == 1); // once per series, not per attempt
    }
    SUBCASE("the same check from a server the inventory does not name is low severity") {
        Analyzer a;
        std::vector<DropRecord> records = beacon(60, {1.0}, 9, server(""), "10.0.0.62");
        for (auto& r : records) {
            r.destination_workload = "app-02";
        }
        auto findings = feed_all(a, records);
        REQUIRE(count_rule(findings, Rule::Beaconing) == 1);
        CHECK(first_of(findings, Rule::Beaconing)->severity == Severity::Low);
        CHECK(a.totals().scheduled_jobs == 0);
    }
}

TEST_CASE("beaconing: an ICMP echo's identifier tells attempts apart") {
    auto echo = [](std::int64_t t, std::uint16_t id) {
        auto r = drop(Source{}, "203.0.113.50", 0, t, 1);
        r.dport.reset();
        r.sport = id; // ingest puts the echo identifier there
        return r;
    };
    SUBCASE("a ping every 2 s from a new process each time is a beacon") {
        Analyzer a;
        std::vector<DropRecord> records;
        for (int i = 0; i < 20; ++i) {
            records.push_back(echo(T0 + i * 2 * S, static_cast<std::uint16_t>(9000 + i)));
        }
        CHECK(count_rule(feed_all(a, records), Rule::Beaconing) == 1);
    }
    SUBCASE("one ping running (one identifier, a request a second) is one attempt, not a beacon") {
        Analyzer a;
        std::vector<DropRecord> records;
        for (int i = 0; i < 120; ++i) {
            records.push_back(echo(T0 + i * S, 9000));
        }
        CHECK(count_rule(feed_all(a, records), Rule::Beaconing) == 0);
    }
}

TEST_CASE("beaconing: one finding per (source, destination) beacon") {
    Analyzer a;
    // Two C2 addresses from one desktop, 60 s apart in phase; a third series to the first
    // address's other port would be a third. Each is reported once within the hour.
    std::vector<DropRecord> records = beacon(60, {1.0, 1.05, 0.95}, 20, Source{}, "203.0.113.7");
    for (auto& r : beacon(60, {0.97, 1.03}, 20, Source{}, "198.51.100.9")) {
        r.time_ns += 7 * S;
        r.sport = static_cast<std::uint16_t>(*r.sport + 1000);
        records.push_back(std::move(r));
    }
    auto findings = feed_all(a, in_time_order(std::move(records)));
    REQUIRE(count_rule(findings, Rule::Beaconing) == 2);
    std::set<std::string> targets;
    for (const auto& f : findings) {
        if (f.rule == Rule::Beaconing) {
            targets.insert(f.sample_targets.at(0));
        }
    }
    CHECK(targets == std::set<std::string>{"203.0.113.7 tcp/443", "198.51.100.9 tcp/443"});
    CHECK(a.totals().incidents == 1); // both on the source's incident
}

TEST_CASE("beaconing: random retries are not beacons (exponential intervals, many series)") {
    // The bulk of drop traffic: programs and users retrying blocked targets at random times.
    // Every new attempt is a judgement, so even a small chance per judgement adds up.
    Analyzer a;
    std::uint64_t state = 12345;
    auto uniform = [&] {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        return (static_cast<double>(state >> 11) + 0.5) / 9007199254740992.0;
    };
    std::size_t attempts = 0;
    std::vector<DropRecord> records;
    for (int k = 0; k < 400; ++k) {
        // A source each, so that one finding's quiet period cannot hide the next.
        const Source source{"hv1", "vdi-" + std::to_string(1000 + k), "user" + std::to_string(k), {"role=vdi"},
                            "10.1." + std::to_string(k / 200) + "." + std::to_string(k % 200 + 1)};
        std::int64_t t = T0;
        const double mean_s = 5.0 + 10.0 * (k % 60); // 5 s to 10 min between retries
        for (int i = 0; i < 40; ++i) {
            auto r = drop(source, "203.0.113." + std::to_string(k % 200), 443, t);
            r.sport = static_cast<std::uint16_t>(40000 + (i * 131 + k) % 20000);
            records.push_back(std::move(r));
            ++attempts;
            t += static_cast<std::int64_t>(-std::log(uniform()) * mean_s * 1e9) + 600 * MS;
        }
    }
    const auto findings = count_rule(feed_all(a, in_time_order(std::move(records))), Rule::Beaconing);
    CHECK(attempts == 16000);
    CHECK(findings == 0);
}

TEST_CASE("beaconing: back-off and bursts of retries are not beacons") {
    SUBCASE("exponential back-off") {
        Analyzer a;
        std::vector<DropRecord> records;
        std::int64_t t = T0;
        std::int64_t delay = S;
        for (int i = 0; i < 14; ++i) {
            attempt(records, t, static_cast<std::uint16_t>(41000 + i));
            t += 10 * S + delay;
            delay = std::min<std::int64_t>(delay * 2, 3000 * S);
        }
        CHECK(count_rule(feed_all(a, in_time_order(records)), Rule::Beaconing) == 0);
    }
    SUBCASE("a slow linear back-off: +8 % per retry") {
        Analyzer a;
        std::vector<DropRecord> records;
        double interval = 30;
        std::int64_t t = T0;
        for (int i = 0; i < 20; ++i) {
            attempt(records, t, static_cast<std::uint16_t>(42000 + i));
            t += static_cast<std::int64_t>(interval * 1e9);
            interval *= 1.08;
        }
        CHECK(count_rule(feed_all(a, in_time_order(records)), Rule::Beaconing) == 0);
    }
    SUBCASE("three tries 60 s apart every hour (a backup job's retries)") {
        Analyzer a;
        std::vector<DropRecord> records;
        for (int hour = 0; hour < 12; ++hour) {
            for (int k = 0; k < 3; ++k) {
                attempt(records, T0 + hour * 3000 * S + k * 60 * S, static_cast<std::uint16_t>(43000 + 3 * hour + k));
            }
        }
        CHECK(count_rule(feed_all(a, in_time_order(records)), Rule::Beaconing) == 0);
    }
}

TEST_CASE("beaconing: UDP ports and NTP") {
    SUBCASE("a UDP program keeping its socket: the same port after a silence is its next attempt") {
        Analyzer a;
        std::vector<DropRecord> records;
        for (int i = 0; i < 9; ++i) {
            auto r = drop(Source{}, "203.0.113.9", 53, T0 + i * 30 * S, 17);
            r.sport = 5353;
            records.push_back(std::move(r));
        }
        CHECK(count_rule(feed_all(a, records), Rule::Beaconing) == 1);
    }
    SUBCASE("NTP polls are periodic by design and not judged") {
        Analyzer a;
        std::vector<DropRecord> records;
        for (int i = 0; i < 20; ++i) {
            auto r = drop(server(), "203.0.113.123", 123, T0 + i * 1024 * S, 17);
            r.sport = 123;
            records.push_back(std::move(r));
        }
        CHECK(count_rule(feed_all(a, records), Rule::Beaconing) == 0);
    }
}
