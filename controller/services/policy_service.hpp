// PolicyService: owns policy revisions: validate, upload (drafts), diff against the active
// revision per enforcer, what-if over stored traffic, activate and roll back. Activation
// installs the new configuration, which the fleet compiles and the analysis adopts.
#pragma once

#include "controller/services/active_configuration.hpp"
#include "controller/services/audit_log.hpp"
#include "controller/services/event_bus.hpp"
#include "controller/services/fleet_service.hpp"

namespace bulkhead::controller {

class PolicyService {
  public:
    PolicyService(ActiveConfiguration& configuration, FleetService& fleet, Transactions& transactions,
                  PolicyRepository& policies, EventRepository& events, AuditLog& audit, EventBus& bus, Clock clock);

    ServiceResult validate_policy(const nlohmann::json& document);
    ServiceResult upload_policy(const Caller& caller, const nlohmann::json& body);
    ServiceResult list_policies(std::size_t limit);
    ServiceResult get_policy(std::int64_t id);
    ServiceResult active_policy();
    ServiceResult diff_policy(std::int64_t id);
    ServiceResult what_if(std::int64_t id, std::int64_t from_ns, std::int64_t to_ns, std::size_t limit);
    ServiceResult activate_policy(const Caller& caller, std::int64_t id);
    ServiceResult rollback_policy(const Caller& caller);

  private:
    // The revision compiled against the current inventory, and the active state beside it.
    std::expected<std::pair<std::shared_ptr<const CompiledConfiguration>, std::shared_ptr<const CompiledConfiguration>>,
                  ServiceError>
    draft_and_active(std::int64_t id);

    ActiveConfiguration& configuration_;
    FleetService& fleet_;
    Transactions& transactions_;
    PolicyRepository& policies_;
    EventRepository& events_;
    AuditLog& audit_;
    EventBus& bus_;
    Clock clock_;
};

}  // namespace bulkhead::controller
