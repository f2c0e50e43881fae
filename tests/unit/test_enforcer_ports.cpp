// Port discovery's pure parts: name patterns, identification of ports by MAC (libvirt,
// the port's own MAC, the tap convention, neighbours), the kernel copy of a ruleset that
// binds ports by MAC, libvirt's live XML, and the inventory/compiler side of MAC binding.
#include "enforcer/daemon/enforcer_config.hpp"
#include "enforcer/ports/libvirt_domains.hpp"
#include "enforcer/ports/port_discovery.hpp"
#include "policies/mac_port.hpp"
#include "policies/policy_reader.hpp"
#include "policies/ruleset_compiler.hpp"
#include "policies/ruleset_diff.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>

using namespace bulkhead;
using namespace bulkhead::enforcer::ports;
using nlohmann::json;

namespace {

// The vdi-pool example with vdi-002 bound by MAC instead of by interface name.
json mac_bound_inventory() {
    auto inventory = json::parse(test::read_source_file("examples/vdi-pool/inventory.json"));
    inventory["workloads"][1]["attachment"].erase("interface");
    return inventory;
}

ruleset::Ruleset compile_hv1(const json& inventory_doc) {
    auto policy = policy::parse_policy(test::read_source_file("examples/vdi-pool/policy.json"));
    auto inventory = policy::parse_inventory(inventory_doc.dump());
    REQUIRE(policy);
    REQUIRE(inventory);
    ruleset::RulesetCompiler compiler(*policy, *inventory);
    auto compiled = compiler.compile("hv1");
    REQUIRE(compiled);
    return *compiled;
}

bool set_has(const ruleset::Ruleset& r, std::string_view set, std::string_view interface) {
    const auto* s = r.find_set(set);
    REQUIRE(s != nullptr);
    return std::any_of(s->elements->begin(), s->elements->end(), [&](const ruleset::Element& e) {
        return std::any_of(e.key.begin(), e.key.end(), [&](const ruleset::KeyPart& k) {
            const auto* name = std::get_if<std::string>(&k);
            return name != nullptr && *name == interface;
        });
    });
}

PortTable table_with(std::vector<Link> links) {
    PortTable table(*PortPatterns::parse(PortPatterns::defaults()));
    for (const auto& l : links) {
        table.link_up(l);
    }
    return table;
}

}  // namespace

TEST_CASE("ports: glob patterns match VM port names and nothing else") {
    CHECK(glob_match("vnet*", "vnet0"));
    CHECK(glob_match("vnet*", "vnet"));
    CHECK(glob_match("tap*i?", "tap101i0"));
    CHECK(glob_match("*eth*", "veth12"));
    CHECK_FALSE(glob_match("vnet*", "eth0"));
    CHECK_FALSE(glob_match("tap?", "tap10"));
    CHECK_FALSE(glob_match("", "x"));
    CHECK(glob_match("a*b*c*d", "aXbYYcZZZd"));
    CHECK_FALSE(glob_match("a*b*c*d", "aXbYYcZZZ"));

    auto patterns = PortPatterns::parse(PortPatterns::defaults());
    REQUIRE(patterns);
    CHECK(patterns->matches("vnet17"));
    CHECK(patterns->matches("tap3f2a9c1e-0b"));
    CHECK_FALSE(patterns->matches("eth0"));
    CHECK_FALSE(patterns->matches("virbr0"));

    SUBCASE("bad patterns are refused with the pattern named") {
        for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
                 {""}, {"*"}, {"**"}, {"a/b"}, {"vnet:*"}, {"tap *"}, {"0123456789abcdef"}}) {
            auto parsed = PortPatterns::parse(bad);
            CHECK_FALSE(parsed);
            if (!parsed) {
                CHECK(parsed.error().find("port pattern 0") != std::string::npos);
            }
        }
    }
}

TEST_CASE("ports: MAC stand-ins round-trip and are never interface names") {
    CHECK(policy::mac_port_name("52:54:00:12:34:56") == "m:525400123456");
    CHECK(policy::mac_port_name("52:54:00:12:34:56").size() <= 15);
    CHECK(policy::mac_of_port_name("m:525400123456") == "52:54:00:12:34:56");
    CHECK_FALSE(policy::mac_of_port_name("vnet0"));
    CHECK_FALSE(policy::mac_of_port_name("m:52540012345"));
    CHECK_FALSE(policy::mac_of_port_name("m:52540012345G"));
    CHECK_FALSE(policy::mac_of_port_name("m:52540012345A"));  // stand-ins are lower case
    CHECK(format_mac(std::array<std::uint8_t, 6>{0xfe, 0x54, 0, 1, 0, 2}.data(), 6) == "fe:54:00:01:00:02");
    CHECK_FALSE(format_mac(std::array<std::uint8_t, 4>{1, 2, 3, 4}.data(), 4));
}

TEST_CASE("inventory: a port-mode workload may give a mac instead of an interface") {
    auto compiled = compile_hv1(mac_bound_inventory());
    const auto stand_in = policy::mac_port_name("52:54:00:01:00:02");
    CHECK(set_has(compiled, "egress_ports", stand_in));
    CHECK(set_has(compiled, "port_sources4", stand_in));
    CHECK(set_has(compiled, "egress_ports", "vdi001"));
    auto port = std::find_if(compiled.ports.begin(), compiled.ports.end(),
                             [](const auto& p) { return p.workload == "vdi-002"; });
    REQUIRE(port != compiled.ports.end());
    CHECK(port->interface == stand_in);
    // The controller's ruleset survives its own interchange format (what the channel carries).
    auto round_trip = ruleset::ruleset_from_json(ruleset::to_json(compiled));
    REQUIRE(round_trip);
    CHECK(ruleset::ruleset_hash(*round_trip) == ruleset::ruleset_hash(compiled));

    SUBCASE("neither an interface nor a mac is an error at the attachment") {
        auto inventory = mac_bound_inventory();
        inventory["workloads"][1].erase("mac");
        auto parsed = policy::parse_inventory(inventory.dump());
        REQUIRE_FALSE(parsed);
        CHECK(parsed.error().front().pointer == "/workloads/1/attachment");
        CHECK(parsed.error().front().code == policy::DiagnosticCode::MissingField);
    }
    SUBCASE("a bad mac is reported once, at the mac") {
        auto inventory = mac_bound_inventory();
        inventory["workloads"][1]["mac"] = "52:54:00:01:00";
        auto parsed = policy::parse_inventory(inventory.dump());
        REQUIRE_FALSE(parsed);
        REQUIRE(parsed.error().size() == 1);
        CHECK(parsed.error().front().pointer == "/workloads/1/mac");
    }
}

TEST_CASE("ports: a port is identified by libvirt, its own MAC, the tap convention or a neighbour") {
    const auto canonical = compile_hv1(mac_bound_inventory());
    SUBCASE("its own MAC (a veth in the lab)") {
        auto ports = table_with({{7, "vnet7", "52:54:00:01:00:02"}}).identify(canonical);
        REQUIRE(ports.size() == 1);
        CHECK(ports[0].workload == "vdi-002");
        CHECK(ports[0].identified_by == "link");
    }
    SUBCASE("libvirt's tap: fe: and the guest's other five octets") {
        auto ports = table_with({{7, "vnet7", "fe:54:00:01:00:02"}}).identify(canonical);
        REQUIRE(ports.size() == 1);
        CHECK(ports[0].workload == "vdi-002");
        CHECK(ports[0].guest_mac == "52:54:00:01:00:02");
        CHECK(ports[0].identified_by == "tap-convention");
    }
    SUBCASE("libvirt's live XML names the tap") {
        auto table = table_with({{9, "vnet9", "fe:00:00:00:00:09"}});
        table.set_domains({DomainNic{"desk-2", "uuid-2", {{"pool", "sales"}}, "52:54:00:01:00:02", "vnet9"}});
        auto ports = table.identify(canonical);
        REQUIRE(ports.size() == 1);
        CHECK(ports[0].workload == "vdi-002");
        CHECK(ports[0].identified_by == "libvirt");
        REQUIRE(ports[0].domain != nullptr);
        CHECK(ports[0].domain->domain == "desk-2");
    }
    SUBCASE("a neighbour entry behind the port") {
        auto table = table_with({{7, "tap7i0", "aa:bb:cc:00:00:07"}});
        CHECK(table.neighbour(7, *policy::parse_ip_address("10.1.0.2"), "52:54:00:01:00:02"));
        CHECK_FALSE(table.neighbour(7, *policy::parse_ip_address("10.1.0.2"), "52:54:00:01:00:02"));
        auto ports = table.identify(canonical);
        REQUIRE(ports.size() == 1);
        CHECK(ports[0].workload == "vdi-002");
        CHECK(ports[0].identified_by == "neighbour");
        CHECK(ports[0].addresses.size() == 1);
    }
    SUBCASE("an unknown MAC, and links that are not ports") {
        auto table = table_with({{3, "vnet3", "52:54:00:99:99:99"}, {1, "eth0", "52:54:00:01:00:02"}});
        auto ports = table.identify(canonical);
        REQUIRE(ports.size() == 1);  // eth0 matches no pattern
        CHECK(ports[0].interface == "vnet3");
        CHECK(ports[0].workload.empty());
    }
    SUBCASE("two fe: MACs ending alike identify nobody by the convention") {
        auto inventory = mac_bound_inventory();
        inventory["workloads"][2]["attachment"].erase("interface");
        inventory["workloads"][2]["mac"] = "02:54:00:01:00:02";
        const auto both = compile_hv1(inventory);
        auto ports = table_with({{7, "vnet7", "fe:54:00:01:00:02"}}).identify(both);
        CHECK(ports[0].workload.empty());
    }
    SUBCASE("during a refresh the newest port of a NIC wins") {
        auto ports = table_with({{7, "vnet7", "52:54:00:01:00:02"}, {12, "vnet12", "52:54:00:01:00:02"}})
                         .identify(canonical);
        REQUIRE(ports.size() == 2);
        CHECK(ports[0].workload.empty());  // vnet7, the older
        CHECK(ports[1].workload == "vdi-002");
    }
}

TEST_CASE("ports: the kernel copy binds the stand-in to the current port, and a refresh is an element diff") {
    const auto canonical = compile_hv1(mac_bound_inventory());
    const auto stand_in = policy::mac_port_name("52:54:00:01:00:02");
    const LocalizeOptions options{true, UnknownPortMode::Isolate, 10};

    auto before = localize(canonical, table_with({{7, "vnet7", "52:54:00:01:00:02"}}).identify(canonical), options);
    CHECK(set_has(before, "egress_ports", "vnet7"));
    CHECK(set_has(before, "ingress_ports", "vnet7"));
    CHECK(set_has(before, "port_sources4", "vnet7"));
    CHECK_FALSE(set_has(before, "egress_ports", stand_in));
    CHECK(set_has(before, "egress_ports", "vdi001"));  // ports named outright are untouched
    auto bound = std::find_if(before.ports.begin(), before.ports.end(),
                              [](const auto& p) { return p.workload == "vdi-002"; });
    REQUIRE(bound != before.ports.end());
    CHECK(bound->interface == "vnet7");
    CHECK(ruleset::unresolved_reference(before) == std::nullopt);

    auto after = localize(canonical, table_with({{12, "vnet12", "52:54:00:01:00:02"}}).identify(canonical), options);
    CHECK(set_has(after, "egress_ports", "vnet12"));
    CHECK_FALSE(set_has(after, "egress_ports", "vnet7"));
    const auto diff = ruleset::diff_rulesets(before, after);
    CHECK_FALSE(diff.full_replace);
    CHECK(diff.elements_added() > 0);
    CHECK(diff.elements_removed() == diff.elements_added());

    SUBCASE("no port: the workload's elements are left out, nothing else") {
        auto none = localize(canonical, {}, options);
        CHECK_FALSE(set_has(none, "egress_ports", stand_in));
        CHECK(set_has(none, "egress_ports", "vdi001"));
        CHECK(std::none_of(none.ports.begin(), none.ports.end(), [](const auto& p) { return p.workload == "vdi-002"; }));
        CHECK_FALSE(ruleset::diff_rulesets(none, before).full_replace);
    }
    SUBCASE("the controller's copy and its hash are untouched") {
        CHECK(set_has(canonical, "egress_ports", stand_in));
    }
}

TEST_CASE("ports: a quarantine by workload follows the desktop to its current port") {
    auto policy = policy::parse_policy(test::read_source_file("examples/vdi-pool/policy.json"));
    auto inventory = policy::parse_inventory(mac_bound_inventory().dump());
    REQUIRE(policy);
    REQUIRE(inventory);
    ruleset::RulesetCompiler compiler(*policy, *inventory);
    auto quarantined = compiler.compile("hv1", {"vdi-002"});
    REQUIRE(quarantined);
    CHECK(set_has(*quarantined, "quarantined_ports", policy::mac_port_name("52:54:00:01:00:02")));
    const LocalizeOptions options{true, UnknownPortMode::Isolate, 10};
    for (const auto& [index, name] : std::vector<std::pair<int, std::string>>{{7, "vnet7"}, {12, "vnet12"}}) {
        auto kernel = localize(*quarantined,
                               table_with({{index, name, "fe:54:00:01:00:02"}}).identify(*quarantined), options);
        CHECK(set_has(kernel, "quarantined_ports", name));
    }
}

TEST_CASE("ports: unidentified ports are isolated, monitored or allowed") {
    const auto canonical = compile_hv1(mac_bound_inventory());
    const auto ports = table_with({{3, "vnet3", "52:54:00:99:99:99"}}).identify(canonical);
    auto head_rules = [](const ruleset::Ruleset& r, std::string_view chain) {
        const auto* c = r.find_chain(chain);
        REQUIRE(c != nullptr);
        return c->rules;
    };
    SUBCASE("isolate (the default): dropped both ways at the head of the base chains, logged") {
        auto kernel = localize(canonical, ports, {true, UnknownPortMode::Isolate, 10});
        CHECK(set_has(kernel, "unidentified_ports", "vnet3"));
        auto forward = head_rules(kernel, "forward");
        REQUIRE(forward.size() >= 2);
        CHECK(forward[0].verdict.kind == ruleset::VerdictKind::Drop);
        REQUIRE(forward[0].log);
        CHECK(forward[0].log->prefix == "bh:enf:out:unidentified:u");
        CHECK(forward[1].log->prefix == "bh:enf:in:unidentified:u");
        CHECK(ruleset::parse_log_prefix(forward[0].log->prefix));
        CHECK(head_rules(kernel, "input")[0].log->prefix == "bh:enf:out:unidentified:u");
        CHECK(head_rules(kernel, "output")[0].log->prefix == "bh:enf:in:unidentified:u");
        CHECK(ruleset::unresolved_reference(kernel) == std::nullopt);
        // Once identified it leaves the set: an element change, the rules stay.
        auto later = localize(canonical, {}, {true, UnknownPortMode::Isolate, 10});
        CHECK_FALSE(set_has(later, "unidentified_ports", "vnet3"));
        CHECK_FALSE(ruleset::diff_rulesets(kernel, later).full_replace);
    }
    SUBCASE("monitor: logged as would-drop, no verdict") {
        auto kernel = localize(canonical, ports, {true, UnknownPortMode::Monitor, 10});
        auto forward = head_rules(kernel, "forward");
        CHECK(forward[0].verdict.kind == ruleset::VerdictKind::None);
        CHECK(forward[0].log->prefix == "bh:mon:out:unidentified:u");
    }
    SUBCASE("allow: nothing added") {
        auto kernel = localize(canonical, ports, {true, UnknownPortMode::Allow, 10});
        CHECK(kernel.find_set("unidentified_ports") == nullptr);
        CHECK(head_rules(kernel, "forward") == head_rules(canonical, "forward"));
    }
    SUBCASE("discovery off: the ruleset is the controller's") {
        auto kernel = localize(compile_hv1(json::parse(test::read_source_file("examples/vdi-pool/inventory.json"))),
                               ports, {false, UnknownPortMode::Isolate, 10});
        CHECK(kernel.find_set("unidentified_ports") == nullptr);
    }
    CHECK(unknown_port_mode_from_string("isolate") == UnknownPortMode::Isolate);
    CHECK(unknown_port_mode_from_string("monitor") == UnknownPortMode::Monitor);
    CHECK(unknown_port_mode_from_string("allow") == UnknownPortMode::Allow);
    CHECK_FALSE(unknown_port_mode_from_string("Isolate"));
}

TEST_CASE("libvirt: live XML gives name, UUID, labels and each NIC's MAC and tap") {
    const std::string live = R"(<domstatus state='running' reason='booted' pid='4242'>
  <monitor path='/var/lib/libvirt/qemu/domain-3-desk-7/monitor.sock' type='unix'/>
  <domain type='kvm' id='3'>
    <name>desk-7</name>
    <uuid>3f2a9c1e-0b7d-4e55-9a1c-0d2f4b6e8a10</uuid>
    <metadata>
      <bulkhead:labels xmlns:bulkhead="urn:bulkhead:libvirt:1">
        <bulkhead:label name="role">vdi</bulkhead:label>
        <bulkhead:label name="pool"> sales </bulkhead:label>
      </bulkhead:labels>
      <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1"><nova:name>x</nova:name></nova:instance>
    </metadata>
    <devices>
      <disk type='file' device='disk'/>
      <interface type='ethernet'>
        <mac address='52:54:00:AB:00:07'/>
        <target dev='vnet17' managed='no'/>
        <model type='virtio'/>
      </interface>
      <interface type='network'>
        <mac address='52:54:00:ab:00:08'/>
      </interface>
    </devices>
  </domain>
</domstatus>)";
    auto nics = parse_domain_xml(live);
    REQUIRE(nics);
    REQUIRE(nics->size() == 2);
    CHECK((*nics)[0].domain == "desk-7");
    CHECK((*nics)[0].uuid == "3f2a9c1e-0b7d-4e55-9a1c-0d2f4b6e8a10");
    CHECK((*nics)[0].mac == "52:54:00:ab:00:07");
    CHECK((*nics)[0].target == "vnet17");
    CHECK((*nics)[0].labels == std::map<std::string, std::string>{{"pool", "sales"}, {"role", "vdi"}});
    CHECK((*nics)[1].target.empty());

    SUBCASE("a bare <domain> (libvirt's inactive XML) works too") {
        auto bare = parse_domain_xml("<domain><name>d</name><devices><interface><mac address='52:54:00:00:00:01'/>"
                                     "<target dev='tap1i0'/></interface></devices></domain>");
        REQUIRE(bare);
        CHECK(bare->at(0).target == "tap1i0");
    }
    SUBCASE("bad input is refused with a reason") {
        struct Bad {
            std::string text;
            std::string reason;
        };
        for (const auto& bad : std::vector<Bad>{
                 {"", "not well-formed"},
                 {"<domain><name>x</name>", "not well-formed"},
                 {"<network><name>default</name></network>", "no <domain>"},
                 {"<domstatus><monitor/></domstatus>", "no <domain>"},
                 {"<domain><uuid>u</uuid></domain>", "no <name>"},
                 {"<domain><name>x</name><devices><interface><mac address='52:54:00:zz:00:01'/></interface>"
                  "</devices></domain>",
                  "interface 1"},
                 {"<domain><name>x</name><metadata><b:labels xmlns:b='urn:bulkhead:libvirt:1'><b:label>v</b:label>"
                  "</b:labels></metadata></domain>",
                  "without a name"},
                 {"<!DOCTYPE d [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><domain><name>&e;</name></domain>",
                  "DOCTYPE"},
             }) {
            CAPTURE(bad.text);
            auto parsed = parse_domain_xml(bad.text);
            REQUIRE_FALSE(parsed);
            CHECK(parsed.error().find(bad.reason) != std::string::npos);
        }
    }
}

TEST_CASE("enforcer config: port discovery members are checked and named") {
    enforcer::EnforcerSettings settings;
    auto ok = enforcer::apply_enforcer_config(
        json{{"port_discovery", true}, {"port_patterns", {"vnet*", "tap*"}}, {"unknown_ports", "monitor"},
             {"libvirt_dir", "/run/libvirt/qemu"}},
        "enforcer.json", {}, settings);
    REQUIRE(ok);
    CHECK(settings.daemon.port_discovery);
    CHECK(settings.daemon.port_patterns == std::vector<std::string>{"vnet*", "tap*"});
    CHECK(settings.daemon.unknown_ports == "monitor");

    auto error_of = [](const json& document) {
        enforcer::EnforcerSettings s;
        auto r = enforcer::apply_enforcer_config(document, "enforcer.json", {}, s);
        REQUIRE_FALSE(r);
        return r.error();
    };
    CHECK(error_of({{"port_patterns", {"vnet*", "*"}}}).starts_with("enforcer.json: /port_patterns/1: "));
    CHECK(error_of({{"port_patterns", {"vnet*", 3}}}).starts_with("enforcer.json: /port_patterns/1: "));
    CHECK(error_of({{"port_patterns", json::array()}}).starts_with("enforcer.json: /port_patterns: "));
    CHECK(error_of({{"unknown_ports", "drop"}}).starts_with("enforcer.json: /unknown_ports: "));
    CHECK(error_of({{"port_discovery", "yes"}}).starts_with("enforcer.json: /port_discovery: "));
}
