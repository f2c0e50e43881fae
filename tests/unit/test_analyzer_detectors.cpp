// The analyzer's detectors: each fires on its attack pattern and stays quiet on the benign
// pattern that resembles it.
#include "test_analyzer_support.hpp"

#include <doctest/doctest.h>
#include <random>

using namespace bulkhead::test::analyzer;

TEST_CASE("analyzer: host sweep fires on many hosts, not on one closed port retried") {
    SUBCASE("a server sweeping tcp/8080") {
        Analyzer a;
        std::vector<DropRecord> records;
        for (int i = 1; i <= 16; ++i) {
            records.push_back(drop(server(), host(i), 8080, T0 + (i - 1) * S));
        }
        auto findings = feed_all(a, records);
        REQUIRE(count_rule(findings, Rule::HostSweep) == 1);
        const auto* f = first_of(findings, Rule::HostSweep);
        CHECK(f->explanation == "srv-01 tried 16 hosts on tcp/8080 in 15 s");
        CHECK(f->severity == Severity::Medium);
        CHECK(f->distinct_hosts == 16);
        CHECK(f->distinct_ports == 1);
        CHECK(f->first_ns == T0);
        CHECK(f->last_ns == T0 + 15 * S);
        REQUIRE(f->sample_targets.size() == 10);
        CHECK(f->sample_targets.front() == "10.0.1.1 tcp/8080");
        CHECK(count_rule(findings, Rule::VerticalScan) == 0);
        CHECK(count_rule(findings, Rule::BoxScan) == 0);
    }
    SUBCASE("15 hosts stay under the threshold") {
        Analyzer a;
        std::vector<DropRecord> records;
        for (int i = 1; i <= 15; ++i) {
            records.push_back(drop(server(), host(i), 8080, T0 + i * S));
        }
        CHECK(feed_all(a, records).empty());
    }
    SUBCASE("hosts spread over more than the window are no sweep") {
        Analyzer a;
        std::vector<DropRecord> records;
        for (int i = 1; i <= 40; ++i) {
            records.push_back(drop(server(), host(i), 8080, T0 + i * 10 * S)); // 6 per minute
        }
        CHECK(count_rule(feed_all(a, records), Rule::HostSweep) == 0);
    }
    SUBCASE("a backup job retrying one closed port thousands of times is not a scan") {
        Analyzer a;
        std::vector<DropRecord> records;
        for (int i = 0; i < 5000; ++i) {
            records.push_back(drop(server("backup-01"), "10.0.0.30", 445, T0 + i * (S / 10)));
        }
        auto findings = feed_all(a, records);
        CHECK(count_rule(findings, Rule::HostSweep) == 0);
        CHECK(count_rule(findings, Rule::VerticalScan) == 0);
        CHECK(count_rule(findings, Rule::BoxScan) == 0);
        CHECK(count_rule(findings, Rule::LateralMovement) == 0);
        CHECK(a.incidents().empty());
    }
    SUBCASE("a user workload sweeping SMB weighs more (lateral-movement service)") {
        Analyzer a;
        std::vector<DropRecord> records;
        for (int i = 1; i <= 37; ++i) {
            records.push_back(drop(Source{.workload = "vdi-0042"}, host(i), 445, T0 + i * S / 3));
        }
        auto findings = feed_all(a, records);
        const auto* f = first_of(findings, Rule::HostSweep);
        REQUIRE(f != nullptr);
        CHECK(f->explanation == "vdi-0042 (user kimura) tried 16 hosts on tcp/445 in 5.0 s");
        CHECK(f->severity == Severity::High);
    }
}

TEST_CASE("analyzer: vertical scan is many ports on one host") {
    Analyzer a;
    std::vector<DropRecord> records;
    for (int p = 0; p < 16; ++p) {
        records.push_back(
            drop(server(), "10.0.0.30", static_cast<std::uint16_t>(1000 + p), T0 + p * S));
    }
    SUBCASE("16 ports fire") {
        auto findings = feed_all(a, records);
        REQUIRE(count_rule(findings, Rule::VerticalScan) == 1);
        CHECK(first_of(findings, Rule::VerticalScan)->explanation ==
              "srv-01 tried 16 ports on 10.0.0.30 in 15 s (tcp/1000, tcp/1001, tcp/1002, ...)");
        CHECK(count_rule(findings, Rule::HostSweep) == 0);
        CHECK(count_rule(findings, Rule::BoxScan) == 0); // one host is not a box
    }
    SUBCASE("15 ports do not") {
        records.pop_back();
        CHECK(feed_all(a, records).empty());
    }
}

TEST_CASE("analyzer: box scan is many ports over several hosts") {
    Analyzer a;
    std::vector<DropRecord> records;
    std::int64_t t = T0;
    for (int p = 0; p < 8; ++p) {
        for (int h = 1; h <= 4; ++h) {
            records.push_back(
                drop(server(), host(h), static_cast<std::uint16_t>(7000 + p), t += S / 10));
        }
    }
    auto findings = feed_all(a, records);
    REQUIRE(count_rule(findings, Rule::BoxScan) == 1);
    const auto* f = first_of(findings, Rule::BoxScan);
    CHECK(f->distinct_hosts == 4);
    CHECK(f->distinct_ports == 8);
    CHECK(f->severity == Severity::High);
    CHECK(count_rule(findings, Rule::HostSweep) == 0);
    CHECK(count_rule(findings, Rule::VerticalScan) == 0);

    SUBCASE("the same ports on three hosts are not a box") {
        Analyzer b;
        std::vector<DropRecord> three;
        for (const auto& r : records) {
            if (r.destination != host(4))
                three.push_back(r);
        }
        CHECK(count_rule(feed_all(b, three), Rule::BoxScan) == 0);
    }
}

TEST_CASE("analyzer: lateral movement from user segments, not an admin's single denied RDP") {
    SUBCASE("a VDI trying SMB and RDP on three hosts") {
        Analyzer a;
        auto findings =
            feed_all(a, {drop(Source{}, host(1), 445, T0), drop(Source{}, host(2), 445, T0 + S),
                         drop(Source{}, host(3), 3389, T0 + 2 * S)});
        REQUIRE(count_rule(findings, Rule::LateralMovement) == 1);
        const auto* f = first_of(findings, Rule::LateralMovement);
        CHECK(f->explanation == "vdi-001 (user kimura) tried 3 lateral-movement targets on 3 hosts "
                                "(SMB tcp/445, RDP tcp/3389) in 2.0 s");
        CHECK(f->severity == Severity::High);
    }
    SUBCASE("an admin's single denied RDP") {
        Analyzer a;
        CHECK(feed(a, drop(admin(), "10.0.0.40", 3389, T0)).empty());
        CHECK(a.incidents().empty());
    }
    SUBCASE("an admin trying RDP on three hosts stays under the non-user threshold") {
        Analyzer a;
        auto findings =
            feed_all(a, {drop(admin(), host(1), 3389, T0), drop(admin(), host(2), 3389, T0 + S),
                         drop(admin(), host(3), 3389, T0 + 2 * S)});
        CHECK(findings.empty());
    }
    SUBCASE("a VDI's blocked web ports are not lateral movement") {
        Analyzer a;
        auto findings =
            feed_all(a, {drop(Source{}, host(1), 8080, T0), drop(Source{}, host(2), 8080, T0 + S),
                         drop(Source{}, host(3), 8443, T0 + 2 * S)});
        CHECK(findings.empty());
    }
}

TEST_CASE("analyzer: forbidden zones fire on one event") {
    SUBCASE("a drop the enforcer marked decoy") {
        Analyzer a;
        auto r = drop(Source{}, "10.0.99.1", 22, T0);
        r.reason = DropReason::Decoy;
        auto findings = feed(a, r);
        REQUIRE(findings.size() == 1);
        CHECK(findings[0].rule == Rule::Decoy);
        CHECK(findings[0].detector == "forbidden-zone");
        CHECK(findings[0].severity == Severity::Critical);
        CHECK(findings[0].explanation == "vdi-001 (user kimura) touched decoy 10.0.99.1 on tcp/22");
        CHECK(a.incidents().at(0)->severity == Severity::Critical);
    }
    SUBCASE("a configured decoy address") {
        AnalyzerConfig config;
        config.forbidden.decoy_addresses = {"10.0.99.2"};
        Analyzer a(config);
        auto findings = feed(a, drop(server(), "10.0.99.2", 0, T0, 1));
        REQUIRE(findings.size() == 1);
        CHECK(findings[0].explanation == "srv-01 touched decoy 10.0.99.2 on icmp");
    }
    SUBCASE("user terminal to admin terminal") {
        Analyzer a;
        auto r = drop(Source{}, "10.0.9.1", 3389, T0);
        r.destination_workload = "adm-01";
        r.destination_segments = {"role=admin-terminal"};
        auto findings = feed(a, r);
        REQUIRE(count_rule(findings, Rule::UserToAdmin) == 1);
        CHECK(first_of(findings, Rule::UserToAdmin)->explanation ==
              "vdi-001 (user kimura) tried admin terminal adm-01 (10.0.9.1) on tcp/3389");
    }
    SUBCASE("VDI to VDI file sharing, but not VDI to VDI on another port nor admin to VDI") {
        Analyzer a;
        auto r = drop(Source{}, "10.1.0.2", 445, T0);
        r.destination_workload = "vdi-002";
        r.destination_segments = {"role=vdi"};
        auto findings = feed(a, r);
        REQUIRE(count_rule(findings, Rule::VdiFileSharing) == 1);
        CHECK(first_of(findings, Rule::VdiFileSharing)->explanation ==
              "vdi-001 (user kimura) tried file sharing on VDI vdi-002 (10.1.0.2) on tcp/445");

        Analyzer b;
        auto web = r;
        web.dport = 8080;
        CHECK(feed(b, web).empty());
        auto from_admin = drop(admin(), "10.1.0.2", 445, T0);
        from_admin.destination_segments = {"role=vdi"};
        CHECK(feed(b, from_admin).empty());
    }
    SUBCASE("a spoofed packet: high from a VDI, medium from a server, even towards a broadcast") {
        Analyzer a;
        auto r = drop(Source{}, "10.1.0.9", 80, T0);
        r.reason = DropReason::Spoof;
        auto findings = feed(a, r);
        REQUIRE(count_rule(findings, Rule::Spoofing) == 1);
        const auto* f = first_of(findings, Rule::Spoofing);
        CHECK(f->detector == "spoof-guard");
        CHECK(f->severity == Severity::High);
        CHECK(f->explanation ==
              "vdi-001 (user kimura) sent from an address or MAC that is not its own (spoof guard) towards 10.1.0.9 "
              "on tcp/80");

        Analyzer b;
        auto from_server = drop(server(), "255.255.255.255", 67, T0, 17);
        from_server.reason = DropReason::Spoof;
        auto server_findings = feed(b, from_server);
        REQUIRE(count_rule(server_findings, Rule::Spoofing) == 1);
        CHECK(first_of(server_findings, Rule::Spoofing)->severity == Severity::Medium);

        // The same forged traffic as a plain default drop is nothing by itself.
        Analyzer c;
        CHECK(feed(c, drop(Source{}, "10.1.0.9", 80, T0)).empty());
        CHECK(drop_reason_from_string("spoof") == DropReason::Spoof);
        CHECK(rule_from_name("spoof-guard") == Rule::Spoofing);
    }
}

TEST_CASE("analyzer: beaconing is a regular retry interval, jitter tolerated") {
    std::mt19937 random(42);
    SUBCASE("every 60 s with +-10 % jitter") {
        std::uniform_real_distribution<double> jitter(-0.1, 0.1);
        Analyzer a;
        std::vector<DropRecord> records;
        std::int64_t t = T0;
        for (int i = 0; i < 10; ++i) {
            records.push_back(drop(Source{}, "203.0.113.7", 443, t));
            records.push_back(drop(Source{}, "203.0.113.7", 443, t + S));     // SYN retransmits:
            records.push_back(drop(Source{}, "203.0.113.7", 443, t + 3 * S)); // the same attempt
            t += static_cast<std::int64_t>(60.0 * (1.0 + jitter(random)) * 1e9);
        }
        auto findings = feed_all(a, records);
        REQUIRE(count_rule(findings, Rule::Beaconing) == 1);
        const auto* f = first_of(findings, Rule::Beaconing);
        CHECK(f->score >= 0.85);
        CHECK(f->explanation.starts_with(
            "vdi-001 (user kimura) retried 203.0.113.7 tcp/443 9 times every "));
        CHECK(f->first_ns == T0);
    }
    SUBCASE("random intervals are not a beacon") {
        std::uniform_int_distribution<std::int64_t> gap(5, 600);
        Analyzer a;
        std::vector<DropRecord> records;
        std::int64_t t = T0;
        for (int i = 0; i < 40; ++i) {
            records.push_back(drop(Source{}, "203.0.113.7", 443, t));
            t += gap(random) * S;
        }
        CHECK(count_rule(feed_all(a, records), Rule::Beaconing) == 0);
    }
    SUBCASE("exactly periodic, but too few retries") {
        Analyzer a;
        std::vector<DropRecord> records;
        for (int i = 0; i < 8; ++i) { // 7 intervals
            records.push_back(drop(Source{}, "203.0.113.7", 443, T0 + i * 30 * S));
        }
        CHECK(feed_all(a, records).empty());
        auto found = feed(a, drop(Source{}, "203.0.113.7", 443, T0 + 8 * 30 * S));
        REQUIRE(found.size() == 1);
        CHECK(found[0].explanation == "vdi-001 (user kimura) retried 203.0.113.7 tcp/443 9 times "
                                      "every 30 s ±0 % (8 intervals: median absolute deviation 0 %, skew 0.00)");
        CHECK(found[0].score == doctest::Approx(1.0));
    }
    SUBCASE("faster than the minimum period needs 16 intervals and a tighter spread") {
        Analyzer a;
        std::vector<DropRecord> records;
        for (int i = 0; i < 30; ++i) {
            records.push_back(drop(Source{}, "203.0.113.7", 443, T0 + i * 10 * S));
        }
        std::vector<Finding> found;
        for (int i = 0; i < 30; ++i) {
            auto f = feed(a, records[static_cast<std::size_t>(i)]);
            if (!f.empty()) {
                CHECK(i == 16); // the 17th attempt: 16 intervals of 10 s
            }
            found.insert(found.end(), f.begin(), f.end());
        }
        CHECK(count_rule(found, Rule::Beaconing) == 1);
    }
    SUBCASE("random retries just above the attempt floor are not a beacon") {
        // 5-9 s apart, uniformly: the folding floor makes them look regular (cv about 0.17).
        Analyzer a;
        std::vector<DropRecord> records;
        std::int64_t t = T0;
        std::uint32_t x = 12345;
        for (int i = 0; i < 200; ++i) {
            x = x * 1103515245u + 12345u;
            t += 5 * S + static_cast<std::int64_t>((x >> 8) % 4000) * S / 1000;
            records.push_back(drop(Source{}, "203.0.113.7", 443, t));
        }
        CHECK(count_rule(feed_all(a, records), Rule::Beaconing) == 0);
    }
}

namespace {

Source vdi(int i) {
    return Source{"hv1",
                  "vdi-00" + std::to_string(i),
                  "user" + std::to_string(i),
                  {"role=vdi"},
                  "10.1.0." + std::to_string(i)};
}
Source backup(int i) {
    return Source{
        "hv4", "bk-0" + std::to_string(i), "", {"role=backup"}, "10.0.7." + std::to_string(i)};
}

} // namespace

TEST_CASE("analyzer: fan-in says worm-like or misconfigured service") {
    SUBCASE("user workloads failing toward SMB on one server: worm-like") {
        Analyzer a;
        std::vector<DropRecord> records;
        for (int i = 1; i <= 5; ++i) {
            records.push_back(drop(vdi(i), "10.0.0.30", 445, T0 + (i - 1) * S));
        }
        auto findings = feed_all(a, records);
        REQUIRE(count_rule(findings, Rule::FanIn) == 1);
        const auto* f = first_of(findings, Rule::FanIn);
        CHECK(f->classification == "worm-like");
        CHECK(f->severity == Severity::High);
        CHECK(
            f->explanation ==
            "5 sources failed toward 10.0.0.30 tcp/445 in 4.0 s: worm-like spread (5 of 5 are user "
            "workloads, SMB is a lateral-movement service)");
        const auto* incident = a.incident(f->incident_id);
        REQUIRE(incident != nullptr);
        CHECK(incident->about_target);
        CHECK(incident->subject == "10.0.0.30 tcp/445");
    }
    SUBCASE("backup servers of one segment retrying their target: misconfigured service") {
        Analyzer a;
        std::vector<DropRecord> records;
        for (int round = 0; round < 8; ++round) {
            for (int i = 1; i <= std::min(round + 1, 5); ++i) {
                records.push_back(drop(backup(i), "10.0.0.40", 9000, T0 + round * 30 * S + i * S));
            }
        }
        auto findings = feed_all(a, records);
        REQUIRE(count_rule(findings, Rule::FanIn) == 1);
        const auto* f = first_of(findings, Rule::FanIn);
        CHECK(f->classification == "misconfigured-service");
        CHECK(f->severity == Severity::Low);
        CHECK(f->explanation ==
              "5 sources failed toward 10.0.0.40 tcp/9000 in 2 min 4 s: looks like a misconfigured "
              "service (all in segment role=backup, 3 retrying it, none trying other hosts)");
    }
    SUBCASE("four sources are not enough") {
        Analyzer a;
        std::vector<DropRecord> records;
        for (int i = 1; i <= 4; ++i) {
            records.push_back(drop(vdi(i), "10.0.0.30", 445, T0 + i * S));
        }
        CHECK(feed_all(a, records).empty());
    }
    SUBCASE("unrelated servers once each: undetermined") {
        Analyzer a;
        std::vector<DropRecord> records;
        for (int i = 1; i <= 5; ++i) {
            auto s = server("srv-0" + std::to_string(i), "10.0.5." + std::to_string(i));
            s.segments = {"app=" + std::to_string(i)};
            records.push_back(drop(s, "10.0.0.50", 8443, T0 + i * S));
        }
        auto findings = feed_all(a, records);
        REQUIRE(count_rule(findings, Rule::FanIn) == 1);
        CHECK(first_of(findings, Rule::FanIn)->classification == "undetermined");
    }
}

TEST_CASE("analyzer: colliding private addresses behind two enforcers stay two sources") {
    Analyzer a;
    Source one{"hv1", "", "", {}, "192.168.0.10"};
    Source two{"hv2", "", "", {}, "192.168.0.10"};
    std::vector<DropRecord> records;
    for (int i = 1; i <= 10; ++i) { // 10 hosts each: 20 together would be a sweep
        records.push_back(drop(one, host(i), 8080, T0 + i * S));
        records.push_back(drop(two, host(100 + i), 8080, T0 + i * S));
    }
    CHECK(feed_all(a, records).empty());
    CHECK(a.totals().sources == 2);

    SUBCASE("each sweeping on its own gives two incidents") {
        for (int i = 11; i <= 16; ++i) {
            feed(a, drop(one, host(i), 8080, T0 + 20 * S));
            feed(a, drop(two, host(100 + i), 8080, T0 + 20 * S));
        }
        REQUIRE(a.incidents().size() == 2);
        CHECK(a.incidents()[0]->subject == "hv1/192.168.0.10");
        CHECK(a.incidents()[1]->subject == "hv2/192.168.0.10");
        CHECK(a.incidents()[0]->timeline.at(0).explanation ==
              "192.168.0.10 (unattributed, hv1/tap0) tried 16 hosts on tcp/8080 in 19 s");
    }
    SUBCASE("the same workload id on two enforcers is two workloads") {
        Analyzer b;
        Source x{"hv1", "vm-7", "", {}, "192.168.0.10"};
        Source y{"hv2", "vm-7", "", {}, "192.168.0.10"};
        for (int i = 1; i <= 8; ++i) {
            feed(b, drop(x, host(i), 8080, T0 + i * S));
            feed(b, drop(y, host(50 + i), 8080, T0 + i * S));
        }
        CHECK(b.incidents().empty());
        CHECK(b.totals().sources == 2);
    }
}
