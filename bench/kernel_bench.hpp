// Shared pieces of the kernel benchmarks (bench_apply, bench_element_rate, bench_nflog):
// the JSON figure lines of bench/run.sh, child processes timed with their CPU use, the
// ~100,000-element ruleset they load, and the normalised `nft -j` listing that compares
// two tables. The scripts (bench/benchmarks/*.sh) create the throwaway network namespace
// and run the programs inside it; nothing here changes namespaces.
#pragma once

#include "policies/ruleset.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace bulkhead::bench {

using BenchClock = std::chrono::steady_clock;

// One line for bench/run.sh: {"benchmark","metric","value","unit","target"[,"met"]} plus
// `extra` members (baseline, baseline_value, ratio, notes). Whole numbers print as
// integers, others rounded to `decimals`.
class FigureWriter {
public:
    explicit FigureWriter(std::string benchmark) : benchmark_(std::move(benchmark)) {}
    void emit(const std::string& metric, double value, const std::string& unit,
              std::optional<std::string> target = std::nullopt, std::optional<bool> met = std::nullopt,
              const nlohmann::ordered_json& extra = nlohmann::ordered_json::object(),
              int decimals = 3) const;
    void skip(const std::string& metric, const std::string& reason) const;
    // {"baseline":name,"baseline_value":v,"ratio":value/v} (ratio rounded to 4 places).
    static nlohmann::ordered_json baseline(const std::string& name, double baseline_value, double value);

private:
    std::string benchmark_;
};

double round_to(double value, int decimals);

struct Stats {
    double median = 0, best = 0, worst = 0, p50 = 0, p99 = 0, mean = 0;
    std::size_t count = 0;
};
// Percentiles by the nearest-rank method; median = upper middle for an even count (as
// bench_median in lib.sh).
Stats stats_of(std::vector<double> values);

struct CommandResult {
    int status = -1;       // exit status, -1 if it did not exit normally
    std::string output;    // stdout + stderr (capture) or "" (timed runs discard stdout)
    double wall_ms = 0, user_ms = 0, sys_ms = 0;
};
// sh -c COMMAND with stdout and stderr captured.
CommandResult run_capture(const std::string& command);
// Runs argv (no shell) with stdout to /dev/null and stderr captured; wall time from fork to
// reap, user/system CPU from wait4's rusage. `timeout_s` kills it (SIGKILL) when exceeded.
CommandResult run_timed(const std::vector<std::string>& argv, double timeout_s = 600);

struct CpuTimes {
    double user_ms = 0, sys_ms = 0;
};
CpuTimes self_cpu();    // RUSAGE_SELF
CpuTimes thread_cpu();  // RUSAGE_THREAD

// The benchmark ruleset: the largest per-host ruleset of a generated fleet (bench/
// fleet_generator) grown to `vdis` VDIs over 50 hypervisors. The per-host shared segment
// sets grow with the fleet (about 2.2 elements per VDI on the fullest host), so 42,240
// VDIs give about 100,000 elements, with the fleet's real set shapes (interval address
// sets, concatenated class sets, verdict maps) and ~2,000 rules.
inline constexpr std::size_t default_bench_vdis = 42'240;
ruleset::Ruleset generate_big_ruleset(std::size_t vdis = default_bench_vdis);
// From a bulkhead-ruleset/1 JSON file (as written by save_ruleset), or generated when
// `path` is empty; logs what it did on stderr.
ruleset::Ruleset load_or_generate(const std::string& path, std::size_t vdis);
void save_ruleset(const ruleset::Ruleset& ruleset, const std::string& path);

void write_text(const std::string& path, const std::string& text);

// `nft -j list table inet bulkhead`, with handles dropped, counters zeroed, elements sorted
// and objects ordered by kind and name (chain rule order kept): equal for two tables with
// the same content however they were built. {"error": ...} if nft failed.
nlohmann::json normalised_listing();

// First differing line of two JSON documents (pretty-printed), "" when equal.
std::string first_difference(const nlohmann::json& a, const nlohmann::json& b);

// Throws unless the calling process runs in the named network namespace (`ip netns add
// NAME`, /run/netns/NAME): the kernel benchmarks delete and load table inet bulkhead and must
// never touch the namespace they were started from. The scripts pass --netns.
void require_netns(const std::string& name);

// Deletes table inet bulkhead if present (nft delete table), so the next load starts empty.
bool delete_table();

// The ruleset with one set's element list replaced (a shallow copy: other lists shared).
void replace_elements(ruleset::Ruleset& ruleset, const std::string& set,
                      ruleset::ElementList elements);

}  // namespace bulkhead::bench
