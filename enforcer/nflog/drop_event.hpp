// DropEvent: one NFLOG'd packet after decoding and attribution. It is what the enforcer
// turns a kernel log into: when, where (group, hook, interfaces, MACs), what (addresses,
// protocol, ports, ICMP type, TCP flags, length), why (the parsed prefix: mode, direction,
// reason, class) and whose (the workload behind the interface, the policy generation).
//
// The same type carries new connections the policy allowed (reason Allow, the separate
// allowed-flow NFLOG group). Values only; to_json() gives the stable field names listed in
// enforcer/nflog/README.md.
#pragma once

#include "policies/net_address.hpp"
#include "policies/policy_model.hpp"

#include <array>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace bulkhead::nflog {

// dir "out": the packet comes from the workload behind its input interface (port mode) or
// leaves the host-mode workload on its output interface. dir "in": the reverse.
enum class Direction : std::uint8_t { Out, In };
// The prefix reasons of policies/ruleset_compiler.hpp: default deny, explicit deny, decoy,
// quarantine, and allow (an accepted new connection, logged to the allowed-flow group).
// Tripwire: dropped, and the kernel put the source's port into the quarantined ports on
// this very packet. Spoof: a managed port sent from an address or MAC not its workload's.
// Unidentified: a VM port whose MAC no workload has (port discovery's `unidentified_ports`).
enum class Reason : std::uint8_t { Default, Deny, Decoy, Quarantine, Allow, Tripwire, Spoof, Unidentified };
enum class TimestampSource : std::uint8_t {
    Kernel,  // NFULA_TIMESTAMP (hooks prerouting, input, forward)
    Receive, // absent (output/postrouting hooks) or invalid: the time the enforcer read it
};

using MacAddress = std::array<std::uint8_t, 6>;

struct DropEvent {
    std::int64_t timestamp_ns = 0; // CLOCK_REALTIME
    TimestampSource timestamp_source = TimestampSource::Kernel;
    // CLOCK_REALTIME when the enforcer read it from NFLOG: with a kernel timestamp, the
    // difference is the delivery delay (the first stage of time to contain).
    std::int64_t received_ns = 0;

    std::uint16_t group = 0;
    std::optional<std::uint32_t> seq;        // NFULA_SEQ, per group
    std::optional<std::uint32_t> seq_global; // NFULA_SEQ_GLOBAL, per network namespace
    std::optional<std::uint8_t> hook;        // NF_INET_* hook number

    std::string prefix; // as logged
    policy::Mode mode = policy::Mode::Enforce;
    Direction direction = Direction::Out;
    Reason reason = Reason::Default;
    std::string subject; // policy class, or "q" for the quarantine chains

    std::uint32_t indev = 0, outdev = 0, physindev = 0, physoutdev = 0; // ifindex, 0 = none
    std::string indev_name, outdev_name, physindev_name, physoutdev_name;
    std::optional<MacAddress> src_mac; // NFULA_HWADDR (or the Ethernet header)
    std::optional<MacAddress> dst_mac; // NFULA_HWHEADER, Ethernet only
    std::optional<std::uint32_t> mark;

    policy::IpAddress src; // src.family is the packet's family
    policy::IpAddress dst;
    std::uint8_t protocol = 0; // upper-layer protocol (after IPv6 extension headers)
    std::optional<std::uint16_t> sport, dport;
    std::optional<std::uint8_t> icmp_type, icmp_code;
    // ICMP(v6) echo: identifier and sequence. The identifier tells one ping process (or one
    // attempt of a program) from the next, as a source port does for TCP and UDP.
    std::optional<std::uint16_t> icmp_id, icmp_seq;
    std::optional<std::uint8_t> tcp_flags;
    std::uint32_t ip_length = 0; // IPv4 total length, IPv6 40 + payload length
    std::uint16_t notes = 0;     // DecodeNote bits (nflog_wire.hpp)

    // Attribution (attribution.hpp); empty workload: the interface is not bound.
    std::string workload;
    bool would_drop = false; // monitor mode: logged, not dropped
    std::uint64_t policy_generation = 0;

    policy::Family family() const { return src.family; }
    bool is_allowed_flow() const { return reason == Reason::Allow; }
};

std::string_view to_string(Direction direction);
std::string_view to_string(Reason reason);
std::string_view to_string(TimestampSource source);
std::optional<Direction> direction_from_string(std::string_view text);
std::optional<Reason> reason_from_string(std::string_view text);

// "prerouting", "input", "forward", "output", "postrouting"; "" for anything else.
std::string_view hook_name(std::uint8_t hook);
// nft's names: "tcp", "udp", "icmp", "icmpv6", "sctp", "dccp", "udplite", ...; "" if none.
std::string_view protocol_name(std::uint8_t protocol);
// nft's flag names joined by ',', in bit order: "syn", "syn,ack", "fin,ack"; "" for none.
std::string tcp_flags_text(std::uint8_t flags);
std::string to_string(const MacAddress& mac); // "02:00:00:00:77:01"
// RFC 3339 UTC with microseconds, "2024-05-01T12:00:00.123456Z". Pure (no clock read).
std::string format_time_utc(std::int64_t unix_ns);

// One JSON object; "type" is "drop" or "allowed_flow" (reason allow). Absent optional
// values are omitted, never null. See README.md for every field.
nlohmann::json to_json(const DropEvent& event);

} // namespace bulkhead::nflog
