#include "enforcer/nflog/nflog_source.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <poll.h>
#include <set>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <utility>

namespace bulkhead::nflog {

namespace {

std::uint16_t to_be16(std::uint16_t v) {
    return std::endian::native == std::endian::little ? std::byteswap(v) : v;
}
std::uint32_t to_be32(std::uint32_t v) {
    return std::endian::native == std::endian::little ? std::byteswap(v) : v;
}

std::string errno_text(int error) {
    return std::strerror(error);
}

std::int64_t realtime_ns() {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

struct MnlSocketDeleter {
    void operator()(mnl_socket* s) const { mnl_socket_close(s); }
};
using MnlSocket = std::unique_ptr<mnl_socket, MnlSocketDeleter>;

// SO_RCVBUFFORCE ignores net.core.rmem_max (needs CAP_NET_ADMIN); SO_RCVBUF is capped by it.
// Returns the size the kernel reports (it doubles the request for bookkeeping overhead).
int set_receive_buffer(int fd, int bytes) {
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0) {
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
    }
    int actual = 0;
    socklen_t length = sizeof actual;
    if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &actual, &length) != 0) {
        return 0;
    }
    return actual;
}

} // namespace

// ---------------------------------------------------------------------------------------

KernelInterfaceNames::KernelInterfaceNames() : fd_(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {}

KernelInterfaceNames::~KernelInterfaceNames() {
    if (fd_ >= 0) {
        close(fd_);
    }
}

bool KernelInterfaceNames::name_of(std::uint32_t ifindex, std::string& name) {
    if (auto it = cache_.find(ifindex); it != cache_.end()) {
        name = it->second;
        return true;
    }
    ++kernel_lookups_;
    ifreq request{};
    request.ifr_ifindex = static_cast<int>(ifindex);
    char fallback[IF_NAMESIZE] = {};
    const char* found = nullptr;
    if (fd_ >= 0) {
        // SIOCGIFNAME on our own socket answers for the namespace the socket was made in,
        // whatever namespace the calling thread is in by now.
        if (ioctl(fd_, SIOCGIFNAME, &request) == 0) {
            request.ifr_name[IF_NAMESIZE - 1] = '\0';
            found = request.ifr_name;
        }
    } else if (if_indextoname(ifindex, fallback) != nullptr) {
        found = fallback;
    }
    if (found == nullptr) {
        return false;
    }
    if (cache_.size() >= 4096) {
        cache_.clear();
    }
    name = cache_.emplace(ifindex, found).first->second;
    return true;
}

// ---------------------------------------------------------------------------------------

struct NflogSource::Impl {
    NflogSourceConfig config;
    MnlSocket socket;
    int fd = -1;
    std::uint32_t portid = 0;
    std::uint32_t next_request_seq = 0;
    int requested_rcvbuf = 0;
    int actual_rcvbuf = 0;
    KernelInterfaceNames names;
    NflogStream stream{&names};
    std::vector<std::byte> buffer;
    // Datagrams with log messages that arrived while open() waited for an ACK.
    std::vector<std::vector<std::byte>> pending;
    DeliveryPacer pacer{config.pacing};

    // The kernel's batching for `mode` (qthreshold, flush timeout).
    std::pair<std::uint32_t, std::uint32_t> batching(DeliveryMode mode) const {
        if (config.adaptive_delivery && mode == DeliveryMode::Immediate) {
            return {1, 0};
        }
        return {config.queue_threshold, config.flush_timeout_cs};
    }
    void apply_delivery(DeliveryMode mode);
    void pace(std::int64_t now_ns, std::uint64_t events) {
        if (!config.adaptive_delivery) {
            return;
        }
        if (auto changed = pacer.observe(now_ns, events)) {
            apply_delivery(*changed);
        }
    }

    void on_enobufs() {
        ++stream.counters().enobufs;
        if (requested_rcvbuf >= config.rcvbuf_max_bytes) {
            return;
        }
        const int grown = requested_rcvbuf > config.rcvbuf_max_bytes / 2
                              ? config.rcvbuf_max_bytes
                              : std::max(requested_rcvbuf * 2, 4096);
        requested_rcvbuf = grown;
        actual_rcvbuf = set_receive_buffer(fd, grown);
        ++stream.counters().rcvbuf_grows;
    }

    // An NFULNL_MSG_CONFIG message for `group` with the next sequence number, in `request`.
    nlmsghdr* put_config_header(char* request, std::uint16_t group, std::uint16_t flags) {
        nlmsghdr* nlh = mnl_nlmsg_put_header(request);
        nlh->nlmsg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
        nlh->nlmsg_flags = flags;
        nlh->nlmsg_seq = ++next_request_seq;
        auto* nfg = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
        nfg->nfgen_family = AF_UNSPEC;
        nfg->version = NFNETLINK_V0;
        nfg->res_id = to_be16(group);
        return nlh;
    }
    std::expected<void, std::string> configure_group(std::uint16_t group);
    std::expected<void, std::string> await_ack(std::uint32_t seq, std::uint16_t group);
};

std::expected<void, std::string> NflogSource::Impl::configure_group(std::uint16_t group) {
    alignas(nlmsghdr) std::array<char, 512> request{};
    nlmsghdr* nlh = put_config_header(request.data(), group, NLM_F_REQUEST | NLM_F_ACK);

    // One message: the kernel binds first, then applies the settings, so there is no moment
    // where the group runs on the default 1 s timeout.
    nfulnl_msg_config_cmd command{};
    command.command = NFULNL_CFG_CMD_BIND;
    mnl_attr_put(nlh, NFULA_CFG_CMD, sizeof command, &command);
    nfulnl_msg_config_mode mode{};
    mode.copy_range = to_be32(config.copy_range);
    mode.copy_mode = NFULNL_COPY_PACKET;
    mnl_attr_put(nlh, NFULA_CFG_MODE, sizeof mode, &mode);
    const auto [threshold, timeout] = batching(pacer.mode());
    mnl_attr_put_u32(nlh, NFULA_CFG_TIMEOUT, to_be32(timeout));
    mnl_attr_put_u32(nlh, NFULA_CFG_QTHRESH, to_be32(threshold));
    mnl_attr_put_u32(nlh, NFULA_CFG_NLBUFSIZ, to_be32(config.kernel_buffer_bytes));
    mnl_attr_put_u16(nlh, NFULA_CFG_FLAGS, to_be16(NFULNL_CFG_F_SEQ | NFULNL_CFG_F_SEQ_GLOBAL));

    if (mnl_socket_sendto(socket.get(), nlh, nlh->nlmsg_len) < 0) {
        return std::unexpected("NFLOG group " + std::to_string(group) +
                               ": sending the bind request: " + errno_text(errno));
    }
    return await_ack(nlh->nlmsg_seq, group);
}

void NflogSource::Impl::apply_delivery(DeliveryMode mode) {
    // No ACK asked: the read loop must not wait on the kernel. A refusal still comes back as
    // an NLMSG_ERROR, which the stream counts (error_messages); the group then keeps its
    // previous batching, which delivers every event either way.
    const auto [threshold, timeout] = batching(mode);
    for (const auto group : config.groups) {
        alignas(nlmsghdr) std::array<char, 256> request{};
        nlmsghdr* nlh = put_config_header(request.data(), group, NLM_F_REQUEST);
        mnl_attr_put_u32(nlh, NFULA_CFG_TIMEOUT, to_be32(timeout));
        mnl_attr_put_u32(nlh, NFULA_CFG_QTHRESH, to_be32(threshold));
        if (mnl_socket_sendto(socket.get(), nlh, nlh->nlmsg_len) < 0) {
            ++stream.counters().error_messages;
        }
    }
}

std::expected<void, std::string> NflogSource::Impl::await_ack(std::uint32_t seq,
                                                              std::uint16_t group) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(config.config_timeout_ms);
    const std::string what = "NFLOG group " + std::to_string(group);
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            return std::unexpected(what + ": no answer from the kernel to the bind request");
        }
        pollfd p{fd, POLLIN, 0};
        const int ready = poll(&p, 1, static_cast<int>(left.count()));
        if (ready < 0 && errno != EINTR) {
            return std::unexpected(what + ": poll: " + errno_text(errno));
        }
        if (ready <= 0) {
            continue;
        }
        const ssize_t n = recv(fd, buffer.data(), buffer.size(), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == ENOBUFS) {
                on_enobufs();
            } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                return std::unexpected(what + ": recv: " + errno_text(errno));
            }
            continue;
        }
        const std::span<const std::byte> datagram(buffer.data(), static_cast<std::size_t>(n));
        bool has_log_messages = false;
        std::optional<int> ack_error;
        (void)for_each_netlink_message(datagram, [&](const NetlinkMessageView& m) {
            if (m.type == NLMSG_ERROR && m.seq == seq && m.portid == portid &&
                m.bytes.size() >= netlink_header_size + sizeof(int)) {
                int error = 0;
                std::memcpy(&error, m.bytes.data() + netlink_header_size, sizeof error);
                ack_error = error;
            } else if (m.type == nflog_packet_message_type) {
                has_log_messages = true;
            }
        });
        if (has_log_messages) {
            pending.emplace_back(datagram.begin(), datagram.end());
        }
        if (ack_error) {
            if (*ack_error == 0) {
                return {};
            }
            const int error = -*ack_error;
            std::string message = what + ": " + errno_text(error);
            if (error == EBUSY || error == EPERM) {
                message += " (the group is bound by another socket: another enforcer, ulogd?)";
            }
            return std::unexpected(message);
        }
    }
}

NflogSource::NflogSource(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
NflogSource::NflogSource(NflogSource&&) noexcept = default;
NflogSource& NflogSource::operator=(NflogSource&&) noexcept = default;
NflogSource::~NflogSource() = default;

std::expected<NflogSource, std::string> NflogSource::open(const NflogSourceConfig& config) {
    if (config.groups.empty()) {
        return std::unexpected("NFLOG: no group configured");
    }
    if (std::set<std::uint16_t>(config.groups.begin(), config.groups.end()).size() !=
        config.groups.size()) {
        return std::unexpected("NFLOG: a group is listed twice");
    }
    if (config.copy_range < 40 || config.copy_range > 0xffff) {
        return std::unexpected("NFLOG: copy range must be 40..65535 bytes");
    }
    if (config.rcvbuf_bytes <= 0 || config.rcvbuf_max_bytes < config.rcvbuf_bytes) {
        return std::unexpected("NFLOG: receive buffer sizes are inconsistent");
    }
    auto impl = std::make_unique<Impl>();
    impl->config = config;
    impl->socket.reset(mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!impl->socket) {
        return std::unexpected("NFLOG: opening a NETLINK_NETFILTER socket: " + errno_text(errno));
    }
    if (mnl_socket_bind(impl->socket.get(), 0, MNL_SOCKET_AUTOPID) < 0) {
        return std::unexpected("NFLOG: binding the netlink socket: " + errno_text(errno));
    }
    impl->fd = mnl_socket_get_fd(impl->socket.get());
    impl->portid = mnl_socket_get_portid(impl->socket.get());
    impl->requested_rcvbuf = config.rcvbuf_bytes;
    impl->actual_rcvbuf = set_receive_buffer(impl->fd, config.rcvbuf_bytes);
    // A datagram holds at most NFULA_CFG_NLBUFSIZ bytes (131072 is the kernel's cap), unless
    // one message alone is larger; keep room for both.
    impl->buffer.resize(std::max<std::size_t>(262'144, std::size_t{config.copy_range} + 65'536));

    for (auto group : config.groups) {
        impl->stream.expect_group_from_zero(group);
        if (auto configured = impl->configure_group(group); !configured) {
            return std::unexpected(configured.error());
        }
    }
    return NflogSource(std::move(impl));
}

int NflogSource::fd() const {
    return impl_->fd;
}
const NflogCounters& NflogSource::counters() const {
    return impl_->stream.counters();
}
int NflogSource::rcvbuf_bytes() const {
    return impl_->actual_rcvbuf;
}
void NflogSource::invalidate_interface_names() {
    impl_->names.invalidate();
}
void NflogSource::pace(std::int64_t now_unix_ns) {
    impl_->pace(now_unix_ns, 0);
}
DeliveryMode NflogSource::delivery_mode() const {
    return impl_->config.adaptive_delivery ? impl_->pacer.mode() : DeliveryMode::Batched;
}
std::uint64_t NflogSource::delivery_switches() const {
    return impl_->pacer.switches();
}
const NflogSourceConfig& NflogSource::config() const {
    return impl_->config;
}

std::expected<NflogSource::ReadResult, std::string>
NflogSource::read_available(const NflogStream::EventCallback& on_event) {
    auto& s = *impl_;
    ReadResult result;
    const auto events_before = s.stream.counters().events;
    auto finish = [&](bool more) {
        result.events = static_cast<std::size_t>(s.stream.counters().events - events_before);
        result.more_pending = more;
        s.pace(realtime_ns(), result.events);
        return result;
    };
    if (!s.pending.empty()) {
        const std::int64_t now = realtime_ns();
        for (const auto& datagram : s.pending) {
            s.stream.process_datagram(datagram, now, on_event);
            ++result.datagrams;
        }
        s.pending.clear();
    }
    for (std::size_t i = 0; i < s.config.max_datagrams_per_read; ++i) {
        sockaddr_nl from{};
        iovec iov{s.buffer.data(), s.buffer.size()};
        msghdr message{};
        message.msg_name = &from;
        message.msg_namelen = sizeof from;
        message.msg_iov = &iov;
        message.msg_iovlen = 1;
        const ssize_t n = recvmsg(s.fd, &message, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return finish(false);
            }
            if (errno == EINTR) {
                continue;
            }
            if (errno == ENOBUFS) {
                // The kernel dropped at least one datagram for us. How many events it held
                // is known once the group's next message arrives (sequence gap).
                s.on_enobufs();
                continue;
            }
            return std::unexpected("NFLOG: recvmsg: " + errno_text(errno));
        }
        if ((message.msg_flags & MSG_TRUNC) != 0) {
            ++s.stream.counters().truncated_datagrams; // the cut messages become a gap
        }
        if (from.nl_pid != 0) {
            ++s.stream.counters().foreign_senders; // only the kernel may speak to us
            continue;
        }
        s.stream.process_datagram(
            std::span<const std::byte>(s.buffer.data(), static_cast<std::size_t>(n)), realtime_ns(),
            on_event);
        ++result.datagrams;
    }
    return finish(true);
}

} // namespace bulkhead::nflog
