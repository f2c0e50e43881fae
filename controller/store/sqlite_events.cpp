// SqliteStore: events (EventRepository). insert_events goes through group commit and
// writes the coarse event_terms index; queries and counts use the builders in store_sql.
#include "controller/evidence/evidence_records.hpp"
#include "controller/store/sqlite_connection.hpp"

#include <algorithm>
#include <functional>
#include <string>

namespace bulkhead::controller {

using namespace sqlite_detail;

// ---- events --------------------------------------------------------------------------------

StoreResult<EventInsertResult> SqliteStore::insert_events(const std::vector<StoredEvent>& events) {
    constexpr std::string_view op = "insert_events";
    EventInsertResult result;
    for (std::size_t i = 0; i < events.size(); ++i) {
        if (!to_i64(events[i].enforcer_seq) || !to_i64(events[i].count)) {
            return fail(Kind::Invalid, op,
                        "event " + std::to_string(i) + ": enforcer_seq or count exceeds 2^63-1");
        }
        result.through_seq = std::max(result.through_seq, events[i].enforcer_seq);
    }
    if (events.empty())
        return result;
    const std::function<StoreResult<void>(Connection&)> insert =
        [&](Connection& c) -> StoreResult<void> {
        // A retried body (none today) must not count twice.
        result.accepted = result.duplicates = 0;
        result.ids.clear();
        result.ids.reserve(events.size());
        // Each event is the next link of the drops chain, its id the link's sequence number:
        // ids are given here rather than by SQLite, so that the hash can be written with the row.
        auto head = chain_head(c, evidence::Stream::Drops, op);
        if (!head)
            return std::unexpected(head.error());
        evidence::Sha256 hasher;
        std::string record;
        Stmt s(c, sql::kInsertEvent, op);
        Stmt term(c, sql::kInsertEventTerm, op);
        std::string document;
        std::string key;
        for (const auto& e : events) {
            if (e.document_text.empty())
                document = dump(e.document);
            const std::string& text = e.document_text.empty() ? document : e.document_text;
            const std::optional<std::int64_t> dport =
                e.dport ? std::optional<std::int64_t>(*e.dport) : std::nullopt;
            const std::uint64_t sequence = head->sequence + 1;
            record.clear();
            evidence::append_event_record(record, e, text);
            const evidence::Digest hash =
                evidence::link_hash(hasher, evidence::Stream::Drops, sequence, head->hash, record);
            s.bind_all(e.enforcer, static_cast<std::int64_t>(e.enforcer_seq), e.type, e.time_ns,
                       e.received_at, e.workload, e.direction, e.reason, e.src, e.dst, e.protocol,
                       dport, static_cast<std::int64_t>(e.count), text,
                       static_cast<std::int64_t>(sequence));
            s.bind_blob(16, digest_bytes(hash));
            s.bind(17, e.clock_offset_ms);
            if (auto done = s.run(); !done)
                return std::unexpected(done.error());
            if (c.changes() > 0) {
                ++result.accepted;
                *head = evidence::ChainHead{sequence, hash};
                result.ids.push_back(static_cast<std::int64_t>(sequence));
                const std::int64_t minute = sql::term_bucket(e.time_ns);
                for (const auto& t : sql::event_terms(e)) {
                    key = t;
                    key += '\n';
                    key += std::to_string(minute);
                    if (impl_->term_known(key))
                        continue;
                    term.bind_all(t, minute);
                    if (auto done = term.run(); !done)
                        return std::unexpected(done.error());
                    term.reset();
                }
            } else {
                ++result.duplicates; // ON CONFLICT (enforcer, enforcer_seq) DO NOTHING
                result.ids.push_back(0);
            }
            s.reset();
        }
        return {};
    };
    if (auto done = impl_->grouped(op, events.size(), insert); !done)
        return std::unexpected(done.error());
    return result;
}

StoreResult<std::vector<StoredEvent>> SqliteStore::query_events(const EventQuery& query) {
    constexpr std::string_view op = "query_events";
    const auto q = sql::select_events(query);
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, q.text, op);
        s.bind_params(q.params);
        return s.all(query.parse_documents ? read_event : read_event_text);
    });
}

StoreResult<std::vector<CountBucket>> SqliteStore::count_events(std::int64_t from_ns,
                                                                std::int64_t to_ns,
                                                                std::int64_t bucket_ns,
                                                                const EventQuery& filter) {
    constexpr std::string_view op = "count_events";
    if (bucket_ns <= 0)
        return fail(Kind::Invalid, op, "bucket width must be positive");
    if (to_ns < from_ns)
        return fail(Kind::Invalid, op, "time range ends before it starts");
    const auto q = sql::count_events(from_ns, to_ns, bucket_ns, filter);
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, q.text, op);
        s.bind_params(q.params);
        return s.all([&](Stmt& row) -> StoreResult<CountBucket> {
            return CountBucket{from_ns + row.i64(0) * bucket_ns,
                               static_cast<std::uint64_t>(row.i64(1))};
        });
    });
}

StoreResult<std::uint64_t> SqliteStore::last_event_seq(const std::string& enforcer) {
    constexpr std::string_view op = "last_event_seq";
    return impl_->read(op, [&](Connection& c) -> StoreResult<std::uint64_t> {
        Stmt s(c, sql::kLastEventSeq, op);
        s.bind_all(enforcer);
        auto row =
            s.one([](Stmt& st) -> StoreResult<std::int64_t> { return st.null(0) ? 0 : st.i64(0); });
        if (!row)
            return std::unexpected(row.error());
        return static_cast<std::uint64_t>(row->value_or(0));
    });
}

StoreResult<std::int64_t> SqliteStore::last_event_id() {
    constexpr std::string_view op = "last_event_id";
    return impl_->read(op, [&](Connection& c) -> StoreResult<std::int64_t> {
        Stmt s(c, sql::kLastEventId, op);
        auto row =
            s.one([](Stmt& st) -> StoreResult<std::int64_t> { return st.null(0) ? 0 : st.i64(0); });
        if (!row)
            return std::unexpected(row.error());
        return row->value_or(0);
    });
}

} // namespace bulkhead::controller
