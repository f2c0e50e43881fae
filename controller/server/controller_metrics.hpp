// ControllerMetrics: the controller's figures in the Prometheus text format, served at
// GET /api/v1/metrics (any API token; Prometheus sends it with `authorization:
// credentials_file`). Nothing is counted twice: at each scrape the figures are read from what
// already keeps them (each listener's connections and abuse counters and its configured
// limits, the API's per-token rate limiter, the fleet's channels and diff cache, the
// enforcers' last reports held in memory, event ingest's counters, one indexed COUNT of the
// open incidents, the quarantines in force, the analyzer and the webhook outbox);
// prometheus-cpp holds the families and writes the text.
#pragma once

#include "controller/core/request_rate_limiter.hpp"
#include "controller/server/http_server.hpp"

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace prometheus {
class Registry;
}

namespace bulkhead::controller {

class ControllerServices;
class HttpApi;

class ControllerMetrics {
  public:
    struct Listener {
        std::string name;  // "tls", "plain"
        const HttpServer* server = nullptr;
        HttpServerLimits limits;
    };
    ControllerMetrics(ControllerServices& services, const HttpApi& api, std::vector<Listener> listeners,
                      RateLimit api_rate);
    ~ControllerMetrics();
    ControllerMetrics(const ControllerMetrics&) = delete;
    ControllerMetrics& operator=(const ControllerMetrics&) = delete;

    // The text exposition format (version 0.0.4). Thread-safe.
    std::string render();

  private:
    void gauge(const std::string& name, const std::string& help, const std::map<std::string, std::string>& labels,
               double value);
    // `total` is a count kept elsewhere since start: the counter follows it.
    void counter(const std::string& name, const std::string& help, const std::map<std::string, std::string>& labels,
                 double total);
    // The enforcers' counts by state and their own figures, labelled enforcer="<id>".
    void render_fleet();
    void retire_enforcer(const std::string& id);
    // Events ingested, open incidents, quarantines in force; false when the store could
    // not be read for the last two.
    bool render_incidents_and_quarantines();

    ControllerServices& services_;
    const HttpApi& api_;
    std::vector<Listener> listeners_;
    RateLimit api_rate_;
    std::mutex mutex_;
    std::shared_ptr<prometheus::Registry> registry_;
    struct Families;
    std::unique_ptr<Families> families_;
};

}  // namespace bulkhead::controller
