#include "enforcer/daemon/metrics_listener.hpp"

#include <httplib.h>

#include <charconv>
#include <mutex>
#include <thread>

namespace bulkhead::enforcer {

struct MetricsListener::Impl {
    httplib::Server server;
    std::mutex mutex;
    std::shared_ptr<const std::string> text = std::make_shared<const std::string>();
    int port = 0;
    std::thread thread;
};

namespace {

std::expected<std::pair<std::string, int>, std::string> split_address(const std::string& address) {
    const auto colon = address.rfind(':');
    if (colon == std::string::npos || colon == 0) {
        return std::unexpected("\"" + address + "\" is not HOST:PORT");
    }
    std::string host = address.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
    }
    int port = 0;
    const std::string_view digits = std::string_view(address).substr(colon + 1);
    if (auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
        ec != std::errc{} || end != digits.data() + digits.size() || port <= 0 || port > 65535) {
        return std::unexpected("\"" + address + "\": the port is not a number from 1 to 65535");
    }
    return std::make_pair(host, port);
}

}  // namespace

MetricsListener::MetricsListener(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::expected<std::unique_ptr<MetricsListener>, std::string> MetricsListener::start(const std::string& address) {
    auto split = split_address(address);
    if (!split) {
        return std::unexpected(split.error());
    }
    auto impl = std::make_unique<Impl>();
    auto* raw = impl.get();
    impl->server.new_task_queue = [] { return new httplib::ThreadPool(1); };  // one scraper at a time is plenty
    impl->server.set_read_timeout(5, 0);
    impl->server.set_write_timeout(5, 0);
    impl->server.set_payload_max_length(4096);
    impl->server.Get("/metrics", [raw](const httplib::Request&, httplib::Response& response) {
        std::shared_ptr<const std::string> text;
        {
            std::lock_guard lock(raw->mutex);
            text = raw->text;
        }
        response.set_content(*text, "text/plain; version=0.0.4; charset=utf-8");
    });
    if (!impl->server.bind_to_port(split->first, split->second)) {
        return std::unexpected("cannot listen on " + address + " (address not on this host, or in use)");
    }
    impl->port = split->second;
    impl->thread = std::thread([raw] { raw->server.listen_after_bind(); });
    return std::unique_ptr<MetricsListener>(new MetricsListener(std::move(impl)));
}

MetricsListener::~MetricsListener() {
    impl_->server.stop();
    if (impl_->thread.joinable()) {
        impl_->thread.join();
    }
}

void MetricsListener::publish(std::string text) {
    auto shared = std::make_shared<const std::string>(std::move(text));
    std::lock_guard lock(impl_->mutex);
    impl_->text = std::move(shared);
}

int MetricsListener::port() const { return impl_->port; }

}  // namespace bulkhead::enforcer
