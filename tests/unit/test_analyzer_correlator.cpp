// The analyzer's correlator: one incident per source, storm suppression, escalation,
// exemptions with an expiry, repeat offenders.
#include "test_analyzer_support.hpp"

#include <doctest/doctest.h>

using namespace bulkhead::test::analyzer;

namespace {

// A server sweeping `hosts` hosts on tcp/8080, one every 100 ms from `start`.
std::vector<DropRecord> sweep(const Source& s, int hosts, std::int64_t start, int first_host = 1) {
    std::vector<DropRecord> records;
    for (int i = 0; i < hosts; ++i) {
        records.push_back(drop(s, host(first_host + i), 8080, start + i * S / 10));
    }
    return records;
}

} // namespace

TEST_CASE("analyzer: a storm is one finding per window, its incident keeps counting") {
    Analyzer a;
    auto findings = feed_all(a, sweep(server(), 200, T0)); // 200 hosts in 20 s
    CHECK(count_rule(findings, Rule::HostSweep) == 1);
    REQUIRE(a.incidents().size() == 1);
    const auto& incident = *a.incidents()[0];
    CHECK(incident.findings[static_cast<std::size_t>(Rule::HostSweep)] == 1);
    CHECK(incident.suppressed[static_cast<std::size_t>(Rule::HostSweep)] == 200 - 16);
    CHECK(incident.events == 200 - 15); // from the event that opened it
    CHECK(a.totals().suppressed >= 200 - 16);

    SUBCASE("after the window the detector fires again, into the same incident") {
        auto more = feed_all(a, sweep(server(), 20, T0 + 120 * S, 300));
        CHECK(count_rule(more, Rule::HostSweep) == 1);
        REQUIRE(a.incidents().size() == 1);
        CHECK(a.incidents()[0]->findings[static_cast<std::size_t>(Rule::HostSweep)] == 2);
        CHECK(a.incidents()[0]->timeline.size() == 2);
    }
    SUBCASE("counting the enforcer's folded repeats") {
        auto r = drop(server(), host(1), 8080, T0 + 21 * S);
        r.count = 50;
        feed(a, r);
        CHECK(a.incidents()[0]->events == 200 - 15 + 50);
    }
}

TEST_CASE("analyzer: escalation by detector kinds and repeat offence") {
    Analyzer a;
    feed_all(a, sweep(server(), 16, T0));
    REQUIRE(a.incidents().size() == 1);
    CHECK(a.incidents()[0]->severity == Severity::Medium);

    SUBCASE("a second detector kind raises the incident one level") {
        std::vector<DropRecord> ports;
        for (int p = 0; p < 16; ++p) {
            ports.push_back(drop(server(), "10.0.0.30", static_cast<std::uint16_t>(1000 + p),
                                 T0 + 2 * S + p * S / 10));
        }
        auto findings = feed_all(a, ports);
        CHECK(count_rule(findings, Rule::VerticalScan) == 1);
        REQUIRE(a.incidents().size() == 1);
        CHECK(a.incidents()[0]->severity == Severity::High); // max(medium, medium) + 1
    }
    SUBCASE("a decoy touch makes it critical") {
        auto r = drop(server(), "10.0.99.1", 22, T0 + 3 * S);
        r.reason = DropReason::Decoy;
        feed(a, r);
        CHECK(a.incidents()[0]->severity == Severity::Critical);
    }
    SUBCASE("a source whose incident was resolved comes back: repeat offender") {
        REQUIRE(a.resolve(1, T0 + 60 * S));
        CHECK(a.incidents()[0]->state == IncidentState::Resolved);
        CHECK_FALSE(a.resolve(1, T0 + 61 * S));
        // Re-armed at once: the next sweep inside the old quiet period fires.
        feed_all(a, sweep(server(), 16, T0 + 70 * S, 100));
        REQUIRE(a.incidents().size() == 2);
        CHECK(a.incidents()[1]->repeat_offender);
        CHECK(a.incidents()[1]->severity == Severity::High);
    }
    SUBCASE("after the repeat-offender period it is a first offence again") {
        REQUIRE(a.resolve(1, T0 + 60 * S));
        feed_all(a, sweep(server(), 16, T0 + 60 * S + 86401 * S, 100));
        REQUIRE(a.incidents().size() == 2);
        CHECK_FALSE(a.incidents()[1]->repeat_offender);
        CHECK(a.incidents()[1]->severity == Severity::Medium);
    }
    SUBCASE("an idle incident resolves itself, and the source then counts as a repeat offender") {
        feed(a, drop(server("other"), "10.9.9.9", 80, T0 + 2 * 3600 * S)); // time passes (sweep)
        CHECK(a.incidents()[0]->state == IncidentState::Resolved);
        CHECK(a.incidents()[0]->resolved_ns == T0 + 15 * S / 10 + 3600 * S);
        feed_all(a, sweep(server(), 16, T0 + 2 * 3600 * S + S, 100));
        REQUIRE(a.incidents().size() == 2);
        CHECK(a.incidents()[1]->repeat_offender);
    }
}

TEST_CASE("analyzer: exemptions silence a known scanner until they expire") {
    SUBCASE("by workload") {
        AnalyzerConfig config;
        config.exemptions.push_back({"hv3", "srv-01", "", T0 + 100 * S, "vulnerability scanner"});
        Analyzer a(config);
        CHECK(feed_all(a, sweep(server(), 40, T0)).empty());
        CHECK(a.incidents().empty());
        // Every crossing of an exempted source counts (hosts 16..40), and none leaves a quiet
        // period behind it.
        CHECK(a.totals().exempted == 25);
        // Another workload is not exempted.
        CHECK(count_rule(feed_all(a, sweep(server("srv-02", "10.0.5.2"), 16, T0)),
                         Rule::HostSweep) == 1);
        // Expired: the same scanner raises an incident.
        auto later = feed_all(a, sweep(server(), 16, T0 + 200 * S, 100));
        CHECK(count_rule(later, Rule::HostSweep) == 1);
        REQUIRE(a.incidents().size() == 2);
        CHECK(a.incidents()[1]->workload == "srv-01");
    }
    SUBCASE("by segment, added at run time") {
        Analyzer a;
        a.add_exemption({"", "", "role=server", T0 + 100 * S, "scanners"});
        CHECK(feed_all(a, sweep(server(), 16, T0)).empty());
        CHECK(a.totals().exempted == 1);
        CHECK(count_rule(feed_all(a, sweep(server(), 16, T0 + 101 * S, 100)), Rule::HostSweep) ==
              1);
    }
    SUBCASE("an exemption on one enforcer does not cover a namesake elsewhere") {
        Analyzer a;
        a.add_exemption({"hv1", "srv-01", "", T0 + 100 * S, ""});
        CHECK(count_rule(feed_all(a, sweep(server(), 16, T0)), Rule::HostSweep) ==
              1); // srv-01 is on hv3
    }
}

TEST_CASE("analyzer: per-source state is bounded and expires") {
    AnalyzerConfig config;
    config.scan.max_targets_per_source = 32;
    config.beaconing.max_interval_seconds = 120;
    Analyzer a(config);
    feed_all(a, sweep(server(), 100, T0));
    CHECK(a.totals().saturated > 0);
    const auto busy = a.memory_bytes();
    CHECK(a.totals().active_sources == 1);
    // Long after, another source's event drives the expiry pass.
    feed(a, drop(server("other", "10.0.5.9"), "10.9.9.9", 80, T0 + 7200 * S));
    CHECK(a.totals().active_sources == 1); // only "other"
    CHECK(a.totals().sources == 2);
    CHECK(a.memory_bytes() < busy);
}
