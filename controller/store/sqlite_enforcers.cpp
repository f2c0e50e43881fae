// SqliteStore: enforcer runtime state and the ruleset generation counter
// (EnforcerRepository), API and enrollment tokens (CredentialRepository).
#include "controller/store/sqlite_connection.hpp"

namespace bulkhead::controller {

using namespace sqlite_detail;

namespace {

StoreResult<EnforcerStatus> read_enforcer_status(Stmt& s) {
    EnforcerStatus e;
    e.id = s.text(0);
    e.enrolled_at = s.opt_i64(1);
    e.last_heartbeat = s.opt_i64(2);
    e.applied_generation = static_cast<std::uint64_t>(s.i64(3));
    e.applied_hash = s.text(4);
    e.apply_state = s.text(5);
    e.last_error = s.text(6);
    e.drift_repairs = static_cast<std::uint64_t>(s.i64(7));
    e.last_drift_at = s.opt_i64(8);
    e.clock_offset_ms = s.i64(9);
    e.version = s.text(10);
    e.hostname = s.text(11);
    auto details = s.document(12, "enforcer_status.details");
    if (!details)
        return std::unexpected(details.error());
    e.details = std::move(*details);
    return e;
}

StoreResult<ApiToken> read_api_token(Stmt& s) {
    ApiToken t;
    t.name = s.text(0);
    const auto role = role_from_string(s.text(1));
    if (!role)
        return s.corrupt("api_tokens.role");
    t.role = *role;
    t.token_sha256 = s.text(2);
    t.enforcer = s.text(3);
    t.created_at = s.i64(4);
    return t;
}

StoreResult<void> check_token(const ApiToken& token, std::string_view op) {
    if (token.name.empty())
        return fail(Kind::Invalid, op, "token name is empty");
    if (token.token_sha256.empty())
        return fail(Kind::Invalid, op, "token digest is empty");
    if (token.role == Role::Enforcer && token.enforcer.empty()) {
        return fail(Kind::Invalid, op, "an enforcer token must name its enforcer");
    }
    return {};
}

StoreResult<void> write_api_token(Connection& c, const ApiToken& token, std::string_view op) {
    Stmt s(c, sql::kPutApiToken, op);
    s.bind_all(token.name, to_string(token.role), token.token_sha256, token.enforcer,
               token.created_at);
    auto done = s.run();
    if (!done && done.error().kind == Kind::Conflict) {
        return fail(Kind::Conflict, op, "another token has the same digest");
    }
    return done;
}

} // namespace

// ---- enforcer runtime state ----------------------------------------------------------------

StoreResult<std::vector<EnforcerStatus>> SqliteStore::list_enforcer_status() {
    constexpr std::string_view op = "list_enforcer_status";
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, sql::kListEnforcerStatus, op);
        return s.all(read_enforcer_status);
    });
}

StoreResult<std::optional<EnforcerStatus>> SqliteStore::get_enforcer_status(const std::string& id) {
    constexpr std::string_view op = "get_enforcer_status";
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, sql::kGetEnforcerStatus, op);
        s.bind_all(id);
        return s.one(read_enforcer_status);
    });
}

StoreResult<void> SqliteStore::put_enforcer_status(const EnforcerStatus& status) {
    constexpr std::string_view op = "put_enforcer_status";
    const auto generation = to_i64(status.applied_generation);
    const auto repairs = to_i64(status.drift_repairs);
    if (!generation || !repairs)
        return fail(Kind::Invalid, op, "counter exceeds 2^63-1");
    if (status.id.empty())
        return fail(Kind::Invalid, op, "enforcer id is empty");
    return impl_->write(op, [&](Connection& c) -> StoreResult<void> {
        const std::string details = dump(status.details);
        Stmt s(c, sql::kPutEnforcerStatus, op);
        s.bind_all(status.id, status.enrolled_at, status.last_heartbeat, *generation,
                   status.applied_hash, status.apply_state, status.last_error, *repairs,
                   status.last_drift_at, status.clock_offset_ms, status.version, status.hostname,
                   details);
        return s.run();
    });
}

// ---- ruleset generations -------------------------------------------------------------------

StoreResult<std::uint64_t> SqliteStore::current_generation() {
    constexpr std::string_view op = "current_generation";
    return impl_->read(op, [&](Connection& c) -> StoreResult<std::uint64_t> {
        Stmt s(c, sql::kCurrentGeneration, op);
        auto row = s.one([](Stmt& st) -> StoreResult<std::int64_t> { return st.i64(0); });
        if (!row)
            return std::unexpected(row.error());
        return static_cast<std::uint64_t>(row->value_or(0));
    });
}

StoreResult<std::uint64_t> SqliteStore::next_generation(std::uint64_t at_least) {
    constexpr std::string_view op = "next_generation";
    const auto floor = to_i64(at_least);
    if (!floor)
        return fail(Kind::Invalid, op, "generation exceeds 2^63-1");
    return impl_->write(op, [&](Connection& c) -> StoreResult<std::uint64_t> {
        Stmt s(c, sql::kNextGeneration, op);
        s.bind_all(*floor);
        auto row = required(s.one([](Stmt& st) -> StoreResult<std::int64_t> { return st.i64(0); }),
                            op, "generation counter");
        if (!row)
            return std::unexpected(row.error());
        return static_cast<std::uint64_t>(*row);
    });
}

// ---- credentials ---------------------------------------------------------------------------

StoreResult<void> SqliteStore::put_api_token(const ApiToken& token) {
    constexpr std::string_view op = "put_api_token";
    if (auto valid = check_token(token, op); !valid)
        return valid;
    return impl_->write(op, [&](Connection& c) { return write_api_token(c, token, op); });
}

StoreResult<std::optional<ApiToken>> SqliteStore::find_api_token(const std::string& token_sha256) {
    constexpr std::string_view op = "find_api_token";
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, sql::kFindApiToken, op);
        s.bind_all(token_sha256);
        return s.one(read_api_token);
    });
}

StoreResult<void> SqliteStore::delete_api_tokens_of_enforcer(const std::string& enforcer) {
    constexpr std::string_view op = "delete_api_tokens_of_enforcer";
    return impl_->write(op, [&](Connection& c) {
        Stmt s(c, sql::kDeleteApiTokensOfEnforcer, op);
        s.bind_all(enforcer);
        return s.run();
    });
}

StoreResult<void> SqliteStore::add_enrollment_token(const EnrollmentToken& token) {
    constexpr std::string_view op = "add_enrollment_token";
    if (token.token_sha256.empty() || token.enforcer.empty()) {
        return fail(Kind::Invalid, op, "token digest and enforcer are required");
    }
    return impl_->write(op, [&](Connection& c) -> StoreResult<void> {
        Stmt s(c, sql::kAddEnrollmentToken, op);
        s.bind_all(token.token_sha256, token.enforcer, token.created_at, token.expires_at,
                   token.used_at);
        auto done = s.run();
        if (!done && done.error().kind == Kind::Conflict)
            return fail(Kind::Conflict, op, "token already exists");
        return done;
    });
}

StoreResult<void> SqliteStore::redeem_enrollment_token(const std::string& token_sha256,
                                                       const std::string& enforcer, TimeMs now,
                                                       const ApiToken& credential) {
    constexpr std::string_view op = "redeem_enrollment_token";
    if (auto valid = check_token(credential, op); !valid)
        return valid;
    if (credential.role != Role::Enforcer || credential.enforcer != enforcer) {
        return fail(Kind::Invalid, op,
                    "the credential must be an enforcer token for \"" + enforcer + "\"");
    }
    return impl_->write(op, [&](Connection& c) -> StoreResult<void> {
        {
            Stmt redeem(c, sql::kRedeemEnrollmentToken, op);
            redeem.bind_all(token_sha256, enforcer, now);
            if (auto done = redeem.run(); !done)
                return done;
            if (c.changes() == 0) {
                return fail(Kind::NotFound, op,
                            "no unused, unexpired enrollment token for \"" + enforcer + "\"");
            }
        }
        {
            Stmt drop(c, sql::kDeleteApiTokensOfEnforcer, op);
            drop.bind_all(enforcer);
            if (auto done = drop.run(); !done)
                return done;
        }
        return write_api_token(c, credential, op);
    });
}

} // namespace bulkhead::controller
