// PortFollower: port discovery wired to the daemon. It owns the rtnetlink watcher, the
// libvirt adapter and the table of VM ports, and turns the source's ruleset (the
// controller's copy, with MAC stand-ins) into the kernel's (ports by current name,
// unidentified ports isolated) — enforcer/ports/port_discovery.hpp says why. The daemon
// applies what localize() returns whenever read() says the ports changed, so a refreshed
// desktop is enforced again as soon as the kernel announces its new tap.
#pragma once

#include "enforcer/daemon/enforcer_daemon.hpp"
#include "enforcer/ports/link_watcher.hpp"
#include "enforcer/ports/port_discovery.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <expected>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace bulkhead::enforcer {

class PortFollower {
public:
    // Validates the options (patterns, mode), subscribes to rtnetlink and dumps what is
    // there now. Errors name the option.
    static std::expected<std::unique_ptr<PortFollower>, std::string> open(const DaemonOptions& options);

    int fd() const { return watcher_.fd(); }
    // Reads pending link and neighbour notifications (dumping again when the kernel lost
    // some); true when a port came, went or changed.
    bool read(std::vector<std::string>& errors);
    // Re-reads libvirt's directory when it changed since the last look; true when a NIC changed.
    bool refresh_domains(std::vector<std::string>& errors);

    ruleset::Ruleset localize(const ruleset::Ruleset& canonical) const;
    // port_bound / port_unidentified / port_gone events for what changed since the last
    // call, judged against `canonical` (the workloads it binds).
    std::vector<nlohmann::json> take_events(const ruleset::Ruleset* canonical, std::int64_t now_unix_ms);
    // The ports as the controller and /metrics see them.
    nlohmann::json ports_json(const ruleset::Ruleset* canonical) const;
    std::size_t unidentified_count(const ruleset::Ruleset* canonical) const;

private:
    PortFollower(ports::PortTable table, ports::LinkWatcher watcher, ports::LocalizeOptions localize,
                 std::filesystem::path libvirt_dir);
    std::vector<ports::Port> identify(const ruleset::Ruleset* canonical) const;

    ports::PortTable table_;
    ports::LinkWatcher watcher_;
    ports::LocalizeOptions localize_;
    std::filesystem::path libvirt_dir_;
    std::optional<std::filesystem::file_time_type> libvirt_seen_;  // the directory's mtime when last read
    std::map<std::string, std::string> reported_;  // interface -> workload ("" unidentified) last reported
};

}  // namespace bulkhead::enforcer
