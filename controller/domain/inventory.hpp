// The inventory as the controller keeps it: workloads, enforcer entries, VPN sessions.
#pragma once

#include "controller/domain/time.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace bulkhead::controller {

// One workload as in the inventory format (docs/policy-format.md): the whole object is
// kept, id/enforcer/user/addresses are indexed for lookups.
struct WorkloadRecord {
    std::string id;
    std::string enforcer;
    nlohmann::json document;
    TimeMs updated_at = 0;
};

// An inventory enforcer entry ({"id", "description", ...}).
struct EnforcerDefinition {
    std::string id;
    nlohmann::json document;
};

// A remote user's VPN session: who held which pool address when (seed 000: firewall logs
// show pool addresses, not people).
struct VpnSession {
    std::int64_t id = 0;          // assigned by the store
    std::string user;
    std::string pool_address;     // the address the VPN gave the user inside the network
    std::string real_address;     // where the user connected from
    TimeMs start = 0;
    std::optional<TimeMs> end;    // open session: none
};

}  // namespace bulkhead::controller
