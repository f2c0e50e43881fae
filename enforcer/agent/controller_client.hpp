// The enforcer's side of the controller connection (docs/control-channel.md): where the
// controller is, whom to trust (CA), who we are (credential, enrollment), and the one
// connection the enforcer holds, the channel socket (channel_socket.hpp), for the threads
// that send requests on it. cpp-httplib (enrollment only) stays inside the .cpp files.
#pragma once

#include "common/version.hpp"

#include <chrono>
#include <cstdint>
#include <expected>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace bulkhead::enforcer::agent {

struct ControllerEndpoint {
    std::string scheme;  // "https", or "http" (loopback only)
    std::string host;    // without brackets
    int port = 0;

    std::string url() const;  // scheme://host:port ([host] for IPv6)
};

// https://HOST[:PORT] (default 443) or http://LOOPBACK[:PORT] (default 80); no path.
std::expected<ControllerEndpoint, std::string> parse_controller_url(std::string_view url);

struct HttpResponse {
    int status = 0;
    std::string body;
};

// One HTTP(S) connection for a plain request: enrollment, the only exchange that does not
// go over the channel (there is no credential to open the channel with yet).
class HttpConnection {
public:
    struct Timeouts {
        std::chrono::milliseconds connect{5000};
        std::chrono::milliseconds read{15000};
        std::chrono::milliseconds write{15000};
    };
    HttpConnection(const ControllerEndpoint& endpoint, const std::string& ca_file, Timeouts timeouts);
    ~HttpConnection();
    HttpConnection(const HttpConnection&) = delete;
    HttpConnection& operator=(const HttpConnection&) = delete;

    std::expected<HttpResponse, std::string> post_json(const std::string& path, const std::string& body);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

class ChannelSocket;

struct ControllerConfig {
    ControllerEndpoint endpoint;
    std::string ca_file;               // required for https
    std::string enforcer_id;
    std::filesystem::path state_dir;   // <state_dir>/credential
    std::string enrollment_token_file; // may be empty when a credential exists
    std::string version{product_version};
    std::string hostname;              // default: gethostname()
    HttpConnection::Timeouts timeouts{};
};

class ControllerClient {
public:
    // Checks the configuration and loads the credential if one is stored. Refuses plain
    // http on a non-loopback host and https without a readable CA file.
    static std::expected<std::unique_ptr<ControllerClient>, std::string> create(ControllerConfig config);

    const ControllerConfig& config() const { return config_; }
    std::filesystem::path credential_path() const { return config_.state_dir / "credential"; }

    bool has_credential() const;
    std::string credential() const;

    // Enrolls with the one-time token unless a credential is stored (then nothing happens):
    // POST /api/v1/enforcers/enroll, the credential written to <state-dir>/credential (0600,
    // atomic, fsync). Safe to call from any thread; errors explain what failed (no token
    // file, 401, transport).
    std::expected<void, std::string> enroll_if_needed();

    // The channel socket while it is open (the channel thread sets and clears it), null
    // otherwise: the status thread and the event uploader send their requests on it.
    std::shared_ptr<ChannelSocket> channel() const;
    void set_channel(std::shared_ptr<ChannelSocket> socket);
    // Clears the channel if it is still `socket` (a newer one stays).
    void clear_channel(const ChannelSocket* socket);

    // "/api/v1/enforcers/<id>/<what>"
    std::string enforcer_path(std::string_view what) const;

private:
    explicit ControllerClient(ControllerConfig config) : config_(std::move(config)) {}
    ControllerConfig config_;
    mutable std::mutex mutex_;
    std::string credential_;
    std::shared_ptr<ChannelSocket> channel_;
};

std::int64_t unix_ms_now();
std::int64_t unix_ns_now();

}  // namespace bulkhead::enforcer::agent
