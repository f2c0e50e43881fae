// A stand-in for the real controller (controller/), built on Boost.Beast on 127.0.0.1. It
// serves exactly the enforcer-facing endpoints of docs/control-channel.md that an enforcer
// of this release uses, and records what enforcers send so tests can check it:
//   POST /api/v1/enforcers/enroll          one-time token -> 201 credential (401 otherwise)
//   GET  /api/v1/enforcers/{id}/channel    upgraded to a WebSocket (protocol 3): hello, then a
//                                          ruleset (or nothing when the hash matches), pushes
//                                          (diff / ruleset), heartbeats, one per message; up
//                                          the same socket the enforcer's requests:
//     "status"  ack / heartbeat            -> reply 200 {"controller_time_ms"}
//     "events"  {"events":[{"seq","event"}]} -> reply 200 {accepted, duplicates, through_seq},
//                                          stored once per seq
// Bearer credentials are per enforcer (401 without, 403 for another id), checked before the
// upgrade. stop()/start() on the same port simulate a controller restart: the "database"
// (credentials, desired ruleset, stored events) survives, the in-memory knowledge of what
// was sent does not, so a reconnect after a restart gets a full ruleset. It also counts the
// TCP connections it accepted, so tests can check that an enforcer holds only one.
#pragma once

#include "policies/ruleset.hpp"
#include "policies/ruleset_diff.hpp"

// Boost 1.74's awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <nlohmann/json.hpp>

#include <fcntl.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace bulkhead::test {

inline std::int64_t fake_now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// Polls `predicate` until it holds or the deadline passes (no fixed sleeps in tests).
inline bool eventually(const std::function<bool()>& predicate,
                       std::chrono::milliseconds deadline = std::chrono::seconds(15)) {
    const auto until = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < until) {
        if (predicate()) {
            return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return predicate();
}

class FakeController {
public:
    struct Connect {
        std::string enforcer;
        std::uint64_t generation = 0;
        std::string hash;
    };
    struct Status {
        std::string enforcer;
        nlohmann::json body;
        std::int64_t received_ms = 0;
    };

    explicit FakeController(std::string enforcer_id) : enforcer_(std::move(enforcer_id)) {}
    ~FakeController() { stop(); }

    // Binds 127.0.0.1:port (0: any free port) and serves in a thread.
    void start(int port = 0) {
        {
            std::lock_guard lock(mutex_);
            stopping_ = false;
            // What was sent lived in memory: after a restart every base is unknown, so
            // the first answer to a reconnect is a full ruleset ("controller restarted").
            sent_history_.clear();
        }
        io_ = std::make_unique<boost::asio::io_context>();
        acceptor_ = std::make_unique<tcp::acceptor>(*io_);
        const tcp::endpoint where(boost::asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port));
        bool bound = false;
        for (int i = 0; i < 200 && !bound; ++i) {
            boost::system::error_code ec;
            acceptor_->open(where.protocol(), ec);
            close_on_exec(acceptor_->native_handle());
            acceptor_->set_option(tcp::acceptor::reuse_address(true), ec);
            acceptor_->bind(where, ec);
            if (!ec) {
                acceptor_->listen(boost::asio::socket_base::max_listen_connections, ec);
            }
            bound = !ec;
            if (!bound) {
                acceptor_->close(ec);
                std::this_thread::sleep_for(std::chrono::milliseconds(25));
            }
        }
        if (!bound) {
            throw std::runtime_error("fake controller: cannot bind 127.0.0.1:" + std::to_string(port));
        }
        port_ = acceptor_->local_endpoint().port();
        boost::asio::co_spawn(*io_, accept_loop(), boost::asio::detached);
        thread_ = std::thread([this] { io_->run(); });
    }

    // Closes every connection (the enforcers see their channel end) and stops serving, as a
    // controller shutting down does: requests already handled get their replies first (an
    // upload stored but never answered would come again as duplicates), no new one is
    // handled.
    void stop() {
        if (!io_) {
            return;
        }
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
            for (auto& s : streams_) {
                wake(*s);
            }
        }
        const auto flushed_by = std::chrono::steady_clock::now() + std::chrono::seconds(2);
        for (;;) {
            {
                std::lock_guard lock(mutex_);
                if (streams_.empty() || std::chrono::steady_clock::now() >= flushed_by) {
                    for (auto& s : streams_) {
                        s->closed = true;
                    }
                    streams_.clear();
                    break;
                }
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        io_->stop();
        if (thread_.joinable()) {
            thread_.join();
        }
        // Destroying the context destroys every pending coroutine and with it its socket.
        acceptor_.reset();
        io_.reset();
    }

    int port() const { return port_; }
    std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

    // -- the controller's state --
    void add_token(const std::string& token) {
        std::lock_guard lock(mutex_);
        tokens_[token] = false;
    }
    void set_heartbeat_interval_ms(int ms) { heartbeat_ms_ = ms; }
    void set_silent(bool silent) {
        std::lock_guard lock(mutex_);
        silent_ = silent;
    }
    void set_fail_events(bool fail) {
        std::lock_guard lock(mutex_);
        fail_events_ = fail;
    }

    // A new generation; pushed at once to the connected stream as a diff from what that
    // stream holds (or as a full ruleset when the fake does not know its base).
    std::uint64_t set_desired(const ruleset::Ruleset& r) {
        std::lock_guard lock(mutex_);
        ++generation_;
        desired_ = Generation{generation_, ruleset::ruleset_hash(r), r};
        desired_hash_ = desired_->hash;
        sent_history_[desired_hash_] = *desired_;
        for (auto& s : streams_) {
            push_desired(*s);
            wake(*s);
        }
        return generation_;
    }
    // A raw message on the connected stream (e.g. a diff with a wrong hash).
    void push_raw(const nlohmann::json& message) {
        std::lock_guard lock(mutex_);
        for (auto& s : streams_) {
            s->lines.push_back(message.dump());
            wake(*s);
        }
    }
    std::uint64_t generation() const {
        std::lock_guard lock(mutex_);
        return generation_;
    }
    std::string desired_hash() const {
        std::lock_guard lock(mutex_);
        return desired_hash_;
    }

    // -- what was observed --
    int enrollments() const {
        std::lock_guard lock(mutex_);
        return enrollments_;
    }
    std::vector<Connect> connects() const {
        std::lock_guard lock(mutex_);
        return connects_;
    }
    std::vector<Status> statuses() const {
        std::lock_guard lock(mutex_);
        return statuses_;
    }
    std::uint64_t refused_batches() const {
        std::lock_guard lock(mutex_);
        return refused_batches_;
    }
    std::map<std::uint64_t, nlohmann::json> events() const {
        std::lock_guard lock(mutex_);
        return events_;
    }
    std::uint64_t duplicates() const {
        std::lock_guard lock(mutex_);
        return duplicates_;
    }
    std::uint64_t event_requests() const {
        std::lock_guard lock(mutex_);
        return event_requests_;
    }
    std::vector<std::string> sent_types() const {
        std::lock_guard lock(mutex_);
        return sent_types_;
    }
    // TCP connections open now, and accepted since the fake was made.
    int connections_open() const { return connections_open_; }
    int connections_accepted() const { return connections_accepted_; }
    std::optional<Status> last_status_matching(const std::function<bool(const nlohmann::json&)>& p) const {
        std::lock_guard lock(mutex_);
        for (auto it = statuses_.rbegin(); it != statuses_.rend(); ++it) {
            if (p(it->body)) {
                return *it;
            }
        }
        return std::nullopt;
    }

private:
    using tcp = boost::asio::ip::tcp;
    struct Generation {
        std::uint64_t generation = 0;
        std::string hash;
        ruleset::Ruleset ruleset;
    };
    struct Stream {
        std::deque<std::string> lines;  // messages to send, in order
        bool closed = false;
        std::string holds_hash;  // what the enforcer has once it applied what we sent
        std::function<void()> wake;  // posts to the I/O thread: the writer looks again
    };
    struct Answer {
        int status = 200;
        std::string body;  // JSON, or empty
    };

    // The daemon test forks the enforcer from this process: without this it would inherit
    // the listening socket (a restart could not bind the port again) and every connection
    // (a stopped fake would not close the enforcer's channel).
    static void close_on_exec(int fd) { ::fcntl(fd, F_SETFD, ::fcntl(fd, F_GETFD) | FD_CLOEXEC); }

    static void wake(Stream& s) {
        if (s.wake) {
            s.wake();
        }
    }

    // Called with mutex_ held.
    void push_desired(Stream& s) {
        if (!desired_ || s.holds_hash == desired_hash_) {
            return;
        }
        auto base = sent_history_.find(s.holds_hash);
        if (base != sent_history_.end() && !s.holds_hash.empty()) {
            const auto& old = base->second.ruleset;
            const auto diff = ruleset::diff_rulesets(old, desired_->ruleset);
            s.lines.push_back(nlohmann::json{{"type", "diff"},
                                             {"base_generation", base->second.generation},
                                             {"base_hash", base->second.hash},
                                             {"generation", desired_->generation},
                                             {"hash", desired_->hash},
                                             {"diff", ruleset::diff_to_wire(diff, old, desired_->ruleset)}}
                                  .dump());
            sent_types_.push_back("diff");
        } else {
            s.lines.push_back(nlohmann::json{{"type", "ruleset"},
                                             {"generation", desired_->generation},
                                             {"hash", desired_->hash},
                                             {"ruleset", ruleset::to_json(desired_->ruleset)}}
                                  .dump());
            sent_types_.push_back("ruleset");
        }
        s.holds_hash = desired_hash_;
    }

    // 401 without a valid credential, 403 for another enforcer's path; nullopt when allowed.
    std::optional<Answer> authorize(const std::string& header, const std::string& id) {
        std::lock_guard lock(mutex_);
        const std::string prefix = "Bearer ";
        if (header.rfind(prefix, 0) != 0 || credential_.empty() || header.substr(prefix.size()) != credential_) {
            return Answer{401, R"({"error":"unauthenticated"})"};
        }
        if (id != enforcer_) {
            return Answer{403, R"({"error":"forbidden"})"};
        }
        return std::nullopt;
    }

    Answer enroll(const std::string& text) {
        auto body = nlohmann::json::parse(text, nullptr, false);
        std::lock_guard lock(mutex_);
        const auto token = body.is_object() ? body.value("token", "") : "";
        auto it = tokens_.find(token);
        if (!body.is_object() || body.value("enforcer", "") != enforcer_ || it == tokens_.end() || it->second ||
            !body.contains("version") || !body.contains("hostname")) {
            return {401, R"({"error":"invalid token"})"};
        }
        it->second = true;  // one-time
        ++enrollments_;
        credential_ = "cred-" + std::to_string(enrollments_) + "-" + token;
        return {201, nlohmann::json{{"enforcer", enforcer_}, {"credential", credential_}}.dump()};
    }

    Answer status(const std::string& id, std::string_view text) {
        auto body = nlohmann::json::parse(text, nullptr, false);
        if (!body.is_object() || !body.contains("generation") || !body.contains("hash") || !body.contains("state") ||
            !body.contains("enforcer_time_ms")) {
            return {400, R"({"error":"bad status"})"};
        }
        std::lock_guard lock(mutex_);
        statuses_.push_back({id, body, fake_now_ms()});
        return {200, nlohmann::json{{"controller_time_ms", fake_now_ms()}}.dump()};
    }

    Answer ingest(std::string_view text) {
        auto body = nlohmann::json::parse(text, nullptr, false);
        std::lock_guard lock(mutex_);
        if (fail_events_) {
            return {503, {}};
        }
        if (!body.is_object() || !body.contains("events") || !body["events"].is_array() ||
            body["events"].size() > 5000 || text.size() > 8 * 1024 * 1024) {
            return {400, R"({"error":"bad events"})"};
        }
        // A batch holding an event marked "poison" is refused whole, as the real controller
        // refuses a batch with one invalid event (422, nothing stored).
        for (std::size_t i = 0; i < body["events"].size(); ++i) {
            const auto& e = body["events"][i];
            if (e.contains("event") && e["event"].is_object() && e["event"].value("poison", false)) {
                ++refused_batches_;
                return {422, nlohmann::json{{"error", {{"code", "invalid-document"},
                                                       {"message", "poison event"},
                                                       {"pointer", "/events/" + std::to_string(i)}}}}
                                 .dump()};
            }
        }
        std::uint64_t accepted = 0;
        std::uint64_t dups = 0;
        std::uint64_t through = 0;
        for (const auto& e : body["events"]) {
            const auto seq = e.at("seq").get<std::uint64_t>();
            through = std::max(through, seq);
            if (events_.emplace(seq, e.at("event")).second) {
                ++accepted;
            } else {
                ++dups;
            }
        }
        duplicates_ += dups;
        ++event_requests_;
        return {200, nlohmann::json{{"accepted", accepted}, {"duplicates", dups}, {"through_seq", through}}.dump()};
    }

    boost::asio::awaitable<void> accept_loop() {
        for (;;) {
            boost::system::error_code ec;
            auto socket = co_await acceptor_->async_accept(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
            if (ec) {
                co_return;
            }
            close_on_exec(socket.native_handle());
            ++connections_accepted_;
            boost::asio::co_spawn(*io_, serve(std::move(socket)), boost::asio::detached);
        }
    }

    // One TCP connection: HTTP requests (keep-alive) until one asks for the WebSocket.
    boost::asio::awaitable<void> serve(tcp::socket socket) {
        namespace http = boost::beast::http;
        ++connections_open_;
        struct Count {
            std::atomic<int>& open;
            ~Count() { --open; }
        } count{connections_open_};
        boost::beast::tcp_stream stream(std::move(socket));
        boost::beast::flat_buffer buffer;
        for (;;) {
            boost::system::error_code ec;
            http::request<http::string_body> request;
            co_await http::async_read(stream, buffer, request, boost::asio::redirect_error(boost::asio::use_awaitable, ec));
            if (ec) {
                co_return;
            }
            const std::string target(request.target());
            const std::string path = target.substr(0, target.find('?'));
            const std::string prefix = "/api/v1/enforcers/";
            Answer answer{404, R"({"error":"not-found"})"};
            if (request.method() == http::verb::post && path == prefix + "enroll") {
                answer = enroll(request.body());
            } else if (path.rfind(prefix, 0) == 0 && path.size() > prefix.size() + 8 &&
                       path.ends_with("/channel")) {
                const auto id = path.substr(prefix.size(), path.size() - prefix.size() - 8);
                if (!boost::beast::websocket::is_upgrade(request)) {
                    answer = {426, R"({"error":"this fake serves the channel as a WebSocket only"})"};
                } else if (auto refused = authorize(std::string(request[http::field::authorization]), id)) {
                    answer = *refused;
                } else {
                    co_await channel(std::move(stream), request, id, target);
                    co_return;
                }
            }
            http::response<http::string_body> response{static_cast<http::status>(answer.status), request.version()};
            response.set(http::field::content_type, "application/json");
            response.keep_alive(request.keep_alive());
            response.body() = answer.body;
            response.prepare_payload();
            co_await http::async_write(stream, response, boost::asio::redirect_error(boost::asio::use_awaitable, ec));
            if (ec || !request.keep_alive()) {
                co_return;
            }
        }
    }

    static std::string query_value(const std::string& target, const std::string& key) {
        const auto q = target.find('?');
        if (q == std::string::npos) {
            return {};
        }
        std::string rest = target.substr(q + 1);
        for (std::size_t at = 0; at <= rest.size();) {
            auto end = rest.find('&', at);
            if (end == std::string::npos) {
                end = rest.size();
            }
            const auto pair = rest.substr(at, end - at);
            if (pair.rfind(key + "=", 0) == 0) {
                return pair.substr(key.size() + 1);
            }
            at = end + 1;
        }
        return {};
    }

    // The channel (protocol 3): this coroutine writes what the stream queues, a reader beside
    // it answers the enforcer's requests; both end when either side closes.
    boost::asio::awaitable<void> channel(boost::beast::tcp_stream stream,
                                         const boost::beast::http::request<boost::beast::http::string_body>& upgrade,
                                         std::string id, std::string target) {
        namespace websocket = boost::beast::websocket;
        using boost::asio::redirect_error;
        using boost::asio::use_awaitable;
        struct Link {
            websocket::stream<boost::beast::tcp_stream> socket;
            boost::asio::steady_timer timer;
            bool reader_done = false;
            explicit Link(boost::beast::tcp_stream s)
                : socket(std::move(s)), timer(socket.get_executor()) {}
        };
        auto link = std::make_shared<Link>(std::move(stream));
        boost::system::error_code ec;
        link->socket.read_message_max(64 * 1024 * 1024);
        // Bounds the closing handshake at stop() (the handshake timeout covers it).
        link->socket.set_option(websocket::stream_base::timeout{std::chrono::seconds(1), websocket::stream_base::none(), false});
        co_await link->socket.async_accept(upgrade, redirect_error(use_awaitable, ec));
        if (ec) {
            co_return;
        }
        auto s = std::make_shared<Stream>();
        {
            std::lock_guard lock(mutex_);
            // At most one stream per enforcer: a new one closes the older.
            for (auto& old : streams_) {
                old->closed = true;
                wake(*old);
            }
            streams_.clear();
            Connect c{id, 0, query_value(target, "hash")};
            const auto g = query_value(target, "generation");
            c.generation = g.empty() ? 0 : std::stoull(g);
            connects_.push_back(c);
            s->holds_hash = c.hash;
            s->lines.push_back(nlohmann::json{{"type", "hello"},
                                              {"controller_time_ms", fake_now_ms()},
                                              {"heartbeat_interval_ms", heartbeat_ms_.load()},
                                              {"desired_generation", generation_}}
                                   .dump());
            push_desired(*s);
            std::weak_ptr<Link> weak = link;
            s->wake = [weak, io = io_.get()] {
                boost::asio::post(*io, [weak] {
                    if (auto l = weak.lock()) {
                        l->timer.cancel();
                    }
                });
            };
            streams_.push_back(s);
        }
        boost::asio::co_spawn(
            *io_,
            [this, link, s, id]() -> boost::asio::awaitable<void> {
                boost::beast::flat_buffer buffer;
                for (;;) {
                    boost::system::error_code read_error;
                    co_await link->socket.async_read(buffer, redirect_error(use_awaitable, read_error));
                    if (read_error) {
                        break;
                    }
                    const auto message = boost::beast::buffers_to_string(buffer.data());
                    buffer.consume(buffer.size());
                    {
                        std::lock_guard lock(mutex_);
                        if (stopping_) {
                            break;  // shutting down: not handled, so the enforcer sends it again later
                        }
                    }
                    const auto newline = message.find('\n');
                    const auto head = nlohmann::json::parse(message.substr(0, newline), nullptr, false);
                    if (newline == std::string::npos || !head.is_object() || !head.contains("id") ||
                        !head["id"].is_number_unsigned() || !head.contains("request")) {
                        break;  // as the controller: a message without a head line closes
                    }
                    const std::string_view body = std::string_view(message).substr(newline + 1);
                    const auto kind = head.value("request", "");
                    const Answer answer = kind == "status"   ? status(id, body)
                                          : kind == "events" ? ingest(body)
                                                             : Answer{400, R"({"error":"unknown-request"})"};
                    std::lock_guard lock(mutex_);
                    s->lines.push_back(R"({"type":"reply","id":)" + std::to_string(head["id"].get<std::uint64_t>()) +
                                       ",\"status\":" + std::to_string(answer.status) +
                                       ",\"body\":" + (answer.body.empty() ? std::string("null") : answer.body) + "}");
                    wake(*s);
                }
                link->reader_done = true;
                link->timer.cancel();
            },
            boost::asio::detached);
        auto last_sent = std::chrono::steady_clock::now();
        for (;;) {
            std::deque<std::string> out;
            bool last_flush = false;
            {
                std::lock_guard lock(mutex_);
                if (s->closed) {
                    break;
                }
                // What is queued still goes (replies first of all), then the channel ends.
                last_flush = stopping_ || link->reader_done;
                const auto heartbeat = std::chrono::milliseconds(heartbeat_ms_.load());
                if (s->lines.empty() && !silent_ && std::chrono::steady_clock::now() - last_sent >= heartbeat) {
                    s->lines.push_back(
                        nlohmann::json{{"type", "heartbeat"}, {"controller_time_ms", fake_now_ms()}}.dump());
                }
                out.swap(s->lines);
            }
            for (const auto& message : out) {
                link->socket.text(true);
                co_await link->socket.async_write(boost::asio::buffer(message), redirect_error(use_awaitable, ec));
                if (ec) {
                    break;
                }
                // Replies do not stand in for heartbeats: the enforcer's watchdog counts
                // stream messages only (as the real controller, whose heartbeats ignore them).
                if (!message.starts_with(R"({"type":"reply")")) {
                    last_sent = std::chrono::steady_clock::now();
                }
            }
            if (ec) {
                break;
            }
            if (last_flush) {
                // A closing handshake, not a bare close: closing a socket that still holds
                // unread bytes sends a reset, and the enforcer would lose the replies just
                // written (and send those uploads again).
                if (!link->reader_done) {
                    co_await link->socket.async_close(websocket::close_code::going_away, redirect_error(use_awaitable, ec));
                }
                break;
            }
            if (!out.empty()) {
                continue;
            }
            link->timer.expires_at(last_sent + std::chrono::milliseconds(heartbeat_ms_.load()));
            co_await link->timer.async_wait(redirect_error(use_awaitable, ec));
            ec = {};
        }
        {
            std::lock_guard lock(mutex_);
            s->closed = true;
            s->wake = nullptr;
            std::erase(streams_, s);
        }
        // The reader ends when the connection closes under it.
        boost::beast::get_lowest_layer(link->socket).close();
    }

    std::string enforcer_;
    std::unique_ptr<boost::asio::io_context> io_;
    std::unique_ptr<tcp::acceptor> acceptor_;
    std::thread thread_;
    int port_ = -1;
    std::atomic<int> heartbeat_ms_{200};
    std::atomic<int> connections_open_{0};
    std::atomic<int> connections_accepted_{0};

    mutable std::mutex mutex_;
    bool stopping_ = false;
    bool silent_ = false;
    bool fail_events_ = false;
    std::uint64_t refused_batches_ = 0;
    std::map<std::string, bool> tokens_;  // token -> used
    std::string credential_;
    int enrollments_ = 0;
    std::uint64_t generation_ = 0;
    std::optional<Generation> desired_;
    std::string desired_hash_;
    std::map<std::string, Generation> sent_history_;
    std::vector<std::shared_ptr<Stream>> streams_;
    std::vector<Connect> connects_;
    std::vector<Status> statuses_;
    std::vector<std::string> sent_types_;
    std::map<std::uint64_t, nlohmann::json> events_;
    std::uint64_t duplicates_ = 0;
    std::uint64_t event_requests_ = 0;
};

}  // namespace bulkhead::test
