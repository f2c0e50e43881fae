// InventoryService: owns the inventory (enforcer entries, workloads) and the VPN sessions
// that name remote users. A change is validated against the active policy before it is
// stored, stored with its audit entry in one transaction, then installed as the new
// configuration (the fleet recompiles, the analysis re-attributes).
#pragma once

#include "controller/services/active_configuration.hpp"
#include "controller/services/audit_log.hpp"
#include "controller/services/event_bus.hpp"
#include "controller/services/fleet_service.hpp"
#include "controller/services/quarantine_service.hpp"

namespace bulkhead::controller {

class InventoryService {
  public:
    InventoryService(ActiveConfiguration& configuration, FleetService& fleet, Transactions& transactions,
                     InventoryRepository& inventory, VpnSessionRepository& vpn_sessions,
                     QuarantineRepository& quarantines, QuarantineService& quarantine, AuditLog& audit,
                     EventBus& bus, Clock clock);

    ServiceResult get_inventory();
    ServiceResult replace_inventory(const Caller& caller, const nlohmann::json& document);
    ServiceResult list_workloads();
    ServiceResult get_workload(const std::string& id);
    ServiceResult put_workload(const Caller& caller, const std::string& id, const nlohmann::json& document);
    ServiceResult bulk_workloads(const Caller& caller, const nlohmann::json& body);
    ServiceResult delete_workload(const Caller& caller, const std::string& id);
    ServiceResult list_vpn_sessions(std::optional<TimeMs> active_at, std::size_t limit);
    ServiceResult add_vpn_session(const Caller& caller, const nlohmann::json& body);
    ServiceResult end_vpn_session(const Caller& caller, std::int64_t id, const nlohmann::json& body);

  private:
    std::expected<void, ServiceError> check_inventory_against_policy(const nlohmann::json& inventory);
    // After a stored change: the active policy against the new inventory, installed.
    std::expected<void, ServiceError> reload();

    ActiveConfiguration& configuration_;
    FleetService& fleet_;
    Transactions& transactions_;
    InventoryRepository& inventory_;
    VpnSessionRepository& vpn_sessions_;
    QuarantineRepository& quarantines_;
    QuarantineService& quarantine_;
    AuditLog& audit_;
    EventBus& bus_;
    Clock clock_;
};

}  // namespace bulkhead::controller
