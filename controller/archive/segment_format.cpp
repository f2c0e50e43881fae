#include "controller/archive/segment_format.hpp"

#include "controller/evidence/merkle_tree.hpp"

#include "controller/archive/byte_io.hpp"

#include <unordered_set>

namespace bulkhead::archive {

namespace {

constexpr std::uint8_t kFilterHashes = 7;      // with 10 bits per key: about 1% false positives
constexpr std::uint32_t kFilterBitsPerKey = 10;

// FNV-1a, 64 bits: stable, specified in two lines (README), fast on short keys.
std::uint64_t fnv1a(char kind, std::string_view key) {
    std::uint64_t hash = 0xcbf29ce484222325ULL;
    auto mix = [&](unsigned char byte) {
        hash ^= byte;
        hash *= 0x100000001b3ULL;
    };
    mix(static_cast<unsigned char>(kind));
    for (const char c : key) {
        mix(static_cast<unsigned char>(c));
    }
    return hash;
}

// Double hashing (Kirsch–Mitzenmacher): bit i = (h1 + i*h2) mod m.
template <typename Visit>
void filter_bits(std::uint64_t hash, std::uint32_t bit_count, std::uint8_t hash_count, Visit visit) {
    const std::uint64_t h1 = hash & 0xffffffffULL;
    const std::uint64_t h2 = (hash >> 32) | 1;
    for (std::uint64_t i = 0; i < hash_count; ++i) {
        visit(static_cast<std::uint32_t>((h1 + i * h2) % bit_count));
    }
}

bool filter_may_contain(const BlockFilter& filter, char kind, std::string_view key) {
    if (filter.bit_count == 0) {
        return false;  // the block holds no keys at all
    }
    if (filter.bits.size() * 8 != filter.bit_count || filter.hash_count == 0) {
        return true;  // a filter we cannot read excludes nothing
    }
    bool all = true;
    filter_bits(fnv1a(kind, key), filter.bit_count, filter.hash_count, [&](std::uint32_t bit) {
        all = all && (static_cast<std::uint8_t>(filter.bits[bit / 8]) & (1U << (bit % 8))) != 0;
    });
    return all;
}

}  // namespace

bool BlockFilter::may_contain_workload(std::string_view workload) const {
    return filter_may_contain(*this, 'w', workload);
}
bool BlockFilter::may_contain_address(std::string_view address) const {
    return filter_may_contain(*this, 'a', address);
}

namespace format {

std::size_t header_size(evidence::Stream stream) {
    return kHeaderPrefixSize + 1 + evidence::to_string(stream).size() + 3 * 8 + 2 * 32 + 3 * 8 + 2 * 4 + 3 * 8;
}

std::string encode_header(const ArchiveHeader& h) {
    std::string out;
    const auto name = evidence::to_string(h.stream);
    out += kSegmentMagic;
    bytes::put_u16(out, h.version);
    bytes::put_u16(out, static_cast<std::uint16_t>(header_size(h.stream)));
    bytes::put_u8(out, static_cast<std::uint8_t>(name.size()));
    out += name;
    bytes::put_u64(out, h.first_sequence);
    bytes::put_u64(out, h.last_sequence);
    bytes::put_u64(out, h.record_count);
    out.append(reinterpret_cast<const char*>(h.previous_hash.data()), h.previous_hash.size());
    out.append(reinterpret_cast<const char*>(h.last_hash.data()), h.last_hash.size());
    bytes::put_i64(out, h.min_time_ns);
    bytes::put_i64(out, h.max_time_ns);
    bytes::put_i64(out, h.created_ns);
    bytes::put_u32(out, h.block_records);
    bytes::put_u32(out, h.block_count);
    bytes::put_u64(out, h.index_offset);
    bytes::put_u64(out, h.index_length);
    bytes::put_u64(out, h.file_length);
    return out;
}

std::expected<ArchiveHeader, std::string> parse_header(std::string_view bytes_in) {
    bytes::Reader r(bytes_in);
    ArchiveHeader h;
    std::string_view magic, name;
    std::uint16_t header_length = 0;
    std::uint8_t name_length = 0;
    if (!r.fixed(8, magic) || magic != kSegmentMagic) {
        return std::unexpected("bad magic");
    }
    r.u16(h.version);
    r.u16(header_length);
    r.u8(name_length);
    r.fixed(name_length, name);
    r.u64(h.first_sequence);
    r.u64(h.last_sequence);
    r.u64(h.record_count);
    r.array(h.previous_hash);
    r.array(h.last_hash);
    r.i64(h.min_time_ns);
    r.i64(h.max_time_ns);
    r.i64(h.created_ns);
    r.u32(h.block_records);
    r.u32(h.block_count);
    r.u64(h.index_offset);
    r.u64(h.index_length);
    r.u64(h.file_length);
    if (!r.ok() || !r.at_end()) {
        return std::unexpected("header does not parse");
    }
    const auto stream = evidence::stream_from_string(name);
    if (!stream) {
        return std::unexpected("unknown stream '" + std::string(name) + "'");
    }
    h.stream = *stream;
    if (header_length != bytes_in.size()) {
        return std::unexpected("header length field disagrees with its fields");
    }
    return h;
}

std::string encode_index(std::span<const ArchiveBlockInfo> blocks) {
    std::string out;
    out += kIndexMagic;
    bytes::put_varint(out, blocks.size());
    for (const auto& b : blocks) {
        bytes::put_u64(out, b.offset);
        bytes::put_u32(out, b.compressed_length);
        bytes::put_u32(out, b.raw_length);
        bytes::put_u64(out, b.first_sequence);
        bytes::put_u32(out, b.record_count);
        bytes::put_i64(out, b.min_time_ns);
        bytes::put_i64(out, b.max_time_ns);
        out.append(reinterpret_cast<const char*>(b.last_link.data()), b.last_link.size());
        bytes::put_u32(out, b.filter.bit_count);
        bytes::put_u8(out, b.filter.hash_count);
        out += b.filter.bits;
    }
    return out;
}

std::expected<std::vector<ArchiveBlockInfo>, std::string> parse_index(std::string_view bytes_in) {
    bytes::Reader r(bytes_in);
    std::string_view magic;
    std::uint64_t count = 0;
    if (!r.fixed(8, magic) || magic != kIndexMagic) {
        return std::unexpected("index magic missing");
    }
    if (!r.varint(count) || count > bytes_in.size()) {
        return std::unexpected("index block count does not parse");
    }
    std::vector<ArchiveBlockInfo> blocks(static_cast<std::size_t>(count));
    for (auto& b : blocks) {
        r.u64(b.offset);
        r.u32(b.compressed_length);
        r.u32(b.raw_length);
        r.u64(b.first_sequence);
        r.u32(b.record_count);
        r.i64(b.min_time_ns);
        r.i64(b.max_time_ns);
        r.array(b.last_link);
        r.u32(b.filter.bit_count);
        r.u8(b.filter.hash_count);
        std::string_view bits;
        if (b.filter.bit_count % 64 != 0 || !r.fixed(b.filter.bit_count / 8, bits)) {
            return std::unexpected("index entry does not parse");
        }
        b.filter.bits = bits;
    }
    if (!r.ok() || !r.at_end()) {
        return std::unexpected("index does not parse");
    }
    return blocks;
}

std::string encode_seal(const ArchiveSeal& seal) {
    std::string out;
    out.append(reinterpret_cast<const char*>(seal.merkle_root.data()), seal.merkle_root.size());
    std::string key_id = seal.key_id;
    key_id.resize(16, ' ');
    out += key_id;
    out.append(reinterpret_cast<const char*>(seal.signature.data()), seal.signature.size());
    return out;
}

std::expected<ArchiveSeal, std::string> parse_seal(std::string_view bytes_in) {
    bytes::Reader r(bytes_in);
    ArchiveSeal seal;
    std::string_view key_id;
    r.array(seal.merkle_root);
    r.fixed(16, key_id);
    r.array(seal.signature);
    if (!r.ok() || !r.at_end()) {
        return std::unexpected("seal does not parse");
    }
    seal.key_id = key_id;
    return seal;
}

std::string encode_trailer(const Trailer& t) {
    std::string out;
    bytes::put_u64(out, t.index_offset);
    bytes::put_u64(out, t.index_length);
    out.append(reinterpret_cast<const char*>(t.index_digest.data()), t.index_digest.size());
    out += kTrailerMagic;
    return out;
}

std::expected<Trailer, std::string> parse_trailer(std::string_view bytes_in) {
    bytes::Reader r(bytes_in);
    Trailer t;
    std::string_view magic;
    r.u64(t.index_offset);
    r.u64(t.index_length);
    r.array(t.index_digest);
    if (!r.fixed(8, magic) || magic != kTrailerMagic || !r.at_end()) {
        return std::unexpected("trailer magic missing");
    }
    return t;
}

std::string seal_signed_bytes(std::string_view header_bytes, const evidence::Digest& index_digest,
                              const evidence::Digest& merkle_root, std::string_view key_id) {
    std::string out = "bulkhead-archive-seal-v1\n";
    out += header_bytes;
    out.append(reinterpret_cast<const char*>(index_digest.data()), index_digest.size());
    out.append(reinterpret_cast<const char*>(merkle_root.data()), merkle_root.size());
    out += key_id;
    return out;
}

BlockFilter build_filter(std::span<const controller::StoredEvent> events) {
    std::unordered_set<std::uint64_t> keys;
    for (const auto& e : events) {
        if (!e.workload.empty()) {
            keys.insert(fnv1a('w', e.workload));
        }
        keys.insert(fnv1a('a', e.src));
        keys.insert(fnv1a('a', e.dst));
    }
    BlockFilter filter;
    if (keys.empty()) {
        return filter;
    }
    filter.bit_count = static_cast<std::uint32_t>((keys.size() * kFilterBitsPerKey + 63) / 64 * 64);
    filter.hash_count = kFilterHashes;
    filter.bits.assign(filter.bit_count / 8, '\0');
    for (const auto hash : keys) {
        filter_bits(hash, filter.bit_count, filter.hash_count, [&](std::uint32_t bit) {
            filter.bits[bit / 8] = static_cast<char>(static_cast<std::uint8_t>(filter.bits[bit / 8]) | (1U << (bit % 8)));
        });
    }
    return filter;
}

void MerkleAccumulator::add(const evidence::Digest& link_hash) {
    add_subtree(evidence::merkle_leaf_hash(hasher_, link_hash), 1);
}

void MerkleAccumulator::add_subtree(const evidence::Digest& subtree_root, std::uint64_t leaves) {
    Subtree node{subtree_root, leaves};
    while (!stack_.empty() && stack_.back().leaves == node.leaves) {
        node.hash = evidence::merkle_node_hash(hasher_, stack_.back().hash, node.hash);
        node.leaves *= 2;
        stack_.pop_back();
    }
    stack_.push_back(node);
    count_ += leaves;
}

// RFC 6962 splits n leaves at the largest power of two below n: the complete subtrees on the
// stack, folded from the right, are exactly that tree.
evidence::Digest MerkleAccumulator::root() {
    if (stack_.empty()) {
        return evidence::Sha256::of("");
    }
    evidence::Digest acc = stack_.back().hash;
    for (std::size_t i = stack_.size() - 1; i-- > 0;) {
        acc = evidence::merkle_node_hash(hasher_, stack_[i].hash, acc);
    }
    return acc;
}

}  // namespace format
}  // namespace bulkhead::archive
