// The store's queries, in one place, in SQL that SQLite (>= 3.35) and PostgreSQL both
// accept: standard types, `$n` placeholders (SQLite reads them as named parameters, the
// SQLite backend binds them by name), INSERT ... ON CONFLICT, RETURNING, no
// backend-specific functions. A PostgreSQL backend reuses this file verbatim; only the
// DDL (sqlite_schema.cpp) and transaction control (BEGIN IMMEDIATE) are per backend.
//
// Column order of every *_COLUMNS list is what the row readers in the backends expect.
#pragma once

#include "controller/store/store.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace bulkhead::controller::sql {

// ---- settings / counters ------------------------------------------------------------
inline constexpr std::string_view kGetSetting = "SELECT value FROM settings WHERE key = $1";
inline constexpr std::string_view kPutSetting =
    "INSERT INTO settings (key, value) VALUES ($1, $2) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value";
inline constexpr std::string_view kInventoryVersion =
    "SELECT value FROM counters WHERE name = 'inventory'";
inline constexpr std::string_view kBumpInventoryVersion =
    "UPDATE counters SET value = value + 1 WHERE name = 'inventory'";

// ---- policy revisions -----------------------------------------------------------------
#define BH_REVISION_COLUMNS "id, state, name, author, comment, created_at, activated_at, document"
inline constexpr std::string_view kAddRevision =
    "INSERT INTO policy_revisions (state, name, author, comment, created_at, activated_at, "
    "document) "
    "VALUES ('draft', $1, $2, $3, $4, NULL, $5) RETURNING " BH_REVISION_COLUMNS;
inline constexpr std::string_view kGetRevision =
    "SELECT " BH_REVISION_COLUMNS " FROM policy_revisions WHERE id = $1";
inline constexpr std::string_view kListRevisions =
    "SELECT " BH_REVISION_COLUMNS " FROM policy_revisions ORDER BY id DESC LIMIT $1";
inline constexpr std::string_view kActiveRevision =
    "SELECT " BH_REVISION_COLUMNS " FROM policy_revisions WHERE state = 'active'";
inline constexpr std::string_view kSupersedeActive =
    "UPDATE policy_revisions SET state = 'superseded' WHERE state = 'active'";
inline constexpr std::string_view kActivateRevision =
    "UPDATE policy_revisions SET state = 'active', activated_at = $2 WHERE id = $1 "
    "RETURNING " BH_REVISION_COLUMNS;

// ---- inventory --------------------------------------------------------------------------
inline constexpr std::string_view kListEnforcerDefinitions =
    "SELECT id, document FROM enforcer_definitions ORDER BY id";
inline constexpr std::string_view kUpsertEnforcerDefinition =
    "INSERT INTO enforcer_definitions (id, document) VALUES ($1, $2) "
    "ON CONFLICT (id) DO UPDATE SET document = excluded.document";
inline constexpr std::string_view kDeleteEnforcerDefinition =
    "DELETE FROM enforcer_definitions WHERE id = $1";

#define BH_WORKLOAD_COLUMNS "id, enforcer, document, updated_at"
inline constexpr std::string_view kListWorkloads =
    "SELECT " BH_WORKLOAD_COLUMNS " FROM workloads ORDER BY id";
inline constexpr std::string_view kGetWorkload =
    "SELECT " BH_WORKLOAD_COLUMNS " FROM workloads WHERE id = $1";
inline constexpr std::string_view kUpsertWorkload =
    "INSERT INTO workloads (id, enforcer, user_name, document, updated_at) VALUES ($1, $2, $3, $4, "
    "$5) "
    "ON CONFLICT (id) DO UPDATE SET enforcer = excluded.enforcer, user_name = excluded.user_name, "
    "document = excluded.document, updated_at = excluded.updated_at";
inline constexpr std::string_view kDeleteWorkload = "DELETE FROM workloads WHERE id = $1";
inline constexpr std::string_view kDeleteWorkloadAddresses =
    "DELETE FROM workload_addresses WHERE workload_id = $1";
inline constexpr std::string_view kAddWorkloadAddress =
    "INSERT INTO workload_addresses (workload_id, address) VALUES ($1, $2) ON CONFLICT DO NOTHING";
inline constexpr std::string_view kWorkloadsWithAddress =
    "SELECT w.id, w.enforcer, w.document, w.updated_at FROM workload_addresses a "
    "JOIN workloads w ON w.id = a.workload_id WHERE a.address = $1 ORDER BY w.id";

#define BH_VPN_COLUMNS "id, user_name, pool_address, real_address, started_at, ended_at"
inline constexpr std::string_view kAddVpnSession =
    "INSERT INTO vpn_sessions (user_name, pool_address, real_address, started_at, ended_at) "
    "VALUES ($1, $2, $3, $4, $5) RETURNING " BH_VPN_COLUMNS;
inline constexpr std::string_view kGetVpnSession =
    "SELECT " BH_VPN_COLUMNS " FROM vpn_sessions WHERE id = $1";
inline constexpr std::string_view kEndVpnSession =
    "UPDATE vpn_sessions SET ended_at = $2 WHERE id = $1 RETURNING " BH_VPN_COLUMNS;
inline constexpr std::string_view kListVpnSessions =
    "SELECT " BH_VPN_COLUMNS " FROM vpn_sessions ORDER BY id DESC LIMIT $1";
inline constexpr std::string_view kListVpnSessionsActiveAt =
    "SELECT " BH_VPN_COLUMNS " FROM vpn_sessions "
    "WHERE started_at <= $1 AND (ended_at IS NULL OR ended_at > $1) ORDER BY id DESC LIMIT $2";
inline constexpr std::string_view kVpnSessionFor =
    "SELECT " BH_VPN_COLUMNS " FROM vpn_sessions "
    "WHERE pool_address = $1 AND started_at <= $2 AND (ended_at IS NULL OR ended_at > $2) "
    "ORDER BY started_at DESC, id DESC LIMIT 1";

// ---- enforcer runtime state -------------------------------------------------------------
#define BH_STATUS_COLUMNS                                                                          \
    "id, enrolled_at, last_heartbeat, applied_generation, applied_hash, apply_state, last_error, " \
    "drift_repairs, last_drift_at, clock_offset_ms, version, hostname, details"
inline constexpr std::string_view kListEnforcerStatus =
    "SELECT " BH_STATUS_COLUMNS " FROM enforcer_status ORDER BY id";
inline constexpr std::string_view kGetEnforcerStatus =
    "SELECT " BH_STATUS_COLUMNS " FROM enforcer_status WHERE id = $1";
inline constexpr std::string_view kPutEnforcerStatus =
    "INSERT INTO enforcer_status (" BH_STATUS_COLUMNS ") "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
    "ON CONFLICT (id) DO UPDATE SET enrolled_at = excluded.enrolled_at, "
    "last_heartbeat = excluded.last_heartbeat, applied_generation = excluded.applied_generation, "
    "applied_hash = excluded.applied_hash, apply_state = excluded.apply_state, "
    "last_error = excluded.last_error, drift_repairs = excluded.drift_repairs, "
    "last_drift_at = excluded.last_drift_at, clock_offset_ms = excluded.clock_offset_ms, "
    "version = excluded.version, hostname = excluded.hostname, details = excluded.details";

// ---- credentials ---------------------------------------------------------------------------
#define BH_TOKEN_COLUMNS "name, role, token_sha256, enforcer, created_at"
inline constexpr std::string_view kPutApiToken =
    "INSERT INTO api_tokens (" BH_TOKEN_COLUMNS ") VALUES ($1, $2, $3, $4, $5) "
    "ON CONFLICT (name) DO UPDATE SET role = excluded.role, token_sha256 = excluded.token_sha256, "
    "enforcer = excluded.enforcer, created_at = excluded.created_at";
inline constexpr std::string_view kFindApiToken =
    "SELECT " BH_TOKEN_COLUMNS " FROM api_tokens WHERE token_sha256 = $1";
inline constexpr std::string_view kDeleteApiTokensOfEnforcer =
    "DELETE FROM api_tokens WHERE role = 'enforcer' AND enforcer = $1";
inline constexpr std::string_view kAddEnrollmentToken =
    "INSERT INTO enrollment_tokens (token_sha256, enforcer, created_at, expires_at, used_at) "
    "VALUES ($1, $2, $3, $4, $5)";
// Marks the token used only if it qualifies; zero rows changed = it does not.
inline constexpr std::string_view kRedeemEnrollmentToken =
    "UPDATE enrollment_tokens SET used_at = $3 "
    "WHERE token_sha256 = $1 AND enforcer = $2 AND used_at IS NULL AND expires_at > $3";

// ---- events -------------------------------------------------------------------------------
#define BH_EVENT_COLUMNS                                                                           \
    "id, enforcer, enforcer_seq, type, time_ns, received_at, workload, direction, reason, src, "   \
    "dst, protocol, dport, event_count, document, clock_offset_ms"
inline constexpr std::string_view kInsertEvent =
    "INSERT INTO events (enforcer, enforcer_seq, type, time_ns, received_at, workload, direction, "
    "reason, src, dst, protocol, dport, event_count, document, id, chain_hash, clock_offset_ms) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) "
    "ON CONFLICT (enforcer, enforcer_seq) DO NOTHING";
inline constexpr std::string_view kLastEventSeq =
    "SELECT MAX(enforcer_seq) FROM events WHERE enforcer = $1";
inline constexpr std::string_view kEventExists = "SELECT 1 FROM events WHERE id = $1";

// ---- incidents -------------------------------------------------------------------------------
#define BH_INCIDENT_COLUMNS                                                                        \
    "id, source_workload, state, severity, title, explanation, opened_at, updated_at, "            \
    "event_count, details, version, counted_through_event"
inline constexpr std::string_view kAddIncident =
    "INSERT INTO incidents (source_workload, state, severity, title, explanation, opened_at, "
    "updated_at, event_count, details, version, counted_through_event) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10) RETURNING " BH_INCIDENT_COLUMNS;
inline constexpr std::string_view kUpdateIncident =
    "UPDATE incidents SET source_workload = $2, state = $3, severity = $4, title = $5, "
    "explanation = $6, opened_at = $7, updated_at = $8, event_count = $9, details = $10, "
    "counted_through_event = $12, version = version + 1 "
    "WHERE id = $1 AND version = $11 RETURNING " BH_INCIDENT_COLUMNS;
inline constexpr std::string_view kGetIncident =
    "SELECT " BH_INCIDENT_COLUMNS " FROM incidents WHERE id = $1";
inline constexpr std::string_view kCountIncidentsBySeverity =
    "SELECT severity, COUNT(*) FROM incidents WHERE state = $1 GROUP BY severity";
inline constexpr std::string_view kIncidentExists = "SELECT 1 FROM incidents WHERE id = $1";
inline constexpr std::string_view kUnresolvedIncidentOf =
    "SELECT " BH_INCIDENT_COLUMNS " FROM incidents "
    "WHERE source_workload = $1 AND state IN ('open', 'acknowledged') ORDER BY id DESC LIMIT 1";
#define BH_NOTE_COLUMNS "id, incident_id, author, at, body"
inline constexpr std::string_view kAddIncidentNote =
    "INSERT INTO incident_notes (incident_id, author, at, body) VALUES ($1, $2, $3, $4) "
    "RETURNING " BH_NOTE_COLUMNS;
inline constexpr std::string_view kIncidentNotes =
    "SELECT " BH_NOTE_COLUMNS " FROM incident_notes WHERE incident_id = $1 ORDER BY id";
inline constexpr std::string_view kLinkIncidentEvent =
    "INSERT INTO incident_events (incident_id, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING";
inline constexpr std::string_view kIncidentEventIds =
    "SELECT event_id FROM incident_events WHERE incident_id = $1 ORDER BY event_id LIMIT $2";
inline constexpr std::string_view kIncidentEvents =
    "SELECT e.id, e.enforcer, e.enforcer_seq, e.type, e.time_ns, e.received_at, e.workload, "
    "e.direction, e.reason, e.src, e.dst, e.protocol, e.dport, e.event_count, e.document, e.clock_offset_ms "
    "FROM incident_events l JOIN events e ON e.id = l.event_id WHERE l.incident_id = $1 "
    "ORDER BY e.time_ns, e.id LIMIT $2";

// ---- quarantine -------------------------------------------------------------------------------
#define BH_QUARANTINE_COLUMNS                                                                      \
    "id, workload, reason, actor, automatic, incident_id, created_at, released_at, released_by"
inline constexpr std::string_view kAddQuarantine =
    "INSERT INTO quarantines (workload, reason, actor, automatic, incident_id, created_at, "
    "released_at, released_by) VALUES ($1, $2, $3, $4, $5, $6, NULL, '') "
    "RETURNING " BH_QUARANTINE_COLUMNS;
inline constexpr std::string_view kReleaseQuarantine =
    "UPDATE quarantines SET released_at = $2, released_by = $3 "
    "WHERE workload = $1 AND released_at IS NULL RETURNING " BH_QUARANTINE_COLUMNS;
inline constexpr std::string_view kActiveQuarantines =
    "SELECT " BH_QUARANTINE_COLUMNS " FROM quarantines WHERE released_at IS NULL ORDER BY id";
inline constexpr std::string_view kActiveQuarantine =
    "SELECT " BH_QUARANTINE_COLUMNS " FROM quarantines WHERE workload = $1 AND released_at IS NULL";
inline constexpr std::string_view kQuarantineHistory =
    "SELECT " BH_QUARANTINE_COLUMNS
    " FROM quarantines WHERE workload = $1 ORDER BY id DESC LIMIT $2";

// ---- exemptions -------------------------------------------------------------------------------
#define BH_EXEMPTION_COLUMNS                                                                       \
    "id, workload, enforcer, segment, expires_at, reason, created_by, created_at"
inline constexpr std::string_view kAddExemption =
    "INSERT INTO exemptions (workload, enforcer, segment, expires_at, reason, created_by, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING " BH_EXEMPTION_COLUMNS;
inline constexpr std::string_view kListExemptions =
    "SELECT " BH_EXEMPTION_COLUMNS " FROM exemptions ORDER BY id";
inline constexpr std::string_view kDeleteExemption =
    "DELETE FROM exemptions WHERE id = $1 RETURNING " BH_EXEMPTION_COLUMNS;

// ---- ruleset generations -------------------------------------------------------------------------
inline constexpr std::string_view kCurrentGeneration = "SELECT value FROM ruleset_generation WHERE id = 1";
// The next number, never below `at_least` (what enforcers already acked before an upgrade).
inline constexpr std::string_view kNextGeneration =
    "UPDATE ruleset_generation SET value = CASE WHEN value + 1 > $1 THEN value + 1 ELSE $1 END "
    "WHERE id = 1 RETURNING value";

// ---- outbox ----------------------------------------------------------------------------------------
#define BH_OUTBOX_COLUMNS                                                                          \
    "id, delivery_id, destination, type, body, created_at, attempts, next_attempt_at, state, "     \
    "last_error, finished_at"
inline constexpr std::string_view kEnqueueOutbox =
    "INSERT INTO outbox (delivery_id, destination, type, body, created_at, attempts, "
    "next_attempt_at, state, last_error, finished_at) "
    "VALUES ($1, $2, $3, $4, $5, 0, $6, 'pending', '', NULL) RETURNING " BH_OUTBOX_COLUMNS;
inline constexpr std::string_view kPendingOutbox =
    "SELECT " BH_OUTBOX_COLUMNS " FROM outbox WHERE state = 'pending' ORDER BY id LIMIT $1";
inline constexpr std::string_view kUpdateOutbox =
    "UPDATE outbox SET attempts = $2, next_attempt_at = $3, state = $4, last_error = $5, "
    "finished_at = $6 WHERE id = $1";
inline constexpr std::string_view kOutboxStats =
    "SELECT (SELECT COUNT(*) FROM outbox WHERE state = 'pending'), "
    "(SELECT MIN(created_at) FROM outbox WHERE state = 'pending'), "
    "(SELECT COUNT(*) FROM outbox WHERE state = 'delivered'), "
    "(SELECT COUNT(*) FROM outbox WHERE state = 'failed')";

// ---- analysis checkpoint ------------------------------------------------------------------------
inline constexpr std::string_view kLoadAnalysisCheckpoint =
    "SELECT through_event_id, taken_at, engine, planner, ledger FROM analysis_checkpoint WHERE id = 1";
inline constexpr std::string_view kSaveAnalysisCheckpoint =
    "INSERT INTO analysis_checkpoint (id, through_event_id, taken_at, engine, planner, ledger) "
    "VALUES (1, $1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET "
    "through_event_id = excluded.through_event_id, taken_at = excluded.taken_at, "
    "engine = excluded.engine, planner = excluded.planner, ledger = excluded.ledger";

// The highest id given: events moved to the archive leave the database, but their ids stay
// given (the drops chain's start is the last archived one).
inline constexpr std::string_view kLastEventId =
    "SELECT MAX(m) FROM (SELECT MAX(id) AS m FROM events "
    "UNION ALL SELECT sequence AS m FROM evidence_chain_start WHERE stream = 'drops')";

// ---- audit -------------------------------------------------------------------------------------
#define BH_AUDIT_COLUMNS "id, at, actor, role, action, target, before_doc, after_doc"
inline constexpr std::string_view kAppendAudit =
    "INSERT INTO audit_log (at, actor, role, action, target, before_doc, after_doc) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING " BH_AUDIT_COLUMNS;

// ---- evidence (hash chains) --------------------------------------------------------------------
inline constexpr std::string_view kLastChainedEvent =
    "SELECT id, chain_hash FROM events ORDER BY id DESC LIMIT 1";
inline constexpr std::string_view kLastChainedAudit =
    "SELECT chain_seq, chain_hash FROM audit_log WHERE chain_seq IS NOT NULL "
    "ORDER BY chain_seq DESC LIMIT 1";
inline constexpr std::string_view kSetAuditChain =
    "UPDATE audit_log SET chain_seq = $2, chain_hash = $3 WHERE id = $1";
inline constexpr std::string_view kLastEvidenceChange =
    "SELECT sequence, hash FROM evidence_changes WHERE stream = $1 ORDER BY sequence DESC LIMIT 1";
inline constexpr std::string_view kAppendEvidenceChange =
    "INSERT INTO evidence_changes (stream, sequence, subject_id, at, record, hash) "
    "VALUES ($1, $2, $3, $4, $5, $6)";
inline constexpr std::string_view kChainStart =
    "SELECT sequence, hash FROM evidence_chain_start WHERE stream = $1";
inline constexpr std::string_view kSetChainStart =
    "UPDATE evidence_chain_start SET sequence = $2, hash = $3 WHERE stream = $1";
// Records in chain order for verification, with their stored hash.
inline constexpr std::string_view kChainedEvents =
    "SELECT " BH_EVENT_COLUMNS ", chain_hash FROM events WHERE id > $1 ORDER BY id LIMIT $2";
inline constexpr std::string_view kChainedAudit =
    "SELECT " BH_AUDIT_COLUMNS ", chain_seq, chain_hash FROM audit_log "
    "WHERE chain_seq > $1 ORDER BY chain_seq LIMIT $2";
inline constexpr std::string_view kEvidenceChanges =
    "SELECT sequence, record, hash FROM evidence_changes WHERE stream = $1 AND sequence > $2 "
    "ORDER BY sequence LIMIT $3";
inline constexpr std::string_view kEventLink = "SELECT chain_hash FROM events WHERE id = $1";
inline constexpr std::string_view kDeleteEventsThrough = "DELETE FROM events WHERE id <= $1";
inline constexpr std::string_view kAddEvidenceCheckpoint =
    "INSERT INTO evidence_checkpoints (at_ms, line) VALUES ($1, $2) "
    "ON CONFLICT (at_ms) DO UPDATE SET line = excluded.line";
inline constexpr std::string_view kEvidenceCheckpoints =
    "SELECT line FROM evidence_checkpoints WHERE at_ms >= $1 ORDER BY at_ms LIMIT $2";

inline constexpr std::string_view kEventColumns = BH_EVENT_COLUMNS;
inline constexpr std::string_view kIncidentColumns = BH_INCIDENT_COLUMNS;
inline constexpr std::string_view kAuditColumns = BH_AUDIT_COLUMNS;

#undef BH_REVISION_COLUMNS
#undef BH_WORKLOAD_COLUMNS
#undef BH_VPN_COLUMNS
#undef BH_STATUS_COLUMNS
#undef BH_TOKEN_COLUMNS
#undef BH_EVENT_COLUMNS
#undef BH_INCIDENT_COLUMNS
#undef BH_NOTE_COLUMNS
#undef BH_QUARANTINE_COLUMNS
#undef BH_AUDIT_COLUMNS
#undef BH_EXEMPTION_COLUMNS
#undef BH_OUTBOX_COLUMNS

// ---- queries built from filters -----------------------------------------------------------------
using Value = std::variant<std::int64_t, std::string>;

struct Query {
    std::string text;
    std::vector<Value> params; // params[i] is $(i+1)
};

inline constexpr std::size_t kMaxLimit = 10'000;

// ---- the coarse event index (migration 2, event_terms) -------------------------------------
inline constexpr std::int64_t kTermBucketNs = 60'000'000'000; // one row per term per minute
inline constexpr std::string_view kInsertEventTerm =
    "INSERT INTO event_terms (term, minute) VALUES ($1, $2) ON CONFLICT DO NOTHING";

// The minute an event time falls in (floor division: times before 1970 too).
std::int64_t term_bucket(std::int64_t time_ns);
// The terms an event is found by: "a:" source and destination address, "p:" destination
// port, "r:" reason (empty values have none). Workloads have a real index.
std::vector<std::string> event_terms(const StoredEvent& event);

// query_events: filters ANDed, ordered by id (insertion order), newest or oldest first.
// An address, port or reason filter (without a workload) scans only the minutes of that term.
Query select_events(const EventQuery& query);
// count_events: rows of (bucket index, sum of counts) for non-empty buckets, ascending;
// bucket start = from_ns + index * bucket_ns.
Query count_events(std::int64_t from_ns, std::int64_t to_ns, std::int64_t bucket_ns,
                   const EventQuery& filter);
Query select_incidents(const IncidentQuery& query);
Query select_audit(const AuditQuery& query);

} // namespace bulkhead::controller::sql
