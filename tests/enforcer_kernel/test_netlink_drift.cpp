// check(): someone else changed the kernel's table; check() says what, replace() repairs it.
#include "enforcer/netlink/ruleset_backend.hpp"
#include "kernel_support.hpp"

#include "policies/nft_text.hpp"

#include <doctest/doctest.h>

using namespace bulkhead;
using namespace bulkhead::ktest;

TEST_CASE("netlink drift: check() reports tampering and replace() repairs it") {
    ScopedNetns ns;
    REQUIRE(nft_script("table inet foreign {\n\tchain c {\n\t\ttype filter hook forward priority 0; "
                       "policy accept;\n\t\tcounter\n\t}\n}\n")
                .status == 0);
    const auto foreign_before = raw_listing("inet foreign");
    const auto desired = compile(load_example("vdi-pool"), "hv1");
    enforcer::NetlinkRulesetBackend backend;
    REQUIRE(backend.replace(desired));
    const auto clean_snapshot = snapshot();
    auto drift = backend.check(desired);
    REQUIRE(drift);
    REQUIRE_MESSAGE(drift->clean(), drift->summary());
    CHECK(drift->summary() == "clean");
    bool foreign_survives = true;

    // The sets the tampering touches, chosen by shape.
    const auto& rbtree = pick_set(desired, [](const auto& s) {
        return s.interval && s.key.size() == 1 && !s.verdict_map && !s.elements->empty();
    }, "single-field interval set with elements");
    const auto& concat = pick_set(desired, [](const auto& s) {
        return s.interval && s.key.size() > 1 && !s.elements->empty();
    }, "concatenated interval set with elements");
    const auto& ports = pick_set(desired, [](const auto& s) {
        return s.dynamic && s.key == std::vector{ruleset::KeyType::Ifname};
    }, "dynamic interface set");
    const auto& map = pick_set(desired, [](const auto& s) {
        return s.verdict_map && !s.elements->empty();
    }, "verdict map with elements");
    const auto& empty_rbtree = pick_set(desired, [&](const auto& s) {
        return s.interval && s.key.size() == 1 && !s.verdict_map && s.name != rbtree.name;
    }, "second single-field interval set");
    auto element_text = [](const ruleset::SetDefinition& set, const ruleset::Element& e) {
        ruleset::SetDefinition plain = set;
        plain.verdict_map = false;  // key only
        return ruleset::render_element(e, plain);
    };

    SUBCASE("nft flush ruleset: the table is missing") {
        REQUIRE(run("nft flush ruleset").status == 0);
        foreign_survives = false;  // the flush took it too; we must not recreate it
        drift = backend.check(desired);
        REQUIRE(drift);
        CHECK(drift->table_missing);
        CHECK_FALSE(drift->clean());
        CHECK(drift->summary() == "table inet bulkhead missing");
    }
    SUBCASE("a deleted element") {
        REQUIRE(run("nft delete element inet bulkhead " + rbtree.name + " { " +
                    element_text(rbtree, rbtree.elements->front()) + " }")
                    .status == 0);
        drift = backend.check(desired);
        REQUIRE(drift);
        CHECK(drift->missing_elements == 1);
        CHECK(drift->unexpected_elements == 0);
        CHECK(drift->changed_chains.empty());
        CHECK(drift->missing_sets.empty());
    }
    SUBCASE("a deleted element of a concatenated interval set") {
        REQUIRE(run("nft delete element inet bulkhead " + concat.name + " { " +
                    element_text(concat, concat.elements->back()) + " }")
                    .status == 0);
        drift = backend.check(desired);
        REQUIRE(drift);
        CHECK(drift->missing_elements == 1);
        CHECK(drift->unexpected_elements == 0);
    }
    SUBCASE("an added element and a changed map entry") {
        const auto& entry = map.elements->front();
        std::string other;  // another chain the map entry can be pointed at
        for (const auto& chain : desired.chains) {
            if (!chain.base && chain.name != entry.jump) {
                other = chain.name;
            }
        }
        REQUIRE_FALSE(other.empty());
        REQUIRE(run("nft 'add element inet bulkhead " + ports.name + " { \"evil0\" }'").status == 0);
        REQUIRE(run("nft 'delete element inet bulkhead " + map.name + " { " +
                    element_text(map, entry) + " }'")
                    .status == 0);
        REQUIRE(run("nft 'add element inet bulkhead " + map.name + " { " + element_text(map, entry) +
                    " : jump " + other + " }'")
                    .status == 0);
        drift = backend.check(desired);
        REQUIRE(drift);
        CHECK(drift->unexpected_elements == 2);
        CHECK(drift->missing_elements == 1);
    }
    SUBCASE("a foreign rule in our chain") {
        REQUIRE(run("nft add rule inet bulkhead forward counter").status == 0);
        drift = backend.check(desired);
        REQUIRE(drift);
        CHECK(drift->changed_chains == std::vector<std::string>{"forward"});
        CHECK(drift->missing_elements == 0);
    }
    SUBCASE("a rule of ours deleted") {
        const auto& chain = desired.chains.back();
        REQUIRE_FALSE(chain.rules.empty());
        const auto listed = run("nft -a list chain inet bulkhead " + chain.name).output;
        const auto at = listed.rfind("# handle ");  // the chain's last rule
        REQUIRE(at != std::string::npos);
        const auto handle = listed.substr(at + 9, listed.find('\n', at) - at - 9);
        REQUIRE(run("nft delete rule inet bulkhead " + chain.name + " handle " + handle).status == 0);
        drift = backend.check(desired);
        REQUIRE(drift);
        CHECK(drift->changed_chains == std::vector<std::string>{chain.name});
    }
    SUBCASE("a base chain with a drop policy") {
        REQUIRE(run("nft 'add chain inet bulkhead forward { type filter hook forward priority 0; "
                    "policy drop; }'")
                    .status == 0);
        drift = backend.check(desired);
        REQUIRE(drift);
        CHECK(drift->changed_chains == std::vector<std::string>{"forward"});
    }
    SUBCASE("a foreign set and chain in our table, one of our sets deleted") {
        REQUIRE(run("nft 'add set inet bulkhead intruder { type ipv4_addr; }'").status == 0);
        REQUIRE(run("nft add chain inet bulkhead sidecar").status == 0);
        // A set no rule refers to... the kernel refuses to delete a set in use, so flush the
        // chains first and delete one of ours.
        for (const auto& chain : desired.chains) {
            REQUIRE(run("nft flush chain inet bulkhead " + chain.name).status == 0);
        }
        REQUIRE(run("nft delete set inet bulkhead " + empty_rbtree.name).status == 0);
        drift = backend.check(desired);
        REQUIRE(drift);
        CHECK(drift->unexpected_sets == std::vector<std::string>{"intruder"});
        CHECK(drift->unexpected_chains == std::vector<std::string>{"sidecar"});
        CHECK(drift->missing_sets == std::vector<std::string>{empty_rbtree.name});
        CHECK(drift->missing_elements == empty_rbtree.elements->size());
        CHECK_FALSE(drift->summary().empty());
    }
    SUBCASE("a set recreated with other flags") {
        for (const auto& chain : desired.chains) {
            REQUIRE(run("nft flush chain inet bulkhead " + chain.name).status == 0);
        }
        REQUIRE(run("nft delete set inet bulkhead " + empty_rbtree.name).status == 0);
        REQUIRE(run("nft 'add set inet bulkhead " + empty_rbtree.name + " { type " +
                    std::string(ruleset::nft_name(empty_rbtree.key.front())) + "; }'")
                    .status == 0);
        drift = backend.check(desired);
        REQUIRE(drift);
        CHECK(drift->changed_sets == std::vector<std::string>{empty_rbtree.name});
    }
    CHECK_FALSE(drift->clean());

    // Repair: one replace() transaction restores the intended table exactly.
    auto repaired = backend.replace(desired);
    REQUIRE_MESSAGE(repaired, (repaired ? "" : repaired.error().message));
    drift = backend.check(desired);
    REQUIRE(drift);
    CHECK_MESSAGE(drift->clean(), drift->summary());
    CHECK_MESSAGE((snapshot() == clean_snapshot), first_difference(clean_snapshot, snapshot()));
    if (foreign_survives) {
        CHECK(raw_listing("inet foreign") == foreign_before);
    } else {
        CHECK(run("nft list table inet foreign").status != 0);
    }
}
