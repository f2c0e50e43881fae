// EventService: owns the drop log: ingest of enforcer uploads (stored once per (enforcer,
// seq), answered after commit), queries and counts, and the live stream of drops. Every event
// stored for the first time goes to the analysis, in the order the store committed it.
#pragma once

#include "controller/services/analysis_service.hpp"
#include "controller/services/event_bus.hpp"

namespace bulkhead::controller {

struct EventOptions {
    std::size_t max_events_per_batch = 5000;
};

class EventService {
  public:
    EventService(EventOptions options, EventRepository& events, AnalysisService& analysis, EventBus& bus, Clock clock);

    // The raw body: uploads are parsed by EventBatchParser, not the generic JSON reader.
    ServiceResult ingest_events(const Caller& caller, const std::string& id, std::string_view body);
    ServiceResult query_events(const EventQuery& query);
    ServiceResult count_events(std::int64_t from_ns, std::int64_t to_ns, std::int64_t bucket_ns,
                               const EventQuery& filter);

  private:
    EventOptions options_;
    EventRepository& events_;
    AnalysisService& analysis_;
    EventBus& bus_;
    Clock clock_;
};

}  // namespace bulkhead::controller
