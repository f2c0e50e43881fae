// Failures: a batch the kernel rejects names the IR object and changes nothing; check mode
// commits nothing; lost ACKs are settled through the generation id.
#include "enforcer/netlink/ruleset_backend.hpp"
#include "kernel_support.hpp"
#include "policies/nft_text.hpp"
#include "policies/ruleset_diff.hpp"

#include <doctest/doctest.h>

#include <cerrno>

using namespace bulkhead;
using namespace bulkhead::ktest;

namespace {

ruleset::SetDefinition* find_set(ruleset::Ruleset& r, const std::string& name) {
    for (auto& s : r.sets) {
        if (s.name == name) {
            return &s;
        }
    }
    return nullptr;
}

std::string describe(const enforcer::KernelError& e) {
    return e.message + " [object: " + e.object + ", errno " + std::to_string(e.error_number) + "]";
}

}  // namespace

TEST_CASE("netlink errors: a rejected batch names the object and leaves the kernel as it was") {
    ScopedNetns ns;
    REQUIRE(nft_script("table inet foreign {\n\tchain c {\n\t\ttype filter hook forward priority 0; "
                       "policy accept;\n\t\tcounter\n\t}\n}\n")
                .status == 0);
    const auto foreign_before = raw_listing("inet foreign");
    const auto good = compile(load_example("vdi-pool"), "hv1");
    const std::string ports_name = pick_set(good, [](const auto& s) {
        return !s.interval && !s.verdict_map && s.key == std::vector{ruleset::KeyType::Ifname};
    }, "interface set").name;
    const std::string concat_name = pick_set(good, [](const auto& s) {
        return s.interval && s.key.size() > 1 && !s.elements->empty() &&
               std::holds_alternative<ruleset::NumberRange>(s.elements->front().key.back());
    }, "concatenated interval set ending in a number").name;
    const std::string map_name = pick_set(good, [](const auto& s) {
        return s.verdict_map && !s.elements->empty();
    }, "verdict map with elements").name;
    enforcer::NetlinkRulesetBackend backend;
    REQUIRE(backend.replace(good));
    const auto before_listing = listing().dump(1);
    const auto before_snapshot = snapshot();
    const auto generation = backend.generation();
    REQUIRE(generation);

    std::expected<enforcer::ApplyStats, enforcer::KernelError> result;
    SUBCASE("a rule jumping to a chain that does not exist") {
        auto bad = good;
        ruleset::Rule rule;
        rule.verdict = {ruleset::VerdictKind::Jump, "nowhere"};
        bad.chains.front().rules.push_back(rule);
        const auto index = bad.chains.front().rules.size();
        result = backend.replace(bad);
        REQUIRE_FALSE(result);
        CHECK(result.error().object ==
              "rule " + std::to_string(index) + " of chain " + bad.chains.front().name);
        CHECK(result.error().error_number == ENOENT);
        CHECK(result.error().message.find("nothing was committed") != std::string::npos);
    }
    SUBCASE("a duplicate element") {
        auto bad = good;
        auto* set = find_set(bad, ports_name);
        REQUIRE(set != nullptr);
        set->elements = std::make_shared<const ruleset::ElementList>(
            ruleset::ElementList{{{std::string("vdi009")}, ""}, {{std::string("vdi009")}, ""}});
        result = backend.replace(bad);
        REQUIRE_FALSE(result);
        CHECK(result.error().object == "element \"vdi009\" of set " + ports_name);
        CHECK(result.error().error_number == EEXIST);
    }
    SUBCASE("a map element jumping to a chain that does not exist") {
        auto bad = good;
        auto* map = find_set(bad, map_name);
        REQUIRE(map != nullptr);
        auto elements = *map->elements;
        elements.back().jump = "nowhere";
        map->elements = std::make_shared<const ruleset::ElementList>(elements);
        result = backend.replace(bad);
        REQUIRE_FALSE(result);
        CHECK(result.error().object == "element " + ruleset::render_element(elements.back(), *map) +
                                           " of map " + map_name);
        CHECK(result.error().error_number == ENOENT);
    }
    SUBCASE("a diff deleting an element the kernel does not have") {
        ruleset::RulesetDiff diff;
        diff.enforcer = good.enforcer;
        diff.set_changes.push_back({ports_name, {{{std::string("ghost0")}, ""}}, {}});
        result = backend.apply_diff(diff, good);
        REQUIRE_FALSE(result);
        CHECK(result.error().object == "element \"ghost0\" of set " + ports_name);
        CHECK(result.error().error_number == ENOENT);
    }
    SUBCASE("an IR the kernel cannot express is refused before sending") {
        auto bad = good;
        auto* set = find_set(bad, ports_name);
        auto range = find_set(bad, concat_name)->elements->front();  // not an interface name
        set->elements = std::make_shared<const ruleset::ElementList>(ruleset::ElementList{range});
        result = backend.replace(bad);
        REQUIRE_FALSE(result);
        CHECK(result.error().object == "set " + ports_name);
        CHECK(result.error().error_number == 0);
    }
    INFO(describe(result.error()));
    CHECK(backend.generation().value() == *generation);
    CHECK_MESSAGE((listing().dump(1) == before_listing), first_difference(before_listing, listing().dump(1)));
    CHECK_MESSAGE((snapshot() == before_snapshot), first_difference(before_snapshot, snapshot()));
    CHECK(raw_listing("inet foreign") == foreign_before);
}

TEST_CASE("netlink errors: validate() checks a ruleset without committing it") {
    ScopedNetns ns;
    enforcer::NetlinkRulesetBackend backend;
    const auto generation = backend.generation();
    REQUIRE(generation);
    const auto good = compile(load_example("vdi-pool"), "hv2");

    auto valid = backend.validate(good);
    REQUIRE_MESSAGE(valid, (valid ? "" : describe(valid.error())));
    CHECK(snapshot() == "no table");

    auto bad = good;
    ruleset::Rule rule;
    rule.verdict = {ruleset::VerdictKind::Goto, "nowhere"};
    bad.chains.back().rules.push_back(rule);
    auto invalid = backend.validate(bad);
    REQUIRE_FALSE(invalid);
    CHECK(invalid.error().object.find("of chain " + bad.chains.back().name) != std::string::npos);
    CHECK(invalid.error().error_number == ENOENT);
    CHECK(snapshot() == "no table");
    CHECK(backend.generation().value() == *generation);
}

TEST_CASE("netlink errors: lost ACKs are settled through the generation id") {
    ScopedNetns ns;
    // A receive buffer far too small for one ACK per message: the socket overflows (ENOBUFS).
    enforcer::NetlinkOptions options;
    options.receive_buffer = 1;
    enforcer::NetlinkRulesetBackend backend(options);
    const auto desired = compile(load_example("vdi-pool"), "hv2");
    const auto before = backend.generation();
    REQUIRE(before);

    auto stats = backend.replace(desired);
    REQUIRE_MESSAGE(stats, (stats ? "" : describe(stats.error())));
    CHECK(stats->acks_incomplete);
    CHECK(stats->generation == *before + 1);
    auto drift = backend.check(desired);
    REQUIRE(drift);
    CHECK(drift->clean());

    // A failing batch whose error may be among the lost ACKs: still an error, nothing
    // committed.
    const auto snap = snapshot();
    auto bad = desired;
    ruleset::Rule rule;
    rule.verdict = {ruleset::VerdictKind::Jump, "nowhere"};
    bad.chains.back().rules.push_back(rule);
    auto failed = backend.replace(bad);
    REQUIRE_FALSE(failed);
    // Either the error ACK survived, or a check-mode resend found it: the object is named.
    CHECK(failed.error().object == "rule " + std::to_string(bad.chains.back().rules.size()) +
                                       " of chain " + bad.chains.back().name);
    CHECK(failed.error().error_number == ENOENT);
    MESSAGE("lost-ACK failure reported as: " << describe(failed.error()));
    CHECK(backend.generation().value() == *before + 1);
    CHECK_MESSAGE((snapshot() == snap), first_difference(snap, snapshot()));
}
