// AuditLog: owns the audit trail. Every change a service makes records who, what, when,
// before and after here, inside the change's own transaction, so a change without its entry
// (or an entry without its change) cannot exist.
#pragma once

#include "controller/services/service_support.hpp"

namespace bulkhead::controller {

class AuditLog {
  public:
    AuditLog(AuditRepository& repository, Clock clock) : repository_(repository), clock_(std::move(clock)) {}

    // Appends an entry; inside Transactions::in_transaction a failure rolls the change back.
    StoreResult<void> record(const Caller& caller, std::string action, std::string target, nlohmann::json before,
                             nlohmann::json after);
    ServiceResult query(const AuditQuery& query);

  private:
    AuditRepository& repository_;
    Clock clock_;
};

}  // namespace bulkhead::controller
