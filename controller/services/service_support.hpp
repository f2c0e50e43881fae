// What every controller service shares: the typed error each returns (the HTTP layer maps
// its kind to a status code in one table), the caller as authenticated, the JSON views of
// domain values that the API returns, and the checks of request bodies (a member that is
// missing, of the wrong type or unknown is named by its JSON pointer).
//
// Error regime (ARCHITECTURE.md): services return std::expected<json, ServiceError>; the
// store returns std::expected<T, StoreError>; exceptions only at start-up and for broken
// invariants, caught and logged with context at the HTTP boundary.
#pragma once

#include "controller/domain/audit.hpp"
#include "controller/domain/events.hpp"
#include "controller/domain/fleet.hpp"
#include "controller/domain/incidents.hpp"
#include "controller/domain/inventory.hpp"
#include "controller/domain/policy_revision.hpp"
#include "controller/domain/quarantine.hpp"
#include "controller/store/repositories.hpp"
#include "policies/diagnostics.hpp"
#include "policies/policy_reader.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

namespace bulkhead::controller {

enum class ErrorKind {
    BadRequest,        // malformed or invalid input
    Unauthenticated,   // no valid credential
    Forbidden,         // the credential may not do this
    NotFound,
    Conflict,          // the state does not allow it (already resolved, ambiguous address, ...)
    InvalidDocument,   // a policy or inventory that does not validate, with diagnostics
    TooLarge,
    Unavailable,       // the store cannot answer now; nothing was changed
    Internal,
};

struct ServiceError {
    ErrorKind kind = ErrorKind::BadRequest;
    std::string code;      // machine-readable: "invalid-json", "not-found", "ambiguous", ...
    std::string message;   // for people
    nlohmann::json details = nullptr;  // diagnostics with JSON pointers, candidates, ...
};

using ServiceResult = std::expected<nlohmann::json, ServiceError>;

// Who is calling, as authenticated from the bearer token.
struct Caller {
    std::string name;
    Role role = Role::Soc;
    std::string enforcer;  // role Enforcer: the id the credential speaks for
};

using Clock = std::function<TimeMs()>;

// CLOCK_REALTIME in nanoseconds: the stamps of a containment's stages, compared with the
// kernel's and the enforcers' (same clock on one machine, NTP-disciplined across machines).
inline std::int64_t wall_clock_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// Milliseconds on the steady clock since `since`, for the durations services log.
inline long long milliseconds_since(std::chrono::steady_clock::time_point since) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - since).count();
}

ServiceError service_error(ErrorKind kind, std::string code, std::string message, nlohmann::json details = nullptr);
// NotFound and Conflict keep their meaning; an I/O failure is logged with `context` and
// becomes Unavailable (the change did not happen; retry later).
ServiceError from_store(const StoreError& e, std::string_view context = "store");
ServiceError invalid_document(std::string message, const policy::Diagnostics& diagnostics);

// Quarantines travel inside results in their stored form (times in ms).
void to_json(nlohmann::json& j, const Quarantine& q);
void from_json(const nlohmann::json& j, Quarantine& q);

// The API's views of domain values.
nlohmann::json optional_time(const std::optional<TimeMs>& ms);
nlohmann::json revision_json(const PolicyRevision& r, bool with_document);
// `clock_offset_threshold_ms`: beyond it the event is flagged clock_suspect (EventOptions).
nlohmann::json event_json(const StoredEvent& e, std::int64_t clock_offset_threshold_ms = 1000);
nlohmann::json incident_json(const Incident& i);
// The actor of a quarantine a tripwire put in force in the kernel before anyone decided it.
inline constexpr std::string_view kernel_actor = "kernel";
nlohmann::json quarantine_record_json(const Quarantine& q);  // without the enforcers' applied state
nlohmann::json vpn_session_json(const VpnSession& s);
nlohmann::json audit_json(const AuditEntry& a);
nlohmann::json exemption_json(const Exemption& e);

// Request bodies.
const nlohmann::json* member(const nlohmann::json& object, std::string_view key);
std::optional<std::string> string_member(const nlohmann::json& object, std::string_view key);

// An event read back from the store (or the archive) has no sport, port, mac or would_drop
// (they are not columns): takes them from its document (parsed, or else its text) as ingest
// took them from the upload.
void restore_upload_fields(StoredEvent& event);
std::expected<void, ServiceError> only_members(const nlohmann::json& body, std::initializer_list<std::string_view> allowed,
                                               std::string_view what);
std::expected<std::string, ServiceError> required_string(const nlohmann::json& body, std::string_view key,
                                                         std::size_t max_length = 1024);
std::expected<std::optional<std::string>, ServiceError> optional_string(const nlohmann::json& body, std::string_view key,
                                                                        std::size_t max_length = 4096);
std::optional<std::uint16_t> json_port(const nlohmann::json& event, std::string_view key);
std::int64_t json_int(const nlohmann::json& object, std::string_view key, std::int64_t fallback);

// An enforcer credential speaks for its own enforcer only (Forbidden otherwise).
std::expected<void, ServiceError> check_own_channel(const Caller& caller, const std::string& id);

// 32 random bytes, hex: enrollment tokens and credentials.
std::string random_secret();

// A remote user's source identity: one per VPN session, so a pool address that changes hands
// is two sources. Such a source has no workload to quarantine or to query events by.
std::string vpn_source(const VpnSession& session);
bool is_vpn_source(std::string_view workload);

}  // namespace bulkhead::controller
