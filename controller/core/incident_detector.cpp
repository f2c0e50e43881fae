#include "controller/core/incident_detector.hpp"

#include <algorithm>
#include <cstdio>
#include <set>

namespace bulkhead::controller {

std::string describe_target(const DropFact& fact) {
    std::string text = fact.destination + " " + fact.protocol;
    if (fact.port) {
        text += "/" + std::to_string(*fact.port);
    }
    return text;
}

IncidentDetector::IncidentDetector(policy::ResponsePolicy response) : response_(response) {}

void IncidentDetector::set_response(const policy::ResponsePolicy& response) {
    response_ = response;
}

namespace {

std::pair<std::string, std::string> split_target(const std::string& target) {
    auto space = target.find(' ');
    if (space == std::string::npos) {
        return {target, ""};
    }
    return {target.substr(0, space), target.substr(space + 1)};
}

}  // namespace

std::optional<Detection> IncidentDetector::observe(const DropFact& fact) {
    if (fact.source_workload.empty()) {
        return std::nullopt;
    }
    const std::string target = describe_target(fact);
    const std::int64_t window_ns =
        static_cast<std::int64_t>(response_.incident.window_seconds) * 1'000'000'000;
    auto& window = sources_[fact.source_workload];
    if (fact.reason == "decoy") {
        if (fact.time_ns < window.decoy_quiet_until_ns) {
            return std::nullopt;
        }
        window.decoy_quiet_until_ns = fact.time_ns + window_ns;
        Detection detection;
        detection.source_workload = fact.source_workload;
        detection.severity = response_.decoy_severity;
        detection.kind = "decoy";
        detection.distinct_targets = 1;
        detection.distinct_hosts = 1;
        detection.distinct_ports = 1;
        detection.first_ns = fact.time_ns;
        detection.last_ns = fact.time_ns;
        detection.sample_targets.push_back(target);
        return detection;
    }
    if (fact.time_ns < window.quiet_until_ns) {
        return std::nullopt;
    }
    // Events of one source arrive nearly in order; a late one still counts but never moves
    // the window backwards.
    const std::int64_t now = window.attempts.empty()
                                 ? fact.time_ns
                                 : std::max(fact.time_ns, window.attempts.back().time_ns);
    while (!window.attempts.empty() && window.attempts.front().time_ns <= now - window_ns) {
        auto it = window.targets.find(window.attempts.front().target);
        if (it != window.targets.end() && --it->second == 0) {
            window.targets.erase(it);
        }
        window.attempts.pop_front();
    }
    if (fact.time_ns <= now - window_ns) {
        return std::nullopt;  // older than the window: nothing it could complete
    }
    window.attempts.push_back({now, target});
    ++window.targets[target];
    if (window.targets.size() < response_.incident.distinct_targets) {
        return std::nullopt;
    }
    Detection detection;
    detection.source_workload = fact.source_workload;
    detection.severity = response_.incident.severity;
    detection.kind = "distinct-targets";
    detection.distinct_targets = window.targets.size();
    detection.first_ns = window.attempts.front().time_ns;
    detection.last_ns = fact.time_ns;
    std::set<std::string> hosts;
    std::set<std::string> ports;
    for (const auto& [name, held] : window.targets) {
        auto [host, port] = split_target(name);
        hosts.insert(host);
        ports.insert(port);
    }
    detection.distinct_hosts = hosts.size();
    detection.distinct_ports = ports.size();
    for (const auto& attempt : window.attempts) {
        if (detection.sample_targets.size() >= 10) {
            break;
        }
        if (std::find(detection.sample_targets.begin(), detection.sample_targets.end(),
                      attempt.target) == detection.sample_targets.end()) {
            detection.sample_targets.push_back(attempt.target);
        }
    }
    // Quiet for one window, then count anew: a scan that goes on raises the next detection
    // a window later, not one per set of targets.
    window.attempts.clear();
    window.targets.clear();
    window.quiet_until_ns = fact.time_ns + window_ns;
    return detection;
}

void IncidentDetector::forget(const std::string& source_workload) {
    sources_.erase(source_workload);
}

void IncidentDetector::expire(std::int64_t now_ns) {
    const std::int64_t window_ns =
        static_cast<std::int64_t>(response_.incident.window_seconds) * 1'000'000'000;
    std::erase_if(sources_, [&](const auto& entry) {
        const auto& window = entry.second;
        const bool idle = window.attempts.empty() || window.attempts.back().time_ns <= now_ns - window_ns;
        return idle && window.quiet_until_ns <= now_ns && window.decoy_quiet_until_ns <= now_ns;
    });
}

std::string explain(const Detection& detection, std::string_view user) {
    std::string who = detection.source_workload;
    if (!user.empty()) {
        who += " (user " + std::string(user) + ")";
    }
    if (detection.kind == "decoy") {
        return who + " touched decoy " +
               (detection.sample_targets.empty() ? std::string("?") : detection.sample_targets.front());
    }
    std::set<std::string> services;
    for (const auto& target : detection.sample_targets) {
        services.insert(split_target(target).second);
    }
    std::string service_list;
    for (const auto& service : services) {
        service_list += (service_list.empty() ? "" : ", ") + service;
    }
    if (detection.distinct_ports > services.size()) {
        service_list += ", ...";
    }
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%.1f",
                  static_cast<double>(detection.last_ns - detection.first_ns) / 1e9);
    return who + " tried " + std::to_string(detection.distinct_targets) + " blocked targets on " +
           std::to_string(detection.distinct_hosts) + (detection.distinct_hosts == 1 ? " host" : " hosts") +
           " (" + service_list + ") in " + seconds + " s";
}

}  // namespace bulkhead::controller
