#include "controller/siem/siem_destination.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <set>
#include <utility>

namespace bulkhead::siem {

namespace {

constexpr std::array kTransportNames{std::pair{TransportKind::Tls, "tls"}, std::pair{TransportKind::Tcp, "tcp"},
                                     std::pair{TransportKind::Udp, "udp"}, std::pair{TransportKind::File, "file"}};
constexpr std::array kFormatNames{std::pair{SiemFormat::Cef, "cef"}, std::pair{SiemFormat::Leef, "leef"},
                                  std::pair{SiemFormat::Ocsf, "ocsf"}};
constexpr std::array kRecordNames{
    std::pair{SiemRecordKind::Drops, "drops"},         std::pair{SiemRecordKind::AllowedFlows, "allowed_flows"},
    std::pair{SiemRecordKind::Incidents, "incidents"}, std::pair{SiemRecordKind::Quarantines, "quarantines"},
    std::pair{SiemRecordKind::Audit, "audit"},         std::pair{SiemRecordKind::Checkpoints, "checkpoints"}};

template <typename Table, typename Enum> std::string_view name_in(const Table& table, Enum value) {
    for (const auto& [candidate, name] : table) {
        if (candidate == value) {
            return name;
        }
    }
    return "?";
}

template <typename Enum, typename Table> std::optional<Enum> value_in(const Table& table, std::string_view text) {
    for (const auto& [candidate, name] : table) {
        if (text == name) {
            return candidate;
        }
    }
    return std::nullopt;
}

// "must be one of cef, leef, ocsf"
template <typename Table> std::string one_of(const Table& table) {
    std::string text = "must be one of ";
    for (std::size_t i = 0; i < table.size(); ++i) {
        text += (i == 0 ? "" : ", ");
        text += table[i].second;
    }
    return text;
}

// RFC 6901: "~" and "/" in a member name are written "~0" and "~1".
std::string pointer_to(std::string_view base, std::string_view member) {
    std::string pointer(base);
    pointer += '/';
    for (const char c : member) {
        if (c == '~') {
            pointer += "~0";
        } else if (c == '/') {
            pointer += "~1";
        } else {
            pointer += c;
        }
    }
    return pointer;
}

bool valid_name(std::string_view name) {
    return !name.empty() && name.size() <= 64 && std::ranges::all_of(name, [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    });
}

// Reads one destination object, collecting every fault.
class DestinationReader {
public:
    DestinationReader(const nlohmann::json& object, std::string_view pointer) : object_(object), pointer_(pointer) {}

    std::expected<SiemDestination, ConfigErrors> read() {
        if (!object_.is_object()) {
            fail(pointer_, "must be an object");
            return std::unexpected(std::move(errors_));
        }
        static constexpr std::array kKnown{"name",   "transport", "address",       "path",
                                           "format", "records",   "rate_limit_per_second",
                                           "ca_file", "server_name", "client_certificate", "client_key"};
        for (const auto& [key, value] : object_.items()) {
            if (std::ranges::find(kKnown, std::string_view(key)) == kKnown.end()) {
                fail(pointer_to(pointer_, key), "unknown key");
            }
        }
        read_name();
        const bool transport_known = read_transport();
        read_format();
        read_records();
        read_rate_limit();
        if (transport_known) {
            read_transport_specific();
        }
        if (!errors_.empty()) {
            return std::unexpected(std::move(errors_));
        }
        return std::move(destination_);
    }

private:
    void fail(std::string pointer, std::string reason) {
        errors_.push_back(ConfigError{std::move(pointer), std::move(reason)});
    }
    std::string at(std::string_view key) const { return pointer_to(pointer_, key); }
    const nlohmann::json* member(std::string_view key) const {
        const auto it = object_.find(key);
        return it == object_.end() ? nullptr : &*it;
    }
    // A required or optional string member; nullopt (with an error when it was there or
    // required) when it is missing or not a non-empty string.
    std::optional<std::string> string_member(std::string_view key, bool required) {
        const auto* value = member(key);
        if (value == nullptr) {
            if (required) {
                fail(at(key), "is required");
            }
            return std::nullopt;
        }
        if (!value->is_string()) {
            fail(at(key), "must be a string");
            return std::nullopt;
        }
        auto text = value->get<std::string>();
        if (text.empty()) {
            fail(at(key), "must not be empty");
            return std::nullopt;
        }
        return text;
    }

    void read_name() {
        if (auto name = string_member("name", true)) {
            if (!valid_name(*name)) {
                fail(at("name"), "must be 1 to 64 characters of a-z, 0-9, '_' and '-'");
            }
            destination_.name = std::move(*name);
        }
    }
    bool read_transport() {
        auto text = string_member("transport", true);
        if (!text) {
            return false;
        }
        const auto kind = transport_kind_from_string(*text);
        if (!kind) {
            fail(at("transport"), one_of(kTransportNames));
            return false;
        }
        destination_.transport = *kind;
        return true;
    }
    void read_format() {
        if (auto text = string_member("format", true)) {
            if (const auto format = siem_format_from_string(*text)) {
                destination_.format = *format;
            } else {
                fail(at("format"), one_of(kFormatNames));
            }
        }
    }
    void read_records() {
        const auto* value = member("records");
        if (value == nullptr) {
            fail(at("records"), "is required");
            return;
        }
        if (!value->is_array() || value->empty()) {
            fail(at("records"), "must be a non-empty array");
            return;
        }
        for (std::size_t i = 0; i < value->size(); ++i) {
            const auto& item = (*value)[i];
            const std::string where = at("records") + "/" + std::to_string(i);
            const auto kind = item.is_string() ? siem_record_kind_from_string(item.get<std::string>()) : std::nullopt;
            if (!kind) {
                fail(where, one_of(kRecordNames));
            } else if (destination_.wants(*kind)) {
                fail(where, "repeats " + std::string(to_string(*kind)));
            } else {
                destination_.records.push_back(*kind);
            }
        }
    }
    void read_rate_limit() {
        const auto* value = member("rate_limit_per_second");
        if (value == nullptr) {
            return;
        }
        // 1,000,000 a second is beyond any single receiver; a larger number is a typo.
        constexpr std::int64_t kMaximum = 1'000'000;
        if (!value->is_number_integer() || value->get<std::int64_t>() < 1 || value->get<std::int64_t>() > kMaximum) {
            fail(at("rate_limit_per_second"), "must be an integer from 1 to 1000000");
            return;
        }
        destination_.rate_limit_per_second = static_cast<std::uint32_t>(value->get<std::int64_t>());
    }
    void refuse_for_transport(std::string_view key, std::string_view why) {
        if (member(key) != nullptr) {
            fail(at(key), std::string(why));
        }
    }
    void read_transport_specific() {
        const auto transport = destination_.transport;
        if (transport == TransportKind::File) {
            refuse_for_transport("address", "not used by the file transport (it takes path)");
            if (auto path = string_member("path", true)) {
                if (path->front() != '/') {
                    fail(at("path"), "must be an absolute path");
                }
                destination_.path = std::move(*path);
            }
        } else {
            refuse_for_transport("path", "only for the file transport");
            if (auto text = string_member("address", true)) {
                if (auto address = parse_host_port(*text)) {
                    destination_.address = std::move(*address);
                } else {
                    fail(at("address"), address.error());
                }
            }
        }
        if (transport != TransportKind::Tls) {
            for (const auto* key : {"ca_file", "server_name", "client_certificate", "client_key"}) {
                refuse_for_transport(key, "only for the tls transport");
            }
            return;
        }
        if (auto ca_file = string_member("ca_file", true)) {
            destination_.tls.ca_file = std::move(*ca_file);
        }
        if (auto server_name = string_member("server_name", false)) {
            destination_.tls.server_name = std::move(*server_name);
        }
        auto certificate = string_member("client_certificate", false);
        auto key = string_member("client_key", false);
        if (member("client_certificate") != nullptr && member("client_key") == nullptr) {
            fail(at("client_key"), "is required with client_certificate");
        }
        if (member("client_key") != nullptr && member("client_certificate") == nullptr) {
            fail(at("client_certificate"), "is required with client_key");
        }
        destination_.tls.client_certificate = certificate.value_or("");
        destination_.tls.client_key = key.value_or("");
    }

    const nlohmann::json& object_;
    std::string pointer_;
    SiemDestination destination_;
    ConfigErrors errors_;
};

} // namespace

std::string_view to_string(TransportKind kind) { return name_in(kTransportNames, kind); }
std::string_view to_string(SiemFormat format) { return name_in(kFormatNames, format); }
std::string_view to_string(SiemRecordKind kind) { return name_in(kRecordNames, kind); }
std::optional<TransportKind> transport_kind_from_string(std::string_view text) {
    return value_in<TransportKind>(kTransportNames, text);
}
std::optional<SiemFormat> siem_format_from_string(std::string_view text) {
    return value_in<SiemFormat>(kFormatNames, text);
}
std::optional<SiemRecordKind> siem_record_kind_from_string(std::string_view text) {
    return value_in<SiemRecordKind>(kRecordNames, text);
}

bool SiemDestination::wants(SiemRecordKind kind) const { return std::ranges::find(records, kind) != records.end(); }

std::expected<HostPort, std::string> parse_host_port(std::string_view text) {
    std::string_view host;
    std::string_view port_text;
    if (text.starts_with('[')) {
        const auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
            return std::unexpected("must be [ipv6-address]:port");
        }
        host = text.substr(1, close - 1);
        port_text = text.substr(close + 2);
        if (host.empty() || host.find_first_not_of("0123456789abcdefABCDEF:.") != std::string_view::npos) {
            return std::unexpected("the part in brackets must be an IPv6 address");
        }
    } else {
        const auto colon = text.rfind(':');
        if (colon == std::string_view::npos) {
            return std::unexpected("must be host:port");
        }
        host = text.substr(0, colon);
        port_text = text.substr(colon + 1);
        if (host.find(':') != std::string_view::npos) {
            return std::unexpected("an IPv6 address goes in brackets, as in [::1]:6514");
        }
        const bool host_ok = !host.empty() && host.size() <= 253 && std::ranges::all_of(host, [](char c) {
            return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
        });
        if (!host_ok) {
            return std::unexpected("the host must be a DNS name or an IPv4 address");
        }
    }
    unsigned port = 0;
    const auto [end, error] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (port_text.empty() || error != std::errc{} || end != port_text.data() + port_text.size() || port < 1 ||
        port > 65535) {
        return std::unexpected("the port must be a number from 1 to 65535");
    }
    return HostPort{std::string(host), static_cast<std::uint16_t>(port)};
}

std::expected<SiemDestination, ConfigErrors> parse_siem_destination(const nlohmann::json& object,
                                                                     std::string_view pointer) {
    return DestinationReader(object, pointer).read();
}

std::expected<std::vector<SiemDestination>, ConfigErrors> parse_siem_destinations(const nlohmann::json& document,
                                                                                  std::string_view pointer) {
    ConfigErrors errors;
    if (!document.is_object()) {
        return std::unexpected(ConfigErrors{{std::string(pointer), "must be an object"}});
    }
    for (const auto& [key, value] : document.items()) {
        if (key != "destinations") {
            errors.push_back({pointer_to(pointer, key), "unknown key"});
        }
    }
    const auto list = document.find("destinations");
    const std::string list_pointer = pointer_to(pointer, "destinations");
    if (list == document.end()) {
        errors.push_back({list_pointer, "is required"});
        return std::unexpected(std::move(errors));
    }
    if (!list->is_array()) {
        errors.push_back({list_pointer, "must be an array"});
        return std::unexpected(std::move(errors));
    }
    std::vector<SiemDestination> destinations;
    std::set<std::string> names;
    for (std::size_t i = 0; i < list->size(); ++i) {
        const std::string item_pointer = list_pointer + "/" + std::to_string(i);
        auto destination = parse_siem_destination((*list)[i], item_pointer);
        if (!destination) {
            errors.insert(errors.end(), destination.error().begin(), destination.error().end());
            continue;
        }
        if (!names.insert(destination->name).second) {
            errors.push_back({item_pointer + "/name", "another destination is already named " + destination->name});
            continue;
        }
        destinations.push_back(std::move(*destination));
    }
    if (!errors.empty()) {
        return std::unexpected(std::move(errors));
    }
    return destinations;
}

std::string describe(const ConfigErrors& errors) {
    std::string text;
    for (const auto& error : errors) {
        text += error.message();
        text += '\n';
    }
    return text;
}

} // namespace bulkhead::siem
