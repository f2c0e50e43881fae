// The enforcer's controller agent against a fake controller (fake_controller.hpp, a
// stand-in for the real one the lead is writing; protocol-exact to docs/control-channel.md):
// enrollment, full ruleset, diff, hash mismatch -> reconnect and resync, ack content,
// heartbeats, dead-connection detection, event spool drain across a controller restart and
// an enforcer restart, eviction accounting. No kernel: the "daemon" here is the test
// thread, which polls the source's fd and reports applies like run_daemon does.
#include "enforcer/agent/channel_socket.hpp"
#include "enforcer/agent/controller_ruleset_source.hpp"
#include "enforcer/agent/spooling_event_sink.hpp"
#include "fake_controller.hpp"
#include "policies/policy_reader.hpp"
#include "policies/ruleset_compiler.hpp"

#include <doctest/doctest.h>

#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

using namespace bulkhead;
using namespace bulkhead::enforcer;
using namespace bulkhead::enforcer::agent;
using bulkhead::test::eventually;
using bulkhead::test::FakeController;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

std::string source_file(const std::string& relative) {
    std::ifstream in(std::string(BULKHEAD_SOURCE_DIR) + "/" + relative);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

ruleset::Ruleset compile_hv1(const std::set<std::string>& quarantined = {}) {
    auto policy = policy::parse_policy(source_file("examples/vdi-pool/policy.json"));
    auto inventory = policy::parse_inventory(source_file("examples/vdi-pool/inventory.json"));
    REQUIRE(policy);
    REQUIRE(inventory);
    ruleset::RulesetCompiler compiler(*policy, *inventory);
    auto r = compiler.compile("hv1", quarantined);
    REQUIRE(r);
    return *r;
}

struct Scratch {
    std::filesystem::path path;
    Scratch() {
        static int n = 0;
        path = std::filesystem::temp_directory_path() /
               ("bulkhead-agent-it-" + std::to_string(::getpid()) + "-" + std::to_string(n++));
        std::filesystem::remove_all(path);
        std::filesystem::create_directories(path);
    }
    ~Scratch() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
};

std::shared_ptr<ControllerClient> make_client(const FakeController& fake, const std::filesystem::path& state,
                                              const std::string& token_file) {
    ControllerConfig config;
    config.endpoint = *parse_controller_url(fake.url());
    config.enforcer_id = "hv1";
    config.state_dir = state;
    config.enrollment_token_file = token_file;
    config.version = "0.1.0-test";
    auto client = ControllerClient::create(config);
    REQUIRE_MESSAGE(client, (client ? "" : client.error()));
    return std::shared_ptr<ControllerClient>(std::move(*client));
}

// A client of `fake` (started here, accepting token "t") enrolled as hv1: what the event
// tests start from, with a spool under `scratch` that retries fast.
std::shared_ptr<ControllerClient> enrolled_client(FakeController& fake, const Scratch& scratch) {
    fake.add_token("t");
    fake.start();
    std::ofstream(scratch.path / "token") << "t";
    auto client = make_client(fake, scratch.path, (scratch.path / "token").string());
    REQUIRE(client->enroll_if_needed());
    return client;
}

// Uploads go up the channel socket: the event tests run a source beside the sink for it,
// reconnecting fast after the fake's restarts.
ChannelConfig fast_channel() {
    ChannelConfig config;
    config.reconnect_initial = 50ms;
    config.reconnect_max = 300ms;
    return config;
}

SpoolingSinkConfig fast_retry_sink(const Scratch& scratch) {
    SpoolingSinkConfig config;
    config.spool.directory = scratch.path / "spool";
    config.retry_initial = 50ms;
    config.retry_max = 300ms;
    return config;
}

// What run_daemon does with the source: wait for its fd, poll, "apply", report.
std::optional<ruleset::Ruleset> next_ruleset(RulesetSource& source, std::chrono::milliseconds deadline = 10s) {
    const auto until = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < until) {
        pollfd p{source.fd(), POLLIN, 0};
        ::poll(&p, 1, 50);
        auto got = source.poll();
        REQUIRE_MESSAGE(got, (got ? "" : got.error()));
        if (*got) {
            return std::move(**got);
        }
    }
    return std::nullopt;
}

void report_ok(RulesetSource& source, const ruleset::Ruleset& r) {
    ApplyReport report;
    report.ok = true;
    report.applied_at_ms = test::fake_now_ms();
    report.apply_ms = 1.5;
    report.local_generation = 1;
    report.counters.elements = r.element_count();
    report.counters.drift_repairs = 2;
    report.counters.nflog_received = 10;
    source.report_applied(report);
}

std::vector<std::uint64_t> keys(const std::map<std::uint64_t, json>& m) {
    std::vector<std::uint64_t> out;
    for (const auto& [k, v] : m) {
        out.push_back(k);
    }
    return out;
}

std::vector<std::uint64_t> range(std::uint64_t from, std::uint64_t to) {
    std::vector<std::uint64_t> out;
    for (auto i = from; i <= to; ++i) {
        out.push_back(i);
    }
    return out;
}

}  // namespace

TEST_CASE("agent channel: enroll, full ruleset, diff, mismatch resync, acks, heartbeats, dead stream") {
    Scratch scratch;
    FakeController fake("hv1");
    fake.set_heartbeat_interval_ms(200);
    fake.add_token("one-time-token");
    fake.start();
    const auto base = compile_hv1();
    const auto quarantined = compile_hv1({"vdi-002"});
    const auto released = compile_hv1({"vdi-003"});
    fake.set_desired(base);

    const auto token = scratch.path / "token";
    std::ofstream(token) << "one-time-token\n";
    auto client = make_client(fake, scratch.path, token.string());
    CHECK_FALSE(client->has_credential());

    ChannelConfig config;
    config.reconnect_initial = 50ms;
    config.reconnect_max = 400ms;
    auto opened = ControllerRulesetSource::open(client, nullptr, config, nullptr);
    REQUIRE(opened);
    auto& source = **opened;

    // Enrollment: one request, the credential stored 0600.
    REQUIRE(eventually([&] { return client->has_credential(); }));
    CHECK(fake.enrollments() == 1);
    struct stat st {};
    REQUIRE(::stat((scratch.path / "credential").c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);

    // First connect asks with nothing and gets the full ruleset.
    auto first = next_ruleset(source);
    REQUIRE(first);
    CHECK(ruleset::ruleset_hash(*first) == ruleset::ruleset_hash(base));
    REQUIRE_FALSE(fake.connects().empty());
    CHECK(fake.connects().front().generation == 0);
    CHECK(fake.connects().front().hash.empty());
    CHECK(source.handed_generation() == 1);
    report_ok(source, *first);

    // The ack: generation 1 with its hash, applied, with the documented fields.
    const auto h1 = ruleset::ruleset_hash(base);
    REQUIRE(eventually([&] {
        return fake.last_status_matching([&](const json& b) { return b["generation"] == 1 && b["hash"] == h1; })
            .has_value();
    }));
    auto ack = fake.last_status_matching([&](const json& b) { return b["generation"] == 1; })->body;
    CHECK(ack["state"] == "applied");
    CHECK(ack["error"] == "");
    CHECK(ack["apply_ms"] == 1.5);
    CHECK(ack["version"] == "0.1.0-test");
    CHECK(ack["elements"] == base.element_count());
    CHECK(ack["drift_repairs"] == 2);
    CHECK(ack["nflog"]["received"] == 10);
    CHECK(std::llabs(ack["enforcer_time_ms"].get<std::int64_t>() - test::fake_now_ms()) < 5000);
    CHECK(ack.contains("applied_at_ms"));
    CHECK(ack.contains("last_drift_at_ms"));

    // Quarantine: pushed as a diff, rebuilt exactly, acked as generation 2.
    const auto connects_before = fake.connects().size();
    fake.set_desired(quarantined);
    auto second = next_ruleset(source);
    REQUIRE(second);
    CHECK(ruleset::to_json(*second) == ruleset::to_json(quarantined));
    CHECK(fake.sent_types().back() == "diff");
    CHECK(source.stats().diffs == 1);
    report_ok(source, *second);
    const auto h2 = ruleset::ruleset_hash(quarantined);
    REQUIRE(eventually([&] {
        return fake.last_status_matching([&](const json& b) { return b["generation"] == 2 && b["hash"] == h2; })
            .has_value();
    }));
    CHECK(fake.connects().size() == connects_before);  // same stream

    // A diff whose result does not hash to what it claims: the enforcer drops the stream and
    // reconnects with what it has in force (generation 2), which yields a full ruleset.
    {
        const auto d = ruleset::diff_rulesets(quarantined, released);
        fake.push_raw({{"type", "diff"},
                       {"base_generation", 2},
                       {"base_hash", h2},
                       {"generation", 3},
                       {"hash", "0123456789abcdef"},
                       {"diff", ruleset::diff_to_wire(d, quarantined, released)}});
    }
    REQUIRE(eventually([&] { return source.stats().resyncs == 1; }));
    REQUIRE(eventually([&] { return fake.connects().size() == connects_before + 1; }));
    CHECK(fake.connects().back().generation == 2);
    CHECK(fake.connects().back().hash == h2);
    // Nothing was handed over for the bad diff.
    {
        auto nothing = source.poll();
        REQUIRE(nothing);
        CHECK_FALSE(nothing->has_value());
    }
    // The controller restarts (knows no base any more) and moves on to generation 3: the
    // reconnect gets the full ruleset.
    fake.stop();
    fake.start(fake.port());
    fake.set_desired(released);
    auto third = next_ruleset(source);
    REQUIRE(third);
    CHECK(ruleset::to_json(*third) == ruleset::to_json(released));
    CHECK(fake.sent_types().back() == "ruleset");
    report_ok(source, *third);
    REQUIRE(eventually([&] {
        return fake.last_status_matching([&](const json& b) { return b["generation"] == 3; }).has_value();
    }));

    // Heartbeats: a status every interval (200 ms) with the in-force generation and the
    // round trip measured last time.
    const auto count = fake.statuses().size();
    REQUIRE(eventually([&] { return fake.statuses().size() >= count + 4; }, 5s));
    const auto statuses = fake.statuses();
    const auto& last = statuses.back().body;
    CHECK(last["generation"] == 3);
    CHECK(last["state"] == "applied");
    CHECK(last.contains("rtt_ms"));
    CHECK(statuses[statuses.size() - 1].body["enforcer_time_ms"] > statuses[statuses.size() - 2].body["enforcer_time_ms"]);

    // A stream that stays silent for 3 x 200 ms is dead: the enforcer reconnects.
    const auto before_silence = fake.connects().size();
    fake.set_silent(true);
    REQUIRE(eventually([&] { return fake.connects().size() > before_silence; }, 5s));
    fake.set_silent(false);
    CHECK(fake.connects().back().generation == 3);
    CHECK(source.stats().connects >= 3);
}

TEST_CASE("agent channel: a rejected full ruleset is acked as failed and surfaces as an error") {
    Scratch scratch;
    FakeController fake("hv1");
    fake.add_token("t");
    fake.start();
    auto other = compile_hv1();
    other.enforcer = "hv2";
    fake.set_desired(other);  // compiled for another enforcer
    std::ofstream(scratch.path / "token") << "t";
    auto client = make_client(fake, scratch.path, (scratch.path / "token").string());
    auto opened = ControllerRulesetSource::open(client, nullptr, {}, nullptr);
    REQUIRE(opened);
    auto& source = **opened;
    std::optional<std::string> error;
    REQUIRE(eventually([&] {
        auto got = source.poll();
        if (!got) {
            error = got.error();
        }
        return error.has_value();
    }));
    CHECK(error->find("for enforcer \"hv2\"") != std::string::npos);
    REQUIRE(eventually([&] {
        return fake.last_status_matching([](const json& b) { return b["state"] == "failed"; }).has_value();
    }));
    auto failed = fake.last_status_matching([](const json& b) { return b["state"] == "failed"; })->body;
    CHECK(failed["generation"] == 1);
    CHECK(failed["error"].get<std::string>().find("hv2") != std::string::npos);
}

TEST_CASE("agent events: nothing lost across a controller restart and an enforcer restart") {
    Scratch scratch;
    FakeController fake("hv1");
    auto client = enrolled_client(fake, scratch);

    auto config = fast_retry_sink(scratch);
    config.max_batch_events = 100;  // several requests per drain
    int n = 0;
    auto emit = [&](SpoolingEventSink& sink, int count) {
        for (int i = 0; i < count; ++i) {
            sink.emit({{"type", "drop"}, {"n", n++}});
            if (i % 7 == 0) {
                sink.flush();
            }
        }
        sink.flush();
    };
    {
        auto sink = SpoolingEventSink::open(config, client);
        REQUIRE(sink);
        auto source = ControllerRulesetSource::open(client, nullptr, fast_channel(), sink->get());
        REQUIRE(source);
        emit(**sink, 300);
        REQUIRE(eventually([&] { return fake.events().size() == 300; }));
        CHECK(keys(fake.events()) == range(1, 300));

        // The controller goes away; events keep coming and are spooled.
        fake.stop();
        REQUIRE(eventually([&] { return !(*source)->stats().connected; }));
        emit(**sink, 700);
        (*sink)->wait_written();
        CHECK((*sink)->stats().spool.events == 700);
        CHECK((*sink)->stats().uploaded == 300);
        // The enforcer restarts too, with everything still spooled.
    }
    {
        auto sink = SpoolingEventSink::open(config, client);
        REQUIRE(sink);
        auto source = ControllerRulesetSource::open(client, nullptr, fast_channel(), sink->get());
        REQUIRE(source);
        CHECK((*sink)->stats().spool.events == 700);
        emit(**sink, 200);  // seqs continue after the restart
        fake.start(fake.port());
        REQUIRE(eventually([&] { return fake.events().size() == 1200; }, 20s));
        CHECK(eventually([&] { return (*sink)->stats().spool.events == 0; }));
    }
    const auto stored = fake.events();
    CHECK(keys(stored) == range(1, 1200));
    // Every event exactly once, in the order it was emitted.
    for (const auto& [seq, event] : stored) {
        CHECK(event["n"] == seq - 1);
    }
}

TEST_CASE("agent events: an event the controller refuses for good is set aside, the rest goes on") {
    Scratch scratch;
    FakeController fake("hv1");
    auto client = enrolled_client(fake, scratch);

    auto config = fast_retry_sink(scratch);
    config.max_batch_events = 40;
    // Written while the controller is away, so that the first batches hold the poison.
    fake.stop();
    auto sink = SpoolingEventSink::open(config, client);
    REQUIRE(sink);
    const std::set<int> poison{17, 33, 34};
    for (int n = 0; n < 100; ++n) {
        json event{{"type", "drop"}, {"n", n}};
        if (poison.contains(n)) {
            event["poison"] = true;
        }
        (*sink)->emit(event);
    }
    (*sink)->flush();
    (*sink)->wait_written();
    auto source = ControllerRulesetSource::open(client, nullptr, fast_channel(), sink->get());
    REQUIRE(source);
    fake.start(fake.port());

    // Every good event arrives, in order, each exactly once; the three refused ones do not.
    REQUIRE(eventually([&] { return fake.events().size() == 97 && (*sink)->stats().spool.events == 0; }, 20s));
    std::vector<int> stored;
    for (const auto& [seq, event] : fake.events()) {
        CHECK(event["n"] == seq - 1);
        stored.push_back(event["n"].get<int>());
    }
    std::vector<int> expected;
    for (int n = 0; n < 100; ++n) {
        if (!poison.contains(n)) {
            expected.push_back(n);
        }
    }
    CHECK(stored == expected);
    CHECK(fake.refused_batches() >= 3);
    const auto stats = (*sink)->stats();
    CHECK(stats.spool.set_aside == 3);

    // Set aside with the controller's answer as the reason, one line each, in order.
    std::ifstream aside(scratch.path / "spool" / "set-aside.ndjson");
    std::vector<json> records;
    for (std::string line; std::getline(aside, line);) {
        records.push_back(json::parse(line));
    }
    REQUIRE(records.size() == 3);
    for (std::size_t i = 0; i < records.size(); ++i) {
        const int n = *std::next(poison.begin(), static_cast<std::ptrdiff_t>(i));
        CHECK(records[i]["seq"] == n + 1);
        CHECK(records[i]["spooled"]["event"]["n"] == n);
        CHECK(records[i]["reason"].get<std::string>().find("HTTP 422") != std::string::npos);
    }

    // The status carries the count (the next heartbeat after the set-aside).
    CHECK(eventually([&] {
        const auto status = fake.last_status_matching([](const json& b) { return b.contains("spool"); });
        return status && status->body["spool"]["set_aside"] == 3;
    }));
}

TEST_CASE("agent events: a full spool evicts the oldest, counts it, and tells the controller") {
    Scratch scratch;
    FakeController fake("hv1");
    auto client = enrolled_client(fake, scratch);
    fake.stop();  // down from the start

    auto config = fast_retry_sink(scratch);
    config.spool = {scratch.path / "spool", 32 * 1024, 4 * 1024};
    auto sink = SpoolingEventSink::open(config, client);
    REQUIRE(sink);
    const int total = 200;
    for (int i = 0; i < total; ++i) {
        (*sink)->emit({{"type", "drop"}, {"n", i}, {"pad", std::string(500, 'p')}});
        (*sink)->flush();
    }
    (*sink)->wait_written();
    const auto stats = (*sink)->stats();
    CHECK(stats.spool.evicted > 0);
    CHECK(stats.spool.bytes <= 32 * 1024);
    // No channel (no source, the controller down): the uploader waits; no request, no failure.
    CHECK(stats.upload_requests == 0);
    CHECK(stats.upload_failures == 0);

    // The status message carries the spool figures.
    fake.start(fake.port());
    auto source = ControllerRulesetSource::open(client, nullptr, {}, sink->get());
    REQUIRE(source);
    REQUIRE(eventually([&] {
        return fake.last_status_matching([](const json& b) { return b.contains("spool"); }).has_value();
    }));
    const auto status = fake.last_status_matching([](const json& b) { return b.contains("spool"); })->body;
    CHECK(status["spool"]["evicted"] == stats.spool.evicted);

    // Drained: the drops that survived + the events_evicted records; every seq accounted for.
    REQUIRE(eventually([&] { return (*sink)->stats().spool.events == 0; }, 20s));
    const auto stored = fake.events();
    const auto final_stats = (*sink)->stats();
    std::uint64_t newest_total_evicted = 0;
    std::vector<int> kept;  // the drops' "n", in seq order
    for (const auto& [seq, event] : stored) {
        if (event["type"] == "events_evicted") {
            newest_total_evicted = event["total_evicted"].get<std::uint64_t>();
        } else {
            kept.push_back(event["n"].get<int>());
        }
    }
    // A later note may have pushed an earlier one out, so the counts of the notes that
    // survive need not add up; the newest note's running total is the whole loss.
    CHECK(newest_total_evicted == final_stats.spool.evicted);
    // The oldest were evicted, the newest kept: the drops that arrived are the last ones, in order.
    REQUIRE(!kept.empty());
    CHECK(kept.back() == total - 1);
    for (std::size_t i = 1; i < kept.size(); ++i) {
        CHECK(kept[i] == kept[i - 1] + 1);
    }
    const auto last_seq = final_stats.spool.last_seq;
    CHECK(stored.size() + final_stats.spool.evicted == last_seq);
    CHECK(stored.rbegin()->first == last_seq);
}

TEST_CASE("agent channel: one connection carries the channel, the acks and the uploads") {
    Scratch scratch;
    FakeController fake("hv1");
    fake.set_heartbeat_interval_ms(200);
    auto client = enrolled_client(fake, scratch);
    // Enrollment was a plain HTTP request on its own connection, closed since.
    REQUIRE(eventually([&] { return fake.connections_open() == 0; }));
    const auto accepted_before = fake.connections_accepted();
    const auto base = compile_hv1();
    fake.set_desired(base);

    auto sink = SpoolingEventSink::open(fast_retry_sink(scratch), client);
    REQUIRE(sink);
    auto opened = ControllerRulesetSource::open(client, nullptr, fast_channel(), sink->get());
    REQUIRE(opened);
    auto& source = **opened;
    auto first = next_ruleset(source);
    REQUIRE(first);
    report_ok(source, *first);
    for (int n = 0; n < 50; ++n) {
        (*sink)->emit({{"type", "drop"}, {"n", n}});
    }
    (*sink)->flush();

    // The ack and the events arrive, and heartbeats keep coming...
    const auto h1 = ruleset::ruleset_hash(base);
    REQUIRE(eventually([&] {
        return fake.last_status_matching([&](const json& b) { return b["generation"] == 1 && b["hash"] == h1; })
            .has_value();
    }));
    REQUIRE(eventually([&] { return fake.events().size() == 50; }));
    const auto count = fake.statuses().size();
    REQUIRE(eventually([&] { return fake.statuses().size() >= count + 3; }, 5s));
    // ...all on the one channel connection: nothing else was ever opened.
    CHECK(fake.connections_open() == 1);
    CHECK(fake.connections_accepted() == accepted_before + 1);
    CHECK(fake.connects().size() == 1);
    const auto sink_stats = (*sink)->stats();
    CHECK(sink_stats.uploaded == 50);
    CHECK(sink_stats.upload_failures == 0);
    CHECK(source.stats().status_failures == 0);
    CHECK(source.stats().last_rtt_ms > 0);
}

TEST_CASE("agent channel socket: a refused upgrade names its status; replies route by id; close() ends a read") {
    Scratch scratch;
    FakeController fake("hv1");
    fake.set_heartbeat_interval_ms(200);
    auto client = enrolled_client(fake, scratch);
    const auto endpoint = *parse_controller_url(fake.url());
    const auto path = client->enforcer_path("channel") + "?generation=0&hash=&hash_format=2";

    {
        ChannelSocket refused(endpoint, "");
        auto connected = refused.connect(path, "not-the-credential", 2s);
        REQUIRE_FALSE(connected);
        CHECK_MESSAGE(connected.error().find("HTTP 401") != std::string::npos, connected.error());
        CHECK_FALSE(refused.request("status", "{}", 1s));  // never open: no request goes
    }

    ChannelSocket socket(endpoint, "");
    auto connected = socket.connect(path, client->credential(), 2s);
    REQUIRE_MESSAGE(connected, (connected ? "" : connected.error()));
    auto hello = socket.read();
    REQUIRE(hello);
    CHECK(json::parse(*hello)["type"] == "hello");
    // Requests from two threads at once; each gets its own answer (the fake refuses a
    // status without its fields and an unknown request with 400, takes an empty upload).
    std::expected<HttpResponse, std::string> bad_status, unknown, upload;
    std::thread other([&] { bad_status = socket.request("status", "{}", 2s); });
    unknown = socket.request("nonsense", "{}", 2s);
    upload = socket.request("events", R"({"events":[]})", 2s);
    other.join();
    REQUIRE(bad_status);
    CHECK(bad_status->status == 400);
    CHECK(bad_status->body.find("bad status") != std::string::npos);
    REQUIRE(unknown);
    CHECK(unknown->status == 400);
    REQUIRE(upload);
    CHECK(upload->status == 200);
    CHECK(json::parse(upload->body)["through_seq"] == 0);

    // A reader blocked in read() (the fake silent: nothing comes) ends as soon as another
    // thread closes the socket, with the reason it was given.
    fake.set_silent(true);
    std::atomic<bool> ended{false};
    std::string reason;
    std::thread reader([&] {
        for (;;) {
            auto message = socket.read();
            if (!message) {
                reason = message.error();
                break;
            }
        }
        ended = true;
    });
    const auto closed_at = std::chrono::steady_clock::now();
    socket.close("the test closed it");
    REQUIRE(eventually([&] { return ended.load(); }, 2s));
    reader.join();
    CHECK(std::chrono::steady_clock::now() - closed_at < 1500ms);
    CHECK(reason == "the test closed it");
    CHECK_FALSE(socket.is_open());
    CHECK_FALSE(socket.request("status", "{}", 2s));
    fake.set_silent(false);
}
