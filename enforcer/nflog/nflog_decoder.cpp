#include "enforcer/nflog/nflog_decoder.hpp"

#include "policies/ruleset_compiler.hpp"

#include <algorithm>

namespace bulkhead::nflog {

std::optional<PrefixInfo> parse_prefix(std::string_view prefix) {
    auto parts = ruleset::parse_log_prefix(prefix);
    if (!parts) {
        return std::nullopt;
    }
    auto direction = direction_from_string(parts->direction);
    auto reason = reason_from_string(parts->reason);
    if (!direction || !reason) {
        return std::nullopt; // the compiler's grammar grew a value this decoder does not know
    }
    return PrefixInfo{parts->mode, *direction, *reason, std::move(parts->subject)};
}

namespace {

policy::IpAddress to_address(std::uint8_t version, const std::array<std::uint8_t, 16>& bytes) {
    policy::IpAddress a;
    a.family = version == 6 ? policy::Family::Ipv6 : policy::Family::Ipv4;
    std::copy_n(bytes.begin(), a.width(), a.bytes.begin());
    return a;
}

template <typename T> std::optional<T> optional_if(bool present, T value) {
    return present ? std::optional<T>(value) : std::nullopt;
}

} // namespace

std::optional<DecodeAnomaly> to_drop_event(const RawNflogRecord& raw,
                                           const std::optional<PrefixInfo>& prefix,
                                           std::int64_t receive_time_ns, DropEvent& out) {
    if (!raw.has_prefix) {
        return DecodeAnomaly::MissingPrefix;
    }
    if (!prefix) {
        return DecodeAnomaly::ForeignPrefix;
    }
    if (raw.has_timestamp) {
        out.timestamp_ns = raw.timestamp_ns;
        out.timestamp_source = TimestampSource::Kernel;
    } else {
        out.timestamp_ns = receive_time_ns;
        out.timestamp_source = TimestampSource::Receive;
    }
    out.received_ns = receive_time_ns;
    out.group = raw.group;
    out.seq = optional_if(raw.has_seq, raw.seq);
    out.seq_global = optional_if(raw.has_seq_global, raw.seq_global);
    out.hook = optional_if(raw.has_packet_header, raw.hook);

    out.prefix.assign(raw.prefix);
    out.mode = prefix->mode;
    out.direction = prefix->direction;
    out.reason = prefix->reason;
    out.subject.assign(prefix->subject);

    out.indev = raw.indev;
    out.outdev = raw.outdev;
    out.physindev = raw.physindev;
    out.physoutdev = raw.physoutdev;
    out.indev_name.clear();
    out.outdev_name.clear();
    out.physindev_name.clear();
    out.physoutdev_name.clear();
    out.src_mac = optional_if(raw.has_src_mac, raw.src_mac);
    out.dst_mac = optional_if(raw.has_dst_mac, raw.dst_mac);
    out.mark = optional_if(raw.has_mark, raw.mark);

    out.src = to_address(raw.ip_version, raw.src_addr);
    out.dst = to_address(raw.ip_version, raw.dst_addr);
    out.protocol = raw.protocol;
    out.sport = optional_if(raw.has_ports, raw.sport);
    out.dport = optional_if(raw.has_ports, raw.dport);
    out.icmp_type = optional_if(raw.has_icmp, raw.icmp_type);
    out.icmp_code = optional_if(raw.has_icmp, raw.icmp_code);
    out.icmp_id = optional_if(raw.has_icmp_echo, raw.icmp_id);
    out.icmp_seq = optional_if(raw.has_icmp_echo, raw.icmp_seq);
    out.tcp_flags = optional_if(raw.has_tcp_flags, raw.tcp_flags);
    out.ip_length = raw.ip_length;
    out.notes = raw.notes;

    // Attribution fills these; a decoded event starts unattributed.
    out.workload.clear();
    out.would_drop = prefix->mode == policy::Mode::Monitor && prefix->reason != Reason::Allow;
    out.policy_generation = 0;
    return std::nullopt;
}

std::expected<DropEvent, DecodeAnomaly>
decode_nflog_message(std::span<const std::byte> netlink_message, std::int64_t receive_time_ns) {
    RawNflogRecord raw;
    if (auto anomaly = decode_nflog_wire(netlink_message, raw)) {
        return std::unexpected(*anomaly);
    }
    std::optional<PrefixInfo> prefix;
    if (raw.has_prefix) {
        prefix = parse_prefix(raw.prefix);
    }
    DropEvent event;
    if (auto anomaly = to_drop_event(raw, prefix, receive_time_ns, event)) {
        return std::unexpected(*anomaly);
    }
    return event;
}

} // namespace bulkhead::nflog
