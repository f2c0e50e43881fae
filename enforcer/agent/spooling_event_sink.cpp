#include "enforcer/agent/spooling_event_sink.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <limits>

namespace bulkhead::enforcer::agent {

std::expected<std::unique_ptr<SpoolingEventSink>, std::string> SpoolingEventSink::open(
    SpoolingSinkConfig config, std::shared_ptr<ControllerClient> client) {
    auto spool = EventSpool::open(config.spool);
    if (!spool) {
        return std::unexpected(spool.error());
    }
    return std::unique_ptr<SpoolingEventSink>(
        new SpoolingEventSink(std::move(config), std::move(*spool), std::move(client)));
}

SpoolingEventSink::SpoolingEventSink(SpoolingSinkConfig config, std::unique_ptr<EventSpool> spool,
                                     std::shared_ptr<ControllerClient> client)
    : config_(std::move(config)), spool_(std::move(spool)), client_(std::move(client)) {
    writer_ = std::thread([this] { writer_loop(); });
    syncer_ = std::thread([this] { syncer_loop(); });
    if (client_) {
        uploader_ = std::thread([this] { uploader_loop(); });
    }
}

SpoolingEventSink::~SpoolingEventSink() {
    flush();
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    writer_wake_.notify_all();
    writer_.join();  // the writer empties the queue before it stops
    {
        std::lock_guard lock(mutex_);
        sync_stopping_ = true;
    }
    sync_wake_.notify_all();
    syncer_.join();  // and the syncer makes it durable
    {
        std::lock_guard lock(upload_mutex_);
        upload_stopping_ = true;
    }
    upload_wake_.notify_all();
    if (uploader_.joinable()) {
        // No new upload starts; one in flight may finish within the grace period.
        std::unique_lock lock(upload_mutex_);
        upload_wake_.wait_for(lock, config_.shutdown_grace, [&] { return uploader_exited_; });
    }
    if (uploader_.joinable()) {
        std::shared_ptr<ChannelSocket> busy;
        {
            std::lock_guard lock(upload_mutex_);
            if (!uploader_exited_) {
                busy = upload_socket_;
            }
        }
        if (busy) {
            // Past the grace period: the upload is abandoned (its events stay spooled and
            // are sent again; the controller de-duplicates them by seq).
            busy->close("the enforcer is shutting down");
        }
        uploader_.join();
    }
}

std::string SpoolingEventSink::log_subject() const {
    return client_ ? "enforcer " + client_->config().enforcer_id : "spool " + config_.spool.directory.string();
}

void SpoolingEventSink::emit(const nlohmann::json& event) { pending_.push_back(event); }

void SpoolingEventSink::flush() {
    if (pending_.empty()) {
        return;
    }
    std::size_t dropped = 0;
    {
        std::lock_guard lock(mutex_);
        if (queued_events_ + pending_.size() > config_.max_queued_events) {
            // The writer is hopelessly behind (a dead disk): count and drop rather than grow.
            dropped = pending_.size();
        } else {
            queued_events_ += pending_.size();
            queue_.push_back(std::move(pending_));
            ++batches_handed_;
        }
    }
    pending_.clear();
    if (dropped > 0) {
        std::lock_guard lock(stats_mutex_);
        stats_.dropped_in_memory += dropped;
    }
    writer_wake_.notify_one();
}

void SpoolingEventSink::wait_written() {
    std::unique_lock lock(mutex_);
    const auto target = batches_handed_;
    written_.wait(lock, [&] { return batches_written_ >= target; });
}

void SpoolingEventSink::kick() const {
    {
        std::lock_guard lock(upload_mutex_);
        upload_kick_ = true;
    }
    upload_wake_.notify_one();
}

SinkStats SpoolingEventSink::stats() const {
    SinkStats s;
    {
        std::lock_guard lock(stats_mutex_);
        s = stats_;
    }
    s.spool = spool_->stats();
    s.spool.evicted += s.dropped_in_memory;
    return s;
}

void SpoolingEventSink::writer_loop() {
    std::uint64_t dropped_reported = 0;
    for (;;) {
        std::vector<nlohmann::json> batch;
        {
            std::unique_lock lock(mutex_);
            writer_wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
            if (queue_.empty()) {
                return;  // stopping, and everything is written
            }
            // Everything queued goes in one append: one fdatasync per turn, not per flush.
            batch = std::move(queue_.front());
            queue_.pop_front();
            while (!queue_.empty()) {
                auto& next = queue_.front();
                batch.insert(batch.end(), std::make_move_iterator(next.begin()), std::make_move_iterator(next.end()));
                queue_.pop_front();
            }
            queued_events_ = 0;
        }
        const auto count_before = batch.size();
        // Readable for the uploader at once; the syncer makes it durable (EventSpool::append).
        auto appended = spool_->append(batch, false);
        if (appended) {
            kick();
        }
        if (!appended) {
            spdlog::error("agent: {}: event spool: {} ({} events lost)", log_subject(), appended.error(),
                          count_before);
            std::lock_guard lock(stats_mutex_);
            stats_.dropped_in_memory += count_before;
        }
        std::uint64_t in_memory = 0;
        {
            std::lock_guard lock(stats_mutex_);
            in_memory = stats_.dropped_in_memory;
        }
        // The controller records the gap: an events_evicted event goes into the spool itself.
        const std::uint64_t evicted_now = (appended ? appended->evicted : 0) + (in_memory - dropped_reported);
        dropped_reported = in_memory;
        if (evicted_now > 0) {
            spdlog::warn("agent: {}: event spool full: {} events evicted", log_subject(), evicted_now);
        }
        // The note itself may push older events (an earlier note among them) out of a full
        // spool: those are noted too, so that the newest note's total_evicted is the whole
        // loss. Bounded: a note is a few hundred bytes, a segment kilobytes.
        std::uint64_t unreported = evicted_now;
        for (int note = 0; unreported > 0 && note < 4; ++note) {
            nlohmann::json gap = {{"type", "events_evicted"},
                                  {"time_unix_ms", unix_ms_now()},
                                  {"count", unreported},
                                  {"total_evicted", spool_->stats().evicted + in_memory}};
            if (note == 0 && appended && appended->evicted > 0) {
                gap["first_seq"] = appended->evicted_first_seq;
                gap["last_seq"] = appended->evicted_last_seq;
            }
            auto noted = spool_->append({gap});
            if (!noted) {
                spdlog::error("agent: {}: event spool: {}", log_subject(), noted.error());
                break;
            }
            unreported = noted->evicted;
        }
        {
            std::lock_guard lock(mutex_);
            batches_appended_ = batches_handed_ - queue_.size();
        }
        sync_wake_.notify_one();
        kick();
    }
}

void SpoolingEventSink::syncer_loop() {
    for (;;) {
        std::uint64_t target = 0;
        {
            std::unique_lock lock(mutex_);
            sync_wake_.wait(lock, [&] { return sync_stopping_ || batches_appended_ > batches_written_; });
            if (batches_appended_ <= batches_written_) {
                return;  // stopping, and everything appended is on disk
            }
            target = batches_appended_;
        }
        if (auto synced = spool_->sync(); !synced) {
            // The events stay spooled (in the page cache) and are uploaded; only a crash of
            // the host before the next successful sync could lose them.
            spdlog::error("agent: {}: event spool: {}", log_subject(), synced.error());
        }
        {
            std::lock_guard lock(mutex_);
            batches_written_ = target;
        }
        written_.notify_all();
    }
}

namespace {
// What the controller answers for a body it will never accept, however often it is sent:
// malformed (400), too large (413), not JSON (415), or not a valid event (422). Everything
// else (no answer, 5xx, 429, an unknown or not yet enrolled enforcer) may pass later.
bool refused_for_good(int status) { return status == 400 || status == 413 || status == 415 || status == 422; }
}  // namespace

void SpoolingEventSink::uploader_loop() {
    Backoff backoff(config_.retry_initial, config_.retry_max);
    auto retry_at = std::chrono::steady_clock::now();
    // Set while there was no channel to upload on: a kick (the channel's hello, new events)
    // ends the wait for it at once, where it does not cut a backoff after a failure short.
    bool waiting_for_channel = false;
    // Events per batch while a refused batch is being halved down to its bad event.
    std::size_t batch_limit = std::numeric_limits<std::size_t>::max();
    struct Exited {
        SpoolingEventSink& sink;
        ~Exited() {
            {
                std::lock_guard lock(sink.upload_mutex_);
                sink.uploader_exited_ = true;
            }
            sink.upload_wake_.notify_all();
        }
    } exited{*this};
    for (;;) {
        {
            std::lock_guard lock(upload_mutex_);
            if (upload_stopping_) {
                return;  // what is still spooled goes at the next start
            }
        }
        const auto now = std::chrono::steady_clock::now();
        const bool due = now >= retry_at;
        if (!due || !spool_->has_unacknowledged()) {
            // Wait for new events (the writer kicks), the retry time, or a second at most.
            std::unique_lock lock(upload_mutex_);
            const auto until = due ? now + std::chrono::seconds(1)
                                   : std::min(retry_at, now + std::chrono::seconds(1));
            upload_wake_.wait_until(lock, until, [&] { return upload_stopping_ || upload_kick_; });
            if (upload_stopping_) {
                return;
            }
            if (upload_kick_ && waiting_for_channel) {
                retry_at = std::chrono::steady_clock::now();
            }
            upload_kick_ = false;
            continue;
        }
        // The channel thread enrolls, connects and publishes the socket; until then the
        // events wait in the spool. Not a failure: nothing was sent.
        auto socket = client_->channel();
        if (!socket) {
            waiting_for_channel = true;
            retry_at = now + config_.channel_wait;
            continue;
        }
        waiting_for_channel = false;
        auto batch = spool_->next_batch(std::min(config_.max_batch_events, batch_limit), config_.max_batch_bytes);
        if (!batch) {
            continue;
        }
        {
            std::lock_guard lock(upload_mutex_);
            if (upload_stopping_) {
                return;  // no new upload starts at shutdown
            }
            upload_socket_ = socket;
        }
        // When it left (docs/control-channel.md): a stage of the controller's containment timeline.
        std::string body = "{\"sent_ns\":" + std::to_string(unix_ns_now()) + "," + batch->body.substr(1);
        auto response = socket->request("events", body, config_.request_timeout);
        {
            std::lock_guard lock(upload_mutex_);
            upload_socket_.reset();
        }
        bool ok = false;
        bool refused = false;  // for good: this body will never be accepted
        std::string problem;
        if (!response) {
            problem = response.error();
        } else if (response->status != 200) {
            problem = "HTTP " + std::to_string(response->status) + " " + response->body.substr(0, 200);
            refused = refused_for_good(response->status);
        } else {
            auto answer = nlohmann::json::parse(response->body, nullptr, false);
            if (!answer.is_object() || !answer.contains("through_seq") || !answer["through_seq"].is_number_unsigned()) {
                problem = "answer without through_seq";
            } else {
                // Only what this batch carried and the controller committed leaves the spool.
                const auto through = std::min(answer["through_seq"].get<std::uint64_t>(), batch->last_seq);
                if (through < batch->first_seq) {
                    problem = "controller committed through " + std::to_string(through) + ", batch starts at " +
                              std::to_string(batch->first_seq);
                } else if (auto acked = spool_->acknowledge(through); !acked) {
                    problem = acked.error();
                } else {
                    ok = true;
                    std::lock_guard lock(stats_mutex_);
                    stats_.uploaded += through - batch->first_seq + 1;
                    stats_.duplicates += answer.value("duplicates", std::uint64_t{0});
                    stats_.last_upload_ms = unix_ms_now();
                }
            }
        }
        {
            std::lock_guard lock(stats_mutex_);
            ++stats_.upload_requests;
            if (!ok) {
                ++stats_.upload_failures;
            }
        }
        if (ok) {
            backoff.reset();
            batch_limit = std::numeric_limits<std::size_t>::max();
            retry_at = std::chrono::steady_clock::now();
            kick();  // more may be waiting
        } else if (refused && batch->count > 1) {
            // Something in the batch is poison: halve until it is alone, at once (no outage
            // to wait for); the good events before it go through meanwhile.
            batch_limit = batch->count / 2;
            retry_at = std::chrono::steady_clock::now();
            spdlog::warn("agent: {}: the controller refused a batch of {} events for good ({}); retrying in halves "
                         "to set the bad event aside", log_subject(), batch->count, problem);
            kick();
        } else if (refused) {
            if (auto aside = spool_->set_aside(batch->first_seq, problem, unix_ms_now()); !aside) {
                const auto wait = backoff.next();
                retry_at = std::chrono::steady_clock::now() + wait;
                spdlog::error("agent: {}: event {} refused for good and cannot be set aside: {}; retry in {} ms",
                              log_subject(), batch->first_seq, aside.error(), wait.count());
            } else {
                spdlog::error("agent: {}: event {} refused by the controller for good ({}); set aside in the "
                              "spool's set-aside.ndjson, the rest goes on", log_subject(), batch->first_seq, problem);
                batch_limit = std::numeric_limits<std::size_t>::max();
                retry_at = std::chrono::steady_clock::now();
                kick();
            }
        } else {
            const auto wait = backoff.next();
            retry_at = std::chrono::steady_clock::now() + wait;
            spdlog::warn("agent: {}: event upload failed: {}; {} events spooled, retry in {} ms", log_subject(),
                         problem, spool_->stats().events, wait.count());
        }
    }
}

}  // namespace bulkhead::enforcer::agent
