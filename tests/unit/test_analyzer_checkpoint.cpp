// The analyzer's checkpoints: an engine saved and restored mid-stream (as a controller does
// around a kill -9: restore the last checkpoint, replay the events stored after it) reports
// exactly what an engine that never stopped reports; damaged checkpoints are rejected
// without crashing. The same for the response planner's rate-limit memory.
#include "controller/analyzer/response_planner.hpp"
#include "test_analyzer_support.hpp"

#include <doctest/doctest.h>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <variant>

using namespace bulkhead::test::analyzer;

namespace {

// One step of the stream: a drop, or an analyst resolving the open incident of a subject.
struct ResolveStep {
    std::string subject;
    std::int64_t at_ns = 0;
};
using Step = std::variant<DropRecord, ResolveStep>;

Source named(std::string enforcer, std::string workload, std::vector<std::string> segments,
             std::string address, std::string user = "") {
    return {std::move(enforcer), std::move(workload), std::move(user), std::move(segments),
            std::move(address)};
}

// A realistic mixed stream over ~40 min of event time, with the detectors' windows
// straddling the middle (T0 + 900 s): a fast sweep, a slow scan (one host every 100 s), a
// beacon (every ~60 s from T0 + 500 s), lateral movement from a user workload, decoy
// touches, a fan-in of six servers on one SMB target, an unattributed inbound port scan,
// background retries, and a resolve followed by a repeat offence.
std::vector<Step> mixed_stream() {
    std::vector<std::pair<std::int64_t, Step>> timed;
    auto add = [&](DropRecord r) {
        const auto t = r.time_ns;
        timed.emplace_back(t, std::move(r));
    };
    const auto sweeper = named("hv1", "srv-01", {"role=server"}, "10.0.5.1");
    for (int i = 0; i < 40; ++i) {
        add(drop(sweeper, host(i + 1), 8080, T0 + i * S / 10));
    }
    timed.emplace_back(T0 + 600 * S, ResolveStep{"hv1/srv-01", T0 + 600 * S});
    for (int i = 0; i < 20; ++i) { // the repeat offence, after the cut
        add(drop(sweeper, host(100 + i), 8081, T0 + 1100 * S + i * S / 10));
    }
    const auto slow = named("hv2", "db-07", {"role=server"}, "10.0.6.7");
    for (int i = 0; i < 20; ++i) {
        add(drop(slow, "10.0.2." + std::to_string(i + 1), 5432, T0 + 30 * S + i * 100 * S));
    }
    const auto beacon = named("hv2", "vdi-050", {"role=vdi"}, "10.1.0.50", "sato");
    for (int i = 0; i < 14; ++i) {
        const std::int64_t jitter = (i * 7 % 5) * S / 10;
        add(drop(beacon, "203.0.113.7", 443, T0 + 500 * S + i * 60 * S + jitter));
        add(drop(beacon, "203.0.113.7", 443, T0 + 500 * S + i * 60 * S + jitter + S)); // retransmit
    }
    const auto mover = named("hv3", "vdi-002", {"role=vdi"}, "10.1.0.2", "kimura");
    const std::uint16_t lateral_ports[] = {445, 3389};
    for (int h = 0; h < 4; ++h) {
        for (const auto port : lateral_ports) {
            add(drop(mover, "10.0.7." + std::to_string(h + 1), port,
                     T0 + 880 * S + h * 10 * S + port));
        }
    }
    const auto curious = named("hv3", "vdi-003", {"role=vdi"}, "10.1.0.3", "ito");
    add(drop(curious, "10.0.66.6", 22, T0 + 200 * S));
    add(drop(curious, "10.0.66.6", 22, T0 + 1200 * S));
    timed.emplace_back(T0 + 1250 * S, ResolveStep{"hv3/vdi-003", T0 + 1250 * S});
    add(drop(curious, "10.0.66.6", 23, T0 + 1300 * S)); // after a resolve: a repeat offender
    for (int k = 0; k < 6; ++k) {
        const auto s = named("hv4", "app-0" + std::to_string(k), {"role=server", "app=billing"},
                             "10.0.8." + std::to_string(k + 1));
        for (int attempt = 0; attempt < 4; ++attempt) {
            add(drop(s, "10.0.0.30", 445, T0 + 850 * S + k * 17 * S + attempt * 11 * S));
        }
    }
    auto outsider = named("edge1", "", {}, "198.51.100.9");
    for (int p = 0; p < 30; ++p) {
        add(drop(outsider, "10.0.9.9", static_cast<std::uint16_t>(2000 + p * 3),
                 T0 + 950 * S + p * S / 5));
    }
    for (int k = 0; k < 30; ++k) { // background: workloads retrying a blocked service
        const auto s = named("hv5", "web-" + std::to_string(k), {"role=web"},
                             "10.0.10." + std::to_string(k + 1));
        for (int n = 0; n < 8; ++n) {
            add(drop(s, "10.0.11." + std::to_string(k % 3 + 1), 9100, T0 + (k * 37 + n * 290) * S));
        }
    }
    std::stable_sort(timed.begin(), timed.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<Step> steps;
    for (auto& [t, step] : timed) {
        steps.push_back(std::move(step));
    }
    return steps;
}

AnalyzerConfig stream_config() {
    AnalyzerConfig c;
    c.forbidden.decoy_addresses = {"10.0.66.6"};
    return c;
}

// Few resolved incidents kept: resolved incidents leave memory mid-stream.
AnalyzerConfig few_kept_config() {
    auto c = stream_config();
    c.limits.max_resolved_incidents = 1;
    return c;
}

// Tight limits: the same stream runs into every cap, so evictions are checkpointed too (the
// slow scanner and the beacon are evicted before they are caught).
AnalyzerConfig tight_config() {
    auto c = stream_config();
    c.limits.max_sources = 12;
    c.limits.max_open_incidents = 3;
    c.limits.max_resolved_incidents = 1;
    c.limits.max_repeat_offender_records = 1;
    return c;
}

// What a finding says, as one comparable value.
nlohmann::json seen(const Finding& f) {
    return to_json(f);
}

// Runs `steps` [from, to) through `a`; returns the findings.
std::vector<nlohmann::json> run(Analyzer& a, const std::vector<Step>& steps, std::size_t from,
                                std::size_t to) {
    std::vector<nlohmann::json> findings;
    for (std::size_t i = from; i < to; ++i) {
        if (const auto* r = std::get_if<DropRecord>(&steps[i])) {
            for (const auto& f : a.observe(r->view())) {
                findings.push_back(seen(f));
            }
        } else {
            const auto& resolve = std::get<ResolveStep>(steps[i]);
            for (const auto* incident : a.incidents()) {
                if (incident->subject == resolve.subject &&
                    incident->state == IncidentState::Open) {
                    a.resolve(incident->id, resolve.at_ns);
                    break;
                }
            }
        }
    }
    return findings;
}

nlohmann::json incidents_of(const Analyzer& a) {
    auto list = nlohmann::json::array();
    for (const auto* incident : a.incidents()) {
        list.push_back(to_json(*incident));
    }
    return list;
}

std::size_t index_at(const std::vector<Step>& steps, std::int64_t t) {
    for (std::size_t i = 0; i < steps.size(); ++i) {
        if (const auto* r = std::get_if<DropRecord>(&steps[i]); r != nullptr && r->time_ns >= t) {
            return i;
        }
    }
    return steps.size();
}

// The checkpoint with its payload replaced and the checksum made valid again, so the decoder
// itself (not the checksum) meets the damage. Layout: magic (4), version (1), payload,
// FNV-1a 64 (8, little-endian).
std::string resealed(const std::string& checkpoint, std::string payload) {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (const char c : payload) {
        h ^= static_cast<unsigned char>(c);
        h *= 0x100000001b3ULL;
    }
    std::string out = checkpoint.substr(0, 5) + payload;
    for (int k = 0; k < 8; ++k) {
        out.push_back(static_cast<char>(h >> (8 * k)));
    }
    return out;
}
std::string payload_of(const std::string& checkpoint) {
    return checkpoint.substr(5, checkpoint.size() - 5 - 8);
}

// A restored engine must stand up to use: feed it, list it, save it again.
void exercise(Analyzer& a) {
    const auto extra =
        drop(named("hv9", "late-1", {"role=vdi"}, "10.9.0.1"), "10.0.66.6", 80, T0 + 5000 * S);
    a.observe(extra.view());
    for (const auto* incident : a.incidents()) {
        a.rearm(incident->id);
        (void)to_json(*incident);
    }
    (void)to_json(a.totals());
    (void)a.memory_bytes();
    (void)a.save_state();
}

} // namespace

TEST_CASE(
    "analyzer checkpoint: a restored engine reports what an engine that never stopped reports") {
    const auto steps = mixed_stream();
    const std::pair<const char*, AnalyzerConfig> configs[] = {{"defaults", stream_config()},
                                                              {"few kept", few_kept_config()},
                                                              {"tight limits", tight_config()}};
    for (const auto& [name, config] : configs) {
        // The engine that never stops.
        Analyzer whole(config);
        std::vector<nlohmann::json> all;
        std::vector<std::size_t> findings_before; // findings raised before step i
        for (std::size_t i = 0; i < steps.size(); ++i) {
            findings_before.push_back(all.size());
            auto found = run(whole, steps, i, i + 1);
            all.insert(all.end(), found.begin(), found.end());
        }
        findings_before.push_back(all.size());
        // The stream exercises what it claims to.
        std::set<std::string> rules;
        for (const auto& f : all) {
            rules.insert(f["rule"].get<std::string>());
        }
        const std::string config_name = name;
        CAPTURE(config_name);
        const auto final_incidents = incidents_of(whole);
        const auto final_totals = to_json(whole.totals());
        if (config_name != "tight limits") {
            for (const std::string rule :
                 {"host-sweep", "slow-scan", "beaconing", "lateral-movement", "decoy", "fan-in",
                  "port-scan-vertical"}) {
                CAPTURE(rule);
                CHECK(rules.contains(rule));
            }
            CHECK(std::count_if(final_incidents.begin(), final_incidents.end(), [](const auto& i) {
                      return i["repeat_offender"] == true;
                  }) == 2); // the sweeper and the decoy toucher, both back after a resolve
        }
        if (config_name == "few kept") {
            CHECK(final_totals["released_incidents"].get<std::uint64_t>() > 0);
        }
        if (config_name == "tight limits") {
            CHECK(final_totals["evicted_sources"].get<std::uint64_t>() > 0);
            CHECK(final_totals["evicted_incidents"].get<std::uint64_t>() > 0);
        }

        // Cut in the middle of the slow scan, the beacon, the lateral movement and the fan-in,
        // and at a few other places.
        std::vector<std::size_t> cuts{index_at(steps, T0 + 900 * S),
                                      index_at(steps, T0 + 880 * S + 3389),
                                      1,
                                      steps.size() / 4,
                                      steps.size() / 2,
                                      steps.size() - 1};
        for (const auto cut : cuts) {
            CAPTURE(cut);
            Analyzer before(config);
            run(before, steps, 0, cut);
            const auto checkpoint = before.save_state();
            auto restored = Analyzer::restore_state(checkpoint, config);
            REQUIRE_MESSAGE(restored.has_value(), restored.error());
            CHECK(to_json(restored->totals()) == to_json(before.totals()));
            CHECK(incidents_of(*restored) == incidents_of(before));
            const auto after = run(*restored, steps, cut, steps.size());
            const std::vector<nlohmann::json> expected(
                all.begin() + static_cast<std::ptrdiff_t>(findings_before[cut]), all.end());
            REQUIRE(after.size() == expected.size());
            for (std::size_t k = 0; k < after.size(); ++k) {
                CAPTURE(k);
                CHECK(after[k] == expected[k]);
            }
            CHECK(incidents_of(*restored) == final_incidents);
            CHECK(to_json(restored->totals()) == final_totals);
        }
    }
}

TEST_CASE("analyzer checkpoint: the comparison can fail (a state lost on restart shows)") {
    // An engine started fresh at the cut, as a controller without checkpoints would be,
    // misses the slow scan and the beacon that straddle it: the check above is not vacuous.
    const auto steps = mixed_stream();
    const auto cut = index_at(steps, T0 + 900 * S);
    Analyzer whole(stream_config());
    const auto before_cut = run(whole, steps, 0, cut);
    const auto expected = run(whole, steps, cut, steps.size());
    Analyzer fresh(stream_config());
    const auto after = run(fresh, steps, cut, steps.size());
    CHECK(after != expected);
}

TEST_CASE("analyzer checkpoint: truncated, damaged or unknown checkpoints are rejected") {
    const auto steps = mixed_stream();
    Analyzer a(stream_config());
    run(a, steps, 0, index_at(steps, T0 + 900 * S));
    const auto checkpoint = a.save_state();
    REQUIRE(checkpoint.size() > 100);
    REQUIRE(Analyzer::restore_state(checkpoint, stream_config()).has_value());

    SUBCASE("every truncation") {
        for (std::size_t n = 0; n < checkpoint.size(); ++n) {
            auto restored =
                Analyzer::restore_state(std::string_view(checkpoint).substr(0, n), stream_config());
            CHECK_FALSE(restored.has_value());
        }
    }
    SUBCASE("every truncation of the payload, resealed: the decoder finds the end itself") {
        const auto payload = payload_of(checkpoint);
        for (std::size_t n = 0; n < payload.size(); ++n) {
            auto restored = Analyzer::restore_state(resealed(checkpoint, payload.substr(0, n)),
                                                    stream_config());
            CHECK_FALSE(restored.has_value());
        }
        auto longer = Analyzer::restore_state(resealed(checkpoint, payload + "x"), stream_config());
        REQUIRE_FALSE(longer.has_value());
        CHECK(longer.error().find("bytes left") != std::string::npos);
    }
    SUBCASE("bit flips") {
        const auto payload = payload_of(checkpoint);
        std::size_t accepted = 0;
        for (std::size_t i = 0; i < checkpoint.size(); i += 3) {
            auto flipped = checkpoint;
            flipped[i] = static_cast<char>(flipped[i] ^ (1 << (i % 8)));
            CHECK_FALSE(Analyzer::restore_state(flipped, stream_config()).has_value()); // checksum
        }
        // Past the checksum: a damaged state restores or is refused, and what restores runs.
        for (std::size_t i = 0; i < payload.size(); i += 2) {
            auto flipped = payload;
            flipped[i] = static_cast<char>(flipped[i] ^ (1 << (i % 8)));
            auto restored = Analyzer::restore_state(resealed(checkpoint, flipped), stream_config());
            if (restored) {
                ++accepted;
                exercise(*restored);
            }
        }
        MESSAGE(accepted << " of " << (payload.size() + 1) / 2 << " resealed flips restored");
    }
    SUBCASE("unknown version, wrong magic, a planner checkpoint") {
        auto newer = checkpoint;
        newer[4] = 5;
        auto restored = Analyzer::restore_state(newer, stream_config());
        REQUIRE_FALSE(restored.has_value());
        CHECK(restored.error().find("version 5") != std::string::npos);
        // A checkpoint of the release before the spoof-guard rule (version 1) is refused too:
        // the controller rebuilds from the replay horizon instead.
        auto older = checkpoint;
        older[4] = 1;
        CHECK_FALSE(Analyzer::restore_state(older, stream_config()).has_value());
        older[4] = 3; // before beacon series held whether they were reported
        CHECK_FALSE(Analyzer::restore_state(older, stream_config()).has_value());
        auto other = checkpoint;
        other[0] = 'X';
        CHECK_FALSE(Analyzer::restore_state(other, stream_config()).has_value());
        CHECK_FALSE(
            Analyzer::restore_state(ResponsePlanner().save_state(), stream_config()).has_value());
        CHECK_FALSE(Analyzer::restore_state("", stream_config()).has_value());
    }
}

TEST_CASE("analyzer checkpoint: an empty engine round-trips") {
    Analyzer a;
    auto restored = Analyzer::restore_state(a.save_state(), {});
    REQUIRE(restored.has_value());
    CHECK(restored->incidents().empty());
    CHECK(restored->totals().observations == 0);
    exercise(*restored);
}

TEST_CASE("response planner checkpoint: the per-minute limit survives a restart") {
    bulkhead::policy::ResponsePolicy policy;
    policy.auto_quarantine = bulkhead::policy::AutoQuarantineMode::On;
    policy.auto_quarantine_min_severity = Severity::Medium;
    policy.max_auto_quarantines_per_minute = 2;
    Incident incident;
    incident.id = 1;
    incident.severity = Severity::High;
    Finding finding;
    finding.rule_text = "host-sweep";
    finding.detector = "host-sweep";
    ResponseSubject subject;
    subject.managed = true;

    ResponsePlanner before(policy);
    CHECK(before.decide(incident, finding, subject, T0).action == ResponseAction::Quarantine);
    CHECK(before.decide(incident, finding, subject, T0 + S).action == ResponseAction::Quarantine);
    const auto checkpoint = before.save_state();

    ResponsePlanner after(policy);
    REQUIRE(after.restore_state(checkpoint).has_value());
    CHECK(after.recent_quarantines(T0 + 2 * S) == 2);
    CHECK(after.decide(incident, finding, subject, T0 + 2 * S).action ==
          ResponseAction::RateLimited);
    CHECK(after.decide(incident, finding, subject, T0 + 61 * S).action ==
          ResponseAction::Quarantine);

    ResponsePlanner fresh(policy); // without the checkpoint the limit would be forgotten
    CHECK(fresh.decide(incident, finding, subject, T0 + 2 * S).action ==
          ResponseAction::Quarantine);

    for (std::size_t n = 0; n < checkpoint.size(); ++n) {
        ResponsePlanner damaged(policy);
        CHECK_FALSE(damaged.restore_state(std::string_view(checkpoint).substr(0, n)).has_value());
        CHECK(damaged.recent_quarantines(T0) == 0); // a refused checkpoint changes nothing
    }
    auto newer = checkpoint;
    newer[4] = 9;
    ResponsePlanner damaged(policy);
    const auto refused = damaged.restore_state(newer);
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error().find("version 9") != std::string::npos);
}
