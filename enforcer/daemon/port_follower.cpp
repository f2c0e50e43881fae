#include "enforcer/daemon/port_follower.hpp"

#include "enforcer/ports/libvirt_domains.hpp"

namespace bulkhead::enforcer {

std::expected<std::unique_ptr<PortFollower>, std::string> PortFollower::open(const DaemonOptions& options) {
    auto patterns = ports::PortPatterns::parse(options.port_patterns);
    if (!patterns) {
        return std::unexpected("--port-patterns: " + patterns.error());
    }
    auto mode = ports::unknown_port_mode_from_string(options.unknown_ports);
    if (!mode) {
        return std::unexpected("--unknown-ports: \"" + options.unknown_ports +
                               "\" is not isolate, monitor or allow");
    }
    // Subscribe first, dump second: a port created in between is seen twice, never missed.
    auto watcher = ports::LinkWatcher::open();
    if (!watcher) {
        return std::unexpected("port discovery: " + watcher.error());
    }
    ports::LocalizeOptions localize{true, *mode, static_cast<std::uint16_t>(options.drop_group)};
    std::unique_ptr<PortFollower> follower(
        new PortFollower(ports::PortTable(std::move(*patterns)), std::move(*watcher), localize, options.libvirt_dir));
    auto links = follower->watcher_.dump_links();
    if (!links) {
        return std::unexpected("port discovery: " + links.error());
    }
    follower->table_.replace_links(*links);
    if (auto neighbours = follower->watcher_.dump_neighbours()) {
        for (const auto& n : *neighbours) {
            follower->table_.neighbour(n.index, n.address, n.lladdr);
        }
    }
    std::vector<std::string> ignored;
    follower->refresh_domains(ignored);
    return follower;
}

PortFollower::PortFollower(ports::PortTable table, ports::LinkWatcher watcher, ports::LocalizeOptions localize,
                           std::filesystem::path libvirt_dir)
    : table_(std::move(table)), watcher_(std::move(watcher)), localize_(localize), libvirt_dir_(std::move(libvirt_dir)) {}

bool PortFollower::read(std::vector<std::string>& errors) {
    auto changes = watcher_.read_available();
    if (!changes) {
        errors.push_back(changes.error());
        return false;
    }
    bool changed = false;
    for (const auto& change : changes->links) {
        changed = (change.gone ? table_.link_gone(change.link.index) : table_.link_up(change.link)) || changed;
    }
    for (const auto& n : changes->neighbours) {
        changed = table_.neighbour(n.index, n.address, n.lladdr) || changed;
    }
    if (changes->resync_needed) {
        if (auto links = watcher_.dump_links()) {
            changed = table_.replace_links(*links) || changed;
        } else {
            errors.push_back(links.error());
        }
    }
    if (changed) {
        // A new tap usually means a domain started: libvirt's file may name it already.
        refresh_domains(errors);
    }
    return changed;
}

bool PortFollower::refresh_domains(std::vector<std::string>& errors) {
    if (libvirt_dir_.empty()) {
        return false;
    }
    std::error_code ec;
    // The newest modification time of the directory (a file added, removed or renamed into
    // place, as libvirt does) and of its files (one rewritten in place): a stat per file,
    // no parsing, unless something changed.
    auto stamp = std::filesystem::last_write_time(libvirt_dir_, ec);
    if (!ec) {
        for (std::filesystem::directory_iterator it(libvirt_dir_, ec), end; !ec && it != end; it.increment(ec)) {
            std::error_code file_ec;
            const auto written = it->last_write_time(file_ec);
            if (!file_ec && written > stamp) {
                stamp = written;
            }
        }
    }
    if (ec) {
        libvirt_seen_.reset();
        return table_.set_domains({});  // no libvirt (any more)
    }
    if (libvirt_seen_ == stamp) {
        return false;
    }
    libvirt_seen_ = stamp;
    auto directory = ports::read_domain_directory(libvirt_dir_);
    errors.insert(errors.end(), directory.errors.begin(), directory.errors.end());
    return table_.set_domains(std::move(directory.nics));
}

std::vector<ports::Port> PortFollower::identify(const ruleset::Ruleset* canonical) const {
    static const ruleset::Ruleset empty;
    return table_.identify(canonical != nullptr ? *canonical : empty);
}

ruleset::Ruleset PortFollower::localize(const ruleset::Ruleset& canonical) const {
    return ports::localize(canonical, identify(&canonical), localize_);
}

namespace {

nlohmann::json port_json(const ports::Port& port) {
    nlohmann::json j = {{"interface", port.interface},
                        {"mac", port.guest_mac.empty() ? port.link_mac : port.guest_mac},
                        {"link_mac", port.link_mac},
                        {"state", port.workload.empty() ? "unidentified" : "bound"}};
    if (!port.workload.empty()) {
        j["workload"] = port.workload;
    }
    if (!port.identified_by.empty()) {
        j["identified_by"] = port.identified_by;
    }
    if (port.domain != nullptr) {
        j["domain"] = {{"name", port.domain->domain}, {"uuid", port.domain->uuid}, {"labels", port.domain->labels}};
    }
    if (!port.addresses.empty()) {
        auto& addresses = j["addresses"] = nlohmann::json::array();
        for (const auto& a : port.addresses) {
            addresses.push_back(policy::to_string(a));
        }
    }
    return j;
}

}  // namespace

std::vector<nlohmann::json> PortFollower::take_events(const ruleset::Ruleset* canonical, std::int64_t now_unix_ms) {
    std::vector<nlohmann::json> out;
    std::map<std::string, std::string> now;
    for (const auto& port : identify(canonical)) {
        now[port.interface] = port.workload;
        auto before = reported_.find(port.interface);
        if (before != reported_.end() && before->second == port.workload) {
            continue;
        }
        auto event = port_json(port);
        event["type"] = port.workload.empty() ? "port_unidentified" : "port_bound";
        event["time_unix_ms"] = now_unix_ms;
        if (port.workload.empty()) {
            event["action"] = std::string(ports::to_string(localize_.unknown));
        }
        out.push_back(std::move(event));
    }
    for (const auto& [interface, workload] : reported_) {
        if (!now.contains(interface)) {
            nlohmann::json event = {{"type", "port_gone"}, {"time_unix_ms", now_unix_ms}, {"interface", interface}};
            if (!workload.empty()) {
                event["workload"] = workload;
            }
            out.push_back(std::move(event));
        }
    }
    reported_ = std::move(now);
    return out;
}

nlohmann::json PortFollower::ports_json(const ruleset::Ruleset* canonical) const {
    auto out = nlohmann::json::array();
    for (const auto& port : identify(canonical)) {
        out.push_back(port_json(port));
    }
    return out;
}

std::size_t PortFollower::unidentified_count(const ruleset::Ruleset* canonical) const {
    std::size_t n = 0;
    for (const auto& port : identify(canonical)) {
        n += port.workload.empty() ? 1 : 0;
    }
    return n;
}

}  // namespace bulkhead::enforcer
