// The analyzer's memory bounds: idle sources and resolved incidents leave memory, the caps
// (MemoryLimits) hold whatever the traffic, evictions are counted, and repeat-offender
// escalation survives the eviction of the incident and of the source it concerned.
#include "test_analyzer_support.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

using namespace bulkhead::test::analyzer;

namespace {

Source numbered(int i) {
    return {"hv1",
            "web-" + std::to_string(i),
            "",
            {"role=web"},
            "10.2." + std::to_string(i / 250) + "." + std::to_string(i % 250)};
}

// `source` touches the decoy at `t`: one finding, an incident.
DropRecord touch_decoy(const Source& source, std::int64_t t) {
    return drop(source, "10.0.66.6", 22, t);
}

// (Fan-in off: the many sources touching one decoy would also be a fan-in incident.)
AnalyzerConfig with_decoy() {
    AnalyzerConfig c;
    c.forbidden.decoy_addresses = {"10.0.66.6"};
    c.fan_in.enabled = false;
    return c;
}

} // namespace

TEST_CASE("analyzer memory: idle sources leave memory, and come back as new") {
    Analyzer a;
    for (int i = 0; i < 1000; ++i) {
        feed(a, drop(numbered(i), "10.0.11.1", 9100, T0 + i * S / 100));
    }
    CHECK(a.totals().held_sources == 1000);
    const auto busy = a.memory_bytes();
    // Two hours later (beyond every window and quiet period), one source speaks.
    feed(a, drop(numbered(0), "10.0.11.1", 9100, T0 + 7200 * S));
    feed(a, drop(numbered(0), "10.0.11.1", 9100, T0 + 7300 * S));
    const auto totals = a.totals();
    CHECK(totals.held_sources == 1);
    CHECK(totals.active_sources == 1);
    CHECK(totals.released_sources == 1000); // the speaker too, before it came back
    CHECK(totals.sources == 1001);
    CHECK(totals.evicted_sources == 0);
    CHECK(a.memory_bytes() < busy);
}

TEST_CASE("analyzer memory: max_sources holds under a flood of new senders") {
    AnalyzerConfig c;
    c.limits.max_sources = 100;
    Analyzer a(c);
    for (int i = 0; i < 5000; ++i) {
        Source sender{"edge1",
                      "",
                      "",
                      {},
                      "198.51." + std::to_string(i / 250) + "." + std::to_string(i % 250)};
        feed(a, drop(sender, "10.0.9.9", 22, T0 + i * S / 1000));
        CHECK(a.totals().held_sources <= 100);
    }
    CHECK(a.totals().evicted_sources >= 4900);
    CHECK(to_json(a.totals())["evicted_sources"] == a.totals().evicted_sources);
}

TEST_CASE("analyzer memory: a source with an open incident is not evicted") {
    AnalyzerConfig c = with_decoy();
    c.limits.max_sources = 10;
    Analyzer a(c);
    feed(a, touch_decoy(numbered(0), T0));
    REQUIRE(a.incidents().size() == 1);
    for (int i = 1; i < 100; ++i) {
        feed(a, drop(numbered(i), "10.0.11.1", 9100, T0 + i * S));
    }
    // Still the same incident: the source kept its link to it.
    feed(a, touch_decoy(numbered(0), T0 + 400 * S));
    CHECK(a.incidents().size() == 1);
    CHECK(a.incidents()[0]->findings[static_cast<std::size_t>(Rule::Decoy)] == 2);
}

TEST_CASE("analyzer memory: max_open_incidents evicts the quietest open incident") {
    AnalyzerConfig c = with_decoy();
    c.limits.max_open_incidents = 4;
    Analyzer a(c);
    for (int i = 0; i < 10; ++i) {
        feed(a, touch_decoy(numbered(i), T0 + i * S));
    }
    const auto totals = a.totals();
    CHECK(totals.incidents == 10);
    CHECK(totals.open_incidents == 4);
    CHECK(totals.evicted_incidents == 6);
    CHECK(a.incident(1) == nullptr);
    REQUIRE(a.incident(10) != nullptr);
    CHECK_FALSE(a.resolve(1, T0 + 20 * S));
    CHECK_FALSE(a.rearm(1));
    // The evicted incident's source starts a new incident with its next finding.
    const auto found = feed(a, touch_decoy(numbered(0), T0 + 400 * S));
    REQUIRE(found.size() == 1);
    CHECK(found[0].incident_id == 11);
}

TEST_CASE("analyzer memory: resolved incidents leave memory, repeat offence is still seen") {
    AnalyzerConfig c = with_decoy();
    c.limits.max_resolved_incidents = 2;
    Analyzer a(c);
    for (int i = 0; i < 5; ++i) {
        feed(a, touch_decoy(numbered(i), T0 + i * S));
    }
    for (std::uint64_t id = 1; id <= 5; ++id) {
        CHECK(a.resolve(id, T0 + 10 * S));
    }
    auto totals = a.totals();
    CHECK(totals.held_incidents == 2);
    CHECK(totals.released_incidents == 3);
    CHECK(totals.repeat_offender_records == 5);
    CHECK(a.incident(1) == nullptr);
    REQUIRE(a.incident(5) != nullptr);
    CHECK(a.incident(5)->state == IncidentState::Resolved);
    CHECK_FALSE(a.resolve(5, T0 + 11 * S));

    // Two hours on, the sources themselves have left memory too; the first comes back.
    feed(a, drop(numbered(99), "10.0.11.1", 9100, T0 + 7200 * S));
    CHECK(a.totals().held_sources == 1);
    const auto found = feed(a, touch_decoy(numbered(0), T0 + 7300 * S));
    REQUIRE(found.size() == 1);
    const auto* incident = a.incident(found[0].incident_id);
    REQUIRE(incident != nullptr);
    CHECK(incident->repeat_offender);

    SUBCASE("the record expires after repeat_offender_seconds") {
        feed(a, drop(numbered(99), "10.0.11.1", 9100, T0 + 90'000 * S));
        feed(a, drop(numbered(99), "10.0.11.1", 9100, T0 + 90'100 * S));
        totals = a.totals();
        CHECK(totals.expired_repeat_offender_records == 5);
        const auto later = feed(a, touch_decoy(numbered(1), T0 + 90'200 * S));
        REQUIRE(later.size() == 1);
        CHECK_FALSE(a.incident(later[0].incident_id)->repeat_offender);
    }
}

TEST_CASE("analyzer memory: repeat-offender records are capped") {
    AnalyzerConfig c = with_decoy();
    c.limits.max_repeat_offender_records = 16;
    Analyzer a(c);
    for (int i = 0; i < 100; ++i) {
        feed(a, touch_decoy(numbered(i), T0 + i * S));
        a.resolve(a.last_incident(), T0 + i * S + S / 2);
        CHECK(a.totals().repeat_offender_records <= 16);
    }
    CHECK(a.totals().evicted_repeat_offender_records >= 84);
    // The most recent offender is still remembered.
    const auto found = feed(a, touch_decoy(numbered(99), T0 + 500 * S));
    REQUIRE(found.size() == 1);
    CHECK(a.incident(found[0].incident_id)->repeat_offender);
}

TEST_CASE("analyzer memory: destination addresses no longer referred to are forgotten") {
    // 20,000 distinct destinations (beyond the collection floor), a quiet hour, then 20,000
    // others: the second lot reuses the first lot's ids instead of growing the tables, and
    // names come out right.
    AnalyzerConfig c;
    c.host_sweep.enabled = c.box_scan.enabled = c.slow_scan.enabled = false;
    c.beaconing.enabled = c.fan_in.enabled = false;
    Analyzer a(c);
    const Source wanderer = numbered(7);
    auto wander = [&](int lot, std::int64_t start) {
        for (int i = 0; i < 20'000; ++i) {
            feed(a, drop(wanderer,
                         std::to_string(172 + lot) + ".16." + std::to_string(i / 250) + "." +
                             std::to_string(i % 250),
                         80, start + i * S / 1000));
        }
    };
    wander(0, T0);
    const auto first_lot = a.memory_bytes();
    wander(1, T0 + 7200 * S);
    CHECK(a.memory_bytes() < first_lot + first_lot / 4);
    // A vertical scan on a fresh address is described with that address.
    std::vector<Finding> found;
    for (int p = 0; p < 16; ++p) {
        auto more = feed(a, drop(numbered(8), "192.0.2.77", static_cast<std::uint16_t>(3000 + p),
                                 T0 + 7400 * S + p * S));
        found.insert(found.end(), more.begin(), more.end());
    }
    const auto* scan = first_of(found, Rule::VerticalScan);
    REQUIRE(scan != nullptr);
    CHECK(scan->explanation.find("192.0.2.77") != std::string::npos);
    CHECK(scan->sample_targets.front() == "192.0.2.77 tcp/3000");
}
