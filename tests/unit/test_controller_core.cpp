// The controller's pure core: desired rulesets and generations, roles.
#include "controller/core/access_policy.hpp"
#include "controller/core/desired_state.hpp"
#include "policies/policy_reader.hpp"
#include "policies/ruleset_compiler.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

using namespace bulkhead::controller;
namespace policy = bulkhead::policy;

namespace {

std::string read_text(const std::string& path) {
    std::ifstream in(path);
    std::stringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
}

}  // namespace

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
