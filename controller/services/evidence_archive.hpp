// EvidenceArchive: the tiers of the drop log. Events stay in the database for the hot period
// (90 days by default); then whole periods (a day by default, by the controller's receipt
// time) are sealed into archive segments (controller/archive: zstd, columnar, a signed Merkle
// root), the database forgets them and the chain continues from the segment's last link.
// Segments are kept for the archive retention (400 days by default); an expired segment is
// deleted and its expiry written to the audit log with its range and last link, so that the
// verifier knows where the evidence legitimately starts. Queries over a range older than the
// hot tier read the segments transparently (EventService and bulkheadctl evidence query).
//
// The archive directory is the catalogue: a segment's name says what it holds
// (drops-<period end ms>-<first sequence>-<last sequence>.bhar) and its signed header says
// the rest, so a copy of the directory is enough to read and verify it elsewhere.
#pragma once

#include "controller/archive/archive_segment.hpp"
#include "controller/evidence/checkpoint.hpp"
#include "controller/services/evidence_service.hpp"
#include "controller/services/periodic_task.hpp"
#include "controller/store/repositories.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <expected>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace bulkhead::controller {

struct EvidenceArchiveOptions {
    std::filesystem::path directory;                                  // DATA_DIR/archive
    std::chrono::milliseconds hot_period{90LL * 24 * 3600 * 1000};    // kept in the database
    std::chrono::milliseconds segment_period{24LL * 3600 * 1000};     // one segment per period
    std::chrono::milliseconds retention{400LL * 24 * 3600 * 1000};    // segments kept this long after their period
    std::chrono::milliseconds interval{60'000};                       // how often the tiers are looked at
    std::size_t read_batch = 20'000;                                  // events read per query while sealing
};

struct ArchiveSegmentInfo {
    std::filesystem::path file;
    TimeMs period_end = 0;
    archive::ArchiveHeader header;
    std::uint64_t bytes = 0;
};

// Events older than the hot tier, for EventService's queries.
class ArchivedEvents {
public:
    virtual ~ArchivedEvents() = default;
    // Events in the archive matching `query` (its time range, workload, address, port, reason,
    // type, enforcer, paging and order), at most query.limit; documents parsed.
    virtual StoreResult<std::vector<StoredEvent>> query_archived(const EventQuery& query) = 0;
    // The highest event id held by a segment (0: none): ids above it are in the database.
    virtual std::int64_t archived_through() = 0;
    // Sum of counts per bucket of the archived events in [from_ns, to_ns) matching `filter`
    // (drops only unless filter.type), as EventRepository::count_events counts the database;
    // only buckets with events, in order.
    virtual StoreResult<std::vector<CountBucket>> count_archived(std::int64_t from_ns, std::int64_t to_ns,
                                                                 std::int64_t bucket_ns, const EventQuery& filter) = 0;
};

struct ArchiveFigures {
    std::uint64_t segments = 0;
    std::uint64_t records = 0;
    std::uint64_t bytes = 0;
    std::uint64_t sealed = 0;    // segments sealed by this process
    std::uint64_t expired = 0;   // segments expired by this process
    std::uint64_t failures = 0;
    std::string last_error;
};

class EvidenceArchive final : public ArchivedEvents {
public:
    using Clock = std::function<TimeMs()>;

    // `key` signs segments; without one (tools) the archive is read-only.
    EvidenceArchive(EvidenceArchiveOptions options, EvidenceRepository& evidence, AuditRepository& audit,
                    const evidence::SigningKey* key, Clock clock);
    ~EvidenceArchive() override;
    EvidenceArchive(const EvidenceArchive&) = delete;
    EvidenceArchive& operator=(const EvidenceArchive&) = delete;

    // Reads the directory (every segment's header); refuses a segment it cannot open.
    std::expected<void, std::string> load();
    // One pass: seals every whole period older than the hot tier, then expires segments past
    // the retention. Returns how many segments it sealed and expired.
    std::expected<std::pair<std::size_t, std::size_t>, std::string> run_once();

    void start();
    void stop();

    StoreResult<std::vector<StoredEvent>> query_archived(const EventQuery& query) override;
    std::int64_t archived_through() override;
    StoreResult<std::vector<CountBucket>> count_archived(std::int64_t from_ns, std::int64_t to_ns,
                                                         std::int64_t bucket_ns, const EventQuery& filter) override;

    std::vector<ArchiveSegmentInfo> segments() const;
    ArchiveFigures figures() const;
    const EvidenceArchiveOptions& options() const { return options_; }

private:
    std::expected<bool, std::string> seal_next_period(TimeMs now);
    std::expected<std::size_t, std::string> expire(TimeMs now);
    void run();

    EvidenceArchiveOptions options_;
    EvidenceRepository& evidence_;
    AuditRepository& audit_;
    const evidence::SigningKey* key_;
    Clock clock_;
    mutable std::mutex mutex_;  // segments_ and figures_
    std::vector<ArchiveSegmentInfo> segments_;  // in sequence order
    ArchiveFigures figures_;
    std::mutex run_mutex_;  // one pass at a time
    PeriodicTask task_;     // last: stopped before anything it uses goes
};

// Verifies the archive's segments (signatures, chains, continuity from one segment to the
// next and into the database's chain start) and adds the outcome to `verification`: the
// drops stream's figures then cover the archive too, and the first broken record may lie in
// a segment. Expiries recorded in the audit log explain where the archive starts.
void verify_archive(const std::vector<ArchiveSegmentInfo>& segments, EvidenceRepository& evidence,
                    AuditRepository& audit, const evidence::PublicKey& key, EvidenceVerification& verification);

// The segments in a directory, in sequence order (for bulkheadctl, without a running controller).
std::expected<std::vector<ArchiveSegmentInfo>, std::string> list_archive_segments(const std::filesystem::path& directory);

}  // namespace bulkhead::controller
