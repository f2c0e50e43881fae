#include "controller/server/controller_metrics.hpp"

#include "controller/server/http_api.hpp"
#include "controller/services/controller_services.hpp"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

namespace bulkhead::controller {

using nlohmann::json;

struct ControllerMetrics::Families {
    std::map<std::string, prometheus::Family<prometheus::Gauge>*> gauges;
    std::map<std::string, prometheus::Family<prometheus::Counter>*> counters;
    // What each counter was last set from (the count its source keeps).
    std::map<const prometheus::Counter*, double> last_total;
    // The enforcers that had per-enforcer series in the last scrape.
    std::set<std::string> enforcers_exported;
};

namespace {

// The per-enforcer families: an enforcer that is no longer reported loses its series.
const std::vector<std::string> per_enforcer_gauges{"bulkhead_controller_enforcer_applied_generation",
                                                   "bulkhead_controller_enforcer_apply_latency_seconds"};
const std::vector<std::string> per_enforcer_counters{"bulkhead_controller_enforcer_drift_repairs_total",
                                                     "bulkhead_controller_enforcer_nflog_events_total",
                                                     "bulkhead_controller_enforcer_nflog_lost_events_total"};

}  // namespace

ControllerMetrics::ControllerMetrics(ControllerServices& services, const HttpApi& api, std::vector<Listener> listeners,
                                     RateLimit api_rate)
    : services_(services), api_(api), listeners_(std::move(listeners)), api_rate_(api_rate),
      registry_(std::make_shared<prometheus::Registry>()), families_(std::make_unique<Families>()) {}

ControllerMetrics::~ControllerMetrics() = default;

void ControllerMetrics::gauge(const std::string& name, const std::string& help,
                              const std::map<std::string, std::string>& labels, double value) {
    auto& family = families_->gauges[name];
    if (family == nullptr) {
        family = &prometheus::BuildGauge().Name(name).Help(help).Register(*registry_);
    }
    family->Add(labels).Set(value);
}

void ControllerMetrics::counter(const std::string& name, const std::string& help,
                                const std::map<std::string, std::string>& labels, double total) {
    auto& family = families_->counters[name];
    if (family == nullptr) {
        family = &prometheus::BuildCounter().Name(name).Help(help).Register(*registry_);
    }
    auto* c = &family->Add(labels);
    auto last = families_->last_total.find(c);
    if (last != families_->last_total.end() && total < last->second) {
        // The source started again from zero (an enforcer restarted): so does the series,
        // which Prometheus reads as a counter reset.
        families_->last_total.erase(last);
        family->Remove(c);
        c = &family->Add(labels);
        last = families_->last_total.end();
    }
    const double before = last == families_->last_total.end() ? 0.0 : last->second;
    if (total > before) {
        c->Increment(total - before);
    }
    families_->last_total[c] = std::max(total, before);
}

void ControllerMetrics::retire_enforcer(const std::string& id) {
    const std::map<std::string, std::string> labels{{"enforcer", id}};
    for (const auto& name : per_enforcer_gauges) {
        if (auto it = families_->gauges.find(name); it != families_->gauges.end() && it->second->Has(labels)) {
            it->second->Remove(&it->second->Add(labels));
        }
    }
    for (const auto& name : per_enforcer_counters) {
        if (auto it = families_->counters.find(name); it != families_->counters.end() && it->second->Has(labels)) {
            auto* c = &it->second->Add(labels);
            families_->last_total.erase(c);
            it->second->Remove(c);
        }
    }
}

void ControllerMetrics::render_fleet() {
    const auto fleet = services_.fleet.fleet_figures();
    gauge("bulkhead_controller_enforcers", "Enforcers that enrolled or reported (held in memory)", {},
          static_cast<double>(fleet.states.known));
    gauge("bulkhead_controller_enforcers_connected", "Enforcers whose control channel is open", {},
          static_cast<double>(fleet.states.connected));
    gauge("bulkhead_controller_enforcers_in_sync",
          "Enforcers whose applied ruleset hash is the one desired for them", {},
          static_cast<double>(fleet.states.in_sync));
    gauge("bulkhead_controller_enforcers_apply_failed", "Enforcers whose last apply failed", {},
          static_cast<double>(fleet.states.apply_failed));
    std::set<std::string> exported;
    for (const auto& e : fleet.enforcers) {
        const std::map<std::string, std::string> at{{"enforcer", e.id}};
        gauge(per_enforcer_gauges[0], "The ruleset generation the enforcer reported applied", at,
              static_cast<double>(e.applied_generation));
        gauge(per_enforcer_gauges[1], "How long the enforcer's last ruleset apply took, as it reported", at,
              e.apply_seconds);
        counter(per_enforcer_counters[0], "Drift repairs the enforcer reported (since it started)", at,
                static_cast<double>(e.drift_repairs));
        counter(per_enforcer_counters[1], "NFLOG events the enforcer reported received (since it started)", at,
                static_cast<double>(e.nflog_received));
        counter(per_enforcer_counters[2],
                "NFLOG events the enforcer reported lost by the kernel (since it started)", at,
                static_cast<double>(e.nflog_lost));
        exported.insert(e.id);
    }
    for (const auto& id : families_->enforcers_exported) {
        if (!exported.contains(id)) {
            retire_enforcer(id);
        }
    }
    families_->enforcers_exported = std::move(exported);
}

bool ControllerMetrics::render_incidents_and_quarantines() {
    const auto ingest = services_.events.ingest_figures();
    counter("bulkhead_controller_events_ingested_total",
            "Events from enforcer uploads stored for the first time since the controller started", {},
            static_cast<double>(ingest.stored));
    counter("bulkhead_controller_drop_events_ingested_total",
            "Drop events from enforcer uploads stored for the first time since the controller started", {},
            static_cast<double>(ingest.drops));
    counter("bulkhead_controller_event_duplicates_total",
            "Events from enforcer uploads already stored (retried uploads) since the controller started", {},
            static_cast<double>(ingest.duplicates));
    counter("bulkhead_controller_event_batches_total",
            "Enforcer event uploads stored since the controller started", {}, static_cast<double>(ingest.batches));

    bool readable = true;
    if (auto open = services_.incidents.open_incidents_by_severity()) {
        for (const auto& [severity, count] : *open) {
            gauge("bulkhead_controller_incidents_open", "Incidents open (not acknowledged or resolved), by severity",
                  {{"severity", severity}}, static_cast<double>(count));
        }
    } else {
        readable = false;
        spdlog::warn("metrics: the open incidents are left out of this scrape: {}", open.error().message);
    }
    if (auto in_force = services_.quarantines.in_force_counts()) {
        const std::string help = "Quarantines in force, automatic (the analyzer's) or manual";
        gauge("bulkhead_controller_quarantines_in_force", help, {{"mode", "automatic"}},
              static_cast<double>(in_force->automatic));
        gauge("bulkhead_controller_quarantines_in_force", help, {{"mode", "manual"}},
              static_cast<double>(in_force->manual));
    } else {
        readable = false;
        spdlog::warn("metrics: the quarantines are left out of this scrape: {}", in_force.error().message);
    }
    return readable;
}

std::string ControllerMetrics::render() {
    std::lock_guard lock(mutex_);
    for (const auto& l : listeners_) {
        if (l.server == nullptr) {
            continue;
        }
        const auto f = l.server->figures();
        const std::map<std::string, std::string> at{{"listener", l.name}};
        gauge("bulkhead_controller_connections_open", "Connections open on the listener", at,
              static_cast<double>(f.connections_open));
        gauge("bulkhead_controller_streams_open", "Long-lived responses open (channel and dashboard streams)", at,
              static_cast<double>(f.streams_open));
        gauge("bulkhead_controller_channel_sockets_open",
              "Control channels over WebSocket (one connection per enforcer, protocol 3)", at,
              static_cast<double>(f.sockets_open));
        counter("bulkhead_controller_channel_socket_requests_total",
                "Acks, heartbeats and event uploads received on channel sockets", at,
                static_cast<double>(f.socket_messages));
        gauge("bulkhead_controller_requests_queued", "Requests waiting for or on a worker", at,
              static_cast<double>(f.requests_queued));
        counter("bulkhead_controller_connections_accepted_total", "Connections accepted", at,
                static_cast<double>(f.connections_accepted));
        counter("bulkhead_controller_connections_refused_total",
                "Connections refused over the total or per-client connection limit", at,
                static_cast<double>(f.connections_refused));
        counter("bulkhead_controller_header_timeouts_total",
                "Connections closed because the TLS handshake or a request head was not complete in time", at,
                static_cast<double>(f.header_timeouts));
        counter("bulkhead_controller_body_timeouts_total", "Requests whose body was not complete in time", at,
                static_cast<double>(f.body_timeouts));
        counter("bulkhead_controller_oversized_requests_total", "Request heads or bodies over their size limit", at,
                static_cast<double>(f.oversized));
        counter("bulkhead_controller_requests_total", "Requests read", at, static_cast<double>(f.requests));
        counter("bulkhead_controller_overloaded_requests_total", "Requests answered 503 because the worker queue was full",
                at, static_cast<double>(f.overloaded));
        const std::string limit_help = "A configured limit of the listener (durations in seconds, sizes in bytes)";
        const auto seconds = [](std::chrono::milliseconds ms) { return static_cast<double>(ms.count()) / 1000.0; };
        const std::vector<std::pair<std::string, double>> limits{
            {"max_connections", static_cast<double>(l.limits.max_connections)},
            {"max_connections_per_client", static_cast<double>(l.limits.max_connections_per_client)},
            {"worker_threads", static_cast<double>(l.limits.worker_threads)},
            {"max_queued_requests", static_cast<double>(l.limits.max_queued_requests)},
            {"max_header_bytes", static_cast<double>(l.limits.max_header_bytes)},
            {"max_body_bytes", static_cast<double>(l.limits.max_body_bytes)},
            {"header_timeout_seconds", seconds(l.limits.header_timeout)},
            {"body_timeout_seconds", seconds(l.limits.body_timeout)},
            {"idle_timeout_seconds", seconds(l.limits.idle_timeout)},
        };
        for (const auto& [name, value] : limits) {
            gauge("bulkhead_controller_limit", limit_help, {{"listener", l.name}, {"limit", name}}, value);
        }
    }
    gauge("bulkhead_controller_api_rate_limit_per_second",
          "Requests per second each API token may make (0: no limit)", {}, api_rate_.per_second);
    counter("bulkhead_controller_api_rate_limited_total", "API requests refused (429) by the per-token rate limit", {},
            static_cast<double>(api_.rate_limited()));

    const auto channels = services_.fleet.channel_figures();
    gauge("bulkhead_controller_channels_open", "Enforcer control channels open", {},
          static_cast<double>(channels.open_streams));
    gauge("bulkhead_controller_statuses_pending", "Enforcer statuses received and not yet written", {},
          static_cast<double>(channels.statuses_pending));
    gauge("bulkhead_controller_diff_cache_entries", "Ruleset diffs kept for reuse", {},
          static_cast<double>(channels.diff_cache.entries));
    counter("bulkhead_controller_diff_cache_hits_total", "Ruleset diffs served from the cache", {},
            static_cast<double>(channels.diff_cache.hits));
    counter("bulkhead_controller_diff_cache_misses_total", "Ruleset diffs computed", {},
            static_cast<double>(channels.diff_cache.misses));
    gauge("bulkhead_controller_generation", "The latest ruleset generation", {},
          static_cast<double>(services_.fleet.generation()));
    render_fleet();
    const bool incidents_readable = render_incidents_and_quarantines();

    // The analyzer and the outbox; the store may be unreadable for a moment (said, not hidden).
    auto analyzer = services_.analyzer_status();
    gauge("bulkhead_controller_store_readable", "1 when the last scrape could read the store's figures", {},
          analyzer && incidents_readable ? 1 : 0);
    if (analyzer) {
        const auto& a = *analyzer;
        const auto number = [](const json& j, const char* key) {
            return j.contains(key) && j[key].is_number() ? j[key].get<double>() : 0.0;
        };
        gauge("bulkhead_controller_analyzer_memory_bytes", "Memory the analyzer's state holds", {},
              number(a, "memory_bytes"));
        gauge("bulkhead_controller_analyzed_through_event", "The last drop event the analyzer has seen", {},
              number(a, "analysed_through_event"));
        gauge("bulkhead_controller_open_incidents_tracked", "Open incidents the analyzer tracks", {},
              number(a, "open_incidents_tracked"));
        gauge("bulkhead_controller_auto_quarantines_last_minute", "Automatic quarantines in the last minute", {},
              number(a, "auto_quarantines_last_minute"));
        counter("bulkhead_controller_analyzer_store_errors_total", "Store errors the analysis met", {},
                number(a, "store_errors"));
        counter("bulkhead_controller_event_sequence_gaps_filled_total",
                "Gaps in the event sequence the analyzer closed by reading the store", {},
                number(a, "sequence_gaps_filled"));
        if (a.contains("outbox") && a["outbox"].is_object()) {
            gauge("bulkhead_controller_outbox_depth", "Webhook notifications waiting in the outbox", {},
                  number(a["outbox"], "depth"));
            counter("bulkhead_controller_outbox_delivered_total", "Webhook notifications delivered", {},
                    number(a["outbox"], "delivered"));
            counter("bulkhead_controller_outbox_failed_total", "Webhook notifications given up", {},
                    number(a["outbox"], "failed"));
        }
    } else {
        spdlog::warn("metrics: the analyzer and outbox figures are left out of this scrape: {}",
                     analyzer.error().message);
    }
    prometheus::TextSerializer serializer;
    return serializer.Serialize(registry_->Collect());
}

}  // namespace bulkhead::controller
