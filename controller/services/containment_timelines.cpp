#include "controller/services/containment_timelines.hpp"

namespace bulkhead::controller {

nlohmann::json containment_timeline_json(const ContainmentTimeline& t) {
    auto stamp = [](std::int64_t ns) { return ns == 0 ? nlohmann::json(nullptr) : nlohmann::json(ns); };
    return nlohmann::json{{"incident", t.incident},
                          {"workload", t.workload},
                          {"enforcer", t.enforcer},
                          {"detector", t.detector},
                          {"generation", t.generation},
                          {"event", t.event},
                          {"stages_ns",
                           {{"kernel", stamp(t.kernel_ns)},
                            {"enforcer_received", stamp(t.path.enforcer_received_ns)},
                            {"enforcer_sent", stamp(t.path.enforcer_sent_ns)},
                            {"controller_received", stamp(t.path.controller_received_ns)},
                            {"stored", stamp(t.path.stored_ns)},
                            {"detected", stamp(t.detected_ns)},
                            {"recorded", stamp(t.recorded_ns)},
                            {"quarantined", stamp(t.quarantined_ns)},
                            {"pushed", stamp(t.pushed_ns)}}}};
}

void ContainmentTimelines::add(ContainmentTimeline timeline) {
    std::lock_guard lock(mutex_);
    timelines_.push_back(std::move(timeline));
    while (timelines_.size() > capacity_) {
        timelines_.pop_front();
    }
}

std::vector<ContainmentTimeline> ContainmentTimelines::recent(std::optional<std::int64_t> incident,
                                                              std::size_t limit) const {
    std::vector<ContainmentTimeline> out;
    std::lock_guard lock(mutex_);
    for (auto it = timelines_.rbegin(); it != timelines_.rend() && out.size() < limit; ++it) {
        if (!incident || it->incident == *incident) {
            out.push_back(*it);
        }
    }
    return out;
}

}  // namespace bulkhead::controller
