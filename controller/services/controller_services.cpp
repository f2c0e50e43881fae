#include "controller/services/controller_services.hpp"

#include <spdlog/spdlog.h>

namespace bulkhead::controller {

using nlohmann::json;

ControllerServices::ControllerServices(std::shared_ptr<Store> store, ControllerOptions options, Clock clock)
    : store_(std::move(store)), options_(std::move(options)), clock_(std::move(clock)), outbox_(options_.webhooks),
      delivery_(options_.webhooks, *store_, clock_), audit_(*store_, clock_), configuration_(*store_),
      credentials_(*store_), access(credentials_, clock_),
      fleet(options_.fleet, configuration_, *store_, *store_, *store_, credentials_, *store_, audit_, bus_, clock_),
      policies(configuration_, fleet, *store_, *store_, *store_, audit_, bus_, clock_),
      quarantines(fleet, *store_, *store_, *store_, *store_, *store_, outbox_, audit_, bus_, clock_),
      inventory(configuration_, fleet, *store_, *store_, *store_, *store_, quarantines, audit_, bus_, clock_),
      ledger(*store_, *store_, *store_, *store_, outbox_, audit_, clock_),
      analysis(options_.analysis, *store_, *store_, *store_, *store_, *store_, *store_, ledger, quarantines, bus_,
               clock_),
      events(options_.events, *store_, analysis, bus_, clock_),
      incidents(*store_, *store_, *store_, *store_, *store_, *store_, analysis, quarantines, audit_, bus_, clock_) {
    // A new configuration (activation, inventory change): the fleet recompiles, then the
    // analysis adopts thresholds and attribution.
    configuration_.add_listener([this](const auto&) { return fleet.recompile_all(); });
    configuration_.add_listener([this](const auto& compiled) { return analysis.configure(compiled); });
    quarantines.on_release([this](const std::string& workload) { analysis.released(workload); });
    quarantines.on_outbox_written([this] { delivery_.wake(); });
    analysis.on_outbox_written([this] { delivery_.wake(); });
}

ControllerServices::~ControllerServices() { shutdown(); }

std::expected<void, std::string> ControllerServices::start() {
    auto revision = store_->active_revision();
    if (!revision) {
        return std::unexpected(revision.error().message);
    }
    auto compiled = configuration_.build(*revision);
    if (!compiled) {
        return std::unexpected(compiled.error().message + (compiled.error().details.is_null()
                                                                ? std::string()
                                                                : ": " + compiled.error().details.dump()));
    }
    // Made current without telling the listeners: the fleet compiles once in its start.
    configuration_.adopt(*compiled);
    if (auto configured = analysis.configure(*compiled); !configured) {
        return std::unexpected(configured.error().message);
    }
    if (auto started = fleet.start(); !started) {
        return std::unexpected(started.error());
    }
    if (auto started = analysis.start(); !started) {
        return std::unexpected(started.error());
    }
    delivery_.start();
    return {};
}

void ControllerServices::shutdown() {
    fleet.shutdown();
    bus_.close_all();
    analysis.shutdown();
    delivery_.stop();
}

ServiceResult ControllerServices::health() {
    const auto active = configuration_.current();
    return json{{"status", "ok"},
                {"version", options_.version},
                {"active_revision", active && active->revision ? json(active->revision->id) : json(nullptr)},
                {"generation", fleet.generation()}};
}

ServiceResult ControllerServices::containments(std::optional<std::int64_t> incident, std::size_t limit) {
    nlohmann::json list = nlohmann::json::array();
    for (auto& t : analysis.containment_timelines().recent(incident, limit)) {
        if (t.generation != 0 && !t.enforcer.empty()) {
            t.pushed_ns = fleet.pushed_at(t.enforcer, t.generation).value_or(0);
        }
        list.push_back(containment_timeline_json(t));
    }
    return nlohmann::json{{"containments", std::move(list)}};
}

ServiceResult ControllerServices::analyzer_status() {
    auto result = analysis.status();
    if (!result) {
        return result;
    }
    // The outbox as the store holds it, and this process's sends.
    auto outbox = store_->outbox_stats();
    if (!outbox) {
        return std::unexpected(from_store(outbox.error(), "outbox"));
    }
    const TimeMs now = clock_();
    const auto sent = delivery_.stats();
    (*result)["outbox"] = json{{"depth", outbox->pending},
                               {"oldest_age_ms", outbox->oldest_pending_at ? json(now - *outbox->oldest_pending_at)
                                                                           : json(nullptr)},
                               {"delivered", outbox->delivered},
                               {"failed", outbox->failed}};
    (*result)["webhooks"] = json{{"targets", options_.webhooks.targets.size()},
                                 {"delivered", outbox->delivered},
                                 {"retries", sent.retries},
                                 {"failed", outbox->failed},
                                 {"queued", outbox->pending}};
    return result;
}

}  // namespace bulkhead::controller
