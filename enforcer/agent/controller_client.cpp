#include "enforcer/agent/controller_client.hpp"

#include "common/files/durable_file.hpp"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <unistd.h>

#include <charconv>

namespace bulkhead::enforcer::agent {

std::int64_t unix_ms_now() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::int64_t unix_ns_now() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

namespace {

bool is_loopback(const std::string& host) {
    if (host == "localhost") {
        return true;
    }
    in_addr v4{};
    if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) {
        return (ntohl(v4.s_addr) >> 24) == 127;
    }
    in6_addr v6{};
    if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
        return IN6_IS_ADDR_LOOPBACK(&v6);
    }
    return false;
}

std::string trim(std::string s) {
    const auto first = s.find_first_not_of(" \t\r\n");
    if (first == std::string::npos) {
        return {};
    }
    const auto last = s.find_last_not_of(" \t\r\n");
    return s.substr(first, last - first + 1);
}

}  // namespace

std::string ControllerEndpoint::url() const {
    const bool v6 = host.find(':') != std::string::npos;
    return scheme + "://" + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::expected<ControllerEndpoint, std::string> parse_controller_url(std::string_view url) {
    ControllerEndpoint e;
    const auto sep = url.find("://");
    if (sep == std::string_view::npos) {
        return std::unexpected("controller URL \"" + std::string(url) + "\" has no scheme (https://HOST:PORT)");
    }
    e.scheme = std::string(url.substr(0, sep));
    if (e.scheme != "https" && e.scheme != "http") {
        return std::unexpected("controller URL scheme must be https (or http on loopback), not " + e.scheme);
    }
    auto rest = url.substr(sep + 3);
    if (!rest.empty() && rest.back() == '/') {
        rest.remove_suffix(1);
    }
    if (rest.find('/') != std::string_view::npos || rest.find('?') != std::string_view::npos) {
        return std::unexpected("controller URL takes no path: " + std::string(url));
    }
    std::string_view port_text;
    if (!rest.empty() && rest.front() == '[') {
        const auto close = rest.find(']');
        if (close == std::string_view::npos) {
            return std::unexpected("controller URL: unclosed [ in " + std::string(url));
        }
        e.host = std::string(rest.substr(1, close - 1));
        auto after = rest.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') {
                return std::unexpected("controller URL: garbage after ] in " + std::string(url));
            }
            port_text = after.substr(1);
        }
    } else {
        const auto colon = rest.rfind(':');
        e.host = std::string(rest.substr(0, colon));
        if (colon != std::string_view::npos) {
            port_text = rest.substr(colon + 1);
        }
    }
    if (e.host.empty()) {
        return std::unexpected("controller URL has no host: " + std::string(url));
    }
    e.port = e.scheme == "https" ? 443 : 80;
    if (!port_text.empty()) {
        int port = 0;
        auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
        if (ec != std::errc{} || end != port_text.data() + port_text.size() || port < 1 || port > 65535) {
            return std::unexpected("controller URL: bad port \"" + std::string(port_text) + "\"");
        }
        e.port = port;
    }
    if (e.scheme == "http" && !is_loopback(e.host)) {
        return std::unexpected("plain http is allowed on a loopback address only, not " + e.host +
                               " (use https with --ca)");
    }
    return e;
}

// ---- HttpConnection ---------------------------------------------------------------------

struct HttpConnection::Impl {
    httplib::Client client;
    explicit Impl(const std::string& url) : client(url) {}
};

HttpConnection::HttpConnection(const ControllerEndpoint& endpoint, const std::string& ca_file,
                               Timeouts timeouts)
    : impl_(std::make_unique<Impl>(endpoint.url())) {
    auto& c = impl_->client;
    c.set_connection_timeout(timeouts.connect);
    c.set_read_timeout(timeouts.read);
    c.set_write_timeout(timeouts.write);
    c.set_tcp_nodelay(true);
    c.set_follow_location(false);
    if (endpoint.scheme == "https") {
        // Trust only the CA given at enrollment, never the system store.
        c.set_ca_cert_path(ca_file);
        c.enable_server_certificate_verification(true);
    }
}

HttpConnection::~HttpConnection() = default;

std::expected<HttpResponse, std::string> HttpConnection::post_json(const std::string& path,
                                                                   const std::string& body) {
    auto result = impl_->client.Post(path, body, "application/json");
    if (!result) {
        return std::unexpected("POST " + path + ": " + httplib::to_string(result.error()));
    }
    return HttpResponse{result->status, result->body};
}

// ---- ControllerClient -------------------------------------------------------------------

std::expected<std::unique_ptr<ControllerClient>, std::string> ControllerClient::create(ControllerConfig config) {
    if (config.enforcer_id.empty()) {
        return std::unexpected("controller client: no enforcer id");
    }
    if (config.endpoint.scheme == "https") {
        if (config.ca_file.empty()) {
            return std::unexpected("--ca FILE is required with an https controller");
        }
        if (::access(config.ca_file.c_str(), R_OK) != 0) {
            return std::unexpected("cannot read CA file " + config.ca_file);
        }
    }
    if (config.hostname.empty()) {
        char name[256] = {};
        if (::gethostname(name, sizeof name - 1) == 0) {
            config.hostname = name;
        }
    }
    std::unique_ptr<ControllerClient> client(new ControllerClient(std::move(config)));
    auto stored = files::read_small_file(client->credential_path());
    if (!stored) {
        return std::unexpected(stored.error());
    }
    if (*stored) {
        client->credential_ = trim(**stored);
    }
    if (client->credential_.empty() && client->config_.enrollment_token_file.empty()) {
        return std::unexpected("no credential in " + client->credential_path().string() +
                               " and no --enrollment-token FILE to enroll with");
    }
    return client;
}

bool ControllerClient::has_credential() const {
    std::lock_guard lock(mutex_);
    return !credential_.empty();
}

std::string ControllerClient::credential() const {
    std::lock_guard lock(mutex_);
    return credential_;
}

std::string ControllerClient::enforcer_path(std::string_view what) const {
    return "/api/v1/enforcers/" + config_.enforcer_id + "/" + std::string(what);
}

std::shared_ptr<ChannelSocket> ControllerClient::channel() const {
    std::lock_guard lock(mutex_);
    return channel_;
}

void ControllerClient::set_channel(std::shared_ptr<ChannelSocket> socket) {
    std::lock_guard lock(mutex_);
    channel_ = std::move(socket);
}

void ControllerClient::clear_channel(const ChannelSocket* socket) {
    std::lock_guard lock(mutex_);
    if (channel_.get() == socket) {
        channel_.reset();
    }
}

std::expected<void, std::string> ControllerClient::enroll_if_needed() {
    if (has_credential()) {
        return {};
    }
    auto token = files::read_small_file(config_.enrollment_token_file);
    if (!token) {
        return std::unexpected(token.error());
    }
    if (!*token || trim(**token).empty()) {
        return std::unexpected("enrollment token file " + config_.enrollment_token_file + " is missing or empty");
    }
    HttpConnection connection(config_.endpoint, config_.ca_file, config_.timeouts);
    const nlohmann::json request = {{"enforcer", config_.enforcer_id},
                                    {"token", trim(**token)},
                                    {"version", config_.version},
                                    {"hostname", config_.hostname}};
    auto response = connection.post_json("/api/v1/enforcers/enroll", request.dump());
    if (!response) {
        return std::unexpected("enrollment: " + response.error());
    }
    if (response->status != 201 && response->status != 200) {
        return std::unexpected("enrollment refused: HTTP " + std::to_string(response->status) + " " +
                               response->body.substr(0, 200));
    }
    auto body = nlohmann::json::parse(response->body, nullptr, false);
    if (!body.is_object() || !body.contains("credential") || !body["credential"].is_string() ||
        body["credential"].get<std::string>().empty()) {
        return std::unexpected("enrollment: answer without a credential");
    }
    const auto credential = body["credential"].get<std::string>();
    if (auto written = files::write_durably(credential_path(), credential + "\n", 0600); !written) {
        return std::unexpected("enrollment: storing the credential: " + written.error());
    }
    std::lock_guard lock(mutex_);
    credential_ = credential;
    return {};
}

}  // namespace bulkhead::enforcer::agent
