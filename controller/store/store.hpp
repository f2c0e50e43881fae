// Store: one backend implementing every repository (repositories.hpp). Only the composition
// root (the controller's main) and tools see it whole; each service receives the narrow
// repositories it needs.
#pragma once

#include "controller/store/repositories.hpp"

namespace bulkhead::controller {

class Store : public Transactions,
              public PolicyRepository,
              public InventoryRepository,
              public VpnSessionRepository,
              public EnforcerRepository,
              public CredentialRepository,
              public EventRepository,
              public IncidentRepository,
              public ExemptionRepository,
              public QuarantineRepository,
              public AuditRepository,
              public OutboxRepository,
              public AnalysisStateRepository,
              public EvidenceRepository,
              public SettingsRepository {};

}  // namespace bulkhead::controller
