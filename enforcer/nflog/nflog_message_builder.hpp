// Builds NFLOG netlink messages and packets the way the kernel lays them out
// (net/netfilter/nfnetlink_log.c, __build_packet_message: attribute order, padding, byte
// order). The fake side of the NFLOG edge: unit tests, the fuzz seeds and the throughput
// benchmark feed these to NflogStream without a kernel.
#pragma once

#include "enforcer/nflog/drop_event.hpp"
#include "policies/net_address.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace bulkhead::nflog {

using ByteVector = std::vector<std::byte>;

struct NflogMessageSpec {
    std::uint8_t nf_family = 2; // NFPROTO_IPV4; NFPROTO_IPV6 is 10
    std::uint16_t group = 10;
    std::uint16_t hw_protocol = 0x0800;
    std::uint8_t hook = 2; // NF_INET_FORWARD
    std::optional<std::string> prefix = std::string("bh:enf:out:deny:c1");
    std::uint32_t indev = 0, outdev = 0, physindev = 0, physoutdev = 0;
    std::optional<std::uint32_t> mark;
    std::optional<MacAddress> hwaddr;           // NFULA_HWADDR (source MAC)
    std::optional<MacAddress> eth_dst, eth_src; // NFULA_HWTYPE/HWLEN/HWHEADER (both)
    std::optional<std::uint64_t> timestamp_sec, timestamp_usec;
    std::optional<std::uint32_t> seq, seq_global;
    std::optional<ByteVector> payload;
    std::uint32_t netlink_seq = 0;
    std::uint16_t netlink_flags = 0;
};

// One message, starting at its nlmsghdr, padded to 4 bytes.
ByteVector build_nflog_message(const NflogMessageSpec& spec);
// Messages concatenated into one datagram, optionally ended with NLMSG_DONE (the kernel
// adds one when a datagram holds more than one message).
ByteVector build_datagram(std::span<const ByteVector> messages, bool done = true);
ByteVector build_control_message(std::uint16_t type); // NLMSG_DONE, NLMSG_NOOP, NLMSG_ERROR

// Packets (network header first, as NFULA_PAYLOAD carries them). Checksums are zero.
ByteVector build_tcp(std::uint16_t sport, std::uint16_t dport, std::uint8_t flags);
ByteVector build_udp(std::uint16_t sport, std::uint16_t dport, std::size_t payload_bytes = 0);
ByteVector build_icmp(std::uint8_t type, std::uint8_t code, std::uint16_t id = 1,
                      std::uint16_t sequence = 1);
// `transport` follows the header (and `options`, a multiple of 4 bytes). total_length 0:
// computed. fragment: the flags+offset field (e.g. 0x2000 MF, 0x0010 offset 128).
ByteVector build_ipv4(const policy::IpAddress& src, const policy::IpAddress& dst,
                      std::uint8_t protocol, std::span<const std::byte> transport,
                      std::span<const std::byte> options = {}, std::uint16_t total_length = 0,
                      std::uint16_t fragment = 0);
// `rest` is everything after the fixed header (extension headers and transport).
ByteVector build_ipv6(const policy::IpAddress& src, const policy::IpAddress& dst,
                      std::uint8_t next_header, std::span<const std::byte> rest,
                      std::optional<std::uint16_t> payload_length = std::nullopt);
// A generic extension header (hop-by-hop, routing, destination options): 8 * (units + 1)
// bytes. A fragment header: 8 bytes.
ByteVector build_ipv6_extension(std::uint8_t next_header, std::uint8_t units = 0);
ByteVector build_ipv6_fragment(std::uint8_t next_header, std::uint16_t offset_units, bool more);

ByteVector concat(std::initializer_list<std::span<const std::byte>> parts);

} // namespace bulkhead::nflog
