// archive_bench [events] [zstd level] [ldm 0|1] [block records]: seals a generated drop mix
// (drop_mix_generator.hpp) into a segment in memory, then scans and verifies it, printing
// bytes per event and the write, scan and verify rates. Rates are per CPU second of this
// process (the build machines are shared, wall time is not ours) and per wall second.
#include "controller/archive/archive_segment.hpp"
#include "controller/archive/drop_mix_generator.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace {

struct Clocks {
    std::chrono::steady_clock::time_point wall = std::chrono::steady_clock::now();
    std::clock_t cpu = std::clock();
};

void report(const char* what, std::size_t events, const Clocks& from) {
    const Clocks to;
    const double wall = std::chrono::duration<double>(to.wall - from.wall).count();
    const double cpu = static_cast<double>(to.cpu - from.cpu) / CLOCKS_PER_SEC;
    std::printf("%-8s %10.0f events/CPU-s %10.0f events/s (wall)\n", what, static_cast<double>(events) / cpu,
                static_cast<double>(events) / wall);
}

}  // namespace

int main(int argc, char** argv) {
    namespace archive = bulkhead::archive;
    const std::size_t events = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 500'000;
    archive::ArchiveWriterOptions options;
    options.created_ns = 1;
    if (argc > 2) {
        options.zstd_level = std::atoi(argv[2]);
    }
    if (argc > 3) {
        options.long_distance_matching = std::atoi(argv[3]) != 0;
    }
    if (argc > 4) {
        options.block_records = static_cast<std::uint32_t>(std::strtoul(argv[4], nullptr, 10));
    }
    const auto mix = archive::testing::generate_drop_mix(events);
    std::size_t document_bytes = 0;
    for (const auto& e : mix) {
        document_bytes += e.event.document_text.size();
    }
    auto key = bulkhead::evidence::SigningKey::generate();
    if (!key) {
        std::fprintf(stderr, "key: %s\n", key.error().c_str());
        return 1;
    }

    Clocks start;
    archive::ArchiveSegmentWriter writer(bulkhead::evidence::Stream::Drops, {}, options);
    for (const auto& e : mix) {
        if (auto appended = writer.append(e.event, e.event.document_text, e.link); !appended) {
            std::fprintf(stderr, "%s\n", appended.error().message.c_str());
            return 1;
        }
    }
    auto bytes = writer.seal_to_bytes(*key);
    if (!bytes) {
        std::fprintf(stderr, "%s\n", bytes.error().message.c_str());
        return 1;
    }
    report("write", events, start);
    const std::size_t segment_size = bytes->size();

    auto reader = archive::ArchiveSegmentReader::from_bytes(std::move(*bytes), "bench");
    if (!reader) {
        std::fprintf(stderr, "%s\n", reader.error().message.c_str());
        return 1;
    }
    Clocks scan_start;
    archive::ArchiveQuery all;
    all.limit = 0;
    auto scanned = reader->scan(all);
    if (!scanned || scanned->size() != events) {
        std::fprintf(stderr, "scan failed\n");
        return 1;
    }
    report("scan", events, scan_start);

    Clocks verify_start;
    auto verified = reader->verify(key->public_key());
    if (!verified || verified->broken) {
        std::fprintf(stderr, "verify failed\n");
        return 1;
    }
    report("verify", events, verify_start);
    std::printf("events %zu, documents %.0f bytes on average, level %d, ldm %d, blocks of %u: segment %zu bytes = "
                "%.2f bytes/event (index %llu bytes)\n",
                events, static_cast<double>(document_bytes) / static_cast<double>(events), options.zstd_level,
                options.long_distance_matching ? 1 : 0, options.block_records, segment_size,
                static_cast<double>(segment_size) / static_cast<double>(events),
                static_cast<unsigned long long>(reader->header().index_length));
    return 0;
}
