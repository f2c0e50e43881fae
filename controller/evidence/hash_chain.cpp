#include "controller/evidence/hash_chain.hpp"

namespace bulkhead::evidence {

namespace {
constexpr std::string_view kDomain = "bulkhead-evidence-v1";

std::string short_hex(const Digest& digest) { return to_hex(digest).substr(0, 16); }
}  // namespace

std::string_view to_string(Stream stream) {
    switch (stream) {
    case Stream::Drops:
        return "drops";
    case Stream::Incidents:
        return "incidents";
    case Stream::Quarantines:
        return "quarantines";
    case Stream::Audit:
        return "audit";
    }
    return "unknown";
}

std::optional<Stream> stream_from_string(std::string_view name) {
    for (auto stream : kStreams) {
        if (to_string(stream) == name) {
            return stream;
        }
    }
    return std::nullopt;
}

Digest link_hash(Sha256& hasher, Stream stream, std::uint64_t sequence, const Digest& previous,
                 std::string_view record) {
    return hasher.begin()
        .add(kDomain)
        .add_byte(0)
        .add(to_string(stream))
        .add_byte(0)
        .add_u64(sequence)
        .add(previous)
        .add(record)
        .finish();
}

ChainLink ChainAppender::append(std::string_view record) {
    ChainLink link;
    link.sequence = head_.sequence + 1;
    link.previous = head_.hash;
    link.hash = link_hash(hasher_, stream_, link.sequence, link.previous, record);
    head_ = ChainHead{link.sequence, link.hash};
    return link;
}

std::string_view to_string(BreakKind kind) {
    switch (kind) {
    case BreakKind::Altered:
        return "altered";
    case BreakKind::Missing:
        return "missing";
    case BreakKind::OutOfOrder:
        return "out-of-order";
    case BreakKind::BrokenLink:
        return "broken-link";
    case BreakKind::CheckpointMismatch:
        return "checkpoint-mismatch";
    case BreakKind::Truncated:
        return "truncated";
    }
    return "unknown";
}

std::string describe(const ChainBreak& broken) {
    return std::string(to_string(broken.stream)) + " #" + std::to_string(broken.sequence) + ": " +
           std::string(to_string(broken.kind)) + ": " + broken.detail;
}

void ChainVerifier::expect(const ChainHead& checkpoint_head, std::string origin) {
    expected_.emplace(checkpoint_head.sequence, std::make_pair(checkpoint_head.hash, std::move(origin)));
}

void ChainVerifier::fail(std::uint64_t sequence, BreakKind kind, std::string detail) {
    if (!broken_) {
        broken_ = ChainBreak{stream_, sequence, kind, std::move(detail)};
    }
}

bool ChainVerifier::feed(const StoredRecord& record) {
    if (broken_) {
        return false;
    }
    const std::uint64_t expected_sequence = head_.sequence + 1;
    if (record.sequence < expected_sequence) {
        fail(record.sequence, BreakKind::OutOfOrder,
             "sequence " + std::to_string(record.sequence) + " listed after " + std::to_string(head_.sequence) +
                 " (a repeated or reordered sequence number)");
        return false;
    }
    if (record.sequence > expected_sequence) {
        const std::uint64_t last_absent = record.sequence - 1;
        fail(expected_sequence, BreakKind::Missing,
             last_absent == expected_sequence
                 ? "record " + std::to_string(expected_sequence) + " is absent (deleted)"
                 : "records " + std::to_string(expected_sequence) + " to " + std::to_string(last_absent) +
                       " are absent (deleted)");
        return false;
    }
    const Digest computed = link_hash(hasher_, stream_, record.sequence, record.previous, record.record);
    if (computed != record.hash) {
        fail(record.sequence, BreakKind::Altered,
             "its content hashes to " + short_hex(computed) + "…, the stored hash is " + short_hex(record.hash) +
                 "… (the record was changed after it was stored)");
        return false;
    }
    if (record.previous != head_.hash) {
        fail(record.sequence, BreakKind::BrokenLink,
             "it links to " + short_hex(record.previous) + "…, record " + std::to_string(head_.sequence) +
                 " hashes to " + short_hex(head_.hash) +
                 "… (records were reordered, replaced or inserted before it)");
        return false;
    }
    for (auto [at, end] = expected_.equal_range(record.sequence); at != end; ++at) {
        if (at->second.first != record.hash) {
            // Every link up to here is consistent, so the chain was rebuilt: the change lies
            // after the last checkpoint that still agreed.
            fail(record.sequence, BreakKind::CheckpointMismatch,
                 "the store's chain has " + short_hex(record.hash) + "… here, " + at->second.second + " signed " +
                     short_hex(at->second.first) + "… (a record from #" + std::to_string(last_confirmed_ + 1) +
                     " to here was changed and the chain rebuilt after it)");
            return false;
        }
        last_confirmed_ = record.sequence;
    }
    head_ = ChainHead{record.sequence, record.hash};
    ++verified_;
    return true;
}

std::optional<ChainBreak> ChainVerifier::finish() {
    if (!broken_) {
        // The first checkpoint past the end names the earliest record known to be gone.
        if (auto beyond = expected_.upper_bound(head_.sequence); beyond != expected_.end()) {
            fail(head_.sequence + 1, BreakKind::Truncated,
                 "the store ends at record " + std::to_string(head_.sequence) + ", " + beyond->second.second +
                     " holds " + std::to_string(beyond->first) + " (records deleted from the end)");
        }
    }
    return broken_;
}

}  // namespace bulkhead::evidence
