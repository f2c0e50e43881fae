// SpoolingEventSink: the enforcer's events go to the disk spool (EventSpool) and from there
// to the controller, at least once, oldest first, as "events" requests on the control
// channel's socket (ControllerClient::channel(); the body is what POST
// /api/v1/enforcers/{id}/events takes). The daemon's thread only moves events into a queue:
// a writer thread appends them to the spool (one fdatasync per flush) and an uploader thread
// drains the spool with retries whenever the channel is up, so neither a slow disk nor an
// unreachable controller ever blocks the poll loop.
#pragma once

#include "enforcer/agent/backoff.hpp"
#include "enforcer/agent/channel_socket.hpp"
#include "enforcer/agent/controller_client.hpp"
#include "enforcer/agent/event_spool.hpp"
#include "enforcer/interfaces/event_sink.hpp"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <thread>
#include <vector>

namespace bulkhead::enforcer::agent {

struct SpoolingSinkConfig {
    SpoolConfig spool;
    std::size_t max_batch_events = 5000;             // per request (protocol limit)
    std::size_t max_batch_bytes = 8 * 1024 * 1024 - 4096;  // per request body (8 MiB limit)
    std::chrono::milliseconds retry_initial{200};
    std::chrono::milliseconds retry_max{10000};
    std::chrono::milliseconds request_timeout{30000};  // an upload's reply on the channel
    // With no channel up, how long the uploader waits before it looks again (a kick, e.g.
    // the channel's hello, ends the wait sooner).
    std::chrono::milliseconds channel_wait{1000};
    // At shutdown an upload in flight may finish for this long before it is cut off: its
    // answer takes its events out of the spool, where a cut-off one would be sent again
    // at the next start although the controller may have stored it.
    std::chrono::milliseconds shutdown_grace{2000};
    std::size_t max_queued_events = 200000;  // in memory, waiting for the writer
};

struct SinkStats {
    SpoolStats spool;
    std::uint64_t uploaded = 0;          // events the controller confirmed
    std::uint64_t upload_requests = 0;
    std::uint64_t upload_failures = 0;
    std::uint64_t duplicates = 0;        // as reported by the controller
    std::uint64_t dropped_in_memory = 0; // writer too far behind (counted in spool.evicted too)
    std::int64_t last_upload_ms = 0;
};

class SpoolingEventSink final : public EventSink {
public:
    // `client` may be null: spool only (nothing is uploaded).
    static std::expected<std::unique_ptr<SpoolingEventSink>, std::string> open(
        SpoolingSinkConfig config, std::shared_ptr<ControllerClient> client);
    ~SpoolingEventSink() override;  // writes what is queued, then stops both threads

    void emit(const nlohmann::json& event) override;
    void flush() override;

    SinkStats stats() const;
    // Blocks until every event flushed so far is on disk (tests, shutdown).
    void wait_written();
    // Try an upload now (e.g. the control channel just connected). Const: the channel
    // holds the sink as a read-only view (stats for its status messages) and kicks it.
    void kick() const;

private:
    SpoolingEventSink(SpoolingSinkConfig config, std::unique_ptr<EventSpool> spool,
                      std::shared_ptr<ControllerClient> client);
    void writer_loop();
    void syncer_loop();
    void uploader_loop();
    // "enforcer hv1", or the spool directory when there is no controller: what log lines
    // are about.
    std::string log_subject() const;

    SpoolingSinkConfig config_;
    std::unique_ptr<EventSpool> spool_;
    std::shared_ptr<ControllerClient> client_;

    std::vector<nlohmann::json> pending_;  // daemon thread only

    mutable std::mutex mutex_;
    std::condition_variable writer_wake_;
    std::condition_variable written_;
    std::deque<std::vector<nlohmann::json>> queue_;
    std::size_t queued_events_ = 0;
    std::uint64_t batches_handed_ = 0;
    std::uint64_t batches_appended_ = 0;  // in the spool's files (readable for upload)
    std::uint64_t batches_written_ = 0;   // and on disk (fdatasync)
    bool stopping_ = false;
    // The syncer makes appended batches durable off the writer's path: an fdatasync (ms on
    // a busy disk) never holds up the next append, and so never the next upload.
    std::condition_variable sync_wake_;
    bool sync_stopping_ = false;

    mutable std::mutex upload_mutex_;
    mutable std::condition_variable upload_wake_;
    mutable bool upload_kick_ = false;
    bool upload_stopping_ = false;
    bool uploader_exited_ = false;
    // The channel socket an upload is waiting on: at shutdown, closed under an upload that
    // outlives the grace period.
    std::shared_ptr<ChannelSocket> upload_socket_;

    mutable std::mutex stats_mutex_;
    SinkStats stats_;

    std::thread writer_;
    std::thread syncer_;
    std::thread uploader_;
};

}  // namespace bulkhead::enforcer::agent
