// The wire form of ruleset diffs (policies/ruleset_diff.hpp: diff_to_wire, apply_wire_diff):
// what the controller pushes on the control channel must rebuild exactly the new ruleset.
#include "policies/nft_text.hpp"
#include "policies/policy_reader.hpp"
#include "policies/ruleset_compiler.hpp"
#include "policies/ruleset_diff.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <random>

using namespace bulkhead;
using namespace bulkhead::ruleset;
using nlohmann::json;

namespace {

struct Variant {
    std::string label;
    Ruleset ruleset;
};

policy::Workload clone_workload(const policy::Workload& base, int n) {
    policy::Workload w = base;
    w.id = base.id + "-clone" + std::to_string(n);
    w.addresses.clear();
    const auto v4 = "10.250." + std::to_string(n / 200) + "." + std::to_string(1 + n % 200);
    w.addresses.push_back(*policy::parse_ip_address(v4));
    w.mac.clear();
    w.hostname.clear();
    if (w.attachment) {
        w.attachment->interfaces = {"cl" + std::to_string(n)};
    }
    return w;
}

// Every compiled variant of one example for one enforcer: quarantine on/off, workloads
// added and removed, policy rules removed.
std::map<std::string, std::vector<Variant>> variants_of(const std::string& example) {
    const auto policy_text = test::read_source_file("examples/" + example + "/policy.json");
    const auto inventory_text = test::read_source_file("examples/" + example + "/inventory.json");
    auto policy = policy::parse_policy(policy_text);
    auto inventory = policy::parse_inventory(inventory_text);
    REQUIRE(policy);
    REQUIRE(inventory);
    std::map<std::string, std::vector<Variant>> out;
    auto add_all = [&](const policy::Policy& p, const policy::Inventory& i, const std::string& label,
                       const std::set<std::string>& quarantined) {
        RulesetCompiler compiler(p, i);
        for (const auto& enforcer : compiler.enforcers()) {
            auto compiled = compiler.compile(enforcer, quarantined);
            REQUIRE_MESSAGE(compiled, compiled.error());
            out[enforcer].push_back({label, std::move(*compiled)});
        }
    };
    add_all(*policy, *inventory, "base", {});
    std::vector<std::string> managed;
    for (const auto& w : inventory->workloads) {
        if (!w.enforcer.empty() && w.attachment) {
            managed.push_back(w.id);
        }
    }
    std::mt19937 random(4242);
    for (std::size_t i = 0; i < managed.size() && i < 4; ++i) {
        add_all(*policy, *inventory, "quarantine " + managed[i], {managed[i]});
    }
    if (managed.size() >= 2) {
        add_all(*policy, *inventory, "quarantine two", {managed[0], managed[managed.size() - 1]});
    }
    // Workloads removed and added.
    for (std::size_t i = 0; i < inventory->workloads.size() && i < 3; ++i) {
        auto smaller = *inventory;
        const auto victim = random() % smaller.workloads.size();
        const auto id = smaller.workloads[victim].id;
        smaller.workloads.erase(smaller.workloads.begin() + static_cast<std::ptrdiff_t>(victim));
        if (!policy::cross_check(*policy, smaller).empty()) {
            continue;
        }
        add_all(*policy, smaller, "without " + id, {});
    }
    {
        auto larger = *inventory;
        int n = 0;
        for (const auto& w : inventory->workloads) {
            if (!w.enforcer.empty() && w.attachment && n < 3) {
                larger.workloads.push_back(clone_workload(w, n++));
            }
        }
        if (!!policy::cross_check(*policy, larger).empty()) {
            add_all(*policy, larger, "with clones", {});
            if (!managed.empty()) {
                add_all(*policy, larger, "with clones, quarantine " + managed[0], {managed[0]});
            }
        }
    }
    // Rules removed: chains and class sets change.
    const auto document = json::parse(policy_text);
    for (std::size_t r = 0; r < document.at("rules").size() && r < 4; ++r) {
        auto mutated = document;
        mutated["rules"].erase(r);
        auto changed = policy::parse_policy(mutated.dump());
        if (!changed) {
            continue;
        }
        add_all(*changed, *inventory, "without rule " + std::to_string(r), {});
    }
    // A new segment holding every managed workload, and a rule from it: every class of
    // those workloads gets a new name (class names hash the membership).
    {
        auto mutated = document;
        json every = json::array();
        for (const auto& id : managed) {
            every.push_back(id);
        }
        mutated["services"].push_back(json::parse(R"({"name":"test-change","entries":[{"protocol":"tcp","ports":[7001]}]})"));
        mutated["segments"].push_back({{"name", "test-every-managed"}, {"selector", {{"workloads", every}}}});
        mutated["segments"].push_back({{"name", "test-change-target"}, {"selector", {{"cidrs", {"198.18.0.1/32"}}}}});
        mutated["rules"].push_back({{"name", "test-change"}, {"action", "allow"}, {"from", {"test-every-managed"}},
                                    {"to", {"test-change-target"}}, {"services", {"test-change"}}});
        auto changed = policy::parse_policy(mutated.dump());
        REQUIRE(changed);
        add_all(*changed, *inventory, "with a segment of every managed workload", {});
        if (!managed.empty()) {
            add_all(*changed, *inventory, "with a segment of every managed workload, quarantine " + managed[0],
                    {managed[0]});
        }
    }
    return out;
}

void check_round_trip(const Ruleset& old, const Ruleset& updated) {
    const auto diff = diff_rulesets(old, updated);
    // The complete form rebuilds the very document: sets, chains, policy name and ports.
    const auto wire = diff_to_wire(diff, old, updated);
    auto applied = apply_wire_diff(old, json::parse(wire.dump()));
    REQUIRE_MESSAGE(applied, applied.error());
    CHECK(ruleset_hash(*applied) == ruleset_hash(updated));
    CHECK(to_json(*applied) == to_json(updated));
    // What the controller sends enforcers of this release: renamed classes and comment
    // rewrites, then the diff of the renamed base.
    auto compact = apply_wire_diff(old, json::parse(wire_diff(old, updated).dump()));
    REQUIRE_MESSAGE(compact, compact.error());
    CHECK(ruleset_hash(*compact) == ruleset_hash(updated));
    CHECK(to_json(*compact) == to_json(updated));
    // The form that holds only what RulesetDiff holds gives the same kernel ruleset when the
    // diff is not a full replace.
    if (!diff.full_replace && old.policy_name == updated.policy_name) {
        auto minimal = apply_wire_diff(old, diff_to_wire(diff));
        REQUIRE_MESSAGE(minimal, minimal.error());
        CHECK(ruleset_hash(*minimal) == ruleset_hash(updated));
    }
}

Ruleset compiled(const std::string& example, const std::string& enforcer,
                 const std::set<std::string>& quarantined = {}) {
    auto policy = policy::parse_policy(test::read_source_file("examples/" + example + "/policy.json"));
    auto inventory = policy::parse_inventory(test::read_source_file("examples/" + example + "/inventory.json"));
    REQUIRE(policy);
    REQUIRE(inventory);
    RulesetCompiler compiler(*policy, *inventory);
    auto r = compiler.compile(enforcer, quarantined);
    REQUIRE(r);
    return *r;
}

std::string error_of(const Ruleset& base, const json& wire) {
    auto applied = apply_wire_diff(base, wire);
    REQUIRE_FALSE(applied);
    return applied.error();
}

}  // namespace

TEST_CASE("wire diff: every pair of compiled example variants round-trips") {
    std::size_t pairs = 0;
    std::size_t non_empty = 0;
    for (const std::string example : {"vdi-pool", "segmentation", "host-mode"}) {
        for (const auto& [enforcer, variants] : variants_of(example)) {
            CAPTURE(example);
            CAPTURE(enforcer);
            REQUIRE(variants.size() >= 3);
            for (const auto& from : variants) {
                for (const auto& to : variants) {
                    CAPTURE(from.label);
                    CAPTURE(to.label);
                    check_round_trip(from.ruleset, to.ruleset);
                    ++pairs;
                    non_empty += diff_rulesets(from.ruleset, to.ruleset).empty() ? 0 : 1;
                }
            }
        }
    }
    MESSAGE(pairs << " pairs, " << non_empty << " non-empty diffs");
    CHECK(pairs > 200);
    CHECK(non_empty > pairs / 2);
}

TEST_CASE("wire diff: randomized element edits round-trip") {
    const auto base = compiled("vdi-pool", "hv1");
    std::mt19937 random(7);
    for (int round = 0; round < 60; ++round) {
        CAPTURE(round);
        Ruleset edited = base;
        // Drop random elements from random interval-free sets and add synthetic ones to
        // ifname sets, removing and adding whole sets now and then.
        for (auto& set : edited.sets) {
            if (random() % 3 != 0) {
                continue;
            }
            ElementList elements = *set.elements;
            if (!elements.empty() && random() % 2 == 0) {
                elements.erase(elements.begin() + static_cast<std::ptrdiff_t>(random() % elements.size()));
            }
            if (set.key == std::vector<KeyType>{KeyType::Ifname} && !set.verdict_map) {
                elements.push_back(Element{{std::string("rnd") + std::to_string(random() % 50)}, {}});
                std::sort(elements.begin(), elements.end());
                elements.erase(std::unique(elements.begin(), elements.end()), elements.end());
            }
            set.elements = std::make_shared<const ElementList>(std::move(elements));
        }
        if (round % 5 == 0) {
            SetDefinition extra;
            extra.name = "zz_extra_" + std::to_string(round);
            extra.key = {KeyType::Ipv4Addr};
            extra.interval = true;
            extra.elements = std::make_shared<const ElementList>(
                ElementList{Element{{*policy::parse_cidr("192.0.2.0/24")}, {}}});
            edited.sets.push_back(extra);
        }
        check_round_trip(base, edited);
        check_round_trip(edited, base);
    }
}

TEST_CASE("wire diff: a changed set definition travels as full_replace with the redefinition") {
    const auto old = compiled("vdi-pool", "hv1");
    Ruleset updated = old;
    auto it = std::find_if(updated.sets.begin(), updated.sets.end(),
                           [](const SetDefinition& s) { return s.name == "quarantined_ports"; });
    REQUIRE(it != updated.sets.end());
    it->comment = "changed";
    it->dynamic = !it->dynamic;
    const auto diff = diff_rulesets(old, updated);
    REQUIRE(diff.full_replace);
    check_round_trip(old, updated);
    // The one-argument form cannot carry the redefinition and says so.
    CHECK(error_of(old, diff_to_wire(diff)).find("full ruleset is needed") != std::string::npos);
}

TEST_CASE("wire diff: quarantine is one element and names the set") {
    const auto old = compiled("vdi-pool", "hv1");
    const auto updated = compiled("vdi-pool", "hv1", {"vdi-002"});
    const auto wire = diff_to_wire(diff_rulesets(old, updated), old, updated);
    CHECK(wire["format"] == "bulkhead-ruleset-diff/1");
    REQUIRE(wire["set_changes"].size() == 1);
    CHECK(wire["set_changes"][0]["set"] == "quarantined_ports");
    CHECK(wire["set_changes"][0]["added"] == json::array({{{"key", {"vdi002"}}}}));
    CHECK(wire["set_changes"][0]["removed"].empty());
    CHECK(wire["sets_added"].empty());
    CHECK(wire["chains_changed"].empty());
    CHECK(wire["ports_added"].empty());
}

TEST_CASE("wire diff: a class renamed by a new segment travels as a rename, not as its sets and chains") {
    const auto document = json::parse(test::read_source_file("examples/vdi-pool/policy.json"));
    auto inventory = policy::parse_inventory(test::read_source_file("examples/vdi-pool/inventory.json"));
    REQUIRE(inventory);
    auto mutated = document;
    mutated["segments"].push_back({{"name", "every-vdi"}, {"selector", {{"labels", {{"role", "vdi"}}}}}});
    mutated["segments"].push_back({{"name", "new-proxy"}, {"selector", {{"cidrs", {"198.18.0.1/32"}}}}});
    mutated["rules"].push_back({{"name", "to-new-proxy"}, {"action", "allow"}, {"from", {"every-vdi"}},
                                {"to", {"new-proxy"}}, {"services", {"smb"}}});
    auto before_policy = policy::parse_policy(document.dump());
    auto after_policy = policy::parse_policy(mutated.dump());
    REQUIRE(before_policy);
    REQUIRE(after_policy);
    auto old = *RulesetCompiler(*before_policy, *inventory).compile("hv1");
    auto updated = *RulesetCompiler(*after_policy, *inventory).compile("hv1");

    const auto renames = class_renames(old, updated);
    REQUIRE_FALSE(renames.empty());
    for (const auto& r : renames) {
        CHECK(old.find_chain(r.from + "_out") != nullptr);
        CHECK(updated.find_chain(r.to + "_out") != nullptr);
        CHECK(updated.find_chain(r.from + "_out") == nullptr);
    }
    // Without renames, every set and chain of those classes would be removed and re-added.
    const auto plain = diff_rulesets(old, updated);
    CHECK(plain.sets_added.size() >= 4 * renames.size());
    CHECK(plain.chains_added.size() >= 2 * renames.size());

    const auto wire = wire_diff(old, updated);
    REQUIRE(wire.contains("renames"));
    CHECK(wire["renames"].size() == renames.size());
    CHECK(wire["sets_added"].empty());
    CHECK(wire["sets_removed"].empty());
    CHECK(wire["chains_added"].empty());
    CHECK(wire["chains_removed"].empty());
    CHECK(wire["ports_added"].empty());
    CHECK(wire["ports_removed"].empty());
    CHECK(wire.contains("comment_rewrites"));  // "segments: ..." now names every-vdi too
    CHECK_FALSE(wire.contains("set_comments"));
    // The new rule is one element in each renamed class's outbound allow set.
    std::size_t added = 0;
    for (const auto& change : wire["set_changes"]) {
        added += change["added"].size();
    }
    CHECK(added == renames.size());
    CHECK(wire.dump().size() * 10 < diff_to_wire(plain, old, updated).dump().size());

    auto applied = apply_wire_diff(old, wire);
    REQUIRE_MESSAGE(applied, applied.error());
    CHECK(ruleset_hash(*applied) == ruleset_hash(updated));
    CHECK(to_json(*applied) == to_json(updated));
}

TEST_CASE("wire diff: renames that do not fit the base are refused, naming them") {
    const auto old = compiled("segmentation", "floor-1");  // two classes on one host
    std::set<std::string> classes;
    for (const auto& p : old.ports) {
        classes.insert(p.policy_class);
    }
    REQUIRE(classes.size() >= 2);
    const auto some_class = *classes.begin();
    const auto other_class = *std::next(classes.begin());
    json wire = diff_to_wire(diff_rulesets(old, old), old, old);
    wire["renames"] = json::array({{{"from", "c00000000"}, {"to", "c11111111"}}});
    CHECK(error_of(old, wire).find("renames class c00000000 which the base does not hold") != std::string::npos);
    wire["renames"] = json::array({{{"from", some_class}, {"to", other_class}}});
    CHECK(error_of(old, wire).find("renaming classes gives two sets named " + other_class + "_") != std::string::npos);
    wire["renames"] = json::array({{{"from", some_class}, {"to", "cx"}}, {{"from", some_class}, {"to", "cy"}}});
    CHECK(error_of(old, wire).find("renamed twice") != std::string::npos);
    wire["renames"] = json::array({{{"from", some_class}, {"to", "a_b"}}});
    CHECK(error_of(old, wire).find("without '_'") != std::string::npos);
    wire["renames"] = json::array({"c1"});
    CHECK(error_of(old, wire).find("malformed rename") != std::string::npos);
    wire.erase("renames");
    wire["set_comments"] = json::array({{{"set", "no_such_set"}, {"comment", "x"}}});
    CHECK(error_of(old, wire).find("comments set no_such_set") != std::string::npos);
    wire.erase("set_comments");
    wire["comment_rewrites"] = json::array({{{"from", ""}, {"to", "x"}}});
    CHECK(error_of(old, wire).find("malformed comment rewrite") != std::string::npos);
}

TEST_CASE("wire diff: what does not fit the base is refused, naming it") {
    const auto old = compiled("vdi-pool", "hv1");
    const auto quarantined = compiled("vdi-pool", "hv1", {"vdi-002"});
    const auto wire = diff_to_wire(diff_rulesets(old, quarantined), old, quarantined);

    SUBCASE("applied twice: the element is already there") {
        CHECK(error_of(quarantined, wire) ==
              "wire diff: adds element \"vdi002\" to set quarantined_ports which already holds it");
    }
    SUBCASE("release applied to a base that never had the quarantine") {
        const auto release = diff_to_wire(diff_rulesets(quarantined, old), quarantined, old);
        CHECK(error_of(old, release) ==
              "wire diff: removes element \"vdi002\" from set quarantined_ports which does not hold it");
    }
    SUBCASE("an unknown set") {
        auto bad = wire;
        bad["set_changes"][0]["set"] = "nope";
        CHECK(error_of(old, bad) == "wire diff: changes elements of set nope which the base does not hold");
        bad = wire;
        bad["sets_removed"] = {"nope"};
        CHECK(error_of(old, bad) == "wire diff: removes set nope which the base does not hold");
    }
    SUBCASE("a set added twice or one the base holds") {
        auto bad = wire;
        bad["sets_added"] = json::array({{{"name", "quarantined_ports"}, {"key", {"ifname"}}, {"elements", json::array()}}});
        CHECK(error_of(old, bad) == "wire diff: adds set quarantined_ports which the base already holds");
    }
    SUBCASE("an element of the wrong shape") {
        auto bad = wire;
        bad["set_changes"][0]["added"] = json::array({{{"key", {"vdi002", 6}}}});
        CHECK(error_of(old, bad).find("does not match the key") != std::string::npos);
    }
    SUBCASE("a removed chain something still jumps to") {
        auto bad = wire;
        bad["chains_removed"] = {"quarantine_out"};
        CHECK(error_of(old, bad) ==
              "wire diff: result is inconsistent: chain forward jumps to missing chain quarantine_out");
        bad["chains_removed"] = {"no_such_chain"};
        CHECK(error_of(old, bad) == "wire diff: removes chain no_such_chain which the base does not hold");
    }
    SUBCASE("a changed chain that is not there, or one that looks up a missing set") {
        auto bad = wire;
        bad["chains_changed"] = json::array({{{"name", "ghost"}, {"rules", json::array()}}});
        CHECK(error_of(old, bad).find("chain ghost is not in the base") != std::string::npos);
        auto forward = to_json(old)["chains"][0];
        forward["rules"][0]["matches"][0]["lookup"]["set"] = "missing_set";
        bad["chains_changed"] = json::array({forward});
        CHECK(error_of(old, bad).find("missing set missing_set") != std::string::npos);
    }
    SUBCASE("another enforcer, another format, wrong types") {
        auto bad = wire;
        bad["enforcer"] = "hv2";
        CHECK(error_of(old, bad) ==
              "wire diff: diff is for enforcer \"hv2\", the base ruleset is for \"hv1\"");
        CHECK(error_of(old, json::object()).find("not a bulkhead-ruleset-diff/1") != std::string::npos);
        CHECK(error_of(old, json::array()).find("not a bulkhead-ruleset-diff/1") != std::string::npos);
        bad = wire;
        bad["set_changes"] = "x";
        CHECK(error_of(old, bad) == "wire diff: \"set_changes\" is not an array");
        bad = wire;
        bad["sets_removed"] = {1};
        CHECK(error_of(old, bad).find("expected a name") != std::string::npos);
        bad = wire;
        bad["ports_added"] = {{{"interface", 1}}};
        CHECK(error_of(old, bad).find("malformed port binding") != std::string::npos);
    }
    SUBCASE("a port binding that is not there") {
        auto bad = wire;
        bad["ports_removed"] = {{{"interface", "x9"}, {"workload", "w"}, {"mode", "port"}, {"class", "c"}}};
        CHECK(error_of(old, bad) == "wire diff: removes port binding x9 -> w which the base does not hold");
    }
}

namespace {
std::string fnv1a64_hex(const std::string& text) {
    std::uint64_t h = 14695981039346656037ULL;
    for (unsigned char c : text) {
        h ^= c;
        h *= 1099511628211ULL;
    }
    char buffer[17];
    std::snprintf(buffer, sizeof buffer, "%016llx", static_cast<unsigned long long>(h));
    return buffer;
}
}  // namespace

TEST_CASE("ruleset hashes: format 1 is the previous release's, format 2 follows content, the fast text is the document") {
    std::size_t checked = 0;
    for (const std::string example : {"vdi-pool", "segmentation", "host-mode"}) {
        for (const auto& [enforcer, variants] : variants_of(example)) {
            std::map<std::string, std::string> body_by_hash;
            for (const auto& variant : variants) {
                CAPTURE(example);
                CAPTURE(variant.label);
                const auto& r = variant.ruleset;
                json document = to_json(r);
                CHECK(document["hash"] == ruleset_hash(r));
                // The text written from the lists' cached texts is the document, byte for byte.
                CHECK(to_json_text(r, "h-1") == [&] {
                    json d = document;
                    d["hash"] = "h-1";
                    return d.dump();
                }());
                // Format 1: FNV-1a over the canonical body, as releases up to 0.6 compute it.
                json body = document;
                body.erase("hash");
                body.erase("ports");
                CHECK(ruleset_hash_format1(r) == fnv1a64_hex(body.dump()));
                // Both formats are properties of the content, not of the (cached) objects.
                auto copy = ruleset_from_json(document);
                REQUIRE(copy);
                CHECK(ruleset_hash(*copy) == ruleset_hash(r));
                CHECK(ruleset_hash_format1(*copy) == ruleset_hash_format1(r));
                // Different content, different format-2 hash.
                auto [it, inserted] = body_by_hash.emplace(ruleset_hash(r), body.dump());
                if (!inserted) {
                    CHECK(it->second == body.dump());
                }
                ++checked;
            }
            CHECK(body_by_hash.size() > 1);
        }
    }
    CHECK(checked > 20);
}

TEST_CASE("ruleset text: every match, verdict and chain shape, and strings that need escaping, as nlohmann writes them") {
    Ruleset r;
    r.enforcer = "hv-\"quoted\"";
    r.policy_name = "policy \\ with \u00e9 and \x01 control";
    SetDefinition ports;
    ports.name = "egress_ports";
    ports.key = {KeyType::Ifname};
    ports.verdict_map = true;
    ports.comment = "tab\there";
    ports.elements = std::make_shared<const ElementList>(ElementList{Element{{std::string("vdi\"1")}, "c1_out"}});
    SetDefinition ranges;
    ranges.name = "services";
    ranges.key = {KeyType::InetProto, KeyType::InetService};
    ranges.interval = true;
    ranges.dynamic = true;
    ranges.elements = std::make_shared<const ElementList>(
        ElementList{Element{{NumberRange{6, 6}, NumberRange{1000, 2000}}, ""},
                    Element{{NumberRange{17, 17}, NumberRange{53, 53}}, ""}});
    r.sets = {ports, ranges};
    Chain forward{"forward", BaseChain{Hook::Forward, -5}, {}};
    Rule all;
    all.matches = {SetLookup{{Field::Iifname, Field::ThDport}, "egress_ports"},
                   ValueMatch{Field::ThDport, {NumberRange{22, 22}, NumberRange{8000, 8080}}},
                   CtStateMatch{static_cast<std::uint8_t>(CtEstablished | CtRelated | CtNew | CtInvalid)},
                   CtDirectionReply{}};
    all.counter = true;
    all.log = LogAction{"bh:enf:out:deny:c\"1", 7};
    all.verdict = Verdict{VerdictKind::Drop, ""};
    all.comment = "c\\omment";
    Rule dispatch;
    dispatch.dispatch = VerdictMapDispatch{Field::Iifname, "egress_ports"};
    Rule jump;
    jump.verdict = Verdict{VerdictKind::Jump, "c1_out"};
    Rule go;
    go.verdict = Verdict{VerdictKind::Goto, "c1_out"};
    Rule ret;
    ret.verdict = Verdict{VerdictKind::Return, ""};
    Rule accept;
    accept.verdict = Verdict{VerdictKind::Accept, ""};
    Rule trip;  // a tripwire's packet-path set update (into the dynamic set)
    trip.update = SetUpdate{{Field::L4proto, Field::ThDport}, "services"};
    trip.verdict = Verdict{VerdictKind::Drop, ""};
    forward.rules = {all, dispatch, jump, go, ret, accept, trip};
    Chain input{"input", BaseChain{Hook::Input, 0}, {}};
    Chain output{"output", BaseChain{Hook::Output, 10}, {accept}};
    Chain regular{"c1_out", std::nullopt, {ret}};
    r.chains = {forward, input, output, regular};
    r.ports = {PortBinding{"vdi\"1", "vdi-1", policy::AttachmentMode::Port, "c1"}};

    json document = to_json(r);
    document["hash"] = "x";
    CHECK(to_json_text(r, "x") == document.dump());
    json body = to_json(r);
    body.erase("hash");
    body.erase("ports");
    CHECK(ruleset_hash_format1(r) == fnv1a64_hex(body.dump()));
    auto back = ruleset_from_json(to_json(r));
    REQUIRE_MESSAGE(back, back.error());
    CHECK(ruleset_hash(*back) == ruleset_hash(r));
}
