// bench_contain_watch: the "in force" clock of bench/benchmarks/contain.sh. Run inside a
// hypervisor's network namespace (`ip netns exec <ns> bench_contain_watch ...`), it joins the
// nf_tables notification group (NFNLGRP_NFTABLES, what `nft monitor` listens to) and prints
// one JSON line per element added to or removed from one set, stamped with CLOCK_REALTIME
// right after the datagram carrying the notification was received:
//
//   {"ready":true,"realtime_priority":true}            once subscribed
//   {"t_ns":1764000000123456789,"op":"add","table":"bulkhead","set":"quarantined_ports","key":"vdi001"}
//   {"overrun":true,"t_ns":...}                         the receive buffer overflowed (ENOBUFS)
//
//   bench_contain_watch [--table bulkhead] [--set quarantined_ports] [--max-seconds 900]
//
// nf_tables sends element notifications from its commit path, after the new generation is
// live: when the line's datagram arrives the element already matches packets, so the stamp
// is an upper bound of "in force" (by the notification delivery and this process's wake-up).
// Keys are printed as text up to the first NUL (interface names, the quarantine set's key);
// other key types come out hex-encoded. The process asks for SCHED_FIFO priority 1 so that
// its own wake-up does not queue behind the processes it measures (it falls back silently;
// the ready line says which). Ends on SIGTERM/SIGINT, on a closed stdout, or after
// --max-seconds (a bound so that it never outlives its benchmark).
#include "bench/cli_args.hpp"

#include <libmnl/libmnl.h>
#include <libnftnl/set.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

namespace {

struct Options {
    std::string table = "bulkhead";
    std::string set = "quarantined_ports";
    std::uint64_t max_seconds = 900;
};

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                throw std::invalid_argument(arg + ": missing value");
            }
            return argv[++i];
        };
        if (arg == "--table") {
            o.table = value();
        } else if (arg == "--set") {
            o.set = value();
        } else if (arg == "--max-seconds") {
            o.max_seconds = bulkhead::bench::to_number(arg, value());
        } else {
            throw std::invalid_argument("unknown argument \"" + arg + "\"");
        }
    }
    return o;
}

std::int64_t realtime_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::int64_t monotonic_s() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

// Interface-name keys as text; anything else (addresses, concatenations) as hex.
std::string key_text(const void* data, std::uint32_t len) {
    const auto* p = static_cast<const unsigned char*>(data);
    std::uint32_t text_len = 0;
    while (text_len < len && p[text_len] != 0) {
        ++text_len;
    }
    bool printable = text_len > 0;
    for (std::uint32_t i = 0; i < text_len && printable; ++i) {
        printable = p[i] > 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\';
    }
    for (std::uint32_t i = text_len; i < len && printable; ++i) {
        printable = p[i] == 0;  // NUL padding only
    }
    if (printable) {
        return std::string(reinterpret_cast<const char*>(p), text_len);
    }
    static constexpr char hex[] = "0123456789abcdef";
    std::string out = "0x";
    for (std::uint32_t i = 0; i < len; ++i) {
        out += hex[p[i] >> 4];
        out += hex[p[i] & 0xf];
    }
    return out;
}

volatile std::sig_atomic_t stop_requested = 0;
extern "C" void on_signal(int) { stop_requested = 1; }

struct SetDeleter {
    void operator()(nftnl_set* s) const { nftnl_set_free(s); }
};

// One notification message: prints a line per element of the watched set.
void handle_message(const nlmsghdr* nlh, const Options& o, std::int64_t t_ns) {
    if (NFNL_SUBSYS_ID(nlh->nlmsg_type) != NFNL_SUBSYS_NFTABLES) {
        return;
    }
    const int type = NFNL_MSG_TYPE(nlh->nlmsg_type);
    if (type != NFT_MSG_NEWSETELEM && type != NFT_MSG_DELSETELEM) {
        return;
    }
    std::unique_ptr<nftnl_set, SetDeleter> set(nftnl_set_alloc());
    if (!set || nftnl_set_elems_nlmsg_parse(nlh, set.get()) < 0) {
        std::printf("{\"t_ns\":%lld,\"unparsable\":true}\n", static_cast<long long>(t_ns));
        return;
    }
    const char* table = nftnl_set_is_set(set.get(), NFTNL_SET_TABLE) ? nftnl_set_get_str(set.get(), NFTNL_SET_TABLE) : "";
    const char* name = nftnl_set_is_set(set.get(), NFTNL_SET_NAME) ? nftnl_set_get_str(set.get(), NFTNL_SET_NAME) : "";
    if (o.table != table || o.set != name) {
        return;
    }
    auto* it = nftnl_set_elems_iter_create(set.get());
    if (it == nullptr) {
        return;
    }
    for (auto* e = nftnl_set_elems_iter_next(it); e != nullptr; e = nftnl_set_elems_iter_next(it)) {
        if (!nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_KEY)) {
            continue;
        }
        std::uint32_t len = 0;
        const void* key = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &len);
        std::printf("{\"t_ns\":%lld,\"op\":\"%s\",\"table\":\"%s\",\"set\":\"%s\",\"key\":\"%s\"}\n",
                    static_cast<long long>(t_ns), type == NFT_MSG_NEWSETELEM ? "add" : "del", o.table.c_str(),
                    o.set.c_str(), key_text(key, len).c_str());
    }
    nftnl_set_elems_iter_destroy(it);
}

int run(const Options& o) {
    // Our own wake-up must not wait behind the controller and the enforcer it measures.
    sched_param param{};
    param.sched_priority = 1;
    const bool realtime = ::sched_setscheduler(0, SCHED_FIFO, &param) == 0;

    mnl_socket* nl = mnl_socket_open(NETLINK_NETFILTER);
    if (nl == nullptr) {
        std::cerr << "bench_contain_watch: netlink socket: " << std::strerror(errno) << "\n";
        return 1;
    }
    if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
        std::cerr << "bench_contain_watch: bind: " << std::strerror(errno) << "\n";
        mnl_socket_close(nl);
        return 1;
    }
    int group = NFNLGRP_NFTABLES;
    if (mnl_socket_setsockopt(nl, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) < 0) {
        std::cerr << "bench_contain_watch: NETLINK_ADD_MEMBERSHIP NFNLGRP_NFTABLES: " << std::strerror(errno) << "\n";
        mnl_socket_close(nl);
        return 1;
    }
    int rcvbuf = 8 * 1024 * 1024;  // a full replace notifies every element of the table
    if (::setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0) {
        (void)::setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    }
    std::printf("{\"ready\":true,\"realtime_priority\":%s}\n", realtime ? "true" : "false");
    std::fflush(stdout);

    std::vector<char> buffer(1 << 20);
    const std::int64_t deadline = monotonic_s() + static_cast<std::int64_t>(o.max_seconds);
    int status = 0;
    while (stop_requested == 0 && monotonic_s() < deadline) {
        pollfd pfd{mnl_socket_get_fd(nl), POLLIN, 0};
        const int ready = ::poll(&pfd, 1, 1000);
        if (ready < 0) {
            if (errno == EINTR) {
                continue;
            }
            std::cerr << "bench_contain_watch: poll: " << std::strerror(errno) << "\n";
            status = 1;
            break;
        }
        if (ready == 0) {
            continue;
        }
        const ssize_t n = mnl_socket_recvfrom(nl, buffer.data(), buffer.size());
        const std::int64_t t_ns = realtime_ns();
        if (n < 0) {
            if (errno == ENOBUFS) {
                std::printf("{\"t_ns\":%lld,\"overrun\":true}\n", static_cast<long long>(t_ns));
                std::fflush(stdout);
                continue;
            }
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            std::cerr << "bench_contain_watch: recv: " << std::strerror(errno) << "\n";
            status = 1;
            break;
        }
        int remaining = static_cast<int>(n);
        for (auto* nlh = reinterpret_cast<const nlmsghdr*>(buffer.data()); mnl_nlmsg_ok(nlh, remaining);
             nlh = mnl_nlmsg_next(nlh, &remaining)) {
            handle_message(nlh, o, t_ns);
        }
        if (std::fflush(stdout) != 0) {
            break;  // the reader went away
        }
    }
    mnl_socket_close(nl);
    return status;
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    struct sigaction sa{};
    sa.sa_handler = on_signal;
    ::sigaction(SIGTERM, &sa, nullptr);
    ::sigaction(SIGINT, &sa, nullptr);
    try {
        return run(parse(argc, argv));
    } catch (const std::exception& e) {
        std::cerr << "bench_contain_watch: " << e.what() << "\n";
        return 2;
    }
}
