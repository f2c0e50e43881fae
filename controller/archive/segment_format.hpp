// The byte layout of a segment's header, index, seal and trailer (README.md, "Segment
// format"), the block filter's hashing, the streaming Merkle root and the bytes the seal
// signs. Pure; internal to bulkhead_archive.
#pragma once

#include "controller/archive/archive_segment.hpp"
#include "controller/evidence/digest.hpp"
#include "controller/evidence/digest.hpp"

#include <cstdint>
#include <expected>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bulkhead::archive::format {

inline constexpr std::string_view kSegmentMagic = "BHARCSEG";
inline constexpr std::string_view kIndexMagic = "BHARCIDX";
inline constexpr std::string_view kTrailerMagic = "BHARCEND";
inline constexpr std::size_t kHeaderPrefixSize = 12;  // magic, version, header length
inline constexpr std::size_t kSealSize = 32 + 16 + 64;
inline constexpr std::size_t kTrailerSize = 8 + 8 + 32 + 8;

std::size_t header_size(evidence::Stream stream);
std::string encode_header(const ArchiveHeader& header);
// `bytes`: the whole header (its length is in the prefix). Errors are texts; the reader
// prefixes the segment's name and picks the kind.
std::expected<ArchiveHeader, std::string> parse_header(std::string_view bytes);

std::string encode_index(std::span<const ArchiveBlockInfo> blocks);
std::expected<std::vector<ArchiveBlockInfo>, std::string> parse_index(std::string_view bytes);

std::string encode_seal(const ArchiveSeal& seal);
std::expected<ArchiveSeal, std::string> parse_seal(std::string_view bytes);

struct Trailer {
    std::uint64_t index_offset = 0;
    std::uint64_t index_length = 0;
    evidence::Digest index_digest{};
};
std::string encode_trailer(const Trailer& trailer);
std::expected<Trailer, std::string> parse_trailer(std::string_view bytes);

// What the Ed25519 signature covers: a domain line, the header's exact bytes, the index's
// SHA-256, the Merkle root and the key id.
std::string seal_signed_bytes(std::string_view header_bytes, const evidence::Digest& index_digest,
                              const evidence::Digest& merkle_root, std::string_view key_id);

// The block filter over a block's workloads and addresses.
BlockFilter build_filter(std::span<const controller::StoredEvent> events);

// RFC 6962's Merkle tree hash (evidence::merkle_root) computed as leaves arrive, in
// O(log n) memory: a year of records need not be held to seal or verify a segment.
class MerkleAccumulator {
public:
    void add(const evidence::Digest& link_hash);
    // A complete subtree of `leaves` leaves (a power of two) whose first leaf is the next one,
    // at a multiple of `leaves`: exactly what adding those leaves one by one would give, so
    // that blocks of 2^k records are hashed on the workers that decode them.
    void add_subtree(const evidence::Digest& subtree_root, std::uint64_t leaves);
    // Whether add_subtree may take a subtree of `leaves` leaves now.
    bool takes_subtree(std::uint64_t leaves) const {
        return leaves != 0 && (leaves & (leaves - 1)) == 0 && count_ % leaves == 0;
    }
    evidence::Digest root();
    std::uint64_t count() const { return count_; }

private:
    struct Subtree {
        evidence::Digest hash;
        std::uint64_t leaves;
    };
    std::vector<Subtree> stack_;  // complete subtrees, largest first
    std::uint64_t count_ = 0;
    evidence::Sha256 hasher_;
};

}  // namespace bulkhead::archive::format
