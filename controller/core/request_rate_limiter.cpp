#include "controller/core/request_rate_limiter.hpp"

#include <algorithm>
#include <cmath>

namespace bulkhead::controller {

std::optional<std::chrono::milliseconds> RequestRateLimiter::admit(const std::string& caller, TimePoint now) {
    if (!enabled()) {
        return std::nullopt;
    }
    const double burst = std::max(1.0, limit_.burst);
    std::lock_guard lock(mutex_);
    if (now - last_sweep_ > std::chrono::minutes(1)) {
        std::erase_if(buckets_, [&](const auto& entry) { return now - entry.second.updated > std::chrono::minutes(1); });
        last_sweep_ = now;
    }
    auto [it, added] = buckets_.try_emplace(caller, Bucket{burst, now});
    Bucket& bucket = it->second;
    if (!added) {
        const double elapsed = std::chrono::duration<double>(now - bucket.updated).count();
        bucket.tokens = std::min(burst, bucket.tokens + std::max(0.0, elapsed) * limit_.per_second);
        bucket.updated = now;
    }
    if (bucket.tokens >= 1.0) {
        bucket.tokens -= 1.0;
        return std::nullopt;
    }
    ++refused_;
    const double wait_seconds = (1.0 - bucket.tokens) / limit_.per_second;
    return std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil(wait_seconds * 1000.0)));
}

std::uint64_t RequestRateLimiter::refused() const {
    std::lock_guard lock(mutex_);
    return refused_;
}

}  // namespace bulkhead::controller
