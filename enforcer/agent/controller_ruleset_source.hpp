// ControllerRulesetSource: desired rulesets pushed by the controller on the control channel
// (GET /api/v1/enforcers/{id}/channel as a WebSocket, protocol 3), behind the daemon's
// RulesetSource seam.
//
// Threads: a channel thread holds the channel socket (enrolls first if needed, reconnects
// with jittered exponential backoff, resyncs on any base or hash mismatch), publishes it
// through ControllerClient::set_channel and hands verified rulesets to the daemon's thread
// through a queue and an eventfd (fd()); a status thread sends the ack right after every
// apply the daemon reports and a heartbeat every interval as "status" requests on that same
// socket, and closes a channel that stayed silent for three heartbeat intervals. The event
// uploader (SpoolingEventSink) sends its "events" requests on the same socket: the enforcer
// holds one connection to the controller. The daemon's thread never waits for the network.
#pragma once

#include "enforcer/agent/backoff.hpp"
#include "enforcer/agent/channel_session.hpp"
#include "enforcer/agent/channel_socket.hpp"
#include "enforcer/agent/controller_client.hpp"
#include "enforcer/agent/spooling_event_sink.hpp"
#include "enforcer/interfaces/ruleset_source.hpp"

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <variant>

namespace bulkhead::enforcer::agent {

struct ChannelConfig {
    std::chrono::milliseconds reconnect_initial{200};
    std::chrono::milliseconds reconnect_max{10000};
    std::chrono::milliseconds stable_after{60000};  // a connection this long resets the backoff
    std::chrono::milliseconds default_heartbeat{5000};  // until a hello says otherwise
    std::chrono::milliseconds status_timeout{5000};
    // At shutdown an ack or upload in flight on the channel may finish for this long before
    // the socket closes under it.
    std::chrono::milliseconds shutdown_grace{2000};
};

struct ChannelStats {
    bool connected = false;
    std::uint64_t connects = 0;      // streams that got their hello
    std::uint64_t disconnects = 0;
    std::uint64_t resyncs = 0;       // dropped for a base/hash mismatch or a bad line
    std::uint64_t rulesets = 0;      // full rulesets received
    std::uint64_t diffs = 0;         // diffs received and verified
    std::uint64_t rejected = 0;
    std::uint64_t status_posts = 0;     // status requests sent on the channel
    std::uint64_t status_failures = 0;
    std::int64_t heartbeat_interval_ms = 0;
    double last_rtt_ms = 0;
    std::uint64_t in_force_generation = 0;
    std::string in_force_hash;
    std::string last_error;
};

class ControllerRulesetSource final : public RulesetSource {
public:
    // `in_force`: the ruleset the daemon already has in force (last-known-good), if any. The
    // controller's generation of it is read from <state-dir>/channel.json when the hash
    // matches. `sink` (optional) supplies the spool figures of the status message.
    static std::expected<std::unique_ptr<ControllerRulesetSource>, std::string> open(
        std::shared_ptr<ControllerClient> client, const ruleset::Ruleset* in_force,
        ChannelConfig config = {}, const SpoolingEventSink* sink = nullptr);
    ~ControllerRulesetSource() override;

    int fd() const override { return event_fd_; }
    std::expected<std::optional<ruleset::Ruleset>, std::string> poll() override;
    void report_applied(const ApplyReport& report) override;
    void report_counters(const EnforcerCounters& counters) override;

    ChannelStats stats() const;
    // The controller generation of what poll() returned last (0 before anything).
    std::uint64_t handed_generation() const;

private:
    struct Rejection {
        std::string reason;
    };
    using Item = std::variant<HeldRuleset, Rejection>;

    ControllerRulesetSource(std::shared_ptr<ControllerClient> client, HeldRuleset in_force,
                            ChannelConfig config, const SpoolingEventSink* sink, int event_fd);
    void channel_loop();
    void status_loop();
    void run_one_channel(Backoff& backoff);
    void push(Item item);
    nlohmann::json status_body(double rtt_ms) const;
    void wake_status();

    std::shared_ptr<ControllerClient> client_;
    ChannelConfig config_;
    const SpoolingEventSink* sink_;
    int event_fd_ = -1;

    mutable std::mutex mutex_;  // everything below up to the threads
    std::deque<Item> queue_;
    HeldRuleset in_force_;     // what the kernel has (the query of the next connect)
    HeldRuleset handed_;       // what poll() returned last
    struct LastApply {
        std::uint64_t generation = 0;
        std::string hash;
        bool ok = true;
        std::string error;
        std::int64_t applied_at_ms = 0;
        double apply_ms = 0;
    } last_apply_;
    EnforcerCounters counters_;
    bool ack_pending_ = false;
    bool stopping_ = false;
    std::condition_variable status_wake_;
    std::condition_variable channel_wake_;
    ChannelStats stats_;
    std::chrono::steady_clock::time_point last_message_{};
    // The socket of the channel thread, from before its connect until it ends: what the
    // watchdog and the destructor close.
    std::shared_ptr<ChannelSocket> channel_socket_;

    std::thread channel_thread_;
    std::thread status_thread_;
};

}  // namespace bulkhead::enforcer::agent
