// IncidentLedger: the one place where the analyzer's incidents meet stored incidents. It
// owns the map between the two, writes each finding onto its stored incident (with the
// timeline links, the response record, the audit entries and the webhook rows, in one
// transaction) and counts every analysed drop onto its incident exactly once.
//
// Idempotence is what makes a restart safe: events are analysed in id order, and each
// stored incident remembers the newest event it counted (counted_through_event). A finding
// replayed after a restart joins the incident that has already seen its event (or leaves it
// resolved), a count skips events at or below the mark, a response is recorded once per
// kind, and webhook rows are written only for incidents created or escalated now.
#pragma once

#include "controller/analyzer/analyzer.hpp"
#include "controller/analyzer/drop_record.hpp"
#include "controller/analyzer/response_planner.hpp"
#include "controller/services/audit_log.hpp"
#include "controller/services/webhook.hpp"

#include <mutex>
#include <unordered_map>

namespace bulkhead::controller {

// Events linked to one incident as its timeline; a storm's later events are counted, not linked.
inline constexpr std::uint64_t kTimelineEvents = 1'000;

// A finding taken out of the engine, with what the store needs to record it.
struct PendingFinding {
    analyzer::Finding finding;
    analyzer::Incident incident;  // after the finding; timeline left out
    std::string key;              // the stored incident's source: workload, or a subject
    std::int64_t event_id = 0;    // the stored event that raised it
    nlohmann::json attribution;
    std::vector<std::string> policy_segments;
    bool managed = false;
    bool critical = false;
    bool kernel_contained = false;  // raised by a tripwire drop: the kernel already quarantined it
    analyzer::ResponseDecision decision;
    // The raising event's way in and when the engine found this (containment timeline).
    std::int64_t kernel_ns = 0;
    StoredEvent::PathTimes path;
    std::int64_t detected_ns = 0;
};

struct RecordedFinding {
    Incident incident;            // as stored after the finding
    bool created = false, escalated = false;
    bool skipped = false;         // its incident was resolved: nothing recorded
    bool first_of_kind = false;   // the decision's action was not taken before on this incident
    nlohmann::json page;          // the page sent, if any
};

// Drops counted per analyzer incident (or contained workload), as (event id, count).
using CountedEvents = std::vector<std::pair<std::int64_t, std::uint64_t>>;

class IncidentLedger {
  public:
    IncidentLedger(Transactions& transactions, IncidentRepository& incidents, EventRepository& events,
                   OutboxRepository& outbox_store, const WebhookOutbox& outbox, AuditLog& audit, Clock clock);

    std::expected<RecordedFinding, StoreError> record(const PendingFinding& pending);
    // Adds the drops of one analysed batch to their stored incidents, in one transaction.
    StoreResult<void> count(const std::map<std::uint64_t, CountedEvents>& by_analyzer_incident,
                            const std::map<std::string, CountedEvents>& contained_by_workload);

    std::optional<std::int64_t> stored_of(std::uint64_t analyzer_incident) const;
    std::optional<std::uint64_t> analyzer_of(std::int64_t stored_incident) const;
    std::size_t size() const;
    // The map as JSON and back, for the analysis checkpoint.
    nlohmann::json save() const;
    void restore(const nlohmann::json& saved);

  private:
    Transactions& transactions_;
    IncidentRepository& incidents_;
    EventRepository& events_;
    OutboxRepository& outbox_store_;
    const WebhookOutbox& outbox_;
    AuditLog& audit_;
    Clock clock_;
    mutable std::mutex mutex_;  // the map
    std::mutex write_mutex_;    // one finding or count at a time
    std::unordered_map<std::uint64_t, std::int64_t> stored_of_;
    std::unordered_map<std::int64_t, std::uint64_t> analyzer_of_;
};

}  // namespace bulkhead::controller
