// Jittered exponential backoff (the control channel's reconnects, the event uploader's
// retries): initial delay doubling up to a ceiling, each wait drawn from [d/2, d].
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>

namespace bulkhead::enforcer::agent {

class Backoff {
public:
    using ms = std::chrono::milliseconds;
    Backoff(ms initial, ms ceiling, std::uint64_t seed = std::random_device{}())
        : initial_(initial), ceiling_(std::max(initial, ceiling)), current_(initial), random_(seed) {}

    ms next() {
        const auto d = current_;
        current_ = std::min(ceiling_, current_ * 2);
        std::uniform_int_distribution<std::int64_t> draw(d.count() / 2, d.count());
        return ms(draw(random_));
    }
    void reset() { current_ = initial_; }
    ms current() const { return current_; }

private:
    ms initial_;
    ms ceiling_;
    ms current_;
    std::mt19937_64 random_;
};

}  // namespace bulkhead::enforcer::agent
