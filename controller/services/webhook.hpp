// Webhooks through the outbox: tells a SOAR (or any HTTP receiver) about incidents as they
// open, escalate, page a human or quarantine their source.
//
// WebhookOutbox::enqueue writes one outbox row per receiver inside the caller's store
// transaction, so a notification exists exactly when the change that causes it was
// committed. WebhookDelivery, one background thread, sends the pending rows from the store in
// order (per receiver: a receiver that is down holds back its later messages, so each
// incident's messages arrive in order), retrying with exponential backoff while the receiver
// is down or answers 408, 429 or 5xx; any other 4xx is final (the receiver refused the
// content). Rows survive restarts and crashes: delivery is at least once, and a message keeps
// its delivery id on every retry, also across restarts.
//
// Each POST carries JSON {"id", "type", "at_ms", "data"} and the headers X-Bulkhead-Event,
// X-Bulkhead-Delivery (the same on every retry: receivers de-duplicate with it),
// X-Bulkhead-Attempt and, with a secret, X-Bulkhead-Signature: sha256=<HMAC-SHA256 of the body>.
#pragma once

#include "controller/store/repositories.hpp"

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
    // A message is retried until it is this old; a SOAR that is down for a night still gets
    // everything when it comes back.
    std::chrono::milliseconds give_up_after{24 * 3600 * 1000};
    std::chrono::milliseconds first_backoff{500};
    std::chrono::milliseconds max_backoff{30000};
    std::chrono::milliseconds timeout{5000};
};

// "http://host:8080/hooks/x" -> scheme, host, port, path; nullopt when not http(s).
struct ParsedUrl {
    std::string scheme, host, path;
    int port = 0;
};
std::optional<ParsedUrl> parse_webhook_url(const std::string& url);

// HMAC-SHA256 of `body` with `secret`, lower-case hex.
std::string webhook_signature(const std::string& secret, const std::string& body);

class WebhookOutbox {
  public:
    explicit WebhookOutbox(WebhookOptions options);
    bool enabled() const { return !options_.targets.empty(); }
    // Writes `type` with `data` for every receiver; call inside the transaction of the
    // change it reports. Nothing to do without receivers.
    StoreResult<void> enqueue(OutboxRepository& outbox, const std::string& type, const nlohmann::json& data,
                              TimeMs now) const;
    const WebhookOptions& options() const { return options_; }

  private:
    WebhookOptions options_;
};

struct WebhookDeliveryStats {
    std::uint64_t sent = 0;     // successful POSTs by this process
    std::uint64_t retries = 0;  // attempts that will be tried again
    std::uint64_t store_errors = 0;
};

class WebhookDelivery {
  public:
    using Clock = std::function<TimeMs()>;
    WebhookDelivery(WebhookOptions options, OutboxRepository& outbox, Clock clock);
    ~WebhookDelivery();
    WebhookDelivery(const WebhookDelivery&) = delete;
    WebhookDelivery& operator=(const WebhookDelivery&) = delete;

    // Starts the sender thread (nothing without receivers).
    void start();
    // A commit added rows: look now rather than at the next timer.
    void wake();
    // Ends the thread: a POST in flight finishes or times out first.
    void stop();
    WebhookDeliveryStats stats() const;

  private:
    void run();
    // One pass over the pending rows; returns when the next row is due.
    TimeMs deliver_due(TimeMs now);
    // 0 delivered, 1 retry later, 2 refused for good.
    int send(const WebhookTarget& target, const OutboxMessage& message, std::string& error);

    WebhookOptions options_;
    OutboxRepository& outbox_;
    Clock clock_;
    mutable std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    bool woken_ = false;
    WebhookDeliveryStats stats_;
    std::thread worker_;
};

} // namespace bulkhead::controller
