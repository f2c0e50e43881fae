// Archive segments: a period of one evidence stream's drop events moved out of the database
// into an append-only file — compressed blocks of records, an index that lets a time range,
// a workload or an address skip blocks, and a seal (the Merkle root of the records' chain
// links, signed with the controller's Ed25519 key). README.md in this folder gives the byte
// layout and the measurements behind the choices.
//
// Encoding is pure (ArchiveSegmentWriter::seal_to_bytes, the reader over bytes); the file is
// the edge: seal() writes path.tmp, fsyncs, links it into place and fsyncs the directory, and
// the reader reads only the header, index and the blocks a query needs.
#pragma once

#include "controller/domain/events.hpp"
#include "controller/evidence/checkpoint.hpp"
#include "controller/evidence/hash_chain.hpp"

#include <cstdint>
#include <expected>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bulkhead::archive {

enum class ArchiveErrorKind {
    Io,                  // the file system refused (open, read, write, fsync, rename)
    BadMagic,            // not an archive segment
    UnsupportedVersion,  // a segment from a newer (or unknown) format version
    Truncated,           // shorter than its header says
    IndexChecksum,       // the index does not match the checksum in the trailer
    Corrupt,             // a structure that does not parse (header, index, trailer, a block)
    OutOfSequence,       // writer: a record that does not follow the previous one
    Sealed,              // writer: append or seal after seal
    Empty,               // writer: nothing to seal
    KeyMismatch,         // verify: sealed with another key than the one given
    BadSignature,        // verify: the signature does not cover this header, index and root
    RootMismatch,        // verify: the records' Merkle root differs from the sealed one
    LastHashMismatch,    // verify: the records end at another link than the header says
};
std::string_view to_string(ArchiveErrorKind kind);

struct ArchiveError {
    ArchiveErrorKind kind = ArchiveErrorKind::Corrupt;
    std::string message;  // one line, naming the segment and what is wrong
};

inline constexpr std::uint16_t kArchiveFormatVersion = 1;

struct ArchiveHeader {
    std::uint16_t version = kArchiveFormatVersion;
    evidence::Stream stream = evidence::Stream::Drops;
    std::uint64_t first_sequence = 0;
    std::uint64_t last_sequence = 0;
    std::uint64_t record_count = 0;
    evidence::Digest previous_hash{};  // the link before the first record
    evidence::Digest last_hash{};      // the last record's link
    std::int64_t min_time_ns = 0;
    std::int64_t max_time_ns = 0;
    std::int64_t created_ns = 0;       // when the segment was sealed (CLOCK_REALTIME)
    std::uint32_t block_records = 0;   // records per block (the last block may hold fewer)
    std::uint32_t block_count = 0;
    std::uint64_t index_offset = 0;
    std::uint64_t index_length = 0;
    std::uint64_t file_length = 0;
};

// A bloom filter over a block's workloads and addresses (src and dst); no false negatives.
struct BlockFilter {
    std::uint32_t bit_count = 0;  // a multiple of 64; 0: the block has no keys
    std::uint8_t hash_count = 0;
    std::string bits;             // bit_count / 8 bytes, bit i in byte i/8, mask 1 << (i%8)
    bool may_contain_workload(std::string_view workload) const;
    bool may_contain_address(std::string_view address) const;
};

struct ArchiveBlockInfo {
    std::uint64_t offset = 0;  // in the file
    std::uint32_t compressed_length = 0;
    std::uint32_t raw_length = 0;
    std::uint64_t first_sequence = 0;
    std::uint32_t record_count = 0;
    std::int64_t min_time_ns = 0;
    std::int64_t max_time_ns = 0;
    evidence::Digest last_link{};  // the link of the block's last record
    BlockFilter filter;
};

struct ArchiveSeal {
    evidence::Digest merkle_root{};
    std::string key_id;  // evidence::key_id of the signing key: 16 hex digits
    evidence::Signature signature{};
};

struct ArchiveWriterOptions {
    std::uint32_t block_records = 4096;  // at most 2^20 (readers refuse larger blocks)
    int zstd_level = 19;
    bool long_distance_matching = false;
    std::int64_t created_ns = 0;  // 0: seal() reads CLOCK_REALTIME
};

// Collects one stream's records in sequence order and seals them into a segment.
class ArchiveSegmentWriter {
public:
    // `previous`: the chain head before the first record to archive (its sequence + 1 is the
    // first id accepted; its hash goes into the header for the verifier to start from).
    explicit ArchiveSegmentWriter(evidence::Stream stream, evidence::ChainHead previous,
                                  ArchiveWriterOptions options = {});
    ~ArchiveSegmentWriter();
    ArchiveSegmentWriter(ArchiveSegmentWriter&&) noexcept;
    ArchiveSegmentWriter& operator=(ArchiveSegmentWriter&&) noexcept;

    // `link_hash` is the record's chain link as the store keeps it: the writer trusts it for
    // the Merkle root and the last hash (the verifier recomputes every one). The event's id
    // must be the next sequence number: a gap or a step back is refused.
    std::expected<void, ArchiveError> append(const controller::StoredEvent& event, std::string_view document_text,
                                             const evidence::Digest& link_hash);

    // The whole sealed segment as bytes (pure: options.created_ns is written as given).
    std::expected<std::string, ArchiveError> seal_to_bytes(const evidence::SigningKey& key);
    // seal_to_bytes, then path.tmp, fsync, link to `path` (never replacing an existing
    // segment), fsync the directory.
    std::expected<void, ArchiveError> seal(const evidence::SigningKey& key, const std::filesystem::path& path);

    std::uint64_t record_count() const;
    evidence::ChainHead head() const;

private:
    struct State;
    std::unique_ptr<State> state_;
};

struct ArchiveQuery {
    std::optional<std::int64_t> from_ns, to_ns;  // kernel time range, [from, to)
    std::optional<std::string> workload;
    std::optional<std::string> address;          // src or dst
    std::optional<std::int64_t> after_id;        // paging: ids greater than this
    std::optional<std::int64_t> through_id;      // ids up to and including this
    std::size_t limit = 1000;                    // 0: no limit
};

// A record with the link the reader recomputed for it (from the header's previous hash).
struct ArchivedRecord {
    const controller::StoredEvent& event;  // document_text filled, document left null
    evidence::ChainLink link;
};

struct ArchiveVerification {
    std::uint64_t records_verified = 0;
    evidence::ChainHead head;                   // where the chain stands after the segment
    std::optional<evidence::ChainBreak> broken; // the first record that breaks the chain
};

// Where a reader reads bytes from: a file (pread) or memory (tests, tools).
class SegmentSource {
public:
    virtual ~SegmentSource() = default;
    virtual std::uint64_t size() const = 0;
    // Exactly `length` bytes at `offset` into `out`, a buffer the caller may reuse (a verify
    // reads every block: a fresh string per block cost page faults), or an error text.
    virtual std::expected<void, std::string> read_into(std::uint64_t offset, std::size_t length,
                                                       std::string& out) const = 0;
    // The same into a new string.
    std::expected<std::string, std::string> read(std::uint64_t offset, std::size_t length) const {
        std::string out;
        if (auto done = read_into(offset, length, out); !done) {
            return std::unexpected(done.error());
        }
        return out;
    }
};

class ArchiveSegmentReader {
public:
    // Reads and checks the header, trailer and index (not the blocks): a truncated file, a
    // foreign file, a newer version or a damaged index is refused here with a precise error.
    static std::expected<ArchiveSegmentReader, ArchiveError> open(const std::filesystem::path& path);
    static std::expected<ArchiveSegmentReader, ArchiveError> from_bytes(std::string bytes, std::string name);
    static std::expected<ArchiveSegmentReader, ArchiveError> from_source(std::unique_ptr<SegmentSource> source,
                                                                         std::string name);
    ~ArchiveSegmentReader();
    ArchiveSegmentReader(ArchiveSegmentReader&&) noexcept;
    ArchiveSegmentReader& operator=(ArchiveSegmentReader&&) noexcept;

    const ArchiveHeader& header() const;
    const std::vector<ArchiveBlockInfo>& blocks() const;
    const ArchiveSeal& seal() const;

    // Matching records in id order, decoding only the blocks the index says may match.
    // `document` is left null: callers that need the DOM parse document_text.
    std::expected<std::vector<controller::StoredEvent>, ArchiveError> scan(const ArchiveQuery& query) const;

    // Every record in order with its recomputed link, so that a caller can carry a chain
    // verification across segments and into the database. `visit` returns false to stop.
    // Returns the head after the last record visited. No check here beyond decoding: verify()
    // is the judge.
    std::expected<evidence::ChainHead, ArchiveError> for_each_record(
        const std::function<bool(const ArchivedRecord&)>& visit) const;

    // Recomputes every record's canonical bytes and link from the header's previous hash,
    // compares each against the link check its block keeps and each block's last link against
    // the index, then the last hash, the Merkle root and the signature. A broken record comes
    // back as `broken`; a segment-level failure as the error.
    std::expected<ArchiveVerification, ArchiveError> verify(const evidence::PublicKey& key) const;

    // Blocks decompressed and decoded since open (what the index saved is what this is not).
    // A reader serves one call at a time (scan, for_each_record and verify share its state);
    // verify's decoding thread is its own.
    std::uint64_t blocks_decoded() const;

private:
    struct State;
    explicit ArchiveSegmentReader(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

}  // namespace bulkhead::archive
