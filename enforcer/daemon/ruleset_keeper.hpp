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
#include <set>
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

    // Same-packet containment. A tripwire rule adds its packet's port to the dynamic set
    // `quarantined_ports` in the kernel; nobody tells the keeper (the kernel sends no
    // netlink notification for packet-path additions, checked on 6.18), so it learns of it
    // from the tripwire's own NFLOG message (`note_kernel_contained`) or from a read-back
    // (drift check, restore), whichever comes first. Such a port is *held*: every ruleset
    // applied keeps it in the set, drift repair and a restart included, until a ruleset
    // from the source contains it itself; from then on the source owns it and a release
    // (a ruleset without it) removes it. Returns true when the port is news, after emitting
    // a `kernel_contained` event.
    bool note_kernel_contained(const std::string& interface, std::string_view how,
                               std::int64_t now_unix_ms);
    const std::set<std::string>& held_ports() const { return held_; }

    // Host-mode tripwires: the rule adds the sender's address to `blocked_sources4/6`
    // instead. Held the same way (across diffs, drift repair and restarts) until a ruleset
    // from the source holds the address itself (the controller quarantined the sender),
    // after which the source's release removes it. Learnt from the tripwire's NFLOG
    // message or a read-back. Returns true when the address is news, after emitting a
    // `kernel_contained` event naming the source address.
    bool note_kernel_blocked(const policy::IpAddress& source, std::string_view how,
                             std::int64_t now_unix_ms);
    const std::set<policy::IpAddress>& held_sources() const { return held_sources_; }

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
    // `desired` with the held ports added to quarantined_ports; drops held ports the source
    // now holds itself or that no longer name a port of this enforcer.
    ruleset::Ruleset with_held(const ruleset::Ruleset& desired, std::int64_t now_unix_ms);
    // Adopts what a read-back found the kernel added to a dynamic set; true if any.
    bool adopt(const DriftReport& report, std::int64_t now_unix_ms);
    void save_state(std::int64_t now_unix_ms);

    std::optional<ruleset::Ruleset> applied_;
    std::set<std::string> held_;
    std::set<policy::IpAddress> held_sources_;
    std::uint64_t generation_ = 0;
};

}  // namespace bulkhead::enforcer
