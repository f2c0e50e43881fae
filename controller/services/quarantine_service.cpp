#include "controller/services/quarantine_service.hpp"

#include "policies/net_address.hpp"

#include <spdlog/spdlog.h>

namespace bulkhead::controller {

using nlohmann::json;

QuarantineService::QuarantineService(FleetService& fleet, Transactions& transactions, QuarantineRepository& quarantines,
                                     InventoryRepository& inventory, IncidentRepository& incidents,
                                     OutboxRepository& outbox_store, const WebhookOutbox& outbox, AuditLog& audit,
                                     EventBus& bus, Clock clock)
    : fleet_(fleet), transactions_(transactions), quarantines_(quarantines), inventory_(inventory),
      incidents_(incidents), outbox_store_(outbox_store), outbox_(outbox), audit_(audit), bus_(bus),
      clock_(std::move(clock)) {}

ServiceResult QuarantineService::quarantine_automatically(const std::string& workload, const std::string& reason,
                                                          std::optional<std::int64_t> incident, const json& incident_view,
                                                          const std::string& actor) {
    ServiceResult done;
    {
        std::lock_guard lock(mutex_);
        done = quarantine(workload, reason, actor, "automation", true, incident, incident_view);
    }
    if (done && (*done)["created"].get<bool>()) {
        bus_.publish("quarantine", json{{"action", "created"},
                                        {"quarantine", quarantine_json((*done)["quarantine"].get<Quarantine>())}});
    }
    return done;
}

nlohmann::json QuarantineService::quarantine_json(const Quarantine& q) {
    json j = quarantine_record_json(q);
    // Per-enforcer applied state: the workload's enforcer holds the quarantine once it
    // acked the ruleset that contains it (or a later one).
    std::string enforcer;
    if (auto w = inventory_.get_workload(q.workload); w && *w) {
        enforcer = (*w)->enforcer;
    } else if (!w) {
        // The record is still right; only its applied state is unknown ("unknown" below).
        spdlog::warn("quarantine: workload {}: {}", q.workload, w.error().message);
        j["enforcers"] = json::array({json{{"enforcer", ""}, {"state", "unknown"}}});
        return j;
    }
    json enforcers = json::array();
    if (!enforcer.empty()) {
        auto desired = fleet_.desired(enforcer);
        const std::string state = desired && fleet_.acked(enforcer, desired->hash) ? "applied" : "pending";
        enforcers.push_back(json{{"enforcer", enforcer},
                                 {"state", state},
                                 {"desired_generation", desired ? desired->generation : 0}});
    }
    j["enforcers"] = enforcers;
    return j;
}

ServiceResult QuarantineService::quarantine(
    const std::string& workload, const std::string& reason, const std::string& actor, const std::string& role,
    bool automatic, std::optional<std::int64_t> incident, const json& incident_view) {
    Quarantine q;
    q.workload = workload;
    q.reason = reason;
    q.actor = actor;
    q.automatic = automatic;
    q.incident_id = incident;
    q.created_at = clock_();
    std::optional<Quarantine> stored;
    std::optional<std::string> enforcer;  // of the workload; nothing: no such workload
    std::optional<json> already;          // the quarantine in force, if there is one
    Caller caller{actor, role_from_string(role).value_or(Role::Automation), ""};
    // The checks run inside the write transaction, on the writer's connection, whose page
    // cache is warm (a pooled reader re-reads its pages after every commit: the two reads
    // took ~0.3 ms of a quarantine's time to be in force), and nothing can change between
    // them and the insert.
    auto tx = transactions_.in_transaction([&]() -> StoreResult<void> {
        auto record = inventory_.get_workload(workload);
        if (!record) {
            return std::unexpected(record.error());
        }
        if (!*record) {
            return {};  // refused below; nothing written
        }
        enforcer = (*record)->enforcer;
        auto existing = quarantines_.active_quarantine(workload);
        if (!existing) {
            return std::unexpected(existing.error());
        }
        if (*existing) {
            already = json(**existing);
            return {};  // idempotent: already in force
        }
        auto added = quarantines_.add_quarantine(q);
        if (!added) {
            return std::unexpected(added.error());
        }
        stored = *added;
        if (auto a = audit_.record(caller, "quarantine.create", "workload/" + workload, nullptr,
                                   json{{"reason", reason}, {"automatic", automatic},
                                        {"incident", incident ? json(*incident) : json(nullptr)}});
            !a) {
            return std::unexpected(a.error());
        }
        if (!incident_view.is_null()) {
            // The SOAR learns of an automatic quarantine with the incident behind it.
            return outbox_.enqueue(outbox_store_, "quarantine.created",
                                   json{{"quarantine", quarantine_record_json(*stored)}, {"incident", incident_view}},
                                   clock_());
        }
        return {};
    });
    if (!tx) {
        if (tx.error().kind == StoreError::Kind::Conflict) {
            if (auto raced = quarantines_.active_quarantine(workload); raced && *raced) {
                return json{{"created", false}, {"quarantine", **raced}};
            }
        }
        return std::unexpected(from_store(tx.error(), "quarantine"));
    }
    if (!enforcer) {
        return std::unexpected(service_error(ErrorKind::NotFound, "not-found", "no workload \"" + workload + "\""));
    }
    if (already) {
        return json{{"created", false}, {"quarantine", *already}};
    }
    if (!incident_view.is_null() && outbox_written_) {
        outbox_written_();
    }
    // A workload without an enforcer (an unmanaged server) has nothing to recompile; its
    // quarantine still counts for attribution and the record.
    std::uint64_t generation = 0;
    if (!enforcer->empty()) {
        if (auto rc = fleet_.recompile({*enforcer}); !rc) {
            return std::unexpected(rc.error());
        }
        if (auto desired = fleet_.desired(*enforcer)) {
            generation = desired->generation;
        }
    }
    // "enforcer" and "generation" (the desired ruleset that holds it) are for the caller
    // inside the controller (the containment timeline), not part of an API answer.
    return json{{"created", true}, {"quarantine", *stored}, {"enforcer", *enforcer}, {"generation", generation}};
}

ServiceResult QuarantineService::create_quarantine(const Caller& caller, const json& body, std::chrono::milliseconds wait) {
    if (auto ok = only_members(body, {"workload", "address", "enforcer", "reason", "incident"}, "a quarantine"); !ok) {
        return std::unexpected(ok.error());
    }
    auto workload = optional_string(body, "workload", 256);
    auto address = optional_string(body, "address", 64);
    auto enforcer = optional_string(body, "enforcer", 128);
    auto reason = optional_string(body, "reason", 4096);
    for (const auto* field : {&workload, &address, &enforcer, &reason}) {
        if (!*field) {
            return std::unexpected(field->error());
        }
    }
    std::optional<std::int64_t> incident;
    if (const json* i = member(body, "incident"); i != nullptr && !i->is_null()) {
        if (!i->is_number_integer()) {
            return std::unexpected(service_error(ErrorKind::BadRequest, "wrong-type", "\"incident\" must be an incident id", json{{"pointer", "/incident"}}));
        }
        incident = i->get<std::int64_t>();
        if (auto found = incidents_.get_incident(*incident); !found) {
            return std::unexpected(service_error(ErrorKind::NotFound, "not-found", "no incident " + std::to_string(*incident),
                                         json{{"pointer", "/incident"}}));
        }
    }
    if (workload->has_value() == address->has_value()) {
        return std::unexpected(service_error(ErrorKind::BadRequest, "invalid-value", "give exactly one of \"workload\" and \"address\"",
                                     json{{"pointer", ""}}));
    }
    std::string target;
    if (workload->has_value()) {
        target = **workload;
    } else {
        auto parsed = policy::parse_ip_address(**address);
        if (!parsed) {
            return std::unexpected(service_error(ErrorKind::BadRequest, "invalid-address", "\"" + **address + "\" is not an IP address",
                                         json{{"pointer", "/address"}}));
        }
        // Canonical text (RFC 5952 for IPv6), the form the inventory reader accepts and
        // events carry.
        **address = policy::to_string(*parsed);
        auto owners = inventory_.workloads_with_address(**address);
        if (!owners) {
            return std::unexpected(from_store(owners.error()));
        }
        std::vector<WorkloadRecord> candidates;
        for (const auto& w : *owners) {
            if (!enforcer->has_value() || w.enforcer == **enforcer) {
                candidates.push_back(w);
            }
        }
        if (candidates.empty()) {
            return std::unexpected(service_error(ErrorKind::NotFound, "not-found", "no workload holds address " + **address,
                                         json{{"pointer", "/address"}}));
        }
        if (candidates.size() > 1) {
            json list = json::array();
            for (const auto& c : candidates) {
                list.push_back(json{{"workload", c.id}, {"enforcer", c.enforcer}});
            }
            return std::unexpected(service_error(ErrorKind::Conflict, "ambiguous",
                                         "address " + **address + " belongs to " + std::to_string(candidates.size()) +
                                             " workloads; name the workload or add \"enforcer\"",
                                         json{{"pointer", "/address"}, {"candidates", list}}));
        }
        target = candidates.front().id;
    }
    std::expected<json, ServiceError> done;
    {
        std::lock_guard lock(mutex_);
        done = quarantine(target, reason->value_or(""), caller.name, std::string(to_string(caller.role)), false,
                                 incident, nullptr);
    }
    if (!done) {
        return std::unexpected(done.error());
    }
    const Quarantine q = (*done)["quarantine"].get<Quarantine>();
    if ((*done)["created"].get<bool>()) {
        bus_.publish("quarantine", json{{"action", "created"}, {"quarantine", quarantine_json(q)}});
    }
    if (wait.count() > 0) {
        if (auto w = inventory_.get_workload(target); w && *w) {
            if (auto desired = fleet_.desired((*w)->enforcer)) {
                fleet_.wait_for_ack((*w)->enforcer, desired->hash, wait);
            }
        }
    }
    json result = quarantine_json(q);
    result["created"] = (*done)["created"];
    return result;
}

std::expected<QuarantineService::InForceCounts, ServiceError> QuarantineService::in_force_counts() {
    auto active = quarantines_.active_quarantines();
    if (!active) {
        return std::unexpected(from_store(active.error()));
    }
    InForceCounts counts;
    for (const auto& q : *active) {
        ++(q.automatic ? counts.automatic : counts.manual);
    }
    return counts;
}

ServiceResult QuarantineService::list_quarantines() {
    auto active = quarantines_.active_quarantines();
    if (!active) {
        return std::unexpected(from_store(active.error()));
    }
    json list = json::array();
    for (const auto& q : *active) {
        list.push_back(quarantine_json(q));
    }
    return json{{"quarantines", list}};
}

ServiceResult QuarantineService::get_quarantine(const std::string& workload) {
    auto active = quarantines_.active_quarantine(workload);
    if (!active) {
        return std::unexpected(from_store(active.error()));
    }
    if (!*active) {
        return std::unexpected(service_error(ErrorKind::NotFound, "not-found", "workload \"" + workload + "\" is not quarantined"));
    }
    json j = quarantine_json(**active);
    auto history = quarantines_.quarantine_history(workload, 20);
    if (!history) {
        return std::unexpected(from_store(history.error(), "quarantine"));
    }
    {
        json list = json::array();
        for (const auto& q : *history) {
            list.push_back(json{{"reason", q.reason}, {"actor", q.actor}, {"created_at", format_time_ms(q.created_at)},
                                {"released_at", optional_time(q.released_at)}, {"released_by", q.released_by}});
        }
        j["history"] = list;
    }
    return j;
}

ServiceResult QuarantineService::release_quarantine(const Caller& caller, const std::string& workload,
                                                std::chrono::milliseconds wait) {
    std::string enforcer;
    std::optional<Quarantine> released;
    {
        std::lock_guard lock(mutex_);
        auto active = quarantines_.active_quarantine(workload);
        if (!active) {
            return std::unexpected(from_store(active.error()));
        }
        if (!*active) {
            // Idempotent: releasing what is not quarantined changes nothing.
            return json{{"workload", workload}, {"released", false}};
        }
        auto tx = transactions_.in_transaction([&]() -> StoreResult<void> {
            auto done = quarantines_.release_quarantine(workload, clock_(), caller.name);
            if (!done) {
                return std::unexpected(done.error());
            }
            released = *done;
            return audit_.record(caller, "quarantine.release", "workload/" + workload, json{{"reason", (*active)->reason}}, nullptr);
        });
        if (!tx) {
            return std::unexpected(from_store(tx.error()));
        }
        // Released: what the source does next is judged afresh, not as part of the old storm.
        if (released_) {
            released_(workload);
        }
        if (auto w = inventory_.get_workload(workload); w && *w && !(*w)->enforcer.empty()) {
            enforcer = (*w)->enforcer;
            if (auto rc = fleet_.recompile({enforcer}); !rc) {
                return std::unexpected(rc.error());
            }
        }
    }
    bus_.publish("quarantine", json{{"action", "released"}, {"workload", workload}});
    bool applied = false;
    if (wait.count() > 0 && !enforcer.empty()) {
        if (auto desired = fleet_.desired(enforcer)) {
            applied = fleet_.wait_for_ack(enforcer, desired->hash, wait);
        }
    }
    return json{{"workload", workload},
                {"released", true},
                {"released_at", optional_time(released->released_at)},
                {"enforcer", enforcer},
                {"applied", applied}};
}

}  // namespace bulkhead::controller
