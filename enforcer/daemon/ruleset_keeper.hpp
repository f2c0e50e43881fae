// RulesetKeeper: keeps the desired ruleset in force on this host. It decides between a
// full replace and an element-level diff, persists last-known-good, repairs drift, and
// reports each step as an event and in metrics. The kernel, the disk and the clock come in
// from outside (RulesetBackend, StateStore, `now` parameters), so tests drive it with fakes.
#pragma once

#include "enforcer/daemon/metrics.hpp"
#include "enforcer/daemon/state_store.hpp"
#include "enforcer/interfaces/event_sink.hpp"
#include "enforcer/netlink/ruleset_backend.hpp"

#include <cstdint>
#include <expected>
#include <optional>
#include <string>

namespace bulkhead::enforcer {

class RulesetKeeper {
public:
    RulesetKeeper(RulesetBackend& backend, const StateStore& state, EventSink& events,
                  Metrics& metrics);

    // First thing on start: re-apply the last-known-good ruleset (if the kernel already
    // holds exactly it, nothing is written). A corrupt state file is reported and set
    // aside; the table in the kernel, if any, is left in force untouched.
    void restore(std::int64_t now_unix_ms);

    // Brings the kernel to `desired`: a diff against what is applied, or a full replace
    // on first apply / when a diff cannot be used / when the diff fails.
    std::expected<void, std::string> apply(const ruleset::Ruleset& desired,
                                           std::int64_t now_unix_ms);

    // Compares the kernel with what should be there; repairs and records any drift.
    // Returns true when drift was found.
    std::expected<bool, std::string> check_drift(std::int64_t now_unix_ms);

    const std::optional<ruleset::Ruleset>& applied() const { return applied_; }
    std::uint64_t generation() const { return generation_; }

private:
    std::expected<ApplyStats, KernelError> replace(const ruleset::Ruleset& desired);
    void record_applied(const ruleset::Ruleset& desired, const ApplyStats& stats,
                        std::string_view mode, std::int64_t now_unix_ms, std::size_t added,
                        std::size_t removed);

    RulesetBackend& backend_;
    const StateStore& state_;
    EventSink& events_;
    Metrics& metrics_;
    std::optional<ruleset::Ruleset> applied_;
    std::uint64_t generation_ = 0;
};

}  // namespace bulkhead::enforcer
