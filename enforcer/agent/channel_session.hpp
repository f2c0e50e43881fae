// The enforcer's half of one control-channel stream, as a pure state machine: lines in,
// decisions out (docs/control-channel.md). No sockets, no clock, no threads; the
// ControllerRulesetSource feeds it and acts on what it returns.
#pragma once

#include "policies/ruleset.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace bulkhead::enforcer::agent {

// A ruleset with the controller's generation and hash.
struct HeldRuleset {
    std::uint64_t generation = 0;
    std::string hash;  // ruleset_hash(*ruleset); empty with no ruleset
    std::shared_ptr<const ruleset::Ruleset> ruleset;
};

struct ChannelAction {
    enum class Kind {
        None,    // heartbeat, or a message type this enforcer does not know
        Hello,   // heartbeat_interval_ms is set
        Apply,   // `next` is the new desired ruleset (already verified)
        Reject,  // a full ruleset that cannot be used: ack it as failed, keep the stream
        Resync,  // drop the connection and reconnect with what is in force
    };
    Kind kind = Kind::None;
    HeldRuleset next;
    std::string reason;             // Reject / Resync
    std::uint64_t generation = 0;   // Reject: what was refused
    std::string hash;               // Reject
    std::int64_t heartbeat_interval_ms = 0;
    std::int64_t controller_time_ms = 0;  // hello / heartbeat, 0 when absent
    bool from_diff = false;               // Apply: the message was a diff
};

class ChannelSession {
public:
    // `held` is what the enforcer asked with (what it has in force): diffs apply to it.
    // `hash_format`: the ruleset hash the enforcer announced on the stream (1 is what an
    // enforcer of the previous release speaks; the fleet simulator uses it to test that).
    ChannelSession(std::string enforcer_id, HeldRuleset held, int hash_format = ruleset::ruleset_hash_format)
        : enforcer_id_(std::move(enforcer_id)), held_(std::move(held)), hash_format_(hash_format) {}

    ChannelAction handle_line(std::string_view line);

    const HeldRuleset& held() const { return held_; }
    // Replaces what is held by an equal ruleset (same generation and hash) whose memory is
    // shared elsewhere; the fleet simulator keeps thousands of sessions in one process.
    void hold_equal(HeldRuleset equal) {
        if (equal.generation == held_.generation && equal.hash == held_.hash) {
            held_ = std::move(equal);
        }
    }
    bool greeted() const { return greeted_; }

private:
    std::string enforcer_id_;
    std::string hash_of(const ruleset::Ruleset& ruleset) const;

    HeldRuleset held_;
    int hash_format_;
    bool greeted_ = false;
};

}  // namespace bulkhead::enforcer::agent
