// SqliteStore's event write path at scale: the coarse event index (event_terms, migration 2)
// answers address, port and reason filters across minutes exactly as a scan would; older
// databases are back-filled when migrated; group commit keeps concurrent batches apart
// (ids, duplicates, a failing batch alone).
#include "controller/store/store_sql.hpp"
#include "test_store_support.hpp"

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <algorithm>
#include <future>
#include <set>

using namespace bulkhead::controller;
using bulkhead::test::make;
using bulkhead::test::make_event;
using bulkhead::test::open_store;
using bulkhead::test::StoreFixture;
using bulkhead::test::TempDir;

namespace {

constexpr std::int64_t minute = 60'000'000'000;

// 60 events over 12 minutes (some before 1970, to check floor division), addresses,
// ports and reasons varying at different rates so each filter selects a different set.
std::vector<StoredEvent> spread_events() {
    std::vector<StoredEvent> events;
    for (int i = 0; i < 60; ++i) {
        auto e = make_event("hv1", static_cast<std::uint64_t>(i + 1), (i / 5 - 2) * minute + (i % 5) * 7'000'000'000);
        e.src = "10.1.0." + std::to_string(i % 3);
        e.dst = "10.9.0." + std::to_string(i % 7);
        e.dport = i % 4 == 0 ? std::nullopt : std::optional<std::uint16_t>(static_cast<std::uint16_t>(440 + i % 6));
        e.reason = i % 11 == 0 ? "decoy" : "default";
        e.workload = "vdi-00" + std::to_string(i % 2);
        events.push_back(std::move(e));
    }
    return events;
}

// What a full scan of `events` says `q` selects, oldest first.
std::vector<std::uint64_t> expected(const std::vector<StoredEvent>& events, const EventQuery& q) {
    std::vector<std::uint64_t> seqs;
    for (const auto& e : events) {
        if ((q.from_ns && e.time_ns < *q.from_ns) || (q.to_ns && e.time_ns >= *q.to_ns))
            continue;
        if (q.address && e.src != *q.address && e.dst != *q.address)
            continue;
        if (q.port && e.dport != q.port)
            continue;
        if (q.reason && e.reason != *q.reason)
            continue;
        if (q.workload && e.workload != *q.workload)
            continue;
        seqs.push_back(e.enforcer_seq);
    }
    return seqs;
}

std::vector<std::uint64_t> found(Store& s, EventQuery q) {
    q.newest_first = false;
    q.limit = 1000;
    auto r = s.query_events(q);
    REQUIRE(r);
    std::vector<std::uint64_t> seqs;
    for (const auto& e : *r)
        seqs.push_back(e.enforcer_seq);
    return seqs;
}

std::vector<EventQuery> filter_mix() {
    std::vector<EventQuery> queries;
    for (const std::string address : {"10.1.0.1", "10.9.0.3", "10.9.0.6", "192.0.2.1"}) {
        queries.push_back(make<EventQuery>([&](auto& q) { q.address = address; }));
        queries.push_back(make<EventQuery>([&](auto& q) {
            q.address = address;
            q.from_ns = -1 * minute + 3;
            q.to_ns = 4 * minute + 1;
        }));
    }
    for (std::uint16_t port : {440, 443, 445, 22}) {
        queries.push_back(make<EventQuery>([&](auto& q) { q.port = port; }));
        queries.push_back(make<EventQuery>([&](auto& q) {
            q.port = port;
            q.reason = "default";
            q.from_ns = 2 * minute;
        }));
    }
    queries.push_back(make<EventQuery>([&](auto& q) { q.reason = "decoy"; }));
    queries.push_back(make<EventQuery>([&](auto& q) {
        q.reason = "decoy";
        q.to_ns = 0;
    }));
    queries.push_back(make<EventQuery>([&](auto& q) {
        q.workload = "vdi-001";
        q.address = "10.9.0.2";
    }));
    return queries;
}

}  // namespace

TEST_CASE("store: address, port and reason filters across minutes match a full scan") {
    CHECK(sql::term_bucket(0) == 0);
    CHECK(sql::term_bucket(minute - 1) == 0);
    CHECK(sql::term_bucket(-1) == -1);
    CHECK(sql::term_bucket(-minute) == -1);
    CHECK(sql::term_bucket(-minute - 1) == -2);

    StoreFixture f;
    const auto events = spread_events();
    REQUIRE(f.store->insert_events(events));
    int non_empty = 0;
    for (const auto& q : filter_mix()) {
        const auto want = expected(events, q);
        CAPTURE(want.size());
        CHECK(found(*f.store, q) == want);
        non_empty += want.empty() ? 0 : 1;
    }
    CHECK(non_empty >= 12);  // the mix really selects something

    // Counts over time go through the same index.
    auto decoys = f.store->count_events(-2 * minute, 10 * minute, minute,
                                        make<EventQuery>([](auto& q) { q.reason = "decoy"; }));
    REQUIRE(decoys);
    std::uint64_t total = 0;
    for (const auto& b : *decoys)
        total += b.events;
    CHECK(total == expected(events, make<EventQuery>([](auto& q) { q.reason = "decoy"; })).size());
}

TEST_CASE("store: migration 2 back-fills the event index of an older database") {
    TempDir dir;
    const auto file = dir.path() / "controller.db";
    const auto events = spread_events();
    {
        // A database as the first release wrote it: migration 1 only.
        std::vector<Migration> first(sqlite_migrations().begin(), sqlite_migrations().begin() + 1);
        auto old = SqliteStore::open(file, make<SqliteStoreOptions>([&](auto& q) { q.migrations = first; }));
        REQUIRE(old);
        CHECK(*(*old)->schema_version() == 1);
    }
    {
        // Its events, written as that release wrote them (this build's store writes the
        // index too, which a version-1 file does not have).
        sqlite3* db = nullptr;
        REQUIRE(sqlite3_open(file.c_str(), &db) == SQLITE_OK);
        std::string sql = "BEGIN;";
        for (const auto& e : events) {
            sql += "INSERT INTO events (enforcer, enforcer_seq, type, time_ns, received_at, workload, direction, "
                   "reason, src, dst, protocol, dport, event_count, document) VALUES ('" +
                   e.enforcer + "', " + std::to_string(e.enforcer_seq) + ", 'drop', " + std::to_string(e.time_ns) +
                   ", 0, '" + e.workload + "', 'out', '" + e.reason + "', '" + e.src + "', '" + e.dst + "', 'tcp', " +
                   (e.dport ? std::to_string(*e.dport) : std::string("NULL")) + ", 1, '{}');";
        }
        sql += "COMMIT;";
        CHECK(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
        sqlite3_close(db);
    }
    auto s = open_store(file);
    CHECK(*s->schema_version() == static_cast<int>(sqlite_migrations().size()));
    for (const auto& q : filter_mix())
        CHECK(found(*s, q) == expected(events, q));
}

TEST_CASE("store: a new database gets the configured page size, an existing one keeps its own") {
    TempDir dir;
    auto page_size = [](const std::filesystem::path& file) {
        sqlite3* db = nullptr;
        REQUIRE(sqlite3_open(file.c_str(), &db) == SQLITE_OK);
        sqlite3_stmt* st = nullptr;
        REQUIRE(sqlite3_prepare_v2(db, "PRAGMA page_size", -1, &st, nullptr) == SQLITE_OK);
        REQUIRE(sqlite3_step(st) == SQLITE_ROW);
        const int size = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
        return size;
    };
    const auto fresh = dir.path() / "fresh.db";
    REQUIRE(SqliteStore::open(fresh));
    CHECK(page_size(fresh) == SqliteStoreOptions{}.page_size);
    const auto older = dir.path() / "older.db";
    REQUIRE(SqliteStore::open(older, make<SqliteStoreOptions>([](auto& o) { o.page_size = 4096; })));
    REQUIRE(SqliteStore::open(older));
    CHECK(page_size(older) == 4096);
}

TEST_CASE("store: a rolled-back batch leaves no index entry the next batch relies on") {
    StoreFixture f;
    auto& s = *f.store;
    auto first = make_event("hv1", 1, 5 * minute);
    first.dst = "10.9.9.9";
    // The batch is undone with the transaction around it...
    auto undone = s.in_transaction([&]() -> StoreResult<void> {
        if (auto r = s.insert_events({first}); !r)
            return std::unexpected(r.error());
        return std::unexpected(StoreError{StoreError::Kind::Conflict, "test: abandon"});
    });
    REQUIRE_FALSE(undone);
    // ...so the same address in the same minute must be indexed again, not taken as known.
    auto again = make_event("hv1", 2, 5 * minute + 1);
    again.dst = "10.9.9.9";
    REQUIRE(s.insert_events({again}));
    CHECK(found(s, make<EventQuery>([](auto& q) { q.address = "10.9.9.9"; })) == std::vector<std::uint64_t>{2});
}

TEST_CASE("store: concurrent batches share commits but keep their own results") {
    StoreFixture f;
    auto& s = *f.store;
    constexpr int kWriters = 6;
    constexpr int kBatches = 15;
    constexpr int kBatch = 300;
    std::vector<std::future<std::vector<std::int64_t>>> writers;
    for (int w = 0; w < kWriters; ++w) {
        writers.push_back(std::async(std::launch::async, [&s, w] {
            std::vector<std::int64_t> ids;
            const std::string enforcer = "hv" + std::to_string(w);
            for (int b = 0; b < kBatches; ++b) {
                std::vector<StoredEvent> batch;
                for (int i = 0; i < kBatch; ++i) {
                    // Every second batch re-sends the previous one's last 10 events.
                    const int start = b * kBatch - (b % 2 == 1 ? 10 : 0);
                    batch.push_back(make_event(enforcer, static_cast<std::uint64_t>(start + i + 1), start + i));
                }
                auto r = s.insert_events(batch);
                if (!r)
                    return std::vector<std::int64_t>{-1};
                const std::size_t resent = b % 2 == 1 ? 10 : 0;
                if (r->duplicates != resent || r->accepted != kBatch - resent || r->ids.size() != batch.size())
                    return std::vector<std::int64_t>{-2};
                for (std::size_t i = 0; i < r->ids.size(); ++i) {
                    if ((i < resent) != (r->ids[i] == 0))
                        return std::vector<std::int64_t>{-3};
                    if (r->ids[i] != 0)
                        ids.push_back(r->ids[i]);
                }
            }
            return ids;
        }));
    }
    std::set<std::int64_t> all;
    std::size_t count = 0;
    for (auto& w : writers) {
        REQUIRE(w.wait_for(std::chrono::seconds(120)) == std::future_status::ready);
        const auto ids = w.get();
        REQUIRE_FALSE(ids.empty());
        CHECK(ids.front() > 0);  // not an error marker
        CHECK(std::is_sorted(ids.begin(), ids.end()));  // one writer's batches in order
        all.insert(ids.begin(), ids.end());
        count += ids.size();
    }
    CHECK(all.size() == count);  // every id once
    // Each id is the row the store holds for that event (read in pages of 10,000).
    std::set<std::int64_t> stored_ids;
    std::int64_t after = 0;
    for (int page = 0; page < 10; ++page) {
        auto stored = s.query_events(make<EventQuery>([&](auto& q) {
            q.limit = 10000;
            q.newest_first = false;
            q.after_id = after;
        }));
        REQUIRE(stored);
        if (stored->empty())
            break;
        for (const auto& e : *stored)
            stored_ids.insert(e.id);
        after = stored->back().id;
    }
    CHECK(stored_ids.size() == count);
    CHECK(stored_ids == all);
}
