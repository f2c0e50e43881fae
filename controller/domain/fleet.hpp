// The fleet: enforcers' runtime state and the credentials that speak for them and for people.
#pragma once

#include "controller/domain/time.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace bulkhead::controller {

// What an enforcer last reported (not its inventory entry).
struct EnforcerStatus {
    std::string id;
    std::optional<TimeMs> enrolled_at;
    std::optional<TimeMs> last_heartbeat;
    std::uint64_t applied_generation = 0;
    std::string applied_hash;
    std::string apply_state;      // "applied" | "failed" | "" (never reported)
    std::string last_error;
    std::uint64_t drift_repairs = 0;
    std::optional<TimeMs> last_drift_at;
    std::int64_t clock_offset_ms = 0;
    std::string version;
    std::string hostname;
    nlohmann::json details = nlohmann::json::object(); // last status body (metrics, spool)
};

enum class Role { Admin, Soc, Automation, Enforcer };
std::string_view to_string(Role role);
std::optional<Role> role_from_string(std::string_view text);

// Secrets are never stored: tokens and credentials are kept as SHA-256 hex digests.
struct ApiToken {
    std::string name;             // who, as the audit log names them
    Role role = Role::Soc;
    std::string token_sha256;
    std::string enforcer;         // role Enforcer only: the one enforcer it may speak for
    TimeMs created_at = 0;
};

struct EnrollmentToken {
    std::string token_sha256;
    std::string enforcer;
    TimeMs created_at = 0;
    TimeMs expires_at = 0;
    std::optional<TimeMs> used_at;
};

}  // namespace bulkhead::controller
