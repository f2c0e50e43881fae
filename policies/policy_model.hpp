// The segment policy and the workload inventory as plain values: what an admin wrote,
// after reading and validation. Everything else in the pipeline takes these as input.
#pragma once

#include "policies/net_address.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace bulkhead::policy {

enum class Protocol : std::uint8_t { Tcp, Udp, Sctp, Icmp, Icmpv6, Any };
std::string_view to_string(Protocol p);
// IANA protocol number; Any has none.
std::uint8_t protocol_number(Protocol p);

struct NumberRange {
    std::uint32_t low = 0;
    std::uint32_t high = 0;
    auto operator<=>(const NumberRange&) const = default;
};

// One line of a service: a protocol and, for port protocols, ports; for ICMP, types.
// An empty list means "all" (every port, every type).
struct ServiceEntry {
    Protocol protocol = Protocol::Tcp;
    std::vector<NumberRange> ports;
    std::vector<NumberRange> icmp_types;
};

struct Service {
    std::string name;
    std::string description;
    std::vector<ServiceEntry> entries;
    std::string pointer;  // where it was defined, for diagnostics raised later
};

// Membership is the union of the three; within `labels` every key must match and a key's
// list of values is an any-of.
struct Selector {
    std::map<std::string, std::vector<std::string>> labels;
    std::vector<std::string> workloads;
    std::vector<IpRange> cidrs;
};

struct Segment {
    std::string name;
    std::string description;
    bool decoy = false;  // any touch from a protected workload is dropped and logged as "decoy"
    Selector selector;
    std::string pointer;
    // Decoys only: the touch is conclusive, so the kernel contains the source on that very
    // packet (adds its port to the quarantined ports) where the guardrails allow it.
    bool tripwire = false;
};

enum class RuleAction : std::uint8_t { Allow, Deny };

struct Rule {
    std::string name;
    std::string description;
    RuleAction action = RuleAction::Allow;
    std::vector<std::string> from;
    std::vector<std::string> to;
    std::vector<std::string> services;  // "any" is built in
    std::string pointer;
    // Deny rules only: a first match is proof (SMB between desktops of a pool that never
    // talk to each other), so the kernel contains the source on that packet.
    bool tripwire = false;
};

enum class DefaultAction : std::uint8_t { Deny, Allow };
enum class Mode : std::uint8_t { Enforce, Monitor };

struct Defaults {
    DefaultAction action = DefaultAction::Deny;
    Mode mode = Mode::Enforce;
    bool log_drops = true;
    std::uint16_t log_group = 10;
    bool log_allowed = false;  // NFLOG new accepted connections (allowed-flow summaries)
    std::uint16_t allowed_log_group = 11;
};

// What a quarantined workload may still reach (`allow`) or be reached by (`allow_from`),
// e.g. the EDR server and DNS, and the SOC's forensic access.
struct QuarantineGrant {
    std::vector<std::string> segments;
    std::vector<std::string> services;
    std::string pointer;
};

struct QuarantinePolicy {
    std::vector<QuarantineGrant> allow;
    std::vector<QuarantineGrant> allow_from;
};

// How the controller answers blocked traffic: the policy's incident rule, and automatic
// quarantine of what the controller's analyzer (controller/analyzer/) finds.
enum class Severity : std::uint8_t { Low, Medium, High, Critical };
enum class AutoQuarantineMode : std::uint8_t {
    Off,     // incidents only
    On,      // quarantine the source when an incident reaches the minimum severity
    DryRun,  // record what would have been quarantined, change nothing
};

// An incident is raised for a source workload once its blocked attempts reach
// `distinct_targets` distinct (destination, protocol, port) targets within `window_seconds`.
// A decoy touch raises one at once, at `decoy_severity`.
struct IncidentRule {
    std::uint32_t distinct_targets = 10;
    std::uint32_t window_seconds = 60;
    Severity severity = Severity::High;
};

// Per-segment automatic quarantine: the first rule whose segments hold the incident's
// source (no segments: any source) and whose detectors name the finding's detector or rule
// (none: any) decides the mode and the minimum severity; no rule matching: the defaults.
struct AutoQuarantineRule {
    std::vector<std::string> segments;   // policy segment names
    std::vector<std::string> detectors;  // "host-sweep", "decoy", ... (analyzer names)
    AutoQuarantineMode mode = AutoQuarantineMode::On;
    Severity min_severity = Severity::High;
    std::string pointer;
};

struct ResponsePolicy {
    IncidentRule incident;
    Severity decoy_severity = Severity::Critical;
    AutoQuarantineMode auto_quarantine = AutoQuarantineMode::Off;
    Severity auto_quarantine_min_severity = Severity::High;
    std::vector<AutoQuarantineRule> auto_quarantine_rules;
    // Guardrail: at most this many automatic quarantines in any 60 s; beyond, a human
    // decides (a misfiring detector must not isolate the fleet).
    std::uint32_t max_auto_quarantines_per_minute = 10;
};

std::string_view to_string(Severity severity);
std::optional<Severity> severity_from_string(std::string_view text);
std::string_view to_string(AutoQuarantineMode mode);

struct Policy {
    std::string name;
    std::string description;
    Defaults defaults;
    std::vector<Service> services;
    std::vector<Segment> segments;
    std::vector<Rule> rules;
    QuarantinePolicy quarantine;
    ResponsePolicy response;
};

struct Enforcer {
    std::string id;
    std::string description;
};

enum class AttachmentMode : std::uint8_t {
    Port,  // a VDI/VM behind a port interface on a hypervisor (routed, forward hook)
    Host,  // a server protecting itself (input/output hooks on its own interfaces)
};

struct Attachment {
    AttachmentMode mode = AttachmentMode::Port;
    std::vector<std::string> interfaces;  // Port: exactly one; Host: one or more
};

struct Workload {
    std::string id;
    std::string enforcer;  // empty: unmanaged (a peer other rules may name, nothing compiled)
    std::vector<IpAddress> addresses;
    std::string mac;
    std::map<std::string, std::string> labels;
    std::string user;
    std::string hostname;
    bool critical = false;  // never auto-quarantined (AD, file servers)
    std::optional<Attachment> attachment;
    std::string pointer;
};

struct Inventory {
    std::vector<Enforcer> enforcers;
    std::vector<Workload> workloads;
};

}  // namespace bulkhead::policy
