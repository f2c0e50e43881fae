// Lateral movement (attempts on lateral-movement services) and forbidden zones (decoys,
// user to admin terminal, VDI file sharing).

#include "controller/analyzer/analyzer_state.hpp"

namespace bulkhead::analyzer {

void Analyzer::Impl::lateral_detector(std::uint32_t id, std::uint64_t key, std::int64_t t) {
    if (!config.lateral.enabled || !is_lateral(key_protoport(key))) {
        return;
    }
    auto& s = sources[id];
    const std::int64_t window = seconds(config.lateral.window_seconds);
    bool saturated = false;
    if (!s.lateral.add(key, t, window, config.scan.max_targets_per_source, saturated)) {
        totals.saturated += saturated ? 1 : 0;
        return;
    }
    const bool user = (s.flags & FlagUser) != 0;
    const auto threshold =
        user ? config.lateral.min_targets_user : config.lateral.min_targets_other;
    const auto min_hosts = user ? config.lateral.min_hosts_user : config.lateral.min_hosts_other;
    if (threshold == 0 || s.lateral.pairs.size() < threshold || s.lateral.hosts.size() < min_hosts ||
        !may_fire(s, Rule::LateralMovement, t, window)) {
        return;
    }
    auto scan = collect(s.lateral, std::nullopt);
    auto f = make(Rule::LateralMovement,
                  user ? config.lateral.severity_user : config.lateral.severity_other,
                  scan.first_ns, t);
    f.distinct_hosts = s.lateral.hosts.size();
    f.distinct_ports = s.lateral.ports.size();
    f.distinct_targets = s.lateral.pairs.size();
    f.score = static_cast<double>(f.distinct_targets) / threshold;
    // Services in order of first attempt: "SMB tcp/445, RDP tcp/3389".
    std::vector<std::uint32_t> seen;
    std::string services;
    for (const auto& [first, k] : scan.pairs) {
        const auto pp = key_protoport(k);
        if (std::find(seen.begin(), seen.end(), pp) != seen.end()) {
            continue;
        }
        seen.push_back(pp);
        const auto* service = lateral_service(protoport_protocol(pp), protoport_port(pp));
        services += (services.empty() ? "" : ", ") + service->name + " " + protoport_text(pp);
    }
    f.explanation = who(s) + " tried " + std::to_string(f.distinct_targets) +
                    " lateral-movement targets on " + std::to_string(f.distinct_hosts) +
                    (f.distinct_hosts == 1 ? " host (" : " hosts (") + services + ") in " +
                    format_duration(t - scan.first_ns);
    samples(f, scan);
    accept(id, std::move(f));
}

void Analyzer::Impl::forbidden_detector(std::uint32_t id, const Observation& o, std::uint32_t host,
                                        std::uint64_t key, std::int64_t t) {
    if (!config.forbidden.enabled) {
        return;
    }
    auto& s = sources[id];
    const auto& d = destinations[host];
    const std::int64_t quiet = seconds(config.forbidden.quiet_seconds);
    const auto pp = key_protoport(key);
    auto fire = [&](Rule rule, Severity severity, const std::string& what) {
        if (!may_fire(s, rule, t, quiet)) {
            return;
        }
        auto f = make(rule, severity, t, t);
        f.distinct_hosts = f.distinct_ports = f.distinct_targets = 1;
        f.score = 1;
        f.explanation = who(s) + " " + what;
        f.sample_targets.push_back(target_text(key));
        accept(id, std::move(f));
    };
    if (o.reason == DropReason::Tripwire) {
        // One packet is proof, and the kernel has already contained the source.
        fire(Rule::Decoy, config.forbidden.decoy_severity,
             "tripped a tripwire towards " + host_text(host) + " on " + protoport_text(pp) +
                 " (contained by the kernel on that packet)");
    } else if (o.reason == DropReason::Decoy || (d.flags & FlagDecoy) != 0) {
        fire(Rule::Decoy, config.forbidden.decoy_severity,
             "touched decoy " + host_text(host) + " on " + protoport_text(pp));
    }
    if (o.reason == DropReason::Spoof) {
        // One forged packet is proof enough; the kernel dropped it, the source is still up.
        fire(Rule::Spoofing,
             (s.flags & FlagVdi) != 0 ? config.forbidden.spoof_severity_vdi : config.forbidden.spoof_severity_other,
             "sent from an address or MAC that is not its own (spoof guard) towards " + host_text(host) + " on " +
                 protoport_text(pp));
    }
    if ((s.flags & FlagUser) != 0 && (d.flags & FlagAdmin) != 0) {
        fire(Rule::UserToAdmin, config.forbidden.user_to_admin_severity,
             "tried admin terminal " + host_text(host) + " on " + protoport_text(pp));
    }
    if ((s.flags & FlagVdi) != 0 && (d.flags & FlagVdi) != 0 && o.protocol == 6 && o.dport &&
        std::find(config.forbidden.file_sharing_ports.begin(),
                  config.forbidden.file_sharing_ports.end(),
                  *o.dport) != config.forbidden.file_sharing_ports.end()) {
        fire(Rule::VdiFileSharing, config.forbidden.vdi_file_sharing_severity,
             "tried file sharing on VDI " + host_text(host) + " on " + protoport_text(pp));
    }
}

} // namespace bulkhead::analyzer
