// WebhookNotifier: tells a SOAR (or any HTTP receiver) about incidents as they open,
// escalate, page a human or quarantine their source. Deliveries are queued and sent by one
// background thread in order, each retried with exponential backoff while the receiver is
// down or answers 408, 429 or 5xx; a 4xx other than those is final (the receiver refused the
// content, retrying cannot help). The queue is bounded: when it is full the oldest waiting
// delivery is dropped and counted. Deliveries live in memory only; a controller restart
// loses the queue (the incidents themselves are in the store and the audit log).
//
// Each POST carries JSON {"id", "type", "at", "data"} and the headers X-Bulkhead-Event,
// X-Bulkhead-Delivery (the same on every retry: receivers de-duplicate with it),
// X-Bulkhead-Attempt and, with a secret, X-Bulkhead-Signature: sha256=<HMAC-SHA256 of the body>.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace bulkhead::controller {

struct WebhookTarget {
    std::string url;     // http://host[:port]/path or https://...
    std::string secret;  // HMAC key; empty: unsigned
    std::string ca_file; // https: CA bundle to verify the receiver; empty: the system's
};

struct WebhookOptions {
    std::vector<WebhookTarget> targets;
    int max_attempts = 8;
    std::chrono::milliseconds first_backoff{500};
    std::chrono::milliseconds max_backoff{30000};
    std::chrono::milliseconds timeout{5000};
    std::size_t max_queue = 10000;
};

struct WebhookStats {
    std::uint64_t delivered = 0;
    std::uint64_t retries = 0;
    std::uint64_t failed = 0;  // gave up (attempts exhausted or refused)
    std::uint64_t dropped = 0; // queue full
    std::size_t queued = 0;
};

// "http://host:8080/hooks/x" -> scheme, host, port, path; nullopt when not http(s).
struct ParsedUrl {
    std::string scheme, host, path;
    int port = 0;
};
std::optional<ParsedUrl> parse_webhook_url(const std::string& url);

// HMAC-SHA256 of `body` with `secret`, lower-case hex.
std::string webhook_signature(const std::string& secret, const std::string& body);

class WebhookNotifier {
  public:
    using Clock = std::function<std::int64_t()>; // ms since the epoch, for "at"
    using Log = std::function<void(const std::string&)>;

    WebhookNotifier(WebhookOptions options, Clock clock, Log log);
    ~WebhookNotifier();
    WebhookNotifier(const WebhookNotifier&) = delete;
    WebhookNotifier& operator=(const WebhookNotifier&) = delete;

    bool enabled() const { return !options_.targets.empty(); }
    // Queues `type` ("incident.opened", ...) with `data` for every target; never blocks.
    void notify(const std::string& type, nlohmann::json data);
    // Ends the worker: the delivery in flight finishes or gives up at its next wait.
    void stop();
    WebhookStats stats() const;

  private:
    struct Delivery {
        std::size_t target = 0;
        std::string id, type, body;
        int attempts = 0;
    };
    void run();
    // Sends once: 0 delivered, 1 retry later, 2 refused for good.
    int send(const Delivery& delivery);

    WebhookOptions options_;
    Clock clock_;
    Log log_;
    mutable std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<Delivery> queue_;
    WebhookStats stats_;
    std::uint64_t next_id_ = 0;
    bool stopping_ = false;
    std::thread worker_;
};

} // namespace bulkhead::controller
