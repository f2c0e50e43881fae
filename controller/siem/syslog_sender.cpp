#include "controller/siem/syslog_sender.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

namespace bulkhead::siem {

namespace {

using Clock = std::chrono::steady_clock;

SendResult failure(SendErrorKind kind, std::string message) {
    return std::unexpected(SendError{kind, std::move(message)});
}

std::string errno_text(int error) { return std::strerror(error); }

// The newest OpenSSL error queued on this thread, and the queue emptied.
std::string openssl_error_text() {
    std::string text;
    while (const unsigned long code = ERR_get_error()) {
        char buffer[256];
        ERR_error_string_n(code, buffer, sizeof buffer);
        text = buffer;
    }
    return text.empty() ? "no detail from OpenSSL" : text;
}

class FileDescriptor {
public:
    FileDescriptor() = default;
    explicit FileDescriptor(int fd) : fd_(fd) {}
    FileDescriptor(FileDescriptor&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    FileDescriptor& operator=(FileDescriptor&& other) noexcept {
        if (this != &other) {
            reset();
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    ~FileDescriptor() { reset(); }
    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }
    void reset() {
        if (fd_ >= 0) {
            ::close(fd_);
            fd_ = -1;
        }
    }

private:
    int fd_ = -1;
};

// Milliseconds left until `deadline`, at least 0, for poll().
int remaining_ms(Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1'000'000'000));
}

// 1 ready, 0 timed out, -1 poll failed (errno set).
int wait_for(int fd, short events, Clock::time_point deadline) {
    for (;;) {
        pollfd entry{fd, events, 0};
        const int ready = ::poll(&entry, 1, remaining_ms(deadline));
        if (ready < 0 && errno == EINTR) {
            continue;
        }
        return ready;
    }
}

std::string describe_address(const HostPort& address) {
    const bool v6 = address.host.find(':') != std::string::npos;
    return (v6 ? "[" + address.host + "]" : address.host) + ":" + std::to_string(address.port);
}

// A non-blocking socket connected to `address`, trying each resolved address in turn.
// Name resolution goes through the system resolver and is not bounded by the timeout:
// configure addresses, not names, where that matters.
std::expected<FileDescriptor, SendError> connect_socket(const HostPort& address, int socket_type,
                                                        std::chrono::milliseconds timeout) {
    const std::string where = describe_address(address);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = socket_type;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* found = nullptr;
    const std::string port = std::to_string(address.port);
    if (const int error = ::getaddrinfo(address.host.c_str(), port.c_str(), &hints, &found); error != 0) {
        return std::unexpected(SendError{SendErrorKind::Unreachable,
                                         "cannot resolve " + where + ": " + ::gai_strerror(error)});
    }
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> addresses(found, &::freeaddrinfo);
    const auto deadline = Clock::now() + timeout;
    std::string last_error = "no address";
    for (const addrinfo* candidate = found; candidate != nullptr; candidate = candidate->ai_next) {
        FileDescriptor fd(::socket(candidate->ai_family, candidate->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                                   candidate->ai_protocol));
        if (!fd) {
            last_error = errno_text(errno);
            continue;
        }
        if (::connect(fd.get(), candidate->ai_addr, candidate->ai_addrlen) == 0) {
            return fd;
        }
        if (errno != EINPROGRESS) {
            last_error = errno_text(errno);
            continue;
        }
        const int ready = wait_for(fd.get(), POLLOUT, deadline);
        if (ready == 0) {
            last_error = "timed out after " + std::to_string(timeout.count()) + " ms";
            break;
        }
        int error = 0;
        socklen_t length = sizeof error;
        if (ready < 0) {
            error = errno;
        } else if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &length) != 0) {
            error = errno;
        }
        if (error == 0) {
            return fd;
        }
        last_error = errno_text(error);
    }
    return std::unexpected(SendError{SendErrorKind::Unreachable, "cannot connect to " + where + ": " + last_error});
}

// True when an idle stream's receiver has hung up (EOF, reset, error). Syslog receivers
// never write, so readable means gone; `drain` consumes anything else readable (for TLS,
// session tickets) and says whether the peer is still there.
bool peer_hung_up(int fd) {
    pollfd entry{fd, POLLIN, 0};
    if (::poll(&entry, 1, 0) <= 0) {
        return false;
    }
    if ((entry.revents & (POLLERR | POLLHUP)) != 0) {
        return true;
    }
    char byte = 0;
    const auto peeked = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return peeked == 0 || (peeked < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

// OpenSSL writes to the socket with write(), which raises SIGPIPE when the receiver is
// gone. A library must not change the process's signal dispositions, so SIGPIPE is blocked
// on this thread while OpenSSL writes and a SIGPIPE raised meanwhile is consumed.
class SigpipeBlock {
public:
    SigpipeBlock() {
        sigemptyset(&pipe_);
        sigaddset(&pipe_, SIGPIPE);
        sigset_t pending;
        sigemptyset(&pending);
        ::sigpending(&pending);
        was_pending_ = sigismember(&pending, SIGPIPE) == 1;
        ::pthread_sigmask(SIG_BLOCK, &pipe_, &previous_);
    }
    ~SigpipeBlock() {
        if (!was_pending_) {
            sigset_t pending;
            sigemptyset(&pending);
            ::sigpending(&pending);
            if (sigismember(&pending, SIGPIPE) == 1) {
                const timespec no_wait{};
                while (::sigtimedwait(&pipe_, nullptr, &no_wait) < 0 && errno == EINTR) {
                }
            }
        }
        ::pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
    }
    SigpipeBlock(const SigpipeBlock&) = delete;
    SigpipeBlock& operator=(const SigpipeBlock&) = delete;

private:
    sigset_t pipe_{};
    sigset_t previous_{};
    bool was_pending_ = false;
};

// ---- plain TCP -----------------------------------------------------------------------------

std::string octet_counted_batch(std::span<const std::string> messages) {
    std::string bytes;
    for (const auto& message : messages) {
        bytes += octet_counted(message);
    }
    return bytes;
}

class TcpSyslogSender final : public SyslogSender {
public:
    TcpSyslogSender(HostPort address, SyslogSenderOptions options)
        : address_(std::move(address)), options_(options) {}

    SendResult send(std::span<const std::string> messages) override {
        if (fd_ && peer_hung_up(fd_.get())) {
            fd_.reset();
        }
        if (!fd_) {
            auto connected = connect_socket(address_, SOCK_STREAM, options_.connect_timeout);
            if (!connected) {
                return std::unexpected(connected.error());
            }
            fd_ = std::move(*connected);
        }
        auto written = write_all(octet_counted_batch(messages));
        if (!written) {
            fd_.reset();
        }
        return written;
    }
    SendResult flush() override { return {}; }
    void close() override { fd_.reset(); }

private:
    SendResult write_all(std::string_view bytes) {
        const auto deadline = Clock::now() + options_.write_timeout;
        while (!bytes.empty()) {
            const auto sent = ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
            if (sent > 0) {
                bytes.remove_prefix(static_cast<std::size_t>(sent));
                continue;
            }
            if (sent < 0 && errno == EINTR) {
                continue;
            }
            if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                if (wait_for(fd_.get(), POLLOUT, deadline) <= 0) {
                    return failure(SendErrorKind::Io, "writing to " + describe_address(address_) + " timed out after " +
                                                          std::to_string(options_.write_timeout.count()) + " ms");
                }
                continue;
            }
            const int error = errno;
            if (error == EPIPE || error == ECONNRESET) {
                return failure(SendErrorKind::Closed, describe_address(address_) + " closed the connection");
            }
            return failure(SendErrorKind::Io, "writing to " + describe_address(address_) + ": " + errno_text(error));
        }
        return {};
    }

    HostPort address_;
    SyslogSenderOptions options_;
    FileDescriptor fd_;
};

// ---- TLS -----------------------------------------------------------------------------------

struct SslContextFree {
    void operator()(SSL_CTX* context) const { SSL_CTX_free(context); }
};
struct SslFree {
    void operator()(SSL* ssl) const { SSL_free(ssl); }
};

bool is_ip_address(const std::string& text) {
    in6_addr v6{};
    in_addr v4{};
    return ::inet_pton(AF_INET, text.c_str(), &v4) == 1 || ::inet_pton(AF_INET6, text.c_str(), &v6) == 1;
}

class TlsSyslogSender final : public SyslogSender {
public:
    TlsSyslogSender(HostPort address, TlsSettings tls, SyslogSenderOptions options)
        : address_(std::move(address)), tls_(std::move(tls)), options_(options) {}
    ~TlsSyslogSender() override { close(); }

    SendResult send(std::span<const std::string> messages) override {
        if (ssl_ && receiver_gone()) {
            drop_connection();
        }
        if (!ssl_) {
            if (auto connected = connect(); !connected) {
                return connected;
            }
        }
        auto written = write_all(octet_counted_batch(messages));
        if (!written) {
            drop_connection();
        }
        return written;
    }
    SendResult flush() override { return {}; }
    void close() override {
        if (ssl_) {
            // One close_notify, without waiting for the receiver's: we are leaving.
            SigpipeBlock block;
            SSL_shutdown(ssl_.get());
        }
        drop_connection();
    }

private:
    std::string where() const { return describe_address(address_); }
    std::string verified_name() const { return tls_.server_name.empty() ? address_.host : tls_.server_name; }

    void drop_connection() {
        ssl_.reset();
        fd_.reset();
    }

    SendResult make_context() {
        ERR_clear_error();
        std::unique_ptr<SSL_CTX, SslContextFree> context(SSL_CTX_new(TLS_client_method()));
        if (!context) {
            return failure(SendErrorKind::Io, "cannot create a TLS context: " + openssl_error_text());
        }
        // RFC 5425 as updated by RFC 9662: TLS 1.2 or newer.
        SSL_CTX_ctrl(context.get(), SSL_CTRL_SET_MIN_PROTO_VERSION, TLS1_2_VERSION, nullptr);
        SSL_CTX_ctrl(context.get(), SSL_CTRL_MODE, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER,
                     nullptr);
        if (SSL_CTX_load_verify_locations(context.get(), tls_.ca_file.c_str(), nullptr) != 1) {
            return failure(SendErrorKind::Io, "cannot read ca_file " + tls_.ca_file + ": " + openssl_error_text());
        }
        SSL_CTX_set_verify(context.get(), SSL_VERIFY_PEER, nullptr);
        if (!tls_.client_certificate.empty()) {
            if (SSL_CTX_use_certificate_chain_file(context.get(), tls_.client_certificate.c_str()) != 1) {
                return failure(SendErrorKind::Io, "cannot read client_certificate " + tls_.client_certificate + ": " +
                                                      openssl_error_text());
            }
            if (SSL_CTX_use_PrivateKey_file(context.get(), tls_.client_key.c_str(), SSL_FILETYPE_PEM) != 1 ||
                SSL_CTX_check_private_key(context.get()) != 1) {
                return failure(SendErrorKind::Io, "cannot use client_key " + tls_.client_key + ": " +
                                                      openssl_error_text());
            }
        }
        context_ = std::move(context);
        return {};
    }

    SendResult connect() {
        if (!context_) {
            if (auto made = make_context(); !made) {
                return made;
            }
        }
        const auto deadline = Clock::now() + options_.connect_timeout;
        auto socket = connect_socket(address_, SOCK_STREAM, options_.connect_timeout);
        if (!socket) {
            return std::unexpected(socket.error());
        }
        ERR_clear_error();
        std::unique_ptr<SSL, SslFree> ssl(SSL_new(context_.get()));
        if (!ssl || SSL_set_fd(ssl.get(), socket->get()) != 1) {
            return failure(SendErrorKind::Io, "cannot set up TLS for " + where() + ": " + openssl_error_text());
        }
        const std::string name = verified_name();
        if (is_ip_address(name)) {
            // An address is checked against the certificate's IP subjectAltNames; no SNI.
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), name.c_str());
        } else {
            SSL_ctrl(ssl.get(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, const_cast<char*>(name.c_str()));
            SSL_set1_host(ssl.get(), name.c_str());
        }
        SigpipeBlock block;
        for (;;) {
            const int result = SSL_connect(ssl.get());
            if (result == 1) {
                break;
            }
            const int error = SSL_get_error(ssl.get(), result);
            if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
                if (wait_for(socket->get(), error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline) <= 0) {
                    return failure(SendErrorKind::Unreachable,
                                   "TLS handshake with " + where() + " timed out after " +
                                       std::to_string(options_.connect_timeout.count()) + " ms");
                }
                continue;
            }
            const long verify = SSL_get_verify_result(ssl.get());
            if (verify != X509_V_OK) {
                ERR_clear_error();
                return failure(SendErrorKind::Untrusted,
                               "the certificate of " + where() + " is not trusted (checked against ca_file " +
                                   tls_.ca_file + " for the name " + name + "): " +
                                   X509_verify_cert_error_string(verify));
            }
            return failure(SendErrorKind::Unreachable, "TLS handshake with " + where() + " failed: " +
                                                           openssl_error_text());
        }
        fd_ = std::move(*socket);
        ssl_ = std::move(ssl);
        return {};
    }

    // Reads whatever the idle receiver sent (TLS 1.3 session tickets arrive after the
    // handshake) and says whether it has closed or reset the connection.
    bool receiver_gone() {
        for (int round = 0; round < 16; ++round) {
            pollfd entry{fd_.get(), POLLIN, 0};
            if (::poll(&entry, 1, 0) <= 0) {
                return false;
            }
            if ((entry.revents & (POLLERR | POLLHUP)) != 0 && (entry.revents & POLLIN) == 0) {
                return true;
            }
            char buffer[512];
            std::size_t read = 0;
            ERR_clear_error();
            SigpipeBlock block;
            if (SSL_read_ex(ssl_.get(), buffer, sizeof buffer, &read) == 1) {
                continue; // a receiver that talks: ignore what it said
            }
            const int error = SSL_get_error(ssl_.get(), 0);
            ERR_clear_error();
            if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) {
                return true;
            }
        }
        return false;
    }

    SendResult write_all(std::string_view bytes) {
        const auto deadline = Clock::now() + options_.write_timeout;
        SigpipeBlock block;
        while (!bytes.empty()) {
            ERR_clear_error();
            std::size_t written = 0;
            const int result = SSL_write_ex(ssl_.get(), bytes.data(), bytes.size(), &written);
            if (result == 1) {
                bytes.remove_prefix(written);
                continue;
            }
            const int error = SSL_get_error(ssl_.get(), result);
            if (error == SSL_ERROR_WANT_WRITE || error == SSL_ERROR_WANT_READ) {
                if (wait_for(fd_.get(), error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline) <= 0) {
                    return failure(SendErrorKind::Io, "writing to " + where() + " timed out after " +
                                                          std::to_string(options_.write_timeout.count()) + " ms");
                }
                continue;
            }
            if (error == SSL_ERROR_ZERO_RETURN || error == SSL_ERROR_SYSCALL) {
                ERR_clear_error();
                return failure(SendErrorKind::Closed, where() + " closed the TLS connection");
            }
            return failure(SendErrorKind::Io, "writing to " + where() + ": " + openssl_error_text());
        }
        return {};
    }

    HostPort address_;
    TlsSettings tls_;
    SyslogSenderOptions options_;
    std::unique_ptr<SSL_CTX, SslContextFree> context_;
    FileDescriptor fd_;
    std::unique_ptr<SSL, SslFree> ssl_;
};

// ---- UDP -----------------------------------------------------------------------------------

class UdpSyslogSender final : public SyslogSender {
public:
    UdpSyslogSender(HostPort address, SyslogSenderOptions options)
        : address_(std::move(address)), options_(options) {}

    SendResult send(std::span<const std::string> messages) override {
        if (!fd_) {
            // A connected datagram socket: the kernel reports an ICMP "port unreachable" for
            // an earlier datagram as ECONNREFUSED on a later send.
            auto connected = connect_socket(address_, SOCK_DGRAM, options_.connect_timeout);
            if (!connected) {
                return std::unexpected(connected.error());
            }
            fd_ = std::move(*connected);
        }
        const auto deadline = Clock::now() + options_.write_timeout;
        for (const auto& message : messages) {
            const std::string datagram = udp_datagram(message, options_.max_datagram);
            for (;;) {
                const auto sent = ::send(fd_.get(), datagram.data(), datagram.size(), MSG_NOSIGNAL);
                if (sent >= 0) {
                    break;
                }
                const int error = errno;
                if (error == EINTR) {
                    continue;
                }
                if ((error == EAGAIN || error == EWOULDBLOCK) && wait_for(fd_.get(), POLLOUT, deadline) > 0) {
                    continue;
                }
                fd_.reset();
                if (error == ECONNREFUSED) {
                    return failure(SendErrorKind::Unreachable, describe_address(address_) + " refused datagrams");
                }
                return failure(SendErrorKind::Io, "sending to " + describe_address(address_) + ": " +
                                                      (error == EAGAIN ? "timed out" : errno_text(error)));
            }
        }
        return {};
    }
    SendResult flush() override { return {}; }
    void close() override { fd_.reset(); }

private:
    HostPort address_;
    SyslogSenderOptions options_;
    FileDescriptor fd_;
};

// ---- file ----------------------------------------------------------------------------------

class FileSyslogSender final : public SyslogSender {
public:
    explicit FileSyslogSender(std::string path) : path_(std::move(path)) {}

    SendResult send(std::span<const std::string> messages) override {
        if (!fd_) {
            fd_ = FileDescriptor(::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640));
            if (!fd_) {
                return failure(SendErrorKind::Io, "cannot open " + path_ + ": " + errno_text(errno));
            }
        }
        std::string lines;
        for (const auto& message : messages) {
            lines += message;
            lines += '\n';
        }
        std::string_view rest = lines;
        while (!rest.empty()) {
            const auto written = ::write(fd_.get(), rest.data(), rest.size());
            if (written < 0 && errno == EINTR) {
                continue;
            }
            if (written <= 0) {
                const int error = errno;
                fd_.reset();
                return failure(SendErrorKind::Io, "writing " + path_ + ": " + errno_text(error));
            }
            rest.remove_prefix(static_cast<std::size_t>(written));
        }
        return {};
    }
    SendResult flush() override {
        if (fd_ && ::fsync(fd_.get()) != 0) {
            const int error = errno;
            fd_.reset();
            return failure(SendErrorKind::Io, "fsync " + path_ + ": " + errno_text(error));
        }
        return {};
    }
    void close() override { fd_.reset(); }

private:
    std::string path_;
    FileDescriptor fd_;
};

} // namespace

std::string_view to_string(SendErrorKind kind) {
    switch (kind) {
    case SendErrorKind::Unreachable: return "unreachable";
    case SendErrorKind::Untrusted: return "untrusted";
    case SendErrorKind::Closed: return "closed";
    case SendErrorKind::Io: return "io";
    }
    return "?";
}

std::unique_ptr<SyslogSender> make_syslog_sender(const SiemDestination& destination, SyslogSenderOptions options) {
    const HostPort address = destination.address.value_or(HostPort{});
    switch (destination.transport) {
    case TransportKind::Tls: return std::make_unique<TlsSyslogSender>(address, destination.tls, options);
    case TransportKind::Tcp: return std::make_unique<TcpSyslogSender>(address, options);
    case TransportKind::Udp: return std::make_unique<UdpSyslogSender>(address, options);
    case TransportKind::File: return std::make_unique<FileSyslogSender>(destination.path);
    }
    return std::make_unique<FileSyslogSender>(destination.path);
}

SendResult RecordingSyslogSender::send(std::span<const std::string> messages) {
    if (next_error) {
        return std::unexpected(*next_error);
    }
    sent.insert(sent.end(), messages.begin(), messages.end());
    return {};
}

} // namespace bulkhead::siem
