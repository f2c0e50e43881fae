// The controller's durable state: fail-closed recompiles, versioned incident updates, the
// webhook outbox and the restart replay, over a real SQLite store (a fault-injecting
// wrapper where a failure is needed).
#include "controller/services/active_configuration.hpp"
#include "controller/services/controller_services.hpp"
#include "controller/services/event_sequencer.hpp"
#include "controller/services/webhook.hpp"

#include "fault_injecting_store.hpp"
#include "test_store_support.hpp"

#include <doctest/doctest.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

using namespace bulkhead;
using namespace bulkhead::controller;
using nlohmann::json;

namespace {

json read_example(const std::string& path) {
    std::ifstream in(std::string(BULKHEAD_SOURCE_DIR) + "/" + path);
    REQUIRE(in.good());
    std::stringstream text;
    text << in.rdbuf();
    return json::parse(text.str());
}

const Caller kAdmin{"alice", Role::Admin, ""};
const Caller kSoc{"sam", Role::Soc, ""};

struct ClockStub {
    std::atomic<TimeMs> now{1'790'000'000'000};
};

// A service over `store` with the vdi-pool example's inventory and policy active. The
// analyzer quarantines from medium severity on, so a scan contains its source.
std::unique_ptr<ControllerServices> make_service(std::shared_ptr<Store> store, ClockStub& clock,
                                                 bool provision, ControllerOptions options = {}) {
    auto service = std::make_unique<ControllerServices>(store, options, [&clock] { return clock.now.load(); });
    REQUIRE(service->start());
    if (provision) {
        REQUIRE(service->inventory.replace_inventory(kAdmin, read_example("examples/vdi-pool/inventory.json")));
        json policy = read_example("examples/vdi-pool/policy.json");
        policy["response"] = json{{"incident", json{{"distinct_targets", 10u}, {"window_seconds", 60u}, {"severity", "high"}}},
                              {"auto_quarantine", json{{"mode", "on"}, {"min_severity", "medium"}}}};
        auto uploaded = service->policies.upload_policy(kAdmin, policy);
        REQUIRE_MESSAGE(uploaded, (uploaded ? "" : uploaded.error().message + " " + uploaded.error().details.dump()));
        REQUIRE(service->policies.activate_policy(kAdmin, (*uploaded)["id"].get<std::int64_t>()));
    }
    return service;
}

std::string desired_hash(ControllerServices& service, const std::string& enforcer) {
    auto e = service.fleet.get_enforcer(enforcer);
    REQUIRE(e);
    return (*e)["desired_hash"].get<std::string>();
}

// An upload of `count` blocked TCP probes from vdi-002 (10.1.0.2, port vdi002 on hv1) to
// distinct hosts, one a second from `first_seq`.
std::string scan_batch(std::uint64_t first_seq, int count, std::int64_t start_ns, int port = 445) {
    json events = json::array();
    for (int i = 0; i < count; ++i) {
        const auto seq = first_seq + static_cast<std::uint64_t>(i);
        events.push_back(json{{"seq", seq},
                              {"event", json{{"type", "drop"},
                                             {"time_ns", start_ns + static_cast<std::int64_t>(seq) * 100'000'000},
                                             {"workload", "vdi-002"},
                                             {"direction", "out"},
                                             {"reason", "default"},
                                             {"src", "10.1.0.2"},
                                             {"dst", "10.9.0." + std::to_string(seq)},
                                             {"proto", 6},
                                             {"proto_name", "tcp"},
                                             {"sport", 40000 + seq},
                                             {"dport", port},
                                             {"indev", "vdi002"},
                                             {"src_mac", "52:54:00:01:00:02"}}}});
    }
    return json{{"events", events}}.dump();
}

const Caller kHv1{"enforcer:hv1", Role::Enforcer, "hv1"};

}  // namespace

TEST_CASE("controller: a failed read of the quarantines keeps them in force (fail closed)") {
    test::TempDir dir;
    std::shared_ptr<Store> sqlite = test::open_store(dir.path() / "controller.db");
    auto store = std::make_shared<test::FaultInjectingStore>(sqlite);
    ClockStub clock;
    auto service = make_service(store, clock, true);

    const std::string before = desired_hash(*service, "hv1");
    REQUIRE(service->quarantines.create_quarantine(kSoc, json{{"workload", "vdi-001"}}, {}));
    const std::string quarantined = desired_hash(*service, "hv1");
    CHECK(quarantined != before);

    store->fail("active_quarantines");
    SUBCASE("an inventory change") {
        json inventory = read_example("examples/vdi-pool/inventory.json");
        inventory["workloads"][0]["hostname"] = "VDI-001-renamed";
        auto changed = service->inventory.replace_inventory(kAdmin, inventory);
        CHECK_FALSE(changed);
        if (!changed) {
            CHECK(changed.error().kind == ErrorKind::Unavailable);
        }
    }
    SUBCASE("another quarantine") {
        CHECK_FALSE(service->quarantines.create_quarantine(kSoc, json{{"workload", "vdi-003"}}, {}));
    }
    SUBCASE("a restart") {
        service.reset();
        auto restarted = std::make_unique<ControllerServices>(store, ControllerOptions{}, [&clock] { return clock.now.load(); });
        CHECK_FALSE(restarted->start());  // refuses to start rather than push rulesets without the quarantine
        store->heal();
        service = std::make_unique<ControllerServices>(store, ControllerOptions{}, [&clock] { return clock.now.load(); });
        REQUIRE(service->start());
    }
    CHECK(store->failures() > 0);
    // Whatever failed, the enforcer is still told to hold the quarantine.
    CHECK(desired_hash(*service, "hv1") == quarantined);
    store->heal();
    auto listed = service->quarantines.list_quarantines();
    REQUIRE(listed);
    CHECK((*listed)["quarantines"].size() >= 1);
}

TEST_CASE("store: an incident update with a stale version is a Conflict, not a lost update") {
    test::StoreFixture f;
    Incident incident;
    incident.source_workload = "vdi-001";
    incident.severity = "medium";
    incident.title = "t";
    incident.explanation = "e";
    auto added = f.store->add_incident(incident);
    REQUIRE(added);
    CHECK(added->version == 1);

    // The analyzer read version 1; the SOC resolves it (version 2) before the analyzer writes.
    Incident analyzer_copy = *added;
    Incident soc_copy = *added;
    soc_copy.state = IncidentState::Resolved;
    auto resolved = f.store->update_incident(soc_copy);
    REQUIRE(resolved);
    CHECK(resolved->version == 2);

    analyzer_copy.event_count = 99;
    auto stale = f.store->update_incident(analyzer_copy);
    REQUIRE_FALSE(stale);
    CHECK(stale.error().kind == StoreError::Kind::Conflict);
    auto now = f.store->get_incident(added->id);
    REQUIRE(now);
    CHECK(now->state == IncidentState::Resolved);
    CHECK(now->event_count == 0);

    Incident missing = *now;
    missing.id = 999;
    auto gone = f.store->update_incident(missing);
    REQUIRE_FALSE(gone);
    CHECK(gone.error().kind == StoreError::Kind::NotFound);
}

TEST_CASE("controller: a resolved incident is not reopened by the next findings of its source") {
    test::TempDir dir;
    std::shared_ptr<Store> store = test::open_store(dir.path() / "controller.db");
    ClockStub clock;
    auto service = make_service(store, clock, true);
    const std::int64_t start = clock.now.load() * 1'000'000;
    REQUIRE(service->events.ingest_events(kHv1, "hv1", scan_batch(1, 20, start)));
    auto open = store->unresolved_incident_of("vdi-002");
    REQUIRE(open);
    REQUIRE(open->has_value());
    const auto first = (*open)->id;
    REQUIRE(service->incidents.set_incident_state(kSoc, first, IncidentState::Resolved));
    REQUIRE(service->events.ingest_events(kHv1, "hv1", scan_batch(21, 20, start + 30'000'000'000)));
    auto resolved = store->get_incident(first);
    REQUIRE(resolved);
    CHECK(resolved->state == IncidentState::Resolved);
}

TEST_CASE("controller: a restart in the middle of a scan gives one incident that counts every drop") {
    test::TempDir dir;
    std::shared_ptr<Store> store = test::open_store(dir.path() / "controller.db");
    ClockStub clock;
    const std::int64_t start = clock.now.load() * 1'000'000;
    {
        auto service = make_service(store, clock, true);
        REQUIRE(service->events.ingest_events(kHv1, "hv1", scan_batch(1, 10, start)));
        // No clean shutdown matters here: the replay does not rely on what shutdown saves.
    }
    auto before = store->list_incidents(IncidentQuery{});
    REQUIRE(before);
    const auto incidents_before = before->size();
    auto service = make_service(store, clock, false);
    // The restart replayed the first ten: nothing new, nothing counted twice.
    auto after_restart = store->list_incidents(IncidentQuery{});
    REQUIRE(after_restart);
    CHECK(after_restart->size() == incidents_before);
    REQUIRE(service->events.ingest_events(kHv1, "hv1", scan_batch(11, 10, start)));

    auto all = store->list_incidents(IncidentQuery{std::nullopt, std::string("vdi-002"), std::nullopt, 100});
    REQUIRE(all);
    REQUIRE(all->size() == 1);
    CHECK(all->front().event_count == 20);
    auto timeline = store->incident_events(all->front().id, 100);
    REQUIRE(timeline);
    CHECK(timeline->size() == 20);
    auto history = store->quarantine_history("vdi-002", 10);
    REQUIRE(history);
    CHECK(history->size() == 1);
}

TEST_CASE("webhook outbox: rows roll back with their change; delivery retries with one id and survives a restart") {
    test::StoreFixture f;
    httplib::Server receiver;
    std::mutex mutex;
    std::vector<std::pair<std::string, std::string>> received;  // (delivery id, attempt)
    std::atomic<int> refuse{2};  // the first two POSTs get 503
    receiver.Post("/hook", [&](const httplib::Request& req, httplib::Response& res) {
        std::lock_guard lock(mutex);
        received.emplace_back(req.get_header_value("X-Bulkhead-Delivery"), req.get_header_value("X-Bulkhead-Attempt"));
        res.status = refuse.fetch_sub(1) > 0 ? 503 : 204;
    });
    const int port = receiver.bind_to_any_port("127.0.0.1");
    std::thread serving([&] { receiver.listen_after_bind(); });

    WebhookOptions options;
    options.targets.push_back({"http://127.0.0.1:" + std::to_string(port) + "/hook", "", ""});
    options.first_backoff = std::chrono::milliseconds(20);
    options.max_backoff = std::chrono::milliseconds(50);
    WebhookOutbox outbox(options);
    // Real time: the sender waits for each retry's due time.
    const auto now = [] {
        return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    };

    // A change that fails takes its notification with it.
    auto failed = f.store->in_transaction([&]() -> StoreResult<void> {
        REQUIRE(outbox.enqueue(*f.store, "incident.opened", json{{"id", 1}}, now()));
        return std::unexpected(StoreError{StoreError::Kind::Conflict, "the change failed"});
    });
    CHECK_FALSE(failed);
    auto stats = f.store->outbox_stats();
    REQUIRE(stats);
    CHECK(stats->pending == 0);

    REQUIRE(f.store->in_transaction([&]() -> StoreResult<void> {
        return outbox.enqueue(*f.store, "incident.opened", json{{"id", 2}}, now());
    }));
    REQUIRE(outbox.enqueue(*f.store, "incident.escalated", json{{"id", 2}}, now()));
    {
        // A controller that stops before the receiver accepts anything...
        WebhookDelivery first(options, *f.store, now);
        first.start();
        for (int i = 0; i < 400; ++i) {
            {
                std::lock_guard lock(mutex);
                if (!received.empty()) {
                    break;
                }
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }
    // ... and the next one delivers everything, in order, each with its one id.
    WebhookDelivery second(options, *f.store, now);
    second.start();
    for (int i = 0; i < 500; ++i) {
        auto s = f.store->outbox_stats();
        REQUIRE(s);
        if (s->pending == 0) {
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    second.stop();
    receiver.stop();
    serving.join();
    stats = f.store->outbox_stats();
    REQUIRE(stats);
    CHECK(stats->pending == 0);
    CHECK(stats->delivered == 2);
    std::lock_guard lock(mutex);
    REQUIRE(received.size() >= 4);  // two refusals, then both messages
    std::vector<std::string> delivered_order;
    std::map<std::string, int> attempts;
    for (const auto& [id, attempt] : received) {
        attempts[id] = std::max(attempts[id], std::stoi(attempt));
        if (delivered_order.empty() || delivered_order.back() != id) {
            delivered_order.push_back(id);
        }
    }
    CHECK(delivered_order.size() == 2);  // the first message until accepted, then the second
    CHECK(attempts[delivered_order.front()] == 3);
}

TEST_CASE("event sequencer: batches are processed in id order, and a gap is read back after its timeout") {
    std::vector<std::int64_t> seen;
    std::vector<std::pair<std::int64_t, std::int64_t>> fills;
    auto make = [](std::int64_t from, std::int64_t to) {
        std::vector<StoredEvent> events;
        for (auto id = from; id < to; ++id) {
            StoredEvent e;
            e.id = id;
            events.push_back(e);
        }
        return events;
    };
    EventSequencer sequencer([&](std::vector<StoredEvent>& events) {
        for (const auto& e : events) {
            seen.push_back(e.id);
        }
    },
                             [&](std::int64_t from, std::int64_t to) {
                                 fills.emplace_back(from, to);
                                 return make(from, to);
                             },
                             std::chrono::milliseconds(0));
    sequencer.reset(1);
    sequencer.submit(make(4, 7));  // waits for 1..3
    CHECK(seen.empty());
    sequencer.submit(make(1, 4));
    CHECK(seen == std::vector<std::int64_t>{1, 2, 3, 4, 5, 6});
    sequencer.submit(make(10, 12));  // 7..9 never arrive
    CHECK(seen.size() == 6);
    sequencer.close_stale_gaps();
    CHECK(fills == std::vector<std::pair<std::int64_t, std::int64_t>>{{7, 10}});
    CHECK(seen == std::vector<std::int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
    sequencer.submit(make(8, 9));  // late: analysed already
    CHECK(seen.size() == 11);
    CHECK(sequencer.next_id() == 12);
    CHECK(sequencer.drain(std::chrono::milliseconds(10)));
}

TEST_CASE("controller: a clean stop saves the analyzer's checkpoint and the restart resumes from it") {
    test::TempDir dir;
    std::shared_ptr<Store> store = test::open_store(dir.path() / "controller.db");
    ClockStub clock;
    const std::int64_t start = clock.now.load() * 1'000'000;
    {
        auto service = make_service(store, clock, true);
        // Below the policy's ten-target rule, on a port no lateral-movement rule watches: the
        // engine's window holds them, no incident yet.
        REQUIRE(service->events.ingest_events(kHv1, "hv1", scan_batch(1, 6, start, 8081)));
        service->shutdown();
    }
    auto saved = store->load_analysis_checkpoint();
    REQUIRE(saved);
    REQUIRE(saved->has_value());
    CHECK((*saved)->through_event_id == 6);

    auto service = make_service(store, clock, false);
    auto status = service->analyzer_status();
    REQUIRE(status);
    CHECK((*status)["last_start"]["from_checkpoint"] == true);
    CHECK((*status)["last_start"]["replayed_events"] == 0);
    auto none = store->list_incidents(IncidentQuery{});
    REQUIRE(none);
    CHECK(none->empty());
    // The restored window still holds the six targets: four more cross the threshold.
    REQUIRE(service->events.ingest_events(kHv1, "hv1", scan_batch(7, 4, start, 8081)));
    auto all = store->list_incidents(IncidentQuery{std::nullopt, std::string("vdi-002"), std::nullopt, 100});
    REQUIRE(all);
    REQUIRE(all->size() == 1);
    CHECK(all->front().event_count == 10);

    SUBCASE("a checkpoint this build cannot read falls back to the replay horizon") {
        service.reset();
        AnalysisCheckpoint corrupt = **saved;
        corrupt.engine = "not a checkpoint";
        REQUIRE(store->save_analysis_checkpoint(corrupt));
        auto again = make_service(store, clock, false);
        auto restarted = again->analyzer_status();
        REQUIRE(restarted);
        CHECK((*restarted)["last_start"]["from_checkpoint"] == false);
        CHECK((*restarted)["last_start"]["replayed_events"] == 10);
        auto still = store->list_incidents(IncidentQuery{std::nullopt, std::string("vdi-002"), std::nullopt, 100});
        REQUIRE(still);
        CHECK(still->size() == 1);
        CHECK(still->front().event_count == 10);
    }
}

TEST_CASE("active configuration: a policy activation reuses the parsed inventory only while no inventory write happened") {
    test::TempDir dir;
    std::shared_ptr<Store> store = test::open_store(dir.path() / "controller.db");
    const json inventory = read_example("examples/vdi-pool/inventory.json");
    std::vector<EnforcerDefinition> enforcers;
    for (const auto& e : inventory["enforcers"]) {
        enforcers.push_back({e["id"].get<std::string>(), e});
    }
    std::vector<WorkloadRecord> workloads;
    for (const auto& w : inventory["workloads"]) {
        workloads.push_back(WorkloadRecord{w["id"].get<std::string>(), w.value("enforcer", ""), w, 1});
    }
    REQUIRE(store->upsert_enforcer_definitions(enforcers));
    REQUIRE(store->upsert_workloads(workloads));
    PolicyRevision revision;
    revision.id = 1;
    revision.document = read_example("examples/vdi-pool/policy.json");

    ActiveConfiguration configuration(*store);
    auto first = configuration.build(revision);
    REQUIRE(first);
    configuration.adopt(*first);
    const auto count = (*first)->inventory().workloads.size();

    // A workload written to the store behind the configuration's back, as a write whose
    // reload then failed would leave it.
    json extra = inventory["workloads"][0];
    extra["id"] = "vdi-extra";
    extra["addresses"] = json::array({"10.1.0.250"});
    extra["attachment"]["interface"] = "vdiextra";
    extra["mac"] = "52:54:00:01:00:fa";
    extra["hostname"] = "VDI-EXTRA";
    REQUIRE(store->upsert_workloads({{"vdi-extra", extra["enforcer"].get<std::string>(), extra, 2}}));

    SUBCASE("without a write announced, the held inventory is used (no re-read per activation)") {
        auto second = configuration.build(revision);
        REQUIRE(second);
        CHECK((*second)->inventory_snapshot == (*first)->inventory_snapshot);
        CHECK((*second)->inventory().workloads.size() == count);
    }
    SUBCASE("after a write is announced, the next build reads the store, even if nothing was installed") {
        configuration.inventory_changing();
        auto second = configuration.build(revision);
        REQUIRE(second);
        CHECK((*second)->inventory_snapshot != (*first)->inventory_snapshot);
        CHECK((*second)->inventory().workloads.size() == count + 1);
        auto compiled = (*second)->compiler->compile(extra["enforcer"].get<std::string>(), {});
        REQUIRE(compiled);
        CHECK(std::any_of(compiled->ports.begin(), compiled->ports.end(),
                          [](const auto& p) { return p.interface == "vdiextra"; }));
        // Not installed: the one after it still reads (the version it was read at is not current).
        auto third = configuration.build(revision);
        REQUIRE(third);
        CHECK((*third)->inventory_snapshot != (*second)->inventory_snapshot);
        configuration.adopt(*third);
        auto fourth = configuration.build(revision);
        REQUIRE(fourth);
        CHECK((*fourth)->inventory_snapshot == (*third)->inventory_snapshot);
    }
}
