#include "policies/net_address.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>
#include <utility>
#include <vector>

namespace bulkhead::policy {

std::expected<IpAddress, std::string> parse_ip_address(std::string_view text) {
    // inet_pton reads a C string: an embedded NUL ("10.0.0.30\u0000evil") would cut it short.
    if (text.empty() || text.size() > 45 || text.find('\0') != std::string_view::npos) {
        return std::unexpected("\"" + std::string(text) + "\" is not an IP address");
    }
    std::string s(text);
    IpAddress a;
    if (s.find(':') == std::string::npos) {
        a.family = Family::Ipv4;
        if (inet_pton(AF_INET, s.c_str(), a.bytes.data()) == 1) {
            return a;
        }
    } else {
        a.family = Family::Ipv6;
        if (inet_pton(AF_INET6, s.c_str(), a.bytes.data()) == 1) {
            return a;
        }
    }
    return std::unexpected("\"" + s + "\" is not an IP address");
}

std::expected<IpRange, std::string> parse_cidr(std::string_view text) {
    if (text.find('\0') != std::string_view::npos) {
        return std::unexpected("a CIDR block must not contain a NUL character");
    }
    auto slash = text.find('/');
    auto address = parse_ip_address(text.substr(0, slash));
    if (!address) {
        return std::unexpected("\"" + std::string(text) + "\" is not a CIDR block: " +
                               address.error());
    }
    const int max_bits = address->family == Family::Ipv4 ? 32 : 128;
    int bits = max_bits;
    if (slash != std::string_view::npos) {
        auto digits = text.substr(slash + 1);
        // from_chars would accept a sign ("/-0"); a prefix length is digits only.
        const bool only_digits = !digits.empty() && digits.find_first_not_of("0123456789") == std::string_view::npos;
        auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), bits);
        if (!only_digits || ec != std::errc{} || end != digits.data() + digits.size() ||
            bits < 0 || bits > max_bits) {
            return std::unexpected("\"" + std::string(text) + "\" has an invalid prefix length (0.." +
                                   std::to_string(max_bits) + ")");
        }
    }
    IpRange r{*address, *address};
    for (int bit = bits; bit < max_bits; ++bit) {
        const auto byte = static_cast<std::size_t>(bit / 8);
        const auto mask = static_cast<std::uint8_t>(0x80u >> (bit % 8));
        if ((r.low.bytes[byte] & mask) != 0) {
            IpAddress network = *address;
            for (int b = bits; b < max_bits; ++b) {
                network.bytes[static_cast<std::size_t>(b / 8)] &=
                    static_cast<std::uint8_t>(~(0x80u >> (b % 8)));
            }
            return std::unexpected("\"" + std::string(text) + "\" has host bits set (did you mean " +
                                   to_string(network) + "/" + std::to_string(bits) + "?)");
        }
        r.high.bytes[byte] |= mask;
    }
    return r;
}

IpRange host_range(const IpAddress& a) { return IpRange{a, a}; }

std::string to_string(const IpAddress& a) {
    char buffer[INET6_ADDRSTRLEN] = {};
    inet_ntop(a.family == Family::Ipv4 ? AF_INET : AF_INET6, a.bytes.data(), buffer,
              sizeof buffer);
    return buffer;
}

int IpRange::prefix_length() const {
    const int max_bits = low.family == Family::Ipv4 ? 32 : 128;
    // Count the leading bits where low and high agree; the rest must be 0 in low, 1 in high.
    int bits = 0;
    while (bits < max_bits) {
        const auto byte = static_cast<std::size_t>(bits / 8);
        const auto mask = static_cast<std::uint8_t>(0x80u >> (bits % 8));
        if ((low.bytes[byte] & mask) != (high.bytes[byte] & mask)) {
            break;
        }
        ++bits;
    }
    for (int bit = bits; bit < max_bits; ++bit) {
        const auto byte = static_cast<std::size_t>(bit / 8);
        const auto mask = static_cast<std::uint8_t>(0x80u >> (bit % 8));
        if ((low.bytes[byte] & mask) != 0 || (high.bytes[byte] & mask) == 0) {
            return -1;
        }
    }
    return bits;
}

std::string to_string(const IpRange& r) {
    const int bits = r.prefix_length();
    const int max_bits = r.low.family == Family::Ipv4 ? 32 : 128;
    if (bits == max_bits) {
        return to_string(r.low);
    }
    if (bits >= 0) {
        return to_string(r.low) + "/" + std::to_string(bits);
    }
    return to_string(r.low) + "-" + to_string(r.high);
}

bool increment(IpAddress& a) {
    for (auto i = a.width(); i-- > 0;) {
        if (++a.bytes[i] != 0) {
            return true;
        }
    }
    return false;
}

bool decrement(IpAddress& a) {
    for (auto i = a.width(); i-- > 0;) {
        if (a.bytes[i]-- != 0) {
            return true;
        }
    }
    return false;
}

std::expected<std::string, std::string> normalize_mac(std::string_view text) {
    auto bad = [&] {
        return std::unexpected("\"" + std::string(text) +
                               "\" is not a MAC address (expected six hex pairs like "
                               "52:54:00:12:34:56)");
    };
    if (text.size() != 17) {
        return bad();
    }
    std::string out;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (i % 3 == 2) {
            if (c != ':' && c != '-') {
                return bad();
            }
            out.push_back(':');
            continue;
        }
        if (c >= '0' && c <= '9') {
            out.push_back(c);
        } else if (c >= 'a' && c <= 'f') {
            out.push_back(c);
        } else if (c >= 'A' && c <= 'F') {
            out.push_back(static_cast<char>(c - 'A' + 'a'));
        } else {
            return bad();
        }
    }
    return out;
}

std::expected<void, std::string> check_interface_name(std::string_view name) {
    if (name.empty() || name.size() > 15) {
        return std::unexpected("interface name \"" + std::string(name) +
                               "\" must be 1 to 15 characters (Linux IFNAMSIZ)");
    }
    if (name == "." || name == "..") {
        return std::unexpected("interface name \"" + std::string(name) + "\" is reserved");
    }
    for (char c : name) {
        const auto u = static_cast<unsigned char>(c);
        if (c == '/' || c == ':' || c == '"' || c == '\\' || u <= 0x20 || u >= 0x7f) {
            return std::unexpected("interface name \"" + std::string(name) +
                                   "\" contains a character Linux or nft does not accept");
        }
    }
    return {};
}

std::string_view ip_protocol_name(std::uint8_t protocol) {
    switch (protocol) {
    case 1:
        return "icmp";
    case 2:
        return "igmp";
    case 6:
        return "tcp";
    case 17:
        return "udp";
    case 33:
        return "dccp";
    case 41:
        return "ipv6";
    case 47:
        return "gre";
    case 50:
        return "esp";
    case 51:
        return "ah";
    case 58:
        return "icmpv6";
    case 59:
        return "ipv6-nonxt";
    case 132:
        return "sctp";
    case 136:
        return "udplite";
    default:
        return {};
    }
}

std::optional<std::uint8_t> ip_protocol_number(std::string_view name) {
    // Built once from ip_protocol_name, so the two cannot drift; a dozen entries, read on
    // every analysed drop, so a linear scan.
    static const std::vector<std::pair<std::string_view, std::uint8_t>> keywords = [] {
        std::vector<std::pair<std::string_view, std::uint8_t>> table;
        for (int number = 0; number < 256; ++number) {
            if (auto keyword = ip_protocol_name(static_cast<std::uint8_t>(number)); !keyword.empty()) {
                table.emplace_back(keyword, static_cast<std::uint8_t>(number));
            }
        }
        return table;
    }();
    for (const auto& [keyword, number] : keywords) {
        if (keyword == name) {
            return number;
        }
    }
    return std::nullopt;
}

std::optional<std::pair<std::string, int>> split_host_port(std::string_view text) {
    auto colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0) {
        return std::nullopt;
    }
    std::string host(text.substr(0, colon));
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
    }
    int port = 0;
    const std::string_view digits = text.substr(colon + 1);
    if (auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
        ec != std::errc{} || end != digits.data() + digits.size()) {
        return std::nullopt;
    }
    if (port <= 0 || port > 65535) {
        return std::nullopt;
    }
    return std::make_pair(host, port);
}

}  // namespace bulkhead::policy
