// FleetSimulator: N simulated enforcers in one process, speaking the control-channel
// protocol (docs/control-channel.md) to a real bulkhead-controller over TLS, without a
// kernel: enrollment, the channel stream (full rulesets and diffs, applied in memory with
// the enforcer's own ChannelSession and hash check), acks and heartbeats on the status
// endpoint, and event uploads. What an enforcer would apply to nftables is only held.
//
// Event-driven (Boost.Asio coroutines on a few threads), so that the simulator holds 2,000
// enforcers with their connections without 6,000 threads and is not what the benchmark
// measures. Each enforcer's coroutines share one strand; the measuring side reads the
// progress through the thread-safe accessors below.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace bulkhead::bench {

struct SimulatorOptions {
    std::string host = "127.0.0.1";
    std::string port;
    std::string ca_file;      // the controller's CA (PEM): the pinned trust anchor
    std::string server_name;  // TLS name to verify (SNI); default: host
    int io_threads = 2;
    std::chrono::milliseconds request_timeout{10'000};
    std::chrono::milliseconds default_heartbeat{5'000};
    std::chrono::milliseconds max_backoff{10'000};
    std::string version = "bench-fleet";
    // The ruleset hash format the simulated enforcers announce: 2 (this release) or 1 (an
    // enforcer of the previous release: no hash_format on the stream or in status).
    int hash_format = 2;
    // 3: one WebSocket per enforcer carrying the stream down and acks, heartbeats and uploads
    // up (this release); 2: the NDJSON stream plus status and upload POSTs on their own
    // keep-alive connections (the previous release).
    int protocol = 3;
};

struct SimulatedEnforcerIdentity {
    std::string id;
    std::string credential;  // filled by enroll_all()
};

// Counters over the whole fleet (monotonic).
struct FleetCounters {
    std::uint64_t channels_opened = 0;   // channel streams that answered 200
    std::uint64_t channel_failures = 0;  // connect/TLS/HTTP errors and dead streams
    std::uint64_t resyncs = 0;           // diff base or hash mismatch: reconnect for a full ruleset
    std::uint64_t rulesets = 0;          // full rulesets applied
    std::uint64_t diffs = 0;             // diffs applied
    std::uint64_t status_ok = 0;         // status posts answered 200 (acks and heartbeats)
    std::uint64_t status_failures = 0;
    std::uint64_t events_accepted = 0;   // uploaded events the controller committed
    std::uint64_t upload_failures = 0;
};

class FleetSimulator {
  public:
    FleetSimulator(SimulatorOptions options, std::vector<SimulatedEnforcerIdentity> enforcers);
    ~FleetSimulator();
    FleetSimulator(const FleetSimulator&) = delete;
    FleetSimulator& operator=(const FleetSimulator&) = delete;

    // Redeems one enrollment token per enforcer (tokens[i] for enforcers[i]) over TLS, at most
    // `concurrency` at once. Returns how many enrolled; the failures' reasons are logged.
    std::size_t enroll_all(const std::vector<std::string>& tokens, int concurrency, std::chrono::seconds deadline);

    // Starts the enforcers [0, count) not started yet (all by default): the channel plus,
    // with protocol 2, a status connection (acks, heartbeats).
    void start(std::size_t count = SIZE_MAX);
    // Waits until the first `count` enforcers have their channel open; false at `deadline`.
    bool wait_connected(std::size_t count, std::chrono::steady_clock::time_point deadline) const;
    // Closes every connection and joins the threads.
    void stop();

    std::size_t size() const;
    const std::string& id(std::size_t index) const;
    std::size_t channels_open() const;
    FleetCounters counters() const;
    // The hash the enforcer has acked (status answered 200) and when, on the steady clock.
    struct Ack {
        std::string hash;
        std::uint64_t generation = 0;
        std::chrono::steady_clock::time_point at;
        // When the message that brought the ruleset acked here had arrived whole on the
        // channel, and when it was applied and verified: they split a latency into the
        // controller's push, the enforcer's apply and the status round trip.
        std::chrono::steady_clock::time_point received_at;
        std::chrono::steady_clock::time_point applied_at;
    };
    std::optional<Ack> last_ack(std::size_t index) const;

    // Uploads `bodies` (prepared upload bodies, seq numbers ascending) for enforcer `index`
    // (protocol 3: up its channel socket, which must be open; protocol 2: on its upload
    // connection), one request at a time as the agent does. Blocks until done
    // or `deadline`; returns the events the controller accepted.
    std::uint64_t upload(std::size_t index, const std::vector<std::string>& bodies, std::chrono::steady_clock::time_point deadline);

    // Abuse, held until stop(): `streams` dashboard event streams (GET /api/v1/stream with
    // `token`, read and discarded) and `slow` unauthenticated connections that send a request
    // head one line every `line_interval` (never finishing it). Returns at once.
    void open_abuse(std::size_t streams, const std::string& token, std::size_t slow,
                    std::chrono::milliseconds line_interval);
    struct AbuseFigures {
        std::size_t streams_open = 0;   // answered 200 and still open
        std::size_t slow_open = 0;      // still connected
        std::uint64_t slow_cut = 0;     // closed by the server
        std::uint64_t streams_failed = 0;
    };
    AbuseFigures abuse() const;

    // One request on a fresh TLS connection (the benchmark's health probe): the HTTP status,
    // or nothing on a transport error or timeout.
    std::optional<int> probe(const std::string& target, std::chrono::milliseconds timeout);

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace bulkhead::bench
