// A token bucket per SIEM destination: at most `rate_per_second` records a second on
// average, with bursts up to `burst` (one second's worth by default), so that a scan storm
// cannot flood a SOC's receiver or its licence. Pure: the caller passes the time.
//
// Tokens are counted in thousandths so that refilling per millisecond stays exact in
// integers (rate tokens/s = rate thousandths/ms): no drift from floating point, however long
// the bucket lives.
#pragma once

#include "controller/domain/time.hpp"

#include <cstdint>

namespace bulkhead::siem {

class TokenBucket {
public:
    // Starts full. rate_per_second >= 1; burst 0 means rate_per_second.
    explicit TokenBucket(std::uint32_t rate_per_second, std::uint32_t burst = 0, controller::TimeMs now = 0);

    // Takes up to `wanted` tokens; returns how many it granted (0..wanted).
    std::uint32_t take(std::uint32_t wanted, controller::TimeMs now);
    // Whole tokens available at `now`, without taking any.
    std::uint32_t available(controller::TimeMs now);
    // Milliseconds from `now` until `count` tokens are there (0 when they are already);
    // `count` above the burst waits for the burst.
    controller::TimeMs wait_for(std::uint32_t count, controller::TimeMs now);

    std::uint32_t rate_per_second() const { return rate_; }
    std::uint32_t burst() const { return burst_; }

private:
    void refill(controller::TimeMs now);

    std::uint32_t rate_;
    std::uint32_t burst_;
    std::int64_t milli_tokens_;
    controller::TimeMs last_refill_;
};

} // namespace bulkhead::siem
