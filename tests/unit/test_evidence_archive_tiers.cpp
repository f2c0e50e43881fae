// The drop log's tiers over a real SQLite store and real segment files, with the clock in the
// test's hand ("a year in miniature": minutes for the hot period, seconds for a segment):
// whole periods move to signed segments, queries across the boundary return exactly what was
// stored, expired segments go away with an audit entry, and verification covers the archive
// and finds a segment that was truncated or removed.
#include "controller/services/evidence_archive.hpp"
#include "controller/services/evidence_service.hpp"
#include "controller/services/service_support.hpp"
#include "controller/services/siem_export.hpp"
#include "test_store_support.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <mutex>
#include <thread>

using namespace bulkhead;
using namespace bulkhead::controller;
using bulkhead::test::make_event;

namespace {

constexpr TimeMs kMinute = 60'000;

struct TierLab {
    test::StoreFixture fixture;
    SqliteStore& store = *fixture.store;
    evidence::SigningKey key = *evidence::SigningKey::generate();
    TimeMs now = 1'765'000'000'000 - (1'765'000'000'000 % kMinute);
    std::uint64_t next_seq = 1;
    EvidenceArchive archive{[this] {
                                EvidenceArchiveOptions o;
                                o.directory = fixture.dir.path() / "archive";
                                o.hot_period = std::chrono::minutes(10);
                                o.segment_period = std::chrono::minutes(1);
                                o.retention = std::chrono::minutes(30);
                                o.read_batch = 13;  // several reads per segment
                                return o;
                            }(),
                            store, store, &key, [this] { return now; }};

    // `count` events received at `now`, alternating two workloads and addresses.
    void receive(std::size_t count) {
        std::vector<StoredEvent> batch;
        for (std::size_t i = 0; i < count; ++i) {
            auto e = make_event("hv1", next_seq, now * 1'000'000 + static_cast<std::int64_t>(i));
            e.received_at = now;
            e.workload = next_seq % 2 ? "vdi-odd" : "vdi-even";
            e.src = next_seq % 2 ? "10.1.0.1" : "10.1.0.2";
            e.document_text = R"({"seq":)" + std::to_string(next_seq) + R"(,"workload":")" + e.workload + R"("})";
            ++next_seq;
            batch.push_back(std::move(e));
        }
        REQUIRE(store.insert_events(batch));
    }

    std::vector<std::int64_t> ids(const std::vector<StoredEvent>& events) {
        std::vector<std::int64_t> out;
        for (const auto& e : events)
            out.push_back(e.id);
        return out;
    }

    // What EventService does: the database, then the archive for older ids.
    std::vector<std::int64_t> query_all(EventQuery q) {
        q.newest_first = false;
        q.limit = 10'000;
        auto archived = archive.query_archived(q);
        REQUIRE(archived);
        auto stored = store.query_events(q);
        REQUIRE(stored);
        auto out = ids(*archived);
        for (auto id : ids(*stored))
            out.push_back(id);
        return out;
    }

    EvidenceVerification verify(const std::vector<ArchiveSegmentInfo>& segments) {
        EvidenceVerifyOptions options;
        options.public_key = key.public_key();
        auto v = verify_evidence(store, options);
        verify_archive(segments, store, store, key.public_key(), v);
        return v;
    }
    EvidenceVerification verify() { return verify(archive.segments()); }
    // As bulkheadctl does: the segments the directory holds now, not those the archive knows.
    EvidenceVerification verify_on_disk() {
        auto listed = list_archive_segments(fixture.dir.path() / "archive");
        REQUIRE(listed);
        return verify(*listed);
    }
};

std::vector<std::int64_t> range(std::int64_t from, std::int64_t to) {
    std::vector<std::int64_t> out;
    for (auto i = from; i <= to; ++i)
        out.push_back(i);
    return out;
}

}  // namespace

TEST_CASE("evidence archive: whole periods older than the hot tier move to segments; queries see no boundary") {
    TierLab lab;
    REQUIRE(lab.archive.load());
    // 20 minutes of traffic, 7 events a minute.
    for (int minute = 0; minute < 20; ++minute) {
        lab.receive(7);
        lab.now += kMinute;
    }
    auto pass = lab.archive.run_once();
    REQUIRE(pass);
    // The first 10 minutes are older than the hot tier (now - 10 min): one segment each.
    CHECK(pass->first == 10);
    CHECK(pass->second == 0);
    CHECK(lab.archive.archived_through() == 70);
    CHECK(lab.archive.segments().size() == 10);
    EventQuery everything;
    everything.limit = 10'000;
    everything.newest_first = false;
    auto in_db = lab.store.query_events(everything);
    REQUIRE(in_db);
    CHECK(lab.ids(*in_db) == range(71, 140));
    auto start = lab.store.evidence_chain_start(evidence::Stream::Drops);
    REQUIRE(start);
    CHECK(start->sequence == 70);

    // Across the boundary: everything, a workload, an address, a time range.
    CHECK(lab.query_all({}) == range(1, 140));
    std::vector<std::int64_t> odd;
    for (std::int64_t i = 1; i <= 140; i += 2)
        odd.push_back(i);
    EventQuery by_workload;
    by_workload.workload = "vdi-odd";
    CHECK(lab.query_all(by_workload) == odd);
    EventQuery by_address;
    by_address.address = "10.1.0.1";
    CHECK(lab.query_all(by_address) == odd);
    const TimeMs first_minute = lab.now - 20 * kMinute;
    EventQuery by_time;
    by_time.from_ns = (first_minute + 8 * kMinute) * 1'000'000;   // minutes 8..11: 2 archived, 2 hot
    by_time.to_ns = (first_minute + 12 * kMinute) * 1'000'000;
    CHECK(lab.query_all(by_time) == range(57, 84));
    // An archived event comes back whole: columns and document.
    EventQuery one;
    one.after_id = 4;
    one.limit = 1;
    one.newest_first = false;
    auto archived = lab.archive.query_archived(one);
    REQUIRE(archived);
    REQUIRE(archived->size() == 1);
    CHECK((*archived)[0].id == 5);
    CHECK((*archived)[0].workload == "vdi-odd");
    CHECK((*archived)[0].document["seq"] == 5);

    // The audit log says what was sealed, and everything verifies, archive and database.
    AuditQuery sealed;
    sealed.action = "evidence.archive.seal";
    auto audit = lab.store.query_audit(sealed);
    REQUIRE(audit);
    CHECK(audit->size() == 10);
    auto v = lab.verify();
    INFO(describe(v));
    CHECK(v.ok());
    CHECK(v.streams[0].verified == 140);

    // New events keep the chain going after the archive's last link.
    lab.receive(3);
    CHECK(lab.verify().ok());
}

TEST_CASE("evidence archive: expired segments go away, the expiry is audited, and verification starts after them") {
    TierLab lab;
    REQUIRE(lab.archive.load());
    for (int minute = 0; minute < 50; ++minute) {
        lab.receive(2);
        lab.now += kMinute;
        REQUIRE(lab.archive.run_once());
    }
    // Hot: the last 10 minutes. Kept: segments whose period ended less than 30 minutes ago.
    const auto segments = lab.archive.segments();
    REQUIRE_FALSE(segments.empty());
    CHECK(segments.size() <= 31);
    CHECK(segments.front().period_end + 30 * kMinute >= lab.now);
    AuditQuery expired;
    expired.action = "evidence.archive.expire";
    auto audit = lab.store.query_audit(expired);
    REQUIRE(audit);
    CHECK(audit->size() == lab.archive.figures().expired);
    CHECK(audit->size() >= 9);
    CHECK(audit->front().actor == "retention");
    auto v = lab.verify();
    INFO(describe(v));
    CHECK(v.ok());
    // Queries return what is still kept, from the first kept segment on.
    const auto kept = lab.query_all({});
    REQUIRE_FALSE(kept.empty());
    CHECK(static_cast<std::uint64_t>(kept.front()) == segments.front().header.first_sequence);
    CHECK(kept.back() == 100);
}

TEST_CASE("evidence archive: a truncated or removed segment is found and named") {
    TierLab lab;
    REQUIRE(lab.archive.load());
    for (int minute = 0; minute < 15; ++minute) {
        lab.receive(5);
        lab.now += kMinute;
    }
    REQUIRE(lab.archive.run_once());
    const auto segments = lab.archive.segments();
    REQUIRE(segments.size() == 5);
    REQUIRE(lab.verify().ok());
    SUBCASE("truncated") {
        const auto file = segments[2].file;
        std::filesystem::resize_file(file, std::filesystem::file_size(file) - 10);
        auto listed = list_archive_segments(lab.fixture.dir.path() / "archive");
        REQUIRE_FALSE(listed);
        CHECK(listed.error().find("truncated") != std::string::npos);
        CHECK(listed.error().find(file.filename().string()) != std::string::npos);
    }
    SUBCASE("removed without an audited expiry") {
        std::filesystem::remove(segments[1].file);
        const auto v = lab.verify_on_disk();
        REQUIRE(v.first_break);
        CHECK(evidence::describe(*v.first_break).starts_with("drops #6: missing: records 6 to 10"));
    }
    SUBCASE("the first segment removed") {
        std::filesystem::remove(segments[0].file);
        const auto v = lab.verify_on_disk();
        REQUIRE(v.first_break);
        CHECK(evidence::describe(*v.first_break).starts_with("drops #1: missing"));
    }
}

TEST_CASE("evidence archive: with every event archived, ids go on after the last one given") {
    TierLab lab;
    REQUIRE(lab.archive.load());
    lab.receive(5);
    lab.now += 20 * kMinute;
    REQUIRE(lab.archive.run_once());
    EventQuery everything;
    everything.limit = 100;
    auto in_db = lab.store.query_events(everything);
    REQUIRE(in_db);
    CHECK(in_db->empty());
    auto last = lab.store.last_event_id();
    REQUIRE(last);
    CHECK(*last == 5);  // the analyzer and the SIEM export continue after it
    lab.receive(1);
    last = lab.store.last_event_id();
    REQUIRE(last);
    CHECK(*last == 6);
    CHECK(lab.verify().ok());
}

namespace {
// Records what the exporter sends (its thread writes, the test reads).
struct ArchiveTestSender final : siem::SyslogSender {
    std::shared_ptr<std::pair<std::mutex, std::vector<std::string>>> sent;
    siem::SendResult send(std::span<const std::string> messages) override {
        std::lock_guard lock(sent->first);
        sent->second.insert(sent->second.end(), messages.begin(), messages.end());
        return {};
    }
    siem::SendResult flush() override { return {}; }
    void close() override {}
};
}  // namespace

TEST_CASE("evidence archive: a SIEM destination behind the hot tier catches up from the archive, skipping nothing") {
    TierLab lab;
    REQUIRE(lab.archive.load());
    for (int minute = 0; minute < 15; ++minute) {
        lab.receive(4);
        lab.now += kMinute;
    }
    REQUIRE(lab.archive.run_once());
    REQUIRE(lab.archive.archived_through() > 0);
    // The destination was last given event 2, long before the archive took the early minutes.
    REQUIRE(lab.store.put_setting("siem/soc/events", "2"));
    auto destination = siem::parse_siem_destination(
        nlohmann::json::parse(R"({"name":"soc","transport":"udp","address":"127.0.0.1:5514","format":"cef","records":["drops"]})"),
        "/siem/destinations/0");
    REQUIRE(destination);
    SiemExportOptions options;
    options.destinations = {*destination};
    options.poll = std::chrono::milliseconds(10);
    auto sent = std::make_shared<std::pair<std::mutex, std::vector<std::string>>>();
    SiemExport exporter(options, lab.store, lab.store, lab.store, [&lab] { return lab.now; },
                        [sent](const siem::SiemDestination&) {
                            auto sender = std::make_unique<ArchiveTestSender>();
                            sender->sent = sent;
                            return sender;
                        });
    exporter.set_archive(&lab.archive);
    REQUIRE(exporter.start());
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    std::size_t count = 0;
    while (std::chrono::steady_clock::now() < deadline) {
        {
            std::lock_guard lock(sent->first);
            count = sent->second.size();
        }
        if (count >= 58)
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    exporter.stop();
    std::lock_guard lock(sent->first);
    REQUIRE(sent->second.size() == 58);  // events 3..60, archived and hot
    for (std::size_t i = 0; i < sent->second.size(); ++i) {
        const std::string id = "id=\"drops/" + std::to_string(i + 3) + "\"";
        CHECK_MESSAGE(sent->second[i].find(id) != std::string::npos, sent->second[i].substr(0, 120));
    }
}

TEST_CASE("evidence archive: documents read as text give the members a parsed document gives, in both tiers") {
    TierLab lab;
    REQUIRE(lab.archive.load());
    // What the formats need from a document: the ingress port (physindev, else indev), the
    // source MAC, the source port (else an ICMP echo's id) and monitor mode's would_drop.
    const std::vector<std::string> documents = {
        R"({"physindev":"vnet7","indev":"br0","src_mac":"52:54:00:00:00:07","sport":40001,"would_drop":true})",
        R"({"indev":"eth1","icmp_id":77,"would_drop":false})",
        R"({"sport":70000,"src_mac":5,"nested":{"physindev":"not-this-one"}})",  // out of range, wrong type
        R"({"physindev":"v\u00e9th\"1","sport":1})",                            // escapes
        R"({})",
    };
    for (int minute = 0; minute < 2; ++minute) {
        std::vector<StoredEvent> batch;
        for (const auto& document : documents) {
            auto e = make_event("hv1", lab.next_seq++, lab.now * 1'000'000);
            e.received_at = lab.now;
            e.document_text = document;
            batch.push_back(std::move(e));
        }
        REQUIRE(lab.store.insert_events(batch));
        if (minute == 0)
            lab.now += 11 * kMinute;  // the first minute falls behind the hot tier
    }
    REQUIRE(lab.archive.run_once());
    REQUIRE(lab.archive.archived_through() == 5);

    EventQuery parsed;
    parsed.newest_first = false;
    parsed.limit = 100;
    EventQuery text = parsed;
    text.parse_documents = false;
    for (auto read : {+[](TierLab& l, const EventQuery& q) { return l.archive.query_archived(q); },
                      +[](TierLab& l, const EventQuery& q) { return l.store.query_events(q); }}) {
        auto as_tree = read(lab, parsed);
        auto as_text = read(lab, text);
        REQUIRE(as_tree);
        REQUIRE(as_text);
        REQUIRE(as_tree->size() == documents.size());
        REQUIRE(as_text->size() == documents.size());
        for (std::size_t i = 0; i < documents.size(); ++i) {
            auto& tree = (*as_tree)[i];
            auto& flat = (*as_text)[i];
            CAPTURE(documents[i]);
            CHECK(tree.document.is_object());
            CHECK(flat.document.is_null());
            CHECK(nlohmann::json::parse(flat.document_text) == nlohmann::json::parse(documents[i]));
            restore_upload_fields(tree);
            restore_upload_fields(flat);
            CHECK(flat.port == tree.port);
            CHECK(flat.mac == tree.mac);
            CHECK(flat.sport == tree.sport);
            CHECK(flat.would_drop == tree.would_drop);
        }
        CHECK((*as_text)[0].port == "vnet7");
        CHECK((*as_text)[0].mac == "52:54:00:00:00:07");
        CHECK((*as_text)[0].sport == 40001);
        CHECK((*as_text)[0].would_drop);
        CHECK((*as_text)[1].port == "eth1");
        CHECK((*as_text)[1].sport == 77);
        CHECK(!(*as_text)[1].would_drop);
        CHECK((*as_text)[2].port.empty());
        CHECK((*as_text)[2].mac.empty());
        CHECK(!(*as_text)[2].sport);
        CHECK((*as_text)[3].port == "v\xc3\xa9th\"1");
    }
}
