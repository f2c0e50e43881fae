#include "controller/services/incident_service.hpp"

#include <algorithm>
#include <set>
#include <tuple>

namespace bulkhead::controller {

using nlohmann::json;

IncidentService::IncidentService(Transactions& transactions, IncidentRepository& incidents, EventRepository& events,
                                 InventoryRepository& inventory, QuarantineRepository& quarantines,
                                 ExemptionRepository& exemptions, AnalysisService& analysis,
                                 QuarantineService& quarantine, AuditLog& audit, EventBus& bus, Clock clock)
    : transactions_(transactions), incidents_(incidents), events_(events), inventory_(inventory),
      quarantines_(quarantines), exemptions_(exemptions), analysis_(analysis), quarantine_(quarantine), audit_(audit),
      bus_(bus), clock_(std::move(clock)), scope_(events) {}

ServiceResult IncidentService::incident_scope(std::int64_t id, std::int64_t margin_seconds) {
    auto incident = incidents_.get_incident(id);
    if (!incident) {
        return std::unexpected(from_store(incident.error(), "incident"));
    }
    const auto inventory = analysis_.inventory_index();
    return scope_.build(*incident, margin_seconds, inventory.get(), clock_());
}

ServiceResult IncidentService::list_exemptions() {
    auto stored = exemptions_.list_exemptions();
    if (!stored) {
        return std::unexpected(from_store(stored.error()));
    }
    json list = json::array();
    for (const auto& e : *stored) {
        list.push_back(exemption_json(e));
    }
    return json{{"exemptions", list}};
}

ServiceResult IncidentService::add_exemption(const Caller& caller, const json& body) {
    if (auto ok = only_members(body, {"workload", "enforcer", "segment", "expires_ms", "reason"}, "an exemption"); !ok) {
        return std::unexpected(ok.error());
    }
    auto workload = optional_string(body, "workload", 256);
    auto enforcer = optional_string(body, "enforcer", 256);
    auto segment = optional_string(body, "segment", 256);
    for (auto* field : {&workload, &enforcer, &segment}) {
        if (!*field) {
            return std::unexpected(field->error());
        }
    }
    if (workload->has_value() == segment->has_value()) {
        return std::unexpected(service_error(ErrorKind::BadRequest, "invalid-value", "give either \"workload\" or \"segment\"",
                                     json{{"pointer", workload->has_value() ? "/segment" : "/workload"}}));
    }
    if (enforcer->has_value() && !workload->has_value()) {
        return std::unexpected(service_error(ErrorKind::BadRequest, "invalid-value", "\"enforcer\" narrows a workload exemption only",
                                     json{{"pointer", "/enforcer"}}));
    }
    auto reason = required_string(body, "reason", 1024);
    if (!reason) {
        return std::unexpected(reason.error());
    }
    const json* expires = member(body, "expires_ms");
    const TimeMs now = clock_();
    // An exemption always ends: at most 90 days, so a forgotten one cannot blind the analyzer.
    constexpr TimeMs kMaxDays = 90;
    if (expires == nullptr) {
        return std::unexpected(service_error(ErrorKind::BadRequest, "missing-field", "required member \"expires_ms\" is missing (an exemption always expires)",
                                     json{{"pointer", ""}}));
    }
    if (!expires->is_number_integer() || expires->get<std::int64_t>() <= now ||
        expires->get<std::int64_t>() > now + kMaxDays * 86'400'000) {
        return std::unexpected(service_error(ErrorKind::BadRequest, "invalid-value", "\"expires_ms\" must be a time (ms since the epoch) in the next 90 days",
                                     json{{"pointer", "/expires_ms"}}));
    }
    Exemption exemption;
    exemption.workload = workload->value_or("");
    exemption.enforcer = enforcer->value_or("");
    exemption.segment = segment->value_or("");
    exemption.expires_at = expires->get<std::int64_t>();
    exemption.reason = *reason;
    exemption.created_by = caller.name;
    exemption.created_at = now;
    json stored;
    auto tx = transactions_.in_transaction([&]() -> StoreResult<void> {
        auto added = exemptions_.add_exemption(exemption);
        if (!added) {
            return std::unexpected(added.error());
        }
        stored = exemption_json(*added);
        return audit_.record(caller, "analyzer.exemption.add", "exemption/" + std::to_string(added->id), nullptr, stored);
    });
    if (!tx) {
        return std::unexpected(from_store(tx.error()));
    }
    analysis_.reconfigure();
    return stored;
}

ServiceResult IncidentService::delete_exemption(const Caller& caller, std::int64_t id) {
    auto tx = transactions_.in_transaction([&]() -> StoreResult<void> {
        auto removed = exemptions_.delete_exemption(id);
        if (!removed) {
            return std::unexpected(removed.error());
        }
        return audit_.record(caller, "analyzer.exemption.delete", "exemption/" + std::to_string(id), exemption_json(*removed),
                     nullptr);
    });
    if (!tx) {
        return std::unexpected(from_store(tx.error()));
    }
    analysis_.reconfigure();
    return json{{"deleted", id}};
}


std::expected<std::map<std::string, std::uint64_t>, ServiceError> IncidentService::open_incidents_by_severity() {
    auto counted = incidents_.count_incidents_by_severity(IncidentState::Open);
    if (!counted) {
        return std::unexpected(from_store(counted.error()));
    }
    std::map<std::string, std::uint64_t> by_severity{{"low", 0}, {"medium", 0}, {"high", 0}, {"critical", 0}};
    for (const auto& [severity, count] : *counted) {
        by_severity[severity] = count;
    }
    return by_severity;
}

ServiceResult IncidentService::list_incidents(const IncidentQuery& query) {
    auto incidents = incidents_.list_incidents(query);
    if (!incidents) {
        return std::unexpected(from_store(incidents.error()));
    }
    json list = json::array();
    for (const auto& i : *incidents) {
        json j = incident_json(i);
        j["user"] = i.details.value("user", "");
        list.push_back(std::move(j));
    }
    return json{{"incidents", list}};
}

StoreResult<std::vector<StoredEvent>> IncidentService::timeline_events(std::int64_t id, std::size_t limit) {
    auto events = incidents_.incident_events(id, limit);
    const std::int64_t archived_through = archive_ != nullptr ? archive_->archived_through() : 0;
    if (!events || archived_through == 0)
        return events;
    auto ids = incidents_.incident_event_ids(id, limit);
    if (!ids)
        return std::unexpected(ids.error());
    // Linked ids the database no longer holds: the archive's.
    std::set<std::int64_t> in_database;
    for (const auto& e : *events)
        in_database.insert(e.id);
    std::set<std::int64_t> archived;
    for (const auto event_id : *ids) {
        if (!in_database.contains(event_id) && event_id <= archived_through)
            archived.insert(event_id);
    }
    if (archived.empty())
        return events;
    // In windows of ids close together, so that a timeline spread over a long busy period
    // does not read every event between its first and its last.
    constexpr std::int64_t kWindow = 65'536;
    for (auto it = archived.begin(); it != archived.end();) {
        EventQuery window;
        window.after_id = *it - 1;
        window.through_id = *it;
        while (it != archived.end() && *it - *window.after_id <= kWindow)
            window.through_id = *it++;
        window.newest_first = false;
        window.limit = static_cast<std::size_t>(*window.through_id - *window.after_id);
        auto older = archive_->query_archived(window);
        if (!older)
            return std::unexpected(older.error());
        for (auto& e : *older) {
            if (archived.contains(e.id))
                events->push_back(std::move(e));
        }
    }
    std::sort(events->begin(), events->end(), [](const StoredEvent& a, const StoredEvent& b) {
        return std::tie(a.time_ns, a.id) < std::tie(b.time_ns, b.id);
    });
    if (events->size() > limit)
        events->resize(limit);
    return events;
}

ServiceResult IncidentService::get_incident(std::int64_t id) {
    auto incident = incidents_.get_incident(id);
    if (!incident) {
        return std::unexpected(from_store(incident.error()));
    }
    json j = incident_json(*incident);
    auto events = timeline_events(id, 1000);
    if (!events) {
        return std::unexpected(from_store(events.error(), "incident timeline"));
    }
    json timeline = json::array();
    json targets = json::object();
    {
        for (const auto& e : *events) {
            timeline.push_back(event_json(e));
            std::string target = e.dst + " " + e.protocol + (e.dport ? "/" + std::to_string(*e.dport) : "");
            targets[target] = targets.value(target, 0) + e.count;
        }
    }
    j["timeline"] = timeline;
    j["targets"] = targets;
    auto notes = incidents_.incident_notes(id);
    if (!notes) {
        return std::unexpected(from_store(notes.error(), "incident notes"));
    }
    json note_list = json::array();
    {
        for (const auto& n : *notes) {
            note_list.push_back(json{{"id", n.id}, {"author", n.author}, {"at", format_time_ms(n.at)}, {"text", n.text}});
        }
    }
    j["notes"] = note_list;
    auto source = inventory_.get_workload(incident->source_workload);
    if (!source) {
        return std::unexpected(from_store(source.error(), "incident source"));
    }
    if (*source) {
        j["source"] = (*source)->document;
    }
    auto quarantined = quarantines_.active_quarantine(incident->source_workload);
    if (!quarantined) {
        return std::unexpected(from_store(quarantined.error(), "incident quarantine"));
    }
    if (*quarantined) {
        j["quarantine"] = quarantine_.quarantine_json(**quarantined);
    }
    return j;
}

ServiceResult IncidentService::set_incident_state(const Caller& caller, std::int64_t id, IncidentState state) {
    std::optional<Incident> result;
    auto tx = transactions_.in_transaction([&]() -> StoreResult<void> {
        auto incident = incidents_.get_incident(id);
        if (!incident) {
            return std::unexpected(incident.error());
        }
        const std::string before(to_string(incident->state));
        if (incident->state == IncidentState::Resolved && state != IncidentState::Resolved) {
            return std::unexpected(StoreError{StoreError::Kind::Conflict, "incident " + std::to_string(id) + " is resolved"});
        }
        incident->state = state;
        incident->updated_at = clock_();
        auto updated = incidents_.update_incident(*incident);
        if (!updated) {
            return std::unexpected(updated.error());
        }
        result = *updated;
        return audit_.record(caller, state == IncidentState::Resolved ? "incident.resolve" : "incident.acknowledge",
              "incident/" + std::to_string(id), json{{"state", before}}, json{{"state", std::string(to_string(state))}});
    });
    if (!tx) {
        return std::unexpected(from_store(tx.error()));
    }
    if (state == IncidentState::Resolved) {
        // A resolved storm is over: the source's next scan is a new incident, at once.
        analysis_.resolved(id);
    }
    bus_.publish("incident", json{{"action", std::string(to_string(state))}, {"incident", incident_json(*result)}});
    return incident_json(*result);
}

ServiceResult IncidentService::add_incident_note(const Caller& caller, std::int64_t id, const json& body) {
    if (auto ok = only_members(body, {"text"}, "a note"); !ok) {
        return std::unexpected(ok.error());
    }
    auto text = required_string(body, "text", 16384);
    if (!text) {
        return std::unexpected(text.error());
    }
    std::optional<IncidentNote> stored;
    auto tx = transactions_.in_transaction([&]() -> StoreResult<void> {
        if (auto incident = incidents_.get_incident(id); !incident) {
            return std::unexpected(incident.error());
        }
        auto added = incidents_.add_incident_note(IncidentNote{0, id, caller.name, clock_(), *text});
        if (!added) {
            return std::unexpected(added.error());
        }
        stored = *added;
        return audit_.record(caller, "incident.note", "incident/" + std::to_string(id), nullptr, json{{"text", *text}});
    });
    if (!tx) {
        return std::unexpected(from_store(tx.error()));
    }
    return json{{"id", stored->id}, {"incident", id}, {"author", stored->author}, {"at", format_time_ms(stored->at)},
                {"text", stored->text}};
}


}  // namespace bulkhead::controller
