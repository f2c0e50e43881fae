// SqliteStore: opening a file (pragmas, migrations), the schema version, caller-visible
// transactions (Transactions) and settings (SettingsRepository). Each domain's methods are
// in their own sqlite_*.cpp; what they share is in sqlite_connection.{hpp,cpp}.
#include "controller/store/sqlite_connection.hpp"

#include <algorithm>
#include <string>

namespace bulkhead::controller {

using namespace sqlite_detail;

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
    impl->start_checkpointer();
    return std::unique_ptr<SqliteStore>(new SqliteStore(std::move(impl)));
}

std::uint64_t SqliteStore::background_checkpoints() const { return impl_->checkpoints.load(); }

std::uint64_t SqliteStore::background_checkpoint_failures() const { return impl_->checkpoint_failures.load(); }

std::uint64_t SqliteStore::background_checkpoint_skips() const { return impl_->checkpoint_skips.load(); }

StoreResult<int> SqliteStore::schema_version() {
    return impl_->read("schema_version",
                       [](Connection& c) { return current_version(c, "schema_version"); });
}

StoreResult<void> SqliteStore::in_transaction(const std::function<StoreResult<void>()>& work) {
    return impl_->write("in_transaction", [&](Connection&) { return work(); });
}

// ---- settings ------------------------------------------------------------------------------

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
