// bench_analyzer: the analyzer engine's throughput on one core, its memory over a simulated
// day, and the cost of its checkpoints.
//
// Generates drop observations in memory, deterministically, and feeds them to one
// Analyzer: every source retries a few blocked targets (the bulk of real drop traffic),
// and a few in a hundred sweep SMB, scan one host's ports, or beacon. Addresses repeat
// across enforcers on purpose (colliding private ranges). The generator only picks
// indexes into prebuilt strings, so the timing is the engine's (plus a few arithmetic
// operations per event, measured separately and reported).
//
// Modes (--mode):
//   throughput  events/s (bench/run.sh analyzer)
//   memory      24 simulated hours from 10,000 sources, incidents resolved every 10 minutes
//               and a share of the sources replaced each hour (pool churn): the engine's
//               memory_bytes() and the process's VmRSS every simulated hour, which must level
//               off after warm-up (bench/run.sh analyzer-memory)
//   checkpoint  save_state size and time, restore_state time, at 10,000 active sources
//               (bench/run.sh analyzer-memory)
//
// Prints one JSON object per figure on stdout:
//   {"benchmark":"analyzer","metric":…,"value":…,"unit":…,"target":…[,"met":bool]}
// and progress on stderr. Single-threaded; std::chrono::steady_clock; peak RSS from
// getrusage, current RSS from /proc/self/status.
#include "bench/cli_args.hpp"
#include "controller/analyzer/analyzer.hpp"

#include <array>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
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
  --mode M           throughput | memory | checkpoint (throughput)
  --events N         throughput, checkpoint: drop events (10000000; checkpoint 2000000)
  --sources N        distinct sources at once (10000)
  --seconds N        throughput, checkpoint: event time spanned (600)
  --hours N          memory: simulated hours (24)
  --events-per-hour N  memory: drop events per simulated hour (500000)
  --seed N           generator seed (1)
)";

struct Options {
    std::string mode = "throughput";
    std::optional<std::uint64_t> events;
    std::uint64_t sources = 10'000;
    std::uint64_t seconds = 600;
    std::uint64_t hours = 24;
    std::uint64_t events_per_hour = 500'000;
    std::uint64_t seed = 1;
};

std::string benchmark_name = "analyzer";

void emit(const std::string& metric, double value, const std::string& unit,
          std::optional<std::string> target = std::nullopt,
          std::optional<bool> met = std::nullopt) {
    nlohmann::ordered_json line{{"benchmark", benchmark_name}, {"metric", metric}};
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

// The process's resident set now (VmRSS), in KiB; 0 if /proc is unreadable.
long current_rss_kib() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("VmRSS:", 0) == 0) {
            return std::stol(line.substr(6));
        }
    }
    return 0;
}

double mib(double bytes) {
    return bytes / (1024.0 * 1024.0);
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

// The generated fleet: prebuilt strings for `count` sources (50 per enforcer, addresses
// repeating per enforcer) and 65,536 destination addresses, and the traffic model.
struct Workload {
    std::vector<Source> sources;
    std::vector<std::string> destinations;
    Rng rng;
    const std::uint16_t noise_ports[4] = {80, 443, 8080, 9100};

    Workload(std::uint64_t count, std::uint64_t seed) : sources(count), destinations(65536), rng{seed * 0x9E3779B97F4A7C15ULL + 1} {
        for (std::uint64_t i = 0; i < count; ++i) {
            name(i, 0);
            auto& s = sources[i];
            const auto roll = i % 100;
            s.kind = roll < 2 ? 1 : roll < 3 ? 2 : roll < 5 ? 3 : 0;
            for (auto& t : s.targets)
                t = static_cast<std::uint32_t>(rng.next() % 65536);
        }
        for (std::size_t i = 0; i < destinations.size(); ++i) {
            destinations[i] = "10.0." + std::to_string(i >> 8) + "." + std::to_string(i & 0xFF);
        }
    }
    // Source slot `i` under its `generation`-th identity (a VDI desktop handed out anew).
    void name(std::uint64_t i, std::uint64_t generation) {
        auto& s = sources[i];
        char text[64];
        std::snprintf(text, sizeof text, "hv%03llu", static_cast<unsigned long long>(i / 50));
        s.enforcer = text;
        if (generation == 0) {
            std::snprintf(text, sizeof text, "vdi-%05llu", static_cast<unsigned long long>(i));
        } else {
            std::snprintf(text, sizeof text, "vdi-%05llu-%llu", static_cast<unsigned long long>(i),
                          static_cast<unsigned long long>(generation));
        }
        s.workload = text;
        s.port = "p" + s.workload;
        std::snprintf(text, sizeof text, "52:54:00:%02x:%02x:%02x",
                      static_cast<unsigned>(i >> 16 & 0xFF), static_cast<unsigned>(i >> 8 & 0xFF),
                      static_cast<unsigned>(i & 0xFF));
        s.mac = text;
        s.address = "10.1.0." + std::to_string(i % 50 + 1); // the same on every enforcer
        s.user = "user" + std::to_string(i) + (generation == 0 ? "" : "-" + std::to_string(generation));
        s.segments = {"role=vdi", "pool=p" + std::to_string(i % 20)};
        s.counter = 0;
        s.next_beacon = 0;
    }
    void rewind(std::uint64_t seed) {
        for (auto& s : sources) {
            s.counter = 0;
            s.next_beacon = 0;
        }
        rng.state = seed;
    }

    // (Inlined into the timed loops, as the generator was before it became a member.)
    [[gnu::always_inline]] void generate(std::int64_t t, Observation& obs) {
        auto& s = sources[rng.next() % sources.size()];
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
        // Every drop a new connection attempt with its own ephemeral port (Linux's range), as
        // retries, sweeps and beacons make them: the analyzer tells attempts apart by it.
        obs.sport = static_cast<std::uint16_t>(32768 + rng.next() % 28232);
    }
};

constexpr std::int64_t t0 = 1'790'000'000LL * 1'000'000'000;

int throughput(const Options& o) {
    const std::uint64_t events = o.events.value_or(10'000'000);
    Workload w(o.sources, o.seed);
    const long rss_before = peak_rss_kib();
    const double step = static_cast<double>(o.seconds) * 1e9 / static_cast<double>(events);
    auto time_of = [&](std::uint64_t n) { return t0 + static_cast<std::int64_t>(static_cast<double>(n) * step); };

    // The generator alone, to subtract.
    Observation obs;
    std::uint64_t sink = 0;
    auto start = Clock::now();
    for (std::uint64_t n = 0; n < events; ++n) {
        w.generate(time_of(n), obs);
        sink += obs.dport.value_or(0);
    }
    const double generator_s = std::chrono::duration<double>(Clock::now() - start).count();
    w.rewind(o.seed * 0x9E3779B97F4A7C15ULL + 2);

    Analyzer analyzer;
    std::size_t peak_state = 0;
    std::uint64_t findings = 0;
    std::array<std::uint64_t, bulkhead::analyzer::rule_count> by_rule{};
    start = Clock::now();
    for (std::uint64_t n = 0; n < events; ++n) {
        w.generate(time_of(n), obs);
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
    const double rate = static_cast<double>(events) / engine_s;
    const auto totals = analyzer.totals();

    std::cerr << "bench_analyzer: " << events << " events, " << totals.sources << " sources, "
              << findings << " findings, " << totals.incidents << " incidents, "
              << totals.suppressed << " suppressed in " << total_s << " s (generator "
              << generator_s << " s; checksum " << sink << ")\n";
    for (std::size_t r = 0; r < by_rule.size(); ++r) {
        std::cerr << "  " << bulkhead::analyzer::rule_name(static_cast<bulkhead::analyzer::Rule>(r))
                  << ": " << by_rule[r] << " findings\n";
    }
    emit("events", static_cast<double>(events), "events");
    emit("sources", static_cast<double>(totals.sources), "sources");
    // The headline counts the generator's time too (conservative); the engine-only figure
    // subtracts a separate generator-only pass, which is noisy on a busy machine.
    const double with_generator = static_cast<double>(events) / total_s;
    emit("throughput", std::round(with_generator), "events/s", ">= 1000000 events/s on one core",
         with_generator >= 1e6);
    emit("throughput_engine_only", std::round(rate), "events/s");
    emit("incidents", static_cast<double>(totals.incidents), "incidents");
    emit("state_peak", mib(static_cast<double>(peak_state)), "MiB");
    emit("rss_peak", static_cast<double>(peak_rss_kib()) / 1024.0, "MiB");
    emit("rss_engine", static_cast<double>(peak_rss_kib() - rss_before) / 1024.0, "MiB");
    return 0;
}

// A simulated day: the analysts resolve every open incident each 10 simulated minutes (the
// offenders go on and reopen, as repeat offenders), and 5 % of the desktops are handed to
// new identities each hour (the old identities fall idle). Memory must level off.
int memory(const Options& o) {
    benchmark_name = "analyzer-memory";
    Workload w(o.sources, o.seed);
    Analyzer analyzer;
    Observation obs;
    constexpr std::int64_t hour = 3600LL * 1'000'000'000;
    constexpr std::int64_t resolve_every = 600LL * 1'000'000'000;
    const double step = static_cast<double>(hour) / static_cast<double>(o.events_per_hour);
    std::int64_t next_resolve = t0 + resolve_every;
    std::uint64_t resolved = 0, findings = 0;
    std::vector<double> state_mib, rss_mib;
    const auto started = Clock::now();
    std::cerr << "hour  state MiB  VmRSS MiB  held sources  active  open incidents  held incidents"
                 "  incidents  released src  released inc  offender records\n";
    for (std::uint64_t h = 0; h < o.hours; ++h) {
        if (h > 0) {
            for (std::uint64_t i = (h * 7919) % 20; i < w.sources.size(); i += 20) {
                w.name(i, h); // every 20th desktop, a different 5 % each hour
            }
        }
        for (std::uint64_t n = 0; n < o.events_per_hour; ++n) {
            const std::int64_t t = t0 + static_cast<std::int64_t>(h) * hour +
                                   static_cast<std::int64_t>(static_cast<double>(n) * step);
            if (t >= next_resolve) {
                for (const auto* incident : analyzer.incidents()) {
                    if (incident->state == bulkhead::analyzer::IncidentState::Open &&
                        analyzer.resolve(incident->id, t)) {
                        ++resolved;
                    }
                }
                next_resolve += resolve_every;
            }
            w.generate(t, obs);
            findings += analyzer.observe(obs).size();
        }
        const auto totals = analyzer.totals();
        state_mib.push_back(mib(static_cast<double>(analyzer.memory_bytes())));
        rss_mib.push_back(static_cast<double>(current_rss_kib()) / 1024.0);
        char row[256];
        std::snprintf(row, sizeof row, "%4llu  %9.1f  %9.1f  %12zu  %6zu  %14zu  %14zu  %9llu  %12llu  %12llu  %16zu\n",
                      static_cast<unsigned long long>(h + 1), state_mib.back(), rss_mib.back(), totals.held_sources,
                      totals.active_sources, totals.open_incidents, totals.held_incidents,
                      static_cast<unsigned long long>(totals.incidents),
                      static_cast<unsigned long long>(totals.released_sources),
                      static_cast<unsigned long long>(totals.released_incidents), totals.repeat_offender_records);
        std::cerr << row;
        emit("hour_" + std::to_string(h + 1) + "_state", std::round(state_mib.back() * 10) / 10, "MiB");
        emit("hour_" + std::to_string(h + 1) + "_rss", std::round(rss_mib.back() * 10) / 10, "MiB");
    }
    const double wall = std::chrono::duration<double>(Clock::now() - started).count();
    const auto totals = analyzer.totals();
    std::cerr << "bench_analyzer: " << o.hours * o.events_per_hour << " events, " << findings << " findings, "
              << totals.incidents << " incidents (" << resolved << " resolved by the analysts) in " << wall << " s\n";
    emit("hours", static_cast<double>(o.hours), "simulated hours");
    emit("events", static_cast<double>(o.hours * o.events_per_hour), "events");
    emit("incidents", static_cast<double>(totals.incidents), "incidents");
    emit("resolved_by_analysts", static_cast<double>(resolved), "incidents");
    emit("released_sources", static_cast<double>(totals.released_sources), "sources");
    emit("released_incidents", static_cast<double>(totals.released_incidents), "incidents");
    emit("evicted_sources", static_cast<double>(totals.evicted_sources), "sources");
    emit("evicted_incidents", static_cast<double>(totals.evicted_incidents), "incidents");
    // Flat after warm-up: the last hour against the state after the first quarter of the day
    // (the 30-minute slow-scan window, the hour of idle expiry and the first resolves are
    // all in by then).
    const std::size_t warm = std::min<std::size_t>(state_mib.size() - 1, std::max<std::size_t>(state_mib.size() / 4, 1));
    const double state_growth = state_mib.back() / std::max(state_mib[warm], 1e-9);
    const double rss_growth = rss_mib.back() / std::max(rss_mib[warm], 1e-9);
    emit("state_growth_after_warmup", std::round(state_growth * 1000) / 1000, "ratio",
         "<= 1.1 (last hour / hour " + std::to_string(warm + 1) + ")", state_growth <= 1.1);
    emit("rss_growth_after_warmup", std::round(rss_growth * 1000) / 1000, "ratio",
         "<= 1.1 (last hour / hour " + std::to_string(warm + 1) + ")", rss_growth <= 1.1);
    return 0;
}

// Checkpoint cost at `sources` active sources: the throughput traffic for `events` events
// over `seconds` (every source active at the end), then save_state and restore_state timed
// (median of 5).
int checkpoint(const Options& o) {
    benchmark_name = "analyzer-checkpoint";
    const std::uint64_t events = o.events.value_or(2'000'000);
    Workload w(o.sources, o.seed);
    Analyzer analyzer;
    Observation obs;
    const double step = static_cast<double>(o.seconds) * 1e9 / static_cast<double>(events);
    for (std::uint64_t n = 0; n < events; ++n) {
        w.generate(t0 + static_cast<std::int64_t>(static_cast<double>(n) * step), obs);
        analyzer.observe(obs);
    }
    const auto totals = analyzer.totals();
    std::vector<double> save_ms, restore_ms;
    std::string bytes;
    for (int rep = 0; rep < 5; ++rep) {
        auto start = Clock::now();
        bytes = analyzer.save_state();
        save_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
        start = Clock::now();
        auto restored = Analyzer::restore_state(bytes, analyzer.config());
        restore_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
        if (!restored) {
            std::cerr << "bench_analyzer: restore failed: " << restored.error() << "\n";
            return 1;
        }
        if (restored->totals().active_sources != totals.active_sources ||
            restored->incidents().size() != analyzer.incidents().size()) {
            std::cerr << "bench_analyzer: the restored engine differs\n";
            return 1;
        }
    }
    std::sort(save_ms.begin(), save_ms.end());
    std::sort(restore_ms.begin(), restore_ms.end());
    std::cerr << "bench_analyzer: checkpoint of " << totals.active_sources << " active sources, "
              << analyzer.incidents().size() << " incidents in memory, engine state "
              << mib(static_cast<double>(analyzer.memory_bytes())) << " MiB: " << bytes.size() << " bytes\n";
    emit("active_sources", static_cast<double>(totals.active_sources), "sources");
    emit("state", std::round(mib(static_cast<double>(analyzer.memory_bytes())) * 10) / 10, "MiB");
    emit("checkpoint_size", std::round(mib(static_cast<double>(bytes.size())) * 100) / 100, "MiB");
    emit("save_time", std::round(save_ms[2] * 10) / 10, "ms");
    emit("restore_time", std::round(restore_ms[2] * 10) / 10, "ms");
    return 0;
}

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
            if (a == "--mode")
                o.mode = value();
            else if (a == "--events")
                o.events = bulkhead::bench::to_number(a, value());
            else if (a == "--sources")
                o.sources = bulkhead::bench::to_number(a, value());
            else if (a == "--seconds")
                o.seconds = bulkhead::bench::to_number(a, value());
            else if (a == "--hours")
                o.hours = bulkhead::bench::to_number(a, value());
            else if (a == "--events-per-hour")
                o.events_per_hour = bulkhead::bench::to_number(a, value());
            else if (a == "--seed")
                o.seed = bulkhead::bench::to_number(a, value());
            else if (a == "--help" || a == "-h") {
                std::cout << usage;
                return 0;
            } else {
                throw std::invalid_argument("unknown option " + a);
            }
        }
        if (o.sources == 0 || o.events == 0u || o.seconds == 0 || o.hours == 0 || o.events_per_hour == 0)
            throw std::invalid_argument("sizes must be positive");
        if (o.mode != "throughput" && o.mode != "memory" && o.mode != "checkpoint")
            throw std::invalid_argument("--mode: not throughput, memory or checkpoint");
    } catch (const std::invalid_argument& e) {
        std::cerr << "bench_analyzer: " << e.what() << "\n" << usage;
        return 2;
    }
    if (o.mode == "memory")
        return memory(o);
    if (o.mode == "checkpoint")
        return checkpoint(o);
    return throughput(o);
}
