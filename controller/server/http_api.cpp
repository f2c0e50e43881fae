#include "controller/server/http_api.hpp"
#include "controller/server/path_template.hpp"
#include "controller/server/static_files.hpp"

#include "policies/diagnostics.hpp"
#include "policies/json_reader.hpp"

#include <algorithm>
#include <charconv>
#include <ctime>
#include <deque>
#include <filesystem>
#include <limits>
#include <mutex>

#include <spdlog/spdlog.h>

namespace bulkhead::controller {

using nlohmann::json;

namespace {

constexpr std::size_t max_body_bytes = 16 * 1024 * 1024;

void send_json(httplib::Response& res, int status, const json& body) {
    res.status = status;
    res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

// The one table from a service's error kind to an HTTP status.
int status_of(ErrorKind kind) {
    switch (kind) {
    case ErrorKind::BadRequest: return 400;
    case ErrorKind::Unauthenticated: return 401;
    case ErrorKind::Forbidden: return 403;
    case ErrorKind::NotFound: return 404;
    case ErrorKind::Conflict: return 409;
    case ErrorKind::TooLarge: return 413;
    case ErrorKind::InvalidDocument: return 422;
    case ErrorKind::Unavailable: return 503;
    case ErrorKind::Internal: return 500;
    }
    return 500;
}

void send_error(httplib::Response& res, const ServiceError& e) {
    json body{{"code", e.code}, {"message", e.message}};
    if (e.details.is_object()) {
        for (const auto& [key, value] : e.details.items()) {
            body[key] = value;
        }
    }
    send_json(res, status_of(e.kind), json{{"error", body}});
}

void send_result(httplib::Response& res, const ServiceResult& result, int success_status = 200) {
    if (result) {
        send_json(res, success_status, *result);
    } else {
        send_error(res, result.error());
    }
}

// Request bodies go through the same strict reader as policy files: duplicate keys, depth
// and size limits, and errors with a JSON pointer and a line/column.
// JSON endpoints take application/json only (parameters such as charset allowed): a policy
// sent as text/plain, a form or XML is refused, never stored as a draft.
bool json_content_type(const httplib::Request& req, httplib::Response& res) {
    std::string type = req.get_header_value("Content-Type");
    type = type.substr(0, type.find(';'));
    while (!type.empty() && (type.back() == ' ' || type.back() == '\t')) {
        type.pop_back();
    }
    std::transform(type.begin(), type.end(), type.begin(), [](unsigned char c) { return std::tolower(c); });
    if (type == "application/json") {
        return true;
    }
    send_json(res, 415,
              json{{"error", json{{"code", "unsupported-media-type"},
                                  {"message", "the body must be JSON sent as Content-Type: application/json" +
                                                  std::string(type.empty() ? " (the request has no Content-Type)"
                                                                           : ", not " + type)}}}});
    return false;
}

// A JSON request body through the strict reader (the HTTP routes and the channel socket's
// uploads share it).
std::optional<json> parse_body(std::string_view text, httplib::Response& res) {
    if (text.empty()) {
        send_error(res, ServiceError{ErrorKind::BadRequest, "empty-body", "the request needs a JSON body", json{{"pointer", ""}}});
        return std::nullopt;
    }
    auto parsed = policy::read_json(text, "body");
    if (!parsed) {
        const auto& first = parsed.error().front();
        send_error(res, ServiceError{ErrorKind::BadRequest, "invalid-json", first.message,
                                 json{{"pointer", first.pointer}, {"errors", policy::diagnostics_to_json(parsed.error())}}});
        return std::nullopt;
    }
    return std::move(*parsed);
}

std::optional<json> read_body(const httplib::Request& req, httplib::Response& res) {
    if (!req.body.empty() && !json_content_type(req, res)) {
        return std::nullopt;
    }
    return parse_body(req.body, res);
}

std::optional<std::int64_t> parse_integer(std::string_view text) {
    std::int64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{} || end != text.data() + text.size()) {
        return std::nullopt;
    }
    return value;
}

// Milliseconds since the epoch, or RFC 3339 UTC ("2026-11-23T10:00:00Z", fractions allowed).
std::optional<std::int64_t> parse_time_ms(const std::string& text) {
    if (auto ms = parse_integer(text)) {
        return *ms;
    }
    std::tm tm{};
    int fraction_ms = 0;
    const char* rest = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
    if (rest == nullptr) {
        return std::nullopt;
    }
    if (*rest == '.') {
        ++rest;
        int digits = 0;
        while (*rest >= '0' && *rest <= '9') {
            if (digits < 3) {
                fraction_ms = fraction_ms * 10 + (*rest - '0');
            }
            ++digits;
            ++rest;
        }
        for (; digits < 3; ++digits) {
            fraction_ms *= 10;
        }
    }
    if (std::string_view(rest) != "Z") {
        return std::nullopt;
    }
    return static_cast<std::int64_t>(timegm(&tm)) * 1000 + fraction_ms;
}

// The control channel as a LiveBody: one NDJSON line per poll.
class ChannelBody final : public LiveBody {
public:
    explicit ChannelBody(std::unique_ptr<ChannelStream> stream) : stream_(std::move(stream)) {}
    std::optional<std::string> poll() override { return stream_->poll_line(); }
    void set_wake(std::function<void()> wake) override { stream_->set_wake(std::move(wake)); }
    std::chrono::steady_clock::time_point next_due() const override { return stream_->next_heartbeat(); }

private:
    std::unique_ptr<ChannelStream> stream_;
};

// The control channel over WebSocket (protocol 3): the stream's messages down, one per
// WebSocket message, and the enforcer's requests up on the same connection. A request is a
// head line {"request":"status"|"events","id":N}, a newline, and the body the HTTP endpoint
// of that name takes; its answer is queued as {"type":"reply","id":N,"status":S,"body":B}
// with what that endpoint would have answered. "type" comes first so that the enforcer
// tells a reply from a megabyte ruleset without parsing the ruleset.
class ChannelSocketBody final : public DuplexBody {
public:
    ChannelSocketBody(std::unique_ptr<ChannelStream> stream, ControllerServices& services, Caller caller,
                      std::string enforcer)
        : stream_(std::move(stream)), services_(services), caller_(std::move(caller)), enforcer_(std::move(enforcer)) {}

    std::optional<std::string> poll() override {
        if (auto reply = take_reply()) {
            return reply;
        }
        return stream_->poll_line();
    }
    std::optional<std::string> take_reply() override {
        {
            std::lock_guard lock(mutex_);
            if (!replies_.empty()) {
                auto reply = std::move(replies_.front());
                replies_.pop_front();
                return reply;
            }
        }
        return stream_->take_prepared();
    }
    void set_wake(std::function<void()> wake) override {
        {
            std::lock_guard lock(mutex_);
            wake_ = wake;
        }
        stream_->set_wake(std::move(wake));
    }
    std::chrono::steady_clock::time_point next_due() const override { return stream_->next_heartbeat(); }

    bool receive(std::string_view message) override {
        const auto newline = message.find('\n');
        if (newline == std::string_view::npos) {
            spdlog::warn("channel: enforcer {}: a request without a head line; closing", enforcer_);
            return false;
        }
        const auto head = json::parse(message.substr(0, newline), nullptr, false);
        if (!head.is_object() || !head.contains("id") || !head["id"].is_number_unsigned() ||
            !head.contains("request") || !head["request"].is_string()) {
            spdlog::warn("channel: enforcer {}: a request head that is not {{\"request\":…,\"id\":N}}; closing",
                         enforcer_);
            return false;
        }
        const auto id = head["id"].get<std::uint64_t>();
        const auto kind = head["request"].get<std::string>();
        const auto body = message.substr(newline + 1);
        httplib::Response answer;
        if (kind == "status") {
            if (auto parsed = parse_body(body, answer)) {
                send_result(answer, services_.fleet.report_status(caller_, enforcer_, *parsed));
            }
        } else if (kind == "events") {
            send_result(answer, services_.events.ingest_events(caller_, enforcer_, body));
        } else {
            send_error(answer, ServiceError{ErrorKind::BadRequest, "unknown-request",
                                            "the channel takes \"status\" and \"events\" requests, not \"" + kind + "\"",
                                            json{{"pointer", "/request"}}});
        }
        std::string reply = "{\"type\":\"reply\",\"id\":" + std::to_string(id) +
                            ",\"status\":" + std::to_string(answer.status) + ",\"body\":";
        reply += answer.body.empty() ? std::string("null") : answer.body;
        reply += "}\n";
        std::function<void()> wake;
        {
            std::lock_guard lock(mutex_);
            replies_.push_back(std::move(reply));
            wake = wake_;
        }
        if (wake) {
            wake();
        }
        return true;
    }

private:
    std::unique_ptr<ChannelStream> stream_;
    ControllerServices& services_;
    Caller caller_;
    std::string enforcer_;
    std::mutex mutex_;
    std::deque<std::string> replies_;
    std::function<void()> wake_;
};

bool wants_websocket(const httplib::Request& request) {
    auto upgrade = request.get_header_value("Upgrade");
    std::transform(upgrade.begin(), upgrade.end(), upgrade.begin(), [](unsigned char c) { return std::tolower(c); });
    return upgrade == "websocket";
}

// The dashboard's Server-Sent Events: what the bus queued since the last poll, a note of
// how many were lost when the browser fell behind, and a comment line every 15 s so that
// proxies and the browser see a live stream.
class EventStreamBody final : public LiveBody {
public:
    explicit EventStreamBody(EventBus& bus) : bus_(bus), subscription_(bus.subscribe()) {}
    ~EventStreamBody() override { bus_.unsubscribe(subscription_); }

    std::optional<std::string> poll() override {
        if (!hello_sent_) {
            hello_sent_ = true;
            return sent("retry: 2000\nevent: hello\ndata: {}\n\n");
        }
        std::uint64_t lost = 0;
        auto messages = subscription_->next(std::chrono::milliseconds(0), lost);
        if (subscription_->closed() && messages.empty()) {
            return std::nullopt;
        }
        std::string out;
        if (lost > 0) {
            out += "event: lost\ndata: {\"messages\":" + std::to_string(lost) + "}\n\n";
        }
        for (const auto& m : messages) {
            out += "id: " + std::to_string(m.id) + "\nevent: " + m.event + "\ndata: " + m.data + "\n\n";
        }
        if (out.empty() && std::chrono::steady_clock::now() >= next_due()) {
            out = ": keep-alive\n\n";
        }
        return out.empty() ? out : sent(std::move(out));
    }
    void set_wake(std::function<void()> wake) override { subscription_->set_wake(std::move(wake)); }
    std::chrono::steady_clock::time_point next_due() const override { return last_sent_ + std::chrono::seconds(15); }

private:
    std::string sent(std::string text) {
        last_sent_ = std::chrono::steady_clock::now();
        return text;
    }
    EventBus& bus_;
    std::shared_ptr<EventBus::Subscription> subscription_;
    bool hello_sent_ = false;
    std::chrono::steady_clock::time_point last_sent_ = std::chrono::steady_clock::now();
};

struct QueryError {
    std::string parameter;
    std::string message;
};

class QueryReader {
public:
    explicit QueryReader(const httplib::Request& req) : req_(req) {}

    std::optional<std::string> text(const std::string& name, std::size_t max = 512) {
        if (!req_.has_param(name.c_str())) {
            return std::nullopt;
        }
        auto value = req_.get_param_value(name.c_str());
        if (value.size() > max) {
            fail(name, "longer than " + std::to_string(max) + " characters");
            return std::nullopt;
        }
        return value;
    }
    std::optional<std::int64_t> integer(const std::string& name, std::int64_t min, std::int64_t max) {
        auto value = text(name);
        if (!value) {
            return std::nullopt;
        }
        auto n = parse_integer(*value);
        if (!n || *n < min || *n > max) {
            fail(name, "must be an integer from " + std::to_string(min) + " to " + std::to_string(max));
            return std::nullopt;
        }
        return n;
    }
    std::optional<std::int64_t> time_ms(const std::string& name) {
        auto value = text(name);
        if (!value) {
            return std::nullopt;
        }
        auto ms = parse_time_ms(*value);
        // Up to the year 2200: times become nanoseconds in int64 further on.
        if (!ms || *ms < 0 || *ms > 7'258'118'400'000) {
            fail(name, "must be milliseconds since the epoch or an RFC 3339 UTC time (1970-2200)");
            return std::nullopt;
        }
        return ms;
    }
    void fail(const std::string& name, std::string message) {
        if (!error_) {
            error_ = QueryError{name, std::move(message)};
        }
    }
    // Sends a 400 naming the first bad parameter; true if one was bad.
    bool failed(httplib::Response& res) const {
        if (!error_) {
            return false;
        }
        send_error(res, ServiceError{ErrorKind::BadRequest, "invalid-parameter", "query parameter \"" + error_->parameter + "\" " + error_->message,
                                 json{{"parameter", error_->parameter}}});
        return true;
    }

private:
    const httplib::Request& req_;
    std::optional<QueryError> error_;
};

std::string bearer_token(const httplib::Request& req, bool allow_query_token) {
    const auto header = req.get_header_value("Authorization");
    constexpr std::string_view prefix = "Bearer ";
    if (header.size() > prefix.size() && header.compare(0, prefix.size(), prefix) == 0) {
        return header.substr(prefix.size());
    }
    // Browsers' EventSource cannot set headers; the event stream alone accepts the token
    // as a query parameter.
    if (allow_query_token && req.has_param("access_token")) {
        return req.get_param_value("access_token");
    }
    return {};
}

std::chrono::milliseconds wait_parameter(QueryReader& query) {
    auto wait = query.integer("wait_ms", 0, 10000);
    return std::chrono::milliseconds(wait.value_or(0));
}

EventQuery event_query(QueryReader& query) {
    EventQuery q;
    if (auto from = query.time_ms("from")) {
        q.from_ns = *from * 1'000'000;
    }
    if (auto to = query.time_ms("to")) {
        q.to_ns = *to * 1'000'000;
    }
    q.workload = query.text("workload", 256);
    q.address = query.text("address", 64);
    if (auto port = query.integer("port", 0, 65535)) {
        q.port = static_cast<std::uint16_t>(*port);
    }
    q.reason = query.text("reason", 32);
    if (q.reason && *q.reason != "default" && *q.reason != "deny" && *q.reason != "decoy" &&
        *q.reason != "tripwire" && *q.reason != "quarantine" && *q.reason != "spoof" && *q.reason != "allow" &&
        *q.reason != "unidentified") {
        query.fail("reason", "must be one of default, deny, decoy, tripwire, quarantine, spoof, allow, unidentified");
    }
    q.type = query.text("type", 64);
    q.enforcer = query.text("enforcer", 128);
    q.after_id = query.integer("after_id", 0, INT64_MAX);
    // Paging newest first: ids below the last page's oldest (its next_before_id).
    if (auto before = query.integer("before_id", 1, INT64_MAX)) {
        q.through_id = *before - 1;
    }
    q.limit = static_cast<std::size_t>(query.integer("limit", 1, 10000).value_or(100));
    if (auto order = query.text("order", 8)) {
        if (*order == "asc") {
            q.newest_first = false;
        } else if (*order != "desc") {
            query.fail("order", "must be asc or desc");
        }
    }
    if (q.after_id && q.newest_first && !query.text("order")) {
        q.newest_first = false;  // paging with a cursor reads forward
    }
    return q;
}

}  // namespace

struct HttpApi::CompiledRoute {
    const Route& route;
    PathTemplate pattern;
};

HttpApi::HttpApi(ControllerServices& service, std::string openapi_document, std::string webui_dir, RateLimit api_rate)
    : service_(service), openapi_document_(std::move(openapi_document)), webui_dir_(std::move(webui_dir)),
      rate_limiter_(api_rate) {
    build_routes();
    for (const auto& route : routes_) {
        compiled_.push_back(std::make_unique<CompiledRoute>(CompiledRoute{route, PathTemplate(route.path)}));
    }
    if (!webui_dir_.empty()) {
        static_files_ = std::make_unique<StaticFiles>(webui_dir_);
    }
}

HttpApi::~HttpApi() = default;

void HttpApi::add(std::string method, std::string path, std::optional<Permission> permission,
                  std::function<void(RouteContext&)> handler) {
    routes_.push_back(Route{std::move(method), std::move(path), permission, std::move(handler)});
}

void HttpApi::build_routes() {
    auto& s = service_;
    const auto id_of = [](RouteContext& c, std::size_t index) -> std::optional<std::int64_t> {
        auto id = parse_integer(c.params.at(index));
        if (!id || *id <= 0) {
            send_error(c.response, ServiceError{ErrorKind::BadRequest, "invalid-parameter", "\"" + c.params.at(index) + "\" is not an id",
                                            json{{"parameter", "id"}}});
            return std::nullopt;
        }
        return id;
    };

    add("GET", "/api/v1/health", std::nullopt, [&s](RouteContext& c) { send_result(c.response, s.health()); });
    add("GET", "/api/v1/openapi.json", std::nullopt, [this](RouteContext& c) {
        c.response.set_content(openapi_document_, "application/json");
    });
    add("GET", "/api/v1/metrics", Permission::Read, [this](RouteContext& c) {
        if (!metrics_) {
            transport_error(c.response, 503, "unavailable", "metrics are not served by this process");
            return;
        }
        c.response.status = 200;
        c.response.set_content(metrics_(), "text/plain; version=0.0.4; charset=utf-8");
    });
    add("GET", "/api/v1/evidence", Permission::Read, [this](RouteContext& c) {
        if (!evidence_status_) {
            transport_error(c.response, 503, "unavailable", "evidence is not served by this process");
            return;
        }
        send_json(c.response, 200, evidence_status_());
    });
    add("GET", "/api/v1/whoami", Permission::Read, [](RouteContext& c) {
        send_json(c.response, 200, json{{"name", c.caller.name}, {"role", std::string(to_string(c.caller.role))}});
    });

    // Policies.
    add("POST", "/api/v1/policies/validate", Permission::WritePolicy, [&s](RouteContext& c) {
        if (auto body = read_body(c.request, c.response)) {
            send_result(c.response, s.policies.validate_policy(*body));
        }
    });
    add("POST", "/api/v1/policies", Permission::WritePolicy, [&s](RouteContext& c) {
        if (auto body = read_body(c.request, c.response)) {
            send_result(c.response, s.policies.upload_policy(c.caller, *body), 201);
        }
    });
    add("GET", "/api/v1/policies", Permission::Read, [&s](RouteContext& c) {
        QueryReader q(c.request);
        auto limit = q.integer("limit", 1, 1000);
        if (!q.failed(c.response)) {
            send_result(c.response, s.policies.list_policies(static_cast<std::size_t>(limit.value_or(100))));
        }
    });
    add("GET", "/api/v1/policies/active", Permission::Read,
        [&s](RouteContext& c) { send_result(c.response, s.policies.active_policy()); });
    add("POST", "/api/v1/policies/rollback", Permission::WritePolicy,
        [&s](RouteContext& c) { send_result(c.response, s.policies.rollback_policy(c.caller)); });
    add("GET", "/api/v1/policies/{id}", Permission::Read, [&s, id_of](RouteContext& c) {
        if (auto id = id_of(c, 0)) {
            send_result(c.response, s.policies.get_policy(*id));
        }
    });
    add("GET", "/api/v1/policies/{id}/diff", Permission::Read, [&s, id_of](RouteContext& c) {
        if (auto id = id_of(c, 0)) {
            send_result(c.response, s.policies.diff_policy(*id));
        }
    });
    add("POST", "/api/v1/policies/{id}/what-if", Permission::Read, [&s, id_of](RouteContext& c) {
        auto id = id_of(c, 0);
        if (!id) {
            return;
        }
        QueryReader q(c.request);
        auto from = q.time_ms("from");
        auto to = q.time_ms("to");
        auto limit = q.integer("limit", 1, 100000);
        if (q.failed(c.response)) {
            return;
        }
        const std::int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count();
        const std::int64_t to_ms = to.value_or(now_ms);
        const std::int64_t from_ms = from.value_or(to_ms - 24 * 3600 * 1000);
        if (from_ms >= to_ms) {
            send_error(c.response, ServiceError{ErrorKind::BadRequest, "invalid-parameter", "\"from\" must be before \"to\"",
                                            json{{"parameter", "from"}}});
            return;
        }
        send_result(c.response, s.policies.what_if(*id, from_ms * 1'000'000, to_ms * 1'000'000,
                                          static_cast<std::size_t>(limit.value_or(100000))));
    });
    add("POST", "/api/v1/policies/{id}/activate", Permission::WritePolicy, [&s, id_of](RouteContext& c) {
        if (auto id = id_of(c, 0)) {
            send_result(c.response, s.policies.activate_policy(c.caller, *id));
        }
    });

    // Inventory.
    add("GET", "/api/v1/inventory", Permission::Read, [&s](RouteContext& c) { send_result(c.response, s.inventory.get_inventory()); });
    add("PUT", "/api/v1/inventory", Permission::WriteInventory, [&s](RouteContext& c) {
        if (auto body = read_body(c.request, c.response)) {
            send_result(c.response, s.inventory.replace_inventory(c.caller, *body));
        }
    });
    add("GET", "/api/v1/workloads", Permission::Read, [&s](RouteContext& c) { send_result(c.response, s.inventory.list_workloads()); });
    add("POST", "/api/v1/workloads/bulk", Permission::WriteInventory, [&s](RouteContext& c) {
        if (auto body = read_body(c.request, c.response)) {
            send_result(c.response, s.inventory.bulk_workloads(c.caller, *body));
        }
    });
    add("GET", "/api/v1/workloads/{id}", Permission::Read,
        [&s](RouteContext& c) { send_result(c.response, s.inventory.get_workload(c.params.at(0))); });
    add("PUT", "/api/v1/workloads/{id}", Permission::WriteInventory, [&s](RouteContext& c) {
        if (auto body = read_body(c.request, c.response)) {
            send_result(c.response, s.inventory.put_workload(c.caller, c.params.at(0), *body));
        }
    });
    add("DELETE", "/api/v1/workloads/{id}", Permission::WriteInventory,
        [&s](RouteContext& c) { send_result(c.response, s.inventory.delete_workload(c.caller, c.params.at(0))); });
    add("GET", "/api/v1/vpn-sessions", Permission::Read, [&s](RouteContext& c) {
        QueryReader q(c.request);
        auto active_at = q.time_ms("active_at");
        auto limit = q.integer("limit", 1, 10000);
        if (!q.failed(c.response)) {
            send_result(c.response, s.inventory.list_vpn_sessions(active_at, static_cast<std::size_t>(limit.value_or(100))));
        }
    });
    add("POST", "/api/v1/vpn-sessions", Permission::WriteInventory, [&s](RouteContext& c) {
        if (auto body = read_body(c.request, c.response)) {
            send_result(c.response, s.inventory.add_vpn_session(c.caller, *body), 201);
        }
    });
    add("POST", "/api/v1/vpn-sessions/{id}/end", Permission::WriteInventory, [&s, id_of](RouteContext& c) {
        auto id = id_of(c, 0);
        if (!id) {
            return;
        }
        json body = json::object();
        if (!c.request.body.empty()) {
            auto parsed = read_body(c.request, c.response);
            if (!parsed) {
                return;
            }
            body = *parsed;
        }
        send_result(c.response, s.inventory.end_vpn_session(c.caller, *id, body));
    });

    // Enforcers and the control channel.
    add("GET", "/api/v1/enforcers", Permission::Read, [&s](RouteContext& c) { send_result(c.response, s.fleet.list_enforcers()); });
    add("GET", "/api/v1/enforcers/{id}", Permission::Read,
        [&s](RouteContext& c) { send_result(c.response, s.fleet.get_enforcer(c.params.at(0))); });
    // VM ports the enforcers found (port discovery), e.g. ?state=unidentified for the ports
    // whose MAC no workload has.
    add("GET", "/api/v1/ports", Permission::Read, [&s](RouteContext& c) {
        QueryReader q(c.request);
        auto state = q.text("state", 32);
        if (state && *state != "bound" && *state != "unidentified") {
            q.fail("state", "must be bound or unidentified");
        }
        auto enforcer = q.text("enforcer", 128);
        if (!q.failed(c.response)) {
            send_result(c.response, s.fleet.list_ports(state, enforcer));
        }
    });
    add("POST", "/api/v1/enforcers/{id}/enrollment-token", Permission::WriteInventory,
        [&s](RouteContext& c) { send_result(c.response, s.fleet.create_enrollment_token(c.caller, c.params.at(0)), 201); });
    add("POST", "/api/v1/enforcers/enroll", std::nullopt, [&s](RouteContext& c) {
        if (auto body = read_body(c.request, c.response)) {
            send_result(c.response, s.fleet.enroll(*body), 201);
        }
    });
    add("GET", "/api/v1/enforcers/{id}/channel", Permission::EnforcerChannel, [&s](RouteContext& c) {
        QueryReader q(c.request);
        auto generation = q.integer("generation", 0, INT64_MAX);
        auto hash = q.text("hash", 128);
        // Absent: an enforcer of the previous release (format-1 hashes).
        auto hash_format = q.integer("hash_format", 1, ruleset::ruleset_hash_format);
        if (q.failed(c.response)) {
            return;
        }
        auto stream = s.fleet.open_channel(c.caller, c.params.at(0), static_cast<std::uint64_t>(generation.value_or(0)),
                                     hash.value_or(""), static_cast<int>(hash_format.value_or(1)));
        if (!stream) {
            send_error(c.response, stream.error());
            return;
        }
        if (wants_websocket(c.request)) {
            // Protocol 3: the server answers 101 and runs the socket (HttpServer).
            c.response.status = 101;
            c.live = std::make_shared<ChannelSocketBody>(std::move(*stream), s, c.caller, c.params.at(0));
            return;
        }
        c.response.status = 200;
        c.response.set_header("Content-Type", "application/x-ndjson");
        c.response.set_header("Cache-Control", "no-store");
        c.live = std::make_shared<ChannelBody>(std::move(*stream));
    });
    add("POST", "/api/v1/enforcers/{id}/status", Permission::EnforcerChannel, [&s](RouteContext& c) {
        if (auto body = read_body(c.request, c.response)) {
            send_result(c.response, s.fleet.report_status(c.caller, c.params.at(0), *body));
        }
    });
    add("POST", "/api/v1/enforcers/{id}/events", Permission::EnforcerChannel, [&s](RouteContext& c) {
        if (json_content_type(c.request, c.response)) {
            send_result(c.response, s.events.ingest_events(c.caller, c.params.at(0), c.request.body));
        }
    });

    // Events.
    add("GET", "/api/v1/events", Permission::Read, [&s](RouteContext& c) {
        QueryReader q(c.request);
        auto query = event_query(q);
        if (!q.failed(c.response)) {
            send_result(c.response, s.events.query_events(query));
        }
    });
    add("GET", "/api/v1/events/counts", Permission::Read, [&s](RouteContext& c) {
        QueryReader q(c.request);
        auto query = event_query(q);
        auto bucket = q.integer("bucket_ms", 1, 86'400'000);
        if (q.failed(c.response)) {
            return;
        }
        const std::int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count();
        const std::int64_t to = query.to_ns.value_or(now_ns);
        const std::int64_t from = query.from_ns.value_or(to - 3600LL * 1'000'000'000);
        const std::int64_t bucket_ns = bucket.value_or(60'000) * 1'000'000;
        if (from >= to) {
            send_error(c.response, ServiceError{ErrorKind::BadRequest, "invalid-parameter", "\"from\" must be before \"to\"",
                                            json{{"parameter", "from"}}});
            return;
        }
        if ((to - from) / bucket_ns > 10'000) {
            send_error(c.response, ServiceError{ErrorKind::BadRequest, "invalid-parameter", "more than 10,000 buckets; widen bucket_ms",
                                            json{{"parameter", "bucket_ms"}}});
            return;
        }
        send_result(c.response, s.events.count_events(from, to, bucket_ns, query));
    });

    // Incidents.
    add("GET", "/api/v1/incidents", Permission::Read, [&s](RouteContext& c) {
        QueryReader q(c.request);
        IncidentQuery query;
        if (auto state = q.text("state", 32)) {
            query.state = incident_state_from_string(*state);
            if (!query.state) {
                q.fail("state", "must be open, acknowledged or resolved");
            }
        }
        query.source_workload = q.text("workload", 256);
        query.before_id = q.integer("before_id", 1, INT64_MAX);
        query.limit = static_cast<std::size_t>(q.integer("limit", 1, 1000).value_or(100));
        if (!q.failed(c.response)) {
            send_result(c.response, s.incidents.list_incidents(query));
        }
    });
    add("GET", "/api/v1/incidents/{id}", Permission::Read, [&s, id_of](RouteContext& c) {
        if (auto id = id_of(c, 0)) {
            send_result(c.response, s.incidents.get_incident(*id));
        }
    });
    add("GET", "/api/v1/incidents/{id}/scope", Permission::Read, [&s, id_of](RouteContext& c) {
        auto id = id_of(c, 0);
        if (!id) {
            return;
        }
        QueryReader q(c.request);
        const auto margin = q.integer("margin_s", 0, 86400).value_or(300);
        const bool download = q.text("download", 8).value_or("") == "1";
        if (q.failed(c.response)) {
            return;
        }
        auto result = s.incidents.incident_scope(*id, margin);
        if (result && download) {
            // The SIEM export: the same document, saved as a file by browsers and curl -OJ.
            c.response.set_header("Content-Disposition",
                                  "attachment; filename=\"bulkhead-incident-" + std::to_string(*id) + "-scope.json\"");
        }
        send_result(c.response, std::move(result));
    });
    add("GET", "/api/v1/analyzer", Permission::Read, [&s](RouteContext& c) {
        send_result(c.response, s.analyzer_status());
    });
    add("GET", "/api/v1/analyzer/containments", Permission::Read, [&s](RouteContext& c) {
        QueryReader q(c.request);
        const auto incident = q.integer("incident", 1, std::numeric_limits<std::int64_t>::max());
        const auto limit = q.integer("limit", 1, 1024).value_or(100);
        if (q.failed(c.response)) {
            return;
        }
        send_result(c.response, s.containments(incident, static_cast<std::size_t>(limit)));
    });
    add("GET", "/api/v1/analyzer/exemptions", Permission::Read, [&s](RouteContext& c) {
        send_result(c.response, s.incidents.list_exemptions());
    });
    add("POST", "/api/v1/analyzer/exemptions", Permission::HandleIncidents, [&s](RouteContext& c) {
        if (auto body = read_body(c.request, c.response)) {
            send_result(c.response, s.incidents.add_exemption(c.caller, *body), 201);
        }
    });
    add("DELETE", "/api/v1/analyzer/exemptions/{id}", Permission::HandleIncidents, [&s, id_of](RouteContext& c) {
        if (auto id = id_of(c, 0)) {
            send_result(c.response, s.incidents.delete_exemption(c.caller, *id));
        }
    });
    add("POST", "/api/v1/incidents/{id}/acknowledge", Permission::HandleIncidents, [&s, id_of](RouteContext& c) {
        if (auto id = id_of(c, 0)) {
            send_result(c.response, s.incidents.set_incident_state(c.caller, *id, IncidentState::Acknowledged));
        }
    });
    add("POST", "/api/v1/incidents/{id}/resolve", Permission::HandleIncidents, [&s, id_of](RouteContext& c) {
        if (auto id = id_of(c, 0)) {
            send_result(c.response, s.incidents.set_incident_state(c.caller, *id, IncidentState::Resolved));
        }
    });
    add("POST", "/api/v1/incidents/{id}/notes", Permission::HandleIncidents, [&s, id_of](RouteContext& c) {
        auto id = id_of(c, 0);
        if (!id) {
            return;
        }
        if (auto body = read_body(c.request, c.response)) {
            send_result(c.response, s.incidents.add_incident_note(c.caller, *id, *body), 201);
        }
    });

    // Quarantine.
    add("POST", "/api/v1/quarantines", Permission::Quarantine, [&s](RouteContext& c) {
        QueryReader q(c.request);
        auto wait = wait_parameter(q);
        if (q.failed(c.response)) {
            return;
        }
        if (auto body = read_body(c.request, c.response)) {
            auto result = s.quarantines.create_quarantine(c.caller, *body, wait);
            send_result(c.response, result, result && (*result)["created"].get<bool>() ? 201 : 200);
        }
    });
    add("GET", "/api/v1/quarantines", Permission::Read,
        [&s](RouteContext& c) { send_result(c.response, s.quarantines.list_quarantines()); });
    add("GET", "/api/v1/quarantines/{workload}", Permission::Read,
        [&s](RouteContext& c) { send_result(c.response, s.quarantines.get_quarantine(c.params.at(0))); });
    add("DELETE", "/api/v1/quarantines/{workload}", Permission::Quarantine, [&s](RouteContext& c) {
        QueryReader q(c.request);
        auto wait = wait_parameter(q);
        if (!q.failed(c.response)) {
            send_result(c.response, s.quarantines.release_quarantine(c.caller, c.params.at(0), wait));
        }
    });

    // Audit and the live stream.
    add("GET", "/api/v1/audit", Permission::ReadAudit, [&s](RouteContext& c) {
        QueryReader q(c.request);
        AuditQuery query;
        query.from = q.time_ms("from");
        query.to = q.time_ms("to");
        query.actor = q.text("actor", 256);
        query.action = q.text("action", 128);
        query.before_id = q.integer("before_id", 1, INT64_MAX);
        query.limit = static_cast<std::size_t>(q.integer("limit", 1, 1000).value_or(100));
        if (!q.failed(c.response)) {
            send_result(c.response, s.audit().query(query));
        }
    });
    add("GET", "/api/v1/stream", Permission::Read, [&s](RouteContext& c) {
        c.response.status = 200;
        c.response.set_header("Content-Type", "text/event-stream");
        c.response.set_header("Cache-Control", "no-store");
        c.response.set_header("X-Accel-Buffering", "no");
        c.live = std::make_shared<EventStreamBody>(s.bus());
    });
}

void HttpApi::transport_error(httplib::Response& response, int status, const std::string& code,
                              const std::string& message) {
    send_json(response, status, json{{"error", json{{"code", code}, {"message", message}}}});
}

void HttpApi::handle(const httplib::Request& request, httplib::Response& response,
                     std::shared_ptr<LiveBody>& live) const {
    try {
        const std::string& method = request.method == "HEAD" ? std::string("GET") : request.method;
        const CompiledRoute* found = nullptr;
        std::vector<std::string> parameters;
        bool path_known = false;
        for (const auto& compiled : compiled_) {
            if (auto matched = compiled->pattern.match(request.path)) {
                path_known = true;
                if (compiled->route.method == method) {
                    found = compiled.get();
                    parameters = std::move(*matched);
                    break;
                }
            }
        }
        if (found == nullptr) {
            const bool api = request.path == "/api" || request.path.rfind("/api/", 0) == 0;
            if (!api && static_files_ && method == "GET") {
                static_files_->serve(request, response);
            } else if (path_known) {
                send_json(response, 405, json{{"error", json{{"code", "method-not-allowed"},
                                                              {"message", "no route " + request.method + " " +
                                                                              request.path + " (other methods exist)"}}}});
            } else {
                send_error(response, ServiceError{ErrorKind::NotFound, "no-such-route",
                                                  "no route " + request.method + " " + request.path});
            }
            return;
        }
        const Route& route = found->route;
        Caller caller;
        if (route.permission) {
            const bool is_stream = route.path == "/api/v1/stream";
            auto authenticated = service_.access.authenticate(bearer_token(request, is_stream));
            if (!authenticated) {
                if (authenticated.error().kind == ErrorKind::Unauthenticated) {
                    response.set_header("WWW-Authenticate", "Bearer");
                }
                send_error(response, authenticated.error());
                return;
            }
            if (authenticated->role != Role::Enforcer) {
                if (auto wait = rate_limiter_.admit(authenticated->name, std::chrono::steady_clock::now())) {
                    response.set_header("Retry-After", std::to_string((wait->count() + 999) / 1000));
                    send_json(response, 429,
                              json{{"error", json{{"code", "rate-limited"},
                                                  {"message", "too many requests with this token; retry in " +
                                                                  std::to_string(wait->count()) + " ms"}}}});
                    return;
                }
            }
            if (!role_allows(authenticated->role, *route.permission)) {
                send_error(response, ServiceError{ErrorKind::Forbidden, "forbidden",
                                                  "role " + std::string(to_string(authenticated->role)) + " may not " +
                                                      std::string(to_string(*route.permission))});
                return;
            }
            caller = *authenticated;
        }
        RouteContext context{request, response, caller, std::move(parameters), nullptr};
        route.handler(context);
        live = std::move(context.live);
    } catch (const std::exception& e) {
        spdlog::error("{} {}: internal error: {}", request.method, request.path, e.what());
        live.reset();
        response.headers.clear();
        send_error(response, ServiceError{ErrorKind::Internal, "internal-error", "internal error; see the controller's log"});
    }
}

}  // namespace bulkhead::controller
