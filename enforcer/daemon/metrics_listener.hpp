// MetricsListener: the enforcer's /metrics over plain HTTP on a management address, for a
// Prometheus server to scrape (the metrics file serves node_exporter's textfile collector).
// It serves the last text the daemon's loop published: the loop owns Metrics and renders it
// once a second, the listener's thread only copies a string, so a slow or hostile scraper
// never touches enforcement.
#pragma once

#include <expected>
#include <memory>
#include <string>

namespace bulkhead::enforcer {

class MetricsListener {
  public:
    // Binds `address` ("HOST:PORT", "[v6]:PORT") at once, so a wrong or taken address fails
    // the start with its reason instead of later in a thread.
    static std::expected<std::unique_ptr<MetricsListener>, std::string> start(const std::string& address);
    ~MetricsListener();
    MetricsListener(const MetricsListener&) = delete;
    MetricsListener& operator=(const MetricsListener&) = delete;

    void publish(std::string text);
    int port() const;

  private:
    struct Impl;
    explicit MetricsListener(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace bulkhead::enforcer
