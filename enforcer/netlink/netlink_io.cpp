#include "enforcer/netlink/netlink_io.hpp"

#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <libnftnl/gen.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <set>

namespace bulkhead::enforcer::detail {
namespace {

// Large enough for any single message the kernel sends us: dump parts of big element
// lists (nft uses 64 KiB + a page for the same reason).
constexpr std::size_t receive_size = 128 * 1024;

KernelError errno_error(std::string what, int error_number, std::string object = "") {
    return KernelError{std::move(what) + ": " + std::strerror(error_number), error_number,
                       std::move(object)};
}

int set_int_option(int fd, int level, int name, int value) {
    return setsockopt(fd, level, name, &value, sizeof(value));
}

int get_int_option(int fd, int level, int name) {
    int value = 0;
    socklen_t len = sizeof(value);
    if (getsockopt(fd, level, name, &value, &len) < 0) {
        return 0;
    }
    return value;
}

struct ExtAck {
    std::string message;
    std::uint32_t offset = 0;
};

int extack_attr(const nlattr* attr, void* data) {
    auto* ack = static_cast<ExtAck*>(data);
    switch (mnl_attr_get_type(attr)) {
    case NLMSGERR_ATTR_MSG:
        if (mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) >= 0) {
            ack->message = mnl_attr_get_str(attr);
        }
        break;
    case NLMSGERR_ATTR_OFFS:
        if (mnl_attr_validate(attr, MNL_TYPE_U32) >= 0) {
            ack->offset = mnl_attr_get_u32(attr);
        }
        break;
    default: break;
    }
    return MNL_CB_OK;
}

// Error code and extended ACK of an NLMSG_ERROR message (length already checked).
std::pair<int, ExtAck> parse_error(const nlmsghdr* nlh) {
    const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
    ExtAck ack;
    if ((nlh->nlmsg_flags & NLM_F_ACK_TLVS) != 0) {
        unsigned int offset = sizeof(*err);
        if ((nlh->nlmsg_flags & NLM_F_CAPPED) == 0) {
            offset += mnl_nlmsg_get_payload_len(&err->msg);
        }
        if (mnl_nlmsg_get_payload_len(nlh) > offset) {
            mnl_attr_parse(nlh, offset, extack_attr, &ack);
        }
    }
    return {err->error < 0 ? -err->error : err->error, ack};
}

int dump_callback(const nlmsghdr* nlh, void* data) {
    (*static_cast<const std::function<void(const nlmsghdr*)>*>(data))(nlh);
    return MNL_CB_OK;
}

}  // namespace

std::expected<NetlinkSocket, KernelError> NetlinkSocket::open() {
    mnl_socket* s = mnl_socket_open(NETLINK_NETFILTER);
    if (s == nullptr) {
        return std::unexpected(errno_error("cannot open a netfilter netlink socket", errno));
    }
    if (mnl_socket_bind(s, 0, MNL_SOCKET_AUTOPID) < 0) {
        const int e = errno;
        mnl_socket_close(s);
        return std::unexpected(errno_error("cannot bind the netlink socket", e));
    }
    const int fd = mnl_socket_get_fd(s);
    // Extended ACKs name the offending attribute; capped ACKs keep a 64 KiB element
    // message from being echoed back in its error.
    set_int_option(fd, SOL_NETLINK, NETLINK_EXT_ACK, 1);
    set_int_option(fd, SOL_NETLINK, NETLINK_CAP_ACK, 1);
    // Never hang the daemon on a kernel that does not answer a request.
    timeval timeout{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    return NetlinkSocket(s);
}

NetlinkSocket::~NetlinkSocket() {
    if (socket_ != nullptr) {
        mnl_socket_close(socket_);
    }
}

NetlinkSocket::NetlinkSocket(NetlinkSocket&& other) noexcept : socket_(other.socket_) {
    other.socket_ = nullptr;
}

std::expected<BatchOutcome, KernelError> NetlinkSocket::send_batch(const Batch& batch,
                                                                   std::size_t receive_buffer) {
    drain();
    const int fd = mnl_socket_get_fd(socket_);
    BatchOutcome outcome;
    std::set<std::uint32_t> pending;
    for (const auto& m : batch.messages()) {
        if (m.type != NFNL_MSG_BATCH_BEGIN && m.type != NFNL_MSG_BATCH_END) {
            pending.insert(m.seq);
        }
    }
    // Errors count only for this batch's messages (and its begin message, where commit
    // errors land): the socket outlives single batches.
    std::set<std::uint32_t> ours = pending;
    for (const auto& m : batch.messages()) {
        ours.insert(m.seq);
    }
    outcome.expected_acks = pending.size();

    // The whole batch is one datagram: the socket's send buffer must hold it.
    const auto bytes = batch.bytes();
    if (static_cast<std::size_t>(get_int_option(fd, SOL_SOCKET, SO_SNDBUF)) < bytes + 4096) {
        const int want = static_cast<int>(bytes + 4096);
        if (set_int_option(fd, SOL_SOCKET, SO_SNDBUFFORCE, want) < 0) {
            set_int_option(fd, SOL_SOCKET, SO_SNDBUF, want);
        }
    }
    // One ACK per message, each its own skb (~1 KiB of truesize).
    if (receive_buffer != 0) {
        set_int_option(fd, SOL_SOCKET, SO_RCVBUF, static_cast<int>(receive_buffer));
    } else {
        const auto want = pending.size() * 1024 + 64 * 1024;
        if (static_cast<std::size_t>(get_int_option(fd, SOL_SOCKET, SO_RCVBUF)) < want) {
            if (set_int_option(fd, SOL_SOCKET, SO_RCVBUFFORCE, static_cast<int>(want)) < 0) {
                set_int_option(fd, SOL_SOCKET, SO_RCVBUF, static_cast<int>(want));
            }
        }
    }

    std::vector<iovec> iov;
    for (const auto& page : batch.pages()) {
        iov.push_back(iovec{const_cast<std::uint8_t*>(page.data()), page.size()});
    }
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    msghdr msg{};
    msg.msg_name = &kernel;
    msg.msg_namelen = sizeof(kernel);
    msg.msg_iov = iov.data();
    msg.msg_iovlen = iov.size();
    ssize_t sent = 0;
    do {
        sent = sendmsg(fd, &msg, 0);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) {
        return std::unexpected(errno_error("sendmsg of the batch failed", errno, "batch"));
    }
    if (static_cast<std::size_t>(sent) != bytes) {
        return std::unexpected(KernelError{"short sendmsg of the batch", EMSGSIZE, "batch"});
    }

    // nfnetlink processes the batch synchronously inside sendmsg(): every ACK is queued (or
    // dropped, ENOBUFS) by now. Read them all, even after an error, so that every failing
    // message is known; wait briefly only if some are still missing.
    std::unique_ptr<char[]> buf(new char[receive_size]);
    const auto portid = mnl_socket_get_portid(socket_);
    bool waited = false;
    while (true) {
        const ssize_t n = recv(fd, buf.get(), receive_size, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == ENOBUFS) {
                outcome.enobufs = true;
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (pending.empty() || waited) {
                    break;
                }
                pollfd p{fd, POLLIN, 0};
                waited = true;
                if (poll(&p, 1, 200) > 0) {
                    waited = false;
                    continue;
                }
                break;
            }
            return std::unexpected(errno_error("reading the batch ACKs failed", errno, "batch"));
        }
        int remaining = static_cast<int>(n);
        for (auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.get());
             mnl_nlmsg_ok(nlh, remaining);
             nlh = mnl_nlmsg_next(nlh, &remaining)) {
            if (nlh->nlmsg_pid != portid && nlh->nlmsg_pid != 0) {
                continue;
            }
            if (nlh->nlmsg_type != NLMSG_ERROR ||
                nlh->nlmsg_len < mnl_nlmsg_size(sizeof(nlmsgerr))) {
                continue;
            }
            auto [code, ack] = parse_error(nlh);
            if (pending.erase(nlh->nlmsg_seq) == 1) {
                ++outcome.acks;
            }
            if (code != 0 && ours.contains(nlh->nlmsg_seq)) {
                outcome.errors.push_back({nlh->nlmsg_seq, code, ack.offset, ack.message});
            }
        }
    }
    return outcome;
}

PipelineOutcome NetlinkSocket::send_transactions(const Batch& batch,
                                                 const std::vector<ElementTransaction>& transactions,
                                                 std::size_t window, std::size_t receive_buffer) {
    drain();
    PipelineOutcome outcome;
    outcome.transactions.resize(transactions.size());
    if (transactions.empty()) {
        return outcome;
    }
    window = std::clamp<std::size_t>(window, 1, 1024);
    const int fd = mnl_socket_get_fd(socket_);
    const auto& messages = batch.messages();
    const std::uint32_t first_seq = messages.front().seq;
    // Message index -> transaction; every non-delimiter message carries NLM_F_ACK.
    std::vector<std::size_t> owner(messages.size(), transactions.size());
    std::vector<bool> acked(messages.size(), false);
    std::size_t largest = 0;
    for (std::size_t t = 0; t < transactions.size(); ++t) {
        std::size_t bytes = 0;
        for (auto m = transactions[t].first_message; m < transactions[t].end_message; ++m) {
            owner[m] = t;
            bytes += messages[m].length;
            if (messages[m].type != NFNL_MSG_BATCH_BEGIN && messages[m].type != NFNL_MSG_BATCH_END) {
                ++outcome.transactions[t].expected_acks;
            }
        }
        largest = std::max(largest, bytes);
    }
    if (static_cast<std::size_t>(get_int_option(fd, SOL_SOCKET, SO_SNDBUF)) < largest + 4096) {
        const int want = static_cast<int>(largest + 4096);
        if (set_int_option(fd, SOL_SOCKET, SO_SNDBUFFORCE, want) < 0) {
            set_int_option(fd, SOL_SOCKET, SO_SNDBUF, want);
        }
    }
    // A window's ACKs plus an error each, ~1 KiB of truesize apiece.
    const auto want_rcv = window * 2 * 1024 + 64 * 1024;
    if (receive_buffer != 0) {
        set_int_option(fd, SOL_SOCKET, SO_RCVBUF, static_cast<int>(receive_buffer));
    } else if (static_cast<std::size_t>(get_int_option(fd, SOL_SOCKET, SO_RCVBUF)) < want_rcv) {
        if (set_int_option(fd, SOL_SOCKET, SO_RCVBUFFORCE, static_cast<int>(want_rcv)) < 0) {
            set_int_option(fd, SOL_SOCKET, SO_RCVBUF, static_cast<int>(want_rcv));
        }
    }
    if (receive_buffer == 0) {
        // Where the buffer could not be raised (no CAP_NET_ADMIN for the FORCE option), send
        // fewer transactions per window rather than lose ACKs (the kernel reports the
        // buffer doubled; ~2 KiB per transaction).
        window = std::clamp<std::size_t>(
            static_cast<std::size_t>(std::max(get_int_option(fd, SOL_SOCKET, SO_RCVBUF), 0)) / 4096, 1, window);
    }
    // One iovec run per transaction (a transaction may straddle two pages).
    std::vector<iovec> iov;
    std::vector<std::pair<std::size_t, std::size_t>> runs;  // (first iovec, count)
    for (const auto& t : transactions) {
        const auto start = iov.size();
        for (auto m = t.first_message; m < t.end_message; ++m) {
            const auto& msg = messages[m];
            auto* base = const_cast<std::uint8_t*>(batch.pages()[msg.page].data()) + msg.offset;
            if (iov.size() > start && static_cast<std::uint8_t*>(iov.back().iov_base) + iov.back().iov_len == base) {
                iov.back().iov_len += msg.length;
            } else {
                iov.push_back(iovec{base, msg.length});
            }
        }
        runs.emplace_back(start, iov.size() - start);
    }
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    const auto portid = mnl_socket_get_portid(socket_);
    std::unique_ptr<char[]> buf(new char[receive_size]);
    std::vector<mmsghdr> msgs(window);
    for (std::size_t base = 0; base < transactions.size(); base += window) {
        const std::size_t count = std::min(window, transactions.size() - base);
        for (std::size_t i = 0; i < count; ++i) {
            msgs[i] = mmsghdr{};
            msgs[i].msg_hdr.msg_name = &kernel;
            msgs[i].msg_hdr.msg_namelen = sizeof(kernel);
            msgs[i].msg_hdr.msg_iov = &iov[runs[base + i].first];
            msgs[i].msg_hdr.msg_iovlen = runs[base + i].second;
        }
        // sendmmsg() returns how many datagrams went out; bounded: each call sends at least
        // one or fails.
        std::size_t sent = 0;
        while (sent < count) {
            const int n = sendmmsg(fd, &msgs[sent], static_cast<unsigned int>(count - sent), 0);
            ++outcome.send_calls;
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                outcome.transport_error = errno_error("sendmmsg of the element transactions failed",
                                                      n < 0 ? errno : EIO, "batch");
                break;
            }
            for (int i = 0; i < n; ++i) {
                outcome.transactions[base + sent + static_cast<std::size_t>(i)].sent = true;
            }
            sent += static_cast<std::size_t>(n);
        }
        // Read every reply that is queued; wait briefly only if ACKs of sent ones are missing.
        std::size_t missing = 0;
        for (std::size_t i = 0; i < sent; ++i) {
            missing += outcome.transactions[base + i].expected_acks;
        }
        bool waited = false;
        for (std::size_t guard = 0; guard < 1'000'000; ++guard) {
            const ssize_t n = recv(fd, buf.get(), receive_size, MSG_DONTWAIT);
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                if (errno == ENOBUFS) {
                    outcome.enobufs = true;
                    continue;
                }
                if ((errno == EAGAIN || errno == EWOULDBLOCK) && missing != 0 && !waited) {
                    pollfd p{fd, POLLIN, 0};
                    waited = true;
                    if (poll(&p, 1, 200) > 0) {
                        waited = false;
                    }
                    continue;
                }
                break;
            }
            int remaining = static_cast<int>(n);
            for (auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.get()); mnl_nlmsg_ok(nlh, remaining);
                 nlh = mnl_nlmsg_next(nlh, &remaining)) {
                if ((nlh->nlmsg_pid != portid && nlh->nlmsg_pid != 0) || nlh->nlmsg_type != NLMSG_ERROR ||
                    nlh->nlmsg_len < mnl_nlmsg_size(sizeof(nlmsgerr))) {
                    continue;
                }
                const std::uint32_t index = nlh->nlmsg_seq - first_seq;
                if (index >= messages.size() || owner[index] >= transactions.size()) {
                    continue;  // not ours (an earlier exchange's late reply)
                }
                auto& t = outcome.transactions[owner[index]];
                auto [code, ack] = parse_error(nlh);
                const bool delimiter = messages[index].type == NFNL_MSG_BATCH_BEGIN ||
                                       messages[index].type == NFNL_MSG_BATCH_END;
                if (!delimiter && !acked[index]) {
                    acked[index] = true;
                    ++t.acks;
                    missing -= missing != 0 ? 1 : 0;
                }
                if (code != 0) {
                    t.errors.push_back({nlh->nlmsg_seq, code, ack.offset, ack.message});
                }
            }
        }
        if (outcome.transport_error) {
            break;
        }
    }
    return outcome;
}

std::expected<std::uint32_t, KernelError> NetlinkSocket::generation(std::uint32_t seq) {
    char buf[8192];
    auto* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETGEN, AF_UNSPEC, 0, seq);
    std::uint32_t id = 0;
    bool found = false;
    auto r = request(nlh, [&](const nlmsghdr* reply) {
        if ((reply->nlmsg_type & 0xff) != NFT_MSG_NEWGEN) {
            return;
        }
        std::unique_ptr<nftnl_gen, decltype(&nftnl_gen_free)> gen(nftnl_gen_alloc(), nftnl_gen_free);
        if (nftnl_gen_nlmsg_parse(reply, gen.get()) == 0 &&
            nftnl_gen_is_set(gen.get(), NFTNL_GEN_ID)) {
            id = nftnl_gen_get_u32(gen.get(), NFTNL_GEN_ID);
            found = true;
        }
    });
    if (!r) {
        return std::unexpected(r.error());
    }
    if (!found) {
        return std::unexpected(KernelError{"the kernel sent no generation id", ENOMSG, "generation"});
    }
    return id;
}

void NetlinkSocket::drain() {
    const int fd = mnl_socket_get_fd(socket_);
    char scratch[8192];
    while (true) {
        const ssize_t n = recv(fd, scratch, sizeof scratch, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == ENOBUFS) {
            continue;  // overflow of leftovers: nothing of the next exchange is lost yet
        }
        if (n <= 0) {
            return;
        }
    }
}

std::expected<void, KernelError> NetlinkSocket::request(
    const nlmsghdr* request, const std::function<void(const nlmsghdr*)>& on_message) {
    drain();
    if (mnl_socket_sendto(socket_, request, request->nlmsg_len) < 0) {
        return std::unexpected(errno_error("netlink request failed", errno));
    }
    const bool dump = (request->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP;
    const auto portid = mnl_socket_get_portid(socket_);
    std::unique_ptr<char[]> buf(new char[receive_size]);
    while (true) {
        const ssize_t n = mnl_socket_recvfrom(socket_, buf.get(), receive_size);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return std::unexpected(errno_error("netlink receive failed", errno));
        }
        auto cb_data = &on_message;
        const int ret = mnl_cb_run(buf.get(), static_cast<std::size_t>(n), request->nlmsg_seq,
                                   portid, dump_callback, const_cast<void*>(static_cast<const void*>(cb_data)));
        if (ret < 0) {
            return std::unexpected(errno_error(errno == EINTR ? "dump interrupted by a ruleset change"
                                                              : "the kernel refused the request",
                                               errno));
        }
        if (ret == MNL_CB_STOP || !dump) {
            return {};
        }
    }
}

}  // namespace bulkhead::enforcer::detail
