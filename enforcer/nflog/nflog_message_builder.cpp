#include "enforcer/nflog/nflog_message_builder.hpp"

#include <cstring>
#include <linux/netfilter/nfnetlink_log.h>
#include <linux/netlink.h>

namespace bulkhead::nflog {

namespace {

void put_u8(ByteVector& out, std::uint8_t v) {
    out.push_back(std::byte{v});
}
void put_be16(ByteVector& out, std::uint16_t v) {
    put_u8(out, static_cast<std::uint8_t>(v >> 8));
    put_u8(out, static_cast<std::uint8_t>(v));
}
void put_be32(ByteVector& out, std::uint32_t v) {
    put_be16(out, static_cast<std::uint16_t>(v >> 16));
    put_be16(out, static_cast<std::uint16_t>(v));
}
void put_be64(ByteVector& out, std::uint64_t v) {
    put_be32(out, static_cast<std::uint32_t>(v >> 32));
    put_be32(out, static_cast<std::uint32_t>(v));
}
template <typename T> void put_host(ByteVector& out, T v) {
    const auto* p = reinterpret_cast<const std::byte*>(&v);
    out.insert(out.end(), p, p + sizeof v);
}
void put_bytes(ByteVector& out, std::span<const std::byte> bytes) {
    out.insert(out.end(), bytes.begin(), bytes.end());
}
void pad4(ByteVector& out) {
    while (out.size() % 4 != 0) {
        out.push_back(std::byte{0});
    }
}
void put_attribute(ByteVector& out, std::uint16_t type, std::span<const std::byte> value) {
    put_host(out, static_cast<std::uint16_t>(4 + value.size()));
    put_host(out, type);
    put_bytes(out, value);
    pad4(out);
}
void put_be32_attribute(ByteVector& out, std::uint16_t type, std::uint32_t v) {
    ByteVector value;
    put_be32(value, v);
    put_attribute(out, type, value);
}
void put_be16_attribute(ByteVector& out, std::uint16_t type, std::uint16_t v) {
    ByteVector value;
    put_be16(value, v);
    put_attribute(out, type, value);
}
void set_length(ByteVector& message) {
    const auto length = static_cast<std::uint32_t>(message.size());
    std::memcpy(message.data(), &length, sizeof length);
}
void put_address(ByteVector& out, const policy::IpAddress& a) {
    for (std::size_t i = 0; i < a.width(); ++i) {
        put_u8(out, a.bytes[i]);
    }
}

} // namespace

ByteVector build_nflog_message(const NflogMessageSpec& spec) {
    ByteVector m;
    put_host(m, std::uint32_t{0}); // length, set at the end
    put_host(m, static_cast<std::uint16_t>((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET));
    put_host(m, spec.netlink_flags);
    put_host(m, spec.netlink_seq);
    put_host(m, std::uint32_t{0}); // portid: the kernel
    put_u8(m, spec.nf_family);
    put_u8(m, 0); // NFNETLINK_V0
    put_be16(m, spec.group);

    ByteVector header;
    put_be16(header, spec.hw_protocol);
    put_u8(header, spec.hook);
    put_u8(header, 0);
    put_attribute(m, NFULA_PACKET_HDR, header);
    if (spec.prefix) {
        ByteVector prefix(spec.prefix->size() + 1, std::byte{0});
        std::memcpy(prefix.data(), spec.prefix->data(), spec.prefix->size());
        put_attribute(m, NFULA_PREFIX, prefix);
    }
    if (spec.indev != 0)
        put_be32_attribute(m, NFULA_IFINDEX_INDEV, spec.indev);
    if (spec.physindev != 0)
        put_be32_attribute(m, NFULA_IFINDEX_PHYSINDEV, spec.physindev);
    if (spec.outdev != 0)
        put_be32_attribute(m, NFULA_IFINDEX_OUTDEV, spec.outdev);
    if (spec.physoutdev != 0)
        put_be32_attribute(m, NFULA_IFINDEX_PHYSOUTDEV, spec.physoutdev);
    if (spec.mark)
        put_be32_attribute(m, NFULA_MARK, *spec.mark);
    if (spec.hwaddr) {
        ByteVector hw;
        put_be16(hw, 6);
        put_be16(hw, 0);
        for (auto b : *spec.hwaddr)
            put_u8(hw, b);
        put_u8(hw, 0);
        put_u8(hw, 0);
        put_attribute(m, NFULA_HWADDR, hw);
    }
    if (spec.eth_dst && spec.eth_src) {
        put_be16_attribute(m, NFULA_HWTYPE, 1); // ARPHRD_ETHER
        put_be16_attribute(m, NFULA_HWLEN, 14);
        ByteVector eth;
        for (auto b : *spec.eth_dst)
            put_u8(eth, b);
        for (auto b : *spec.eth_src)
            put_u8(eth, b);
        put_be16(eth, spec.hw_protocol);
        put_attribute(m, NFULA_HWHEADER, eth);
    }
    if (spec.timestamp_sec) {
        ByteVector ts;
        put_be64(ts, *spec.timestamp_sec);
        put_be64(ts, spec.timestamp_usec.value_or(0));
        put_attribute(m, NFULA_TIMESTAMP, ts);
    }
    if (spec.seq)
        put_be32_attribute(m, NFULA_SEQ, *spec.seq);
    if (spec.seq_global)
        put_be32_attribute(m, NFULA_SEQ_GLOBAL, *spec.seq_global);
    if (spec.payload)
        put_attribute(m, NFULA_PAYLOAD, *spec.payload);
    set_length(m);
    return m;
}

ByteVector build_datagram(std::span<const ByteVector> messages, bool done) {
    ByteVector d;
    for (const auto& message : messages) {
        put_bytes(d, message);
        pad4(d);
    }
    if (done) {
        put_bytes(d, build_control_message(NLMSG_DONE));
    }
    return d;
}

ByteVector build_control_message(std::uint16_t type) {
    ByteVector m;
    put_host(m, std::uint32_t{0});
    put_host(m, type);
    put_host(m, static_cast<std::uint16_t>(NLM_F_MULTI));
    put_host(m, std::uint32_t{0});
    put_host(m, std::uint32_t{0});
    // NLMSG_DONE carries an nfgenmsg in nfnetlink_log; NLMSG_ERROR an int + the request.
    const std::size_t body = type == NLMSG_ERROR ? 4 + 16 : 4;
    m.resize(m.size() + body, std::byte{0});
    set_length(m);
    return m;
}

ByteVector build_tcp(std::uint16_t sport, std::uint16_t dport, std::uint8_t flags) {
    ByteVector t;
    put_be16(t, sport);
    put_be16(t, dport);
    put_be32(t, 0x01020304); // sequence
    put_be32(t, 0);          // acknowledgement
    put_u8(t, 5 << 4);       // data offset 5 words
    put_u8(t, flags);
    put_be16(t, 64240); // window
    put_be16(t, 0);     // checksum
    put_be16(t, 0);     // urgent
    return t;
}

ByteVector build_udp(std::uint16_t sport, std::uint16_t dport, std::size_t payload_bytes) {
    ByteVector u;
    put_be16(u, sport);
    put_be16(u, dport);
    put_be16(u, static_cast<std::uint16_t>(8 + payload_bytes));
    put_be16(u, 0);
    u.resize(u.size() + payload_bytes, std::byte{0x61});
    return u;
}

ByteVector build_icmp(std::uint8_t type, std::uint8_t code, std::uint16_t id,
                      std::uint16_t sequence) {
    ByteVector i;
    put_u8(i, type);
    put_u8(i, code);
    put_be16(i, 0);
    put_be16(i, id);
    put_be16(i, sequence);
    return i;
}

ByteVector build_ipv4(const policy::IpAddress& src, const policy::IpAddress& dst,
                      std::uint8_t protocol, std::span<const std::byte> transport,
                      std::span<const std::byte> options, std::uint16_t total_length,
                      std::uint16_t fragment) {
    ByteVector p;
    const std::size_t header = 20 + options.size();
    put_u8(p, static_cast<std::uint8_t>(0x40 | (header / 4)));
    put_u8(p, 0);
    put_be16(p, total_length != 0 ? total_length
                                  : static_cast<std::uint16_t>(header + transport.size()));
    put_be16(p, 0x1234); // id
    put_be16(p, fragment);
    put_u8(p, 64); // ttl
    put_u8(p, protocol);
    put_be16(p, 0); // checksum
    put_address(p, src);
    put_address(p, dst);
    put_bytes(p, options);
    put_bytes(p, transport);
    return p;
}

ByteVector build_ipv6(const policy::IpAddress& src, const policy::IpAddress& dst,
                      std::uint8_t next_header, std::span<const std::byte> rest,
                      std::optional<std::uint16_t> payload_length) {
    ByteVector p;
    put_be32(p, 0x60000000);
    put_be16(p, payload_length.value_or(static_cast<std::uint16_t>(rest.size())));
    put_u8(p, next_header);
    put_u8(p, 64); // hop limit
    put_address(p, src);
    put_address(p, dst);
    put_bytes(p, rest);
    return p;
}

ByteVector build_ipv6_extension(std::uint8_t next_header, std::uint8_t units) {
    ByteVector e;
    put_u8(e, next_header);
    put_u8(e, units);
    // PadN option filling the rest of the header.
    const std::size_t rest = 8 * (std::size_t{units} + 1) - 2;
    put_u8(e, 1);
    put_u8(e, static_cast<std::uint8_t>(rest - 2));
    e.resize(e.size() + rest - 2, std::byte{0});
    return e;
}

ByteVector build_ipv6_fragment(std::uint8_t next_header, std::uint16_t offset_units, bool more) {
    ByteVector f;
    put_u8(f, next_header);
    put_u8(f, 0);
    put_be16(f, static_cast<std::uint16_t>((offset_units << 3) | (more ? 1 : 0)));
    put_be32(f, 0xabcdef01); // identification
    return f;
}

ByteVector concat(std::initializer_list<std::span<const std::byte>> parts) {
    ByteVector out;
    for (auto part : parts) {
        put_bytes(out, part);
    }
    return out;
}

} // namespace bulkhead::nflog
