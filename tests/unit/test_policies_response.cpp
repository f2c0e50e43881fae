// The policy's "response" section: defaults, every member read, every bad value reported
// at its JSON pointer.
#include "policies/policy_reader.hpp"

#include "test_support.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

using namespace bulkhead::policy;
using nlohmann::json;

namespace {

json policy_with_response(const json& response) {
    json doc = json::parse(bulkhead::test::read_source_file("examples/vdi-pool/policy.json"));
    doc["response"] = response;
    return doc;
}

std::vector<std::string> located(const std::vector<Diagnostic>& diagnostics) {
    std::vector<std::string> out;
    for (const auto& d : diagnostics) {
        out.push_back(d.pointer + " " + std::string(to_string(d.code)));
    }
    return out;
}

}  // namespace

TEST_CASE("response defaults when the section is absent") {
    auto doc = json::parse(bulkhead::test::read_source_file("examples/vdi-pool/policy.json"));
    doc.erase("response");
    auto policy = read_policy(doc);
    REQUIRE(policy);
    CHECK(policy->response.incident.distinct_targets == 10);
    CHECK(policy->response.incident.window_seconds == 60);
    CHECK(policy->response.incident.severity == Severity::High);
    CHECK(policy->response.decoy_severity == Severity::Critical);
    CHECK(policy->response.auto_quarantine == AutoQuarantineMode::Off);
}

TEST_CASE("response members are read") {
    auto policy = read_policy(policy_with_response(
        // Unsigned literals: the reader takes parsed JSON, where non-negative integers are
        // unsigned (a signed -0 is refused as out of range).
        {{"incident", {{"distinct_targets", 25u}, {"window_seconds", 30u}, {"severity", "medium"}}},
         {"decoy_severity", "high"},
         {"auto_quarantine", {{"mode", "dry-run"}, {"min_severity", "critical"}}},
         {"comment", "tuned for the VDI pool"}}));
    REQUIRE_MESSAGE(policy, (policy ? std::string() : format_diagnostic(policy.error().front())));
    CHECK(policy->response.incident.distinct_targets == 25);
    CHECK(policy->response.incident.window_seconds == 30);
    CHECK(policy->response.incident.severity == Severity::Medium);
    CHECK(policy->response.decoy_severity == Severity::High);
    CHECK(policy->response.auto_quarantine == AutoQuarantineMode::DryRun);
    CHECK(policy->response.auto_quarantine_min_severity == Severity::Critical);
    CHECK(to_string(AutoQuarantineMode::DryRun) == "dry-run");
    CHECK(severity_from_string("low") == Severity::Low);
    CHECK_FALSE(severity_from_string("urgent"));
}

TEST_CASE("bad response values are reported at their pointers") {
    struct Case {
        json response;
        std::string expected;
    };
    const Case cases[] = {
        {json::array(), "/response wrong-type"},
        {{{"incident", {{"distinct_targets", 0u}}}}, "/response/incident/distinct_targets invalid-value"},
        {{{"incident", {{"distinct_targets", 100001u}}}}, "/response/incident/distinct_targets invalid-value"},
        {{{"incident", {{"window_seconds", "60"}}}}, "/response/incident/window_seconds wrong-type"},
        {{{"incident", {{"window_seconds", 0u}}}}, "/response/incident/window_seconds invalid-value"},
        {{{"incident", {{"severity", "urgent"}}}}, "/response/incident/severity invalid-value"},
        {{{"incident", {{"targets", 3}}}}, "/response/incident/targets unknown-field"},
        {{{"decoy_severity", 3}}, "/response/decoy_severity wrong-type"},
        {{{"auto_quarantine", {{"min_severity", "high"}}}}, "/response/auto_quarantine missing-field"},
        {{{"auto_quarantine", {{"mode", "yes"}}}}, "/response/auto_quarantine/mode invalid-value"},
        {{{"auto_quarantine", true}}, "/response/auto_quarantine wrong-type"},
        {{{"auto-quarantine", {{"mode", "on"}}}}, "/response/auto-quarantine unknown-field"},
    };
    for (const auto& c : cases) {
        CAPTURE(c.response.dump());
        auto policy = read_policy(policy_with_response(c.response));
        REQUIRE_FALSE(policy);
        CHECK(located(policy.error()) == std::vector<std::string>{c.expected});
    }
}
