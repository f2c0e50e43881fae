// HttpApi: the REST API v1, the enforcers' control channel and the dashboard's event
// stream. One route table is the single source of truth: it dispatches requests, carries
// each route's permission, and a test compares it with the OpenAPI document both ways.
// Requests and responses are cpp-httplib's plain value types; the transport is HttpServer
// (controller/server/http_server.hpp).
#pragma once

#include "controller/core/access_policy.hpp"
#include "controller/core/request_rate_limiter.hpp"
#include "controller/services/controller_services.hpp"

#include <httplib.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bulkhead::controller {

// A response body produced over time (the control channel, the dashboard's event stream):
// the server polls it when woken and when due, so a stream holds no thread while it waits.
class LiveBody {
public:
    virtual ~LiveBody() = default;
    // The next bytes to send, "" when nothing is due now, nothing at the end. May do real
    // work (serialise a ruleset): the server calls it on a worker thread.
    virtual std::optional<std::string> poll() = 0;
    // Called from any thread when poll() may have something new; it must only schedule.
    virtual void set_wake(std::function<void()> wake) = 0;
    // When poll() must be called again if nothing wakes the server first.
    virtual std::chrono::steady_clock::time_point next_due() const = 0;
};

// A LiveBody that also takes messages from its client: the control channel over WebSocket,
// where an enforcer's acks, heartbeats and event uploads travel up the connection that
// carries its rulesets down (one connection per enforcer, docs/control-channel.md).
class DuplexBody : public LiveBody {
public:
    // One message from the client. The server calls it on a worker thread, one message at a
    // time per connection (the next is not read before this returns: backpressure); what
    // it answers is queued and goes out through poll(). false: the message breaks the
    // protocol and the server closes the connection.
    virtual bool receive(std::string_view message) = 0;
    // An answer receive() queued, or a message already built elsewhere (the control channel's
    // prepared diff, ChannelStream::take_prepared), if any, without other work: the server
    // calls it on its I/O thread before handing poll() to a worker, so that a reply (an ack's
    // answer the enforcer times) or a quarantine's diff does not wait for worker hops.
    virtual std::optional<std::string> take_reply() = 0;
};

struct RouteContext {
    const httplib::Request& request;
    httplib::Response& response;
    const Caller& caller;               // empty name for public routes
    std::vector<std::string> params;    // path parameters in template order
    std::shared_ptr<LiveBody> live;     // set by streaming routes; headers stay in `response`
};

struct Route {
    std::string method;                 // "GET", "POST", "PUT", "DELETE"
    std::string path;                   // OpenAPI template: "/api/v1/policies/{id}"
    std::optional<Permission> permission;  // none: public (health, openapi, enroll)
    std::function<void(RouteContext&)> handler;
};

class HttpApi {
public:
    // `api_rate` limits each API token (not enforcer credentials, whose channel traffic is
    // paced by the protocol) to a request rate; 0 per second: no limit.
    HttpApi(ControllerServices& service, std::string openapi_document, std::string webui_dir = {},
            RateLimit api_rate = {});
    ~HttpApi();

    const std::vector<Route>& routes() const { return routes_; }
    // What GET /api/v1/metrics answers (the Prometheus text); set before the listeners start.
    void set_metrics(std::function<std::string()> render) { metrics_ = std::move(render); }
    // What GET /api/v1/evidence answers: checkpoints and every SIEM destination's backlog.
    void set_evidence_status(std::function<nlohmann::json()> status) { evidence_status_ = std::move(status); }
    std::uint64_t rate_limited() const { return rate_limiter_.refused(); }

    // Answers one request: the route (or the dashboard's files outside /api/), the caller's
    // authentication and permission, the handler. A streaming route answers with its status
    // and headers in `response` and its body in `live`. Thread-safe.
    void handle(const httplib::Request& request, httplib::Response& response, std::shared_ptr<LiveBody>& live) const;

    // The JSON error body the API uses, for errors found by the transport (413, 408, 503).
    static void transport_error(httplib::Response& response, int status, const std::string& code,
                                const std::string& message);

private:
    struct CompiledRoute;
    void add(std::string method, std::string path, std::optional<Permission> permission,
             std::function<void(RouteContext&)> handler);
    void build_routes();

    ControllerServices& service_;
    std::string openapi_document_;
    std::string webui_dir_;
    std::vector<Route> routes_;
    std::vector<std::unique_ptr<CompiledRoute>> compiled_;  // routes_ with their patterns
    std::unique_ptr<class StaticFiles> static_files_;
    mutable RequestRateLimiter rate_limiter_;
    std::function<std::string()> metrics_;
    std::function<nlohmann::json()> evidence_status_;
};

// The OpenAPI document compiled into the binary (controller/server/openapi.json).
std::string_view embedded_openapi_document();

}  // namespace bulkhead::controller
