// The fleet's channel plumbing: one mailbox per enforcer (a change wakes that enforcer's
// stream only), the shared diff cache, stream replacement, and the status book that writes
// acks and heartbeats to the store in batches (over a real SQLite store; a fault-injecting
// wrapper where a failed write is needed).
#include "controller/services/channel_hub.hpp"
#include "controller/services/enforcer_status_book.hpp"
#include "enforcer/agent/channel_session.hpp"
#include "policies/policy_reader.hpp"
#include "policies/ruleset_compiler.hpp"

#include "fault_injecting_store.hpp"
#include "test_store_support.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <mutex>

using namespace bulkhead;
using namespace bulkhead::controller;
using nlohmann::json;

namespace {

std::map<std::string, ruleset::Ruleset> compile_all(const std::set<std::string>& quarantined = {}) {
    auto policy = policy::parse_policy(test::read_source_file("examples/vdi-pool/policy.json"));
    auto inventory = policy::parse_inventory(test::read_source_file("examples/vdi-pool/inventory.json"));
    REQUIRE(policy);
    REQUIRE(inventory);
    ruleset::RulesetCompiler compiler(*policy, *inventory);
    return compiler.compile_all(quarantined);
}

// DesiredState behind the interface the hub reads, as the fleet service provides it.
class Desired final : public DesiredVersions {
  public:
    std::vector<std::string> update(std::map<std::string, ruleset::Ruleset> rulesets) {
        std::lock_guard lock(mutex_);
        return state_.update(std::move(rulesets), ++generation_);
    }
    std::optional<RulesetVersion> current(const std::string& enforcer) const override {
        std::lock_guard lock(mutex_);
        return state_.current(enforcer);
    }
    std::optional<RulesetVersion> find(const std::string& enforcer, std::uint64_t generation,
                                       const std::string& hash) const override {
        std::lock_guard lock(mutex_);
        return state_.find(enforcer, generation, hash);
    }
    std::optional<RulesetVersion> find_format1(const std::string& enforcer, std::uint64_t generation,
                                               const std::string& format1_hash) const override {
        std::lock_guard lock(mutex_);
        return state_.find_format1(enforcer, generation, format1_hash);
    }

  private:
    mutable std::mutex mutex_;
    DesiredState state_;
    std::uint64_t generation_ = 0;
};

TimeMs fixed_clock() { return 1'790'000'000'000; }

// Drains what a stream has now, feeding an enforcer's own channel session.
std::vector<json> drain(ChannelStream& stream, enforcer::agent::ChannelSession* session = nullptr) {
    std::vector<json> out;
    for (;;) {
        auto line = stream.poll_line();
        REQUIRE(line.has_value());
        if (line->empty()) {
            return out;
        }
        if (session != nullptr) {
            auto action = session->handle_line(*line);
            CHECK(action.kind != enforcer::agent::ChannelAction::Kind::Resync);
            CHECK(action.kind != enforcer::agent::ChannelAction::Kind::Reject);
        }
        out.push_back(json::parse(*line));
    }
}

}  // namespace

TEST_CASE("channel hub: a change wakes only the changed enforcer's stream, which gets a verified diff") {
    Desired desired;
    desired.update(compile_all());
    ChannelHub hub(desired, std::chrono::hours(1), fixed_clock);
    auto hv1 = hub.open("hv1", 0, "");
    auto hv2 = hub.open("hv2", 0, "");
    std::atomic<int> hv1_wakes{0}, hv2_wakes{0};
    hv1->set_wake([&] { ++hv1_wakes; });
    hv2->set_wake([&] { ++hv2_wakes; });
    enforcer::agent::ChannelSession session("hv1", {});
    auto first = drain(*hv1, &session);
    REQUIRE(first.size() == 2);
    CHECK(first[0]["type"] == "hello");
    CHECK(first[1]["type"] == "ruleset");  // nothing held: the full ruleset
    drain(*hv2);
    CHECK(hub.open_streams() == 2);
    CHECK(hub.connected("hv1"));

    // Quarantining vdi-001 (on hv1) changes hv1's ruleset only.
    const auto changed = desired.update(compile_all({"vdi-001"}));
    REQUIRE(changed == std::vector<std::string>{"hv1"});
    hub.changed(changed);
    CHECK(hv1_wakes == 1);
    CHECK(hv2_wakes == 0);
    auto update = drain(*hv1, &session);
    REQUIRE(update.size() == 1);
    CHECK(update[0]["type"] == "diff");
    CHECK(session.held().hash == desired.current("hv1")->hash);
    CHECK(drain(*hv2).empty());
}

TEST_CASE("channel hub: an enforcer of the previous release (format-1 hashes) gets its ruleset and diffs") {
    Desired desired;
    desired.update(compile_all());
    ChannelHub hub(desired, std::chrono::hours(1), fixed_clock);
    // It announces no hash format: the hub speaks format 1 to it, and its session checks
    // format-1 hashes as the previous release does.
    auto stream = hub.open("hv1", 0, "", 1);
    enforcer::agent::ChannelSession session("hv1", {}, 1);
    auto first = drain(*stream, &session);
    REQUIRE(first.size() == 2);
    REQUIRE(first[1]["type"] == "ruleset");
    const auto current = *desired.current("hv1");
    CHECK(first[1]["hash"] == current.format1_hash());
    CHECK(session.held().hash == current.format1_hash());
    CHECK(current.format1_hash() != current.hash);

    desired.update(compile_all({"vdi-001"}));
    hub.changed({"hv1"});
    auto update = drain(*stream, &session);
    REQUIRE(update.size() == 1);
    CHECK(update[0]["type"] == "diff");
    CHECK(update[0]["base_hash"] == current.format1_hash());
    CHECK(session.held().hash == desired.current("hv1")->format1_hash());

    // Reconnecting with what it holds (a format-1 hash) yields nothing to send: the hub
    // found the version it names.
    const auto held = session.held();
    auto again = hub.open("hv1", held.generation, held.hash, 1);
    const auto lines = drain(*again);
    REQUIRE(lines.size() == 1);
    CHECK(lines[0]["type"] == "hello");
    // An unknown format-1 hash: a full ruleset, as for any unknown base.
    auto unknown = hub.open("hv1", held.generation, "0123456789abcdef", 1);
    const auto full = drain(*unknown);
    REQUIRE(full.size() == 2);
    CHECK(full[1]["type"] == "ruleset");
}

TEST_CASE("channel hub: full rulesets take turns, diffs and heartbeats never wait") {
    Desired desired;
    desired.update(compile_all());
    const auto hv1_base = *desired.current("hv1");
    ChannelHub hub(desired, std::chrono::milliseconds(0), fixed_clock, 1);  // one at a time
    auto first = hub.open("hv2", 0, "");
    auto second = hub.open("hv1", 0, "");
    std::atomic<int> second_wakes{0};
    second->set_wake([&] { ++second_wakes; });
    auto line = [](ChannelStream& stream) { return json::parse(*stream.poll_line()); };
    CHECK(line(*first)["type"] == "hello");
    CHECK(line(*first)["type"] == "ruleset");  // takes the one turn
    CHECK(line(*second)["type"] == "hello");
    // No turn: a heartbeat (due at once with a 0 ms interval) instead of the ruleset.
    CHECK(line(*second)["type"] == "heartbeat");
    CHECK(hub.full_rulesets() == std::pair<std::size_t, std::size_t>{1, 1});
    // The first stream is polled again once its ruleset is written: the turn passes on.
    CHECK(line(*first)["type"] == "heartbeat");
    CHECK(second_wakes == 1);
    CHECK(line(*second)["type"] == "ruleset");
    // A diff needs no turn even while a full ruleset holds it.
    auto third = hub.open("hv1", hv1_base.generation, hv1_base.hash);
    CHECK(line(*third)["type"] == "hello");
    desired.update(compile_all({"vdi-001"}));
    hub.changed({"hv1"});
    CHECK(line(*third)["type"] == "diff");
}

TEST_CASE("channel hub: a few enforcers' diffs are prepared by changed() and taken without a poll") {
    Desired desired;
    desired.update(compile_all());
    ChannelHub hub(desired, std::chrono::hours(1), fixed_clock);
    auto hv1 = hub.open("hv1", 0, "");
    hv1->set_wake([] {});
    enforcer::agent::ChannelSession session("hv1", {});
    CHECK_FALSE(hv1->take_prepared());  // nothing prepared, and the hello comes first anyway
    REQUIRE(drain(*hv1, &session).size() == 2);

    // A quarantine: the diff is ready when the stream is woken, and taking it computes nothing.
    hub.changed(desired.update(compile_all({"vdi-001"})));
    const auto misses = hub.diff_cache_stats().misses;
    auto line = hv1->take_prepared();
    REQUIRE(line.has_value());
    CHECK(json::parse(*line)["type"] == "diff");
    auto action = session.handle_line(*line);
    CHECK(action.kind == enforcer::agent::ChannelAction::Kind::Apply);
    CHECK(session.held().hash == desired.current("hv1")->hash);
    CHECK(hub.diff_cache_stats().misses == misses);
    CHECK_FALSE(hv1->take_prepared());  // taken once
    CHECK(drain(*hv1, &session).empty());  // and poll_line() does not send it again

    // Superseded before it was taken (the desired ruleset moved on, its own wake to come):
    // not sent; poll_line() sends the diff to the newest.
    hub.changed(desired.update(compile_all({"vdi-001", "vdi-002"})));
    desired.update(compile_all({"vdi-002"}));
    CHECK_FALSE(hv1->take_prepared());
    auto newest = drain(*hv1, &session);
    REQUIRE(newest.size() == 1);
    CHECK(session.held().hash == desired.current("hv1")->hash);

    // Already sent by a poll: the prepared diff starts from what the stream no longer holds.
    hub.changed(desired.update(compile_all()));
    REQUIRE(drain(*hv1, &session).size() == 1);
    CHECK_FALSE(hv1->take_prepared());

    // An enforcer of the previous release gets lines built for it alone: nothing prepared.
    const auto held = *desired.current("hv2");
    auto old = hub.open("hv2", held.generation, ruleset::ruleset_hash_format1(*held.ruleset), 1);
    old->set_wake([] {});
    drain(*old);
    hub.changed(desired.update(compile_all({"vdi-101"})));
    CHECK_FALSE(old->take_prepared());
    CHECK(drain(*old).size() == 1);
}

TEST_CASE("channel hub: the diff from one version to another is built once and shared") {
    Desired desired;
    desired.update(compile_all());
    const auto base = *desired.current("hv1");
    ChannelHub hub(desired, std::chrono::hours(1), fixed_clock);
    desired.update(compile_all({"vdi-001"}));
    // Two streams holding the same base (the enforcer reconnecting while the first stream
    // has not noticed yet) get the same diff line from one computation.
    auto first = hub.open("hv1", base.generation, base.hash);
    const auto a = drain(*first);
    auto second = hub.open("hv1", base.generation, base.hash);
    CHECK_FALSE(first->poll_line().has_value());  // replaced: the older stream ends
    const auto b = drain(*second);
    REQUIRE(a.size() == 2);
    REQUIRE(b.size() == 2);
    CHECK(a[1]["type"] == "diff");
    CHECK(a[1] == b[1]);
    const auto stats = hub.diff_cache_stats();
    CHECK(stats.misses == 1);
    CHECK(stats.hits == 1);
    first.reset();
    CHECK(hub.connected("hv1"));  // the older stream's end does not disconnect the newer
}

TEST_CASE("channel hub: heartbeats when due, next_line wakes on a change, shutdown ends streams") {
    Desired desired;
    desired.update(compile_all());
    ChannelHub hub(desired, std::chrono::milliseconds(0), fixed_clock);
    const auto held = *desired.current("hv1");
    auto stream = hub.open("hv1", held.generation, held.hash);
    CHECK(json::parse(*stream->next_line())["type"] == "hello");
    // In force already: with a zero interval the next line is a heartbeat.
    CHECK(json::parse(*stream->next_line())["type"] == "heartbeat");
    hub.shutdown();
    CHECK_FALSE(stream->next_line().has_value());
}

TEST_CASE("status book: reports are in memory at once, in the store after one batched flush") {
    test::TempDir dir;
    std::shared_ptr<Store> sqlite = test::open_store(dir.path() / "bulkhead.db");
    auto faulty = std::make_shared<test::FaultInjectingStore>(sqlite);
    EnforcerStatusBook book(*faulty, *faulty);
    REQUIRE(book.load());
    for (const char* id : {"hv1", "hv2"}) {
        EnforcerStatus status;
        status.id = id;
        status.applied_generation = 3;
        status.applied_hash = std::string("hash-") + id;
        status.apply_state = "applied";
        status.last_heartbeat = 1000;
        CHECK(book.record(status));  // a new hash: an ack
    }
    CHECK(book.acked("hv1", "hash-hv1"));
    CHECK(book.wait_for_ack("hv2", "hash-hv2", std::chrono::milliseconds(0)));
    CHECK((*book.get("hv2"))->applied_generation == 3);
    CHECK_FALSE(sqlite->get_enforcer_status("hv1")->has_value());  // not written yet
    CHECK(book.pending() == 2);

    // A failed write keeps them pending; the next flush writes both in one transaction.
    faulty->fail("in_transaction");
    CHECK_FALSE(book.flush());
    CHECK(book.pending() == 2);
    faulty->heal();
    auto flushed = book.flush();
    REQUIRE(flushed);
    CHECK(*flushed == 2);
    CHECK(book.pending() == 0);
    CHECK((*sqlite->get_enforcer_status("hv1"))->applied_hash == "hash-hv1");

    // A heartbeat with the same hash is not an ack; a restarted book knows what was acked.
    EnforcerStatus heartbeat = **book.get("hv1");
    heartbeat.last_heartbeat = 2000;
    CHECK_FALSE(book.record(heartbeat));
    REQUIRE(book.flush());
    EnforcerStatusBook restarted(*sqlite, *sqlite);
    REQUIRE(restarted.load());
    CHECK(restarted.acked("hv1", "hash-hv1"));
    CHECK(*(*restarted.get("hv1"))->last_heartbeat == 2000);

    // A fleet's second of reports is written in several short transactions, every one of them.
    for (int i = 0; i < 150; ++i) {
        EnforcerStatus status;
        status.id = "hv-many-" + std::to_string(i);
        status.applied_hash = "hash-" + std::to_string(i);
        status.last_heartbeat = 3000;
        book.record(status);
    }
    auto many = book.flush();
    REQUIRE(many);
    CHECK(*many == 150);
    CHECK(book.pending() == 0);
    CHECK((*sqlite->get_enforcer_status("hv-many-0"))->applied_hash == "hash-0");
    CHECK((*sqlite->get_enforcer_status("hv-many-149"))->applied_hash == "hash-149");
}
