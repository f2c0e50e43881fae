#include "controller/services/evidence_archive.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <map>

namespace bulkhead::controller {

namespace {

constexpr std::string_view kSealAction = "evidence.archive.seal";
constexpr std::string_view kExpireAction = "evidence.archive.expire";

std::string segment_name(TimeMs period_end, std::uint64_t first, std::uint64_t last) {
    char name[96];
    std::snprintf(name, sizeof name, "drops-%013" PRId64 "-%020" PRIu64 "-%020" PRIu64 ".bhar", period_end, first, last);
    return name;
}

std::optional<TimeMs> period_end_of(const std::filesystem::path& file) {
    const std::string name = file.filename().string();
    TimeMs end = 0;
    unsigned long long first = 0, last = 0;
    if (std::sscanf(name.c_str(), "drops-%" SCNd64 "-%llu-%llu.bhar", &end, &first, &last) != 3)
        return std::nullopt;
    return end;
}

std::expected<ArchiveSegmentInfo, std::string> open_segment(const std::filesystem::path& file) {
    auto end = period_end_of(file);
    if (!end)
        return std::unexpected(file.string() + ": not a segment name (drops-<period end>-<first>-<last>.bhar)");
    auto reader = archive::ArchiveSegmentReader::open(file);
    if (!reader)
        return std::unexpected(reader.error().message);
    std::error_code ec;
    return ArchiveSegmentInfo{file, *end, reader->header(), std::filesystem::file_size(file, ec)};
}

nlohmann::json segment_json(const ArchiveSegmentInfo& s) {
    return {{"file", s.file.filename().string()},
            {"first_sequence", s.header.first_sequence},
            {"last_sequence", s.header.last_sequence},
            {"records", s.header.record_count},
            {"bytes", s.bytes},
            {"period_end", format_time_ms(s.period_end)},
            {"previous_hash", evidence::to_hex(s.header.previous_hash)},
            {"last_hash", evidence::to_hex(s.header.last_hash)}};
}

bool matches_rest(const StoredEvent& e, const EventQuery& q) {
    if (q.port && e.dport != q.port)
        return false;
    if (q.reason && e.reason != *q.reason)
        return false;
    if (q.type && e.type != *q.type)
        return false;
    if (q.enforcer && e.enforcer != *q.enforcer)
        return false;
    if (q.through_id && e.id > *q.through_id)
        return false;
    return true;
}

}  // namespace

std::expected<std::vector<ArchiveSegmentInfo>, std::string> list_archive_segments(const std::filesystem::path& directory) {
    std::vector<ArchiveSegmentInfo> out;
    std::error_code ec;
    if (!std::filesystem::exists(directory, ec))
        return out;
    for (const auto& entry : std::filesystem::directory_iterator(directory, ec)) {
        if (!entry.is_regular_file() || entry.path().extension() != ".bhar")
            continue;
        auto segment = open_segment(entry.path());
        if (!segment)
            return std::unexpected(segment.error());
        out.push_back(std::move(*segment));
    }
    if (ec)
        return std::unexpected("cannot list " + directory.string() + ": " + ec.message());
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
        return a.header.first_sequence < b.header.first_sequence;
    });
    return out;
}

EvidenceArchive::EvidenceArchive(EvidenceArchiveOptions options, EvidenceRepository& evidence, AuditRepository& audit,
                                 const evidence::SigningKey* key, Clock clock)
    : options_(std::move(options)),
      evidence_(evidence),
      audit_(audit),
      key_(key),
      clock_(std::move(clock)),
      task_({options_.interval, true, false}, [this] { run(); }) {}

EvidenceArchive::~EvidenceArchive() { stop(); }

std::expected<void, std::string> EvidenceArchive::load() {
    auto listed = list_archive_segments(options_.directory);
    if (!listed)
        return std::unexpected(listed.error());
    std::lock_guard lock(mutex_);
    segments_ = std::move(*listed);
    figures_.segments = segments_.size();
    figures_.records = figures_.bytes = 0;
    for (const auto& s : segments_) {
        figures_.records += s.header.record_count;
        figures_.bytes += s.bytes;
    }
    return {};
}

std::expected<bool, std::string> EvidenceArchive::seal_next_period(TimeMs now) {
    auto start = evidence_.evidence_chain_start(evidence::Stream::Drops);
    if (!start)
        return std::unexpected("cannot read the chain's start: " + start.error().message);
    {
        // A segment sealed before a crash whose events were not yet removed: finish the move.
        std::lock_guard lock(mutex_);
        for (const auto& s : segments_) {
            if (s.header.first_sequence == start->sequence + 1) {
                const evidence::ChainHead end{s.header.last_sequence, s.header.last_hash};
                if (auto moved = evidence_.archive_events_through(end); !moved)
                    return std::unexpected("cannot finish moving " + s.file.filename().string() + ": " +
                                           moved.error().message);
                return true;
            }
        }
    }
    auto first = evidence_.chained_events(start->sequence, 1);
    if (!first)
        return std::unexpected("cannot read events: " + first.error().message);
    if (first->empty())
        return false;
    const TimeMs period = std::max<TimeMs>(1, options_.segment_period.count());
    const TimeMs received = first->front().event.received_at;
    const TimeMs period_start = received - ((received % period) + period) % period;
    const TimeMs period_end = period_start + period;
    if (period_end > now - options_.hot_period.count())
        return false;  // still hot
    if (key_ == nullptr)
        return std::unexpected("no signing key: this archive is read-only");

    archive::ArchiveSegmentWriter writer(evidence::Stream::Drops, *start);
    std::uint64_t after = start->sequence;
    bool done = false;
    std::int64_t max_time_ns = 0;
    while (!done) {
        auto batch = evidence_.chained_events(after, options_.read_batch);
        if (!batch)
            return std::unexpected("cannot read events: " + batch.error().message);
        for (const auto& row : *batch) {
            if (row.event.received_at >= period_end) {
                done = true;
                break;
            }
            if (!row.hash)
                return std::unexpected("event " + std::to_string(row.event.id) +
                                       " has no chain link; run bulkheadctl evidence verify");
            if (auto appended = writer.append(row.event, row.event.document_text, *row.hash); !appended)
                return std::unexpected(appended.error().message);
            after = static_cast<std::uint64_t>(row.event.id);
            max_time_ns = std::max(max_time_ns, row.event.time_ns);
        }
        if (batch->size() < options_.read_batch)
            done = true;
    }
    const evidence::ChainHead end = writer.head();
    std::error_code ec;
    std::filesystem::create_directories(options_.directory, ec);
    const auto file = options_.directory / segment_name(period_end, start->sequence + 1, end.sequence);
    if (auto sealed = writer.seal(*key_, file); !sealed)
        return std::unexpected(sealed.error().message);
    auto segment = open_segment(file);
    if (!segment)
        return std::unexpected(segment.error());
    {
        std::lock_guard lock(mutex_);
        segments_.push_back(*segment);
        ++figures_.segments;
        ++figures_.sealed;
        figures_.records += segment->header.record_count;
        figures_.bytes += segment->bytes;
    }
    AuditEntry entry;
    entry.at = now;
    entry.actor = "retention";
    entry.role = "system";
    entry.action = std::string(kSealAction);
    entry.target = "archive/" + file.filename().string();
    entry.after = segment_json(*segment);
    if (auto audited = audit_.append_audit(entry); !audited)
        return std::unexpected("cannot audit the sealing of " + file.filename().string() + ": " + audited.error().message);
    auto moved = evidence_.archive_events_through(end);
    if (!moved)
        return std::unexpected("cannot remove the archived events: " + moved.error().message);
    spdlog::info("evidence: sealed {} ({} events, {} bytes, {:.1f} bytes per event); the database keeps events after #{}",
                 file.filename().string(), segment->header.record_count, segment->bytes,
                 segment->header.record_count ? static_cast<double>(segment->bytes) / segment->header.record_count : 0.0,
                 end.sequence);
    return true;
}

std::expected<std::size_t, std::string> EvidenceArchive::expire(TimeMs now) {
    std::vector<ArchiveSegmentInfo> due;
    {
        std::lock_guard lock(mutex_);
        for (const auto& s : segments_) {
            if (s.period_end + options_.retention.count() < now)
                due.push_back(s);
        }
    }
    std::size_t expired = 0;
    for (const auto& s : due) {
        // The audit entry first: a segment that is gone without one is tampering.
        AuditEntry entry;
        entry.at = now;
        entry.actor = "retention";
        entry.role = "system";
        entry.action = std::string(kExpireAction);
        entry.target = "archive/" + s.file.filename().string();
        entry.before = segment_json(s);
        if (auto audited = audit_.append_audit(entry); !audited)
            return std::unexpected("cannot audit the expiry of " + s.file.filename().string() + ": " +
                                   audited.error().message);
        std::error_code ec;
        std::filesystem::remove(s.file, ec);
        if (ec)
            return std::unexpected("cannot delete " + s.file.string() + ": " + ec.message());
        spdlog::info("evidence: expired {} (events #{} to #{}, period ended {})", s.file.filename().string(),
                     s.header.first_sequence, s.header.last_sequence, format_time_ms(s.period_end));
        std::lock_guard lock(mutex_);
        std::erase_if(segments_, [&](const ArchiveSegmentInfo& held) { return held.file == s.file; });
        --figures_.segments;
        ++figures_.expired;
        figures_.records -= s.header.record_count;
        figures_.bytes -= s.bytes;
        ++expired;
    }
    return expired;
}

std::expected<std::pair<std::size_t, std::size_t>, std::string> EvidenceArchive::run_once() {
    std::lock_guard pass(run_mutex_);
    const TimeMs now = clock_();
    std::size_t sealed = 0;
    for (;;) {
        auto next = seal_next_period(now);
        if (!next) {
            std::lock_guard lock(mutex_);
            ++figures_.failures;
            figures_.last_error = next.error();
            return std::unexpected(next.error());
        }
        if (!*next)
            break;
        ++sealed;
    }
    auto expired = expire(now);
    if (!expired) {
        std::lock_guard lock(mutex_);
        ++figures_.failures;
        figures_.last_error = expired.error();
        return std::unexpected(expired.error());
    }
    std::lock_guard lock(mutex_);
    figures_.last_error.clear();
    return std::pair{sealed, *expired};
}

void EvidenceArchive::start() { task_.start(); }

void EvidenceArchive::stop() { task_.stop(); }

void EvidenceArchive::run() {
    if (auto done = run_once(); !done)
        spdlog::error("evidence: archiving failed (the events stay in the database): {}", done.error());
}

std::int64_t EvidenceArchive::archived_through() {
    std::lock_guard lock(mutex_);
    return segments_.empty() ? 0 : static_cast<std::int64_t>(segments_.back().header.last_sequence);
}

std::vector<ArchiveSegmentInfo> EvidenceArchive::segments() const {
    std::lock_guard lock(mutex_);
    return segments_;
}

ArchiveFigures EvidenceArchive::figures() const {
    std::lock_guard lock(mutex_);
    return figures_;
}

namespace {

// The events of segment `s` that match `query` (the reader's index and filters, then the
// rest), in id order, documents not parsed; nothing when its header rules the segment out.
// `scan_limit` (0: none) stops the reader early where no later filter can drop an event.
StoreResult<std::vector<StoredEvent>> scan_segment(const ArchiveSegmentInfo& s, const EventQuery& query,
                                                   std::size_t scan_limit) {
    const auto& h = s.header;
    if ((query.from_ns && *query.from_ns > h.max_time_ns) || (query.to_ns && *query.to_ns <= h.min_time_ns) ||
        (query.after_id && static_cast<std::uint64_t>(*query.after_id) >= h.last_sequence) ||
        (query.through_id && static_cast<std::uint64_t>(*query.through_id) < h.first_sequence))
        return std::vector<StoredEvent>{};
    auto reader = archive::ArchiveSegmentReader::open(s.file);
    if (!reader)
        return std::unexpected(StoreError{StoreError::Kind::Io, reader.error().message});
    archive::ArchiveQuery scan;
    scan.from_ns = query.from_ns;
    scan.to_ns = query.to_ns;
    scan.workload = query.workload;
    scan.address = query.address;
    scan.after_id = query.after_id;
    scan.through_id = query.through_id;
    scan.limit = scan_limit;
    auto events = reader->scan(scan);
    if (!events)
        return std::unexpected(StoreError{StoreError::Kind::Io, events.error().message});
    std::erase_if(*events, [&](const StoredEvent& e) { return !matches_rest(e, query); });
    return std::move(*events);
}

}  // namespace

StoreResult<std::vector<StoredEvent>> EvidenceArchive::query_archived(const EventQuery& query) {
    std::vector<ArchiveSegmentInfo> held = segments();
    if (query.newest_first)
        std::reverse(held.begin(), held.end());
    std::vector<StoredEvent> out;
    const bool filtered_after_scan = query.port || query.reason || query.type || query.enforcer;
    for (const auto& s : held) {
        if (out.size() >= query.limit)
            break;
        // Ascending without filters the reader cannot apply: it may stop at the limit.
        const std::size_t scan_limit =
            (!query.newest_first && !filtered_after_scan) ? query.limit - out.size() : 0;
        auto events = scan_segment(s, query, scan_limit);
        if (!events)
            return std::unexpected(events.error());
        if (query.newest_first)
            std::reverse(events->begin(), events->end());
        for (auto& e : *events) {
            if (out.size() >= query.limit)
                break;
            if (query.parse_documents) {
                e.document = nlohmann::json::parse(e.document_text, nullptr, false);
                if (e.document.is_discarded())
                    e.document = nullptr;
            }
            out.push_back(std::move(e));
        }
    }
    return out;
}

StoreResult<std::vector<CountBucket>> EvidenceArchive::count_archived(std::int64_t from_ns, std::int64_t to_ns,
                                                                       std::int64_t bucket_ns,
                                                                       const EventQuery& filter) {
    EventQuery ranged = filter;
    ranged.from_ns = from_ns;
    ranged.to_ns = to_ns;
    ranged.type = filter.type.value_or("drop");  // as the database counts
    std::map<std::int64_t, std::uint64_t> buckets;  // bucket index -> sum of counts
    for (const auto& s : segments()) {
        auto events = scan_segment(s, ranged, 0);
        if (!events)
            return std::unexpected(events.error());
        for (const auto& e : *events)
            buckets[(e.time_ns - from_ns) / bucket_ns] += e.count;
    }
    std::vector<CountBucket> out;
    out.reserve(buckets.size());
    for (const auto& [index, count] : buckets)
        out.push_back(CountBucket{from_ns + index * bucket_ns, count});
    return out;
}

void verify_archive(const std::vector<ArchiveSegmentInfo>& segments, EvidenceRepository& evidence,
                    AuditRepository& audit, const evidence::PublicKey& key, EvidenceVerification& verification) {
    // Where the archive legitimately starts: after the segments whose expiry is audited.
    evidence::ChainHead expected{};
    AuditQuery expiries;
    expiries.action = std::string(kExpireAction);
    expiries.limit = 100'000;
    auto audited = audit.query_audit(expiries);
    if (!audited) {
        verification.problems.push_back("cannot read the audit log's archive expiries: " + audited.error().message);
        return;
    }
    std::vector<std::pair<std::uint64_t, evidence::ChainHead>> expired;  // first sequence, head after
    for (const auto& entry : *audited) {
        const auto& b = entry.before;
        auto last_hash = evidence::digest_from_hex(b.value("last_hash", ""));
        if (!b.contains("first_sequence") || !b.contains("last_sequence") || !last_hash)
            continue;
        expired.push_back({b["first_sequence"].get<std::uint64_t>(),
                           evidence::ChainHead{b["last_sequence"].get<std::uint64_t>(), *last_hash}});
    }
    std::sort(expired.begin(), expired.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& [first, head] : expired) {
        if (first == expected.sequence + 1)
            expected = head;
    }

    std::optional<evidence::ChainBreak> broken;
    std::uint64_t verified = 0;
    const auto fail = [&](std::uint64_t sequence, evidence::BreakKind kind, std::string detail) {
        if (!broken)
            broken = evidence::ChainBreak{evidence::Stream::Drops, sequence, kind, std::move(detail)};
    };
    const evidence::ChainHead archive_start = expected;
    for (const auto& s : segments) {
        const auto& h = s.header;
        const std::string name = "segment " + s.file.filename().string();
        if (h.first_sequence > expected.sequence + 1) {
            fail(expected.sequence + 1, evidence::BreakKind::Missing,
                 "records " + std::to_string(expected.sequence + 1) + " to " + std::to_string(h.first_sequence - 1) +
                     " are in no segment and their expiry is not in the audit log (" + name + " starts after them)");
            break;
        }
        if (h.first_sequence < expected.sequence + 1) {
            fail(h.first_sequence, evidence::BreakKind::OutOfOrder, name + " repeats records up to " +
                                                                       std::to_string(expected.sequence));
            break;
        }
        if (h.previous_hash != expected.hash) {
            fail(h.first_sequence, evidence::BreakKind::BrokenLink,
                 name + " does not continue the chain of the records before it");
            break;
        }
        auto reader = archive::ArchiveSegmentReader::open(s.file);
        if (!reader) {
            verification.problems.push_back(reader.error().message);
            fail(h.first_sequence, evidence::BreakKind::Altered, reader.error().message);
            break;
        }
        auto result = reader->verify(key);
        if (!result) {
            verification.problems.push_back(result.error().message);
            fail(h.first_sequence, evidence::BreakKind::Altered, result.error().message);
            break;
        }
        verified += result->records_verified;
        if (result->broken) {
            fail(result->broken->sequence, result->broken->kind, name + ": " + result->broken->detail);
            break;
        }
        expected = result->head;
    }
    // The database's part must continue where the archive ends.
    if (!broken) {
        auto start = evidence.evidence_chain_start(evidence::Stream::Drops);
        if (!start) {
            verification.problems.push_back("cannot read the drops chain's start: " + start.error().message);
        } else if (*start != expected) {
            const bool before_chains = segments.empty() && expired.empty() && start->hash == evidence::Digest{};
            if (!before_chains) {
                if (start->sequence > expected.sequence)
                    fail(expected.sequence + 1, evidence::BreakKind::Missing,
                         "records " + std::to_string(expected.sequence + 1) + " to " + std::to_string(start->sequence) +
                             " are neither in the database nor in a segment, and no expiry of them is audited");
                else
                    fail(start->sequence + 1, evidence::BreakKind::BrokenLink,
                         "the database's events do not continue the archive's last segment");
            }
        }
    }
    for (auto& stream : verification.streams) {
        if (stream.stream == evidence::Stream::Drops) {
            stream.verified += verified;
            if (!segments.empty())
                stream.start = archive_start;
        }
    }
    if (broken) {
        // The archive lies before the database: its break is the first.
        if (!verification.first_break || verification.first_break->stream != evidence::Stream::Drops ||
            verification.first_break->sequence >= broken->sequence)
            verification.first_break = broken;
    }
}

}  // namespace bulkhead::controller
