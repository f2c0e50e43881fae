// Addresses, CIDR blocks and address ranges as values. Pure: no resolver, no sockets.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace bulkhead::policy {

enum class Family : std::uint8_t { Ipv4 = 4, Ipv6 = 6 };

// An address in network byte order. IPv4 uses the first four bytes, the rest stay zero,
// so that comparison and arithmetic work on one representation.
struct IpAddress {
    Family family = Family::Ipv4;
    std::array<std::uint8_t, 16> bytes{};

    std::size_t width() const { return family == Family::Ipv4 ? 4 : 16; }
    auto operator<=>(const IpAddress&) const = default;
};

// An inclusive range [low, high] of one family. A CIDR block is a range whose bounds align.
struct IpRange {
    IpAddress low;
    IpAddress high;

    Family family() const { return low.family; }
    bool contains(const IpAddress& a) const {
        return a.family == low.family && low <= a && a <= high;
    }
    // If the range is exactly one CIDR block, its prefix length; otherwise -1.
    int prefix_length() const;
    auto operator<=>(const IpRange&) const = default;
};

std::expected<IpAddress, std::string> parse_ip_address(std::string_view text);
// "10.0.0.0/8", "fd00::/64", or a bare address (a /32 or /128). Host bits must be zero.
std::expected<IpRange, std::string> parse_cidr(std::string_view text);

// A listen address "HOST:PORT" or "[v6]:PORT" as (host without brackets, port 1-65535).
std::optional<std::pair<std::string, int>> split_host_port(std::string_view text);

IpRange host_range(const IpAddress& a);
std::string to_string(const IpAddress& a);
// CIDR notation when the range is one block, "low-high" otherwise.
std::string to_string(const IpRange& r);

// Successor/predecessor within the family; false on wrap-around (all-ones / all-zeros).
bool increment(IpAddress& a);
bool decrement(IpAddress& a);

// "52:54:00:12:34:56" (case-insensitive on input, lower case on output).
std::expected<std::string, std::string> normalize_mac(std::string_view text);

// Linux interface names: 1..15 bytes, no '/', whitespace or ':'; not "." or "..".
std::expected<void, std::string> check_interface_name(std::string_view name);

// The keyword of an IP protocol number as nft and /etc/protocols spell it ("tcp", "icmpv6",
// "gre", ...); empty for a number without one here. Shared by the enforcer's drop events
// and the controller's analyzer.
std::string_view ip_protocol_name(std::uint8_t protocol);
// Its inverse: the number of a keyword ip_protocol_name gives; nullopt for any other text.
std::optional<std::uint8_t> ip_protocol_number(std::string_view name);

}  // namespace bulkhead::policy
