#include "enforcer/nflog/drop_event.hpp"

#include "enforcer/nflog/nflog_wire.hpp"

#include <array>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

namespace bulkhead::nflog {

std::string_view to_string(Direction direction) {
    return direction == Direction::Out ? "out" : "in";
}

std::string_view to_string(Reason reason) {
    switch (reason) {
    case Reason::Default:
        return "default";
    case Reason::Deny:
        return "deny";
    case Reason::Decoy:
        return "decoy";
    case Reason::Quarantine:
        return "quarantine";
    case Reason::Allow:
        return "allow";
    case Reason::Tripwire:
        return "tripwire";
    case Reason::Spoof:
        return "spoof";
    case Reason::Unidentified:
        return "unidentified";
    }
    return "default";
}

std::string_view to_string(TimestampSource source) {
    return source == TimestampSource::Kernel ? "kernel" : "receive";
}

std::optional<Direction> direction_from_string(std::string_view text) {
    if (text == "out")
        return Direction::Out;
    if (text == "in")
        return Direction::In;
    return std::nullopt;
}

std::optional<Reason> reason_from_string(std::string_view text) {
    if (text == "default")
        return Reason::Default;
    if (text == "deny")
        return Reason::Deny;
    if (text == "decoy")
        return Reason::Decoy;
    if (text == "quarantine")
        return Reason::Quarantine;
    if (text == "allow")
        return Reason::Allow;
    if (text == "tripwire")
        return Reason::Tripwire;
    if (text == "spoof")
        return Reason::Spoof;
    if (text == "unidentified")
        return Reason::Unidentified;
    return std::nullopt;
}

std::string_view hook_name(std::uint8_t hook) {
    static constexpr std::array<std::string_view, 5> names{"prerouting", "input", "forward",
                                                           "output", "postrouting"};
    return hook < names.size() ? names[hook] : std::string_view{};
}

std::string_view protocol_name(std::uint8_t protocol) {
    return policy::ip_protocol_name(protocol);
}

std::string tcp_flags_text(std::uint8_t flags) {
    static constexpr std::array<std::string_view, 8> names{"fin", "syn", "rst", "psh",
                                                           "ack", "urg", "ecn", "cwr"};
    std::string out;
    for (unsigned bit = 0; bit < names.size(); ++bit) {
        if ((flags & (1U << bit)) != 0) {
            if (!out.empty()) {
                out += ',';
            }
            out += names[bit];
        }
    }
    return out;
}

std::string to_string(const MacAddress& mac) {
    std::array<char, 18> text{};
    std::snprintf(text.data(), text.size(), "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2],
                  mac[3], mac[4], mac[5]);
    return std::string(text.data(), 17);
}

std::string format_time_utc(std::int64_t unix_ns) {
    std::int64_t seconds = unix_ns / 1'000'000'000;
    std::int64_t rest_ns = unix_ns % 1'000'000'000;
    if (rest_ns < 0) {
        rest_ns += 1'000'000'000;
        --seconds;
    }
    const auto t = static_cast<std::time_t>(seconds);
    std::tm tm{};
    if (gmtime_r(&t, &tm) == nullptr) {
        return {};
    }
    std::array<char, 48> text{};
    const int n = std::snprintf(text.data(), text.size(), "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
                                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                                tm.tm_sec, static_cast<int>(rest_ns / 1000));
    return n > 0 ? std::string(text.data(), static_cast<std::size_t>(n)) : std::string{};
}

nlohmann::json to_json(const DropEvent& e) {
    nlohmann::json j;
    j["type"] = e.is_allowed_flow() ? "allowed_flow" : "drop";
    j["count"] = 1;
    j["time_ns"] = e.timestamp_ns;
    j["time_unix_ms"] = e.timestamp_ns / 1'000'000;
    j["time"] = format_time_utc(e.timestamp_ns);
    j["time_source"] = std::string(to_string(e.timestamp_source));
    if (e.timestamp_source == TimestampSource::Kernel && e.received_ns != 0) {
        j["received_ns"] = e.received_ns;  // otherwise it is time_ns
    }
    j["group"] = e.group;
    if (e.seq)
        j["seq"] = *e.seq;
    if (e.seq_global)
        j["seq_global"] = *e.seq_global;
    if (e.hook) {
        j["hook"] = hook_name(*e.hook).empty() ? nlohmann::json(*e.hook)
                                               : nlohmann::json(std::string(hook_name(*e.hook)));
    }
    j["prefix"] = e.prefix;
    j["mode"] = e.mode == policy::Mode::Monitor ? "monitor" : "enforce";
    j["direction"] = std::string(to_string(e.direction));
    j["reason"] = std::string(to_string(e.reason));
    j["subject"] = e.subject;
    auto put_interface = [&](const char* key, std::uint32_t ifindex, const std::string& name) {
        if (ifindex != 0) {
            j[std::string(key) + "_ifindex"] = ifindex;
            j[key] = name;
        }
    };
    put_interface("indev", e.indev, e.indev_name);
    put_interface("outdev", e.outdev, e.outdev_name);
    put_interface("physindev", e.physindev, e.physindev_name);
    put_interface("physoutdev", e.physoutdev, e.physoutdev_name);
    if (e.src_mac)
        j["src_mac"] = to_string(*e.src_mac);
    if (e.dst_mac)
        j["dst_mac"] = to_string(*e.dst_mac);
    if (e.mark)
        j["mark"] = *e.mark;
    j["family"] = e.family() == policy::Family::Ipv4 ? 4 : 6;
    j["src"] = policy::to_string(e.src);
    j["dst"] = policy::to_string(e.dst);
    j["proto"] = e.protocol;
    if (auto name = protocol_name(e.protocol); !name.empty()) {
        j["proto_name"] = std::string(name);
    }
    if (e.sport)
        j["sport"] = *e.sport;
    if (e.dport)
        j["dport"] = *e.dport;
    if (e.icmp_type)
        j["icmp_type"] = *e.icmp_type;
    if (e.icmp_code)
        j["icmp_code"] = *e.icmp_code;
    if (e.icmp_id)
        j["icmp_id"] = *e.icmp_id;
    if (e.icmp_seq)
        j["icmp_seq"] = *e.icmp_seq;
    if (e.tcp_flags) {
        j["tcp_flags"] = tcp_flags_text(*e.tcp_flags);
        j["tcp_flags_raw"] = *e.tcp_flags;
    }
    j["ip_len"] = e.ip_length;
    j["workload"] = e.workload;
    j["would_drop"] = e.would_drop;
    j["policy_generation"] = e.policy_generation;
    if (e.notes != 0) {
        auto notes = nlohmann::json::array();
        for (std::size_t i = 0; i < decode_note_count; ++i) {
            const auto note = static_cast<DecodeNote>(i);
            if (has_note(e.notes, note)) {
                notes.push_back(std::string(note_name(note)));
            }
        }
        j["notes"] = std::move(notes);
    }
    return j;
}

} // namespace bulkhead::nflog
