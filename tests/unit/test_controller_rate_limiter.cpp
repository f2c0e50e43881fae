// RequestRateLimiter: a token bucket per API caller, driven by the test's own clock.
#include "controller/core/request_rate_limiter.hpp"

#include <doctest/doctest.h>

using bulkhead::controller::RateLimit;
using bulkhead::controller::RequestRateLimiter;
using namespace std::chrono_literals;

TEST_CASE("rate limiter: a burst, then the sustained rate, per caller") {
    RequestRateLimiter limiter(RateLimit{10, 5});
    const auto t0 = std::chrono::steady_clock::time_point{} + 1h;
    for (int i = 0; i < 5; ++i) {
        CHECK_FALSE(limiter.admit("script", t0).has_value());
    }
    auto wait = limiter.admit("script", t0);
    REQUIRE(wait.has_value());
    CHECK(*wait == 100ms);  // one token every 100 ms at 10/s
    CHECK_FALSE(limiter.admit("analyst", t0).has_value());  // another caller keeps its own budget
    CHECK(limiter.admit("script", t0 + 50ms).has_value());
    CHECK_FALSE(limiter.admit("script", t0 + 100ms).has_value());
    CHECK(limiter.refused() == 2);
    // Idle callers refill up to the burst, no further.
    for (int i = 0; i < 5; ++i) {
        CHECK_FALSE(limiter.admit("script", t0 + 10s).has_value());
    }
    CHECK(limiter.admit("script", t0 + 10s).has_value());
}

TEST_CASE("rate limiter: zero per second is no limit") {
    RequestRateLimiter limiter(RateLimit{0, 0});
    const auto t0 = std::chrono::steady_clock::time_point{} + 1h;
    for (int i = 0; i < 10000; ++i) {
        REQUIRE_FALSE(limiter.admit("anyone", t0).has_value());
    }
    CHECK(limiter.refused() == 0);
}
