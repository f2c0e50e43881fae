// The enforcer daemon's composition: builds the edges (netlink backend, NFLOG source,
// ruleset file source, state store, event sink, metrics file) and runs the poll loop.
#pragma once

#include <iosfwd>
#include <string>

namespace bulkhead::enforcer {

struct DaemonOptions {
    std::string enforcer_id;
    std::string ruleset_path;
    std::string state_dir = "/var/lib/bulkhead-enforcer";
    std::string events_path = "-";
    std::string metrics_path;
    int drift_interval_seconds = 30;
    int drop_group = 10;
    int allowed_group = 11;
    int repeat_window_ms = 1000;
    int flow_interval_seconds = 60;
    bool no_nflog = false;
};

// Runs until SIGINT/SIGTERM. SIGHUP re-reads the ruleset source, SIGUSR1 checks drift now.
// Returns the process exit code; start-up errors are explained on `log`.
int run_daemon(const DaemonOptions& options, std::ostream& log);

}  // namespace bulkhead::enforcer
