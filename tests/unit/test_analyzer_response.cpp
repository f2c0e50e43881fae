// The analyzer's slow-scan and distinct-targets rules, re-configuration and re-arming, and
// the ResponsePlanner: per-segment rules, dry-run, critical and unmanaged sources paged, the
// per-minute rate limit.
#include "controller/analyzer/response_planner.hpp"
#include "test_analyzer_support.hpp"

#include <doctest/doctest.h>

using namespace bulkhead::test::analyzer;
namespace policy = bulkhead::policy;

TEST_CASE("analyzer: a slow scan below the fast thresholds is found over its long window") {
    Analyzer a;
    // One new port every 10 s: 6 a minute, never 16 in the 60 s scan window.
    std::vector<DropRecord> probes;
    for (int p = 0; p < 20; ++p) {
        probes.push_back(drop(Source{}, "10.0.0.30", static_cast<std::uint16_t>(2000 + p), T0 + p * 10 * S));
    }
    auto findings = feed_all(a, probes);
    CHECK(count_rule(findings, Rule::VerticalScan) == 0);
    REQUIRE(count_rule(findings, Rule::SlowScan) == 1);
    const auto* slow = first_of(findings, Rule::SlowScan);
    CHECK(slow->distinct_ports == 16);
    CHECK(slow->last_ns == T0 + 150 * S); // the 16th port
    CHECK(slow->explanation == "vdi-001 (user kimura) slowly tried 1 host on 16 ports (tcp/2000, "
                               "tcp/2001, tcp/2002, ...) over 2 min 30 s (16 targets, below the "
                               "fast scan thresholds)");
    CHECK(slow->severity == Severity::Medium);

    SUBCASE("a fast scan is not reported again as a slow one") {
        Analyzer fast;
        std::vector<DropRecord> burst;
        for (int p = 0; p < 40; ++p) {
            burst.push_back(drop(Source{}, "10.0.0.30", static_cast<std::uint16_t>(3000 + p), T0 + p * S / 10));
        }
        auto found = feed_all(fast, burst);
        CHECK(count_rule(found, Rule::VerticalScan) == 1);
        CHECK(count_rule(found, Rule::SlowScan) == 0);
    }
    SUBCASE("nor when the fast rule is disabled") {
        AnalyzerConfig config;
        config.vertical_scan.enabled = false;
        Analyzer quiet(config);
        std::vector<DropRecord> burst;
        for (int p = 0; p < 40; ++p) {
            burst.push_back(drop(Source{}, "10.0.0.30", static_cast<std::uint16_t>(3000 + p), T0 + p * S / 10));
        }
        CHECK(feed_all(quiet, burst).empty());
    }
}

TEST_CASE("analyzer: distinct-targets is the policy's rule, off unless turned on") {
    std::vector<DropRecord> mixed;
    for (int i = 0; i < 5; ++i) {
        mixed.push_back(drop(Source{}, host(i), static_cast<std::uint16_t>(8000 + i), T0 + i * S));
    }
    Analyzer off;
    CHECK(feed_all(off, mixed).empty());

    AnalyzerConfig config;
    policy::ResponsePolicy response;
    response.incident.distinct_targets = 5;
    response.incident.window_seconds = 30;
    response.incident.severity = Severity::High;
    apply_response_policy(config, response);
    CHECK(config.scan.window_seconds == 30);
    Analyzer on(config);
    auto findings = feed_all(on, mixed);
    REQUIRE(count_rule(findings, Rule::DistinctTargets) == 1);
    CHECK(findings.back().explanation ==
          "vdi-001 (user kimura) tried 5 targets on 5 hosts (5 ports (tcp/8000, tcp/8001, "
          "tcp/8002, ...)) in 4.0 s");
    CHECK(on.incidents()[0]->severity == Severity::High);

    SUBCASE("beside a sweep it does not count as a second detector (no escalation)") {
        Analyzer both(config);
        std::vector<DropRecord> sweep;
        for (int i = 0; i < 16; ++i) {
            sweep.push_back(drop(Source{}, host(100 + i), 8080, T0 + 100 * S + i * S / 10));
        }
        auto found = feed_all(both, sweep);
        CHECK(count_rule(found, Rule::HostSweep) == 1);
        CHECK(count_rule(found, Rule::DistinctTargets) == 1);
        CHECK(both.incidents()[0]->severity == Severity::High); // max(high, medium), no +1
    }
}

TEST_CASE("analyzer: reconfigure keeps the windows; rearm starts a source afresh") {
    Analyzer a;
    std::vector<DropRecord> first;
    for (int i = 0; i < 4; ++i) {
        first.push_back(drop(Source{}, host(i), 8080, T0 + i * S));
    }
    CHECK(feed_all(a, first).empty());
    AnalyzerConfig lower;
    lower.distinct_targets.enabled = true;
    lower.distinct_targets.min_targets = 5;
    a.reconfigure(lower);
    // The fifth target completes the new rule: the four before it were kept.
    auto found = feed(a, drop(Source{}, host(4), 8080, T0 + 5 * S));
    REQUIRE(count_rule(found, Rule::DistinctTargets) == 1);
    CHECK(a.last_incident() == 1);
    // Quiet for the window now; after rearm the next crossing fires at once.
    CHECK(feed(a, drop(Source{}, host(5), 8080, T0 + 6 * S)).empty());
    REQUIRE(a.rearm(1));
    std::vector<DropRecord> again;
    for (int i = 10; i < 15; ++i) {
        again.push_back(drop(Source{}, host(i), 8080, T0 + 7 * S + i));
    }
    CHECK(count_rule(feed_all(a, again), Rule::DistinctTargets) == 1);
    CHECK(a.incidents().size() == 1); // same open incident
    CHECK_FALSE(a.rearm(99));
}

namespace {

Incident incident_at(Severity severity, bool about_target = false) {
    Incident i;
    i.id = 1;
    i.severity = severity;
    i.about_target = about_target;
    return i;
}

Finding finding_of(Rule rule) {
    Finding f;
    f.rule = rule;
    f.detector = detector_name(rule);
    f.rule_text = rule_name(rule);
    return f;
}

policy::ResponsePolicy response_on(Severity min, std::uint32_t per_minute = 10) {
    policy::ResponsePolicy r;
    r.auto_quarantine = policy::AutoQuarantineMode::On;
    r.auto_quarantine_min_severity = min;
    r.max_auto_quarantines_per_minute = per_minute;
    return r;
}

} // namespace

TEST_CASE("response planner: thresholds, per-segment rules and dry-run") {
    const std::vector<std::string> vdi{"vdi"}, servers{"servers"};
    ResponseSubject subject{true, false, false, vdi};
    auto policy = response_on(Severity::High);
    SUBCASE("off by default") {
        ResponsePlanner planner;
        auto d = planner.decide(incident_at(Severity::Critical), finding_of(Rule::Decoy), subject, T0);
        CHECK(d.action == ResponseAction::None);
        CHECK(d.reason == "automatic quarantine is off by the policy's default");
    }
    SUBCASE("below the minimum severity: nothing") {
        ResponsePlanner planner(policy);
        auto d = planner.decide(incident_at(Severity::Medium), finding_of(Rule::HostSweep), subject, T0);
        CHECK(d.action == ResponseAction::None);
        CHECK(d.reason == "severity medium is below high required by the policy's default");
    }
    SUBCASE("at the minimum: quarantine, with the rule that decided") {
        ResponsePlanner planner(policy);
        auto d = planner.decide(incident_at(Severity::High), finding_of(Rule::HostSweep), subject, T0);
        CHECK(d.action == ResponseAction::Quarantine);
        CHECK(d.rule == -1);
        CHECK(d.reason == "host-sweep at severity high (the policy's default, min high)");
    }
    SUBCASE("the first matching rule decides: segment and detector") {
        policy.auto_quarantine_rules.push_back(
            {{"servers"}, {}, policy::AutoQuarantineMode::DryRun, Severity::Medium, "/response/auto_quarantine/rules/0"});
        policy.auto_quarantine_rules.push_back(
            {{"vdi"}, {"beaconing", "slow-scan"}, policy::AutoQuarantineMode::On, Severity::Medium,
             "/response/auto_quarantine/rules/1"});
        policy.auto_quarantine_rules.push_back(
            {{}, {"forbidden-zone"}, policy::AutoQuarantineMode::Off, Severity::Low, "/response/auto_quarantine/rules/2"});
        ResponsePlanner planner(policy);
        auto beacon = planner.decide(incident_at(Severity::Medium), finding_of(Rule::Beaconing), subject, T0);
        CHECK(beacon.action == ResponseAction::Quarantine);
        CHECK(beacon.rule == 1);
        auto sweep = planner.decide(incident_at(Severity::Medium), finding_of(Rule::HostSweep), subject, T0);
        CHECK(sweep.action == ResponseAction::None); // the default (high) decides a VDI's sweep
        ResponseSubject server{true, false, false, servers};
        auto dry = planner.decide(incident_at(Severity::Medium), finding_of(Rule::HostSweep), server, T0);
        CHECK(dry.action == ResponseAction::DryRun);
        CHECK(dry.rule == 0);
        CHECK(dry.reason.starts_with("would quarantine: host-sweep at severity medium (rule 0"));
        // A rule names the detector ("forbidden-zone") or the rule ("decoy").
        auto decoy = planner.decide(incident_at(Severity::Critical), finding_of(Rule::Decoy), subject, T0);
        CHECK(decoy.action == ResponseAction::None);
        CHECK(decoy.rule == 2);
    }
    SUBCASE("fan-in incidents are about a target: never quarantined") {
        ResponsePlanner planner(policy);
        auto d = planner.decide(incident_at(Severity::High, true), finding_of(Rule::FanIn), subject, T0);
        CHECK(d.action == ResponseAction::None);
    }
}

TEST_CASE("response planner: guardrails") {
    const std::vector<std::string> vdi{"vdi"};
    SUBCASE("a critical workload is paged, never quarantined, even in dry-run") {
        auto policy = response_on(Severity::High);
        policy.auto_quarantine = policy::AutoQuarantineMode::DryRun;
        ResponsePlanner planner(policy);
        ResponseSubject critical{true, true, false, vdi};
        auto d = planner.decide(incident_at(Severity::Critical), finding_of(Rule::HostSweep), critical, T0);
        CHECK(d.action == ResponseAction::Page);
        CHECK(d.reason.find("marked critical") != std::string::npos);
    }
    SUBCASE("a low-severity beacon from an unmanaged source (a monitoring server) is neither paged nor quarantined") {
        ResponsePlanner planner(response_on(Severity::Medium));
        ResponseSubject unmanaged{false, false, false, {}};
        auto d = planner.decide(incident_at(Severity::Low), finding_of(Rule::Beaconing), unmanaged, T0);
        CHECK(d.action == ResponseAction::None);
    }
    SUBCASE("an unmanaged source (VPN user, unattributed address) is paged") {
        ResponsePlanner planner(response_on(Severity::High));
        ResponseSubject unmanaged{false, false, false, {}};
        auto d = planner.decide(incident_at(Severity::High), finding_of(Rule::HostSweep), unmanaged, T0);
        CHECK(d.action == ResponseAction::Page);
    }
    SUBCASE("already quarantined: nothing more") {
        ResponsePlanner planner(response_on(Severity::High));
        ResponseSubject held{true, false, true, vdi};
        CHECK(planner.decide(incident_at(Severity::High), finding_of(Rule::HostSweep), held, T0).action ==
              ResponseAction::None);
    }
    SUBCASE("at most N automatic quarantines in any 60 s, then a human decides") {
        ResponsePlanner planner(response_on(Severity::High, 2));
        ResponseSubject subject{true, false, false, vdi};
        const auto f = finding_of(Rule::HostSweep);
        CHECK(planner.decide(incident_at(Severity::High), f, subject, T0).action == ResponseAction::Quarantine);
        CHECK(planner.decide(incident_at(Severity::High), f, subject, T0 + 10 * S).action ==
              ResponseAction::Quarantine);
        auto third = planner.decide(incident_at(Severity::High), f, subject, T0 + 20 * S);
        CHECK(third.action == ResponseAction::RateLimited);
        CHECK(third.reason.find("2 automatic quarantines in the last minute reached the limit of 2") !=
              std::string::npos);
        // Dry-runs and pages do not count; the window slides.
        CHECK(planner.recent_quarantines(T0 + 59 * S) == 2);
        CHECK(planner.recent_quarantines(T0 + 60 * S) == 1);
        CHECK(planner.decide(incident_at(Severity::High), f, subject, T0 + 61 * S).action ==
              ResponseAction::Quarantine);
    }
    SUBCASE("a limit of 0 sends every automatic quarantine to a human") {
        ResponsePlanner planner(response_on(Severity::High, 0));
        ResponseSubject subject{true, false, false, vdi};
        CHECK(planner.decide(incident_at(Severity::High), finding_of(Rule::HostSweep), subject, T0).action ==
              ResponseAction::RateLimited);
    }
}

TEST_CASE("analyzer: a logon script's denied shares are not lateral movement") {
    // SMB on 445 and 139 to two denied file servers: 4 lateral targets on 2 hosts.
    Analyzer a;
    std::vector<DropRecord> logon;
    for (const char* server : {"10.0.0.30", "10.0.0.31"}) {
        logon.push_back(drop(Source{}, server, 445, T0));
        logon.push_back(drop(Source{}, server, 139, T0 + S / 100));
    }
    CHECK(count_rule(feed_all(a, logon), Rule::LateralMovement) == 0);
    // A third host is lateral movement.
    auto third = feed(a, drop(Source{}, "10.0.0.32", 445, T0 + S));
    CHECK(count_rule(third, Rule::LateralMovement) == 1);
}

TEST_CASE("analyzer: broadcast and multicast destinations are not judged") {
    Analyzer a;
    std::vector<DropRecord> chatter;
    // NetBIOS announcements every 12 min and SSDP/LLMNR from one VDI for 4 h: regular, and
    // many "hosts", but announcements, not attempts.
    for (int i = 0; i < 20; ++i) {
        chatter.push_back(drop(Source{}, "255.255.255.255", 67, T0 + i * 720 * S, 17));
        chatter.push_back(drop(Source{}, "239.255.255.250", 1900, T0 + i * 720 * S + S, 17));
        chatter.push_back(drop(Source{}, "224.0.0.252", 5355, T0 + i * 720 * S + 2 * S, 17));
    }
    CHECK(feed_all(a, chatter).empty());
    CHECK(a.totals().ignored == 60);

    SUBCASE("a site adds its subnet broadcast address") {
        AnalyzerConfig config;
        config.ignored_destinations.push_back("10.1.0.255/32");
        Analyzer site(config);
        std::vector<DropRecord> announcements;
        for (int i = 0; i < 20; ++i) {
            announcements.push_back(drop(Source{}, "10.1.0.255", 138, T0 + i * 720 * S, 17));
        }
        CHECK(feed_all(site, announcements).empty());
        Analyzer plain;
        CHECK(count_rule(feed_all(plain, announcements), Rule::Beaconing) >= 1); // once an hour
    }
    SUBCASE("a decoy in an ignored range still counts") {
        auto decoy = drop(Source{}, "224.0.0.99", 5000, T0 + 5 * S, 17);
        decoy.reason = DropReason::Decoy;
        CHECK(count_rule(feed(a, decoy), Rule::Decoy) == 1);
    }
}

TEST_CASE("response planner: the section's mode is the master switch over the rules") {
    const std::vector<std::string> vdi{"vdi"};
    ResponseSubject subject{true, false, false, vdi};
    auto policy = response_on(Severity::High);
    policy.auto_quarantine_rules.push_back(
        {{"vdi"}, {}, policy::AutoQuarantineMode::On, Severity::Medium, "/response/auto_quarantine/rules/0"});
    SUBCASE("off stops every rule") {
        policy.auto_quarantine = policy::AutoQuarantineMode::Off;
        ResponsePlanner planner(policy);
        auto d = planner.decide(incident_at(Severity::Critical), finding_of(Rule::HostSweep), subject, T0);
        CHECK(d.action == ResponseAction::None);
        CHECK(d.rule == 0);
    }
    SUBCASE("dry-run makes every rule record only") {
        policy.auto_quarantine = policy::AutoQuarantineMode::DryRun;
        ResponsePlanner planner(policy);
        CHECK(planner.decide(incident_at(Severity::Medium), finding_of(Rule::HostSweep), subject, T0).action ==
              ResponseAction::DryRun);
    }
}
