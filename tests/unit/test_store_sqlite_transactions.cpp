// SqliteStore: in_transaction, threads, migrations and reopening.
#include "test_store_support.hpp"

#include <atomic>
#include <chrono>
#include <doctest/doctest.h>
#include <filesystem>
#include <future>
#include <thread>

using namespace bulkhead::controller;
using bulkhead::test::make;
using bulkhead::test::make_event;
using bulkhead::test::open_store;
using bulkhead::test::StoreFixture;
using bulkhead::test::TempDir;
using Kind = StoreError::Kind;

namespace {

AuditEntry audit(std::string action) {
    return {0, 1, "alice", "admin", std::move(action), "workload/vdi-001", nullptr, {{"x", 1}}};
}

Quarantine quarantine(std::string workload) {
    Quarantine q;
    q.workload = std::move(workload);
    q.reason = "test";
    q.actor = "alice";
    q.created_at = 1;
    return q;
}

StoreError stop() {
    return StoreError{Kind::Invalid, "stop"};
}

} // namespace

TEST_CASE("store: in_transaction commits a change and its audit entry together") {
    StoreFixture f;
    auto& s = *f.store;
    auto tx = s.in_transaction([&]() -> StoreResult<void> {
        auto q = s.add_quarantine(quarantine("vdi-001"));
        if (!q)
            return std::unexpected(q.error());
        auto a = s.append_audit(audit("quarantine.create"));
        if (!a)
            return std::unexpected(a.error());
        return {};
    });
    REQUIRE(tx);
    CHECK(s.active_quarantine("vdi-001")->has_value());
    CHECK(s.query_audit({})->size() == 1);
}

TEST_CASE("store: in_transaction rolls back every call inside when work fails") {
    StoreFixture f;
    auto& s = *f.store;
    REQUIRE(s.put_setting("keep", "1"));
    auto tx = s.in_transaction([&]() -> StoreResult<void> {
        REQUIRE(s.add_quarantine(quarantine("vdi-001")));
        REQUIRE(s.append_audit(audit("quarantine.create")));
        REQUIRE(s.insert_events({make_event("hv1", 1, 1)}));
        REQUIRE(s.upsert_workloads({{"vdi-001", "hv1", {{"addresses", {"10.0.0.1"}}}, 1}}));
        REQUIRE(s.put_setting("keep", "2"));
        // A nested in_transaction joins the outer one: its commit is not final.
        REQUIRE(
            s.in_transaction([&]() -> StoreResult<void> { return s.put_setting("nested", "x"); }));
        // Reads on this thread see the uncommitted changes.
        CHECK(s.active_quarantine("vdi-001")->has_value());
        CHECK(s.get_setting("nested")->has_value());
        CHECK(*s.inventory_version() == 1);
        return std::unexpected(stop());
    });
    REQUIRE_FALSE(tx);
    CHECK(tx.error().message == "stop");
    CHECK_FALSE(s.active_quarantine("vdi-001")->has_value());
    CHECK(s.query_audit({})->empty());
    CHECK(*s.last_event_seq("hv1") == 0);
    CHECK(s.list_workloads()->empty());
    CHECK(*s.inventory_version() == 0);
    CHECK(s.get_setting("keep")->value() == "1");
    CHECK_FALSE(s.get_setting("nested")->has_value());
}

TEST_CASE("store: a failing call inside in_transaction is undone alone; work decides the rest") {
    StoreFixture f;
    auto& s = *f.store;
    REQUIRE(s.add_quarantine(quarantine("vdi-001")));

    SUBCASE("work treats the Conflict as the idempotent case and commits") {
        auto tx = s.in_transaction([&]() -> StoreResult<void> {
            REQUIRE(s.append_audit(audit("quarantine.create")));
            auto q = s.add_quarantine(quarantine("vdi-001"));
            CHECK((!q && q.error().kind == Kind::Conflict));
            return {};
        });
        REQUIRE(tx);
        CHECK(s.query_audit({})->size() == 1);
        CHECK(s.active_quarantines()->size() == 1);
    }
    SUBCASE("a multi-statement call failing half-way leaves nothing of itself") {
        REQUIRE(s.insert_events({make_event("hv1", 1, 1)}));
        auto events = s.query_events({});
        REQUIRE(events);
        Incident in;
        in.source_workload = "vdi-001";
        auto incident = s.add_incident(in);
        REQUIRE(incident);
        auto tx = s.in_transaction([&]() -> StoreResult<void> {
            REQUIRE(s.put_setting("outer", "1"));
            auto linked = s.link_incident_events(incident->id, {events->front().id, 424242});
            CHECK_FALSE(linked);
            CHECK(s.incident_events(incident->id, 10)->empty()); // its first link was undone
            return {};
        });
        REQUIRE(tx);
        CHECK(s.get_setting("outer")->value() == "1");
        CHECK(s.incident_events(incident->id, 10)->empty());
    }
    SUBCASE("a nested in_transaction that fails is undone; the outer can still commit") {
        auto tx = s.in_transaction([&]() -> StoreResult<void> {
            REQUIRE(s.put_setting("outer", "1"));
            auto inner = s.in_transaction([&]() -> StoreResult<void> {
                REQUIRE(s.put_setting("inner", "1"));
                return std::unexpected(stop());
            });
            CHECK_FALSE(inner);
            CHECK_FALSE(s.get_setting("inner")->has_value());
            return {};
        });
        REQUIRE(tx);
        CHECK(s.get_setting("outer")->has_value());
        CHECK_FALSE(s.get_setting("inner")->has_value());
    }
    SUBCASE("an exception from work rolls back and releases the write lock") {
        CHECK_THROWS_AS(s.in_transaction([&]() -> StoreResult<void> {
            REQUIRE(s.put_setting("thrown", "1"));
            throw std::runtime_error("boom");
        }),
                        std::runtime_error);
        CHECK_FALSE(s.get_setting("thrown")->has_value());
        // Another thread can write: the lock was released.
        auto other =
            std::async(std::launch::async, [&] { return s.put_setting("after", "1").has_value(); });
        REQUIRE(other.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
        CHECK(other.get());
    }
}

TEST_CASE("store: other threads read committed state and wait to write during a transaction") {
    StoreFixture f;
    auto& s = *f.store;
    std::promise<void> written;
    std::promise<void> finish;
    auto finish_future = finish.get_future();
    std::atomic<bool> committed{false};

    auto owner = std::async(std::launch::async, [&] {
        return s.in_transaction([&]() -> StoreResult<void> {
            if (auto r = s.put_setting("tx", "1"); !r)
                return r;
            written.set_value();
            finish_future.wait_for(std::chrono::seconds(10));
            committed = true;
            return {};
        });
    });
    REQUIRE(written.get_future().wait_for(std::chrono::seconds(10)) == std::future_status::ready);
    // A reader on another thread is not blocked and does not see the uncommitted write.
    auto seen = s.get_setting("tx");
    REQUIRE(seen);
    CHECK_FALSE(seen->has_value());
    // A writer on another thread waits for the transaction to end.
    auto writer = std::async(std::launch::async, [&] {
        auto r = s.put_setting("other", "1");
        return r.has_value() && committed.load();
    });
    CHECK(writer.wait_for(std::chrono::milliseconds(100)) == std::future_status::timeout);
    finish.set_value();
    REQUIRE(owner.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
    CHECK(owner.get());
    REQUIRE(writer.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
    CHECK(writer.get());
    CHECK(s.get_setting("tx")->value() == "1");
}

TEST_CASE("store: concurrent event writers and readers (smoke)") {
    StoreFixture f;
    auto& s = *f.store;
    constexpr int kWriters = 3;
    constexpr int kBatches = 10;
    constexpr int kBatch = 200;
    std::atomic<bool> done{false};
    std::atomic<int> read_failures{0};
    std::atomic<int> reads{0};

    std::vector<std::future<bool>> writers;
    for (int w = 0; w < kWriters; ++w) {
        writers.push_back(std::async(std::launch::async, [&, w] {
            const std::string enforcer = "hv" + std::to_string(w);
            for (int b = 0; b < kBatches; ++b) {
                std::vector<StoredEvent> batch;
                for (int i = 0; i < kBatch; ++i) {
                    const auto seq = static_cast<std::uint64_t>(b * kBatch + i + 1);
                    batch.push_back(make_event(enforcer, seq, static_cast<std::int64_t>(seq)));
                }
                auto r = s.insert_events(batch);
                if (!r || r->accepted != kBatch)
                    return false;
            }
            return true;
        }));
    }
    std::vector<std::future<void>> readers;
    for (int r = 0; r < 2; ++r) {
        readers.push_back(std::async(std::launch::async, [&] {
            std::uint64_t last = 0;
            while (!done.load()) {
                auto seq = s.last_event_seq("hv0");
                auto page = s.query_events(make<EventQuery>([&](auto& q) { q.limit = 50; }));
                auto counts = s.count_events(0, 1'000'000, 1000, {});
                if (!seq || !page || !counts || *seq < last)
                    ++read_failures;
                if (seq)
                    last = *seq;
                ++reads;
            }
        }));
    }
    for (auto& w : writers) {
        REQUIRE(w.wait_for(std::chrono::seconds(60)) == std::future_status::ready);
        CHECK(w.get());
    }
    done = true;
    for (auto& r : readers)
        REQUIRE(r.wait_for(std::chrono::seconds(60)) == std::future_status::ready);
    CHECK(read_failures.load() == 0);
    CHECK(reads.load() > 0);
    auto total = s.count_events(0, 1'000'000, 1'000'000, {});
    REQUIRE(total);
    REQUIRE(total->size() == 1);
    CHECK((*total)[0].events == kWriters * kBatches * kBatch);
    for (int w = 0; w < kWriters; ++w) {
        CHECK(*s.last_event_seq("hv" + std::to_string(w)) == kBatches * kBatch);
    }
}

TEST_CASE("store: migrations are applied once; reopening keeps the data") {
    TempDir dir;
    const auto file = dir.path() / "controller.db";
    {
        auto s = open_store(file);
        CHECK(*s->schema_version() == static_cast<int>(sqlite_migrations().size()));
        REQUIRE(s->put_setting("k", "v"));
        REQUIRE(s->insert_events({make_event("hv1", 7, 1)}));
    }
    {
        auto s = open_store(file);
        CHECK(s->get_setting("k")->value() == "v");
        CHECK(*s->last_event_seq("hv1") == 7);
    }

    // A later build adds migration N+1: applied once, on the first open only. It inserts a
    // row with a fixed key, so applying it twice would fail the open.
    std::vector<Migration> next(sqlite_migrations().begin(), sqlite_migrations().end());
    const int added = static_cast<int>(next.size()) + 1;
    next.push_back({added, "test: notes table",
                    "CREATE TABLE test_notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);"
                    "INSERT INTO settings (key, value) VALUES ('migrated', 'yes');"});
    for (int round = 0; round < 2; ++round) {
        CAPTURE(round);
        auto s = SqliteStore::open(file,
                                   make<SqliteStoreOptions>([&](auto& q) { q.migrations = next; }));
        REQUIRE(s);
        CHECK(*(*s)->schema_version() == added);
        CHECK((*s)->get_setting("migrated")->value() == "yes");
        CHECK((*s)->get_setting("k")->value() == "v");
    }

    SUBCASE("a database from a newer build is refused") {
        auto old = SqliteStore::open(file);
        REQUIRE_FALSE(old);
        CHECK(old.error().kind == Kind::Invalid);
        CHECK(old.error().message.find("newer than this build") != std::string::npos);
    }
}

TEST_CASE("store: a failing migration is rolled back and reported") {
    TempDir dir;
    const auto file = dir.path() / "controller.db";
    std::vector<Migration> broken(sqlite_migrations().begin(), sqlite_migrations().end());
    const int added = static_cast<int>(broken.size()) + 1;
    broken.push_back({added, "test: broken", "CREATE TABLE half_done (a TEXT); SELEC nonsense;"});
    auto failed =
        SqliteStore::open(file, make<SqliteStoreOptions>([&](auto& q) { q.migrations = broken; }));
    REQUIRE_FALSE(failed);
    CHECK(failed.error().kind == Kind::Io);
    CHECK(failed.error().message.find("migration " + std::to_string(added)) != std::string::npos);

    // The earlier migrations stay; the broken one left no table behind.
    auto s = open_store(file);
    CHECK(*s->schema_version() == added - 1);
    s.reset();
    std::vector<Migration> fixed(sqlite_migrations().begin(), sqlite_migrations().end());
    fixed.push_back({added, "test: fixed", "CREATE TABLE half_done (a TEXT);"});
    auto repaired =
        SqliteStore::open(file, make<SqliteStoreOptions>([&](auto& q) { q.migrations = fixed; }));
    REQUIRE(repaired);
    CHECK(*(*repaired)->schema_version() == added);
}

TEST_CASE("store: misnumbered migrations and unusable paths are refused") {
    TempDir dir;
    const Migration gap[] = {{1, "one", "CREATE TABLE a (x TEXT);"},
                             {3, "three", "CREATE TABLE b (x TEXT);"}};
    auto misnumbered = SqliteStore::open(
        dir.path() / "a.db", make<SqliteStoreOptions>([&](auto& q) { q.migrations = gap; }));
    REQUIRE_FALSE(misnumbered);
    CHECK(misnumbered.error().kind == Kind::Invalid);

    auto missing_dir = SqliteStore::open(dir.path() / "no" / "such" / "dir" / "c.db");
    REQUIRE_FALSE(missing_dir);
    CHECK(missing_dir.error().kind == Kind::Io);
    CHECK(missing_dir.error().message.find("open ") == 0);
}

TEST_CASE("store: the WAL is checkpointed in the background, not by the commit that fills it") {
    TempDir dir;
    const auto file = dir.path() / "bulkhead.db";
    auto opened = SqliteStore::open(file, make<SqliteStoreOptions>([](auto& o) {
        o.wal_autocheckpoint_pages = 1'000'000;  // the writer would never checkpoint by itself
        o.background_checkpoint_interval = std::chrono::milliseconds(20);
        o.background_checkpoint_min_pages = 1;
    }));
    REQUIRE(opened);
    auto& store = **opened;
    const auto database_bytes = std::filesystem::file_size(file);
    for (int i = 0; i < 200; ++i) {
        REQUIRE(store.append_audit(audit("action-" + std::to_string(i))));
    }
    // Polled with a deadline: the checkpointer copies the WAL's pages into the database file.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline &&
           (store.background_checkpoints() == 0 || std::filesystem::file_size(file) <= database_bytes)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK(store.background_checkpoints() > 0);
    CHECK(store.background_checkpoint_failures() == 0);
    CHECK(std::filesystem::file_size(file) > database_bytes);

}

TEST_CASE("store: a small WAL is left alone until it holds background_checkpoint_min_pages pages") {
    // Each checkpoint that empties the WAL costs the next commit a synced WAL restart; a
    // WAL below the minimum is not checkpointed, so an idle controller's next write (a
    // quarantine) does not pay that sync.
    TempDir dir;
    const auto file = dir.path() / "bulkhead.db";
    // Created and closed first: the schema's pages leave the WAL when the file is closed, so
    // the WAL below starts empty.
    REQUIRE(SqliteStore::open(file));
    auto opened = SqliteStore::open(file, make<SqliteStoreOptions>([](auto& o) {
        o.wal_autocheckpoint_pages = 1'000'000;
        o.background_checkpoint_interval = std::chrono::milliseconds(10);
        o.background_checkpoint_min_pages = 64;
    }));
    REQUIRE(opened);
    auto& store = **opened;
    REQUIRE(store.append_audit(audit("one small write")));
    auto wait_for = [](auto done) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (!done() && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        return done();
    };
    // The checkpointer has looked three times and found the WAL too small each time.
    REQUIRE(wait_for([&] { return store.background_checkpoint_skips() >= 3; }));
    CHECK(store.background_checkpoints() == 0);
    // Past the minimum (each audit commit writes at least one page), it checkpoints.
    for (int i = 0; i < 200; ++i) {
        REQUIRE(store.append_audit(audit("action-" + std::to_string(i))));
    }
    CHECK(wait_for([&] { return store.background_checkpoints() > 0; }));
    CHECK(store.background_checkpoint_failures() == 0);
    const auto skipped = store.background_checkpoint_skips();
    // Emptied: the WAL is small again, so the next looks are skips, not checkpoints.
    REQUIRE(store.append_audit(audit("after the checkpoint")));
    const auto checkpoints = store.background_checkpoints();
    CHECK(wait_for([&] { return store.background_checkpoint_skips() >= skipped + 3; }));
    CHECK(store.background_checkpoints() <= checkpoints + 1);
}
