// SqliteStore: quarantines (QuarantineRepository; at most one active per workload) and the
// append-only audit log (AuditRepository).
#include "controller/evidence/evidence_records.hpp"
#include "controller/store/sqlite_connection.hpp"

namespace bulkhead::controller {

using namespace sqlite_detail;

namespace {

StoreResult<Quarantine> read_quarantine(Stmt& s) {
    Quarantine q;
    q.id = s.i64(0);
    q.workload = s.text(1);
    q.reason = s.text(2);
    q.actor = s.text(3);
    q.automatic = s.i64(4) != 0;
    q.incident_id = s.opt_i64(5);
    q.created_at = s.i64(6);
    q.released_at = s.opt_i64(7);
    q.released_by = s.text(8);
    return q;
}

// JSON null is stored as SQL NULL (audit before/after).
std::optional<std::string> dump_or_null(const json& value) {
    if (value.is_null())
        return std::nullopt;
    return dump(value);
}

} // namespace

namespace sqlite_detail {
StoreResult<AuditEntry> read_audit(Stmt& s) {
    AuditEntry a;
    a.id = s.i64(0);
    a.at = s.i64(1);
    a.actor = s.text(2);
    a.role = s.text(3);
    a.action = s.text(4);
    a.target = s.text(5);
    auto before = s.document(6, "audit_log.before_doc");
    if (!before)
        return std::unexpected(before.error());
    a.before = std::move(*before);
    auto after = s.document(7, "audit_log.after_doc");
    if (!after)
        return std::unexpected(after.error());
    a.after = std::move(*after);
    return a;
}
} // namespace sqlite_detail

// ---- quarantine ----------------------------------------------------------------------------

StoreResult<Quarantine> SqliteStore::add_quarantine(Quarantine quarantine) {
    constexpr std::string_view op = "add_quarantine";
    if (quarantine.workload.empty())
        return fail(Kind::Invalid, op, "workload is empty");
    return impl_->write(op, [&](Connection& c) -> StoreResult<Quarantine> {
        if (quarantine.incident_id) {
            if (auto found = require_incident(c, *quarantine.incident_id, op); !found) {
                return std::unexpected(found.error());
            }
        }
        Stmt s(c, sql::kAddQuarantine, op);
        s.bind_all(quarantine.workload, quarantine.reason, quarantine.actor,
                   std::int64_t{quarantine.automatic ? 1 : 0}, quarantine.incident_id,
                   quarantine.created_at);
        auto row = required(s.one(read_quarantine), op, "inserted quarantine");
        if (!row && row.error().kind == Kind::Conflict) {
            return fail(Kind::Conflict, op,
                        "workload \"" + quarantine.workload + "\" is already quarantined");
        }
        if (!row)
            return row;
        if (auto linked = append_evidence_change(c, evidence::Stream::Quarantines, row->id, row->created_at,
                                                 evidence::quarantine_record(*row), op);
            !linked)
            return std::unexpected(linked.error());
        return row;
    });
}

StoreResult<Quarantine> SqliteStore::release_quarantine(const std::string& workload, TimeMs at,
                                                        const std::string& released_by) {
    constexpr std::string_view op = "release_quarantine";
    return impl_->write(op, [&](Connection& c) -> StoreResult<Quarantine> {
        Stmt s(c, sql::kReleaseQuarantine, op);
        s.bind_all(workload, at, released_by);
        auto row = required(s.one(read_quarantine), op, "active quarantine of \"" + workload + "\"");
        if (!row)
            return row;
        if (auto linked = append_evidence_change(c, evidence::Stream::Quarantines, row->id, at,
                                                 evidence::quarantine_record(*row), op);
            !linked)
            return std::unexpected(linked.error());
        return row;
    });
}

StoreResult<std::vector<Quarantine>> SqliteStore::active_quarantines() {
    constexpr std::string_view op = "active_quarantines";
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, sql::kActiveQuarantines, op);
        return s.all(read_quarantine);
    });
}

StoreResult<std::optional<Quarantine>> SqliteStore::active_quarantine(const std::string& workload) {
    constexpr std::string_view op = "active_quarantine";
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, sql::kActiveQuarantine, op);
        s.bind_all(workload);
        return s.one(read_quarantine);
    });
}

StoreResult<std::vector<Quarantine>> SqliteStore::quarantine_history(const std::string& workload,
                                                                     std::size_t limit) {
    constexpr std::string_view op = "quarantine_history";
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, sql::kQuarantineHistory, op);
        s.bind_all(workload, limit_of(limit));
        return s.all(read_quarantine);
    });
}

// ---- audit ---------------------------------------------------------------------------------

StoreResult<AuditEntry> SqliteStore::append_audit(AuditEntry entry) {
    constexpr std::string_view op = "append_audit";
    return impl_->write(op, [&](Connection& c) -> StoreResult<AuditEntry> {
        const auto before = dump_or_null(entry.before);
        const auto after = dump_or_null(entry.after);
        Stmt s(c, sql::kAppendAudit, op);
        s.bind_all(entry.at, entry.actor, entry.role, entry.action, entry.target);
        if (before) {
            s.bind(6, *before);
        } else {
            s.bind(6, std::nullopt);
        }
        if (after) {
            s.bind(7, *after);
        } else {
            s.bind(7, std::nullopt);
        }
        auto row = required(s.one(read_audit), op, "inserted audit entry");
        if (!row)
            return row;
        auto head = chain_head(c, evidence::Stream::Audit, op);
        if (!head)
            return std::unexpected(head.error());
        evidence::ChainAppender chain(evidence::Stream::Audit, *head);
        const evidence::ChainLink link = chain.append(evidence::audit_record(*row));
        Stmt linked(c, sql::kSetAuditChain, op);
        linked.bind_all(row->id, static_cast<std::int64_t>(link.sequence));
        linked.bind_blob(3, digest_bytes(link.hash));
        if (auto done = linked.run(); !done)
            return std::unexpected(done.error());
        return row;
    });
}

StoreResult<std::vector<AuditEntry>> SqliteStore::query_audit(const AuditQuery& query) {
    constexpr std::string_view op = "query_audit";
    const auto q = sql::select_audit(query);
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, q.text, op);
        s.bind_params(q.params);
        return s.all(read_audit);
    });
}

} // namespace bulkhead::controller
