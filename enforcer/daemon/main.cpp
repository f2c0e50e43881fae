// bulkhead-enforcer: keeps table inet bulkhead in force on this host and turns NFLOG drops
// into drop events. One thread, one poll loop: the ruleset source, NFLOG, signals and
// timers are file descriptors. Events go to --events (stdout by default) or the controller;
// the log (spdlog, levels) goes to stderr. Configuration: flags and/or a JSON file
// (--config, members as the long flags with '_' for '-'); a flag wins over the file.
#include "common/files/secret_file.hpp"
#include "common/logging/logging.hpp"
#include "common/version.hpp"
#include "enforcer/daemon/enforcer_config.hpp"
#include "enforcer/daemon/enforcer_daemon.hpp"

#include <CLI/CLI.hpp>

#include <cstdint>
#include <cstdio>
#include <set>
#include <string>

#include <unistd.h>

int main(int argc, char** argv) {
    bulkhead::enforcer::EnforcerSettings settings;
    auto& options = settings.daemon;
    std::string config_file;
    CLI::App app{"bulkhead-enforcer: applies Bulkhead rulesets through netlink and reports drops"};
    app.set_version_flag("--version", "bulkhead-enforcer " + std::string(bulkhead::product_version));
    app.add_option("--config", config_file,
                   "JSON configuration file (/etc/bulkhead/enforcer.json): members as the long flags, '_' for '-'");
    app.add_option("--enforcer-id", options.enforcer_id, "This enforcer's id in the inventory");
    auto* ruleset = app.add_option("--ruleset", options.ruleset_path,
                                   "Ruleset file (bulkhead-ruleset/1 JSON) or a directory holding ruleset.json; watched");
    auto* controller = app.add_option("--controller", options.controller_url,
                                      "Controller URL https://HOST:PORT (http:// on loopback only): rulesets are "
                                      "pushed on its control channel, events spooled and uploaded");
    ruleset->excludes(controller);
    controller->excludes(ruleset);
    app.add_option("--ca", options.ca_file, "CA certificate (PEM) the controller's certificate must chain to");
    app.add_option("--enrollment-token", options.enrollment_token_file,
                   "File holding the one-time enrollment token (unused once <state-dir>/credential exists)");
    app.add_option("--spool-max-bytes", options.spool_max_bytes,
                   "Bound of the event spool in <state-dir>/spool; the oldest segment is evicted (counted) when full")
        ->capture_default_str()
        ->check(CLI::Range(std::uint64_t{64 * 1024}, std::uint64_t{1} << 40));
    app.add_option("--state-dir", options.state_dir, "Where last-known-good is kept")
        ->capture_default_str();
    auto* events = app.add_option("--events", options.events_path,
                                  "Event output: a file (appended) or - for stdout; with --controller an optional "
                                  "tee of what is spooled and uploaded (default: none)")
                       ->capture_default_str();
    app.add_option("--metrics-file", options.metrics_path,
                   "Prometheus text file, rewritten atomically every second (empty: off)");
    app.add_option("--metrics-listen", options.metrics_listen,
                   "HOST:PORT serving GET /metrics over plain HTTP, e.g. the management address (empty: off)");
    app.add_option("--drift-interval", options.drift_interval_seconds,
                   "Seconds between drift checks (SIGUSR1 checks at once)")
        ->capture_default_str()
        ->check(CLI::Range(1, 86400));
    app.add_option("--drop-group", options.drop_group, "NFLOG group of drops")->capture_default_str();
    app.add_option("--allowed-group", options.allowed_group,
                   "NFLOG group of accepted new connections (-1: off)")
        ->capture_default_str();
    app.add_option("--repeat-window-ms", options.repeat_window_ms,
                   "Identical drops within this window are counted, not repeated")
        ->capture_default_str();
    app.add_option("--flow-interval", options.flow_interval_seconds,
                   "Seconds per allowed-flow summary")
        ->capture_default_str();
    app.add_flag("--no-nflog", options.no_nflog, "Apply rulesets only; do not read NFLOG");
    app.add_flag("--port-discovery", options.port_discovery,
                 "Watch rtnetlink for VM ports (--port-patterns), bind ports the inventory names by MAC, "
                 "apply --unknown-ports to the rest");
    app.add_option("--port-patterns", options.port_patterns,
                   "Interface name patterns of VM ports (* and ?), e.g. vnet* tap*")
        ->capture_default_str()
        ->expected(1, 64);
    app.add_option("--unknown-ports", options.unknown_ports,
                   "What a VM port with a MAC in no workload gets until identified: isolate, monitor or allow")
        ->capture_default_str()
        ->check(CLI::IsMember({"isolate", "monitor", "allow"}));
    app.add_option("--libvirt-dir", options.libvirt_dir,
                   "libvirt's live domain XML directory (names, UUIDs, labels, each NIC's MAC and tap)")
        ->capture_default_str();
    app.add_option("--log-level", settings.log_level,
                   "Least severe log record written to stderr: trace, debug, info, warn, error, critical, off")
        ->capture_default_str();
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int code = app.exit(e);
        return code == 0 ? 0 : 2;
    }
    std::set<std::string> given;
    for (const CLI::Option* option : app.get_options()) {
        if (option->count() > 0) {
            given.insert("--" + option->get_single_name());
        }
    }
    if (!config_file.empty()) {
        if (auto loaded = bulkhead::enforcer::load_enforcer_config(config_file, given, settings); !loaded) {
            std::fprintf(stderr, "bulkhead-enforcer: %s\n", loaded.error().c_str());
            return 2;
        }
    }
    if (options.enforcer_id.empty()) {
        std::fprintf(stderr, "bulkhead-enforcer: an enforcer id is required (--enforcer-id, or enforcer_id in --config)\n");
        return 2;
    }
    if (options.ruleset_path.empty() == options.controller_url.empty()) {
        std::fprintf(stderr, "bulkhead-enforcer: exactly one of --ruleset and --controller is required\n");
        return 2;
    }
    if (options.controller_url.empty() && (!options.ca_file.empty() || !options.enrollment_token_file.empty())) {
        std::fprintf(stderr, "bulkhead-enforcer: --ca and --enrollment-token need --controller\n");
        return 2;
    }
    if (!options.controller_url.empty() && events->count() == 0 && !given.contains("--events") &&
        options.events_path == "-") {
        options.events_path.clear();  // no tee unless asked for
    }
    // The token is read only until a credential is stored; a leftover token file is still
    // refused when other users can read it (common/files/secret_file.hpp).
    if (!options.enrollment_token_file.empty() && ::access(options.enrollment_token_file.c_str(), F_OK) == 0) {
        if (auto safe = bulkhead::files::check_secret_file(options.enrollment_token_file, "enrollment token"); !safe) {
            std::fprintf(stderr, "bulkhead-enforcer: %s\n", safe.error().c_str());
            return 2;
        }
    }
    if (auto configured = bulkhead::logging::setup("bulkhead-enforcer", settings.log_level); !configured) {
        std::fprintf(stderr, "bulkhead-enforcer: log level: %s\n", configured.error().c_str());
        return 2;
    }
    return bulkhead::enforcer::run_daemon(options);
}
