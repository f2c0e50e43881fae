// The correlator: findings into incidents (per source, or per target for fan-in),
// escalation, resolve, and the bounds on incidents and repeat-offender records.

#include "controller/analyzer/analyzer_state.hpp"

namespace bulkhead::analyzer {

void Analyzer::Impl::escalate(Incident& incident, IncidentAux& a, const Finding& f) {
    a.max_finding = std::max(a.max_finding, f.severity);
    a.detector_kinds |= detector_bit(f.rule);
    int levels = 0;
    if (config.correlator.escalate_multiple_detectors && std::popcount(a.detector_kinds) >= 2) {
        ++levels;
    }
    if (incident.repeat_offender) {
        ++levels;
    }
    incident.severity = std::max(incident.severity, bump(a.max_finding, levels));
}

std::size_t Analyzer::Impl::open_incident(std::int64_t t) {
    if (open_incidents.size() >= std::max<std::uint32_t>(config.limits.max_open_incidents, 1)) {
        evict_open_incident();
    }
    std::size_t index = 0;
    if (!free_incident_slots.empty()) {
        index = free_incident_slots.back();
        free_incident_slots.pop_back();
    } else {
        index = incidents.size();
        incidents.emplace_back();
        aux.emplace_back();
    }
    auto& incident = incidents[index];
    incident.id = next_incident_id++;
    incident.opened_ns = t;
    incident.last_ns = t;
    bool inserted = false;
    incident_slot.get_or_insert(incident.id, inserted) = static_cast<std::uint32_t>(index);
    open_incidents.push_back(index);
    ++totals.incidents;
    return index;
}

// The incident leaves memory (its slot is reused).
void Analyzer::Impl::release_incident(std::size_t index) {
    incident_slot.erase(incidents[index].id);
    incidents[index] = Incident{};
    aux[index] = IncidentAux{};
    free_incident_slots.push_back(static_cast<std::uint32_t>(index));
}

// At max_open_incidents: the open incident quiet the longest leaves memory unresolved;
// its subject is unlinked, so a new finding opens a new incident.
void Analyzer::Impl::evict_open_incident() {
    auto oldest = open_incidents.begin();
    for (auto it = open_incidents.begin(); it != open_incidents.end(); ++it) {
        if (incidents[*it].last_ns < incidents[*oldest].last_ns) {
            oldest = it;
        }
    }
    const auto index = *oldest;
    open_incidents.erase(oldest);
    if (incidents[index].about_target) {
        target_incident.erase(aux[index].target_key);
    } else if (auto* s = source_of_incident(index)) {
        s->incident = -1;
    }
    release_incident(index);
    ++totals.evicted_incidents;
}

void Analyzer::Impl::record(std::size_t index, Finding&& f) {
    auto& incident = incidents[index];
    f.incident_id = incident.id;
    ++incident.findings[static_cast<std::size_t>(f.rule)];
    incident.last_ns = std::max(incident.last_ns, f.last_ns);
    escalate(incident, aux[index], f);
    if (incident.timeline.size() < config.correlator.max_timeline) {
        incident.timeline.push_back(f);
    } else {
        ++incident.timeline_dropped;
    }
    ++totals.findings;
    emitted.push_back(std::move(f));
}

void Analyzer::Impl::accept(std::uint32_t source_id, Finding&& f) {
    auto& s = sources[source_id];
    if (s.incident < 0) {
        const auto index = open_incident(f.last_ns);
        auto& incident = incidents[index];
        incident.subject =
            std::string(strings.name(s.enforcer)) + "/" +
            std::string(strings.name(s.workload).empty() ? strings.name(s.address)
                                                         : strings.name(s.workload));
        incident.enforcer = strings.name(s.enforcer);
        incident.workload = strings.name(s.workload);
        incident.port = strings.name(s.port);
        incident.mac = strings.name(s.mac);
        incident.address = strings.name(s.address);
        incident.user = strings.name(s.user);
        const auto* resolved = resolved_at.find(s.key_hash);
        incident.repeat_offender =
            resolved != nullptr &&
            f.last_ns - *resolved <= seconds(config.correlator.repeat_offender_seconds);
        aux[index].source = source_id;
        aux[index].source_generation = s.generation;
        s.incident = static_cast<std::int64_t>(index);
    }
    record(static_cast<std::size_t>(s.incident), std::move(f));
}

void Analyzer::Impl::accept_target(std::uint64_t key, Finding&& f) {
    std::size_t index = 0;
    if (auto* existing = target_incident.find(key)) {
        index = static_cast<std::size_t>(*existing);
    } else {
        index = open_incident(f.last_ns);
        auto& incident = incidents[index];
        incident.about_target = true;
        incident.subject = target_text(key);
        incident.address = addresses.name(key_host(key));
        aux[index].target_key = key;
        bool inserted = false;
        target_incident.get_or_insert(key, inserted) = static_cast<std::int64_t>(index);
    }
    record(index, std::move(f));
}

void Analyzer::Impl::close(std::size_t index, std::int64_t at_ns) {
    auto& incident = incidents[index];
    if (incident.state == IncidentState::Resolved) {
        return;
    }
    incident.state = IncidentState::Resolved;
    incident.resolved_ns = at_ns;
    if (incident.about_target) {
        const auto key = aux[index].target_key;
        target_incident.erase(key);
        if (auto* t = target_index.find(key)) {
            targets[*t].quiet_until = kNever;
        }
    } else if (auto* s = source_of_incident(index)) {
        s->incident = -1;
        s->quiet_until.fill(kNever);
        bool inserted = false;
        resolved_at.get_or_insert(s->key_hash, inserted) = at_ns;
        if (resolved_at.size() > config.limits.max_repeat_offender_records) {
            evict_repeat_offender_records();
        }
    }
    std::erase(open_incidents, index);
    resolved_ids.push_back(incident.id);
    while (resolved_ids.size() > config.limits.max_resolved_incidents) {
        const auto released = slot_of(resolved_ids.front());
        resolved_ids.pop_front();
        if (released != kNone) {
            release_incident(released);
            ++totals.released_incidents;
        }
    }
}

// Above max_repeat_offender_records: the oldest records go, a sixteenth of the cap at once.
void Analyzer::Impl::evict_repeat_offender_records() {
    std::vector<std::pair<std::int64_t, std::uint64_t>> records;
    resolved_at.for_each([&](std::uint64_t key, std::int64_t at) { records.emplace_back(at, key); });
    const std::size_t cap = config.limits.max_repeat_offender_records;
    const std::size_t target = cap - cap / 16;
    const std::size_t n = std::min(records.size() - std::min(records.size(), target), records.size());
    std::nth_element(records.begin(), records.begin() + static_cast<std::ptrdiff_t>(n), records.end());
    for (std::size_t k = 0; k < n; ++k) {
        resolved_at.erase(records[k].second);
        ++totals.evicted_repeat_offender_records;
    }
}

} // namespace bulkhead::analyzer
