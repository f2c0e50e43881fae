// SqliteStore: the webhook outbox (OutboxRepository) and the analysis checkpoint
// (AnalysisStateRepository).
#include "controller/store/sqlite_connection.hpp"

namespace bulkhead::controller {

using namespace sqlite_detail;

namespace {

std::string_view outbox_state_text(OutboxState state) {
    switch (state) {
    case OutboxState::Pending:
        return "pending";
    case OutboxState::Delivered:
        return "delivered";
    case OutboxState::Failed:
        return "failed";
    }
    return "pending";
}

StoreResult<OutboxMessage> read_outbox(Stmt& s) {
    OutboxMessage m;
    m.id = s.i64(0);
    m.delivery_id = s.text(1);
    m.destination = s.text(2);
    m.type = s.text(3);
    m.body = s.text(4);
    m.created_at = s.i64(5);
    m.attempts = static_cast<int>(s.i64(6));
    m.next_attempt_at = s.i64(7);
    const std::string state = s.text(8);
    if (state == "pending")
        m.state = OutboxState::Pending;
    else if (state == "delivered")
        m.state = OutboxState::Delivered;
    else if (state == "failed")
        m.state = OutboxState::Failed;
    else
        return s.corrupt("outbox.state");
    m.last_error = s.text(9);
    m.finished_at = s.opt_i64(10);
    return m;
}

} // namespace

// ---- outbox --------------------------------------------------------------------------------

StoreResult<OutboxMessage> SqliteStore::enqueue_outbox(OutboxMessage m) {
    constexpr std::string_view op = "enqueue_outbox";
    return impl_->write(op, [&](Connection& c) -> StoreResult<OutboxMessage> {
        Stmt s(c, sql::kEnqueueOutbox, op);
        s.bind_all(m.delivery_id, m.destination, m.type, m.body, m.created_at, m.next_attempt_at);
        return required(s.one(read_outbox), op, "inserted outbox message");
    });
}

StoreResult<std::vector<OutboxMessage>> SqliteStore::pending_outbox(std::size_t limit) {
    constexpr std::string_view op = "pending_outbox";
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, sql::kPendingOutbox, op);
        s.bind_all(limit_of(limit));
        return s.all(read_outbox);
    });
}

StoreResult<void> SqliteStore::update_outbox(const OutboxMessage& m) {
    constexpr std::string_view op = "update_outbox";
    return impl_->write(op, [&](Connection& c) -> StoreResult<void> {
        Stmt s(c, sql::kUpdateOutbox, op);
        s.bind_all(m.id, std::int64_t{m.attempts}, m.next_attempt_at, outbox_state_text(m.state),
                   m.last_error, m.finished_at);
        if (auto done = s.run(); !done)
            return done;
        if (c.changes() == 0)
            return fail(Kind::NotFound, op,
                        "outbox message " + std::to_string(m.id) + " not found");
        return {};
    });
}

StoreResult<OutboxStats> SqliteStore::outbox_stats() {
    constexpr std::string_view op = "outbox_stats";
    return impl_->read(op, [&](Connection& c) -> StoreResult<OutboxStats> {
        Stmt s(c, sql::kOutboxStats, op);
        return required(s.one([](Stmt& st) -> StoreResult<OutboxStats> {
            OutboxStats stats;
            stats.pending = static_cast<std::uint64_t>(st.i64(0));
            stats.oldest_pending_at = st.opt_i64(1);
            stats.delivered = static_cast<std::uint64_t>(st.i64(2));
            stats.failed = static_cast<std::uint64_t>(st.i64(3));
            return stats;
        }),
                        op, "outbox statistics");
    });
}

// ---- analysis checkpoint -------------------------------------------------------------------

StoreResult<std::optional<AnalysisCheckpoint>> SqliteStore::load_analysis_checkpoint() {
    constexpr std::string_view op = "load_analysis_checkpoint";
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, sql::kLoadAnalysisCheckpoint, op);
        return s.one([](Stmt& st) -> StoreResult<AnalysisCheckpoint> {
            AnalysisCheckpoint cp;
            cp.through_event_id = st.i64(0);
            cp.taken_at = st.i64(1);
            cp.engine = st.blob(2);
            cp.planner = st.blob(3);
            cp.ledger = st.text(4);
            return cp;
        });
    });
}

StoreResult<void> SqliteStore::save_analysis_checkpoint(const AnalysisCheckpoint& cp) {
    constexpr std::string_view op = "save_analysis_checkpoint";
    return impl_->write(op, [&](Connection& c) -> StoreResult<void> {
        Stmt s(c, sql::kSaveAnalysisCheckpoint, op);
        s.bind(1, cp.through_event_id);
        s.bind(2, cp.taken_at);
        s.bind_blob(3, cp.engine);
        s.bind_blob(4, cp.planner);
        s.bind(5, cp.ledger);
        return s.run();
    });
}

} // namespace bulkhead::controller
