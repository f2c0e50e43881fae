// The analyzer's edges: drop-event JSON to observations, inventory lookups, configuration
// JSON, and `bulkheadctl analyze replay` over a file.
#include "controller/ctl/ctl_commands.hpp"
#include "policies/policy_reader.hpp"
#include "policies/ruleset_compiler.hpp"
#include "test_analyzer_support.hpp"

#include <cstdlib>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unistd.h>

using namespace bulkhead::test::analyzer;
using nlohmann::json;

namespace {

// An event as the enforcer's to_json writes it, with the controller's "enforcer".
json event(std::string workload, std::string dst, int dport, std::int64_t time_ns,
           std::string enforcer = "hv1", std::string reason = "default") {
    return json{{"type", "drop"},
                {"count", 1},
                {"time_ns", time_ns},
                {"time", "2026-09-21T12:00:00.000000Z"},
                {"time_source", "kernel"},
                {"group", 10},
                {"seq", 7},
                {"hook", "forward"},
                {"prefix", "bh:e:out:" + reason + ":c1"},
                {"mode", "enforce"},
                {"direction", "out"},
                {"reason", reason},
                {"subject", "c1"},
                {"indev_ifindex", 4},
                {"indev", "vdi001"},
                {"src_mac", "52:54:00:01:00:01"},
                {"family", 4},
                {"src", "10.1.0.1"},
                {"dst", dst},
                {"proto", 6},
                {"proto_name", "tcp"},
                {"sport", 50000},
                {"dport", dport},
                {"ip_len", 60},
                {"workload", workload},
                {"would_drop", false},
                {"policy_generation", 3},
                {"enforcer", enforcer}};
}

const char* inventory_text = R"({
  "enforcers": [{"id": "hv1"}, {"id": "hv2"}],
  "workloads": [
    {"id": "vdi-001", "enforcer": "hv1", "addresses": ["10.1.0.1"], "labels": {"role": "vdi", "pool": "sales"},
     "user": "kimura", "attachment": {"mode": "port", "interface": "vdi001"}},
    {"id": "vdi-101", "enforcer": "hv2", "addresses": ["10.1.0.1"], "labels": {"role": "vdi"},
     "user": "tanaka", "attachment": {"mode": "port", "interface": "vdi101"}},
    {"id": "adm-01", "addresses": ["10.0.9.1"], "labels": {"role": "admin-terminal"}, "user": "yamada"}
  ]
})";

struct TempDir {
    std::filesystem::path path;
    TempDir() {
        std::string pattern =
            (std::filesystem::temp_directory_path() / "bh-analyzer-XXXXXX").string();
        REQUIRE(mkdtemp(pattern.data()) != nullptr);
        path = pattern;
    }
    ~TempDir() { std::filesystem::remove_all(path); }
    std::string write(const std::string& name, const std::string& text) const {
        std::ofstream(path / name) << text;
        return (path / name).string();
    }
};

} // namespace

TEST_CASE("analyzer: a drop event's JSON becomes an attributed observation") {
    auto inventory = bulkhead::policy::parse_inventory(inventory_text);
    REQUIRE(inventory.has_value());
    InventoryIndex index(*inventory);

    SUBCASE("outbound drop: the workload is the source, the inventory adds user and segments") {
        auto record = drop_record_from_json(event("vdi-001", "10.0.9.1", 3389, T0), &index);
        REQUIRE(record.has_value());
        REQUIRE(record->has_value());
        const auto& r = **record;
        CHECK(r.enforcer == "hv1");
        CHECK(r.workload == "vdi-001");
        CHECK(r.port == "vdi001");
        CHECK(r.mac == "52:54:00:01:00:01");
        CHECK(r.user == "kimura");
        CHECK(r.source_segments == std::vector<std::string>{"pool=sales", "role=vdi"});
        CHECK(r.destination_workload == "adm-01");
        CHECK(r.destination_segments == std::vector<std::string>{"role=admin-terminal"});
        CHECK(r.sport == std::optional<std::uint16_t>{50000}); // beaconing tells attempts apart by it
        CHECK(r.view().sport == r.sport);
        CHECK(r.protocol == 6);
        CHECK(r.dport == 3389);
        Analyzer a;
        auto findings = feed(a, r);
        REQUIRE(findings.size() == 1);
        CHECK(findings[0].explanation ==
              "vdi-001 (user kimura) tried admin terminal adm-01 (10.0.9.1) on tcp/3389");
    }
    SUBCASE("a shared private address resolves to the workload behind the same enforcer") {
        auto record = drop_record_from_json(event("vdi-101", "10.1.0.1", 445, T0, "hv2"), &index);
        REQUIRE(record.has_value());
        CHECK((*record)->user == "tanaka");
        CHECK((*record)->destination_workload == "vdi-101");
        auto elsewhere = drop_record_from_json(event("adm-01", "10.1.0.1", 445, T0, "hv9"), &index);
        REQUIRE(elsewhere.has_value());
        CHECK((*elsewhere)->destination_workload.empty()); // ambiguous: never a guess
    }
    SUBCASE("inbound drop: the sender is an address on that enforcer") {
        auto j = event("vdi-001", "10.1.0.1", 22, T0);
        j["direction"] = "in";
        j["src"] = "10.0.5.5";
        auto record = drop_record_from_json(j, &index);
        REQUIRE(record.has_value());
        CHECK((*record)->workload.empty());
        CHECK((*record)->address == "10.0.5.5");
        CHECK((*record)->destination_workload == "vdi-001");
    }
    SUBCASE("allowed flows and lifecycle events are skipped, bad members are errors") {
        auto allowed = event("vdi-001", "10.0.0.1", 80, T0);
        allowed["type"] = "allowed_flow";
        allowed["reason"] = "allow";
        auto skipped = drop_record_from_json(allowed, nullptr);
        REQUIRE(skipped.has_value());
        CHECK_FALSE(skipped->has_value());

        auto bad = event("vdi-001", "10.0.0.1", 80, T0);
        bad["reason"] = "maybe";
        auto error = drop_record_from_json(bad, nullptr);
        REQUIRE_FALSE(error.has_value());
        CHECK(error.error().find("reason") != std::string::npos);

        bad = event("vdi-001", "10.0.0.1", 80, T0);
        bad.erase("time_ns");
        CHECK_FALSE(drop_record_from_json(bad, nullptr).has_value());
    }
}

TEST_CASE("analyzer: configuration JSON sets thresholds and rejects unknown members") {
    auto config = config_from_json(json::parse(R"({
        "host_sweep": {"min_hosts": 5, "severity": "high"},
        "lateral_movement": {"services": [{"name": "VNC", "protocol": "tcp", "port": 5900}]},
        "exemptions": [{"segment": "role=scanner", "expires_ns": 5}]
    })"));
    REQUIRE(config.has_value());
    CHECK(config->host_sweep.min_hosts == 5);
    CHECK(config->host_sweep.severity == Severity::High);
    REQUIRE(config->lateral.services.size() == 1);
    CHECK(config->lateral.services[0].port == 5900);
    REQUIRE(config->exemptions.size() == 1);
    CHECK(config->exemptions[0].expires_ns == 5);
    CHECK(config->vertical_scan.min_ports == 16); // untouched default

    auto typo = config_from_json(json::parse(R"({"host_sweep": {"min_host": 5}})"));
    REQUIRE_FALSE(typo.has_value());
    CHECK(typo.error() == "/host_sweep/min_host: unknown member");
    auto severity = config_from_json(json::parse(R"({"beaconing": {"severity": "severe"}})"));
    REQUIRE_FALSE(severity.has_value());
    CHECK(severity.error() == "/beaconing/severity: not low, medium, high or critical");
    auto forever = config_from_json(json::parse(R"({"exemptions": [{"workload": "scan-1"}]})"));
    CHECK_FALSE(forever.has_value());
    // A threshold an earlier release read is refused with what replaced it.
    auto retired = config_from_json(json::parse(R"({"beaconing": {"max_cv": 0.3}})"));
    REQUIRE_FALSE(retired.has_value());
    CHECK(retired.error().starts_with("/beaconing/max_cv: retired: replaced by max_dispersion"));
}

TEST_CASE("analyzer: bulkheadctl analyze replay prints incidents and names bad lines") {
    TempDir dir;
    std::string lines;
    for (int i = 1; i <= 16; ++i) {
        lines += event("vdi-001", "10.0.1." + std::to_string(i), 445, T0 + i * S).dump() + "\n";
    }
    auto allowed = event("vdi-001", "10.0.0.1", 80, T0);
    allowed["type"] = "allowed_flow";
    allowed["reason"] = "allow";
    lines += allowed.dump() + "\n\n";
    const auto events = dir.write("events.jsonl", lines);
    const auto inventory = dir.write("inventory.json", inventory_text);
    bulkhead::ctl::ReplayOptions options;
    options.events_file = events;
    options.inventory_file = inventory;

    SUBCASE("human output") {
        std::ostringstream out, err;
        REQUIRE(bulkhead::ctl::analyze_replay(options, out, err) == bulkhead::ctl::exit_ok);
        const auto text = out.str();
        CHECK(text.find("incident 1  critical  hv1/vdi-001 (user kimura)  open") !=
              std::string::npos);
        CHECK(text.find("lateral-movement  high  vdi-001 (user kimura) tried 3 lateral-movement "
                        "targets on 3 hosts "
                        "(SMB tcp/445) in 2.0 s") != std::string::npos);
        CHECK(text.find(
                  "host-sweep  high  vdi-001 (user kimura) tried 16 hosts on tcp/445 in 15 s") !=
              std::string::npos);
        CHECK(text.find("totals: 18 lines, 16 drops analysed, 1 other events skipped; 1 sources; 2 "
                        "findings") != std::string::npos);
    }
    SUBCASE("JSON output") {
        options.json = true;
        std::ostringstream out, err;
        REQUIRE(bulkhead::ctl::analyze_replay(options, out, err) == bulkhead::ctl::exit_ok);
        auto document = json::parse(out.str());
        REQUIRE(document["incidents"].size() == 1);
        CHECK(document["incidents"][0]["source"]["user"] == "kimura");
        CHECK(document["incidents"][0]["findings"]["host-sweep"] == 1);
        CHECK(document["totals"]["drops"] == 16);
        CHECK(document["totals"]["memory_bytes"].get<std::uint64_t>() > 0);
    }
    SUBCASE("a configuration file changes the thresholds") {
        options.config_file = dir.write("config.json", R"({"host_sweep": {"enabled": false},
                                                           "lateral_movement": {"enabled": false}})");
        std::ostringstream out, err;
        REQUIRE(bulkhead::ctl::analyze_replay(options, out, err) == bulkhead::ctl::exit_ok);
        CHECK(out.str().find("incident 1") == std::string::npos);
        CHECK(out.str().find("0 findings (0 suppressed, 0 exempted); 0 incidents") !=
              std::string::npos);
    }
    SUBCASE("a bad line is reported with its number") {
        options.events_file =
            dir.write("bad.jsonl", lines.substr(0, lines.find('\n') + 1) + "{\"type\": \"drop\"\n");
        std::ostringstream out, err;
        CHECK(bulkhead::ctl::analyze_replay(options, out, err) == bulkhead::ctl::exit_invalid);
        CHECK(err.str().find("bad.jsonl:2: invalid JSON") != std::string::npos);

        options.events_file = dir.write(
            "bad2.jsonl", "\n" + json{{"type", "drop"}, {"reason", "deny"}}.dump() + "\n");
        std::ostringstream out2, err2;
        CHECK(bulkhead::ctl::analyze_replay(options, out2, err2) == bulkhead::ctl::exit_invalid);
        CHECK(err2.str().find("bad2.jsonl:2: \"time_ns\" missing or not an integer") !=
              std::string::npos);
    }
    SUBCASE("a saved API page (newest first) is read in time order") {
        json page{{"events", json::array()}};
        for (int i = 16; i >= 1; --i) {
            page["events"].push_back(
                event("vdi-001", "10.0.1." + std::to_string(i), 445, T0 + i * S));
        }
        options.events_file = dir.write("page.jsonl", page.dump() + "\n");
        std::ostringstream out, err;
        REQUIRE(bulkhead::ctl::analyze_replay(options, out, err) == bulkhead::ctl::exit_ok);
        CHECK(out.str().find("tried 16 hosts on tcp/445 in 15 s") != std::string::npos);
    }
    SUBCASE("a missing file is an I/O error") {
        options.events_file = (dir.path / "absent.jsonl").string();
        std::ostringstream out, err;
        CHECK(bulkhead::ctl::analyze_replay(options, out, err) == bulkhead::ctl::exit_usage);
    }
}

TEST_CASE("analyzer: the inventory index takes segment membership from the compiler, as its selectors give it") {
    const auto read = [](const std::string& path) {
        std::ifstream in(std::string(BULKHEAD_SOURCE_DIR) + "/" + path);
        REQUIRE(in.good());
        std::stringstream text;
        text << in.rdbuf();
        return text.str();
    };
    for (const std::string example : {"vdi-pool", "host-mode", "lab", "segmentation"}) {
        CAPTURE(example);
        auto inventory = bulkhead::policy::parse_inventory(read("examples/" + example + "/inventory.json"));
        auto policy = bulkhead::policy::parse_policy(read("examples/" + example + "/policy.json"));
        REQUIRE(inventory.has_value());
        REQUIRE(policy.has_value());
        const bulkhead::ruleset::RulesetCompiler compiler(*policy, *inventory);
        const InventoryIndex by_selectors(*inventory, &*policy);
        const InventoryIndex by_compiler(*inventory, &*policy,
                                         [&](std::size_t w) { return compiler.segments_of(w); });
        std::size_t with_policy_segments = 0;
        for (const auto& w : inventory->workloads) {
            const auto* expected = by_selectors.by_workload(w.enforcer, w.id);
            const auto* actual = by_compiler.by_workload(w.enforcer, w.id);
            REQUIRE(expected != nullptr);
            REQUIRE(actual != nullptr);
            CHECK(actual->segments == expected->segments);
            with_policy_segments += expected->segments.size() > expected->policy_segments_from ? 1 : 0;
        }
        CHECK(with_policy_segments > 0);  // the comparison covers policy segments, not only labels
    }
}

TEST_CASE("analyzer: a drop event's source port is read, and a bad one named") {
    auto good = drop_record_from_json(event("vdi-001", "203.0.113.7", 443, T0), nullptr);
    REQUIRE(good.has_value());
    REQUIRE(good->has_value());
    CHECK((*good)->sport == std::optional<std::uint16_t>{50000});
    auto without = event("vdi-001", "203.0.113.7", 443, T0);
    without.erase("sport");
    auto older = drop_record_from_json(without, nullptr);
    REQUIRE(older.has_value());
    REQUIRE(older->has_value());
    CHECK_FALSE((*older)->sport.has_value());
    auto bad = event("vdi-001", "203.0.113.7", 443, T0);
    bad["sport"] = 70000;
    auto refused = drop_record_from_json(bad, nullptr);
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error() == "\"sport\" is not a port number");
}
