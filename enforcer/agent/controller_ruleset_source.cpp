#include "enforcer/agent/controller_ruleset_source.hpp"

#include "enforcer/agent/durable_file.hpp"
#include "enforcer/agent/ndjson.hpp"

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
        auto stored = read_small_file(channel_state_path(*client));
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
    channel_thread_ = std::thread([this] {
        channel_loop();
        channel_done_ = true;
    });
    status_thread_ = std::thread([this] {
        status_loop();
        status_done_ = true;
    });
}

ControllerRulesetSource::~ControllerRulesetSource() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    channel_wake_.notify_all();
    status_wake_.notify_all();
    channel_request_.shut_down();
    status_request_.shut_down();
    // A stop() that lands while a request is still connecting is lost; repeat it until the
    // threads are out (bounded by the requests' own timeouts).
    for (int i = 0; i < 1000 && !(channel_done_ && status_done_); ++i) {
        channel_request_.interrupt_current();
        status_request_.interrupt_current();
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
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
        if (auto saved = write_durably(channel_state_path(*client_), position.dump() + "\n", 0600); !saved) {
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
            run_one_stream(backoff);
        }
        std::unique_lock lock(mutex_);
        const auto wait = backoff.next();
        channel_wake_.wait_for(lock, wait, [&] { return stopping_; });
        if (stopping_) {
            return;
        }
    }
}

void ControllerRulesetSource::run_one_stream(Backoff& backoff) {
    HeldRuleset base;
    std::chrono::milliseconds heartbeat = config_.default_heartbeat;
    {
        std::lock_guard lock(mutex_);
        base = in_force_;
        if (stats_.heartbeat_interval_ms > 0) {
            heartbeat = std::chrono::milliseconds(stats_.heartbeat_interval_ms);
        }
    }
    // The socket's own read timeout is a backstop; the status thread's watchdog ends a
    // silent stream after 3 x the interval the hello announced.
    auto connection = client_->connect(heartbeat * 3 + std::chrono::seconds(1));
    if (!channel_request_.set(connection)) {
        return;
    }
    ChannelSession session(client_->config().enforcer_id, base);
    NdjsonFramer framer;
    const auto path = client_->enforcer_path("channel") + "?generation=" + std::to_string(base.generation) +
                      "&hash=" + base.hash +
                      "&hash_format=" + std::to_string(ruleset::ruleset_hash_format);
    const auto started = Clock::now();
    {
        std::lock_guard lock(mutex_);
        streaming_ = true;
        last_line_ = started;
    }
    std::string reason;
    bool resync = false;
    auto on_line = [&](std::string_view line) {
        {
            std::lock_guard lock(mutex_);
            last_line_ = Clock::now();
            if (stopping_) {
                return false;
            }
        }
        auto action = session.handle_line(line);
        switch (action.kind) {
        case ChannelAction::Kind::Hello: {
            {
                std::lock_guard lock(mutex_);
                stats_.connected = true;
                ++stats_.connects;
                stats_.heartbeat_interval_ms = action.heartbeat_interval_ms;
            }
            spdlog::info("agent: enforcer {}: control channel connected to {} (holding generation {})",
                         client_->config().enforcer_id, client_->config().endpoint.url(), base.generation);
            wake_status();
            break;
        }
        case ChannelAction::Kind::Apply: {
            {
                std::lock_guard lock(mutex_);
                ++(action.from_diff ? stats_.diffs : stats_.rulesets);
            }
            push(std::move(action.next));
            break;
        }
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
            return false;
        case ChannelAction::Kind::None:
            break;
        }
        return true;
    };
    auto result = connection->stream(
        path,
        [&](int status) {
            if (status != 200) {
                reason = "HTTP " + std::to_string(status);
                return false;
            }
            return true;
        },
        [&](std::string_view chunk) {
            auto fed = framer.feed(chunk, on_line);
            if (!fed) {
                resync = true;
                reason = fed.error();
                return false;
            }
            return *fed;
        });
    channel_request_.clear();
    const auto lasted = Clock::now() - started;
    if (lasted >= config_.stable_after) {
        backoff.reset();
    }
    if (reason.empty()) {
        reason = result ? "the controller ended the stream" : result.error();
    }
    bool stopping = false;
    {
        std::lock_guard lock(mutex_);
        streaming_ = false;
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
    std::shared_ptr<HttpConnection> status_connection;  // this thread's only
    std::unique_lock lock(mutex_);
    for (;;) {
        const auto tick = std::min(next_heartbeat, Clock::now() + std::chrono::milliseconds(100));
        status_wake_.wait_until(lock, tick, [&] { return stopping_ || ack_pending_; });
        if (stopping_) {
            return;
        }
        const auto now = Clock::now();
        const auto heartbeat = stats_.heartbeat_interval_ms > 0
                                   ? std::chrono::milliseconds(stats_.heartbeat_interval_ms)
                                   : config_.default_heartbeat;
        // Watchdog: three intervals without a line is a dead connection.
        if (streaming_ && now - last_line_ > heartbeat * 3) {
            last_line_ = now;
            lock.unlock();
            spdlog::warn("agent: enforcer {}: control channel silent for {} ms; reconnecting",
                         client_->config().enforcer_id, 3 * heartbeat.count());
            channel_request_.interrupt_current();
            lock.lock();
        }
        if (!ack_pending_ && now < next_heartbeat) {
            continue;
        }
        if (!client_->has_credential()) {
            next_heartbeat = now + heartbeat;
            continue;
        }
        ack_pending_ = false;
        const auto body = status_body(rtt_ms).dump();
        lock.unlock();
        // Kept open between posts (keep-alive): no handshake on the ack path; dropped after
        // a failure so the next attempt starts afresh.
        if (!status_connection) {
            status_connection = client_->connect(config_.status_timeout);
        }
        auto connection = status_connection;
        if (!status_request_.set(connection)) {
            return;
        }
        const auto sent = Clock::now();
        auto response = connection->post_json(client_->enforcer_path("status"), body);
        const auto took = std::chrono::duration<double, std::milli>(Clock::now() - sent).count();
        status_request_.clear();
        const bool ok = response && response->status == 200;
        if (ok) {
            rtt_ms = took;
        }
        lock.lock();
        ++stats_.status_posts;
        if (ok) {
            stats_.last_rtt_ms = took;
            next_heartbeat = Clock::now() + heartbeat;
        } else {
            status_connection.reset();
            ++stats_.status_failures;
            // The next attempt carries the same apply result: it is the ack, late.
            next_heartbeat = Clock::now() + std::min<std::chrono::milliseconds>(heartbeat, std::chrono::seconds(1));
        }
    }
}

}  // namespace bulkhead::enforcer::agent
