// Port discovery, the pure part: which links are VM ports (name patterns), which workload
// each belongs to (by its NIC's MAC), and the ruleset the kernel gets once the controller's
// MAC stand-ins (policies/mac_port.hpp) are replaced by the ports' current names.
//
// Why the enforcer binds ports itself: a refreshed non-persistent desktop comes back with a
// new tap name and the same MAC, and must be enforced again within a second of its port
// appearing, whether or not the controller is reachable. The controller's ruleset names
// such a port by its MAC; only the kernel copy names it by interface. The ruleset hash and
// the diff protocol (docs/control-channel.md) stay on the controller's copy, and drift is
// checked against the kernel copy, so a binding made here is never drift to repair.
//
// No I/O here: links, neighbours and libvirt's domains come in as values from the edges
// (link_watcher.hpp, libvirt_domains.hpp).
#pragma once

#include "policies/net_address.hpp"
#include "policies/ruleset.hpp"

#include <cstdint>
#include <expected>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace bulkhead::enforcer::ports {

// What a port matching the patterns gets while its MAC is in no inventory workload.
enum class UnknownPortMode : std::uint8_t {
    Isolate,  // dropped both ways, logged with reason "unidentified" (the default)
    Monitor,  // logged as would-drop ("bh:mon:…"), then filtered like any other traffic
    Allow,    // nothing (the host's own rules decide)
};
std::optional<UnknownPortMode> unknown_port_mode_from_string(std::string_view text);
std::string_view to_string(UnknownPortMode mode);

// Shell-style name patterns for the hypervisor's VM ports: `*` any run, `?` one character,
// anything else literal. A pattern is 1-15 characters without '/', ':' or white space (what
// an interface name may hold, plus the wildcards).
class PortPatterns {
public:
    // libvirt/KVM (vnetN), Proxmox and OpenStack (tapN…/tapXXXXXXXX-XX), macvtap, Xen (vifN.M).
    static std::vector<std::string> defaults() { return {"vnet*", "tap*", "macvtap*", "vif*"}; }
    static std::expected<PortPatterns, std::string> parse(const std::vector<std::string>& patterns);
    bool matches(std::string_view interface) const;
    const std::vector<std::string>& patterns() const { return patterns_; }

private:
    std::vector<std::string> patterns_;
};
bool glob_match(std::string_view pattern, std::string_view name);

// "52:54:00:12:34:56" from six bytes; nothing for another length.
std::optional<std::string> format_mac(const std::uint8_t* bytes, std::size_t length);

// A link as rtnetlink reports it.
struct Link {
    int index = 0;
    std::string name;
    std::string mac;  // the link's own address (IFLA_ADDRESS), normalised; empty if none
};

// A VM NIC as the hypervisor describes it (the libvirt adapter: a running domain's live XML).
struct DomainNic {
    std::string domain;  // libvirt's <name>
    std::string uuid;
    std::map<std::string, std::string> labels;  // from <metadata>
    std::string mac;     // <mac address=…>, normalised: the guest's MAC
    std::string target;  // <target dev=…>: the port's current name, when running
};

// One port on this host and who is behind it.
struct Port {
    std::string interface;
    int index = 0;
    std::string link_mac;  // the port's own MAC
    std::string guest_mac; // the VM NIC's MAC when known (see identify), else empty
    // How guest_mac was learnt: "libvirt", "link" (the port's own MAC is the NIC's, as with
    // a veth in the lab), "tap-convention" (fe:… — see identify), "neighbour", or "".
    std::string identified_by;
    std::string workload;  // the inventory workload bound to it; empty: unidentified
    const DomainNic* domain = nullptr;  // libvirt's description, if any
    std::vector<policy::IpAddress> addresses;  // seen behind it (neighbour table)
    bool operator==(const Port& o) const {
        return interface == o.interface && index == o.index && link_mac == o.link_mac &&
               guest_mac == o.guest_mac && workload == o.workload && addresses == o.addresses;
    }
};

// What this host knows about its VM ports: fed by the link watcher and the libvirt adapter.
class PortTable {
public:
    explicit PortTable(PortPatterns patterns) : patterns_(std::move(patterns)) {}
    // Each returns true when something that may change a binding changed.
    bool link_up(const Link& link);  // ignored (false) unless the name matches the patterns
    bool link_gone(int index);
    // A full dump (at start, and after the kernel dropped notifications): links missing
    // from it are gone.
    bool replace_links(const std::vector<Link>& links);
    bool neighbour(int index, const policy::IpAddress& address, const std::string& lladdr);
    bool set_domains(std::vector<DomainNic> nics);

    // The ports, each identified against `ruleset` (the controller's copy): its workloads
    // bound by MAC (stand-ins) and by name (a port the inventory names outright).
    std::vector<Port> identify(const ruleset::Ruleset& ruleset) const;
    const std::vector<DomainNic>& domains() const { return domains_; }
    const PortPatterns& patterns() const { return patterns_; }

private:
    struct Seen {
        Link link;
        std::set<std::string> neighbour_macs;
        std::vector<policy::IpAddress> addresses;
    };
    PortPatterns patterns_;
    std::map<int, Seen> links_;  // by ifindex
    std::vector<DomainNic> domains_;
};

// The ruleset the kernel gets: every MAC stand-in replaced by its port's current name; the
// elements (and port bindings) of a MAC with no port on this host left out (no port, no
// traffic); with `discovery` on, unidentified ports in `unidentified_ports` and, unless the
// mode is Allow, rules at the head of the base chains that drop (Isolate) or log (Monitor)
// their traffic with reason "unidentified". The set and rules are there even when empty,
// so a port coming or going is an element change, never a chain change.
struct LocalizeOptions {
    bool discovery = false;
    UnknownPortMode unknown = UnknownPortMode::Isolate;
    std::uint16_t log_group = 10;  // used when the ruleset logs no drop to take it from
};
ruleset::Ruleset localize(const ruleset::Ruleset& canonical, const std::vector<Port>& ports,
                          const LocalizeOptions& options);

}  // namespace bulkhead::enforcer::ports
