// The enforcer daemon's composition: builds the edges (netlink backend, NFLOG source,
// ruleset source — a watched file or the controller's channel —, state store, event sink
// — JSON lines and/or the controller's spool —, metrics file) and runs the poll loop.
#pragma once

#include "common/version.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace bulkhead::enforcer {

struct DaemonOptions {
    std::string enforcer_id;
    // Exactly one ruleset source: a watched ruleset file or the controller's push channel.
    std::string ruleset_path;
    std::string controller_url;         // https://HOST:PORT (http:// on loopback only)
    std::string ca_file;                // the CA the controller's certificate must chain to
    std::string enrollment_token_file;  // one-time token; unused once a credential is stored
    std::uint64_t spool_max_bytes = 64ull * 1024 * 1024;
    std::string version{product_version};
    std::string state_dir = "/var/lib/bulkhead-enforcer";
    // JSON-lines event output ("-" = stdout). With a controller, events go to the spool and
    // are uploaded; this is then an optional tee (empty: none).
    std::string events_path = "-";
    std::string metrics_path;
    // HOST:PORT serving GET /metrics (plain HTTP, e.g. the hypervisor's management address);
    // empty: off.
    std::string metrics_listen;
    int drift_interval_seconds = 30;
    int drop_group = 10;
    int allowed_group = 11;
    int repeat_window_ms = 1000;
    int flow_interval_seconds = 60;
    bool no_nflog = false;
    // Port discovery (enforcer/ports): links whose names match `port_patterns` are the VM
    // ports; ports the inventory binds by MAC follow their NIC under whatever name it has
    // now; a port whose MAC no workload has gets `unknown_ports` (isolate, monitor, allow).
    // Off by default on the command line (a host without VM ports changes nothing); the
    // packaged /etc/bulkhead/enforcer.json turns it on.
    bool port_discovery = false;
    std::vector<std::string> port_patterns{"vnet*", "tap*", "macvtap*", "vif*"};
    std::string unknown_ports = "isolate";
    // libvirt's live domain XML (names, UUIDs, labels, each NIC's MAC and tap); a directory
    // that does not exist means no libvirt adapter, netlink alone.
    std::string libvirt_dir = "/run/libvirt/qemu";
};

// Runs until SIGINT/SIGTERM. SIGHUP re-reads the ruleset source, SIGUSR1 checks drift now.
// Returns the process exit code. Logs through spdlog's default logger (main() sets it up):
// start-up errors, refused rulesets, failed applies, drift, the controller connection.
int run_daemon(const DaemonOptions& options);

}  // namespace bulkhead::enforcer
