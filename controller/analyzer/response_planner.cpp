#include "controller/analyzer/response_planner.hpp"

#include "controller/analyzer/checkpoint_codec.hpp"

#include <algorithm>

namespace bulkhead::analyzer {

namespace {

constexpr std::int64_t kMinute = 60'000'000'000;
constexpr std::string_view kCheckpointMagic = "BHRP"; // Bulkhead response planner
constexpr std::uint8_t kCheckpointVersion = 1;

bool contains(const std::vector<std::string>& list, std::string_view value) {
    return std::find(list.begin(), list.end(), value) != list.end();
}

int rank(policy::AutoQuarantineMode mode) {
    switch (mode) {
    case policy::AutoQuarantineMode::Off:
        return 0;
    case policy::AutoQuarantineMode::DryRun:
        return 1;
    case policy::AutoQuarantineMode::On:
        return 2;
    }
    return 0;
}

std::string severity_text(Severity severity) {
    return std::string(policy::to_string(severity));
}

} // namespace

std::string_view to_string(ResponseAction action) {
    switch (action) {
    case ResponseAction::None:
        return "none";
    case ResponseAction::Quarantine:
        return "quarantine";
    case ResponseAction::DryRun:
        return "dry-run";
    case ResponseAction::Page:
        return "page";
    case ResponseAction::RateLimited:
        return "rate-limited";
    }
    return "?";
}

ResponsePlanner::ResponsePlanner(policy::ResponsePolicy policy) : policy_(std::move(policy)) {}

void ResponsePlanner::set_policy(policy::ResponsePolicy policy) {
    policy_ = std::move(policy);
}

std::size_t ResponsePlanner::recent_quarantines(std::int64_t now_ns) {
    while (!recent_.empty() && recent_.front() <= now_ns - kMinute) {
        recent_.pop_front();
    }
    return recent_.size();
}

ResponseDecision ResponsePlanner::decide(const Incident& incident, const Finding& finding,
                                         const ResponseSubject& subject, std::int64_t now_ns) {
    ResponseDecision d;
    d.mode = policy_.auto_quarantine;
    d.min_severity = policy_.auto_quarantine_min_severity;
    std::string which = "the policy's default";
    for (std::size_t i = 0; i < policy_.auto_quarantine_rules.size(); ++i) {
        const auto& rule = policy_.auto_quarantine_rules[i];
        const bool segment_matches =
            rule.segments.empty() ||
            std::any_of(subject.segments.begin(), subject.segments.end(),
                        [&](const std::string& s) { return contains(rule.segments, s); });
        const bool detector_matches = rule.detectors.empty() ||
                                      contains(rule.detectors, finding.detector) ||
                                      contains(rule.detectors, finding.rule_text);
        if (segment_matches && detector_matches) {
            d.rule = static_cast<int>(i);
            // The section's mode is the master switch: off stops every rule, dry-run caps them
            // at recording (off < dry-run < on), so one line turns the whole policy down.
            d.mode = std::min(rule.mode, policy_.auto_quarantine, [](auto a, auto b) { return rank(a) < rank(b); });
            d.min_severity = rule.min_severity;
            which = "rule " + std::to_string(i) + " (" + rule.pointer + ")";
            break;
        }
    }
    const std::string severity = severity_text(incident.severity);
    if (incident.about_target) {
        d.reason = "a fan-in incident is about a target; its sources answer for their own incidents";
        return d;
    }
    if (d.mode == policy::AutoQuarantineMode::Off) {
        d.reason = "automatic quarantine is off by " + which;
        return d;
    }
    if (incident.severity < d.min_severity) {
        d.reason = "severity " + severity + " is below " + severity_text(d.min_severity) +
                   " required by " + which;
        return d;
    }
    if (subject.already_quarantined) {
        d.reason = "already quarantined";
        return d;
    }
    const std::string trigger = std::string(finding.rule_text) + " at severity " + severity +
                                " (" + which + ", min " + severity_text(d.min_severity) + ")";
    if (!subject.managed) {
        d.action = ResponseAction::Page;
        d.reason = trigger + ", but the source is not a managed workload: a human must contain it";
        return d;
    }
    if (subject.critical) {
        d.action = ResponseAction::Page;
        d.reason = trigger + ", but the workload is marked critical: never quarantined "
                             "automatically";
        return d;
    }
    if (d.mode == policy::AutoQuarantineMode::DryRun) {
        d.action = ResponseAction::DryRun;
        d.reason = "would quarantine: " + trigger + "; dry-run changes nothing";
        return d;
    }
    const std::size_t recent = recent_quarantines(now_ns);
    if (recent >= policy_.max_auto_quarantines_per_minute) {
        d.action = ResponseAction::RateLimited;
        d.reason = trigger + ", but " + std::to_string(recent) +
                   " automatic quarantines in the last minute reached the limit of " +
                   std::to_string(policy_.max_auto_quarantines_per_minute) + ": a human decides";
        return d;
    }
    recent_.push_back(now_ns);
    d.action = ResponseAction::Quarantine;
    d.reason = trigger;
    return d;
}

std::string ResponsePlanner::save_state() const {
    detail::CheckpointWriter w(kCheckpointMagic, kCheckpointVersion);
    w.u(recent_.size());
    for (const auto t : recent_) {
        w.i(t);
    }
    return std::move(w).finish();
}

std::expected<void, std::string> ResponsePlanner::restore_state(std::string_view bytes) {
    detail::CheckpointReader r(bytes, kCheckpointMagic, kCheckpointVersion, "response planner");
    std::deque<std::int64_t> recent;
    const auto n = r.count(1);
    for (std::size_t k = 0; k < n && r.ok(); ++k) {
        const auto t = r.i();
        if (!recent.empty() && t < recent.back()) {
            r.invalid("quarantine times out of order");
        }
        recent.push_back(t);
    }
    if (r.ok() && !r.at_end()) {
        r.invalid("bytes left after the state");
    }
    if (!r.ok()) {
        return std::unexpected(r.error());
    }
    recent_ = std::move(recent);
    return {};
}

} // namespace bulkhead::analyzer
