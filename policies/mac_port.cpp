#include "policies/mac_port.hpp"

namespace bulkhead::policy {
namespace {

constexpr std::string_view stand_in_prefix = "m:";

bool is_lower_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

}  // namespace

std::string mac_port_name(std::string_view normalized_mac) {
    std::string out(stand_in_prefix);
    for (const char c : normalized_mac) {
        if (c != ':') {
            out.push_back(c);
        }
    }
    return out;
}

std::optional<std::string> mac_of_port_name(std::string_view interface) {
    if (interface.size() != stand_in_prefix.size() + 12 || !interface.starts_with(stand_in_prefix)) {
        return std::nullopt;
    }
    const auto digits = interface.substr(stand_in_prefix.size());
    std::string mac;
    for (std::size_t i = 0; i < digits.size(); ++i) {
        if (!is_lower_hex(digits[i])) {
            return std::nullopt;
        }
        if (i > 0 && i % 2 == 0) {
            mac.push_back(':');
        }
        mac.push_back(digits[i]);
    }
    return mac;
}

}  // namespace bulkhead::policy
