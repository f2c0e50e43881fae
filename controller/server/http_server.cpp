#include "controller/server/http_server.hpp"

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <spdlog/spdlog.h>

#include <map>
#include <mutex>
#include <thread>
#include <variant>

namespace bulkhead::controller {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

namespace {

// "a%20b" -> "a b"; '+' is a space in a query string.
std::string url_decode(std::string_view text, bool plus_is_space) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '%' && i + 2 < text.size()) {
            auto hex = [](char h) -> int {
                if (h >= '0' && h <= '9') return h - '0';
                if (h >= 'a' && h <= 'f') return h - 'a' + 10;
                if (h >= 'A' && h <= 'F') return h - 'A' + 10;
                return -1;
            };
            const int high = hex(text[i + 1]);
            const int low = hex(text[i + 2]);
            if (high >= 0 && low >= 0) {
                out.push_back(static_cast<char>(high * 16 + low));
                i += 2;
                continue;
            }
        }
        out.push_back(plus_is_space && c == '+' ? ' ' : c);
    }
    return out;
}

}  // namespace

// A Beast request as the route table reads it.
httplib::Request to_route_request(const http::request<http::string_body>& message, const std::string& remote) {
    httplib::Request request;
    request.method = std::string(message.method_string());
    const std::string_view target(message.target().data(), message.target().size());
    const auto question = target.find('?');
    request.path = url_decode(target.substr(0, question), false);
    if (question != std::string_view::npos) {
        std::string_view query = target.substr(question + 1);
        while (!query.empty()) {
            const auto amp = query.find('&');
            const std::string_view pair = query.substr(0, amp);
            const auto eq = pair.find('=');
            if (!pair.empty()) {
                request.params.emplace(url_decode(pair.substr(0, eq), true),
                                       eq == std::string_view::npos ? std::string() : url_decode(pair.substr(eq + 1), true));
            }
            query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
        }
    }
    for (const auto& field : message) {
        request.headers.emplace(std::string(field.name_string()), std::string(field.value()));
    }
    request.body = message.body();
    request.remote_addr = remote;
    request.version = message.version() == 11 ? "HTTP/1.1" : "HTTP/1.0";
    return request;
}

struct HttpServer::Impl {
    std::string name;
    const HttpApi& api;
    HttpServerLimits limits;
    std::optional<asio::ssl::context> tls;

    std::unique_ptr<asio::io_context> io = std::make_unique<asio::io_context>();
    std::optional<tcp::acceptor> acceptor;
    std::unique_ptr<asio::thread_pool> workers;
    std::vector<std::thread> threads;
    std::atomic<bool> stopping{false};

    // Open connections by client address.
    std::mutex connections_mutex;
    std::map<std::string, std::size_t> per_client;

    std::atomic<std::uint64_t> connections_open{0}, connections_accepted{0}, connections_refused{0},
        header_timeouts{0}, body_timeouts{0}, oversized{0}, requests{0}, overloaded{0}, streams_open{0},
        requests_queued{0}, sockets_open{0}, socket_messages{0};

    Impl(std::string n, const HttpApi& a, HttpServerLimits l) : name(std::move(n)), api(a), limits(l) {}

    // ---- one connection ---------------------------------------------------------------
    // The plain and TLS streams share the session code through this small wrapper.
    struct Transport {
        std::variant<beast::tcp_stream, beast::ssl_stream<beast::tcp_stream>> stream;

        beast::tcp_stream& lowest() {
            if (auto* plain = std::get_if<beast::tcp_stream>(&stream)) {
                return *plain;
            }
            return beast::get_lowest_layer(std::get<beast::ssl_stream<beast::tcp_stream>>(stream));
        }
        template <typename Operation>
        auto visit(Operation&& operation) {
            return std::visit(std::forward<Operation>(operation), stream);
        }
    };

    class ConnectionSlot {
      public:
        ConnectionSlot(Impl& server, std::string client) : server_(server), client_(std::move(client)) {}
        ~ConnectionSlot() {
            std::lock_guard lock(server_.connections_mutex);
            if (auto it = server_.per_client.find(client_); it != server_.per_client.end() && --it->second == 0) {
                server_.per_client.erase(it);
            }
            --server_.connections_open;
        }

      private:
        Impl& server_;
        std::string client_;
    };

    // Admits a connection under the limits; the slot gives it back when the session ends.
    std::unique_ptr<ConnectionSlot> admit(const std::string& client) {
        std::lock_guard lock(connections_mutex);
        auto& count = per_client[client];
        if (connections_open >= limits.max_connections || count >= limits.max_connections_per_client) {
            if (count == 0) {
                per_client.erase(client);
            }
            ++connections_refused;
            return nullptr;
        }
        ++count;
        ++connections_open;
        ++connections_accepted;
        return std::make_unique<ConnectionSlot>(*this, client);
    }

    static http::response<http::string_body> to_message(const httplib::Response& response, unsigned version,
                                                        bool keep_alive, bool head) {
        // cpp-httplib leaves the status at -1 for "whatever the server's default is": 200.
        const int status = response.status < 0 ? 200 : response.status;
        http::response<http::string_body> message{static_cast<http::status>(status), version};
        for (const auto& [key, value] : response.headers) {
            message.insert(key, value);
        }
        message.body() = response.body;
        message.keep_alive(keep_alive);
        message.prepare_payload();
        if (head) {
            message.body().clear();  // Content-Length stays that of the GET
        }
        return message;
    }

    // Runs the route table on a worker thread and comes back to the connection.
    asio::awaitable<void> dispatch(const httplib::Request& request, httplib::Response& response,
                                   std::shared_ptr<LiveBody>& live) {
        co_await asio::co_spawn(
            *workers,
            [&]() -> asio::awaitable<void> {
                api.handle(request, response, live);
                co_return;
            },
            asio::use_awaitable);
    }

    asio::awaitable<std::optional<std::string>> poll_on_worker(LiveBody& body) {
        co_return co_await asio::co_spawn(
            *workers, [&]() -> asio::awaitable<std::optional<std::string>> { co_return body.poll(); },
            asio::use_awaitable);
    }

    template <typename Stream>
    asio::awaitable<void> write_error(Stream& stream, Transport& transport, int status, const std::string& code,
                                      const std::string& text, unsigned version) {
        httplib::Response response;
        HttpApi::transport_error(response, status, code, text);
        auto message = to_message(response, version, false, false);
        transport.lowest().expires_after(limits.write_timeout);
        beast::error_code ignored;
        co_await http::async_write(stream, message, asio::redirect_error(asio::use_awaitable, ignored));
    }

    // Serves a LiveBody as a chunked response until it ends or the peer goes away.
    template <typename Stream>
    asio::awaitable<void> stream_body(Stream& stream, Transport& transport, const httplib::Response& head,
                                      std::shared_ptr<LiveBody> body, unsigned version) {
        ++streams_open;
        struct Wake {
            asio::steady_timer* timer = nullptr;
            bool woken = false;
        };
        auto wake = std::make_shared<Wake>();
        const auto executor = co_await asio::this_coro::executor;
        asio::steady_timer timer(executor);
        body->set_wake([weak = std::weak_ptr<Wake>(wake), executor] {
            if (auto state = weak.lock()) {
                asio::post(executor, [state] {
                    state->woken = true;
                    if (state->timer != nullptr) {
                        state->timer->cancel();
                    }
                });
            }
        });
        try {
            http::response<http::empty_body> message{static_cast<http::status>(head.status < 0 ? 200 : head.status),
                                                      version};
            for (const auto& [key, value] : head.headers) {
                message.insert(key, value);
            }
            message.chunked(true);
            message.keep_alive(false);
            http::response_serializer<http::empty_body> serializer(message);
            transport.lowest().expires_after(limits.write_timeout);
            co_await http::async_write_header(stream, serializer, asio::use_awaitable);
            while (!stopping) {
                wake->woken = false;
                auto data = co_await poll_on_worker(*body);
                if (!data) {
                    transport.lowest().expires_after(limits.write_timeout);
                    co_await asio::async_write(stream, http::make_chunk_last(), asio::use_awaitable);
                    break;
                }
                if (!data->empty()) {
                    transport.lowest().expires_after(limits.write_timeout);
                    co_await asio::async_write(stream, http::make_chunk(asio::buffer(*data)), asio::use_awaitable);
                    continue;
                }
                if (wake->woken) {
                    continue;
                }
                timer.expires_at(body->next_due());
                wake->timer = &timer;
                beast::error_code ec;
                co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
                wake->timer = nullptr;
            }
        } catch (const std::exception& e) {
            spdlog::debug("{}: stream ended: {}", name, e.what());
        }
        wake->timer = nullptr;
        body->set_wake(nullptr);
        --streams_open;
    }

    // Serves a DuplexBody over WebSocket (the control channel, protocol 3): this coroutine
    // writes what poll() gives, one message each; a reader coroutine beside it hands every
    // message from the client to receive() on a worker. Both end when either side does.
    template <typename Stream>
    asio::awaitable<void> serve_socket(Stream& stream, Transport& transport, const http::request<http::string_body>& upgrade,
                                       std::shared_ptr<DuplexBody> body) {
        websocket::stream<Stream&> socket(stream);
        // The socket's own timeouts from here on (Beast wants the TCP stream's timer off):
        // the handshake as a request head; a ping after half the idle time without a frame
        // from the enforcer, closed after the whole of it.
        transport.lowest().expires_never();
        socket.set_option(websocket::stream_base::timeout{limits.header_timeout, limits.idle_timeout, true});
        socket.set_option(websocket::stream_base::decorator(
            [](websocket::response_type& response) { response.set(http::field::server, "bulkhead-controller"); }));
        socket.read_message_max(limits.max_body_bytes);
        beast::error_code ec;
        co_await socket.async_accept(upgrade, asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
            spdlog::debug("{}: WebSocket handshake: {}", name, ec.message());
            co_return;
        }
        ++streams_open;
        ++sockets_open;
        struct Shared {
            asio::steady_timer* timer = nullptr;
            bool woken = false;
            bool reader_done = false;
            void wake() {
                woken = true;
                if (timer != nullptr) {
                    timer->cancel();
                }
            }
        };
        auto shared = std::make_shared<Shared>();
        const auto executor = co_await asio::this_coro::executor;
        asio::steady_timer timer(executor);
        body->set_wake([weak = std::weak_ptr<Shared>(shared), executor] {
            if (auto state = weak.lock()) {
                asio::post(executor, [state] { state->wake(); });
            }
        });
        // The reader runs on this strand too; it only touches `socket` and `shared`, and this
        // coroutine does not return before the reader is done.
        asio::co_spawn(
            executor,
            [this, &socket, body, shared]() -> asio::awaitable<void> {
                beast::flat_buffer buffer;
                while (!stopping) {
                    beast::error_code read_error;
                    co_await socket.async_read(buffer, asio::redirect_error(asio::use_awaitable, read_error));
                    if (read_error) {
                        if (read_error == websocket::error::buffer_overflow) {
                            ++oversized;
                        }
                        break;
                    }
                    std::string message = beast::buffers_to_string(buffer.data());
                    buffer.consume(buffer.size());
                    ++socket_messages;
                    const bool ok = co_await asio::co_spawn(
                        *workers, [&]() -> asio::awaitable<bool> { co_return body->receive(message); }, asio::use_awaitable);
                    if (!ok) {
                        break;
                    }
                }
                shared->reader_done = true;
                shared->wake();
            },
            asio::detached);
        try {
            while (!stopping && !shared->reader_done) {
                shared->woken = false;
                auto data = body->take_reply();
                if (!data) {
                    data = co_await poll_on_worker(*body);
                }
                if (!data) {
                    co_await socket.async_close(websocket::close_code::going_away,
                                                asio::redirect_error(asio::use_awaitable, ec));
                    break;
                }
                if (!data->empty()) {
                    if (data->back() == '\n') {
                        data->pop_back();  // a stream line; a message needs no terminator
                    }
                    socket.text(true);
                    co_await socket.async_write(asio::buffer(*data), asio::use_awaitable);
                    continue;
                }
                if (shared->woken || shared->reader_done) {
                    continue;
                }
                timer.expires_at(body->next_due());
                shared->timer = &timer;
                co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
                shared->timer = nullptr;
            }
        } catch (const std::exception& e) {
            spdlog::debug("{}: channel socket ended: {}", name, e.what());
        }
        body->set_wake(nullptr);
        // A reader still waiting for a frame ends when the connection closes under it.
        if (!shared->reader_done) {
            transport.lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
            transport.lowest().socket().cancel(ec);
        }
        while (!shared->reader_done) {
            timer.expires_after(std::chrono::seconds(1));
            shared->timer = &timer;
            co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
            shared->timer = nullptr;
        }
        --sockets_open;
        --streams_open;
    }

    // Reads and answers requests on one connection until it closes.
    template <typename Stream>
    asio::awaitable<void> serve(Stream& stream, Transport& transport, const std::string& remote) {
        beast::flat_buffer buffer;
        bool first = true;
        while (!stopping) {
            // Waiting for the next request on a kept-alive connection: idle timeout. Once
            // its first byte is there, the whole head must arrive within header_timeout.
            if (!first && buffer.size() == 0) {
                transport.lowest().expires_after(limits.idle_timeout);
                beast::error_code ec;
                const auto n = co_await stream.async_read_some(buffer.prepare(4096),
                                                               asio::redirect_error(asio::use_awaitable, ec));
                if (ec) {
                    co_return;  // idle, closed or reset: nothing to answer
                }
                buffer.commit(n);
            }
            first = false;
            http::request_parser<http::string_body> parser;
            parser.header_limit(static_cast<std::uint32_t>(limits.max_header_bytes));
            parser.body_limit(limits.max_body_bytes);
            transport.lowest().expires_after(limits.header_timeout);
            beast::error_code ec;
            co_await http::async_read_header(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
            if (ec == beast::error::timeout) {
                ++header_timeouts;
                co_return;
            }
            if (ec == http::error::body_limit) {  // a Content-Length over the limit, seen with the head
                ++oversized;
                co_await write_error(stream, transport, 413, "too-large", "the request body is over 16 MiB", 11);
                co_return;
            }
            if (ec == http::error::header_limit) {
                ++oversized;
                co_await write_error(stream, transport, 431, "too-large", "the request head is too large", 11);
                co_return;
            }
            if (ec) {
                if (ec != http::error::end_of_stream && ec != asio::error::eof && ec != asio::error::connection_reset) {
                    co_await write_error(stream, transport, 400, "bad-request", "malformed request", 11);
                }
                co_return;
            }
            if (!parser.is_done()) {
                transport.lowest().expires_after(limits.body_timeout);
                co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
                if (ec == beast::error::timeout) {
                    ++body_timeouts;
                    co_return;
                }
                if (ec == http::error::body_limit) {
                    ++oversized;
                    co_await write_error(stream, transport, 413, "too-large", "the request body is over 16 MiB",
                                         parser.get().version());
                    co_return;
                }
                if (ec) {
                    co_return;
                }
            }
            ++requests;
            auto message = parser.release();
            const bool keep_alive = message.keep_alive();
            const bool head = message.method() == http::verb::head;
            if (requests_queued >= limits.max_queued_requests) {
                ++overloaded;
                co_await write_error(stream, transport, 503, "overloaded", "the controller is busy; retry shortly",
                                     message.version());
                co_return;
            }
            const auto request = to_route_request(message, remote);
            httplib::Response response;
            std::shared_ptr<LiveBody> live;
            ++requests_queued;
            transport.lowest().expires_never();
            co_await dispatch(request, response, live);
            --requests_queued;
            if (auto duplex = std::dynamic_pointer_cast<DuplexBody>(live); duplex && websocket::is_upgrade(message)) {
                co_await serve_socket(stream, transport, message, std::move(duplex));
                co_return;
            }
            if (live) {
                co_await stream_body(stream, transport, response, std::move(live), message.version());
                co_return;
            }
            auto answer = to_message(response, message.version(), keep_alive, head);
            transport.lowest().expires_after(limits.write_timeout);
            co_await http::async_write(stream, answer, asio::redirect_error(asio::use_awaitable, ec));
            if (ec || !keep_alive) {
                co_return;
            }
        }
    }

    asio::awaitable<void> session(tcp::socket socket) {
        beast::error_code ec;
        const auto peer = socket.remote_endpoint(ec);
        const std::string client = ec ? std::string("?") : peer.address().to_string();
        socket.set_option(tcp::no_delay(true), ec);
        Transport transport{beast::tcp_stream(std::move(socket))};
        auto slot = admit(client);
        if (!slot) {
            co_return;  // over a connection limit: closed without a word (the cheapest answer)
        }
        try {
            if (tls) {
                // Moved out first: emplace destroys the held alternative before it builds the new one.
                beast::tcp_stream plain = std::move(std::get<beast::tcp_stream>(transport.stream));
                transport.stream.emplace<beast::ssl_stream<beast::tcp_stream>>(std::move(plain), *tls);
                auto& secure = std::get<beast::ssl_stream<beast::tcp_stream>>(transport.stream);
                transport.lowest().expires_after(limits.header_timeout);
                co_await secure.async_handshake(asio::ssl::stream_base::server,
                                                asio::redirect_error(asio::use_awaitable, ec));
                if (ec) {
                    if (ec == beast::error::timeout) {
                        ++header_timeouts;
                    }
                    co_return;
                }
                co_await serve(secure, transport, client);
                transport.lowest().expires_after(std::chrono::seconds(1));
                co_await secure.async_shutdown(asio::redirect_error(asio::use_awaitable, ec));
            } else {
                co_await serve(std::get<beast::tcp_stream>(transport.stream), transport, client);
            }
        } catch (const std::exception& e) {
            spdlog::debug("{}: connection from {}: {}", name, client, e.what());
        }
        transport.lowest().socket().close(ec);
    }

    asio::awaitable<void> accept_loop() {
        while (!stopping) {
            beast::error_code ec;
            tcp::socket socket = co_await acceptor->async_accept(asio::redirect_error(asio::use_awaitable, ec));
            if (ec) {
                if (stopping || ec == asio::error::operation_aborted) {
                    co_return;
                }
                // EMFILE and the like: back off briefly instead of spinning.
                spdlog::warn("{}: accept: {}", name, ec.message());
                asio::steady_timer pause(co_await asio::this_coro::executor, std::chrono::milliseconds(100));
                co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
                continue;
            }
            asio::co_spawn(asio::make_strand(*io), session(std::move(socket)), asio::detached);
        }
    }
};

HttpServer::HttpServer(std::string name, const HttpApi& api, HttpServerLimits limits, std::optional<TlsFiles> tls)
    : impl_(std::make_unique<Impl>(std::move(name), api, limits)) {
    if (tls) {
        auto& context = impl_->tls.emplace(asio::ssl::context::tls_server);
        context.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                            asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1 |
                            asio::ssl::context::single_dh_use);
        context.use_certificate_chain_file(tls->certificate);
        context.use_private_key_file(tls->private_key, asio::ssl::context::pem);
    }
}

HttpServer::~HttpServer() { stop(); }

std::expected<void, std::string> HttpServer::listen(const std::string& host, int port) {
    Impl& s = *impl_;
    beast::error_code ec;
    const auto address = asio::ip::make_address(host, ec);
    if (ec) {
        return std::unexpected("not an IP address: " + host);
    }
    tcp::endpoint endpoint(address, static_cast<unsigned short>(port));
    s.acceptor.emplace(*s.io);
    s.acceptor->open(endpoint.protocol(), ec);
    if (!ec) {
        // SO_REUSEADDR only (no SO_REUSEPORT): a restart binds at once, a duplicate controller
        // on the same address fails to start instead of splitting the connections.
        s.acceptor->set_option(asio::socket_base::reuse_address(true), ec);
    }
    if (!ec) {
        s.acceptor->bind(endpoint, ec);
    }
    if (!ec) {
        s.acceptor->listen(asio::socket_base::max_listen_connections, ec);
    }
    if (ec) {
        s.acceptor.reset();
        return std::unexpected(ec.message());
    }
    return {};
}

void HttpServer::start() {
    Impl& s = *impl_;
    s.workers = std::make_unique<asio::thread_pool>(std::max<std::size_t>(1, s.limits.worker_threads));
    asio::co_spawn(*s.io, s.accept_loop(), asio::detached);
    for (std::size_t i = 0; i < std::max<std::size_t>(1, s.limits.io_threads); ++i) {
        s.threads.emplace_back([&s] { s.io->run(); });
    }
}

void HttpServer::stop() {
    Impl& s = *impl_;
    if (s.stopping.exchange(true) || !s.io) {
        return;
    }
    // No new work: the I/O threads stop where they are; handlers already on a worker finish
    // (each is bounded by its own wait), their completions stay queued; then destroying the
    // io_context destroys every suspended session, closing its socket. The services end
    // their streams before this (ControllerServices::shutdown), so no wake-up races it.
    s.io->stop();
    if (s.workers) {
        s.workers->join();
    }
    for (auto& t : s.threads) {
        t.join();
    }
    s.threads.clear();
    s.acceptor.reset();
    s.io.reset();
}

HttpServerFigures HttpServer::figures() const {
    const Impl& s = *impl_;
    return HttpServerFigures{s.connections_open,   s.connections_accepted, s.connections_refused, s.header_timeouts,
                             s.body_timeouts,      s.oversized,            s.requests,            s.overloaded,
                             s.streams_open,       s.requests_queued,      s.sockets_open,        s.socket_messages};
}

}  // namespace bulkhead::controller
