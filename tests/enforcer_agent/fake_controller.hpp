// A stand-in for the real controller (controller/, which the lead is writing in parallel),
// built on httplib::Server on 127.0.0.1. It serves exactly the enforcer-facing endpoints of
// docs/control-channel.md and nothing else, and records what enforcers send so tests can
// check it:
//   POST /api/v1/enforcers/enroll          one-time token -> 201 credential (401 otherwise)
//   GET  /api/v1/enforcers/{id}/channel    hello, then a ruleset (or nothing when the hash
//                                          matches), pushes (diff / ruleset), heartbeats
//   POST /api/v1/enforcers/{id}/status     ack / heartbeat -> 200 {"controller_time_ms"}
//   POST /api/v1/enforcers/{id}/events     {"events":[{"seq","event"}]} -> 200 {accepted,
//                                          duplicates, through_seq}, stored once per seq
// Bearer credentials are per enforcer (401 without, 403 for another id). stop()/start() on
// the same port simulate a controller restart: the "database" (credentials, desired
// ruleset, stored events) survives, the in-memory knowledge of what was sent does not, so a
// reconnect after a restart gets a full ruleset.
#pragma once

#include "policies/ruleset.hpp"
#include "policies/ruleset_diff.hpp"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
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
        server_ = std::make_unique<httplib::Server>();
        routes(*server_);
        {
            std::lock_guard lock(mutex_);
            stopping_ = false;
            // What was sent lived in memory: after a restart every base is unknown, so
            // the first answer to a reconnect is a full ruleset ("controller restarted").
            sent_history_.clear();
        }
        if (port == 0) {
            port_ = server_->bind_to_any_port("127.0.0.1");
        } else {
            bool bound = false;
            for (int i = 0; i < 200 && !bound; ++i) {
                bound = server_->bind_to_port("127.0.0.1", port);
                if (!bound) {
                    std::this_thread::sleep_for(std::chrono::milliseconds(25));
                }
            }
            port_ = bound ? port : -1;
        }
        if (port_ <= 0) {
            throw std::runtime_error("fake controller: cannot bind 127.0.0.1");
        }
        thread_ = std::thread([this] { server_->listen_after_bind(); });
        eventually([this] { return server_->is_running(); }, std::chrono::seconds(5));
    }

    void stop() {
        if (!server_) {
            return;
        }
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
            for (auto& s : streams_) {
                s->closed = true;
            }
            streams_.clear();
        }
        wake_.notify_all();
        server_->stop();
        if (thread_.joinable()) {
            thread_.join();
        }
        server_.reset();
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
        }
        wake_.notify_all();
        return generation_;
    }
    // A raw line on the connected stream (e.g. a diff with a wrong hash).
    void push_raw(const nlohmann::json& message) {
        std::lock_guard lock(mutex_);
        for (auto& s : streams_) {
            s->lines.push_back(message.dump() + "\n");
        }
        wake_.notify_all();
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
    std::vector<std::string> sent_types() const {
        std::lock_guard lock(mutex_);
        return sent_types_;
    }
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
    struct Generation {
        std::uint64_t generation = 0;
        std::string hash;
        ruleset::Ruleset ruleset;
    };
    struct Stream {
        std::deque<std::string> lines;
        bool closed = false;
        std::string holds_hash;  // what the enforcer has once it applied what we sent
    };

    static std::string line(const nlohmann::json& j) { return j.dump() + "\n"; }

    // Called with mutex_ held.
    void push_desired(Stream& s) {
        if (!desired_ || s.holds_hash == desired_hash_) {
            return;
        }
        auto base = sent_history_.find(s.holds_hash);
        if (base != sent_history_.end() && !s.holds_hash.empty()) {
            const auto& old = base->second.ruleset;
            const auto diff = ruleset::diff_rulesets(old, desired_->ruleset);
            s.lines.push_back(line({{"type", "diff"},
                                    {"base_generation", base->second.generation},
                                    {"base_hash", base->second.hash},
                                    {"generation", desired_->generation},
                                    {"hash", desired_->hash},
                                    {"diff", ruleset::diff_to_wire(diff, old, desired_->ruleset)}}));
            sent_types_.push_back("diff");
        } else {
            s.lines.push_back(line({{"type", "ruleset"},
                                    {"generation", desired_->generation},
                                    {"hash", desired_->hash},
                                    {"ruleset", ruleset::to_json(desired_->ruleset)}}));
            sent_types_.push_back("ruleset");
        }
        s.holds_hash = desired_hash_;
    }

    // 401 without a valid credential, 403 for another enforcer's path.
    bool authorize(const httplib::Request& req, httplib::Response& res, const std::string& id) {
        const auto header = req.get_header_value("Authorization");
        std::lock_guard lock(mutex_);
        const std::string prefix = "Bearer ";
        if (header.rfind(prefix, 0) != 0 || credential_.empty() || header.substr(prefix.size()) != credential_) {
            res.status = 401;
            res.set_content(R"({"error":"unauthenticated"})", "application/json");
            return false;
        }
        if (id != enforcer_) {
            res.status = 403;
            res.set_content(R"({"error":"forbidden"})", "application/json");
            return false;
        }
        return true;
    }

    void routes(httplib::Server& server) {
        server.Post("/api/v1/enforcers/enroll", [this](const httplib::Request& req, httplib::Response& res) {
            auto body = nlohmann::json::parse(req.body, nullptr, false);
            std::lock_guard lock(mutex_);
            const auto token = body.is_object() ? body.value("token", "") : "";
            auto it = tokens_.find(token);
            if (!body.is_object() || body.value("enforcer", "") != enforcer_ || it == tokens_.end() || it->second ||
                !body.contains("version") || !body.contains("hostname")) {
                res.status = 401;
                res.set_content(R"({"error":"invalid token"})", "application/json");
                return;
            }
            it->second = true;  // one-time
            ++enrollments_;
            credential_ = "cred-" + std::to_string(enrollments_) + "-" + token;
            res.status = 201;
            res.set_content(nlohmann::json{{"enforcer", enforcer_}, {"credential", credential_}}.dump(),
                            "application/json");
        });
        server.Get(R"(/api/v1/enforcers/([^/]+)/channel)", [this](const httplib::Request& req, httplib::Response& res) {
            if (!authorize(req, res, req.matches[1])) {
                return;
            }
            auto stream = std::make_shared<Stream>();
            {
                std::lock_guard lock(mutex_);
                // At most one stream per enforcer: a new one closes the older.
                for (auto& s : streams_) {
                    s->closed = true;
                }
                streams_.clear();
                Connect c{req.matches[1], 0, req.get_param_value("hash")};
                const auto g = req.get_param_value("generation");
                c.generation = g.empty() ? 0 : std::stoull(g);
                connects_.push_back(c);
                stream->holds_hash = c.hash;
                stream->lines.push_back(line({{"type", "hello"},
                                              {"controller_time_ms", fake_now_ms()},
                                              {"heartbeat_interval_ms", heartbeat_ms_.load()},
                                              {"desired_generation", generation_}}));
                push_desired(*stream);
                streams_.push_back(stream);
            }
            wake_.notify_all();
            res.set_chunked_content_provider(
                "application/x-ndjson",
                [this, stream](std::size_t, httplib::DataSink& sink) {
                    std::deque<std::string> out;
                    {
                        std::unique_lock lock(mutex_);
                        wake_.wait_for(lock, std::chrono::milliseconds(heartbeat_ms_.load()), [&] {
                            return stream->closed || stopping_ || !stream->lines.empty();
                        });
                        if (stream->closed || stopping_) {
                            return false;
                        }
                        if (stream->lines.empty() && !silent_) {
                            stream->lines.push_back(line({{"type", "heartbeat"}, {"controller_time_ms", fake_now_ms()}}));
                        }
                        out.swap(stream->lines);
                    }
                    for (const auto& l : out) {
                        if (!sink.write(l.data(), l.size())) {
                            return false;
                        }
                    }
                    return true;
                },
                [this, stream](bool) {
                    std::lock_guard lock(mutex_);
                    stream->closed = true;
                });
        });
        server.Post(R"(/api/v1/enforcers/([^/]+)/status)", [this](const httplib::Request& req, httplib::Response& res) {
            if (!authorize(req, res, req.matches[1])) {
                return;
            }
            auto body = nlohmann::json::parse(req.body, nullptr, false);
            if (!body.is_object() || !body.contains("generation") || !body.contains("hash") ||
                !body.contains("state") || !body.contains("enforcer_time_ms")) {
                res.status = 400;
                res.set_content(R"({"error":"bad status"})", "application/json");
                return;
            }
            {
                std::lock_guard lock(mutex_);
                statuses_.push_back({req.matches[1], body, fake_now_ms()});
            }
            res.set_content(nlohmann::json{{"controller_time_ms", fake_now_ms()}}.dump(), "application/json");
        });
        server.Post(R"(/api/v1/enforcers/([^/]+)/events)", [this](const httplib::Request& req, httplib::Response& res) {
            if (!authorize(req, res, req.matches[1])) {
                return;
            }
            auto body = nlohmann::json::parse(req.body, nullptr, false);
            std::lock_guard lock(mutex_);
            if (fail_events_) {
                res.status = 503;
                return;
            }
            if (!body.is_object() || !body.contains("events") || !body["events"].is_array() ||
                body["events"].size() > 5000 || req.body.size() > 8 * 1024 * 1024) {
                res.status = 400;
                res.set_content(R"({"error":"bad events"})", "application/json");
                return;
            }
            // A batch holding an event marked "poison" is refused whole, as the real
            // controller refuses a batch with one invalid event (422, nothing stored).
            for (std::size_t i = 0; i < body["events"].size(); ++i) {
                const auto& e = body["events"][i];
                if (e.contains("event") && e["event"].is_object() && e["event"].value("poison", false)) {
                    ++refused_batches_;
                    res.status = 422;
                    res.set_content(nlohmann::json{{"error", {{"code", "invalid-document"},
                                                              {"message", "poison event"},
                                                              {"pointer", "/events/" + std::to_string(i)}}}}
                                        .dump(),
                                    "application/json");
                    return;
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
            res.set_content(nlohmann::json{{"accepted", accepted}, {"duplicates", dups}, {"through_seq", through}}.dump(),
                            "application/json");
        });
    }

    std::string enforcer_;
    std::unique_ptr<httplib::Server> server_;
    std::thread thread_;
    int port_ = -1;
    std::atomic<int> heartbeat_ms_{200};

    mutable std::mutex mutex_;
    std::condition_variable wake_;
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
