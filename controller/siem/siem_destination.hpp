// Where SIEM records go: one destination per SOC receiver, read from the controller's
// configuration ({"destinations":[...]}). Parsing checks everything a sender would trip on
// later (an unknown key, a TLS destination without a CA, a port out of range) and names
// each fault by its JSON pointer, the way the policy pipeline reports its diagnostics.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bulkhead::siem {

enum class TransportKind { Tls, Tcp, Udp, File };
enum class SiemFormat { Cef, Leef, Ocsf };
// What a destination subscribes to. Drops and allowed flows are both StoredEvents; they are
// separate kinds because allowed-flow summaries are far more numerous and most SOCs only
// want the drops.
enum class SiemRecordKind { Drops, AllowedFlows, Incidents, Quarantines, Audit, Checkpoints };

std::string_view to_string(TransportKind kind);
std::string_view to_string(SiemFormat format);
std::string_view to_string(SiemRecordKind kind);
std::optional<TransportKind> transport_kind_from_string(std::string_view text);
std::optional<SiemFormat> siem_format_from_string(std::string_view text);
std::optional<SiemRecordKind> siem_record_kind_from_string(std::string_view text);

// "host:port" or "[v6-address]:port"; host is kept without brackets.
struct HostPort {
    std::string host;
    std::uint16_t port = 0;
    bool operator==(const HostPort&) const = default;
};
// The address, or why the text is not one (the reason, without a pointer).
std::expected<HostPort, std::string> parse_host_port(std::string_view text);

struct TlsSettings {
    std::string ca_file;            // PEM bundle the receiver's certificate must chain to
    std::string server_name;        // name to verify (and send as SNI); "" = the address's host
    std::string client_certificate; // PEM chain for mutual TLS; "" = none
    std::string client_key;         // its key; given exactly when client_certificate is
};

struct SiemDestination {
    std::string name; // [a-z0-9_-]{1,64}: names the outbox queue and the metrics
    TransportKind transport = TransportKind::Tls;
    std::optional<HostPort> address; // all transports but file
    std::string path;                // file transport only
    SiemFormat format = SiemFormat::Cef;
    std::vector<SiemRecordKind> records; // non-empty, no repeats, in the order written
    std::uint32_t rate_limit_per_second = 10000;
    TlsSettings tls; // tls transport only

    bool wants(SiemRecordKind kind) const;
};

// One fault in the configuration: where (a JSON pointer) and what is wrong.
struct ConfigError {
    std::string pointer;
    std::string reason;
    std::string message() const { return pointer + ": " + reason; }
    bool operator==(const ConfigError&) const = default;
};
using ConfigErrors = std::vector<ConfigError>;

// One destination object; `pointer` is where it sits in the document ("/siem/destinations/1"),
// so that every error names its full path. Reports every fault it finds, not just the first.
std::expected<SiemDestination, ConfigErrors> parse_siem_destination(const nlohmann::json& object,
                                                                     std::string_view pointer = "");

// {"destinations":[...]} (no other keys); `pointer` is where that object sits ("/siem").
// Refuses two destinations with the same name. An empty list is valid: export is off.
std::expected<std::vector<SiemDestination>, ConfigErrors>
parse_siem_destinations(const nlohmann::json& document, std::string_view pointer = "");

// The errors one per line, for a start-up message.
std::string describe(const ConfigErrors& errors);

} // namespace bulkhead::siem
