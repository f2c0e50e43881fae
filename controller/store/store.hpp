// Store: everything the controller must not forget across restarts. An interface with
// portable SQL behind it: SQLite (embedded, the default) now, PostgreSQL for several
// controller replicas later. Callers never see SQL, handles or threads.
//
// Conventions:
//  * Times are milliseconds since the Unix epoch (UTC), except drop-event kernel
//    timestamps, which keep the enforcer's nanoseconds.
//  * Documents (policies, workloads, event bodies, audit before/after) are JSON values;
//    the store keeps them as text and indexes the few fields queries need.
//  * Secrets are never stored: tokens and credentials arrive here as SHA-256 hex digests.
//  * Every mutating call is one transaction: it happens entirely or not at all.
//  * Errors are values (StoreError); a NotFound or Conflict is the caller's to map to
//    404/409, Io is a 5xx.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <expected>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace bulkhead::controller {

using TimeMs = std::int64_t;

struct StoreError {
    enum class Kind { NotFound, Conflict, Invalid, Io };
    Kind kind = Kind::Io;
    std::string message;
};

template <typename T>
using StoreResult = std::expected<T, StoreError>;

// ---- policy revisions ------------------------------------------------------------
enum class RevisionState { Draft, Active, Superseded };

struct PolicyRevision {
    std::int64_t id = 0;          // increasing, assigned by the store
    RevisionState state = RevisionState::Draft;
    std::string name;             // the policy's "name"
    std::string author;           // token name of who uploaded it
    std::string comment;
    TimeMs created_at = 0;
    std::optional<TimeMs> activated_at;
    nlohmann::json document;      // the policy JSON as uploaded (validated before storing)
};

// ---- inventory -------------------------------------------------------------------
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

struct VpnSession {
    std::int64_t id = 0;          // assigned by the store
    std::string user;
    std::string pool_address;     // the address the VPN gave the user inside the network
    std::string real_address;     // where the user connected from
    TimeMs start = 0;
    std::optional<TimeMs> end;    // open session: none
};

// ---- enforcers (runtime state, not the inventory entry) -------------------------------
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

// ---- credentials -----------------------------------------------------------------
enum class Role { Admin, Soc, Automation, Enforcer };

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

// ---- events ----------------------------------------------------------------------
// A drop event or allowed-flow summary an enforcer uploaded (enforcer/nflog DropEvent
// JSON), with the fields queries filter on pulled out.
struct StoredEvent {
    std::int64_t id = 0;          // store-assigned, increasing in insertion order
    std::string enforcer;
    std::uint64_t enforcer_seq = 0; // the spool's sequence number: (enforcer, seq) is unique
    std::string type;             // "drop" | "allowed_flow" | enforcer lifecycle types
    std::int64_t time_ns = 0;     // kernel timestamp
    TimeMs received_at = 0;
    std::string workload;         // attributed workload ("" if none)
    std::string direction;        // "out" | "in"
    std::string reason;           // default | deny | decoy | quarantine | allow
    std::string src, dst;         // addresses as text
    std::string protocol;         // "tcp", "udp", "icmp", ...
    std::optional<std::uint16_t> dport;
    std::uint64_t count = 1;      // identical repeats folded by the enforcer
    // Ingest only (not columns; the document holds them): the interface the packet came in on
    // (physindev, else indev) and the source MAC, for the analyzer's attribution.
    std::string port, mac;
    nlohmann::json document;      // the event as uploaded
    // Writing only: the event as uploaded, already compact JSON text; when set, the store
    // writes it instead of serialising `document` (ingest parses into text, not a DOM).
    // Reads always fill `document`.
    std::string document_text;
};

struct EventQuery {
    std::optional<std::int64_t> from_ns, to_ns;   // kernel time range, [from, to)
    std::optional<std::string> workload;          // attributed workload
    std::optional<std::string> address;           // matches src or dst
    std::optional<std::uint16_t> port;            // destination port
    std::optional<std::string> reason;
    std::optional<std::string> type;              // default: any
    std::optional<std::string> enforcer;
    std::optional<std::int64_t> after_id;         // paging: ids greater than this
    std::size_t limit = 100;                      // at most 10,000
    bool newest_first = true;
};

struct EventInsertResult {
    std::size_t accepted = 0;
    std::size_t duplicates = 0;   // (enforcer, seq) already stored
    std::uint64_t through_seq = 0; // highest seq of the batch
    std::vector<std::int64_t> ids; // per input event, in order: its new id, 0 = a duplicate
};

struct CountBucket {
    std::int64_t start_ns = 0;
    std::uint64_t events = 0;     // sum of counts
};

// ---- incidents -------------------------------------------------------------------
enum class IncidentState { Open, Acknowledged, Resolved };

struct Incident {
    std::int64_t id = 0;
    std::string source_workload;
    IncidentState state = IncidentState::Open;
    std::string severity;         // "low" | "medium" | "high" | "critical"
    std::string title;            // one line for lists
    std::string explanation;      // "vdi-0042 (user kimura) tried 37 hosts on tcp/445 in 12 s"
    TimeMs opened_at = 0;
    TimeMs updated_at = 0;
    std::uint64_t event_count = 0;
    nlohmann::json details = nlohmann::json::object(); // detector findings, targets, user, timeline
};

struct IncidentNote {
    std::int64_t id = 0;
    std::int64_t incident_id = 0;
    std::string author;
    TimeMs at = 0;
    std::string text;
};

struct IncidentQuery {
    std::optional<IncidentState> state;
    std::optional<std::string> source_workload;
    std::optional<std::int64_t> before_id;        // paging, newest first
    std::size_t limit = 100;
};

// ---- quarantine ------------------------------------------------------------------
struct Quarantine {
    std::int64_t id = 0;
    std::string workload;
    std::string reason;
    std::string actor;            // token name, or "analyzer" for automatic ones
    bool automatic = false;
    std::optional<std::int64_t> incident_id;
    TimeMs created_at = 0;
    std::optional<TimeMs> released_at;
    std::string released_by;
};

// ---- audit -----------------------------------------------------------------------
struct AuditEntry {
    std::int64_t id = 0;
    TimeMs at = 0;
    std::string actor;            // token name
    std::string role;
    std::string action;           // "policy.activate", "quarantine.create", ...
    std::string target;           // what it acted on ("workload/vdi-001", "revision/7")
    nlohmann::json before;        // null when nothing existed
    nlohmann::json after;         // null when deleted
};

struct AuditQuery {
    std::optional<TimeMs> from, to;
    std::optional<std::string> actor;
    std::optional<std::string> action;
    std::optional<std::int64_t> before_id;
    std::size_t limit = 100;
};

class Store {
public:
    virtual ~Store() = default;

    // Runs `work` as one transaction: every store call `work` makes on this thread joins
    // it, and an error from `work` (or from any call inside) rolls all of it back. Used to
    // keep a change and its audit entry together. Nested use joins the outer transaction.
    virtual StoreResult<void> in_transaction(const std::function<StoreResult<void>()>& work) = 0;

    // Policy revisions. Activating supersedes the previous active revision (one
    // transaction). Roll back = activate an older revision again.
    virtual StoreResult<PolicyRevision> add_revision(PolicyRevision revision) = 0;
    virtual StoreResult<PolicyRevision> get_revision(std::int64_t id) = 0;
    virtual StoreResult<std::vector<PolicyRevision>> list_revisions(std::size_t limit) = 0;
    virtual StoreResult<std::optional<PolicyRevision>> active_revision() = 0;
    virtual StoreResult<PolicyRevision> activate_revision(std::int64_t id, TimeMs at) = 0;

    // Inventory.
    virtual StoreResult<std::vector<EnforcerDefinition>> list_enforcer_definitions() = 0;
    virtual StoreResult<void> upsert_enforcer_definitions(const std::vector<EnforcerDefinition>&) = 0;
    virtual StoreResult<void> delete_enforcer_definition(const std::string& id) = 0;
    virtual StoreResult<std::vector<WorkloadRecord>> list_workloads() = 0;
    virtual StoreResult<std::optional<WorkloadRecord>> get_workload(const std::string& id) = 0;
    // Bulk upsert and delete in one transaction (a bulk import is all or nothing).
    virtual StoreResult<void> upsert_workloads(const std::vector<WorkloadRecord>&) = 0;
    virtual StoreResult<std::size_t> delete_workloads(const std::vector<std::string>& ids) = 0;
    // Workloads holding `address` (exact match on any of their addresses).
    virtual StoreResult<std::vector<WorkloadRecord>> workloads_with_address(const std::string& address) = 0;
    // Bumped by every inventory change; the controller recompiles when it moves.
    virtual StoreResult<std::uint64_t> inventory_version() = 0;

    virtual StoreResult<VpnSession> add_vpn_session(VpnSession session) = 0;
    virtual StoreResult<VpnSession> end_vpn_session(std::int64_t id, TimeMs end) = 0;
    virtual StoreResult<std::vector<VpnSession>> list_vpn_sessions(std::optional<TimeMs> active_at,
                                                                   std::size_t limit) = 0;
    // The session that held `pool_address` at `at`, if any.
    virtual StoreResult<std::optional<VpnSession>> vpn_session_for(const std::string& pool_address,
                                                                   TimeMs at) = 0;

    // Enforcer runtime state.
    virtual StoreResult<std::vector<EnforcerStatus>> list_enforcer_status() = 0;
    virtual StoreResult<std::optional<EnforcerStatus>> get_enforcer_status(const std::string& id) = 0;
    virtual StoreResult<void> put_enforcer_status(const EnforcerStatus& status) = 0;

    // Credentials.
    virtual StoreResult<void> put_api_token(const ApiToken& token) = 0;  // replaces by name
    virtual StoreResult<std::optional<ApiToken>> find_api_token(const std::string& token_sha256) = 0;
    virtual StoreResult<void> delete_api_tokens_of_enforcer(const std::string& enforcer) = 0;
    virtual StoreResult<void> add_enrollment_token(const EnrollmentToken& token) = 0;
    // Marks the token used if it is unused, unexpired at `now` and for `enforcer`; the
    // enforcer's previous credentials are deleted and `credential` stored, all in one
    // transaction. NotFound when the token does not qualify.
    virtual StoreResult<void> redeem_enrollment_token(const std::string& token_sha256,
                                                      const std::string& enforcer, TimeMs now,
                                                      const ApiToken& credential) = 0;

    // Events. Batches are one transaction; duplicates by (enforcer, enforcer_seq) are
    // skipped and counted.
    virtual StoreResult<EventInsertResult> insert_events(const std::vector<StoredEvent>& events) = 0;
    virtual StoreResult<std::vector<StoredEvent>> query_events(const EventQuery& query) = 0;
    // Sum of counts per bucket over [from_ns, to_ns), drops only unless `type` given.
    virtual StoreResult<std::vector<CountBucket>> count_events(std::int64_t from_ns, std::int64_t to_ns,
                                                               std::int64_t bucket_ns,
                                                               const EventQuery& filter) = 0;
    // Highest seq stored per enforcer (what a reconnecting enforcer has delivered).
    virtual StoreResult<std::uint64_t> last_event_seq(const std::string& enforcer) = 0;

    // Incidents.
    virtual StoreResult<Incident> add_incident(Incident incident) = 0;
    virtual StoreResult<Incident> update_incident(const Incident& incident) = 0;
    virtual StoreResult<Incident> get_incident(std::int64_t id) = 0;
    virtual StoreResult<std::vector<Incident>> list_incidents(const IncidentQuery& query) = 0;
    // Open or acknowledged incident of a source, the newest, if any.
    virtual StoreResult<std::optional<Incident>> unresolved_incident_of(const std::string& workload) = 0;
    virtual StoreResult<IncidentNote> add_incident_note(IncidentNote note) = 0;
    virtual StoreResult<std::vector<IncidentNote>> incident_notes(std::int64_t incident_id) = 0;
    // Events linked to an incident (its timeline), oldest first.
    virtual StoreResult<void> link_incident_events(std::int64_t incident_id,
                                                   const std::vector<std::int64_t>& event_ids) = 0;
    virtual StoreResult<std::vector<StoredEvent>> incident_events(std::int64_t incident_id,
                                                                  std::size_t limit) = 0;

    // Quarantine. add fails with Conflict if the workload is already quarantined
    // (active = not released); callers treat that as the idempotent case.
    virtual StoreResult<Quarantine> add_quarantine(Quarantine quarantine) = 0;
    virtual StoreResult<Quarantine> release_quarantine(const std::string& workload, TimeMs at,
                                                       const std::string& released_by) = 0;
    virtual StoreResult<std::vector<Quarantine>> active_quarantines() = 0;
    virtual StoreResult<std::optional<Quarantine>> active_quarantine(const std::string& workload) = 0;
    virtual StoreResult<std::vector<Quarantine>> quarantine_history(const std::string& workload,
                                                                    std::size_t limit) = 0;

    // Audit log (append-only).
    virtual StoreResult<AuditEntry> append_audit(AuditEntry entry) = 0;
    virtual StoreResult<std::vector<AuditEntry>> query_audit(const AuditQuery& query) = 0;

    // Small key/value state (the global ruleset generation counter, ...).
    virtual StoreResult<std::optional<std::string>> get_setting(const std::string& key) = 0;
    virtual StoreResult<void> put_setting(const std::string& key, const std::string& value) = 0;
};

std::string_view to_string(RevisionState state);
std::optional<RevisionState> revision_state_from_string(std::string_view text);
std::string_view to_string(Role role);
std::optional<Role> role_from_string(std::string_view text);
std::string_view to_string(IncidentState state);
std::optional<IncidentState> incident_state_from_string(std::string_view text);

}  // namespace bulkhead::controller
