// The columnar encoding of one block of archived events, before compression: each StoredEvent
// column is its own stream (integers as zig-zag deltas, strings dictionary-coded), and each
// document is split into a template (keys, punctuation, literals) and value slots stored per
// (template, slot). Lossless byte for byte: the chain hash covers these bytes. Pure: bytes in,
// bytes out. README.md in this folder documents the layout.
#pragma once

#include "controller/evidence/digest.hpp"
#include "controller/evidence/evidence_records.hpp"

#include "controller/domain/events.hpp"

#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bulkhead::archive {

// One record handed to the encoder. The event's id is implicit (the block's first id plus its
// position), so it is not read; `document` is the exact text the chain hashed.
struct BlockRecord {
    const controller::StoredEvent* event = nullptr;
    std::string_view document;
    std::uint16_t link_check = 0;  // the first two bytes of the record's link hash
};

// The raw (uncompressed) block bytes.
std::string encode_block(std::span<const BlockRecord> records);

struct DecodedBlock {
    // ids first_id, first_id+1, ...; document_text filled, `document` left null.
    std::vector<controller::StoredEvent> events;
    std::vector<std::uint16_t> link_checks;
    // The records' chain links, recomputed by the reader from the link before the block (the
    // header's previous hash, or the signed index's last link of the block before), so that
    // blocks are hashed on every core at once.
    std::vector<evidence::Digest> links;
    // The RFC 6962 subtree over `links` when their count is a power of two, so that the
    // verifier's Merkle root is built on the workers too (the walking thread adds subtrees).
    std::optional<evidence::Digest> links_subtree;
};

// `expected_count` comes from the segment index; a block that disagrees is corrupt. The error
// names the stream that failed.
std::expected<DecodedBlock, std::string> decode_block(std::string_view raw, std::int64_t first_id,
                                                      std::size_t expected_count);

// The StoredEvent a decoded record stands for (document_text filled, document left null).
controller::StoredEvent stored_event_of(std::int64_t id, const evidence::EventRecordFields& fields);

// Decodes blocks without building a StoredEvent per record: each record is handed to the
// visitor as the chain's canonical fields, views into the decoder's own buffers (valid during
// the call). Verification only hashes records, and a StoredEvent of strings cost more than the
// rest of decoding and hashing together. One decoder per thread; its buffers are reused from
// block to block.
class BlockDecoder {
public:
    BlockDecoder();
    ~BlockDecoder();
    BlockDecoder(const BlockDecoder&) = delete;
    BlockDecoder& operator=(const BlockDecoder&) = delete;

    // visit(position in the block, the record's fields, its stored link check), in order.
    using Visitor = std::function<void(std::size_t, const evidence::EventRecordFields&, std::uint16_t)>;
    std::expected<void, std::string> decode(std::string_view raw, std::int64_t first_id, std::size_t expected_count,
                                            const Visitor& visit);

private:
    struct Buffers;
    std::unique_ptr<Buffers> buffers_;
};

// The first two bytes of a link hash, big-endian: what a block keeps per record so that the
// verifier can name the first record whose recomputed link differs.
inline std::uint16_t link_check_of(std::span<const std::uint8_t, 32> hash) {
    return static_cast<std::uint16_t>((hash[0] << 8) | hash[1]);
}

// Exposed for tests: RFC 3339 UTC text of a nanosecond time with 6 (as the enforcer's
// format_time_utc writes it) or 9 fraction digits; empty outside years 0000..9999.
std::string rfc3339_utc(std::int64_t unix_ns, int fraction_digits);

}  // namespace bulkhead::archive
