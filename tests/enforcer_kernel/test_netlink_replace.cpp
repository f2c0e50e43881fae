// replace(): the netlink-built table equals the one `nft -f` builds from the same IR's text,
// in nft's own listing and attribute by attribute.
#include "enforcer/netlink/ruleset_backend.hpp"
#include "kernel_support.hpp"
#include "policies/nft_text.hpp"

#include <doctest/doctest.h>

#include <chrono>

using namespace bulkhead;
using namespace bulkhead::ktest;

namespace {

struct Built {
    std::string listing;
    std::string snapshot;
};

// Loads `ruleset` with nft -f in a throwaway namespace: the oracle.
Built built_by_nft(const ruleset::Ruleset& ruleset, std::chrono::nanoseconds* took = nullptr) {
    ScopedNetns ns;
    const auto start = std::chrono::steady_clock::now();
    const auto result = nft_script(ruleset::render_nft(ruleset));
    if (took != nullptr) {
        *took = std::chrono::steady_clock::now() - start;
    }
    REQUIRE_MESSAGE(result.status == 0, result.output);
    Built built{listing().dump(1), snapshot()};

    // check() on a table nft built: the sets and elements agree, but nft's rules carry no
    // fingerprints, so every chain with rules is reported as changed.
    enforcer::NetlinkRulesetBackend backend;
    auto drift = backend.check(ruleset);
    REQUIRE(drift);
    CHECK(drift->missing_elements == 0);
    CHECK(drift->unexpected_elements == 0);
    CHECK(drift->missing_sets.empty());
    std::size_t with_rules = 0;
    for (const auto& chain : ruleset.chains) {
        with_rules += chain.rules.empty() ? 0 : 1;
    }
    CHECK(drift->changed_chains.size() == with_rules);
    return built;
}

Built built_by_backend(const ruleset::Ruleset& ruleset, enforcer::ApplyStats* stats_out = nullptr) {
    ScopedNetns ns;
    enforcer::NetlinkRulesetBackend backend;
    auto before = backend.generation();
    REQUIRE(before);
    auto stats = backend.replace(ruleset);
    REQUIRE_MESSAGE(stats, (stats ? "" : stats.error().message + " [" + stats.error().object + "]"));
    CHECK(stats->generation == *before + 1);
    CHECK(stats->elements == ruleset.element_count());
    CHECK_FALSE(stats->acks_incomplete);
    CHECK(stats->bytes > 0);
    if (stats_out != nullptr) {
        *stats_out = *stats;
    }
    Built built{listing().dump(1), snapshot()};
    auto drift = backend.check(ruleset);
    REQUIRE(drift);
    CHECK_MESSAGE(drift->clean(), drift->summary());

    // A second replace() is one more transaction to the same table.
    auto again = backend.replace(ruleset);
    REQUIRE(again);
    CHECK(again->generation == stats->generation + 1);
    CHECK_MESSAGE((snapshot() == built.snapshot), first_difference(built.snapshot, snapshot()));
    return built;
}

void expect_same_as_nft(const ruleset::Ruleset& ruleset) {
    const auto mine = built_by_backend(ruleset);
    const auto oracle = built_by_nft(ruleset);
    CHECK_MESSAGE((mine.listing == oracle.listing), first_difference(oracle.listing, mine.listing));
    CHECK_MESSAGE((mine.snapshot == oracle.snapshot), first_difference(oracle.snapshot, mine.snapshot));
}

}  // namespace

TEST_CASE("netlink replace: vdi-pool hv1 and hv2 match nft -f") {
    const auto example = load_example("vdi-pool");
    for (const std::string enforcer : {"hv1", "hv2"}) {
        CAPTURE(enforcer);
        expect_same_as_nft(compile(example, enforcer));
    }
}

TEST_CASE("netlink replace: host-mode and segmentation enforcers match nft -f") {
    for (const auto& [name, enforcer] :
         {std::pair{"host-mode", "web-01"}, std::pair{"segmentation", "floor-1"},
          std::pair{"segmentation", "fs-01"}}) {
        CAPTURE(name);
        CAPTURE(enforcer);
        expect_same_as_nft(compile(load_example(name), enforcer));
    }
}

TEST_CASE("netlink replace: every match kind and set shape matches nft -f") {
    expect_same_as_nft(variety_ruleset());
}

TEST_CASE("netlink replace: a 20000-element ruleset matches nft -f") {
    const auto ruleset = compile(big_example(6600), "hv1");
    REQUIRE(ruleset.element_count() >= 19500);
    enforcer::ApplyStats stats;
    const auto mine = built_by_backend(ruleset, &stats);
    std::chrono::nanoseconds nft_took{};
    const auto oracle = built_by_nft(ruleset, &nft_took);
    CHECK_MESSAGE((mine.listing == oracle.listing), first_difference(oracle.listing, mine.listing));
    CHECK_MESSAGE((mine.snapshot == oracle.snapshot), first_difference(oracle.snapshot, mine.snapshot));
    CHECK(stats.messages > 10);  // element lists split over many NEWSETELEM messages
    MESSAGE("replace() of " << ruleset.element_count() << " elements, " << ruleset.rule_count()
                            << " rules: " << stats.messages << " messages, " << stats.bytes
                            << " bytes, "
                            << std::chrono::duration<double, std::milli>(stats.latency).count()
                            << " ms; nft -f of the same text: "
                            << std::chrono::duration<double, std::milli>(nft_took).count() << " ms");
}
