// IncidentDetector: the basic rule that turns a source's blocked attempts into an incident
// (issue 4; the analyzer of issue 5 adds detectors beside it). Pure: drop facts in,
// detections out; the caller supplies time through the facts themselves.
//
// Rule: a source workload that tries `distinct_targets` distinct (destination, protocol,
// port) targets within `window_seconds` raises an incident at the rule's severity; one
// touch of a decoy raises one at once. Counting distinct targets, not packets, is what
// tells a scan from a retrying application (a backup job hitting one closed port is one
// target however often it retries).
#pragma once

#include "policies/policy_model.hpp"

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace bulkhead::controller {

// The part of a drop event the rule needs.
struct DropFact {
    std::string source_workload;  // attributed source (egress drops); "" = unattributed
    std::int64_t time_ns = 0;     // kernel timestamp
    std::string destination;      // address text
    std::string protocol;         // "tcp", "udp", "icmp", ...
    std::optional<std::uint16_t> port;
    std::string reason;           // default | deny | decoy | quarantine
    std::uint64_t count = 1;
};

struct Detection {
    std::string source_workload;
    policy::Severity severity = policy::Severity::High;
    std::string kind;             // "distinct-targets" | "decoy"
    std::size_t distinct_targets = 0;
    std::int64_t first_ns = 0;    // window start (first fact counted)
    std::int64_t last_ns = 0;     // the fact that completed the detection
    std::vector<std::string> sample_targets;  // up to 10, "10.1.0.2 tcp/445"
    std::size_t distinct_hosts = 0;
    std::size_t distinct_ports = 0;
};

// What a SOC analyst reads: "vdi-001 (user kimura) tried 12 targets on 4 hosts (tcp/445,
// tcp/3389, ...) in 3.2 s". `user` may be empty.
std::string explain(const Detection& detection, std::string_view user);

class IncidentDetector {
public:
    explicit IncidentDetector(policy::ResponsePolicy response = {});

    // A new policy's thresholds apply from the next fact on; windows are kept.
    void set_response(const policy::ResponsePolicy& response);

    // Feeds one blocked attempt; returns a detection when this fact completes one. Storms
    // are one detection per window: after the distinct-target rule fires for a source it
    // stays quiet for that source for `window_seconds` (then counts anew from zero), and a
    // decoy detection likewise fires once per window per source. The incident the first
    // detection opened keeps counting the storm's events; what a storm costs is then
    // bounded by time, not by packets (a scanner at 100,000 packets/s is one detection a
    // minute, not four thousand a second).
    std::optional<Detection> observe(const DropFact& fact);

    // Forgets a source's windows and quiet periods: after its incident is resolved or its
    // quarantine released, a new scan must raise a new detection at once.
    void forget(const std::string& source_workload);

    // Forgets sources idle for longer than the window as of `now_ns` (bounds memory).
    void expire(std::int64_t now_ns);

    std::size_t tracked_sources() const { return sources_.size(); }

private:
    struct Attempt {
        std::int64_t time_ns;
        std::string target;
    };
    struct SourceWindow {
        std::deque<Attempt> attempts;                // in time order, within the window
        std::unordered_map<std::string, std::size_t> targets;  // target -> attempts held
        std::int64_t quiet_until_ns = INT64_MIN;        // distinct-target rule fired
        std::int64_t decoy_quiet_until_ns = INT64_MIN;  // decoy rule fired
    };
    policy::ResponsePolicy response_;
    std::unordered_map<std::string, SourceWindow> sources_;
};

std::string describe_target(const DropFact& fact);  // "10.1.0.2 tcp/445", "10.1.0.2 icmp"

}  // namespace bulkhead::controller
