// NflogStream: datagrams read from an NFLOG socket -> DropEvents, with the accounting that
// makes loss visible. Pure (no sockets, no clock): the edge (nflog_source.hpp) feeds it the
// bytes it received and the time it received them; tests feed it hand-built datagrams.
//
// Accounting, per NFLOG group: the kernel numbers every packet it logs to a group (NFULA_SEQ,
// 0, 1, 2, ... from the moment the group is bound, also for packets it then fails to deliver
// because our socket buffer was full). So for every group
//     logged by the kernel = events + rejected (decode anomalies) + lost (sequence gaps)
// and a gap is found as soon as the next message of that group arrives. Loss at the very
// end of a burst is therefore counted when the group's next packet is logged.
#pragma once

#include "enforcer/nflog/drop_event.hpp"
#include "enforcer/nflog/nflog_decoder.hpp"
#include "enforcer/nflog/nflog_wire.hpp"

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

namespace bulkhead::nflog {

// ifindex -> interface name. The real one asks the kernel (nflog_source.hpp); tests fake it.
class InterfaceNames {
  public:
    virtual ~InterfaceNames() = default;
    // False if the index is unknown (the interface is gone); `name` is then unchanged.
    virtual bool name_of(std::uint32_t ifindex, std::string& name) = 0;
};

struct GroupCounters {
    std::uint64_t events = 0;          // delivered
    std::uint64_t rejected = 0;        // messages with a decode anomaly
    std::uint64_t lost = 0;            // sequence numbers never seen
    std::uint64_t gaps = 0;            // places where numbers were skipped
    std::uint64_t seq_regressions = 0; // a number at or below one already seen
    std::uint64_t without_seq = 0;     // messages without NFULA_SEQ: loss is not measurable
    bool seq_known = false;            // next_seq is meaningful
    std::uint32_t next_seq = 0;
};

struct NflogCounters {
    std::uint64_t datagrams = 0;
    std::uint64_t bytes = 0;
    std::uint64_t messages = 0;         // NFLOG packet messages
    std::uint64_t events = 0;           // decoded and delivered
    std::uint64_t rejected = 0;         // packet messages with a decode anomaly
    std::uint64_t control_messages = 0; // NLMSG_DONE / NLMSG_NOOP (batch framing)
    std::uint64_t error_messages = 0;   // NLMSG_ERROR / NLMSG_OVERRUN while reading
    std::uint64_t lost_events = 0;      // sum of sequence gaps over all groups
    std::uint64_t seq_gaps = 0;
    std::uint64_t seq_regressions = 0;
    std::uint64_t without_seq = 0;
    // Socket level, maintained by the edge:
    std::uint64_t enobufs = 0; // the kernel dropped datagrams (rcvbuf full)
    std::uint64_t rcvbuf_grows = 0;
    std::uint64_t truncated_datagrams = 0; // larger than the read buffer (MSG_TRUNC)
    std::uint64_t foreign_senders = 0;     // datagrams not from the kernel (portid != 0)
    std::array<std::uint64_t, decode_anomaly_count> anomalies{}; // by DecodeAnomaly
    std::array<std::uint64_t, decode_note_count> notes{};        // by DecodeNote
    std::map<std::uint16_t, GroupCounters> groups;

    std::uint64_t anomaly(DecodeAnomaly a) const { return anomalies[static_cast<std::size_t>(a)]; }
    std::uint64_t note(DecodeNote n) const { return notes[static_cast<std::size_t>(n)]; }
    std::uint64_t anomalies_total() const;
};

// Stable metric-style names: {"events": .., "lost_events": .., "anomalies":
// {"bad_attribute_length": ..}, "groups": {"10": {...}}}; zero anomaly/note counters are omitted.
nlohmann::json to_json(const NflogCounters& counters);

class NflogStream {
  public:
    using EventCallback = std::function<void(const DropEvent&)>;

    // `names` may be null (events then carry ifindexes only); it must outlive the stream.
    explicit NflogStream(InterfaceNames* names = nullptr);

    // A group this process has just bound: the kernel numbers it from 0, so messages missing
    // before the first one that arrives are counted as lost too.
    void expect_group_from_zero(std::uint16_t group);

    // Decodes every message of one datagram. The DropEvent passed to `on_event` is reused
    // for the next message: copy it to keep it.
    void process_datagram(std::span<const std::byte> datagram, std::int64_t receive_time_ns,
                          const EventCallback& on_event);

    const NflogCounters& counters() const { return counters_; }
    NflogCounters& counters() { return counters_; }

  private:
    void process_message(const NetlinkMessageView& message, std::int64_t receive_time_ns,
                         const EventCallback& on_event);
    void account_sequence(GroupCounters& group);
    const std::optional<PrefixInfo>& lookup_prefix(std::string_view prefix);
    void resolve(std::uint32_t ifindex, std::string& name);
    void count(DecodeAnomaly anomaly);

    struct StringHash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const {
            return std::hash<std::string_view>{}(s);
        }
    };

    InterfaceNames* names_;
    NflogCounters counters_;
    RawNflogRecord raw_;
    DropEvent event_;
    // Prefixes are few (a handful of reasons per class): parse each once. Bounded.
    std::unordered_map<std::string, std::optional<PrefixInfo>, StringHash, std::equal_to<>>
        prefixes_;
};

} // namespace bulkhead::nflog
