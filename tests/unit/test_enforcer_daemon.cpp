#include "enforcer/daemon/file_ruleset_source.hpp"
#include "enforcer/daemon/metrics.hpp"
#include "enforcer/daemon/ruleset_keeper.hpp"
#include "enforcer/daemon/state_store.hpp"
#include "enforcer/interfaces/event_sink.hpp"
#include "enforcer/netlink/fake_ruleset_backend.hpp"
#include "policies/policy_reader.hpp"
#include "policies/ruleset_compiler.hpp"
#include "policies/ruleset_diff.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <unistd.h>

using namespace bulkhead;
using namespace bulkhead::enforcer;

namespace {

// A kernel stand-in: records what it was asked to do and can be told to fail or drift.
// (The real backend is exercised against the kernel in the enforcer kernel tests.)
class FakeBackend final : public RulesetBackend {
public:
    std::optional<ruleset::Ruleset> kernel;  // what the "kernel" holds
    int replaces = 0;
    int diffs = 0;
    bool fail_diff = false;
    bool fail_replace = false;

    std::expected<ApplyStats, KernelError> replace(const ruleset::Ruleset& desired) override {
        if (fail_replace) {
            return std::unexpected(KernelError{"rejected", 22, "set x"});
        }
        ++replaces;
        kernel = desired;
        return ApplyStats{static_cast<std::uint32_t>(replaces + diffs), 1, 1, desired.element_count(), {}};
    }
    std::expected<ApplyStats, KernelError> apply_diff(const ruleset::RulesetDiff&,
                                                      const ruleset::Ruleset& desired) override {
        if (fail_diff) {
            return std::unexpected(KernelError{"No such file or directory", 2, "set y"});
        }
        ++diffs;
        kernel = desired;
        return ApplyStats{static_cast<std::uint32_t>(replaces + diffs), 1, 1, 0, {}};
    }
    std::expected<DriftReport, KernelError> check(const ruleset::Ruleset& desired) override {
        DriftReport report;
        if (!kernel) {
            report.table_missing = true;
        } else if (ruleset::ruleset_hash(*kernel) != ruleset::ruleset_hash(desired)) {
            report.changed_chains.push_back("forward");
        }
        return report;
    }
    std::expected<std::uint32_t, KernelError> generation() override {
        return static_cast<std::uint32_t>(replaces + diffs);
    }
};

class CollectingSink final : public EventSink {
public:
    std::vector<nlohmann::json> events;
    void emit(const nlohmann::json& event) override { events.push_back(event); }
    std::vector<std::string> types() const {
        std::vector<std::string> out;
        for (const auto& e : events) {
            out.push_back(e["type"].get<std::string>());
        }
        return out;
    }
};

struct TempDir {
    std::filesystem::path path;
    TempDir() {
        path = std::filesystem::temp_directory_path() /
               ("bulkhead-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
        std::filesystem::create_directories(path);
    }
    ~TempDir() { std::filesystem::remove_all(path); }
    static int& counter() {
        static int n = 0;
        return n;
    }
};

struct Compiled {
    ruleset::Ruleset plain;
    ruleset::Ruleset quarantined;
};

// vdi-pool on hv1; `tripwires`: its deny rules are tripwires and automatic quarantine is
// on, so every VDI port is armed (in tripwire_ports).
Compiled compile_example(bool tripwires = false) {
    auto p = policy::parse_policy(test::read_source_file("examples/vdi-pool/policy.json"));
    auto i = policy::parse_inventory(test::read_source_file("examples/vdi-pool/inventory.json"));
    REQUIRE(p);
    REQUIRE(i);
    if (tripwires) {
        for (auto& rule : p->rules) {
            rule.tripwire = rule.action == policy::RuleAction::Deny;
        }
        p->response.auto_quarantine = policy::AutoQuarantineMode::On;
    }
    ruleset::RulesetCompiler compiler(*p, *i);
    return {*compiler.compile("hv1"), *compiler.compile("hv1", {"vdi-001"})};
}

}  // namespace

TEST_CASE("ruleset keeper: first apply replaces, later changes are diffs, all persisted") {
    TempDir dir;
    StateStore state(dir.path);
    FakeBackend kernel;
    CollectingSink events;
    Metrics metrics;
    RulesetKeeper keeper(kernel, state, events, metrics);
    auto compiled = compile_example();

    REQUIRE(keeper.apply(compiled.plain, 1000));
    CHECK(kernel.replaces == 1);
    CHECK(keeper.generation() == 1);
    REQUIRE(keeper.apply(compiled.quarantined, 2000));
    CHECK(kernel.diffs == 1);
    CHECK(kernel.replaces == 1);
    CHECK(keeper.generation() == 2);
    CHECK(events.events.back()["mode"] == "diff");
    CHECK(events.events.back()["elements_added"] == 1);
    // Applying the same ruleset again changes nothing.
    REQUIRE(keeper.apply(compiled.quarantined, 3000));
    CHECK(kernel.diffs == 1);
    CHECK(keeper.generation() == 2);

    auto loaded = state.load();
    REQUIRE(loaded);
    REQUIRE(loaded->state);
    CHECK(loaded->state->generation == 2);
    CHECK(ruleset::ruleset_hash(loaded->state->ruleset) == ruleset::ruleset_hash(compiled.quarantined));
    CHECK(metrics.get("bulkhead_enforcer_applied_generation") == 2);
}

TEST_CASE("ruleset keeper: a rejected diff falls back to one full replace") {
    TempDir dir;
    StateStore state(dir.path);
    FakeBackend kernel;
    CollectingSink events;
    Metrics metrics;
    RulesetKeeper keeper(kernel, state, events, metrics);
    auto compiled = compile_example();
    REQUIRE(keeper.apply(compiled.plain, 1));
    kernel.fail_diff = true;
    REQUIRE(keeper.apply(compiled.quarantined, 2));
    CHECK(kernel.replaces == 2);
    auto types = events.types();
    CHECK(std::find(types.begin(), types.end(), "diff_rejected") != types.end());
    CHECK(metrics.get("bulkhead_enforcer_applies_total", "mode=\"diff\",result=\"error\"") == 1);
}

TEST_CASE("ruleset keeper: a failed apply keeps the previous ruleset and state") {
    TempDir dir;
    StateStore state(dir.path);
    FakeBackend kernel;
    CollectingSink events;
    Metrics metrics;
    RulesetKeeper keeper(kernel, state, events, metrics);
    auto compiled = compile_example();
    REQUIRE(keeper.apply(compiled.plain, 1));
    kernel.fail_diff = true;
    kernel.fail_replace = true;
    auto result = keeper.apply(compiled.quarantined, 2);
    REQUIRE_FALSE(result);
    CHECK(result.error().find("set x") != std::string::npos);
    CHECK(ruleset::ruleset_hash(*keeper.applied()) == ruleset::ruleset_hash(compiled.plain));
    CHECK(state.load()->state->generation == 1);
    CHECK(events.types().back() == "apply_failed");
}

TEST_CASE("ruleset keeper: restart re-applies last-known-good, or leaves an intact table alone") {
    TempDir dir;
    StateStore state(dir.path);
    auto compiled = compile_example();
    FakeBackend kernel;
    {
        CollectingSink events;
        Metrics metrics;
        RulesetKeeper first(kernel, state, events, metrics);
        REQUIRE(first.apply(compiled.quarantined, 1));
    }
    SUBCASE("reboot: the kernel lost the table") {
        FakeBackend rebooted;
        CollectingSink events;
        Metrics metrics;
        RulesetKeeper keeper(rebooted, state, events, metrics);
        keeper.restore(5);
        REQUIRE(rebooted.kernel);
        CHECK(ruleset::ruleset_hash(*rebooted.kernel) == ruleset::ruleset_hash(compiled.quarantined));
        CHECK(keeper.generation() == 1);
        CHECK(events.types().back() == "ruleset_applied");
        CHECK(events.events.back()["mode"] == "restore");
    }
    SUBCASE("daemon restart: the table is intact and is not rewritten") {
        const int before = kernel.replaces;
        CollectingSink events;
        Metrics metrics;
        RulesetKeeper keeper(kernel, state, events, metrics);
        keeper.restore(5);
        CHECK(kernel.replaces == before);
        CHECK(events.types().back() == "last_known_good_in_force");
        CHECK(keeper.applied().has_value());
    }
}

TEST_CASE("ruleset keeper: a corrupt newest state never rolls back the table in force") {
    TempDir dir;
    StateStore state(dir.path);
    auto compiled = compile_example();
    FakeBackend kernel;
    {
        CollectingSink events;
        Metrics metrics;
        RulesetKeeper first(kernel, state, events, metrics);
        REQUIRE(first.apply(compiled.plain, 1));
        REQUIRE(first.apply(compiled.quarantined, 2));  // generation 2 holds a quarantine
    }
    std::ofstream(state.current_path()) << "{ corrupt";
    SUBCASE("daemon restart: the quarantined table stays") {
        CollectingSink events;
        Metrics metrics;
        RulesetKeeper keeper(kernel, state, events, metrics);
        const int replaces = kernel.replaces;
        keeper.restore(5);
        CHECK(kernel.replaces == replaces);
        CHECK(ruleset::ruleset_hash(*kernel.kernel) == ruleset::ruleset_hash(compiled.quarantined));
        auto types = events.types();
        CHECK(types == std::vector<std::string>{"state_corrupt", "kernel_table_kept"});
        CHECK_FALSE(keeper.applied().has_value());
        // The next ruleset is a full replace with a generation the lost state never had.
        REQUIRE(keeper.apply(compiled.quarantined, 6));
        CHECK(keeper.generation() == 3);
    }
    SUBCASE("reboot: an empty kernel gets the previous state rather than nothing") {
        FakeBackend rebooted;
        CollectingSink events;
        Metrics metrics;
        RulesetKeeper keeper(rebooted, state, events, metrics);
        keeper.restore(5);
        REQUIRE(rebooted.kernel);
        CHECK(ruleset::ruleset_hash(*rebooted.kernel) == ruleset::ruleset_hash(compiled.plain));
        CHECK(keeper.generation() == 3);  // not 2: that number belonged to the lost state
    }
}

TEST_CASE("ruleset keeper: drift is detected, repaired and counted") {
    TempDir dir;
    StateStore state(dir.path);
    FakeBackend kernel;
    CollectingSink events;
    Metrics metrics;
    RulesetKeeper keeper(kernel, state, events, metrics);
    auto compiled = compile_example();
    REQUIRE(keeper.apply(compiled.plain, 1));
    CHECK(keeper.check_drift(2) == false);
    kernel.kernel.reset();  // someone ran `nft flush ruleset`
    CHECK(keeper.check_drift(3) == true);
    CHECK(kernel.kernel.has_value());
    CHECK(metrics.get("bulkhead_enforcer_drift_repairs_total") == 1);
    CHECK(metrics.get("bulkhead_enforcer_drift_checks_total") == 2);
    auto types = events.types();
    CHECK(types[types.size() - 2] == "drift_detected");
    CHECK(types.back() == "drift_repaired");
}

TEST_CASE("state store: a corrupt state file is set aside and the previous one used") {
    TempDir dir;
    StateStore state(dir.path);
    auto compiled = compile_example();
    REQUIRE(state.save({1, 10, compiled.plain, {}, {}}));
    REQUIRE(state.save({2, 20, compiled.quarantined, {}, {}}));
    SUBCASE("truncated") {
        std::filesystem::resize_file(state.current_path(),
                                     std::filesystem::file_size(state.current_path()) / 2);
    }
    SUBCASE("altered but still JSON") {
        std::ifstream in(state.current_path());
        auto document = nlohmann::json::parse(in);
        in.close();
        document["ruleset"]["sets"][0]["name"] = "tampered";
        std::ofstream(state.current_path()) << document.dump();
    }
    auto loaded = state.load();
    REQUIRE(loaded);
    CHECK_FALSE(loaded->warning.empty());
    CHECK(loaded->warning.find("moved aside") != std::string::npos);
    REQUIRE(loaded->state);
    CHECK(loaded->state->generation == 1);
    CHECK(std::filesystem::exists(state.current_path().string() + ".corrupt-1"));
}

TEST_CASE("state store: nothing stored is not an error, garbage with no fallback is reported") {
    TempDir dir;
    StateStore state(dir.path);
    auto empty = state.load();
    REQUIRE(empty);
    CHECK_FALSE(empty->state);
    CHECK(empty->warning.empty());
    std::ofstream(state.current_path()) << "not json";
    auto garbage = state.load();
    REQUIRE(garbage);
    CHECK_FALSE(garbage->state);
    CHECK(garbage->warning.find("not valid JSON") != std::string::npos);
}

TEST_CASE("files: written atomically, durably or not, replacing what was there and leaving no temporary") {
    TempDir dir;
    for (const auto durability : {FileDurability::Durable, FileDurability::AtomicOnly}) {
        const auto path = dir.path / (durability == FileDurability::Durable ? "state.json" : "metrics.prom");
        REQUIRE(write_file_atomically(path, "first\n", durability));
        REQUIRE(write_file_atomically(path, "second, longer\n", durability));
        std::ifstream in(path);
        std::string contents((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        CHECK(contents == "second, longer\n");
        CHECK_FALSE(std::filesystem::exists(path.string() + ".tmp"));
    }
    // A directory that does not exist is an error naming the file, in either mode.
    for (const auto durability : {FileDurability::Durable, FileDurability::AtomicOnly}) {
        auto failed = write_file_atomically(dir.path / "missing" / "x", "x", durability);
        REQUIRE_FALSE(failed);
        CHECK(failed.error().find("missing") != std::string::npos);
    }
}

TEST_CASE("ruleset source: a file is read when it changes, for this enforcer only") {
    TempDir dir;
    auto compiled = compile_example();
    const auto file = dir.path / "ruleset.json";
    auto source = FileRulesetSource::open(dir.path, "hv1");
    REQUIRE(source);
    auto nothing = source->poll();
    REQUIRE(nothing);
    CHECK_FALSE(nothing->has_value());  // no file yet: keep what is in force

    std::ofstream(file) << ruleset::to_json(compiled.plain).dump();
    auto first = source->poll();
    REQUIRE(first);
    REQUIRE(first->has_value());
    CHECK(ruleset::ruleset_hash(**first) == ruleset::ruleset_hash(compiled.plain));
    auto unchanged = source->poll();
    REQUIRE(unchanged);
    CHECK_FALSE(unchanged->has_value());

    SUBCASE("bad JSON is an error naming the file") {
        std::ofstream(file) << "{\"format\": ";
        auto bad = source->poll();
        REQUIRE_FALSE(bad);
        CHECK(bad.error().find("ruleset.json") != std::string::npos);
    }
    SUBCASE("a ruleset for another enforcer is refused") {
        auto other = compiled.plain;
        other.enforcer = "hv2";
        std::ofstream(file) << ruleset::to_json(other).dump();
        auto refused = source->poll();
        REQUIRE_FALSE(refused);
        CHECK(refused.error().find("for enforcer \"hv2\"") != std::string::npos);
    }
}

TEST_CASE("metrics: Prometheus text with help, type and labels") {
    Metrics metrics;
    metrics.describe("bulkhead_x_total", Metrics::Kind::Counter, "Things");
    metrics.add("bulkhead_x_total", 2, "mode=\"diff\"");
    metrics.add("bulkhead_x_total", 1, "mode=\"diff\"");
    metrics.set("bulkhead_latency_seconds", 0.00125);
    const auto text = metrics.render();
    CHECK(text.find("# HELP bulkhead_x_total Things\n# TYPE bulkhead_x_total counter\n") != std::string::npos);
    CHECK(text.find("bulkhead_x_total{mode=\"diff\"} 3\n") != std::string::npos);
    CHECK(text.find("bulkhead_latency_seconds 0.00125\n") != std::string::npos);
}

TEST_CASE("ruleset keeper: a port the kernel quarantined on a tripwire is held until the source owns it") {
    TempDir dir;
    StateStore state(dir.path);
    FakeRulesetBackend kernel;
    CollectingSink events;
    Metrics metrics;
    auto compiled = compile_example(true);  // vdi-001 behind port vdi001, armed
    auto kernel_adds = [&](const std::string& port) {
        // What `add @quarantined_ports { iifname }` does from the packet path.
        for (auto& set : kernel.table()->sets) {
            if (set.name == "quarantined_ports") {
                auto elements = std::make_shared<ruleset::ElementList>(*set.elements);
                elements->push_back(ruleset::Element{{port}, ""});
                set.elements = std::move(elements);
            }
        }
    };
    auto kernel_holds = [&](const std::string& port) {
        const auto* set = kernel.table()->find_set("quarantined_ports");
        return std::any_of(set->elements->begin(), set->elements->end(),
                           [&](const auto& e) { return std::get<std::string>(e.key[0]) == port; });
    };
    {
        RulesetKeeper keeper(kernel, state, events, metrics);
        REQUIRE(keeper.apply(compiled.plain, 1));
        kernel_adds("vdi001");
        SUBCASE("seen by its NFLOG message") {
            CHECK(keeper.note_kernel_contained("vdi001", "nflog", 2));
            CHECK_FALSE(keeper.note_kernel_contained("vdi001", "nflog", 2));  // reported once
            CHECK(keeper.check_drift(3) == false);
        }
        SUBCASE("seen by a read-back only (NFLOG lost)") {
            CHECK(keeper.check_drift(3) == false);  // adopted, not repaired away
            CHECK(metrics.get("bulkhead_enforcer_drift_repairs_total") == 0);
        }
        CHECK(keeper.held_ports() == std::set<std::string>{"vdi001"});
        const auto types = events.types();
        CHECK(std::count(types.begin(), types.end(), "kernel_contained") == 1);
        // A ruleset from the source that does not know yet keeps it; so does drift repair.
        REQUIRE(keeper.apply(compiled.plain, 4));
        CHECK(kernel_holds("vdi001"));
        kernel.table().reset();  // nft flush ruleset
        CHECK(keeper.check_drift(5) == true);
        CHECK(kernel_holds("vdi001"));
    }
    // Restart: the held port comes back from the state file and stays held.
    RulesetKeeper restarted(kernel, state, events, metrics);
    restarted.restore(6);
    CHECK(restarted.held_ports() == std::set<std::string>{"vdi001"});
    REQUIRE(restarted.apply(compiled.plain, 7));
    CHECK(kernel_holds("vdi001"));
    // The controller recorded the quarantine: its ruleset holds the port, the keeper lets go.
    REQUIRE(restarted.apply(compiled.quarantined, 8));
    CHECK(restarted.held_ports().empty());
    CHECK(events.types().back() == "kernel_containment_adopted");
    CHECK(state.load()->state->kernel_contained.empty());
    // Release: a ruleset without it removes it from the kernel.
    REQUIRE(restarted.apply(compiled.plain, 9));
    CHECK_FALSE(kernel_holds("vdi001"));
}

TEST_CASE("ruleset keeper: a full replace first takes in what a tripwire added and was not read yet") {
    TempDir dir;
    StateStore state(dir.path);
    FakeRulesetBackend kernel;
    CollectingSink events;
    Metrics metrics;
    const auto armed = compile_example(true).plain;
    REQUIRE(armed.find_set("tripwire_ports") != nullptr);
    REQUIRE(!armed.find_set("tripwire_ports")->elements->empty());
    // A structural change (a base chain's priority): the next apply is a full replace.
    auto restructured = armed;
    for (auto& chain : restructured.chains) {
        if (chain.base) {
            chain.base->priority = 1;
        }
    }
    RulesetKeeper keeper(kernel, state, events, metrics);
    REQUIRE(keeper.apply(armed, 1));
    for (auto& set : kernel.table()->sets) {
        if (set.name == "quarantined_ports") {  // the packet path: add @quarantined_ports { iifname }
            auto elements = std::make_shared<ruleset::ElementList>(*set.elements);
            elements->push_back(ruleset::Element{{std::string("vdi001")}, ""});
            set.elements = std::move(elements);
        }
    }
    // The tripwire's NFLOG message has not been read when the new ruleset arrives.
    REQUIRE(keeper.apply(restructured, 2));
    CHECK(events.events.back()["mode"] == "replace");
    const auto* set = kernel.table()->find_set("quarantined_ports");
    CHECK(std::any_of(set->elements->begin(), set->elements->end(),
                      [](const auto& e) { return std::get<std::string>(e.key[0]) == "vdi001"; }));
    CHECK(keeper.held_ports() == std::set<std::string>{"vdi001"});
    const auto contained = std::find_if(events.events.begin(), events.events.end(),
                                        [](const auto& e) { return e["type"] == "kernel_contained"; });
    REQUIRE(contained != events.events.end());
    CHECK((*contained)["seen_by"] == "read-back");
    CHECK((*contained)["workload"] == "vdi-001");
}

TEST_CASE("ruleset keeper: a port someone else put into quarantined_ports is drift, not a kernel containment") {
    TempDir dir;
    StateStore state(dir.path);
    FakeRulesetBackend kernel;
    CollectingSink events;
    Metrics metrics;
    for (const bool tripwires : {false, true}) {
        CAPTURE(tripwires);
        const auto ruleset = compile_example(tripwires).plain;
        RulesetKeeper keeper(kernel, state, events, metrics);
        REQUIRE(keeper.apply(ruleset, 1));
        // Without tripwires no port is armed; with them, "adm9" is no armed port of this ruleset.
        const std::string port = tripwires ? "adm9" : "vdi001";
        for (auto& set : kernel.table()->sets) {
            if (set.name == "quarantined_ports") {  // `nft add element ... quarantined_ports { ... }`
                auto elements = std::make_shared<ruleset::ElementList>(*set.elements);
                elements->push_back(ruleset::Element{{port}, ""});
                set.elements = std::move(elements);
            }
        }
        CHECK(keeper.check_drift(2) == true);  // repaired
        CHECK(keeper.held_ports().empty());
        CHECK(kernel.table()->find_set("quarantined_ports")->elements->empty());
        kernel.table().reset();
    }
}

namespace {

// The host-mode example with a tripwire towards the web server (SSH from the load
// balancers) and one load balancer in the inventory (lb-01, unmanaged), in enforce mode
// with automatic quarantine on: web-01 arms it; `quarantined` holds lb-01.
Compiled compile_host_tripwire() {
    auto p = policy::parse_policy(test::read_source_file("examples/host-mode/policy.json"));
    auto i = policy::parse_inventory(test::read_source_file("examples/host-mode/inventory.json"));
    REQUIRE(p);
    REQUIRE(i);
    p->defaults.mode = policy::Mode::Enforce;
    p->response.auto_quarantine = policy::AutoQuarantineMode::On;
    policy::Rule trap;
    trap.name = "no-ssh-from-load-balancers";
    trap.action = policy::RuleAction::Deny;
    trap.from = {"load-balancers"};
    trap.to = {"app-servers"};
    trap.services = {"ssh"};
    trap.tripwire = true;
    p->rules.insert(p->rules.begin(), trap);
    policy::Workload lb;
    lb.id = "lb-01";
    lb.addresses = {*policy::parse_ip_address("192.168.10.1")};
    i->workloads.push_back(lb);
    ruleset::RulesetCompiler compiler(*p, *i);
    return {*compiler.compile("web-01"), *compiler.compile("web-01", {"lb-01"})};
}

}  // namespace

TEST_CASE("ruleset keeper: a sender a host-mode tripwire blocked is held until the source owns it") {
    TempDir dir;
    StateStore state(dir.path);
    FakeRulesetBackend kernel;
    CollectingSink events;
    Metrics metrics;
    auto compiled = compile_host_tripwire();
    REQUIRE(!compiled.plain.find_set("host_tripwires")->elements->empty());
    const auto sender = *policy::parse_ip_address("192.168.10.1");
    const ruleset::KeyPart key = policy::IpRange{sender, sender};
    auto kernel_adds = [&] {
        // What `add @blocked_sources4 { ip saddr }` does from the packet path.
        for (auto& set : kernel.table()->sets) {
            if (set.name == "blocked_sources4") {
                auto elements = std::make_shared<ruleset::ElementList>(*set.elements);
                elements->push_back(ruleset::Element{{key}, ""});
                set.elements = std::move(elements);
            }
        }
    };
    auto kernel_blocks = [&] {
        const auto* set = kernel.table()->find_set("blocked_sources4");
        return std::any_of(set->elements->begin(), set->elements->end(),
                           [&](const auto& e) { return e.key[0] == key; });
    };
    {
        RulesetKeeper keeper(kernel, state, events, metrics);
        REQUIRE(keeper.apply(compiled.plain, 1));
        kernel_adds();
        SUBCASE("seen by its NFLOG message") {
            CHECK(keeper.note_kernel_blocked(sender, "nflog", 2));
            CHECK_FALSE(keeper.note_kernel_blocked(sender, "nflog", 2));  // reported once
            CHECK(keeper.check_drift(3) == false);
        }
        SUBCASE("seen by a read-back only (NFLOG lost)") {
            CHECK(keeper.check_drift(3) == false);  // adopted, not repaired away
            CHECK(metrics.get("bulkhead_enforcer_drift_repairs_total") == 0);
        }
        CHECK(keeper.held_sources() == std::set<policy::IpAddress>{sender});
        CHECK(keeper.held_ports().empty());  // the server's own interface is not contained
        const auto contained = std::find_if(events.events.begin(), events.events.end(),
                                            [](const auto& e) { return e["type"] == "kernel_contained"; });
        REQUIRE(contained != events.events.end());
        CHECK((*contained)["source"] == "192.168.10.1");
        CHECK((*contained)["set"] == "blocked_sources4");
        CHECK_FALSE(contained->contains("workload"));  // the controller maps the address
        // A ruleset from the source that does not know yet keeps it; so does drift repair.
        REQUIRE(keeper.apply(compiled.plain, 4));
        CHECK(kernel_blocks());
        kernel.table().reset();  // nft flush ruleset
        CHECK(keeper.check_drift(5) == true);
        CHECK(kernel_blocks());
    }
    // Restart: the held sender comes back from the state file and stays blocked.
    CHECK(state.load()->state->kernel_blocked_sources == std::vector<std::string>{"192.168.10.1"});
    RulesetKeeper restarted(kernel, state, events, metrics);
    restarted.restore(6);
    CHECK(restarted.held_sources() == std::set<policy::IpAddress>{sender});
    REQUIRE(restarted.apply(compiled.plain, 7));
    CHECK(kernel_blocks());
    // The controller quarantined lb-01: its ruleset blocks the address, the keeper lets go.
    REQUIRE(restarted.apply(compiled.quarantined, 8));
    CHECK(restarted.held_sources().empty());
    CHECK(events.types().back() == "kernel_containment_adopted");
    CHECK(state.load()->state->kernel_blocked_sources.empty());
    // Release: a ruleset without it unblocks the sender.
    REQUIRE(restarted.apply(compiled.plain, 9));
    CHECK_FALSE(kernel_blocks());
}

TEST_CASE("ruleset keeper: an address in blocked_sources without armed host tripwires is drift") {
    TempDir dir;
    StateStore state(dir.path);
    FakeRulesetBackend kernel;
    CollectingSink events;
    Metrics metrics;
    auto unarmed = compile_host_tripwire().plain;
    for (auto& set : unarmed.sets) {
        if (set.name == "host_tripwires") {
            set.elements = std::make_shared<const ruleset::ElementList>();
        }
    }
    RulesetKeeper keeper(kernel, state, events, metrics);
    REQUIRE(keeper.apply(unarmed, 1));
    const auto address = *policy::parse_ip_address("192.168.10.9");
    for (auto& set : kernel.table()->sets) {
        if (set.name == "blocked_sources4") {
            auto elements = std::make_shared<ruleset::ElementList>(*set.elements);
            elements->push_back(ruleset::Element{{policy::IpRange{address, address}}, ""});
            set.elements = std::move(elements);
        }
    }
    CHECK_FALSE(keeper.note_kernel_blocked(address, "nflog", 2));
    CHECK(keeper.check_drift(2) == true);  // repaired
    CHECK(keeper.held_sources().empty());
    CHECK(kernel.table()->find_set("blocked_sources4")->elements->empty());
}
