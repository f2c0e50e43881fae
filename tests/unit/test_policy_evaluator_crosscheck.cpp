// The evaluator against what the kernel is given: a small interpreter of the compiled
// Ruleset IR (base chains, verdict maps, jumps, set lookups with the fields' nft
// dependencies) runs each attempt through the hooks of every enforcer on its path, and
// must agree with PolicyEvaluator on the verdict and on every NFLOG prefix, in order.
// Enumerated over every example (and variants: monitor mode, default allow, unshared
// segment sets, quarantine of each managed workload) and a synthetic fleet that adds a
// honeypot VM, a host-mode hypervisor with VDIs, colliding addresses and CIDR membership.
#include "policies/policy_evaluator.hpp"
#include "policies/policy_reader.hpp"
#include "policies/ruleset_compiler.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <sstream>
#include <variant>

using namespace bulkhead;
using policy::Attempt;
using policy::Endpoint;
using policy::Family;
using policy::IpAddress;
using ruleset::Field;
using ruleset::Hook;
using ruleset::Ruleset;
using ruleset::VerdictKind;

namespace {

// ---- the interpreter -------------------------------------------------------------------

struct Packet {
    std::string iif, oif;  // "" when the hook has none (input: no oif, output: no iif)
    IpAddress saddr, daddr;
    std::uint8_t l4proto = 6;
    std::uint16_t dport = 0;     // tcp/udp/sctp destination port
    std::uint8_t icmp_type = 0;  // icmp/icmpv6
    std::string src_mac;         // an honest sender's: its workload's MAC from the inventory
};

constexpr std::uint16_t icmp_checksum = 0xbeef;  // what `th dport` reads for non-port protocols

using Value = std::variant<std::string, IpAddress, std::uint32_t>;

// A field's value, or nothing when nft's implicit dependency (meta nfproto / l4proto) fails.
std::optional<Value> field_value(const Packet& p, Field f) {
    const bool v4 = p.saddr.family == Family::Ipv4;
    const bool port_proto = p.l4proto == 6 || p.l4proto == 17 || p.l4proto == 132;
    switch (f) {
    case Field::Iifname: return Value{p.iif};
    case Field::Oifname: return Value{p.oif};
    case Field::L4proto: return Value{std::uint32_t{p.l4proto}};
    case Field::Ip4Saddr: return v4 ? std::optional<Value>{p.saddr} : std::nullopt;
    case Field::Ip4Daddr: return v4 ? std::optional<Value>{p.daddr} : std::nullopt;
    case Field::Ip6Saddr: return !v4 ? std::optional<Value>{p.saddr} : std::nullopt;
    case Field::Ip6Daddr: return !v4 ? std::optional<Value>{p.daddr} : std::nullopt;
    case Field::ThSport: return Value{std::uint32_t{40000}};
    case Field::ThDport: return Value{std::uint32_t{port_proto ? p.dport : icmp_checksum}};
    case Field::IcmpType:
        return v4 && p.l4proto == 1 ? std::optional<Value>{std::uint32_t{p.icmp_type}} : std::nullopt;
    case Field::Icmpv6Type:
        return !v4 && p.l4proto == 58 ? std::optional<Value>{std::uint32_t{p.icmp_type}} : std::nullopt;
    case Field::EtherSaddr: return Value{p.src_mac};
    }
    return std::nullopt;
}

bool part_matches(const ruleset::KeyPart& part, const Value& v) {
    if (const auto* s = std::get_if<std::string>(&part)) {
        const auto* name = std::get_if<std::string>(&v);
        return name && *name == *s;
    }
    if (const auto* r = std::get_if<policy::IpRange>(&part)) {
        const auto* a = std::get_if<IpAddress>(&v);
        return a && r->contains(*a);
    }
    const auto& n = std::get<policy::NumberRange>(part);
    const auto* x = std::get_if<std::uint32_t>(&v);
    return x && n.low <= *x && *x <= n.high;
}

enum class Outcome { Continue, Accept, Drop };

struct Interpreter {
    const Ruleset& rs;
    const Packet& p;
    std::vector<std::string>& logs;
    int depth = 0;

    const ruleset::Element* lookup(const std::vector<Field>& fields, const std::string& set_name) const {
        const auto* set = rs.find_set(set_name);
        REQUIRE_MESSAGE(set != nullptr, "missing set " << set_name);
        REQUIRE(set->key.size() == fields.size());
        std::vector<Value> key;
        for (std::size_t i = 0; i < fields.size(); ++i) {
            REQUIRE(ruleset::key_type_of(fields[i]) == set->key[i]);
            auto v = field_value(p, fields[i]);
            if (!v) {
                return nullptr;
            }
            key.push_back(std::move(*v));
        }
        for (const auto& e : *set->elements) {
            REQUIRE(e.key.size() == key.size());
            bool all = true;
            for (std::size_t i = 0; i < key.size() && all; ++i) {
                all = part_matches(e.key[i], key[i]);
            }
            if (all) {
                return &e;
            }
        }
        return nullptr;
    }

    bool matches(const ruleset::Match& m) const {
        if (const auto* l = std::get_if<ruleset::SetLookup>(&m)) {
            return lookup(l->fields, l->set) != nullptr;
        }
        if (const auto* v = std::get_if<ruleset::ValueMatch>(&m)) {
            auto value = field_value(p, v->field);
            return value && std::any_of(v->values.begin(), v->values.end(),
                                        [&](const auto& r) { return part_matches(r, *value); });
        }
        if (const auto* ct = std::get_if<ruleset::CtStateMatch>(&m)) {
            return (ct->states & ruleset::CtNew) != 0;  // every attempt is a new connection
        }
        return false;  // ct direction reply: never for a new connection
    }

    Outcome chain(const std::string& name) {
        const auto* c = rs.find_chain(name);
        REQUIRE_MESSAGE(c != nullptr, "missing chain " << name);
        REQUIRE(++depth < 16);
        for (const auto& rule : c->rules) {
            if (!std::all_of(rule.matches.begin(), rule.matches.end(), [&](const auto& m) { return matches(m); })) {
                continue;
            }
            if (rule.log) {
                logs.push_back(rule.log->prefix);
            }
            if (rule.dispatch) {
                const auto* e = lookup({rule.dispatch->field}, rule.dispatch->map);
                if (e) {
                    if (auto o = chain(e->jump); o != Outcome::Continue) {
                        --depth;
                        return o;
                    }
                }
                continue;
            }
            switch (rule.verdict.kind) {
            case VerdictKind::Accept: --depth; return Outcome::Accept;
            case VerdictKind::Drop: --depth; return Outcome::Drop;
            case VerdictKind::Return: --depth; return Outcome::Continue;
            case VerdictKind::Jump:
                if (auto o = chain(rule.verdict.chain); o != Outcome::Continue) {
                    --depth;
                    return o;
                }
                break;
            case VerdictKind::Goto: --depth; return chain(rule.verdict.chain);
            case VerdictKind::None: break;
            }
        }
        --depth;
        return Outcome::Continue;
    }
};

std::string base_chain_of(const Ruleset& rs, Hook hook) {
    for (const auto& c : rs.chains) {
        if (c.base && c.base->hook == hook) {
            return c.name;
        }
    }
    FAIL("no base chain");
    return {};
}

// ---- the path, restated in interfaces --------------------------------------------------

struct Hop {
    std::string enforcer;
    Hook hook;
    std::string iif, oif;
};

struct Place {
    enum Kind { Outside, Port, HostWorkload, HostStack } kind = Outside;
    std::string workload, enforcer, interface;
};

struct Fleet {
    std::string name;
    policy::Policy policy;
    policy::Inventory inventory;
};

Place place_of(const policy::Inventory& inv, const Endpoint& e) {
    Place p;
    auto take = [&](const policy::Workload& w) {
        p.workload = w.id;
        if (!w.enforcer.empty() && w.attachment) {
            p.kind = w.attachment->mode == policy::AttachmentMode::Port ? Place::Port : Place::HostWorkload;
            p.enforcer = w.enforcer;
            p.interface = w.attachment->interfaces.front();
        }
        return p;
    };
    for (const auto& w : inv.workloads) {
        if (!e.workload.empty() && w.id == e.workload) {
            return take(w);
        }
    }
    if (!e.host.empty()) {
        for (const auto& w : inv.workloads) {
            if (w.enforcer == e.host && w.attachment && w.attachment->mode == policy::AttachmentMode::Host) {
                return take(w);
            }
        }
        p.kind = Place::HostStack;
        p.enforcer = e.host;
        return p;
    }
    const policy::Workload* only = nullptr;
    int count = 0;
    for (const auto& w : inv.workloads) {
        if (std::find(w.addresses.begin(), w.addresses.end(), e.address) != w.addresses.end()) {
            only = &w;
            ++count;
        }
    }
    return count == 1 ? take(*only) : p;
}

std::vector<Hop> hops(const Place& s, const Place& d) {
    std::vector<Hop> out;
    if ((!s.workload.empty() && s.workload == d.workload) ||
        (s.kind == Place::HostStack && d.kind == Place::HostStack && s.enforcer == d.enforcer)) {
        return out;
    }
    const bool same = s.kind != Place::Outside && d.kind != Place::Outside && s.enforcer == d.enforcer;
    if (s.kind == Place::Port) {
        if (same && d.kind == Place::Port) {
            out.push_back({s.enforcer, Hook::Forward, s.interface, d.interface});
        } else if (same) {
            out.push_back({s.enforcer, Hook::Input, s.interface, ""});
        } else {
            out.push_back({s.enforcer, Hook::Forward, s.interface, "uplink0"});
        }
    } else if (s.kind == Place::HostWorkload || s.kind == Place::HostStack) {
        if (same && d.kind == Place::Port) {
            out.push_back({s.enforcer, Hook::Output, "", d.interface});
        } else {
            out.push_back({s.enforcer, Hook::Output, "",
                           s.kind == Place::HostWorkload ? s.interface : "uplink0"});
        }
    }
    if (!same) {
        if (d.kind == Place::Port) {
            out.push_back({d.enforcer, Hook::Forward, "uplink0", d.interface});
        } else if (d.kind == Place::HostWorkload) {
            out.push_back({d.enforcer, Hook::Input, d.interface, ""});
        } else if (d.kind == Place::HostStack) {
            out.push_back({d.enforcer, Hook::Input, "uplink0", ""});
        }
    }
    return out;
}

struct KernelResult {
    bool dropped = false;
    std::vector<std::string> logs;
};

KernelResult run_kernel(const std::map<std::string, Ruleset>& rulesets, const policy::Inventory& inv,
                        const Attempt& a) {
    KernelResult r;
    const auto source = place_of(inv, a.source);
    std::string source_mac;
    for (const auto& w : inv.workloads) {
        if (w.id == source.workload) {
            source_mac = w.mac;
        }
    }
    for (const auto& hop : hops(source, place_of(inv, a.destination))) {
        Packet p{hop.iif, hop.oif, a.source.address, a.destination.address, a.protocol, a.port,
                 static_cast<std::uint8_t>(a.port), source_mac};
        const auto& rs = rulesets.at(hop.enforcer);
        Interpreter in{rs, p, r.logs};
        if (in.chain(base_chain_of(rs, hop.hook)) == Outcome::Drop) {
            r.dropped = true;
            break;
        }
    }
    return r;
}

// ---- fleets and attempts ---------------------------------------------------------------

Fleet load_example(const std::string& name) {
    auto p = policy::parse_policy(test::read_source_file("examples/" + name + "/policy.json"));
    auto i = policy::parse_inventory(test::read_source_file("examples/" + name + "/inventory.json"));
    REQUIRE(p);
    REQUIRE(i);
    return {name, *p, *i};
}

constexpr std::string_view synthetic_policy = R"({
  "name": "synthetic",
  "defaults": { "action": "deny", "mode": "enforce", "log_drops": true, "log_allowed": true },
  "services": [
    { "name": "web", "entries": [ { "protocol": "tcp", "ports": [80, 443] } ] },
    { "name": "ssh", "entries": [ { "protocol": "tcp", "ports": [22] } ] },
    { "name": "dns", "entries": [ { "protocol": "udp", "ports": [53] }, { "protocol": "tcp", "ports": [53] } ] },
    { "name": "ping", "entries": [ { "protocol": "icmp" }, { "protocol": "icmpv6", "types": [128, "echo-reply"] } ] },
    { "name": "sctp-all", "entries": [ { "protocol": "sctp" } ] }
  ],
  "segments": [
    { "name": "desktops", "selector": { "labels": { "role": ["desktop", "kiosk"] } } },
    { "name": "servers", "selector": { "workloads": ["srv-1"], "cidrs": ["10.50.0.0/24"] } },
    { "name": "honeypot", "decoy": true, "selector": { "labels": { "role": "honeypot" } } },
    { "name": "trap", "decoy": true, "selector": { "cidrs": ["10.66.0.0/30", "fd00:66::/126"] } },
    { "name": "ops", "selector": { "cidrs": ["10.60.0.0/24", "fd00:60::/64"] } },
    { "name": "hypervisors", "selector": { "workloads": ["hv-a-host"] } }
  ],
  "rules": [
    { "name": "desk-to-servers", "action": "allow", "from": ["desktops"], "to": ["servers"], "services": ["web", "ping"] },
    { "name": "desk-no-ssh", "action": "deny", "from": ["desktops"], "to": ["servers"], "services": ["ssh"] },
    { "name": "ops-all", "action": "allow", "from": ["ops"], "to": ["desktops", "servers", "hypervisors"], "services": ["any"] },
    { "name": "servers-dns", "action": "allow", "from": ["servers"], "to": ["ops"], "services": ["dns"] },
    { "name": "desk-to-hv", "action": "allow", "from": ["desktops"], "to": ["hypervisors"], "services": ["ssh", "ping"] },
    { "name": "no-desk-web", "action": "deny", "from": ["desktops"], "to": ["desktops"], "services": ["web"] },
    { "name": "servers-sctp", "action": "allow", "from": ["servers"], "to": ["servers"], "services": ["sctp-all"] },
    { "name": "hv-to-desk", "action": "allow", "from": ["hypervisors"], "to": ["desktops"], "services": ["ssh"] },
    { "name": "desk-peers", "description": "overlaps no-desk-web: deny must win", "action": "allow", "from": ["desktops"], "to": ["desktops"], "services": ["any"] },
    { "name": "desk-servers-any", "description": "overlaps desk-no-ssh", "action": "allow", "from": ["desktops"], "to": ["servers"], "services": ["any"] }
  ],
  "quarantine": {
    "allow": [ { "to": ["servers"], "services": ["web"] }, { "to": ["ops"], "services": ["dns"] } ],
    "allow_from": [ { "from": ["ops"], "services": ["ssh"] } ]
  }
})";

constexpr std::string_view synthetic_inventory = R"({
  "enforcers": [ { "id": "hv-a" }, { "id": "hv-b" }, { "id": "srv-2" }, { "id": "idle" } ],
  "workloads": [
    { "id": "d1", "enforcer": "hv-a", "addresses": ["10.10.0.1", "fd00:10::1"], "labels": { "role": "desktop" }, "attachment": { "mode": "port", "interface": "d1" } },
    { "id": "d2", "enforcer": "hv-a", "addresses": ["10.10.0.2"], "labels": { "role": "kiosk" }, "attachment": { "mode": "port", "interface": "d2" } },
    { "id": "d3", "enforcer": "hv-b", "addresses": ["10.10.1.3", "fd00:10::3"], "labels": { "role": "desktop" }, "attachment": { "mode": "port", "interface": "d3" } },
    { "id": "hp", "enforcer": "hv-b", "addresses": ["10.10.1.66", "fd00:10::66"], "labels": { "role": "honeypot" }, "attachment": { "mode": "port", "interface": "hp" } },
    { "id": "hv-a-host", "enforcer": "hv-a", "addresses": ["10.0.1.1", "fd00:1::1"], "attachment": { "mode": "host", "interfaces": ["eth0", "eth1"] } },
    { "id": "srv-1", "addresses": ["10.40.0.1"] },
    { "id": "srv-2", "enforcer": "srv-2", "addresses": ["10.50.0.2", "fd00:50::2"], "attachment": { "mode": "host", "interfaces": ["ens3"] } },
    { "id": "dup-a", "enforcer": "hv-a", "addresses": ["10.10.9.9"], "labels": { "role": "desktop" }, "attachment": { "mode": "port", "interface": "dupa" } },
    { "id": "dup-b", "enforcer": "hv-b", "addresses": ["10.10.9.9"], "labels": { "role": "kiosk" }, "attachment": { "mode": "port", "interface": "dupb" } },
    { "id": "printer", "addresses": ["10.10.0.200"], "labels": { "role": "printer" } }
  ]
})";

Fleet synthetic() {
    auto p = policy::parse_policy(synthetic_policy);
    auto i = policy::parse_inventory(synthetic_inventory);
    REQUIRE(p);
    REQUIRE(i);
    REQUIRE(policy::cross_check(*p, *i).empty());
    return {"synthetic", *p, *i};
}

IpAddress nth(const IpAddress& base, int n) {
    IpAddress a = base;
    for (int i = 0; i < n; ++i) {
        policy::increment(a);
    }
    return a;
}

std::vector<Endpoint> endpoints(const Fleet& f) {
    std::vector<Endpoint> out;
    for (const auto& w : f.inventory.workloads) {
        for (const auto& a : w.addresses) {
            out.push_back({a, w.id, {}});
        }
    }
    int n = 0;
    for (const auto& e : f.inventory.enforcers) {
        ++n;
        out.push_back({*policy::parse_ip_address("10.254.0." + std::to_string(n)), {}, e.id});
        out.push_back({*policy::parse_ip_address("fd00:254::" + std::to_string(n)), {}, e.id});
    }
    for (const auto& s : f.policy.segments) {
        for (const auto& c : s.selector.cidrs) {
            out.push_back({c.low, {}, {}});
            if (c.low != c.high) {
                out.push_back({nth(c.low, 1), {}, {}});
            }
            out.push_back({nth(c.high, 1), {}, {}});  // just outside (or the next block)
        }
    }
    out.push_back({*policy::parse_ip_address("192.0.2.7"), {}, {}});
    out.push_back({*policy::parse_ip_address("2001:db8::7"), {}, {}});
    out.push_back({*policy::parse_ip_address("10.10.9.9"), {}, {}});  // address only (shared in synthetic)
    return out;
}

const std::vector<std::pair<std::uint8_t, std::uint16_t>> services = {
    {6, 22}, {6, 53}, {6, 80}, {6, 88}, {6, 137}, {6, 443}, {6, 445}, {6, 3128}, {6, 3389}, {6, 5432},
    {6, 8444}, {6, 9999}, {17, 53}, {17, 123}, {17, 138}, {17, 3389}, {132, 9}, {132, 445},
    {1, 0}, {1, 8}, {1, 13}, {58, 128}, {58, 129}, {58, 135}, {58, 143}, {58, 1}, {47, 0},
};

std::string describe(const Attempt& a) {
    std::ostringstream s;
    s << (a.source.workload.empty() ? a.source.host : a.source.workload) << "[" << policy::to_string(a.source.address)
      << "] -> " << (a.destination.workload.empty() ? a.destination.host : a.destination.workload) << "["
      << policy::to_string(a.destination.address) << "] proto " << int{a.protocol} << " port " << a.port;
    return s.str();
}

struct Tally {
    std::size_t attempts = 0, dropped = 0, would = 0, allowed = 0, mismatches = 0;
    std::set<policy::Reason> reasons;
};

void cross_check(const Fleet& f, const ruleset::CompilerOptions& options, const std::set<std::string>& quarantined,
                 Tally& tally) {
    const ruleset::RulesetCompiler compiler(f.policy, f.inventory, options);
    const auto rulesets = compiler.compile_all(quarantined);
    const policy::PolicyEvaluator evaluator(f.policy, f.inventory);
    const auto ends = endpoints(f);
    for (const auto& s : ends) {
        for (const auto& d : ends) {
            if (s.address.family != d.address.family) {
                continue;
            }
            for (const auto& [proto, port] : services) {
                const Attempt a{s, d, proto, port};
                auto decision = evaluator.evaluate(a, quarantined);
                REQUIRE(decision);
                const auto kernel = run_kernel(rulesets, f.inventory, a);
                std::vector<std::string> predicted;
                for (const auto& c : decision->checks) {
                    if (!c.log_prefix.empty()) {
                        predicted.push_back(c.log_prefix);
                    }
                }
                auto is_drop_log = [](const std::string& l) { return l.find(":allow:") == std::string::npos; };
                auto first_would = std::find_if(kernel.logs.begin(), kernel.logs.end(), [&](const auto& l) {
                    return l.starts_with("bh:mon:") && is_drop_log(l);
                });
                const bool would_drop = !kernel.dropped && first_would != kernel.logs.end();
                const auto expected = kernel.dropped ? policy::Verdict::Drop
                                      : would_drop   ? policy::Verdict::WouldDrop
                                                     : policy::Verdict::Allow;
                // the deciding log: the drop is the last thing logged; a would-drop the first
                std::string deciding;
                if (kernel.dropped && !kernel.logs.empty()) {
                    deciding = kernel.logs.back();
                } else if (would_drop) {
                    deciding = *first_would;
                }
                ++tally.attempts;
                tally.reasons.insert(decision->reason);
                (expected == policy::Verdict::Drop        ? tally.dropped
                 : expected == policy::Verdict::WouldDrop ? tally.would
                                                          : tally.allowed)++;
                const bool agree = decision->verdict == expected && predicted == kernel.logs &&
                                   (expected == policy::Verdict::Allow || decision->log_prefix == deciding);
                if (!agree) {
                    ++tally.mismatches;
                    if (tally.mismatches <= 20) {
                        std::string k, e;
                        for (const auto& l : kernel.logs) k += l + " ";
                        for (const auto& l : predicted) e += l + " ";
                        std::ostringstream m;
                        m << f.name << (options.share_membership_segments ? "" : " (unshared)") << " q="
                          << quarantined.size() << ": " << describe(a) << ": kernel "
                          << (kernel.dropped ? "drop" : "accept") << " [" << k << "] evaluator "
                          << policy::to_string(decision->verdict) << " " << policy::to_string(decision->reason)
                          << " [" << e << "]";
                        MESSAGE(m.str());
                    }
                }
            }
        }
    }
}

std::vector<std::string> managed(const policy::Inventory& inv) {
    std::vector<std::string> out;
    for (const auto& w : inv.workloads) {
        if (!w.enforcer.empty() && w.attachment) {
            out.push_back(w.id);
        }
    }
    return out;
}

}  // namespace

TEST_CASE("evaluator cross-check: agrees with the compiled rulesets on every example") {
    std::vector<Fleet> fleets;
    for (const auto* name : {"vdi-pool", "segmentation", "host-mode", "lab"}) {
        fleets.push_back(load_example(name));
    }
    fleets.push_back(synthetic());
    // the corners docs/what-if.md lists: a grant ending the hook before a same-host peer's
    // deny, and a host-mode workload that is also the hypervisor of port-mode workloads
    Fleet admin_deny = load_example("vdi-pool");
    admin_deny.name += "+no-admin-rdp";
    admin_deny.policy.rules.push_back(
        {"no-admin-rdp", "", policy::RuleAction::Deny, {"admin-terminals"}, {"vdi"}, {"rdp"}, ""});
    fleets.push_back(admin_deny);
    Fleet hypervisor_server = load_example("segmentation");
    hypervisor_server.name += "+fs-on-floor-1";
    for (auto& w : hypervisor_server.inventory.workloads) {
        if (w.id == "fs-01") {
            w.enforcer = "floor-1";
        }
    }
    fleets.push_back(hypervisor_server);
    // Host-mode tripwires beside port-mode ones: a tripwire rule towards both host-mode
    // servers (from desktops, a critical one spared, and from ops' unknown addresses), a
    // decoy tripwire segment holding one server, the honeypot VDI's segment as a tripwire.
    Fleet host_tripwires = synthetic();
    host_tripwires.name += "+host-tripwires";
    host_tripwires.policy.response.auto_quarantine = policy::AutoQuarantineMode::On;
    for (auto& segment : host_tripwires.policy.segments) {
        segment.tripwire = segment.tripwire || segment.name == "honeypot";
    }
    policy::Segment decoy_server;
    decoy_server.name = "decoy-server";
    decoy_server.decoy = true;
    decoy_server.tripwire = true;
    decoy_server.selector.workloads = {"srv-2"};
    host_tripwires.policy.segments.push_back(decoy_server);
    policy::Rule trap;
    trap.name = "trap-ssh";
    trap.action = policy::RuleAction::Deny;
    trap.from = {"desktops", "ops"};
    trap.to = {"hypervisors", "servers"};
    trap.services = {"ssh"};
    trap.tripwire = true;
    host_tripwires.policy.rules.insert(host_tripwires.policy.rules.begin(), trap);
    for (auto& w : host_tripwires.inventory.workloads) {
        w.critical = w.critical || w.id == "d2";
    }
    fleets.push_back(host_tripwires);
    Tally total;
    for (const auto& base : fleets) {
        for (int variant = 0; variant < 3; ++variant) {
            Fleet f = base;
            if (variant == 1) {
                f.policy.defaults.mode = f.policy.defaults.mode == policy::Mode::Monitor ? policy::Mode::Enforce
                                                                                          : policy::Mode::Monitor;
                f.name += "/mode-flipped";
            } else if (variant == 2) {
                f.policy.defaults.action = policy::DefaultAction::Allow;
                f.policy.defaults.log_allowed = true;
                f.name += "/default-allow";
            }
            CAPTURE(f.name);
            std::vector<std::set<std::string>> quarantine_sets{{}};
            const auto ids = managed(f.inventory);
            quarantine_sets.push_back({ids.begin(), ids.end()});
            if (variant == 0) {
                for (const auto& id : ids) {
                    quarantine_sets.push_back({id});
                }
            }
            for (const bool shared : {true, false}) {
                for (const auto& q : quarantine_sets) {
                    cross_check(f, ruleset::CompilerOptions{shared}, q, total);
                }
            }
        }
    }
    MESSAGE("cross-checked " << total.attempts << " attempts: " << total.dropped << " dropped, " << total.would
                             << " would-drop, " << total.allowed << " allowed");
    CHECK(total.mismatches == 0);
    // the enumeration reached every outcome the evaluator can give
    CHECK(total.dropped > 0);
    CHECK(total.would > 0);
    CHECK(total.allowed > 0);
    CHECK(total.reasons == std::set<policy::Reason>{policy::Reason::None, policy::Reason::Default,
                                                    policy::Reason::Deny, policy::Reason::Decoy,
                                                    policy::Reason::Quarantine, policy::Reason::Allow, policy::Reason::Tripwire});
}
