#include "controller/server/webhook.hpp"

#include <httplib.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cstdio>
#include <random>

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

WebhookNotifier::WebhookNotifier(WebhookOptions options, Clock clock, Log log)
    : options_(std::move(options)), clock_(std::move(clock)), log_(std::move(log)) {
    if (enabled()) {
        worker_ = std::thread([this] { run(); });
    }
}

WebhookNotifier::~WebhookNotifier() {
    stop();
}

void WebhookNotifier::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (worker_.joinable()) {
        worker_.join();
    }
}

WebhookStats WebhookNotifier::stats() const {
    std::lock_guard lock(mutex_);
    WebhookStats s = stats_;
    s.queued = queue_.size();
    return s;
}

void WebhookNotifier::notify(const std::string& type, nlohmann::json data) {
    if (!enabled()) {
        return;
    }
    std::lock_guard lock(mutex_);
    if (stopping_) {
        return;
    }
    // A random prefix per process keeps ids unique across controller restarts.
    static const std::string prefix = [] {
        std::random_device random;
        char text[17];
        std::snprintf(text, sizeof text, "%08x%08x", random(), random());
        return std::string(text);
    }();
    const std::string id = prefix + "-" + std::to_string(++next_id_);
    const std::string body =
        nlohmann::json{{"id", id}, {"type", type}, {"at_ms", clock_()}, {"data", std::move(data)}}.dump(
            -1, ' ', false, nlohmann::json::error_handler_t::replace);
    for (std::size_t t = 0; t < options_.targets.size(); ++t) {
        if (queue_.size() >= options_.max_queue) {
            queue_.pop_front();
            ++stats_.dropped;
        }
        queue_.push_back(Delivery{t, id, type, body, 0});
    }
    wake_.notify_all();
}

int WebhookNotifier::send(const Delivery& delivery) {
    const auto& target = options_.targets[delivery.target];
    auto url = parse_webhook_url(target.url);
    if (!url) {
        log_("webhook " + target.url + ": not an http(s) URL");
        return 2;
    }
    httplib::Headers headers{{"X-Bulkhead-Event", delivery.type},
                             {"X-Bulkhead-Delivery", delivery.id},
                             {"X-Bulkhead-Attempt", std::to_string(delivery.attempts)}};
    if (!target.secret.empty()) {
        headers.emplace("X-Bulkhead-Signature", "sha256=" + webhook_signature(target.secret, delivery.body));
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
            return client.Post(url->path, headers, delivery.body, "application/json");
        }
        httplib::Client client(url->host, url->port);
        configure(client);
        return client.Post(url->path, headers, delivery.body, "application/json");
    }();
    if (!result) {
        log_("webhook " + target.url + " " + delivery.type + " " + delivery.id + " attempt " +
             std::to_string(delivery.attempts) + ": " + httplib::to_string(result.error()));
        return 1;
    }
    const int status = result->status;
    if (status >= 200 && status < 300) {
        return 0;
    }
    log_("webhook " + target.url + " " + delivery.type + " " + delivery.id + " attempt " +
         std::to_string(delivery.attempts) + ": HTTP " + std::to_string(status));
    return (status == 408 || status == 429 || status >= 500) ? 1 : 2;
}

void WebhookNotifier::run() {
    std::unique_lock lock(mutex_);
    while (true) {
        wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (stopping_) {
            return;
        }
        Delivery delivery = queue_.front();
        queue_.pop_front();
        auto backoff = options_.first_backoff;
        while (true) {
            ++delivery.attempts;
            lock.unlock();
            const int outcome = send(delivery);
            lock.lock();
            if (outcome == 0) {
                ++stats_.delivered;
                break;
            }
            if (outcome == 2 || delivery.attempts >= options_.max_attempts) {
                ++stats_.failed;
                log_("webhook " + options_.targets[delivery.target].url + " " + delivery.type + " " +
                     delivery.id + ": gave up after " + std::to_string(delivery.attempts) + " attempts");
                break;
            }
            ++stats_.retries;
            if (wake_.wait_for(lock, backoff, [this] { return stopping_; })) {
                return;
            }
            backoff = std::min(backoff * 2, options_.max_backoff);
        }
    }
}

} // namespace bulkhead::controller
