// apply_diff(): element-level changes in one transaction; afterwards the kernel holds
// exactly what a fresh replace() of the new ruleset would, and a foreign table never moves.
#include "enforcer/netlink/ruleset_backend.hpp"
#include "kernel_support.hpp"
#include "policies/ruleset_diff.hpp"

#include <doctest/doctest.h>

#include <algorithm>

using namespace bulkhead;
using namespace bulkhead::ktest;

namespace {

const char* foreign_table = R"(table inet foreign {
	chain c {
		type filter hook forward priority 0; policy accept;
		counter
	}
}
)";

// Applies old -> updated as a diff, then compares the result with a fresh replace().
enforcer::ApplyStats apply_and_compare(enforcer::NetlinkRulesetBackend& backend,
                                       const ruleset::Ruleset& old,
                                       const ruleset::Ruleset& updated) {
    const auto diff = ruleset::diff_rulesets(old, updated);
    REQUIRE_FALSE(diff.full_replace);
    auto before = backend.generation();
    REQUIRE(before);
    auto stats = backend.apply_diff(diff, updated);
    REQUIRE_MESSAGE(stats, (stats ? "" : stats.error().message + " [" + stats.error().object + "]"));
    CHECK(stats->generation == *before + 1);
    CHECK(stats->elements == diff.elements_added() + diff.elements_removed());
    auto drift = backend.check(updated);
    REQUIRE(drift);
    CHECK_MESSAGE(drift->clean(), drift->summary());

    const auto after_diff = listing().dump(1);
    const auto after_diff_snapshot = snapshot();
    REQUIRE(backend.replace(updated));
    const auto fresh = listing().dump(1);
    const auto fresh_snapshot = snapshot();
    CHECK_MESSAGE((after_diff == fresh), first_difference(fresh, after_diff));
    CHECK_MESSAGE((after_diff_snapshot == fresh_snapshot),
                  first_difference(fresh_snapshot, after_diff_snapshot));
    return *stats;
}

policy::Workload workload(const Example& example, const std::string& id) {
    for (const auto& w : example.inventory.workloads) {
        if (w.id == id) {
            return w;
        }
    }
    FAIL("no workload " << id);
    return {};
}

}  // namespace

TEST_CASE("netlink diff: element and chain changes equal a fresh replace") {
    ScopedNetns ns;
    REQUIRE(nft_script(foreign_table).status == 0);
    const auto foreign_before = raw_listing("inet foreign");
    REQUIRE(foreign_before.find("counter") != std::string::npos);

    const auto example = load_example("vdi-pool");
    enforcer::NetlinkRulesetBackend backend;

    SUBCASE("quarantine one VDI and lift it: one element each way") {
        const auto old = compile(example, "hv1");
        REQUIRE(backend.replace(old));
        const auto quarantined = compile(example, "hv1", {"vdi-001"});
        const auto diff = ruleset::diff_rulesets(old, quarantined);
        CHECK(diff.elements_added() == 1);
        CHECK(diff.elements_removed() == 0);
        CHECK(diff.rules_written() == 0);
        auto stats = apply_and_compare(backend, old, quarantined);
        CHECK(stats.elements == 1);
        CHECK(stats.messages == 4);  // begin, add table, one element, end
        stats = apply_and_compare(backend, quarantined, old);
        CHECK(stats.elements == 1);
    }
    SUBCASE("add a VDI: its map and set elements, no rules") {
        const auto old = compile(example, "hv1");
        REQUIRE(backend.replace(old));
        auto grown = example;
        grown.inventory.workloads.push_back(clone_workload(
            workload(example, "vdi-003"), "vdi-004", "10.1.0.4", "fd00:0:0:10::4", "vdi004"));
        const auto updated = compile(grown, "hv1");
        const auto diff = ruleset::diff_rulesets(old, updated);
        CHECK(diff.rules_written() == 0);
        CHECK(diff.elements_added() >= 2);
        apply_and_compare(backend, old, updated);
    }
    SUBCASE("change a policy rule: elements removed and added") {
        const auto old = compile(example, "hv1");
        REQUIRE(backend.replace(old));
        auto changed = example;
        for (auto& rule : changed.policy.rules) {
            if (rule.name == "vdi-to-file-servers") {
                rule.services = {"smb"};  // no more ping to the file servers
            }
            if (rule.name == "vdi-to-proxy") {
                rule.services.push_back("rdp");
            }
        }
        const auto updated = compile(changed, "hv1");
        const auto diff = ruleset::diff_rulesets(old, updated);
        CHECK(diff.elements_removed() > 0);
        CHECK(diff.elements_added() > 0);
        apply_and_compare(backend, old, updated);
    }
    SUBCASE("monitor mode: class chains flushed and rewritten") {
        const auto old = compile(example, "hv1");
        REQUIRE(backend.replace(old));
        auto monitor = example;
        monitor.policy.defaults.mode = policy::Mode::Monitor;
        const auto updated = compile(monitor, "hv1");
        const auto diff = ruleset::diff_rulesets(old, updated);
        CHECK_FALSE(diff.chains_changed.empty());
        apply_and_compare(backend, old, updated);
        apply_and_compare(backend, updated, old);
    }
    SUBCASE("a class disappears and comes back: chains and sets removed and added") {
        const auto old = compile(example, "hv2");
        REQUIRE(backend.replace(old));
        auto shrunk = example;
        std::erase_if(shrunk.inventory.workloads,
                      [](const policy::Workload& w) { return w.id == "admin-01"; });
        const auto updated = compile(shrunk, "hv2");
        const auto diff = ruleset::diff_rulesets(old, updated);
        CHECK_FALSE(diff.chains_removed.empty());
        CHECK_FALSE(diff.sets_removed.empty());
        apply_and_compare(backend, old, updated);
        const auto back = ruleset::diff_rulesets(updated, old);
        CHECK_FALSE(back.chains_added.empty());
        CHECK_FALSE(back.sets_added.empty());
        apply_and_compare(backend, updated, old);
    }
    SUBCASE("a changed set definition falls back to one replace transaction") {
        const auto old = compile(example, "hv1");
        REQUIRE(backend.replace(old));
        auto updated = old;
        bool changed = false;
        for (auto& set : updated.sets) {
            if (set.dynamic) {
                set.dynamic = false;  // flags cannot change in place
                changed = true;
                break;
            }
        }
        REQUIRE(changed);
        const auto diff = ruleset::diff_rulesets(old, updated);
        REQUIRE(diff.full_replace);
        auto before = backend.generation();
        auto stats = backend.apply_diff(diff, updated);
        REQUIRE_MESSAGE(stats, (stats ? "" : stats.error().message + " [" + stats.error().object + "]"));
        CHECK(stats->generation == *before + 1);
        auto drift = backend.check(updated);
        REQUIRE(drift);
        CHECK_MESSAGE(drift->clean(), drift->summary());
    }
    SUBCASE("an empty diff sends nothing") {
        const auto old = compile(example, "hv1");
        auto first = backend.replace(old);
        REQUIRE(first);
        auto stats = backend.apply_diff(ruleset::diff_rulesets(old, old), old);
        REQUIRE(stats);
        CHECK(stats->messages == 0);
        CHECK(stats->generation == first->generation);
    }
    CHECK(raw_listing("inet foreign") == foreign_before);
}
