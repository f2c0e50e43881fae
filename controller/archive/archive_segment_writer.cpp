#include "controller/archive/archive_segment.hpp"

#include "controller/archive/block_codec.hpp"
#include "controller/archive/segment_file.hpp"
#include "controller/archive/segment_format.hpp"

#include <zstd.h>

#include <algorithm>
#include <ctime>
#include <limits>

namespace bulkhead::archive {

std::string_view to_string(ArchiveErrorKind kind) {
    switch (kind) {
    case ArchiveErrorKind::Io:
        return "io";
    case ArchiveErrorKind::BadMagic:
        return "bad-magic";
    case ArchiveErrorKind::UnsupportedVersion:
        return "unsupported-version";
    case ArchiveErrorKind::Truncated:
        return "truncated";
    case ArchiveErrorKind::IndexChecksum:
        return "index-checksum";
    case ArchiveErrorKind::Corrupt:
        return "corrupt";
    case ArchiveErrorKind::OutOfSequence:
        return "out-of-sequence";
    case ArchiveErrorKind::Sealed:
        return "sealed";
    case ArchiveErrorKind::Empty:
        return "empty";
    case ArchiveErrorKind::KeyMismatch:
        return "key-mismatch";
    case ArchiveErrorKind::BadSignature:
        return "bad-signature";
    case ArchiveErrorKind::RootMismatch:
        return "root-mismatch";
    case ArchiveErrorKind::LastHashMismatch:
        return "last-hash-mismatch";
    }
    return "unknown";
}

namespace {
struct CompressionContextDeleter {
    void operator()(ZSTD_CCtx* context) const { ZSTD_freeCCtx(context); }
};
}  // namespace

struct ArchiveSegmentWriter::State {
    evidence::Stream stream;
    evidence::ChainHead start;
    evidence::ChainHead head;
    ArchiveWriterOptions options;
    std::unique_ptr<ZSTD_CCtx, CompressionContextDeleter> compressor{ZSTD_createCCtx()};

    // The block being filled: copies, because the caller's records need not outlive append().
    std::vector<controller::StoredEvent> pending;
    std::vector<std::uint16_t> pending_checks;
    evidence::Digest pending_last_link{};

    std::string blocks;  // compressed blocks, back to back
    std::vector<ArchiveBlockInfo> index;
    format::MerkleAccumulator merkle;
    std::uint64_t records = 0;
    std::int64_t min_time_ns = std::numeric_limits<std::int64_t>::max();
    std::int64_t max_time_ns = std::numeric_limits<std::int64_t>::min();
    bool sealed = false;

    std::expected<void, ArchiveError> flush_block() {
        if (pending.empty()) {
            return {};
        }
        std::vector<BlockRecord> records_in(pending.size());
        for (std::size_t i = 0; i < pending.size(); ++i) {
            records_in[i] = BlockRecord{&pending[i], pending[i].document_text, pending_checks[i]};
        }
        const std::string raw = encode_block(records_in);

        ZSTD_CCtx_reset(compressor.get(), ZSTD_reset_session_and_parameters);
        ZSTD_CCtx_setParameter(compressor.get(), ZSTD_c_compressionLevel, options.zstd_level);
        ZSTD_CCtx_setParameter(compressor.get(), ZSTD_c_enableLongDistanceMatching,
                               options.long_distance_matching ? 1 : 0);
        std::string compressed(ZSTD_compressBound(raw.size()), '\0');
        const std::size_t size =
            ZSTD_compress2(compressor.get(), compressed.data(), compressed.size(), raw.data(), raw.size());
        if (ZSTD_isError(size)) {
            return std::unexpected(
                ArchiveError{ArchiveErrorKind::Corrupt, std::string("zstd compression failed: ") + ZSTD_getErrorName(size)});
        }
        compressed.resize(size);

        ArchiveBlockInfo info;
        info.offset = format::header_size(stream) + blocks.size();
        info.compressed_length = static_cast<std::uint32_t>(size);
        info.raw_length = static_cast<std::uint32_t>(raw.size());
        info.first_sequence = static_cast<std::uint64_t>(pending.front().id);
        info.record_count = static_cast<std::uint32_t>(pending.size());
        const auto [min_it, max_it] = std::minmax_element(
            pending.begin(), pending.end(), [](const auto& a, const auto& b) { return a.time_ns < b.time_ns; });
        info.min_time_ns = min_it->time_ns;
        info.max_time_ns = max_it->time_ns;
        info.last_link = pending_last_link;
        info.filter = format::build_filter(pending);
        index.push_back(std::move(info));
        blocks += compressed;
        pending.clear();
        pending_checks.clear();
        return {};
    }
};

ArchiveSegmentWriter::ArchiveSegmentWriter(evidence::Stream stream, evidence::ChainHead previous,
                                           ArchiveWriterOptions options)
    : state_(std::make_unique<State>()) {
    state_->stream = stream;
    state_->start = previous;
    state_->head = previous;
    if (options.block_records == 0) {
        options.block_records = 4096;
    }
    options.block_records = std::min<std::uint32_t>(options.block_records, 1U << 20);  // the reader's cap
    state_->options = options;
}

ArchiveSegmentWriter::~ArchiveSegmentWriter() = default;
ArchiveSegmentWriter::ArchiveSegmentWriter(ArchiveSegmentWriter&&) noexcept = default;
ArchiveSegmentWriter& ArchiveSegmentWriter::operator=(ArchiveSegmentWriter&&) noexcept = default;

std::uint64_t ArchiveSegmentWriter::record_count() const { return state_->records; }
evidence::ChainHead ArchiveSegmentWriter::head() const { return state_->head; }

std::expected<void, ArchiveError> ArchiveSegmentWriter::append(const controller::StoredEvent& event,
                                                               std::string_view document_text,
                                                               const evidence::Digest& link_hash) {
    auto& s = *state_;
    if (s.sealed) {
        return std::unexpected(ArchiveError{ArchiveErrorKind::Sealed, "append: the segment is already sealed"});
    }
    const std::uint64_t expected = s.head.sequence + 1;
    if (event.id <= 0 || static_cast<std::uint64_t>(event.id) != expected) {
        const std::string what = event.id > 0 && static_cast<std::uint64_t>(event.id) > expected
                                     ? "a gap (records " + std::to_string(expected) + ".." +
                                           std::to_string(event.id - 1) + " missing)"
                                     : "out of order";
        return std::unexpected(ArchiveError{ArchiveErrorKind::OutOfSequence,
                                            "append: " + std::string(evidence::to_string(s.stream)) + " record #" +
                                                std::to_string(event.id) + " after #" +
                                                std::to_string(s.head.sequence) + ": " + what});
    }
    auto& copy = s.pending.emplace_back();
    copy.id = event.id;
    copy.enforcer = event.enforcer;
    copy.enforcer_seq = event.enforcer_seq;
    copy.type = event.type;
    copy.time_ns = event.time_ns;
    copy.received_at = event.received_at;
    copy.workload = event.workload;
    copy.direction = event.direction;
    copy.reason = event.reason;
    copy.src = event.src;
    copy.dst = event.dst;
    copy.protocol = event.protocol;
    copy.dport = event.dport;
    copy.count = event.count;
    copy.clock_offset_ms = event.clock_offset_ms;
    copy.document_text = document_text;
    s.pending_checks.push_back(link_check_of(link_hash));
    s.pending_last_link = link_hash;
    s.merkle.add(link_hash);
    s.head = evidence::ChainHead{expected, link_hash};
    s.min_time_ns = std::min(s.min_time_ns, event.time_ns);
    s.max_time_ns = std::max(s.max_time_ns, event.time_ns);
    ++s.records;
    if (s.pending.size() >= s.options.block_records) {
        return s.flush_block();
    }
    return {};
}

std::expected<std::string, ArchiveError> ArchiveSegmentWriter::seal_to_bytes(const evidence::SigningKey& key) {
    auto& s = *state_;
    if (s.sealed) {
        return std::unexpected(ArchiveError{ArchiveErrorKind::Sealed, "seal: the segment is already sealed"});
    }
    if (s.records == 0) {
        return std::unexpected(ArchiveError{ArchiveErrorKind::Empty, "seal: no records to archive"});
    }
    if (auto flushed = s.flush_block(); !flushed) {
        return std::unexpected(flushed.error());
    }
    const std::string index = format::encode_index(s.index);

    ArchiveHeader header;
    header.stream = s.stream;
    header.first_sequence = s.start.sequence + 1;
    header.last_sequence = s.head.sequence;
    header.record_count = s.records;
    header.previous_hash = s.start.hash;
    header.last_hash = s.head.hash;
    header.min_time_ns = s.min_time_ns;
    header.max_time_ns = s.max_time_ns;
    header.created_ns = s.options.created_ns;
    header.block_records = s.options.block_records;
    header.block_count = static_cast<std::uint32_t>(s.index.size());
    header.index_offset = format::header_size(s.stream) + s.blocks.size();
    header.index_length = index.size();
    header.file_length = header.index_offset + index.size() + format::kSealSize + format::kTrailerSize;
    const std::string header_bytes = format::encode_header(header);

    ArchiveSeal seal;
    seal.merkle_root = s.merkle.root();
    seal.key_id = evidence::key_id(key.public_key());
    const evidence::Digest index_digest = evidence::Sha256::of(index);
    seal.signature = key.sign(format::seal_signed_bytes(header_bytes, index_digest, seal.merkle_root, seal.key_id));

    std::string out;
    out.reserve(static_cast<std::size_t>(header.file_length));
    out += header_bytes;
    out += s.blocks;
    out += index;
    out += format::encode_seal(seal);
    out += format::encode_trailer(format::Trailer{header.index_offset, header.index_length, index_digest});
    s.sealed = true;
    s.blocks.clear();
    s.blocks.shrink_to_fit();
    return out;
}

std::expected<void, ArchiveError> ArchiveSegmentWriter::seal(const evidence::SigningKey& key,
                                                             const std::filesystem::path& path) {
    if (state_->options.created_ns == 0) {
        timespec now{};
        clock_gettime(CLOCK_REALTIME, &now);
        state_->options.created_ns = static_cast<std::int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
    }
    auto bytes = seal_to_bytes(key);
    if (!bytes) {
        return std::unexpected(bytes.error());
    }
    if (auto written = write_segment_file(path, *bytes); !written) {
        return std::unexpected(ArchiveError{ArchiveErrorKind::Io, written.error()});
    }
    return {};
}

}  // namespace bulkhead::archive
