// LinkWatcher: the rtnetlink edge of port discovery. One NETLINK_ROUTE socket (libmnl),
// non-blocking, subscribed to RTNLGRP_LINK and RTNLGRP_NEIGH (ARP and IPv6 neighbour
// discovery entries alike), for the daemon's poll loop; full dumps of links and neighbours go over a separate
// blocking socket (at start, and when the kernel dropped notifications: ENOBUFS), so a dump
// never interleaves with notifications. Decoding checks every attribute's length (libmnl's
// validation); a message it cannot use is skipped and counted, never fatal.
#pragma once

#include "enforcer/ports/port_discovery.hpp"

#include <expected>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace bulkhead::enforcer::ports {

struct Neighbour {
    int index = 0;
    policy::IpAddress address;
    std::string lladdr;  // normalised MAC; empty when unresolved
};

struct LinkChange {
    bool gone = false;  // RTM_DELLINK: only link.index is set
    Link link;          // RTM_NEWLINK: a new or changed link (every link, not only ports)
};

struct LinkChanges {
    // In the kernel's order: a port being deleted is often announced as changed (carrier
    // down) and then as removed in one read, and must end up removed.
    std::vector<LinkChange> links;
    std::vector<Neighbour> neighbours;
    bool resync_needed = false; // ENOBUFS: notifications were lost, dump again
};

class LinkWatcher {
public:
    static std::expected<LinkWatcher, std::string> open();
    LinkWatcher(LinkWatcher&&) noexcept;
    LinkWatcher& operator=(LinkWatcher&&) noexcept;
    ~LinkWatcher();

    int fd() const;  // poll for POLLIN
    // What the kernel has now (blocking, bounded by the kernel's answer).
    std::expected<std::vector<Link>, std::string> dump_links();
    std::expected<std::vector<Neighbour>, std::string> dump_neighbours();
    // Reads every pending notification without blocking.
    std::expected<LinkChanges, std::string> read_available();
    std::uint64_t skipped_messages() const;

private:
    struct Impl;
    explicit LinkWatcher(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace bulkhead::enforcer::ports
