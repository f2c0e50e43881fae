// The shared half of the SQLite backend (sqlite_connection.hpp): error mapping, connections
// and their statement cache, the migration runner, row readers shared by several domains,
// and the parts of SqliteStore::Impl that are not templates (group commit, savepoint
// rollback, the reader pool).
#include "controller/store/sqlite_connection.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <limits>

namespace bulkhead::controller {
namespace sqlite_detail {

std::unexpected<StoreError> fail(Kind kind, std::string_view op, std::string_view message) {
    std::string text(op);
    text += ": ";
    text += message;
    return std::unexpected(StoreError{kind, std::move(text)});
}

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

StoreResult<CachedStatement*> Connection::prepare(std::string_view op, std::string_view text) {
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

StoreResult<void> Connection::exec(std::string_view op, const std::string& text) {
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

StoreResult<void> Connection::control(std::string_view op, std::string_view text) {
    return Stmt(*this, text, op).run();
}

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

// ---- shared row readers and lookups -------------------------------------------------------------

StoreResult<StoredEvent> read_event(Stmt& s) {
    auto e = read_event_columns(s);
    if (!e)
        return e;
    auto document = s.document(14, "events.document");
    if (!document)
        return std::unexpected(document.error());
    e->document = std::move(*document);
    return e;
}

StoreResult<StoredEvent> read_event_text(Stmt& s) {
    auto e = read_event_columns(s);
    if (e && !s.null(14))
        e->document_text = s.text(14);
    return e;
}

StoreResult<StoredEvent> read_event_columns(Stmt& s) {
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
    e.clock_offset_ms = s.opt_i64(15);
    return e;
}

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

// ---- migrations ------------------------------------------------------------------------------

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

} // namespace sqlite_detail

// ---- SqliteStore::Impl: the parts that are not templates -----------------------------------

using namespace sqlite_detail;

SqliteStore::Impl::~Impl() {
    // Lets SQLite refresh planner statistics it found missing during this session.
    if (writer_)
        (void)writer_->exec("close", "PRAGMA optimize");
}

StoreResult<void>
SqliteStore::Impl::grouped(std::string_view op, std::size_t weight,
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
        while (!group_queue_.empty() && (members.empty() || events + group_queue_.front()->weight <=
                                                                options_.group_commit_max_events)) {
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

void SqliteStore::Impl::rollback_to(const std::string& savepoint) {
    forget_terms();
    if (!writer_->in_transaction()) {
        // SQLite ended the whole transaction itself (I/O error, disk full, ...): every
        // later call in it fails and the outermost level reports an error.
        aborted_ = true;
        return;
    }
    if (!writer_->control("rollback", "ROLLBACK TO " + savepoint) ||
        !writer_->control("rollback", "RELEASE " + savepoint)) {
        aborted_ = true;
    }
}

int SqliteStore::Impl::on_wal_commit(void* impl, sqlite3* db, const char* schema, int pages) {
    auto& self = *static_cast<Impl*>(impl);
    self.wal_pages_.store(pages, std::memory_order_relaxed);
    // The backstop SQLite's own hook would be: the committing writer checkpoints a WAL that
    // the background thread let grow this far (it failed, or is not running).
    if (self.options_.wal_autocheckpoint_pages > 0 && pages >= self.options_.wal_autocheckpoint_pages) {
        (void)sqlite3_wal_checkpoint_v2(db, schema, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    }
    return SQLITE_OK;
}

void SqliteStore::Impl::start_checkpointer() {
    if (memory_ || options_.background_checkpoint_interval.count() <= 0) {
        return;
    }
    sqlite3_wal_hook(writer_->db(), &Impl::on_wal_commit, this);
    checkpointer_ = std::jthread([this](std::stop_token stop) {
        std::unique_ptr<Connection> connection;
        std::mutex idle;
        std::condition_variable_any tick;
        while (!stop.stop_requested()) {
            {
                std::unique_lock lock(idle);
                tick.wait_for(lock, stop, options_.background_checkpoint_interval, [] { return false; });
            }
            if (stop.stop_requested()) {
                break;
            }
            if (wal_pages_.load(std::memory_order_relaxed) < options_.background_checkpoint_min_pages) {
                ++checkpoint_skips;
                continue;
            }
            if (!connection) {
                auto opened = open_connection(file_, false, options_.busy_timeout_ms);
                if (!opened) {
                    ++checkpoint_failures;
                    continue;
                }
                connection = std::move(*opened);
            }
            // The pragma, not sqlite3_wal_checkpoint_v2: a connection that has not read the
            // file yet does not know it is in WAL mode, and the C call would do nothing.
            // Its row: busy, pages in the WAL, pages copied.
            Stmt checkpoint(*connection, "PRAGMA wal_checkpoint(PASSIVE)", "checkpoint");
            auto row = checkpoint.one([](Stmt& s) -> StoreResult<std::pair<std::int64_t, std::int64_t>> {
                return std::pair{s.i64(1), s.i64(2)};
            });
            if (row) {
                ++checkpoints;
                // All copied: the next commit restarts the WAL from its start (and the hook
                // reports its new size). A commit racing this store is corrected by its
                // successor's report; until then one checkpoint may be skipped.
                if (*row && (*row)->second >= (*row)->first) {
                    wal_pages_.store(0, std::memory_order_relaxed);
                }
            } else {
                ++checkpoint_failures;
                connection.reset();
            }
        }
    });
}

StoreResult<std::unique_ptr<Connection>> SqliteStore::Impl::acquire_reader(std::string_view op) {
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

void SqliteStore::Impl::release_reader(std::unique_ptr<Connection> connection) {
    {
        std::lock_guard lock(pool_mutex_);
        idle_.push_back(std::move(connection));
    }
    pool_cv_.notify_one();
}

} // namespace bulkhead::controller
