// The engine's checkpoint: Analyzer::save_state and restore_state (README.md, "Checkpoints").

#include "controller/analyzer/analyzer_state.hpp"

namespace bulkhead::analyzer {

void Analyzer::Impl::save_id(detail::CheckpointWriter& w, std::uint32_t id) {
    w.u(id == kNone ? 0 : std::uint64_t{id} + 1);
}

void Analyzer::Impl::save_finding(detail::CheckpointWriter& w, const Finding& f) {
    w.u(static_cast<std::uint64_t>(f.rule));
    w.u(static_cast<std::uint64_t>(f.severity));
    w.f64(f.score);
    w.str(f.explanation);
    w.str(f.classification);
    w.u(f.distinct_hosts);
    w.u(f.distinct_ports);
    w.u(f.distinct_targets);
    w.i(f.first_ns);
    w.i(f.last_ns);
    w.u(f.sample_targets.size());
    for (const auto& sample : f.sample_targets) {
        w.str(sample);
    }
    w.u(f.incident_id);
}

void Analyzer::Impl::save(detail::CheckpointWriter& w) const {
    w.i(now); // first: the base of the windows' relative times
    source_ids.save(w);
    addresses.save(w);
    strings.save(w);
    w.u(destinations.size());
    for (const auto& d : destinations) {
        w.u(d.flags);
        save_id(w, d.workload);
    }
    w.u(sources.size());
    for (std::size_t i = 0; i < sources.size(); ++i) {
        const auto& s = sources[i];
        w.u(s.used ? 1 : 0);
        w.u(s.generation);
        if (!s.used) {
            continue;
        }
        w.u(s.active ? 1 : 0);
        w.u(s.key_hash);
        for (const auto id : {s.enforcer, s.workload, s.port, s.mac, s.address, s.user}) {
            save_id(w, id);
        }
        w.u(s.flags);
        w.u(s.segments.size());
        for (const auto id : s.segments) {
            save_id(w, id);
        }
        w.i(s.last_ns);
        w.i(s.last_fast_scan_ns);
        s.scan.save(w, now);
        s.lateral.save(w, now);
        slow[i].save(w, now);
        w.u(s.beacons.size());
        s.beacons.for_each([&](std::uint64_t key, const BeaconState& b) {
            w.u(key);
            w.i(now - b.first_ns);
            w.i(now - b.attempt_ns);
            w.i(now - b.last_ns);
            w.u(b.attempts);
            w.u(b.filled);
            w.u(b.head);
            for (const auto sport : b.attempt_sports) {
                w.u(sport);
            }
            w.u(b.burst_ports);
            w.u(b.reported ? 1U : 0U);
            for (const auto v : b.intervals) {
                w.u(v);
            }
        });
        for (const auto q : s.quiet_until) {
            w.i(q);
        }
        w.u(s.incident < 0 ? 0 : incidents[static_cast<std::size_t>(s.incident)].id);
    }
    const auto held = held_by_id();
    w.u(held.size());
    for (const auto index : held) {
        const auto& incident = incidents[index];
        const auto& a = aux[index];
        w.u(incident.id);
        w.u(incident.about_target ? 1 : 0);
        for (const auto* text : {&incident.subject, &incident.enforcer, &incident.workload,
                                 &incident.port, &incident.mac, &incident.address, &incident.user}) {
            w.str(*text);
        }
        w.u(static_cast<std::uint64_t>(incident.severity));
        w.u(incident.repeat_offender ? 1 : 0);
        w.u(static_cast<std::uint64_t>(incident.state));
        w.i(incident.opened_ns);
        w.i(incident.last_ns);
        w.i(incident.resolved_ns);
        w.u(incident.events);
        for (const auto n : incident.findings) {
            w.u(n);
        }
        for (const auto n : incident.suppressed) {
            w.u(n);
        }
        w.u(incident.timeline.size());
        for (const auto& f : incident.timeline) {
            save_finding(w, f);
        }
        w.u(incident.timeline_dropped);
        w.u(static_cast<std::uint64_t>(a.max_finding));
        w.u(a.detector_kinds);
        w.u(a.target_key);
        save_id(w, a.source);
        w.u(a.source_generation);
    }
    w.u(open_incidents.size());
    for (const auto index : open_incidents) {
        w.u(incidents[index].id);
    }
    w.u(resolved_ids.size());
    resolved_ids.for_each([&](std::uint64_t id) { w.u(id); });
    w.u(targets.size());
    for (const auto& ts : targets) {
        w.u(ts.active ? 1 : 0);
        if (!ts.active) {
            continue;
        }
        w.u(ts.key);
        w.i(ts.last_ns);
        w.i(ts.quiet_until);
        w.u(ts.sources.size());
        ts.sources.for_each([&](std::uint64_t source, const FanSource& e) {
            w.u(source);
            w.i(e.first_ns);
            w.i(e.pushed_ns);
            w.i(e.last_ns);
            w.u(e.attempts);
            w.u(e.generation);
        });
        w.u(ts.fifo.size());
        ts.fifo.for_each([&](const std::pair<std::int64_t, std::uint64_t>& e) {
            w.i(e.first);
            w.u(e.second);
        });
    }
    w.u(resolved_at.size());
    resolved_at.for_each([&](std::uint64_t key, std::int64_t at) {
        w.u(key);
        w.i(at);
    });
    w.i(last_sweep);
    w.u(last_incident);
    w.u(next_incident_id);
    w.u(address_collect_at);
    w.u(string_collect_at);
    for (const auto n : counters(totals)) {
        w.u(*n);
    }
}

std::vector<std::size_t> Analyzer::Impl::held_by_id() const {
    std::vector<std::size_t> held;
    for (std::size_t k = 0; k < incidents.size(); ++k) {
        if (incidents[k].id != 0) {
            held.push_back(k);
        }
    }
    std::sort(held.begin(), held.end(),
              [&](std::size_t a, std::size_t b) { return incidents[a].id < incidents[b].id; });
    return held;
}

bool Analyzer::Impl::valid_key(std::uint64_t key) const {
    return (key >> 24) <= 0xFFFFFFFFULL && addresses.holds(key_host(key));
}

void Analyzer::Impl::restore(detail::CheckpointReader& r) {
    now = r.i();
    // Relative times back to absolute ones (wrapping: damaged input must not overflow).
    auto before_now = [&](std::int64_t delta) {
        return static_cast<std::int64_t>(static_cast<std::uint64_t>(now) - static_cast<std::uint64_t>(delta));
    };
    if (!source_ids.restore(r) || !addresses.restore(r) || !strings.restore(r)) {
        return;
    }
    // A string id: 0 is none (allowed only where `optional`), else id + 1 of a held name.
    auto string_id = [&](bool optional) -> std::uint32_t {
        const auto v = r.u();
        if (v == 0 && optional) {
            return kNone;
        }
        if (v == 0 || v - 1 > 0xFFFFFFFFULL || !strings.holds(static_cast<std::uint32_t>(v - 1))) {
            r.invalid("a name id refers to no name");
            return kNone;
        }
        return static_cast<std::uint32_t>(v - 1);
    };
    const auto destination_count = r.count(2);
    if (r.ok() && destination_count != addresses.size()) {
        return r.invalid("destinations do not match the addresses");
    }
    destinations.resize(destination_count);
    for (auto& d : destinations) {
        d.flags = r.u32();
        d.workload = string_id(true);
    }
    const auto source_count = r.count(2);
    if (r.ok() && source_count != source_ids.size()) {
        return r.invalid("sources do not match the source identities");
    }
    sources.resize(source_count);
    slow.resize(source_count);
    std::vector<std::uint64_t> source_incident(source_count, 0);
    auto key_ok = [&](std::uint64_t key) { return valid_key(key); };
    for (std::size_t i = 0; i < source_count && r.ok(); ++i) {
        auto& s = sources[i];
        s.used = r.flag();
        s.generation = r.u32();
        if (s.used != source_ids.holds(static_cast<std::uint32_t>(i))) {
            return r.invalid("a source slot disagrees with the source identities");
        }
        if (!s.used) {
            continue;
        }
        s.active = r.flag();
        s.key_hash = r.u();
        for (auto* id : {&s.enforcer, &s.workload, &s.port, &s.mac, &s.address, &s.user}) {
            *id = string_id(false);
        }
        s.flags = r.u32();
        const auto segments = r.count(1);
        for (std::size_t k = 0; k < segments && r.ok(); ++k) {
            s.segments.push_back(string_id(false));
        }
        s.last_ns = r.i();
        s.last_fast_scan_ns = r.i();
        s.scan.restore(r, now, key_ok);
        s.lateral.restore(r, now, key_ok);
        slow[i].restore(r, now, key_ok);
        const auto beacons = r.count(1 + 3 + 3 + 4 + 1 + 1 + kBeaconRing);
        for (std::size_t k = 0; k < beacons && r.ok(); ++k) {
            const auto key = r.u();
            BeaconState b;
            b.first_ns = before_now(r.i());
            b.attempt_ns = before_now(r.i());
            b.last_ns = before_now(r.i());
            b.attempts = r.u32();
            b.filled = r.u8(kBeaconRing);
            b.head = r.u8(kBeaconRing - 1);
            for (auto& sport : b.attempt_sports) {
                sport = static_cast<std::uint16_t>(std::min<std::uint64_t>(r.u(), 0xFFFF));
            }
            b.burst_ports = r.u();
            b.reported = r.flag();
            for (auto& v : b.intervals) {
                v = static_cast<std::uint16_t>(std::min<std::uint64_t>(r.u(), 0xFFFF));
            }
            bool inserted = false;
            if (!valid_key(key)) {
                return r.invalid("a beacon series refers to an unknown address");
            }
            s.beacons.get_or_insert(key, inserted) = b;
            if (!inserted) {
                return r.invalid("a beacon series is held twice");
            }
        }
        for (auto& q : s.quiet_until) {
            q = r.i();
        }
        source_incident[i] = r.u();
        if (s.active) {
            ++active_sources;
        }
    }
    const auto incident_count = r.count(40);
    incidents.resize(incident_count);
    aux.resize(incident_count);
    for (std::size_t k = 0; k < incident_count && r.ok(); ++k) {
        auto& incident = incidents[k];
        auto& a = aux[k];
        incident.id = r.u();
        incident.about_target = r.flag();
        for (auto* text : {&incident.subject, &incident.enforcer, &incident.workload,
                           &incident.port, &incident.mac, &incident.address, &incident.user}) {
            *text = r.str();
        }
        incident.severity = static_cast<Severity>(r.u8(3));
        incident.repeat_offender = r.flag();
        incident.state = static_cast<IncidentState>(r.u8(1));
        incident.opened_ns = r.i();
        incident.last_ns = r.i();
        incident.resolved_ns = r.i();
        incident.events = r.u();
        for (auto& n : incident.findings) {
            n = r.u();
        }
        for (auto& n : incident.suppressed) {
            n = r.u();
        }
        const auto timeline = r.count(16);
        for (std::size_t n = 0; n < timeline && r.ok(); ++n) {
            Finding f;
            f.rule = static_cast<Rule>(r.u8(rule_count - 1));
            f.detector = detector_name(f.rule);
            f.rule_text = rule_name(f.rule);
            f.severity = static_cast<Severity>(r.u8(3));
            f.score = r.f64();
            f.explanation = r.str();
            f.classification = r.str();
            f.distinct_hosts = r.u();
            f.distinct_ports = r.u();
            f.distinct_targets = r.u();
            f.first_ns = r.i();
            f.last_ns = r.i();
            const auto samples = r.count(1);
            for (std::size_t m = 0; m < samples && r.ok(); ++m) {
                f.sample_targets.push_back(r.str());
            }
            f.incident_id = r.u();
            incident.timeline.push_back(std::move(f));
        }
        incident.timeline_dropped = r.u();
        a.max_finding = static_cast<Severity>(r.u8(3));
        a.detector_kinds = r.u32();
        a.target_key = r.u();
        const auto source = r.u();
        a.source = source == 0 || source - 1 >= source_count ? kNone : static_cast<std::uint32_t>(source - 1);
        a.source_generation = r.u32();
        bool inserted = false;
        if (r.ok() && (incident.id == 0 || incident.id == detail::FlatMap<std::uint32_t>::empty_key)) {
            return r.invalid("an incident id is 0");
        }
        if (r.ok()) {
            incident_slot.get_or_insert(incident.id, inserted) = static_cast<std::uint32_t>(k);
            if (!inserted) {
                return r.invalid("an incident id is used twice");
            }
        }
        if (r.ok() && incident.about_target && !valid_key(a.target_key)) {
            return r.invalid("a fan-in incident refers to an unknown address");
        }
    }
    if (!r.ok()) {
        return;
    }
    // Sources and their open incidents name each other.
    std::size_t open_count = 0;
    for (std::size_t k = 0; k < incidents.size(); ++k) {
        const auto& incident = incidents[k];
        if (incident.state != IncidentState::Open) {
            continue;
        }
        ++open_count;
        if (incident.about_target) {
            bool inserted = false;
            target_incident.get_or_insert(aux[k].target_key, inserted) = static_cast<std::int64_t>(k);
            if (!inserted) {
                return r.invalid("two open fan-in incidents about one target");
            }
        } else if (auto* s = source_of_incident(k); s == nullptr ||
                   source_incident[aux[k].source] != incident.id) {
            return r.invalid("an open incident's source does not name it");
        }
    }
    for (std::size_t i = 0; i < sources.size(); ++i) {
        if (source_incident[i] == 0) {
            continue;
        }
        const auto slot = slot_of(source_incident[i]);
        if (slot == kNone || incidents[slot].state != IncidentState::Open ||
            incidents[slot].about_target || aux[slot].source != i) {
            return r.invalid("a source names an incident that is not its open incident");
        }
        sources[i].incident = static_cast<std::int64_t>(slot);
    }
    std::vector<bool> listed(incidents.size(), false);
    const auto open_listed = r.count(1);
    for (std::size_t k = 0; k < open_listed && r.ok(); ++k) {
        const auto slot = slot_of(r.u());
        if (slot == kNone || listed[slot] || incidents[slot].state != IncidentState::Open) {
            return r.invalid("the open incident list is wrong");
        }
        listed[slot] = true;
        open_incidents.push_back(slot);
    }
    const auto resolved_listed = r.count(1);
    for (std::size_t k = 0; k < resolved_listed && r.ok(); ++k) {
        const auto id = r.u();
        const auto slot = slot_of(id);
        if (slot == kNone || listed[slot] || incidents[slot].state != IncidentState::Resolved) {
            return r.invalid("the resolved incident list is wrong");
        }
        listed[slot] = true;
        resolved_ids.push_back(id);
    }
    if (r.ok() && (open_listed != open_count || open_listed + resolved_listed != incidents.size())) {
        return r.invalid("incidents missing from the open and resolved lists");
    }
    const auto target_count = r.count(1);
    targets.resize(target_count);
    for (std::uint32_t k = 0; k < target_count && r.ok(); ++k) {
        auto& ts = targets[k];
        ts.active = r.flag();
        if (!ts.active) {
            free_targets.push_back(k);
            continue;
        }
        ts.key = r.u();
        ts.last_ns = r.i();
        ts.quiet_until = r.i();
        bool inserted = false;
        if (r.ok() && !valid_key(ts.key)) {
            return r.invalid("a fan-in target refers to an unknown address");
        }
        if (r.ok()) {
            target_index.get_or_insert(ts.key, inserted) = k;
            if (!inserted) {
                return r.invalid("a fan-in target is held twice");
            }
        }
        ++active_targets;
        const auto fan_sources = r.count(6);
        for (std::size_t n = 0; n < fan_sources && r.ok(); ++n) {
            const auto source = r.u();
            FanSource e;
            e.first_ns = r.i();
            e.pushed_ns = r.i();
            e.last_ns = r.i();
            e.attempts = r.u32();
            e.generation = r.u32();
            if (source >= sources.size()) {
                return r.invalid("a fan-in entry names an unknown source");
            }
            ts.sources.get_or_insert(source, inserted) = e;
        }
        const auto queued = r.count(2);
        for (std::size_t n = 0; n < queued && r.ok(); ++n) {
            const auto t = r.i();
            const auto source = r.u();
            if (source >= sources.size()) {
                return r.invalid("a fan-in queue names an unknown source");
            }
            ts.fifo.push_back({t, source});
        }
    }
    const auto records = r.count(2);
    for (std::size_t k = 0; k < records && r.ok(); ++k) {
        const auto key = r.u();
        const auto at = r.i();
        if (key == detail::FlatMap<std::int64_t>::empty_key) {
            return r.invalid("a repeat-offender record has the reserved key");
        }
        bool inserted = false;
        resolved_at.get_or_insert(key, inserted) = at;
    }
    last_sweep = r.i();
    last_incident = r.u();
    next_incident_id = r.u();
    address_collect_at = std::max<std::size_t>(r.u(), kCollectFloor);
    string_collect_at = std::max<std::size_t>(r.u(), kCollectFloor);
    for (auto* n : counters(totals)) {
        *n = r.u();
    }
    if (r.ok() && !incidents.empty() &&
        incidents[held_by_id().back()].id >= next_incident_id) {
        return r.invalid("an incident id is beyond the next incident id");
    }
    if (r.ok() && !r.at_end()) {
        return r.invalid("bytes left after the state");
    }
}

namespace {
constexpr std::string_view kCheckpointMagic = "BHAE"; // Bulkhead analyzer engine
// Bump on any change of what save() writes (a rule added changes rule_count, hence the layout).
// Version 2: the spoof-guard rule (rule_count 12). A version-1 checkpoint is refused and the
// controller rebuilds the state by replaying stored events, as for any unreadable checkpoint.
// Version 3: beacon series hold their last attempts' source ports.
// Version 4: beacon series hold whether they were reported (one finding per destination).
constexpr std::uint8_t kCheckpointVersion = 4;
static_assert(rule_count == 12, "a new rule changes the checkpoint layout: bump its version");
} // namespace

std::string Analyzer::save_state() const {
    detail::CheckpointWriter w(kCheckpointMagic, kCheckpointVersion);
    impl_->save(w);
    return std::move(w).finish();
}

std::expected<Analyzer, std::string> Analyzer::restore_state(std::string_view bytes,
                                                             AnalyzerConfig config) {
    detail::CheckpointReader r(bytes, kCheckpointMagic, kCheckpointVersion, "analyzer");
    auto impl = std::make_unique<Impl>(std::move(config), Impl::Blank{});
    if (r.ok()) {
        impl->restore(r);
    }
    if (!r.ok()) {
        return std::unexpected(r.error());
    }
    impl->derive();
    Analyzer engine;
    engine.impl_ = std::move(impl);
    return engine;
}

} // namespace bulkhead::analyzer
