#include "enforcer/ports/port_discovery.hpp"

#include "policies/mac_port.hpp"

#include <algorithm>
#include <array>

namespace bulkhead::enforcer::ports {
namespace {

constexpr std::string_view unidentified_set = "unidentified_ports";

// "bh:<mode>:<dir>:unidentified:u": the NFLOG prefix grammar of docs/ruleset-design.md,
// subject "u" (no class: nobody is bound to the port).
std::string unidentified_prefix(UnknownPortMode mode, std::string_view direction) {
    return std::string("bh:") + (mode == UnknownPortMode::Monitor ? "mon" : "enf") + ":" +
           std::string(direction) + ":unidentified:u";
}

// The drop log group the compiler used (the policy's defaults.log_group), so that the
// daemon's NFLOG reader sees these drops with the others.
std::uint16_t drop_log_group(const ruleset::Ruleset& ruleset, std::uint16_t fallback) {
    for (const auto& chain : ruleset.chains) {
        for (const auto& rule : chain.rules) {
            if (rule.log && rule.log->prefix.find(":allow:") == std::string::npos) {
                return rule.log->group;
            }
        }
    }
    return fallback;
}

}  // namespace

std::optional<UnknownPortMode> unknown_port_mode_from_string(std::string_view text) {
    if (text == "isolate") return UnknownPortMode::Isolate;
    if (text == "monitor") return UnknownPortMode::Monitor;
    if (text == "allow") return UnknownPortMode::Allow;
    return std::nullopt;
}

std::string_view to_string(UnknownPortMode mode) {
    switch (mode) {
    case UnknownPortMode::Isolate: return "isolate";
    case UnknownPortMode::Monitor: return "monitor";
    case UnknownPortMode::Allow: return "allow";
    }
    return "isolate";
}

bool glob_match(std::string_view pattern, std::string_view name) {
    // Iterative matching with one backtrack point: linear in practice, no recursion on
    // hostile patterns.
    std::size_t p = 0, n = 0, star = std::string_view::npos, resume = 0;
    while (n < name.size()) {
        if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
            ++p;
            ++n;
        } else if (p < pattern.size() && pattern[p] == '*') {
            star = p++;
            resume = n;
        } else if (star != std::string_view::npos) {
            p = star + 1;
            n = ++resume;
        } else {
            return false;
        }
    }
    while (p < pattern.size() && pattern[p] == '*') {
        ++p;
    }
    return p == pattern.size();
}

std::expected<PortPatterns, std::string> PortPatterns::parse(const std::vector<std::string>& patterns) {
    PortPatterns out;
    for (std::size_t i = 0; i < patterns.size(); ++i) {
        const auto& p = patterns[i];
        const std::string where = "port pattern " + std::to_string(i) + " (\"" + p + "\")";
        if (p.empty() || p.size() > 15) {
            return std::unexpected(where + ": a pattern is 1-15 characters, as an interface name");
        }
        for (const char c : p) {
            if (c == '/' || c == ':' || c <= ' ' || c > '~') {
                return std::unexpected(where + ": '/', ':', white space and non-ASCII characters "
                                               "never appear in an interface name");
            }
        }
        if (p.find_first_not_of('*') == std::string::npos) {
            // "*" would take the uplink and the host's own interfaces for VM ports and
            // isolate them: refuse it rather than cut the hypervisor off.
            return std::unexpected(where + ": a pattern needs a literal part (\"*\" alone would "
                                           "match the uplink and isolate it)");
        }
        out.patterns_.push_back(p);
    }
    return out;
}

bool PortPatterns::matches(std::string_view interface) const {
    return std::any_of(patterns_.begin(), patterns_.end(),
                       [&](const std::string& p) { return glob_match(p, interface); });
}

std::optional<std::string> format_mac(const std::uint8_t* bytes, std::size_t length) {
    if (bytes == nullptr || length != 6) {
        return std::nullopt;
    }
    static constexpr std::array<char, 16> hex{'0', '1', '2', '3', '4', '5', '6', '7',
                                              '8', '9', 'a', 'b', 'c', 'd', 'e', 'f'};
    std::string out;
    for (std::size_t i = 0; i < length; ++i) {
        if (i > 0) {
            out.push_back(':');
        }
        out.push_back(hex[bytes[i] >> 4]);
        out.push_back(hex[bytes[i] & 0xf]);
    }
    return out;
}

bool PortTable::link_up(const Link& link) {
    if (!patterns_.matches(link.name)) {
        // A port renamed to something else (or never one) is no port of ours.
        return link_gone(link.index);
    }
    auto [it, inserted] = links_.try_emplace(link.index);
    if (!inserted && it->second.link.name == link.name && it->second.link.mac == link.mac) {
        return false;
    }
    if (!inserted && it->second.link.mac != link.mac) {
        it->second.neighbour_macs.clear();
        it->second.addresses.clear();
    }
    it->second.link = link;
    return true;
}

bool PortTable::link_gone(int index) { return links_.erase(index) > 0; }

bool PortTable::replace_links(const std::vector<Link>& links) {
    bool changed = false;
    std::set<int> present;
    for (const auto& link : links) {
        changed = link_up(link) || changed;
        present.insert(link.index);
    }
    for (auto it = links_.begin(); it != links_.end();) {
        if (!present.contains(it->first)) {
            it = links_.erase(it);
            changed = true;
        } else {
            ++it;
        }
    }
    return changed;
}

bool PortTable::neighbour(int index, const policy::IpAddress& address, const std::string& lladdr) {
    auto it = links_.find(index);
    if (it == links_.end()) {
        return false;
    }
    bool changed = false;
    if (!lladdr.empty()) {
        changed = it->second.neighbour_macs.insert(lladdr).second;
    }
    auto& addresses = it->second.addresses;
    if (std::find(addresses.begin(), addresses.end(), address) == addresses.end()) {
        addresses.push_back(address);
        std::sort(addresses.begin(), addresses.end());
        changed = true;
    }
    return changed;
}

bool PortTable::set_domains(std::vector<DomainNic> nics) {
    auto key = [](const DomainNic& n) { return std::tie(n.target, n.mac, n.domain, n.uuid, n.labels); };
    std::sort(nics.begin(), nics.end(), [&](const auto& a, const auto& b) { return key(a) < key(b); });
    const bool changed = nics.size() != domains_.size() ||
                         !std::equal(nics.begin(), nics.end(), domains_.begin(),
                                     [&](const auto& a, const auto& b) { return key(a) == key(b); });
    domains_ = std::move(nics);
    return changed;
}

std::vector<Port> PortTable::identify(const ruleset::Ruleset& ruleset) const {
    std::map<std::string, std::string> by_mac;   // MAC -> workload (ports bound by MAC)
    std::map<std::string, std::string> by_name;  // interface -> workload (ports named outright)
    for (const auto& binding : ruleset.ports) {
        if (auto mac = policy::mac_of_port_name(binding.interface)) {
            by_mac[*mac] = binding.workload;
        } else {
            by_name[binding.interface] = binding.workload;
        }
    }
    std::vector<Port> out;
    for (const auto& [index, seen] : links_) {
        Port port;
        port.interface = seen.link.name;
        port.index = index;
        port.link_mac = seen.link.mac;
        port.addresses = seen.addresses;
        for (const auto& nic : domains_) {
            if (nic.target == port.interface) {
                port.domain = &nic;
                port.guest_mac = nic.mac;
                port.identified_by = "libvirt";
                break;
            }
        }
        if (port.guest_mac.empty() && by_mac.contains(port.link_mac)) {
            port.guest_mac = port.link_mac;
            port.identified_by = "link";
        }
        if (port.guest_mac.empty() && port.link_mac.starts_with("fe:")) {
            // libvirt (and qemu-ifup scripts) give a tap the guest's MAC with the first
            // octet set to fe, so the host never claims the guest's address: the other five
            // octets name the NIC when exactly one inventory MAC ends in them.
            const auto tail = std::string_view(port.link_mac).substr(2);
            std::string match;
            int matches = 0;
            for (const auto& [mac, workload] : by_mac) {
                if (std::string_view(mac).substr(2) == tail) {
                    match = mac;
                    ++matches;
                }
            }
            if (matches == 1) {
                port.guest_mac = match;
                port.identified_by = "tap-convention";
            }
        }
        if (port.guest_mac.empty()) {
            for (const auto& mac : seen.neighbour_macs) {
                if (by_mac.contains(mac)) {
                    port.guest_mac = mac;
                    port.identified_by = "neighbour";
                    break;
                }
            }
        }
        if (auto named = by_name.find(port.interface); named != by_name.end()) {
            port.workload = named->second;
        } else if (auto bound = by_mac.find(port.guest_mac); bound != by_mac.end()) {
            port.workload = bound->second;
        }
        out.push_back(std::move(port));
    }
    // Two ports claiming one NIC: during a refresh the old tap may linger a moment beside
    // the new one. The newest (highest ifindex: the kernel hands them out increasing) wins;
    // the other is unidentified until it goes.
    std::map<std::string, std::size_t> newest;  // workload -> index in out
    for (std::size_t i = 0; i < out.size(); ++i) {
        if (out[i].workload.empty() || by_name.contains(out[i].interface)) {
            continue;
        }
        auto [it, inserted] = newest.try_emplace(out[i].workload, i);
        if (!inserted) {
            const std::size_t loser = out[it->second].index < out[i].index ? it->second : i;
            it->second = loser == i ? it->second : i;
            out[loser].workload.clear();
        }
    }
    return out;
}

ruleset::Ruleset localize(const ruleset::Ruleset& canonical, const std::vector<Port>& ports,
                          const LocalizeOptions& options) {
    std::map<std::string, std::string> name_of_stand_in;
    std::set<std::string> named_outright;
    for (const auto& binding : canonical.ports) {
        if (!policy::mac_of_port_name(binding.interface)) {
            named_outright.insert(binding.interface);
        }
    }
    std::vector<std::string> unidentified;
    for (const auto& port : ports) {
        if (!port.workload.empty() && !port.guest_mac.empty() && !named_outright.contains(port.interface)) {
            name_of_stand_in[policy::mac_port_name(port.guest_mac)] = port.interface;
        } else if (port.workload.empty()) {
            unidentified.push_back(port.interface);
        }
    }
    ruleset::Ruleset out = canonical;
    for (auto& set : out.sets) {
        if (std::find(set.key.begin(), set.key.end(), ruleset::KeyType::Ifname) == set.key.end()) {
            continue;
        }
        bool touched = false;
        ruleset::ElementList elements;
        for (const auto& element : *set.elements) {
            ruleset::Element local = element;
            bool keep = true;
            for (auto& part : local.key) {
                auto* name = std::get_if<std::string>(&part);
                if (name == nullptr || !policy::mac_of_port_name(*name)) {
                    continue;
                }
                touched = true;
                auto bound = name_of_stand_in.find(*name);
                if (bound == name_of_stand_in.end()) {
                    keep = false;  // no port with that MAC here now: nothing to filter
                    break;
                }
                *name = bound->second;
            }
            if (keep) {
                elements.push_back(std::move(local));
            }
        }
        if (touched) {
            std::sort(elements.begin(), elements.end());
            set.elements = std::make_shared<const ruleset::ElementList>(std::move(elements));
        }
    }
    std::vector<ruleset::PortBinding> bindings;
    for (auto binding : out.ports) {
        if (policy::mac_of_port_name(binding.interface)) {
            auto bound = name_of_stand_in.find(binding.interface);
            if (bound == name_of_stand_in.end()) {
                continue;
            }
            binding.interface = bound->second;
        }
        bindings.push_back(std::move(binding));
    }
    std::sort(bindings.begin(), bindings.end());
    out.ports = std::move(bindings);

    if (!options.discovery || options.unknown == UnknownPortMode::Allow) {
        return out;
    }
    ruleset::ElementList unknown;
    for (const auto& name : unidentified) {
        unknown.push_back(ruleset::Element{{name}, ""});
    }
    std::sort(unknown.begin(), unknown.end());
    ruleset::SetDefinition set;
    set.name = std::string(unidentified_set);
    set.key = {ruleset::KeyType::Ifname};
    set.comment = "VM ports whose MAC is in no workload (enforcer port discovery)";
    set.elements = std::make_shared<const ruleset::ElementList>(std::move(unknown));
    out.sets.insert(std::upper_bound(out.sets.begin(), out.sets.end(), set,
                                     [](const auto& a, const auto& b) { return a.name < b.name; }),
                    std::move(set));
    const std::uint16_t group = drop_log_group(canonical, options.log_group);
    auto rule = [&](ruleset::Field field, std::string_view direction) {
        ruleset::Rule r;
        r.matches.push_back(ruleset::SetLookup{{field}, std::string(unidentified_set)});
        r.counter = true;
        r.log = ruleset::LogAction{unidentified_prefix(options.unknown, direction), group};
        if (options.unknown == UnknownPortMode::Isolate) {
            r.verdict = {ruleset::VerdictKind::Drop, ""};
        }
        r.comment = "unidentified port (" + std::string(to_string(options.unknown)) + ")";
        return r;
    };
    for (auto& chain : out.chains) {
        if (!chain.base) {
            continue;
        }
        // At the head: nothing (neighbour discovery, established connections) passes an
        // isolated port.
        std::vector<ruleset::Rule> head;
        if (chain.base->hook != ruleset::Hook::Output) {
            head.push_back(rule(ruleset::Field::Iifname, "out"));
        }
        if (chain.base->hook != ruleset::Hook::Input) {
            head.push_back(rule(ruleset::Field::Oifname, "in"));
        }
        chain.rules.insert(chain.rules.begin(), head.begin(), head.end());
    }
    return out;
}

}  // namespace bulkhead::enforcer::ports
