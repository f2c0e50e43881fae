#include "policies/policy_evaluator.hpp"

#include "policies/policy_classes.hpp"

#include "policies/ruleset_compiler.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <map>
#include <tuple>
#include <unordered_map>

namespace bulkhead::policy {
namespace {

constexpr std::uint8_t proto_icmp = 1;
constexpr std::uint8_t proto_tcp = 6;
constexpr std::uint8_t proto_udp = 17;
constexpr std::uint8_t proto_icmpv6 = 58;
constexpr std::uint8_t proto_sctp = 132;
constexpr std::size_t none = static_cast<std::size_t>(-1);

// A service expanded the way the compiler expands it (ServiceRects): (protocol range,
// port range) rectangles matched by `meta l4proto . th dport`, and ICMP type ranges.
struct Services {
    std::vector<std::pair<NumberRange, NumberRange>> ports;
    std::vector<NumberRange> icmp4;
    std::vector<NumberRange> icmp6;

    void add(const Services& other) {
        ports.insert(ports.end(), other.ports.begin(), other.ports.end());
        icmp4.insert(icmp4.end(), other.icmp4.begin(), other.icmp4.end());
        icmp6.insert(icmp6.end(), other.icmp6.begin(), other.icmp6.end());
    }

    bool matches(Family family, std::uint8_t protocol, std::uint16_t port) const {
        auto in = [](const NumberRange& r, std::uint32_t v) { return r.low <= v && v <= r.high; };
        // `th dport` is the destination port only for the port protocols; for anything else
        // it reads whatever sits at offset 2 (ICMP: the checksum), so only a rectangle
        // covering every port can match it for sure, and the compiler only makes such
        // rectangles for non-port protocols (the service "any", protocol "any").
        const bool port_protocol =
            protocol == proto_tcp || protocol == proto_udp || protocol == proto_sctp;
        for (const auto& [protocols, range] : ports) {
            if (in(protocols, protocol) &&
                (port_protocol ? in(range, port) : (range.low == 0 && range.high >= 65535))) {
                return true;
            }
        }
        // `icmp type` carries the dependencies `meta nfproto ipv4; meta l4proto icmp`, and
        // `icmpv6 type` `meta nfproto ipv6; meta l4proto ipv6-icmp`.
        if (family == Family::Ipv4 && protocol == proto_icmp) {
            return std::any_of(icmp4.begin(), icmp4.end(), [&](const auto& r) { return in(r, port); });
        }
        if (family == Family::Ipv6 && protocol == proto_icmpv6) {
            return std::any_of(icmp6.begin(), icmp6.end(), [&](const auto& r) { return in(r, port); });
        }
        return false;
    }
};

// Sorted, overlap-free address ranges (both families in one list: IPv4 sorts first).
class AddressSet {
public:
    void add(const IpRange& r) { ranges_.push_back(r); }
    void finish() {
        std::sort(ranges_.begin(), ranges_.end());
        std::vector<IpRange> merged;
        for (const auto& r : ranges_) {
            if (!merged.empty() && merged.back().family() == r.family() && r.low <= merged.back().high) {
                merged.back().high = std::max(merged.back().high, r.high);
            } else {
                merged.push_back(r);
            }
        }
        ranges_ = std::move(merged);
    }
    bool contains(const IpAddress& a) const {
        auto it = std::upper_bound(ranges_.begin(), ranges_.end(), a,
                                   [](const IpAddress& v, const IpRange& r) { return v < r.low; });
        return it != ranges_.begin() && std::prev(it)->contains(a);
    }

private:
    std::vector<IpRange> ranges_;
};

struct SegmentInfo {
    std::string name;
    bool decoy = false;
    bool tripwire = false;  // a decoy whose touch the kernel contains on the packet
    AddressSet addresses;  // member workloads' addresses and the selector's CIDRs
};

struct RuleInfo {
    std::string name;
    RuleAction action = RuleAction::Allow;
    bool tripwire = false;  // deny rules only
    std::vector<std::size_t> from, to;
    Services services;
};

struct GrantInfo {
    std::string label;  // "quarantine.allow[0]"
    std::vector<std::size_t> segments;
    Services services;
};

struct ClassInfo {
    std::string name;
    std::vector<std::size_t> segments;  // sorted
    std::vector<std::string> decoy_segments;
};

struct WorkloadInfo {
    std::string id;
    std::string enforcer;
    bool managed = false;
    AttachmentMode mode = AttachmentMode::Port;
    std::size_t policy_class = none;
    // Its tripwires contain it in the kernel (the compiler's tripwire_ports; port mode only).
    bool armed = false;
    // Host mode: its tripwires block their senders (the compiler's host_tripwires).
    bool host_armed = false;
    // A sender a host-mode tripwire never blocks (the compiler's tripwire_spared4/6).
    bool spared = false;
};

bool intersects(const std::vector<std::size_t>& sorted, const std::vector<std::size_t>& any) {
    return std::any_of(any.begin(), any.end(),
                       [&](std::size_t s) { return std::binary_search(sorted.begin(), sorted.end(), s); });
}

void sort_unique(std::vector<std::string>& names) {
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
}

}  // namespace

namespace detail {
struct EvaluatorModel {
    std::string policy_name;
    Defaults defaults;
    std::vector<SegmentInfo> segments;
    std::vector<RuleInfo> rules;
    std::vector<GrantInfo> grants_to, grants_from;
    std::vector<ClassInfo> classes;
    std::vector<WorkloadInfo> workloads;
    std::unordered_map<std::string, std::size_t> workload_index;
    std::map<IpAddress, std::vector<std::size_t>> by_address;
    std::map<std::string, std::size_t, std::less<>> host_workload;  // enforcer -> host-mode workload
    std::set<std::string, std::less<>> enforcers;
    bool tripwires = false;  // the policy declares any (host-mode servers then block quarantined senders)

    bool in_segments(const IpAddress& a, const std::vector<std::size_t>& which) const {
        return std::any_of(which.begin(), which.end(),
                           [&](std::size_t s) { return segments[s].addresses.contains(a); });
    }
};
}  // namespace detail

namespace {

using Model = detail::EvaluatorModel;

// Where an endpoint sits, as far as enforcers are concerned.
struct Place {
    enum class Kind : std::uint8_t { Outside, PortWorkload, HostWorkload, HostStack } kind = Kind::Outside;
    std::size_t workload = none;  // known workload (managed or not), or none
    std::string enforcer;         // Port/HostWorkload, HostStack
};

Place resolve(const Model& m, const Endpoint& e, std::string_view side, std::vector<std::string>& notes) {
    Place p;
    auto from_workload = [&](std::size_t w) {
        p.workload = w;
        const auto& info = m.workloads[w];
        if (info.managed) {
            p.kind = info.mode == AttachmentMode::Host ? Place::Kind::HostWorkload : Place::Kind::PortWorkload;
            p.enforcer = info.enforcer;
        }
    };
    if (!e.workload.empty()) {
        if (auto it = m.workload_index.find(e.workload); it != m.workload_index.end()) {
            from_workload(it->second);
            return p;
        }
        notes.push_back(std::string(side) + " workload \"" + e.workload +
                        "\" is not in the inventory; looked up by address");
    }
    if (!e.host.empty()) {
        if (auto it = m.host_workload.find(e.host); it != m.host_workload.end()) {
            from_workload(it->second);
            return p;
        }
        if (m.enforcers.contains(e.host)) {
            p.kind = Place::Kind::HostStack;
            p.enforcer = e.host;
            return p;
        }
        notes.push_back(std::string(side) + " enforcer \"" + e.host +
                        "\" is not in the inventory; looked up by address");
    }
    if (auto it = m.by_address.find(e.address); it != m.by_address.end()) {
        if (it->second.size() == 1) {
            from_workload(it->second.front());
        } else {
            notes.push_back(std::string(side) + " address " + to_string(e.address) +
                            " belongs to several workloads; treated as unmanaged (give the workload id)");
        }
    }
    return p;
}

struct Evaluation {
    const Model& m;
    const Attempt& attempt;
    const std::set<std::string>& quarantined;
    Family family;

    Verdict drop_verdict() const {
        return m.defaults.mode == Mode::Monitor ? Verdict::WouldDrop : Verdict::Drop;
    }

    Check base(const std::string& enforcer, ruleset::Hook hook, Direction dir, std::size_t w) const {
        Check c;
        c.enforcer = enforcer;
        c.hook = hook;
        c.direction = dir;
        c.workload = m.workloads[w].id;
        return c;
    }

    // <class>_out / <class>_in of workload `w`; the peer is the other end.
    Check class_chain(const std::string& enforcer, ruleset::Hook hook, Direction dir, std::size_t w) const {
        const bool out = dir == Direction::Out;
        const auto& cls = m.classes[m.workloads[w].policy_class];
        const IpAddress& peer = out ? attempt.destination.address : attempt.source.address;
        const std::string dir_name(to_string(dir));
        Check c = base(enforcer, hook, dir, w);
        c.chain = cls.name + "_" + dir_name;
        auto drop = [&](Reason reason) {
            c.verdict = drop_verdict();
            c.reason = reason;
            if (m.defaults.log_drops) {
                c.log_prefix = ruleset::log_prefix(m.defaults.mode, dir_name, to_string(reason), cls.name);
            }
            sort_unique(c.rules);
            return c;
        };
        // <class>_<dir>_tripwire: the decoy tripwire segments that match, else the tripwire
        // deny rules whose side toward this workload holds its class and whose other side
        // holds the peer. Always a drop (armed only in enforce mode).
        auto tripwire = [&](auto&& decoy_matches) -> std::optional<Check> {
            for (const auto& s : m.segments) {
                if (s.tripwire && decoy_matches(s)) {
                    c.rules.push_back(s.name);
                }
            }
            if (c.rules.empty()) {
                for (const auto& r : m.rules) {
                    if (r.tripwire && r.action == RuleAction::Deny && intersects(cls.segments, out ? r.from : r.to) &&
                        m.in_segments(peer, out ? r.to : r.from) &&
                        r.services.matches(family, attempt.protocol, attempt.port)) {
                        c.rules.push_back(r.name);
                    }
                }
            }
            if (c.rules.empty()) {
                return std::nullopt;
            }
            c.chain = cls.name + "_" + dir_name + "_tripwire";
            c.verdict = Verdict::Drop;
            c.reason = Reason::Tripwire;
            c.log_prefix = ruleset::log_prefix(Mode::Enforce, dir_name, "tripwire", cls.name);
            sort_unique(c.rules);
            return c;
        };
        if (!out && m.workloads[w].host_armed && !spared(peer)) {
            // Host mode, entered from input for an armed server's interface: a decoy tripwire
            // segment the server itself is in. The sender's address is blocked on the packet.
            if (auto hit = tripwire([&](const auto& segment) {
                    const auto index = static_cast<std::size_t>(&segment - m.segments.data());
                    return std::find(cls.segments.begin(), cls.segments.end(), index) != cls.segments.end();
                })) {
                return *hit;
            }
        }
        if (out && m.workloads[w].armed) {
            // Entered first from an armed port: a decoy tripwire segment holding the peer.
            if (auto hit = tripwire([&](const auto& segment) { return segment.decoy && segment.addresses.contains(peer); })) {
                return *hit;
            }
        }
        if (out) {
            for (const auto& s : m.segments) {
                if (s.decoy && s.addresses.contains(peer)) {
                    c.rules.push_back(s.name);
                }
            }
            if (!c.rules.empty()) {
                return drop(Reason::Decoy);
            }
        } else if (!cls.decoy_segments.empty()) {
            c.rules = cls.decoy_segments;
            return drop(Reason::Decoy);
        }
        auto matching = [&](RuleAction action) {
            std::vector<std::string> names;
            for (const auto& r : m.rules) {
                if (r.action != action) {
                    continue;
                }
                const auto& own = out ? r.from : r.to;
                const auto& peers = out ? r.to : r.from;
                if (intersects(cls.segments, own) && m.in_segments(peer, peers) &&
                    r.services.matches(family, attempt.protocol, attempt.port)) {
                    names.push_back(r.name);
                }
            }
            return names;
        };
        if (auto denied = matching(RuleAction::Deny); !denied.empty()) {
            c.rules = std::move(denied);
            return drop(Reason::Deny);
        }
        if (auto allowed = matching(RuleAction::Allow); !allowed.empty()) {
            c.rules = std::move(allowed);
            c.verdict = Verdict::Allow;
            c.reason = Reason::Allow;
            if (m.defaults.log_allowed) {
                c.log_prefix = ruleset::log_prefix(m.defaults.mode, dir_name, "allow", cls.name);
            }
            sort_unique(c.rules);
            return c;
        }
        if (m.defaults.action == DefaultAction::Deny) {
            return drop(Reason::Default);
        }
        c.verdict = Verdict::Allow;
        c.reason = Reason::Default;
        return c;
    }

    // quarantine_out / quarantine_in: grants accept (for the whole hook), the rest drops,
    // always enforced and always logged. A new connection is never a reply.
    Check quarantine_chain(const std::string& enforcer, ruleset::Hook hook, Direction dir, std::size_t w) const {
        const bool out = dir == Direction::Out;
        const IpAddress& peer = out ? attempt.destination.address : attempt.source.address;
        Check c = base(enforcer, hook, dir, w);
        c.chain = out ? "quarantine_out" : "quarantine_in";
        c.reason = Reason::Quarantine;
        for (const auto& g : out ? m.grants_to : m.grants_from) {
            if (m.in_segments(peer, g.segments) && g.services.matches(family, attempt.protocol, attempt.port)) {
                c.rules.push_back(g.label);
            }
        }
        if (!c.rules.empty()) {
            c.verdict = Verdict::Allow;
            return c;
        }
        c.verdict = Verdict::Drop;
        c.log_prefix = ruleset::log_prefix(Mode::Enforce, to_string(dir), "quarantine", "q");
        return c;
    }

    // Whether a workload of the inventory holding `a` is one a tripwire never contains.
    bool spared(const IpAddress& a) const {
        const auto it = m.by_address.find(a);
        return it != m.by_address.end() &&
               std::any_of(it->second.begin(), it->second.end(), [&](std::size_t w) { return m.workloads[w].spared; });
    }

    // blocked_source (host mode with tripwires, input hook of the server's enforcer): a
    // sender that is a quarantined workload elsewhere is dropped unless a quarantine grant
    // lets it reach this server. nullopt when the sender is not blocked.
    std::optional<Check> blocked_source(const std::string& enforcer, ruleset::Hook hook, std::size_t w) const {
        const auto it = m.by_address.find(attempt.source.address);
        if (!m.tripwires || it == m.by_address.end() ||
            std::none_of(it->second.begin(), it->second.end(), [&](std::size_t s) {
                return quarantined.contains(m.workloads[s].id) && m.workloads[s].enforcer != enforcer;
            })) {
            return std::nullopt;
        }
        Check c = base(enforcer, hook, Direction::In, w);
        c.chain = "blocked_source";
        c.reason = Reason::Quarantine;
        for (const auto& g : m.grants_to) {
            if (m.in_segments(attempt.destination.address, g.segments) &&
                g.services.matches(family, attempt.protocol, attempt.port)) {
                c.rules.push_back(g.label);
            }
        }
        if (!c.rules.empty()) {
            c.verdict = Verdict::Allow;
            return c;
        }
        c.verdict = Verdict::Drop;
        c.log_prefix = ruleset::log_prefix(Mode::Enforce, "in", "quarantine", "q");
        return c;
    }

    bool neighbour_discovery() const {
        const auto t = attempt.port;
        return family == Family::Ipv6 && attempt.protocol == proto_icmpv6 &&
               ((t >= 130 && t <= 136) || t == 143);
    }

    // One hook on one enforcer. Steps, in the order the base chain runs them.
    enum class Step : std::uint8_t { NeighbourDiscovery, BlockedSource, QuarantineOut, QuarantineIn, Egress, Ingress };
    struct Traversal {
        std::string enforcer;
        ruleset::Hook hook;
        std::vector<std::pair<Step, std::size_t>> steps;  // step, workload
    };

    // Runs a traversal; false when the packet is dropped (nothing further sees it).
    bool run(const Traversal& t, std::vector<Check>& checks) const {
        for (const auto& [step, w] : t.steps) {
            switch (step) {
            case Step::NeighbourDiscovery:
                if (neighbour_discovery()) {
                    Check c;
                    c.enforcer = t.enforcer;
                    c.hook = t.hook;
                    c.direction = w == 0 ? Direction::Out : Direction::In;
                    c.chain = t.hook == ruleset::Hook::Input ? "input" : "output";
                    c.rules = {"neighbour-discovery"};
                    checks.push_back(std::move(c));
                    return true;  // accept: the rest of this hook is skipped
                }
                break;
            case Step::BlockedSource:
                if (auto c = blocked_source(t.enforcer, t.hook, w)) {
                    const bool accepted = c->verdict == Verdict::Allow;
                    checks.push_back(std::move(*c));
                    return accepted;
                }
                break;
            case Step::QuarantineOut:
            case Step::QuarantineIn: {
                if (!quarantined.contains(m.workloads[w].id)) {
                    break;
                }
                auto c = quarantine_chain(t.enforcer, t.hook,
                                          step == Step::QuarantineOut ? Direction::Out : Direction::In, w);
                const bool accepted = c.verdict == Verdict::Allow;
                checks.push_back(std::move(c));
                return accepted;  // accept or drop: either ends this hook
            }
            case Step::Egress:
            case Step::Ingress: {
                auto c = class_chain(t.enforcer, t.hook, step == Step::Egress ? Direction::Out : Direction::In, w);
                const bool dropped = c.verdict == Verdict::Drop;
                checks.push_back(std::move(c));
                if (dropped) {
                    return false;
                }
                break;
            }
            }
        }
        return true;
    }

    // Which hooks on which enforcers the attempt crosses (docs/what-if.md, "The path").
    std::vector<Traversal> path(const Place& s, const Place& d) const {
        using K = Place::Kind;
        using H = ruleset::Hook;
        std::vector<Traversal> out;
        const bool same_workload = s.workload != none && s.workload == d.workload;
        const bool same_stack = s.kind == K::HostStack && d.kind == K::HostStack && s.enforcer == d.enforcer;
        if (same_workload || same_stack) {
            return out;  // never leaves the machine's own stack (lo is never filtered)
        }
        const bool shared = s.kind != K::Outside && d.kind != K::Outside && s.enforcer == d.enforcer;
        // Step workload 0/1 for ND only records the side; it is otherwise unused.
        switch (s.kind) {
        case K::PortWorkload:
            if (shared && d.kind == K::PortWorkload) {
                out.push_back({s.enforcer, H::Forward,
                               {{Step::QuarantineOut, s.workload}, {Step::QuarantineIn, d.workload},
                                {Step::Egress, s.workload}, {Step::Ingress, d.workload}}});
            } else if (shared) {
                // To its hypervisor's own stack: input hook, iifname is the VDI's port, so
                // only the VDI's side is checked (host-mode chains key on the host's interfaces).
                out.push_back({s.enforcer, H::Input,
                               {{Step::NeighbourDiscovery, 0}, {Step::QuarantineOut, s.workload},
                                {Step::Egress, s.workload}}});
            } else {
                out.push_back({s.enforcer, H::Forward,
                               {{Step::QuarantineOut, s.workload}, {Step::Egress, s.workload}}});
            }
            break;
        case K::HostWorkload:
        case K::HostStack:
            if (shared && d.kind == K::PortWorkload) {
                // The host to one of its own VDIs: output hook, oifname is the VDI's port.
                out.push_back({s.enforcer, H::Output,
                               {{Step::NeighbourDiscovery, 1}, {Step::QuarantineIn, d.workload},
                                {Step::Ingress, d.workload}}});
            } else if (s.kind == K::HostWorkload) {
                out.push_back({s.enforcer, H::Output,
                               {{Step::NeighbourDiscovery, 0}, {Step::QuarantineOut, s.workload},
                                {Step::Egress, s.workload}}});
            }
            break;
        case K::Outside: break;
        }
        if (!shared) {
            if (d.kind == K::PortWorkload) {
                out.push_back({d.enforcer, H::Forward,
                               {{Step::QuarantineIn, d.workload}, {Step::Ingress, d.workload}}});
            } else if (d.kind == K::HostWorkload) {
                out.push_back({d.enforcer, H::Input,
                               {{Step::NeighbourDiscovery, 1}, {Step::BlockedSource, d.workload},
                                {Step::QuarantineIn, d.workload}, {Step::Ingress, d.workload}}});
            }
        }
        return out;
    }
};

Decision decide(std::vector<Check> checks) {
    Decision d;
    auto take = [&](const Check& c) {
        d.verdict = c.verdict;
        d.reason = c.reason;
        d.direction = c.direction;
        d.rules = c.rules;
        d.enforcer = c.enforcer;
        d.workload = c.workload;
        d.log_prefix = c.log_prefix;
    };
    auto first = [&](Verdict v) {
        return std::find_if(checks.begin(), checks.end(), [&](const Check& c) { return c.verdict == v; });
    };
    if (auto it = first(Verdict::Drop); it != checks.end()) {
        take(*it);
    } else if (auto would = first(Verdict::WouldDrop); would != checks.end()) {
        take(*would);
    } else if (!checks.empty()) {
        take(checks.back());
        d.rules.clear();
        auto has = [&](Reason r) {
            return std::any_of(checks.begin(), checks.end(), [&](const Check& c) { return c.reason == r; });
        };
        d.reason = has(Reason::Allow)        ? Reason::Allow
                   : has(Reason::Quarantine) ? Reason::Quarantine
                   : has(Reason::Default)    ? Reason::Default
                                             : Reason::None;
        for (const auto& c : checks) {
            if (c.reason == Reason::Allow || c.reason == Reason::Quarantine) {
                d.rules.insert(d.rules.end(), c.rules.begin(), c.rules.end());
            }
        }
        sort_unique(d.rules);
    }
    d.checks = std::move(checks);
    return d;
}

}  // namespace

std::string_view to_string(Verdict verdict) {
    switch (verdict) {
    case Verdict::Allow: return "allow";
    case Verdict::Drop: return "drop";
    case Verdict::WouldDrop: return "would-drop";
    }
    return "?";
}

std::string_view to_string(Reason reason) {
    switch (reason) {
    case Reason::None: return "none";
    case Reason::Default: return "default";
    case Reason::Deny: return "deny";
    case Reason::Decoy: return "decoy";
    case Reason::Tripwire: return "tripwire";
    case Reason::Quarantine: return "quarantine";
    case Reason::Allow: return "allow";
    }
    return "?";
}

std::string_view to_string(Direction direction) { return direction == Direction::Out ? "out" : "in"; }

std::string_view to_string(Change change) {
    switch (change) {
    case Change::NewlyAllowed: return "newly-allowed";
    case Change::NewlyBlocked: return "newly-blocked";
    case Change::NewlyEnforced: return "newly-enforced";
    case Change::NewlyMonitored: return "newly-monitored";
    }
    return "?";
}

std::optional<std::uint8_t> parse_protocol_number(std::string_view text) {
    static constexpr std::pair<std::string_view, std::uint8_t> names[] = {
        {"tcp", proto_tcp}, {"udp", proto_udp}, {"sctp", proto_sctp}, {"icmp", proto_icmp}, {"icmpv6", proto_icmpv6}};
    for (const auto& [name, number] : names) {
        if (text == name) {
            return number;
        }
    }
    unsigned value = 0;
    const auto* end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (text.empty() || ec != std::errc{} || ptr != end || value > 255 || (text.size() > 1 && text[0] == '0')) {
        return std::nullopt;
    }
    return static_cast<std::uint8_t>(value);
}

PolicyEvaluator::PolicyEvaluator(const Policy& policy, const Inventory& inventory) {
    auto m = std::make_shared<detail::EvaluatorModel>();
    m->policy_name = policy.name;
    m->defaults = policy.defaults;
    for (const auto& e : inventory.enforcers) {
        m->enforcers.insert(e.id);
    }

    // Segments and membership (the compiler's step 1).
    std::unordered_map<std::string, std::size_t> segment_index;
    for (std::size_t s = 0; s < policy.segments.size(); ++s) {
        segment_index.emplace(policy.segments[s].name, s);
        m->segments.push_back({policy.segments[s].name, policy.segments[s].decoy,
                               policy.segments[s].decoy && policy.segments[s].tripwire, {}});
        for (const auto& cidr : policy.segments[s].selector.cidrs) {
            m->segments[s].addresses.add(cidr);
        }
    }
    std::vector<std::vector<std::size_t>> workload_segments(inventory.workloads.size());
    for (std::size_t w = 0; w < inventory.workloads.size(); ++w) {
        const auto& workload = inventory.workloads[w];
        WorkloadInfo info;
        info.id = workload.id;
        info.enforcer = workload.enforcer;
        info.managed = !workload.enforcer.empty() && workload.attachment.has_value();
        info.mode = workload.attachment ? workload.attachment->mode : AttachmentMode::Port;
        m->workloads.push_back(info);
        m->workload_index.emplace(workload.id, w);
        for (const auto& a : workload.addresses) {
            auto& list = m->by_address[a];
            if (std::find(list.begin(), list.end(), w) == list.end()) {
                list.push_back(w);
            }
        }
        if (info.managed && info.mode == AttachmentMode::Host) {
            m->host_workload.emplace(workload.enforcer, w);
        }
        for (std::size_t s = 0; s < policy.segments.size(); ++s) {
            if (selector_matches(policy.segments[s].selector, workload)) {
                workload_segments[w].push_back(s);
                for (const auto& a : workload.addresses) {
                    m->segments[s].addresses.add(host_range(a));
                }
            }
        }
    }
    for (auto& s : m->segments) {
        s.addresses.finish();
    }
    // Armed tripwires, as the compiler decides them (tripwire_arming).
    const bool tripwires =
        std::any_of(policy.segments.begin(), policy.segments.end(), [](const Segment& s) { return s.decoy && s.tripwire; }) ||
        std::any_of(policy.rules.begin(), policy.rules.end(),
                    [](const Rule& r) { return r.tripwire && r.action == RuleAction::Deny; });
    m->tripwires = tripwires;
    for (std::size_t w = 0; tripwires && w < inventory.workloads.size(); ++w) {
        auto& info = m->workloads[w];
        std::vector<std::string> names;
        for (auto s : workload_segments[w]) {
            names.push_back(policy.segments[s].name);
        }
        const bool armed = ruleset::tripwire_arming(policy, inventory.workloads[w], names).armed;
        info.spared = !armed;
        if (info.managed && info.mode == AttachmentMode::Port) {
            info.armed = armed;
        }
        if (info.managed && info.mode == AttachmentMode::Host) {
            // The server is not what is contained: its own critical flag does not disarm it.
            policy::Workload as_protector = inventory.workloads[w];
            as_protector.critical = false;
            info.host_armed = ruleset::tripwire_arming(policy, as_protector, names).armed;
        }
    }
    auto indices = [&](const std::vector<std::string>& names) {
        std::vector<std::size_t> out;
        for (const auto& n : names) {
            if (auto it = segment_index.find(n); it != segment_index.end()) {
                out.push_back(it->second);
            }
        }
        return out;
    };

    // Services (the compiler's step 2).
    std::unordered_map<std::string, Services> services;
    services["any"].ports.push_back({{0, 255}, {0, 65535}});
    for (const auto& service : policy.services) {
        auto& expanded = services[service.name];
        for (const auto& entry : service.entries) {
            switch (entry.protocol) {
            case Protocol::Tcp:
            case Protocol::Udp:
            case Protocol::Sctp: {
                const std::uint32_t number = protocol_number(entry.protocol);
                if (entry.ports.empty()) {
                    expanded.ports.push_back({{number, number}, {0, 65535}});
                }
                for (const auto& p : entry.ports) {
                    expanded.ports.push_back({{number, number}, p});
                }
                break;
            }
            case Protocol::Icmp:
            case Protocol::Icmpv6: {
                auto& list = entry.protocol == Protocol::Icmp ? expanded.icmp4 : expanded.icmp6;
                if (entry.icmp_types.empty()) {
                    list.push_back({0, 255});
                }
                list.insert(list.end(), entry.icmp_types.begin(), entry.icmp_types.end());
                break;
            }
            case Protocol::Any: expanded.ports.push_back({{0, 255}, {0, 65535}}); break;
            }
        }
    }
    auto services_of = [&](const std::vector<std::string>& names) {
        Services merged;
        for (const auto& n : names) {
            if (auto it = services.find(n); it != services.end()) {
                merged.add(it->second);
            }
        }
        return merged;
    };
    for (const auto& rule : policy.rules) {
        m->rules.push_back({rule.name, rule.action, rule.tripwire && rule.action == RuleAction::Deny,
                            indices(rule.from), indices(rule.to), services_of(rule.services)});
    }
    for (std::size_t i = 0; i < policy.quarantine.allow.size(); ++i) {
        const auto& g = policy.quarantine.allow[i];
        m->grants_to.push_back({"quarantine.allow[" + std::to_string(i) + "]", indices(g.segments), services_of(g.services)});
    }
    for (std::size_t i = 0; i < policy.quarantine.allow_from.size(); ++i) {
        const auto& g = policy.quarantine.allow_from[i];
        m->grants_from.push_back({"quarantine.allow_from[" + std::to_string(i) + "]", indices(g.segments), services_of(g.services)});
    }

    // Policy classes, named exactly as the compiler names them (its step 3): ordered by
    // membership, "c" + FNV-1a of the segment names, widened on a 32-bit collision.
    std::map<std::vector<std::size_t>, std::size_t> class_by_segments;
    for (std::size_t w = 0; w < m->workloads.size(); ++w) {
        if (m->workloads[w].managed) {
            class_by_segments.emplace(workload_segments[w], 0);
        }
    }
    PolicyClassNamer namer;  // the compiler's class names
    for (auto& [segments, index] : class_by_segments) {
        const std::string name = namer.name(segments, policy);
        index = m->classes.size();
        ClassInfo c{name, segments, {}};
        for (auto s : segments) {
            if (policy.segments[s].decoy) {
                c.decoy_segments.push_back(policy.segments[s].name);
            }
        }
        sort_unique(c.decoy_segments);
        m->classes.push_back(std::move(c));
    }
    for (std::size_t w = 0; w < m->workloads.size(); ++w) {
        if (m->workloads[w].managed) {
            m->workloads[w].policy_class = class_by_segments.at(workload_segments[w]);
        }
    }
    model_ = std::move(m);
}

std::expected<Decision, std::string> PolicyEvaluator::evaluate(
    const Attempt& attempt, const std::set<std::string>& quarantined) const {
    const auto& m = *model_;
    if (attempt.source.address.family != attempt.destination.address.family) {
        return std::unexpected("source " + to_string(attempt.source.address) + " and destination " +
                               to_string(attempt.destination.address) + " are of different address families");
    }
    std::vector<std::string> notes;
    const Place s = resolve(m, attempt.source, "source", notes);
    const Place d = resolve(m, attempt.destination, "destination", notes);
    const Evaluation e{m, attempt, quarantined, attempt.source.address.family};
    std::vector<Check> checks;
    for (const auto& t : e.path(s, d)) {
        if (!e.run(t, checks)) {
            break;
        }
    }
    Decision decision = decide(std::move(checks));
    decision.source_workload = s.workload == none ? "" : m.workloads[s.workload].id;
    decision.destination_workload = d.workload == none ? "" : m.workloads[d.workload].id;
    decision.notes = std::move(notes);
    return decision;
}

std::string PolicyEvaluator::class_of(std::string_view workload) const {
    auto it = model_->workload_index.find(std::string(workload));
    if (it == model_->workload_index.end() || model_->workloads[it->second].policy_class == none) {
        return "";
    }
    return model_->classes[model_->workloads[it->second].policy_class].name;
}

const std::string& PolicyEvaluator::policy_name() const { return model_->policy_name; }

Mode PolicyEvaluator::mode() const { return model_->defaults.mode; }

WhatIfSummary what_if(const PolicyEvaluator& active, const PolicyEvaluator& draft,
                      const std::vector<Attempt>& attempts, const std::set<std::string>& quarantined) {
    WhatIfSummary out;
    out.total = attempts.size();
    std::map<std::tuple<Change, Reason, std::vector<std::string>>, std::vector<std::size_t>> groups;
    for (std::size_t i = 0; i < attempts.size(); ++i) {
        auto before = active.evaluate(attempts[i], quarantined);
        auto after = draft.evaluate(attempts[i], quarantined);
        if (!before || !after) {
            out.invalid.emplace_back(i, before ? after.error() : before.error());
            continue;
        }
        const Verdict a = before->verdict;
        const Verdict b = after->verdict;
        if (a == b) {
            ++out.unchanged;
            continue;
        }
        Change change;
        if (b == Verdict::Allow) {
            change = Change::NewlyAllowed;
            ++out.newly_allowed;
        } else if (a == Verdict::Allow) {
            change = Change::NewlyBlocked;
            ++out.newly_blocked;
        } else if (b == Verdict::Drop) {
            change = Change::NewlyEnforced;
            ++out.newly_enforced;
        } else {
            change = Change::NewlyMonitored;
            ++out.newly_monitored;
        }
        groups[{change, after->reason, after->rules}].push_back(i);
        out.changes.push_back({i, change, std::move(*before), std::move(*after)});
    }
    for (auto& [key, list] : groups) {
        out.groups.push_back({std::get<0>(key), std::get<1>(key), std::get<2>(key), list.size(), std::move(list)});
    }
    std::stable_sort(out.groups.begin(), out.groups.end(),
                     [](const ChangeGroup& x, const ChangeGroup& y) { return x.count > y.count; });
    return out;
}

}  // namespace bulkhead::policy
