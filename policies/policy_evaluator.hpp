// PolicyEvaluator: what a policy decides for one connection attempt, with the semantics the
// RulesetCompiler compiles into nftables, answered directly from the policy and inventory
// (no ruleset, no kernel). Pure: values in, values out. The controller's policy what-if
// ("which stored drop/flow events would the draft newly allow or block") is built on it.
//
// The model of one attempt (docs/what-if.md):
//   - every enforcer the packet crosses runs its hook (forward for port-mode workloads,
//     input/output for host-mode workloads and for a VDI talking to its hypervisor); the
//     attempt passes only if every one of them passes it;
//   - within a hook: IPv6 ND/MLD accept (input/output only), quarantine chains (always
//     enforced; a grant accepts for the whole hook), then the source's egress class chain
//     and the destination's ingress class chain;
//   - a class chain: (from a port whose tripwires are armed) tripwire decoys and tripwire
//     rules, then decoy, deny rules, allow rules, default action (deny beats allow);
//     in monitor mode a drop is a would-drop and the packet continues.
// tests/unit/test_policy_evaluator_crosscheck.cpp interprets the compiled Ruleset IR for
// many attempts and checks that both agree, log prefix by log prefix.
#pragma once

#include "policies/net_address.hpp"
#include "policies/policy_model.hpp"
#include "policies/ruleset.hpp"

#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace bulkhead::policy {

namespace detail {
struct EvaluatorModel;  // the resolved policy (policy_evaluator.cpp)
}

enum class Verdict : std::uint8_t {
    Allow,
    Drop,       // dropped (enforce mode, or quarantine in any mode)
    WouldDrop,  // monitor mode: logged as a drop, the packet continues
};
// The compiler's log-prefix vocabulary, plus None: no Bulkhead chain decided (both ends
// unmanaged, a workload talking to itself, IPv6 neighbour discovery).
// Tripwire: an armed tripwire dropped it and put the source's port into quarantine.
enum class Reason : std::uint8_t { None, Default, Deny, Decoy, Quarantine, Allow, Tripwire };
// Out: the source workload's side (egress, quarantine_out); In: the destination's side.
enum class Direction : std::uint8_t { Out, In };

std::string_view to_string(Verdict verdict);      // allow | drop | would-drop
std::string_view to_string(Reason reason);  // none | default | deny | decoy | quarantine | allow | tripwire
std::string_view to_string(Direction direction);  // out | in

// "tcp", "udp", "sctp", "icmp", "icmpv6" or a decimal protocol number 0..255.
std::optional<std::uint8_t> parse_protocol_number(std::string_view text);

// One end of a connection attempt.
struct Endpoint {
    IpAddress address;
    // Inventory id if known (a drop event's attributed workload). Empty: the workload is
    // looked up by address (an address that several workloads share stays unresolved).
    std::string workload;
    // Enforcer id when this end is that enforcer host's own stack (a VDI talking to its
    // hypervisor's address). If the enforcer protects a host-mode workload, that is it.
    std::string host;
};

// One new connection attempt (replies and established traffic are never filtered).
struct Attempt {
    Endpoint source;
    Endpoint destination;
    std::uint8_t protocol = 6;  // IANA number: 6 tcp, 17 udp, 132 sctp, 1 icmp, 58 icmpv6, …
    std::uint16_t port = 0;     // destination port (tcp/udp/sctp), ICMP/ICMPv6 type; else unused
};

// What one chain of one enforcer did with the attempt.
struct Check {
    std::string enforcer;
    ruleset::Hook hook = ruleset::Hook::Forward;
    Direction direction = Direction::Out;
    std::string workload;      // the protected workload the chain belongs to
    std::string chain;         // "c1a2b3c4d_out", "quarantine_in", or the base chain for ND
    Verdict verdict = Verdict::Allow;
    Reason reason = Reason::None;
    // What decided: rule names (allow/deny), decoy segment names, quarantine grants
    // ("quarantine.allow[0]", "quarantine.allow_from[1]"), "neighbour-discovery"; sorted.
    std::vector<std::string> rules;
    std::string log_prefix;  // as NFLOG carries it ("bh:enf:out:deny:c1a2b3c4d"); empty: not logged
};

struct Decision {
    Verdict verdict = Verdict::Allow;
    Reason reason = Reason::None;
    Direction direction = Direction::Out;  // of the deciding check (Out when there is none)
    // Drop / would-drop: the rules of the first check that (would have) dropped.
    // Allow: every allow rule and quarantine grant along the path (egress and ingress).
    std::vector<std::string> rules;
    std::string enforcer;    // of the deciding check
    std::string workload;    // of the deciding check
    std::string log_prefix;  // of the deciding check
    std::vector<Check> checks;  // in packet order; after an enforced drop nothing more is seen
    std::string source_workload;       // as resolved; empty: not a known workload
    std::string destination_workload;
    std::vector<std::string> notes;    // e.g. an address several workloads share
};

class PolicyEvaluator {
public:
    // `policy` and `inventory` as read and cross-checked (parse_policy, parse_inventory,
    // cross_check); names that do not resolve are ignored, as the compiler ignores them.
    PolicyEvaluator(const Policy& policy, const Inventory& inventory);

    // The decision for one attempt, given the workloads quarantined at that time. Errors:
    // source and destination of different address families.
    std::expected<Decision, std::string> evaluate(
        const Attempt& attempt, const std::set<std::string>& quarantined = {}) const;

    // Policy class of a managed workload as the compiler names it ("" if unknown/unmanaged).
    std::string class_of(std::string_view workload) const;
    const std::string& policy_name() const;
    Mode mode() const;

private:
    std::shared_ptr<const detail::EvaluatorModel> model_;  // immutable: copies are cheap and thread-safe
};

// ---- what-if: the active policy against a draft over recorded attempts ----

enum class Change : std::uint8_t {
    NewlyAllowed,    // active drops or would-drop, the draft allows
    NewlyBlocked,    // active allows, the draft drops or would-drop
    NewlyEnforced,   // would-drop -> drop (e.g. monitor -> enforce)
    NewlyMonitored,  // drop -> would-drop (e.g. enforce -> monitor)
};
std::string_view to_string(Change change);  // newly-allowed | newly-blocked | …

struct AttemptChange {
    std::size_t attempt = 0;  // index into the attempts given
    Change change = Change::NewlyAllowed;
    Decision active;
    Decision draft;
};

// Attempts with the same change for the same draft reason and rules: "rule smb-to-files
// would now allow 12 events".
struct ChangeGroup {
    Change change = Change::NewlyAllowed;
    Reason reason = Reason::None;        // the draft's
    std::vector<std::string> rules;      // the draft's deciding rules
    std::size_t count = 0;
    std::vector<std::size_t> attempts;   // indices, ascending
};

struct WhatIfSummary {
    std::size_t total = 0;
    std::size_t unchanged = 0;  // same verdict (the reason or rule may still differ)
    std::size_t newly_allowed = 0;
    std::size_t newly_blocked = 0;
    std::size_t newly_enforced = 0;
    std::size_t newly_monitored = 0;
    std::vector<AttemptChange> changes;  // attempt order
    std::vector<ChangeGroup> groups;     // largest first, then by change, reason, rules
    std::vector<std::pair<std::size_t, std::string>> invalid;  // attempts either side refused
};

WhatIfSummary what_if(const PolicyEvaluator& active, const PolicyEvaluator& draft,
                      const std::vector<Attempt>& attempts,
                      const std::set<std::string>& quarantined = {});

}  // namespace bulkhead::policy
