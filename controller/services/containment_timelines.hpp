// ContainmentTimelines: when each stage of an automatic containment happened, for the last
// containments (in memory, bounded).
//
// Time to contain is the product's promise; an operator who sees it slip must see where:
// the kernel's timestamp of the drop that completed the detection, its delivery to the
// enforcer, the upload leaving the enforcer and reaching the controller, the commit, the
// finding, the incident record, the quarantine record with its recompiled ruleset, and the
// moment the channel handed that ruleset to the enforcer. Every stamp is CLOCK_REALTIME in
// nanoseconds (0 where unknown); stamps from the enforcer are on its clock. The last stage,
// the element in force in the enforcer's kernel, is seen on the host (bench/run.sh contain
// watches nf_tables notifications there).
#pragma once

#include "controller/domain/events.hpp"

#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace bulkhead::controller {

struct ContainmentTimeline {
    std::int64_t incident = 0;
    std::string workload;
    std::string enforcer;
    std::string detector;          // the finding's rule
    std::uint64_t generation = 0;  // the desired ruleset that holds the quarantine
    std::int64_t event = 0;        // the stored drop that completed the detection
    std::int64_t kernel_ns = 0;
    StoredEvent::PathTimes path;  // enforcer read and sent, controller received, stored
    std::int64_t detected_ns = 0;
    std::int64_t recorded_ns = 0;  // incident and finding committed
    // The quarantine committed, the host's ruleset recompiled and its channel woken, the
    // generation stored and the dashboard told: the push may already be on its way (the
    // streams are woken before the generation is stored), so `pushed` can come first.
    std::int64_t quarantined_ns = 0;
    std::int64_t pushed_ns = 0;  // the diff handed to the enforcer's channel (filled when read)
};

nlohmann::json containment_timeline_json(const ContainmentTimeline& t);

class ContainmentTimelines {
  public:
    explicit ContainmentTimelines(std::size_t capacity = 1024) : capacity_(capacity) {}
    void add(ContainmentTimeline timeline);
    // Newest first; only `incident`'s when given.
    std::vector<ContainmentTimeline> recent(std::optional<std::int64_t> incident, std::size_t limit) const;

  private:
    std::size_t capacity_;
    mutable std::mutex mutex_;
    std::deque<ContainmentTimeline> timelines_;  // oldest first
};

}  // namespace bulkhead::controller
