// EventSequencer: hands stored events to the analyzer exactly once each and in id order,
// whichever upload thread stored them.
//
// Uploads commit concurrently (group commit) and their threads race afterwards; the
// analyzer's windows, counters and the incidents' "counted through event N" mark all need
// events in the order the store committed them. Each thread submits its batch of new ids;
// the batch that continues the sequence is processed at once by the submitting thread, and
// it goes on with any later batches that were waiting for it. A batch whose predecessor never
// arrives (its thread failed between commit and submit) does not wait forever: after
// `gap_timeout` the missing ids are read back from the store by `fill_gap`.
//
// This relies on the store handing out event ids in commit order without holes, which
// SQLite's single writer does. PostgreSQL sequences do not (a transaction can commit a lower
// id after a higher one): a PostgreSQL backend needs a commit-ordered cursor here instead.
#pragma once

#include "controller/domain/events.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <vector>

namespace bulkhead::controller {

class EventSequencer {
  public:
    using Process = std::function<void(std::vector<StoredEvent>&)>;
    // Events with ids in [from, to), oldest first (from the store).
    using FillGap = std::function<std::vector<StoredEvent>(std::int64_t from, std::int64_t to)>;

    EventSequencer(Process process, FillGap fill_gap, std::chrono::milliseconds gap_timeout);

    // The next id to hand out: the one after the last event already analysed (at start,
    // after the checkpoint and the replay).
    void reset(std::int64_t next_id);
    std::int64_t next_id() const;

    // `events` are fresh from one commit, ids increasing. Returns once they are processed,
    // or parked behind a gap another thread will close.
    void submit(std::vector<StoredEvent> events);
    // Closes gaps older than the timeout; the controller calls it from a timer.
    void close_stale_gaps();
    // Waits until nothing is parked or processing (checkpoints, tests), at most `wait`.
    bool drain(std::chrono::milliseconds wait);

    std::uint64_t gaps_filled() const;
    // Runs `work` at a quiet point: no batch is being analysed, and every id below the
    // argument has been. Batches submitted meanwhile wait and are processed after it.
    void at_quiet_point(const std::function<void(std::int64_t next_id)>& work);

  private:
    void process_ready(std::unique_lock<std::mutex>& lock);

    Process process_;
    FillGap fill_gap_;
    std::chrono::milliseconds gap_timeout_;
    mutable std::mutex mutex_;
    std::condition_variable idle_;
    std::condition_variable quiet_;  // processing_ went false
    std::int64_t next_id_ = 1;
    bool processing_ = false;
    struct Parked {
        std::vector<StoredEvent> events;
        std::chrono::steady_clock::time_point since;
    };
    std::map<std::int64_t, Parked> parked_;  // by first id
    std::uint64_t gaps_filled_ = 0;
};

}  // namespace bulkhead::controller
