// The transport edge of SIEM export: sends RFC 5424 messages to one destination over TLS
// (RFC 5425), plain TCP (octet counting, RFC 6587), UDP (RFC 5426) or appends them to a
// file. The only place in bulkhead_siem with sockets and OpenSSL.
//
// A sender connects lazily on the first send, keeps the connection, and drops it on any
// error; the next send connects again. It never retries: the caller (the outbox) owns retry
// and backoff and learns from the typed error what happened. Connect and write are bounded
// by timeouts; a whole send() shares one write deadline.
//
// Syslog over a stream has no acknowledgement: bytes the kernel accepted are "sent" even if
// the receiver dies before reading them. Before each batch a sender checks whether the
// receiver closed the idle connection and reconnects first, which catches the common case
// (a receiver restarted between batches) without losing the batch.
#pragma once

#include "controller/siem/siem_destination.hpp"
#include "controller/siem/syslog_message.hpp"

#include <chrono>
#include <cstddef>
#include <expected>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bulkhead::siem {

enum class SendErrorKind {
    Unreachable, // no connection: refused, timed out, name not resolved, TLS handshake failed
    Untrusted,   // TLS: the receiver's certificate does not verify against ca_file / the name
    Closed,      // the receiver closed or reset an established connection mid-batch
    Io,          // anything else: a write timed out, a file could not be written, bad key files
};
std::string_view to_string(SendErrorKind kind);

struct SendError {
    SendErrorKind kind = SendErrorKind::Io;
    std::string message; // names the destination and the cause
};
using SendResult = std::expected<void, SendError>;

struct SyslogSenderOptions {
    std::chrono::milliseconds connect_timeout{5000}; // TCP connect plus TLS handshake
    std::chrono::milliseconds write_timeout{5000};   // one whole send()
    std::size_t max_datagram = kDefaultMaxDatagram;  // UDP only
};

// One destination's connection. Not thread-safe: one sender per destination, used by the
// destination's delivery worker.
class SyslogSender {
public:
    virtual ~SyslogSender() = default;
    // Sends `messages` (unframed RFC 5424 text, rfc5424_message) in order, framed for the
    // transport. Everything or an error: on an error some leading messages may have been
    // delivered (a stream has no acknowledgement), so the outbox re-sends the batch and the
    // receiver de-duplicates by the stable id.
    virtual SendResult send(std::span<const std::string> messages) = 0;
    // File: fsync. Streams and datagrams: nothing (the kernel sends what it accepted).
    virtual SendResult flush() = 0;
    // Drops the connection (or file); the next send opens it again.
    virtual void close() = 0;
};

// The sender for the destination's transport.
std::unique_ptr<SyslogSender> make_syslog_sender(const SiemDestination& destination,
                                                 SyslogSenderOptions options = {});

// The fake, for services that export without a receiver: keeps what it was given and fails
// while `next_error` is set.
class RecordingSyslogSender final : public SyslogSender {
public:
    SendResult send(std::span<const std::string> messages) override;
    SendResult flush() override { return {}; }
    void close() override { ++closes; }

    std::vector<std::string> sent;
    std::optional<SendError> next_error;
    int closes = 0;
};

} // namespace bulkhead::siem
