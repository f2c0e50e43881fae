// RulesetCompiler: policy + inventory (+ the current quarantine set) -> one Ruleset per
// enforcer. Pure: values in, values out.
//
// Shape of every compiled table (see docs/ruleset-design.md for the why):
//   forward (hook)   port? -> spoof guard (its own MAC and source addresses, every packet);
//                    quarantined port? -> quarantine chains; established/related accept;
//                    iifname vmap @egress_ports; oifname vmap @ingress_ports
//   input/output     the same for host-mode workloads (@host_ingress / @host_egress);
//                    with tripwires, input first drops @blocked_sources4/6 arriving on a
//                    server's interfaces (senders its tripwire blocked) and an armed server's
//                    interface enters its class's <class>_in_tripwire (@host_tripwires)
//   <class>_out/_in  one chain pair per policy class (workloads with identical segment
//                    membership share it, like Cilium identities); a constant number of
//                    rules, each one set lookup: decoy, deny, allow, default.
// Per-packet cost is one verdict-map lookup plus at most a dozen set lookups, whatever the
// number of rules or workloads.
#pragma once

#include "policies/diagnostics.hpp"
#include "policies/policy_model.hpp"
#include "policies/ruleset.hpp"

#include <expected>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace bulkhead::ruleset {

// NFLOG prefix grammar: "bh:<mode>:<dir>:<reason>:<subject>"
//   mode    enf | mon      (mon: monitor mode, logged as would-drop and not dropped)
//   dir     out | in       (out: from the workload behind the packet's input interface;
//                           in: to the workload behind the packet's output interface)
//   reason  default | deny | decoy | tripwire | quarantine | spoof | allow
//           (tripwire: the kernel contained the source on this packet)
//   subject the policy class name, or "q" for the host-wide chains (quarantine, spoof guard)
// The workload is the one bound to that interface in Ruleset::ports.
std::string log_prefix(policy::Mode mode, std::string_view direction, std::string_view reason,
                       std::string_view subject);

struct LogPrefixParts {
    policy::Mode mode;
    std::string direction;
    std::string reason;
    std::string subject;
};
std::optional<LogPrefixParts> parse_log_prefix(std::string_view prefix);

// The guardrails of response.auto_quarantine applied to the kernel's own containment: a
// workload is contained by a tripwire only in enforce mode, when it is not critical and when
// the first automatic-quarantine rule for its segments and the detector "tripwire" (as the
// controller's response planner picks it, capped by the section's mode) resolves to "on".
// Anything else (off, dry-run, critical, monitor) only logs.
struct TripwireArming {
    bool armed = false;
    std::string reason;  // why not, for `bulkheadctl` and the docs
};
TripwireArming tripwire_arming(const policy::Policy& policy, const policy::Workload& workload,
                               const std::vector<std::string>& segment_names);

struct CompilerOptions {
    // Segments whose membership comes from the inventory (labels, workload ids) become one
    // host-wide address set each, which every class naming the segment looks up; only
    // CIDR-only segments, fixed by the policy, are crossed into the classes' own sets.
    // Adding a workload then adds one element per host per segment it joins, and a host's
    // rule count depends on the policy and its local classes, never on the fleet's size
    // (docs/ruleset-design.md, "Shared segments"). Off: everything is crossed, which keeps
    // chains shortest for small fleets and serves as a reference in tests.
    bool share_membership_segments = true;
};

class RulesetCompiler {
public:
    // Resolves segment membership and policy classes once for the whole fleet.
    RulesetCompiler(const policy::Policy& policy, const policy::Inventory& inventory,
                    CompilerOptions options = {});
    ~RulesetCompiler();
    RulesetCompiler(const RulesetCompiler&) = delete;
    RulesetCompiler& operator=(const RulesetCompiler&) = delete;

    // Ids of every enforcer in the inventory, sorted.
    std::vector<std::string> enforcers() const;

    // Enforcers whose rulesets depend on quarantines elsewhere in the fleet: those with
    // host-mode workloads when the policy declares tripwires (they block the addresses of
    // every quarantined workload, see compile()). A quarantine recompiles them too.
    std::vector<std::string> enforcers_blocking_quarantined() const;

    // `quarantined` holds workload ids. Those behind `enforcer` are quarantined at their
    // ports; where the enforcer blocks quarantined senders (enforcers_blocking_quarantined),
    // the others' addresses go into its blocked-sources sets.
    std::expected<Ruleset, std::string> compile(std::string_view enforcer,
                                                const std::set<std::string>& quarantined = {}) const;
    std::map<std::string, Ruleset> compile_all(const std::set<std::string>& quarantined = {}) const;

    // Names of the policy segments the inventory's workload number `workload` belongs to, in
    // policy order: resolved once here, so the analyzer's index does not evaluate every
    // selector against every workload again on each configuration change.
    std::vector<std::string> segments_of(std::size_t workload) const;

    // Class name of a workload ("" if unknown or unmanaged).
    std::string class_of(std::string_view workload) const;

private:
    struct Resolved;
    std::unique_ptr<Resolved> resolved_;
};

}  // namespace bulkhead::ruleset
