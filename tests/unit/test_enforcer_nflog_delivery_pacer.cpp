// DeliveryPacer: immediate NFLOG delivery while drops are few, batched under a flood, back to
// immediate after a calm second.
#include "enforcer/nflog/delivery_pacer.hpp"

#include <doctest/doctest.h>

using namespace bulkhead::nflog;

namespace {
constexpr std::int64_t ms = 1'000'000;
constexpr std::int64_t t0 = 1'700'000'000'000 * ms;
}  // namespace

TEST_CASE("delivery pacer: lone drops stay immediate") {
    DeliveryPacer pacer;
    CHECK(pacer.mode() == DeliveryMode::Immediate);
    for (int i = 0; i < 1000; ++i) {
        // 100 drops a second, for ten seconds: far below a flood.
        CHECK_FALSE(pacer.observe(t0 + i * 10 * ms, 1).has_value());
    }
    CHECK(pacer.mode() == DeliveryMode::Immediate);
    CHECK(pacer.switches() == 0);
}

TEST_CASE("delivery pacer: a flood switches to batched within one window, a calm second switches back") {
    DeliveryPacer pacer;
    std::int64_t now = t0;
    // 64 events per read every ms: 6,400 in a 100 ms window.
    std::optional<DeliveryMode> switched;
    int reads = 0;
    while (!switched && reads < 100) {
        switched = pacer.observe(now, 64);
        now += ms;
        ++reads;
    }
    REQUIRE(switched);
    CHECK(*switched == DeliveryMode::Batched);
    CHECK(reads == 4);  // 4 × 64 = 256 > 200
    // The flood goes on: no further switch.
    for (int i = 0; i < 500; ++i, now += ms) {
        CHECK_FALSE(pacer.observe(now, 64).has_value());
    }
    // Then 20 events/s: batched until ten windows in a row were calm.
    std::optional<DeliveryMode> back;
    std::int64_t calm_from = now;
    while (!back && now - calm_from < 5000 * ms) {
        back = pacer.observe(now, 1);
        now += 50 * ms;
    }
    REQUIRE(back);
    CHECK(*back == DeliveryMode::Immediate);
    CHECK(now - calm_from >= 1000 * ms);
    CHECK(now - calm_from <= 1200 * ms);
    CHECK(pacer.switches() == 2);
}

TEST_CASE("delivery pacer: an idle tick after a flood switches back without new events") {
    DeliveryPacer pacer;
    REQUIRE(pacer.observe(t0, 1000) == DeliveryMode::Batched);
    CHECK_FALSE(pacer.observe(t0 + 500 * ms, 0).has_value());  // 4 windows calm only
    CHECK(pacer.observe(t0 + 1200 * ms, 0) == DeliveryMode::Immediate);
}

TEST_CASE("delivery pacer: a busy window breaks the calm streak") {
    DeliveryPacer pacer;
    REQUIRE(pacer.observe(t0, 1000) == DeliveryMode::Batched);
    std::int64_t now = t0 + 100 * ms;
    for (int i = 0; i < 9; ++i, now += 100 * ms) {
        CHECK_FALSE(pacer.observe(now, 10).has_value());
    }
    CHECK_FALSE(pacer.observe(now, 120).has_value());  // above immediate_below: not calm
    now += 100 * ms;
    for (int i = 0; i < 9; ++i, now += 100 * ms) {
        CHECK_FALSE(pacer.observe(now, 10).has_value());
    }
    CHECK(pacer.observe(now + 100 * ms, 0) == DeliveryMode::Immediate);
}

TEST_CASE("delivery pacer: a clock stepping back restarts the window, never divides by a negative span") {
    DeliveryPacer pacer;
    CHECK_FALSE(pacer.observe(t0, 150).has_value());
    CHECK_FALSE(pacer.observe(t0 - 3600 * 1000 * ms, 150).has_value());  // a fresh window: 150
    CHECK(pacer.observe(t0 - 3600 * 1000 * ms + ms, 60) == DeliveryMode::Batched);
}
