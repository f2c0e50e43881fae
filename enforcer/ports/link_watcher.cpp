#include "enforcer/ports/link_watcher.hpp"

#include <libmnl/libmnl.h>
#include <linux/if.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <vector>

namespace bulkhead::enforcer::ports {
namespace {

// One datagram of a dump or a notification burst: the kernel fills up to 32 KiB per
// datagram for dumps (libmnl 1.0.5's MNL_SOCKET_DUMP_SIZE; Debian 12 ships 1.0.4 without it).
constexpr std::size_t receive_buffer_bytes = 32768;

struct SocketCloser {
    void operator()(mnl_socket* s) const { mnl_socket_close(s); }
};
using Socket = std::unique_ptr<mnl_socket, SocketCloser>;

struct Decoded {
    LinkChanges* changes = nullptr;
    std::uint64_t* skipped = nullptr;
};

int link_attribute(const nlattr* attr, void* data) {
    auto** table = static_cast<const nlattr**>(data);
    const int type = mnl_attr_get_type(attr);
    if (mnl_attr_type_valid(attr, IFLA_MAX) < 0) {
        return MNL_CB_OK;  // newer kernel attribute: not ours
    }
    if (type == IFLA_IFNAME && mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) < 0) {
        return MNL_CB_ERROR;
    }
    table[type] = attr;
    return MNL_CB_OK;
}

int neigh_attribute(const nlattr* attr, void* data) {
    auto** table = static_cast<const nlattr**>(data);
    if (mnl_attr_type_valid(attr, NDA_MAX) < 0) {
        return MNL_CB_OK;
    }
    table[mnl_attr_get_type(attr)] = attr;
    return MNL_CB_OK;
}

void decode_link(const nlmsghdr* nlh, Decoded& d) {
    if (mnl_nlmsg_get_payload_len(nlh) < sizeof(ifinfomsg)) {
        ++*d.skipped;
        return;
    }
    const auto* ifi = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(nlh));
    if (nlh->nlmsg_type == RTM_DELLINK) {
        d.changes->links.push_back(LinkChange{true, Link{ifi->ifi_index, {}, {}}});
        return;
    }
    const nlattr* table[IFLA_MAX + 1] = {};
    if (mnl_attr_parse(nlh, sizeof(ifinfomsg), link_attribute, table) != MNL_CB_OK ||
        table[IFLA_IFNAME] == nullptr) {
        ++*d.skipped;
        return;
    }
    Link link;
    link.index = ifi->ifi_index;
    link.name = mnl_attr_get_str(table[IFLA_IFNAME]);
    if (table[IFLA_ADDRESS] != nullptr) {
        link.mac = format_mac(static_cast<const std::uint8_t*>(mnl_attr_get_payload(table[IFLA_ADDRESS])),
                              mnl_attr_get_payload_len(table[IFLA_ADDRESS]))
                       .value_or("");
    }
    d.changes->links.push_back(LinkChange{false, std::move(link)});
}

void decode_neighbour(const nlmsghdr* nlh, Decoded& d) {
    if (nlh->nlmsg_type != RTM_NEWNEIGH) {
        return;  // an address once seen behind a port stays known while the port lives
    }
    if (mnl_nlmsg_get_payload_len(nlh) < sizeof(ndmsg)) {
        ++*d.skipped;
        return;
    }
    const auto* nd = static_cast<const ndmsg*>(mnl_nlmsg_get_payload(nlh));
    if ((nd->ndm_state & (NUD_INCOMPLETE | NUD_FAILED | NUD_NOARP)) != 0 ||
        (nd->ndm_family != AF_INET && nd->ndm_family != AF_INET6)) {
        return;
    }
    const nlattr* table[NDA_MAX + 1] = {};
    if (mnl_attr_parse(nlh, sizeof(ndmsg), neigh_attribute, table) != MNL_CB_OK || table[NDA_DST] == nullptr) {
        ++*d.skipped;
        return;
    }
    Neighbour n;
    n.index = nd->ndm_ifindex;
    const auto length = mnl_attr_get_payload_len(table[NDA_DST]);
    const auto* bytes = static_cast<const std::uint8_t*>(mnl_attr_get_payload(table[NDA_DST]));
    if (nd->ndm_family == AF_INET && length == 4) {
        n.address.family = policy::Family::Ipv4;
    } else if (nd->ndm_family == AF_INET6 && length == 16) {
        n.address.family = policy::Family::Ipv6;
    } else {
        ++*d.skipped;
        return;
    }
    std::memcpy(n.address.bytes.data(), bytes, length);
    if (table[NDA_LLADDR] != nullptr) {
        n.lladdr = format_mac(static_cast<const std::uint8_t*>(mnl_attr_get_payload(table[NDA_LLADDR])),
                              mnl_attr_get_payload_len(table[NDA_LLADDR]))
                       .value_or("");
    }
    d.changes->neighbours.push_back(std::move(n));
}

int on_message(const nlmsghdr* nlh, void* data) {
    auto& d = *static_cast<Decoded*>(data);
    switch (nlh->nlmsg_type) {
    case RTM_NEWLINK:
    case RTM_DELLINK: decode_link(nlh, d); break;
    case RTM_NEWNEIGH:
    case RTM_DELNEIGH: decode_neighbour(nlh, d); break;
    default: break;
    }
    return MNL_CB_OK;
}

std::string error_text(std::string_view what) { return std::string(what) + ": " + std::strerror(errno); }

// One request and its whole dump on a fresh blocking socket.
std::expected<LinkChanges, std::string> dump(int type, std::uint8_t family, std::uint64_t& skipped) {
    Socket socket(mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC));
    if (!socket) {
        return std::unexpected(error_text("rtnetlink socket"));
    }
    if (mnl_socket_bind(socket.get(), 0, MNL_SOCKET_AUTOPID) < 0) {
        return std::unexpected(error_text("rtnetlink bind"));
    }
    std::vector<char> buffer(receive_buffer_bytes);
    nlmsghdr* nlh = mnl_nlmsg_put_header(buffer.data());
    nlh->nlmsg_type = static_cast<std::uint16_t>(type);
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    const auto seq = static_cast<unsigned>(std::time(nullptr));
    nlh->nlmsg_seq = seq;
    if (type == RTM_GETLINK) {
        auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
        ifi->ifi_family = family;
    } else {
        auto* nd = static_cast<ndmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ndmsg)));
        nd->ndm_family = family;
    }
    if (mnl_socket_sendto(socket.get(), nlh, nlh->nlmsg_len) < 0) {
        return std::unexpected(error_text("rtnetlink dump request"));
    }
    const auto portid = mnl_socket_get_portid(socket.get());
    LinkChanges changes;
    Decoded d{&changes, &skipped};
    for (;;) {
        const auto n = mnl_socket_recvfrom(socket.get(), buffer.data(), buffer.size());
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return std::unexpected(error_text("rtnetlink dump"));
        }
        const int r = mnl_cb_run(buffer.data(), static_cast<std::size_t>(n), seq, portid, on_message, &d);
        if (r == MNL_CB_STOP) {
            return changes;
        }
        if (r < 0) {
            return std::unexpected(error_text("rtnetlink dump"));
        }
    }
}

}  // namespace

struct LinkWatcher::Impl {
    Socket socket;
    std::vector<char> buffer = std::vector<char>(receive_buffer_bytes);
    std::uint64_t skipped = 0;
};

LinkWatcher::LinkWatcher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LinkWatcher::LinkWatcher(LinkWatcher&&) noexcept = default;
LinkWatcher& LinkWatcher::operator=(LinkWatcher&&) noexcept = default;
LinkWatcher::~LinkWatcher() = default;

std::expected<LinkWatcher, std::string> LinkWatcher::open() {
    auto impl = std::make_unique<Impl>();
    impl->socket.reset(mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!impl->socket) {
        return std::unexpected(error_text("rtnetlink socket"));
    }
    if (mnl_socket_bind(impl->socket.get(), RTMGRP_LINK | RTMGRP_NEIGH, MNL_SOCKET_AUTOPID) < 0) {
        return std::unexpected(error_text("rtnetlink subscribe (link, neighbour)"));
    }
    // A burst of a hundred desktops starting at once is a few hundred messages.
    const int bytes = 1 << 20;
    if (setsockopt(mnl_socket_get_fd(impl->socket.get()), SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0) {
        (void)setsockopt(mnl_socket_get_fd(impl->socket.get()), SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
    }
    return LinkWatcher(std::move(impl));
}

int LinkWatcher::fd() const { return mnl_socket_get_fd(impl_->socket.get()); }

std::uint64_t LinkWatcher::skipped_messages() const { return impl_->skipped; }

std::expected<std::vector<Link>, std::string> LinkWatcher::dump_links() {
    auto changes = dump(RTM_GETLINK, AF_UNSPEC, impl_->skipped);
    if (!changes) {
        return std::unexpected(changes.error());
    }
    std::vector<Link> links;
    for (auto& change : changes->links) {
        if (!change.gone) {
            links.push_back(std::move(change.link));
        }
    }
    return links;
}

std::expected<std::vector<Neighbour>, std::string> LinkWatcher::dump_neighbours() {
    auto changes = dump(RTM_GETNEIGH, AF_UNSPEC, impl_->skipped);
    if (!changes) {
        return std::unexpected(changes.error());
    }
    return std::move(changes->neighbours);
}

std::expected<LinkChanges, std::string> LinkWatcher::read_available() {
    LinkChanges changes;
    Decoded d{&changes, &impl_->skipped};
    for (;;) {
        const auto n = mnl_socket_recvfrom(impl_->socket.get(), impl_->buffer.data(), impl_->buffer.size());
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return changes;
            }
            if (errno == EINTR) {
                continue;
            }
            if (errno == ENOBUFS) {
                changes.resync_needed = true;  // the kernel dropped notifications
                continue;
            }
            return std::unexpected(error_text("rtnetlink read"));
        }
        // Notifications: sequence 0, port id 0 (the kernel).
        if (mnl_cb_run(impl_->buffer.data(), static_cast<std::size_t>(n), 0, 0, on_message, &d) < 0) {
            ++impl_->skipped;
        }
    }
}

}  // namespace bulkhead::enforcer::ports
