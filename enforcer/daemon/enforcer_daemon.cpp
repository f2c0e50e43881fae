#include "enforcer/daemon/enforcer_daemon.hpp"

#include "enforcer/agent/controller_client.hpp"
#include "enforcer/agent/controller_ruleset_source.hpp"
#include "common/files/durable_file.hpp"
#include "enforcer/agent/spooling_event_sink.hpp"

#include "enforcer/daemon/file_ruleset_source.hpp"
#include "enforcer/daemon/json_lines_sink.hpp"
#include "enforcer/daemon/metrics.hpp"
#include "enforcer/daemon/metrics_listener.hpp"
#include "enforcer/daemon/port_follower.hpp"
#include "enforcer/daemon/ruleset_keeper.hpp"
#include "enforcer/daemon/state_store.hpp"
#include "enforcer/interfaces/event_sink.hpp"
#include "enforcer/interfaces/ruleset_source.hpp"
#include "enforcer/netlink/ruleset_backend.hpp"
#include "enforcer/nflog/attribution.hpp"
#include "enforcer/nflog/event_aggregator.hpp"
#include "enforcer/nflog/nflog_source.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>

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
    metrics.describe("bulkhead_enforcer_nflog_batched", Metrics::Kind::Gauge,
                     "1 while NFLOG delivery is batched (a flood), 0 while each drop is delivered at once");
    metrics.describe("bulkhead_enforcer_nflog_delivery_switches_total", Metrics::Kind::Counter,
                     "Switches between immediate and batched NFLOG delivery");
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

void describe_agent_metrics(Metrics& metrics) {
    metrics.describe("bulkhead_enforcer_spool_bytes", Metrics::Kind::Gauge, "Bytes of events in the disk spool");
    metrics.describe("bulkhead_enforcer_spool_events", Metrics::Kind::Gauge,
                     "Events spooled and not yet confirmed by the controller");
    metrics.describe("bulkhead_enforcer_spool_evicted_events_total", Metrics::Kind::Counter,
                     "Events evicted from the full spool before they were uploaded");
    metrics.describe("bulkhead_enforcer_events_set_aside_total", Metrics::Kind::Counter,
                     "Events the controller refused for good (HTTP 400/413/415/422), moved to the spool's "
                     "set-aside.ndjson so that the rest goes on");
    metrics.describe("bulkhead_enforcer_events_uploaded_total", Metrics::Kind::Counter,
                     "Events the controller confirmed (through_seq)");
    metrics.describe("bulkhead_enforcer_event_upload_failures_total", Metrics::Kind::Counter,
                     "Event upload requests that failed (retried with backoff)");
    metrics.describe("bulkhead_enforcer_controller_connected", Metrics::Kind::Gauge,
                     "1 while the control channel is up");
    metrics.describe("bulkhead_enforcer_controller_connects_total", Metrics::Kind::Counter,
                     "Control channel connections that got their hello");
    metrics.describe("bulkhead_enforcer_controller_resyncs_total", Metrics::Kind::Counter,
                     "Control channel connections dropped for a base or hash mismatch");
    metrics.describe("bulkhead_enforcer_controller_generation", Metrics::Kind::Gauge,
                     "The controller's generation of the ruleset in force");
    metrics.describe("bulkhead_enforcer_controller_rtt_seconds", Metrics::Kind::Gauge,
                     "Round trip of the last status post");
}

}  // namespace

int run_daemon(const DaemonOptions& options) {
    // Block the signals we handle before anything can be interrupted by them, and before
    // any thread starts (the controller agent's threads inherit the mask; a SIGUSR1 or
    // SIGTERM delivered to one of them would otherwise kill the process).
    sigset_t handled;
    sigemptyset(&handled);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGUSR1}) {
        sigaddset(&handled, s);
    }
    pthread_sigmask(SIG_BLOCK, &handled, nullptr);
    // A controller connection that breaks mid-write (TLS) must be an error, not SIGPIPE.
    ::signal(SIGPIPE, SIG_IGN);

    const bool with_controller = !options.controller_url.empty();
    if (with_controller == !options.ruleset_path.empty()) {
        spdlog::error("daemon: enforcer {}: give exactly one of --ruleset and --controller", options.enforcer_id);
        return 2;
    }
    std::optional<JsonLinesSink> tee;
    if (!options.events_path.empty()) {
        auto opened = JsonLinesSink::open(options.events_path);
        if (!opened) {
            spdlog::error("daemon: enforcer {}: {}", options.enforcer_id, opened.error());
            return 2;
        }
        tee.emplace(std::move(*opened));
    }
    // Before anything is applied: a wrong address is a start-up error like the others.
    std::unique_ptr<MetricsListener> metrics_listener;
    if (!options.metrics_listen.empty()) {
        auto started = MetricsListener::start(options.metrics_listen);
        if (!started) {
            spdlog::error("daemon: enforcer {}: --metrics-listen: {}", options.enforcer_id, started.error());
            return 2;
        }
        metrics_listener = std::move(*started);
        spdlog::info("daemon: enforcer {}: metrics on http://{}/metrics", options.enforcer_id, options.metrics_listen);
    }
    std::shared_ptr<agent::ControllerClient> controller;
    std::unique_ptr<agent::SpoolingEventSink> spool;
    if (with_controller) {
        auto endpoint = agent::parse_controller_url(options.controller_url);
        if (!endpoint) {
            spdlog::error("daemon: enforcer {}: {}", options.enforcer_id, endpoint.error());
            return 2;
        }
        std::error_code ec;
        std::filesystem::create_directories(options.state_dir, ec);
        agent::ControllerConfig config;
        config.endpoint = *endpoint;
        config.ca_file = options.ca_file;
        config.enforcer_id = options.enforcer_id;
        config.state_dir = options.state_dir;
        config.enrollment_token_file = options.enrollment_token_file;
        config.version = options.version;
        auto client = agent::ControllerClient::create(std::move(config));
        if (!client) {
            spdlog::error("daemon: enforcer {}: {}", options.enforcer_id, client.error());
            return 2;
        }
        controller = std::move(*client);
        agent::SpoolingSinkConfig spool_config;
        spool_config.spool.directory = std::filesystem::path(options.state_dir) / "spool";
        spool_config.spool.max_bytes = options.spool_max_bytes;
        auto opened = agent::SpoolingEventSink::open(spool_config, controller);
        if (!opened) {
            spdlog::error("daemon: enforcer {}: event spool: {}", options.enforcer_id, opened.error());
            return 2;
        }
        spool = std::move(*opened);
    }
    std::vector<EventSink*> sinks;
    if (spool) {
        sinks.push_back(spool.get());
    }
    if (tee) {
        sinks.push_back(&*tee);
    }
    TeeEventSink events(std::move(sinks));
    EventSink* sink = &events;

    Metrics metrics;
    StateStore state(options.state_dir);
    NetlinkRulesetBackend backend;
    RulesetKeeper keeper(backend, state, *sink, metrics);

    FileDescriptor signals(::signalfd(-1, &handled, SFD_NONBLOCK | SFD_CLOEXEC));
    FileDescriptor ticker(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
    if (signals.get() < 0 || ticker.get() < 0) {
        spdlog::error("daemon: enforcer {}: signalfd/timerfd: {}", options.enforcer_id, std::strerror(errno));
        return 1;
    }
    itimerspec every_second{{1, 0}, {1, 0}};
    timerfd_settime(ticker.get(), 0, &every_second, nullptr);

    // Last-known-good first: protection before anything else can fail.
    keeper.restore(now_unix_ms());
    ::malloc_trim(0);
    sink->flush();

    // Port discovery: the source's ruleset (`canonical`, kept in <state-dir>/source-ruleset.json
    // so that ports can be followed before the source answers after a restart) is bound to
    // the ports there are now; what the kernel gets is its localized copy.
    std::unique_ptr<PortFollower> follower;
    std::optional<ruleset::Ruleset> canonical;
    const auto canonical_path = std::filesystem::path(options.state_dir) / "source-ruleset.json";
    if (options.port_discovery) {
        auto opened = PortFollower::open(options);
        if (!opened) {
            spdlog::error("daemon: enforcer {}: {}", options.enforcer_id, opened.error());
            return 2;
        }
        follower = std::move(*opened);
        if (auto text = files::read_small_file(canonical_path); text && *text) {
            auto document = nlohmann::json::parse(**text, nullptr, false);
            if (auto loaded = ruleset::ruleset_from_json(document); loaded && loaded->enforcer == options.enforcer_id) {
                canonical = std::move(*loaded);
            } else {
                spdlog::warn("daemon: enforcer {}: {} unusable, waiting for the source", options.enforcer_id,
                             canonical_path.string());
            }
        }
        metrics.describe("bulkhead_enforcer_ports", Metrics::Kind::Gauge,
                         "VM ports found by port discovery, by state (bound, unidentified)");
        metrics.describe("bulkhead_enforcer_port_rebinds_total", Metrics::Kind::Counter,
                         "Rulesets re-applied because a VM port came, went or was identified");
        metrics.set("bulkhead_enforcer_port_rebinds_total", 0);
    }
    auto report_ports = [&] {
        if (!follower || !canonical) {
            return;  // without a ruleset every port would look unidentified: wait for one
        }
        for (auto& event : follower->take_events(canonical ? &*canonical : nullptr, now_unix_ms())) {
            spdlog::info("daemon: enforcer {}: {} {}{}", options.enforcer_id, event.value("type", ""),
                         event.value("interface", ""),
                         event.contains("workload") ? " (" + event.value("workload", "") + ")" : "");
            sink->emit(event);
        }
        const auto unidentified = follower->unidentified_count(canonical ? &*canonical : nullptr);
        const auto all = follower->ports_json(canonical ? &*canonical : nullptr).size();
        metrics.set("bulkhead_enforcer_ports", static_cast<double>(all - unidentified), "state=\"bound\"");
        metrics.set("bulkhead_enforcer_ports", static_cast<double>(unidentified), "state=\"unidentified\"");
    };
    // The source's ruleset into the kernel: with port discovery its localized copy, without
    // it the ruleset itself (no copy on the way to the kernel: a quarantine's time to contain).
    auto apply_to_kernel = [&](const ruleset::Ruleset& from_source) {
        return follower ? keeper.apply(follower->localize(from_source), now_unix_ms())
                        : keeper.apply(from_source, now_unix_ms());
    };

    std::unique_ptr<RulesetSource> source;
    agent::ControllerRulesetSource* channel = nullptr;
    if (with_controller) {
        // What is in force (last-known-good) is what the first connect asks with.
        // With port discovery the kernel holds a localized copy: the channel's position is the
        // source's own ruleset, so the hashes stay the controller's.
        const ruleset::Ruleset* held = canonical ? &*canonical : (keeper.applied() ? &*keeper.applied() : nullptr);
        auto opened = agent::ControllerRulesetSource::open(controller, held, {}, spool.get());
        if (!opened) {
            spdlog::error("daemon: enforcer {}: control channel: {}", options.enforcer_id, opened.error());
            return 1;
        }
        channel = opened->get();
        source = std::move(*opened);
        describe_agent_metrics(metrics);
    } else {
        auto opened = FileRulesetSource::open(options.ruleset_path, options.enforcer_id);
        if (!opened) {
            spdlog::error("daemon: enforcer {}: ruleset source: {}", options.enforcer_id, opened.error());
            return 2;
        }
        source = std::make_unique<FileRulesetSource>(std::move(*opened));
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
            spdlog::error("daemon: enforcer {}: NFLOG: {}", options.enforcer_id, opened.error());
            return 1;
        }
        nflog_source.emplace(std::move(*opened));
        describe_nflog_metrics(metrics);
    }
    rebuild_attributor();

    std::int64_t last_drift_at_ms = 0;
    auto counters = [&] {
        EnforcerCounters c;
        c.drift_repairs = static_cast<std::uint64_t>(metrics.get("bulkhead_enforcer_drift_repairs_total"));
        c.last_drift_at_ms = last_drift_at_ms;
        c.elements = keeper.applied() ? keeper.applied()->element_count() : 0;
        if (follower) {
            c.ports = std::make_shared<const nlohmann::json>(follower->ports_json(canonical ? &*canonical : nullptr));
        }
        if (nflog_source) {
            const auto& n = nflog_source->counters();
            c.nflog_received = n.events;
            c.nflog_lost = n.lost_events;
        }
        return c;
    };
    auto check_drift = [&] {
        const auto now = now_unix_ms();
        auto drift = keeper.check_drift(now);
        if (!drift) {
            spdlog::error("daemon: enforcer {}: drift check: {}", options.enforcer_id, drift.error());
        } else if (*drift) {
            // Someone or something changed table inet bulkhead behind the daemon's back.
            spdlog::warn("daemon: enforcer {}: drift found in table inet bulkhead, repaired (generation {})",
                         options.enforcer_id, keeper.generation());
            last_drift_at_ms = now;
        }
    };
    auto take_from_source = [&] {
        auto next = source->poll();
        if (!next) {
            sink->emit({{"type", "ruleset_rejected"}, {"time_unix_ms", now_unix_ms()}, {"error", next.error()}});
            spdlog::warn("daemon: enforcer {}: ruleset refused, keeping generation {}: {}", options.enforcer_id,
                         keeper.generation(), next.error());
            return;
        }
        if (!next->has_value()) {
            return;
        }
        const auto started = std::chrono::steady_clock::now();
        if (follower) {
            canonical = **next;
        }
        auto applied = apply_to_kernel(**next);
        ApplyReport report;
        report.apply_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
        report.applied_at_ms = now_unix_ms();
        report.ok = applied.has_value();
        if (!applied) {
            report.error = applied.error();
            spdlog::error("daemon: enforcer {}: apply failed, keeping generation {}: {}", options.enforcer_id,
                          keeper.generation(), applied.error());
        } else {
            spdlog::info("daemon: enforcer {}: applied generation {} in {:.1f} ms", options.enforcer_id,
                         keeper.generation(), report.apply_ms);
        }
        report.local_generation = keeper.generation();
        report.counters = counters();
        source->report_applied(report);
        if (follower) {
            // Kept for a restart (ports followed before the source answers), written once the
            // ruleset is in force and acknowledged: the whole document and an fsync before the
            // kernel apply delayed every quarantine by milliseconds on hosts with port discovery
            // (the packaged default). A crash before it is written leaves the previous source
            // ruleset, which the source replaces on its first answer.
            if (auto saved = write_file_atomically(canonical_path, ruleset::to_json(*canonical).dump()); !saved) {
                spdlog::warn("daemon: enforcer {}: {}: {}", options.enforcer_id, canonical_path.string(), saved.error());
            }
        }
        rebuild_attributor();
        report_ports();
        // Parsing and persisting a large ruleset peaks far above what stays in use; hand the
        // freed heap back instead of carrying glibc's high-water mark for the daemon's life.
        ::malloc_trim(0);
    };
    // Ports may have been renamed while the daemon was down (a reboot, a refresh): bind them
    // now from the saved source ruleset, before the source answers.
    auto rebind = [&](std::string_view why) {
        if (!follower || !canonical) {
            return;
        }
        const auto started = std::chrono::steady_clock::now();
        auto applied = apply_to_kernel(*canonical);
        if (!applied) {
            spdlog::error("daemon: enforcer {}: port binding ({}) failed, keeping generation {}: {}",
                          options.enforcer_id, why, keeper.generation(), applied.error());
        } else {
            spdlog::debug("daemon: enforcer {}: ports rebound ({}) in {:.1f} ms", options.enforcer_id, why,
                          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count());
        }
        metrics.add("bulkhead_enforcer_port_rebinds_total", 1);
        rebuild_attributor();
        report_ports();
    };
    rebind("start");
    take_from_source();
    sink->flush();
    // Test harnesses wait for " running, generation" before they act on the daemon.
    spdlog::info("daemon: enforcer {}: running, generation {}{}", options.enforcer_id, keeper.generation(),
                 nflog_source ? ", reading NFLOG" : "");

    const std::string metrics_path = options.metrics_path;
    auto write_metrics = [&] {
        if (metrics_path.empty() && !metrics_listener) {
            return;
        }
        if (nflog_source) {
            update_nflog_metrics(metrics, nflog_source->counters());
            metrics.set("bulkhead_enforcer_nflog_batched",
                        nflog_source->delivery_mode() == nflog::DeliveryMode::Batched ? 1.0 : 0.0);
            metrics.set("bulkhead_enforcer_nflog_delivery_switches_total",
                        static_cast<double>(nflog_source->delivery_switches()));
            metrics.set("bulkhead_enforcer_unattributed_events_total",
                        static_cast<double>(attributor.count(nflog::AttributionOutcome::UnknownInterface)));
        }
        if (channel != nullptr) {
            const auto c = channel->stats();
            metrics.set("bulkhead_enforcer_controller_connected", c.connected ? 1 : 0);
            metrics.set("bulkhead_enforcer_controller_connects_total", static_cast<double>(c.connects));
            metrics.set("bulkhead_enforcer_controller_resyncs_total", static_cast<double>(c.resyncs));
            metrics.set("bulkhead_enforcer_controller_generation", static_cast<double>(c.in_force_generation));
            metrics.set("bulkhead_enforcer_controller_rtt_seconds", c.last_rtt_ms / 1000.0);
        }
        if (spool) {
            const auto s = spool->stats();
            metrics.set("bulkhead_enforcer_spool_bytes", static_cast<double>(s.spool.bytes));
            metrics.set("bulkhead_enforcer_spool_events", static_cast<double>(s.spool.events));
            metrics.set("bulkhead_enforcer_spool_evicted_events_total", static_cast<double>(s.spool.evicted));
            metrics.set("bulkhead_enforcer_events_set_aside_total", static_cast<double>(s.spool.set_aside));
            metrics.set("bulkhead_enforcer_events_uploaded_total", static_cast<double>(s.uploaded));
            metrics.set("bulkhead_enforcer_event_upload_failures_total", static_cast<double>(s.upload_failures));
        }
        auto text = metrics.render();
        if (!metrics_path.empty()) {
            // Rewritten every second and read by a textfile collector: atomic, not synced. The
            // file and directory fsyncs took ~1 ms a tick on this thread (up to 5 ms), NFLOG waiting.
            if (auto written = write_file_atomically(metrics_path, text, FileDurability::AtomicOnly); !written) {
                spdlog::warn("daemon: enforcer {}: metrics file: {}", options.enforcer_id, written.error());
            }
        }
        if (metrics_listener) {
            metrics_listener->publish(std::move(text));
        }
    };
    write_metrics();

    int seconds = 0;
    bool running = true;
    while (running) {
        std::array<pollfd, 5> fds{{{signals.get(), POLLIN, 0},
                                   {ticker.get(), POLLIN, 0},
                                   {source->fd(), POLLIN, 0},
                                   {nflog_source ? nflog_source->fd() : -1, POLLIN, 0},
                                   {follower ? follower->fd() : -1, POLLIN, 0}}};
        if (::poll(fds.data(), fds.size(), -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            spdlog::critical("daemon: enforcer {}: poll: {}", options.enforcer_id, std::strerror(errno));
            break;
        }
        if ((fds[0].revents & POLLIN) != 0) {
            signalfd_siginfo info{};
            while (::read(signals.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
                if (info.ssi_signo == SIGINT || info.ssi_signo == SIGTERM) {
                    running = false;
                } else if (info.ssi_signo == SIGUSR1) {
                    check_drift();
                } else if (info.ssi_signo == SIGHUP) {
                    take_from_source();
                }
            }
        }
        if ((fds[2].revents & POLLIN) != 0) {
            take_from_source();
        }
        // A port came or went: first the source (so a ruleset that arrived with it is used),
        // then the kernel binding, before NFLOG (drops on the new port attribute to its workload).
        if (follower && (fds[4].revents & POLLIN) != 0) {
            std::vector<std::string> errors;
            const bool changed = follower->read(errors);
            for (const auto& error : errors) {
                spdlog::warn("daemon: enforcer {}: port discovery: {}", options.enforcer_id, error);
            }
            if (changed) {
                rebind("link");
            }
        }
        if (nflog_source && (fds[3].revents & POLLIN) != 0) {
            const auto now = now_unix_ns();
            bool contained = false;
            auto read = nflog_source->read_available([&](const nflog::DropEvent& event) {
                nflog::DropEvent attributed = event;
                attributor.attribute(attributed);
                if (attributed.reason == nflog::Reason::Tripwire && attributed.direction == nflog::Direction::In) {
                    // Host mode: the kernel has already blocked the sender's address (when the
                    // packet's network header was decoded, ip_length is set).
                    if (attributed.ip_length != 0) {
                        contained = keeper.note_kernel_blocked(attributed.src, "nflog", now / 1'000'000) || contained;
                    }
                } else if (attributed.reason == nflog::Reason::Tripwire && !attributed.indev_name.empty()) {
                    // The kernel has already quarantined the port; hold it and tell the source.
                    contained = keeper.note_kernel_contained(attributed.indev_name, "nflog", now / 1'000'000) ||
                                contained;
                }
                aggregator.add(attributed, now, records);
            });
            if (!read) {
                spdlog::warn("daemon: enforcer {}: NFLOG read: {}", options.enforcer_id, read.error());
            }
            emit_records();
            // At once, not at the end of this turn: a tick in the same turn (drift check,
            // metrics) would otherwise hold the drop back from the controller by milliseconds.
            sink->flush();
            if (contained) {
                spdlog::warn("daemon: enforcer {}: the kernel contained {} port(s) and blocked {} sender(s) on a tripwire",
                             options.enforcer_id, keeper.held_ports().size(), keeper.held_sources().size());
            }
        }
        if ((fds[1].revents & POLLIN) != 0) {
            std::uint64_t expirations = 0;
            if (::read(ticker.get(), &expirations, sizeof expirations) > 0) {
                seconds += static_cast<int>(expirations);
                if (nflog_source) {
                    nflog_source->pace(now_unix_ns());
                }
                aggregator.advance(now_unix_ns(), records);
                emit_records();
                if (follower) {
                    // libvirt writes a domain's live XML around the time its tap appears.
                    std::vector<std::string> errors;
                    const bool changed = follower->refresh_domains(errors);
                    for (const auto& error : errors) {
                        spdlog::warn("daemon: enforcer {}: libvirt: {}", options.enforcer_id, error);
                    }
                    if (changed) {
                        rebind("libvirt");
                    }
                }
                if (seconds >= options.drift_interval_seconds) {
                    seconds = 0;
                    check_drift();
                }
                source->report_counters(counters());
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
    // Stop the channel first (no new rulesets), then the spool: its destructor writes every
    // queued event to disk; what the controller has not confirmed is uploaded next start.
    source.reset();
    spool.reset();
    // The table stays in force: stopping the daemon must not unprotect the host.
    spdlog::info("daemon: enforcer {}: stopped; table inet bulkhead stays in force", options.enforcer_id);
    return 0;
}

}  // namespace bulkhead::enforcer
