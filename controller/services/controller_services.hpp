// ControllerServices: the composition root. It builds every domain service over one store,
// wires their collaborators (each service receives only the repositories and services it
// needs) and the few listeners between them, and starts and stops them in order. It holds
// no domain logic of its own; main() and the tests create one.
//
//   ActiveConfiguration ─▶ FleetService (recompile)      QuarantineService ─▶ FleetService
//                      └─▶ AnalysisService (configure)   AnalysisService ─▶ IncidentLedger, QuarantineService
//   PolicyService, InventoryService ─▶ ActiveConfiguration
//   EventService ─▶ AnalysisService                     IncidentService ─▶ AnalysisService, ScopeGraph
//   every change ─▶ AuditLog; webhook rows ─▶ WebhookOutbox → store → WebhookDelivery
#pragma once

#include "controller/services/access_service.hpp"
#include "controller/services/credential_cache.hpp"
#include "controller/services/active_configuration.hpp"
#include "controller/services/analysis_service.hpp"
#include "controller/services/audit_log.hpp"
#include "controller/services/event_bus.hpp"
#include "controller/services/event_service.hpp"
#include "controller/services/fleet_service.hpp"
#include "controller/services/incident_ledger.hpp"
#include "controller/services/incident_service.hpp"
#include "controller/services/inventory_service.hpp"
#include "controller/services/policy_service.hpp"
#include "controller/services/quarantine_service.hpp"
#include "controller/services/webhook.hpp"
#include "controller/store/store.hpp"
#include "common/version.hpp"

#include <memory>

namespace bulkhead::controller {

struct ControllerOptions {
    std::string version{product_version};
    FleetOptions fleet;
    EventOptions events;
    AnalysisOptions analysis;
    WebhookOptions webhooks;
};

class ControllerServices {
  public:
    ControllerServices(std::shared_ptr<Store> store, ControllerOptions options, Clock clock);
    ~ControllerServices();
    ControllerServices(const ControllerServices&) = delete;
    ControllerServices& operator=(const ControllerServices&) = delete;

    // Loads the active policy and inventory, compiles every enforcer, rebuilds the analysis
    // from the stored events and starts the webhook sender. Errors only when the store is
    // unusable (including: the quarantines cannot be read, so nothing safe can be pushed).
    std::expected<void, std::string> start();
    // Ends every channel and dashboard stream (so server threads return), then the
    // analysis and the webhook sender.
    void shutdown();

    ServiceResult health();
    // The analyzer's state with the outbox's depth and age.
    ServiceResult analyzer_status();
    // The stages of the last automatic containments, newest first (`incident`'s only if given).
    ServiceResult containments(std::optional<std::int64_t> incident, std::size_t limit);

    const ControllerOptions& options() const { return options_; }
    EventBus& bus() { return bus_; }

  private:
    std::shared_ptr<Store> store_;
    ControllerOptions options_;
    Clock clock_;
    EventBus bus_;
    WebhookOutbox outbox_;
    WebhookDelivery delivery_;
    AuditLog audit_;
    ActiveConfiguration configuration_;
    CredentialCache credentials_;

  public:
    // The services, in dependency order (each may use those above it).
    AccessService access;
    FleetService fleet;
    PolicyService policies;
    QuarantineService quarantines;
    InventoryService inventory;
    IncidentLedger ledger;
    AnalysisService analysis;
    EventService events;
    IncidentService incidents;
    AuditLog& audit() { return audit_; }
};

}  // namespace bulkhead::controller
