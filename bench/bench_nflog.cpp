// bench_nflog: NFLOG receive+decode throughput of NflogSource, with ulogd2's NFLOG -> JSON as
// the same-traffic baseline. Run inside a throwaway network namespace that has lo up and
// table inet bhbench loaded (bench/benchmarks/nflog.sh sets both up): an input-hook rule
//   iif "lo" udp dport 40000-49999 counter name "logged" log prefix "bh:enf:out:deny:…" group G drop
// logs and drops what a sender thread sends to 127.0.0.1 as fast as sendmmsg() goes.
//
//   bench_nflog --netns NAME --receiver ours|ulogd --phase flood|drain [--packets N]
//               [--seconds S] [--group G] [--rcvbuf BYTES] [--json-out FILE]
//               [--ulogd-config FILE --ulogd-output FILE]
//   bench_nflog --report DIR   (no kernel: DIR/<run>.json results -> figure lines)
//
// flood: the receiver reads while the sender sends (the shipped NflogSource defaults, or the
//        ulogd config given); events/s = events delivered / (last delivery - first send).
// drain: the receiver is held (NflogSource: not read; ulogd: SIGSTOP) while the sender queues
//        every packet into a large socket buffer, then released and timed until the queue is
//        empty: receive+decode capacity without the sender in the way.
// After either, one sentinel packet closes the kernel's sequence accounting (a loss at the
// end of a burst shows as a gap with the group's next message), and the rule's counter is
// read with nft: unaccounted = counter - (delivered + rejected + counted lost) must be 0.
//
// --json-out: also format every event with to_json(DropEvent) and write it to FILE, the work
// ulogd's JSON output does. Prints one result object (JSON, one line) on stdout; nflog.sh
// collects them and `--report` turns them into figure lines.
#include "bench/cli_args.hpp"
#include "bench/kernel_bench.hpp"

#include "enforcer/nflog/drop_event.hpp"
#include "enforcer/nflog/nflog_source.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <memory>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace bulkhead;
using bench::BenchClock;
using nlohmann::ordered_json;

constexpr std::uint16_t first_port = 40000;
constexpr std::uint16_t port_span = 9999;  // 40000..49998
constexpr std::uint16_t sentinel_port = 49999;

struct Options {
    std::string netns;
    std::string receiver = "ours";
    std::string phase = "flood";
    std::uint64_t packets = 1'000'000;
    double seconds = 20;
    std::uint16_t group = 10;
    int rcvbuf = 0;  // 0: the NflogSource default (flood) or 512 MiB (drain)
    // The kernel's batching (NflogSourceConfig); unset: the shipped defaults. For comparing
    // delivery settings in one run, not for the figures.
    std::optional<std::uint32_t> queue_threshold, flush_timeout_cs, kernel_buffer_bytes;
    std::string ulogd_config, ulogd_output;
    std::string json_out;  // ours: also write every event as a JSON line (like ulogd's JSON)
    std::string report_dir;  // --report DIR: no kernel; turn the runs' results into figures
};

using bulkhead::bench::to_number;

Options parse(int argc, char** argv) {
    Options o;
    std::vector<std::string> args(argv + 1, argv + argc);
    for (std::size_t i = 0; i < args.size(); ++i) {
        const auto& a = args[i];
        auto value = [&]() -> const std::string& {
            if (i + 1 >= args.size()) {
                throw std::invalid_argument(a + " needs a value");
            }
            return args[++i];
        };
        if (a == "--netns") {
            o.netns = value();
        } else if (a == "--report") {
            o.report_dir = value();
        } else if (a == "--receiver") {
            o.receiver = value();
        } else if (a == "--phase") {
            o.phase = value();
        } else if (a == "--packets") {
            o.packets = std::clamp<std::uint64_t>(to_number(a, value()), 1, 20'000'000);
        } else if (a == "--seconds") {
            o.seconds = static_cast<double>(std::clamp<std::uint64_t>(to_number(a, value()), 1, 120));
        } else if (a == "--group") {
            o.group = static_cast<std::uint16_t>(to_number(a, value()));
        } else if (a == "--rcvbuf") {
            o.rcvbuf = static_cast<int>(std::clamp<std::uint64_t>(to_number(a, value()), 4096, 1u << 30));
        } else if (a == "--queue-threshold") {
            o.queue_threshold = static_cast<std::uint32_t>(std::clamp<std::uint64_t>(to_number(a, value()), 1, 1000));
        } else if (a == "--flush-timeout-cs") {
            o.flush_timeout_cs = static_cast<std::uint32_t>(std::clamp<std::uint64_t>(to_number(a, value()), 0, 100));
        } else if (a == "--kernel-buffer") {
            o.kernel_buffer_bytes =
                static_cast<std::uint32_t>(std::clamp<std::uint64_t>(to_number(a, value()), 3776, 131072));
        } else if (a == "--json-out") {
            o.json_out = value();
        } else if (a == "--ulogd-config") {
            o.ulogd_config = value();
        } else if (a == "--ulogd-output") {
            o.ulogd_output = value();
        } else {
            throw std::invalid_argument("unknown option " + a);
        }
    }
    if (!o.report_dir.empty()) {
        return o;
    }
    if ((o.receiver != "ours" && o.receiver != "ulogd") || (o.phase != "flood" && o.phase != "drain")) {
        throw std::invalid_argument("--receiver ours|ulogd, --phase flood|drain");
    }
    if (o.receiver == "ulogd" && (o.ulogd_config.empty() || o.ulogd_output.empty())) {
        throw std::invalid_argument("--receiver ulogd needs --ulogd-config and --ulogd-output");
    }
    return o;
}

double seconds_between(BenchClock::time_point a, BenchClock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
}

// ---- the sender ---------------------------------------------------------------------------

struct SendResult {
    std::uint64_t sent = 0;
    std::uint64_t send_errors = 0;  // datagrams the stack refused (ENOBUFS: retried)
    BenchClock::time_point start, end;
};

int udp_socket() {
    const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    }
    return fd;
}

sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

// `count` 16-byte UDP datagrams to 127.0.0.1, ports 40000..49998 round robin, in sendmmsg
// batches of 256, stopping early after `limit_s`.
SendResult udp_flood(std::uint64_t count, double limit_s) {
    const int fd = udp_socket();
    constexpr std::size_t batch = 256;
    std::vector<sockaddr_in> to(batch);
    std::vector<iovec> iov(batch);
    std::vector<mmsghdr> messages(batch);
    char payload[16] = "bulkhead-bench";
    SendResult r;
    r.start = BenchClock::now();
    const auto deadline = r.start + std::chrono::duration_cast<BenchClock::duration>(
                                        std::chrono::duration<double>(limit_s));
    while (r.sent < count) {
        const auto n = static_cast<unsigned>(std::min<std::uint64_t>(batch, count - r.sent));
        for (unsigned i = 0; i < n; ++i) {
            to[i] = loopback(static_cast<std::uint16_t>(first_port + (r.sent + i) % port_span));
            iov[i] = {payload, sizeof payload};
            messages[i] = {};
            messages[i].msg_hdr.msg_name = &to[i];
            messages[i].msg_hdr.msg_namelen = sizeof to[i];
            messages[i].msg_hdr.msg_iov = &iov[i];
            messages[i].msg_hdr.msg_iovlen = 1;
        }
        const int done = sendmmsg(fd, messages.data(), n, 0);
        if (done < 0) {
            if (errno == EINTR || errno == ENOBUFS || errno == EAGAIN) {
                ++r.send_errors;
                continue;
            }
            close(fd);
            throw std::runtime_error(std::string("sendmmsg: ") + std::strerror(errno));
        }
        r.sent += static_cast<std::uint64_t>(done);
        if ((r.sent & 0xffff) < batch && BenchClock::now() > deadline) {
            break;
        }
    }
    r.end = BenchClock::now();
    close(fd);
    return r;
}

void send_sentinel() {
    const int fd = udp_socket();
    const auto to = loopback(sentinel_port);
    const char payload[] = "sentinel";
    (void)sendto(fd, payload, sizeof payload, 0, reinterpret_cast<const sockaddr*>(&to), sizeof to);
    close(fd);
}

std::uint64_t nft_counter() {
    auto r = bench::run_capture("nft -j list counter inet bhbench logged");
    auto j = nlohmann::json::parse(r.output, nullptr, false);
    if (r.status != 0 || j.is_discarded() || !j.contains("nftables")) {
        throw std::runtime_error("cannot read counter inet bhbench logged: " + r.output);
    }
    for (const auto& item : j["nftables"]) {
        if (item.contains("counter")) {
            return item["counter"]["packets"].get<std::uint64_t>();
        }
    }
    throw std::runtime_error("no counter logged in table inet bhbench");
}

// ---- our receiver ---------------------------------------------------------------------------

ordered_json run_ours(const Options& o) {
    nflog::NflogSourceConfig config;
    config.groups = {o.group};
    config.queue_threshold = o.queue_threshold.value_or(config.queue_threshold);
    config.flush_timeout_cs = o.flush_timeout_cs.value_or(config.flush_timeout_cs);
    config.kernel_buffer_bytes = o.kernel_buffer_bytes.value_or(config.kernel_buffer_bytes);
    if (o.phase == "drain") {
        config.rcvbuf_bytes = o.rcvbuf > 0 ? o.rcvbuf : 512 << 20;
        config.rcvbuf_max_bytes = config.rcvbuf_bytes;
    } else if (o.rcvbuf > 0) {
        config.rcvbuf_bytes = o.rcvbuf;
        config.rcvbuf_max_bytes = std::max(config.rcvbuf_max_bytes, o.rcvbuf);
    }
    auto opened = nflog::NflogSource::open(config);
    if (!opened) {
        throw std::runtime_error("NflogSource::open: " + opened.error());
    }
    nflog::NflogSource source = std::move(*opened);
    const int initial_rcvbuf = source.rcvbuf_bytes();

    std::uint64_t events = 0, bad = 0;
    bool sentinel_seen = false;
    BenchClock::time_point first_event{}, last_event{};
    std::unique_ptr<FILE, int (*)(FILE*)> json_file(nullptr, &std::fclose);
    std::vector<char> json_buffer;
    if (!o.json_out.empty()) {
        json_file.reset(std::fopen(o.json_out.c_str(), "w"));
        if (!json_file) {
            throw std::runtime_error("cannot write " + o.json_out);
        }
        json_buffer.resize(1 << 20);
        std::setvbuf(json_file.get(), json_buffer.data(), _IOFBF, json_buffer.size());
    }
    std::uint64_t json_bytes = 0;
    auto on_event = [&](const nflog::DropEvent& e) {
        if (json_file) {
            const std::string line = nflog::to_json(e).dump() + "\n";
            std::fwrite(line.data(), 1, line.size(), json_file.get());
            json_bytes += line.size();
        }
        const auto now = BenchClock::now();
        if (events == 0) {
            first_event = now;
        }
        ++events;
        if (e.dport == std::uint16_t{sentinel_port}) {
            sentinel_seen = true;
        } else {
            last_event = now;
        }
        if (!e.dport || e.protocol != 17 || e.reason != nflog::Reason::Deny) {
            ++bad;
        }
    };
    std::chrono::nanoseconds busy{0};
    // Reads until `done()` or `limit`; read_available time goes to `busy`.
    auto pump = [&](const auto& done, std::chrono::milliseconds limit, int poll_ms) {
        const auto deadline = BenchClock::now() + limit;
        while (!done() && BenchClock::now() < deadline) {
            pollfd p{source.fd(), POLLIN, 0};
            (void)poll(&p, 1, poll_ms);
            const auto t0 = BenchClock::now();
            auto r = source.read_available(on_event);
            busy += BenchClock::now() - t0;
            if (!r) {
                throw std::runtime_error(r.error());
            }
        }
    };
    // Drains until nothing arrived for `quiet` consecutive 10 ms polls (at most 60 s).
    auto drain = [&](int quiet_polls) {
        std::uint64_t before = events;
        const auto deadline = BenchClock::now() + std::chrono::seconds(60);
        for (int quiet = 0; quiet < quiet_polls && BenchClock::now() < deadline;) {
            pump([] { return false; }, std::chrono::milliseconds(10), 2);
            quiet = events == before ? quiet + 1 : 0;
            before = events;
        }
    };

    SendResult sent;
    double reader_cpu_ms = 0;
    double drain_busy_s = 0, drain_wall_s = 0;
    if (o.phase == "flood") {
        std::atomic<bool> sending{true};
        const auto cpu0 = bench::thread_cpu();
        std::thread sender([&] {
            sent = udp_flood(o.packets, o.seconds);
            sending = false;
        });
        pump([&] { return !sending.load(); }, std::chrono::seconds(static_cast<int>(o.seconds) + 30), 5);
        sender.join();
        drain(10);
        const auto cpu1 = bench::thread_cpu();
        reader_cpu_ms = (cpu1.user_ms + cpu1.sys_ms) - (cpu0.user_ms + cpu0.sys_ms);
    } else {
        sent = udp_flood(o.packets, o.seconds);  // nothing reads: the socket buffer fills
        // The kernel flushes its last partial batch after the 10 ms flush timeout.
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        const auto cpu0 = bench::thread_cpu();
        const auto t0 = BenchClock::now();
        busy = {};
        drain(10);
        drain_wall_s = seconds_between(t0, last_event) ;
        drain_busy_s = std::chrono::duration<double>(busy).count();
        const auto cpu1 = bench::thread_cpu();
        reader_cpu_ms = (cpu1.user_ms + cpu1.sys_ms) - (cpu0.user_ms + cpu0.sys_ms);
    }
    const std::uint64_t delivered_before_sentinel = events;
    const auto counters_before = source.counters();
    send_sentinel();
    pump([&] { return sentinel_seen; }, std::chrono::milliseconds(3000), 5);

    const auto& c = source.counters();
    const std::uint64_t logged = nft_counter();
    const std::int64_t unaccounted = static_cast<std::int64_t>(logged) -
                                     static_cast<std::int64_t>(c.events + c.rejected + c.lost_events);
    if (json_file) {
        std::fflush(json_file.get());
    }
    ordered_json r{{"receiver", o.json_out.empty() ? "ours" : "ours+json"},
                   {"phase", o.phase},
                   {"sent", sent.sent + 1},
                   {"send_seconds", seconds_between(sent.start, sent.end)},
                   {"send_pps", static_cast<double>(sent.sent) / seconds_between(sent.start, sent.end)},
                   {"nft_counter", logged},
                   {"delivered", c.events},
                   {"delivered_before_sentinel", delivered_before_sentinel},
                   {"rejected", c.rejected},
                   {"lost", c.lost_events},
                   {"lost_before_sentinel", counters_before.lost_events},
                   {"seq_gaps", c.seq_gaps},
                   {"enobufs", c.enobufs},
                   {"rcvbuf_grows", c.rcvbuf_grows},
                   {"rcvbuf_initial", initial_rcvbuf},
                   {"rcvbuf_final", source.rcvbuf_bytes()},
                   {"datagrams", c.datagrams},
                   {"bad_events", bad},
                   {"sentinel_seen", sentinel_seen},
                   {"unaccounted", unaccounted},
                   {"reader_cpu_ms", reader_cpu_ms},
                   {"read_busy_s", std::chrono::duration<double>(busy).count()},
                   {"json_bytes", json_bytes}};
    const double events_d = static_cast<double>(delivered_before_sentinel);
    if (o.phase == "flood") {
        const double span = delivered_before_sentinel > 0 ? seconds_between(sent.start, last_event) : 0;
        r["receive_seconds"] = span;
        r["events_per_s"] = span > 0 ? events_d / span : 0;
    } else {
        r["receive_seconds"] = drain_wall_s;
        r["events_per_s"] = drain_wall_s > 0 ? events_d / drain_wall_s : 0;
        r["events_per_busy_s"] = drain_busy_s > 0 ? events_d / drain_busy_s : 0;
    }
    r["events_per_cpu_s"] = reader_cpu_ms > 0 ? events_d / (reader_cpu_ms / 1e3) : 0;
    return r;
}

// ---- ulogd2 ----------------------------------------------------------------------------------

bool group_bound(std::uint16_t group) {
    std::ifstream in("/proc/net/netfilter/nfnetlink_log");
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        unsigned g = 0;
        if (fields >> g && g == group) {
            return true;
        }
    }
    return false;
}

std::uint64_t file_size(const std::string& path) {
    struct stat st{};
    return stat(path.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
}

std::uint64_t count_lines(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::uint64_t n = 0;
    std::string line;
    while (std::getline(in, line)) {
        if (!line.empty()) {
            ++n;
        }
    }
    return n;
}

// utime + stime of a process, in ms.
double process_cpu_ms(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close_paren = text.rfind(')');
    if (close_paren == std::string::npos) {
        return 0;
    }
    std::istringstream fields(text.substr(close_paren + 2));
    std::string f;
    double utime = 0, stime = 0;
    for (int i = 3; fields >> f; ++i) {  // field 3 is the state
        if (i == 14) {
            utime = std::stod(f);
        } else if (i == 15) {
            stime = std::stod(f);
            break;
        }
    }
    return (utime + stime) * 1000.0 / static_cast<double>(sysconf(_SC_CLK_TCK));
}

ordered_json run_ulogd(const Options& o) {
    std::remove(o.ulogd_output.c_str());
    const pid_t pid = fork();
    if (pid < 0) {
        throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    }
    if (pid == 0) {
        // ulogd must not outlive this program, however it ends (SIGINT, timeout's SIGKILL).
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1) {
            _exit(127);
        }
        execlp("ulogd", "ulogd", "-c", o.ulogd_config.c_str(), static_cast<char*>(nullptr));
        _exit(127);
    }
    bool reaped = false;
    int status = 0;
    auto stop = [&] {
        if (reaped) {
            return;
        }
        kill(pid, SIGCONT);
        kill(pid, SIGTERM);
        for (int i = 0; i < 500 && !reaped; ++i) {  // up to 5 s, then SIGKILL
            reaped = waitpid(pid, &status, WNOHANG) == pid;
            if (!reaped) {
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
        }
        if (!reaped) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            reaped = true;
        }
    };
    struct Guard {
        std::function<void()> f;
        ~Guard() { f(); }
    } guard{stop};

    // Up (its group bound in this namespace) within 5 s, or it failed.
    for (int i = 0; i < 500 && !group_bound(o.group); ++i) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
            reaped = true;
            throw std::runtime_error("ulogd exited at start (status " + std::to_string(status) +
                                     "); see its log file");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!group_bound(o.group)) {
        throw std::runtime_error("ulogd did not bind NFLOG group " + std::to_string(o.group) + " within 5 s");
    }

    // The file grows in stdio-buffer steps (JSON plugin, sync=0): watch its size finely.
    BenchClock::time_point last_growth{};
    std::uint64_t size = file_size(o.ulogd_output);
    auto watch_until_quiet = [&](std::chrono::milliseconds quiet, std::chrono::seconds limit) {
        const auto deadline = BenchClock::now() + limit;
        auto last_change = BenchClock::now();
        while (BenchClock::now() < deadline && BenchClock::now() - last_change < quiet) {
            const auto s = file_size(o.ulogd_output);
            if (s != size) {
                size = s;
                last_change = last_growth = BenchClock::now();
            }
            std::this_thread::sleep_for(std::chrono::microseconds(500));
        }
    };

    SendResult sent;
    BenchClock::time_point start;
    double cpu0 = process_cpu_ms(pid);
    if (o.phase == "flood") {
        std::atomic<bool> sending{true};
        std::thread sender([&] {
            sent = udp_flood(o.packets, o.seconds);
            sending = false;
        });
        start = BenchClock::now();
        while (sending.load()) {
            const auto s = file_size(o.ulogd_output);
            if (s != size) {
                size = s;
                last_growth = BenchClock::now();
            }
            std::this_thread::sleep_for(std::chrono::microseconds(500));
        }
        sender.join();
        start = sent.start;
        watch_until_quiet(std::chrono::milliseconds(500), std::chrono::seconds(60));
    } else {
        kill(pid, SIGSTOP);
        sent = udp_flood(o.packets, o.seconds);
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        cpu0 = process_cpu_ms(pid);
        start = BenchClock::now();
        kill(pid, SIGCONT);
        watch_until_quiet(std::chrono::milliseconds(500), std::chrono::seconds(60));
    }
    const double cpu_ms = process_cpu_ms(pid) - cpu0;
    send_sentinel();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const std::uint64_t logged = nft_counter();
    stop();  // SIGTERM: ulogd flushes and closes its JSON file
    const std::uint64_t lines = count_lines(o.ulogd_output);
    const std::uint64_t before_sentinel = lines > 0 ? lines - 1 : 0;
    const double span = last_growth > start ? seconds_between(start, last_growth) : 0;
    ordered_json r{{"receiver", "ulogd"},
                   {"phase", o.phase},
                   {"sent", sent.sent + 1},
                   {"send_seconds", seconds_between(sent.start, sent.end)},
                   {"send_pps", static_cast<double>(sent.sent) / seconds_between(sent.start, sent.end)},
                   {"nft_counter", logged},
                   {"delivered", lines},
                   {"delivered_before_sentinel", before_sentinel},
                   {"lost", logged >= lines ? logged - lines : 0},
                   {"output_bytes", file_size(o.ulogd_output)},
                   {"exit_status", WIFEXITED(status) ? WEXITSTATUS(status) : -1},
                   {"receive_seconds", span},
                   {"events_per_s", span > 0 ? static_cast<double>(before_sentinel) / span : 0},
                   {"reader_cpu_ms", cpu_ms},
                   {"events_per_cpu_s", cpu_ms > 0 ? static_cast<double>(before_sentinel) / (cpu_ms / 1e3) : 0}};
    return r;
}


// ---- figures ---------------------------------------------------------------------------------
// DIR/<run>.json holds a run's result object, or DIR/<run>.skip why it has none; runs:
// ours-flood, ours-drain, json-flood, json-drain, ulogd-flood, ulogd-drain.
int report(const std::string& dir) {
    const bench::FigureWriter out("nflog");
    auto load = [&](const std::string& run) -> std::pair<nlohmann::json, std::string> {
        std::ifstream in(dir + "/" + run + ".json");
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        auto j = nlohmann::json::parse(text, nullptr, false);
        if (in && !j.is_discarded() && j.is_object()) {
            return {j, ""};
        }
        std::ifstream why(dir + "/" + run + ".skip");
        std::string reason((std::istreambuf_iterator<char>(why)), std::istreambuf_iterator<char>());
        while (!reason.empty() && (reason.back() == '\n' || reason.back() == ' ')) {
            reason.pop_back();
        }
        return {nlohmann::json(), reason.empty() ? run + ": no result" : reason};
    };
    auto num = [](const nlohmann::json& j, const char* key) {
        return j.contains(key) && j[key].is_number() ? j[key].get<double>() : 0.0;
    };
    const std::string target = ">= 200000 events/s, 0 unaccounted";
    const auto [ulogd_flood, ulogd_flood_skip] = load("ulogd-flood");
    const auto [ulogd_drain, ulogd_drain_skip] = load("ulogd-drain");
    auto baseline = [&](const nlohmann::json& base, const char* name, double value) {
        return base.is_object() ? bench::FigureWriter::baseline(name, num(base, "events_per_s"), value)
                                : nlohmann::ordered_json::object();
    };
    int status = 0;
    // Our receiver: the target figures. prefix "" (ours), "json_" (ours + to_json per event).
    for (const auto& [run, prefix] : std::vector<std::pair<std::string, std::string>>{
             {"ours-flood", "flood_"}, {"ours-drain", "drain_"}, {"json-flood", "json_flood_"}, {"json-drain", "json_drain_"}}) {
        const auto [r, skip] = load(run);
        const bool flood = run.ends_with("flood");
        const auto& base = flood ? ulogd_flood : ulogd_drain;
        const char* base_name = flood ? "ulogd_flood_events_per_s" : "ulogd_drain_events_per_s";
        if (!r.is_object()) {
            out.skip(prefix + "events_per_s", skip);
            if (skip.find("failed (exit") != std::string::npos) {
                status = 1;  // our receiver failed; a missing kernel feature is only a skip
            }
            continue;
        }
        const double rate = num(r, "events_per_s");
        const double unaccounted = num(r, "unaccounted");
        const bool is_target = prefix == "flood_" || prefix == "drain_";
        const bool ok = rate >= 200'000 && unaccounted == 0;
        out.emit(prefix + "events_per_s", rate, "events/s",
                 is_target ? std::optional<std::string>(target) : std::nullopt,
                 is_target ? std::optional<bool>(ok) : std::nullopt, baseline(base, base_name, rate), 0);
        out.emit(prefix + "unaccounted", unaccounted, "events", "0", unaccounted == 0);
        out.emit(prefix + "sent", num(r, "sent"), "packets");
        out.emit(prefix + "nft_counter", num(r, "nft_counter"), "packets");
        out.emit(prefix + "delivered", num(r, "delivered"), "events");
        out.emit(prefix + "lost_counted", num(r, "lost"), "events");
        out.emit(prefix + "enobufs", num(r, "enobufs"), "count");
        out.emit(prefix + "reader_cpu", num(r, "reader_cpu_ms"), "ms");
        out.emit(prefix + "events_per_cpu_s", num(r, "events_per_cpu_s"), "events/s", std::nullopt, std::nullopt,
                 base.is_object() ? bench::FigureWriter::baseline(flood ? "ulogd_flood_events_per_cpu_s"
                                                                        : "ulogd_drain_events_per_cpu_s",
                                                                  num(base, "events_per_cpu_s"),
                                                                  num(r, "events_per_cpu_s"))
                                  : nlohmann::ordered_json::object(),
                 0);
        if (flood) {
            out.emit(prefix + "send_pps", num(r, "send_pps"), "packets/s", std::nullopt, std::nullopt, {}, 0);
        }
        if (r.contains("bad_events") && num(r, "bad_events") != 0) {
            out.emit(prefix + "bad_events", num(r, "bad_events"), "events", "0", false);
            status = 1;
        }
    }
    for (const auto& [run, base] : std::vector<std::pair<std::string, const nlohmann::json*>>{
             {"ulogd-flood", &ulogd_flood}, {"ulogd-drain", &ulogd_drain}}) {
        const std::string prefix = run == "ulogd-flood" ? "ulogd_flood_" : "ulogd_drain_";
        if (!base->is_object()) {
            out.skip(prefix + "events_per_s", run == "ulogd-flood" ? ulogd_flood_skip : ulogd_drain_skip);
            continue;
        }
        const auto& r = *base;
        out.emit(prefix + "events_per_s", num(r, "events_per_s"), "events/s", std::nullopt, std::nullopt, {}, 0);
        out.emit(prefix + "sent", num(r, "sent"), "packets");
        out.emit(prefix + "nft_counter", num(r, "nft_counter"), "packets");
        out.emit(prefix + "delivered", num(r, "delivered"), "events");
        out.emit(prefix + "lost", num(r, "lost"), "events", std::nullopt, std::nullopt,
                 {{"note", "nft counter - JSON lines written (ulogd does not account for its loss)"}});
        out.emit(prefix + "cpu", num(r, "reader_cpu_ms"), "ms");
        out.emit(prefix + "events_per_cpu_s", num(r, "events_per_cpu_s"), "events/s", std::nullopt, std::nullopt, {}, 0);
    }
    return status;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const Options o = parse(argc, argv);
        if (!o.report_dir.empty()) {
            return report(o.report_dir);
        }
        signal(SIGPIPE, SIG_IGN);
        bench::require_netns(o.netns);
        const auto result = o.receiver == "ours" ? run_ours(o) : run_ulogd(o);
        std::cout << result.dump() << std::endl;
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "bench_nflog: " << e.what() << "\n";
        return 2;
    }
}
