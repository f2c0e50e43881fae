// Scan detectors over a source's windows: host sweep, vertical, box, distinct targets
// (the policy's rule) and the slow scan.

#include "controller/analyzer/analyzer_state.hpp"

namespace bulkhead::analyzer {

Analyzer::Impl::Scan Analyzer::Impl::collect(const Window& w,
                                             std::optional<std::uint32_t> host) const {
    Scan scan;
    w.pairs.for_each([&](std::uint64_t key, const PairEntry& e) {
        if (host && key_host(key) != *host) {
            return;
        }
        scan.pairs.emplace_back(e.first_ns, key);
        scan.first_ns = std::min(scan.first_ns, e.first_ns);
        if (is_lateral(key_protoport(key))) {
            ++scan.lateral;
        }
    });
    std::sort(scan.pairs.begin(), scan.pairs.end());
    return scan;
}

void Analyzer::Impl::samples(Finding& f, const Scan& scan) const {
    for (std::size_t i = 0; i < scan.pairs.size() && i < kSamples; ++i) {
        f.sample_targets.push_back(target_text(scan.pairs[i].second));
    }
}

// Ports of a scan, most targets first: "tcp/445" or "3 ports (tcp/445, tcp/139, tcp/22)".
std::string Analyzer::Impl::ports_text(const Scan& scan, std::size_t& distinct) const {
    std::vector<std::pair<std::uint32_t, std::uint32_t>> counts; // (protoport, n)
    for (const auto& [t, key] : scan.pairs) {
        const auto pp = key_protoport(key);
        auto it =
            std::find_if(counts.begin(), counts.end(), [&](auto& c) { return c.first == pp; });
        if (it == counts.end()) {
            counts.emplace_back(pp, 1);
        } else {
            ++it->second;
        }
    }
    std::stable_sort(counts.begin(), counts.end(), [](auto& a, auto& b) {
        return a.second != b.second ? a.second > b.second : a.first < b.first;
    });
    distinct = counts.size();
    if (counts.size() == 1) {
        return protoport_text(counts[0].first);
    }
    std::string text = std::to_string(counts.size()) + " ports (";
    for (std::size_t i = 0; i < counts.size() && i < 3; ++i) {
        text += (i == 0 ? "" : ", ") + protoport_text(counts[i].first);
    }
    return text + (counts.size() > 3 ? ", ...)" : ")");
}

// True when `key` is new in the source's scan window (only then can a count grow), or was
// refused there because the window is full (the slow-scan window may still take it).
bool Analyzer::Impl::scan_detectors(std::uint32_t id, std::uint64_t key, std::int64_t t) {
    auto& s = sources[id];
    const std::int64_t window = seconds(config.scan.window_seconds);
    bool saturated = false;
    if (!s.scan.add(key, t, window, config.scan.max_targets_per_source, saturated)) {
        totals.saturated += saturated ? 1 : 0;
        return saturated;
    }
    const auto host = key_host(key);
    // Crossing a fast threshold (whether its rule is enabled, exempted or quiet) makes
    // this a fast scan: the slow-scan rule is for what stays below them.
    if (const auto* n = s.scan.hosts.find(host);
        s.scan.hosts.size() >= config.host_sweep.min_hosts ||
        (n != nullptr && *n >= config.vertical_scan.min_ports) ||
        (s.scan.ports.size() >= config.box_scan.min_ports &&
         s.scan.multi_port_hosts >= config.box_scan.min_hosts)) {
        s.last_fast_scan_ns = t;
    }
    if (config.host_sweep.enabled && s.scan.hosts.size() >= config.host_sweep.min_hosts &&
        may_fire(s, Rule::HostSweep, t, window)) {
        auto scan = collect(s.scan, std::nullopt);
        auto f = make(Rule::HostSweep, lateral_weighted(s, config.host_sweep.severity, scan),
                      scan.first_ns, t);
        f.distinct_hosts = s.scan.hosts.size();
        f.distinct_targets = s.scan.pairs.size();
        const auto ports = ports_text(scan, f.distinct_ports);
        f.score = static_cast<double>(f.distinct_hosts) / config.host_sweep.min_hosts;
        f.explanation = who(s) + " tried " + std::to_string(f.distinct_hosts) + " hosts on " +
                        ports + " in " + format_duration(t - scan.first_ns);
        samples(f, scan);
        accept(id, std::move(f));
    }
    const auto* on_host = s.scan.hosts.find(host);
    if (config.vertical_scan.enabled && on_host != nullptr &&
        *on_host >= config.vertical_scan.min_ports &&
        may_fire(s, Rule::VerticalScan, t, window)) {
        auto scan = collect(s.scan, host);
        auto f =
            make(Rule::VerticalScan, lateral_weighted(s, config.vertical_scan.severity, scan),
                 scan.first_ns, t);
        f.distinct_hosts = 1;
        f.distinct_targets = scan.pairs.size();
        f.distinct_ports = scan.pairs.size();
        f.score = static_cast<double>(f.distinct_ports) / config.vertical_scan.min_ports;
        std::string list;
        for (std::size_t i = 0; i < scan.pairs.size() && i < 3; ++i) {
            list += (i == 0 ? "" : ", ") + protoport_text(key_protoport(scan.pairs[i].second));
        }
        f.explanation = who(s) + " tried " + std::to_string(f.distinct_ports) + " ports on " +
                        host_text(host) + " in " + format_duration(t - scan.first_ns) + " (" +
                        list + (scan.pairs.size() > 3 ? ", ...)" : ")");
        samples(f, scan);
        accept(id, std::move(f));
    }
    // Box: many ports over several hosts, each of those hosts tried on two ports or more
    // (a sweep of one port plus a vertical scan of one host is not a box).
    if (config.box_scan.enabled && s.scan.ports.size() >= config.box_scan.min_ports &&
        s.scan.multi_port_hosts >= config.box_scan.min_hosts &&
        may_fire(s, Rule::BoxScan, t, window)) {
        auto scan = collect(s.scan, std::nullopt);
        auto f = make(Rule::BoxScan, lateral_weighted(s, config.box_scan.severity, scan),
                      scan.first_ns, t);
        f.distinct_hosts = s.scan.hosts.size();
        f.distinct_ports = s.scan.ports.size();
        f.distinct_targets = s.scan.pairs.size();
        f.score = std::min(static_cast<double>(f.distinct_ports) / config.box_scan.min_ports,
                           static_cast<double>(f.distinct_hosts) / config.box_scan.min_hosts);
        std::size_t distinct = 0;
        const auto ports = ports_text(scan, distinct);
        f.explanation = who(s) + " tried " + ports + " on " + std::to_string(f.distinct_hosts) +
                        " hosts (" + std::to_string(f.distinct_targets) + " targets) in " +
                        format_duration(t - scan.first_ns);
        samples(f, scan);
        accept(id, std::move(f));
    }
    if (config.distinct_targets.enabled && config.distinct_targets.min_targets > 0 &&
        s.scan.pairs.size() >= config.distinct_targets.min_targets &&
        may_fire(s, Rule::DistinctTargets, t, window)) {
        auto scan = collect(s.scan, std::nullopt);
        auto f = make(Rule::DistinctTargets, config.distinct_targets.severity, scan.first_ns, t);
        f.distinct_hosts = s.scan.hosts.size();
        f.distinct_ports = s.scan.ports.size();
        f.distinct_targets = s.scan.pairs.size();
        f.score = static_cast<double>(f.distinct_targets) / config.distinct_targets.min_targets;
        std::size_t distinct = 0;
        const auto ports = ports_text(scan, distinct);
        f.explanation = who(s) + " tried " + std::to_string(f.distinct_targets) +
                        " targets on " + std::to_string(f.distinct_hosts) +
                        (f.distinct_hosts == 1 ? " host (" : " hosts (") + ports + ") in " +
                        format_duration(t - scan.first_ns);
        samples(f, scan);
        accept(id, std::move(f));
    }
    return true;
}

void Analyzer::Impl::slow_scan_detector(std::uint32_t id, std::uint64_t key, std::int64_t t) {
    const auto& c = config.slow_scan;
    if (!c.enabled) {
        return;
    }
    auto& s = sources[id];
    const std::int64_t window = seconds(c.window_seconds);
    bool saturated = false;
    auto& w = slow[id];
    if (!w.add(key, t, window, std::max<std::uint32_t>(c.max_targets, 1), saturated)) {
        totals.saturated += saturated ? 1 : 0;
        return;
    }
    const bool hosts = c.min_hosts > 0 && w.hosts.size() >= c.min_hosts;
    const bool ports = c.min_ports > 0 && w.ports.size() >= c.min_ports;
    if (!hosts && !ports) {
        return;
    }
    // A fast scan of this source inside the long window was reported already.
    if (s.last_fast_scan_ns != kNever && t - s.last_fast_scan_ns < window) {
        return;
    }
    if (!may_fire(s, Rule::SlowScan, t, window)) {
        return;
    }
    auto scan = collect(w, std::nullopt);
    auto f = make(Rule::SlowScan, lateral_weighted(s, c.severity, scan), scan.first_ns, t);
    f.distinct_hosts = w.hosts.size();
    f.distinct_ports = w.ports.size();
    f.distinct_targets = w.pairs.size();
    f.score = std::max(c.min_hosts > 0 ? static_cast<double>(f.distinct_hosts) / c.min_hosts : 0.0,
                       c.min_ports > 0 ? static_cast<double>(f.distinct_ports) / c.min_ports : 0.0);
    std::size_t distinct = 0;
    const auto port_list = ports_text(scan, distinct);
    f.explanation = who(s) + " slowly tried " + std::to_string(f.distinct_hosts) +
                    (f.distinct_hosts == 1 ? " host on " : " hosts on ") + port_list + " over " +
                    format_duration(t - scan.first_ns) + " (" + std::to_string(f.distinct_targets) +
                    " targets, below the fast scan thresholds)";
    samples(f, scan);
    accept(id, std::move(f));
}

} // namespace bulkhead::analyzer
