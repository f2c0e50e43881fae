// EnforcerStatusBook: what each enforcer last reported (acks and heartbeats), held in memory
// and written to the store in batches.
//
// Why: every enforcer reports every heartbeat interval (5 s), so 2,000 enforcers make 400
// reports a second. Written one by one, each would be a transaction on the store's single
// writer that event ingest also needs. Here a report updates memory at once (acks wake their
// waiters immediately) and flush() writes everything that changed since the last flush in
// one transaction; the fleet service calls it about once a second and at shutdown. A crash
// loses at most that second of heartbeats, which the next heartbeat repeats; an enforcer's
// applied generation and hash are also repeated with every heartbeat.
#pragma once

#include "controller/domain/fleet.hpp"
#include "controller/store/repositories.hpp"

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace bulkhead::controller {

class EnforcerStatusBook {
  public:
    EnforcerStatusBook(Transactions& transactions, EnforcerRepository& enforcers);

    // Loads the stored statuses (a restarted controller knows what each enforcer acked).
    StoreResult<std::vector<EnforcerStatus>> load();

    // The newest status of `id`: memory first, then the store; nothing if it never reported.
    StoreResult<std::optional<EnforcerStatus>> get(const std::string& id);
    // Every known status, memory overlaying the store.
    StoreResult<std::vector<EnforcerStatus>> list();

    // The statuses held in memory (loaded at start, enrolled or reported since), without
    // reading the store: what the metrics page reads at every scrape.
    std::vector<EnforcerStatus> in_memory() const;

    // Records a report (already validated) and returns whether the acked hash changed.
    bool record(const EnforcerStatus& status);
    // An enrollment written by the caller's own transaction: memory follows it.
    void enrolled(const EnforcerStatus& status);

    // Writes the statuses changed since the last flush in one transaction. On failure they
    // stay pending for the next flush.
    StoreResult<std::size_t> flush();
    std::size_t pending() const;

    bool acked(const std::string& id, const std::string& hash) const;
    // Waits until `id` acked `hash` (true), `wait` passed or close() (false).
    bool wait_for_ack(const std::string& id, const std::string& hash, std::chrono::milliseconds wait);
    void close();

  private:
    Transactions& transactions_;
    EnforcerRepository& enforcers_;
    mutable std::mutex mutex_;
    std::condition_variable acked_changed_;
    std::map<std::string, EnforcerStatus> statuses_;  // reported since start (or loaded)
    std::set<std::string> dirty_;
    bool closed_ = false;
};

}  // namespace bulkhead::controller
