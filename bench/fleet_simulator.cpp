#include "bench/fleet_simulator.hpp"

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include "enforcer/agent/channel_session.hpp"
#include "enforcer/agent/ndjson.hpp"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <thread>

namespace bulkhead::bench {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

std::int64_t unix_ms_now() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

}  // namespace

// Protocol 3: an enforcer's one connection, its writes queued (a WebSocket takes one write
// at a time) and the requests waiting for their replies. Touched only on the enforcer's strand.
struct ChannelLink {
    websocket::stream<beast::ssl_stream<beast::tcp_stream>> socket;
    std::deque<std::string> outbox;
    bool writing = false;
    bool closed = false;
    std::uint64_t next_id = 1;
    struct Pending {
        bool status = true;  // a status (ack or heartbeat); otherwise an upload
        std::string hash;
        std::uint64_t generation = 0;
        std::chrono::steady_clock::time_point received_at, applied_at;
        asio::steady_timer* waiter = nullptr;  // an upload's coroutine, woken by the reply
        bool answered = false;
        int status_code = 0;
        std::string body;
    };
    std::map<std::uint64_t, Pending> pending;

    ChannelLink(asio::any_io_executor executor, asio::ssl::context& tls) : socket(std::move(executor), tls) {}
};

// What one simulated enforcer holds. Touched only on its strand, except `ack` (mutex).
struct SimulatedEnforcer {
    std::size_t index = 0;
    std::string id;
    std::string credential;
    asio::strand<asio::io_context::executor_type> strand;
    enforcer::agent::HeldRuleset held;
    std::chrono::milliseconds heartbeat{5000};
    bool ack_pending = false;
    std::chrono::steady_clock::time_point received_at;
    std::chrono::steady_clock::time_point applied_at;
    std::atomic<bool> channel_open{false};  // read by wait_connected() off the strand
    asio::steady_timer* status_wake = nullptr;  // the status coroutine's timer while it waits
    asio::ip::address source;                   // 127.1.x.y: one loopback address per enforcer
    std::shared_ptr<ChannelLink> link;          // protocol 3: the open channel socket
    bool started = false;

    mutable std::mutex ack_mutex;
    std::optional<FleetSimulator::Ack> ack;

    SimulatedEnforcer(asio::io_context& io, std::size_t i, SimulatedEnforcerIdentity identity)
        : index(i), id(std::move(identity.id)), credential(std::move(identity.credential)), strand(asio::make_strand(io)),
          source(asio::ip::make_address_v4(static_cast<asio::ip::address_v4::uint_type>(
              (127u << 24) | (1u << 16) | static_cast<unsigned>(i / 250) << 8 | static_cast<unsigned>(i % 250 + 1)))) {}
};

struct FleetSimulator::Impl {
    SimulatorOptions options;
    asio::ssl::context tls{asio::ssl::context::tls_client};
    tcp::resolver::results_type endpoints;
    std::vector<std::unique_ptr<SimulatedEnforcer>> enforcers;
    std::atomic<bool> stopping{false};
    std::atomic<std::size_t> channels_open{0};

    std::atomic<std::size_t> abuse_streams_open{0}, abuse_slow_open{0};
    std::atomic<std::uint64_t> abuse_slow_cut{0}, abuse_streams_failed{0};
    // Simulated enforcers share identical element lists (a segment's members are the same
    // on every host): one process holding 2,000 separately parsed copies of 100,000
    // elements would need tens of GiB, which real enforcers, one per host, never do.
    std::mutex list_pool_mutex;
    std::map<std::pair<std::uint64_t, std::size_t>, std::weak_ptr<const ruleset::ElementList>> list_pool;
    std::size_t list_pool_after_sweep = 0;

    enforcer::agent::HeldRuleset interned(enforcer::agent::HeldRuleset held) {
        if (!held.ruleset) {
            return held;
        }
        auto copy = std::make_shared<ruleset::Ruleset>(*held.ruleset);
        std::lock_guard lock(list_pool_mutex);
        for (auto& set : copy->sets) {
            const auto key = std::make_pair(set.elements->digest(set.verdict_map), set.elements->size());
            auto& slot = list_pool[key];
            auto shared = slot.lock();
            if (shared == set.elements) {
                continue;  // already the pooled list (a diff keeps the lists it does not change)
            }
            if (shared && *shared == *set.elements) {
                set.elements = shared;
            } else {
                slot = set.elements;
            }
        }
        // Sweep expired entries when the pool has doubled since the last sweep: a sweep per
        // ruleset would walk every list of the fleet 2,000 times per policy change.
        if (list_pool.size() > 2 * list_pool_after_sweep + 1024) {
            std::erase_if(list_pool, [](const auto& entry) { return entry.second.expired(); });
            list_pool_after_sweep = list_pool.size();
        }
        held.ruleset = std::move(copy);
        return held;
    }

    std::atomic<std::uint64_t> channels_opened{0}, channel_failures{0}, resyncs{0}, rulesets{0}, diffs{0},
        status_ok{0}, status_failures{0}, events_accepted{0}, upload_failures{0};

    // Declared last: destroyed first, so that coroutine frames (which hold connections and
    // executors) go before what they point at.
    std::unique_ptr<asio::io_context> io = std::make_unique<asio::io_context>();
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
    std::vector<std::thread> threads;

    // ---- one keep-alive HTTPS connection ------------------------------------------------
    class Connection {
      public:
        Connection(Impl& sim, asio::any_io_executor executor)
            : sim_(sim), executor_(std::move(executor)), timeout_(sim.options.request_timeout) {}
        Connection(Impl& sim, asio::any_io_executor executor, std::chrono::milliseconds timeout)
            : sim_(sim), executor_(std::move(executor)), timeout_(timeout) {}
        ~Connection() { close(); }

        // Connections leave from `source` (a loopback address of their own), as enforcers on
        // distinct hosts would, so that per-client limits see distinct clients.
        void set_source(asio::ip::address source) { source_ = source; }

        asio::awaitable<void> open() {
            close();
            stream_ = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(executor_, sim_.tls);
            const std::string& name = sim_.options.server_name;
            // SSL_set_tlsext_host_name is a macro with a C cast; this is what it expands to.
            if (SSL_ctrl(stream_->native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                         const_cast<char*>(name.c_str())) != 1) {
                throw std::runtime_error("cannot set the TLS server name");
            }
            stream_->set_verify_callback(asio::ssl::host_name_verification(name));
            auto& layer = beast::get_lowest_layer(*stream_);
            layer.expires_after(timeout_);
            const tcp::endpoint server = *sim_.endpoints.begin();
            if (source_) {
                layer.socket().open(server.protocol());
                layer.socket().bind(tcp::endpoint(*source_, 0));
            }
            co_await layer.async_connect(server, asio::use_awaitable);
            layer.socket().set_option(tcp::no_delay(true));  // as the agent: no Nagle wait on small writes
            co_await stream_->async_handshake(asio::ssl::stream_base::client, asio::use_awaitable);
        }

        // Sends a request with a body (or none) and reads the whole answer.
        asio::awaitable<http::response<http::string_body>> request(http::verb verb, const std::string& target,
                                                                  const std::string& token, std::string body) {
            if (!stream_) {
                co_await open();
            }
            co_await write_request(verb, target, token, std::move(body));
            http::response_parser<http::string_body> parser;
            parser.body_limit(256ULL << 20);
            beast::get_lowest_layer(*stream_).expires_after(timeout_);
            co_await http::async_read(*stream_, buffer_, parser, asio::use_awaitable);
            auto response = parser.release();
            if (!response.keep_alive()) {
                close();
            }
            co_return response;
        }

        asio::awaitable<void> write_request(http::verb verb, const std::string& target, const std::string& token,
                                            std::string body) {
            http::request<http::string_body> request{verb, target, 11};
            request.set(http::field::host, sim_.options.server_name);
            request.set(http::field::user_agent, "bulkhead-bench-fleet");
            if (!token.empty()) {
                request.set(http::field::authorization, "Bearer " + token);
            }
            if (!body.empty()) {
                request.set(http::field::content_type, "application/json");
                request.body() = std::move(body);
            }
            request.keep_alive(true);
            request.prepare_payload();
            beast::get_lowest_layer(*stream_).expires_after(timeout_);
            co_await http::async_write(*stream_, request, asio::use_awaitable);
        }

        beast::ssl_stream<beast::tcp_stream>& stream() { return *stream_; }
        beast::flat_buffer& buffer() { return buffer_; }

        void close() {
            if (stream_) {
                beast::error_code ignored;
                beast::get_lowest_layer(*stream_).socket().close(ignored);
                stream_.reset();
            }
            buffer_.clear();
        }

      private:
        Impl& sim_;
        asio::any_io_executor executor_;
        std::chrono::milliseconds timeout_;
        std::optional<asio::ip::address> source_;
        std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> stream_;
        beast::flat_buffer buffer_;
    };

    explicit Impl(SimulatorOptions o) : options(std::move(o)) {
        if (options.server_name.empty()) {
            options.server_name = options.host;
        }
        tls.set_verify_mode(asio::ssl::verify_peer);
        tls.load_verify_file(options.ca_file);
        tcp::resolver resolver(*io);
        endpoints = resolver.resolve(options.host, options.port);
    }

    void run_threads() {
        if (!threads.empty()) {
            return;
        }
        work.emplace(io->get_executor());
        for (int i = 0; i < std::max(1, options.io_threads); ++i) {
            threads.emplace_back([this] { io->run(); });
        }
    }

    void stop_threads() {
        stopping = true;
        work.reset();
        io->stop();
        for (auto& t : threads) {
            t.join();
        }
        threads.clear();
        // The links' sockets belong to the io_context: they go with it (the coroutines hold
        // the last references), never after it.
        for (auto& e : enforcers) {
            e->link.reset();
        }
        io.reset();  // destroys the suspended coroutines while what they use still exists
    }

    static asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
        asio::steady_timer timer(co_await asio::this_coro::executor);
        timer.expires_after(d);
        beast::error_code ec;
        co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }

    // The agent's reconnect pacing: jittered exponential backoff from 200 ms, reset after a
    // connection that lasted a minute.
    struct ReconnectPacing {
        std::mt19937 jitter;
        std::chrono::milliseconds max;
        std::chrono::milliseconds backoff{200};
        std::chrono::milliseconds next(SteadyClock::time_point connection_started) {
            if (SteadyClock::now() - connection_started > std::chrono::minutes(1)) {
                backoff = std::chrono::milliseconds(200);
            }
            const auto wait = backoff / 2 + std::chrono::milliseconds(jitter() % (backoff.count() / 2 + 1));
            backoff = std::min(backoff * 2, max);
            return wait;
        }
    };

    void channel_closed(SimulatedEnforcer& e) {
        if (e.channel_open.exchange(false)) {
            --channels_open;
        }
    }

    void wake_status(SimulatedEnforcer& e) {
        e.ack_pending = true;
        if (e.status_wake != nullptr) {
            e.status_wake->cancel();
        }
    }

    // The channel stream: reconnects with jittered exponential backoff as the agent does;
    // a resync (diff that does not fit) reconnects at once with what is held.
    asio::awaitable<void> run_channel(SimulatedEnforcer& e) {
        ReconnectPacing pacing{std::mt19937(static_cast<unsigned>(e.index * 7919 + 1)), options.max_backoff};
        std::vector<char> chunk(64 * 1024);
        while (!stopping) {
            const auto started = SteadyClock::now();
            bool resync = false;
            Connection connection(*this, e.strand);
            connection.set_source(e.source);
            try {
                co_await connection.open();
                const std::string target = "/api/v1/enforcers/" + e.id + "/channel?generation=" +
                                           std::to_string(e.held.generation) + "&hash=" + e.held.hash +
                                           (options.hash_format == 1 ? "" : "&hash_format=" + std::to_string(options.hash_format));
                co_await connection.write_request(http::verb::get, target, e.credential, {});
                http::response_parser<http::buffer_body> parser;
                parser.body_limit(boost::none);
                auto& layer = beast::get_lowest_layer(connection.stream());
                layer.expires_after(options.request_timeout);
                co_await http::async_read_header(connection.stream(), connection.buffer(), parser, asio::use_awaitable);
                if (parser.get().result() != http::status::ok) {
                    throw std::runtime_error("channel answered HTTP " + std::to_string(parser.get().result_int()));
                }
                ++channels_opened;
                ++channels_open;
                e.channel_open = true;
                enforcer::agent::ChannelSession session(e.id, e.held, options.hash_format);
                // The agent's own framer: it scans each chunk once (a full ruleset of a large
                // fleet is megabytes arriving in 16 KiB pieces).
                enforcer::agent::NdjsonFramer framer;
                while (!parser.is_done() && !stopping && !resync) {
                    parser.get().body().data = chunk.data();
                    parser.get().body().size = chunk.size();
                    layer.expires_after(e.heartbeat * 3);
                    try {
                        co_await http::async_read_some(connection.stream(), connection.buffer(), parser, asio::use_awaitable);
                    } catch (const boost::system::system_error& error) {
                        if (error.code() != http::error::need_buffer) {
                            throw;
                        }
                    }
                    const std::string_view received(chunk.data(), chunk.size() - parser.get().body().size);
                    auto fed = framer.feed(received, [&](std::string_view line) {
                        if (!on_channel_message(e, session, line)) {
                            resync = true;
                            return false;
                        }
                        return true;
                    });
                    if (!fed) {
                        throw std::runtime_error("channel: " + fed.error());
                    }
                }
            } catch (const std::exception& error) {
                if (!stopping) {
                    ++channel_failures;
                    spdlog::debug("fleet: {}: channel: {}", e.id, error.what());
                }
            }
            channel_closed(e);
            connection.close();
            if (stopping) {
                break;
            }
            if (resync) {
                continue;
            }
            co_await sleep_for(pacing.next(started));
        }
    }

    // Protocol 3: the channel as a WebSocket; acks, heartbeats and uploads go up the same
    // connection (run_socket_status, upload). Reconnects as run_channel does.
    asio::awaitable<void> run_socket(SimulatedEnforcer& e) {
        ReconnectPacing pacing{std::mt19937(static_cast<unsigned>(e.index * 7919 + 1)), options.max_backoff};
        while (!stopping) {
            const auto started = SteadyClock::now();
            bool resync = false;
            auto link = std::make_shared<ChannelLink>(e.strand, tls);
            try {
                auto& secure = link->socket.next_layer();
                const std::string& name = options.server_name;
                // SSL_set_tlsext_host_name is a macro with a C cast; this is what it expands to.
                if (SSL_ctrl(secure.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                             const_cast<char*>(name.c_str())) != 1) {
                    throw std::runtime_error("cannot set the TLS server name");
                }
                secure.set_verify_callback(asio::ssl::host_name_verification(name));
                auto& layer = beast::get_lowest_layer(link->socket);
                layer.expires_after(options.request_timeout);
                const tcp::endpoint server = *endpoints.begin();
                layer.socket().open(server.protocol());
                layer.socket().bind(tcp::endpoint(e.source, 0));
                co_await layer.async_connect(server, asio::use_awaitable);
                layer.socket().set_option(tcp::no_delay(true));
                co_await secure.async_handshake(asio::ssl::stream_base::client, asio::use_awaitable);
                layer.expires_never();  // the socket's own timeouts from here on
                link->socket.set_option(websocket::stream_base::timeout{options.request_timeout, e.heartbeat * 3, false});
                link->socket.set_option(websocket::stream_base::decorator([token = e.credential](websocket::request_type& request) {
                    request.set(http::field::authorization, "Bearer " + token);
                    request.set(http::field::user_agent, "bulkhead-bench-fleet");
                }));
                link->socket.read_message_max(256ULL << 20);
                const std::string target = "/api/v1/enforcers/" + e.id + "/channel?generation=" +
                                           std::to_string(e.held.generation) + "&hash=" + e.held.hash +
                                           "&hash_format=" + std::to_string(options.hash_format);
                websocket::response_type answer;
                co_await link->socket.async_handshake(answer, name, target, asio::use_awaitable);
                ++channels_opened;
                ++channels_open;
                e.channel_open = true;
                e.link = link;
                wake_status(e);  // a new connection: ack what is held at once
                enforcer::agent::ChannelSession session(e.id, e.held, options.hash_format);
                beast::flat_buffer buffer;
                while (!stopping && !resync) {
                    co_await link->socket.async_read(buffer, asio::use_awaitable);
                    const std::string_view message(static_cast<const char*>(buffer.data().data()), buffer.size());
                    if (message.starts_with(R"({"type":"reply")")) {
                        take_reply(e, *link, message);
                    } else if (!on_channel_message(e, session, message)) {
                        resync = true;
                    }
                    buffer.consume(buffer.size());
                }
            } catch (const std::exception& error) {
                if (!stopping) {
                    ++channel_failures;
                    spdlog::debug("fleet: {}: channel socket: {}", e.id, error.what());
                }
            }
            channel_closed(e);
            end_link(e, link);
            if (stopping) {
                break;
            }
            if (resync) {
                continue;
            }
            co_await sleep_for(pacing.next(started));
        }
    }

    // One message of the stream (both protocols): false asks for a resync.
    bool on_channel_message(SimulatedEnforcer& e, enforcer::agent::ChannelSession& session, std::string_view line) {
        const auto line_received = SteadyClock::now();
        const auto action = session.handle_line(line);
        using Kind = enforcer::agent::ChannelAction::Kind;
        if (action.kind == Kind::Hello) {
            e.heartbeat = std::chrono::milliseconds(action.heartbeat_interval_ms);
        } else if (action.kind == Kind::Apply) {
            // A diff keeps the (pooled) lists it does not change and brings a few small
            // ones: only full rulesets need pooling.
            if (!action.from_diff) {
                e.held = interned(action.next);
                session.hold_equal(e.held);
            } else {
                e.held = action.next;
            }
            e.received_at = line_received;
            e.applied_at = SteadyClock::now();
            ++(action.from_diff ? diffs : rulesets);
            wake_status(e);
        } else if (action.kind == Kind::Reject) {
            spdlog::warn("fleet: {}: rejected a ruleset: {}", e.id, action.reason);
        } else if (action.kind == Kind::Resync) {
            spdlog::debug("fleet: {}: resync: {}", e.id, action.reason);
            ++resyncs;
            return false;
        }
        return true;
    }

    void take_reply(SimulatedEnforcer& e, ChannelLink& link, std::string_view message) {
        const auto reply = json::parse(message, nullptr, false);
        if (!reply.is_object() || !reply.contains("id") || !reply["id"].is_number_unsigned()) {
            spdlog::warn("fleet: {}: a reply without an id", e.id);
            return;
        }
        const auto it = link.pending.find(reply["id"].get<std::uint64_t>());
        if (it == link.pending.end()) {
            return;
        }
        auto& pending = it->second;
        pending.answered = true;
        pending.status_code = reply.value("status", 0);
        if (!pending.status) {
            pending.body = reply.contains("body") ? reply["body"].dump() : std::string();
            if (pending.waiter != nullptr) {
                pending.waiter->cancel();
            }
            return;  // the upload's coroutine reads and erases it
        }
        if (pending.status_code == 200) {
            ++status_ok;
            if (!pending.hash.empty()) {
                std::lock_guard lock(e.ack_mutex);
                e.ack = FleetSimulator::Ack{pending.hash, pending.generation, SteadyClock::now(), pending.received_at,
                                            pending.applied_at};
            }
        } else {
            ++status_failures;
            wake_status(e);  // the ack goes again
        }
        link.pending.erase(it);
    }

    // Queues one request up the socket; returns its id.
    std::uint64_t send_request(SimulatedEnforcer& e, const std::shared_ptr<ChannelLink>& link, std::string_view kind,
                               std::string_view body, ChannelLink::Pending pending) {
        const auto id = link->next_id++;
        link->pending.emplace(id, std::move(pending));
        std::string message = R"({"request":")" + std::string(kind) + R"(","id":)" + std::to_string(id) + "}\n";
        message += body;
        link->outbox.push_back(std::move(message));
        if (!link->writing) {
            link->writing = true;
            asio::co_spawn(e.strand, write_queued(link), asio::detached);
        }
        return id;
    }

    static asio::awaitable<void> write_queued(std::shared_ptr<ChannelLink> link) {
        while (!link->outbox.empty() && !link->closed) {
            try {
                link->socket.text(true);
                co_await link->socket.async_write(asio::buffer(link->outbox.front()), asio::use_awaitable);
            } catch (const std::exception&) {
                break;  // the reader sees the connection fail and ends the link
            }
            link->outbox.pop_front();
        }
        link->writing = false;
    }

    // The connection is gone: requests without a reply fail (uploads are woken; an ack that
    // was not answered goes again on the next connection).
    void end_link(SimulatedEnforcer& e, const std::shared_ptr<ChannelLink>& link) {
        link->closed = true;
        for (auto& [id, pending] : link->pending) {
            if (pending.waiter != nullptr) {
                pending.waiter->cancel();
            }
        }
        beast::error_code ignored;
        beast::get_lowest_layer(link->socket).socket().close(ignored);
        if (e.link == link) {
            e.link.reset();
        }
    }

    // Protocol 3: acks right after every apply, heartbeats every interval otherwise, up the
    // channel socket; the reply records the ack.
    asio::awaitable<void> run_socket_status(SimulatedEnforcer& e) {
        asio::steady_timer timer(e.strand);
        auto next_heartbeat = SteadyClock::now();
        while (!stopping) {
            if ((!e.ack_pending && SteadyClock::now() < next_heartbeat) || !e.link) {
                timer.expires_at(e.link ? next_heartbeat : SteadyClock::now() + std::chrono::milliseconds(200));
                e.status_wake = &timer;
                beast::error_code ec;
                co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
                e.status_wake = nullptr;
                continue;
            }
            e.ack_pending = false;
            ChannelLink::Pending pending;
            pending.hash = e.held.hash;
            pending.generation = e.held.generation;
            pending.received_at = e.received_at;
            pending.applied_at = e.applied_at;
            send_request(e, e.link, "status", status_body(e).dump(), std::move(pending));
            next_heartbeat = SteadyClock::now() + e.heartbeat;
        }
    }

    json status_body(const SimulatedEnforcer& e) const {
        json body{{"generation", e.held.generation},
                    {"hash", e.held.hash},
                    {"state", "applied"},
                    {"error", ""},
                    {"applied_at_ms", unix_ms_now()},
                    {"apply_ms", 0.0},
                    {"enforcer_time_ms", unix_ms_now()},
                    {"version", options.version},
                    {"drift_repairs", 0},
                    {"last_drift_at_ms", 0},
                    {"elements", 0},
                    {"nflog", {{"received", 0}, {"lost", 0}}}};
        if (options.hash_format != 1) {
            body["hash_format"] = options.hash_format;
        }
        return body;
    }

    // Acks right after every apply, heartbeats every interval otherwise (as the agent).
    asio::awaitable<void> run_status(SimulatedEnforcer& e) {
        Connection connection(*this, e.strand);
        connection.set_source(e.source);
        asio::steady_timer timer(e.strand);
        auto next_heartbeat = SteadyClock::now();
        auto retry = std::chrono::milliseconds(200);
        while (!stopping) {
            if (!e.ack_pending && SteadyClock::now() < next_heartbeat) {
                timer.expires_at(next_heartbeat);
                e.status_wake = &timer;
                beast::error_code ec;
                co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
                e.status_wake = nullptr;
                continue;
            }
            const bool was_ack = e.ack_pending;
            e.ack_pending = false;
            const std::string hash = e.held.hash;
            const std::uint64_t generation = e.held.generation;
            bool ok = false;
            try {
                auto response = co_await connection.request(http::verb::post, "/api/v1/enforcers/" + e.id + "/status",
                                                            e.credential, status_body(e).dump());
                ok = response.result() == http::status::ok;
                if (!ok) {
                    spdlog::debug("fleet: {}: status answered HTTP {}", e.id, response.result_int());
                }
            } catch (const std::exception& error) {
                connection.close();
                if (!stopping) {
                    spdlog::debug("fleet: {}: status: {}", e.id, error.what());
                }
            }
            if (ok) {
                ++status_ok;
                retry = std::chrono::milliseconds(200);
                if (!hash.empty()) {
                    std::lock_guard lock(e.ack_mutex);
                    e.ack = Ack{hash, generation, SteadyClock::now(), e.received_at, e.applied_at};
                }
                next_heartbeat = SteadyClock::now() + e.heartbeat;
            } else if (!stopping) {
                ++status_failures;
                e.ack_pending = e.ack_pending || was_ack;
                co_await sleep_for(retry);
                retry = std::min(retry * 2, options.max_backoff);
            }
        }
    }

    asio::awaitable<void> hold_stream(std::string token, asio::ip::address source) {
        Connection connection(*this, co_await asio::this_coro::executor);
        connection.set_source(source);
        bool open = false;
        try {
            co_await connection.open();
            co_await connection.write_request(http::verb::get, "/api/v1/stream", token, {});
            http::response_parser<http::buffer_body> parser;
            parser.body_limit(boost::none);
            beast::get_lowest_layer(connection.stream()).expires_after(options.request_timeout);
            co_await http::async_read_header(connection.stream(), connection.buffer(), parser, asio::use_awaitable);
            if (parser.get().result() != http::status::ok) {
                throw std::runtime_error("stream answered HTTP " + std::to_string(parser.get().result_int()));
            }
            open = true;
            ++abuse_streams_open;
            std::vector<char> chunk(16 * 1024);
            while (!stopping && !parser.is_done()) {
                parser.get().body().data = chunk.data();
                parser.get().body().size = chunk.size();
                beast::get_lowest_layer(connection.stream()).expires_never();
                try {
                    co_await http::async_read_some(connection.stream(), connection.buffer(), parser, asio::use_awaitable);
                } catch (const boost::system::system_error& error) {
                    if (error.code() != http::error::need_buffer) {
                        throw;
                    }
                }
            }
        } catch (const std::exception& error) {
            if (!stopping) {
                ++abuse_streams_failed;
                spdlog::debug("fleet: abuse stream: {}", error.what());
            }
        }
        if (open) {
            --abuse_streams_open;
        }
    }

    // A client that sends its request head one line at a time and never finishes it; cut off,
    // it connects again (an attacker keeps the pressure on).
    asio::awaitable<void> hold_slow_head(std::chrono::milliseconds interval, asio::ip::address source) {
        while (!stopping) {
            Connection connection(*this, co_await asio::this_coro::executor);
            connection.set_source(source);
            bool open = false;
            try {
                co_await connection.open();
                open = true;
                ++abuse_slow_open;
                auto& layer = beast::get_lowest_layer(connection.stream());
                std::string line = "GET /api/v1/health HTTP/1.1\r\n";
                for (int i = 0; !stopping; ++i) {
                    layer.expires_after(options.request_timeout);
                    co_await asio::async_write(connection.stream(), asio::buffer(line), asio::use_awaitable);
                    line = "X-Slow-" + std::to_string(i) + ": a\r\n";
                    co_await sleep_for(interval);
                }
            } catch (const std::exception&) {
                if (!stopping && open) {
                    ++abuse_slow_cut;
                }
            }
            if (open) {
                --abuse_slow_open;
            } else if (!stopping) {
                co_await sleep_for(interval);  // refused: try again later
            }
        }
    }

    // Runs `make()` on `executor` and waits for it on the calling thread.
    template <typename T, typename Make>
    T run_and_wait(asio::any_io_executor executor, Make make) {
        std::promise<T> promise;
        auto future = promise.get_future();
        asio::co_spawn(executor, make(), [&promise](std::exception_ptr error, T value) {
            if (error) {
                promise.set_exception(error);
            } else {
                promise.set_value(std::move(value));
            }
        });
        return future.get();
    }
};

FleetSimulator::FleetSimulator(SimulatorOptions options, std::vector<SimulatedEnforcerIdentity> enforcers)
    : impl_(std::make_unique<Impl>(std::move(options))) {
    for (std::size_t i = 0; i < enforcers.size(); ++i) {
        impl_->enforcers.push_back(std::make_unique<SimulatedEnforcer>(*impl_->io, i, std::move(enforcers[i])));
    }
    impl_->run_threads();
}

FleetSimulator::~FleetSimulator() { stop(); }

void FleetSimulator::stop() {
    if (impl_->io) {
        impl_->stop_threads();
    }
}

std::size_t FleetSimulator::enroll_all(const std::vector<std::string>& tokens, int concurrency,
                                       std::chrono::seconds deadline) {
    Impl& sim = *impl_;
    std::atomic<std::size_t> next{0}, enrolled{0};
    const auto until = SteadyClock::now() + deadline;
    auto worker = [&sim, &tokens, &next, &enrolled, until]() -> asio::awaitable<int> {
        Impl::Connection connection(sim, co_await asio::this_coro::executor);
        for (std::size_t i = next++; i < sim.enforcers.size() && i < tokens.size() && SteadyClock::now() < until;
             i = next++) {
            SimulatedEnforcer& e = *sim.enforcers[i];
            try {
                const json body{{"enforcer", e.id}, {"token", tokens[i]}, {"version", sim.options.version}, {"hostname", e.id}};
                auto response = co_await connection.request(http::verb::post, "/api/v1/enforcers/enroll", "", body.dump());
                if (response.result() != http::status::created) {
                    spdlog::warn("fleet: {}: enrollment answered HTTP {}: {}", e.id, response.result_int(),
                                 response.body().substr(0, 200));
                    continue;
                }
                e.credential = json::parse(response.body()).at("credential").get<std::string>();
                ++enrolled;
            } catch (const std::exception& error) {
                connection.close();
                spdlog::warn("fleet: {}: enrollment: {}", e.id, error.what());
            }
        }
        co_return 0;
    };
    std::vector<std::future<int>> done;
    for (int w = 0; w < std::max(1, concurrency); ++w) {
        auto promise = std::make_shared<std::promise<int>>();
        done.push_back(promise->get_future());
        asio::co_spawn(asio::make_strand(*sim.io), worker(), [promise](std::exception_ptr error, int value) {
            if (error) {
                promise->set_exception(error);
            } else {
                promise->set_value(value);
            }
        });
    }
    for (auto& f : done) {
        f.get();
    }
    return enrolled;
}

void FleetSimulator::start(std::size_t count) {
    Impl& sim = *impl_;
    for (std::size_t i = 0; i < sim.enforcers.size() && i < count; ++i) {
        auto& e = sim.enforcers[i];
        if (e->started) {
            continue;
        }
        e->started = true;
        if (sim.options.protocol == 2) {
            asio::co_spawn(e->strand, sim.run_channel(*e), asio::detached);
            asio::co_spawn(e->strand, sim.run_status(*e), asio::detached);
        } else {
            asio::co_spawn(e->strand, sim.run_socket(*e), asio::detached);
            asio::co_spawn(e->strand, sim.run_socket_status(*e), asio::detached);
        }
    }
}

bool FleetSimulator::wait_connected(std::size_t count, SteadyClock::time_point deadline) const {
    const Impl& sim = *impl_;
    for (;;) {
        std::size_t open = 0;
        for (std::size_t i = 0; i < count && i < sim.enforcers.size(); ++i) {
            // Read off the strand: a flag that only ever settles, polled until the deadline.
            open += sim.enforcers[i]->channel_open ? 1 : 0;
        }
        if (open >= std::min(count, sim.enforcers.size())) {
            return true;
        }
        if (SteadyClock::now() >= deadline) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

std::size_t FleetSimulator::size() const { return impl_->enforcers.size(); }
const std::string& FleetSimulator::id(std::size_t index) const { return impl_->enforcers.at(index)->id; }
std::size_t FleetSimulator::channels_open() const { return impl_->channels_open; }

FleetCounters FleetSimulator::counters() const {
    const Impl& s = *impl_;
    return FleetCounters{s.channels_opened, s.channel_failures, s.resyncs,         s.rulesets,       s.diffs,
                         s.status_ok,       s.status_failures,  s.events_accepted, s.upload_failures};
}

std::optional<FleetSimulator::Ack> FleetSimulator::last_ack(std::size_t index) const {
    const auto& e = *impl_->enforcers.at(index);
    std::lock_guard lock(e.ack_mutex);
    return e.ack;
}

std::uint64_t FleetSimulator::upload(std::size_t index, const std::vector<std::string>& bodies,
                                     SteadyClock::time_point deadline) {
    Impl& sim = *impl_;
    SimulatedEnforcer& e = *sim.enforcers.at(index);
    if (sim.options.protocol != 2) {
        return sim.run_and_wait<std::uint64_t>(e.strand, [&sim, &e, &bodies, deadline]() -> asio::awaitable<std::uint64_t> {
            std::uint64_t accepted = 0;
            asio::steady_timer waiter(e.strand);
            for (const auto& body : bodies) {
                if (SteadyClock::now() >= deadline || sim.stopping) {
                    break;
                }
                auto link = e.link;
                if (!link) {
                    ++sim.upload_failures;
                    spdlog::warn("fleet: {}: upload: no channel socket open", e.id);
                    break;
                }
                ChannelLink::Pending pending;
                pending.status = false;
                pending.waiter = &waiter;
                const auto id = sim.send_request(e, link, "events", body, std::move(pending));
                waiter.expires_at(deadline);
                beast::error_code ec;
                co_await waiter.async_wait(asio::redirect_error(asio::use_awaitable, ec));
                auto it = link->pending.find(id);
                const bool answered = it != link->pending.end() && it->second.answered;
                const int status = answered ? it->second.status_code : 0;
                const std::string answer = answered ? it->second.body : std::string();
                if (it != link->pending.end()) {
                    link->pending.erase(it);
                }
                if (status != 200) {
                    ++sim.upload_failures;
                    spdlog::warn("fleet: {}: upload {}", e.id,
                                 answered ? "answered " + std::to_string(status) + ": " + answer.substr(0, 200)
                                          : std::string("not answered (connection lost or deadline)"));
                    break;
                }
                const auto n = json::parse(answer).value("accepted", std::uint64_t{0});
                accepted += n;
                sim.events_accepted += n;
            }
            co_return accepted;
        });
    }
    return sim.run_and_wait<std::uint64_t>(e.strand, [&sim, &e, &bodies, deadline]() -> asio::awaitable<std::uint64_t> {
        Impl::Connection connection(sim, e.strand);
        connection.set_source(e.source);
        std::uint64_t accepted = 0;
        for (const auto& body : bodies) {
            if (SteadyClock::now() >= deadline || sim.stopping) {
                break;
            }
            try {
                auto response =
                    co_await connection.request(http::verb::post, "/api/v1/enforcers/" + e.id + "/events", e.credential, body);
                if (response.result() != http::status::ok) {
                    ++sim.upload_failures;
                    spdlog::warn("fleet: {}: upload answered HTTP {}: {}", e.id, response.result_int(),
                                 response.body().substr(0, 200));
                    break;
                }
                const auto n = json::parse(response.body()).value("accepted", std::uint64_t{0});
                accepted += n;
                sim.events_accepted += n;
            } catch (const std::exception& error) {
                ++sim.upload_failures;
                spdlog::warn("fleet: {}: upload: {}", e.id, error.what());
                break;
            }
        }
        co_return accepted;
    });
}

void FleetSimulator::open_abuse(std::size_t streams, const std::string& token, std::size_t slow,
                                std::chrono::milliseconds line_interval) {
    Impl& sim = *impl_;
    // Dashboards from ten SOC desks (127.2.0.1-10), slow heads from five hosts (127.3.0.1-5).
    for (std::size_t i = 0; i < streams; ++i) {
        const auto desk = asio::ip::make_address_v4(static_cast<asio::ip::address_v4::uint_type>((127u << 24) | (2u << 16) | (i % 10 + 1)));
        asio::co_spawn(asio::make_strand(*sim.io), sim.hold_stream(token, desk), asio::detached);
    }
    for (std::size_t i = 0; i < slow; ++i) {
        const auto host = asio::ip::make_address_v4(static_cast<asio::ip::address_v4::uint_type>((127u << 24) | (3u << 16) | (i % 5 + 1)));
        asio::co_spawn(asio::make_strand(*sim.io), sim.hold_slow_head(line_interval, host), asio::detached);
    }
}

FleetSimulator::AbuseFigures FleetSimulator::abuse() const {
    const Impl& s = *impl_;
    return AbuseFigures{s.abuse_streams_open, s.abuse_slow_open, s.abuse_slow_cut, s.abuse_streams_failed};
}

std::optional<int> FleetSimulator::probe(const std::string& target, std::chrono::milliseconds timeout) {
    Impl& sim = *impl_;
    return sim.run_and_wait<std::optional<int>>(
        asio::make_strand(*sim.io), [&sim, &target, timeout]() -> asio::awaitable<std::optional<int>> {
            Impl::Connection connection(sim, co_await asio::this_coro::executor, timeout);
            try {
                auto response = co_await connection.request(http::verb::get, target, "", {});
                co_return response.result_int();
            } catch (const std::exception&) {
                co_return std::nullopt;
            }
        });
}

}  // namespace bulkhead::bench
