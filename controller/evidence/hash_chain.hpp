// Hash chains over the records the controller stores (drop events, incident changes,
// quarantines, audit entries), one chain per stream, and the verifier that walks a stored
// chain and names the first record that breaks it.
//
// Record n of a stream hashes its own canonical bytes together with the stream's name,
// its sequence number and record n-1's hash. Changing a byte, deleting a record, swapping
// two or inserting one therefore breaks the chain at that record; rewriting the chain from
// there on is caught by signed checkpoints kept outside the database (checkpoint.hpp).
#pragma once

#include "controller/evidence/digest.hpp"

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace bulkhead::evidence {

enum class Stream : std::uint8_t { Drops, Incidents, Quarantines, Audit };
inline constexpr std::array kStreams{Stream::Drops, Stream::Incidents, Stream::Quarantines, Stream::Audit};
std::string_view to_string(Stream stream);
std::optional<Stream> stream_from_string(std::string_view name);

// Where a chain stands: its last record's sequence number and hash. {0, all zeros} is the
// empty chain, the "previous" of record 1.
struct ChainHead {
    std::uint64_t sequence = 0;
    Digest hash{};
    bool operator==(const ChainHead&) const = default;
};

// SHA-256 over "bulkhead-evidence-v1", the stream's name, the sequence number, the previous
// record's hash and the record's canonical bytes (fields separated so that no two different
// inputs encode alike).
Digest link_hash(Sha256& hasher, Stream stream, std::uint64_t sequence, const Digest& previous,
                 std::string_view record);

struct ChainLink {
    std::uint64_t sequence = 0;
    Digest previous{};
    Digest hash{};
};

// Extends a stream's chain as records are stored; the store keeps each link beside its record.
class ChainAppender {
public:
    explicit ChainAppender(Stream stream, ChainHead head = {}) : stream_(stream), head_(head) {}
    ChainLink append(std::string_view record);
    const ChainHead& head() const { return head_; }
    Stream stream() const { return stream_; }

private:
    Stream stream_;
    ChainHead head_;
    Sha256 hasher_;
};

// A record as the store lists it, with the link stored beside it.
struct StoredRecord {
    std::uint64_t sequence = 0;
    Digest previous{};
    Digest hash{};
    std::string_view record;
};

enum class BreakKind {
    Altered,             // the record does not hash to its stored hash
    Missing,             // a sequence number is absent: records deleted
    OutOfOrder,          // a sequence number repeats or goes back
    BrokenLink,          // consistent in itself, but not linked to the record before it
    CheckpointMismatch,  // the chain disagrees with a signed checkpoint: rewritten
    Truncated,           // a signed checkpoint names records the store no longer has
};
std::string_view to_string(BreakKind kind);

struct ChainBreak {
    Stream stream = Stream::Drops;
    std::uint64_t sequence = 0;  // the first broken record (for Missing: the first absent one)
    BreakKind kind = BreakKind::Altered;
    std::string detail;
};
// "drops #1234: altered: ..." — one line for a report or an error message.
std::string describe(const ChainBreak& broken);

// Walks one stream's records in sequence order. Keeps the first break; records after it are
// not judged (one broken link would make every later one look broken too).
class ChainVerifier {
public:
    // `start`: the head before the first record fed — the empty chain to verify from the
    // beginning, or the link before a range.
    explicit ChainVerifier(Stream stream, ChainHead start = {})
        : stream_(stream), head_(start), last_confirmed_(start.sequence) {}

    // A head this stream must pass through, from a signed checkpoint kept elsewhere;
    // `origin` says which (e.g. "checkpoint 2026-12-07T01:02:03Z in checkpoints.jsonl").
    void expect(const ChainHead& checkpoint_head, std::string origin);
    // Verifying part of a range: the last record a checkpoint confirmed before this part
    // (a checkpoint mismatch names the span since then).
    void confirmed_through(std::uint64_t sequence) { last_confirmed_ = sequence; }

    // The next stored record. False once the chain is broken (the caller may stop reading).
    bool feed(const StoredRecord& record);

    // After the last record: a checkpoint naming records beyond it is a truncation. The
    // first break, if any.
    std::optional<ChainBreak> finish();

    std::uint64_t verified() const { return verified_; }
    const ChainHead& head() const { return head_; }
    const std::optional<ChainBreak>& broken() const { return broken_; }

private:
    void fail(std::uint64_t sequence, BreakKind kind, std::string detail);

    Stream stream_;
    ChainHead head_;
    std::uint64_t verified_ = 0;
    std::uint64_t last_confirmed_ = 0;  // the last record a checkpoint confirmed
    std::multimap<std::uint64_t, std::pair<Digest, std::string>> expected_;
    std::optional<ChainBreak> broken_;
    Sha256 hasher_;
};

}  // namespace bulkhead::evidence
