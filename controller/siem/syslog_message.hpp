// RFC 5424 syslog messages around a SIEM body, and their framing on the wire: octet
// counting (RFC 5425 / RFC 6587) on TLS and TCP streams, one message per datagram
// (RFC 5426) on UDP, one line per message in a file.
//
//   <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [bulkhead@32473 id="drops/123"] MSG
//
// Pure: the time is a parameter.
#pragma once

#include "controller/domain/time.hpp"

#include <cstddef>
#include <string>
#include <string_view>

namespace bulkhead::siem {

// Who is speaking; the same for every message of a controller.
struct SyslogIdentity {
    int facility = 20; // local4
    std::string hostname; // "" = NILVALUE; at most 255 characters
    std::string app_name = "bulkhead-controller"; // at most 48
    std::string procid;   // "" = NILVALUE; at most 128
};

struct SyslogEntry {
    int severity = 6; // RFC 5424 0..7 (siem_formats.hpp: syslog_severity)
    controller::TimeMs time = 0;
    std::string msgid;     // at most 32 ("drop", "incident.open", ...); "" = NILVALUE
    std::string stable_id; // written as [bulkhead@32473 id="..."]; "" = no structured data
    std::string body;      // CEF, LEEF or OCSF text, written as is
};

// The SD-ID of Bulkhead's structured-data element. 32473 is the Private Enterprise Number
// RFC 5612 reserves for documentation: to be replaced once Bulkhead has its own.
inline constexpr std::string_view kStructuredDataId = "bulkhead@32473";

// "2026-11-23T10:00:00.000Z"
std::string rfc3339_ms(controller::TimeMs ms);

// A header field: printable US-ASCII only (33..126; anything else becomes '_'), cut to
// `max_length`, "-" (NILVALUE) when empty.
std::string header_field(std::string_view text, std::size_t max_length);

// An SD-PARAM value with '"', '\' and ']' escaped by a backslash.
std::string sd_param_value(std::string_view text);

// The whole message, unframed. Facility is clamped to 0..23 and severity to 0..7.
std::string rfc5424_message(const SyslogIdentity& identity, const SyslogEntry& entry);

// RFC 5425 octet counting: "<length in bytes> <message>".
std::string octet_counted(std::string_view message);

// RFC 5426: a message longer than `max_bytes` is cut (at a UTF-8 character boundary) and
// ends with kTruncationMarker so that the whole datagram is exactly `max_bytes` or less;
// never split over several datagrams. 8192 by default: large enough for an OCSF incident,
// and a fragmented datagram on a LAN is still delivered more often than a cut JSON parses.
inline constexpr std::size_t kDefaultMaxDatagram = 8192;
inline constexpr std::string_view kTruncationMarker = "...[truncated]";
std::string udp_datagram(std::string_view message, std::size_t max_bytes = kDefaultMaxDatagram);

} // namespace bulkhead::siem
