#include "enforcer/daemon/metrics_listener.hpp"

#include "policies/net_address.hpp"

#include <httplib.h>

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


MetricsListener::MetricsListener(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::expected<std::unique_ptr<MetricsListener>, std::string> MetricsListener::start(const std::string& address) {
    const auto split = policy::split_host_port(address);
    if (!split) {
        return std::unexpected("\"" + address + "\" is not HOST:PORT with a port from 1 to 65535");
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
