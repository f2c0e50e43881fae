// Repositories: what the controller must not forget across restarts, one narrow interface
// per domain, so a service depends only on the records it owns and a test fakes one domain
// at a time. SqliteStore implements them all (store.hpp); a PostgreSQL backend would too.
//
// Conventions:
//  * Times are milliseconds since the Unix epoch (UTC), except drop-event kernel
//    timestamps, which keep the enforcer's nanoseconds.
//  * Documents (policies, workloads, event bodies, audit before/after) are JSON values;
//    the store keeps them as text and indexes the few fields queries need.
//  * Secrets are never stored: tokens and credentials arrive here as SHA-256 hex digests.
//  * Every mutating call is one transaction: it happens entirely or not at all. Calls made
//    inside Transactions::in_transaction on the same thread join that transaction.
//  * Errors are values (StoreError); NotFound and Conflict are the caller's to handle,
//    Io means the store could not answer.
#pragma once

#include "controller/domain/analysis_checkpoint.hpp"
#include "controller/domain/audit.hpp"
#include "controller/domain/events.hpp"
#include "controller/domain/fleet.hpp"
#include "controller/domain/incidents.hpp"
#include "controller/domain/inventory.hpp"
#include "controller/domain/outbox.hpp"
#include "controller/domain/policy_revision.hpp"
#include "controller/domain/quarantine.hpp"
#include "controller/evidence/hash_chain.hpp"

#include <cstdint>
#include <expected>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace bulkhead::controller {

struct StoreError {
    enum class Kind { NotFound, Conflict, Invalid, Io };
    Kind kind = Kind::Io;
    std::string message;
};

template <typename T>
using StoreResult = std::expected<T, StoreError>;

class Transactions {
public:
    virtual ~Transactions() = default;
    // Runs `work` as one transaction: every store call `work` makes on this thread joins
    // it, and an error from `work` (or from any call inside) rolls all of it back. Used to
    // keep a change, its audit entry and its outbox messages together. Nested use joins the
    // outer transaction.
    virtual StoreResult<void> in_transaction(const std::function<StoreResult<void>()>& work) = 0;
};

class PolicyRepository {
public:
    virtual ~PolicyRepository() = default;
    // Activating supersedes the previous active revision (one transaction). Roll back =
    // activate an older revision again.
    virtual StoreResult<PolicyRevision> add_revision(PolicyRevision revision) = 0;
    virtual StoreResult<PolicyRevision> get_revision(std::int64_t id) = 0;
    virtual StoreResult<std::vector<PolicyRevision>> list_revisions(std::size_t limit) = 0;
    virtual StoreResult<std::optional<PolicyRevision>> active_revision() = 0;
    virtual StoreResult<PolicyRevision> activate_revision(std::int64_t id, TimeMs at) = 0;
};

class InventoryRepository {
public:
    virtual ~InventoryRepository() = default;
    virtual StoreResult<std::vector<EnforcerDefinition>> list_enforcer_definitions() = 0;
    virtual StoreResult<void> upsert_enforcer_definitions(const std::vector<EnforcerDefinition>& definitions) = 0;
    virtual StoreResult<void> delete_enforcer_definition(const std::string& id) = 0;
    virtual StoreResult<std::vector<WorkloadRecord>> list_workloads() = 0;
    virtual StoreResult<std::optional<WorkloadRecord>> get_workload(const std::string& id) = 0;
    // Bulk upsert and delete in one transaction (a bulk import is all or nothing).
    virtual StoreResult<void> upsert_workloads(const std::vector<WorkloadRecord>& workloads) = 0;
    virtual StoreResult<std::size_t> delete_workloads(const std::vector<std::string>& ids) = 0;
    // Workloads holding `address` (exact match on any of their addresses).
    virtual StoreResult<std::vector<WorkloadRecord>> workloads_with_address(const std::string& address) = 0;
    // Bumped by every inventory change.
    virtual StoreResult<std::uint64_t> inventory_version() = 0;
};

class VpnSessionRepository {
public:
    virtual ~VpnSessionRepository() = default;
    virtual StoreResult<VpnSession> add_vpn_session(VpnSession session) = 0;
    virtual StoreResult<VpnSession> end_vpn_session(std::int64_t id, TimeMs end) = 0;
    virtual StoreResult<std::vector<VpnSession>> list_vpn_sessions(std::optional<TimeMs> active_at,
                                                                   std::size_t limit) = 0;
    // The session that held `pool_address` at `at`, if any.
    virtual StoreResult<std::optional<VpnSession>> vpn_session_for(const std::string& pool_address, TimeMs at) = 0;
};

class EnforcerRepository {
public:
    virtual ~EnforcerRepository() = default;
    virtual StoreResult<std::vector<EnforcerStatus>> list_enforcer_status() = 0;
    virtual StoreResult<std::optional<EnforcerStatus>> get_enforcer_status(const std::string& id) = 0;
    virtual StoreResult<void> put_enforcer_status(const EnforcerStatus& status) = 0;
    // The ruleset generation counter, shared by every enforcer: the next number, durably.
    virtual StoreResult<std::uint64_t> current_generation() = 0;
    virtual StoreResult<std::uint64_t> next_generation(std::uint64_t at_least) = 0;
};

class CredentialRepository {
public:
    virtual ~CredentialRepository() = default;
    virtual StoreResult<void> put_api_token(const ApiToken& token) = 0;  // replaces by name
    virtual StoreResult<std::optional<ApiToken>> find_api_token(const std::string& token_sha256) = 0;
    virtual StoreResult<void> delete_api_tokens_of_enforcer(const std::string& enforcer) = 0;
    virtual StoreResult<void> add_enrollment_token(const EnrollmentToken& token) = 0;
    // Marks the token used if it is unused, unexpired at `now` and for `enforcer`; the
    // enforcer's previous credentials are deleted and `credential` stored, all in one
    // transaction. NotFound when the token does not qualify.
    virtual StoreResult<void> redeem_enrollment_token(const std::string& token_sha256, const std::string& enforcer,
                                                      TimeMs now, const ApiToken& credential) = 0;
};

class EventRepository {
public:
    virtual ~EventRepository() = default;
    // Batches are one transaction; duplicates by (enforcer, enforcer_seq) are skipped and
    // counted. Ids increase in commit order.
    virtual StoreResult<EventInsertResult> insert_events(const std::vector<StoredEvent>& events) = 0;
    virtual StoreResult<std::vector<StoredEvent>> query_events(const EventQuery& query) = 0;
    // Sum of counts per bucket over [from_ns, to_ns), drops only unless `type` given.
    virtual StoreResult<std::vector<CountBucket>> count_events(std::int64_t from_ns, std::int64_t to_ns,
                                                               std::int64_t bucket_ns, const EventQuery& filter) = 0;
    // Highest seq stored per enforcer (what a reconnecting enforcer has delivered).
    virtual StoreResult<std::uint64_t> last_event_seq(const std::string& enforcer) = 0;
    // The highest event id given (0: none), archived events included.
    virtual StoreResult<std::int64_t> last_event_id() = 0;
};

class IncidentRepository {
public:
    virtual ~IncidentRepository() = default;
    virtual StoreResult<Incident> add_incident(Incident incident) = 0;
    // Writes `incident` if the stored row still has `incident.version`; the row's version
    // then moves on by one. Conflict when someone else updated it since it was read.
    virtual StoreResult<Incident> update_incident(const Incident& incident) = 0;
    virtual StoreResult<Incident> get_incident(std::int64_t id) = 0;
    virtual StoreResult<std::vector<Incident>> list_incidents(const IncidentQuery& query) = 0;
    // How many incidents are in `state`, by severity (one indexed COUNT; for the metrics).
    virtual StoreResult<std::map<std::string, std::uint64_t>> count_incidents_by_severity(IncidentState state) = 0;
    // Open or acknowledged incident of a source, the newest, if any.
    virtual StoreResult<std::optional<Incident>> unresolved_incident_of(const std::string& workload) = 0;
    virtual StoreResult<IncidentNote> add_incident_note(IncidentNote note) = 0;
    virtual StoreResult<std::vector<IncidentNote>> incident_notes(std::int64_t incident_id) = 0;
    // Events linked to an incident (its timeline), oldest first. Linking twice is harmless.
    virtual StoreResult<void> link_incident_events(std::int64_t incident_id,
                                                   const std::vector<std::int64_t>& event_ids) = 0;
    virtual StoreResult<std::vector<StoredEvent>> incident_events(std::int64_t incident_id, std::size_t limit) = 0;
    // The ids of every event linked to an incident, ascending, including those that have
    // moved to the archive (incident_events returns only the ones still in the database).
    virtual StoreResult<std::vector<std::int64_t>> incident_event_ids(std::int64_t incident_id, std::size_t limit) = 0;
};

class ExemptionRepository {
public:
    virtual ~ExemptionRepository() = default;
    virtual StoreResult<Exemption> add_exemption(Exemption exemption) = 0;
    virtual StoreResult<std::vector<Exemption>> list_exemptions() = 0;
    // NotFound when there is no such exemption.
    virtual StoreResult<Exemption> delete_exemption(std::int64_t id) = 0;
};

class QuarantineRepository {
public:
    virtual ~QuarantineRepository() = default;
    // Conflict if the workload is already quarantined (active = not released); callers
    // treat that as the idempotent case.
    virtual StoreResult<Quarantine> add_quarantine(Quarantine quarantine) = 0;
    virtual StoreResult<Quarantine> release_quarantine(const std::string& workload, TimeMs at,
                                                       const std::string& released_by) = 0;
    virtual StoreResult<std::vector<Quarantine>> active_quarantines() = 0;
    virtual StoreResult<std::optional<Quarantine>> active_quarantine(const std::string& workload) = 0;
    virtual StoreResult<std::vector<Quarantine>> quarantine_history(const std::string& workload, std::size_t limit) = 0;
};

class AuditRepository {
public:
    virtual ~AuditRepository() = default;
    virtual StoreResult<AuditEntry> append_audit(AuditEntry entry) = 0;
    virtual StoreResult<std::vector<AuditEntry>> query_audit(const AuditQuery& query) = 0;
};

class OutboxRepository {
public:
    virtual ~OutboxRepository() = default;
    // Assigns the id; the caller's delivery_id is kept (unique).
    virtual StoreResult<OutboxMessage> enqueue_outbox(OutboxMessage message) = 0;
    // Pending messages, oldest first, at most `limit`.
    virtual StoreResult<std::vector<OutboxMessage>> pending_outbox(std::size_t limit) = 0;
    // Records an attempt's outcome: the message's state, attempts, next attempt and error.
    virtual StoreResult<void> update_outbox(const OutboxMessage& message) = 0;
    virtual StoreResult<OutboxStats> outbox_stats() = 0;
};

class AnalysisStateRepository {
public:
    virtual ~AnalysisStateRepository() = default;
    virtual StoreResult<std::optional<AnalysisCheckpoint>> load_analysis_checkpoint() = 0;
    virtual StoreResult<void> save_analysis_checkpoint(const AnalysisCheckpoint& checkpoint) = 0;
};

// A record of a hash chain as verification reads it back: its canonical bytes rebuilt from
// what is stored (evidence_records.hpp) and the link hash stored beside it.
struct EvidenceChainRecord {
    std::uint64_t sequence = 0;
    std::string record;
    std::optional<evidence::Digest> hash;  // nullopt: stored without one (or not 32 bytes)
};

// An event with its document text exactly as stored and its chain link (archiving).
struct ChainedEvent {
    StoredEvent event;  // document_text filled, document left null
    std::optional<evidence::Digest> hash;
};

// Tamper evidence (controller/evidence): every event, audit entry, incident change and
// quarantine change is linked into its stream's hash chain by the call that stores it, in
// the same transaction. This interface reads the chains back and keeps their bounds.
class EvidenceRepository {
public:
    virtual ~EvidenceRepository() = default;
    // Where a stream's chain stands: its last record's link, or its start when the database
    // keeps none of its records.
    virtual StoreResult<evidence::ChainHead> evidence_head(evidence::Stream stream) = 0;
    // The link before the first record the database keeps (records stored before chains
    // existed, or moved to the archive, are outside it).
    virtual StoreResult<evidence::ChainHead> evidence_chain_start(evidence::Stream stream) = 0;
    virtual StoreResult<void> set_evidence_chain_start(evidence::Stream stream, const evidence::ChainHead& start) = 0;
    // Records with sequence numbers above `after`, in sequence order, at most `limit`.
    virtual StoreResult<std::vector<EvidenceChainRecord>> evidence_records(evidence::Stream stream,
                                                                           std::uint64_t after,
                                                                           std::size_t limit) = 0;
    // Events with ids above `after`, in id order, at most `limit`, as archiving copies them.
    virtual StoreResult<std::vector<ChainedEvent>> chained_events(std::uint64_t after, std::size_t limit) = 0;
    // After the events through `head.sequence` are sealed in an archive segment: deletes them
    // and makes `head` the drops chain's start, in one transaction. Conflict unless `head` is
    // the stored link of event head.sequence.
    virtual StoreResult<std::size_t> archive_events_through(const evidence::ChainHead& head) = 0;
    // Signed checkpoints (one JSON line each), kept beside the copies sent outside.
    virtual StoreResult<void> add_evidence_checkpoint(TimeMs at, const std::string& line) = 0;
    virtual StoreResult<std::vector<std::string>> evidence_checkpoints(TimeMs from, std::size_t limit) = 0;
};

// Small key/value state for what has no table of its own.
class SettingsRepository {
public:
    virtual ~SettingsRepository() = default;
    virtual StoreResult<std::optional<std::string>> get_setting(const std::string& key) = 0;
    virtual StoreResult<void> put_setting(const std::string& key, const std::string& value) = 0;
};

}  // namespace bulkhead::controller
