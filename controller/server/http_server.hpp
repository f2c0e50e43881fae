// HttpServer: the controller's event-driven HTTP/1.1 listener (Boost.Asio and Beast, TLS
// through OpenSSL), in front of HttpApi's route table.
//
// Why not a thread per connection: every enforcer holds a channel stream open for days and
// a dashboard tab holds an event stream; with one thread per connection a few dozen of them
// (or a few dozen slow clients) used up the pool and the API stopped answering. Here
// connections and streams cost a coroutine each on a couple of I/O threads; only the route
// handlers run on a bounded worker pool, and a long-lived response is a LiveBody the server
// polls when it is woken or due, never a thread waiting.
//
// Abuse limits (all configurable, all counted in figures()): the TLS handshake and each
// request head must complete within header_timeout, a body within body_timeout, an idle
// keep-alive connection closes after idle_timeout; connections are capped in total and per
// client address; heads and bodies are size-capped; requests beyond the worker queue are
// answered 503 at once. Authentication happens in the route handler before a LiveBody
// exists, so an unauthenticated client never holds a stream.
#pragma once

#include "controller/server/http_api.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <string>

namespace bulkhead::controller {

struct HttpServerLimits {
    std::chrono::milliseconds header_timeout{10'000};
    std::chrono::milliseconds body_timeout{30'000};
    std::chrono::milliseconds idle_timeout{60'000};
    std::chrono::milliseconds write_timeout{30'000};
    std::size_t max_header_bytes = 16 * 1024;
    std::size_t max_body_bytes = 16 * 1024 * 1024;
    std::size_t max_connections = 20'000;
    std::size_t max_connections_per_client = 256;
    std::size_t worker_threads = 8;
    std::size_t max_queued_requests = 2048;  // waiting for or on a worker
    std::size_t io_threads = 2;
};

struct HttpServerFigures {
    std::uint64_t connections_open = 0;
    std::uint64_t connections_accepted = 0;
    std::uint64_t connections_refused = 0;  // over the total or per-client limit
    std::uint64_t header_timeouts = 0;      // handshake or request head not complete in time
    std::uint64_t body_timeouts = 0;
    std::uint64_t oversized = 0;            // head or body over its limit
    std::uint64_t requests = 0;
    std::uint64_t overloaded = 0;           // answered 503: worker queue full
    std::uint64_t streams_open = 0;
    std::uint64_t requests_queued = 0;
    std::uint64_t sockets_open = 0;         // control channels over WebSocket (within streams_open)
    std::uint64_t socket_messages = 0;      // requests received on them (acks, heartbeats, uploads)
};

struct TlsFiles {
    std::string certificate;  // PEM chain
    std::string private_key;  // PEM
};

class HttpServer {
  public:
    // `name` labels logs and figures ("tls", "plain"). Without `tls` the listener is plain.
    HttpServer(std::string name, const HttpApi& api, HttpServerLimits limits, std::optional<TlsFiles> tls);
    ~HttpServer();
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;

    std::expected<void, std::string> listen(const std::string& host, int port);
    // Serves on its own threads until stop().
    void start();
    // Stops accepting, closes every connection and joins the threads. Idempotent.
    void stop();

    HttpServerFigures figures() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace bulkhead::controller
