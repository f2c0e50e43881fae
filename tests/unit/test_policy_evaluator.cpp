// PolicyEvaluator and what_if over the example policies: every reason, monitor mode,
// quarantine grants, IPv4/IPv6, CIDR-only segments, deny beats allow, unknown addresses.
// test_policy_evaluator_crosscheck.cpp checks the same evaluator against the compiled
// rulesets for thousands of attempts.
#include "policies/policy_evaluator.hpp"
#include "policies/policy_reader.hpp"
#include "policies/ruleset_compiler.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>

#include <algorithm>

using namespace bulkhead;
using namespace bulkhead::policy;

namespace {

struct Example {
    Policy policy;
    Inventory inventory;
};

Example load(const std::string& name) {
    auto p = parse_policy(test::read_source_file("examples/" + name + "/policy.json"));
    auto i = parse_inventory(test::read_source_file("examples/" + name + "/inventory.json"));
    REQUIRE(p);
    REQUIRE(i);
    REQUIRE(cross_check(*p, *i).empty());
    return {*p, *i};
}

IpAddress ip(const std::string& text) {
    auto a = parse_ip_address(text);
    REQUIRE(a);
    return *a;
}

Endpoint wl(const std::string& id, const std::string& address) { return {ip(address), id, {}}; }
Endpoint addr(const std::string& address) { return {ip(address), {}, {}}; }
Endpoint host(const std::string& enforcer, const std::string& address) { return {ip(address), {}, enforcer}; }

constexpr std::uint8_t tcp = 6, udp = 17, icmp = 1, icmpv6 = 58, sctp = 132;

Decision eval(const PolicyEvaluator& e, Endpoint s, Endpoint d, std::uint8_t proto, std::uint16_t port,
              const std::set<std::string>& quarantined = {}) {
    auto decision = e.evaluate(Attempt{std::move(s), std::move(d), proto, port}, quarantined);
    REQUIRE(decision);
    return *decision;
}

using Names = std::vector<std::string>;

}  // namespace

TEST_CASE("evaluator: class names are the compiler's") {
    for (const auto* name : {"vdi-pool", "segmentation", "host-mode", "lab"}) {
        CAPTURE(name);
        auto ex = load(name);
        const PolicyEvaluator evaluator(ex.policy, ex.inventory);
        const ruleset::RulesetCompiler compiler(ex.policy, ex.inventory);
        for (const auto& w : ex.inventory.workloads) {
            CAPTURE(w.id);
            CHECK(evaluator.class_of(w.id) == compiler.class_of(w.id));
        }
    }
}

TEST_CASE("evaluator: vdi-pool allow, deny, default over IPv4 and IPv6") {
    auto ex = load("vdi-pool");
    const PolicyEvaluator e(ex.policy, ex.inventory);
    const auto vdi = e.class_of("vdi-001");
    const auto admin = e.class_of("admin-01");

    SUBCASE("allow to an unmanaged file server: one check, on the VDI's egress") {
        auto d = eval(e, wl("vdi-001", "10.1.0.1"), wl("fs-01", "10.0.0.30"), tcp, 445);
        CHECK(d.verdict == Verdict::Allow);
        CHECK(d.reason == Reason::Allow);
        CHECK(d.direction == Direction::Out);
        CHECK(d.rules == Names{"vdi-to-file-servers"});
        REQUIRE(d.checks.size() == 1);
        CHECK(d.checks[0].enforcer == "hv1");
        CHECK(d.checks[0].hook == ruleset::Hook::Forward);
        CHECK(d.checks[0].chain == vdi + "_out");
        CHECK(d.log_prefix == "bh:enf:out:allow:" + vdi);  // log_allowed is on
        CHECK(d.destination_workload == "fs-01");
    }
    SUBCASE("the same over IPv6") {
        auto d = eval(e, wl("vdi-001", "fd00:0:0:10::1"), wl("fs-01", "fd00:0:0:1::30"), tcp, 445);
        CHECK(d.verdict == Verdict::Allow);
        CHECK(d.rules == Names{"vdi-to-file-servers"});
    }
    SUBCASE("a port the rule does not name falls to the default") {
        auto d = eval(e, wl("vdi-001", "10.1.0.1"), wl("fs-01", "10.0.0.30"), tcp, 139);
        CHECK(d.verdict == Verdict::Drop);
        CHECK(d.reason == Reason::Default);
        CHECK(d.rules.empty());
        CHECK(d.log_prefix == "bh:enf:out:default:" + vdi);
    }
    SUBCASE("VDI to VDI on one hypervisor: the deny rule, enforced at egress before the ingress runs") {
        auto d = eval(e, wl("vdi-001", "10.1.0.1"), wl("vdi-002", "10.1.0.2"), tcp, 445);
        CHECK(d.verdict == Verdict::Drop);
        CHECK(d.reason == Reason::Deny);
        CHECK(d.direction == Direction::Out);
        CHECK(d.rules == Names{"no-vdi-to-vdi"});
        CHECK(d.checks.size() == 1);
        CHECK(d.log_prefix == "bh:enf:out:deny:" + vdi);
    }
    SUBCASE("VDI to VDI across hypervisors, IPv6") {
        auto d = eval(e, wl("vdi-001", "fd00:0:0:10::1"), wl("vdi-101", "fd00:0:0:11::1"), udp, 3389);
        CHECK(d.verdict == Verdict::Drop);
        CHECK(d.reason == Reason::Deny);
        CHECK(d.enforcer == "hv1");
    }
    SUBCASE("admin to VDI across hypervisors: egress on hv2 and ingress on hv1 both allow") {
        for (const auto& [from, to] : {std::pair{"10.1.1.100", "10.1.0.1"}, {"fd00:0:0:11::100", "fd00:0:0:10::1"}}) {
            auto d = eval(e, wl("admin-01", from), wl("vdi-001", to), tcp, 3389);
            CHECK(d.verdict == Verdict::Allow);
            CHECK(d.reason == Reason::Allow);
            CHECK(d.rules == Names{"admins-to-vdi"});
            REQUIRE(d.checks.size() == 2);
            CHECK(d.checks[0].enforcer == "hv2");
            CHECK(d.checks[0].chain == admin + "_out");
            CHECK(d.checks[1].enforcer == "hv1");
            CHECK(d.checks[1].chain == vdi + "_in");
            CHECK(d.checks[1].direction == Direction::In);
        }
    }
    SUBCASE("ICMP types by family") {
        CHECK(eval(e, wl("vdi-001", "10.1.0.1"), wl("fs-01", "10.0.0.30"), icmp, 8).verdict == Verdict::Allow);
        CHECK(eval(e, wl("vdi-001", "10.1.0.1"), wl("fs-01", "10.0.0.30"), icmp, 0).reason == Reason::Default);
        CHECK(eval(e, wl("vdi-001", "fd00:0:0:10::1"), wl("fs-01", "fd00:0:0:1::30"), icmpv6, 128).verdict ==
              Verdict::Allow);
        // An icmp entry matches IPv4 peers only, an icmpv6 entry IPv6 peers only.
        CHECK(eval(e, wl("vdi-001", "fd00:0:0:10::1"), wl("fs-01", "fd00:0:0:1::30"), icmp, 8).reason ==
              Reason::Default);
        CHECK(eval(e, wl("vdi-001", "10.1.0.1"), wl("fs-01", "10.0.0.30"), icmpv6, 128).reason ==
              Reason::Default);
    }
    SUBCASE("CIDR-only segments (proxy, dns, edr), both families") {
        auto d = eval(e, wl("vdi-002", "10.1.0.2"), addr("10.0.0.10"), tcp, 3128);
        CHECK(d.verdict == Verdict::Allow);
        CHECK(d.rules == Names{"vdi-to-proxy"});
        CHECK(eval(e, wl("vdi-002", "fd00:0:0:10::2"), addr("fd00:0:0:1::10"), tcp, 3128).rules ==
              Names{"vdi-to-proxy"});
        CHECK(eval(e, wl("vdi-002", "10.1.0.2"), addr("10.0.0.53"), udp, 53).rules == Names{"vdi-to-dns"});
        CHECK(eval(e, wl("vdi-002", "10.1.0.2"), addr("10.0.0.20"), tcp, 8444).rules == Names{"vdi-to-edr"});
        CHECK(eval(e, wl("vdi-002", "10.1.0.2"), addr("10.0.0.20"), tcp, 8445).reason == Reason::Default);
        // the next address is no longer in the /32
        CHECK(eval(e, wl("vdi-002", "10.1.0.2"), addr("10.0.0.11"), tcp, 3128).reason == Reason::Default);
    }
    SUBCASE("unknown addresses") {
        auto out = eval(e, wl("vdi-001", "10.1.0.1"), addr("192.0.2.7"), tcp, 443);
        CHECK(out.verdict == Verdict::Drop);
        CHECK(out.reason == Reason::Default);
        CHECK(out.destination_workload.empty());
        auto in = eval(e, addr("2001:db8::7"), wl("vdi-101", "fd00:0:0:11::1"), tcp, 3389);
        CHECK(in.verdict == Verdict::Drop);
        CHECK(in.direction == Direction::In);
        CHECK(in.enforcer == "hv2");
        CHECK(in.log_prefix == "bh:enf:in:default:" + vdi);
        auto neither = eval(e, addr("192.0.2.7"), addr("198.51.100.1"), tcp, 445);
        CHECK(neither.verdict == Verdict::Allow);
        CHECK(neither.reason == Reason::None);
        CHECK(neither.checks.empty());
    }
    SUBCASE("a workload given by address only is resolved") {
        auto d = eval(e, addr("10.1.0.1"), addr("10.1.0.2"), tcp, 445);
        CHECK(d.source_workload == "vdi-001");
        CHECK(d.destination_workload == "vdi-002");
        CHECK(d.reason == Reason::Deny);
        auto unknown = eval(e, wl("no-such-vdi", "10.1.0.1"), addr("10.0.0.30"), tcp, 445);
        CHECK(unknown.source_workload == "vdi-001");
        CHECK(unknown.notes.size() == 1);
    }
    SUBCASE("a workload talking to itself is never filtered") {
        auto d = eval(e, wl("vdi-001", "10.1.0.1"), wl("vdi-001", "10.1.0.1"), tcp, 445);
        CHECK(d.verdict == Verdict::Allow);
        CHECK(d.checks.empty());
    }
    SUBCASE("mixed families are refused") {
        auto d = e.evaluate(Attempt{addr("10.1.0.1"), addr("fd00::1"), tcp, 80});
        CHECK_FALSE(d);
    }
}

TEST_CASE("evaluator: VDI to its hypervisor and back") {
    auto ex = load("vdi-pool");
    const PolicyEvaluator e(ex.policy, ex.inventory);
    const auto vdi = e.class_of("vdi-001");
    auto to_host = eval(e, wl("vdi-001", "10.1.0.1"), host("hv1", "10.1.0.254"), tcp, 22);
    CHECK(to_host.verdict == Verdict::Drop);
    CHECK(to_host.reason == Reason::Default);
    REQUIRE(to_host.checks.size() == 1);
    CHECK(to_host.checks[0].hook == ruleset::Hook::Input);
    CHECK(to_host.log_prefix == "bh:enf:out:default:" + vdi);
    // IPv6 neighbour discovery to the hypervisor always passes, even from a quarantined VDI.
    for (const std::set<std::string>& q : {std::set<std::string>{}, std::set<std::string>{"vdi-001"}}) {
        auto nd = eval(e, wl("vdi-001", "fd00:0:0:10::1"), host("hv1", "fd00:0:0:10::fe"), icmpv6, 135, q);
        CHECK(nd.verdict == Verdict::Allow);
        CHECK(nd.reason == Reason::None);
        CHECK(nd.rules.empty());
        REQUIRE(nd.checks.size() == 1);
        CHECK(nd.checks[0].rules == Names{"neighbour-discovery"});
    }
    auto from_host = eval(e, host("hv1", "10.1.0.254"), wl("vdi-002", "10.1.0.2"), tcp, 3389);
    CHECK(from_host.verdict == Verdict::Drop);
    CHECK(from_host.direction == Direction::In);
    CHECK(from_host.checks.at(0).hook == ruleset::Hook::Output);
    // another hypervisor's stack is just an unmanaged peer for hv1
    auto other = eval(e, wl("vdi-001", "10.1.0.1"), host("hv2", "10.1.1.254"), tcp, 22);
    CHECK(other.checks.size() == 1);
    CHECK(other.checks[0].hook == ruleset::Hook::Forward);
}

TEST_CASE("evaluator: quarantine grants and isolation") {
    auto ex = load("vdi-pool");
    const PolicyEvaluator e(ex.policy, ex.inventory);
    const std::set<std::string> q{"vdi-001"};

    SUBCASE("allow: the quarantined VDI still reaches EDR and DNS, nothing else") {
        auto edr = eval(e, wl("vdi-001", "10.1.0.1"), addr("10.0.0.20"), tcp, 443, q);
        CHECK(edr.verdict == Verdict::Allow);
        CHECK(edr.reason == Reason::Quarantine);
        CHECK(edr.rules == Names{"quarantine.allow[0]"});
        CHECK(edr.checks.at(0).chain == "quarantine_out");
        auto dns = eval(e, wl("vdi-001", "fd00:0:0:10::1"), addr("fd00:0:0:1::53"), udp, 53, q);
        CHECK(dns.rules == Names{"quarantine.allow[1]"});
        auto fs = eval(e, wl("vdi-001", "10.1.0.1"), wl("fs-01", "10.0.0.30"), tcp, 445, q);
        CHECK(fs.verdict == Verdict::Drop);
        CHECK(fs.reason == Reason::Quarantine);
        CHECK(fs.rules.empty());
        CHECK(fs.log_prefix == "bh:enf:out:quarantine:q");
    }
    SUBCASE("allow_from: the admins' forensic RDP passes both the admin's class and the grant") {
        auto rdp = eval(e, wl("admin-01", "10.1.1.100"), wl("vdi-001", "10.1.0.1"), tcp, 3389, q);
        CHECK(rdp.verdict == Verdict::Allow);
        CHECK(rdp.reason == Reason::Allow);
        CHECK(rdp.rules == Names{"admins-to-vdi", "quarantine.allow_from[0]"});
        REQUIRE(rdp.checks.size() == 2);
        CHECK(rdp.checks[1].chain == "quarantine_in");
        auto ping = eval(e, wl("admin-01", "10.1.1.100"), wl("vdi-001", "10.1.0.1"), icmp, 8, q);
        CHECK(ping.verdict == Verdict::Drop);
        CHECK(ping.reason == Reason::Quarantine);
        CHECK(ping.direction == Direction::In);
        CHECK(ping.log_prefix == "bh:enf:in:quarantine:q");
    }
    SUBCASE("only the quarantined workload is cut off") {
        CHECK(eval(e, wl("vdi-002", "10.1.0.2"), wl("fs-01", "10.0.0.30"), tcp, 445, q).verdict == Verdict::Allow);
    }
}

TEST_CASE("evaluator: decoys and deny beats allow (segmentation)") {
    auto ex = load("segmentation");
    const PolicyEvaluator e(ex.policy, ex.inventory);
    const auto pc = e.class_of("pc-001");

    // The decoy is a tripwire and pc-001's tripwires are armed (auto quarantine on).
    auto decoy = eval(e, wl("pc-001", "10.20.1.1"), addr("10.20.0.66"), tcp, 445);
    CHECK(decoy.verdict == Verdict::Drop);
    CHECK(decoy.reason == Reason::Tripwire);
    CHECK(decoy.rules == Names{"decoy"});
    CHECK(decoy.log_prefix == "bh:enf:out:tripwire:" + pc);
    REQUIRE(!decoy.checks.empty());
    CHECK(decoy.checks[0].chain == pc + "_out_tripwire");
    // Admin terminals' tripwires are in dry-run: the same touch is an ordinary decoy drop.
    const auto adm = e.class_of("adm-001");
    auto admin_decoy = eval(e, wl("adm-001", "10.20.2.1"), addr("10.20.0.66"), tcp, 445);
    CHECK(admin_decoy.reason == Reason::Decoy);
    CHECK(admin_decoy.log_prefix == "bh:enf:out:decoy:" + adm);

    auto users_to_admins = eval(e, wl("pc-001", "10.20.1.1"), wl("adm-001", "10.20.2.1"), tcp, 445);
    CHECK(users_to_admins.reason == Reason::Deny);
    CHECK(users_to_admins.rules == Names{"never-users-to-admins"});

    SUBCASE("an allow rule overlapping a deny rule does not win") {
        Rule allow_all{"users-to-users", "", RuleAction::Allow, {"user-terminals"}, {"user-terminals"}, {"any"}, ""};
        ex.policy.rules.push_back(allow_all);
        const PolicyEvaluator overlapping(ex.policy, ex.inventory);
        auto smb = eval(overlapping, wl("pc-001", "10.20.1.1"), wl("pc-002", "10.20.1.2"), tcp, 445);
        CHECK(smb.verdict == Verdict::Drop);
        CHECK(smb.reason == Reason::Tripwire);  // no-peer-file-sharing is a tripwire rule
        CHECK(smb.rules == Names{"no-peer-file-sharing"});
        auto ssh = eval(overlapping, wl("pc-001", "10.20.1.1"), wl("pc-002", "10.20.1.2"), tcp, 22);
        CHECK(ssh.verdict == Verdict::Allow);
        CHECK(ssh.rules == Names{"users-to-users"});
        CHECK(ssh.checks.size() == 2);  // egress and ingress on floor-1's forward hook
    }
    SUBCASE("host-mode file server: the PC's egress and the server's input hook") {
        auto smb = eval(e, wl("pc-001", "10.20.1.1"), wl("fs-01", "10.20.0.30"), tcp, 445);
        CHECK(smb.verdict == Verdict::Allow);
        REQUIRE(smb.checks.size() == 2);
        CHECK(smb.checks[0].enforcer == "floor-1");
        CHECK(smb.checks[1].enforcer == "fs-01");
        CHECK(smb.checks[1].hook == ruleset::Hook::Input);
        CHECK(smb.rules == Names{"users-to-file-servers"});
        auto ssh = eval(e, wl("adm-001", "10.20.2.1"), wl("fs-01", "10.20.0.30"), tcp, 22);
        CHECK(ssh.rules == Names{"admins-manage-servers"});
        auto dc = eval(e, wl("dc-01", "10.20.0.10"), wl("fs-01", "10.20.0.30"), tcp, 445);
        CHECK(dc.verdict == Verdict::Drop);
        CHECK(dc.reason == Reason::Default);
        CHECK(dc.direction == Direction::In);
        CHECK(dc.enforcer == "fs-01");
        // the server's own outbound traffic passes its output hook
        auto out = eval(e, wl("fs-01", "10.20.0.30"), wl("dc-01", "10.20.0.10"), udp, 53);
        CHECK(out.checks.at(0).hook == ruleset::Hook::Output);
        CHECK(out.reason == Reason::Default);
    }
    SUBCASE("a decoy class (a honeypot VM) accepts nothing, whatever the rules say") {
        Segment honeypot{"honeypot", "", true, {}, ""};
        honeypot.selector.workloads = {"pc-002"};
        ex.policy.segments.push_back(honeypot);
        const PolicyEvaluator trap(ex.policy, ex.inventory);
        auto in = eval(trap, wl("dc-01", "10.20.0.10"), wl("pc-002", "10.20.1.2"), tcp, 3389);
        CHECK(in.verdict == Verdict::Drop);
        CHECK(in.reason == Reason::Decoy);
        CHECK(in.direction == Direction::In);
        CHECK(in.rules == Names{"honeypot"});
        CHECK(in.log_prefix == "bh:enf:in:decoy:" + trap.class_of("pc-002"));
        // a managed peer's own egress sees the decoy address first
        auto admin = eval(trap, wl("adm-001", "10.20.2.1"), wl("pc-002", "10.20.1.2"), tcp, 3389);
        CHECK(admin.reason == Reason::Decoy);
        CHECK(admin.direction == Direction::Out);
        // and its address is a decoy for everybody else
        auto out = eval(trap, wl("pc-001", "10.20.1.1"), wl("pc-002", "10.20.1.2"), tcp, 22);
        CHECK(out.reason == Reason::Decoy);
        CHECK(out.direction == Direction::Out);
    }
}

TEST_CASE("evaluator: monitor mode would-drop, quarantine still enforced (host-mode example)") {
    auto ex = load("host-mode");
    REQUIRE(ex.policy.defaults.mode == Mode::Monitor);
    const PolicyEvaluator e(ex.policy, ex.inventory);
    const auto web = e.class_of("web-01");
    CHECK(e.mode() == Mode::Monitor);

    auto lb = eval(e, addr("192.168.10.5"), wl("web-01", "192.168.20.11"), tcp, 443);
    CHECK(lb.verdict == Verdict::Allow);
    CHECK(lb.rules == Names{"lb-to-app"});
    CHECK(lb.checks.at(0).hook == ruleset::Hook::Input);
    auto lb6 = eval(e, addr("fd00:10::5"), wl("web-01", "fd00:20::11"), icmpv6, 128);
    CHECK(lb6.rules == Names{"lb-to-app"});

    auto would = eval(e, addr("192.168.10.5"), wl("web-01", "192.168.20.11"), tcp, 22);
    CHECK(would.verdict == Verdict::WouldDrop);
    CHECK(would.reason == Reason::Default);
    CHECK(would.direction == Direction::In);
    CHECK(would.log_prefix == "bh:mon:in:default:" + web);

    CHECK(eval(e, wl("web-01", "192.168.20.11"), wl("db-01", "192.168.30.5"), tcp, 5432).rules ==
          Names{"app-to-db"});
    CHECK(eval(e, wl("web-01", "192.168.20.11"), wl("db-01", "192.168.30.5"), tcp, 22).verdict ==
          Verdict::WouldDrop);

    const std::set<std::string> q{"web-01"};
    auto cut = eval(e, addr("192.168.10.5"), wl("web-01", "192.168.20.11"), tcp, 443, q);
    CHECK(cut.verdict == Verdict::Drop);
    CHECK(cut.reason == Reason::Quarantine);
    CHECK(cut.log_prefix == "bh:enf:in:quarantine:q");
    auto forensic = eval(e, addr("192.168.99.7"), wl("web-01", "192.168.20.11"), tcp, 22, q);
    CHECK(forensic.verdict == Verdict::Allow);
    CHECK(forensic.rules == Names{"quarantine.allow_from[0]"});
    // a host given as its enforcer's stack is its host-mode workload
    auto by_host = eval(e, addr("192.168.10.5"), host("web-01", "192.168.20.11"), tcp, 443);
    CHECK(by_host.destination_workload == "web-01");

    SUBCASE("both sides would drop: the egress decides, both are recorded") {
        auto pool = load("vdi-pool");
        pool.policy.defaults.mode = Mode::Monitor;
        const PolicyEvaluator m(pool.policy, pool.inventory);
        auto d = eval(m, wl("vdi-001", "10.1.0.1"), wl("vdi-002", "10.1.0.2"), tcp, 445);
        CHECK(d.verdict == Verdict::WouldDrop);
        CHECK(d.direction == Direction::Out);
        REQUIRE(d.checks.size() == 2);
        CHECK(d.checks[0].verdict == Verdict::WouldDrop);
        CHECK(d.checks[1].verdict == Verdict::WouldDrop);
        CHECK(d.checks[1].reason == Reason::Deny);
        CHECK(d.checks[1].log_prefix.starts_with("bh:mon:in:deny:"));
        // a quarantined destination still drops for real
        auto q2 = eval(m, wl("vdi-001", "10.1.0.1"), wl("vdi-002", "10.1.0.2"), tcp, 445, {"vdi-002"});
        CHECK(q2.verdict == Verdict::Drop);
        CHECK(q2.reason == Reason::Quarantine);
    }
}

TEST_CASE("evaluator: shared addresses across enforcers stay unresolved without an id") {
    auto ex = load("vdi-pool");
    auto twin = ex.inventory.workloads[3];  // vdi-101 on hv2
    twin.id = "vdi-twin";
    twin.mac.clear();
    twin.attachment->interfaces = {"vditwin"};
    twin.addresses = {ip("10.1.0.1")};  // vdi-001's address (on hv1), behind hv2: allowed
    ex.inventory.workloads.push_back(twin);
    const PolicyEvaluator e(ex.policy, ex.inventory);
    auto d = eval(e, addr("10.1.0.1"), addr("10.0.0.30"), tcp, 445);
    CHECK(d.source_workload.empty());
    CHECK(d.checks.empty());
    CHECK(d.notes.size() == 1);
    auto by_id = eval(e, wl("vdi-twin", "10.1.0.1"), addr("10.0.0.30"), tcp, 445);
    CHECK(by_id.checks.at(0).enforcer == "hv2");
}

TEST_CASE("evaluator: protocol names and numbers") {
    CHECK(parse_protocol_number("tcp") == 6);
    CHECK(parse_protocol_number("icmpv6") == 58);
    CHECK(parse_protocol_number("47") == 47);
    CHECK(parse_protocol_number("255") == 255);
    CHECK_FALSE(parse_protocol_number("256"));
    CHECK_FALSE(parse_protocol_number("047"));
    CHECK_FALSE(parse_protocol_number(""));
    CHECK_FALSE(parse_protocol_number("gre"));
    // a protocol no service names is matched only by "any"
    auto ex = load("segmentation");
    ex.policy.rules.push_back({"admins-any", "", RuleAction::Allow, {"admin-terminals"}, {"file-servers"}, {"any"}, ""});
    const PolicyEvaluator e(ex.policy, ex.inventory);
    CHECK(eval(e, wl("adm-001", "10.20.2.1"), wl("fs-01", "10.20.0.30"), 47, 0).rules == Names{"admins-any"});
    CHECK(eval(e, wl("pc-001", "10.20.1.1"), wl("fs-01", "10.20.0.30"), 47, 0).reason == Reason::Default);
    CHECK(eval(e, wl("pc-001", "10.20.1.1"), wl("fs-01", "10.20.0.30"), sctp, 445).reason == Reason::Default);
}

TEST_CASE("evaluator what-if: newly allowed and newly blocked, grouped by the draft's rule") {
    auto active = load("vdi-pool");
    auto draft = active;
    // the draft lets VDIs share files with each other and drops the proxy rule
    std::erase_if(draft.policy.rules, [](const Rule& r) {
        return r.name == "no-vdi-to-vdi" || r.name == "vdi-to-proxy";
    });
    draft.policy.rules.push_back({"smb-between-vdis", "", RuleAction::Allow, {"vdi"}, {"vdi"}, {"smb"}, ""});
    const PolicyEvaluator a(active.policy, active.inventory);
    const PolicyEvaluator d(draft.policy, draft.inventory);

    std::vector<Attempt> attempts;
    for (int i = 0; i < 12; ++i) {
        attempts.push_back({wl("vdi-001", "10.1.0.1"), wl("vdi-002", "10.1.0.2"), tcp, 445});
    }
    attempts.push_back({wl("vdi-003", "fd00:0:0:10::3"), wl("vdi-102", "fd00:0:0:11::2"), tcp, 445});
    attempts.push_back({wl("vdi-001", "10.1.0.1"), wl("vdi-002", "10.1.0.2"), tcp, 22});  // deny -> default
    attempts.push_back({wl("vdi-001", "10.1.0.1"), wl("fs-01", "10.0.0.30"), tcp, 445});  // allowed by both
    attempts.push_back({wl("vdi-002", "10.1.0.2"), addr("10.0.0.10"), tcp, 3128});       // proxy
    attempts.push_back({wl("vdi-002", "10.1.0.2"), addr("fd00::1"), tcp, 3128});         // invalid

    auto s = what_if(a, d, attempts);
    CHECK(s.total == 17);
    CHECK(s.newly_allowed == 13);
    CHECK(s.newly_blocked == 1);
    CHECK(s.unchanged == 2);
    CHECK(s.invalid.size() == 1);
    CHECK(s.invalid[0].first == 16);
    REQUIRE(s.groups.size() == 2);
    CHECK(s.groups[0].change == Change::NewlyAllowed);
    CHECK(s.groups[0].reason == Reason::Allow);
    CHECK(s.groups[0].rules == Names{"smb-between-vdis"});
    CHECK(s.groups[0].count == 13);
    CHECK(s.groups[1].change == Change::NewlyBlocked);
    CHECK(s.groups[1].reason == Reason::Default);
    CHECK(s.groups[1].attempts == std::vector<std::size_t>{15});
    REQUIRE(s.changes.size() == 14);
    CHECK(s.changes.back().active.rules == Names{"vdi-to-proxy"});
    CHECK(to_string(s.changes.back().change) == "newly-blocked");

    SUBCASE("monitor and enforce") {
        auto monitored = active;
        monitored.policy.defaults.mode = Mode::Monitor;
        const PolicyEvaluator m(monitored.policy, monitored.inventory);
        auto to_monitor = what_if(a, m, attempts);
        CHECK(to_monitor.newly_monitored == 14);  // 13 deny + 1 default drop
        CHECK(to_monitor.newly_allowed == 0);
        auto to_enforce = what_if(m, a, attempts);
        CHECK(to_enforce.newly_enforced == 14);
        // quarantine is the same on both sides: no change from it
        auto q = what_if(a, m, {{wl("vdi-001", "10.1.0.1"), wl("fs-01", "10.0.0.30"), tcp, 139}}, {"vdi-001"});
        CHECK(q.unchanged == 1);
    }
}

// The two cases below pin down what the compiled rulesets do today (the cross-check
// confirms it against the IR); docs/what-if.md lists them as known corners.
TEST_CASE("evaluator: a quarantine grant ends the hook, so a same-host peer's class chain is skipped") {
    auto ex = load("vdi-pool");
    ex.policy.rules.push_back({"no-admin-rdp", "", RuleAction::Deny, {"admin-terminals"}, {"vdi"}, {"rdp"}, ""});
    const PolicyEvaluator e(ex.policy, ex.inventory);
    const std::set<std::string> q{"vdi-001", "vdi-101"};
    // admin-01 and vdi-101 share hv2: quarantine_in's allow_from grant accepts in the forward
    // hook before the admin's egress chain (with its deny) runs
    auto same_host = eval(e, wl("admin-01", "10.1.1.100"), wl("vdi-101", "10.1.1.1"), tcp, 3389, q);
    CHECK(same_host.verdict == Verdict::Allow);
    CHECK(same_host.rules == Names{"quarantine.allow_from[0]"});
    REQUIRE(same_host.checks.size() == 1);
    // vdi-001 is on hv1: the admin's egress on hv2 runs first and denies
    auto other_host = eval(e, wl("admin-01", "10.1.1.100"), wl("vdi-001", "10.1.0.1"), tcp, 3389, q);
    CHECK(other_host.verdict == Verdict::Drop);
    CHECK(other_host.reason == Reason::Deny);
    CHECK(other_host.rules == Names{"no-admin-rdp"});
}

TEST_CASE("evaluator: a host-mode workload and its enforcer's own VDIs bypass its chains") {
    auto ex = load("segmentation");
    for (auto& w : ex.inventory.workloads) {
        if (w.id == "fs-01") {
            w.enforcer = "floor-1";  // the file server is the hypervisor of floor 1
        }
    }
    const PolicyEvaluator e(ex.policy, ex.inventory);
    const std::set<std::string> q{"fs-01"};
    // input hook, iifname pc001: only the PC's side runs; fs-01's quarantine and class
    // chains key on its own interface (eth0) and never see it
    auto local = eval(e, wl("pc-001", "10.20.1.1"), wl("fs-01", "10.20.0.30"), tcp, 445, q);
    CHECK(local.verdict == Verdict::Allow);
    REQUIRE(local.checks.size() == 1);
    CHECK(local.checks[0].hook == ruleset::Hook::Input);
    CHECK(local.checks[0].workload == "pc-001");
    // output hook, oifname adm001: only the admin terminal's ingress runs, not fs-01's quarantine_out
    auto back = eval(e, wl("fs-01", "10.20.0.30"), wl("adm-001", "10.20.2.1"), tcp, 22, q);
    CHECK(back.checks.size() == 1);
    CHECK(back.checks.at(0).workload == "adm-001");
    CHECK(back.reason == Reason::Default);
    // from elsewhere it is quarantined as it should be
    auto remote = eval(e, wl("dc-01", "10.20.0.10"), wl("fs-01", "10.20.0.30"), tcp, 445, q);
    CHECK(remote.verdict == Verdict::Drop);
    CHECK(remote.reason == Reason::Quarantine);
}
