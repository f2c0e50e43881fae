// Who may do what through the API. Roles are fixed: admin edits policy and
// inventory; soc reads everything and handles incidents and quarantine; automation
// quarantines and reads; an enforcer speaks only on its own control channel.
#pragma once

#include "controller/domain/fleet.hpp"

#include <string>
#include <string_view>

namespace bulkhead::controller {

enum class Permission {
    Read,             // events, incidents, quarantines, enforcers, policy, inventory
    ReadAudit,        // the audit log
    WritePolicy,      // drafts, activation, rollback
    WriteInventory,   // workloads, enforcer definitions, VPN sessions, enrollment tokens
    HandleIncidents,  // acknowledge, resolve, notes
    Quarantine,       // create and release quarantines
    EnforcerChannel,  // channel, status, event upload (own id only)
};

bool role_allows(Role role, Permission permission);
std::string_view to_string(Permission permission);

// SHA-256 of `text`, lower-case hex: how tokens are stored and looked up.
std::string sha256_hex(std::string_view text);

}  // namespace bulkhead::controller
