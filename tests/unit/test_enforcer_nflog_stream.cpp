// NflogStream: datagrams -> events, sequence-gap loss accounting, counters, names.
#include "enforcer/nflog/nflog_message_builder.hpp"
#include "enforcer/nflog/nflog_stream.hpp"

#include <doctest/doctest.h>
#include <linux/netlink.h>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

using namespace bulkhead;
using namespace bulkhead::nflog;

namespace {

policy::IpAddress ip(std::string_view text) {
    return *policy::parse_ip_address(text);
}

ByteVector syn_message(std::uint16_t group, std::optional<std::uint32_t> seq, std::uint16_t dport,
                       std::uint32_t indev = 4) {
    NflogMessageSpec spec;
    spec.group = group;
    spec.seq = seq;
    spec.indev = indev;
    spec.outdev = 9;
    spec.payload = build_ipv4(ip("10.0.0.1"), ip("10.0.0.2"), 6, build_tcp(40000, dport, 0x02));
    return build_nflog_message(spec);
}

struct FakeNames final : InterfaceNames {
    std::map<std::uint32_t, std::string> names;
    int lookups = 0;
    bool name_of(std::uint32_t ifindex, std::string& name) override {
        ++lookups;
        auto it = names.find(ifindex);
        if (it == names.end())
            return false;
        name = it->second;
        return true;
    }
};

struct Collector {
    std::vector<DropEvent> events;
    NflogStream::EventCallback callback() {
        return [this](const DropEvent& e) { events.push_back(e); };
    }
};

} // namespace

TEST_CASE("nflog stream: every message of a batched datagram becomes an event") {
    NflogStream stream;
    stream.expect_group_from_zero(10);
    std::vector<ByteVector> messages;
    for (std::uint32_t i = 0; i < 64; ++i) {
        messages.push_back(syn_message(10, i, static_cast<std::uint16_t>(1000 + i)));
    }
    Collector c;
    stream.process_datagram(build_datagram(messages), 0, c.callback());
    REQUIRE(c.events.size() == 64);
    for (std::size_t i = 0; i < 64; ++i) {
        CHECK(c.events[i].dport == static_cast<std::uint16_t>(1000 + i));
    }
    const auto& k = stream.counters();
    CHECK(k.datagrams == 1);
    CHECK(k.messages == 64);
    CHECK(k.events == 64);
    CHECK(k.control_messages == 1); // the NLMSG_DONE ending a multi-message batch
    CHECK(k.lost_events == 0);
    CHECK(k.anomalies_total() == 0);
}

TEST_CASE("nflog stream: sequence gaps are counted as lost events, per group") {
    NflogStream stream;
    stream.expect_group_from_zero(10);
    stream.expect_group_from_zero(11);
    Collector c;
    auto feed = [&](std::uint16_t group, std::uint32_t seq) {
        auto m = syn_message(group, seq, 80);
        stream.process_datagram(m, 0, c.callback());
    };
    SUBCASE("loss before the first message after binding") {
        feed(10, 5);
        CHECK(stream.counters().lost_events == 5);
        CHECK(stream.counters().groups.at(10).lost == 5);
    }
    SUBCASE("a gap in one group does not touch the other") {
        feed(10, 0);
        feed(11, 0);
        feed(10, 1);
        feed(10, 4); // 2, 3 lost
        feed(11, 1);
        feed(10, 10); // 5..9 lost
        CHECK(stream.counters().lost_events == 7);
        CHECK(stream.counters().seq_gaps == 2);
        CHECK(stream.counters().groups.at(10).lost == 7);
        CHECK(stream.counters().groups.at(11).lost == 0);
        // logged by the kernel == delivered + rejected + lost, per group
        const auto& g = stream.counters().groups.at(10);
        CHECK(g.events + g.rejected + g.lost == 11);
    }
    SUBCASE("wrap-around at 2^32 is not a loss") {
        NflogStream s2; // a group not bound by us: numbering starts wherever it is
        for (std::uint32_t seq : {0xffff'fffdU, 0xffff'fffeU, 0xffff'ffffU, 0U, 1U}) {
            auto m = syn_message(10, seq, 80);
            s2.process_datagram(m, 0, c.callback());
        }
        CHECK(s2.counters().lost_events == 0);
        CHECK(s2.counters().seq_regressions == 0);
        auto skip = syn_message(10, 3, 80); // 2 is missing
        s2.process_datagram(skip, 0, c.callback());
        CHECK(s2.counters().lost_events == 1);
    }
    SUBCASE("going backwards is a regression, not a loss") {
        feed(10, 0);
        feed(10, 1);
        feed(10, 1);
        CHECK(stream.counters().seq_regressions == 1);
        CHECK(stream.counters().lost_events == 0);
    }
    SUBCASE("messages without NFULA_SEQ are counted: their loss is not measurable") {
        auto m = syn_message(10, std::nullopt, 80);
        stream.process_datagram(m, 0, c.callback());
        CHECK(stream.counters().without_seq == 1);
        CHECK(c.events.size() == 1);
    }
}

TEST_CASE("nflog stream: a rejected message still advances its group's sequence") {
    NflogStream stream;
    stream.expect_group_from_zero(10);
    Collector c;
    auto good0 = syn_message(10, 0, 80);
    NflogMessageSpec bad;
    bad.group = 10;
    bad.seq = 1;
    bad.prefix = "not ours";
    bad.payload = build_ipv4(ip("10.0.0.1"), ip("10.0.0.2"), 6, build_tcp(1, 2, 0x02));
    auto good2 = syn_message(10, 2, 81);
    std::vector<ByteVector> messages{good0, build_nflog_message(bad), good2};
    stream.process_datagram(build_datagram(messages), 0, c.callback());
    const auto& k = stream.counters();
    CHECK(c.events.size() == 2);
    CHECK(k.rejected == 1);
    CHECK(k.anomaly(DecodeAnomaly::ForeignPrefix) == 1);
    CHECK(k.lost_events == 0); // the rejected message is accounted, not lost
    const auto& g = k.groups.at(10);
    CHECK(g.events + g.rejected + g.lost == 3);
}

TEST_CASE("nflog stream: broken framing stops the datagram, keeps what came before") {
    NflogStream stream;
    Collector c;
    auto first = syn_message(10, 0, 80);
    auto datagram = first;
    ByteVector garbage(16, std::byte{0});
    garbage[0] = std::byte{0xff}; // nlmsg_len 255 > what is left
    datagram.insert(datagram.end(), garbage.begin(), garbage.end());
    stream.process_datagram(datagram, 0, c.callback());
    CHECK(c.events.size() == 1);
    CHECK(stream.counters().anomaly(DecodeAnomaly::BadNetlinkLength) == 1);

    SUBCASE("a short tail") {
        auto tail = first;
        tail.resize(tail.size() + 5, std::byte{1});
        stream.process_datagram(tail, 0, c.callback());
        CHECK(c.events.size() == 2);
        CHECK(stream.counters().anomaly(DecodeAnomaly::TruncatedNetlinkHeader) == 1);
    }
    SUBCASE("errors and unknown types are counted") {
        auto error = build_control_message(NLMSG_ERROR);
        stream.process_datagram(error, 0, c.callback());
        CHECK(stream.counters().error_messages == 1);
        auto other = build_control_message(0x0101);
        stream.process_datagram(other, 0, c.callback());
        CHECK(stream.counters().anomaly(DecodeAnomaly::UnexpectedMessageType) == 1);
    }
}

TEST_CASE("nflog stream: interface names come from the resolver and misses are noted") {
    FakeNames names;
    names.names = {{4, "vdi1"}, {9, "uplink"}};
    NflogStream stream(&names);
    Collector c;
    auto known = syn_message(10, 0, 80, 4);
    stream.process_datagram(known, 0, c.callback());
    REQUIRE(c.events.size() == 1);
    CHECK(c.events[0].indev_name == "vdi1");
    CHECK(c.events[0].outdev_name == "uplink");
    CHECK(c.events[0].notes == 0);

    auto gone = syn_message(10, 1, 80, 5);
    stream.process_datagram(gone, 0, c.callback());
    REQUIRE(c.events.size() == 2);
    CHECK(c.events[1].indev_name.empty()); // not the previous event's name
    CHECK(has_note(c.events[1].notes, DecodeNote::IfnameUnresolved));
    CHECK(stream.counters().note(DecodeNote::IfnameUnresolved) == 1);
}

TEST_CASE("nflog stream: counters serialise with stable names") {
    NflogStream stream;
    stream.expect_group_from_zero(10);
    Collector c;
    auto m = syn_message(10, 3, 80);
    stream.process_datagram(m, 0, c.callback());
    auto j = to_json(stream.counters());
    CHECK(j["events"] == 1);
    CHECK(j["lost_events"] == 3);
    CHECK(j["groups"]["10"]["lost"] == 3);
    CHECK(j["anomalies"].empty());
}
