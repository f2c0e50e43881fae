// ChannelSocket: the enforcer's one connection to the controller (docs/control-channel.md,
// "One connection per enforcer"): the control channel opened as a WebSocket over TLS (plain
// http on loopback only, as ControllerEndpoint allows). Messages come down (hello, ruleset,
// diff, heartbeat); requests go up on the same socket (a head line {"request":K,"id":N}, a
// newline, the body the HTTP endpoint K takes) and their replies come down among the
// messages as {"type":"reply","id":N,"status":S,"body":B}.
//
// Threads: the socket runs its own io_context on one I/O thread; every Boost.Beast call is
// made there. The API below is blocking and may be called from any thread: the channel
// thread reads, the status thread and the event uploader send requests at the same time
// (their writes go through an outbox, one at a time, as Beast requires), and close() from
// any thread (watchdog, shutdown) ends them all promptly. Beast and asio stay in the .cpp.
#pragma once

#include "enforcer/agent/controller_client.hpp"

#include <chrono>
#include <cstddef>
#include <expected>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace bulkhead::enforcer::agent {

class ChannelSocket {
public:
    // A full ruleset of a big fleet is megabytes; this bounds what one message may hold.
    static constexpr std::size_t max_message_bytes = 64 * 1024 * 1024;

    // `ca_file`: the only CA trusted for https (never the system store).
    ChannelSocket(const ControllerEndpoint& endpoint, const std::string& ca_file);
    ~ChannelSocket();  // closes, then joins the I/O thread
    ChannelSocket(const ChannelSocket&) = delete;
    ChannelSocket& operator=(const ChannelSocket&) = delete;

    // TCP, TLS and the WebSocket upgrade of GET `target` (path and query) with
    // `Authorization: Bearer <bearer>`, all within `timeout`. A refused upgrade names the
    // HTTP status ("HTTP 401"). Called once per socket.
    std::expected<void, std::string> connect(const std::string& target, const std::string& bearer,
                                             std::chrono::milliseconds timeout);

    // The next message that is not a reply, in arrival order; blocks until one arrives, or
    // returns the reason the socket closed or failed.
    std::expected<std::string, std::string> read();

    // Runs on the socket's I/O thread for each message that is not a reply, in arrival
    // order, before read() would see it; a message it returns true for is consumed there.
    // A ruleset update is then handed to the daemon straight from the thread that read it,
    // without waking a reader thread first (one thread wake-up: ~0.1 ms of a quarantine's
    // time to be in force on a virtual machine). Set before connect(); not after close().
    void set_message_handler(std::function<bool(const std::string&)> handler);

    // Sends request `kind` with `body` and waits for its reply: the status and body the
    // HTTP endpoint `kind` would have answered. Errors when the socket is not open, closes
    // before the reply, or no reply came within `timeout`.
    std::expected<HttpResponse, std::string> request(std::string_view kind, const std::string& body,
                                                     std::chrono::milliseconds timeout);

    // Refuses every later request() and waits until none is waiting for its reply (true), or
    // `timeout` passed (false): at shutdown an ack or upload in flight may finish before the
    // socket closes, and one that had taken the socket but not yet been sent is not sent
    // (its reply would be lost with the socket, and the upload would come again as a
    // duplicate at the next start).
    bool drain(std::chrono::milliseconds timeout);

    // Ends connect(), read() and every request() in progress and to come, from any thread;
    // they fail with `reason` (the watchdog says why it gave up on the channel).
    void close(const std::string& reason = "closed by the enforcer");
    bool is_open() const;

private:
    struct Impl;
    std::shared_ptr<Impl> impl_;
};

}  // namespace bulkhead::enforcer::agent
