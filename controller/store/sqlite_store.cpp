#include "controller/store/sqlite_store.hpp"

#include "controller/store/store_sql.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <limits>
#include <mutex>
#include <sqlite3.h>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace bulkhead::controller {
namespace {

using Kind = StoreError::Kind;
using nlohmann::json;

std::unexpected<StoreError> fail(Kind kind, std::string_view op, std::string_view message) {
    std::string text(op);
    text += ": ";
    text += message;
    return std::unexpected(StoreError{kind, std::move(text)});
}

// Maps an SQLite result code to the store's error kinds: uniqueness -> Conflict, a missing
// referenced row -> NotFound, other constraints -> Invalid, everything else -> Io.
StoreError sqlite_error(std::string_view op, sqlite3* db, int rc) {
    std::string text(op);
    text += ": ";
    text += db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    Kind kind = Kind::Io;
    if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
        kind = Kind::Conflict;
    } else if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
        kind = Kind::NotFound;
    } else if ((rc & 0xff) == SQLITE_CONSTRAINT) {
        kind = Kind::Invalid;
    }
    return StoreError{kind, std::move(text)};
}

std::string dump(const json& value) {
    // Never throws: invalid UTF-8 in a string is replaced rather than refused.
    return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::optional<std::int64_t> to_i64(std::uint64_t value) {
    if (value > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        return std::nullopt;
    return static_cast<std::int64_t>(value);
}

std::int64_t limit_of(std::size_t limit) {
    return static_cast<std::int64_t>(std::min(limit, sql::kMaxLimit));
}

TimeMs now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// ---- connection and statements ------------------------------------------------------------

struct CachedStatement {
    sqlite3_stmt* stmt = nullptr;
    std::vector<int> index; // index[k - 1]: SQLite's parameter index of "$k" (0: absent)
};

struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view text) const {
        return std::hash<std::string_view>{}(text);
    }
};

class Connection {
  public:
    explicit Connection(sqlite3* db) : db_(db) {}
    ~Connection() {
        for (auto& [text, cached] : cache_)
            sqlite3_finalize(cached.stmt);
        sqlite3_close_v2(db_);
    }
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    sqlite3* db() const { return db_; }

    // Prepared once per connection and SQL text, then reused (reset after every use).
    StoreResult<CachedStatement*> prepare(std::string_view op, std::string_view text) {
        if (auto it = cache_.find(text); it != cache_.end())
            return &it->second;
        sqlite3_stmt* stmt = nullptr;
        const int rc = sqlite3_prepare_v3(db_, text.data(), static_cast<int>(text.size()),
                                          SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
        if (rc != SQLITE_OK)
            return std::unexpected(sqlite_error(op, db_, rc));
        CachedStatement cached{stmt, {}};
        for (int i = 1; i <= sqlite3_bind_parameter_count(stmt); ++i) {
            const char* name = sqlite3_bind_parameter_name(stmt, i);
            if (name == nullptr || name[0] != '$')
                continue;
            const int k = std::atoi(name + 1);
            if (k <= 0)
                continue;
            if (static_cast<std::size_t>(k) > cached.index.size())
                cached.index.resize(static_cast<std::size_t>(k), 0);
            cached.index[static_cast<std::size_t>(k) - 1] = i;
        }
        auto [it, inserted] = cache_.emplace(std::string(text), std::move(cached));
        return &it->second;
    }

    // Statements without parameters or results (pragmas, transaction control, DDL).
    StoreResult<void> exec(std::string_view op, const std::string& text) {
        char* message = nullptr;
        const int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &message);
        if (rc == SQLITE_OK)
            return {};
        std::string detail = message != nullptr ? message : sqlite3_errstr(rc);
        sqlite3_free(message);
        auto error = sqlite_error(op, db_, rc);
        error.message = std::string(op) + ": " + detail;
        return std::unexpected(std::move(error));
    }

    bool in_transaction() const { return sqlite3_get_autocommit(db_) == 0; }
    std::int64_t changes() const { return sqlite3_changes64(db_); }
    std::int64_t last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }

  private:
    sqlite3* db_;
    std::unordered_map<std::string, CachedStatement, StringHash, std::equal_to<>> cache_;
};

// One use of a cached statement: bind $1..$n, step, read columns; reset on destruction so
// no statement keeps a read transaction open. Text is bound without copying, so bound
// strings must outlive the step (rvalue strings are refused at compile time).
class Stmt {
  public:
    Stmt(Connection& connection, std::string_view text, std::string_view op)
        : connection_(connection), op_(op) {
        auto prepared = connection.prepare(op, text);
        if (prepared) {
            cached_ = *prepared;
        } else {
            error_ = std::move(prepared.error());
        }
    }
    ~Stmt() { reset(); }
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;

    void reset() {
        if (cached_ == nullptr)
            return;
        sqlite3_reset(cached_->stmt);
        sqlite3_clear_bindings(cached_->stmt);
    }

    void bind(int k, std::int64_t value) {
        if (const int i = slot(k); i > 0)
            check(sqlite3_bind_int64(cached_->stmt, i, value));
    }
    void bind(int k, std::string_view value) {
        if (const int i = slot(k); i > 0) {
            check(sqlite3_bind_text64(cached_->stmt, i, value.data(), value.size(), SQLITE_STATIC,
                                      SQLITE_UTF8));
        }
    }
    void bind(int k, const std::string& value) { bind(k, std::string_view(value)); }
    void bind(int k, std::string&& value) = delete;
    // Binary data (the analyzer checkpoint), stored as a BLOB.
    void bind_blob(int k, std::string_view value) {
        if (const int i = slot(k); i > 0)
            check(sqlite3_bind_blob64(cached_->stmt, i, value.data(), value.size(), SQLITE_STATIC));
    }
    void bind(int k, std::nullopt_t) {
        if (const int i = slot(k); i > 0)
            check(sqlite3_bind_null(cached_->stmt, i));
    }
    void bind(int k, const std::optional<std::int64_t>& value) {
        if (value) {
            bind(k, *value);
        } else {
            bind(k, std::nullopt);
        }
    }
    void bind(int k, const sql::Value& value) {
        std::visit([&](const auto& v) { bind(k, v); }, value);
    }
    template <typename T> void bind(int k, const T& value) = delete; // say which SQL type you mean

    template <typename... Args> void bind_all(const Args&... args) {
        int k = 0;
        (bind(++k, args), ...);
    }
    void bind_params(const std::vector<sql::Value>& params) {
        for (std::size_t i = 0; i < params.size(); ++i)
            bind(static_cast<int>(i) + 1, params[i]);
    }

    // true: a row is available; false: done.
    StoreResult<bool> step() {
        if (error_)
            return std::unexpected(*error_);
        const int rc = sqlite3_step(cached_->stmt);
        if (rc == SQLITE_ROW)
            return true;
        if (rc == SQLITE_DONE)
            return false;
        error_ = sqlite_error(op_, connection_.db(), rc);
        return std::unexpected(*error_);
    }

    StoreResult<void> run() {
        for (;;) {
            auto row = step();
            if (!row)
                return std::unexpected(row.error());
            if (!*row)
                return {};
        }
    }

    template <typename Reader>
    auto one(Reader&& read)
        -> StoreResult<std::optional<typename std::invoke_result_t<Reader&, Stmt&>::value_type>> {
        using T = typename std::invoke_result_t<Reader&, Stmt&>::value_type;
        auto row = step();
        if (!row)
            return std::unexpected(row.error());
        if (!*row)
            return std::optional<T>{};
        auto value = read(*this);
        if (!value)
            return std::unexpected(value.error());
        if (auto rest = run(); !rest)
            return std::unexpected(rest.error());
        return std::optional<T>(std::move(*value));
    }

    template <typename Reader>
    auto all(Reader&& read)
        -> StoreResult<std::vector<typename std::invoke_result_t<Reader&, Stmt&>::value_type>> {
        using T = typename std::invoke_result_t<Reader&, Stmt&>::value_type;
        std::vector<T> out;
        for (;;) {
            auto row = step();
            if (!row)
                return std::unexpected(row.error());
            if (!*row)
                return out;
            auto value = read(*this);
            if (!value)
                return std::unexpected(value.error());
            out.push_back(std::move(*value));
        }
    }

    bool null(int column) const {
        return sqlite3_column_type(cached_->stmt, column) == SQLITE_NULL;
    }
    std::int64_t i64(int column) const { return sqlite3_column_int64(cached_->stmt, column); }
    std::optional<std::int64_t> opt_i64(int column) const {
        if (null(column))
            return std::nullopt;
        return i64(column);
    }
    std::string text(int column) const {
        const auto* data = sqlite3_column_text(cached_->stmt, column);
        const int size = sqlite3_column_bytes(cached_->stmt, column);
        if (data == nullptr)
            return {};
        return std::string(reinterpret_cast<const char*>(data), static_cast<std::size_t>(size));
    }
    std::string blob(int column) const {
        const auto* data = sqlite3_column_blob(cached_->stmt, column);
        const int size = sqlite3_column_bytes(cached_->stmt, column);
        if (data == nullptr)
            return {};
        return std::string(static_cast<const char*>(data), static_cast<std::size_t>(size));
    }
    // NULL reads as JSON null.
    StoreResult<json> document(int column, std::string_view what) const {
        if (null(column))
            return json(nullptr);
        auto parsed = json::parse(text(column), nullptr, false);
        if (parsed.is_discarded())
            return corrupt(what);
        return parsed;
    }
    std::unexpected<StoreError> corrupt(std::string_view what) const {
        return fail(Kind::Io, op_, "stored value of " + std::string(what) + " is corrupt");
    }
    std::string_view op() const { return op_; }

  private:
    int slot(int k) {
        if (error_ || cached_ == nullptr)
            return 0;
        const auto index = static_cast<std::size_t>(k);
        if (k <= 0 || index > cached_->index.size() || cached_->index[index - 1] == 0) {
            error_ = StoreError{Kind::Io, std::string(op_) + ": statement has no parameter $" +
                                              std::to_string(k)};
            return 0;
        }
        return cached_->index[index - 1];
    }
    void check(int rc) {
        if (rc != SQLITE_OK && !error_)
            error_ = sqlite_error(op_, connection_.db(), rc);
    }

    Connection& connection_;
    std::string_view op_;
    CachedStatement* cached_ = nullptr;
    std::optional<StoreError> error_;
};

StoreResult<std::unique_ptr<Connection>> open_connection(const std::filesystem::path& file,
                                                         bool create, int busy_timeout_ms) {
    sqlite3* db = nullptr;
    const int flags =
        SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
    const std::string name = file.string();
    const int rc = sqlite3_open_v2(name.c_str(), &db, flags, nullptr);
    if (rc != SQLITE_OK) {
        auto error = sqlite_error("open " + name, db, rc);
        sqlite3_close_v2(db);
        return std::unexpected(std::move(error));
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, busy_timeout_ms);
    return std::make_unique<Connection>(db);
}

// ---- row readers (column order: the *_COLUMNS lists in store_sql.hpp) ------------------------

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

StoreResult<StoredEvent> read_event(Stmt& s) {
    StoredEvent e;
    e.id = s.i64(0);
    e.enforcer = s.text(1);
    e.enforcer_seq = static_cast<std::uint64_t>(s.i64(2));
    e.type = s.text(3);
    e.time_ns = s.i64(4);
    e.received_at = s.i64(5);
    e.workload = s.text(6);
    e.direction = s.text(7);
    e.reason = s.text(8);
    e.src = s.text(9);
    e.dst = s.text(10);
    e.protocol = s.text(11);
    if (const auto port = s.opt_i64(12)) {
        if (*port < 0 || *port > 65535)
            return s.corrupt("events.dport");
        e.dport = static_cast<std::uint16_t>(*port);
    }
    e.count = static_cast<std::uint64_t>(s.i64(13));
    auto document = s.document(14, "events.document");
    if (!document)
        return std::unexpected(document.error());
    e.document = std::move(*document);
    return e;
}

StoreResult<Incident> read_incident(Stmt& s) {
    Incident i;
    i.id = s.i64(0);
    i.source_workload = s.text(1);
    const auto state = incident_state_from_string(s.text(2));
    if (!state)
        return s.corrupt("incidents.state");
    i.state = *state;
    i.severity = s.text(3);
    i.title = s.text(4);
    i.explanation = s.text(5);
    i.opened_at = s.i64(6);
    i.updated_at = s.i64(7);
    i.event_count = static_cast<std::uint64_t>(s.i64(8));
    auto details = s.document(9, "incidents.details");
    if (!details)
        return std::unexpected(details.error());
    i.details = std::move(*details);
    i.version = s.i64(10);
    i.counted_through_event = s.i64(11);
    return i;
}

StoreResult<Exemption> read_exemption(Stmt& s) {
    Exemption e;
    e.id = s.i64(0);
    e.workload = s.text(1);
    e.enforcer = s.text(2);
    e.segment = s.text(3);
    e.expires_at = s.i64(4);
    e.reason = s.text(5);
    e.created_by = s.text(6);
    e.created_at = s.i64(7);
    return e;
}

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

StoreResult<IncidentNote> read_note(Stmt& s) {
    IncidentNote n;
    n.id = s.i64(0);
    n.incident_id = s.i64(1);
    n.author = s.text(2);
    n.at = s.i64(3);
    n.text = s.text(4);
    return n;
}

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

// A row that a statement must return (INSERT ... RETURNING, lookups by id).
template <typename T>
StoreResult<T> required(StoreResult<std::optional<T>> row, std::string_view op,
                        std::string_view what) {
    if (!row)
        return std::unexpected(row.error());
    if (!*row)
        return fail(Kind::NotFound, op, std::string(what) + " not found");
    return std::move(**row);
}

// JSON null is stored as SQL NULL (audit before/after).
std::optional<std::string> dump_or_null(const json& value) {
    if (value.is_null())
        return std::nullopt;
    return dump(value);
}

} // namespace

// ---- the write lock, transactions, read connections ---------------------------------------

class SqliteStore::Impl {
  public:
    Impl(std::filesystem::path file, bool memory, SqliteStoreOptions options,
         std::unique_ptr<Connection> writer)
        : file_(std::move(file)), memory_(memory), options_(options), writer_(std::move(writer)) {}

    ~Impl() {
        // Lets SQLite refresh planner statistics it found missing during this session.
        if (writer_)
            (void)writer_->exec("close", "PRAGMA optimize");
    }

    Connection& writer() { return *writer_; }

    // Runs `body` on the write connection as one transaction. A thread that already owns
    // the write transaction (inside in_transaction or a nested call) joins it through a
    // SAVEPOINT, so a failing inner call is undone alone and reports its error to the
    // caller, whose own error (if it returns one) undoes everything. Other threads wait
    // for the write lock.
    template <typename Body>
    auto write(std::string_view op, Body&& body) -> std::invoke_result_t<Body&, Connection&> {
        using Result = std::invoke_result_t<Body&, Connection&>;
        if (owner_.load(std::memory_order_acquire) == std::this_thread::get_id()) {
            return nested(op, body);
        }
        std::unique_lock lock(mutex_);
        owner_.store(std::this_thread::get_id(), std::memory_order_release);
        depth_ = 0;
        aborted_ = false;
        struct Release {
            Impl& impl;
            bool done = false;
            ~Release() {
                if (!done)
                    impl.forget_terms();
                if (!done && impl.writer_->in_transaction())
                    (void)impl.writer_->exec("rollback", "ROLLBACK");
                impl.owner_.store(std::thread::id{}, std::memory_order_release);
            }
        } release{*this};

        if (auto begun = writer_->exec(op, "BEGIN IMMEDIATE"); !begun)
            return Result(std::unexpected(begun.error()));
        Result result = body(*writer_);
        if (result && aborted_) {
            result = Result(
                fail(Kind::Io, op, "an inner call failed and SQLite rolled the transaction back"));
        }
        if (result) {
            if (auto committed = writer_->exec(op, "COMMIT"); !committed) {
                result = Result(std::unexpected(committed.error()));
            } else {
                release.done = true;
            }
        }
        return result; // on error Release rolls back
    }

    // Reads run on a pooled read connection (WAL: they see the last commit and never wait
    // for a writer), except on the thread that owns the write transaction, which must see
    // its own uncommitted changes, and for ":memory:", which has only one connection.
    template <typename Body>
    auto read(std::string_view op, Body&& body) -> std::invoke_result_t<Body&, Connection&> {
        using Result = std::invoke_result_t<Body&, Connection&>;
        if (owner_.load(std::memory_order_acquire) == std::this_thread::get_id()) {
            if (aborted_)
                return Result(fail(Kind::Io, op, "the enclosing transaction was rolled back"));
            return body(*writer_);
        }
        if (memory_) {
            std::unique_lock lock(mutex_);
            return body(*writer_);
        }
        auto reader = acquire_reader(op);
        if (!reader)
            return Result(std::unexpected(reader.error()));
        struct Return {
            Impl& impl;
            std::unique_ptr<Connection> connection;
            ~Return() { impl.release_reader(std::move(connection)); }
        } lease{*this, std::move(*reader)};
        return body(*lease.connection);
    }

    // Group commit. Each caller queues its `body`; whichever caller finds no commit under
    // way leads: it runs the queued bodies (up to group_commit_max_events by `weight`), each
    // in its own SAVEPOINT so a failing one is undone alone and gets its own error, in one
    // transaction, and wakes the others. Under concurrent load one commit (and one write of
    // every index page it touched) serves many callers; a lone caller commits at once. A
    // caller already inside a write transaction joins it directly.
    StoreResult<void> grouped(std::string_view op, std::size_t weight,
                              const std::function<StoreResult<void>(Connection&)>& body) {
        if (owner_.load(std::memory_order_acquire) == std::this_thread::get_id())
            return write(op, body);
        GroupMember me{&body, weight};
        std::unique_lock lock(group_mutex_);
        group_queue_.push_back(&me);
        while (!me.done) {
            if (group_leading_) {
                group_cv_.wait(lock);
                continue;
            }
            group_leading_ = true;
            std::vector<GroupMember*> members;
            std::size_t events = 0;
            while (!group_queue_.empty() &&
                   (members.empty() || events + group_queue_.front()->weight <= options_.group_commit_max_events)) {
                events += group_queue_.front()->weight;
                members.push_back(group_queue_.front());
                group_queue_.pop_front();
            }
            lock.unlock();
            auto committed = write(op, [&](Connection&) -> StoreResult<void> {
                for (auto* member : members) {
                    try {
                        member->result = write(op, *member->body); // nested: a SAVEPOINT each
                    } catch (const std::exception& e) {
                        // Its SAVEPOINT is already undone; the leader must not unwind
                        // with the others still waiting on it.
                        member->result = fail(Kind::Invalid, op, e.what());
                    }
                }
                return {};
            });
            lock.lock();
            for (auto* member : members) {
                if (!committed)
                    member->result = std::unexpected(committed.error());
                member->done = true;
            }
            group_leading_ = false;
            group_cv_.notify_all();
        }
        return me.result;
    }

  private:
    struct GroupMember {
        const std::function<StoreResult<void>(Connection&)>* body;
        std::size_t weight;
        StoreResult<void> result{};
        bool done = false;
    };

    template <typename Body>
    auto nested(std::string_view op, Body& body) -> std::invoke_result_t<Body&, Connection&> {
        using Result = std::invoke_result_t<Body&, Connection&>;
        if (aborted_)
            return Result(fail(Kind::Io, op, "the enclosing transaction was rolled back"));
        const std::string savepoint = "sp" + std::to_string(++depth_);
        struct Unwind {
            Impl& impl;
            const std::string& savepoint;
            bool done = false;
            ~Unwind() {
                if (!done)
                    impl.rollback_to(savepoint);
                --impl.depth_;
            }
        } unwind{*this, savepoint};
        if (auto begun = writer_->exec(op, "SAVEPOINT " + savepoint); !begun) {
            unwind.done = true;
            return Result(std::unexpected(begun.error()));
        }
        Result result = body(*writer_);
        if (result && !aborted_ && writer_->in_transaction()) {
            if (auto released = writer_->exec(op, "RELEASE " + savepoint); released) {
                unwind.done = true;
            } else {
                result = Result(std::unexpected(released.error()));
            }
        } else if (result) {
            result = Result(fail(Kind::Io, op, "SQLite rolled the transaction back"));
        }
        return result;
    }

    void rollback_to(const std::string& savepoint) {
        forget_terms();
        if (!writer_->in_transaction()) {
            // SQLite ended the whole transaction itself (I/O error, disk full, ...): every
            // later call in it fails and the outermost level reports an error.
            aborted_ = true;
            return;
        }
        if (!writer_->exec("rollback", "ROLLBACK TO " + savepoint) ||
            !writer_->exec("rollback", "RELEASE " + savepoint)) {
            aborted_ = true;
        }
    }

    StoreResult<std::unique_ptr<Connection>> acquire_reader(std::string_view op) {
        std::unique_lock lock(pool_mutex_);
        pool_cv_.wait(lock, [&] { return !idle_.empty() || open_readers_ < options_.max_readers; });
        if (!idle_.empty()) {
            auto connection = std::move(idle_.back());
            idle_.pop_back();
            return connection;
        }
        ++open_readers_;
        lock.unlock();
        auto connection = open_connection(file_, false, options_.busy_timeout_ms);
        if (connection) {
            auto only = (*connection)->exec(op, "PRAGMA query_only = ON");
            if (!only)
                connection = std::unexpected(only.error());
        }
        if (!connection) {
            lock.lock();
            --open_readers_;
            pool_cv_.notify_one();
        }
        return connection;
    }

    void release_reader(std::unique_ptr<Connection> connection) {
        {
            std::lock_guard lock(pool_mutex_);
            idle_.push_back(std::move(connection));
        }
        pool_cv_.notify_one();
    }

    std::filesystem::path file_;
    bool memory_;
    SqliteStoreOptions options_;

    // The write connection and its lock. owner_ is the thread inside a write transaction;
    // depth_ and aborted_ are touched only by that thread while it holds mutex_.
    std::unique_ptr<Connection> writer_;
    std::mutex mutex_;
    std::atomic<std::thread::id> owner_{};
    int depth_ = 0;
    bool aborted_ = false;

  public:
    // (term, minute) rows of event_terms known to be committed, so a storm writes each
    // once per minute instead of once per event. Touched only by the writing thread.
    // Any rollback forgets them all: an entry must never stand for a row that was undone.
    bool term_known(const std::string& key) {
        if (recent_terms_.size() >= 1'000'000)
            recent_terms_.clear(); // bounded; the rows themselves stay
        return !recent_terms_.insert(key).second;
    }
    void forget_terms() { recent_terms_.clear(); }

  private:
    std::unordered_set<std::string> recent_terms_;

    std::mutex group_mutex_;
    std::condition_variable group_cv_;
    std::deque<GroupMember*> group_queue_;
    bool group_leading_ = false;

    std::mutex pool_mutex_;
    std::condition_variable pool_cv_;
    std::vector<std::unique_ptr<Connection>> idle_;
    std::size_t open_readers_ = 0;
};

namespace {

StoreResult<int> current_version(Connection& c, std::string_view op) {
    Stmt s(c, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", op);
    auto row = s.one([](Stmt& st) -> StoreResult<std::int64_t> { return st.i64(0); });
    if (!row)
        return std::unexpected(row.error());
    return static_cast<int>(row->value_or(0));
}

StoreResult<void> migrate(Connection& c, std::span<const Migration> migrations,
                          const std::string& name) {
    const std::string op = "open " + name;
    for (std::size_t i = 0; i < migrations.size(); ++i) {
        if (migrations[i].version != static_cast<int>(i) + 1) {
            return fail(Kind::Invalid, op, "migrations must be numbered 1, 2, 3, ... in order");
        }
    }
    if (auto created =
            c.exec(op, "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                       "name TEXT NOT NULL, applied_at BIGINT NOT NULL)");
        !created) {
        return created;
    }
    auto version = current_version(c, op);
    if (!version)
        return std::unexpected(version.error());
    const int latest = static_cast<int>(migrations.size());
    if (*version > latest) {
        return fail(Kind::Invalid, op,
                    "database schema version " + std::to_string(*version) +
                        " is newer than this build supports (" + std::to_string(latest) +
                        "); run a newer bulkhead-controller or restore a backup");
    }
    for (const auto& m : migrations.subspan(static_cast<std::size_t>(*version))) {
        const std::string what =
            op + ": migration " + std::to_string(m.version) + " (" + std::string(m.name) + ")";
        if (auto begun = c.exec(what, "BEGIN IMMEDIATE"); !begun)
            return begun;
        // Another process may have applied it between our read and our lock.
        auto now = current_version(c, what);
        StoreResult<void> step{};
        if (!now) {
            step = std::unexpected(now.error());
        } else if (*now < m.version) {
            step = c.exec(what, std::string(m.sql));
            if (step) {
                Stmt record(
                    c,
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    what);
                record.bind_all(std::int64_t{m.version}, m.name, now_ms());
                step = record.run();
            }
        }
        if (step)
            step = c.exec(what, "COMMIT");
        if (!step) {
            if (c.in_transaction())
                (void)c.exec(what, "ROLLBACK");
            return step;
        }
    }
    return {};
}

} // namespace

// ---- open / close --------------------------------------------------------------------------

SqliteStore::SqliteStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SqliteStore::~SqliteStore() = default;

std::expected<std::unique_ptr<SqliteStore>, StoreError>
SqliteStore::open(const std::filesystem::path& file) {
    return open(file, SqliteStoreOptions{});
}

std::expected<std::unique_ptr<SqliteStore>, StoreError>
SqliteStore::open(const std::filesystem::path& file, const SqliteStoreOptions& options) {
    const std::string name = file.string();
    const std::string op = "open " + name;
    const bool memory = name == ":memory:";
    auto connection = open_connection(file, true, options.busy_timeout_ms);
    if (!connection)
        return std::unexpected(connection.error());
    Connection& c = **connection;
    if (!memory) {
        // Takes effect only when the file is new (an existing database keeps its size).
        if (auto set = c.exec(op, "PRAGMA page_size = " + std::to_string(options.page_size)); !set)
            return std::unexpected(set.error());
        Stmt wal(c, "PRAGMA journal_mode = WAL", op);
        auto mode = wal.one([](Stmt& s) -> StoreResult<std::string> { return s.text(0); });
        if (!mode)
            return std::unexpected(mode.error());
        if (!*mode || **mode != "wal") {
            return fail(Kind::Io, op,
                        "cannot switch to WAL mode (journal_mode is " + mode->value_or("?") + ")");
        }
    }
    for (const std::string& pragma :
         {std::string("PRAGMA synchronous = NORMAL"), std::string("PRAGMA foreign_keys = ON"),
          "PRAGMA cache_size = -" + std::to_string(options.writer_cache_kib),
          "PRAGMA wal_autocheckpoint = " + std::to_string(options.wal_autocheckpoint_pages),
          // After a checkpoint the WAL file is cut back to this size instead of staying at
          // its high-water mark.
          std::string("PRAGMA journal_size_limit = 67108864")}) {
        if (auto set = c.exec(op, pragma); !set)
            return std::unexpected(set.error());
    }
    const auto migrations = options.migrations.empty() ? sqlite_migrations() : options.migrations;
    if (auto migrated = migrate(c, migrations, name); !migrated)
        return std::unexpected(migrated.error());
    SqliteStoreOptions kept = options;
    kept.max_readers = std::max<std::size_t>(kept.max_readers, 1);
    kept.migrations = {};
    auto impl = std::make_unique<Impl>(file, memory, kept, std::move(*connection));
    return std::unique_ptr<SqliteStore>(new SqliteStore(std::move(impl)));
}

StoreResult<int> SqliteStore::schema_version() {
    return impl_->read("schema_version",
                       [](Connection& c) { return current_version(c, "schema_version"); });
}

StoreResult<void> SqliteStore::in_transaction(const std::function<StoreResult<void>()>& work) {
    return impl_->write("in_transaction", [&](Connection&) { return work(); });
}

// ---- policy revisions -------------------------------------------------------------------------

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

// ---- inventory
// -----------------------------------------------------------------------------------

namespace {

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

// ---- VPN sessions
// -----------------------------------------------------------------------------------

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

// ---- enforcer runtime state
// ---------------------------------------------------------------------------

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

// ---- credentials
// ------------------------------------------------------------------------------------------

namespace {

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

// ---- events
// ---------------------------------------------------------------------------------------------

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
    const std::function<StoreResult<void>(Connection&)> insert = [&](Connection& c) -> StoreResult<void> {
        // A retried body (none today) must not count twice.
        result.accepted = result.duplicates = 0;
        result.ids.clear();
        result.ids.reserve(events.size());
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
            s.bind_all(e.enforcer, static_cast<std::int64_t>(e.enforcer_seq), e.type, e.time_ns,
                       e.received_at, e.workload, e.direction, e.reason, e.src, e.dst, e.protocol,
                       dport, static_cast<std::int64_t>(e.count), text);
            if (auto done = s.run(); !done)
                return std::unexpected(done.error());
            if (c.changes() > 0) {
                ++result.accepted;
                result.ids.push_back(c.last_insert_rowid());
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
        return s.all(read_event);
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

// ---- incidents
// -----------------------------------------------------------------------------------------

namespace {

StoreResult<void> require_incident(Connection& c, std::int64_t id, std::string_view op) {
    Stmt s(c, sql::kIncidentExists, op);
    s.bind_all(id);
    auto row = s.step();
    if (!row)
        return std::unexpected(row.error());
    if (!*row)
        return fail(Kind::NotFound, op, "incident " + std::to_string(id) + " not found");
    return {};
}

} // namespace

StoreResult<Incident> SqliteStore::add_incident(Incident incident) {
    constexpr std::string_view op = "add_incident";
    const auto count = to_i64(incident.event_count);
    if (!count)
        return fail(Kind::Invalid, op, "event_count exceeds 2^63-1");
    return impl_->write(op, [&](Connection& c) -> StoreResult<Incident> {
        const std::string details = dump(incident.details);
        Stmt s(c, sql::kAddIncident, op);
        s.bind_all(incident.source_workload, to_string(incident.state), incident.severity,
                   incident.title, incident.explanation, incident.opened_at, incident.updated_at,
                   *count, details, incident.counted_through_event);
        return required(s.one(read_incident), op, "inserted incident");
    });
}

StoreResult<Incident> SqliteStore::update_incident(const Incident& incident) {
    constexpr std::string_view op = "update_incident";
    const auto count = to_i64(incident.event_count);
    if (!count)
        return fail(Kind::Invalid, op, "event_count exceeds 2^63-1");
    return impl_->write(op, [&](Connection& c) -> StoreResult<Incident> {
        const std::string details = dump(incident.details);
        Stmt s(c, sql::kUpdateIncident, op);
        s.bind_all(incident.id, incident.source_workload, to_string(incident.state),
                   incident.severity, incident.title, incident.explanation, incident.opened_at,
                   incident.updated_at, *count, details, incident.version,
                   incident.counted_through_event);
        auto row = s.one(read_incident);
        if (!row)
            return std::unexpected(row.error());
        if (*row)
            return std::move(**row);
        // No row: either it does not exist, or another writer moved its version on.
        if (auto found = require_incident(c, incident.id, op); !found)
            return std::unexpected(found.error());
        return fail(Kind::Conflict, op,
                    "incident " + std::to_string(incident.id) + " changed since version " +
                        std::to_string(incident.version) + " was read");
    });
}

StoreResult<Incident> SqliteStore::get_incident(std::int64_t id) {
    constexpr std::string_view op = "get_incident";
    return impl_->read(op, [&](Connection& c) -> StoreResult<Incident> {
        Stmt s(c, sql::kGetIncident, op);
        s.bind_all(id);
        return required(s.one(read_incident), op, "incident " + std::to_string(id));
    });
}

StoreResult<std::vector<Incident>> SqliteStore::list_incidents(const IncidentQuery& query) {
    constexpr std::string_view op = "list_incidents";
    const auto q = sql::select_incidents(query);
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, q.text, op);
        s.bind_params(q.params);
        return s.all(read_incident);
    });
}

StoreResult<std::optional<Incident>>
SqliteStore::unresolved_incident_of(const std::string& workload) {
    constexpr std::string_view op = "unresolved_incident_of";
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, sql::kUnresolvedIncidentOf, op);
        s.bind_all(workload);
        return s.one(read_incident);
    });
}

StoreResult<IncidentNote> SqliteStore::add_incident_note(IncidentNote note) {
    constexpr std::string_view op = "add_incident_note";
    return impl_->write(op, [&](Connection& c) -> StoreResult<IncidentNote> {
        if (auto found = require_incident(c, note.incident_id, op); !found)
            return std::unexpected(found.error());
        Stmt s(c, sql::kAddIncidentNote, op);
        s.bind_all(note.incident_id, note.author, note.at, note.text);
        return required(s.one(read_note), op, "inserted note");
    });
}

StoreResult<std::vector<IncidentNote>> SqliteStore::incident_notes(std::int64_t incident_id) {
    constexpr std::string_view op = "incident_notes";
    return impl_->read(op, [&](Connection& c) -> StoreResult<std::vector<IncidentNote>> {
        if (auto found = require_incident(c, incident_id, op); !found)
            return std::unexpected(found.error());
        Stmt s(c, sql::kIncidentNotes, op);
        s.bind_all(incident_id);
        return s.all(read_note);
    });
}

StoreResult<void> SqliteStore::link_incident_events(std::int64_t incident_id,
                                                    const std::vector<std::int64_t>& event_ids) {
    constexpr std::string_view op = "link_incident_events";
    return impl_->write(op, [&](Connection& c) -> StoreResult<void> {
        if (auto found = require_incident(c, incident_id, op); !found)
            return found;
        Stmt exists(c, sql::kEventExists, op);
        Stmt link(c, sql::kLinkIncidentEvent, op);
        for (const auto event_id : event_ids) {
            exists.bind_all(event_id);
            auto row = exists.step();
            if (!row)
                return std::unexpected(row.error());
            if (!*row)
                return fail(Kind::NotFound, op, "event " + std::to_string(event_id) + " not found");
            exists.reset();
            link.bind_all(incident_id, event_id);
            if (auto done = link.run(); !done)
                return done;
            link.reset();
        }
        return {};
    });
}

StoreResult<std::vector<StoredEvent>> SqliteStore::incident_events(std::int64_t incident_id,
                                                                   std::size_t limit) {
    constexpr std::string_view op = "incident_events";
    return impl_->read(op, [&](Connection& c) -> StoreResult<std::vector<StoredEvent>> {
        if (auto found = require_incident(c, incident_id, op); !found)
            return std::unexpected(found.error());
        Stmt s(c, sql::kIncidentEvents, op);
        s.bind_all(incident_id, limit_of(limit));
        return s.all(read_event);
    });
}

// ---- quarantine
// ---------------------------------------------------------------------------------------------

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
        return row;
    });
}

StoreResult<Quarantine> SqliteStore::release_quarantine(const std::string& workload, TimeMs at,
                                                        const std::string& released_by) {
    constexpr std::string_view op = "release_quarantine";
    return impl_->write(op, [&](Connection& c) -> StoreResult<Quarantine> {
        Stmt s(c, sql::kReleaseQuarantine, op);
        s.bind_all(workload, at, released_by);
        return required(s.one(read_quarantine), op, "active quarantine of \"" + workload + "\"");
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

// ---- audit
// -----------------------------------------------------------------------------------------------------

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
        return required(s.one(read_audit), op, "inserted audit entry");
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

// ---- exemptions
// -------------------------------------------------------------------------------------------------

StoreResult<Exemption> SqliteStore::add_exemption(Exemption e) {
    constexpr std::string_view op = "add_exemption";
    return impl_->write(op, [&](Connection& c) -> StoreResult<Exemption> {
        Stmt s(c, sql::kAddExemption, op);
        s.bind_all(e.workload, e.enforcer, e.segment, e.expires_at, e.reason, e.created_by,
                   e.created_at);
        return required(s.one(read_exemption), op, "inserted exemption");
    });
}

StoreResult<std::vector<Exemption>> SqliteStore::list_exemptions() {
    constexpr std::string_view op = "list_exemptions";
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, sql::kListExemptions, op);
        return s.all(read_exemption);
    });
}

StoreResult<Exemption> SqliteStore::delete_exemption(std::int64_t id) {
    constexpr std::string_view op = "delete_exemption";
    return impl_->write(op, [&](Connection& c) -> StoreResult<Exemption> {
        Stmt s(c, sql::kDeleteExemption, op);
        s.bind_all(id);
        return required(s.one(read_exemption), op, "exemption " + std::to_string(id));
    });
}

// ---- ruleset generations
// ------------------------------------------------------------------------------------------

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

// ---- outbox
// -------------------------------------------------------------------------------------------------------

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
            return fail(Kind::NotFound, op, "outbox message " + std::to_string(m.id) + " not found");
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

// ---- analysis checkpoint
// -----------------------------------------------------------------------------------------

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

// ---- settings
// ----------------------------------------------------------------------------------------------------

StoreResult<std::optional<std::string>> SqliteStore::get_setting(const std::string& key) {
    constexpr std::string_view op = "get_setting";
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, sql::kGetSetting, op);
        s.bind_all(key);
        return s.one([](Stmt& row) -> StoreResult<std::string> { return row.text(0); });
    });
}

StoreResult<void> SqliteStore::put_setting(const std::string& key, const std::string& value) {
    constexpr std::string_view op = "put_setting";
    return impl_->write(op, [&](Connection& c) {
        Stmt s(c, sql::kPutSetting, op);
        s.bind_all(key, value);
        return s.run();
    });
}

} // namespace bulkhead::controller
