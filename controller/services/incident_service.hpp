// IncidentService: owns what the SOC does with incidents: list, read (timeline, targets,
// notes, source, quarantine), acknowledge, resolve, annotate, the scope graph, and the
// analyzer's exemptions (known scanners, always expiring, audited). A resolve is a versioned
// update, so it cannot be undone by a finding that read the incident before it.
#pragma once

#include "controller/services/analysis_service.hpp"
#include "controller/services/audit_log.hpp"
#include "controller/services/event_bus.hpp"
#include "controller/services/evidence_archive.hpp"
#include "controller/services/quarantine_service.hpp"
#include "controller/services/scope_graph.hpp"

namespace bulkhead::controller {

class IncidentService {
  public:
    IncidentService(Transactions& transactions, IncidentRepository& incidents, EventRepository& events,
                    InventoryRepository& inventory, QuarantineRepository& quarantines, ExemptionRepository& exemptions,
                    AnalysisService& analysis, QuarantineService& quarantine, AuditLog& audit, EventBus& bus,
                    Clock clock);

    ServiceResult list_incidents(const IncidentQuery& query);
    // Open incidents by severity, every severity present (0 when none): one indexed COUNT,
    // for the metrics page.
    std::expected<std::map<std::string, std::uint64_t>, ServiceError> open_incidents_by_severity();
    // The incident with its timeline; events that moved to the archive come from there.
    ServiceResult get_incident(std::int64_t id);
    // The archive's segments, for timelines older than the hot tier; set before serving.
    void set_archive(ArchivedEvents* archive) { archive_ = archive; }
    ServiceResult set_incident_state(const Caller& caller, std::int64_t id, IncidentState state);
    ServiceResult add_incident_note(const Caller& caller, std::int64_t id, const nlohmann::json& body);
    ServiceResult incident_scope(std::int64_t id, std::int64_t margin_seconds);

    ServiceResult list_exemptions();
    ServiceResult add_exemption(const Caller& caller, const nlohmann::json& body);
    ServiceResult delete_exemption(const Caller& caller, std::int64_t id);

  private:
    Transactions& transactions_;
    IncidentRepository& incidents_;
    EventRepository& events_;
    InventoryRepository& inventory_;
    QuarantineRepository& quarantines_;
    ExemptionRepository& exemptions_;
    AnalysisService& analysis_;
    QuarantineService& quarantine_;
    AuditLog& audit_;
    EventBus& bus_;
    Clock clock_;
    ScopeGraph scope_;
    ArchivedEvents* archive_ = nullptr;

    StoreResult<std::vector<StoredEvent>> timeline_events(std::int64_t id, std::size_t limit);
};

}  // namespace bulkhead::controller
