// NFLOG decoder: hand-built netlink messages laid out as nfnetlink_log builds them.
#include "enforcer/nflog/drop_event.hpp"
#include "enforcer/nflog/nflog_decoder.hpp"
#include "enforcer/nflog/nflog_message_builder.hpp"
#include "enforcer/nflog/nflog_wire.hpp"
#include "policies/ruleset_compiler.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

using namespace bulkhead;
using namespace bulkhead::nflog;

namespace {

policy::IpAddress ip(std::string_view text) {
    return *policy::parse_ip_address(text);
}

constexpr MacAddress client_mac{0x02, 0x00, 0x00, 0x00, 0x77, 0x02};
constexpr MacAddress router_mac{0x02, 0x00, 0x00, 0x00, 0x77, 0x01};

NflogMessageSpec forward_spec(ByteVector payload) {
    NflogMessageSpec spec;
    spec.group = 10;
    spec.hook = 2;
    spec.prefix = "bh:enf:out:deny:c06ffe5b0";
    spec.indev = 7;
    spec.outdev = 3;
    spec.hwaddr = client_mac;
    spec.eth_dst = router_mac;
    spec.eth_src = client_mac;
    spec.timestamp_sec = 1'700'000'000;
    spec.timestamp_usec = 123'456;
    spec.seq = 41;
    spec.seq_global = 900;
    spec.payload = std::move(payload);
    return spec;
}

DropEvent decode_ok(const NflogMessageSpec& spec, std::int64_t receive_ns = 5) {
    auto message = build_nflog_message(spec);
    auto event = decode_nflog_message(message, receive_ns);
    INFO("anomaly: " << (event ? "" : anomaly_name(event.error())));
    REQUIRE(event.has_value());
    return *event;
}

DecodeAnomaly decode_fails(const NflogMessageSpec& spec) {
    auto message = build_nflog_message(spec);
    auto event = decode_nflog_message(message, 5);
    REQUIRE_FALSE(event.has_value());
    return event.error();
}

} // namespace

TEST_CASE("nflog decoder: IPv4 TCP SYN in the forward hook, every field") {
    auto syn = build_tcp(40001, 3389, 0x02);
    auto e = decode_ok(forward_spec(build_ipv4(ip("10.1.0.5"), ip("10.2.0.9"), 6, syn)));

    CHECK(e.timestamp_ns == 1'700'000'000'123'456'000);
    CHECK(e.timestamp_source == TimestampSource::Kernel);
    CHECK(e.group == 10);
    CHECK(e.seq == 41U);
    CHECK(e.seq_global == 900U);
    CHECK(e.hook == std::uint8_t{2});
    CHECK(e.prefix == "bh:enf:out:deny:c06ffe5b0");
    CHECK(e.mode == policy::Mode::Enforce);
    CHECK(e.direction == Direction::Out);
    CHECK(e.reason == Reason::Deny);
    CHECK(e.subject == "c06ffe5b0");
    CHECK(e.indev == 7);
    CHECK(e.outdev == 3);
    CHECK(e.indev_name.empty()); // names are the edge's job
    REQUIRE(e.src_mac);
    CHECK(to_string(*e.src_mac) == "02:00:00:00:77:02");
    REQUIRE(e.dst_mac);
    CHECK(to_string(*e.dst_mac) == "02:00:00:00:77:01");
    CHECK(e.family() == policy::Family::Ipv4);
    CHECK(policy::to_string(e.src) == "10.1.0.5");
    CHECK(policy::to_string(e.dst) == "10.2.0.9");
    CHECK(e.protocol == 6);
    CHECK(e.sport == std::uint16_t{40001});
    CHECK(e.dport == std::uint16_t{3389});
    CHECK(e.tcp_flags == std::uint8_t{0x02});
    CHECK_FALSE(e.icmp_type);
    CHECK(e.ip_length == 40);
    CHECK(e.notes == 0);
    CHECK_FALSE(e.would_drop);
    CHECK(e.workload.empty());
}

TEST_CASE("nflog decoder: IPv4 options move the transport header (IHL)") {
    ByteVector options(8, std::byte{0x01}); // NOPs
    auto packet = build_ipv4(ip("10.0.0.1"), ip("10.0.0.2"), 17, build_udp(53000, 53), options);
    auto e = decode_ok(forward_spec(packet));
    CHECK(e.protocol == 17);
    CHECK(e.sport == std::uint16_t{53000});
    CHECK(e.dport == std::uint16_t{53});
    CHECK(e.ip_length == 36);
    CHECK_FALSE(e.tcp_flags);
}

TEST_CASE("nflog decoder: IPv6 UDP behind extension headers") {
    auto udp = build_udp(5353, 5000, 4);
    SUBCASE("hop-by-hop then destination options") {
        auto rest = concat({build_ipv6_extension(60, 0), build_ipv6_extension(17, 1), udp});
        auto spec = forward_spec(build_ipv6(ip("fd00::5"), ip("2001:db8::9"), 0, rest));
        spec.nf_family = 10;
        spec.hw_protocol = 0x86dd;
        auto e = decode_ok(spec);
        CHECK(e.family() == policy::Family::Ipv6);
        CHECK(policy::to_string(e.src) == "fd00::5");
        CHECK(policy::to_string(e.dst) == "2001:db8::9");
        CHECK(e.protocol == 17);
        CHECK(e.sport == std::uint16_t{5353});
        CHECK(e.dport == std::uint16_t{5000});
        CHECK(e.ip_length == 40 + 8 + 16 + 12);
        CHECK(e.notes == 0);
    }
    SUBCASE("first fragment keeps its ports") {
        auto rest = concat({build_ipv6_fragment(17, 0, true), udp});
        auto spec = forward_spec(build_ipv6(ip("fd00::5"), ip("2001:db8::9"), 44, rest));
        spec.nf_family = 10;
        auto e = decode_ok(spec);
        CHECK(e.protocol == 17);
        CHECK(e.dport == std::uint16_t{5000});
        CHECK(e.notes == 0);
    }
    SUBCASE("a later fragment has no transport header") {
        auto rest = concat({build_ipv6_fragment(17, 185, false), udp});
        auto spec = forward_spec(build_ipv6(ip("fd00::5"), ip("2001:db8::9"), 44, rest));
        spec.nf_family = 10;
        auto e = decode_ok(spec);
        CHECK(e.protocol == 17);
        CHECK_FALSE(e.dport);
        CHECK(has_note(e.notes, DecodeNote::NonFirstFragment));
    }
}

TEST_CASE("nflog decoder: ICMP echo and ICMPv6 echo carry type and code, no ports") {
    SUBCASE("ICMP") {
        auto e = decode_ok(
            forward_spec(build_ipv4(ip("10.0.0.1"), ip("10.0.0.2"), 1, build_icmp(8, 0))));
        CHECK(e.protocol == 1);
        CHECK(e.icmp_type == std::uint8_t{8});
        CHECK(e.icmp_code == std::uint8_t{0});
        CHECK_FALSE(e.sport);
        CHECK_FALSE(e.dport);
        CHECK(to_json(e)["proto_name"] == "icmp");
        CHECK(e.icmp_id == std::uint16_t{1}); // the builder's defaults
        CHECK(e.icmp_seq == std::uint16_t{1});
    }
    SUBCASE("an echo's identifier and sequence, in the event and its JSON") {
        auto e = decode_ok(
            forward_spec(build_ipv4(ip("10.0.0.1"), ip("10.0.0.2"), 1, build_icmp(8, 0, 0xBEEF, 42))));
        CHECK(e.icmp_id == std::uint16_t{0xBEEF});
        CHECK(e.icmp_seq == std::uint16_t{42});
        CHECK(to_json(e)["icmp_id"] == 0xBEEF);
        CHECK(to_json(e)["icmp_seq"] == 42);
    }
    SUBCASE("not an echo (a timestamp request): no identifier") {
        auto e = decode_ok(
            forward_spec(build_ipv4(ip("10.0.0.1"), ip("10.0.0.2"), 1, build_icmp(13, 0, 7, 7))));
        CHECK_FALSE(e.icmp_id);
        CHECK_FALSE(to_json(e).contains("icmp_id"));
    }
    SUBCASE("ICMPv6") {
        auto spec = forward_spec(build_ipv6(ip("fd00::1"), ip("fd00::2"), 58, build_icmp(128, 0)));
        spec.nf_family = 10;
        auto e = decode_ok(spec);
        CHECK(e.protocol == 58);
        CHECK(e.icmp_type == std::uint8_t{128});
        CHECK(e.icmp_code == std::uint8_t{0});
        CHECK(to_json(e)["proto_name"] == "icmpv6");
        CHECK(e.icmp_id == std::uint16_t{1});
    }
    SUBCASE("protocol 58 inside IPv4 is not ICMPv6") {
        auto e = decode_ok(
            forward_spec(build_ipv4(ip("10.0.0.1"), ip("10.0.0.2"), 58, build_icmp(128, 0))));
        CHECK_FALSE(e.icmp_type);
    }
}

TEST_CASE("nflog decoder: output hook without timestamp or MACs falls back to receive time") {
    NflogMessageSpec spec;
    spec.hook = 3;
    spec.prefix = "bh:mon:out:default:c1";
    spec.outdev = 2;
    spec.seq = 0;
    spec.payload = build_ipv4(ip("192.0.2.1"), ip("198.51.100.7"), 6, build_tcp(1000, 22, 0x02));
    auto e = decode_ok(spec, 1'234'567);
    CHECK(e.timestamp_ns == 1'234'567);
    CHECK(e.timestamp_source == TimestampSource::Receive);
    CHECK_FALSE(e.src_mac);
    CHECK_FALSE(e.dst_mac);
    CHECK(e.mode == policy::Mode::Monitor);
    CHECK(e.would_drop);
    CHECK(e.reason == Reason::Default);
}

TEST_CASE("nflog decoder: a copy range that cuts the transport header keeps what it can") {
    auto full = build_ipv4(ip("10.0.0.1"), ip("10.0.0.2"), 6, build_tcp(1, 2, 0x12));
    SUBCASE("ports but no flags") {
        ByteVector cut(full.begin(), full.begin() + 20 + 8);
        auto e = decode_ok(forward_spec(cut));
        CHECK(e.sport == std::uint16_t{1});
        CHECK(e.dport == std::uint16_t{2});
        CHECK_FALSE(e.tcp_flags);
        CHECK(e.ip_length == 40);
        CHECK(has_note(e.notes, DecodeNote::L4Truncated));
    }
    SUBCASE("nothing of the transport header") {
        ByteVector cut(full.begin(), full.begin() + 20);
        auto e = decode_ok(forward_spec(cut));
        CHECK_FALSE(e.dport);
        CHECK(has_note(e.notes, DecodeNote::L4Truncated));
    }
    SUBCASE("the packet itself is too short for TCP") {
        auto short_packet =
            build_ipv4(ip("10.0.0.1"), ip("10.0.0.2"), 6, build_tcp(1, 2, 0x02), {}, 30);
        auto e = decode_ok(forward_spec(short_packet));
        CHECK(e.dport == std::uint16_t{2});
        CHECK_FALSE(e.tcp_flags); // byte 13 lies beyond the packet's 30 bytes
        CHECK(has_note(e.notes, DecodeNote::L4Malformed));
        CHECK_FALSE(has_note(e.notes, DecodeNote::L4Truncated));
    }
}

TEST_CASE("nflog decoder: malformed messages end in a named anomaly") {
    auto good = build_ipv4(ip("10.0.0.1"), ip("10.0.0.2"), 6, build_tcp(1, 2, 0x02));
    SUBCASE("no prefix") {
        auto spec = forward_spec(good);
        spec.prefix.reset();
        CHECK(decode_fails(spec) == DecodeAnomaly::MissingPrefix);
    }
    SUBCASE("someone else's prefix") {
        auto spec = forward_spec(good);
        spec.prefix = "ulogd: ";
        CHECK(decode_fails(spec) == DecodeAnomaly::ForeignPrefix);
    }
    SUBCASE("no payload") {
        auto spec = forward_spec(good);
        spec.payload.reset();
        CHECK(decode_fails(spec) == DecodeAnomaly::MissingPayload);
    }
    SUBCASE("IPv4 header shorter than 20 bytes") {
        CHECK(decode_fails(forward_spec(ByteVector(good.begin(), good.begin() + 19))) ==
              DecodeAnomaly::TruncatedIpv4Header);
    }
    SUBCASE("IHL below 5") {
        auto bad = good;
        bad[0] = std::byte{0x44};
        CHECK(decode_fails(forward_spec(bad)) == DecodeAnomaly::BadIpv4Ihl);
    }
    SUBCASE("IHL beyond the copied bytes") {
        auto bad = ByteVector(good.begin(), good.begin() + 30);
        bad[0] = std::byte{0x4f};
        CHECK(decode_fails(forward_spec(bad)) == DecodeAnomaly::TruncatedIpv4Options);
    }
    SUBCASE("total length below the header") {
        auto bad = good;
        bad[2] = std::byte{0};
        bad[3] = std::byte{10};
        CHECK(decode_fails(forward_spec(bad)) == DecodeAnomaly::BadIpv4TotalLength);
    }
    SUBCASE("IPv6 family, IPv4 packet") {
        auto spec = forward_spec(good);
        spec.nf_family = 10;
        good.resize(48);
        spec.payload = good;
        CHECK(decode_fails(spec) == DecodeAnomaly::IpVersionMismatch);
    }
    SUBCASE("IPv6 header shorter than 40 bytes") {
        auto spec = forward_spec(ByteVector(39, std::byte{0x60}));
        spec.nf_family = 10;
        CHECK(decode_fails(spec) == DecodeAnomaly::TruncatedIpv6Header);
    }
    SUBCASE("neither IPv4 nor IPv6") {
        auto spec = forward_spec(good);
        spec.nf_family = 3; // NFPROTO_ARP
        spec.hw_protocol = 0x0806;
        CHECK(decode_fails(spec) == DecodeAnomaly::UnsupportedFamily);
    }
    SUBCASE("bridge family goes by the EtherType") {
        auto spec = forward_spec(good);
        spec.nf_family = 7; // NFPROTO_BRIDGE
        CHECK(decode_ok(spec).dport == std::uint16_t{2});
    }
}

TEST_CASE("nflog decoder: framing and attribute errors") {
    auto message = build_nflog_message(
        forward_spec(build_ipv4(ip("10.0.0.1"), ip("10.0.0.2"), 6, build_tcp(1, 2, 0x02))));
    auto anomaly_of = [](const ByteVector& bytes) {
        auto r = decode_nflog_message(bytes, 0);
        REQUIRE_FALSE(r.has_value());
        return r.error();
    };
    SUBCASE("empty") {
        CHECK(anomaly_of({}) == DecodeAnomaly::TruncatedNetlinkHeader);
    }
    SUBCASE("length beyond the buffer") {
        auto bad = message;
        bad.resize(bad.size() - 4);
        CHECK(anomaly_of(bad) == DecodeAnomaly::BadNetlinkLength);
    }
    SUBCASE("an attribute longer than the message") {
        auto bad = message;
        bad[20] = std::byte{0xff}; // NFULA_PACKET_HDR's nla_len
        bad[21] = std::byte{0x7f};
        CHECK(anomaly_of(bad) == DecodeAnomaly::BadAttributeLength);
    }
    SUBCASE("an attribute shorter than its header") {
        auto bad = message;
        bad[20] = std::byte{2};
        bad[21] = std::byte{0};
        CHECK(anomaly_of(bad) == DecodeAnomaly::BadAttributeLength);
    }
    SUBCASE("not a packet message") {
        auto bad = message;
        bad[4] = std::byte{1}; // NFULNL_MSG_CONFIG
        CHECK(anomaly_of(bad) == DecodeAnomaly::NotNflogPacket);
    }
    SUBCASE("unknown nfnetlink version") {
        auto bad = message;
        bad[17] = std::byte{1};
        CHECK(anomaly_of(bad) == DecodeAnomaly::UnsupportedNfnetlinkVersion);
    }
    SUBCASE("a valid message with garbage appended after nlmsg_len still decodes") {
        auto padded = message;
        padded.resize(padded.size() + 7, std::byte{0xee});
        CHECK(decode_nflog_message(padded, 0).has_value());
    }
}

TEST_CASE("nflog decoder: prefix grammar maps to enums, as the compiler writes it") {
    for (auto mode : {policy::Mode::Enforce, policy::Mode::Monitor}) {
        for (std::string_view dir : {"out", "in"}) {
            for (std::string_view reason : {"default", "deny", "decoy", "quarantine", "allow"}) {
                const auto text = ruleset::log_prefix(mode, dir, reason, "c12345678");
                auto parsed = parse_prefix(text);
                REQUIRE(parsed);
                CHECK(parsed->mode == mode);
                CHECK(to_string(parsed->direction) == dir);
                CHECK(to_string(parsed->reason) == reason);
                CHECK(parsed->subject == "c12345678");
            }
        }
    }
    CHECK(parse_prefix("bh:enf:out:quarantine:q")->subject == "q");
    CHECK_FALSE(parse_prefix("bh:enf:sideways:deny:c1"));
    CHECK_FALSE(parse_prefix("bh:enf:out:maybe:c1"));
    CHECK_FALSE(parse_prefix("bh:enf:out:deny:"));
    CHECK_FALSE(parse_prefix(""));
}

TEST_CASE("nflog decoder: JSON field names are stable") {
    auto e = decode_ok(
        forward_spec(build_ipv4(ip("10.1.0.5"), ip("10.2.0.9"), 6, build_tcp(40001, 3389, 0x12))));
    e.indev_name = "vdi1";
    e.outdev_name = "uplink";
    e.workload = "vdi-001";
    e.policy_generation = 7;
    auto j = to_json(e);
    CHECK(j["type"] == "drop");
    CHECK(j["count"] == 1);
    CHECK(j["time_ns"] == 1'700'000'000'123'456'000);
    CHECK(j["time_unix_ms"] == 1'700'000'000'123);
    CHECK(j["time"] == "2023-11-14T22:13:20.123456Z");
    CHECK(j["time_source"] == "kernel");
    CHECK(j["group"] == 10);
    CHECK(j["seq"] == 41);
    CHECK(j["seq_global"] == 900);
    CHECK(j["hook"] == "forward");
    CHECK(j["mode"] == "enforce");
    CHECK(j["direction"] == "out");
    CHECK(j["reason"] == "deny");
    CHECK(j["subject"] == "c06ffe5b0");
    CHECK(j["indev"] == "vdi1");
    CHECK(j["indev_ifindex"] == 7);
    CHECK(j["outdev"] == "uplink");
    CHECK(j["src_mac"] == "02:00:00:00:77:02");
    CHECK(j["dst_mac"] == "02:00:00:00:77:01");
    CHECK(j["family"] == 4);
    CHECK(j["src"] == "10.1.0.5");
    CHECK(j["dst"] == "10.2.0.9");
    CHECK(j["proto"] == 6);
    CHECK(j["proto_name"] == "tcp");
    CHECK(j["sport"] == 40001);
    CHECK(j["dport"] == 3389);
    CHECK(j["tcp_flags"] == "syn,ack");
    CHECK(j["tcp_flags_raw"] == 0x12);
    CHECK(j["ip_len"] == 40);
    CHECK(j["workload"] == "vdi-001");
    CHECK(j["would_drop"] == false);
    CHECK(j["policy_generation"] == 7);
    CHECK_FALSE(j.contains("icmp_type")); // absent values are omitted, never null
    CHECK_FALSE(j.contains("physindev"));
    CHECK_FALSE(j.contains("notes"));

    e.reason = Reason::Allow;
    CHECK(to_json(e)["type"] == "allowed_flow");
}

TEST_CASE("nflog decoder: helpers") {
    CHECK(tcp_flags_text(0x02) == "syn");
    CHECK(tcp_flags_text(0x11) == "fin,ack");
    CHECK(tcp_flags_text(0xff) == "fin,syn,rst,psh,ack,urg,ecn,cwr");
    CHECK(tcp_flags_text(0).empty());
    CHECK(format_time_utc(0) == "1970-01-01T00:00:00.000000Z");
    CHECK(format_time_utc(-1'000) == "1969-12-31T23:59:59.999999Z");
    CHECK(hook_name(1) == "input");
    CHECK(hook_name(9).empty());
    for (std::size_t i = 0; i < decode_anomaly_count; ++i) {
        CHECK(anomaly_name(static_cast<DecodeAnomaly>(i)) != "unknown_anomaly");
    }
    for (std::size_t i = 0; i < decode_note_count; ++i) {
        CHECK(note_name(static_cast<DecodeNote>(i)) != "unknown_note");
    }
}
