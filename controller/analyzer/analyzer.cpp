// The analyzer's public API: names of rules and reasons, the engine's configuration
// (derive), source identities, and one observation through the detectors (observe).

#include "controller/analyzer/analyzer_state.hpp"

#include <cstdio>

namespace bulkhead::analyzer {

// ------------------------------------------------------------------ names ---------------

std::string_view to_string(DropReason reason) {
    switch (reason) {
    case DropReason::Default:
        return "default";
    case DropReason::Deny:
        return "deny";
    case DropReason::Decoy:
        return "decoy";
    case DropReason::Quarantine:
        return "quarantine";
    case DropReason::Tripwire:
        return "tripwire";
    case DropReason::Spoof:
        return "spoof";
    }
    return "?";
}

std::optional<DropReason> drop_reason_from_string(std::string_view text) {
    for (auto r :
         {DropReason::Default, DropReason::Deny, DropReason::Decoy, DropReason::Quarantine,
          DropReason::Tripwire, DropReason::Spoof}) {
        if (to_string(r) == text) {
            return r;
        }
    }
    return std::nullopt;
}

std::string_view detector_name(Rule rule) {
    switch (rule) {
    case Rule::HostSweep:
        return "host-sweep";
    case Rule::VerticalScan:
        return "port-scan-vertical";
    case Rule::BoxScan:
        return "port-scan-box";
    case Rule::LateralMovement:
        return "lateral-movement";
    case Rule::Decoy:
    case Rule::UserToAdmin:
    case Rule::VdiFileSharing:
        return "forbidden-zone";
    case Rule::Beaconing:
        return "beaconing";
    case Rule::FanIn:
        return "fan-in";
    case Rule::SlowScan:
        return "slow-scan";
    case Rule::DistinctTargets:
        return "distinct-targets";
    case Rule::Spoofing:
        return "spoof-guard";
    }
    return "?";
}

std::optional<Rule> rule_from_name(std::string_view name) {
    for (std::size_t r = 0; r < rule_count; ++r) {
        if (rule_name(static_cast<Rule>(r)) == name) {
            return static_cast<Rule>(r);
        }
    }
    return std::nullopt;
}

std::string_view rule_name(Rule rule) {
    switch (rule) {
    case Rule::Decoy:
        return "decoy";
    case Rule::UserToAdmin:
        return "user-to-admin";
    case Rule::VdiFileSharing:
        return "vdi-file-sharing";
    default:
        return detector_name(rule);
    }
}

std::vector<std::string> default_ignored_destinations() {
    return {"255.255.255.255/32", "224.0.0.0/4", "ff00::/8"};
}

std::vector<LateralService> default_lateral_services() {
    return {{"SMB", 6, 445},     {"NetBIOS", 6, 139}, {"RDP", 6, 3389},  {"RDP", 17, 3389},
            {"WinRM", 6, 5985},  {"WinRM", 6, 5986},  {"SSH", 6, 22},    {"RPC", 6, 135},
            {"LDAP", 6, 389},    {"LDAP", 17, 389},   {"LDAPS", 6, 636}, {"LDAP-GC", 6, 3268},
            {"LDAP-GC", 6, 3269}};
}

std::string format_duration(std::int64_t ns) {
    ns = std::max<std::int64_t>(ns, 0);
    char text[64];
    if (ns < kSecond) {
        std::snprintf(text, sizeof text, "%lld ms", static_cast<long long>(ns / 1'000'000));
    } else if (ns < 10 * kSecond) {
        std::snprintf(text, sizeof text, "%.1f s", static_cast<double>(ns) / 1e9);
    } else {
        const long long s = (ns + kSecond / 2) / kSecond;
        if (s < 120) {
            std::snprintf(text, sizeof text, "%lld s", s);
        } else if (s < 7200) {
            if (s % 60 == 0) {
                std::snprintf(text, sizeof text, "%lld min", s / 60);
            } else {
                std::snprintf(text, sizeof text, "%lld min %lld s", s / 60, s % 60);
            }
        } else {
            std::snprintf(text, sizeof text, "%lld h %lld min", s / 3600, (s % 3600) / 60);
        }
    }
    return text;
}


// What the configuration implies: the lateral service table, segment ids, decoys.
void Analyzer::Impl::derive() {
    lateral_index.assign(3 * 65536, 0);
    user_segments.clear();
    admin_segments.clear();
    vdi_segments.clear();
    exemption_segments.clear();
    for (std::size_t i = 0; i < config.lateral.services.size() && i < 255; ++i) {
        const auto& s = config.lateral.services[i];
        if (auto cls = protocol_class(s.protocol); cls >= 0) {
            lateral_index[static_cast<std::size_t>(cls) * 65536 + s.port] =
                static_cast<std::uint8_t>(i + 1);
        }
    }
    for (const auto& s : config.user_segments)
        user_segments.push_back(strings.intern(s));
    for (const auto& s : config.admin_segments)
        admin_segments.push_back(strings.intern(s));
    for (const auto& s : config.vdi_segments)
        vdi_segments.push_back(strings.intern(s));
    for (const auto& a : config.forbidden.decoy_addresses) {
        bool fresh = false;
        const auto id = addresses.intern(a, fresh);
        ensure_destination(id).flags |= FlagDecoy;
    }
    for (const auto& e : config.exemptions) {
        exemption_segments.push_back(e.segment.empty() ? kNone : strings.intern(e.segment));
    }
    ignored_ranges.clear();
    for (const auto& text : config.ignored_destinations) {
        if (auto range = policy::parse_cidr(text)) {
            ignored_ranges.push_back(*range);
        }
    }
    // Destinations already seen are judged again against the new list.
    for (std::uint32_t id = 0; id < destinations.size() && id < addresses.size(); ++id) {
        destinations[id].flags &= ~static_cast<std::uint32_t>(FlagIgnored);
        if (ignored(addresses.name(id))) {
            destinations[id].flags |= FlagIgnored;
        }
    }
}

std::uint32_t Analyzer::Impl::segment_flags(std::span<const std::string> segments,
                                            std::vector<std::uint32_t>* ids) {
    std::uint32_t flags = 0;
    for (const auto& s : segments) {
        const auto id = ids != nullptr ? strings.intern(s) : strings.find(s);
        if (ids != nullptr) {
            ids->push_back(id);
        }
        if (id == kNone) {
            continue;
        }
        if (std::find(user_segments.begin(), user_segments.end(), id) != user_segments.end())
            flags |= FlagUser;
        if (std::find(admin_segments.begin(), admin_segments.end(), id) != admin_segments.end())
            flags |= FlagAdmin;
        if (std::find(vdi_segments.begin(), vdi_segments.end(), id) != vdi_segments.end())
            flags |= FlagVdi;
    }
    return flags;
}

std::uint32_t Analyzer::Impl::source_of(const Observation& o) {
    auto& k = key_buffer;
    k.clear();
    k.append(o.source.enforcer);
    k.push_back('\x1f');
    if (!o.source.workload.empty()) {
        k.append(o.source.workload);
    } else {
        k.push_back('\x1f');
        k.append(o.source.port);
        k.push_back('\x1f');
        k.append(o.source.address);
    }
    bool fresh = false;
    const auto id = source_ids.intern(k, fresh);
    if (fresh) {
        if (id == sources.size()) {
            sources.emplace_back();
            slow.emplace_back();
        }
        auto& slot = sources[id]; // new, or reset by release_source
        slot.used = true;
        slot.key_hash = record_key(k);
        slot.quiet_until.fill(kNever);
        ++totals.sources;
        if (source_ids.live() > config.limits.max_sources) {
            evict_sources(id);
        }
    }
    auto& s = sources[id];
    if (!s.active) {
        s.active = true;
        ++active_sources;
        s.enforcer = strings.intern(o.source.enforcer);
        s.workload = strings.intern(o.source.workload);
        s.port = strings.intern(o.source.port);
        s.mac = strings.intern(o.source.mac);
        s.address = strings.intern(o.source.address);
        s.user = strings.intern(o.user);
        s.segments.clear();
        s.flags = segment_flags(o.source_segments, &s.segments);
    }
    return id;
}

std::string Analyzer::Impl::who(const SourceState& s) const {
    std::string text;
    if (!strings.name(s.workload).empty()) {
        text = std::string(strings.name(s.workload));
    } else {
        text = std::string(strings.name(s.address)) + " (unattributed, " +
               std::string(strings.name(s.enforcer));
        if (!strings.name(s.port).empty()) {
            text += "/" + std::string(strings.name(s.port));
        }
        text += ")";
    }
    if (!strings.name(s.user).empty()) {
        text += " (user " + std::string(strings.name(s.user)) + ")";
    }
    return text;
}

std::string Analyzer::Impl::target_text(std::uint64_t key) const {
    const auto pp = key_protoport(key);
    const auto protocol = protoport_protocol(pp);
    std::string text =
        std::string(addresses.name(key_host(key))) + " " + protocol_text(protocol);
    if (has_ports(protocol)) {
        text += "/" + std::to_string(protoport_port(pp));
    }
    return text;
}

std::string Analyzer::Impl::host_text(std::uint32_t host) const {
    const auto& d = destinations[host];
    if (d.workload != kNone && !strings.name(d.workload).empty()) {
        return std::string(strings.name(d.workload)) + " (" +
               std::string(addresses.name(host)) + ")";
    }
    return std::string(addresses.name(host));
}

void Analyzer::Impl::observe(const Observation& o) {
    emitted.clear();
    ++totals.observations;
    if (now == kNever || o.time_ns > now) {
        now = o.time_ns;
    }
    if (last_sweep == kNever) {
        last_sweep = now;
    } else if (now - last_sweep >= seconds(config.sweep_seconds)) {
        sweep(now);
        last_sweep = now;
    }
    const auto id = source_of(o);
    auto& s = sources[id];
    // Events of one source arrive nearly in order; a late one never moves its windows back.
    const std::int64_t t = std::max(o.time_ns, s.last_ns);
    s.last_ns = t;
    if (s.incident >= 0 && config.correlator.auto_resolve_idle_seconds > 0) {
        const auto& incident = incidents[static_cast<std::size_t>(s.incident)];
        const std::int64_t after = seconds(config.correlator.auto_resolve_idle_seconds);
        if (t - incident.last_ns >= after) {
            close(static_cast<std::size_t>(s.incident), incident.last_ns + after);
        }
    }
    bool fresh = false;
    const auto host = addresses.intern(o.destination, fresh);
    auto& d = ensure_destination(host);
    if (fresh) {
        d.flags |= segment_flags(o.destination_segments, nullptr);
        d.workload =
            o.destination_workload.empty() ? kNone : strings.intern(o.destination_workload);
        if (ignored(o.destination)) {
            d.flags |= FlagIgnored;
        }
    }
    const std::uint16_t port = has_ports(o.protocol) ? o.dport.value_or(0) : 0;
    const auto key = target_key(host, o.protocol, port);
    if ((d.flags & FlagIgnored) != 0 && o.reason != DropReason::Decoy &&
        o.reason != DropReason::Tripwire && o.reason != DropReason::Spoof) {
        ++totals.ignored;
        count_on_incidents(id, key, t, o.count);
        return;
    }
    // The slow window sees a target when the fast one takes it anew (first sight, or back
    // after a minute away): a target repeated every second costs one lookup, not two.
    if (scan_detectors(id, key, t)) {
        slow_scan_detector(id, key, t);
    }
    lateral_detector(id, key, t);
    forbidden_detector(id, o, host, key, t);
    beacon_detector(id, key, t, o.protocol, o.sport.value_or(0)); // for ICMP echo: its identifier
    fan_in_detector(id, key, t);
    count_on_incidents(id, key, t, o.count);
}

void Analyzer::Impl::count_on_incidents(std::uint32_t id, std::uint64_t key, std::int64_t t,
                                        std::uint64_t count) {
    last_incident = 0;
    if (auto* ti = target_incident.find(key)) {
        auto& incident = incidents[static_cast<std::size_t>(*ti)];
        incident.events += count;
        incident.last_ns = std::max(incident.last_ns, t);
        last_incident = incident.id;
    }
    if (auto& src = sources[id]; src.incident >= 0) {
        auto& incident = incidents[static_cast<std::size_t>(src.incident)];
        incident.events += count;
        incident.last_ns = std::max(incident.last_ns, t);
        last_incident = incident.id;
    }
}

Analyzer::Analyzer(AnalyzerConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}
Analyzer::~Analyzer() = default;
Analyzer::Analyzer(Analyzer&&) noexcept = default;
Analyzer& Analyzer::operator=(Analyzer&&) noexcept = default;

std::span<const Finding> Analyzer::observe(const Observation& observation) {
    impl_->observe(observation);
    return impl_->emitted;
}

bool Analyzer::resolve(std::uint64_t incident_id, std::int64_t at_ns) {
    const auto slot = impl_->slot_of(incident_id);
    if (slot == kNone || impl_->incidents[slot].state == IncidentState::Resolved) {
        return false;
    }
    impl_->close(slot, at_ns);
    return true;
}

void Analyzer::reconfigure(AnalyzerConfig config) {
    impl_->config = std::move(config);
    impl_->derive();
}

bool Analyzer::rearm(std::uint64_t incident_id) {
    const auto slot = impl_->slot_of(incident_id);
    if (slot == kNone || impl_->incidents[slot].about_target) {
        return false;
    }
    impl_->rearm(slot);
    return true;
}

std::uint64_t Analyzer::last_incident() const {
    return impl_->last_incident;
}

void Analyzer::add_exemption(Exemption exemption) {
    impl_->exemption_segments.push_back(
        exemption.segment.empty() ? kNone : impl_->strings.intern(exemption.segment));
    impl_->config.exemptions.push_back(std::move(exemption));
}

std::vector<const Incident*> Analyzer::incidents() const {
    std::vector<const Incident*> held;
    for (const auto& incident : impl_->incidents) {
        if (incident.id != 0) {
            held.push_back(&incident);
        }
    }
    std::sort(held.begin(), held.end(), [](const Incident* a, const Incident* b) { return a->id < b->id; });
    return held;
}

const Incident* Analyzer::incident(std::uint64_t id) const {
    const auto slot = impl_->slot_of(id);
    return slot == kNone ? nullptr : &impl_->incidents[slot];
}

Totals Analyzer::totals() const {
    Totals totals = impl_->totals;
    totals.active_sources = impl_->active_sources;
    totals.tracked_targets = impl_->active_targets;
    totals.held_sources = impl_->source_ids.live();
    totals.open_incidents = impl_->open_incidents.size();
    totals.held_incidents = impl_->incident_slot.size();
    totals.repeat_offender_records = impl_->resolved_at.size();
    return totals;
}

std::size_t Analyzer::memory_bytes() const {
    return impl_->memory_bytes();
}

const AnalyzerConfig& Analyzer::config() const {
    return impl_->config;
}

} // namespace bulkhead::analyzer
