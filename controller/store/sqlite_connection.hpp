// Internal to controller/store: what every SqliteStore source file shares. The SQLite
// connection and its statement cache (Connection), one use of a prepared statement (Stmt),
// the error helpers, row readers used by more than one domain, and SqliteStore::Impl with the
// write lock, the three kinds of transaction (write, read, grouped) and the reader pool.
// Nothing outside controller/store includes this header; sqlite_store.hpp is the public API.
#pragma once

#include "controller/store/sqlite_store.hpp"
#include "controller/store/store_sql.hpp"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <sqlite3.h>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace bulkhead::controller {

// Internal to the SQLite backend (what was file-local when it was one source file): its
// sqlite_*.cpp files say `using namespace sqlite_detail;`, nothing outside them uses it.
namespace sqlite_detail {

using Kind = StoreError::Kind;
using nlohmann::json;

std::unexpected<StoreError> fail(Kind kind, std::string_view op, std::string_view message);

// Maps an SQLite result code to the store's error kinds: uniqueness -> Conflict, a missing
// referenced row -> NotFound, other constraints -> Invalid, everything else -> Io.
StoreError sqlite_error(std::string_view op, sqlite3* db, int rc);

// Never throws: invalid UTF-8 in a string is replaced rather than refused.
std::string dump(const json& value);

// nullopt above 2^63-1 (the schema's integers are signed).
std::optional<std::int64_t> to_i64(std::uint64_t value);

// A caller's limit, capped at sql::kMaxLimit.
std::int64_t limit_of(std::size_t limit);

TimeMs now_ms();

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
    StoreResult<CachedStatement*> prepare(std::string_view op, std::string_view text);

    // Statements without parameters or results (pragmas, DDL; several in one text).
    StoreResult<void> exec(std::string_view op, const std::string& text);

    // One transaction-control statement (BEGIN, COMMIT, SAVEPOINT, ...), prepared once: every
    // write runs two to four of them, and parsing them each time was a third of their cost.
    StoreResult<void> control(std::string_view op, std::string_view text);

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
    // Valid until the next step or reset: for reading a row without copying it.
    std::string_view text_view(int column) const {
        const auto* data = sqlite3_column_text(cached_->stmt, column);
        const int size = sqlite3_column_bytes(cached_->stmt, column);
        if (data == nullptr)
            return {};
        return {reinterpret_cast<const char*>(data), static_cast<std::size_t>(size)};
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
                                                         bool create, int busy_timeout_ms);

// ---- shared row readers (column order: the *_COLUMNS lists in store_sql.hpp) ---------------

// Events: query_events and incident_events.
StoreResult<StoredEvent> read_event(Stmt& s);
// The same with the document as text (document_text), not parsed.
StoreResult<StoredEvent> read_event_text(Stmt& s);
// The same without the document (left null): verification hashes its stored text.
StoreResult<StoredEvent> read_event_columns(Stmt& s);
// Audit entries: query_audit and verification.
StoreResult<AuditEntry> read_audit(Stmt& s);

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

// NotFound unless incident `id` exists (incident notes, links and quarantines).
StoreResult<void> require_incident(Connection& c, std::int64_t id, std::string_view op);

// ---- hash chains (sqlite_evidence.cpp) ------------------------------------------------------

// Where `stream`'s chain stands inside the current transaction (its last record, else the
// chain's start).
StoreResult<evidence::ChainHead> chain_head(Connection& c, evidence::Stream stream, std::string_view op);

// Links `record` (canonical bytes of a change to `subject_id`) into the incidents or
// quarantines stream; call inside the transaction that made the change.
StoreResult<void> append_evidence_change(Connection& c, evidence::Stream stream, std::int64_t subject_id,
                                         TimeMs at, const std::string& record, std::string_view op);

// A stored hash column: exactly 32 bytes, else nullopt.
std::optional<evidence::Digest> digest_column(const Stmt& s, int column);

inline std::string_view digest_bytes(const evidence::Digest& digest) {
    return {reinterpret_cast<const char*>(digest.data()), digest.size()};
}

// The highest migration recorded in the file (0 before the first).
StoreResult<int> current_version(Connection& c, std::string_view op);

// Brings the file to the last of `migrations`, each in its own transaction; refuses a file
// whose schema is newer than the list.
StoreResult<void> migrate(Connection& c, std::span<const Migration> migrations,
                          const std::string& name);

} // namespace sqlite_detail

// ---- the write lock, transactions, read connections ---------------------------------------

class SqliteStore::Impl {
  public:
    using Connection = sqlite_detail::Connection;
    using Kind = StoreError::Kind;

    Impl(std::filesystem::path file, bool memory, SqliteStoreOptions options,
         std::unique_ptr<Connection> writer)
        : file_(std::move(file)), memory_(memory), options_(options), writer_(std::move(writer)) {}

    ~Impl();

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
                    (void)impl.writer_->control("rollback", "ROLLBACK");
                impl.owner_.store(std::thread::id{}, std::memory_order_release);
            }
        } release{*this};

        if (auto begun = writer_->control(op, "BEGIN IMMEDIATE"); !begun)
            return Result(std::unexpected(begun.error()));
        Result result = body(*writer_);
        if (result && aborted_) {
            result = Result(sqlite_detail::fail(
                Kind::Io, op, "an inner call failed and SQLite rolled the transaction back"));
        }
        if (result) {
            if (auto committed = writer_->control(op, "COMMIT"); !committed) {
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
                return Result(
                    sqlite_detail::fail(Kind::Io, op, "the enclosing transaction was rolled back"));
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
                              const std::function<StoreResult<void>(Connection&)>& body);

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
            return Result(
                sqlite_detail::fail(Kind::Io, op, "the enclosing transaction was rolled back"));
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
        if (auto begun = writer_->control(op, "SAVEPOINT " + savepoint); !begun) {
            unwind.done = true;
            return Result(std::unexpected(begun.error()));
        }
        Result result = body(*writer_);
        if (result && !aborted_ && writer_->in_transaction()) {
            if (auto released = writer_->control(op, "RELEASE " + savepoint); released) {
                unwind.done = true;
            } else {
                result = Result(std::unexpected(released.error()));
            }
        } else if (result) {
            result =
                Result(sqlite_detail::fail(Kind::Io, op, "SQLite rolled the transaction back"));
        }
        return result;
    }

    void rollback_to(const std::string& savepoint);

    StoreResult<std::unique_ptr<Connection>> acquire_reader(std::string_view op);

    void release_reader(std::unique_ptr<Connection> connection);

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

  public:
    // See SqliteStoreOptions::background_checkpoint_interval.
    void start_checkpointer();
    std::atomic<std::uint64_t> checkpoints{0};
    std::atomic<std::uint64_t> checkpoint_failures{0};
    std::atomic<std::uint64_t> checkpoint_skips{0};

  private:
    // The writer's commits report the WAL's size here (sqlite3_wal_hook), which replaces
    // SQLite's own autocheckpoint hook: wal_autocheckpoint_pages is enforced by ours.
    static int on_wal_commit(void* impl, sqlite3* db, const char* schema, int pages);
    std::atomic<int> wal_pages_{0};
    std::jthread checkpointer_;  // last: stopped and joined before anything it uses goes
};

} // namespace bulkhead::controller
