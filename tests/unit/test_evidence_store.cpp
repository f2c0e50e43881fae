// Tamper evidence over a real SQLite store: every stream is chained as it is written, an
// untouched store verifies, and each kind of tampering an attacker with write access to the
// database could do is found and the first broken record named. The tampering is done with
// raw SQL on the file, as an attacker would, not through the store.
#include "controller/evidence/evidence_records.hpp"
#include "controller/services/evidence_service.hpp"
#include "test_store_support.hpp"

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <cstring>
#include <fstream>
#include <sstream>

using namespace bulkhead;
using namespace bulkhead::controller;
using bulkhead::test::make_event;
using bulkhead::test::TempDir;

namespace {

struct Lab {
    TempDir dir;
    std::filesystem::path file = dir.path() / "controller.db";
    std::unique_ptr<SqliteStore> store = test::open_store(file);
    evidence::SigningKey key = *evidence::SigningKey::generate();
    std::filesystem::path checkpoints = dir.path() / "checkpoints.jsonl";
    TimeMs now = 1'765'000'000'000;

    // 30 events, 4 audit entries, an incident opened and updated, a quarantine made and
    // released: every stream has records.
    void fill(std::uint64_t first_seq = 1, std::size_t events = 30) {
        std::vector<StoredEvent> batch;
        for (std::uint64_t i = 0; i < events; ++i) {
            auto e = make_event("hv1", first_seq + i, 1'000 + static_cast<std::int64_t>(first_seq + i));
            e.document_text = R"({"seq":)" + std::to_string(first_seq + i) + R"(,"src":"10.1.0.1","note":"é|="})";
            batch.push_back(std::move(e));
        }
        REQUIRE(store->insert_events(batch));
        for (int i = 0; i < 4; ++i) {
            AuditEntry a;
            a.at = now + i;
            a.actor = "alice";
            a.role = "admin";
            a.action = "policy.activate";
            a.target = "revision/" + std::to_string(i);
            a.after = {{"id", i}};
            REQUIRE(store->append_audit(a));
        }
        Incident incident;
        incident.source_workload = "vdi-001";
        incident.severity = "high";
        incident.title = "scan";
        incident.opened_at = incident.updated_at = now;
        auto added = store->add_incident(incident);
        REQUIRE(added);
        added->event_count = 9;
        added->updated_at = now + 5;
        REQUIRE(store->update_incident(*added));
        Quarantine q;
        q.workload = "vdi-001";
        q.reason = "scan";
        q.actor = "analyzer";
        q.automatic = true;
        q.created_at = now;
        REQUIRE(store->add_quarantine(q));
        REQUIRE(store->release_quarantine("vdi-001", now + 10, "alice"));
    }

    std::string checkpoint() {
        EvidenceCheckpointer checkpointer(*store, *evidence::SigningKey::from_pem(key.private_pem()),
                                          EvidenceCheckpointerOptions{"test", checkpoints, std::chrono::milliseconds(60000)},
                                          [this] { return ++now; });
        auto done = checkpointer.checkpoint_now();
        REQUIRE(done);
        return evidence::to_json_line(*done);
    }

    EvidenceVerification verify(bool with_file = true) {
        EvidenceVerifyOptions options;
        options.public_key = key.public_key();
        options.page = 7;  // several pages per stream
        if (with_file && std::filesystem::exists(checkpoints)) {
            std::ifstream in(checkpoints);
            std::ostringstream text;
            text << in.rdbuf();
            auto lines = read_checkpoint_lines(text.str(), checkpoints.string());
            REQUIRE(lines);
            for (auto& line : *lines)
                options.checkpoints.emplace_back(std::move(line), checkpoints.string());
        }
        return verify_evidence(*store, options);
    }

    // What an attacker does with the file: raw SQL, no store.
    void tamper(const std::string& sql) {
        sqlite3* db = nullptr;
        REQUIRE(sqlite3_open(file.c_str(), &db) == SQLITE_OK);
        char* error = nullptr;
        const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
        const std::string message = error ? error : "";
        sqlite3_free(error);
        sqlite3_close(db);
        REQUIRE_MESSAGE(rc == SQLITE_OK, message);
    }
};

std::string first_break(const EvidenceVerification& v) {
    return v.first_break ? evidence::describe(*v.first_break) : std::string("none");
}

}  // namespace

TEST_CASE("evidence store: every stream is chained as it is stored and an untouched store verifies") {
    Lab lab;
    lab.fill();
    lab.checkpoint();
    lab.fill(31, 5);
    const auto v = lab.verify();
    INFO(describe(v));
    CHECK(v.ok());
    REQUIRE(v.streams.size() == 4);
    CHECK(v.streams[0].verified == 35);  // drops
    CHECK(v.streams[1].verified == 4);   // incidents: opened, updated, twice
    CHECK(v.streams[2].verified == 4);   // quarantines: made, released, twice
    CHECK(v.streams[3].verified == 8);   // audit
    CHECK(v.checkpoints_checked == 2);   // the file's and the database's copy

    // The heads a checkpoint signs are those the chains reach.
    auto drops = lab.store->evidence_head(evidence::Stream::Drops);
    REQUIRE(drops);
    CHECK(drops->sequence == 35);
    CHECK(drops->hash == v.streams[0].head.hash);

    // The stored link of an event is the hash of its canonical bytes.
    auto records = lab.store->evidence_records(evidence::Stream::Drops, 0, 1);
    REQUIRE(records);
    REQUIRE(records->size() == 1);
    evidence::Sha256 hasher;
    CHECK(evidence::link_hash(hasher, evidence::Stream::Drops, 1, evidence::Digest{}, (*records)[0].record) ==
          (*records)[0].hash);
    CHECK((*records)[0].record.find(R"("note":"é|=")") != std::string::npos);  // the document's exact bytes
}

TEST_CASE("evidence store: each kind of tampering is found and the first broken record named") {
    SUBCASE("a changed byte in one event") {
        Lab lab;
        lab.fill();
        lab.tamper("UPDATE events SET document = replace(document, '10.1.0.1', '10.1.0.9') WHERE id = 12");
        const auto v = lab.verify();
        CHECK_FALSE(v.ok());
        CHECK(first_break(v).starts_with("drops #12: altered"));
    }
    SUBCASE("a changed column of one event") {
        Lab lab;
        lab.fill();
        lab.tamper("UPDATE events SET dport = 22 WHERE id = 3");
        CHECK(first_break(lab.verify()).starts_with("drops #3: altered"));
    }
    SUBCASE("a deleted event") {
        Lab lab;
        lab.fill();
        lab.tamper("DELETE FROM events WHERE id = 17");
        CHECK(first_break(lab.verify()).starts_with("drops #17: missing"));
    }
    SUBCASE("a deleted audit entry") {
        Lab lab;
        lab.fill();
        lab.tamper("DELETE FROM audit_log WHERE chain_seq = 2");
        CHECK(first_break(lab.verify()).starts_with("audit #2: missing"));
    }
    SUBCASE("an audit entry rewritten") {
        Lab lab;
        lab.fill();
        lab.tamper("UPDATE audit_log SET actor = 'mallory' WHERE chain_seq = 3");
        CHECK(first_break(lab.verify()).starts_with("audit #3: altered"));
    }
    SUBCASE("two events swapped") {
        Lab lab;
        lab.fill();
        lab.tamper("UPDATE events SET enforcer_seq = -enforcer_seq WHERE id IN (8, 9);"
                   "UPDATE events SET id = -id WHERE id IN (8, 9);"
                   "UPDATE events SET id = 9 WHERE id = -8; UPDATE events SET id = 8 WHERE id = -9;"
                   "UPDATE events SET enforcer_seq = -enforcer_seq WHERE enforcer_seq < 0");
        CHECK(first_break(lab.verify()).starts_with("drops #8: altered"));
    }
    SUBCASE("an incident change rewritten") {
        Lab lab;
        lab.fill();
        lab.tamper("UPDATE evidence_changes SET record = replace(record, 'high', 'low!') "
                   "WHERE stream = 'incidents' AND sequence = 1");
        CHECK(first_break(lab.verify()).starts_with("incidents #1: altered"));
    }
    SUBCASE("events deleted from the end, after a checkpoint named them") {
        Lab lab;
        lab.fill();
        lab.checkpoint();
        lab.tamper("DELETE FROM events WHERE id > 25");
        const auto v = lab.verify();
        CHECK(first_break(v).starts_with("drops #26: truncated"));
        // Without the checkpoints nothing shows: the tail is simply shorter.
        lab.tamper("DELETE FROM evidence_checkpoints");
        CHECK(lab.verify(false).ok());
    }
    SUBCASE("a rewritten chain, consistent in itself, contradicts an exported checkpoint") {
        Lab lab;
        lab.fill();
        lab.checkpoint();
        lab.fill(31, 5);
        // The attacker changes event 10 and recomputes every link after it, and removes the
        // database's own checkpoints: the database alone now verifies.
        lab.tamper("UPDATE events SET workload = 'vdi-999' WHERE id = 10; DELETE FROM evidence_checkpoints");
        {
            auto records = lab.store->evidence_records(evidence::Stream::Drops, 9, 1000);
            REQUIRE(records);
            auto start = lab.store->evidence_records(evidence::Stream::Drops, 8, 1);
            REQUIRE(start);
            evidence::ChainAppender chain(evidence::Stream::Drops, {9, *(*start)[0].hash});
            std::string sql;
            for (const auto& r : *records) {
                const auto link = chain.append(r.record);
                sql += "UPDATE events SET chain_hash = x'" + evidence::to_hex(link.hash) + "' WHERE id = " +
                       std::to_string(r.sequence) + ";";
            }
            lab.tamper(sql);
        }
        CHECK(lab.verify(false).ok());
        const auto v = lab.verify(true);
        CHECK(first_break(v).starts_with("drops #30: checkpoint-mismatch"));
        CHECK(first_break(v).find("#1 to here") != std::string::npos);
    }
    SUBCASE("an altered checkpoint line is refused, not used") {
        Lab lab;
        lab.fill();
        std::string line = lab.checkpoint();
        const auto at = line.find("\"sequence\":30");
        REQUIRE(at != std::string::npos);
        line.replace(at, 13, "\"sequence\":29");
        std::ofstream(lab.checkpoints) << line << "\n";
        const auto v = lab.verify();
        CHECK_FALSE(v.ok());
        REQUIRE(v.problems.size() == 1);
        CHECK(v.problems[0].find("the signature does not verify") != std::string::npos);
    }
}

TEST_CASE("evidence store: a signing key is created once, kept private, and its public half written beside it") {
    TempDir dir;
    const auto file = dir.path() / "evidence" / "signing-key.pem";
    auto first = load_or_create_signing_key(file);
    REQUIRE(first);
    CHECK((std::filesystem::status(file).permissions() & std::filesystem::perms::group_read) ==
          std::filesystem::perms::none);
    auto again = load_or_create_signing_key(file);
    REQUIRE(again);
    CHECK(first->public_key() == again->public_key());
    auto public_key = load_public_key(file.string() + ".pub");
    REQUIRE(public_key);
    CHECK(*public_key == first->public_key());
    std::ofstream(dir.path() / "bad.pub") << "not a key\n";
    auto bad = load_public_key(dir.path() / "bad.pub");
    REQUIRE_FALSE(bad);
    CHECK(bad.error().find("64 hexadecimal digits") != std::string::npos);
}
