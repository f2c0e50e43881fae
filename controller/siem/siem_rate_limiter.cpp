#include "controller/siem/siem_rate_limiter.hpp"

#include <algorithm>

namespace bulkhead::siem {

TokenBucket::TokenBucket(std::uint32_t rate_per_second, std::uint32_t burst, controller::TimeMs now)
    : rate_(std::max<std::uint32_t>(rate_per_second, 1)), burst_(burst == 0 ? rate_ : burst),
      milli_tokens_(static_cast<std::int64_t>(burst_) * 1000), last_refill_(now) {}

void TokenBucket::refill(controller::TimeMs now) {
    // A clock that steps back (NTP) adds nothing and does not move the reference back, so
    // the same milliseconds are never credited twice.
    if (now <= last_refill_) {
        return;
    }
    const std::int64_t capacity = static_cast<std::int64_t>(burst_) * 1000;
    const std::int64_t elapsed = now - last_refill_;
    // Past a full refill the exact amount does not matter; capping the idle time first keeps
    // the product far from overflow (1e9 ms times a 32-bit rate < 2^63).
    const std::int64_t added = std::min<std::int64_t>(elapsed, 1'000'000'000) * rate_;
    milli_tokens_ = std::min(capacity, milli_tokens_ + added);
    last_refill_ = now;
}

std::uint32_t TokenBucket::take(std::uint32_t wanted, controller::TimeMs now) {
    refill(now);
    const auto granted = std::min<std::int64_t>(wanted, milli_tokens_ / 1000);
    milli_tokens_ -= granted * 1000;
    return static_cast<std::uint32_t>(granted);
}

std::uint32_t TokenBucket::available(controller::TimeMs now) {
    refill(now);
    return static_cast<std::uint32_t>(milli_tokens_ / 1000);
}

controller::TimeMs TokenBucket::wait_for(std::uint32_t count, controller::TimeMs now) {
    refill(now);
    const std::int64_t needed = static_cast<std::int64_t>(std::min(count, burst_)) * 1000 - milli_tokens_;
    if (needed <= 0) {
        return 0;
    }
    return (needed + rate_ - 1) / rate_; // round up: at that millisecond they are there
}

} // namespace bulkhead::siem
