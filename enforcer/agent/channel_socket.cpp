#include "enforcer/agent/channel_socket.hpp"

// Boost 1.74's awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <openssl/ssl.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>

namespace bulkhead::enforcer::agent {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

using PlainSocket = websocket::stream<beast::tcp_stream>;
using SecureSocket = websocket::stream<beast::ssl_stream<beast::tcp_stream>>;

// How long a polite close (a close frame, the controller's answer) may take before the
// connection is simply cut: close() must end everything promptly.
constexpr std::chrono::seconds close_handshake_limit{1};

// The controller puts "type" first in a reply so that this prefix tells a reply from a
// megabyte ruleset without parsing the ruleset.
constexpr std::string_view reply_prefix = R"({"type":"reply")";

std::string host_header(const ControllerEndpoint& endpoint) {
    const bool v6 = endpoint.host.find(':') != std::string::npos;
    return (v6 ? "[" + endpoint.host + "]" : endpoint.host) + ":" + std::to_string(endpoint.port);
}

}  // namespace

struct ChannelSocket::Impl {
    enum class Phase { idle, connecting, open, closed };

    ControllerEndpoint endpoint;
    std::string ca_file;

    // -- shared with the callers' threads, under `mutex` --
    std::mutex mutex;
    std::condition_variable changed;
    Phase phase = Phase::idle;
    std::string closed_reason;
    std::deque<std::string> inbox;                                  // messages for read()
    std::map<std::uint64_t, std::optional<HttpResponse>> waiting;   // request id -> its reply
    std::uint64_t next_id = 1;
    bool draining = false;  // drain(): no new request
    std::shared_ptr<const std::function<bool(const std::string&)>> handler;  // set_message_handler

    // -- the I/O thread's only --
    asio::io_context io;
    asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
    std::optional<asio::ssl::context> tls;
    std::string tls_error;  // the CA file could not be loaded
    tcp::resolver resolver{io};
    asio::steady_timer close_timer{io};
    std::unique_ptr<PlainSocket> plain;
    std::unique_ptr<SecureSocket> secure;
    bool upgraded = false;       // the WebSocket handshake succeeded
    bool close_started = false;
    std::deque<std::string> outbox;
    bool writing = false;
    std::thread thread;

    Impl(ControllerEndpoint endpoint_in, std::string ca_file_in)
        : endpoint(std::move(endpoint_in)), ca_file(std::move(ca_file_in)) {
        if (endpoint.scheme == "https") {
            try {
                tls.emplace(asio::ssl::context::tls_client);
                tls->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                                 asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                                 asio::ssl::context::no_tlsv1_1);
                // Trust only the CA given at enrollment, never the system store.
                tls->set_verify_mode(asio::ssl::verify_peer);
                tls->load_verify_file(ca_file);
            } catch (const std::exception& e) {
                tls_error = "CA file " + ca_file + ": " + e.what();
                tls.reset();
            }
        }
        thread = std::thread([this] { io.run(); });
    }

    bool closing() {
        std::lock_guard lock(mutex);
        return phase == Phase::closed;
    }

    // Marks the socket closed for the callers (the first reason wins) and wakes them all.
    void mark_closed(const std::string& reason) {
        {
            std::lock_guard lock(mutex);
            if (phase == Phase::closed) {
                return;
            }
            phase = Phase::closed;
            closed_reason = reason;
        }
        changed.notify_all();
    }

    template <typename F>
    void with_socket(F&& f) {
        if (plain) {
            f(*plain);
        } else if (secure) {
            f(*secure);
        }
    }

    // I/O thread: ends the connection; a close frame first when the upgrade was done, cut
    // after close_handshake_limit whatever happens.
    void shut_down() {
        if (close_started) {
            return;
        }
        close_started = true;
        resolver.cancel();
        outbox.clear();
        if (!upgraded) {
            cut();
            return;
        }
        with_socket([this](auto& socket) {
            socket.async_close(websocket::close_code::normal, [this](beast::error_code) {
                close_timer.cancel();
                cut();
            });
        });
        close_timer.expires_after(close_handshake_limit);
        close_timer.async_wait([this](beast::error_code ec) {
            if (!ec) {
                cut();
            }
        });
    }

    void cut() {
        with_socket([](auto& socket) { beast::get_lowest_layer(socket).close(); });
    }

    // I/O thread: one async_write at a time (Beast's rule); the outbox holds the rest.
    void pump() {
        if (writing || outbox.empty() || close_started) {
            return;
        }
        writing = true;
        with_socket([this](auto& socket) {
            socket.text(true);
            socket.async_write(asio::buffer(outbox.front()), [this](beast::error_code ec, std::size_t) {
                writing = false;
                if (!outbox.empty()) {
                    outbox.pop_front();
                }
                if (ec) {
                    mark_closed("sending to the controller: " + ec.message());
                    shut_down();
                    return;
                }
                pump();
            });
        });
    }

    // I/O thread: a message from the controller.
    void deliver(std::string message) {
        if (!message.starts_with(reply_prefix)) {
            std::shared_ptr<const std::function<bool(const std::string&)>> consumer;
            {
                std::lock_guard lock(mutex);
                if (phase == Phase::closed) {
                    return;  // nobody reads it any more
                }
                consumer = handler;
            }
            if (consumer && (*consumer)(message)) {
                return;
            }
            {
                std::lock_guard lock(mutex);
                inbox.push_back(std::move(message));
            }
            changed.notify_all();
            return;
        }
        const auto reply = nlohmann::json::parse(message, nullptr, false);
        if (!reply.is_object() || !reply.contains("id") || !reply["id"].is_number_unsigned() ||
            !reply.contains("status") || !reply["status"].is_number_integer()) {
            spdlog::warn("agent: channel to {}: a malformed reply ignored: {}", endpoint.url(), message.substr(0, 120));
            return;
        }
        HttpResponse response;
        response.status = reply["status"].get<int>();
        if (reply.contains("body") && !reply["body"].is_null()) {
            response.body = reply["body"].dump();
        }
        const auto id = reply["id"].get<std::uint64_t>();
        {
            std::lock_guard lock(mutex);
            auto slot = waiting.find(id);
            if (slot == waiting.end()) {
                // Its request timed out and gave up; nothing waits for it any more.
                spdlog::debug("agent: channel to {}: late reply to request {} dropped", endpoint.url(), id);
                return;
            }
            slot->second = std::move(response);
        }
        changed.notify_all();
    }

    template <typename Socket>
    asio::awaitable<void> session(Socket& socket, std::string target, std::string bearer,
                                  std::chrono::milliseconds timeout) {
        constexpr bool is_secure = std::is_same_v<Socket, SecureSocket>;
        beast::error_code ec;
        auto& layer = beast::get_lowest_layer(socket);
        const auto resolved = co_await resolver.async_resolve(endpoint.host, std::to_string(endpoint.port),
                                                              asio::redirect_error(asio::use_awaitable, ec));
        if (closing()) {
            co_return;
        }
        if (ec) {
            mark_closed("resolving " + endpoint.host + ": " + ec.message());
            co_return;
        }
        // The TCP stream's timer bounds the TCP and TLS handshakes; the WebSocket's own
        // timeout the upgrade.
        layer.expires_after(timeout);
        co_await layer.async_connect(resolved, asio::redirect_error(asio::use_awaitable, ec));
        if (closing()) {
            co_return;
        }
        if (ec) {
            mark_closed("connecting to " + endpoint.url() + ": " + ec.message());
            co_return;
        }
        // Acks and uploads are small writes: no Nagle wait for the controller's delayed ACK.
        layer.socket().set_option(tcp::no_delay(true), ec);
        if constexpr (is_secure) {
            auto& secure_layer = socket.next_layer();
            boost::system::error_code not_an_address;
            asio::ip::make_address(endpoint.host, not_an_address);
            if (not_an_address) {
                // SNI, for a controller behind a name; SSL_set_tlsext_host_name is a macro
                // with a C cast, this is what it expands to.
                if (SSL_ctrl(secure_layer.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                             const_cast<char*>(endpoint.host.c_str())) != 1) {
                    mark_closed("cannot set the TLS server name " + endpoint.host);
                    co_return;
                }
            }
            secure_layer.set_verify_callback(asio::ssl::host_name_verification(endpoint.host));
            co_await secure_layer.async_handshake(asio::ssl::stream_base::client,
                                                  asio::redirect_error(asio::use_awaitable, ec));
            if (closing()) {
                co_return;
            }
            if (ec) {
                mark_closed("TLS handshake with " + endpoint.url() + ": " + ec.message());
                co_return;
            }
        }
        // Beast wants the TCP stream's timer off once the WebSocket's timeouts are on. No idle
        // timeout: the agent's watchdog decides when a silent channel is dead.
        layer.expires_never();
        socket.set_option(websocket::stream_base::timeout{timeout, websocket::stream_base::none(), false});
        socket.set_option(websocket::stream_base::decorator([bearer](websocket::request_type& request) {
            request.set(beast::http::field::authorization, "Bearer " + bearer);
        }));
        socket.read_message_max(max_message_bytes);
        websocket::response_type response;
        co_await socket.async_handshake(response, host_header(endpoint), target,
                                        asio::redirect_error(asio::use_awaitable, ec));
        if (closing()) {
            co_return;
        }
        if (ec) {
            const auto status = response.result_int();
            if (status != 0 && status != 101) {
                // 401/403/404 with the controller's JSON error: what an operator needs to see.
                mark_closed("HTTP " + std::to_string(status) + " " + response.body().substr(0, 200));
            } else {
                mark_closed("WebSocket upgrade at " + endpoint.url() + ": " + ec.message());
            }
            co_return;
        }
        upgraded = true;
        {
            std::lock_guard lock(mutex);
            phase = Phase::open;
        }
        changed.notify_all();
        pump();
        beast::flat_buffer buffer;
        for (;;) {
            co_await socket.async_read(buffer, asio::redirect_error(asio::use_awaitable, ec));
            if (ec) {
                if (ec == websocket::error::closed) {
                    const auto& why = socket.reason();
                    mark_closed("the controller closed the channel (code " + std::to_string(why.code) +
                                (why.reason.empty() ? "" : ", " + std::string(why.reason.data(), why.reason.size())) + ")");
                } else {
                    mark_closed("reading from the controller: " + ec.message());
                }
                shut_down();
                co_return;
            }
            deliver(beast::buffers_to_string(buffer.data()));
            buffer.consume(buffer.size());
        }
    }

    void start(std::string target, std::string bearer, std::chrono::milliseconds timeout) {
        auto run = [this, target = std::move(target), bearer = std::move(bearer),
                    timeout]() -> asio::awaitable<void> {
            try {
                if (tls) {
                    secure = std::make_unique<SecureSocket>(io, *tls);
                    co_await session(*secure, target, bearer, timeout);
                } else {
                    plain = std::make_unique<PlainSocket>(io);
                    co_await session(*plain, target, bearer, timeout);
                }
            } catch (const std::exception& e) {
                mark_closed(std::string("control channel: ") + e.what());
                shut_down();
            }
        };
        asio::co_spawn(io, std::move(run), asio::detached);
    }
};

ChannelSocket::ChannelSocket(const ControllerEndpoint& endpoint, const std::string& ca_file)
    : impl_(std::make_shared<Impl>(endpoint, ca_file)) {}

ChannelSocket::~ChannelSocket() {
    close();
    // The close handshake and every pending operation end within close_handshake_limit;
    // then io.run() has nothing left and returns.
    impl_->work.reset();
    impl_->thread.join();
}

std::expected<void, std::string> ChannelSocket::connect(const std::string& target, const std::string& bearer,
                                                        std::chrono::milliseconds timeout) {
    auto& impl = *impl_;
    if (impl.endpoint.scheme == "https" && !impl.tls) {
        return std::unexpected(impl.tls_error);
    }
    {
        std::lock_guard lock(impl.mutex);
        if (impl.phase != Impl::Phase::idle) {
            return std::unexpected(impl.phase == Impl::Phase::closed ? impl.closed_reason
                                                                     : std::string("connect() called twice"));
        }
        impl.phase = Impl::Phase::connecting;
    }
    impl.start(target, bearer, timeout);
    std::unique_lock lock(impl.mutex);
    // The I/O thread's own timeouts bound each step; this bounds the sum of them.
    const bool done = impl.changed.wait_for(lock, timeout + std::chrono::seconds(1),
                                            [&] { return impl.phase != Impl::Phase::connecting; });
    if (!done) {
        lock.unlock();
        close("connecting to " + impl.endpoint.url() + ": timed out after " + std::to_string(timeout.count()) + " ms");
        lock.lock();
    }
    if (impl.phase == Impl::Phase::open) {
        return {};
    }
    return std::unexpected(impl.closed_reason);
}

void ChannelSocket::set_message_handler(std::function<bool(const std::string&)> handler) {
    std::lock_guard lock(impl_->mutex);
    impl_->handler = handler ? std::make_shared<const std::function<bool(const std::string&)>>(std::move(handler))
                             : nullptr;
}

std::expected<std::string, std::string> ChannelSocket::read() {
    auto& impl = *impl_;
    std::unique_lock lock(impl.mutex);
    impl.changed.wait(lock, [&] { return !impl.inbox.empty() || impl.phase == Impl::Phase::closed; });
    if (!impl.inbox.empty()) {
        auto message = std::move(impl.inbox.front());
        impl.inbox.pop_front();
        return message;
    }
    return std::unexpected(impl.closed_reason);
}

std::expected<HttpResponse, std::string> ChannelSocket::request(std::string_view kind, const std::string& body,
                                                                std::chrono::milliseconds timeout) {
    auto& impl = *impl_;
    std::uint64_t id = 0;
    {
        std::lock_guard lock(impl.mutex);
        if (impl.phase != Impl::Phase::open) {
            return std::unexpected(impl.phase == Impl::Phase::closed ? impl.closed_reason
                                                                     : std::string("the channel is not open"));
        }
        if (impl.draining) {
            return std::unexpected(std::string("the channel is closing"));
        }
        id = impl.next_id++;
        impl.waiting.emplace(id, std::nullopt);
    }
    const nlohmann::json head = {{"request", kind}, {"id", id}};
    std::string message = head.dump();
    message.reserve(message.size() + 1 + body.size());
    message += '\n';
    message += body;
    asio::post(impl.io, [&impl, message = std::move(message)]() mutable {
        impl.outbox.push_back(std::move(message));
        impl.pump();
    });
    std::unique_lock lock(impl.mutex);
    const bool answered = impl.changed.wait_for(lock, timeout, [&] {
        return impl.waiting.at(id).has_value() || impl.phase == Impl::Phase::closed;
    });
    auto reply = std::move(impl.waiting.at(id));
    impl.waiting.erase(id);
    lock.unlock();
    impl.changed.notify_all();  // drain() may be waiting for this one
    if (reply) {
        return std::move(*reply);
    }
    if (!answered) {
        return std::unexpected(std::string(kind) + " request " + std::to_string(id) + ": no reply within " +
                               std::to_string(timeout.count()) + " ms");
    }
    std::lock_guard relock(impl.mutex);
    return std::unexpected(std::string(kind) + " request " + std::to_string(id) + ": " + impl.closed_reason);
}

bool ChannelSocket::drain(std::chrono::milliseconds timeout) {
    auto& impl = *impl_;
    std::unique_lock lock(impl.mutex);
    impl.draining = true;
    return impl.changed.wait_for(lock, timeout,
                                 [&] { return impl.waiting.empty() || impl.phase == Impl::Phase::closed; });
}

void ChannelSocket::close(const std::string& reason) {
    impl_->mark_closed(reason);
    asio::post(impl_->io, [impl = impl_.get()] { impl->shut_down(); });
}

bool ChannelSocket::is_open() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->phase == Impl::Phase::open;
}

}  // namespace bulkhead::enforcer::agent
