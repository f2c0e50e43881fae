// The enforcer's side of the controller connection (docs/control-channel.md): where the
// controller is, whom to trust (CA), who we are (credential, enrollment), and one HTTP
// connection per thread. cpp-httplib stays inside the .cpp files.
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

// One HTTP(S) connection, used by one thread at a time. stop() may be called from any
// thread and aborts the request in flight (that is how the watchdog and shutdown end a
// blocking read).
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

    void set_bearer(const std::string& credential);
    std::expected<HttpResponse, std::string> post_json(const std::string& path, const std::string& body);
    // GET streaming the body: `on_status` sees the status first (false: abort, the body is
    // not read); `on_data` every chunk (false: abort). Returns the status, or the transport
    // error when the request did not complete (an abort by a callback or stop() included).
    std::expected<int, std::string> stream(const std::string& path,
                                           const std::function<bool(int)>& on_status,
                                           const std::function<bool(std::string_view)>& on_data);
    void stop();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// Holds the connection a thread is using so another thread can abort it; once interrupted,
// every later set() is refused (shutdown).
class Interruptible {
public:
    bool set(std::shared_ptr<HttpConnection> connection);
    void clear();
    void interrupt_current();  // aborts the request in flight, nothing more
    void shut_down();          // aborts and refuses every later set()
    bool shutting_down() const;

private:
    mutable std::mutex mutex_;
    std::shared_ptr<HttpConnection> current_;
    bool shutting_down_ = false;
};

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

    // A new connection carrying the credential (when there is one).
    std::shared_ptr<HttpConnection> connect(std::chrono::milliseconds read_timeout) const;

    // "/api/v1/enforcers/<id>/<what>"
    std::string enforcer_path(std::string_view what) const;

private:
    explicit ControllerClient(ControllerConfig config) : config_(std::move(config)) {}
    ControllerConfig config_;
    mutable std::mutex mutex_;
    std::string credential_;
};

std::int64_t unix_ms_now();

}  // namespace bulkhead::enforcer::agent
