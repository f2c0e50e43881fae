// Byte-level NFLOG decoding: a netlink datagram -> netlink messages -> RawNflogRecord
// (nfgenmsg, NFULA_* attributes, then the copied IPv4/IPv6 + transport header).
//
// Input is hostile by assumption (Zeek's NFLog.cc habits): every read is preceded by a
// check of the bytes that remain, padding arithmetic runs in std::size_t/std::uint64_t, and
// malformed input ends in a named DecodeAnomaly, never in a crash or a read past the end.
//
// Pure and allocation-free: no sockets, no clock, no strings owned; a RawNflogRecord only
// views the message it was decoded from. This header deliberately avoids <expected> and the
// policy headers so that the fuzz target (fuzz_nflog_decoder.cpp) builds with clang 14 +
// libFuzzer, whose C++ front end cannot compile libstdc++ 12's std::expected.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>

namespace bulkhead::nflog {

// Why a message was rejected. Names (anomaly_name) are stable: they are metric labels.
enum class DecodeAnomaly : std::uint8_t {
    // netlink framing
    TruncatedNetlinkHeader, // fewer than 16 bytes where a nlmsghdr should start
    BadNetlinkLength,       // nlmsg_len < 16 or beyond the datagram
    NotNflogPacket,         // nlmsg_type is not NFNL_SUBSYS_ULOG/NFULNL_MSG_PACKET
    UnexpectedMessageType,  // (datagram level) neither NFLOG nor NLMSG_DONE/NOOP/ERROR
    // nfnetlink
    TruncatedNfgenmsg,
    UnsupportedNfnetlinkVersion,
    // NFULA_* attributes
    BadAttributeLength,     // nla_len < 4, beyond the message, or shorter than the type needs
    TrailingAttributeBytes, // 1..3 bytes after the last attribute
    DuplicateAttribute,
    BadHwaddrLength,     // NFULA_HWADDR's hw_addrlen exceeds its 8-byte array
    UnterminatedPrefix,  // NFULA_PREFIX without its NUL
    MissingPacketHeader, // no NFULA_PACKET_HDR
    MissingPayload,      // no NFULA_PAYLOAD (copy mode is not "packet")
    UnsupportedFamily,   // neither IPv4 nor IPv6
    // network header
    TruncatedIpv4Header,
    BadIpv4Ihl,
    TruncatedIpv4Options,
    BadIpv4TotalLength,
    IpVersionMismatch, // nfgen_family/hw_protocol disagree with the version nibble
    TruncatedIpv6Header,
    // Bulkhead semantics (applied by nflog_decoder.hpp, listed here so that one enum names
    // every reason a message does not become an event)
    MissingPrefix,
    ForeignPrefix, // not "bh:<mode>:<dir>:<reason>:<subject>"
    Count_
};
inline constexpr std::size_t decode_anomaly_count = static_cast<std::size_t>(DecodeAnomaly::Count_);
std::string_view anomaly_name(DecodeAnomaly anomaly);

// Facts about a message that was decoded into an event but not completely. Bit flags in
// RawNflogRecord::notes / DropEvent::notes; names (note_name) are stable metric labels.
enum class DecodeNote : std::uint8_t {
    L4Truncated,        // the transport header lies beyond the copied bytes (copy range)
    L4Malformed,        // the packet itself is shorter than its transport header
    NonFirstFragment,   // fragment offset != 0: no transport header, no ports
    Ipv6ExtensionLimit, // more IPv6 extension headers than the walker follows
    BadTimestamp,       // NFULA_TIMESTAMP out of range; receive time used instead
    IfnameUnresolved,   // an ifindex could not be turned into a name (set by the stream)
    Count_
};
inline constexpr std::size_t decode_note_count = static_cast<std::size_t>(DecodeNote::Count_);
std::string_view note_name(DecodeNote note);
constexpr std::uint16_t note_bit(DecodeNote note) {
    return static_cast<std::uint16_t>(1U << static_cast<unsigned>(note));
}
constexpr bool has_note(std::uint16_t notes, DecodeNote note) {
    return (notes & note_bit(note)) != 0;
}

// Wire constants (values of linux/netfilter/nfnetlink_log.h, checked against it in the .cpp).
inline constexpr std::uint16_t nflog_packet_message_type = 0x0400; // (NFNL_SUBSYS_ULOG << 8) | 0
inline constexpr std::size_t netlink_header_size = 16;
inline constexpr std::size_t nfgenmsg_size = 4;
inline constexpr std::uint8_t max_ipv6_extension_headers = 8;

// One NFLOG packet message, decoded. Views (prefix, payload, hwheader) point into the
// message buffer and are valid as long as it is. has_* says whether an optional part came.
struct RawNflogRecord {
    // nfgenmsg
    std::uint8_t nf_family = 0; // NFPROTO_IPV4 (2), NFPROTO_IPV6 (10), ...
    std::uint16_t group = 0;    // res_id
    bool has_group = false;

    // NFULA_PACKET_HDR
    bool has_packet_header = false;
    std::uint16_t hw_protocol = 0; // host order, e.g. 0x0800
    std::uint8_t hook = 0;         // NF_INET_* (0 prerouting .. 4 postrouting)

    bool has_mark = false;
    std::uint32_t mark = 0;
    bool has_timestamp = false;
    std::int64_t timestamp_ns = 0; // CLOCK_REALTIME, microsecond resolution
    std::uint32_t indev = 0, outdev = 0, physindev = 0, physoutdev = 0; // 0: absent
    bool has_seq = false;
    std::uint32_t seq = 0; // per group (instance), starts at 0 when the group is bound
    bool has_seq_global = false;
    std::uint32_t seq_global = 0; // per network namespace, all groups
    bool has_src_mac = false, has_dst_mac = false;
    std::array<std::uint8_t, 6> src_mac{}, dst_mac{};
    bool has_hwtype = false;
    std::uint16_t hwtype = 0; // ARPHRD_*
    bool has_prefix = false;
    std::string_view prefix; // without the NUL
    bool has_payload = false;
    std::span<const std::byte> payload; // the copied packet, from its network header

    // network header
    std::uint8_t ip_version = 0;                         // 4 or 6 once decoded
    std::array<std::uint8_t, 16> src_addr{}, dst_addr{}; // IPv4 in the first 4 bytes
    std::uint32_t ip_length = 0; // IPv4 total length; IPv6 40 + payload length
    std::uint8_t protocol = 0;   // IPv4 protocol / IPv6 upper-layer header (after extensions)

    // transport header
    bool has_ports = false;
    std::uint16_t sport = 0, dport = 0;
    bool has_icmp = false;
    std::uint8_t icmp_type = 0, icmp_code = 0;
    // Echo request/reply (ICMP 8/0, ICMPv6 128/129): the identifier and sequence number.
    bool has_icmp_echo = false;
    std::uint16_t icmp_id = 0, icmp_seq = 0;
    bool has_tcp_flags = false;
    std::uint8_t tcp_flags =
        0; // FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 URG 0x20 ECE 0x40 CWR 0x80

    std::uint16_t notes = 0; // DecodeNote bits
};

// Decodes one netlink message (it starts with its nlmsghdr; bytes after nlmsg_len are
// ignored). On an anomaly `out` keeps what was decoded before it, typically group and
// sequence number, so that the caller can still account for the message.
std::optional<DecodeAnomaly> decode_nflog_wire(std::span<const std::byte> message,
                                               RawNflogRecord& out);

// Decodes the copied packet (from its network header on) into the network/transport fields
// of `out`. `ip_version` is what NFLOG says the packet is (4 or 6).
std::optional<DecodeAnomaly> decode_network_header(std::span<const std::byte> packet,
                                                   std::uint8_t ip_version, RawNflogRecord& out);

struct NetlinkMessageView {
    std::uint16_t type = 0;
    std::uint16_t flags = 0;
    std::uint32_t seq = 0;
    std::uint32_t portid = 0;
    std::span<const std::byte> bytes; // the whole message, nlmsg_len bytes
};

// Splits a datagram into netlink messages, calling on_message(const NetlinkMessageView&)
// for each. A framing anomaly stops the walk (the rest cannot be resynchronised) and is
// returned; messages before it have been delivered.
template <typename OnMessage>
std::optional<DecodeAnomaly> for_each_netlink_message(std::span<const std::byte> datagram,
                                                      OnMessage&& on_message) {
    std::size_t offset = 0;
    while (offset < datagram.size()) {
        const std::size_t rest = datagram.size() - offset;
        if (rest < netlink_header_size) {
            return DecodeAnomaly::TruncatedNetlinkHeader;
        }
        std::uint32_t length = 0;
        std::memcpy(&length, datagram.data() + offset, sizeof length);
        if (length < netlink_header_size || length > rest) {
            return DecodeAnomaly::BadNetlinkLength;
        }
        NetlinkMessageView view;
        std::memcpy(&view.type, datagram.data() + offset + 4, 2);
        std::memcpy(&view.flags, datagram.data() + offset + 6, 2);
        std::memcpy(&view.seq, datagram.data() + offset + 8, 4);
        std::memcpy(&view.portid, datagram.data() + offset + 12, 4);
        view.bytes = datagram.subspan(offset, length);
        on_message(static_cast<const NetlinkMessageView&>(view));
        const std::uint64_t aligned = (std::uint64_t{length} + 3U) & ~std::uint64_t{3};
        if (aligned >= rest) {
            break; // the last message; its padding may be absent
        }
        offset += static_cast<std::size_t>(aligned);
    }
    return std::nullopt;
}

} // namespace bulkhead::nflog
