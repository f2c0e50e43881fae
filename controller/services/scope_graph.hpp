// ScopeGraph: an incident's scope (seed 002 step 3, "analyse the logs around the drop's
// source and destination to find the infection's scope"): the source's attempted targets,
// blocked and allowed (the enforcer's allowed-flow summaries), other sources that tried the
// same targets, and the policy segments involved, within the incident's time span widened by
// a margin. A read-only view over stored events, as JSON for the dashboard and a SIEM.
#pragma once

#include "controller/analyzer/drop_record.hpp"
#include "controller/services/service_support.hpp"

#include <memory>

namespace bulkhead::controller {

class ScopeGraph {
  public:
    explicit ScopeGraph(EventRepository& events) : events_(events) {}

    // `inventory` may be null (no configuration yet): nodes then carry addresses only.
    std::expected<nlohmann::json, ServiceError> build(const Incident& incident, std::int64_t margin_seconds,
                                                      const analyzer::InventoryIndex* inventory, TimeMs now);

  private:
    EventRepository& events_;
};

}  // namespace bulkhead::controller
