// EventService: owns the drop log: ingest of enforcer uploads (stored once per (enforcer,
// seq), answered after commit), queries and counts, and the live stream of drops. Every event
// stored for the first time goes to the analysis, in the order the store committed it.
#pragma once

#include "controller/services/analysis_service.hpp"
#include "controller/services/event_bus.hpp"
#include "controller/services/evidence_archive.hpp"

#include <atomic>
#include <cstdint>

namespace bulkhead::controller {

struct EventOptions {
    std::size_t max_events_per_batch = 5000;
    // An enforcer whose clock is further than this from the controller's has its events
    // flagged (clock_suspect): their kernel timestamps cannot be trusted to order them
    // against other devices' logs.
    std::int64_t clock_offset_threshold_ms = 1000;
};

class EventService {
  public:
    EventService(EventOptions options, EventRepository& events, AnalysisService& analysis, EventBus& bus, Clock clock);

    // The raw body: uploads are parsed by EventBatchParser, not the generic JSON reader.
    ServiceResult ingest_events(const Caller& caller, const std::string& id, std::string_view body);
    // Reads the database and, for what is older than the hot tier, the archive (set_archive).
    ServiceResult query_events(const EventQuery& query);
    // The archive's segments, for queries older than the hot tier; set before serving.
    void set_archive(ArchivedEvents* archive) { archive_ = archive; }
    ServiceResult count_events(std::int64_t from_ns, std::int64_t to_ns, std::int64_t bucket_ns,
                               const EventQuery& filter);

    // Uploads ingested by this process since it started (the metrics page). Ingest has no
    // queue of its own: a batch is stored before its request is answered.
    struct IngestFigures {
        std::uint64_t batches = 0;     // uploads stored (every event new or a duplicate)
        std::uint64_t stored = 0;      // events stored for the first time
        std::uint64_t drops = 0;       // of them, drops (the types the live view and analysis call blocked)
        std::uint64_t duplicates = 0;  // events already stored (a retried upload)
    };
    IngestFigures ingest_figures() const;

  private:
    EventOptions options_;
    EventRepository& events_;
    ArchivedEvents* archive_ = nullptr;
    AnalysisService& analysis_;
    EventBus& bus_;
    Clock clock_;
    std::atomic<std::uint64_t> batches_{0};
    std::atomic<std::uint64_t> stored_{0};
    std::atomic<std::uint64_t> drops_stored_{0};
    std::atomic<std::uint64_t> duplicates_{0};
};

}  // namespace bulkhead::controller
