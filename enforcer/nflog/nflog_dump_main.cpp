// bulkhead-nflog-dump: reads NFLOG groups with NflogSource and prints one JSON object per
// event (or per aggregated record with --aggregate) on stdout; counters go to stderr as one
// JSON object per line every --counters-every seconds and at exit (SIGINT/SIGTERM), and
// diagnostics go to stderr through spdlog (--log-level). A debugging tool, also handy to
// look at what a compiled ruleset logs:
//
//   bulkhead-nflog-dump --group 10 --group 11 --ruleset /var/lib/bulkhead/ruleset.json
//
// Compiled to nothing unless BULKHEAD_NFLOG_DUMP_MAIN is defined: this folder's *.cpp are
// globbed into the bulkhead_nflog library, which must not contain a main(). See README.md
// for the CMake lines.
#ifdef BULKHEAD_NFLOG_DUMP_MAIN

#include "common/logging/logging.hpp"
#include "enforcer/nflog/attribution.hpp"
#include "enforcer/nflog/event_aggregator.hpp"
#include "enforcer/nflog/nflog_source.hpp"
#include "policies/ruleset.hpp"

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <poll.h>
#include <signal.h>
#include <time.h>

namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) {
    g_stop = 1;
}

std::int64_t clock_ns(clockid_t clock) {
    timespec ts{};
    clock_gettime(clock, &ts);
    return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

} // namespace

int main(int argc, char** argv) {
    using namespace bulkhead;
    std::vector<int> groups;
    std::string ruleset_path;
    bool aggregate = false;
    int window_ms = 1000;
    int flow_interval_s = 60;
    int counters_every_s = 0;
    std::uint64_t generation = 0;
    nflog::NflogSourceConfig config;

    CLI::App app{"bulkhead-nflog-dump: NFLOG drop events as JSON lines"};
    app.add_option("--group", groups, "NFLOG group to bind (repeatable; default 10 and 11)");
    app.add_option("--ruleset", ruleset_path,
                   "bulkhead-ruleset/1 JSON: attribute events to workloads");
    app.add_option("--generation", generation, "policy generation to stamp on events");
    app.add_flag("--aggregate", aggregate, "print aggregated records instead of every event");
    app.add_option("--window-ms", window_ms, "repeat window for --aggregate")
        ->capture_default_str();
    app.add_option("--flow-interval", flow_interval_s, "allowed-flow interval (s) for --aggregate")
        ->capture_default_str();
    app.add_option("--counters-every", counters_every_s,
                   "print counters to stderr every N s (0: at exit)");
    app.add_option("--copy-range", config.copy_range, "bytes of each packet copied")
        ->capture_default_str();
    app.add_option("--qthreshold", config.queue_threshold, "messages per batch")
        ->capture_default_str();
    app.add_option("--timeout-cs", config.flush_timeout_cs, "batch flush timeout, 1/100 s")
        ->capture_default_str();
    app.add_option("--rcvbuf", config.rcvbuf_bytes, "socket receive buffer (bytes)")
        ->capture_default_str();
    std::string log_level = "info";
    app.add_option("--log-level", log_level,
                   "Least severe diagnostic written to stderr: trace, debug, info, warn, error, critical, off")
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    if (auto configured = logging::setup("bulkhead-nflog-dump", log_level); !configured) {
        std::fprintf(stderr, "bulkhead-nflog-dump: --log-level: %s\n", configured.error().c_str());
        return 2;
    }
    if (!groups.empty()) {
        config.groups.assign(groups.begin(), groups.end());
    }
    config.rcvbuf_max_bytes = std::max(config.rcvbuf_max_bytes, config.rcvbuf_bytes);

    nflog::Attributor attributor;
    if (!ruleset_path.empty()) {
        std::ifstream in(ruleset_path);
        auto document = nlohmann::json::parse(in, nullptr, false);
        auto ruleset =
            document.is_discarded()
                ? std::expected<ruleset::Ruleset, std::string>(std::unexpected("not JSON"))
                : ruleset::ruleset_from_json(document);
        if (!ruleset) {
            spdlog::error("nflog-dump: ruleset {}: {}", ruleset_path, ruleset.error());
            return 2;
        }
        attributor = nflog::Attributor(ruleset->ports, generation);
    }

    auto source = nflog::NflogSource::open(config);
    if (!source) {
        spdlog::error("nflog-dump: NFLOG groups: {}", source.error());
        return 1;
    }
    struct sigaction action {};
    action.sa_handler = on_signal;
    sigaction(SIGINT, &action, nullptr);
    sigaction(SIGTERM, &action, nullptr);

    nflog::EventAggregator aggregator(nflog::AggregatorConfig{
        .drop_window_ns = std::int64_t{window_ms} * 1'000'000,
        .max_drop_keys = 16'384,
        .allowed_interval_ns = std::int64_t{flow_interval_s} * 1'000'000'000,
        .max_allowed_keys = 65'536});
    std::vector<nflog::AggregatedRecord> records;
    auto print_records = [&] {
        for (const auto& r : records) {
            std::fputs((nflog::to_json(r).dump() + "\n").c_str(), stdout);
        }
        records.clear();
        std::fflush(stdout);
    };
    // Counters stay plain JSON lines (not log records) so a script can parse them.
    auto print_counters = [&] {
        auto j = nflog::to_json(source->counters());
        j["rcvbuf_bytes"] = source->rcvbuf_bytes();
        std::fputs((j.dump() + "\n").c_str(), stderr);
    };

    std::int64_t next_counters =
        clock_ns(CLOCK_MONOTONIC) + std::int64_t{counters_every_s} * 1'000'000'000;
    while (g_stop == 0) {
        pollfd p{source->fd(), POLLIN, 0};
        (void)poll(&p, 1, 100);
        auto read = source->read_available([&](const nflog::DropEvent& event) {
            nflog::DropEvent e = event;
            attributor.attribute(e);
            if (aggregate) {
                aggregator.add(e, clock_ns(CLOCK_REALTIME), records);
            } else {
                std::fputs((nflog::to_json(e).dump() + "\n").c_str(), stdout);
            }
        });
        if (!read) {
            spdlog::error("nflog-dump: NFLOG read: {}", read.error());
            return 1;
        }
        aggregator.advance(clock_ns(CLOCK_REALTIME), records);
        print_records();
        if (counters_every_s > 0 && clock_ns(CLOCK_MONOTONIC) >= next_counters) {
            print_counters();
            next_counters += std::int64_t{counters_every_s} * 1'000'000'000;
        }
    }
    aggregator.flush(records);
    print_records();
    print_counters();
    return 0;
}

#endif // BULKHEAD_NFLOG_DUMP_MAIN
