#include "controller/archive/archive_segment.hpp"

#include "controller/archive/block_codec.hpp"
#include "controller/archive/byte_io.hpp"
#include "controller/archive/segment_file.hpp"
#include "controller/archive/segment_format.hpp"
#include "controller/evidence/evidence_records.hpp"

#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

namespace bulkhead::archive {

namespace {

struct DecompressionContextDeleter {
    void operator()(ZSTD_DCtx* context) const { ZSTD_freeDCtx(context); }
};

constexpr std::uint32_t kMaxBlockRecords = 1U << 20;
constexpr std::uint32_t kMaxBlockRawBytes = 1U << 30;

std::string hex16(std::uint16_t value) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out = "0x";
    for (int shift = 12; shift >= 0; shift -= 4) {
        out += digits[(value >> shift) & 0xf];
    }
    return out;
}

std::string record_range(const ArchiveBlockInfo& block) {
    return "#" + std::to_string(block.first_sequence) + "..#" +
           std::to_string(block.first_sequence + block.record_count - 1);
}

}  // namespace

struct ArchiveSegmentReader::State {
    std::string name;
    std::unique_ptr<SegmentSource> source;
    std::string header_bytes;
    ArchiveHeader header;
    std::vector<ArchiveBlockInfo> blocks;
    ArchiveSeal seal;
    evidence::Digest index_digest{};
    mutable std::unique_ptr<ZSTD_DCtx, DecompressionContextDeleter> decompressor{ZSTD_createDCtx()};
    mutable std::atomic<std::uint64_t> blocks_decoded = 0;

    ArchiveError error(ArchiveErrorKind kind, const std::string& text) const {
        return ArchiveError{kind, "segment " + name + ": " + text};
    }

    std::expected<DecodedBlock, ArchiveError> read_block(std::size_t index) const {
        std::string compressed, raw;
        if (auto read = read_raw(index, decompressor.get(), compressed, raw); !read) {
            return std::unexpected(read.error());
        }
        const auto& block = blocks[index];
        auto decoded = decode_block(raw, static_cast<std::int64_t>(block.first_sequence), block.record_count);
        if (!decoded) {
            return std::unexpected(error(ArchiveErrorKind::Corrupt, where(index) + ": " + decoded.error()));
        }
        ++blocks_decoded;
        return std::move(*decoded);
    }

    std::string where(std::size_t index) const {
        return "block " + std::to_string(index) + " (records " + record_range(blocks[index]) + ")";
    }

    // Reads and decompresses block `index` into `raw` (both buffers are the caller's, reused).
    std::expected<void, ArchiveError> read_raw(std::size_t index, ZSTD_DCtx* context, std::string& compressed,
                                               std::string& raw) const {
        const auto& block = blocks[index];
        if (auto read = source->read_into(block.offset, block.compressed_length, compressed); !read) {
            return std::unexpected(error(ArchiveErrorKind::Io, where(index) + ": " + read.error()));
        }
        raw.resize(block.raw_length);
        const std::size_t size =
            ZSTD_decompressDCtx(context, raw.data(), raw.size(), compressed.data(), compressed.size());
        if (ZSTD_isError(size)) {
            return std::unexpected(
                error(ArchiveErrorKind::Corrupt, where(index) + ": zstd: " + ZSTD_getErrorName(size)));
        }
        if (size != raw.size()) {
            return std::unexpected(error(ArchiveErrorKind::Corrupt, where(index) + ": decompresses to " +
                                                                        std::to_string(size) + " bytes, the index says " +
                                                                        std::to_string(raw.size())));
        }
        return {};
    }

    // Walks every record with its recomputed link. on_record(event, link, stored_check) and
    // on_block_end(block index, last link) return false to stop.
    // `keep_events`: hand each record's StoredEvent to on_record (else a null pointer: verify
    // needs only the links, and decodes faster without building events).
    template <typename OnRecord, typename OnBlockEnd>
    std::expected<evidence::ChainHead, ArchiveError> walk(bool keep_events, OnRecord&& on_record,
                                                          OnBlockEnd&& on_block_end) const;

    class BlockPipeline;
};

// Decodes a segment's blocks on worker threads (each with its own zstd context) at most a
// window ahead of the walking thread, which takes them in order. Each worker also computes its
// block's chain links from the link before the block (in the signed index), so decoding and
// hashing spread over every core; the walking thread compares each block's last link with the
// index and hands the records out in order.
class ArchiveSegmentReader::State::BlockPipeline {
public:
    BlockPipeline(const State& state, bool keep_events)
        : state_(state), keep_events_(keep_events), window_(2 * worker_count()), ready_(window_) {
        for (std::size_t w = 0; w < worker_count(); ++w) {
            workers_.emplace_back([this] { run(); });
        }
    }
    ~BlockPipeline() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        changed_.notify_all();
        for (auto& worker : workers_) {
            worker.join();
        }
    }
    BlockPipeline(const BlockPipeline&) = delete;
    BlockPipeline& operator=(const BlockPipeline&) = delete;

    // Block `consumed_` (the next in order).
    std::expected<DecodedBlock, ArchiveError> next() {
        std::unique_lock lock(mutex_);
        auto& slot = ready_[consumed_ % window_];
        changed_.wait(lock, [&] { return slot.has_value(); });
        auto block = std::move(*slot);
        slot.reset();
        ++consumed_;
        changed_.notify_all();
        return block;
    }

private:
    static std::size_t worker_count() {
        const unsigned cores = std::thread::hardware_concurrency();
        // Decoding and hashing are the workers'; the walking thread only compares: one per core.
        return std::clamp<std::size_t>(cores, 1, 4);
    }

    void run() {
        std::unique_ptr<ZSTD_DCtx, DecompressionContextDeleter> context{ZSTD_createDCtx()};
        evidence::Sha256 hasher;
        BlockDecoder decoder;
        std::string record_bytes, compressed, raw;
        for (;;) {
            std::size_t block = 0;
            {
                std::unique_lock lock(mutex_);
                changed_.wait(lock, [&] { return stopping_ || claimed_ >= state_.blocks.size() || claimed_ < consumed_ + window_; });
                if (stopping_ || claimed_ >= state_.blocks.size()) {
                    return;
                }
                block = claimed_++;
            }
            // The links of this block, from the link before it: the walking thread only
            // compares them, so hashing spreads over the workers like decoding.
            evidence::Digest previous = block == 0 ? state_.header.previous_hash : state_.blocks[block - 1].last_link;
            auto link = [&](std::int64_t id, const evidence::EventRecordFields& fields) {
                record_bytes.clear();
                evidence::append_event_record(record_bytes, fields);
                previous = evidence::link_hash(hasher, state_.header.stream, static_cast<std::uint64_t>(id), previous,
                                               record_bytes);
                return previous;
            };
            std::expected<DecodedBlock, ArchiveError> decoded;
            if (auto read = state_.read_raw(block, context.get(), compressed, raw); !read) {
                decoded = std::unexpected(read.error());
            } else {
                const auto& info = state_.blocks[block];
                const auto first_id = static_cast<std::int64_t>(info.first_sequence);
                decoded->links.resize(info.record_count);
                decoded->link_checks.resize(info.record_count);
                if (keep_events_) {
                    decoded->events.resize(info.record_count);
                }
                auto done = decoder.decode(raw, first_id, info.record_count,
                                           [&](std::size_t i, const evidence::EventRecordFields& fields,
                                               std::uint16_t check) {
                                               const auto id = first_id + static_cast<std::int64_t>(i);
                                               decoded->links[i] = link(id, fields);
                                               decoded->link_checks[i] = check;
                                               if (keep_events_) {
                                                   decoded->events[i] = stored_event_of(id, fields);
                                               }
                                           });
                if (!done) {
                    decoded = std::unexpected(state_.error(ArchiveErrorKind::Corrupt,
                                                           state_.where(block) + ": " + done.error()));
                } else {
                    ++state_.blocks_decoded;
                    // Only verify folds the Merkle root (for_each_record keeps the events).
                    const std::uint64_t count = info.record_count;
                    if (!keep_events_ && (count & (count - 1)) == 0) {
                        format::MerkleAccumulator subtree;
                        for (const auto& l : decoded->links) {
                            subtree.add(l);
                        }
                        decoded->links_subtree = subtree.root();
                    }
                }
            }
            std::lock_guard lock(mutex_);
            ready_[block % window_] = std::move(decoded);
            changed_.notify_all();
        }
    }

    const State& state_;
    const bool keep_events_;
    const std::size_t window_;
    std::mutex mutex_;
    std::condition_variable changed_;
    std::vector<std::optional<std::expected<DecodedBlock, ArchiveError>>> ready_;  // by block % window
    std::size_t claimed_ = 0;   // blocks handed to workers
    std::size_t consumed_ = 0;  // blocks taken by next()
    bool stopping_ = false;
    std::vector<std::thread> workers_;  // last: they start after the members they use
};

template <typename OnRecord, typename OnBlockEnd>
std::expected<evidence::ChainHead, ArchiveError> ArchiveSegmentReader::State::walk(bool keep_events,
                                                                                   OnRecord&& on_record,
                                                                                   OnBlockEnd&& on_block_end) const {
    evidence::ChainHead head{header.first_sequence - 1, header.previous_hash};
    BlockPipeline pipeline(*this, keep_events);
    for (std::size_t b = 0; b < blocks.size(); ++b) {
        auto decoded = pipeline.next();
        if (!decoded) {
            return std::unexpected(decoded.error());
        }
        // Block b's links start from the index's last link of block b-1, which the walk has
        // just compared with the links it computed (on_block_end): the chain is continuous.
        const auto first_sequence = blocks[b].first_sequence;
        for (std::size_t i = 0; i < decoded->links.size(); ++i) {
            const controller::StoredEvent* event = keep_events ? &decoded->events[i] : nullptr;
            evidence::ChainLink link;
            link.sequence = first_sequence + i;
            link.previous = head.hash;
            link.hash = decoded->links[i];
            head = evidence::ChainHead{link.sequence, link.hash};
            if (!on_record(event, link, decoded->link_checks[i])) {
                return head;
            }
        }
        if (!on_block_end(b, head.hash, *decoded)) {
            return head;
        }
    }
    return head;
}

ArchiveSegmentReader::ArchiveSegmentReader(std::unique_ptr<State> state) : state_(std::move(state)) {}
ArchiveSegmentReader::~ArchiveSegmentReader() = default;
ArchiveSegmentReader::ArchiveSegmentReader(ArchiveSegmentReader&&) noexcept = default;
ArchiveSegmentReader& ArchiveSegmentReader::operator=(ArchiveSegmentReader&&) noexcept = default;

std::expected<ArchiveSegmentReader, ArchiveError> ArchiveSegmentReader::open(const std::filesystem::path& path) {
    auto source = open_segment_file(path);
    if (!source) {
        return std::unexpected(ArchiveError{ArchiveErrorKind::Io, "segment " + path.string() + ": " + source.error()});
    }
    return from_source(std::move(*source), path.string());
}

std::expected<ArchiveSegmentReader, ArchiveError> ArchiveSegmentReader::from_bytes(std::string bytes, std::string name) {
    return from_source(memory_segment_source(std::move(bytes)), std::move(name));
}

std::expected<ArchiveSegmentReader, ArchiveError> ArchiveSegmentReader::from_source(
    std::unique_ptr<SegmentSource> source, std::string name) {
    auto state = std::make_unique<State>();
    state->name = std::move(name);
    state->source = std::move(source);
    const State& s = *state;
    const std::uint64_t size = s.source->size();
    auto fail = [&](ArchiveErrorKind kind, const std::string& text) { return std::unexpected(s.error(kind, text)); };
    auto read = [&](std::uint64_t offset, std::uint64_t length) { return s.source->read(offset, length); };

    if (size >= format::kSegmentMagic.size()) {
        auto magic = read(0, format::kSegmentMagic.size());
        if (!magic) {
            return fail(ArchiveErrorKind::Io, magic.error());
        }
        if (*magic != format::kSegmentMagic) {
            return fail(ArchiveErrorKind::BadMagic, "not an archive segment (bad magic)");
        }
    }
    if (size < format::kHeaderPrefixSize) {
        return fail(ArchiveErrorKind::Truncated, "truncated: header expected at byte 0.." +
                                                     std::to_string(format::kHeaderPrefixSize) + ", file has " +
                                                     std::to_string(size) + " bytes");
    }
    auto prefix = read(0, format::kHeaderPrefixSize);
    if (!prefix) {
        return fail(ArchiveErrorKind::Io, prefix.error());
    }
    bytes::Reader prefix_reader(std::string_view(*prefix).substr(8));
    std::uint16_t version = 0, header_length = 0;
    prefix_reader.u16(version);
    prefix_reader.u16(header_length);
    if (version != kArchiveFormatVersion) {
        return fail(ArchiveErrorKind::UnsupportedVersion, "format version " + std::to_string(version) +
                                                              ", this build reads version " +
                                                              std::to_string(kArchiveFormatVersion));
    }
    if (size < header_length) {
        return fail(ArchiveErrorKind::Truncated, "truncated: header expected to end at byte " +
                                                     std::to_string(header_length) + ", file has " +
                                                     std::to_string(size) + " bytes");
    }
    auto header_bytes = read(0, header_length);
    if (!header_bytes) {
        return fail(ArchiveErrorKind::Io, header_bytes.error());
    }
    auto header = format::parse_header(*header_bytes);
    if (!header) {
        return fail(ArchiveErrorKind::Corrupt, header.error());
    }
    const auto& h = *header;
    if (size < h.file_length) {
        return fail(ArchiveErrorKind::Truncated, "truncated: footer expected at byte " + std::to_string(h.index_offset) +
                                                     ", file has " + std::to_string(size) + " bytes");
    }
    if (size > h.file_length) {
        return fail(ArchiveErrorKind::Corrupt, std::to_string(size - h.file_length) +
                                                   " bytes after the trailer (the header says the segment ends at byte " +
                                                   std::to_string(h.file_length) + ")");
    }
    if (h.index_offset < header_length || h.index_offset > h.file_length ||
        h.file_length - h.index_offset != h.index_length + format::kSealSize + format::kTrailerSize) {
        return fail(ArchiveErrorKind::Corrupt, "header offsets do not add up");
    }
    auto trailer_bytes = read(h.file_length - format::kTrailerSize, format::kTrailerSize);
    if (!trailer_bytes) {
        return fail(ArchiveErrorKind::Io, trailer_bytes.error());
    }
    auto trailer = format::parse_trailer(*trailer_bytes);
    if (!trailer) {
        return fail(ArchiveErrorKind::Corrupt, trailer.error());
    }
    if (trailer->index_offset != h.index_offset || trailer->index_length != h.index_length) {
        return fail(ArchiveErrorKind::Corrupt, "trailer and header disagree on where the index is");
    }
    auto index_bytes = read(h.index_offset, h.index_length);
    if (!index_bytes) {
        return fail(ArchiveErrorKind::Io, index_bytes.error());
    }
    const auto index_digest = evidence::Sha256::of(*index_bytes);
    if (index_digest != trailer->index_digest) {
        return fail(ArchiveErrorKind::IndexChecksum, "index checksum mismatch: bytes " + std::to_string(h.index_offset) +
                                                         ".." + std::to_string(h.index_offset + h.index_length) +
                                                         " do not hash to the trailer's checksum");
    }
    auto blocks = format::parse_index(*index_bytes);
    if (!blocks) {
        return fail(ArchiveErrorKind::Corrupt, blocks.error());
    }
    // The index must tile the records and the bytes between header and index exactly.
    if (blocks->size() != h.block_count || h.record_count == 0 ||
        h.last_sequence - h.first_sequence + 1 != h.record_count) {
        return fail(ArchiveErrorKind::Corrupt, "index and header disagree on blocks or records");
    }
    std::uint64_t next_sequence = h.first_sequence, next_offset = header_length;
    for (const auto& block : *blocks) {
        // Caps before anything is allocated from these numbers: a damaged index must not ask
        // for gigabytes.
        if (block.record_count > kMaxBlockRecords || block.raw_length > kMaxBlockRawBytes) {
            return fail(ArchiveErrorKind::Corrupt, "index entry for records " + record_range(block) +
                                                       " claims an impossible block size");
        }
        if (block.first_sequence != next_sequence || block.offset != next_offset || block.record_count == 0) {
            return fail(ArchiveErrorKind::Corrupt, "index entry for records " + record_range(block) +
                                                       " does not follow the one before it");
        }
        next_sequence += block.record_count;
        next_offset += block.compressed_length;
    }
    if (next_sequence != h.last_sequence + 1 || next_offset != h.index_offset) {
        return fail(ArchiveErrorKind::Corrupt, "index does not cover the segment's records and blocks");
    }
    auto seal_bytes = read(h.index_offset + h.index_length, format::kSealSize);
    if (!seal_bytes) {
        return fail(ArchiveErrorKind::Io, seal_bytes.error());
    }
    auto seal = format::parse_seal(*seal_bytes);
    if (!seal) {
        return fail(ArchiveErrorKind::Corrupt, seal.error());
    }
    state->header_bytes = std::move(*header_bytes);
    state->header = *header;
    state->blocks = std::move(*blocks);
    state->seal = std::move(*seal);
    state->index_digest = index_digest;
    return ArchiveSegmentReader(std::move(state));
}

const ArchiveHeader& ArchiveSegmentReader::header() const { return state_->header; }
const std::vector<ArchiveBlockInfo>& ArchiveSegmentReader::blocks() const { return state_->blocks; }
const ArchiveSeal& ArchiveSegmentReader::seal() const { return state_->seal; }
std::uint64_t ArchiveSegmentReader::blocks_decoded() const { return state_->blocks_decoded; }

std::expected<std::vector<controller::StoredEvent>, ArchiveError> ArchiveSegmentReader::scan(
    const ArchiveQuery& query) const {
    std::vector<controller::StoredEvent> found;
    const auto& s = *state_;
    for (std::size_t b = 0; b < s.blocks.size(); ++b) {
        const auto& block = s.blocks[b];
        const auto last_id = static_cast<std::int64_t>(block.first_sequence + block.record_count - 1);
        if (query.through_id && static_cast<std::int64_t>(block.first_sequence) > *query.through_id) {
            break;  // blocks are in id order: nothing after this one is wanted
        }
        if ((query.after_id && last_id <= *query.after_id) || (query.from_ns && block.max_time_ns < *query.from_ns) ||
            (query.to_ns && block.min_time_ns >= *query.to_ns) ||
            // The filter holds non-empty workloads only: "no workload" cannot be excluded.
            (query.workload && !query.workload->empty() && !block.filter.may_contain_workload(*query.workload)) ||
            (query.address && !block.filter.may_contain_address(*query.address))) {
            continue;
        }
        auto decoded = s.read_block(b);
        if (!decoded) {
            return std::unexpected(decoded.error());
        }
        for (auto& event : decoded->events) {
            if ((query.after_id && event.id <= *query.after_id) || (query.through_id && event.id > *query.through_id) ||
                (query.from_ns && event.time_ns < *query.from_ns) ||
                (query.to_ns && event.time_ns >= *query.to_ns) || (query.workload && event.workload != *query.workload) ||
                (query.address && event.src != *query.address && event.dst != *query.address)) {
                continue;
            }
            found.push_back(std::move(event));
            if (query.limit != 0 && found.size() >= query.limit) {
                return found;
            }
        }
    }
    return found;
}

std::expected<evidence::ChainHead, ArchiveError> ArchiveSegmentReader::for_each_record(
    const std::function<bool(const ArchivedRecord&)>& visit) const {
    return state_->walk(
        true,
        [&](const controller::StoredEvent* event, const evidence::ChainLink& link, std::uint16_t) {
            return visit(ArchivedRecord{*event, link});
        },
        [](std::size_t, const evidence::Digest&, const DecodedBlock&) { return true; });
}

std::expected<ArchiveVerification, ArchiveError> ArchiveSegmentReader::verify(const evidence::PublicKey& key) const {
    const auto& s = *state_;
    if (const auto id = evidence::key_id(key); id != s.seal.key_id) {
        return std::unexpected(s.error(ArchiveErrorKind::KeyMismatch,
                                       "sealed with key " + s.seal.key_id + ", verifying with key " + id));
    }
    // The signature is checked first but judged last: a record that breaks the chain is the
    // more precise finding, and the signature's failure is added to it.
    const bool signature_ok = evidence::signature_valid(
        key, format::seal_signed_bytes(s.header_bytes, s.index_digest, s.seal.merkle_root, s.seal.key_id),
        s.seal.signature);

    ArchiveVerification result;
    format::MerkleAccumulator merkle;
    evidence::ChainHead verified_head{s.header.first_sequence - 1, s.header.previous_hash};
    auto walked = s.walk(
        false,
        [&](const controller::StoredEvent*, const evidence::ChainLink& link, std::uint16_t stored_check) {
            const auto check = link_check_of(link.hash);
            if (check != stored_check) {
                result.broken = evidence::ChainBreak{
                    s.header.stream, link.sequence, evidence::BreakKind::Altered,
                    "segment " + s.name + ": the record does not hash to the link its block recorded (link check " +
                        hex16(stored_check) + ", recomputed " + hex16(check) + ")"};
                return false;
            }
            verified_head = evidence::ChainHead{link.sequence, link.hash};
            ++result.records_verified;
            return true;
        },
        [&](std::size_t b, const evidence::Digest& last_link, const DecodedBlock& decoded) {
            const auto& block = s.blocks[b];
            // Every record of the block passed: its links join the Merkle tree (as one subtree
            // when the worker could build it).
            if (decoded.links_subtree && merkle.takes_subtree(decoded.links.size())) {
                merkle.add_subtree(*decoded.links_subtree, decoded.links.size());
            } else {
                for (const auto& l : decoded.links) {
                    merkle.add(l);
                }
            }
            if (last_link != block.last_link) {
                result.broken = evidence::ChainBreak{
                    s.header.stream, block.first_sequence, evidence::BreakKind::Altered,
                    "segment " + s.name + ": block " + std::to_string(b) + " (records " + record_range(block) +
                        ") does not end at the link its index entry records: a record in it was changed"};
                return false;
            }
            return true;
        });
    if (!walked) {
        return std::unexpected(walked.error());
    }
    result.head = verified_head;
    if (result.broken) {
        if (!signature_ok) {
            result.broken->detail += "; the segment's signature does not verify either (header or index rewritten)";
        }
        return result;
    }
    if (verified_head.hash != s.header.last_hash) {
        return std::unexpected(s.error(ArchiveErrorKind::LastHashMismatch,
                                       "the records end at link " + evidence::to_hex(verified_head.hash) +
                                           ", the header says " + evidence::to_hex(s.header.last_hash)));
    }
    if (merkle.root() != s.seal.merkle_root) {
        return std::unexpected(
            s.error(ArchiveErrorKind::RootMismatch, "the records' Merkle root differs from the sealed root"));
    }
    if (!signature_ok) {
        return std::unexpected(s.error(ArchiveErrorKind::BadSignature,
                                       "the signature does not verify with key " + s.seal.key_id));
    }
    return result;
}

}  // namespace bulkhead::archive
