// SqliteStore: the embedded Store backend (one SQLite file in the controller's data
// directory, WAL mode). See controller/store/README.md for the connection and transaction
// design and the schema.
#pragma once

#include "controller/store/store.hpp"

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <span>
#include <string_view>

namespace bulkhead::controller {

// One numbered schema change. Versions start at 1 and increase by one; each is applied
// once, in its own transaction, and recorded in schema_migrations.
struct Migration {
    int version = 0;
    std::string_view name;
    std::string_view sql; // one or more statements
};

// The migrations this build knows, in order.
std::span<const Migration> sqlite_migrations();

struct SqliteStoreOptions {
    int busy_timeout_ms = 5000;  // another process holding the write lock
    std::size_t max_readers = 8; // read connections opened on demand, then pooled
    // The write connection's page cache. Event inserts touch the tail of every event index
    // (one hot page per workload, port, address, ...); when those pages do not fit, every
    // batch re-reads them and the insert rate falls as the table grows.
    int writer_cache_kib = 64 * 1024;
    // Page size of a new database file. Event rows (~700 bytes) and the append-mostly event
    // indexes fill larger pages with fewer splits and WAL frames: ingest through the API
    // measured ~119k events/s at 4 KiB, ~132k at 8 KiB, ~134k at 16 KiB (bench ingest,
    // 3 runs each); 8 KiB keeps random reads of single rows cheap.
    int page_size = 8192;
    // Pages in the WAL before a commit checkpoints it into the database file. Batches
    // rewrite the same index tail pages; checkpointing every ~40 MiB instead of SQLite's
    // 4 MiB copies each of them once per checkpoint instead of once per batch.
    int wal_autocheckpoint_pages = 10000;
    // A background thread checkpoints the WAL at this interval (PASSIVE: it neither waits
    // for nor blocks readers and writers), so that no API write, a quarantine above all, is
    // the commit that crosses wal_autocheckpoint_pages and copies ~80 MB into the database
    // first (seen as quarantine tail latency with a fleet heart-beating, bench fleet). The
    // writer's own autocheckpoint stays as the backstop. Zero: only the writer checkpoints.
    std::chrono::milliseconds background_checkpoint_interval{1000};
    // ... but only once the WAL holds at least this many pages. A checkpoint that empties
    // the WAL makes the next commit restart it, and a restart syncs the WAL header
    // (fdatasync, 0.2 ms to several ms on a busy disk): checkpointing a near-empty WAL every
    // second put that sync on the first write after every idle second, which is the commit
    // of a detection and its quarantine (bench contain: the store stage of a run after a
    // pause took 0.56 ms at p50 against 0.26 ms for the others). 1,024 pages (8 MiB) keep
    // WAL restarts to one per 8 MiB written and the WAL far below wal_autocheckpoint_pages.
    int background_checkpoint_min_pages = 1024;
    // Group commit: event batches that arrive while another is being committed wait and
    // go into the next transaction together, up to this many events per transaction.
    std::size_t group_commit_max_events = 50000;
    // Schema to bring the file to (tests pass their own list); empty = sqlite_migrations().
    std::span<const Migration> migrations;
};

class SqliteStore final : public Store {
  public:
    // Opens (creating if needed) and migrates `file`. ":memory:" gives a private in-memory
    // database on a single connection (reads share the write lock) for tests and tools.
    // A file whose schema is newer than this build is refused (Kind::Invalid).
    static std::expected<std::unique_ptr<SqliteStore>, StoreError>
    open(const std::filesystem::path& file);
    static std::expected<std::unique_ptr<SqliteStore>, StoreError>
    open(const std::filesystem::path& file, const SqliteStoreOptions& options);

    ~SqliteStore() override;
    SqliteStore(const SqliteStore&) = delete;
    SqliteStore& operator=(const SqliteStore&) = delete;

    // The highest migration recorded in the file.
    StoreResult<int> schema_version();
    // Background WAL checkpoints done and failed since open (a failure is retried on a new
    // connection at the next interval; the writer's autocheckpoint still bounds the WAL).
    std::uint64_t background_checkpoints() const;
    std::uint64_t background_checkpoint_failures() const;
    // Background checkpoints not run because the WAL held fewer than
    // background_checkpoint_min_pages pages.
    std::uint64_t background_checkpoint_skips() const;

    StoreResult<void> in_transaction(const std::function<StoreResult<void>()>& work) override;

    StoreResult<PolicyRevision> add_revision(PolicyRevision revision) override;
    StoreResult<PolicyRevision> get_revision(std::int64_t id) override;
    StoreResult<std::vector<PolicyRevision>> list_revisions(std::size_t limit) override;
    StoreResult<std::optional<PolicyRevision>> active_revision() override;
    StoreResult<PolicyRevision> activate_revision(std::int64_t id, TimeMs at) override;

    StoreResult<std::vector<EnforcerDefinition>> list_enforcer_definitions() override;
    StoreResult<void>
    upsert_enforcer_definitions(const std::vector<EnforcerDefinition>& definitions) override;
    StoreResult<void> delete_enforcer_definition(const std::string& id) override;
    StoreResult<std::vector<WorkloadRecord>> list_workloads() override;
    StoreResult<std::optional<WorkloadRecord>> get_workload(const std::string& id) override;
    StoreResult<void> upsert_workloads(const std::vector<WorkloadRecord>& workloads) override;
    StoreResult<std::size_t> delete_workloads(const std::vector<std::string>& ids) override;
    StoreResult<std::vector<WorkloadRecord>>
    workloads_with_address(const std::string& address) override;
    StoreResult<std::uint64_t> inventory_version() override;

    StoreResult<VpnSession> add_vpn_session(VpnSession session) override;
    StoreResult<VpnSession> end_vpn_session(std::int64_t id, TimeMs end) override;
    StoreResult<std::vector<VpnSession>> list_vpn_sessions(std::optional<TimeMs> active_at,
                                                           std::size_t limit) override;
    StoreResult<std::optional<VpnSession>> vpn_session_for(const std::string& pool_address,
                                                           TimeMs at) override;

    StoreResult<std::vector<EnforcerStatus>> list_enforcer_status() override;
    StoreResult<std::optional<EnforcerStatus>> get_enforcer_status(const std::string& id) override;
    StoreResult<void> put_enforcer_status(const EnforcerStatus& status) override;

    StoreResult<void> put_api_token(const ApiToken& token) override;
    StoreResult<std::optional<ApiToken>> find_api_token(const std::string& token_sha256) override;
    StoreResult<void> delete_api_tokens_of_enforcer(const std::string& enforcer) override;
    StoreResult<void> add_enrollment_token(const EnrollmentToken& token) override;
    StoreResult<void> redeem_enrollment_token(const std::string& token_sha256,
                                              const std::string& enforcer, TimeMs now,
                                              const ApiToken& credential) override;

    StoreResult<EventInsertResult> insert_events(const std::vector<StoredEvent>& events) override;
    StoreResult<std::vector<StoredEvent>> query_events(const EventQuery& query) override;
    StoreResult<std::vector<CountBucket>> count_events(std::int64_t from_ns, std::int64_t to_ns,
                                                       std::int64_t bucket_ns,
                                                       const EventQuery& filter) override;
    StoreResult<std::uint64_t> last_event_seq(const std::string& enforcer) override;

    StoreResult<Incident> add_incident(Incident incident) override;
    StoreResult<Incident> update_incident(const Incident& incident) override;
    StoreResult<Incident> get_incident(std::int64_t id) override;
    StoreResult<std::vector<Incident>> list_incidents(const IncidentQuery& query) override;
    StoreResult<std::map<std::string, std::uint64_t>> count_incidents_by_severity(IncidentState state) override;
    StoreResult<std::optional<Incident>>
    unresolved_incident_of(const std::string& workload) override;
    StoreResult<IncidentNote> add_incident_note(IncidentNote note) override;
    StoreResult<std::vector<IncidentNote>> incident_notes(std::int64_t incident_id) override;
    StoreResult<void> link_incident_events(std::int64_t incident_id,
                                           const std::vector<std::int64_t>& event_ids) override;
    StoreResult<std::vector<StoredEvent>> incident_events(std::int64_t incident_id,
                                                          std::size_t limit) override;
    StoreResult<std::vector<std::int64_t>> incident_event_ids(std::int64_t incident_id,
                                                              std::size_t limit) override;

    StoreResult<Quarantine> add_quarantine(Quarantine quarantine) override;
    StoreResult<Quarantine> release_quarantine(const std::string& workload, TimeMs at,
                                               const std::string& released_by) override;
    StoreResult<std::vector<Quarantine>> active_quarantines() override;
    StoreResult<std::optional<Quarantine>> active_quarantine(const std::string& workload) override;
    StoreResult<std::vector<Quarantine>> quarantine_history(const std::string& workload,
                                                            std::size_t limit) override;

    StoreResult<AuditEntry> append_audit(AuditEntry entry) override;
    StoreResult<std::vector<AuditEntry>> query_audit(const AuditQuery& query) override;

    StoreResult<Exemption> add_exemption(Exemption exemption) override;
    StoreResult<std::vector<Exemption>> list_exemptions() override;
    StoreResult<Exemption> delete_exemption(std::int64_t id) override;

    StoreResult<std::uint64_t> current_generation() override;
    StoreResult<std::uint64_t> next_generation(std::uint64_t at_least) override;

    StoreResult<OutboxMessage> enqueue_outbox(OutboxMessage message) override;
    StoreResult<std::vector<OutboxMessage>> pending_outbox(std::size_t limit) override;
    StoreResult<void> update_outbox(const OutboxMessage& message) override;
    StoreResult<OutboxStats> outbox_stats() override;

    StoreResult<std::optional<AnalysisCheckpoint>> load_analysis_checkpoint() override;
    StoreResult<void> save_analysis_checkpoint(const AnalysisCheckpoint& checkpoint) override;

    // EvidenceRepository
    StoreResult<evidence::ChainHead> evidence_head(evidence::Stream stream) override;
    StoreResult<evidence::ChainHead> evidence_chain_start(evidence::Stream stream) override;
    StoreResult<void> set_evidence_chain_start(evidence::Stream stream, const evidence::ChainHead& start) override;
    StoreResult<std::vector<EvidenceChainRecord>> evidence_records(evidence::Stream stream, std::uint64_t after,
                                                                   std::size_t limit) override;
    StoreResult<std::vector<ChainedEvent>> chained_events(std::uint64_t after, std::size_t limit) override;
    StoreResult<std::size_t> archive_events_through(const evidence::ChainHead& head) override;
    StoreResult<void> add_evidence_checkpoint(TimeMs at, const std::string& line) override;
    StoreResult<std::vector<std::string>> evidence_checkpoints(TimeMs from, std::size_t limit) override;

    StoreResult<std::int64_t> last_event_id() override;

    StoreResult<std::optional<std::string>> get_setting(const std::string& key) override;
    StoreResult<void> put_setting(const std::string& key, const std::string& value) override;

    class Impl; // connections, the write lock, statement caches (sqlite_connection.hpp)

  private:
    explicit SqliteStore(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

} // namespace bulkhead::controller
