#include "enforcer/nflog/nflog_wire.hpp"

#include <algorithm>
#include <limits>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <linux/netlink.h>

namespace bulkhead::nflog {

static_assert(nflog_packet_message_type == ((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET));
static_assert(netlink_header_size == sizeof(struct nlmsghdr));
static_assert(nfgenmsg_size == sizeof(struct nfgenmsg));
static_assert(sizeof(struct nfulnl_msg_packet_hdr) == 4);
static_assert(sizeof(struct nfulnl_msg_packet_hw) == 12);
static_assert(sizeof(struct nfulnl_msg_packet_timestamp) == 16);
static_assert(NFULA_L2HDR < 32, "the duplicate check keeps one bit per known attribute");

std::string_view anomaly_name(DecodeAnomaly anomaly) {
    switch (anomaly) {
    case DecodeAnomaly::TruncatedNetlinkHeader:
        return "truncated_netlink_header";
    case DecodeAnomaly::BadNetlinkLength:
        return "bad_netlink_length";
    case DecodeAnomaly::NotNflogPacket:
        return "not_nflog_packet";
    case DecodeAnomaly::UnexpectedMessageType:
        return "unexpected_message_type";
    case DecodeAnomaly::TruncatedNfgenmsg:
        return "truncated_nfgenmsg";
    case DecodeAnomaly::UnsupportedNfnetlinkVersion:
        return "unsupported_nfnetlink_version";
    case DecodeAnomaly::BadAttributeLength:
        return "bad_attribute_length";
    case DecodeAnomaly::TrailingAttributeBytes:
        return "trailing_attribute_bytes";
    case DecodeAnomaly::DuplicateAttribute:
        return "duplicate_attribute";
    case DecodeAnomaly::BadHwaddrLength:
        return "bad_hwaddr_length";
    case DecodeAnomaly::UnterminatedPrefix:
        return "unterminated_prefix";
    case DecodeAnomaly::MissingPacketHeader:
        return "missing_packet_header";
    case DecodeAnomaly::MissingPayload:
        return "missing_payload";
    case DecodeAnomaly::UnsupportedFamily:
        return "unsupported_family";
    case DecodeAnomaly::TruncatedIpv4Header:
        return "truncated_ipv4_header";
    case DecodeAnomaly::BadIpv4Ihl:
        return "bad_ipv4_ihl";
    case DecodeAnomaly::TruncatedIpv4Options:
        return "truncated_ipv4_options";
    case DecodeAnomaly::BadIpv4TotalLength:
        return "bad_ipv4_total_length";
    case DecodeAnomaly::IpVersionMismatch:
        return "ip_version_mismatch";
    case DecodeAnomaly::TruncatedIpv6Header:
        return "truncated_ipv6_header";
    case DecodeAnomaly::MissingPrefix:
        return "missing_prefix";
    case DecodeAnomaly::ForeignPrefix:
        return "foreign_prefix";
    case DecodeAnomaly::Count_:
        break;
    }
    return "unknown_anomaly";
}

std::string_view note_name(DecodeNote note) {
    switch (note) {
    case DecodeNote::L4Truncated:
        return "l4_truncated";
    case DecodeNote::L4Malformed:
        return "l4_malformed";
    case DecodeNote::NonFirstFragment:
        return "non_first_fragment";
    case DecodeNote::Ipv6ExtensionLimit:
        return "ipv6_extension_limit";
    case DecodeNote::BadTimestamp:
        return "bad_timestamp";
    case DecodeNote::IfnameUnresolved:
        return "ifname_unresolved";
    case DecodeNote::Count_:
        break;
    }
    return "unknown_note";
}

namespace {

using Bytes = std::span<const std::byte>;

// Readers: callers have checked that offset + width <= bytes.size().
std::uint8_t u8(Bytes b, std::size_t offset) {
    return std::to_integer<std::uint8_t>(b[offset]);
}
std::uint16_t be16(Bytes b, std::size_t offset) {
    return static_cast<std::uint16_t>((unsigned{u8(b, offset)} << 8) | u8(b, offset + 1));
}
std::uint32_t be32(Bytes b, std::size_t offset) {
    return (std::uint32_t{be16(b, offset)} << 16) | be16(b, offset + 2);
}
std::uint64_t be64(Bytes b, std::size_t offset) {
    return (std::uint64_t{be32(b, offset)} << 32) | be32(b, offset + 4);
}
std::uint16_t host16(Bytes b, std::size_t offset) {
    std::uint16_t v = 0;
    std::memcpy(&v, b.data() + offset, sizeof v);
    return v;
}
std::uint32_t host32(Bytes b, std::size_t offset) {
    std::uint32_t v = 0;
    std::memcpy(&v, b.data() + offset, sizeof v);
    return v;
}
template <std::size_t N>
void copy_bytes(Bytes b, std::size_t offset, std::array<std::uint8_t, N>& to, std::size_t count) {
    std::memcpy(to.data(), b.data() + offset, std::min(count, N));
}

constexpr std::uint8_t proto_icmp = 1;
constexpr std::uint8_t proto_tcp = 6;
constexpr std::uint8_t proto_udp = 17;
constexpr std::uint8_t proto_dccp = 33;
constexpr std::uint8_t proto_icmpv6 = 58;
constexpr std::uint8_t proto_sctp = 132;
constexpr std::uint8_t proto_udplite = 136;

// Records that the transport header is incomplete: cut by the copy range (the packet is
// longer than what was copied) or short in the packet itself.
void note_incomplete(RawNflogRecord& out, bool cut_by_capture) {
    out.notes |= note_bit(cut_by_capture ? DecodeNote::L4Truncated : DecodeNote::L4Malformed);
}

// `transport` holds the bytes from the transport header to the end of what is known of the
// packet (captured and within its length).
void decode_transport(Bytes transport, std::uint8_t protocol, std::uint8_t ip_version,
                      bool cut_by_capture, RawNflogRecord& out) {
    std::size_t header_size = 0;
    bool has_ports = false;
    switch (protocol) {
    case proto_tcp:
        header_size = 20;
        has_ports = true;
        break;
    case proto_udp:
    case proto_udplite:
        header_size = 8;
        has_ports = true;
        break;
    case proto_sctp:
    case proto_dccp:
        header_size = 12;
        has_ports = true;
        break;
    case proto_icmp:
        if (ip_version != 4)
            return;
        header_size = 4;
        break;
    case proto_icmpv6:
        if (ip_version != 6)
            return;
        header_size = 4;
        break;
    default:
        return; // no ports to read (GRE, ESP, ...)
    }
    if (has_ports && transport.size() >= 4) {
        out.has_ports = true;
        out.sport = be16(transport, 0);
        out.dport = be16(transport, 2);
    }
    if (protocol == proto_tcp && transport.size() >= 14) {
        out.has_tcp_flags = true;
        out.tcp_flags = u8(transport, 13);
    }
    if (!has_ports && transport.size() >= 2) {
        out.has_icmp = true;
        out.icmp_type = u8(transport, 0);
        out.icmp_code = u8(transport, 1);
        const bool echo = protocol == proto_icmp ? (out.icmp_type == 8 || out.icmp_type == 0)
                                                 : (out.icmp_type == 128 || out.icmp_type == 129);
        if (echo && transport.size() >= 8) {
            out.has_icmp_echo = true;
            out.icmp_id = be16(transport, 4);
            out.icmp_seq = be16(transport, 6);
        }
    }
    if (transport.size() < header_size) {
        note_incomplete(out, cut_by_capture);
    }
}

std::optional<DecodeAnomaly> decode_ipv4(Bytes packet, RawNflogRecord& out) {
    if (packet.size() < 20) {
        return DecodeAnomaly::TruncatedIpv4Header;
    }
    if ((u8(packet, 0) >> 4) != 4) {
        return DecodeAnomaly::IpVersionMismatch;
    }
    const std::size_t header_length = std::size_t{u8(packet, 0) & 0x0fU} * 4;
    if (header_length < 20) {
        return DecodeAnomaly::BadIpv4Ihl;
    }
    if (packet.size() < header_length) {
        return DecodeAnomaly::TruncatedIpv4Options;
    }
    const std::size_t total_length = be16(packet, 2);
    if (total_length < header_length) {
        return DecodeAnomaly::BadIpv4TotalLength;
    }
    out.ip_version = 4;
    out.ip_length = static_cast<std::uint32_t>(total_length);
    out.protocol = u8(packet, 9);
    copy_bytes(packet, 12, out.src_addr, 4);
    copy_bytes(packet, 16, out.dst_addr, 4);
    if ((be16(packet, 6) & 0x1fffU) != 0) {
        out.notes |= note_bit(DecodeNote::NonFirstFragment);
        return std::nullopt;
    }
    const std::size_t known_end = std::min(packet.size(), total_length);
    const bool cut_by_capture = packet.size() < total_length;
    decode_transport(packet.subspan(header_length, known_end - header_length), out.protocol, 4,
                     cut_by_capture, out);
    return std::nullopt;
}

bool is_ipv6_extension(std::uint8_t next_header) {
    switch (next_header) {
    case 0:   // hop-by-hop options
    case 43:  // routing
    case 44:  // fragment
    case 51:  // authentication header
    case 60:  // destination options
    case 135: // mobility
    case 139: // HIP
    case 140: // shim6
    case 253: // experimental (RFC 3692 / RFC 4727)
    case 254:
        return true;
    default:
        return false;
    }
}

std::optional<DecodeAnomaly> decode_ipv6(Bytes packet, RawNflogRecord& out) {
    if (packet.size() < 40) {
        return DecodeAnomaly::TruncatedIpv6Header;
    }
    if ((u8(packet, 0) >> 4) != 6) {
        return DecodeAnomaly::IpVersionMismatch;
    }
    const std::size_t payload_length = be16(packet, 4);
    std::uint8_t next_header = u8(packet, 6);
    out.ip_version = 6;
    out.ip_length = static_cast<std::uint32_t>(40 + payload_length);
    copy_bytes(packet, 8, out.src_addr, 16);
    copy_bytes(packet, 24, out.dst_addr, 16);

    // A zero payload length with a hop-by-hop header may be a jumbogram (RFC 2675): its
    // real length is in an option; treat everything captured as part of the packet.
    const bool jumbo = payload_length == 0 && next_header == 0;
    const std::size_t packet_length =
        jumbo ? std::numeric_limits<std::size_t>::max() : 40 + payload_length;
    const std::size_t known_end = std::min(packet.size(), packet_length);
    const bool cut_by_capture = packet.size() < packet_length;

    std::size_t offset = 40;
    for (unsigned walked = 0; is_ipv6_extension(next_header); ++walked) {
        if (walked == max_ipv6_extension_headers) {
            out.protocol = next_header;
            out.notes |= note_bit(DecodeNote::Ipv6ExtensionLimit);
            return std::nullopt;
        }
        const std::size_t fixed = next_header == 44 ? 8 : 2;
        if (offset > known_end || known_end - offset < fixed) {
            out.protocol = next_header;
            note_incomplete(out, cut_by_capture);
            return std::nullopt;
        }
        const std::uint8_t following = u8(packet, offset);
        if (next_header == 44) {
            const bool non_first = (be16(packet, offset + 2) & 0xfff8U) != 0;
            offset += 8;
            next_header = following;
            if (non_first) {
                out.protocol = next_header;
                out.notes |= note_bit(DecodeNote::NonFirstFragment);
                return std::nullopt;
            }
            continue;
        }
        const std::size_t length_field = u8(packet, offset + 1);
        const std::size_t length =
            next_header == 51 ? (length_field + 2) * 4 : (length_field + 1) * 8;
        offset += length; // at most 40 + 8 * 2048: no overflow in std::size_t
        next_header = following;
    }
    out.protocol = next_header;
    if (offset > known_end) {
        note_incomplete(out, cut_by_capture);
        return std::nullopt;
    }
    decode_transport(packet.subspan(offset, known_end - offset), next_header, 6, cut_by_capture,
                     out);
    return std::nullopt;
}

} // namespace

std::optional<DecodeAnomaly> decode_network_header(std::span<const std::byte> packet,
                                                   std::uint8_t ip_version, RawNflogRecord& out) {
    if (ip_version == 4) {
        return decode_ipv4(packet, out);
    }
    if (ip_version == 6) {
        return decode_ipv6(packet, out);
    }
    return DecodeAnomaly::UnsupportedFamily;
}

std::optional<DecodeAnomaly> decode_nflog_wire(std::span<const std::byte> message,
                                               RawNflogRecord& out) {
    out = RawNflogRecord{};
    if (message.size() < netlink_header_size) {
        return DecodeAnomaly::TruncatedNetlinkHeader;
    }
    const std::uint32_t length = host32(message, 0);
    if (length < netlink_header_size || length > message.size()) {
        return DecodeAnomaly::BadNetlinkLength;
    }
    message = message.first(length);
    if (host16(message, 4) != nflog_packet_message_type) {
        return DecodeAnomaly::NotNflogPacket;
    }
    if (message.size() < netlink_header_size + nfgenmsg_size) {
        return DecodeAnomaly::TruncatedNfgenmsg;
    }
    out.nf_family = u8(message, 16);
    if (u8(message, 17) != NFNETLINK_V0) {
        return DecodeAnomaly::UnsupportedNfnetlinkVersion;
    }
    out.group = be16(message, 18);
    out.has_group = true;

    Bytes hwheader;
    std::uint32_t seen = 0;
    std::size_t offset = netlink_header_size + nfgenmsg_size;
    while (offset < message.size()) {
        const std::size_t rest = message.size() - offset;
        if (rest < NLA_HDRLEN) {
            return DecodeAnomaly::TrailingAttributeBytes;
        }
        const std::size_t attribute_length = host16(message, offset);
        const unsigned type = host16(message, offset + 2) & NLA_TYPE_MASK;
        if (attribute_length < NLA_HDRLEN || attribute_length > rest) {
            return DecodeAnomaly::BadAttributeLength;
        }
        const Bytes value = message.subspan(offset + NLA_HDRLEN, attribute_length - NLA_HDRLEN);
        if (type < 32) {
            const std::uint32_t bit = std::uint32_t{1} << type;
            if ((seen & bit) != 0 && type != NFULA_UNSPEC) {
                return DecodeAnomaly::DuplicateAttribute;
            }
            seen |= bit;
        }
        switch (type) {
        case NFULA_PACKET_HDR:
            if (value.size() < sizeof(struct nfulnl_msg_packet_hdr)) {
                return DecodeAnomaly::BadAttributeLength;
            }
            out.has_packet_header = true;
            out.hw_protocol = be16(value, 0);
            out.hook = u8(value, 2);
            break;
        case NFULA_MARK:
            if (value.size() < 4)
                return DecodeAnomaly::BadAttributeLength;
            out.has_mark = true;
            out.mark = be32(value, 0);
            break;
        case NFULA_TIMESTAMP: {
            if (value.size() < sizeof(struct nfulnl_msg_packet_timestamp)) {
                return DecodeAnomaly::BadAttributeLength;
            }
            const std::uint64_t sec = be64(value, 0);
            const std::uint64_t usec = be64(value, 8);
            // int64 nanoseconds reach the year 2262.
            constexpr std::uint64_t max_sec =
                std::numeric_limits<std::int64_t>::max() / 1'000'000'000 - 1;
            if (usec >= 1'000'000 || sec > max_sec) {
                out.notes |= note_bit(DecodeNote::BadTimestamp);
            } else {
                out.has_timestamp = true;
                out.timestamp_ns = static_cast<std::int64_t>(sec * 1'000'000'000 + usec * 1'000);
            }
            break;
        }
        case NFULA_IFINDEX_INDEV:
        case NFULA_IFINDEX_OUTDEV:
        case NFULA_IFINDEX_PHYSINDEV:
        case NFULA_IFINDEX_PHYSOUTDEV: {
            if (value.size() < 4)
                return DecodeAnomaly::BadAttributeLength;
            const std::uint32_t ifindex = be32(value, 0);
            if (type == NFULA_IFINDEX_INDEV) {
                out.indev = ifindex;
            } else if (type == NFULA_IFINDEX_OUTDEV) {
                out.outdev = ifindex;
            } else if (type == NFULA_IFINDEX_PHYSINDEV) {
                out.physindev = ifindex;
            } else {
                out.physoutdev = ifindex;
            }
            break;
        }
        case NFULA_HWADDR: {
            // struct nfulnl_msg_packet_hw: be16 hw_addrlen, u16 pad, u8 hw_addr[8].
            if (value.size() < 4)
                return DecodeAnomaly::BadAttributeLength;
            const std::size_t address_length = be16(value, 0);
            if (address_length > 8)
                return DecodeAnomaly::BadHwaddrLength;
            if (value.size() < 4 + address_length)
                return DecodeAnomaly::BadAttributeLength;
            if (address_length == 6) { // Ethernet: dev_parse_header() gives the source
                out.has_src_mac = true;
                copy_bytes(value, 4, out.src_mac, 6);
            }
            break;
        }
        case NFULA_HWTYPE:
            if (value.size() < 2)
                return DecodeAnomaly::BadAttributeLength;
            out.has_hwtype = true;
            out.hwtype = be16(value, 0);
            break;
        case NFULA_HWHEADER:
            hwheader = value;
            break;
        case NFULA_PAYLOAD:
            out.has_payload = true;
            out.payload = value;
            break;
        case NFULA_PREFIX: {
            const auto* begin = value.data();
            const auto* nul = std::find(begin, begin + value.size(), std::byte{0});
            if (nul == begin + value.size())
                return DecodeAnomaly::UnterminatedPrefix;
            out.has_prefix = true;
            out.prefix = std::string_view(reinterpret_cast<const char*>(begin),
                                          static_cast<std::size_t>(nul - begin));
            break;
        }
        case NFULA_SEQ:
            if (value.size() < 4)
                return DecodeAnomaly::BadAttributeLength;
            out.has_seq = true;
            out.seq = be32(value, 0);
            break;
        case NFULA_SEQ_GLOBAL:
            if (value.size() < 4)
                return DecodeAnomaly::BadAttributeLength;
            out.has_seq_global = true;
            out.seq_global = be32(value, 0);
            break;
        default:
            break; // UID, GID, HWLEN, CT, VLAN, L2HDR and future types: skipped
        }
        const std::size_t aligned =
            (attribute_length + NLA_ALIGNTO - 1) & ~std::size_t{NLA_ALIGNTO - 1};
        if (aligned >= rest) {
            break;
        }
        offset += aligned;
    }

    // The Ethernet header (NFULA_HWHEADER, with NFULA_HWTYPE == ARPHRD_ETHER) carries both
    // addresses: destination first, then source.
    constexpr std::uint16_t arphrd_ether = 1;
    if (out.has_hwtype && out.hwtype == arphrd_ether && hwheader.size() >= 12) {
        out.has_dst_mac = true;
        copy_bytes(hwheader, 0, out.dst_mac, 6);
        if (!out.has_src_mac) {
            out.has_src_mac = true;
            copy_bytes(hwheader, 6, out.src_mac, 6);
        }
    }

    if (!out.has_packet_header) {
        return DecodeAnomaly::MissingPacketHeader;
    }
    if (!out.has_payload) {
        return DecodeAnomaly::MissingPayload;
    }
    std::uint8_t version = 0;
    if (out.nf_family == NFPROTO_IPV4) {
        version = 4;
    } else if (out.nf_family == NFPROTO_IPV6) {
        version = 6;
    } else if (out.hw_protocol == 0x0800) { // bridge/netdev families: go by the EtherType
        version = 4;
    } else if (out.hw_protocol == 0x86dd) {
        version = 6;
    } else {
        return DecodeAnomaly::UnsupportedFamily;
    }
    return decode_network_header(out.payload, version, out);
}

} // namespace bulkhead::nflog
