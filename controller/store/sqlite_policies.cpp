// SqliteStore: policy revisions (PolicyRepository). At most one revision is active;
// activating another supersedes it in the same transaction.
#include "controller/store/sqlite_connection.hpp"

namespace bulkhead::controller {

using namespace sqlite_detail;

namespace {

StoreResult<PolicyRevision> read_revision(Stmt& s) {
    PolicyRevision r;
    r.id = s.i64(0);
    const auto state = revision_state_from_string(s.text(1));
    if (!state)
        return s.corrupt("policy_revisions.state");
    r.state = *state;
    r.name = s.text(2);
    r.author = s.text(3);
    r.comment = s.text(4);
    r.created_at = s.i64(5);
    r.activated_at = s.opt_i64(6);
    auto document = s.document(7, "policy_revisions.document");
    if (!document)
        return std::unexpected(document.error());
    r.document = std::move(*document);
    return r;
}

} // namespace

// ---- policy revisions ----------------------------------------------------------------------

StoreResult<PolicyRevision> SqliteStore::add_revision(PolicyRevision revision) {
    constexpr std::string_view op = "add_revision";
    if (revision.state != RevisionState::Draft) {
        return fail(Kind::Invalid, op,
                    "new revisions are drafts; activate them with activate_revision");
    }
    return impl_->write(op, [&](Connection& c) -> StoreResult<PolicyRevision> {
        const std::string document = dump(revision.document);
        Stmt s(c, sql::kAddRevision, op);
        s.bind_all(revision.name, revision.author, revision.comment, revision.created_at, document);
        return required(s.one(read_revision), op, "inserted revision");
    });
}

StoreResult<PolicyRevision> SqliteStore::get_revision(std::int64_t id) {
    constexpr std::string_view op = "get_revision";
    return impl_->read(op, [&](Connection& c) -> StoreResult<PolicyRevision> {
        Stmt s(c, sql::kGetRevision, op);
        s.bind_all(id);
        return required(s.one(read_revision), op, "revision " + std::to_string(id));
    });
}

StoreResult<std::vector<PolicyRevision>> SqliteStore::list_revisions(std::size_t limit) {
    constexpr std::string_view op = "list_revisions";
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, sql::kListRevisions, op);
        s.bind_all(limit_of(limit));
        return s.all(read_revision);
    });
}

StoreResult<std::optional<PolicyRevision>> SqliteStore::active_revision() {
    constexpr std::string_view op = "active_revision";
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, sql::kActiveRevision, op);
        return s.one(read_revision);
    });
}

StoreResult<PolicyRevision> SqliteStore::activate_revision(std::int64_t id, TimeMs at) {
    constexpr std::string_view op = "activate_revision";
    return impl_->write(op, [&](Connection& c) -> StoreResult<PolicyRevision> {
        PolicyRevision current;
        {
            Stmt get(c, sql::kGetRevision, op);
            get.bind_all(id);
            auto found = required(get.one(read_revision), op, "revision " + std::to_string(id));
            if (!found)
                return found;
            current = std::move(*found);
        }
        if (current.state == RevisionState::Active)
            return current; // already in force
        {
            Stmt supersede(c, sql::kSupersedeActive, op);
            if (auto done = supersede.run(); !done)
                return std::unexpected(done.error());
        }
        Stmt activate(c, sql::kActivateRevision, op);
        activate.bind_all(id, at);
        return required(activate.one(read_revision), op, "revision " + std::to_string(id));
    });
}

} // namespace bulkhead::controller
