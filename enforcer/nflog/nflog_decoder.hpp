// From one NFLOG netlink message to a DropEvent: the byte-level decode (nflog_wire.hpp)
// followed by Bulkhead's semantics, the prefix grammar "bh:<mode>:<dir>:<reason>:<subject>"
// of policies/ruleset_compiler.hpp. Pure: the receive time is a parameter, interface names
// are left empty (turning an ifindex into a name is the edge's job, see nflog_stream.hpp).
#pragma once

#include "enforcer/nflog/drop_event.hpp"
#include "enforcer/nflog/nflog_wire.hpp"

#include <cstddef>
#include <expected>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace bulkhead::nflog {

struct PrefixInfo {
    policy::Mode mode = policy::Mode::Enforce;
    Direction direction = Direction::Out;
    Reason reason = Reason::Default;
    std::string subject;
    bool operator==(const PrefixInfo&) const = default;
};

// The compiler's grammar (ruleset::parse_log_prefix), mapped to enums.
std::optional<PrefixInfo> parse_prefix(std::string_view prefix);

// Decodes one netlink message (starting at its nlmsghdr) into a DropEvent. Without a
// kernel timestamp the event carries `receive_time_ns` and TimestampSource::Receive.
std::expected<DropEvent, DecodeAnomaly>
decode_nflog_message(std::span<const std::byte> netlink_message, std::int64_t receive_time_ns = 0);

// The second half of decode_nflog_message, for callers that decode the wire format
// themselves (the stream reuses one RawNflogRecord and one DropEvent for every message, so
// that string capacity is kept). `prefix` is the parsed raw.prefix, or nullopt if it did
// not parse. Every field of `out` is overwritten.
std::optional<DecodeAnomaly> to_drop_event(const RawNflogRecord& raw,
                                           const std::optional<PrefixInfo>& prefix,
                                           std::int64_t receive_time_ns, DropEvent& out);

} // namespace bulkhead::nflog
