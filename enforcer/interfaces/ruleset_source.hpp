// Where the daemon's desired rulesets come from, and where it reports what it did with them.
// Two implementations: the daemon's FileRulesetSource (a watched ruleset.json written by
// `bulkheadctl policy compile`) and the agent's ControllerRulesetSource (the controller's
// push channel, which turns the reports into acks and heartbeats). The interface lives here,
// apart from both, so the daemon can use the agent and the agent depends on no daemon code.
#pragma once

#include "policies/ruleset.hpp"

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <memory>
#include <expected>
#include <optional>
#include <string>

namespace bulkhead::enforcer {

// The daemon's running counters: a source that talks to a controller sends them as
// heartbeats.
struct EnforcerCounters {
    std::uint64_t drift_repairs = 0;
    std::int64_t last_drift_at_ms = 0;  // 0: never
    std::uint64_t elements = 0;         // elements of the ruleset in force
    std::uint64_t nflog_received = 0;
    std::uint64_t nflog_lost = 0;
    // With port discovery: the VM ports and who is bound to each (PortFollower::ports_json),
    // so the controller shows the current interfaces and the unidentified ports. Null: off.
    std::shared_ptr<const nlohmann::json> ports;
};

// What the daemon did with the ruleset poll() returned last: a controller source acks it.
struct ApplyReport {
    bool ok = false;
    std::string error;              // why, when !ok
    std::int64_t applied_at_ms = 0; // wall clock, when the apply finished
    double apply_ms = 0;            // how long the apply took
    std::uint64_t local_generation = 0;  // the daemon's own applied generation
    EnforcerCounters counters;
};

class RulesetSource {
public:
    virtual ~RulesetSource() = default;
    // Called once for each ruleset poll() returned, right after the daemon applied it (or
    // failed to). The file source ignores it.
    virtual void report_applied(const ApplyReport& /*report*/) {}
    // Called about once a second with the daemon's counters.
    virtual void report_counters(const EnforcerCounters& /*counters*/) {}
    // A descriptor that becomes readable when poll() may have something new.
    virtual int fd() const = 0;
    // A new desired ruleset if one arrived since the last call, nothing if unchanged, an
    // error (with file and reason) if what arrived is unusable; the caller keeps the
    // ruleset in force either way.
    virtual std::expected<std::optional<ruleset::Ruleset>, std::string> poll() = 0;
};

}  // namespace bulkhead::enforcer
