#include "policies/element_builder.hpp"
#include "policies/nft_text.hpp"
#include "policies/policy_reader.hpp"
#include "policies/ruleset_compiler.hpp"
#include "policies/ruleset_diff.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <random>

using namespace bulkhead;
using namespace bulkhead::ruleset;

namespace {

struct Example {
    policy::Policy policy;
    policy::Inventory inventory;
};

Example load_example(const std::string& name) {
    auto p = policy::parse_policy(test::read_source_file("examples/" + name + "/policy.json"));
    auto i = policy::parse_inventory(test::read_source_file("examples/" + name + "/inventory.json"));
    REQUIRE(p);
    REQUIRE(i);
    return {*p, *i};
}

std::size_t index_of_rule(const Chain& chain, const std::string& set) {
    for (std::size_t i = 0; i < chain.rules.size(); ++i) {
        for (const auto& m : chain.rules[i].matches) {
            if (const auto* lookup = std::get_if<SetLookup>(&m); lookup && lookup->set == set) {
                return i;
            }
        }
    }
    return chain.rules.size();
}

bool contains_element(const SetDefinition& set, const std::string& rendered) {
    return std::any_of(set.elements->begin(), set.elements->end(),
                       [&](const Element& e) { return render_element(e, set) == rendered; });
}

policy::Workload clone_vdi(const policy::Workload& base, const std::string& id,
                           const std::string& address, const std::string& interface) {
    policy::Workload w = base;
    w.id = id;
    w.addresses = {*policy::parse_ip_address(address)};
    w.mac.clear();
    w.attachment->interfaces = {interface};
    return w;
}

}  // namespace

TEST_CASE("compiler: golden files for every example and enforcer") {
    // Regenerate after an intended change with: BULKHEAD_UPDATE_GOLDEN=1 ctest -R golden
    const bool update = std::getenv("BULKHEAD_UPDATE_GOLDEN") != nullptr;
    for (const std::string name : {"vdi-pool", "segmentation", "host-mode"}) {
        auto example = load_example(name);
        RulesetCompiler compiler(example.policy, example.inventory);
        for (const auto& enforcer : compiler.enforcers()) {
            CAPTURE(name);
            CAPTURE(enforcer);
            auto ruleset = compiler.compile(enforcer);
            REQUIRE(ruleset);
            const std::string base = "tests/golden/" + name + "/" + enforcer;
            const std::string nft = render_nft(*ruleset);
            const std::string json = to_json(*ruleset).dump(1, '\t') + "\n";
            if (update) {
                std::ofstream(test::source_path(base + ".nft")) << nft;
                std::ofstream(test::source_path(base + ".json")) << json;
            }
            CHECK(nft == test::read_source_file(base + ".nft"));
            CHECK(json == test::read_source_file(base + ".json"));
        }
    }
}

TEST_CASE("compiler: output is deterministic whatever the inventory order") {
    auto example = load_example("vdi-pool");
    RulesetCompiler first(example.policy, example.inventory);
    std::reverse(example.inventory.workloads.begin(), example.inventory.workloads.end());
    std::reverse(example.policy.rules.begin(), example.policy.rules.end());
    RulesetCompiler second(example.policy, example.inventory);
    for (const auto& enforcer : first.enforcers()) {
        CHECK(render_nft(*first.compile(enforcer)) == render_nft(*second.compile(enforcer)));
    }
}

TEST_CASE("compiler: workloads with identical segment membership share one policy class") {
    auto example = load_example("vdi-pool");
    RulesetCompiler compiler(example.policy, example.inventory);
    CHECK(compiler.class_of("vdi-001") == compiler.class_of("vdi-002"));
    CHECK(compiler.class_of("vdi-001") == compiler.class_of("vdi-101"));
    CHECK(compiler.class_of("vdi-001") != compiler.class_of("admin-01"));
    CHECK(compiler.class_of("fs-01").empty());  // unmanaged: a peer only
    auto hv1 = *compiler.compile("hv1");
    // Three VDIs of one class: one chain pair, not three.
    const auto cls = compiler.class_of("vdi-001");
    CHECK(hv1.find_chain(cls + "_out") != nullptr);
    CHECK(hv1.find_chain(cls + "_in") != nullptr);
    // forward/input/output, quarantine pair, spoof guard (addresses, MAC), one class pair
    CHECK(hv1.chains.size() == 3 + 2 + 2 + 2);
}

TEST_CASE("compiler: a host's ruleset holds only its local workloads") {
    auto example = load_example("vdi-pool");
    RulesetCompiler compiler(example.policy, example.inventory);
    auto hv1 = *compiler.compile("hv1");
    std::vector<std::string> interfaces;
    for (const auto& p : hv1.ports) {
        interfaces.push_back(p.interface);
    }
    CHECK(interfaces == std::vector<std::string>{"vdi001", "vdi002", "vdi003"});
    const auto* egress = hv1.find_set("egress_ports");
    REQUIRE(egress);
    CHECK(egress->elements->size() == 3);
    CHECK(hv1.find_chain(compiler.class_of("admin-01") + "_in") == nullptr);
    CHECK_FALSE(compiler.compile("no-such-enforcer"));
}

TEST_CASE("compiler: allow-lists hold the peers' addresses crossed with the services") {
    auto example = load_example("vdi-pool");
    SUBCASE("membership segments are shared host-wide address sets") {
        RulesetCompiler compiler(example.policy, example.inventory);
        auto hv1 = *compiler.compile("hv1");
        const auto cls = compiler.class_of("vdi-001");
        // CIDR-only segments (proxy, EDR, DNS) are crossed into the class's own sets.
        const auto* out4 = hv1.find_set(cls + "_out_allow4");
        REQUIRE(out4);
        CHECK(contains_element(*out4, "10.0.0.20 . 6 . 8443-8444"));  // EDR port range
        CHECK(contains_element(*out4, "10.0.0.53 . 17 . 53"));        // DNS over UDP
        CHECK_FALSE(contains_element(*out4, "10.0.0.30 . 6 . 445"));  // file servers: shared
        // Label segments: one address set per segment, one services set per class and segment.
        CHECK(contains_element(*hv1.find_set("seg_file_servers_72fb6a_4"), "10.0.0.30"));
        CHECK(contains_element(*hv1.find_set("seg_file_servers_72fb6a_6"), "fd00:0:0:1::30"));
        const auto* smb = hv1.find_set(cls + "_out_allow_seg_file_servers_72fb6a");
        REQUIRE(smb);
        CHECK(contains_element(*smb, "6 . 445"));
        CHECK(contains_element(*hv1.find_set(cls + "_out_allow_seg_file_servers_72fb6a_icmp6"), "echo-request"));
        CHECK(contains_element(*hv1.find_set("seg_admin_terminals_8ea0ec_4"), "10.1.1.100"));
        CHECK(contains_element(*hv1.find_set(cls + "_in_allow_seg_admin_terminals_8ea0ec"), "6 . 3389"));
        CHECK(contains_element(*hv1.find_set("seg_vdi_4"), "10.1.1.2"));  // VDI on the other host
        CHECK(contains_element(*hv1.find_set(cls + "_out_deny_seg_vdi"), "0-255 . 0-65535"));
        // The class chain looks the peer up in the segment and the service in its own set.
        const auto* out = hv1.find_chain(cls + "_out");
        REQUIRE(out);
        CHECK(index_of_rule(*out, "seg_vdi_4") < index_of_rule(*out, "seg_file_servers_72fb6a_4"));
    }
    SUBCASE("with sharing off, every peer is crossed into the class's sets") {
        RulesetCompiler compiler(example.policy, example.inventory, {.share_membership_segments = false});
        auto hv1 = *compiler.compile("hv1");
        const auto cls = compiler.class_of("vdi-001");
        const auto* out4 = hv1.find_set(cls + "_out_allow4");
        REQUIRE(out4);
        CHECK(contains_element(*out4, "10.0.0.30 . 6 . 445"));
        CHECK(contains_element(*out4, "10.0.0.20 . 6 . 8443-8444"));
        CHECK_FALSE(contains_element(*out4, "10.0.0.30 . 6 . 3389"));
        CHECK(contains_element(*hv1.find_set(cls + "_in_allow4"), "10.1.1.100 . 6 . 3389"));
        CHECK(contains_element(*hv1.find_set(cls + "_out_allow_icmp6"), "fd00:0:0:1::30 . echo-request"));
        CHECK(contains_element(*hv1.find_set(cls + "_out_deny4"), "10.1.1.2 . 0-255 . 0-65535"));
        CHECK(hv1.find_set("seg_vdi_4") == nullptr);
    }
}

TEST_CASE("compiler: chain order puts quarantine first, deny before allow, default last") {
    auto example = load_example("vdi-pool");
    RulesetCompiler compiler(example.policy, example.inventory);
    auto hv1 = *compiler.compile("hv1");
    const auto* forward = hv1.find_chain("forward");
    REQUIRE(forward);
    REQUIRE(forward->base);
    CHECK(forward->base->hook == Hook::Forward);
    // Quarantine comes before the established shortcut, so it cuts live connections.
    const auto quarantine = index_of_rule(*forward, "quarantined_ports");
    std::size_t established = forward->rules.size();
    for (std::size_t i = 0; i < forward->rules.size(); ++i) {
        if (!forward->rules[i].matches.empty() &&
            std::holds_alternative<CtStateMatch>(forward->rules[i].matches[0])) {
            established = i;
        }
    }
    CHECK(quarantine < established);
    CHECK(established < forward->rules.size());

    const auto cls = compiler.class_of("vdi-001");
    const auto* out = hv1.find_chain(cls + "_out");
    REQUIRE(out);
    CHECK(index_of_rule(*out, "decoys4") < index_of_rule(*out, cls + "_out_deny4"));
    CHECK(index_of_rule(*out, cls + "_out_deny4") < index_of_rule(*out, cls + "_out_allow4"));
    const auto& last = out->rules.back();
    CHECK(last.matches.empty());
    CHECK(last.verdict.kind == VerdictKind::Drop);
    REQUIRE(last.log);
    CHECK(last.log->prefix == "bh:enf:out:default:" + cls);
    CHECK(last.log->group == 10);
}

TEST_CASE("compiler: traffic from a VDI to the hypervisor itself passes the VDI's class chain") {
    auto example = load_example("vdi-pool");
    RulesetCompiler compiler(example.policy, example.inventory);
    auto hv1 = *compiler.compile("hv1");
    const auto* input = hv1.find_chain("input");
    REQUIRE(input);
    REQUIRE(input->base);
    CHECK(input->base->hook == Hook::Input);
    // Neighbour discovery first, then the spoof guard, quarantine, the established
    // shortcut, then the same egress dispatch as in forward.
    CHECK(std::holds_alternative<ValueMatch>(input->rules[0].matches[0]));
    CHECK(index_of_rule(*input, "guarded_ports") == 1);
    CHECK(input->rules[1].verdict.chain == "spoof_guard");
    CHECK(index_of_rule(*input, "quarantined_ports") == 2);
    CHECK(input->rules[2].verdict.chain == "quarantine_out");
    REQUIRE(input->rules.back().dispatch);
    CHECK(input->rules.back().dispatch->map == "egress_ports");
    const auto* output = hv1.find_chain("output");
    REQUIRE(output);
    CHECK(output->rules.back().dispatch->map == "ingress_ports");
}

TEST_CASE("compiler: every drop rule logs with a prefix naming mode, direction, reason and class") {
    auto example = load_example("segmentation");
    RulesetCompiler compiler(example.policy, example.inventory);
    for (const auto& enforcer : compiler.enforcers()) {
        auto ruleset = *compiler.compile(enforcer);
        for (const auto& chain : ruleset.chains) {
            for (const auto& rule : chain.rules) {
                if (rule.verdict.kind != VerdictKind::Drop) {
                    continue;
                }
                CAPTURE(render_rule(rule));
                REQUIRE(rule.log);
                auto parts = parse_log_prefix(rule.log->prefix);
                REQUIRE(parts);
                CHECK(parts->mode == policy::Mode::Enforce);
                CHECK(rule.counter);
                if (parts->reason == "tripwire") {
                    // Port mode contains the sender's port (out), host mode its address (in).
                    CHECK(chain.name == parts->subject + "_" + parts->direction + "_tripwire");
                    REQUIRE(rule.update);
                    CHECK(rule.update->set == (parts->direction == "out" ? "quarantined_ports"
                                               : rule.update->fields[0] == Field::Ip4Saddr ? "blocked_sources4"
                                                                                           : "blocked_sources6"));
                } else if (parts->reason == "spoof") {
                    CHECK((chain.name == "spoof_guard" || chain.name == "spoof_guard_mac"));
                    CHECK(parts->subject == "q");
                } else if (parts->reason != "quarantine") {
                    CHECK(chain.name == parts->subject + "_" + parts->direction);
                }
            }
        }
    }
}

TEST_CASE("compiler: monitor mode logs would-drops and drops nothing except quarantine") {
    auto example = load_example("vdi-pool");
    example.policy.defaults.mode = policy::Mode::Monitor;
    RulesetCompiler compiler(example.policy, example.inventory);
    auto hv1 = *compiler.compile("hv1");
    std::size_t would_drop = 0;
    for (const auto& chain : hv1.chains) {
        for (const auto& rule : chain.rules) {
            const bool quarantine_chain = chain.name.starts_with("quarantine_");
            if (rule.verdict.kind == VerdictKind::Drop) {
                CHECK(quarantine_chain);
            }
            if (!quarantine_chain && rule.log && rule.log->group == 10) {
                CHECK(rule.log->prefix.starts_with("bh:mon:"));
                CHECK(rule.verdict.kind == VerdictKind::Return);
                ++would_drop;
            }
        }
    }
    CHECK(would_drop > 0);
}

TEST_CASE("compiler: defaults change the drop and allow rules") {
    auto example = load_example("vdi-pool");
    SUBCASE("log_drops off: class drops are silent, quarantine still logs") {
        example.policy.defaults.log_drops = false;
        RulesetCompiler compiler(example.policy, example.inventory);
        auto hv1 = *compiler.compile("hv1");
        const auto* out = hv1.find_chain(compiler.class_of("vdi-001") + "_out");
        CHECK_FALSE(out->rules.back().log);
        CHECK(hv1.find_chain("quarantine_out")->rules.back().log);
    }
    SUBCASE("default allow: no default drop at the end of class chains") {
        example.policy.defaults.action = policy::DefaultAction::Allow;
        RulesetCompiler compiler(example.policy, example.inventory);
        auto hv1 = *compiler.compile("hv1");
        const auto* out = hv1.find_chain(compiler.class_of("vdi-001") + "_out");
        CHECK(out->rules.back().verdict.kind == VerdictKind::Return);
        // Explicit denies still drop.
        CHECK(out->rules[index_of_rule(*out, compiler.class_of("vdi-001") + "_out_deny4")]
                  .verdict.kind == VerdictKind::Drop);
    }
    SUBCASE("log_allowed off: allow rules carry no log") {
        example.policy.defaults.log_allowed = false;
        RulesetCompiler compiler(example.policy, example.inventory);
        auto hv1 = *compiler.compile("hv1");
        const auto cls = compiler.class_of("vdi-001");
        const auto* out = hv1.find_chain(cls + "_out");
        CHECK_FALSE(out->rules[index_of_rule(*out, cls + "_out_allow4")].log);
    }
}

TEST_CASE("compiler: decoy addresses are caught before any allow and logged as decoy") {
    auto example = load_example("segmentation");
    RulesetCompiler compiler(example.policy, example.inventory);
    auto floor = *compiler.compile("floor-1");
    const auto* decoys4 = floor.find_set("decoys4");
    REQUIRE(decoys4);
    CHECK(contains_element(*decoys4, "10.20.0.66"));
    CHECK(contains_element(*floor.find_set("decoys6"), "fd00:20::66"));
    const auto cls = compiler.class_of("pc-001");
    const auto* out = floor.find_chain(cls + "_out");
    REQUIRE(out);
    // First the jump of armed ports into the class's tripwires, then the decoys.
    CHECK(index_of_rule(*out, "tripwire_ports") == 0);
    CHECK(index_of_rule(*out, "decoys4") == 1);
    CHECK(out->rules[1].log->prefix == "bh:enf:out:decoy:" + cls);
}

TEST_CASE("compiler: host mode uses input/output hooks on the listed interfaces") {
    auto example = load_example("host-mode");
    RulesetCompiler compiler(example.policy, example.inventory);
    auto web = *compiler.compile("web-01");
    REQUIRE(web.find_chain("input"));
    REQUIRE(web.find_chain("output"));
    CHECK(web.find_chain("input")->base->hook == Hook::Input);
    const auto* ingress = web.find_set("host_ingress");
    REQUIRE(ingress);
    REQUIRE(ingress->elements->size() == 1);
    CHECK(render_element(ingress->elements->front(), *ingress) ==
          "\"eth0\" : jump " + compiler.class_of("web-01") + "_in");
    CHECK(web.find_set("egress_ports")->elements->empty());
    // Neighbour discovery is accepted before anything can drop it.
    CHECK(std::holds_alternative<ValueMatch>(web.find_chain("input")->rules.front().matches[0]));
}

TEST_CASE("compiler: quarantine is one element, and the allow-list comes from the policy") {
    auto example = load_example("vdi-pool");
    RulesetCompiler compiler(example.policy, example.inventory);
    auto before = *compiler.compile("hv1");
    auto after = *compiler.compile("hv1", {"vdi-001", "vdi-101"});  // vdi-101 is on hv2
    auto diff = diff_rulesets(before, after);
    CHECK(diff.elements_added() == 1);
    CHECK(diff.elements_removed() == 0);
    CHECK(diff.rules_written() == 0);
    REQUIRE(diff.set_changes.size() == 1);
    CHECK(diff.set_changes[0].set == "quarantined_ports");
    CHECK(contains_element(*after.find_set("quarantined_ports"), "\"vdi001\""));
    CHECK(contains_element(*after.find_set("quarantine_to4"), "10.0.0.20 . 6 . 443"));
    CHECK(contains_element(*after.find_set("quarantine_from4"), "10.1.1.100 . 6 . 3389"));
    CHECK(contains_element(*after.find_set("quarantine_to_hosts4"), "10.0.0.53"));
    CHECK(render_nft_diff(diff, after).find(
              "add element inet bulkhead quarantined_ports { \"vdi001\" }") != std::string::npos);
}

TEST_CASE("compiler: adding a VDI of an existing class changes a handful of elements") {
    auto example = load_example("vdi-pool");
    RulesetCompiler old_compiler(example.policy, example.inventory);
    auto base = *std::find_if(example.inventory.workloads.begin(), example.inventory.workloads.end(),
                              [](const auto& w) { return w.id == "vdi-001"; });
    example.inventory.workloads.push_back(clone_vdi(base, "vdi-004", "10.1.0.4", "vdi004"));
    RulesetCompiler new_compiler(example.policy, example.inventory);
    for (const auto& enforcer : new_compiler.enforcers()) {
        CAPTURE(enforcer);
        auto diff = diff_rulesets(*old_compiler.compile(enforcer), *new_compiler.compile(enforcer));
        CHECK_FALSE(diff.full_replace);
        CHECK(diff.rules_written() == 0);
        CHECK(diff.sets_added.empty());
        CHECK(diff.elements_removed() == 0);
        if (enforcer == "hv1") {
            // Two verdict-map entries for the port, and the new address in the shared
            // address set of its segment "vdi" (IPv4 only: the clone has no IPv6 address);
            // the spoof guard's port and its own address.
            CHECK(diff.elements_added() == 5);
            // egress_ports, ingress_ports, seg_vdi_4, guarded_ports, port_sources4
            CHECK(diff.set_changes.size() == 5);
        } else {
            // hv2 names segment "vdi" too (VDI deny, admin RDP): one element, whatever the
            // number of classes that look the segment up.
            CHECK(diff.elements_added() == 1);
            REQUIRE(diff.set_changes.size() == 1);
            CHECK(diff.set_changes[0].set == "seg_vdi_4");
        }
    }
}

TEST_CASE("compiler: a changed rule rewrites elements, not chains") {
    auto example = load_example("vdi-pool");
    RulesetCompiler old_compiler(example.policy, example.inventory);
    for (auto& rule : example.policy.rules) {
        if (rule.name == "vdi-to-proxy") {
            rule.services = {"proxy", "rdp"};
        }
    }
    RulesetCompiler new_compiler(example.policy, example.inventory);
    auto diff = diff_rulesets(*old_compiler.compile("hv1"), *new_compiler.compile("hv1"));
    CHECK(diff.rules_written() == 0);
    CHECK(diff.elements_added() == 4);  // proxy x {tcp, udp} x {v4, v6} on 3389
    CHECK(diff.elements_removed() == 0);
}

TEST_CASE("compiler: identical rulesets diff to nothing") {
    auto example = load_example("segmentation");
    RulesetCompiler compiler(example.policy, example.inventory);
    auto a = *compiler.compile("floor-1");
    auto b = *compiler.compile("floor-1");
    CHECK(diff_rulesets(a, b).empty());
    CHECK(ruleset_hash(a) == ruleset_hash(b));
}

TEST_CASE("compiler: the ruleset JSON interchange format round-trips") {
    auto example = load_example("vdi-pool");
    RulesetCompiler compiler(example.policy, example.inventory);
    auto original = *compiler.compile("hv2", {"vdi-101"});
    auto back = ruleset_from_json(to_json(original));
    REQUIRE(back);
    CHECK(render_nft(*back) == render_nft(original));
    CHECK(ruleset_hash(*back) == ruleset_hash(original));
    CHECK(back->ports == original.ports);

    SUBCASE("a dangling set reference is rejected") {
        auto document = to_json(original);
        for (auto& set : document["sets"]) {
            if (set["name"] == "decoys4") {
                set["name"] = "renamed";
            }
        }
        auto broken = ruleset_from_json(document);
        REQUIRE_FALSE(broken);
        CHECK(broken.error().find("missing set decoys4") != std::string::npos);
    }
    SUBCASE("an element of the wrong address family is rejected") {
        auto document = to_json(original);
        for (auto& set : document["sets"]) {
            if (set["name"] == "decoys4") {
                set["elements"] = nlohmann::json::array({{{"key", {"fd00::1"}}}});
            }
        }
        CHECK_FALSE(ruleset_from_json(document));
    }
    SUBCASE("not a ruleset at all") {
        CHECK_FALSE(ruleset_from_json(nlohmann::json::array()));
        CHECK_FALSE(ruleset_from_json({{"format", "bulkhead-ruleset/1"}}));
    }
}

TEST_CASE("log prefix: round trip and rejection of foreign prefixes") {
    const auto prefix = log_prefix(policy::Mode::Monitor, "in", "deny", "c0123abcd");
    CHECK(prefix == "bh:mon:in:deny:c0123abcd");
    auto parts = parse_log_prefix(prefix);
    REQUIRE(parts);
    CHECK(parts->mode == policy::Mode::Monitor);
    CHECK(parts->direction == "in");
    CHECK(parts->reason == "deny");
    CHECK(parts->subject == "c0123abcd");
    CHECK_FALSE(parse_log_prefix("DROP: "));
    CHECK_FALSE(parse_log_prefix("bh:enf:sideways:deny:c1"));
    CHECK_FALSE(parse_log_prefix("bh:enf:in:maybe:c1"));
    CHECK_FALSE(parse_log_prefix("bh:enf:in:deny:"));
}

namespace {

IpRange range(const std::string& text) { return *policy::parse_cidr(text); }

// Membership of a point in an element list (address, second, third).
bool covers(const ElementList& elements, const policy::IpAddress& a, std::uint32_t second,
            std::uint32_t third) {
    for (const auto& e : elements) {
        const auto& addr = std::get<IpRange>(e.key[0]);
        const auto& s = std::get<NumberRange>(e.key[1]);
        const auto& t = std::get<NumberRange>(e.key[2]);
        if (addr.contains(a) && s.low <= second && second <= s.high && t.low <= third &&
            third <= t.high) {
            return true;
        }
    }
    return false;
}

}  // namespace

TEST_CASE("element builder: overlapping rules become disjoint elements") {
    std::vector<Box> boxes{
        {range("10.0.0.0/24"), {17, 17}, {53, 53}},  // dns to a whole subnet
        {range("10.0.0.5"), {6, 6}, {445, 445}},      // smb to one host in it
        {range("10.0.0.5"), {6, 6}, {440, 450}},      // overlapping port range
    };
    auto elements = disjoint_elements(boxes, true);
    std::vector<std::string> rendered;
    SetDefinition set;
    set.key = {KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService};
    for (const auto& e : elements) {
        rendered.push_back(render_element(e, set));
    }
    CHECK(rendered == std::vector<std::string>{
                          "10.0.0.0-10.0.0.4 . 17 . 53",
                          "10.0.0.5 . 6 . 440-450",
                          "10.0.0.5 . 17 . 53",
                          "10.0.0.6-10.0.0.255 . 17 . 53",
                      });
}

TEST_CASE("element builder: random boxes keep their union and never overlap") {
    std::mt19937 random(12345u);  // fixed seed: the test is reproducible
    for (int round = 0; round < 50; ++round) {
        std::vector<Box> boxes;
        const int count = 1 + static_cast<int>(random() % 12);
        for (int i = 0; i < count; ++i) {
            auto a = *policy::parse_ip_address("10.0.0.0");
            a.bytes[3] = static_cast<std::uint8_t>(random() % 32);
            auto b = a;
            b.bytes[3] = static_cast<std::uint8_t>(a.bytes[3] + random() % 8);
            const auto p = static_cast<std::uint32_t>(random() % 4);
            const auto port = static_cast<std::uint32_t>(random() % 20);
            boxes.push_back({{a, b}, {p, p + static_cast<std::uint32_t>(random() % 2)}, {port, port + static_cast<std::uint32_t>(random() % 6)}});
        }
        auto elements = disjoint_elements(boxes, true);
        for (std::uint32_t host = 0; host < 48; ++host) {
            auto a = *policy::parse_ip_address("10.0.0.0");
            a.bytes[3] = static_cast<std::uint8_t>(host);
            for (std::uint32_t p = 0; p < 6; ++p) {
                for (std::uint32_t port = 0; port < 28; ++port) {
                    bool expected = false;
                    for (const auto& box : boxes) {
                        expected = expected || (box.address.contains(a) && box.second.low <= p &&
                                                p <= box.second.high && box.third.low <= port &&
                                                port <= box.third.high);
                    }
                    int hits = 0;
                    for (const auto& e : elements) {
                        ElementList one{e};
                        hits += covers(one, a, p, port) ? 1 : 0;
                    }
                    REQUIRE(hits == (expected ? 1 : 0));  // covered exactly once, or not at all
                }
            }
        }
    }
}

TEST_CASE("element builder: address unions merge overlaps and keep neighbours apart") {
    auto elements = merged_address_elements(
        {range("10.0.0.0/25"), range("10.0.0.128/25"), range("10.0.0.5"), range("192.168.1.1"),
         range("192.168.1.2"), range("192.168.1.2")});
    std::vector<std::string> rendered;
    for (const auto& e : elements) {
        rendered.push_back(policy::to_string(std::get<IpRange>(e.key[0])));
    }
    // 10.0.0.5 lies inside 10.0.0.0/25 and the duplicate .2 collapses; adjacent blocks and
    // hosts stay separate so that adding a neighbour is one new element.
    CHECK(rendered == std::vector<std::string>{"10.0.0.0/25", "10.0.0.128/25", "192.168.1.1",
                                               "192.168.1.2"});
}

TEST_CASE("compiler: an armed tripwire adds its port to the quarantined ports on the packet") {
    auto example = load_example("segmentation");
    RulesetCompiler compiler(example.policy, example.inventory);
    auto ruleset = compiler.compile("floor-1");
    REQUIRE(ruleset);
    const auto* armed = ruleset->find_set("tripwire_ports");
    REQUIRE(armed != nullptr);
    // pc-001/pc-002: user terminals, auto quarantine on. adm-001: the policy's rule puts
    // admin terminals' tripwires in dry-run, so the kernel never contains it (logs only).
    CHECK(contains_element(*armed, "\"pc001\""));
    CHECK(contains_element(*armed, "\"pc002\""));
    CHECK_FALSE(contains_element(*armed, "\"adm001\""));
    CHECK(ruleset->find_set("quarantined_ports")->dynamic);
    const auto user_class = compiler.class_of("pc-001");
    const auto* out = ruleset->find_chain(user_class + "_out");
    REQUIRE(out != nullptr);
    REQUIRE(!out->rules.empty());
    // One lookup for every port: armed ones enter the class's tripwires, before the decoys.
    CHECK(render_rule(out->rules[0]) == "iifname @tripwire_ports jump " + user_class + "_out_tripwire");
    const auto* chain = ruleset->find_chain(user_class + "_out_tripwire");
    REQUIRE(chain != nullptr);
    const auto decoy_trip = index_of_rule(*chain, "tripwire_decoys4");
    REQUIRE(decoy_trip < chain->rules.size());
    const auto& rule = chain->rules[decoy_trip];
    REQUIRE(rule.update);
    CHECK(rule.update->set == "quarantined_ports");
    CHECK(rule.update->fields == std::vector<Field>{Field::Iifname});
    CHECK(rule.verdict.kind == VerdictKind::Drop);
    REQUIRE(rule.log);
    CHECK(rule.log->prefix == "bh:enf:out:tripwire:" + user_class);
    CHECK(render_rule(rule) == "ip daddr @tripwire_decoys4 add @quarantined_ports { iifname } "
                               "counter log prefix \"bh:enf:out:tripwire:" + user_class + "\" group 10 drop");
    // The SMB tripwire rule names a shared segment (user-terminals): its own services set.
    const std::string smb = user_class + "_out_tripwire_seg_user_terminals_ca7fbe";
    const auto smb_rule = index_of_rule(*chain, smb);
    REQUIRE(smb_rule < chain->rules.size());
    CHECK(chain->rules[smb_rule].update == rule.update);
    CHECK(contains_element(*ruleset->find_set(smb), "6 . 445"));
    // A tripwire rule stays a deny rule for the ports it is not armed on.
    CHECK(contains_element(*ruleset->find_set(user_class + "_out_deny_seg_user_terminals_ca7fbe"), "6 . 445"));
    // JSON round trip keeps the update (the enforcer loads this form).
    auto back = ruleset_from_json(to_json(*ruleset));
    REQUIRE(back);
    CHECK(ruleset_hash(*back) == ruleset_hash(*ruleset));
    CHECK(back->find_chain(user_class + "_out_tripwire")->rules[decoy_trip] == rule);
}

TEST_CASE("compiler: tripwire guardrails: critical, monitor, dry-run and off only log") {
    auto example = load_example("segmentation");
    SUBCASE("critical workload") {
        for (auto& w : example.inventory.workloads) {
            w.critical = w.critical || w.id == "pc-001";
        }
    }
    SUBCASE("monitor mode") { example.policy.defaults.mode = policy::Mode::Monitor; }
    SUBCASE("automatic quarantine off") { example.policy.response.auto_quarantine = policy::AutoQuarantineMode::Off; }
    SUBCASE("dry-run section caps the rules") {
        example.policy.response.auto_quarantine = policy::AutoQuarantineMode::DryRun;
    }
    RulesetCompiler compiler(example.policy, example.inventory);
    auto ruleset = compiler.compile("floor-1");
    REQUIRE(ruleset);
    CHECK_FALSE(contains_element(*ruleset->find_set("tripwire_ports"), "\"pc001\""));
    // Still dropped and logged as a decoy touch.
    const auto* chain = ruleset->find_chain(compiler.class_of("pc-001") + "_out");
    CHECK(index_of_rule(*chain, "decoys4") < chain->rules.size());
}

TEST_CASE("compiler: tripwires cost the same lookups whatever the number of workloads") {
    // Per-packet cost = the rules a packet can traverse: compile with 3 and with 300 user
    // terminals and compare the rule count of every chain (sets grow, chains do not).
    auto example = load_example("segmentation");
    auto small = RulesetCompiler(example.policy, example.inventory).compile("floor-1");
    auto server_small = RulesetCompiler(example.policy, example.inventory).compile("fs-01");
    const auto base = *std::find_if(example.inventory.workloads.begin(), example.inventory.workloads.end(),
                                    [](const auto& w) { return w.id == "pc-001"; });
    for (int i = 0; i < 300; ++i) {
        const std::string address = "10.20." + std::to_string(3 + i / 200) + "." + std::to_string(i % 200 + 1);
        example.inventory.workloads.push_back(
            clone_vdi(base, "pc-x" + std::to_string(i), address, "pcx" + std::to_string(i)));
    }
    auto large = RulesetCompiler(example.policy, example.inventory).compile("floor-1");
    REQUIRE(small);
    REQUIRE(large);
    REQUIRE(small->chains.size() == large->chains.size());
    for (std::size_t c = 0; c < small->chains.size(); ++c) {
        CAPTURE(small->chains[c].name);
        CHECK(small->chains[c].rules.size() == large->chains[c].rules.size());
    }
    CHECK(large->find_set("tripwire_ports")->elements->size() == 302);
    // Host mode: the file server (armed host tripwires) keeps the same chains and rules with
    // every added terminal quarantined; they are elements of blocked_sources4, one lookup.
    std::set<std::string> quarantined;
    for (int i = 0; i < 300; ++i) {
        quarantined.insert("pc-x" + std::to_string(i));
    }
    auto server_large = RulesetCompiler(example.policy, example.inventory).compile("fs-01", quarantined);
    REQUIRE(server_small);
    REQUIRE(server_large);
    CHECK_FALSE(server_large->find_set("host_tripwires")->elements->empty());
    REQUIRE(server_small->chains.size() == server_large->chains.size());
    for (std::size_t c = 0; c < server_small->chains.size(); ++c) {
        CAPTURE(server_small->chains[c].name);
        CHECK(server_small->chains[c].rules.size() == server_large->chains[c].rules.size());
    }
    CHECK(server_large->find_set("blocked_sources4")->elements->size() == 300);
}

TEST_CASE("compiler: spoof guard: each port sends only from its workload's addresses") {
    auto example = load_example("vdi-pool");
    RulesetCompiler compiler(example.policy, example.inventory);
    auto hv1 = *compiler.compile("hv1");
    const auto* v4 = hv1.find_set("port_sources4");
    const auto* v6 = hv1.find_set("port_sources6");
    REQUIRE(v4 != nullptr);
    REQUIRE(v6 != nullptr);
    CHECK(contains_element(*v4, "\"vdi001\" . 10.1.0.1"));
    CHECK(contains_element(*v6, "\"vdi001\" . fd00:0:0:10::1"));
    CHECK_FALSE(contains_element(*v4, "\"vdi001\" . 10.1.0.2"));  // vdi-002's address
    CHECK(contains_element(*hv1.find_set("guarded_ports"), "\"vdi001\""));
    // Every packet from a port meets it first, before the quarantine and established shortcuts.
    const auto* forward = hv1.find_chain("forward");
    REQUIRE(forward != nullptr);
    CHECK(render_rule(forward->rules[0]) == "iifname @guarded_ports jump spoof_guard");
    const auto* guard = hv1.find_chain("spoof_guard");
    REQUIRE(guard != nullptr);
    REQUIRE(guard->rules.size() == 6);
    CHECK(render_rule(guard->rules[0]) == "iifname @mac_guarded_ports jump spoof_guard_mac");
    CHECK(render_rule(guard->rules[1]) == "iifname . ip saddr @port_sources4 return");
    CHECK(render_rule(guard->rules[3]) == "ip6 saddr @link_sources6 return");
    CHECK(render_rule(guard->rules[5]) == "counter log prefix \"bh:enf:out:spoof:q\" group 10 drop");
    // A host-mode workload protects itself: no port, nothing guarded.
    auto host = load_example("host-mode");
    RulesetCompiler host_compiler(host.policy, host.inventory);
    for (const auto& enforcer : host_compiler.enforcers()) {
        CHECK(host_compiler.compile(enforcer)->find_set("guarded_ports")->elements->empty());
    }
}

TEST_CASE("compiler: spoof guard: each port sends only from its workload's MAC") {
    auto example = load_example("vdi-pool");
    SUBCASE("every workload has a MAC") {}
    SUBCASE("a workload without a MAC in the inventory gets no MAC check") {
        for (auto& w : example.inventory.workloads) {
            if (w.id == "vdi-002") {
                w.mac.clear();
            }
        }
    }
    RulesetCompiler compiler(example.policy, example.inventory);
    auto hv1 = *compiler.compile("hv1");
    const auto* macs = hv1.find_set("port_macs");
    REQUIRE(macs != nullptr);
    CHECK(macs->key == std::vector<KeyType>{KeyType::Ifname, KeyType::EtherAddr});
    CHECK(contains_element(*macs, "\"vdi001\" . 52:54:00:01:00:01"));
    CHECK_FALSE(contains_element(*macs, "\"vdi001\" . 52:54:00:01:00:03"));  // vdi-003's MAC
    const bool vdi2_has_mac = std::any_of(example.inventory.workloads.begin(), example.inventory.workloads.end(),
                                          [](const auto& w) { return w.id == "vdi-002" && !w.mac.empty(); });
    CHECK(contains_element(*hv1.find_set("mac_guarded_ports"), "\"vdi002\"") == vdi2_has_mac);
    CHECK(contains_element(*macs, "\"vdi002\" . 52:54:00:01:00:02") == vdi2_has_mac);
    // Its address check stays either way.
    CHECK(contains_element(*hv1.find_set("guarded_ports"), "\"vdi002\""));
    const auto* chain = hv1.find_chain("spoof_guard_mac");
    REQUIRE(chain != nullptr);
    REQUIRE(chain->rules.size() == 2);
    CHECK(render_rule(chain->rules[0]) == "iifname . ether saddr @port_macs return");
    CHECK(render_rule(chain->rules[1]) == "counter log prefix \"bh:enf:out:spoof:q\" group 10 drop");
    // The interchange form keeps the MAC key (the enforcer loads it), and a MAC written in
    // capitals or with dashes reads back as the same element.
    auto back = ruleset_from_json(to_json(hv1));
    REQUIRE(back);
    CHECK(ruleset_hash(*back) == ruleset_hash(hv1));
    auto document = to_json(hv1);
    for (auto& set : document["sets"]) {
        if (set["name"] == "port_macs") {
            set["elements"][0]["key"][1] = "52-54-00-01-00-01";
            CHECK(set["key"] == nlohmann::json::array({"ifname", "ether_addr"}));
        }
    }
    auto spelled = ruleset_from_json(document);
    REQUIRE(spelled);
    CHECK(contains_element(*spelled->find_set("port_macs"), "\"vdi001\" . 52:54:00:01:00:01"));
    for (auto& set : document["sets"]) {
        if (set["name"] == "port_macs") {
            set["elements"][0]["key"][1] = "52:54:00:01:00";
        }
    }
    auto bad = ruleset_from_json(document);
    REQUIRE_FALSE(bad);
    CHECK(bad.error().find("port_macs") != std::string::npos);
    CHECK(bad.error().find("not a MAC address") != std::string::npos);
}

namespace {

// The host-mode example in enforce mode with automatic quarantine on and two tripwire rules
// towards the web server: SSH from the load balancers (addresses the inventory does not
// know) and from the database (db-01, critical: spared by the guardrails).
Example host_tripwire_example() {
    auto example = load_example("host-mode");
    example.policy.defaults.mode = policy::Mode::Enforce;
    example.policy.response.auto_quarantine = policy::AutoQuarantineMode::On;
    for (const auto* from : {"load-balancers", "database"}) {
        policy::Rule trap;
        trap.name = std::string("no-ssh-from-") + from;
        trap.action = policy::RuleAction::Deny;
        trap.from = {from};
        trap.to = {"app-servers"};
        trap.services = {"ssh"};
        trap.tripwire = true;
        example.policy.rules.insert(example.policy.rules.begin(), trap);
    }
    return example;
}

}  // namespace

TEST_CASE("compiler: a host-mode tripwire blocks the sender's address on the packet") {
    auto example = host_tripwire_example();
    RulesetCompiler compiler(example.policy, example.inventory);
    auto web = compiler.compile("web-01");
    REQUIRE(web);
    const auto web_class = compiler.class_of("web-01");
    for (const auto* name : {"blocked_sources4", "blocked_sources6"}) {
        const auto* blocked = web->find_set(name);
        REQUIRE(blocked != nullptr);
        CHECK(blocked->dynamic);
        CHECK(blocked->elements->empty());
    }
    // The armed server's interface enters its class's inbound tripwires from input.
    CHECK(contains_element(*web->find_set("host_tripwires"), "\"eth0\" : jump " + web_class + "_in_tripwire"));
    const auto* input = web->find_chain("input");
    REQUIRE(input != nullptr);
    // A blocked sender is stopped right after neighbour discovery, established traffic included.
    CHECK(render_rule(input->rules[1]) == "iifname @host_interfaces ip saddr @blocked_sources4 jump blocked_source");
    CHECK(render_rule(input->rules[2]) == "iifname @host_interfaces ip6 saddr @blocked_sources6 jump blocked_source");
    CHECK(contains_element(*web->find_set("host_interfaces"), "\"eth0\""));
    // The tripwires come just before the server's class chain (verdict-map dispatches).
    std::vector<std::string> rendered;
    for (const auto& r : input->rules) {
        rendered.push_back(render_rule(r));
    }
    const auto trip = std::find(rendered.begin(), rendered.end(), "iifname vmap @host_tripwires");
    const auto ingress = std::find(rendered.begin(), rendered.end(), "iifname vmap @host_ingress");
    REQUIRE(trip != rendered.end());
    CHECK(trip + 1 == ingress);
    const auto* chain = web->find_chain(web_class + "_in_tripwire");
    REQUIRE(chain != nullptr);
    // Spared senders (critical db-01) return first and meet the ordinary deny rule.
    CHECK(render_rule(chain->rules[0]) == "ip saddr @tripwire_spared4 return");
    CHECK(render_rule(chain->rules[1]) == "ip6 saddr @tripwire_spared6 return");
    CHECK(contains_element(*web->find_set("tripwire_spared4"), "192.168.30.5"));
    CHECK_FALSE(contains_element(*web->find_set("tripwire_spared4"), "192.168.10.1"));
    const auto v4 = index_of_rule(*chain, web_class + "_in_tripwire4");
    REQUIRE(v4 < chain->rules.size());
    CHECK(render_rule(chain->rules[v4]) ==
          "ip saddr . meta l4proto . th dport @" + web_class + "_in_tripwire4 add @blocked_sources4 { ip saddr } "
          "counter log prefix \"bh:enf:in:tripwire:" + web_class + "\" group 10 drop");
    const auto v6 = index_of_rule(*chain, web_class + "_in_tripwire6");
    REQUIRE(v6 < chain->rules.size());
    CHECK(chain->rules[v6].update == SetUpdate{{Field::Ip6Saddr}, "blocked_sources6"});
    CHECK(contains_element(*web->find_set(web_class + "_in_tripwire4"), "192.168.10.0/28 . 6 . 22"));
    // The database segment is shared (inventory membership): its own tripwire lookup, and
    // still a deny rule for the senders the tripwire spares.
    const auto* db_trip = web->find_set(web_class + "_in_tripwire_seg_database");
    REQUIRE(db_trip != nullptr);
    CHECK(contains_element(*db_trip, "6 . 22"));
    CHECK(index_of_rule(*chain, web_class + "_in_tripwire_seg_database") < chain->rules.size());
    CHECK(contains_element(*web->find_set(web_class + "_in_deny_seg_database"), "6 . 22"));
    const auto* blocked = web->find_chain("blocked_source");
    REQUIRE(blocked != nullptr);
    CHECK(render_rule(blocked->rules.back()) == "counter log prefix \"bh:enf:in:quarantine:q\" group 10 drop");
    CHECK(unresolved_reference(*web) == std::nullopt);
    auto back = ruleset_from_json(to_json(*web));
    REQUIRE(back);
    CHECK(ruleset_hash(*back) == ruleset_hash(*web));
    CHECK(compiler.enforcers_blocking_quarantined() == std::vector<std::string>{"web-01"});
}

TEST_CASE("compiler: a host-mode server blocks quarantined workloads; its guardrails") {
    auto example = host_tripwire_example();
    SUBCASE("quarantined senders are blocked (how the controller holds and releases them)") {
        RulesetCompiler compiler(example.policy, example.inventory);
        auto web = compiler.compile("web-01", {"db-01"});
        REQUIRE(web);
        CHECK(contains_element(*web->find_set("blocked_sources4"), "192.168.30.5"));
        // Its own workloads are quarantined by their interfaces, never blocked as senders.
        auto self = compiler.compile("web-01", {"web-01"});
        CHECK(self->find_set("blocked_sources4")->elements->empty());
        CHECK(contains_element(*self->find_set("quarantined_host"), "\"eth0\""));
    }
    SUBCASE("monitor mode arms nothing") {
        example.policy.defaults.mode = policy::Mode::Monitor;
        RulesetCompiler compiler(example.policy, example.inventory);
        CHECK(compiler.compile("web-01")->find_set("host_tripwires")->elements->empty());
    }
    SUBCASE("dry-run arms nothing") {
        example.policy.response.auto_quarantine = policy::AutoQuarantineMode::DryRun;
        RulesetCompiler compiler(example.policy, example.inventory);
        CHECK(compiler.compile("web-01")->find_set("host_tripwires")->elements->empty());
    }
    SUBCASE("a critical server still contains its senders") {
        for (auto& w : example.inventory.workloads) {
            w.critical = true;
        }
        RulesetCompiler compiler(example.policy, example.inventory);
        CHECK(compiler.compile("web-01")->find_set("host_tripwires")->elements->size() == 1);
    }
    SUBCASE("without tripwires nothing is built") {
        auto plain = load_example("host-mode");
        RulesetCompiler compiler(plain.policy, plain.inventory);
        auto web = compiler.compile("web-01", {"db-01"});
        CHECK(web->find_set("blocked_sources4") == nullptr);
        CHECK(web->find_chain("blocked_source") == nullptr);
        CHECK(compiler.enforcers_blocking_quarantined().empty());
    }
}
