#include "enforcer/nflog/delivery_pacer.hpp"

namespace bulkhead::nflog {

std::optional<DeliveryMode> DeliveryPacer::observe(std::int64_t now_ns, std::uint64_t events) {
    if (window_start_ns_ == 0 || now_ns < window_start_ns_) {
        // First call, or the wall clock stepped back: start counting afresh.
        window_start_ns_ = now_ns;
        in_window_ = 0;
    }
    const std::int64_t elapsed = now_ns - window_start_ns_;
    if (elapsed >= config_.window_ns) {
        const auto closed = static_cast<std::uint64_t>(elapsed / config_.window_ns);
        // The window that was open, then `closed - 1` windows without a read: empty ones.
        if (in_window_ <= config_.immediate_below) {
            const std::uint64_t calm = calm_ + closed;
            calm_ = calm > config_.calm_windows ? config_.calm_windows : static_cast<std::uint32_t>(calm);
        } else {
            calm_ = closed > 1 ? static_cast<std::uint32_t>(
                                     closed - 1 > config_.calm_windows ? config_.calm_windows : closed - 1)
                               : 0;
        }
        window_start_ns_ += static_cast<std::int64_t>(closed) * config_.window_ns;
        in_window_ = 0;
    }
    in_window_ += events;
    if (mode_ == DeliveryMode::Immediate && in_window_ > config_.batch_above) {
        mode_ = DeliveryMode::Batched;
        calm_ = 0;
        ++switches_;
        return mode_;
    }
    if (mode_ == DeliveryMode::Batched && calm_ >= config_.calm_windows && in_window_ <= config_.immediate_below) {
        mode_ = DeliveryMode::Immediate;
        calm_ = 0;
        ++switches_;
        return mode_;
    }
    return std::nullopt;
}

}  // namespace bulkhead::nflog
