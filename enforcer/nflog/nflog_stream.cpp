#include "enforcer/nflog/nflog_stream.hpp"

#include <linux/netlink.h>
#include <nlohmann/json.hpp>

namespace bulkhead::nflog {

namespace {
constexpr std::size_t max_cached_prefixes = 4096;
}

std::uint64_t NflogCounters::anomalies_total() const {
    std::uint64_t total = 0;
    for (auto n : anomalies) {
        total += n;
    }
    return total;
}

nlohmann::json to_json(const NflogCounters& c) {
    nlohmann::json j;
    j["datagrams"] = c.datagrams;
    j["bytes"] = c.bytes;
    j["messages"] = c.messages;
    j["events"] = c.events;
    j["rejected"] = c.rejected;
    j["control_messages"] = c.control_messages;
    j["error_messages"] = c.error_messages;
    j["lost_events"] = c.lost_events;
    j["seq_gaps"] = c.seq_gaps;
    j["seq_regressions"] = c.seq_regressions;
    j["without_seq"] = c.without_seq;
    j["enobufs"] = c.enobufs;
    j["rcvbuf_grows"] = c.rcvbuf_grows;
    j["truncated_datagrams"] = c.truncated_datagrams;
    j["foreign_senders"] = c.foreign_senders;
    auto anomalies = nlohmann::json::object();
    for (std::size_t i = 0; i < decode_anomaly_count; ++i) {
        if (c.anomalies[i] != 0) {
            anomalies[std::string(anomaly_name(static_cast<DecodeAnomaly>(i)))] = c.anomalies[i];
        }
    }
    j["anomalies"] = std::move(anomalies);
    auto notes = nlohmann::json::object();
    for (std::size_t i = 0; i < decode_note_count; ++i) {
        if (c.notes[i] != 0) {
            notes[std::string(note_name(static_cast<DecodeNote>(i)))] = c.notes[i];
        }
    }
    j["notes"] = std::move(notes);
    auto groups = nlohmann::json::object();
    for (const auto& [group, g] : c.groups) {
        groups[std::to_string(group)] = {{"events", g.events},
                                         {"rejected", g.rejected},
                                         {"lost", g.lost},
                                         {"gaps", g.gaps},
                                         {"seq_regressions", g.seq_regressions},
                                         {"without_seq", g.without_seq}};
    }
    j["groups"] = std::move(groups);
    return j;
}

NflogStream::NflogStream(InterfaceNames* names) : names_(names) {}

void NflogStream::expect_group_from_zero(std::uint16_t group) {
    auto& g = counters_.groups[group];
    g.seq_known = true;
    g.next_seq = 0;
}

void NflogStream::count(DecodeAnomaly anomaly) {
    ++counters_.anomalies[static_cast<std::size_t>(anomaly)];
}

void NflogStream::process_datagram(std::span<const std::byte> datagram,
                                   std::int64_t receive_time_ns, const EventCallback& on_event) {
    ++counters_.datagrams;
    counters_.bytes += datagram.size();
    auto framing = for_each_netlink_message(datagram, [&](const NetlinkMessageView& message) {
        process_message(message, receive_time_ns, on_event);
    });
    if (framing) {
        count(*framing);
    }
}

void NflogStream::account_sequence(GroupCounters& g) {
    if (!raw_.has_seq) {
        ++g.without_seq;
        ++counters_.without_seq;
        return;
    }
    if (g.seq_known) {
        // Modulo 2^32: a forward distance below 2^31 is a gap, anything else goes backwards.
        const std::uint32_t distance = raw_.seq - g.next_seq;
        if (distance != 0 && distance < 0x8000'0000U) {
            g.lost += distance;
            ++g.gaps;
            counters_.lost_events += distance;
            ++counters_.seq_gaps;
        } else if (distance != 0) {
            ++g.seq_regressions;
            ++counters_.seq_regressions;
        }
    }
    g.seq_known = true;
    g.next_seq = raw_.seq + 1;
}

const std::optional<PrefixInfo>& NflogStream::lookup_prefix(std::string_view prefix) {
    if (auto it = prefixes_.find(prefix); it != prefixes_.end()) {
        return it->second;
    }
    if (prefixes_.size() >= max_cached_prefixes) {
        prefixes_.clear(); // a flood of distinct foreign prefixes must not grow memory
    }
    return prefixes_.emplace(std::string(prefix), parse_prefix(prefix)).first->second;
}

void NflogStream::resolve(std::uint32_t ifindex, std::string& name) {
    if (ifindex == 0 || names_ == nullptr) {
        return;
    }
    if (!names_->name_of(ifindex, name)) {
        event_.notes |= note_bit(DecodeNote::IfnameUnresolved);
    }
}

void NflogStream::process_message(const NetlinkMessageView& message, std::int64_t receive_time_ns,
                                  const EventCallback& on_event) {
    switch (message.type) {
    case NLMSG_NOOP:
    case NLMSG_DONE:
        ++counters_.control_messages;
        return;
    case NLMSG_ERROR:
    case NLMSG_OVERRUN:
        ++counters_.error_messages;
        return;
    case nflog_packet_message_type:
        break;
    default:
        count(DecodeAnomaly::UnexpectedMessageType);
        return;
    }
    ++counters_.messages;
    const auto wire_anomaly = decode_nflog_wire(message.bytes, raw_);
    if (!raw_.has_group) {
        // Not even the group is known: nothing to account the message to but the anomaly.
        ++counters_.rejected;
        count(wire_anomaly.value_or(DecodeAnomaly::TruncatedNfgenmsg));
        return;
    }
    auto& group = counters_.groups[raw_.group];
    account_sequence(group);
    auto anomaly = wire_anomaly;
    if (!anomaly) {
        static const std::optional<PrefixInfo> no_prefix;
        anomaly = to_drop_event(raw_, raw_.has_prefix ? lookup_prefix(raw_.prefix) : no_prefix,
                                receive_time_ns, event_);
    }
    if (anomaly) {
        ++group.rejected;
        ++counters_.rejected;
        count(*anomaly);
        return;
    }
    resolve(event_.indev, event_.indev_name);
    resolve(event_.outdev, event_.outdev_name);
    resolve(event_.physindev, event_.physindev_name);
    resolve(event_.physoutdev, event_.physoutdev_name);
    for (std::size_t i = 0; i < decode_note_count; ++i) {
        if (has_note(event_.notes, static_cast<DecodeNote>(i))) {
            ++counters_.notes[i];
        }
    }
    ++group.events;
    ++counters_.events;
    if (on_event) {
        on_event(event_);
    }
}

} // namespace bulkhead::nflog
