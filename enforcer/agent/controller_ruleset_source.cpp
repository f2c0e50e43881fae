#include "enforcer/agent/controller_ruleset_source.hpp"

#include "common/files/durable_file.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace bulkhead::enforcer::agent {
namespace {

using Clock = std::chrono::steady_clock;

std::filesystem::path channel_state_path(const ControllerClient& client) {
    return client.config().state_dir / "channel.json";
}

}  // namespace

std::expected<std::unique_ptr<ControllerRulesetSource>, std::string> ControllerRulesetSource::open(
    std::shared_ptr<ControllerClient> client, const ruleset::Ruleset* in_force, ChannelConfig config,
    const SpoolingEventSink* sink) {
    HeldRuleset held;
    if (in_force != nullptr) {
        held.ruleset = std::make_shared<const ruleset::Ruleset>(*in_force);
        held.hash = ruleset::ruleset_hash(*in_force);
        // The controller's generation of what is in force, remembered across restarts.
        auto stored = files::read_small_file(channel_state_path(*client));
        if (stored && *stored) {
            auto doc = nlohmann::json::parse(**stored, nullptr, false);
            if (doc.is_object() && doc.value("hash", "") == held.hash && doc.contains("generation") &&
                doc["generation"].is_number_unsigned()) {
                held.generation = doc["generation"].get<std::uint64_t>();
            }
        }
    }
    const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) {
        return std::unexpected(std::string("eventfd: ") + std::strerror(errno));
    }
    return std::unique_ptr<ControllerRulesetSource>(new ControllerRulesetSource(
        std::move(client), std::move(held), config, sink, fd));
}

ControllerRulesetSource::ControllerRulesetSource(std::shared_ptr<ControllerClient> client, HeldRuleset in_force,
                                                 ChannelConfig config, const SpoolingEventSink* sink,
                                                 int event_fd)
    : client_(std::move(client)), config_(config), sink_(sink), event_fd_(event_fd) {
    in_force_ = in_force;
    handed_ = in_force;
    last_apply_.generation = in_force.generation;
    last_apply_.hash = in_force.hash;
    stats_.in_force_generation = in_force.generation;
    stats_.in_force_hash = in_force.hash;
    channel_thread_ = std::thread([this] { channel_loop(); });
    status_thread_ = std::thread([this] { status_loop(); });
}

ControllerRulesetSource::~ControllerRulesetSource() {
    std::shared_ptr<ChannelSocket> socket;
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;  // no new socket from here on
        socket = channel_socket_;
    }
    channel_wake_.notify_all();
    status_wake_.notify_all();
    if (socket) {
        // No new request takes the socket; one in flight (an ack, an upload) may finish, as
        // its answer settles what the next start has to send again.
        client_->clear_channel(socket.get());
        socket->drain(config_.shutdown_grace);
        // Ends the connect or read the channel thread is in, and whatever still waits.
        socket->close("the enforcer is shutting down");
    }
    channel_thread_.join();
    status_thread_.join();
    ::close(event_fd_);
}

void ControllerRulesetSource::wake_status() { status_wake_.notify_all(); }

void ControllerRulesetSource::push(Item item) {
    {
        std::lock_guard lock(mutex_);
        queue_.push_back(std::move(item));
    }
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(event_fd_, &one, sizeof one);
}

std::expected<std::optional<ruleset::Ruleset>, std::string> ControllerRulesetSource::poll() {
    std::uint64_t counter = 0;
    [[maybe_unused]] auto n = ::read(event_fd_, &counter, sizeof counter);
    std::unique_lock lock(mutex_);
    if (queue_.empty()) {
        return std::optional<ruleset::Ruleset>{};
    }
    auto signal_rest = [&] {
        if (!queue_.empty()) {
            const std::uint64_t one = 1;
            [[maybe_unused]] auto w = ::write(event_fd_, &one, sizeof one);
        }
    };
    if (auto* rejection = std::get_if<Rejection>(&queue_.front())) {
        auto reason = std::move(rejection->reason);
        queue_.pop_front();
        signal_rest();
        return std::unexpected("controller: " + reason);
    }
    // Consecutive rulesets: only the newest matters, the older ones are superseded.
    HeldRuleset newest;
    while (!queue_.empty() && std::holds_alternative<HeldRuleset>(queue_.front())) {
        newest = std::move(std::get<HeldRuleset>(queue_.front()));
        queue_.pop_front();
    }
    signal_rest();
    handed_ = newest;
    return std::optional<ruleset::Ruleset>{*newest.ruleset};
}

void ControllerRulesetSource::report_applied(const ApplyReport& report) {
    HeldRuleset handed;
    {
        std::lock_guard lock(mutex_);
        handed = handed_;
        last_apply_ = LastApply{handed.generation, handed.hash, report.ok, report.error,
                                report.applied_at_ms, report.apply_ms};
        counters_ = report.counters;
        if (report.ok) {
            in_force_ = handed;
            stats_.in_force_generation = handed.generation;
            stats_.in_force_hash = handed.hash;
        }
        ack_pending_ = true;
    }
    wake_status();
    if (report.ok) {
        const nlohmann::json position = {{"generation", handed.generation}, {"hash", handed.hash}};
        if (auto saved = files::write_durably(channel_state_path(*client_), position.dump() + "\n", 0600); !saved) {
            // Only costs a full ruleset instead of a diff at the next start.
            spdlog::warn("agent: enforcer {}: channel position not saved: {}", client_->config().enforcer_id,
                         saved.error());
        }
    }
}

void ControllerRulesetSource::report_counters(const EnforcerCounters& counters) {
    std::lock_guard lock(mutex_);
    counters_ = counters;
}

ChannelStats ControllerRulesetSource::stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
}

std::uint64_t ControllerRulesetSource::handed_generation() const {
    std::lock_guard lock(mutex_);
    return handed_.generation;
}

void ControllerRulesetSource::channel_loop() {
    Backoff backoff(config_.reconnect_initial, config_.reconnect_max);
    for (;;) {
        {
            std::lock_guard lock(mutex_);
            if (stopping_) {
                return;
            }
        }
        bool ready = client_->has_credential();
        if (!ready) {
            if (auto enrolled = client_->enroll_if_needed(); !enrolled) {
                spdlog::warn("agent: enforcer {}: {}", client_->config().enforcer_id, enrolled.error());
                std::lock_guard lock(mutex_);
                stats_.last_error = enrolled.error();
            } else {
                spdlog::info("agent: enforcer {}: enrolled with the controller; credential stored in {}",
                             client_->config().enforcer_id, client_->credential_path().string());
                ready = true;
                backoff.reset();
            }
        }
        if (ready) {
            run_one_channel(backoff);
        }
        std::unique_lock lock(mutex_);
        const auto wait = backoff.next();
        channel_wake_.wait_for(lock, wait, [&] { return stopping_; });
        if (stopping_) {
            return;
        }
    }
}

void ControllerRulesetSource::run_one_channel(Backoff& backoff) {
    HeldRuleset base;
    {
        std::lock_guard lock(mutex_);
        base = in_force_;
    }
    auto socket = std::make_shared<ChannelSocket>(client_->config().endpoint, client_->config().ca_file);
    const auto started = Clock::now();
    {
        std::lock_guard lock(mutex_);
        if (stopping_) {
            return;
        }
        // From here the watchdog and the destructor can close it, connecting or not.
        channel_socket_ = socket;
        last_message_ = started;
    }
    // The session runs on the socket's I/O thread (set_message_handler): a ruleset or diff
    // goes to the daemon from there. Everything else it decides is stashed, in order, for
    // this thread, which reads the same messages from the socket in the same order.
    struct Shared {
        explicit Shared(ChannelSession started) : session(std::move(started)) {}
        std::mutex mutex;
        ChannelSession session;
        std::deque<ChannelAction> stashed;
        bool ended = false;  // a resync: later lines wait for the next connection
    };
    auto shared = std::make_shared<Shared>(ChannelSession(client_->config().enforcer_id, base));
    socket->set_message_handler([this, shared](const std::string& message) {
        std::lock_guard session_lock(shared->mutex);
        if (shared->ended) {
            return true;
        }
        auto action = shared->session.handle_line(message);
        if (action.kind == ChannelAction::Kind::Apply) {
            {
                std::lock_guard lock(mutex_);
                last_message_ = Clock::now();
                ++(action.from_diff ? stats_.diffs : stats_.rulesets);
            }
            push(std::move(action.next));
            return true;
        }
        shared->ended = action.kind == ChannelAction::Kind::Resync;
        shared->stashed.push_back(std::move(action));
        return false;
    });
    const auto path = client_->enforcer_path("channel") + "?generation=" + std::to_string(base.generation) +
                      "&hash=" + base.hash +
                      "&hash_format=" + std::to_string(ruleset::ruleset_hash_format);
    std::string reason;
    bool resync = false;
    if (auto connected = socket->connect(path, client_->credential(), client_->config().timeouts.connect);
        !connected) {
        reason = connected.error();
    } else {
        client_->set_channel(socket);
    }
    while (reason.empty()) {
        auto message = socket->read();
        if (!message) {
            reason = message.error();
            break;
        }
        {
            std::lock_guard lock(mutex_);
            last_message_ = Clock::now();
            if (stopping_) {
                reason = "the enforcer is shutting down";
                break;
            }
        }
        ChannelAction action;
        {
            std::lock_guard session_lock(shared->mutex);
            if (shared->stashed.empty()) {
                continue;  // cannot happen: every message read was stashed
            }
            action = std::move(shared->stashed.front());
            shared->stashed.pop_front();
        }
        switch (action.kind) {
        case ChannelAction::Kind::Hello: {
            {
                std::lock_guard lock(mutex_);
                stats_.connected = true;
                ++stats_.connects;
                stats_.heartbeat_interval_ms = action.heartbeat_interval_ms;
                // A status at once on every new channel: an ack that could not go up while
                // the channel was down goes now, and the controller learns what is in force.
                ack_pending_ = true;
            }
            spdlog::info("agent: enforcer {}: control channel connected to {} (holding generation {})",
                         client_->config().enforcer_id, client_->config().endpoint.url(), base.generation);
            // A pending ack goes up at once, and so do the events spooled while the channel
            // was down.
            wake_status();
            if (sink_ != nullptr) {
                sink_->kick();
            }
            break;
        }
        case ChannelAction::Kind::Apply:  // the I/O thread pushed it
            break;
        case ChannelAction::Kind::Reject: {
            spdlog::warn("agent: enforcer {}: controller ruleset generation {} refused: {}",
                         client_->config().enforcer_id, action.generation, action.reason);
            {
                std::lock_guard lock(mutex_);
                ++stats_.rejected;
                last_apply_ = LastApply{action.generation, action.hash, false, action.reason, 0, 0};
                ack_pending_ = true;
            }
            wake_status();
            push(Rejection{action.reason});
            break;
        }
        case ChannelAction::Kind::Resync:
            resync = true;
            reason = action.reason;
            break;
        case ChannelAction::Kind::None:
            break;
        }
    }
    client_->clear_channel(socket.get());
    socket->close(reason);
    const auto lasted = Clock::now() - started;
    if (lasted >= config_.stable_after) {
        backoff.reset();
    }
    bool stopping = false;
    {
        std::lock_guard lock(mutex_);
        channel_socket_.reset();
        if (stats_.connected) {
            ++stats_.disconnects;
        }
        stats_.connected = false;
        if (resync) {
            ++stats_.resyncs;
        }
        stats_.last_error = reason;
        stopping = stopping_;
    }
    if (!stopping) {
        // A resync is the protocol working (the controller restarted, or lost our place); a
        // closed channel is a fault the channel thread retries with backoff.
        spdlog::log(resync ? spdlog::level::info : spdlog::level::warn, "agent: enforcer {}: control channel {}: {}",
                    client_->config().enforcer_id, resync ? "resync" : "closed", reason);
    }
}

nlohmann::json ControllerRulesetSource::status_body(double rtt_ms) const {
    // Called with mutex_ held.
    nlohmann::json body = {{"generation", last_apply_.generation},
                           {"hash", last_apply_.hash},
                           {"state", last_apply_.ok ? "applied" : "failed"},
                           {"error", last_apply_.error},
                           {"applied_at_ms", last_apply_.applied_at_ms},
                           {"apply_ms", last_apply_.apply_ms},
                           {"enforcer_time_ms", unix_ms_now()},
                           {"version", client_->config().version},
                           {"hash_format", ruleset::ruleset_hash_format},
                           {"drift_repairs", counters_.drift_repairs},
                           {"last_drift_at_ms", counters_.last_drift_at_ms},
                           {"elements", counters_.elements},
                           {"nflog", {{"received", counters_.nflog_received}, {"lost", counters_.nflog_lost}}}};
    if (counters_.ports) {
        body["ports"] = *counters_.ports;
    }
    if (sink_ != nullptr) {
        const auto s = sink_->stats();
        body["spool"] = {{"bytes", s.spool.bytes}, {"events", s.spool.events}, {"evicted", s.spool.evicted},
                         {"set_aside", s.spool.set_aside}};
    }
    if (rtt_ms > 0) {
        body["rtt_ms"] = rtt_ms;
    }
    return body;
}

void ControllerRulesetSource::status_loop() {
    auto next_heartbeat = Clock::now();
    double rtt_ms = 0;
    std::unique_lock lock(mutex_);
    for (;;) {
        const auto tick = std::min(next_heartbeat, Clock::now() + std::chrono::milliseconds(100));
        // An ack waits for the channel's hello: without a channel there is nothing to send
        // it on, and the hello wakes this thread.
        status_wake_.wait_until(lock, tick, [&] { return stopping_ || (ack_pending_ && stats_.connected); });
        if (stopping_) {
            return;
        }
        const auto now = Clock::now();
        const auto heartbeat = stats_.heartbeat_interval_ms > 0
                                   ? std::chrono::milliseconds(stats_.heartbeat_interval_ms)
                                   : config_.default_heartbeat;
        // Watchdog: three intervals without a message is a dead connection.
        if (channel_socket_ && now - last_message_ > heartbeat * 3) {
            last_message_ = now;
            auto socket = channel_socket_;
            lock.unlock();
            spdlog::warn("agent: enforcer {}: control channel silent for {} ms; reconnecting",
                         client_->config().enforcer_id, 3 * heartbeat.count());
            if (socket) {
                socket->close("silent for " + std::to_string(3 * heartbeat.count()) + " ms");
            }
            lock.lock();
        }
        if (!stats_.connected || (!ack_pending_ && now < next_heartbeat)) {
            continue;
        }
        auto socket = client_->channel();
        if (!socket) {
            continue;  // the channel just ended; the next hello brings this thread back
        }
        ack_pending_ = false;
        const auto body = status_body(rtt_ms).dump();
        lock.unlock();
        const auto sent = Clock::now();
        auto response = socket->request("status", body, config_.status_timeout);
        const auto took = std::chrono::duration<double, std::milli>(Clock::now() - sent).count();
        const bool ok = response && response->status == 200;
        if (ok) {
            rtt_ms = took;
        } else {
            spdlog::debug("agent: enforcer {}: status not taken: {}", client_->config().enforcer_id,
                          response ? "HTTP " + std::to_string(response->status) + " " + response->body.substr(0, 200)
                                   : response.error());
        }
        lock.lock();
        ++stats_.status_posts;
        if (ok) {
            stats_.last_rtt_ms = took;
            next_heartbeat = Clock::now() + heartbeat;
        } else {
            ++stats_.status_failures;
            // The next attempt carries the same apply result: it is the ack, late (at the
            // next hello if the channel closed under this one).
            next_heartbeat = Clock::now() + std::min<std::chrono::milliseconds>(heartbeat, std::chrono::seconds(1));
        }
    }
}

}  // namespace bulkhead::enforcer::agent
