#include "controller/services/event_sequencer.hpp"

#include <spdlog/spdlog.h>

namespace bulkhead::controller {

EventSequencer::EventSequencer(Process process, FillGap fill_gap, std::chrono::milliseconds gap_timeout)
    : process_(std::move(process)), fill_gap_(std::move(fill_gap)), gap_timeout_(gap_timeout) {}

void EventSequencer::reset(std::int64_t next_id) {
    std::lock_guard lock(mutex_);
    next_id_ = next_id;
    parked_.clear();
}

std::int64_t EventSequencer::next_id() const {
    std::lock_guard lock(mutex_);
    return next_id_;
}

std::uint64_t EventSequencer::gaps_filled() const {
    std::lock_guard lock(mutex_);
    return gaps_filled_;
}

void EventSequencer::submit(std::vector<StoredEvent> events) {
    if (events.empty()) {
        return;
    }
    std::unique_lock lock(mutex_);
    if (events.back().id < next_id_) {
        return;  // already analysed (read back by a gap fill)
    }
    const std::int64_t first = events.front().id;
    parked_[first] = Parked{std::move(events), std::chrono::steady_clock::now()};
    process_ready(lock);
}

void EventSequencer::process_ready(std::unique_lock<std::mutex>& lock) {
    if (processing_) {
        return;  // the processing thread picks the batch up when it comes round
    }
    processing_ = true;
    while (!parked_.empty() && parked_.begin()->first <= next_id_) {
        auto node = parked_.extract(parked_.begin());
        auto& events = node.mapped().events;
        // Ids below next_id_ were analysed already (a gap fill read them back).
        std::erase_if(events, [&](const StoredEvent& e) { return e.id < next_id_; });
        if (events.empty()) {
            continue;
        }
        next_id_ = events.back().id + 1;
        lock.unlock();
        process_(events);
        lock.lock();
    }
    processing_ = false;
    quiet_.notify_all();
    if (parked_.empty()) {
        idle_.notify_all();
    }
}

void EventSequencer::close_stale_gaps() {
    std::unique_lock lock(mutex_);
    if (processing_ || parked_.empty()) {
        return;
    }
    const auto& [first, parked] = *parked_.begin();
    if (first <= next_id_ || std::chrono::steady_clock::now() - parked.since < gap_timeout_) {
        return;
    }
    const std::int64_t from = next_id_;
    const std::int64_t to = first;
    processing_ = true;
    lock.unlock();
    auto missing = fill_gap_(from, to);
    spdlog::warn("analysis: events {}..{} were stored but never handed over; read {} of them back from the store",
                 from, to - 1, missing.size());
    lock.lock();
    processing_ = false;
    quiet_.notify_all();
    ++gaps_filled_;
    if (!missing.empty()) {
        const std::int64_t key = missing.front().id;  // before the move below
        parked_[key] = Parked{std::move(missing), std::chrono::steady_clock::now()};
    }
    // Whatever was not found does not exist (ids skipped by the store): move past it.
    if (parked_.begin()->first > next_id_) {
        next_id_ = std::min(to, parked_.begin()->first);
    }
    process_ready(lock);
}

void EventSequencer::at_quiet_point(const std::function<void(std::int64_t)>& work) {
    std::unique_lock lock(mutex_);
    quiet_.wait(lock, [this] { return !processing_; });
    processing_ = true;
    const std::int64_t next = next_id_;
    lock.unlock();
    work(next);
    lock.lock();
    processing_ = false;
    process_ready(lock);
}

bool EventSequencer::drain(std::chrono::milliseconds wait) {
    std::unique_lock lock(mutex_);
    return idle_.wait_for(lock, wait, [this] { return parked_.empty() && !processing_; });
}

}  // namespace bulkhead::controller
