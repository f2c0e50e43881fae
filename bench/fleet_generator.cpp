#include "bench/fleet_generator.hpp"

#include "policies/net_address.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstdarg>
#include <cstdio>
#include <initializer_list>
#include <stdexcept>
#include <utility>

namespace bulkhead::bench {
namespace {

using policy::AttachmentMode;
using policy::IpAddress;
using policy::IpRange;
using policy::NumberRange;
using policy::Protocol;
using policy::RuleAction;

// --- Small helpers -------------------------------------------------------------------

// printf-style, checked by the compiler (-Wformat=2).
__attribute__((format(printf, 1, 2))) std::string format(const char* pattern, ...) {
    char buffer[128];
    va_list args;
    va_start(args, pattern);
    const int n = std::vsnprintf(buffer, sizeof buffer, pattern, args);
    va_end(args);
    if (n < 0 || static_cast<std::size_t>(n) >= sizeof buffer) {
        throw std::logic_error("fleet generator: formatted text too long");
    }
    return std::string(buffer, static_cast<std::size_t>(n));
}

IpAddress address(const std::string& text) {
    auto a = policy::parse_ip_address(text);
    if (!a) {
        throw std::logic_error("fleet generator: bad address " + text + ": " + a.error());
    }
    return *a;
}

IpRange cidr(const std::string& text) {
    auto r = policy::parse_cidr(text);
    if (!r) {
        throw std::logic_error("fleet generator: bad CIDR " + text + ": " + r.error());
    }
    return *r;
}

// VDI k on hypervisor h: 10.64.0.0/10 holds hypervisors 0-1023 x 4095 VDIs, 10.128.0.0/10
// the next 1024 (a fleet of up to 2,048 hypervisors, as a large NSX or Illumio site).
constexpr std::size_t max_hypervisors = 2048;
constexpr std::size_t max_vdis_per_host = 4095;

std::vector<IpAddress> vdi_addresses(std::size_t h, std::size_t k) {
    const std::uint32_t block = h < 1024 ? 64u : 128u;
    const std::uint32_t v4 = (10u << 24) + (block << 16) + static_cast<std::uint32_t>(h % 1024) * 4096u +
                             static_cast<std::uint32_t>(k) + 1u;
    return {address(format("%u.%u.%u.%u", v4 >> 24, (v4 >> 16) & 0xffu, (v4 >> 8) & 0xffu,
                           v4 & 0xffu)),
            address(format("fd00:0:1:%zx::%zx", h, k + 1))};
}

// Admin terminals of hypervisor h: 10.32.0.0/16 for hypervisors 0-1023, 10.33.0.0/16 after.
std::vector<IpAddress> admin_addresses(std::size_t h, std::size_t j) {
    return {address(format("10.%zu.%zu.%zu", 32 + h / 1024, (h % 1024) / 4, (h % 4) * 64 + j + 1)),
            address(format("fd00:0:2:%zx::%zx", h, j + 1))};
}

std::string mac_of(std::uint32_t serial) {
    return format("52:54:00:%02x:%02x:%02x", (serial >> 16) & 0xffu, (serial >> 8) & 0xffu,
                  serial & 0xffu);
}

// --- The catalogue: services, departments, servers --------------------------------------

policy::ServiceEntry ports(Protocol protocol, std::initializer_list<NumberRange> list) {
    policy::ServiceEntry e;
    e.protocol = protocol;
    e.ports = list;
    return e;
}

policy::ServiceEntry icmp(Protocol protocol, std::initializer_list<NumberRange> types) {
    policy::ServiceEntry e;
    e.protocol = protocol;
    e.icmp_types = types;
    return e;
}

NumberRange one(std::uint32_t v) { return {v, v}; }
NumberRange span(std::uint32_t low, std::uint32_t high) { return {low, high}; }

constexpr Protocol tcp = Protocol::Tcp;
constexpr Protocol udp = Protocol::Udp;

std::vector<policy::Service> make_services() {
    auto service = [](std::string name, std::vector<policy::ServiceEntry> entries) {
        policy::Service s;
        s.name = std::move(name);
        s.entries = std::move(entries);
        return s;
    };
    return {
        service("smb", {ports(tcp, {one(445)})}),
        service("netbios", {ports(tcp, {one(139)}), ports(udp, {span(137, 138)})}),
        service("dns", {ports(udp, {one(53)}), ports(tcp, {one(53)})}),
        service("kerberos", {ports(tcp, {one(88), one(464)}), ports(udp, {one(88), one(464)})}),
        service("ldap", {ports(tcp, {one(389)}), ports(udp, {one(389)})}),
        service("ldaps", {ports(tcp, {one(636)})}),
        service("global-catalog", {ports(tcp, {span(3268, 3269)})}),
        service("msrpc", {ports(tcp, {one(135), span(49152, 65535)})}),
        service("ntp", {ports(udp, {one(123)})}),
        service("http", {ports(tcp, {one(80)})}),
        service("https", {ports(tcp, {one(443)})}),
        service("proxy", {ports(tcp, {one(3128), one(8080)})}),
        service("rdp", {ports(tcp, {one(3389)}), ports(udp, {one(3389)})}),
        service("winrm", {ports(tcp, {span(5985, 5986)})}),
        service("ssh", {ports(tcp, {one(22)})}),
        service("edr", {ports(tcp, {one(443), span(8443, 8444)})}),
        service("wsus", {ports(tcp, {span(8530, 8531)})}),
        service("sccm", {ports(tcp, {one(80), one(443), one(10123)})}),
        service("kms", {ports(tcp, {one(1688)})}),
        service("smtp", {ports(tcp, {one(25), one(587)})}),
        service("imaps", {ports(tcp, {one(993)})}),
        service("mssql", {ports(tcp, {one(1433)}), ports(udp, {one(1434)})}),
        service("postgres", {ports(tcp, {one(5432)})}),
        service("oracle", {ports(tcp, {one(1521)})}),
        service("print", {ports(tcp, {one(515), one(631), one(9100)})}),
        service("syslog", {ports(udp, {one(514)}), ports(tcp, {one(6514)})}),
        service("snmp", {ports(udp, {span(161, 162)})}),
        service("flexlm", {ports(tcp, {span(27000, 27009)})}),
        service("remote-assist", {ports(tcp, {one(5938)})}),
        service("ica", {ports(tcp, {one(1494), one(2598)}), ports(udp, {one(1494)})}),
        service("git", {ports(tcp, {one(22), one(9418)})}),
        service("ping", {icmp(Protocol::Icmp, {one(8)}), icmp(Protocol::Icmpv6, {one(128)})}),
        service("icmp-diag", {icmp(Protocol::Icmp, {one(3), one(11)}),
                              icmp(Protocol::Icmpv6, {one(1), one(2), one(3), one(4)})}),
    };
}

constexpr std::array department_names{"finance", "hr",    "sales",      "marketing",
                                      "engineering", "support", "legal", "operations",
                                      "procurement", "research", "it",   "facilities"};

std::string department_name(std::size_t d) {
    return d < department_names.size() ? std::string(department_names[d]) : format("dept%zu", d);
}

// Departments whose desktops include developer workstations.
bool has_developers(std::size_t d) {
    const std::string name = department_name(d);
    return name == "engineering" || name == "research" || name == "it" ||
           (d >= department_names.size() && d % 3 == 1);
}

// Persona by position in a cycle of ten desktops: the mix on every hypervisor is the same.
std::string persona_of(std::size_t cycle_position, bool developers) {
    if (cycle_position == 9) {
        return "contractor";
    }
    if (developers && cycle_position >= 6) {
        return "developer";
    }
    return "standard";
}

// Shared infrastructure addressed by CIDR blocks (one /27 and one /120 each).
constexpr std::array infra_cidr_segments{
    "dns",  "proxy",  "ntp",     "edr",        "wsus",     "kms",      "smtp-relay", "mail",
    "intranet", "sharepoint", "erp", "crm",   "hr-system", "payroll", "siem",      "backup",
    "monitoring", "git", "artifacts", "ci",   "wiki",      "ticketing"};

struct ServerGroup {
    const char* segment;  // workload-id segment naming its members
    const char* prefix;
    std::size_t count;
    const char* role;
};
// Named servers: workload-id segments (AD DCs, brokers, ...).
constexpr std::array named_servers{
    ServerGroup{"ad-dcs", "dc", 4, "domain-controller"},
    ServerGroup{"ca-servers", "ca", 2, "pki"},
    ServerGroup{"jump-hosts", "jump", 2, "jump-host"},
    ServerGroup{"sccm-servers", "sccm", 2, "sccm"},
    ServerGroup{"license-servers", "lic", 2, "license"},
    ServerGroup{"citrix-brokers", "broker", 2, "broker"},
    ServerGroup{"rd-gateways", "rdgw", 2, "rd-gateway"},
    ServerGroup{"vault", "vault", 2, "secrets"},
    ServerGroup{"build-agents", "build", 4, "build-agent"},
    ServerGroup{"finance-db", "sqlfin", 2, "database"},
    ServerGroup{"hr-db", "sqlhr", 2, "database"},
    ServerGroup{"sales-db", "sqlsales", 2, "database"},
};

// --- Policy ---------------------------------------------------------------------------

struct PolicyBuilder {
    const FleetSpec& spec;
    policy::Policy result;
    std::vector<std::string> teams;          // team names, team t in department t % D
    std::vector<std::string> server_targets; // segments team rules may reach
    std::vector<std::string> app_segments;   // generic application subnets

    policy::Segment& segment(std::string name, std::string description = {}) {
        policy::Segment s;
        s.name = std::move(name);
        s.description = std::move(description);
        result.segments.push_back(std::move(s));
        return result.segments.back();
    }

    void labels_segment(std::string name, std::map<std::string, std::vector<std::string>> labels,
                        std::string description = {}) {
        segment(std::move(name), std::move(description)).selector.labels = std::move(labels);
    }

    void cidr_segment(std::string name, std::string v4, std::string v6, bool decoy = false) {
        auto& s = segment(std::move(name));
        s.selector.cidrs = {cidr(v4), cidr(v6)};
        s.decoy = decoy;
    }

    void rule(std::string name, RuleAction action, std::vector<std::string> from,
              std::vector<std::string> to, std::vector<std::string> services) {
        policy::Rule r;
        r.name = std::move(name);
        r.action = action;
        r.from = std::move(from);
        r.to = std::move(to);
        r.services = std::move(services);
        result.rules.push_back(std::move(r));
    }
    void allow(std::string name, std::vector<std::string> from, std::vector<std::string> to,
               std::vector<std::string> services) {
        rule(std::move(name), RuleAction::Allow, std::move(from), std::move(to),
             std::move(services));
    }
    void deny(std::string name, std::vector<std::string> from, std::vector<std::string> to,
              std::vector<std::string> services) {
        rule(std::move(name), RuleAction::Deny, std::move(from), std::move(to),
             std::move(services));
    }

    void segments() {
        const std::size_t D = spec.departments;
        // Label selectors: roles, personas, departments, department admins, teams.
        labels_segment("vdi", {{"role", {"vdi"}}}, "Every virtual desktop");
        labels_segment("admin-terminals", {{"role", {"admin-terminal"}}});
        labels_segment("global-admins", {{"role", {"admin-terminal"}}, {"admin-scope", {"global"}}});
        labels_segment("contractors", {{"role", {"vdi"}}, {"persona", {"contractor"}}});
        labels_segment("developers", {{"role", {"vdi"}}, {"persona", {"developer"}}});
        labels_segment("file-servers", {{"role", {"file-server"}}});
        labels_segment("print-servers", {{"role", {"print-server"}}});
        labels_segment("sql-servers", {{"role", {"database"}}});
        for (std::size_t d = 0; d < D; ++d) {
            labels_segment("dept-" + department_name(d),
                           {{"role", {"vdi"}}, {"dept", {department_name(d)}}});
            labels_segment("admins-" + department_name(d),
                           {{"role", {"admin-terminal"}}, {"admin-scope", {department_name(d)}}});
        }
        for (std::size_t t = 0; t < spec.teams; ++t) {
            teams.push_back(format("%s-t%02zu", department_name(t % D).c_str(), t / D + 1));
            labels_segment("team-" + teams.back(), {{"team", {teams.back()}}});
        }
        // Workload-id selectors: named servers.
        for (const auto& group : named_servers) {
            auto& s = segment(group.segment);
            for (std::size_t i = 0; i < group.count; ++i) {
                s.selector.workloads.push_back(format("%s-%02zu", group.prefix, i + 1));
            }
        }
        // CIDR selectors: shared infrastructure, decoys, department file and app servers.
        for (std::size_t i = 0; i < infra_cidr_segments.size(); ++i) {
            cidr_segment(infra_cidr_segments[i], format("10.0.%zu.0/27", 16 + i),
                         format("fd00:0:0:%zx::/120", 0x100 + i));
        }
        cidr_segment("decoy-shares", "10.0.250.0/28", "fd00:0:0:fa::/120", true);
        cidr_segment("decoy-rdp", "10.0.251.0/28", "fd00:0:0:fb::/120", true);
        for (std::size_t d = 0; d < D; ++d) {
            cidr_segment("fs-" + department_name(d), format("10.1.%zu.0/28", d),
                         format("fd00:0:0:%zx::/120", 0x200 + d));
            cidr_segment("app-" + department_name(d), format("10.2.%zu.0/26", d),
                         format("fd00:0:0:%zx::/120", 0x300 + d));
        }
        if (result.segments.size() > spec.segments) {
            throw std::invalid_argument(format("fleet spec: %zu segments requested, the fixed "
                                               "catalogue alone has %zu",
                                               spec.segments, result.segments.size()));
        }
        for (std::size_t n = 0; result.segments.size() < spec.segments; ++n) {
            if (n >= 250) {
                throw std::invalid_argument("fleet spec: too many segments");
            }
            app_segments.push_back(format("app-%03zu", n + 1));
            cidr_segment(app_segments.back(), format("10.3.%zu.0/26", n),
                         format("fd00:0:0:%zx::/120", 0x400 + n));
        }
        server_targets = {"erp",  "crm",        "hr-system", "payroll", "sharepoint",
                          "wiki", "ticketing",  "backup",    "vault",   "sql-servers",
                          "finance-db", "hr-db", "sales-db", "license-servers"};
        server_targets.insert(server_targets.end(), app_segments.begin(), app_segments.end());
    }

    void rules(Prng& rng) {
        const std::size_t D = spec.departments;
        // The VDI baseline every desktop needs.
        allow("vdi-dns", {"vdi"}, {"dns"}, {"dns"});
        allow("vdi-ad", {"vdi"}, {"ad-dcs"},
              {"kerberos", "ldap", "ldaps", "global-catalog", "msrpc", "smb", "ntp", "dns"});
        allow("vdi-ntp", {"vdi"}, {"ntp"}, {"ntp"});
        allow("vdi-proxy", {"vdi"}, {"proxy"}, {"proxy"});
        allow("vdi-edr", {"vdi"}, {"edr"}, {"edr"});
        allow("vdi-wsus", {"vdi"}, {"wsus"}, {"wsus", "http"});
        allow("vdi-sccm", {"vdi"}, {"sccm-servers"}, {"sccm", "smb"});
        allow("vdi-kms", {"vdi"}, {"kms"}, {"kms"});
        allow("vdi-pki", {"vdi"}, {"ca-servers"}, {"http", "https"});
        allow("vdi-print", {"vdi"}, {"print-servers"}, {"print", "smb"});
        allow("vdi-intranet", {"vdi"}, {"intranet", "sharepoint", "ticketing"}, {"https", "http"});
        allow("vdi-mail", {"vdi"}, {"mail", "smtp-relay"}, {"smtp", "imaps", "https"});
        allow("vdi-brokers", {"vdi"}, {"citrix-brokers"}, {"https", "ica"});
        allow("vdi-licenses", {"vdi"}, {"license-servers"}, {"flexlm"});
        allow("vdi-siem", {"vdi"}, {"siem"}, {"syslog"});
        allow("vdi-icmp-infra", {"vdi"}, {"dns", "proxy", "ad-dcs", "file-servers"},
              {"ping", "icmp-diag"});
        if (spec.vdi_deny_guard) {
            deny("no-vdi-to-vdi", {"vdi"}, {"vdi"}, {"any"});
        }
        deny("contractors-no-databases", {"contractors"}, {"sql-servers", "finance-db", "hr-db"},
             {"any"});
        deny("contractors-no-jump-hosts", {"contractors"}, {"jump-hosts", "vault"}, {"any"});
        // Management reaching the desktops.
        allow("admins-to-vdi", {"global-admins"}, {"vdi"}, {"rdp", "ping", "winrm"});
        allow("sccm-to-vdi", {"sccm-servers"}, {"vdi"}, {"msrpc", "smb"});
        allow("monitoring-to-vdi", {"monitoring"}, {"vdi"}, {"ping", "snmp"});
        allow("edr-to-vdi", {"edr"}, {"vdi"}, {"edr"});
        // Admin terminals themselves.
        allow("admins-infra", {"admin-terminals"}, {"dns", "ad-dcs", "proxy", "edr"},
              {"dns", "kerberos", "ldap", "ldaps", "msrpc", "smb", "proxy", "edr"});
        allow("admins-jump", {"admin-terminals"}, {"jump-hosts", "rd-gateways"},
              {"ssh", "rdp", "https"});
        allow("admins-servers", {"global-admins"}, {"file-servers", "sql-servers", "backup"},
              {"rdp", "winrm", "ssh"});
        // Developers.
        allow("dev-git", {"developers"}, {"git"}, {"git", "ssh", "https"});
        allow("dev-artifacts", {"developers"}, {"artifacts", "ci", "wiki"}, {"https"});
        allow("dev-build-agents", {"developers"}, {"build-agents"}, {"ssh", "winrm", "rdp"});
        allow("dev-vault", {"developers"}, {"vault"}, {"https"});
        // Departments: their file and application servers, their admins, contractor limits.
        for (std::size_t d = 0; d < D; ++d) {
            const std::string dept = department_name(d);
            allow(dept + "-files", {"dept-" + dept}, {"fs-" + dept}, {"smb", "netbios", "ping"});
            allow(dept + "-apps", {"dept-" + dept}, {"app-" + dept}, {"https", "http"});
            allow(dept + "-admins", {"admins-" + dept}, {"dept-" + dept},
                  {"rdp", "ping", "remote-assist"});
            allow(dept + "-admins-servers", {"admins-" + dept}, {"fs-" + dept, "app-" + dept},
                  {"rdp", "winrm", "ssh"});
            deny(dept + "-contractors-no-admin-share", {"contractors"}, {"fs-" + dept},
                 {"netbios"});
        }
        if (result.rules.size() > spec.rules) {
            throw std::invalid_argument(format("fleet spec: %zu rules requested, the fixed "
                                               "baseline alone has %zu",
                                               spec.rules, result.rules.size()));
        }
        // Teams: access to application servers, round-robin until the rule budget is spent.
        static constexpr std::array app_services{"https", "http",   "mssql", "postgres",
                                                 "oracle", "ssh",   "smb",   "rdp",
                                                 "flexlm", "winrm", "ica"};
        std::vector<std::size_t> per_team(teams.size(), 0);
        for (std::size_t i = 0; result.rules.size() < spec.rules; ++i) {
            const std::size_t t = i % teams.size();
            const std::size_t d = t % D;
            std::vector<std::string> to;
            const auto pick = rng.below(10);
            if (pick < 3) {
                to.push_back("app-" + department_name(d));
            } else if (pick < 4) {
                to.push_back("fs-" + department_name(rng.below(D)));  // a cross-department share
            } else {
                to.push_back(server_targets[rng.below(server_targets.size())]);
            }
            if (rng.chance(20)) {
                to.push_back(server_targets[rng.below(server_targets.size())]);
            }
            std::sort(to.begin(), to.end());
            to.erase(std::unique(to.begin(), to.end()), to.end());
            std::vector<std::string> services;
            const auto n_services = 1 + rng.below(3);
            for (std::size_t s = 0; s < n_services; ++s) {
                services.push_back(app_services[rng.below(app_services.size())]);
            }
            std::sort(services.begin(), services.end());
            services.erase(std::unique(services.begin(), services.end()), services.end());
            const bool is_deny = rng.chance(12);
            rule(format("team-%s-%s%02zu", teams[t].c_str(), is_deny ? "deny" : "allow",
                        ++per_team[t]),
                 is_deny ? RuleAction::Deny : RuleAction::Allow, {"team-" + teams[t]},
                 std::move(to), std::move(services));
        }
    }

    void quarantine() {
        policy::QuarantineGrant edr;
        edr.segments = {"edr"};
        edr.services = {"edr"};
        policy::QuarantineGrant dns;
        dns.segments = {"dns"};
        dns.services = {"dns"};
        policy::QuarantineGrant admins;
        admins.segments = {"global-admins"};
        admins.services = {"rdp"};
        result.quarantine.allow = {edr, dns};
        result.quarantine.allow_from = {admins};
    }
};

// --- Inventory ------------------------------------------------------------------------

policy::Workload server(std::string id, std::string role, const std::string& v4,
                        const std::string& v6, bool critical) {
    policy::Workload w;
    w.id = std::move(id);
    w.addresses = {address(v4), address(v6)};
    w.labels = {{"role", std::move(role)}};
    w.hostname = w.id;
    std::transform(w.hostname.begin(), w.hostname.end(), w.hostname.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    w.critical = critical;
    return w;
}

void add_servers(const FleetSpec& spec, policy::Inventory& inventory) {
    std::size_t host = 10;
    for (const auto& group : named_servers) {
        for (std::size_t i = 0; i < group.count; ++i, ++host) {
            inventory.workloads.push_back(
                server(format("%s-%02zu", group.prefix, i + 1), group.role,
                       format("10.0.1.%zu", host), format("fd00:0:0:1::1:%zx", host),
                       std::string_view(group.role) == "domain-controller"));
        }
    }
    for (std::size_t d = 0; d < spec.departments; ++d) {
        inventory.workloads.push_back(server(format("fs-%s-01", department_name(d).c_str()),
                                             "file-server", format("10.1.%zu.5", d),
                                             format("fd00:0:0:%zx::5", 0x200 + d), true));
    }
    for (std::size_t i = 0; i < 4; ++i) {
        inventory.workloads.push_back(server(format("print-%02zu", i + 1), "print-server",
                                             format("10.0.3.%zu", 10 + i),
                                             format("fd00:0:0:1::3:%zx", 10 + i), false));
    }
    for (std::size_t i = 0; i < 8; ++i) {
        inventory.workloads.push_back(server(format("sql-%02zu", i + 1), "database",
                                             format("10.0.2.%zu", 10 + i),
                                             format("fd00:0:0:1::2:%zx", 10 + i), false));
    }
}

std::size_t parse_suffix(std::string_view text, std::string_view prefix) {
    if (!text.starts_with(prefix)) {
        return std::string::npos;
    }
    text.remove_prefix(prefix.size());
    std::size_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{} || end != text.data() + text.size()) {
        return std::string::npos;
    }
    return value;
}

}  // namespace

std::uint64_t Prng::next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

std::uint64_t Prng::below(std::uint64_t bound) {
    if (bound == 0) {
        throw std::invalid_argument("Prng::below(0)");
    }
    const std::uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    std::uint64_t v = next();
    while (v >= limit) {
        v = next();
    }
    return v % bound;
}

Fleet generate_fleet(const FleetSpec& spec) {
    if (spec.hypervisors == 0 || spec.hypervisors > max_hypervisors) {
        throw std::invalid_argument(format("fleet spec: hypervisors must be 1..%zu", max_hypervisors));
    }
    if (spec.departments == 0 || spec.teams < spec.departments) {
        throw std::invalid_argument("fleet spec: need at least one team per department");
    }
    if ((spec.vdis + spec.hypervisors - 1) / spec.hypervisors > max_vdis_per_host) {
        throw std::invalid_argument(format("fleet spec: at most %zu VDIs per hypervisor",
                                           max_vdis_per_host));
    }
    Fleet fleet;
    // The policy depends on the spec's policy knobs and the seed only, never on the number
    // of VDIs or hypervisors: fleets of different sizes share one policy.
    Prng policy_rng(spec.seed);
    PolicyBuilder builder{spec, {}, {}, {}, {}};
    builder.result.name = "bench-vdi-fleet";
    builder.result.description = "Synthetic VDI fleet (bench/fleet_generator)";
    builder.result.defaults.log_allowed = true;
    builder.result.services = make_services();
    builder.segments();
    builder.rules(policy_rng);
    builder.quarantine();
    fleet.policy = std::move(builder.result);

    auto& inventory = fleet.inventory;
    add_servers(spec, inventory);
    Prng rng(spec.seed ^ 0x1a2b3c4d5e6f7788ULL);
    std::uint32_t mac_serial = 0;
    std::size_t vdi_serial = 0;
    const std::size_t D = spec.departments;
    for (std::size_t h = 0; h < spec.hypervisors; ++h) {
        const std::size_t d = h % D;
        const std::string dept = department_name(d);
        const std::string hv = format("hv-%03zu", h + 1);
        inventory.enforcers.push_back({hv, format("Hypervisor %zu (%s pool)", h + 1, dept.c_str())});
        // The department's teams (team t belongs to department t % D).
        std::vector<std::string> dept_teams;
        for (std::size_t t = d; t < spec.teams; t += D) {
            dept_teams.push_back(format("%s-t%02zu", dept.c_str(), t / D + 1));
        }
        // Slot k of this hypervisor: team k % T, persona by (k / T) % 10, then shuffled so
        // the order of the inventory is not a pattern. Every hypervisor with at least
        // 10 * T desktops hosts every (team, persona) pair of its department.
        const std::size_t count = spec.vdis / spec.hypervisors + (h < spec.vdis % spec.hypervisors ? 1 : 0);
        std::vector<std::pair<std::size_t, std::string>> slots;
        for (std::size_t k = 0; k < count; ++k) {
            slots.emplace_back(k % dept_teams.size(),
                               persona_of((k / dept_teams.size()) % 10, has_developers(d)));
        }
        for (std::size_t k = slots.size(); k > 1; --k) {
            std::swap(slots[k - 1], slots[rng.below(k)]);
        }
        for (std::size_t k = 0; k < count; ++k) {
            policy::Workload w;
            ++vdi_serial;
            w.id = format("vdi-%05zu", vdi_serial);
            w.enforcer = hv;
            w.addresses = vdi_addresses(h, k);
            w.mac = mac_of(++mac_serial);
            w.labels = {{"role", "vdi"},
                        {"dept", dept},
                        {"team", dept_teams[slots[k].first]},
                        {"persona", slots[k].second},
                        {"os", rng.chance(15) ? "win10" : "win11"}};
            w.user = format("u%06zu", vdi_serial);
            w.hostname = format("VDI-%05zu", vdi_serial);
            w.attachment = policy::Attachment{AttachmentMode::Port, {format("vnet%zu", k)}};
            inventory.workloads.push_back(std::move(w));
        }
        if (spec.admin_every != 0 && h % spec.admin_every == 0) {
            // A privileged access workstation for the global admins and one for the pool's
            // department admins.
            const std::array<std::string, 2> scopes{"global", dept};
            for (std::size_t j = 0; j < scopes.size(); ++j) {
                policy::Workload w;
                w.id = format("paw-%03zu-%zu", h + 1, j + 1);
                w.enforcer = hv;
                w.addresses = admin_addresses(h, j);
                w.mac = mac_of(0x800000u + (++mac_serial));
                w.labels = {{"role", "admin-terminal"}, {"admin-scope", scopes[j]}};
                w.user = format("adm%03zu%zu", h + 1, j + 1);
                w.hostname = format("PAW-%03zu-%zu", h + 1, j + 1);
                w.attachment = policy::Attachment{AttachmentMode::Port, {format("paw%zu", j)}};
                inventory.workloads.push_back(std::move(w));
            }
        }
    }
    return fleet;
}

policy::Workload clone_vdi(const Fleet& fleet, std::string_view like, std::string_view enforcer) {
    const auto& inventory = fleet.inventory;
    const auto e = std::find_if(inventory.enforcers.begin(), inventory.enforcers.end(),
                                [&](const policy::Enforcer& x) { return x.id == enforcer; });
    if (e == inventory.enforcers.end()) {
        throw std::invalid_argument("clone_vdi: unknown enforcer " + std::string(enforcer));
    }
    const auto h = static_cast<std::size_t>(e - inventory.enforcers.begin());
    const policy::Workload* model = nullptr;
    std::size_t next_serial = 0;
    std::size_t next_local = 0;
    std::uint32_t next_mac = 0;
    for (const auto& w : inventory.workloads) {
        if (w.id == like) {
            model = &w;
        }
        if (auto n = parse_suffix(w.id, "vdi-"); n != std::string::npos) {
            next_serial = std::max(next_serial, n + 1);
        }
        if (w.enforcer == enforcer && w.attachment) {
            for (const auto& i : w.attachment->interfaces) {
                if (auto n = parse_suffix(i, "vnet"); n != std::string::npos) {
                    next_local = std::max(next_local, n + 1);
                }
            }
        }
        if (!w.mac.empty()) {
            std::uint32_t low = 0;
            for (std::size_t pos : {9u, 12u, 15u}) {
                low = (low << 8) | static_cast<std::uint32_t>(std::stoul(w.mac.substr(pos, 2), nullptr, 16));
            }
            next_mac = std::max(next_mac, (low & 0x7fffffu) + 1);
        }
    }
    if (model == nullptr) {
        throw std::invalid_argument("clone_vdi: unknown workload " + std::string(like));
    }
    if (next_local >= max_vdis_per_host) {
        throw std::invalid_argument("clone_vdi: hypervisor is full");
    }
    policy::Workload w;
    w.id = format("vdi-%05zu", next_serial);
    w.enforcer = std::string(enforcer);
    w.addresses = vdi_addresses(h, next_local);
    w.mac = mac_of(next_mac);
    w.labels = model->labels;
    w.user = format("u%06zu", next_serial);
    w.hostname = format("VDI-%05zu", next_serial);
    w.attachment = policy::Attachment{AttachmentMode::Port, {format("vnet%zu", next_local)}};
    return w;
}

}  // namespace bulkhead::bench
