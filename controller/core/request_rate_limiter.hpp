// RequestRateLimiter: a token bucket per API caller, so that one token (a runaway script, a
// stolen automation credential) cannot take the API from everyone else. Pure: the caller
// passes the time, so it is tested without a clock.
//
// Each caller may make `burst` requests at once and `per_second` a second on average; a
// request over the budget is refused with the time after which one would pass. Buckets of
// callers idle for a minute are forgotten (memory stays bounded by the active callers).
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace bulkhead::controller {

struct RateLimit {
    double per_second = 0;  // 0: no limit
    double burst = 0;
};

class RequestRateLimiter {
  public:
    using TimePoint = std::chrono::steady_clock::time_point;

    explicit RequestRateLimiter(RateLimit limit) : limit_(limit) {}

    // Nothing when the request may go on; else how long until one would be admitted.
    std::optional<std::chrono::milliseconds> admit(const std::string& caller, TimePoint now);
    std::uint64_t refused() const;
    bool enabled() const { return limit_.per_second > 0; }

  private:
    struct Bucket {
        double tokens = 0;
        TimePoint updated;
    };
    RateLimit limit_;
    mutable std::mutex mutex_;
    std::unordered_map<std::string, Bucket> buckets_;
    TimePoint last_sweep_{};
    std::uint64_t refused_ = 0;
};

}  // namespace bulkhead::controller
