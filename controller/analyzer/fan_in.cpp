// Fan-in: many sources failing toward the same target, and its classification.

#include "controller/analyzer/analyzer_state.hpp"

#include <tuple>

namespace bulkhead::analyzer {

TargetState* Analyzer::Impl::target_state(std::uint64_t key) {
    if (auto* index = target_index.find(key)) {
        return &targets[*index];
    }
    if (active_targets >= config.fan_in.max_targets) {
        ++totals.saturated;
        return nullptr;
    }
    std::uint32_t index = 0;
    if (!free_targets.empty()) {
        index = free_targets.back();
        free_targets.pop_back();
    } else {
        index = static_cast<std::uint32_t>(targets.size());
        targets.emplace_back();
    }
    bool inserted = false;
    target_index.get_or_insert(key, inserted) = index;
    auto& ts = targets[index];
    ts.active = true;
    ts.key = key;
    ts.last_ns = kNever;
    ts.quiet_until = kNever;
    ++active_targets;
    return &ts;
}

void Analyzer::Impl::expire_target(TargetState& ts, std::int64_t now_ns) {
    const std::int64_t window = seconds(config.fan_in.window_seconds);
    while (!ts.fifo.empty() && ts.fifo.front().first <= now_ns - window) {
        const auto [t, source] = ts.fifo.front();
        ts.fifo.pop_front();
        if (auto* e = ts.sources.find(source); e != nullptr && e->pushed_ns == t) {
            ts.sources.erase(source);
        }
    }
}

void Analyzer::Impl::fan_in_detector(std::uint32_t id, std::uint64_t key, std::int64_t t_source) {
    const auto& c = config.fan_in;
    if (!c.enabled) {
        return;
    }
    auto* ts = target_state(key);
    if (ts == nullptr) {
        return;
    }
    const std::int64_t t = std::max(t_source, ts->last_ns);
    ts->last_ns = t;
    expire_target(*ts, t);
    const std::int64_t window = seconds(c.window_seconds);
    const std::int64_t resolution = std::max<std::int64_t>(window / 16, 1);
    const auto generation = sources[id].generation;
    auto* e = ts->sources.find(id);
    if (e != nullptr && e->generation != generation) {
        ts->sources.erase(id); // an earlier identity that held this id: not this source
        e = nullptr;
    }
    if (e != nullptr) {
        if (t - e->last_ns >= seconds(config.beaconing.min_interval_seconds)) {
            ++e->attempts; // after a silence: a new attempt (as for beaconing)
        }
        e->last_ns = t;
        if (t - e->pushed_ns >= resolution) {
            e->pushed_ns = t;
            ts->fifo.push_back({t, id});
        }
        return;
    }
    if (ts->sources.size() >= c.max_sources_per_target) {
        ++totals.saturated;
        return;
    }
    bool inserted = false;
    ts->sources.get_or_insert(id, inserted) = FanSource{t, t, t, 1, generation};
    ts->fifo.push_back({t, id});
    if (ts->sources.size() < c.min_sources) {
        return;
    }
    if (t < ts->quiet_until) {
        ++totals.suppressed;
        if (auto* incident = target_incident.find(key)) {
            ++incidents[static_cast<std::size_t>(*incident)]
                  .suppressed[static_cast<std::size_t>(Rule::FanIn)];
        }
        return;
    }
    ts->quiet_until = t + window;
    fire_fan_in(*ts, key, t);
}

// Classification (README.md, "fan-in"): misconfigured service when every source shares a
// segment, at least half of them retried the target min_attempts times and none tried
// more than misconfig_max_hosts hosts; else worm-like when the port is a lateral-movement
// service and at least half the sources are user workloads; else undetermined.
void Analyzer::Impl::fire_fan_in(TargetState& ts, std::uint64_t key, std::int64_t t) {
    const auto& c = config.fan_in;
    // Earliest first; sources first seen at the same time in the order they arrived (their
    // first entry in the target's FIFO), not by source id: ids are reused once a source
    // leaves memory, so their order says nothing.
    detail::FlatMap<std::uint32_t> arrival;
    std::uint32_t position = 0;
    ts.fifo.for_each([&](const std::pair<std::int64_t, std::uint64_t>& e) {
        bool inserted = false;
        auto& first = arrival.get_or_insert(e.second, inserted);
        if (inserted) {
            first = position;
        }
        ++position;
    });
    std::vector<std::tuple<std::int64_t, std::uint32_t, std::uint32_t>> arrived; // first, arrival, source
    ts.sources.for_each([&](std::uint64_t source, const FanSource& e) {
        // (Entries of identities that left memory are not this crowd.)
        if (source < sources.size() && sources[source].used &&
            sources[source].generation == e.generation) {
            const auto* at = arrival.find(source);
            arrived.emplace_back(e.first_ns, at == nullptr ? position : *at,
                                 static_cast<std::uint32_t>(source));
        }
    });
    if (arrived.empty()) {
        return;
    }
    std::sort(arrived.begin(), arrived.end());
    std::vector<std::pair<std::int64_t, std::uint32_t>> list; // (first, source)
    for (const auto& [first, at, source] : arrived) {
        list.emplace_back(first, source);
    }
    std::vector<std::uint32_t> common = sources[list.front().second].segments;
    std::size_t retrying = 0, users = 0, roaming = 0;
    for (const auto& [first, source] : list) {
        const auto& s = sources[source];
        std::erase_if(common, [&](std::uint32_t seg) {
            return std::find(s.segments.begin(), s.segments.end(), seg) == s.segments.end();
        });
        if (ts.sources.find(source)->attempts >= c.misconfig_min_attempts)
            ++retrying;
        if ((s.flags & FlagUser) != 0)
            ++users;
        if (s.scan.hosts.size() > c.misconfig_max_hosts)
            ++roaming;
    }
    const std::size_t n = list.size();
    const bool lateral = is_lateral(key_protoport(key));
    const auto* service = lateral_service(protoport_protocol(key_protoport(key)),
                                          protoport_port(key_protoport(key)));
    auto f = make(Rule::FanIn, c.undetermined_severity, list.front().first, t);
    std::string why;
    if (!common.empty() && retrying * 2 >= n && roaming == 0) {
        f.classification = "misconfigured-service";
        f.severity = c.misconfig_severity;
        why = "looks like a misconfigured service (all in segment " +
              std::string(strings.name(common.front())) + ", " + std::to_string(retrying) +
              " retrying it, none trying other hosts)";
    } else if (lateral && users * 2 >= n) {
        f.classification = "worm-like";
        f.severity = c.worm_severity;
        why = "worm-like spread (" + std::to_string(users) + " of " + std::to_string(n) +
              " are user workloads, " + service->name + " is a lateral-movement service)";
    } else {
        f.classification = "undetermined";
        why = "cause undetermined";
    }
    f.distinct_targets = n;
    f.distinct_hosts = 1;
    f.distinct_ports = 1;
    f.score = static_cast<double>(n) / c.min_sources;
    f.explanation = std::to_string(n) + " sources failed toward " + target_text(key) + " in " +
                    format_duration(t - list.front().first) + ": " + why;
    for (std::size_t i = 0; i < list.size() && i < kSamples; ++i) {
        f.sample_targets.push_back(who(sources[list[i].second])); // fan-in: sample sources
    }
    accept_target(key, std::move(f));
}

} // namespace bulkhead::analyzer
