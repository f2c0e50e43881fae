// ResponsePlanner: what to do about an incident's new finding, by the policy's "response"
// section — quarantine the source, only record what would have been done (dry-run), page a
// human, or nothing — with the guardrails: never quarantine a critical workload (page
// instead), and at most `max_auto_quarantines_per_minute` automatic quarantines in any 60 s
// (beyond: rate-limited, a human decides). Pure: the caller passes the time; the controller
// (wall clock) and the replay tool (event time) run the same decisions.
#pragma once

#include "controller/analyzer/analyzer.hpp"
#include "policies/policy_model.hpp"

#include <cstdint>
#include <deque>
#include <expected>
#include <span>
#include <string>
#include <string_view>

namespace bulkhead::analyzer {

enum class ResponseAction : std::uint8_t {
    None,        // below the policy's threshold, mode off, or already quarantined
    Quarantine,  // quarantine the source now
    DryRun,      // record that it would have been quarantined
    Page,        // would quarantine, but the source is critical or not a managed workload
    RateLimited, // would quarantine, but the per-minute limit is reached: a human decides
};
std::string_view to_string(ResponseAction action); // "none", "quarantine", "dry-run", ...

// What the caller knows of the incident's source.
struct ResponseSubject {
    bool managed = false;             // a workload of the inventory the controller can quarantine
    bool critical = false;            // inventory "critical": never quarantined automatically
    bool already_quarantined = false; // an active quarantine exists
    std::span<const std::string> segments; // the source's policy segment names
};

struct ResponseDecision {
    ResponseAction action = ResponseAction::None;
    std::string reason;  // for the audit log and the incident: why this action
    int rule = -1;       // index into auto_quarantine_rules; -1: the section's defaults
    policy::AutoQuarantineMode mode = policy::AutoQuarantineMode::Off;
    Severity min_severity = Severity::High;
};

class ResponsePlanner {
  public:
    explicit ResponsePlanner(policy::ResponsePolicy policy = {});
    // A new policy applies from the next decision; the rate limit's memory is kept.
    void set_policy(policy::ResponsePolicy policy);
    const policy::ResponsePolicy& policy() const { return policy_; }

    // Decides for `finding`, just recorded on `incident` (severity already escalated).
    // A Quarantine decision counts against the rate limit at `now_ns`.
    ResponseDecision decide(const Incident& incident, const Finding& finding,
                            const ResponseSubject& subject, std::int64_t now_ns);

    // Automatic quarantines in the 60 s before `now_ns`.
    std::size_t recent_quarantines(std::int64_t now_ns);

    // Checkpoint of the rate limit's memory (not the policy), so a restart does not reset
    // the per-minute count; restore_state replaces it, or leaves it untouched and says why.
    std::string save_state() const;
    std::expected<void, std::string> restore_state(std::string_view bytes);

  private:
    policy::ResponsePolicy policy_;
    std::deque<std::int64_t> recent_; // times of automatic quarantines, oldest first
};

} // namespace bulkhead::analyzer
