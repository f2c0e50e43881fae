// bench_analyzer: the analyzer's throughput on one core (target: 1,000,000 events/s).
//
// Generates drop observations in memory, deterministically, and feeds them to one
// Analyzer: every source retries a few blocked targets (the bulk of real drop traffic),
// and a few in a hundred sweep SMB, scan one host's ports, or beacon. Addresses repeat
// across enforcers on purpose (colliding private ranges). The generator only picks
// indexes into prebuilt strings, so the timing is the engine's (plus a few arithmetic
// operations per event, measured separately and reported).
//
// Prints one JSON object per figure on stdout:
//   {"benchmark":"analyzer","metric":…,"value":…,"unit":…,"target":…[,"met":bool]}
// and progress on stderr. Single-threaded; std::chrono::steady_clock; peak RSS from
// getrusage.
#include "bench/cli_args.hpp"
#include "controller/analyzer/analyzer.hpp"

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <sys/resource.h>
#include <vector>

namespace {

using bulkhead::analyzer::Analyzer;
using bulkhead::analyzer::Observation;
using Clock = std::chrono::steady_clock;

constexpr const char* usage = R"(usage: bench_analyzer [options]
  --events N     drop events (10000000)
  --sources N    distinct sources (10000)
  --seconds N    event time spanned by the replay (600)
  --seed N       generator seed (1)
)";

struct Options {
    std::uint64_t events = 10'000'000;
    std::uint64_t sources = 10'000;
    std::uint64_t seconds = 600;
    std::uint64_t seed = 1;
};

void emit(const std::string& metric, double value, const std::string& unit,
          std::optional<std::string> target = std::nullopt,
          std::optional<bool> met = std::nullopt) {
    nlohmann::ordered_json line{{"benchmark", "analyzer"}, {"metric", metric}};
    if (value == std::floor(value) && std::abs(value) < 1e15) {
        line["value"] = static_cast<long long>(value);
    } else {
        line["value"] = std::round(value * 1000) / 1000;
    }
    line["unit"] = unit;
    line["target"] = target ? nlohmann::ordered_json(*target) : nlohmann::ordered_json(nullptr);
    if (met) {
        line["met"] = *met;
    }
    std::cout << line.dump() << std::endl;
}

long peak_rss_kib() {
    rusage usage_now{};
    getrusage(RUSAGE_SELF, &usage_now);
    return usage_now.ru_maxrss;
}

struct Rng { // xorshift64*: deterministic, cheap
    std::uint64_t state;
    std::uint64_t next() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        return state * 0x2545F4914F6CDD1DULL;
    }
};

struct Source {
    std::string enforcer, workload, port, mac, address, user;
    std::vector<std::string> segments;
    std::uint32_t kind = 0;     // 0 noise, 1 sweeper, 2 vertical scanner, 3 beacon
    std::uint32_t counter = 0;  // scan progress
    std::uint32_t targets[3]{}; // noise: blocked destinations it keeps retrying
    std::int64_t next_beacon = 0;
};

} // namespace

int main(int argc, char** argv) {
    Options o;
    try {
        for (int i = 1; i < argc; ++i) {
            const std::string a = argv[i];
            auto value = [&]() -> std::string {
                if (i + 1 >= argc)
                    throw std::invalid_argument(a + ": missing value");
                return argv[++i];
            };
            if (a == "--events")
                o.events = bulkhead::bench::to_number(a, value());
            else if (a == "--sources")
                o.sources = bulkhead::bench::to_number(a, value());
            else if (a == "--seconds")
                o.seconds = bulkhead::bench::to_number(a, value());
            else if (a == "--seed")
                o.seed = bulkhead::bench::to_number(a, value());
            else if (a == "--help" || a == "-h") {
                std::cout << usage;
                return 0;
            } else {
                throw std::invalid_argument("unknown option " + a);
            }
        }
        if (o.sources == 0 || o.events == 0 || o.seconds == 0)
            throw std::invalid_argument("sizes must be positive");
    } catch (const std::invalid_argument& e) {
        std::cerr << "bench_analyzer: " << e.what() << "\n" << usage;
        return 2;
    }

    // Prebuilt strings: sources (50 per enforcer, addresses repeating per enforcer) and
    // 65,536 destination addresses.
    Rng rng{o.seed * 0x9E3779B97F4A7C15ULL + 1};
    std::vector<Source> sources(o.sources);
    for (std::uint64_t i = 0; i < o.sources; ++i) {
        auto& s = sources[i];
        char text[64];
        std::snprintf(text, sizeof text, "hv%03llu", static_cast<unsigned long long>(i / 50));
        s.enforcer = text;
        std::snprintf(text, sizeof text, "vdi-%05llu", static_cast<unsigned long long>(i));
        s.workload = text;
        s.port = "p" + s.workload;
        std::snprintf(text, sizeof text, "52:54:00:%02x:%02x:%02x",
                      static_cast<unsigned>(i >> 16 & 0xFF), static_cast<unsigned>(i >> 8 & 0xFF),
                      static_cast<unsigned>(i & 0xFF));
        s.mac = text;
        s.address = "10.1.0." + std::to_string(i % 50 + 1); // the same on every enforcer
        s.user = "user" + std::to_string(i);
        s.segments = {"role=vdi", "pool=p" + std::to_string(i % 20)};
        const auto roll = i % 100;
        s.kind = roll < 2 ? 1 : roll < 3 ? 2 : roll < 5 ? 3 : 0;
        for (auto& t : s.targets)
            t = static_cast<std::uint32_t>(rng.next() % 65536);
    }
    std::vector<std::string> destinations(65536);
    for (std::size_t i = 0; i < destinations.size(); ++i) {
        destinations[i] = "10.0." + std::to_string(i >> 8) + "." + std::to_string(i & 0xFF);
    }
    const std::uint16_t noise_ports[4] = {80, 443, 8080, 9100};
    const long rss_before = peak_rss_kib();

    const std::int64_t t0 = 1'790'000'000LL * 1'000'000'000;
    const double step = static_cast<double>(o.seconds) * 1e9 / static_cast<double>(o.events);
    auto generate = [&](std::uint64_t n, Observation& obs) {
        auto& s = sources[rng.next() % o.sources];
        const std::int64_t t = t0 + static_cast<std::int64_t>(static_cast<double>(n) * step);
        obs.time_ns = t;
        obs.source = {s.enforcer, s.workload, s.port, s.mac, s.address};
        obs.user = s.user;
        obs.source_segments = s.segments;
        obs.protocol = 6;
        obs.count = 1;
        std::uint32_t dst = 0;
        std::uint16_t port = 0;
        if (s.kind == 1) { // sweeps SMB
            dst = s.counter++ % 4096;
            port = 445;
        } else if (s.kind == 2) { // one host, every port
            dst = s.targets[0];
            port = static_cast<std::uint16_t>(1 + s.counter++ % 65535);
        } else if (s.kind == 3 && t >= s.next_beacon) { // every ~60 s, a C&C retry
            dst = 65535;
            port = 443;
            s.next_beacon =
                t + 60'000'000'000LL + static_cast<std::int64_t>(rng.next() % 3'000'000'000ULL);
        } else { // retries of a few blocked targets
            const auto r = rng.next();
            dst = s.targets[r % 3];
            port = noise_ports[(r >> 8) % 4];
        }
        obs.destination = destinations[dst];
        obs.dport = port;
    };

    // The generator alone, to subtract.
    Observation obs;
    std::uint64_t sink = 0;
    auto start = Clock::now();
    for (std::uint64_t n = 0; n < o.events; ++n) {
        generate(n, obs);
        sink += obs.dport.value_or(0);
    }
    const double generator_s = std::chrono::duration<double>(Clock::now() - start).count();
    for (auto& s : sources) {
        s.counter = 0;
        s.next_beacon = 0;
    }
    rng.state = o.seed * 0x9E3779B97F4A7C15ULL + 2;

    Analyzer analyzer;
    std::size_t peak_state = 0;
    std::uint64_t findings = 0;
    std::array<std::uint64_t, bulkhead::analyzer::rule_count> by_rule{};
    start = Clock::now();
    for (std::uint64_t n = 0; n < o.events; ++n) {
        generate(n, obs);
        for (const auto& f : analyzer.observe(obs)) {
            ++findings;
            ++by_rule[static_cast<std::size_t>(f.rule)];
        }
        if ((n & 0xFFFFF) == 0xFFFFF) {
            peak_state = std::max(peak_state, analyzer.memory_bytes());
            std::cerr << "bench_analyzer: " << (n + 1) << " events\r";
        }
    }
    const double total_s = std::chrono::duration<double>(Clock::now() - start).count();
    peak_state = std::max(peak_state, analyzer.memory_bytes());
    std::cerr << "\n";
    const double engine_s = std::max(total_s - generator_s, 1e-9);
    const double rate = static_cast<double>(o.events) / engine_s;
    const auto totals = analyzer.totals();

    std::cerr << "bench_analyzer: " << o.events << " events, " << totals.sources << " sources, "
              << findings << " findings, " << totals.incidents << " incidents, "
              << totals.suppressed << " suppressed in " << total_s << " s (generator "
              << generator_s << " s; checksum " << sink << ")\n";
    for (std::size_t r = 0; r < by_rule.size(); ++r) {
        std::cerr << "  " << bulkhead::analyzer::rule_name(static_cast<bulkhead::analyzer::Rule>(r))
                  << ": " << by_rule[r] << " findings\n";
    }
    emit("events", static_cast<double>(o.events), "events");
    emit("sources", static_cast<double>(totals.sources), "sources");
    // The headline counts the generator's time too (conservative); the engine-only figure
    // subtracts a separate generator-only pass, which is noisy on a busy machine.
    const double with_generator = static_cast<double>(o.events) / total_s;
    emit("throughput", std::round(with_generator), "events/s", ">= 1000000 events/s on one core",
         with_generator >= 1e6);
    emit("throughput_engine_only", std::round(rate), "events/s");
    emit("incidents", static_cast<double>(totals.incidents), "incidents");
    emit("state_peak", static_cast<double>(peak_state) / (1024.0 * 1024.0), "MiB");
    emit("rss_peak", static_cast<double>(peak_rss_kib()) / 1024.0, "MiB");
    emit("rss_engine", static_cast<double>(peak_rss_kib() - rss_before) / 1024.0, "MiB");
    return 0;
}
