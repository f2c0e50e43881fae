// The enforcer's controller agent (enforcer/agent/): NDJSON framing, the control-channel
// state machine, the disk spool, the URL rules. The HTTP parts run against a fake
// controller in tests/enforcer_agent/.
#include "enforcer/agent/channel_session.hpp"
#include "enforcer/agent/controller_client.hpp"
#include "common/files/durable_file.hpp"
#include "enforcer/agent/event_spool.hpp"
#include "enforcer/agent/ndjson.hpp"
#include "enforcer/agent/spooling_event_sink.hpp"
#include "policies/policy_reader.hpp"
#include "policies/ruleset_compiler.hpp"
#include "policies/ruleset_diff.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

using namespace bulkhead;
using namespace bulkhead::enforcer::agent;
using nlohmann::json;

namespace {

struct AgentTempDir {
    std::filesystem::path path;
    AgentTempDir() {
        static int counter = 0;
        path = std::filesystem::temp_directory_path() /
               ("bulkhead-agent-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
        std::filesystem::remove_all(path);
        std::filesystem::create_directories(path);
    }
    ~AgentTempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
};

std::vector<std::string> frame(const std::vector<std::string>& chunks, NdjsonFramer& framer) {
    std::vector<std::string> lines;
    for (const auto& chunk : chunks) {
        auto fed = framer.feed(chunk, [&](std::string_view line) {
            lines.emplace_back(line);
            return true;
        });
        REQUIRE(fed);
    }
    return lines;
}

ruleset::Ruleset compile(const std::set<std::string>& quarantined = {}) {
    auto policy = policy::parse_policy(test::read_source_file("examples/vdi-pool/policy.json"));
    auto inventory = policy::parse_inventory(test::read_source_file("examples/vdi-pool/inventory.json"));
    REQUIRE(policy);
    REQUIRE(inventory);
    ruleset::RulesetCompiler compiler(*policy, *inventory);
    auto r = compiler.compile("hv1", quarantined);
    REQUIRE(r);
    return *r;
}

std::vector<json> events(int from, int count, std::size_t padding = 0) {
    std::vector<json> out;
    for (int i = from; i < from + count; ++i) {
        out.push_back({{"type", "drop"}, {"n", i}, {"pad", std::string(padding, 'x')}});
    }
    return out;
}

std::vector<std::uint64_t> seqs_of(const UploadBatch& batch) {
    std::vector<std::uint64_t> out;
    const auto body = json::parse(batch.body);
    for (const auto& e : body.at("events")) {
        out.push_back(e.at("seq").get<std::uint64_t>());
    }
    return out;
}

}  // namespace

TEST_CASE("agent ndjson: lines split across chunks are reassembled") {
    NdjsonFramer framer;
    SUBCASE("one line per chunk") {
        CHECK(frame({"{\"a\":1}\n", "{\"b\":2}\n"}, framer) == std::vector<std::string>{"{\"a\":1}", "{\"b\":2}"});
    }
    SUBCASE("a line cut anywhere, several lines in one chunk, CRLF and blank lines") {
        CHECK(frame({"{\"a\"", ":1}\n{\"b\":2}\r\n\n{\"c", "\":3}", "\n"}, framer) ==
              std::vector<std::string>{"{\"a\":1}", "{\"b\":2}", "{\"c\":3}"});
        CHECK(framer.buffered() == 0);
        CHECK(framer.lines() == 3);
    }
    SUBCASE("byte by byte") {
        const std::string text = "{\"type\":\"hello\"}\n{\"type\":\"heartbeat\"}\n";
        std::vector<std::string> chunks;
        for (char c : text) {
            chunks.emplace_back(1, c);
        }
        CHECK(frame(chunks, framer) == std::vector<std::string>{"{\"type\":\"hello\"}", "{\"type\":\"heartbeat\"}"});
    }
    SUBCASE("an unterminated tail waits for its newline") {
        CHECK(frame({"{\"a\":1}\n{\"b\""}, framer).size() == 1);
        CHECK(framer.buffered() == 4);
    }
    SUBCASE("the callback can stop the stream") {
        int seen = 0;
        auto fed = framer.feed("a\nb\nc\n", [&](std::string_view) { return ++seen < 2; });
        REQUIRE(fed);
        CHECK_FALSE(*fed);
        CHECK(seen == 2);
    }
    SUBCASE("a line beyond the limit is an error") {
        NdjsonFramer small(8);
        CHECK(small.feed("12345", [](std::string_view) { return true; }).has_value());
        CHECK_FALSE(small.feed("67890", [](std::string_view) { return true; }).has_value());
        NdjsonFramer small2(8);
        CHECK_FALSE(small2.feed("123456789\n", [](std::string_view) { return true; }).has_value());
    }
}

TEST_CASE("agent controller URL: https anywhere, http on loopback only") {
    auto ok = parse_controller_url("https://ctl.example:8443");
    REQUIRE(ok);
    CHECK(ok->host == "ctl.example");
    CHECK(ok->port == 8443);
    CHECK(ok->url() == "https://ctl.example:8443");
    CHECK(parse_controller_url("https://ctl.example")->port == 443);
    auto v6 = parse_controller_url("http://[::1]:9000/");
    REQUIRE(v6);
    CHECK(v6->host == "::1");
    CHECK(v6->url() == "http://[::1]:9000");
    CHECK(parse_controller_url("http://127.0.0.1:8080").has_value());
    CHECK(parse_controller_url("http://localhost:8080").has_value());
    CHECK(parse_controller_url("http://10.0.0.1:8080").error().find("loopback") != std::string::npos);
    for (const char* bad : {"ftp://x", "ctl:443", "https://ctl:99999", "https://ctl:443/api", "https://:443"}) {
        CAPTURE(bad);
        CHECK_FALSE(parse_controller_url(bad).has_value());
    }
}

TEST_CASE("agent controller client: https needs a CA, and a credential or a token") {
    AgentTempDir dir;
    ControllerConfig config;
    config.endpoint = *parse_controller_url("https://ctl:8443");
    config.enforcer_id = "hv1";
    config.state_dir = dir.path;
    config.enrollment_token_file = (dir.path / "token").string();
    CHECK(ControllerClient::create(config).error().find("--ca") != std::string::npos);
    config.ca_file = (dir.path / "missing.pem").string();
    CHECK(ControllerClient::create(config).error().find("cannot read CA") != std::string::npos);
    config.endpoint = *parse_controller_url("http://127.0.0.1:1");
    config.enrollment_token_file.clear();
    CHECK(ControllerClient::create(config).error().find("--enrollment-token") != std::string::npos);
    std::ofstream(dir.path / "credential") << "secret-credential\n";
    auto client = ControllerClient::create(config);
    REQUIRE(client);
    CHECK((*client)->has_credential());
    CHECK((*client)->credential() == "secret-credential");
    CHECK((*client)->enforcer_path("status") == "/api/v1/enforcers/hv1/status");
    CHECK((*client)->enroll_if_needed().has_value());  // a stored credential skips enrollment
}

TEST_CASE("agent channel session: hello first, then rulesets and verified diffs") {
    const auto base = compile();
    const auto quarantined = compile({"vdi-002"});
    const auto base_hash = ruleset::ruleset_hash(base);
    const auto q_hash = ruleset::ruleset_hash(quarantined);
    const json hello = {{"type", "hello"}, {"controller_time_ms", 1}, {"heartbeat_interval_ms", 250},
                        {"desired_generation", 2}};
    const json full = {{"type", "ruleset"}, {"generation", 1}, {"hash", base_hash}, {"ruleset", ruleset::to_json(base)}};
    const json diff = {{"type", "diff"},
                       {"base_generation", 1},
                       {"base_hash", base_hash},
                       {"generation", 2},
                       {"hash", q_hash},
                       {"diff", ruleset::diff_to_wire(ruleset::diff_rulesets(base, quarantined), base, quarantined)}};
    using Kind = ChannelAction::Kind;

    SUBCASE("the normal sequence") {
        ChannelSession session("hv1", {});
        auto a = session.handle_line(hello.dump());
        CHECK(a.kind == Kind::Hello);
        CHECK(a.heartbeat_interval_ms == 250);
        a = session.handle_line(full.dump());
        REQUIRE(a.kind == Kind::Apply);
        CHECK_FALSE(a.from_diff);
        CHECK(a.next.generation == 1);
        CHECK(ruleset::ruleset_hash(*a.next.ruleset) == base_hash);
        CHECK(session.handle_line(R"({"type":"heartbeat","controller_time_ms":5})").kind == Kind::None);
        a = session.handle_line(diff.dump());
        REQUIRE(a.kind == Kind::Apply);
        CHECK(a.from_diff);
        CHECK(a.next.generation == 2);
        CHECK(a.next.hash == q_hash);
        CHECK(ruleset::to_json(*a.next.ruleset) == ruleset::to_json(quarantined));
        CHECK(session.held().generation == 2);
        CHECK(session.handle_line(R"({"type":"from-the-future"})").kind == Kind::None);
    }
    SUBCASE("a diff from what the enforcer asked with") {
        ChannelSession session("hv1", HeldRuleset{1, base_hash, std::make_shared<const ruleset::Ruleset>(base)});
        session.handle_line(hello.dump());
        CHECK(session.handle_line(diff.dump()).kind == Kind::Apply);
    }
    SUBCASE("anything before hello is a resync") {
        ChannelSession session("hv1", {});
        CHECK(session.handle_line(full.dump()).kind == Kind::Resync);
    }
    SUBCASE("a diff on the wrong base, a wrong result hash, garbage: resync") {
        ChannelSession session("hv1", {});
        session.handle_line(hello.dump());
        auto a = session.handle_line(diff.dump());
        CHECK(a.kind == Kind::Resync);
        CHECK(a.reason.find("this enforcer holds 0/nothing") != std::string::npos);
        session.handle_line(full.dump());
        auto wrong = diff;
        wrong["hash"] = "0000000000000000";
        a = session.handle_line(wrong.dump());
        CHECK(a.kind == Kind::Resync);
        CHECK(a.reason.find("expected 0000000000000000") != std::string::npos);
        CHECK(session.held().generation == 1);  // nothing changed
        wrong = diff;
        wrong["base_hash"] = q_hash;
        CHECK(session.handle_line(wrong.dump()).kind == Kind::Resync);
        wrong = diff;
        wrong["diff"]["set_changes"][0]["set"] = "nope";
        a = session.handle_line(wrong.dump());
        CHECK(a.kind == Kind::Resync);
        CHECK(a.reason.find("set nope") != std::string::npos);
        CHECK(session.handle_line("{not json").kind == Kind::Resync);
        CHECK(session.handle_line(R"({"type":"diff"})").kind == Kind::Resync);
    }
    SUBCASE("an unusable full ruleset is rejected, the stream stays") {
        ChannelSession session("hv1", {});
        session.handle_line(hello.dump());
        auto other = full;
        other["ruleset"]["enforcer"] = "hv2";
        auto a = session.handle_line(other.dump());
        CHECK(a.kind == Kind::Reject);
        CHECK(a.generation == 1);
        CHECK(a.reason.find("for enforcer \"hv2\"") != std::string::npos);
        auto bad_hash = full;
        bad_hash["hash"] = "ffff";
        CHECK(session.handle_line(bad_hash.dump()).kind == Kind::Reject);
        auto broken = full;
        broken["ruleset"]["sets"] = 5;
        CHECK(session.handle_line(broken.dump()).kind == Kind::Reject);
        CHECK(session.handle_line(full.dump()).kind == Kind::Apply);
    }
}

TEST_CASE("agent spool: append, drain oldest first, acknowledge") {
    AgentTempDir dir;
    auto spool = EventSpool::open({dir.path / "spool", 1024 * 1024, 4096});
    REQUIRE(spool);
    auto& s = **spool;
    CHECK_FALSE(s.next_batch(10, 1 << 20));
    auto r = s.append(events(0, 100));
    REQUIRE(r);
    CHECK(r->first_seq == 1);
    CHECK(r->last_seq == 100);
    CHECK(r->evicted == 0);
    CHECK(s.stats().segments > 1);  // 4 KiB segments
    CHECK(s.stats().events == 100);

    auto batch = s.next_batch(30, 1 << 20);
    REQUIRE(batch);
    CHECK(batch->count == 30);
    CHECK(batch->first_seq == 1);
    CHECK(batch->last_seq == 30);
    auto body = json::parse(batch->body);
    CHECK(body["events"][0]["event"]["n"] == 0);
    CHECK(body["events"][29]["seq"] == 30);
    // Not acknowledged: the same batch again.
    CHECK(s.next_batch(30, 1 << 20)->first_seq == 1);
    REQUIRE(s.acknowledge(30));
    CHECK(s.stats().events == 70);
    CHECK(s.next_batch(30, 1 << 20)->first_seq == 31);
    // A byte limit cuts a batch too.
    auto small = s.next_batch(1000, 300);
    REQUIRE(small);
    CHECK(small->body.size() <= 300);
    CHECK(small->count >= 1);
    REQUIRE(s.acknowledge(100));
    CHECK(s.stats().events == 0);
    // The full segments go; the active one stays open for the next append.
    CHECK(s.stats().segments == 1);
    CHECK_FALSE(s.has_unacknowledged());
    CHECK_FALSE(s.next_batch(10, 1 << 20));
    REQUIRE(s.append(events(100, 1)));
    auto next = s.next_batch(10, 1 << 20);
    REQUIRE(next);
    CHECK(seqs_of(*next) == std::vector<std::uint64_t>{101});
}

TEST_CASE("agent spool: a quiet spool appends to the same segment file across acknowledgements") {
    // One event at a time, each acknowledged before the next (a quiet host): no segment file
    // is deleted or created per event (each would cost a synced directory on the event's
    // way to the controller), and what was acknowledged is not sent again.
    AgentTempDir dir;
    const auto where = dir.path / "spool";
    auto segment_files = [&] {
        std::vector<std::string> names;
        for (const auto& entry : std::filesystem::directory_iterator(where)) {
            if (entry.path().filename().string().starts_with("seg-")) {
                names.push_back(entry.path().filename().string());
            }
        }
        return names;
    };
    {
        auto spool = EventSpool::open({where, 1024 * 1024, 64 * 1024});
        REQUIRE(spool);
        auto& s = **spool;
        std::vector<std::string> first;
        for (int i = 0; i < 20; ++i) {
            auto r = s.append(events(i, 1), false);
            REQUIRE(r);
            auto batch = s.next_batch(100, 1 << 20);
            REQUIRE(batch);
            CHECK(seqs_of(*batch) == std::vector<std::uint64_t>{r->first_seq});
            REQUIRE(s.acknowledge(batch->last_seq));
            CHECK_FALSE(s.has_unacknowledged());
            if (i == 0) {
                first = segment_files();
            }
            CHECK(segment_files() == first);
        }
        CHECK(first.size() == 1);
    }
    // A clean stop removes the acknowledged segment: nothing is sent again, and seqs go on.
    CHECK(segment_files().empty());
    auto reopened = EventSpool::open({where, 1024 * 1024, 64 * 1024});
    REQUIRE(reopened);
    CHECK_FALSE((*reopened)->has_unacknowledged());
    auto r = (*reopened)->append(events(20, 1));
    REQUIRE(r);
    CHECK(r->first_seq == 21);
}

TEST_CASE("agent spool: after a clean restart, a segment acknowledged in part sends only the rest") {
    // Events appended to the open segment after an acknowledgement share it with acknowledged
    // ones; a clean stop records how far the controller confirmed, so none comes again.
    AgentTempDir dir;
    const auto where = dir.path / "spool";
    {
        auto spool = EventSpool::open({where, 1024 * 1024, 64 * 1024});
        REQUIRE(spool);
        REQUIRE((*spool)->append(events(0, 10)));
        REQUIRE((*spool)->acknowledge((*spool)->next_batch(100, 1 << 20)->last_seq));
        REQUIRE((*spool)->append(events(10, 5)));
        CHECK((*spool)->stats().events == 5);
    }
    {
        auto spool = EventSpool::open({where, 1024 * 1024, 64 * 1024});
        REQUIRE(spool);
        CHECK((*spool)->stats().events == 5);
        auto batch = (*spool)->next_batch(100, 1 << 20);
        REQUIRE(batch);
        CHECK(seqs_of(*batch) == std::vector<std::uint64_t>{11, 12, 13, 14, 15});
    }  // stopped again without acknowledging: the record stays as it was
    {
        auto spool = EventSpool::open({where, 1024 * 1024, 64 * 1024});
        REQUIRE(spool);
        CHECK((*spool)->stats().events == 5);
    }
    // An unreadable record costs duplicates, never events.
    {
        std::ofstream(where / "acked_through") << "not a number";
        auto spool = EventSpool::open({where, 1024 * 1024, 64 * 1024});
        REQUIRE(spool);
        CHECK((*spool)->stats().events == 15);
    }
}

TEST_CASE("agent spool: acknowledged lines are skipped, not re-read, and batches stay exact") {
    AgentTempDir dir;
    auto spool = EventSpool::open({dir.path / "spool", 1024 * 1024, 64 * 1024});
    REQUIRE(spool);
    auto& s = **spool;
    // One 64 KiB segment, drained ten events at a time with partial acknowledgements: every
    // batch starts right after what was confirmed, whatever the segment already holds.
    REQUIRE(s.append(events(0, 200)));
    CHECK(s.stats().segments == 1);
    std::uint64_t confirmed = 0;
    for (int round = 0; round < 30 && confirmed < 200; ++round) {
        auto batch = s.next_batch(10, 1 << 20);
        REQUIRE(batch);
        CHECK(batch->first_seq == confirmed + 1);
        CHECK(json::parse(batch->body)["events"][0]["event"]["n"] == static_cast<int>(confirmed));
        // Confirm part of it (as a controller answering through_seq mid-batch may).
        confirmed = std::min<std::uint64_t>(batch->last_seq, confirmed + 7);
        REQUIRE(s.acknowledge(confirmed));
        if (round == 10) {
            REQUIRE(s.append(events(200, 20)));  // appended behind the scan position
        }
    }
    auto rest = s.next_batch(1000, 1 << 20);
    REQUIRE(rest);
    CHECK(rest->first_seq == confirmed + 1);
    CHECK(rest->last_seq == 220);
}

TEST_CASE("agent spool: events appended without sync are uploadable at once and durable after sync()") {
    AgentTempDir dir;
    const auto where = dir.path / "spool";
    {
        auto spool = EventSpool::open({where, 1024 * 1024, 4096});
        REQUIRE(spool);
        auto r = (*spool)->append(events(0, 50), false);
        REQUIRE(r);
        auto batch = (*spool)->next_batch(100, 1 << 20);
        REQUIRE(batch);
        CHECK(batch->count == 50);
        REQUIRE((*spool)->sync());
        REQUIRE((*spool)->sync());  // nothing left to sync: still fine
        REQUIRE((*spool)->append(events(50, 5), false));
    }  // closing syncs what append(..., false) left
    auto reopened = EventSpool::open({where, 1024 * 1024, 4096});
    REQUIRE(reopened);
    CHECK((*reopened)->stats().events == 55);
    CHECK((*reopened)->next_batch(100, 1 << 20)->last_seq == 55);
}

TEST_CASE("agent spool: sequence numbers survive restarts, emptied spool included") {
    AgentTempDir dir;
    const auto where = dir.path / "spool";
    {
        auto spool = EventSpool::open({where, 1024 * 1024, 0});
        REQUIRE(spool);
        REQUIRE((*spool)->append(events(0, 10)));
    }
    {
        auto spool = EventSpool::open({where, 1024 * 1024, 0});
        REQUIRE(spool);
        CHECK((*spool)->stats().events == 10);
        CHECK((*spool)->stats().last_seq == 10);
        auto r = (*spool)->append(events(10, 5));
        REQUIRE(r);
        CHECK(r->first_seq == 11);
        // Everything delivered: the segments go at the latest when the spool closes, the
        // high-water mark stays.
        REQUIRE((*spool)->acknowledge(15).has_value());
        CHECK((*spool)->stats().events == 0);
    }
    {
        auto spool = EventSpool::open({where, 1024 * 1024, 0});
        REQUIRE(spool);
        CHECK((*spool)->stats().events == 0);
        auto r = (*spool)->append(events(15, 1));
        REQUIRE(r);
        CHECK(r->first_seq == 16);
        // Undelivered after a restart: sent again from the oldest (the controller de-duplicates).
        auto batch = (*spool)->next_batch(100, 1 << 20);
        REQUIRE(batch);
        CHECK(seqs_of(*batch) == std::vector<std::uint64_t>{16});
    }
}

TEST_CASE("agent spool: a torn last line from a crash is cut off at start") {
    AgentTempDir dir;
    const auto where = dir.path / "spool";
    {
        auto spool = EventSpool::open({where, 1024 * 1024, 0});
        REQUIRE(spool);
        REQUIRE((*spool)->append(events(0, 3)));
    }
    std::filesystem::path segment;
    for (const auto& e : std::filesystem::directory_iterator(where)) {
        if (e.path().filename().string().starts_with("seg-")) {
            segment = e.path();
        }
    }
    REQUIRE_FALSE(segment.empty());
    std::ofstream(segment, std::ios::app) << "{\"seq\":4,\"event\":{\"type\":\"dr";
    auto spool = EventSpool::open({where, 1024 * 1024, 0});
    REQUIRE(spool);
    CHECK((*spool)->stats().recovered_truncations == 1);
    CHECK((*spool)->stats().events == 3);
    auto batch = (*spool)->next_batch(100, 1 << 20);
    REQUIRE(batch);
    CHECK(seqs_of(*batch) == std::vector<std::uint64_t>{1, 2, 3});
    CHECK((*spool)->append(events(3, 1))->first_seq == 4);
}

TEST_CASE("agent spool: the byte bound evicts whole oldest segments and counts the events") {
    AgentTempDir dir;
    // Each event is ~1 KiB, segments 4 KiB, bound 16 KiB: about 16 events fit.
    auto spool = EventSpool::open({dir.path / "spool", 16 * 1024, 4 * 1024});
    REQUIRE(spool);
    auto& s = **spool;
    std::uint64_t evicted = 0;
    for (int i = 0; i < 50; ++i) {
        auto r = s.append(events(i, 1, 1000));
        REQUIRE(r);
        evicted += r->evicted;
        CHECK(s.stats().bytes <= 16 * 1024);
    }
    const auto stats = s.stats();
    CHECK(evicted > 0);
    CHECK(stats.evicted == evicted);
    CHECK(stats.evicted_segments > 0);
    // Nothing is lost silently: evicted + still spooled = everything appended.
    CHECK(stats.evicted + stats.events == 50);
    // What is left is the newest, contiguous, oldest first.
    auto batch = s.next_batch(1000, 1 << 20);
    REQUIRE(batch);
    const auto seqs = seqs_of(*batch);
    CHECK(seqs.back() == 50);
    CHECK(seqs.front() == evicted + 1);
    for (std::size_t i = 1; i < seqs.size(); ++i) {
        CHECK(seqs[i] == seqs[i - 1] + 1);
    }
    SUBCASE("events already confirmed are not counted as evicted") {
        REQUIRE(s.acknowledge(50));
        const auto before = s.stats().evicted;
        for (int i = 0; i < 20; ++i) {
            REQUIRE(s.append(events(100 + i, 1, 1000)));
        }
        CHECK(s.stats().evicted - before + s.stats().events == 20);
    }
}

TEST_CASE("agent spooling sink: seq per event, events_evicted recorded, written before shutdown") {
    AgentTempDir dir;
    SpoolingSinkConfig config;
    config.spool = {dir.path / "spool", 16 * 1024, 4 * 1024};
    {
        auto sink = SpoolingEventSink::open(config, nullptr);
        REQUIRE(sink);
        for (int i = 0; i < 40; ++i) {
            (*sink)->emit({{"type", "drop"}, {"n", i}, {"pad", std::string(1000, 'y')}});
            (*sink)->flush();
        }
        (*sink)->wait_written();
        const auto stats = (*sink)->stats();
        CHECK(stats.spool.evicted > 0);
        CHECK(stats.spool.last_seq > 40);  // the events_evicted records took seqs too
        (*sink)->emit({{"type", "stopped"}});
        // no explicit flush: the destructor writes it
    }
    auto spool = EventSpool::open(config.spool);
    REQUIRE(spool);
    auto batch = (*spool)->next_batch(1000, 1 << 20);
    REQUIRE(batch);
    const auto body = json::parse(batch->body);
    bool saw_gap = false;
    for (const auto& e : body["events"]) {
        if (e["event"]["type"] == "events_evicted") {
            saw_gap = true;
            CHECK(e["event"]["count"].get<int>() > 0);
            CHECK(e["event"].contains("first_seq"));
        }
    }
    CHECK(saw_gap);
    CHECK(body["events"].back()["event"]["type"] == "stopped");
}

TEST_CASE("agent durable file: credential-style writes are 0600 and atomic") {
    AgentTempDir dir;
    const auto path = dir.path / "credential";
    REQUIRE(files::write_durably(path, "one\n", 0600));
    REQUIRE(files::write_durably(path, "two\n", 0600));
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK(**files::read_small_file(path) == "two\n");
    CHECK_FALSE(std::filesystem::exists(path.string() + ".tmp"));
    CHECK_FALSE(files::read_small_file(dir.path / "absent")->has_value());
}
