// DeliveryPacer: when nfnetlink_log should hand each logged packet over at once, and when
// it should batch them.
//
// The kernel holds log messages until qthreshold of them are queued or its flush timer fires
// (NFULA_CFG_TIMEOUT, in 1/100 s; 0 means the next timer tick, 1–4 ms depending on HZ). A
// lone drop is what time to contain is about: the first forbidden attempt of a desktop, a
// decoy touch, the tenth port of a scan. Held for a batch it waits for the timer; handed
// over at once (qthreshold 1) it reaches the enforcer within microseconds. Under a flood the
// reverse holds: one netlink message per packet costs ~3× the kernel and reader CPU of
// batches of 64 (docs/benchmarks.md, "nflog"), while a batch of 64 fills in a fraction of a
// millisecond anyway.
//
// So the pacer starts Immediate and switches to Batched when one window holds more events
// than `batch_above`, and back when `calm_windows` windows in a row held at most
// `immediate_below`. Pure: the caller passes the time and the events it read; NflogSource
// applies the mode to the kernel.
#pragma once

#include <cstdint>
#include <optional>

namespace bulkhead::nflog {

enum class DeliveryMode : std::uint8_t { Immediate, Batched };

struct DeliveryPacerConfig {
    std::int64_t window_ns = 100'000'000;  // 100 ms
    std::uint64_t batch_above = 200;       // events in one window (2,000/s): a flood
    std::uint64_t immediate_below = 50;    // events in a calm window (500/s)
    std::uint32_t calm_windows = 10;       // a calm second before going back to Immediate
};

class DeliveryPacer {
  public:
    explicit DeliveryPacer(DeliveryPacerConfig config = {}) : config_(config) {}

    // `events` were read at `now_ns` (0 on an idle tick). Returns the new mode when it
    // changes.
    std::optional<DeliveryMode> observe(std::int64_t now_ns, std::uint64_t events);
    DeliveryMode mode() const { return mode_; }
    std::uint64_t switches() const { return switches_; }

  private:
    DeliveryPacerConfig config_;
    DeliveryMode mode_ = DeliveryMode::Immediate;
    std::int64_t window_start_ns_ = 0;  // 0: no window open yet
    std::uint64_t in_window_ = 0;
    std::uint32_t calm_ = 0;
    std::uint64_t switches_ = 0;
};

}  // namespace bulkhead::nflog
