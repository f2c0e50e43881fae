#include "policies/ruleset_compiler.hpp"

#include "policies/policy_classes.hpp"

#include "policies/element_builder.hpp"

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <unordered_map>

namespace bulkhead::ruleset {
namespace {

using policy::AttachmentMode;
using policy::Family;
using policy::Mode;
using policy::Protocol;
using policy::RuleAction;

constexpr NumberRange all_ports{0, 65535};
constexpr NumberRange all_protocols{0, 255};
constexpr NumberRange all_types{0, 255};

// A service line expanded to what the sets key on.
struct ServiceRects {
    std::vector<Box> ports;         // address left empty: (proto, port)
    std::vector<NumberRange> icmp4;  // ICMP types
    std::vector<NumberRange> icmp6;
};

// The four set kinds of one direction and verdict.
struct BoxLists {
    std::vector<Box> ports4, ports6, icmp4, icmp6;
    void add(const std::vector<IpRange>& addresses, const ServiceRects& service) {
        for (const auto& a : addresses) {
            auto& ports = a.family() == Family::Ipv4 ? ports4 : ports6;
            for (const auto& p : service.ports) {
                ports.push_back({a, p.second, p.third});
            }
            const auto& types = a.family() == Family::Ipv4 ? service.icmp4 : service.icmp6;
            auto& icmp = a.family() == Family::Ipv4 ? icmp4 : icmp6;
            for (const auto& t : types) {
                icmp.push_back({a, t, {}});
            }
        }
    }
};

struct SetGroup {
    std::shared_ptr<const ElementList> ports4, ports6, icmp4, icmp6;
};

SetGroup build(BoxLists lists) {
    auto share = [](ElementList e) { return std::make_shared<const ElementList>(std::move(e)); };
    return {share(disjoint_elements(std::move(lists.ports4), true)),
            share(disjoint_elements(std::move(lists.ports6), true)),
            share(disjoint_elements(std::move(lists.icmp4), false)),
            share(disjoint_elements(std::move(lists.icmp6), false))};
}

// A rule's peer segment too large to cross into per-class sets: the class looks the
// peer up in the host-wide address set of the segment and the services in its own small
// set, so adding a member adds one element per host, not one per class and service.
struct SegmentReference {
    bool outbound = true;
    bool deny = false;
    bool tripwire = false;  // a deny reference of tripwire rules only (also present as deny)
    std::size_t segment = 0;
    std::string segment_name;
    std::shared_ptr<const ElementList> services;  // inet_proto . inet_service
    std::shared_ptr<const ElementList> icmp4, icmp6;
};

struct PolicyClass {
    std::string name;
    std::vector<std::size_t> segments;  // sorted indices
    bool decoy = false;                 // contains a decoy segment: every touch is logged
    std::string comment;
    SetGroup out_allow, out_deny, in_allow, in_deny;
    SetGroup out_tripwire;  // what tripwire rules deny this class outbound (also in out_deny)
    // Host mode (a server protecting itself): what tripwire rules deny towards this class
    // (also in in_deny), armed only for classes with host-mode members, and whether the
    // class holds a tripwire decoy (every inbound packet trips it).
    bool host_members = false;
    bool tripwire_decoy = false;
    SetGroup in_tripwire;
    std::vector<SegmentReference> references;  // sorted: direction, verdict, segment name
};

// (proto, port) rectangles -> disjoint two-part elements.
ElementList service_elements(const std::vector<Box>& rects) {
    std::vector<Box> boxes;
    const IpRange anywhere{policy::IpAddress{}, policy::IpAddress{}};
    for (const auto& r : rects) {
        boxes.push_back({anywhere, r.second, r.third});
    }
    auto elements = disjoint_elements(std::move(boxes), true);
    for (auto& e : elements) {
        e.key.erase(e.key.begin());
    }
    return elements;
}

ElementList number_elements(std::vector<NumberRange> ranges) {
    std::sort(ranges.begin(), ranges.end());
    ElementList out;
    for (const auto& r : ranges) {
        if (!out.empty()) {
            auto& last = std::get<NumberRange>(out.back().key[0]);
            if (r.low <= last.high + 1) {
                last.high = std::max(last.high, r.high);
                continue;
            }
        }
        out.push_back(Element{{r}, {}});
    }
    return out;
}

SetDefinition make_set(std::string name, std::vector<KeyType> key, bool interval,
                       std::shared_ptr<const ElementList> elements, std::string comment = {}) {
    SetDefinition s;
    s.name = std::move(name);
    s.key = std::move(key);
    s.interval = interval;
    s.comment = std::move(comment);
    if (elements) {
        s.elements = std::move(elements);
    }
    return s;
}

Rule lookup_rule(std::vector<Field> fields, std::string set) {
    Rule r;
    r.matches.push_back(SetLookup{std::move(fields), std::move(set)});
    return r;
}

}  // namespace

std::string log_prefix(Mode mode, std::string_view direction, std::string_view reason,
                       std::string_view subject) {
    std::string out = "bh:";
    out += mode == Mode::Monitor ? "mon" : "enf";
    out += ':';
    out += direction;
    out += ':';
    out += reason;
    out += ':';
    out += subject;
    return out;
}

std::optional<LogPrefixParts> parse_log_prefix(std::string_view prefix) {
    std::vector<std::string_view> parts;
    std::size_t start = 0;
    while (parts.size() < 4) {
        auto colon = prefix.find(':', start);
        if (colon == std::string_view::npos) {
            return std::nullopt;
        }
        parts.push_back(prefix.substr(start, colon - start));
        start = colon + 1;
    }
    parts.push_back(prefix.substr(start));
    if (parts[0] != "bh" || (parts[1] != "enf" && parts[1] != "mon") ||
        (parts[2] != "out" && parts[2] != "in") || parts[3].empty() || parts[4].empty()) {
        return std::nullopt;
    }
    // "unidentified": the enforcer's own rules for VM ports whose MAC no workload has
    // (enforcer/ports/port_discovery.hpp).
    static constexpr std::array reasons{"default", "deny",  "decoy", "tripwire",
                                        "quarantine", "spoof", "allow", "unidentified"};
    if (std::find(reasons.begin(), reasons.end(), parts[3]) == reasons.end()) {
        return std::nullopt;
    }
    return LogPrefixParts{parts[1] == "mon" ? Mode::Monitor : Mode::Enforce, std::string(parts[2]),
                          std::string(parts[3]), std::string(parts[4])};
}

// Lets the by-enforcer index be searched with the string_view compile() receives.
struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view text) const { return std::hash<std::string_view>{}(text); }
};

struct RulesetCompiler::Resolved {
    policy::Defaults defaults;
    std::string policy_name;
    std::vector<std::string> enforcers;
    policy::Inventory inventory;  // a copy: the compiler outlives its inputs
    std::vector<std::size_t> workload_class;  // per workload, index into classes (or npos)
    std::vector<PolicyClass> classes;
    std::unordered_map<std::string, std::size_t> workload_index;
    std::shared_ptr<const ElementList> decoys4, decoys6;
    // Tripwires: whether the policy declares any, the decoy addresses that are tripwires,
    // and per workload whether the guardrails let the kernel contain it.
    bool tripwires = false;
    std::shared_ptr<const ElementList> tripwire_decoys4, tripwire_decoys6;
    std::vector<bool> workload_armed;
    // Host-mode tripwires: per workload whether its host-mode tripwires block sources, and
    // the addresses of workloads the guardrails forbid the kernel to contain (spared).
    std::vector<bool> host_armed;
    std::shared_ptr<const ElementList> tripwire_spared4, tripwire_spared6;
    std::vector<std::string> segment_names;
    std::vector<std::vector<std::size_t>> workload_segments;  // per workload, its segments' indices in order
    // Host-wide address sets of shared (large) segments, by segment index; null if small.
    std::vector<std::shared_ptr<const ElementList>> segment_addresses4, segment_addresses6;
    SetGroup quarantine_to, quarantine_from;
    std::shared_ptr<const ElementList> quarantine_to_hosts4, quarantine_to_hosts6;
    std::shared_ptr<const ElementList> quarantine_from_hosts4, quarantine_from_hosts6;
    // Workload indices by enforcer, in inventory order: a host's compile visits its own
    // workloads, not the fleet's.
    std::unordered_map<std::string, std::vector<std::size_t>, StringHash, std::equal_to<>> workloads_by_enforcer;
    // A class's sets and chains are the same on every host that holds it: built once, on
    // first use, and copied into each host's ruleset.
    struct ClassPieces {
        std::once_flag built;
        std::vector<SetDefinition> sets;
        std::vector<Chain> chains;
    };
    std::vector<std::unique_ptr<ClassPieces>> class_pieces;  // by class index
};

RulesetCompiler::RulesetCompiler(const policy::Policy& policy, const policy::Inventory& inventory,
                                 CompilerOptions options)
    : resolved_(std::make_unique<Resolved>()) {
    auto& r = *resolved_;
    r.defaults = policy.defaults;
    r.policy_name = policy.name;
    r.inventory = inventory;
    for (const auto& e : inventory.enforcers) {
        r.enforcers.push_back(e.id);
    }
    std::sort(r.enforcers.begin(), r.enforcers.end());

    // 1. Segment membership and addresses.
    std::unordered_map<std::string, std::size_t> segment_index;
    for (std::size_t s = 0; s < policy.segments.size(); ++s) {
        segment_index.emplace(policy.segments[s].name, s);
    }
    std::vector<std::vector<IpRange>> segment_addresses(policy.segments.size());

    auto& workload_segments = r.workload_segments;
    workload_segments.resize(inventory.workloads.size());
    for (std::size_t w = 0; w < inventory.workloads.size(); ++w) {
        const auto& workload = inventory.workloads[w];
        r.workload_index.emplace(workload.id, w);
        for (std::size_t s = 0; s < policy.segments.size(); ++s) {
            if (policy::selector_matches(policy.segments[s].selector, workload)) {
                workload_segments[w].push_back(s);
                for (const auto& a : workload.addresses) {
                    segment_addresses[s].push_back(policy::host_range(a));
                }
            }
        }
    }
    for (std::size_t s = 0; s < policy.segments.size(); ++s) {
        const auto& cidrs = policy.segments[s].selector.cidrs;
        segment_addresses[s].insert(segment_addresses[s].end(), cidrs.begin(), cidrs.end());
    }
    auto split_family = [](const std::vector<IpRange>& all, Family family) {
        std::vector<IpRange> out;
        std::copy_if(all.begin(), all.end(), std::back_inserter(out),
                     [&](const IpRange& a) { return a.family() == family; });
        return out;
    };
    auto share = [](ElementList e) { return std::make_shared<const ElementList>(std::move(e)); };
    r.segment_addresses4.resize(policy.segments.size());
    r.segment_addresses6.resize(policy.segments.size());
    for (std::size_t s = 0; s < policy.segments.size(); ++s) {
        r.segment_names.push_back(policy.segments[s].name);
        const auto& selector = policy.segments[s].selector;
        const bool membership = !selector.labels.empty() || !selector.workloads.empty();
        if (membership && options.share_membership_segments) {
            r.segment_addresses4[s] = share(merged_address_elements(split_family(segment_addresses[s], Family::Ipv4)));
            r.segment_addresses6[s] = share(merged_address_elements(split_family(segment_addresses[s], Family::Ipv6)));
        }
    }
    auto addresses_of = [&](const std::vector<std::string>& names) {
        std::vector<IpRange> out;
        for (const auto& name : names) {
            auto it = segment_index.find(name);
            if (it != segment_index.end()) {
                const auto& a = segment_addresses[it->second];
                out.insert(out.end(), a.begin(), a.end());
            }
        }
        return out;
    };

    // 2. Services expanded once.
    std::unordered_map<std::string, ServiceRects> services;
    services["any"].ports.push_back({{}, all_protocols, all_ports});
    for (const auto& service : policy.services) {
        auto& rects = services[service.name];
        for (const auto& entry : service.entries) {
            switch (entry.protocol) {
            case Protocol::Tcp:
            case Protocol::Udp:
            case Protocol::Sctp: {
                const auto number = policy::protocol_number(entry.protocol);
                const NumberRange proto{number, number};
                if (entry.ports.empty()) {
                    rects.ports.push_back({{}, proto, all_ports});
                }
                for (const auto& p : entry.ports) {
                    rects.ports.push_back({{}, proto, p});
                }
                break;
            }
            case Protocol::Icmp:
            case Protocol::Icmpv6: {
                auto& list = entry.protocol == Protocol::Icmp ? rects.icmp4 : rects.icmp6;
                if (entry.icmp_types.empty()) {
                    list.push_back(all_types);
                }
                list.insert(list.end(), entry.icmp_types.begin(), entry.icmp_types.end());
                break;
            }
            case Protocol::Any: rects.ports.push_back({{}, all_protocols, all_ports}); break;
            }
        }
    }
    auto rule_services = [&](const std::vector<std::string>& names) {
        ServiceRects merged;
        for (const auto& name : names) {
            auto it = services.find(name);
            if (it == services.end()) {
                continue;
            }
            merged.ports.insert(merged.ports.end(), it->second.ports.begin(), it->second.ports.end());
            merged.icmp4.insert(merged.icmp4.end(), it->second.icmp4.begin(), it->second.icmp4.end());
            merged.icmp6.insert(merged.icmp6.end(), it->second.icmp6.begin(), it->second.icmp6.end());
        }
        return merged;
    };
    struct ExpandedRule {
        RuleAction action;
        bool tripwire;
        std::vector<std::size_t> from, to;
        ServiceRects services;
    };
    std::vector<ExpandedRule> rules;
    for (const auto& rule : policy.rules) {
        const bool tripwire = rule.tripwire && rule.action == RuleAction::Deny;
        r.tripwires = r.tripwires || tripwire;
        ExpandedRule e{rule.action, tripwire, {}, {}, rule_services(rule.services)};
        for (const auto& n : rule.from) {
            if (auto it = segment_index.find(n); it != segment_index.end()) {
                e.from.push_back(it->second);
            }
        }
        for (const auto& n : rule.to) {
            if (auto it = segment_index.find(n); it != segment_index.end()) {
                e.to.push_back(it->second);
            }
        }
        rules.push_back(std::move(e));
    }

    // 3. Policy classes: one per distinct segment membership among attached workloads.
    std::map<std::vector<std::size_t>, std::size_t> class_by_segments;
    std::set<std::vector<std::size_t>> host_memberships;  // classes with host-mode members
    r.workload_class.assign(inventory.workloads.size(), std::string::npos);
    for (std::size_t w = 0; w < inventory.workloads.size(); ++w) {
        const auto& workload = inventory.workloads[w];
        if (workload.enforcer.empty() || !workload.attachment) {
            continue;
        }
        if (workload.attachment->mode == AttachmentMode::Host) {
            host_memberships.insert(workload_segments[w]);
        }
        auto [it, inserted] = class_by_segments.emplace(workload_segments[w], 0);
        r.workload_class[w] = 0;  // fixed up below once classes are ordered
        (void)inserted;
    }
    policy::PolicyClassNamer namer;
    for (auto& [segments, index] : class_by_segments) {
        const std::string name = namer.name(segments, policy);
        index = r.classes.size();
        PolicyClass c;
        c.name = name;
        c.segments = segments;
        c.host_members = host_memberships.contains(segments);
        for (auto s : segments) {
            c.decoy = c.decoy || policy.segments[s].decoy;
            c.tripwire_decoy = c.tripwire_decoy || (policy.segments[s].decoy && policy.segments[s].tripwire);
            c.comment += (c.comment.empty() ? "" : ", ") + policy.segments[s].name;
        }
        c.comment = c.comment.empty() ? "in no segment" : "segments: " + c.comment;
        BoxLists out_allow, out_deny, in_allow, in_deny, out_tripwire, in_tripwire;
        auto member = [&](const std::vector<std::size_t>& list) {
            return std::any_of(list.begin(), list.end(), [&](std::size_t s) {
                return std::binary_search(segments.begin(), segments.end(), s);
            });
        };
        // (outbound, deny, segment) -> the services of every rule reaching that segment.
        std::map<std::tuple<bool, bool, bool, std::string>, std::pair<std::size_t, ServiceRects>>
            references;
        auto add_peers = [&](const std::vector<std::size_t>& peers, const ServiceRects& granted,
                             bool outbound, bool deny, BoxLists& crossed, bool tripwire = false) {
            for (auto peer : peers) {
                if (r.segment_addresses4[peer]) {
                    auto& [segment_index_of_ref, merged] =
                        references[{outbound, deny, tripwire, policy.segments[peer].name}];
                    segment_index_of_ref = peer;
                    merged.ports.insert(merged.ports.end(), granted.ports.begin(), granted.ports.end());
                    merged.icmp4.insert(merged.icmp4.end(), granted.icmp4.begin(), granted.icmp4.end());
                    merged.icmp6.insert(merged.icmp6.end(), granted.icmp6.begin(), granted.icmp6.end());
                } else {
                    crossed.add(segment_addresses[peer], granted);
                }
            }
        };
        for (const auto& rule : rules) {
            const bool deny = rule.action == RuleAction::Deny;
            if (member(rule.from)) {
                add_peers(rule.to, rule.services, true, deny, deny ? out_deny : out_allow);
                if (rule.tripwire) {
                    add_peers(rule.to, rule.services, true, true, out_tripwire, true);
                }
            }
            if (member(rule.to)) {
                add_peers(rule.from, rule.services, false, deny, deny ? in_deny : in_allow);
                if (rule.tripwire && c.host_members) {
                    add_peers(rule.from, rule.services, false, true, in_tripwire, true);
                }
            }
        }
        for (auto& [reference_key, value] : references) {
            auto& [referenced_segment, merged] = value;
            c.references.push_back(SegmentReference{
                std::get<0>(reference_key), std::get<1>(reference_key), std::get<2>(reference_key),
                referenced_segment, std::get<3>(reference_key),
                std::make_shared<const ElementList>(service_elements(merged.ports)),
                std::make_shared<const ElementList>(number_elements(merged.icmp4)),
                std::make_shared<const ElementList>(number_elements(merged.icmp6))});
        }
        c.out_allow = build(std::move(out_allow));
        c.out_deny = build(std::move(out_deny));
        c.in_allow = build(std::move(in_allow));
        c.in_deny = build(std::move(in_deny));
        c.out_tripwire = build(std::move(out_tripwire));
        c.in_tripwire = build(std::move(in_tripwire));
        r.classes.push_back(std::move(c));
    }
    for (std::size_t w = 0; w < inventory.workloads.size(); ++w) {
        if (r.workload_class[w] != std::string::npos) {
            r.workload_class[w] = class_by_segments.at(workload_segments[w]);
        }
    }

    // 4. Fleet-wide sets: decoys and the quarantine allow-list.
    std::vector<IpRange> decoys;
    for (std::size_t s = 0; s < policy.segments.size(); ++s) {
        if (policy.segments[s].decoy) {
            decoys.insert(decoys.end(), segment_addresses[s].begin(), segment_addresses[s].end());
        }
    }
    r.decoys4 = share(merged_address_elements(split_family(decoys, Family::Ipv4)));
    r.decoys6 = share(merged_address_elements(split_family(decoys, Family::Ipv6)));
    std::vector<IpRange> tripwire_decoys;
    for (std::size_t s = 0; s < policy.segments.size(); ++s) {
        if (policy.segments[s].decoy && policy.segments[s].tripwire) {
            r.tripwires = true;
            tripwire_decoys.insert(tripwire_decoys.end(), segment_addresses[s].begin(),
                                   segment_addresses[s].end());
        }
    }
    r.tripwire_decoys4 = share(merged_address_elements(split_family(tripwire_decoys, Family::Ipv4)));
    r.tripwire_decoys6 = share(merged_address_elements(split_family(tripwire_decoys, Family::Ipv6)));
    r.workload_armed.assign(inventory.workloads.size(), false);
    r.host_armed.assign(inventory.workloads.size(), false);
    std::vector<IpRange> spared;
    if (r.tripwires) {
        for (std::size_t w = 0; w < inventory.workloads.size(); ++w) {
            std::vector<std::string> names;
            for (auto s : workload_segments[w]) {
                names.push_back(policy.segments[s].name);
            }
            const auto& workload = inventory.workloads[w];
            r.workload_armed[w] = tripwire_arming(policy, workload, names).armed;
            if (!r.workload_armed[w]) {
                // Never contained by the kernel: not from its own port, not as a source a
                // host-mode tripwire would block.
                for (const auto& a : workload.addresses) {
                    spared.push_back(policy::host_range(a));
                }
            }
            if (workload.attachment && workload.attachment->mode == AttachmentMode::Host) {
                // A server's tripwire contains the sender, not the server: the server's own
                // critical flag does not disarm it (a critical sender is spared instead).
                policy::Workload as_protector = workload;
                as_protector.critical = false;
                r.host_armed[w] = tripwire_arming(policy, as_protector, names).armed;
            }
        }
    }
    r.tripwire_spared4 = share(merged_address_elements(split_family(spared, Family::Ipv4)));
    r.tripwire_spared6 = share(merged_address_elements(split_family(spared, Family::Ipv6)));
    BoxLists to, from;
    std::vector<IpRange> to_hosts, from_hosts;
    for (const auto& grant : policy.quarantine.allow) {
        auto addresses = addresses_of(grant.segments);
        to.add(addresses, rule_services(grant.services));
        to_hosts.insert(to_hosts.end(), addresses.begin(), addresses.end());
    }
    for (const auto& grant : policy.quarantine.allow_from) {
        auto addresses = addresses_of(grant.segments);
        from.add(addresses, rule_services(grant.services));
        from_hosts.insert(from_hosts.end(), addresses.begin(), addresses.end());
    }
    r.quarantine_to = build(std::move(to));
    r.quarantine_from = build(std::move(from));
    r.quarantine_to_hosts4 = share(merged_address_elements(split_family(to_hosts, Family::Ipv4)));
    r.quarantine_to_hosts6 = share(merged_address_elements(split_family(to_hosts, Family::Ipv6)));
    r.quarantine_from_hosts4 = share(merged_address_elements(split_family(from_hosts, Family::Ipv4)));
    r.quarantine_from_hosts6 = share(merged_address_elements(split_family(from_hosts, Family::Ipv6)));

    for (std::size_t w = 0; w < inventory.workloads.size(); ++w) {
        if (!inventory.workloads[w].enforcer.empty()) {
            r.workloads_by_enforcer[inventory.workloads[w].enforcer].push_back(w);
        }
    }
    r.class_pieces.resize(r.classes.size());
    for (auto& pieces : r.class_pieces) {
        pieces = std::make_unique<Resolved::ClassPieces>();
    }
}

RulesetCompiler::~RulesetCompiler() = default;

std::vector<std::string> RulesetCompiler::enforcers() const { return resolved_->enforcers; }

std::vector<std::string> RulesetCompiler::enforcers_blocking_quarantined() const {
    const auto& r = *resolved_;
    std::set<std::string> out;
    if (r.tripwires) {
        for (std::size_t w = 0; w < r.inventory.workloads.size(); ++w) {
            const auto& workload = r.inventory.workloads[w];
            if (r.workload_class[w] != std::string::npos && workload.attachment->mode == AttachmentMode::Host) {
                out.insert(workload.enforcer);
            }
        }
    }
    return {out.begin(), out.end()};
}

std::vector<std::string> RulesetCompiler::segments_of(std::size_t workload) const {
    const auto& r = *resolved_;
    std::vector<std::string> names;
    if (workload < r.workload_segments.size()) {
        for (auto s : r.workload_segments[workload]) {
            names.push_back(r.segment_names[s]);
        }
    }
    return names;
}

std::string RulesetCompiler::class_of(std::string_view workload) const {
    const auto& r = *resolved_;
    auto it = r.workload_index.find(std::string(workload));
    if (it == r.workload_index.end() || r.workload_class[it->second] == std::string::npos) {
        return "";
    }
    return r.classes[r.workload_class[it->second]].name;
}

namespace {

const std::vector<KeyType> port_key4{KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService};
const std::vector<KeyType> port_key6{KeyType::Ipv6Addr, KeyType::InetProto, KeyType::InetService};
const std::vector<KeyType> icmp_key4{KeyType::Ipv4Addr, KeyType::IcmpType};
const std::vector<KeyType> icmp_key6{KeyType::Ipv6Addr, KeyType::Icmpv6Type};

// Adds the four sets of a group under `stem` ("c1234abcd_out_allow") to `sets`.
void add_group(std::vector<SetDefinition>& sets, const std::string& stem, const SetGroup& group,
               const std::string& comment) {
    sets.push_back(make_set(stem + "4", port_key4, true, group.ports4, comment));
    sets.push_back(make_set(stem + "6", port_key6, true, group.ports6, comment));
    sets.push_back(make_set(stem + "_icmp4", icmp_key4, true, group.icmp4, comment));
    sets.push_back(make_set(stem + "_icmp6", icmp_key6, true, group.icmp6, comment));
}

// The four lookups against a group, with the packet fields of the peer.
std::vector<Rule> group_lookups(const std::string& stem, bool peer_is_destination) {
    const Field addr4 = peer_is_destination ? Field::Ip4Daddr : Field::Ip4Saddr;
    const Field addr6 = peer_is_destination ? Field::Ip6Daddr : Field::Ip6Saddr;
    return {lookup_rule({addr4, Field::L4proto, Field::ThDport}, stem + "4"),
            lookup_rule({addr6, Field::L4proto, Field::ThDport}, stem + "6"),
            lookup_rule({addr4, Field::IcmpType}, stem + "_icmp4"),
            lookup_rule({addr6, Field::Icmpv6Type}, stem + "_icmp6")};
}

// Segment names may hold '-' and '.', which set names avoid (the interchange format keeps
// identifiers to [A-Za-z0-9_]): such a name is spelled with '_' and suffixed with a hash of
// the original, so "file-servers" and "file_servers" never meet.
std::string identifier_for(const std::string& name) {
    std::string out;
    bool changed = false;
    for (char c : name) {
        const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
        out.push_back(plain ? c : '_');
        changed = changed || !plain;
    }
    return changed ? out + "_" + policy::hex(policy::fnv1a32(name) & 0xffffff, 6) : out;
}

std::string segment_set_name(const std::string& segment, bool v6) {
    return "seg_" + identifier_for(segment) + (v6 ? "_6" : "_4");
}

std::string reference_stem(const std::string& class_name, const SegmentReference& ref) {
    return class_name + (ref.outbound ? "_out_" : "_in_") +
           (ref.tripwire ? "tripwire" : ref.deny ? "deny" : "allow") + "_seg_" +
           identifier_for(ref.segment_name);
}

// The four lookups against a shared segment: the peer's address in the segment's
// host-wide set AND the packet's service in the class's own set for that segment.
std::vector<Rule> segment_lookups(const std::string& class_name, const SegmentReference& ref) {
    const std::string stem = reference_stem(class_name, ref);
    const Field addr4 = ref.outbound ? Field::Ip4Daddr : Field::Ip4Saddr;
    const Field addr6 = ref.outbound ? Field::Ip6Daddr : Field::Ip6Saddr;
    auto two = [](Field address, std::string address_set, std::vector<Field> service,
                  std::string service_set) {
        Rule r;
        r.matches.push_back(SetLookup{{address}, std::move(address_set)});
        r.matches.push_back(SetLookup{std::move(service), std::move(service_set)});
        return r;
    };
    return {two(addr4, segment_set_name(ref.segment_name, false), {Field::L4proto, Field::ThDport}, stem),
            two(addr6, segment_set_name(ref.segment_name, true), {Field::L4proto, Field::ThDport}, stem),
            two(addr4, segment_set_name(ref.segment_name, false), {Field::IcmpType}, stem + "_icmp4"),
            two(addr6, segment_set_name(ref.segment_name, true), {Field::Icmpv6Type}, stem + "_icmp6")};
}

struct ChainBuilder {
    const policy::Defaults& defaults;
    bool tripwires = false;  // the policy declares tripwires: emit the armed rules
    bool tripwire_decoys = false;

    // A tripwire (in <class>_out_tripwire, entered only from a port the guardrails armed,
    // `@tripwire_ports`): the matching packet puts its own input port into
    // `@quarantined_ports`, is logged as "tripwire" and dropped. The port's next packet, to
    // anything and on any connection, meets the quarantine chain. Unarmed ports pay one
    // lookup and go on to the ordinary decoy or deny rules.
    Rule tripwire(Rule lookup, std::string_view subject) const {
        Rule r;
        for (auto& m : lookup.matches) {
            r.matches.push_back(std::move(m));
        }
        r.update = SetUpdate{{Field::Iifname}, "quarantined_ports"};
        r.counter = true;
        r.log = LogAction{log_prefix(Mode::Enforce, "out", "tripwire", subject), defaults.log_group};
        r.verdict = {VerdictKind::Drop, ""};
        return r;
    }

    // Host mode: the matching packet puts its own source address into
    // `@blocked_sources4/6` (which the input chain drops before anything else), is logged as
    // "tripwire" (direction in: towards the server behind the input interface) and dropped.
    Rule host_tripwire(Rule lookup, bool v6, std::string_view subject) const {
        Rule r;
        for (auto& m : lookup.matches) {
            r.matches.push_back(std::move(m));
        }
        r.update = v6 ? SetUpdate{{Field::Ip6Saddr}, "blocked_sources6"} : SetUpdate{{Field::Ip4Saddr}, "blocked_sources4"};
        r.counter = true;
        r.log = LogAction{log_prefix(Mode::Enforce, "in", "tripwire", subject), defaults.log_group};
        r.verdict = {VerdictKind::Drop, ""};
        return r;
    }

    // A drop (or, in monitor mode, a would-drop that logs and returns).
    Rule finish_drop(Rule r, std::string_view direction, std::string_view reason,
                     std::string_view subject, bool always_enforce = false) const {
        const Mode mode = always_enforce ? Mode::Enforce : defaults.mode;
        r.counter = true;
        if (defaults.log_drops || always_enforce) {
            r.log = LogAction{log_prefix(mode, direction, reason, subject), defaults.log_group};
        }
        r.verdict = {mode == Mode::Monitor ? VerdictKind::Return : VerdictKind::Drop, ""};
        return r;
    }

    static Rule jump_to(Field field, std::string set, std::string target) {
        Rule r = lookup_rule({field}, std::move(set));
        r.verdict = {VerdictKind::Jump, std::move(target)};
        return r;
    }

    // A packet from a port whose source is not its workload's (entered from
    // `@guarded_ports`): dropped and logged with reason spoof (a would-drop in monitor mode).
    // A port whose workload has a MAC in the inventory is checked for it first
    // (`@mac_guarded_ports`); a port without one has its addresses checked only.
    Chain spoof_guard_chain() const {
        Chain chain;
        chain.name = "spoof_guard";
        auto own = [](std::vector<Field> fields, std::string set) {
            Rule r = lookup_rule(std::move(fields), std::move(set));
            r.verdict = {VerdictKind::Return, ""};
            return r;
        };
        chain.rules.push_back(jump_to(Field::Iifname, "mac_guarded_ports", "spoof_guard_mac"));
        chain.rules.push_back(own({Field::Iifname, Field::Ip4Saddr}, "port_sources4"));
        chain.rules.push_back(own({Field::Iifname, Field::Ip6Saddr}, "port_sources6"));
        chain.rules.push_back(own({Field::Ip6Saddr}, "link_sources6"));
        Rule dhcp = own({Field::Ip4Saddr}, "dhcp_sources4");
        dhcp.matches.push_back(ValueMatch{Field::L4proto, {{17, 17}}});
        dhcp.matches.push_back(ValueMatch{Field::ThDport, {{67, 67}}});
        chain.rules.push_back(std::move(dhcp));
        chain.rules.push_back(finish_drop(Rule{}, "out", "spoof", "q"));
        return chain;
    }

    // A frame whose source MAC is not its port's workload's. DHCP (from 0.0.0.0) and
    // neighbour discovery (from ::) come from the workload's own MAC, so they pass here.
    Chain spoof_guard_mac_chain() const {
        Chain chain;
        chain.name = "spoof_guard_mac";
        Rule own = lookup_rule({Field::Iifname, Field::EtherSaddr}, "port_macs");
        own.verdict = {VerdictKind::Return, ""};
        chain.rules.push_back(std::move(own));
        chain.rules.push_back(finish_drop(Rule{}, "out", "spoof", "q"));
        return chain;
    }

    // Every tripwire of a class, outbound; reached only from armed ports.
    Chain tripwire_chain(const PolicyClass& c) const {
        Chain chain;
        chain.name = c.name + "_out_tripwire";
        if (tripwire_decoys) {
            chain.rules.push_back(tripwire(lookup_rule({Field::Ip4Daddr}, "tripwire_decoys4"), c.name));
            chain.rules.push_back(tripwire(lookup_rule({Field::Ip6Daddr}, "tripwire_decoys6"), c.name));
        }
        auto rules = group_lookups(chain.name, true);
        for (const auto& ref : c.references) {
            if (ref.outbound && ref.tripwire) {
                for (auto& r : segment_lookups(c.name, ref)) {
                    rules.push_back(std::move(r));
                }
            }
        }
        for (auto& r : rules) {
            chain.rules.push_back(tripwire(std::move(r), c.name));
        }
        return chain;
    }

    // Every host-mode tripwire of a class, inbound; entered from the input chain for an armed
    // server's interface (`@host_tripwires`). A sender the guardrails spare returns here and
    // meets the class chain's ordinary deny rules, which log and drop without containing.
    Chain host_tripwire_chain(const PolicyClass& c) const {
        Chain chain;
        chain.name = c.name + "_in_tripwire";
        for (auto [field, set] : {std::pair{Field::Ip4Saddr, "tripwire_spared4"}, std::pair{Field::Ip6Saddr, "tripwire_spared6"}}) {
            Rule spare = lookup_rule({field}, set);
            spare.verdict = {VerdictKind::Return, ""};
            chain.rules.push_back(std::move(spare));
        }
        if (c.tripwire_decoy) {
            // A decoy server: any packet to it is the proof.
            chain.rules.push_back(host_tripwire(Rule{}, false, c.name));
            chain.rules.push_back(host_tripwire(Rule{}, true, c.name));
        }
        auto rules = group_lookups(chain.name, false);
        for (const auto& ref : c.references) {
            if (!ref.outbound && ref.tripwire) {
                for (auto& r : segment_lookups(c.name, ref)) {
                    rules.push_back(std::move(r));
                }
            }
        }
        for (auto& r : rules) {
            // Each lookup reads one family's source address (ip saddr or ip6 saddr).
            const auto& first = std::get<SetLookup>(r.matches.front());
            const bool v6 = first.fields.front() == Field::Ip6Saddr;
            chain.rules.push_back(host_tripwire(std::move(r), v6, c.name));
        }
        return chain;
    }

    // A packet from a blocked source (a host-mode tripwire's, or a quarantined workload's):
    // what the quarantine grants let a quarantined workload reach passes, anything else is
    // dropped and logged (enforced even in monitor mode, as the quarantine chains are).
    Chain blocked_source_chain() const {
        Chain chain;
        chain.name = "blocked_source";
        for (auto& r : group_lookups("quarantine_to", true)) {
            r.verdict = {VerdictKind::Accept, ""};
            chain.rules.push_back(std::move(r));
        }
        chain.rules.push_back(finish_drop(Rule{}, "in", "quarantine", "q", true));
        return chain;
    }

    Chain class_chain(const PolicyClass& c, bool outbound) const {
        const std::string direction = outbound ? "out" : "in";
        const std::string stem = c.name + "_" + direction;
        Chain chain;
        chain.name = stem;
        if (outbound && tripwires) {
            chain.rules.push_back(jump_to(Field::Iifname, "tripwire_ports", stem + "_tripwire"));
        }
        if (outbound) {
            chain.rules.push_back(
                finish_drop(lookup_rule({Field::Ip4Daddr}, "decoys4"), direction, "decoy", c.name));
            chain.rules.push_back(
                finish_drop(lookup_rule({Field::Ip6Daddr}, "decoys6"), direction, "decoy", c.name));
        } else if (c.decoy) {
            chain.rules.push_back(finish_drop(Rule{}, direction, "decoy", c.name));
        }
        auto lookups = [&](bool deny) {
            auto rules = group_lookups(stem + (deny ? "_deny" : "_allow"), outbound);
            for (const auto& ref : c.references) {
                if (ref.outbound == outbound && ref.deny == deny && !ref.tripwire) {
                    for (auto& r : segment_lookups(c.name, ref)) {
                        rules.push_back(std::move(r));
                    }
                }
            }
            return rules;
        };
        for (auto& r : lookups(true)) {
            chain.rules.push_back(finish_drop(std::move(r), direction, "deny", c.name));
        }
        for (auto& r : lookups(false)) {
            if (defaults.log_allowed) {
                r.log = LogAction{log_prefix(defaults.mode, direction, "allow", c.name),
                                  defaults.allowed_log_group};
            }
            r.verdict = {VerdictKind::Return, ""};
            chain.rules.push_back(std::move(r));
        }
        if (defaults.action == policy::DefaultAction::Deny) {
            chain.rules.push_back(finish_drop(Rule{}, direction, "default", c.name));
        }
        return chain;
    }

    // Quarantine is an incident response: enforced even when the policy only monitors.
    Chain quarantine_chain(bool outbound) const {
        Chain chain;
        chain.name = outbound ? "quarantine_out" : "quarantine_in";
        const std::string grants = outbound ? "quarantine_to" : "quarantine_from";
        const std::string replies = outbound ? "quarantine_from_hosts" : "quarantine_to_hosts";
        for (auto& r : group_lookups(grants, outbound)) {
            r.verdict = {VerdictKind::Accept, ""};
            chain.rules.push_back(std::move(r));
        }
        // Replies of connections a grant let through (the grant itself checked the
        // other direction, so only the peer's address needs to match here).
        for (auto [field, set] : {std::pair{outbound ? Field::Ip4Daddr : Field::Ip4Saddr, "4"},
                                  std::pair{outbound ? Field::Ip6Daddr : Field::Ip6Saddr, "6"}}) {
            Rule r;
            r.matches.push_back(CtDirectionReply{});
            r.matches.push_back(SetLookup{{field}, replies + set});
            r.verdict = {VerdictKind::Accept, ""};
            chain.rules.push_back(std::move(r));
        }
        chain.rules.push_back(
            finish_drop(Rule{}, outbound ? "out" : "in", "quarantine", "q", true));
        return chain;
    }
};

// IPv6 neighbour discovery and MLD keep a host reachable at all; they never leave the link.
Rule neighbour_discovery_accept() {
    Rule r;
    r.matches.push_back(ValueMatch{Field::Icmpv6Type,
                                   {{130, 136}, {143, 143}}});
    r.verdict = {VerdictKind::Accept, ""};
    return r;
}

Rule established_accept() {
    Rule r;
    r.matches.push_back(CtStateMatch{static_cast<std::uint8_t>(CtEstablished | CtRelated)});
    r.verdict = {VerdictKind::Accept, ""};
    return r;
}

Rule jump_if_in(Field field, std::string set, std::string chain) {
    Rule r = lookup_rule({field}, std::move(set));
    r.verdict = {VerdictKind::Jump, std::move(chain)};
    return r;
}

Rule dispatch(Field field, std::string map) {
    Rule r;
    r.dispatch = VerdictMapDispatch{field, std::move(map)};
    return r;
}

}  // namespace

std::expected<Ruleset, std::string> RulesetCompiler::compile(
    std::string_view enforcer, const std::set<std::string>& quarantined) const {
    const auto& r = *resolved_;
    if (!std::binary_search(r.enforcers.begin(), r.enforcers.end(), enforcer)) {
        return std::unexpected("unknown enforcer \"" + std::string(enforcer) + "\"");
    }
    Ruleset out;
    out.enforcer = std::string(enforcer);
    out.policy_name = r.policy_name;

    ElementList egress_ports, ingress_ports, host_egress, host_ingress;
    ElementList quarantined_ports, quarantined_host, tripwire_ports;
    ElementList guarded_ports, port_sources4, port_sources6;  // the spoof guard
    ElementList mac_guarded_ports, port_macs;
    ElementList host_tripwires;  // armed server interface -> its class's inbound tripwire chain
    ElementList host_interfaces;  // every host-mode interface: where blocked senders are dropped
    std::set<std::size_t> local_classes;
    bool has_host = false;
    static const std::vector<std::size_t> none;
    const auto local = r.workloads_by_enforcer.find(enforcer);
    for (const std::size_t w : local == r.workloads_by_enforcer.end() ? none : local->second) {
        const auto& workload = r.inventory.workloads[w];
        if (r.workload_class[w] == std::string::npos) {
            continue;
        }
        const auto& c = r.classes[r.workload_class[w]];
        local_classes.insert(r.workload_class[w]);
        const bool host = workload.attachment->mode == AttachmentMode::Host;
        has_host = has_host || host;
        const bool is_quarantined = quarantined.contains(workload.id);
        for (const auto& interface : workload.attachment->interfaces) {
            out.ports.push_back({interface, workload.id, workload.attachment->mode, c.name});
            (host ? host_egress : egress_ports).push_back({{interface}, c.name + "_out"});
            (host ? host_ingress : ingress_ports).push_back({{interface}, c.name + "_in"});
            if (is_quarantined) {
                (host ? quarantined_host : quarantined_ports).push_back({{interface}, ""});
            }
            if (!host && r.workload_armed[w]) {
                tripwire_ports.push_back({{interface}, ""});
            }
            if (host) {
                host_interfaces.push_back({{interface}, ""});
            }
            if (host && r.host_armed[w] && c.host_members) {
                host_tripwires.push_back({{interface}, c.name + "_in_tripwire"});
            }
            if (!host) {
                guarded_ports.push_back({{interface}, ""});
                if (!workload.mac.empty()) {  // the reader normalised it
                    mac_guarded_ports.push_back({{interface}, ""});
                    port_macs.push_back({{interface, workload.mac}, ""});
                }
                for (const auto& a : workload.addresses) {
                    (a.family == Family::Ipv4 ? port_sources4 : port_sources6)
                        .push_back({{interface, policy::host_range(a)}, ""});
                }
            }
        }
    }
    auto share = [](ElementList e) {
        std::sort(e.begin(), e.end());
        return std::make_shared<const ElementList>(std::move(e));
    };
    auto verdict_map = [&](std::string name, ElementList elements) {
        SetDefinition s = make_set(std::move(name), {KeyType::Ifname}, false, share(std::move(elements)));
        s.verdict_map = true;
        return s;
    };
    auto port_set = [&](std::string name, ElementList elements) {
        SetDefinition s = make_set(std::move(name), {KeyType::Ifname}, false, share(std::move(elements)));
        s.dynamic = true;  // a decoy rule may add the offending port itself (same-packet containment)
        return s;
    };

    auto& sets = out.sets;
    sets.push_back(verdict_map("egress_ports", std::move(egress_ports)));
    sets.push_back(verdict_map("ingress_ports", std::move(ingress_ports)));
    sets.push_back(port_set("quarantined_ports", std::move(quarantined_ports)));
    sets.push_back(make_set("decoys4", {KeyType::Ipv4Addr}, true, r.decoys4));
    sets.push_back(make_set("decoys6", {KeyType::Ipv6Addr}, true, r.decoys6));
    add_group(sets, "quarantine_to", r.quarantine_to, "quarantine: reachable by a quarantined workload");
    add_group(sets, "quarantine_from", r.quarantine_from, "quarantine: may reach a quarantined workload");
    sets.push_back(make_set("quarantine_to_hosts4", {KeyType::Ipv4Addr}, true, r.quarantine_to_hosts4));
    sets.push_back(make_set("quarantine_to_hosts6", {KeyType::Ipv6Addr}, true, r.quarantine_to_hosts6));
    sets.push_back(make_set("quarantine_from_hosts4", {KeyType::Ipv4Addr}, true, r.quarantine_from_hosts4));
    sets.push_back(make_set("quarantine_from_hosts6", {KeyType::Ipv6Addr}, true, r.quarantine_from_hosts6));
    if (r.tripwires) {
        sets.push_back(make_set("tripwire_ports", {KeyType::Ifname}, false, share(std::move(tripwire_ports)),
                                "ports the kernel contains on a tripwire (guardrails of response.auto_quarantine)"));
        sets.push_back(make_set("tripwire_decoys4", {KeyType::Ipv4Addr}, true, r.tripwire_decoys4));
        sets.push_back(make_set("tripwire_decoys6", {KeyType::Ipv6Addr}, true, r.tripwire_decoys6));
        // Host mode: the senders a server's tripwire blocked (the kernel adds them), and the
        // quarantined workloads of the fleet, which a server arming tripwires blocks too: that
        // is how the controller takes over what the kernel blocked, and releases it.
        ElementList blocked4, blocked6;
        if (has_host) {
            for (const auto& id : quarantined) {
                const auto it = r.workload_index.find(id);
                if (it == r.workload_index.end() || r.inventory.workloads[it->second].enforcer == enforcer) {
                    continue;  // this host's own workloads are quarantined by their ports
                }
                for (const auto& a : r.inventory.workloads[it->second].addresses) {
                    (a.family == Family::Ipv4 ? blocked4 : blocked6).push_back({{policy::host_range(a)}, ""});
                }
            }
        }
        auto blocked_set = [&](std::string name, KeyType type, ElementList elements) {
            std::sort(elements.begin(), elements.end());
            elements.erase(std::unique(elements.begin(), elements.end()), elements.end());
            SetDefinition s = make_set(std::move(name), {type}, false, share(std::move(elements)),
                                       "senders a host-mode tripwire blocked, and quarantined workloads");
            s.dynamic = true;  // the tripwire rules add to it from the packet path
            return s;
        };
        sets.push_back(blocked_set("blocked_sources4", KeyType::Ipv4Addr, std::move(blocked4)));
        sets.push_back(blocked_set("blocked_sources6", KeyType::Ipv6Addr, std::move(blocked6)));
        sets.push_back(make_set("tripwire_spared4", {KeyType::Ipv4Addr}, true, r.tripwire_spared4,
                                "senders a tripwire never contains (guardrails of response.auto_quarantine)"));
        sets.push_back(make_set("tripwire_spared6", {KeyType::Ipv6Addr}, true, r.tripwire_spared6,
                                "senders a tripwire never contains (guardrails of response.auto_quarantine)"));
        if (has_host) {
            sets.push_back(verdict_map("host_tripwires", std::move(host_tripwires)));
            sets.push_back(make_set("host_interfaces", {KeyType::Ifname}, false, share(std::move(host_interfaces)),
                                    "the host-mode servers' interfaces (blocked senders are dropped there)"));
        }
    }
    // Spoof guard: a port-mode workload sends only from its own addresses. Link-local and
    // unspecified IPv6 sources (neighbour discovery, DHCPv6) never leave the link, and an
    // IPv4 DHCP request comes from 0.0.0.0.
    sets.push_back(make_set("guarded_ports", {KeyType::Ifname}, false, share(std::move(guarded_ports)),
                            "ports whose source addresses are checked (spoof guard)"));
    sets.push_back(make_set("port_sources4", {KeyType::Ifname, KeyType::Ipv4Addr}, false,
                            share(std::move(port_sources4)), "each port's own IPv4 addresses"));
    sets.push_back(make_set("port_sources6", {KeyType::Ifname, KeyType::Ipv6Addr}, false,
                            share(std::move(port_sources6)), "each port's own IPv6 addresses"));
    sets.push_back(make_set("mac_guarded_ports", {KeyType::Ifname}, false, share(std::move(mac_guarded_ports)),
                            "ports whose source MAC is checked (their workload has a MAC)"));
    sets.push_back(make_set("port_macs", {KeyType::Ifname, KeyType::EtherAddr}, false,
                            share(std::move(port_macs)), "each port's own MAC address"));
    sets.push_back(make_set("link_sources6", {KeyType::Ipv6Addr}, true,
                            share({{{*policy::parse_cidr("::/128")}, ""}, {{*policy::parse_cidr("fe80::/10")}, ""}}),
                            "link-scope IPv6 sources (never forwarded)"));
    sets.push_back(make_set("dhcp_sources4", {KeyType::Ipv4Addr}, false,
                            share({{{*policy::parse_cidr("0.0.0.0/32")}, ""}}), "a DHCP client without an address"));
    if (has_host) {
        sets.push_back(verdict_map("host_egress", std::move(host_egress)));
        sets.push_back(verdict_map("host_ingress", std::move(host_ingress)));
        sets.push_back(port_set("quarantined_host", std::move(quarantined_host)));
    }

    const bool tripwire_decoys = r.tripwire_decoys4 && (!r.tripwire_decoys4->empty() || !r.tripwire_decoys6->empty());
    const ChainBuilder builder{r.defaults, r.tripwires, tripwire_decoys};
    Chain forward{"forward", BaseChain{Hook::Forward, 0}, {}};
    // Every packet from a port, established connections included: a forged source could
    // otherwise ride another workload's connection.
    forward.rules.push_back(jump_if_in(Field::Iifname, "guarded_ports", "spoof_guard"));
    forward.rules.push_back(jump_if_in(Field::Iifname, "quarantined_ports", "quarantine_out"));
    forward.rules.push_back(jump_if_in(Field::Oifname, "quarantined_ports", "quarantine_in"));
    forward.rules.push_back(established_accept());
    forward.rules.push_back(dispatch(Field::Iifname, "egress_ports"));
    forward.rules.push_back(dispatch(Field::Oifname, "ingress_ports"));
    out.chains.push_back(std::move(forward));
    // The host's own stack is a peer like any other: a VDI reaching the hypervisor's
    // addresses (management, SSH, the metadata service) passes its class chain too, and a
    // quarantined VDI reaches nothing on the host but its grants. Calico's default for
    // workload-to-host traffic is the same (drop).
    Chain input{"input", BaseChain{Hook::Input, 0}, {}};
    input.rules.push_back(neighbour_discovery_accept());
    const bool blocks_sources = has_host && r.tripwires;
    if (blocks_sources) {
        // Before anything else, established connections included: a blocked sender's next
        // packet after the one that tripped goes no further. Only on the server's own
        // interfaces: a VDI port of this host is governed by its port (its address may even
        // collide with a blocked one elsewhere).
        for (auto [field, set] : {std::pair{Field::Ip4Saddr, "blocked_sources4"}, std::pair{Field::Ip6Saddr, "blocked_sources6"}}) {
            Rule blocked = lookup_rule({Field::Iifname}, "host_interfaces");
            blocked.matches.push_back(SetLookup{{field}, set});
            blocked.verdict = {VerdictKind::Jump, "blocked_source"};
            input.rules.push_back(std::move(blocked));
        }
    }
    input.rules.push_back(jump_if_in(Field::Iifname, "guarded_ports", "spoof_guard"));
    input.rules.push_back(jump_if_in(Field::Iifname, "quarantined_ports", "quarantine_out"));
    if (has_host) {
        input.rules.push_back(jump_if_in(Field::Iifname, "quarantined_host", "quarantine_in"));
    }
    input.rules.push_back(established_accept());
    input.rules.push_back(dispatch(Field::Iifname, "egress_ports"));
    if (blocks_sources) {
        input.rules.push_back(dispatch(Field::Iifname, "host_tripwires"));
    }
    if (has_host) {
        input.rules.push_back(dispatch(Field::Iifname, "host_ingress"));
    }
    out.chains.push_back(std::move(input));
    Chain output{"output", BaseChain{Hook::Output, 0}, {}};
    output.rules.push_back(neighbour_discovery_accept());
    output.rules.push_back(jump_if_in(Field::Oifname, "quarantined_ports", "quarantine_in"));
    if (has_host) {
        output.rules.push_back(jump_if_in(Field::Oifname, "quarantined_host", "quarantine_out"));
    }
    output.rules.push_back(established_accept());
    output.rules.push_back(dispatch(Field::Oifname, "ingress_ports"));
    if (has_host) {
        output.rules.push_back(dispatch(Field::Oifname, "host_egress"));
    }
    out.chains.push_back(std::move(output));
    std::set<std::size_t> shared_segments;
    std::vector<Chain> regular;
    regular.push_back(builder.quarantine_chain(true));
    regular.push_back(builder.quarantine_chain(false));
    regular.push_back(builder.spoof_guard_chain());
    regular.push_back(builder.spoof_guard_mac_chain());
    if (blocks_sources) {
        regular.push_back(builder.blocked_source_chain());
    }
    for (auto index : local_classes) {
        const auto& c = r.classes[index];
        auto& pieces = *r.class_pieces[index];
        std::call_once(pieces.built, [&] {
            auto& own = pieces.sets;
            add_group(own, c.name + "_out_allow", c.out_allow, c.comment);
            add_group(own, c.name + "_out_deny", c.out_deny, c.comment);
            add_group(own, c.name + "_in_allow", c.in_allow, c.comment);
            add_group(own, c.name + "_in_deny", c.in_deny, c.comment);
            if (r.tripwires) {
                add_group(own, c.name + "_out_tripwire", c.out_tripwire, c.comment + "; tripwire rules");
            }
            if (r.tripwires && c.host_members) {
                add_group(own, c.name + "_in_tripwire", c.in_tripwire, c.comment + "; host-mode tripwire rules");
            }
            for (const auto& ref : c.references) {
                const auto stem = reference_stem(c.name, ref);
                const auto comment = c.comment + "; services towards segment " + ref.segment_name;
                own.push_back(make_set(stem, {KeyType::InetProto, KeyType::InetService}, true, ref.services, comment));
                own.push_back(make_set(stem + "_icmp4", {KeyType::IcmpType}, true, ref.icmp4, comment));
                own.push_back(make_set(stem + "_icmp6", {KeyType::Icmpv6Type}, true, ref.icmp6, comment));
            }
            pieces.chains.push_back(builder.class_chain(c, true));
            pieces.chains.push_back(builder.class_chain(c, false));
            if (r.tripwires) {
                pieces.chains.push_back(builder.tripwire_chain(c));
            }
            if (r.tripwires && c.host_members) {
                pieces.chains.push_back(builder.host_tripwire_chain(c));
            }
        });
        sets.insert(sets.end(), pieces.sets.begin(), pieces.sets.end());
        regular.insert(regular.end(), pieces.chains.begin(), pieces.chains.end());
        for (const auto& ref : c.references) {
            shared_segments.insert(ref.segment);
        }
    }
    for (auto segment : shared_segments) {
        const auto& name = r.segment_names[segment];
        const auto comment = "members of segment " + name + " (shared by every class that names it)";
        sets.push_back(make_set(segment_set_name(name, false), {KeyType::Ipv4Addr}, true, r.segment_addresses4[segment], comment));
        sets.push_back(make_set(segment_set_name(name, true), {KeyType::Ipv6Addr}, true, r.segment_addresses6[segment], comment));
    }
    std::sort(regular.begin(), regular.end(),
              [](const Chain& a, const Chain& b) { return a.name < b.name; });
    for (auto& c : regular) {
        out.chains.push_back(std::move(c));
    }
    std::sort(sets.begin(), sets.end(),
              [](const SetDefinition& a, const SetDefinition& b) { return a.name < b.name; });
    std::sort(out.ports.begin(), out.ports.end());
    return out;
}

TripwireArming tripwire_arming(const policy::Policy& policy, const policy::Workload& workload,
                               const std::vector<std::string>& segment_names) {
    using policy::AutoQuarantineMode;
    if (policy.defaults.mode == Mode::Monitor) {
        return {false, "the policy is in monitor mode"};
    }
    if (workload.critical) {
        return {false, "the workload is critical"};
    }
    const auto& response = policy.response;
    // off < dry-run < on; the section's mode caps every rule (as the response planner does).
    auto rank = [](AutoQuarantineMode m) {
        return m == AutoQuarantineMode::On ? 2 : m == AutoQuarantineMode::DryRun ? 1 : 0;
    };
    AutoQuarantineMode mode = response.auto_quarantine;
    std::string which = "response.auto_quarantine";
    for (const auto& rule : response.auto_quarantine_rules) {
        const bool segment_matches =
            rule.segments.empty() ||
            std::any_of(segment_names.begin(), segment_names.end(), [&](const std::string& s) {
                return std::find(rule.segments.begin(), rule.segments.end(), s) != rule.segments.end();
            });
        const bool detector_matches =
            rule.detectors.empty() ||
            std::find(rule.detectors.begin(), rule.detectors.end(), "tripwire") != rule.detectors.end();
        if (segment_matches && detector_matches) {
            mode = rank(rule.mode) < rank(mode) ? rule.mode : mode;
            which = rule.pointer;
            break;
        }
    }
    if (mode != AutoQuarantineMode::On) {
        return {false, "automatic quarantine is " + std::string(policy::to_string(mode)) + " by " + which};
    }
    return {true, ""};
}

std::map<std::string, Ruleset> RulesetCompiler::compile_all(
    const std::set<std::string>& quarantined) const {
    std::map<std::string, Ruleset> out;
    for (const auto& e : resolved_->enforcers) {
        out.emplace(e, *compile(e, quarantined));
    }
    return out;
}

}  // namespace bulkhead::ruleset
