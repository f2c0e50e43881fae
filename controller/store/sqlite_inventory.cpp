// SqliteStore: the inventory (InventoryRepository: enforcer definitions and workloads, with
// the address index and the inventory version bumped in the same transaction) and VPN
// sessions (VpnSessionRepository).
#include "controller/store/sqlite_connection.hpp"

namespace bulkhead::controller {

using namespace sqlite_detail;

namespace {

StoreResult<EnforcerDefinition> read_enforcer_definition(Stmt& s) {
    EnforcerDefinition d;
    d.id = s.text(0);
    auto document = s.document(1, "enforcer_definitions.document");
    if (!document)
        return std::unexpected(document.error());
    d.document = std::move(*document);
    return d;
}

StoreResult<WorkloadRecord> read_workload(Stmt& s) {
    WorkloadRecord w;
    w.id = s.text(0);
    w.enforcer = s.text(1);
    auto document = s.document(2, "workloads.document");
    if (!document)
        return std::unexpected(document.error());
    w.document = std::move(*document);
    w.updated_at = s.i64(3);
    return w;
}

StoreResult<VpnSession> read_vpn_session(Stmt& s) {
    VpnSession v;
    v.id = s.i64(0);
    v.user = s.text(1);
    v.pool_address = s.text(2);
    v.real_address = s.text(3);
    v.start = s.i64(4);
    v.end = s.opt_i64(5);
    return v;
}

StoreResult<void> bump_inventory(Connection& c, std::string_view op) {
    Stmt s(c, sql::kBumpInventoryVersion, op);
    return s.run();
}

// The addresses and user a workload document declares (docs/policy-format.md).
struct WorkloadIndex {
    std::string user;
    std::vector<std::string> addresses;
};

StoreResult<WorkloadIndex> index_workload(const WorkloadRecord& w, std::string_view op) {
    const std::string who = "workload \"" + w.id + "\"";
    if (w.id.empty())
        return fail(Kind::Invalid, op, "workload id is empty");
    if (!w.document.is_object())
        return fail(Kind::Invalid, op, who + ": document is not an object");
    WorkloadIndex index;
    if (const auto id = w.document.find("id");
        id != w.document.end() && (!id->is_string() || *id != w.id)) {
        return fail(Kind::Invalid, op, who + ": document id differs");
    }
    if (const auto user = w.document.find("user"); user != w.document.end()) {
        if (!user->is_string())
            return fail(Kind::Invalid, op, who + ": \"user\" is not a string");
        index.user = user->get<std::string>();
    }
    if (const auto addresses = w.document.find("addresses"); addresses != w.document.end()) {
        if (!addresses->is_array())
            return fail(Kind::Invalid, op, who + ": \"addresses\" is not an array");
        for (const auto& address : *addresses) {
            if (!address.is_string())
                return fail(Kind::Invalid, op, who + ": an address is not a string");
            index.addresses.push_back(address.get<std::string>());
        }
    }
    return index;
}

} // namespace

// ---- enforcer definitions and workloads ----------------------------------------------------

StoreResult<std::vector<EnforcerDefinition>> SqliteStore::list_enforcer_definitions() {
    constexpr std::string_view op = "list_enforcer_definitions";
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, sql::kListEnforcerDefinitions, op);
        return s.all(read_enforcer_definition);
    });
}

StoreResult<void>
SqliteStore::upsert_enforcer_definitions(const std::vector<EnforcerDefinition>& definitions) {
    constexpr std::string_view op = "upsert_enforcer_definitions";
    for (const auto& d : definitions) {
        if (d.id.empty())
            return fail(Kind::Invalid, op, "enforcer id is empty");
    }
    if (definitions.empty())
        return {};
    return impl_->write(op, [&](Connection& c) -> StoreResult<void> {
        Stmt s(c, sql::kUpsertEnforcerDefinition, op);
        for (const auto& d : definitions) {
            const std::string document = dump(d.document);
            s.bind_all(d.id, document);
            if (auto done = s.run(); !done)
                return done;
            s.reset();
        }
        return bump_inventory(c, op);
    });
}

StoreResult<void> SqliteStore::delete_enforcer_definition(const std::string& id) {
    constexpr std::string_view op = "delete_enforcer_definition";
    return impl_->write(op, [&](Connection& c) -> StoreResult<void> {
        Stmt s(c, sql::kDeleteEnforcerDefinition, op);
        s.bind_all(id);
        if (auto done = s.run(); !done)
            return done;
        if (c.changes() == 0)
            return fail(Kind::NotFound, op, "enforcer \"" + id + "\" not found");
        return bump_inventory(c, op);
    });
}

StoreResult<std::vector<WorkloadRecord>> SqliteStore::list_workloads() {
    constexpr std::string_view op = "list_workloads";
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, sql::kListWorkloads, op);
        return s.all(read_workload);
    });
}

StoreResult<std::optional<WorkloadRecord>> SqliteStore::get_workload(const std::string& id) {
    constexpr std::string_view op = "get_workload";
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, sql::kGetWorkload, op);
        s.bind_all(id);
        return s.one(read_workload);
    });
}

StoreResult<void> SqliteStore::upsert_workloads(const std::vector<WorkloadRecord>& workloads) {
    constexpr std::string_view op = "upsert_workloads";
    std::vector<WorkloadIndex> indexes;
    indexes.reserve(workloads.size());
    for (const auto& w : workloads) {
        auto index = index_workload(w, op);
        if (!index)
            return std::unexpected(index.error());
        indexes.push_back(std::move(*index));
    }
    if (workloads.empty())
        return {};
    return impl_->write(op, [&](Connection& c) -> StoreResult<void> {
        Stmt upsert(c, sql::kUpsertWorkload, op);
        Stmt clear(c, sql::kDeleteWorkloadAddresses, op);
        Stmt add(c, sql::kAddWorkloadAddress, op);
        for (std::size_t i = 0; i < workloads.size(); ++i) {
            const auto& w = workloads[i];
            const std::string document = dump(w.document);
            upsert.bind_all(w.id, w.enforcer, indexes[i].user, document, w.updated_at);
            if (auto done = upsert.run(); !done)
                return done;
            upsert.reset();
            clear.bind_all(w.id);
            if (auto done = clear.run(); !done)
                return done;
            clear.reset();
            for (const auto& address : indexes[i].addresses) {
                add.bind_all(w.id, address);
                if (auto done = add.run(); !done)
                    return done;
                add.reset();
            }
        }
        return bump_inventory(c, op);
    });
}

StoreResult<std::size_t> SqliteStore::delete_workloads(const std::vector<std::string>& ids) {
    constexpr std::string_view op = "delete_workloads";
    if (ids.empty())
        return std::size_t{0};
    return impl_->write(op, [&](Connection& c) -> StoreResult<std::size_t> {
        Stmt s(c, sql::kDeleteWorkload, op);
        std::size_t deleted = 0;
        for (const auto& id : ids) {
            s.bind_all(id);
            if (auto done = s.run(); !done)
                return std::unexpected(done.error());
            deleted += static_cast<std::size_t>(c.changes()); // addresses go by ON DELETE CASCADE
            s.reset();
        }
        if (deleted > 0) {
            if (auto bumped = bump_inventory(c, op); !bumped)
                return std::unexpected(bumped.error());
        }
        return deleted;
    });
}

StoreResult<std::vector<WorkloadRecord>>
SqliteStore::workloads_with_address(const std::string& address) {
    constexpr std::string_view op = "workloads_with_address";
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, sql::kWorkloadsWithAddress, op);
        s.bind_all(address);
        return s.all(read_workload);
    });
}

StoreResult<std::uint64_t> SqliteStore::inventory_version() {
    constexpr std::string_view op = "inventory_version";
    return impl_->read(op, [&](Connection& c) -> StoreResult<std::uint64_t> {
        Stmt s(c, sql::kInventoryVersion, op);
        auto row = s.one([](Stmt& st) -> StoreResult<std::int64_t> { return st.i64(0); });
        if (!row)
            return std::unexpected(row.error());
        if (!*row)
            return fail(Kind::Io, op, "the inventory counter is missing");
        return static_cast<std::uint64_t>(**row);
    });
}

// ---- VPN sessions --------------------------------------------------------------------------

StoreResult<VpnSession> SqliteStore::add_vpn_session(VpnSession session) {
    constexpr std::string_view op = "add_vpn_session";
    if (session.end && *session.end < session.start)
        return fail(Kind::Invalid, op, "session ends before it starts");
    return impl_->write(op, [&](Connection& c) -> StoreResult<VpnSession> {
        Stmt s(c, sql::kAddVpnSession, op);
        s.bind_all(session.user, session.pool_address, session.real_address, session.start,
                   session.end);
        return required(s.one(read_vpn_session), op, "inserted session");
    });
}

StoreResult<VpnSession> SqliteStore::end_vpn_session(std::int64_t id, TimeMs end) {
    constexpr std::string_view op = "end_vpn_session";
    return impl_->write(op, [&](Connection& c) -> StoreResult<VpnSession> {
        VpnSession current;
        {
            Stmt get(c, sql::kGetVpnSession, op);
            get.bind_all(id);
            auto found =
                required(get.one(read_vpn_session), op, "vpn session " + std::to_string(id));
            if (!found)
                return found;
            current = std::move(*found);
        }
        if (current.end) {
            if (*current.end == end)
                return current; // the same end again: idempotent
            return fail(Kind::Conflict, op, "vpn session " + std::to_string(id) + " already ended");
        }
        if (end < current.start)
            return fail(Kind::Invalid, op, "session would end before it starts");
        Stmt s(c, sql::kEndVpnSession, op);
        s.bind_all(id, end);
        return required(s.one(read_vpn_session), op, "vpn session " + std::to_string(id));
    });
}

StoreResult<std::vector<VpnSession>> SqliteStore::list_vpn_sessions(std::optional<TimeMs> active_at,
                                                                    std::size_t limit) {
    constexpr std::string_view op = "list_vpn_sessions";
    return impl_->read(op, [&](Connection& c) {
        if (active_at) {
            Stmt s(c, sql::kListVpnSessionsActiveAt, op);
            s.bind_all(*active_at, limit_of(limit));
            return s.all(read_vpn_session);
        }
        Stmt s(c, sql::kListVpnSessions, op);
        s.bind_all(limit_of(limit));
        return s.all(read_vpn_session);
    });
}

StoreResult<std::optional<VpnSession>> SqliteStore::vpn_session_for(const std::string& pool_address,
                                                                    TimeMs at) {
    constexpr std::string_view op = "vpn_session_for";
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, sql::kVpnSessionFor, op);
        s.bind_all(pool_address, at);
        return s.one(read_vpn_session);
    });
}

} // namespace bulkhead::controller
