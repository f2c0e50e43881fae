// FleetFigures: the enforcers' last statuses reduced to what the controller's metrics page
// exports (counts by state, figures per enforcer), read from the reported body defensively.
#include "controller/services/fleet_figures.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <vector>

using namespace bulkhead::controller;

namespace {

EnforcerStatus reported(const std::string& id, const std::string& hash, const std::string& state,
                        nlohmann::json details) {
    EnforcerStatus s;
    s.id = id;
    s.applied_generation = 7;
    s.applied_hash = hash;
    s.apply_state = state;
    s.drift_repairs = 3;
    s.details = std::move(details);
    return s;
}

}  // namespace

TEST_CASE("fleet figures: one enforcer's figures come from its status and its reported body") {
    const auto status = reported("hv1", "h7", "applied",
                                 {{"apply_ms", 2.5}, {"nflog", {{"received", 120}, {"lost", 4}}}});
    const auto f = enforcer_figures(status, "h7", true);
    CHECK(f.id == "hv1");
    CHECK(f.connected);
    CHECK(f.in_sync);
    CHECK_FALSE(f.apply_failed);
    CHECK(f.applied_generation == 7);
    CHECK(f.apply_seconds == doctest::Approx(0.0025));
    CHECK(f.drift_repairs == 3);
    CHECK(f.nflog_received == 120);
    CHECK(f.nflog_lost == 4);

    SUBCASE("another desired hash is out of sync; a failed apply says so") {
        const auto failed = enforcer_figures(reported("hv2", "h6", "failed", {}), "h7", false);
        CHECK_FALSE(failed.in_sync);
        CHECK(failed.apply_failed);
        CHECK_FALSE(failed.connected);
    }
    SUBCASE("members missing or of another type count as 0, never throw") {
        for (const auto& body : std::vector<nlohmann::json>{
                 nlohmann::json::object(), nullptr, nlohmann::json::array(),
                 {{"apply_ms", "slow"}, {"nflog", 5}},
                 {{"apply_ms", -1}, {"nflog", {{"received", -3}, {"lost", "many"}}}}}) {
            CAPTURE(body.dump());
            const auto f0 = enforcer_figures(reported("hv3", "h", "applied", body), "h", true);
            CHECK(f0.apply_seconds == 0);
            CHECK(f0.nflog_received == 0);
            CHECK(f0.nflog_lost == 0);
        }
    }
    SUBCASE("an enforcer that enrolled and never reported is not in sync with a desired ruleset") {
        EnforcerStatus enrolled;
        enrolled.id = "hv4";
        CHECK_FALSE(enforcer_figures(enrolled, "h7", false).in_sync);
    }
}

TEST_CASE("fleet figures: the states are counted independently (connected and in sync overlap)") {
    std::vector<EnforcerFigures> fleet(4);
    fleet[0].connected = true;
    fleet[0].in_sync = true;
    fleet[1].connected = true;
    fleet[1].apply_failed = true;
    fleet[2].in_sync = true;
    const auto counts = count_enforcer_states(fleet);
    CHECK(counts.known == 4);
    CHECK(counts.connected == 2);
    CHECK(counts.in_sync == 2);
    CHECK(counts.apply_failed == 1);
    CHECK(count_enforcer_states({}).known == 0);
}
