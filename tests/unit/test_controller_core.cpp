// The controller's pure core: the incident rule, desired rulesets and generations, roles.
#include "controller/core/access_policy.hpp"
#include "controller/core/desired_state.hpp"
#include "controller/core/incident_detector.hpp"
#include "policies/policy_reader.hpp"
#include "policies/ruleset_compiler.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

using namespace bulkhead::controller;
namespace policy = bulkhead::policy;

namespace {

constexpr std::int64_t second = 1'000'000'000;

DropFact fact(std::string source, std::int64_t time_ns, std::string destination, std::uint16_t port,
              std::string reason = "default") {
    DropFact f;
    f.source_workload = std::move(source);
    f.time_ns = time_ns;
    f.destination = std::move(destination);
    f.protocol = "tcp";
    f.port = port;
    f.reason = std::move(reason);
    return f;
}

policy::ResponsePolicy rule(std::uint32_t targets, std::uint32_t window_seconds) {
    policy::ResponsePolicy response;
    response.incident.distinct_targets = targets;
    response.incident.window_seconds = window_seconds;
    return response;
}

std::string read_text(const std::string& path) {
    std::ifstream in(path);
    std::stringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
}

}  // namespace

TEST_CASE("incident rule fires at the distinct-target threshold, then once per window") {
    IncidentDetector detector(rule(3, 10));
    CHECK_FALSE(detector.observe(fact("vdi-001", 1 * second, "10.1.0.2", 445)));
    // Repeats of one target are one target: a retrying application is not a scan.
    for (int i = 0; i < 20; ++i) {
        CHECK_FALSE(detector.observe(fact("vdi-001", 2 * second, "10.1.0.2", 445)));
    }
    CHECK_FALSE(detector.observe(fact("vdi-001", 3 * second, "10.1.0.3", 445)));
    auto detection = detector.observe(fact("vdi-001", 4 * second, "10.1.0.3", 3389));
    REQUIRE(detection);
    CHECK(detection->kind == "distinct-targets");
    CHECK(detection->distinct_targets == 3);
    CHECK(detection->distinct_hosts == 2);
    CHECK(detection->distinct_ports == 2);
    CHECK(detection->first_ns == 1 * second);
    CHECK(detection->last_ns == 4 * second);
    CHECK(detection->severity == policy::Severity::High);
    // A scan that goes on is the same storm: quiet until the window has passed...
    for (int i = 0; i < 50; ++i) {
        CHECK_FALSE(detector.observe(fact("vdi-001", 5 * second + i, "10.1.1." + std::to_string(i), 22)));
    }
    CHECK_FALSE(detector.observe(fact("vdi-001", 14 * second - 1, "10.1.2.1", 22)));
    // ...then counting starts anew from zero: three more targets for the next detection.
    CHECK_FALSE(detector.observe(fact("vdi-001", 14 * second, "10.1.2.2", 22)));
    CHECK_FALSE(detector.observe(fact("vdi-001", 14 * second, "10.1.2.3", 22)));
    auto next = detector.observe(fact("vdi-001", 15 * second, "10.1.2.4", 22));
    REQUIRE(next);
    CHECK(next->first_ns == 14 * second);
    CHECK(next->distinct_targets == 3);
}

TEST_CASE("forgetting a source re-arms its rules at once") {
    IncidentDetector detector(rule(2, 60));
    CHECK_FALSE(detector.observe(fact("vdi-001", 1 * second, "10.1.0.2", 445)));
    CHECK(detector.observe(fact("vdi-001", 1 * second, "10.1.0.3", 445)));
    CHECK_FALSE(detector.observe(fact("vdi-001", 2 * second, "10.1.0.4", 445)));
    CHECK_FALSE(detector.observe(fact("vdi-001", 2 * second, "10.1.0.5", 445)));
    CHECK(detector.observe(fact("vdi-001", 2 * second, "10.0.0.66", 445, "decoy")));
    CHECK_FALSE(detector.observe(fact("vdi-001", 3 * second, "10.0.0.66", 445, "decoy")));
    // Released or resolved: the next scan and the next decoy touch are new detections.
    detector.forget("vdi-001");
    CHECK_FALSE(detector.observe(fact("vdi-001", 4 * second, "10.1.0.2", 445)));
    CHECK(detector.observe(fact("vdi-001", 4 * second, "10.1.0.3", 445)));
    CHECK(detector.observe(fact("vdi-001", 4 * second, "10.0.0.66", 445, "decoy")));
    // Quiet periods keep a source tracked until they end.
    detector.expire(30 * second);
    CHECK(detector.tracked_sources() == 1);
    detector.expire(65 * second);
    CHECK(detector.tracked_sources() == 0);
}

TEST_CASE("incident rule forgets targets older than the window") {
    IncidentDetector detector(rule(3, 10));
    CHECK_FALSE(detector.observe(fact("vdi-001", 0, "10.1.0.2", 445)));
    CHECK_FALSE(detector.observe(fact("vdi-001", 5 * second, "10.1.0.3", 445)));
    // 12 s after the first: only two targets are inside the 10 s window.
    CHECK_FALSE(detector.observe(fact("vdi-001", 12 * second, "10.1.0.4", 445)));
    CHECK(detector.observe(fact("vdi-001", 13 * second, "10.1.0.5", 445)));
}

TEST_CASE("incident rule keeps sources apart and ignores unattributed drops") {
    IncidentDetector detector(rule(2, 60));
    CHECK_FALSE(detector.observe(fact("vdi-001", 1 * second, "10.1.0.2", 445)));
    CHECK_FALSE(detector.observe(fact("vdi-002", 1 * second, "10.1.0.3", 445)));
    CHECK_FALSE(detector.observe(fact("", 1 * second, "10.1.0.4", 445)));
    CHECK_FALSE(detector.observe(fact("", 1 * second, "10.1.0.5", 445)));
    CHECK(detector.observe(fact("vdi-002", 2 * second, "10.1.0.9", 445)));
    CHECK(detector.tracked_sources() == 2);
    detector.expire(200 * second);
    CHECK(detector.tracked_sources() == 0);
}

TEST_CASE("one decoy touch is a detection at the decoy severity") {
    auto response = rule(100, 60);
    response.decoy_severity = policy::Severity::Critical;
    IncidentDetector detector(response);
    auto detection = detector.observe(fact("vdi-003", 7 * second, "10.0.0.66", 445, "decoy"));
    REQUIRE(detection);
    CHECK(detection->kind == "decoy");
    CHECK(detection->severity == policy::Severity::Critical);
    CHECK(explain(*detection, "suzuki") == "vdi-003 (user suzuki) touched decoy 10.0.0.66 tcp/445");
    // A storm of decoy touches is one detection per window (60 s here).
    CHECK_FALSE(detector.observe(fact("vdi-003", 8 * second, "10.0.0.67", 22, "decoy")));
    CHECK(detector.observe(fact("vdi-003", 67 * second, "10.0.0.66", 445, "decoy")));
}

TEST_CASE("explanations name the source, user, targets, services and duration") {
    IncidentDetector detector(rule(3, 60));
    detector.observe(fact("vdi-001", 0, "10.1.0.2", 445));
    detector.observe(fact("vdi-001", second, "10.1.0.3", 445));
    auto detection = detector.observe(fact("vdi-001", 2 * second + second / 2, "10.1.0.4", 445));
    REQUIRE(detection);
    CHECK(explain(*detection, "kimura") == "vdi-001 (user kimura) tried 3 blocked targets on 3 hosts (tcp/445) in 2.5 s");
    CHECK(explain(*detection, "") == "vdi-001 tried 3 blocked targets on 3 hosts (tcp/445) in 2.5 s");
}

TEST_CASE("desired state numbers changed enforcers only and keeps diff bases") {
    auto policy_doc = policy::parse_policy(read_text(BULKHEAD_SOURCE_DIR "/examples/vdi-pool/policy.json"));
    auto inventory = policy::parse_inventory(read_text(BULKHEAD_SOURCE_DIR "/examples/vdi-pool/inventory.json"));
    REQUIRE(policy_doc);
    REQUIRE(inventory);
    bulkhead::ruleset::RulesetCompiler compiler(*policy_doc, *inventory);
    DesiredState desired(2);
    auto first = desired.update(compiler.compile_all(), 1);
    CHECK(first == std::vector<std::string>{"hv1", "hv2"});
    // The same rulesets again: nothing changes, no generation spent.
    CHECK(desired.update(compiler.compile_all(), 2).empty());
    // Quarantining vdi-001 (on hv1) changes hv1 alone.
    auto changed = desired.update_some({{"hv1", *compiler.compile("hv1", {"vdi-001"})}}, 2);
    CHECK(changed == std::vector<std::string>{"hv1"});
    REQUIRE(desired.current("hv1"));
    CHECK(desired.current("hv1")->generation == 2);
    CHECK(desired.current("hv2")->generation == 1);
    auto base = desired.find("hv1", 1, desired.current("hv1")->hash);
    CHECK_FALSE(base);  // generation 1 had another hash
    const auto gen1_hash = bulkhead::ruleset::ruleset_hash(*compiler.compile("hv1"));
    CHECK(desired.find("hv1", 1, gen1_hash));
    // History is bounded: after two more changes generation 1 is gone.
    desired.update_some({{"hv1", *compiler.compile("hv1", {"vdi-001", "vdi-002"})}}, 3);
    desired.update_some({{"hv1", *compiler.compile("hv1", {"vdi-002"})}}, 4);
    CHECK_FALSE(desired.find("hv1", 1, gen1_hash));
    CHECK(desired.highest_generation() == 4);
    // An enforcer that reports the current hash under another number keeps that number.
    desired.adopt_generation("hv2", desired.current("hv2")->hash, 7);
    CHECK(desired.current("hv2")->generation == 7);
    desired.adopt_generation("hv2", "not-the-hash", 9);
    CHECK(desired.current("hv2")->generation == 7);
    // A full update drops enforcers that left the inventory.
    desired.update({{"hv1", *compiler.compile("hv1")}}, 5);
    CHECK_FALSE(desired.current("hv2"));
}

TEST_CASE("roles allow exactly their permissions") {
    CHECK(role_allows(Role::Admin, Permission::WritePolicy));
    CHECK(role_allows(Role::Admin, Permission::Quarantine));
    CHECK_FALSE(role_allows(Role::Admin, Permission::EnforcerChannel));
    CHECK(role_allows(Role::Soc, Permission::Quarantine));
    CHECK(role_allows(Role::Soc, Permission::HandleIncidents));
    CHECK_FALSE(role_allows(Role::Soc, Permission::WritePolicy));
    CHECK_FALSE(role_allows(Role::Soc, Permission::WriteInventory));
    CHECK(role_allows(Role::Automation, Permission::Quarantine));
    CHECK_FALSE(role_allows(Role::Automation, Permission::HandleIncidents));
    CHECK_FALSE(role_allows(Role::Automation, Permission::ReadAudit));
    CHECK(role_allows(Role::Enforcer, Permission::EnforcerChannel));
    CHECK_FALSE(role_allows(Role::Enforcer, Permission::Read));
    CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}
