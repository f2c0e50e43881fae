#include "controller/services/webhook.hpp"

#include <httplib.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <set>

#include <spdlog/spdlog.h>

namespace bulkhead::controller {

std::optional<ParsedUrl> parse_webhook_url(const std::string& url) {
    ParsedUrl parsed;
    std::string rest;
    if (url.rfind("http://", 0) == 0) {
        parsed.scheme = "http";
        parsed.port = 80;
        rest = url.substr(7);
    } else if (url.rfind("https://", 0) == 0) {
        parsed.scheme = "https";
        parsed.port = 443;
        rest = url.substr(8);
    } else {
        return std::nullopt;
    }
    const auto slash = rest.find('/');
    std::string authority = rest.substr(0, slash);
    parsed.path = slash == std::string::npos ? "/" : rest.substr(slash);
    if (authority.empty()) {
        return std::nullopt;
    }
    // [v6]:port, host:port or host.
    std::string port_text;
    if (authority.front() == '[') {
        const auto close = authority.find(']');
        if (close == std::string::npos) {
            return std::nullopt;
        }
        parsed.host = authority.substr(1, close - 1);
        if (close + 1 < authority.size()) {
            if (authority[close + 1] != ':') {
                return std::nullopt;
            }
            port_text = authority.substr(close + 2);
        }
    } else if (const auto colon = authority.rfind(':'); colon != std::string::npos) {
        parsed.host = authority.substr(0, colon);
        port_text = authority.substr(colon + 1);
    } else {
        parsed.host = authority;
    }
    if (!port_text.empty()) {
        if (port_text.size() > 5 ||
            !std::all_of(port_text.begin(), port_text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
            return std::nullopt;
        }
        parsed.port = std::stoi(port_text);
        if (parsed.port < 1 || parsed.port > 65535) {
            return std::nullopt;
        }
    }
    if (parsed.host.empty()) {
        return std::nullopt;
    }
    return parsed;
}

std::string webhook_signature(const std::string& secret, const std::string& body) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
         reinterpret_cast<const unsigned char*>(body.data()), body.size(), digest, &length);
    std::string hex;
    char byte[3];
    for (unsigned int i = 0; i < length; ++i) {
        std::snprintf(byte, sizeof byte, "%02x", digest[i]);
        hex += byte;
    }
    return hex;
}

WebhookOutbox::WebhookOutbox(WebhookOptions options) : options_(std::move(options)) {}

StoreResult<void> WebhookOutbox::enqueue(OutboxRepository& outbox, const std::string& type,
                                         const nlohmann::json& data, TimeMs now) const {
    for (std::size_t t = 0; t < options_.targets.size(); ++t) {
        // Random, so ids stay unique across controllers sharing a receiver and across
        // restarts; stored with the row, so every retry carries the same one.
        std::random_device random;
        char id[40];
        std::snprintf(id, sizeof id, "%08x%08x-%zu", random(), random(), t);
        OutboxMessage message;
        message.delivery_id = id;
        message.destination = options_.targets[t].url;
        message.type = type;
        message.body = nlohmann::json{{"id", message.delivery_id}, {"type", type}, {"at_ms", now}, {"data", data}}
                           .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        message.created_at = now;
        message.next_attempt_at = now;
        if (auto stored = outbox.enqueue_outbox(std::move(message)); !stored) {
            return std::unexpected(stored.error());
        }
    }
    return {};
}

WebhookDelivery::WebhookDelivery(WebhookOptions options, OutboxRepository& outbox, Clock clock)
    : options_(std::move(options)), outbox_(outbox), clock_(std::move(clock)) {}

WebhookDelivery::~WebhookDelivery() {
    stop();
}

void WebhookDelivery::start() {
    if (!options_.targets.empty() && !worker_.joinable()) {
        worker_ = std::thread([this] { run(); });
    }
}

void WebhookDelivery::wake() {
    {
        std::lock_guard lock(mutex_);
        woken_ = true;
    }
    wake_.notify_all();
}

void WebhookDelivery::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (worker_.joinable()) {
        worker_.join();
    }
}

WebhookDeliveryStats WebhookDelivery::stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
}

int WebhookDelivery::send(const WebhookTarget& target, const OutboxMessage& message, std::string& error) {
    auto url = parse_webhook_url(target.url);
    if (!url) {
        error = "not an http(s) URL";
        return 2;
    }
    httplib::Headers headers{{"X-Bulkhead-Event", message.type},
                             {"X-Bulkhead-Delivery", message.delivery_id},
                             {"X-Bulkhead-Attempt", std::to_string(message.attempts + 1)}};
    if (!target.secret.empty()) {
        headers.emplace("X-Bulkhead-Signature", "sha256=" + webhook_signature(target.secret, message.body));
    }
    const auto seconds = static_cast<time_t>(options_.timeout.count() / 1000);
    const auto micros = static_cast<time_t>((options_.timeout.count() % 1000) * 1000);
    auto configure = [&](auto& client) {
        client.set_connection_timeout(seconds, micros);
        client.set_read_timeout(seconds, micros);
        client.set_write_timeout(seconds, micros);
    };
    auto result = [&] {
        if (url->scheme == "https") {
            httplib::SSLClient client(url->host, url->port);
            client.enable_server_certificate_verification(true);
            if (!target.ca_file.empty()) {
                client.set_ca_cert_path(target.ca_file.c_str());
            }
            configure(client);
            return client.Post(url->path, headers, message.body, "application/json");
        }
        httplib::Client client(url->host, url->port);
        configure(client);
        return client.Post(url->path, headers, message.body, "application/json");
    }();
    if (!result) {
        error = httplib::to_string(result.error());
        return 1;
    }
    const int status = result->status;
    if (status >= 200 && status < 300) {
        return 0;
    }
    error = "HTTP " + std::to_string(status);
    return (status == 408 || status == 429 || status >= 500) ? 1 : 2;
}

TimeMs WebhookDelivery::deliver_due(TimeMs now) {
    constexpr TimeMs kIdlePoll = 5000;  // rows written by another writer without a wake()
    auto pending = outbox_.pending_outbox(500);
    if (!pending) {
        spdlog::error("webhooks: cannot read the outbox: {}", pending.error().message);
        std::lock_guard lock(mutex_);
        ++stats_.store_errors;
        return now + kIdlePoll;
    }
    TimeMs next = now + kIdlePoll;
    // A receiver whose oldest message is not delivered yet gets nothing newer this pass:
    // each receiver sees messages in the order they were written.
    std::set<std::string> held_back;
    for (auto& message : *pending) {
        if (held_back.contains(message.destination)) {
            continue;
        }
        {
            std::lock_guard lock(mutex_);
            if (stopping_) {
                return now;
            }
        }
        if (message.next_attempt_at > now) {
            held_back.insert(message.destination);
            next = std::min(next, message.next_attempt_at);
            continue;
        }
        const auto target = std::find_if(options_.targets.begin(), options_.targets.end(),
                                          [&](const WebhookTarget& t) { return t.url == message.destination; });
        std::string error;
        const int outcome = target == options_.targets.end() ? 2 : send(*target, message, error);
        if (target == options_.targets.end()) {
            error = "the receiver is no longer configured";
        }
        now = clock_();
        ++message.attempts;
        message.last_error = error;
        if (outcome == 0) {
            message.state = OutboxState::Delivered;
            message.finished_at = now;
        } else if (outcome == 2 || now - message.created_at >= options_.give_up_after.count()) {
            message.state = OutboxState::Failed;
            message.finished_at = now;
            spdlog::error("webhooks: {} {} delivery {}: gave up after {} attempts: {}", message.destination,
                          message.type, message.delivery_id, message.attempts, error);
        } else {
            auto backoff = options_.first_backoff.count();
            for (int i = 1; i < message.attempts && backoff < options_.max_backoff.count(); ++i) {
                backoff *= 2;
            }
            message.next_attempt_at = now + std::min<TimeMs>(backoff, options_.max_backoff.count());
            next = std::min(next, message.next_attempt_at);
            held_back.insert(message.destination);
            spdlog::warn("webhooks: {} {} delivery {} attempt {}: {}; next try in {} ms", message.destination,
                         message.type, message.delivery_id, message.attempts, error, message.next_attempt_at - now);
        }
        if (auto updated = outbox_.update_outbox(message); !updated) {
            // The row stays pending: it is sent again (same delivery id), never lost.
            spdlog::error("webhooks: delivery {}: cannot record the attempt: {}", message.delivery_id,
                          updated.error().message);
            std::lock_guard lock(mutex_);
            ++stats_.store_errors;
            return now + 1000;
        }
        std::lock_guard lock(mutex_);
        if (outcome == 0) {
            ++stats_.sent;
        } else if (message.state == OutboxState::Pending) {
            ++stats_.retries;
        }
    }
    return next;
}

void WebhookDelivery::run() {
    while (true) {
        const TimeMs next = deliver_due(clock_());
        std::unique_lock lock(mutex_);
        if (stopping_) {
            return;
        }
        const auto wait = std::chrono::milliseconds(std::max<TimeMs>(0, next - clock_()));
        wake_.wait_for(lock, wait, [this] { return stopping_ || woken_; });
        woken_ = false;
        if (stopping_) {
            return;
        }
    }
}

} // namespace bulkhead::controller
