#include "bench/drop_event_batches.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <random>
#include <stdexcept>

namespace bulkhead::bench {
namespace {

// Blocked services ordinary workloads try (and scanners sweep with many more).
constexpr int kCommonPorts[] = {22, 135, 139, 445, 3389, 5985, 389, 1433, 8080, 443};

}  // namespace

std::vector<std::string> drop_event_upload_bodies(const DropBatchSpec& spec, std::uint64_t first_seq,
                                                  std::uint64_t events, std::int64_t start_ns) {
    using nlohmann::json;
    if (spec.sources.size() < 3 || spec.batch == 0) {
        throw std::invalid_argument("drop_event_upload_bodies: needs at least 3 sources and a batch size");
    }
    std::mt19937_64 random(spec.seed);
    const auto others = static_cast<std::uint64_t>(spec.sources.size() - 2);
    std::vector<std::string> bodies;
    std::uint64_t seq = first_seq;
    const std::uint64_t end = first_seq + events;
    while (seq < end) {
        json batch = json::array();
        for (std::size_t i = 0; i < spec.batch && seq < end; ++i, ++seq) {
            const bool scanner = random() % 10 < 7;
            const std::size_t w = scanner ? static_cast<std::size_t>(random() % 2) : 2 + static_cast<std::size_t>(random() % others);
            const DropSource& source = spec.sources[w];
            const std::uint64_t habit = random() % 2;
            const std::uint64_t host = scanner ? random() % 4096 : (static_cast<std::uint64_t>(w) * 7 + habit * 13) % 4096;
            const int dport = scanner ? static_cast<int>(1 + random() % 1024) : kCommonPorts[(w + habit) % 10];
            const std::int64_t time_ns = start_ns + static_cast<std::int64_t>(seq) * 10'000;
            char destination[24];
            std::snprintf(destination, sizeof destination, "10.0.%d.%d", static_cast<int>(host / 256),
                          static_cast<int>(host % 256));
            json event = {{"type", "drop"},
                          {"count", 1},
                          {"time_ns", time_ns},
                          {"time_unix_ms", time_ns / 1'000'000},
                          {"time_source", "kernel"},
                          {"group", 10},
                          {"seq", seq},
                          {"hook", "forward"},
                          {"prefix", "bh:d:default"},
                          {"mode", "enforce"},
                          {"direction", "out"},
                          {"reason", "default"},
                          {"subject", source.workload},
                          {"indev_ifindex", 100 + w},
                          {"indev", source.interface},
                          {"family", 4},
                          {"src", source.address},
                          {"dst", destination},
                          {"proto", 6},
                          {"proto_name", "tcp"},
                          {"sport", 32768 + random() % 28000},
                          {"dport", dport},
                          {"tcp_flags", "S"},
                          {"tcp_flags_raw", 2},
                          {"ip_len", 60},
                          {"workload", source.workload},
                          {"would_drop", true},
                          {"policy_generation", 1}};
            batch.push_back({{"seq", seq}, {"event", std::move(event)}});
        }
        bodies.push_back(json{{"events", std::move(batch)}}.dump());
    }
    return bodies;
}

}  // namespace bulkhead::bench
