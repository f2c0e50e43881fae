// Bounded memory: sources that go idle or beyond max_sources leave, fan-in targets expire,
// unreferenced interned addresses and names are collected; the engine's size in bytes.

#include "controller/analyzer/analyzer_state.hpp"

namespace bulkhead::analyzer {

// The source leaves memory; its id goes back to the interner for reuse.
void Analyzer::Impl::release_source(std::uint32_t id) {
    auto& s = sources[id];
    if (s.active) {
        --active_sources;
    }
    const auto generation = s.generation + 1;
    s = SourceState{};
    s.generation = generation;
    slow[id].reset();
    source_ids.erase(id);
}

// Above max_sources: the least recently seen sources without an open incident leave, a
// sixteenth of the cap at once so the selection's cost spreads over many new sources.
void Analyzer::Impl::evict_sources(std::uint32_t keep) {
    std::vector<std::pair<std::int64_t, std::uint32_t>> candidates;
    for (std::uint32_t i = 0; i < sources.size(); ++i) {
        if (sources[i].used && i != keep && sources[i].incident < 0) {
            candidates.emplace_back(sources[i].last_ns, i);
        }
    }
    const std::size_t target = config.limits.max_sources - config.limits.max_sources / 16;
    const std::size_t excess = source_ids.live() > target ? source_ids.live() - target : 0;
    const std::size_t n = std::min(std::max<std::size_t>(excess, 1), candidates.size());
    std::nth_element(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(n),
                     candidates.end());
    for (std::size_t k = 0; k < n; ++k) {
        release_source(candidates[k].second);
        ++totals.evicted_sources;
    }
}

std::int64_t Analyzer::Impl::source_idle_ns() const {
    // At least the fan-in window too: a target's source list reads its sources' state.
    return std::max(
        {seconds(config.scan.window_seconds), seconds(config.lateral.window_seconds),
         config.slow_scan.enabled ? seconds(config.slow_scan.window_seconds) : 0,
         seconds(config.fan_in.window_seconds),
         config.beaconing.enabled ? seconds(config.beaconing.max_interval_seconds) : 0});
}

void Analyzer::Impl::sweep(std::int64_t now_ns) {
    const std::int64_t idle = source_idle_ns();
    for (std::uint32_t i = 0; i < sources.size(); ++i) {
        auto& s = sources[i];
        if (!s.used || now_ns - s.last_ns <= idle) {
            // An active source's windows expire on its own next event (lazily), bounded
            // by the caps meanwhile; the pass only frees what went idle.
            continue;
        }
        // A source leaving memory forgets its quiet periods: it leaves once they are over
        // (else, back, it would fire again early) and no open incident names it.
        if (s.incident < 0 &&
            *std::max_element(s.quiet_until.begin(), s.quiet_until.end()) <= now_ns) {
            release_source(i);
            ++totals.released_sources;
            continue;
        }
        // Idle, but its open incident or a quiet period holds it: the identity stays, the
        // windows go.
        if (s.active) {
            s.scan.reset();
            s.lateral.reset();
            slow[i].reset();
            s.beacons.clear_and_release();
            std::vector<std::uint32_t>().swap(s.segments);
            s.active = false;
            --active_sources;
        }
    }
    if (!resolved_at.empty()) {
        const std::int64_t keep = seconds(config.correlator.repeat_offender_seconds);
        std::vector<std::uint64_t> expired;
        resolved_at.for_each([&](std::uint64_t key, std::int64_t at) {
            if (now_ns - at > keep) {
                expired.push_back(key);
            }
        });
        for (const auto key : expired) {
            resolved_at.erase(key);
        }
        totals.expired_repeat_offender_records += expired.size();
    }
    const std::int64_t fan_window = seconds(config.fan_in.window_seconds);
    for (std::uint32_t i = 0; i < targets.size(); ++i) {
        auto& ts = targets[i];
        if (!ts.active) {
            continue;
        }
        if (now_ns - ts.last_ns > fan_window) {
            target_index.erase(ts.key);
            ts.sources.clear_and_release();
            ts.fifo.release();
            ts.active = false;
            free_targets.push_back(i);
            --active_targets;
        }
    }
    if (config.correlator.auto_resolve_idle_seconds > 0) {
        const std::int64_t after = seconds(config.correlator.auto_resolve_idle_seconds);
        for (std::size_t k = open_incidents.size(); k-- > 0;) {
            const auto index = open_incidents[k];
            if (now_ns - incidents[index].last_ns >= after) {
                close(index, incidents[index].last_ns + after);
            }
        }
    }
    if (addresses.live() >= address_collect_at) {
        collect_addresses();
        address_collect_at = next_collection(addresses.live());
    }
    if (strings.live() >= string_collect_at) {
        collect_strings();
        string_collect_at = next_collection(strings.live());
    }
}

// Destination addresses no window, beacon series, fan-in target or incident refers to
// any more (nor the configuration's decoys) are forgotten; their ids are reused.
void Analyzer::Impl::collect_addresses() {
    std::vector<bool> held(addresses.size(), false);
    auto mark = [&](std::uint64_t key) { held[key_host(key)] = true; };
    for (std::uint32_t i = 0; i < sources.size(); ++i) {
        const auto& s = sources[i];
        if (!s.used) {
            continue;
        }
        s.scan.for_each_key(mark);
        s.lateral.for_each_key(mark);
        slow[i].for_each_key(mark);
        s.beacons.for_each([&](std::uint64_t key, const BeaconState&) { mark(key); });
    }
    for (const auto& ts : targets) {
        if (ts.active) {
            mark(ts.key);
        }
    }
    for (std::size_t k = 0; k < incidents.size(); ++k) {
        if (incidents[k].id != 0 && incidents[k].about_target) {
            mark(aux[k].target_key);
        }
    }
    for (const auto& a : config.forbidden.decoy_addresses) {
        if (const auto id = addresses.find(a); id != kNone) {
            held[id] = true;
        }
    }
    for (std::uint32_t id = 0; id < held.size(); ++id) {
        if (!held[id] && addresses.holds(id)) {
            addresses.erase(id);
            destinations[id] = DestInfo{};
        }
    }
}

// Names, users and segments no held source, destination or configuration list uses.
void Analyzer::Impl::collect_strings() {
    std::vector<bool> held(strings.size(), false);
    auto mark = [&](std::uint32_t id) {
        if (id < held.size()) {
            held[id] = true;
        }
    };
    for (const auto& s : sources) {
        if (!s.used) {
            continue;
        }
        for (const auto id : {s.enforcer, s.workload, s.port, s.mac, s.address, s.user}) {
            mark(id);
        }
        for (const auto id : s.segments) {
            mark(id);
        }
    }
    for (std::uint32_t id = 0; id < destinations.size(); ++id) {
        if (addresses.holds(id)) {
            mark(destinations[id].workload);
        }
    }
    for (const auto* list : {&user_segments, &admin_segments, &vdi_segments, &exemption_segments}) {
        for (const auto id : *list) {
            mark(id);
        }
    }
    for (std::uint32_t id = 0; id < held.size(); ++id) {
        if (!held[id] && strings.holds(id)) {
            strings.erase(id);
        }
    }
}

std::size_t Analyzer::Impl::memory_bytes() const {
    std::size_t bytes =
        source_ids.memory_bytes() + addresses.memory_bytes() + strings.memory_bytes();
    bytes +=
        sources.capacity() * sizeof(SourceState) + destinations.capacity() * sizeof(DestInfo);
    for (const auto& w : slow) {
        bytes += w.memory_bytes();
    }
    bytes += slow.capacity() * sizeof(Window);
    for (const auto& s : sources) {
        bytes += s.scan.memory_bytes() + s.lateral.memory_bytes() + s.beacons.memory_bytes() +
                 s.segments.capacity() * sizeof(std::uint32_t);
    }
    bytes += target_index.memory_bytes() + targets.capacity() * sizeof(TargetState) +
             target_incident.memory_bytes() + lateral_index.capacity();
    for (const auto& ts : targets) {
        bytes += ts.sources.memory_bytes() + ts.fifo.memory_bytes();
    }
    bytes += incidents.capacity() * sizeof(Incident) + aux.capacity() * sizeof(IncidentAux) +
             free_incident_slots.capacity() * sizeof(std::uint32_t) +
             incident_slot.memory_bytes() + open_incidents.capacity() * sizeof(std::size_t) +
             resolved_ids.memory_bytes() + resolved_at.memory_bytes() +
             free_targets.capacity() * sizeof(std::uint32_t);
    for (const auto& incident : incidents) {
        bytes += incident.subject.capacity() + incident.timeline.capacity() * sizeof(Finding);
        for (const auto& f : incident.timeline) {
            bytes += f.explanation.capacity();
            for (const auto& sample : f.sample_targets) {
                bytes += sizeof(std::string) + sample.capacity();
            }
        }
    }
    return bytes;
}

} // namespace bulkhead::analyzer
