// QuarantineService: owns quarantines: requests (people, automation, the analyzer's
// response), releases, and their applied state on the workload's enforcer. A quarantine is
// stored with its audit entry (and, when automatic, its webhook row) in one transaction; the
// workload's enforcer alone recompiles and receives the change as a one-element diff.
#pragma once

#include "controller/services/audit_log.hpp"
#include "controller/services/event_bus.hpp"
#include "controller/services/fleet_service.hpp"
#include "controller/services/webhook.hpp"

#include <functional>
#include <mutex>

namespace bulkhead::controller {

class QuarantineService {
  public:
    QuarantineService(FleetService& fleet, Transactions& transactions, QuarantineRepository& quarantines,
                      InventoryRepository& inventory, IncidentRepository& incidents, OutboxRepository& outbox_store,
                      const WebhookOutbox& outbox, AuditLog& audit, EventBus& bus, Clock clock);

    // Called after a release is stored (the analysis re-arms the workload's source) and
    // after outbox rows were committed (the sender looks at once).
    void on_release(std::function<void(const std::string& workload)> listener) { released_ = std::move(listener); }
    void on_outbox_written(std::function<void()> listener) { outbox_written_ = std::move(listener); }

    // `wait` > 0: answer once the enforcer acked the change or the wait ended (the answer
    // says which).
    ServiceResult create_quarantine(const Caller& caller, const nlohmann::json& body, std::chrono::milliseconds wait);
    ServiceResult list_quarantines();
    // The quarantines in force, counted (the metrics page; the in-force rows are few).
    struct InForceCounts {
        std::size_t automatic = 0;
        std::size_t manual = 0;
    };
    std::expected<InForceCounts, ServiceError> in_force_counts();
    ServiceResult get_quarantine(const std::string& workload);
    ServiceResult release_quarantine(const Caller& caller, const std::string& workload, std::chrono::milliseconds wait);

    // The analyzer's response: quarantine `workload` for `incident`; idempotent ({"created":
    // false} when it is already quarantined). `incident_view` goes to the SOAR with it.
    ServiceResult quarantine_automatically(const std::string& workload, const std::string& reason,
                                           std::optional<std::int64_t> incident, const nlohmann::json& incident_view,
                                           const std::string& actor = "analyzer");
    // The quarantine with its enforcer's applied state.
    nlohmann::json quarantine_json(const Quarantine& quarantine);

  private:
    ServiceResult quarantine(const std::string& workload, const std::string& reason, const std::string& actor,
                             const std::string& role, bool automatic, std::optional<std::int64_t> incident,
                             const nlohmann::json& incident_view);

    FleetService& fleet_;
    Transactions& transactions_;
    QuarantineRepository& quarantines_;
    InventoryRepository& inventory_;
    IncidentRepository& incidents_;
    OutboxRepository& outbox_store_;
    const WebhookOutbox& outbox_;
    AuditLog& audit_;
    EventBus& bus_;
    Clock clock_;
    std::function<void(const std::string&)> released_;
    std::function<void()> outbox_written_;
    std::mutex mutex_;  // one quarantine change at a time: stored, then compiled, in order
};

}  // namespace bulkhead::controller
