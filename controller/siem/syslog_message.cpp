#include "controller/siem/syslog_message.hpp"

#include <algorithm>

namespace bulkhead::siem {

std::string rfc3339_ms(controller::TimeMs ms) {
    // The domain's formatter already writes exactly RFC 3339 with milliseconds and "Z".
    return controller::format_time_ms(ms);
}

std::string header_field(std::string_view text, std::size_t max_length) {
    if (text.empty()) {
        return "-";
    }
    std::string out(text.substr(0, max_length));
    std::ranges::replace_if(out, [](char c) { return c < 33 || c > 126; }, '_');
    return out;
}

std::string sd_param_value(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (const char c : text) {
        if (c == '"' || c == '\\' || c == ']') {
            out += '\\';
        }
        out += c;
    }
    return out;
}

std::string rfc5424_message(const SyslogIdentity& identity, const SyslogEntry& entry) {
    const int facility = std::clamp(identity.facility, 0, 23);
    const int severity = std::clamp(entry.severity, 0, 7);
    std::string out = "<" + std::to_string(facility * 8 + severity) + ">1 ";
    out += rfc3339_ms(entry.time);
    out += ' ';
    out += header_field(identity.hostname, 255);
    out += ' ';
    out += header_field(identity.app_name, 48);
    out += ' ';
    out += header_field(identity.procid, 128);
    out += ' ';
    out += header_field(entry.msgid, 32);
    out += ' ';
    if (entry.stable_id.empty()) {
        out += '-';
    } else {
        out += '[';
        out += kStructuredDataId;
        out += " id=\"";
        out += sd_param_value(entry.stable_id);
        out += "\"]";
    }
    if (!entry.body.empty()) {
        out += ' ';
        out += entry.body;
    }
    return out;
}

std::string octet_counted(std::string_view message) {
    std::string out = std::to_string(message.size());
    out += ' ';
    out += message;
    return out;
}

std::string udp_datagram(std::string_view message, std::size_t max_bytes) {
    if (message.size() <= max_bytes) {
        return std::string(message);
    }
    if (max_bytes <= kTruncationMarker.size()) {
        return std::string(message.substr(0, max_bytes));
    }
    std::size_t keep = max_bytes - kTruncationMarker.size();
    // Back off over UTF-8 continuation bytes (10xxxxxx) so no character is cut in half.
    while (keep > 0 && (static_cast<unsigned char>(message[keep]) & 0xC0) == 0x80) {
        --keep;
    }
    std::string out(message.substr(0, keep));
    out += kTruncationMarker;
    return out;
}

} // namespace bulkhead::siem
