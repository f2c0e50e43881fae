// The syslog sender against real sockets in this process, on 127.0.0.1 with ephemeral
// ports: a TLS listener built with OpenSSL (a throwaway CA and server certificate made with
// the openssl command into a temporary directory), a plain TCP listener, a UDP socket and a
// file. What arrives must be exactly the framed bytes; an untrusted certificate, a name that
// does not match and a closed port must give their typed errors.
#include "controller/siem/syslog_sender.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace bulkhead::siem;

namespace {

// A socket bound to 127.0.0.1 on a port the kernel picks.
struct BoundSocket {
    int fd = -1;
    std::uint16_t port = 0;
    BoundSocket(int type, bool listening) {
        fd = ::socket(AF_INET, type | SOCK_CLOEXEC, 0);
        REQUIRE(fd >= 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
        socklen_t length = sizeof address;
        REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
        port = ntohs(address.sin_port);
        if (listening) {
            REQUIRE(::listen(fd, 4) == 0);
        }
        // Nothing in these tests may hang the suite.
        timeval timeout{5, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    }
    ~BoundSocket() { close(); }
    void close() {
        if (fd >= 0) {
            ::close(fd);
            fd = -1;
        }
    }
    BoundSocket(const BoundSocket&) = delete;
    BoundSocket& operator=(const BoundSocket&) = delete;
};

int accept_one(int listener) {
    const int connection = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (connection >= 0) {
        timeval timeout{5, 0};
        ::setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    }
    return connection;
}

// Everything one accepted connection sends until it closes.
std::string receive_tcp_until_close(int listener) {
    const int connection = accept_one(listener);
    if (connection < 0) {
        return "<accept failed>";
    }
    std::string received;
    char buffer[4096];
    for (;;) {
        const auto n = ::recv(connection, buffer, sizeof buffer, 0);
        if (n <= 0) {
            break;
        }
        received.append(buffer, static_cast<std::size_t>(n));
    }
    ::close(connection);
    return received;
}

SiemDestination network_destination(TransportKind transport, std::uint16_t port) {
    SiemDestination destination;
    destination.name = "test";
    destination.transport = transport;
    destination.address = HostPort{"127.0.0.1", port};
    destination.format = SiemFormat::Cef;
    destination.records = {SiemRecordKind::Drops};
    return destination;
}

const std::vector<std::string> kMessages{
    R"(<164>1 2025-11-24T16:00:00.123Z ctl-1 bulkhead-controller - drop [bulkhead@32473 id="drops/1"] CEF:0|Bulkhead|x|1|drop|Connection blocked|4|rt=1)",
    R"(<166>1 2025-11-24T16:00:00.124Z ctl-1 bulkhead-controller - audit [bulkhead@32473 id="audit/2"] {"class_uid":6003,"é":"ü"})"};

std::string framed(const std::vector<std::string>& messages) {
    std::string bytes;
    for (const auto& message : messages) {
        bytes += octet_counted(message);
    }
    return bytes;
}

struct TempDir {
    std::filesystem::path path;
    TempDir() {
        std::string pattern = (std::filesystem::temp_directory_path() / "bulkhead-siem-XXXXXX").string();
        REQUIRE(::mkdtemp(pattern.data()) != nullptr);
        path = pattern;
    }
    ~TempDir() { std::filesystem::remove_all(path); }
};

// A CA, a server certificate for 127.0.0.1 and localhost signed by it, and a second CA that
// signed nothing we serve.
struct TestPki {
    TempDir dir;
    std::string ca, other_ca, server_cert, server_key, client_cert, client_key;
    TestPki() {
        const std::string d = dir.path.string();
        const std::string script =
            "set -e; cd '" + d + "'; "
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
            "  -subj /CN=bulkhead-test-ca -keyout ca.key -out ca.pem; "
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
            "  -subj /CN=some-other-ca -keyout other.key -out other.pem; "
            "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost "
            "  -keyout server.key -out server.csr; "
            "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.cnf; "
            "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
            "  -extfile san.cnf -out server.pem; "
            "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=bulkhead-controller "
            "  -keyout client.key -out client.csr; "
            "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out client.pem";
        const std::string command = "sh -c \"" + script + "\" >'" + d + "/openssl.log' 2>&1";
        REQUIRE_MESSAGE(std::system(command.c_str()) == 0, "the openssl command failed, see " << d << "/openssl.log");
        ca = d + "/ca.pem";
        other_ca = d + "/other.pem";
        server_cert = d + "/server.pem";
        server_key = d + "/server.key";
        client_cert = d + "/client.pem";
        client_key = d + "/client.key";
    }
};

// Accepts `connections` TLS connections one after another and returns what each sent until
// it closed ("<handshake failed>" for one that did not complete the handshake).
std::vector<std::string> serve_tls(int listener, const TestPki& pki, int connections,
                                   bool require_client_certificate) {
    // A client that refuses our certificate hangs up while SSL_accept still writes: that
    // SIGPIPE must not end the test run. This thread only serves, so block it here.
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
    std::vector<std::string> received;
    SSL_CTX* context = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate_file(context, pki.server_cert.c_str(), SSL_FILETYPE_PEM);
    SSL_CTX_use_PrivateKey_file(context, pki.server_key.c_str(), SSL_FILETYPE_PEM);
    if (require_client_certificate) {
        SSL_CTX_load_verify_locations(context, pki.ca.c_str(), nullptr);
        SSL_CTX_set_verify(context, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    }
    for (int i = 0; i < connections; ++i) {
        const int connection = accept_one(listener);
        if (connection < 0) {
            received.push_back("<accept failed>");
            continue;
        }
        SSL* ssl = SSL_new(context);
        SSL_set_fd(ssl, connection);
        std::string bytes;
        if (SSL_accept(ssl) != 1) {
            bytes = "<handshake failed>";
        } else {
            char buffer[4096];
            for (;;) {
                const int n = SSL_read(ssl, buffer, sizeof buffer);
                if (n <= 0) {
                    break;
                }
                bytes.append(buffer, static_cast<std::size_t>(n));
            }
        }
        SSL_free(ssl);
        ::close(connection);
        received.push_back(bytes);
    }
    SSL_CTX_free(context);
    return received;
}

} // namespace

TEST_CASE("siem sender: TCP delivers octet-counted messages, byte for byte") {
    BoundSocket listener(SOCK_STREAM, true);
    auto received = std::async(std::launch::async, receive_tcp_until_close, listener.fd);
    auto sender = make_syslog_sender(network_destination(TransportKind::Tcp, listener.port));
    REQUIRE(sender->send(std::span(kMessages).first(1)).has_value());
    REQUIRE(sender->send(std::span(kMessages).last(1)).has_value());
    CHECK(sender->flush().has_value());
    sender->close();
    CHECK(received.get() == framed(kMessages));
}

TEST_CASE("siem sender: a receiver that hung up between batches gets the next batch on a new connection") {
    BoundSocket listener(SOCK_STREAM, true);
    auto sender = make_syslog_sender(network_destination(TransportKind::Tcp, listener.port));
    REQUIRE(sender->send(std::span(kMessages).first(1)).has_value());
    // Receive the first batch, then hang up.
    const int connection = accept_one(listener.fd);
    REQUIRE(connection >= 0);
    std::string first(framed({kMessages[0]}).size(), '\0');
    REQUIRE(::recv(connection, first.data(), first.size(), MSG_WAITALL) == static_cast<ssize_t>(first.size()));
    CHECK(first == framed({kMessages[0]}));
    ::close(connection);
    std::this_thread::sleep_for(std::chrono::milliseconds(20)); // let the FIN arrive
    auto second = std::async(std::launch::async, receive_tcp_until_close, listener.fd);
    REQUIRE(sender->send(std::span(kMessages).last(1)).has_value());
    sender->close();
    CHECK(second.get() == framed({kMessages[1]}));
}

TEST_CASE("siem sender: a receiver that resets the connection mid-batch gives Closed, then a reconnect") {
    BoundSocket listener(SOCK_STREAM, true);
    auto sender = make_syslog_sender(network_destination(TransportKind::Tcp, listener.port));
    // Reads a little of the batch, then resets (SO_LINGER 0): the rest of the write fails.
    auto reset = std::async(std::launch::async, [fd = listener.fd] {
        const int connection = accept_one(fd);
        if (connection < 0) {
            return false;
        }
        char buffer[1000];
        const auto n = ::recv(connection, buffer, sizeof buffer, MSG_WAITALL);
        linger abort{1, 0};
        ::setsockopt(connection, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
        ::close(connection);
        return n == static_cast<ssize_t>(sizeof buffer);
    });
    // Far more than the loopback socket buffers hold, so the writer is still writing.
    const std::vector<std::string> big_batch(4000, std::string(8000, 'B'));
    const auto result = sender->send(big_batch);
    CHECK(reset.get());
    REQUIRE_FALSE(result.has_value());
    CHECK(result.error().kind == SendErrorKind::Closed);
    CHECK(result.error().message.find("closed the connection") != std::string::npos);
    auto received = std::async(std::launch::async, receive_tcp_until_close, listener.fd);
    REQUIRE(sender->send(kMessages).has_value());
    sender->close();
    CHECK(received.get() == framed(kMessages));
}

TEST_CASE("siem sender: a closed port is Unreachable, and the next send tries again") {
    {
        BoundSocket unused(SOCK_STREAM, false); // bound, never listening: connect is refused
        const std::uint16_t port = unused.port;
        auto sender = make_syslog_sender(network_destination(TransportKind::Tcp, port));
        const auto result = sender->send(kMessages);
        REQUIRE_FALSE(result.has_value());
        CHECK(result.error().kind == SendErrorKind::Unreachable);
        CHECK(result.error().message.find("127.0.0.1:" + std::to_string(port)) != std::string::npos);
        CHECK(result.error().message.find("refused") != std::string::npos);
        // The same port starts listening: the next send connects.
        REQUIRE(::listen(unused.fd, 1) == 0);
        auto received = std::async(std::launch::async, receive_tcp_until_close, unused.fd);
        REQUIRE(sender->send(kMessages).has_value());
        sender->close();
        CHECK(received.get() == framed(kMessages));
    }
}

TEST_CASE("siem sender: a TLS CA file that cannot be read is an Io error naming it") {
    SiemDestination destination = network_destination(TransportKind::Tls, 6514);
    destination.tls.ca_file = "/nonexistent-ca.pem";
    const auto result = make_syslog_sender(destination)->send(kMessages);
    REQUIRE_FALSE(result.has_value());
    CHECK(result.error().kind == SendErrorKind::Io); // the CA file is read before connecting
    CHECK(result.error().message.find("/nonexistent-ca.pem") != std::string::npos);
}

TEST_CASE("siem sender: UDP sends one datagram per message, truncating long ones") {
    BoundSocket receiver(SOCK_DGRAM, false);
    SyslogSenderOptions options;
    options.max_datagram = 200;
    auto sender = make_syslog_sender(network_destination(TransportKind::Udp, receiver.port), options);
    const std::string long_message = "<166>1 - - - - - - " + std::string(500, 'L');
    std::vector<std::string> batch = kMessages;
    batch.push_back(long_message);
    REQUIRE(sender->send(batch).has_value());
    char buffer[65536];
    for (const auto& message : kMessages) {
        const auto n = ::recv(receiver.fd, buffer, sizeof buffer, 0);
        REQUIRE(n > 0);
        CHECK(std::string(buffer, static_cast<std::size_t>(n)) == message);
    }
    const auto n = ::recv(receiver.fd, buffer, sizeof buffer, 0);
    REQUIRE(n == 200);
    const std::string truncated(buffer, 200);
    CHECK(truncated == udp_datagram(long_message, 200));
    CHECK(truncated.ends_with(kTruncationMarker));
}

TEST_CASE("siem sender: the file transport appends one line per message") {
    TempDir dir;
    SiemDestination destination;
    destination.name = "file";
    destination.transport = TransportKind::File;
    destination.path = (dir.path / "siem.log").string();
    {
        std::ofstream existing(destination.path);
        existing << "earlier line\n";
    }
    auto sender = make_syslog_sender(destination);
    REQUIRE(sender->send(kMessages).has_value());
    REQUIRE(sender->flush().has_value());
    sender->close();
    std::ifstream in(destination.path);
    std::stringstream content;
    content << in.rdbuf();
    CHECK(content.str() == "earlier line\n" + kMessages[0] + "\n" + kMessages[1] + "\n");

    destination.path = (dir.path / "missing-dir" / "siem.log").string();
    const auto result = make_syslog_sender(destination)->send(kMessages);
    REQUIRE_FALSE(result.has_value());
    CHECK(result.error().kind == SendErrorKind::Io);
    CHECK(result.error().message.find("missing-dir") != std::string::npos);
}

TEST_CASE("siem sender: TLS verifies the receiver and delivers the bytes") {
    TestPki pki;
    BoundSocket listener(SOCK_STREAM, true);

    SUBCASE("trusted: two batches on one connection, byte for byte") {
        auto received = std::async(std::launch::async, serve_tls, listener.fd, std::cref(pki), 1, false);
        SiemDestination destination = network_destination(TransportKind::Tls, listener.port);
        destination.tls.ca_file = pki.ca;
        auto sender = make_syslog_sender(destination);
        REQUIRE(sender->send(std::span(kMessages).first(1)).has_value());
        // TLS 1.3 session tickets arrive after the handshake: the idle check must read them
        // without taking them for a hang-up.
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        REQUIRE(sender->send(std::span(kMessages).last(1)).has_value());
        sender->close();
        const auto connections = received.get();
        REQUIRE(connections.size() == 1);
        CHECK(connections[0] == framed(kMessages));
    }
    SUBCASE("trusted by server_name instead of the address") {
        auto received = std::async(std::launch::async, serve_tls, listener.fd, std::cref(pki), 1, false);
        SiemDestination destination = network_destination(TransportKind::Tls, listener.port);
        destination.tls.ca_file = pki.ca;
        destination.tls.server_name = "localhost";
        auto sender = make_syslog_sender(destination);
        REQUIRE(sender->send(kMessages).has_value());
        sender->close();
        CHECK(received.get().at(0) == framed(kMessages));
    }
    SUBCASE("mutual TLS: the client certificate is presented and accepted") {
        auto received = std::async(std::launch::async, serve_tls, listener.fd, std::cref(pki), 1, true);
        SiemDestination destination = network_destination(TransportKind::Tls, listener.port);
        destination.tls.ca_file = pki.ca;
        destination.tls.client_certificate = pki.client_cert;
        destination.tls.client_key = pki.client_key;
        auto sender = make_syslog_sender(destination);
        REQUIRE(sender->send(kMessages).has_value());
        sender->close();
        CHECK(received.get().at(0) == framed(kMessages)); // the server required and verified it
    }
    SUBCASE("a client key that does not match its certificate is Io") {
        SiemDestination destination = network_destination(TransportKind::Tls, listener.port);
        destination.tls.ca_file = pki.ca;
        destination.tls.client_certificate = pki.client_cert;
        destination.tls.client_key = pki.server_key;
        const auto result = make_syslog_sender(destination)->send(kMessages);
        REQUIRE_FALSE(result.has_value());
        CHECK(result.error().kind == SendErrorKind::Io);
        CHECK(result.error().message.find("client_key") != std::string::npos);
    }
    SUBCASE("a certificate from another CA is Untrusted") {
        auto received = std::async(std::launch::async, serve_tls, listener.fd, std::cref(pki), 1, false);
        SiemDestination destination = network_destination(TransportKind::Tls, listener.port);
        destination.tls.ca_file = pki.other_ca;
        auto sender = make_syslog_sender(destination);
        const auto result = sender->send(kMessages);
        REQUIRE_FALSE(result.has_value());
        CHECK(result.error().kind == SendErrorKind::Untrusted);
        CHECK(result.error().message.find("not trusted") != std::string::npos);
        CHECK(result.error().message.find(pki.other_ca) != std::string::npos);
        CHECK(received.get().at(0) == "<handshake failed>");
    }
    SUBCASE("a name the certificate does not carry is Untrusted") {
        auto received = std::async(std::launch::async, serve_tls, listener.fd, std::cref(pki), 1, false);
        SiemDestination destination = network_destination(TransportKind::Tls, listener.port);
        destination.tls.ca_file = pki.ca;
        destination.tls.server_name = "siem.example.net";
        const auto result = make_syslog_sender(destination)->send(kMessages);
        REQUIRE_FALSE(result.has_value());
        CHECK(result.error().kind == SendErrorKind::Untrusted);
        CHECK(result.error().message.find("siem.example.net") != std::string::npos);
        CHECK(received.get().at(0) == "<handshake failed>");
    }
    SUBCASE("a receiver that is gone gives Unreachable") {
        listener.close();
        SiemDestination destination = network_destination(TransportKind::Tls, listener.port);
        destination.tls.ca_file = pki.ca;
        const auto result = make_syslog_sender(destination)->send(kMessages);
        REQUIRE_FALSE(result.has_value());
        CHECK(result.error().kind == SendErrorKind::Unreachable);
    }
}

TEST_CASE("siem sender: the recording fake keeps messages and fails on demand") {
    RecordingSyslogSender fake;
    REQUIRE(fake.send(kMessages).has_value());
    CHECK(fake.sent == kMessages);
    fake.next_error = SendError{SendErrorKind::Closed, "gone"};
    const auto result = fake.send(kMessages);
    REQUIRE_FALSE(result.has_value());
    CHECK(result.error().kind == SendErrorKind::Closed);
    CHECK(fake.sent.size() == 2);
    CHECK(to_string(SendErrorKind::Untrusted) == "untrusted");
}
