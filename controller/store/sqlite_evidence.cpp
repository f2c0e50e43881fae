// SqliteStore: the hash chains of tamper evidence (EvidenceRepository) and the helpers the
// other repositories call to link what they store. The chain format is controller/evidence's;
// this file only decides where the links live (see kEvidence in sqlite_schema.cpp).
#include "controller/evidence/evidence_records.hpp"
#include "controller/store/sqlite_connection.hpp"

#include <cstring>

namespace bulkhead::controller {

using namespace sqlite_detail;

namespace sqlite_detail {

std::optional<evidence::Digest> digest_column(const Stmt& s, int column) {
    if (s.null(column))
        return std::nullopt;
    const std::string bytes = s.blob(column);
    evidence::Digest digest{};
    if (bytes.size() != digest.size())
        return std::nullopt;
    std::memcpy(digest.data(), bytes.data(), digest.size());
    return digest;
}

namespace {

StoreResult<evidence::ChainHead> chain_start(Connection& c, evidence::Stream stream, std::string_view op) {
    Stmt s(c, sql::kChainStart, op);
    const std::string name(evidence::to_string(stream));
    s.bind_all(name);
    auto row = s.one([&](Stmt& r) -> StoreResult<evidence::ChainHead> {
        auto hash = digest_column(r, 1);
        if (!hash)
            return r.corrupt("evidence_chain_start.hash");
        return evidence::ChainHead{static_cast<std::uint64_t>(r.i64(0)), *hash};
    });
    if (!row)
        return std::unexpected(row.error());
    if (!*row)
        return fail(Kind::Io, op, "evidence_chain_start has no row for " + name);
    return **row;
}

struct LastLink {
    std::uint64_t sequence = 0;
    std::optional<evidence::Digest> hash;
};

StoreResult<std::optional<LastLink>> last_link(Connection& c, evidence::Stream stream, std::string_view op) {
    const auto read = [](Stmt& r) -> StoreResult<LastLink> {
        return LastLink{static_cast<std::uint64_t>(r.i64(0)), digest_column(r, 1)};
    };
    switch (stream) {
    case evidence::Stream::Drops: {
        Stmt s(c, sql::kLastChainedEvent, op);
        return s.one(read);
    }
    case evidence::Stream::Audit: {
        Stmt s(c, sql::kLastChainedAudit, op);
        return s.one(read);
    }
    case evidence::Stream::Incidents:
    case evidence::Stream::Quarantines: {
        Stmt s(c, sql::kLastEvidenceChange, op);
        const std::string name(evidence::to_string(stream));
        s.bind_all(name);
        return s.one(read);
    }
    }
    return std::optional<LastLink>{};
}

} // namespace

StoreResult<evidence::ChainHead> chain_head(Connection& c, evidence::Stream stream, std::string_view op) {
    auto start = chain_start(c, stream, op);
    if (!start)
        return std::unexpected(start.error());
    auto last = last_link(c, stream, op);
    if (!last)
        return std::unexpected(last.error());
    if (!*last || (*last)->sequence <= start->sequence)
        return *start;
    // A last row without a hash (written around the store, e.g. by hand) restarts the chain
    // after it; verification reports the row itself.
    return evidence::ChainHead{(*last)->sequence, (*last)->hash.value_or(evidence::Digest{})};
}

StoreResult<void> append_evidence_change(Connection& c, evidence::Stream stream, std::int64_t subject_id,
                                         TimeMs at, const std::string& record, std::string_view op) {
    auto head = chain_head(c, stream, op);
    if (!head)
        return std::unexpected(head.error());
    evidence::ChainAppender chain(stream, *head);
    const evidence::ChainLink link = chain.append(record);
    Stmt s(c, sql::kAppendEvidenceChange, op);
    const std::string name(evidence::to_string(stream));
    s.bind_all(name, static_cast<std::int64_t>(link.sequence), subject_id, at);
    s.bind_blob(5, record);
    s.bind_blob(6, digest_bytes(link.hash));
    return s.run();
}

} // namespace sqlite_detail

// ---- EvidenceRepository ------------------------------------------------------------------------

StoreResult<evidence::ChainHead> SqliteStore::evidence_head(evidence::Stream stream) {
    constexpr std::string_view op = "evidence_head";
    return impl_->read(op, [&](Connection& c) { return chain_head(c, stream, op); });
}

StoreResult<evidence::ChainHead> SqliteStore::evidence_chain_start(evidence::Stream stream) {
    constexpr std::string_view op = "evidence_chain_start";
    return impl_->read(op, [&](Connection& c) { return sqlite_detail::chain_start(c, stream, op); });
}

StoreResult<void> SqliteStore::set_evidence_chain_start(evidence::Stream stream, const evidence::ChainHead& start) {
    constexpr std::string_view op = "set_evidence_chain_start";
    if (!to_i64(start.sequence))
        return fail(Kind::Invalid, op, "sequence exceeds 2^63-1");
    return impl_->write(op, [&](Connection& c) -> StoreResult<void> {
        Stmt s(c, sql::kSetChainStart, op);
        const std::string name(evidence::to_string(stream));
        s.bind_all(name, static_cast<std::int64_t>(start.sequence));
        s.bind_blob(3, digest_bytes(start.hash));
        return s.run();
    });
}

StoreResult<std::vector<EvidenceChainRecord>> SqliteStore::evidence_records(evidence::Stream stream,
                                                                            std::uint64_t after,
                                                                            std::size_t limit) {
    constexpr std::string_view op = "evidence_records";
    const auto from = to_i64(after);
    if (!from)
        return fail(Kind::Invalid, op, "sequence exceeds 2^63-1");
    const std::int64_t count = limit_of(limit);
    return impl_->read(op, [&](Connection& c) -> StoreResult<std::vector<EvidenceChainRecord>> {
        switch (stream) {
        case evidence::Stream::Drops: {
            Stmt s(c, sql::kChainedEvents, op);
            s.bind_all(*from, count);
            return s.all([](Stmt& r) -> StoreResult<EvidenceChainRecord> {
                // Straight from the columns (verification reads millions of rows), the document
                // exactly as stored: the chain hashes its bytes, not a re-dump.
                evidence::EventRecordFields f;
                f.enforcer = r.text_view(1);
                f.enforcer_seq = r.i64(2);
                f.type = r.text_view(3);
                f.time_ns = r.i64(4);
                f.received_at = r.i64(5);
                f.workload = r.text_view(6);
                f.direction = r.text_view(7);
                f.reason = r.text_view(8);
                f.src = r.text_view(9);
                f.dst = r.text_view(10);
                f.protocol = r.text_view(11);
                f.dport = r.opt_i64(12);
                f.count = r.i64(13);
                f.document_text = r.text_view(14);
                f.clock_offset_ms = r.opt_i64(15);
                EvidenceChainRecord record;
                record.sequence = static_cast<std::uint64_t>(r.i64(0));
                record.record.reserve(f.document_text.size() + 192);
                evidence::append_event_record(record.record, f);
                record.hash = digest_column(r, 16);
                return record;
            });
        }
        case evidence::Stream::Audit: {
            Stmt s(c, sql::kChainedAudit, op);
            s.bind_all(*from, count);
            return s.all([](Stmt& r) -> StoreResult<EvidenceChainRecord> {
                auto entry = read_audit(r);
                if (!entry)
                    return std::unexpected(entry.error());
                return EvidenceChainRecord{static_cast<std::uint64_t>(r.i64(8)), evidence::audit_record(*entry),
                                           digest_column(r, 9)};
            });
        }
        case evidence::Stream::Incidents:
        case evidence::Stream::Quarantines: {
            Stmt s(c, sql::kEvidenceChanges, op);
            const std::string name(evidence::to_string(stream));
            s.bind_all(name, *from, count);
            return s.all([](Stmt& r) -> StoreResult<EvidenceChainRecord> {
                return EvidenceChainRecord{static_cast<std::uint64_t>(r.i64(0)), r.blob(1), digest_column(r, 2)};
            });
        }
        }
        return std::vector<EvidenceChainRecord>{};
    });
}

StoreResult<std::vector<ChainedEvent>> SqliteStore::chained_events(std::uint64_t after, std::size_t limit) {
    constexpr std::string_view op = "chained_events";
    const auto from = to_i64(after);
    if (!from)
        return fail(Kind::Invalid, op, "sequence exceeds 2^63-1");
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, sql::kChainedEvents, op);
        s.bind_all(*from, limit_of(limit));
        return s.all([](Stmt& r) -> StoreResult<ChainedEvent> {
            auto event = read_event_columns(r);
            if (!event)
                return std::unexpected(event.error());
            event->document_text = r.text(14);
            return ChainedEvent{std::move(*event), digest_column(r, 16)};
        });
    });
}

StoreResult<std::size_t> SqliteStore::archive_events_through(const evidence::ChainHead& head) {
    constexpr std::string_view op = "archive_events_through";
    const auto through = to_i64(head.sequence);
    if (!through)
        return fail(Kind::Invalid, op, "sequence exceeds 2^63-1");
    return impl_->write(op, [&](Connection& c) -> StoreResult<std::size_t> {
        Stmt link(c, sql::kEventLink, op);
        link.bind_all(*through);
        auto stored = link.one([](Stmt& r) -> StoreResult<std::optional<evidence::Digest>> { return digest_column(r, 0); });
        if (!stored)
            return std::unexpected(stored.error());
        if (!*stored || !**stored || ***stored != head.hash)
            return fail(Kind::Conflict, op,
                        "event " + std::to_string(head.sequence) + " is not stored with the link the segment ends with");
        Stmt start(c, sql::kSetChainStart, op);
        const std::string name(evidence::to_string(evidence::Stream::Drops));
        start.bind_all(name, *through);
        start.bind_blob(3, digest_bytes(head.hash));
        if (auto done = start.run(); !done)
            return std::unexpected(done.error());
        Stmt remove(c, sql::kDeleteEventsThrough, op);
        remove.bind_all(*through);
        if (auto done = remove.run(); !done)
            return std::unexpected(done.error());
        return static_cast<std::size_t>(c.changes());
    });
}

StoreResult<void> SqliteStore::add_evidence_checkpoint(TimeMs at, const std::string& line) {
    constexpr std::string_view op = "add_evidence_checkpoint";
    return impl_->write(op, [&](Connection& c) -> StoreResult<void> {
        Stmt s(c, sql::kAddEvidenceCheckpoint, op);
        s.bind_all(at, line);
        return s.run();
    });
}

StoreResult<std::vector<std::string>> SqliteStore::evidence_checkpoints(TimeMs from, std::size_t limit) {
    constexpr std::string_view op = "evidence_checkpoints";
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, sql::kEvidenceCheckpoints, op);
        s.bind_all(from, limit_of(limit));
        return s.all([](Stmt& r) -> StoreResult<std::string> { return r.text(0); });
    });
}

} // namespace bulkhead::controller
