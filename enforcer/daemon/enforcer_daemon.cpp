#include "enforcer/daemon/enforcer_daemon.hpp"

#include "enforcer/daemon/event_sink.hpp"
#include "enforcer/daemon/metrics.hpp"
#include "enforcer/daemon/ruleset_keeper.hpp"
#include "enforcer/daemon/ruleset_source.hpp"
#include "enforcer/daemon/state_store.hpp"
#include "enforcer/netlink/ruleset_backend.hpp"
#include "enforcer/nflog/attribution.hpp"
#include "enforcer/nflog/event_aggregator.hpp"
#include "enforcer/nflog/nflog_source.hpp"

#include <nlohmann/json.hpp>

#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <ostream>

namespace bulkhead::enforcer {
namespace {

std::int64_t now_unix_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// The aggregator's clock: the kernel stamps NFLOG with CLOCK_REALTIME, so windows use it too.
std::int64_t now_unix_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

class FileDescriptor {
public:
    explicit FileDescriptor(int fd = -1) : fd_(fd) {}
    FileDescriptor(const FileDescriptor&) = delete;
    FileDescriptor& operator=(const FileDescriptor&) = delete;
    ~FileDescriptor() {
        if (fd_ >= 0) {
            ::close(fd_);
        }
    }
    int get() const { return fd_; }

private:
    int fd_;
};

void describe_nflog_metrics(Metrics& metrics) {
    metrics.describe("bulkhead_enforcer_nflog_events_total", Metrics::Kind::Counter,
                     "NFLOG events decoded and delivered, by group");
    metrics.describe("bulkhead_enforcer_nflog_lost_events_total", Metrics::Kind::Counter,
                     "NFLOG events the kernel dropped (sequence gaps), by group");
    metrics.describe("bulkhead_enforcer_nflog_enobufs_total", Metrics::Kind::Counter,
                     "Times the socket buffer overflowed (each followed by a counted gap)");
    metrics.describe("bulkhead_enforcer_nflog_rejected_total", Metrics::Kind::Counter,
                     "NFLOG messages refused by the decoder (malformed)");
    metrics.describe("bulkhead_enforcer_drop_records_total", Metrics::Kind::Counter,
                     "Drop and allowed-flow records written to the event sink, by type");
    metrics.describe("bulkhead_enforcer_unattributed_events_total", Metrics::Kind::Counter,
                     "Events whose interface is bound to no workload");
}

void update_nflog_metrics(Metrics& metrics, const nflog::NflogCounters& counters) {
    for (const auto& [group, g] : counters.groups) {
        const auto label = "group=\"" + std::to_string(group) + "\"";
        metrics.set("bulkhead_enforcer_nflog_events_total", static_cast<double>(g.events), label);
        metrics.set("bulkhead_enforcer_nflog_lost_events_total", static_cast<double>(g.lost), label);
    }
    metrics.set("bulkhead_enforcer_nflog_enobufs_total", static_cast<double>(counters.enobufs));
    metrics.set("bulkhead_enforcer_nflog_rejected_total", static_cast<double>(counters.rejected));
}

}  // namespace

int run_daemon(const DaemonOptions& options, std::ostream& log) {
    auto sink = JsonLinesSink::open(options.events_path);
    if (!sink) {
        log << "bulkhead-enforcer: " << sink.error() << "\n";
        return 2;
    }
    Metrics metrics;
    StateStore state(options.state_dir);
    NetlinkRulesetBackend backend;
    RulesetKeeper keeper(backend, state, *sink, metrics);

    // Block the signals we handle before anything can be interrupted by them.
    sigset_t handled;
    sigemptyset(&handled);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGUSR1}) {
        sigaddset(&handled, s);
    }
    sigprocmask(SIG_BLOCK, &handled, nullptr);
    FileDescriptor signals(::signalfd(-1, &handled, SFD_NONBLOCK | SFD_CLOEXEC));
    FileDescriptor ticker(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
    if (signals.get() < 0 || ticker.get() < 0) {
        log << "bulkhead-enforcer: signalfd/timerfd: " << std::strerror(errno) << "\n";
        return 1;
    }
    itimerspec every_second{{1, 0}, {1, 0}};
    timerfd_settime(ticker.get(), 0, &every_second, nullptr);

    // Last-known-good first: protection before anything else can fail.
    keeper.restore(now_unix_ms());
    ::malloc_trim(0);
    sink->flush();

    auto source = FileRulesetSource::open(options.ruleset_path, options.enforcer_id);
    if (!source) {
        log << "bulkhead-enforcer: " << source.error() << "\n";
        return 2;
    }

    std::optional<nflog::NflogSource> nflog_source;
    nflog::Attributor attributor;
    nflog::EventAggregator aggregator(nflog::AggregatorConfig{
        .drop_window_ns = std::int64_t{options.repeat_window_ms} * 1'000'000,
        .max_drop_keys = 16'384,
        .allowed_interval_ns = std::int64_t{options.flow_interval_seconds} * 1'000'000'000,
        .max_allowed_keys = 65'536});
    std::vector<nflog::AggregatedRecord> records;
    auto emit_records = [&] {
        for (const auto& record : records) {
            auto json = nflog::to_json(record);
            metrics.add("bulkhead_enforcer_drop_records_total", 1,
                        "type=\"" + json.value("type", std::string("drop")) + "\"");
            sink->emit(json);
        }
        records.clear();
    };
    auto rebuild_attributor = [&] {
        if (keeper.applied()) {
            attributor = nflog::Attributor(keeper.applied()->ports, keeper.generation());
        }
        if (nflog_source) {
            nflog_source->invalidate_interface_names();
        }
    };
    if (!options.no_nflog) {
        nflog::NflogSourceConfig config;
        config.groups = {static_cast<std::uint16_t>(options.drop_group)};
        if (options.allowed_group >= 0) {
            config.groups.push_back(static_cast<std::uint16_t>(options.allowed_group));
        }
        auto opened = nflog::NflogSource::open(config);
        if (!opened) {
            log << "bulkhead-enforcer: NFLOG: " << opened.error() << "\n";
            return 1;
        }
        nflog_source.emplace(std::move(*opened));
        describe_nflog_metrics(metrics);
    }
    rebuild_attributor();

    auto take_from_source = [&] {
        auto next = source->poll();
        if (!next) {
            sink->emit({{"type", "ruleset_rejected"}, {"time_unix_ms", now_unix_ms()}, {"error", next.error()}});
            log << "bulkhead-enforcer: ruleset refused, keeping generation " << keeper.generation()
                << ": " << next.error() << "\n";
            return;
        }
        if (!next->has_value()) {
            return;
        }
        if (auto applied = keeper.apply(**next, now_unix_ms()); !applied) {
            log << "bulkhead-enforcer: apply failed, keeping generation " << keeper.generation()
                << ": " << applied.error() << "\n";
        }
        rebuild_attributor();
        // Parsing and persisting a large ruleset peaks far above what stays in use; hand the
        // freed heap back instead of carrying glibc's high-water mark for the daemon's life.
        ::malloc_trim(0);
    };
    take_from_source();
    sink->flush();
    log << "bulkhead-enforcer: " << options.enforcer_id << " running, generation "
        << keeper.generation() << (nflog_source ? ", reading NFLOG" : "") << "\n";

    const std::string metrics_path = options.metrics_path;
    auto write_metrics = [&] {
        if (metrics_path.empty()) {
            return;
        }
        if (nflog_source) {
            update_nflog_metrics(metrics, nflog_source->counters());
            metrics.set("bulkhead_enforcer_unattributed_events_total",
                        static_cast<double>(attributor.count(nflog::AttributionOutcome::UnknownInterface)));
        }
        if (auto written = write_file_atomically(metrics_path, metrics.render()); !written) {
            log << "bulkhead-enforcer: metrics: " << written.error() << "\n";
        }
    };
    write_metrics();

    int seconds = 0;
    bool running = true;
    while (running) {
        std::array<pollfd, 4> fds{{{signals.get(), POLLIN, 0},
                                   {ticker.get(), POLLIN, 0},
                                   {source->fd(), POLLIN, 0},
                                   {nflog_source ? nflog_source->fd() : -1, POLLIN, 0}}};
        if (::poll(fds.data(), fds.size(), -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            log << "bulkhead-enforcer: poll: " << std::strerror(errno) << "\n";
            break;
        }
        if ((fds[0].revents & POLLIN) != 0) {
            signalfd_siginfo info{};
            while (::read(signals.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
                if (info.ssi_signo == SIGINT || info.ssi_signo == SIGTERM) {
                    running = false;
                } else if (info.ssi_signo == SIGUSR1) {
                    if (auto drift = keeper.check_drift(now_unix_ms()); !drift) {
                        log << "bulkhead-enforcer: " << drift.error() << "\n";
                    }
                } else if (info.ssi_signo == SIGHUP) {
                    take_from_source();
                }
            }
        }
        if ((fds[2].revents & POLLIN) != 0) {
            take_from_source();
        }
        if (nflog_source && (fds[3].revents & POLLIN) != 0) {
            const auto now = now_unix_ns();
            auto read = nflog_source->read_available([&](const nflog::DropEvent& event) {
                nflog::DropEvent attributed = event;
                attributor.attribute(attributed);
                aggregator.add(attributed, now, records);
            });
            if (!read) {
                log << "bulkhead-enforcer: NFLOG read: " << read.error() << "\n";
            }
            emit_records();
        }
        if ((fds[1].revents & POLLIN) != 0) {
            std::uint64_t expirations = 0;
            if (::read(ticker.get(), &expirations, sizeof expirations) > 0) {
                seconds += static_cast<int>(expirations);
                aggregator.advance(now_unix_ns(), records);
                emit_records();
                if (seconds >= options.drift_interval_seconds) {
                    seconds = 0;
                    if (auto drift = keeper.check_drift(now_unix_ms()); !drift) {
                        log << "bulkhead-enforcer: " << drift.error() << "\n";
                    }
                }
                write_metrics();
            }
        }
        sink->flush();
    }
    aggregator.flush(records);
    emit_records();
    sink->emit({{"type", "stopped"}, {"time_unix_ms", now_unix_ms()}, {"generation", keeper.generation()}});
    sink->flush();
    write_metrics();
    // The table stays in force: stopping the daemon must not unprotect the host.
    log << "bulkhead-enforcer: stopped; table inet bulkhead stays in force\n";
    return 0;
}

}  // namespace bulkhead::enforcer
