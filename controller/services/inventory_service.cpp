#include "controller/services/inventory_service.hpp"

#include "policies/net_address.hpp"
#include "policies/policy_reader.hpp"

#include <map>
#include <set>

namespace bulkhead::controller {

using nlohmann::json;

InventoryService::InventoryService(ActiveConfiguration& configuration, FleetService& fleet, Transactions& transactions,
                                   InventoryRepository& inventory, VpnSessionRepository& vpn_sessions,
                                   QuarantineRepository& quarantines, QuarantineService& quarantine, AuditLog& audit,
                                   EventBus& bus, Clock clock)
    : configuration_(configuration), fleet_(fleet), transactions_(transactions), inventory_(inventory),
      vpn_sessions_(vpn_sessions), quarantines_(quarantines), quarantine_(quarantine), audit_(audit), bus_(bus),
      clock_(std::move(clock)) {}

// -------------------------------------------------------------- inventory -----------------

std::expected<void, ServiceError> InventoryService::check_inventory_against_policy(const json& document) {
    auto inventory = policy::read_inventory(document, "inventory");
    if (!inventory) {
        return std::unexpected(invalid_document("the inventory is invalid", inventory.error()));
    }
    const auto active = configuration_.current();
    if (active && active->policy) {
        auto problems = policy::cross_check(*active->policy, *inventory, "policy");
        if (!problems.empty()) {
            return std::unexpected(invalid_document("the change does not fit the active policy", problems));
        }
    }
    return {};
}

std::expected<void, ServiceError> InventoryService::reload() {
    const auto active = configuration_.current();
    auto compiled = configuration_.build(active ? active->revision : std::nullopt);
    if (!compiled) {
        return std::unexpected(compiled.error());
    }
    return configuration_.install(*compiled);
}

ServiceResult InventoryService::get_inventory() {
    auto document = configuration_.inventory_document();
    if (!document) {
        return std::unexpected(document.error());
    }
    return *document;
}

namespace {

std::expected<WorkloadRecord, ServiceError> workload_record(const json& document, TimeMs now) {
    WorkloadRecord record;
    record.id = string_member(document, "id").value_or("");
    record.enforcer = string_member(document, "enforcer").value_or("");
    record.document = document;
    record.updated_at = now;
    return record;
}

}  // namespace

ServiceResult InventoryService::replace_inventory(const Caller& caller, const json& document) {
    // One configuration change at a time: validated, stored and installed together.
    auto changes = configuration_.lock_changes();
    if (auto ok = check_inventory_against_policy(document); !ok) {
        return std::unexpected(ok.error());
    }
    auto before = configuration_.inventory_document();
    if (!before) {
        return std::unexpected(before.error());
    }
    configuration_.inventory_changing();
    auto tx = transactions_.in_transaction([&]() -> StoreResult<void> {
        std::vector<std::string> stale;
        std::set<std::string> kept;
        for (const auto& w : document.value("workloads", json::array())) {
            kept.insert(w.value("id", ""));
        }
        for (const auto& w : (*before)["workloads"]) {
            if (!kept.contains(w.value("id", ""))) {
                stale.push_back(w.value("id", ""));
            }
        }
        if (auto deleted = inventory_.delete_workloads(stale); !deleted) {
            return std::unexpected(deleted.error());
        }
        std::set<std::string> kept_enforcers;
        std::vector<EnforcerDefinition> enforcers;
        for (const auto& e : document.value("enforcers", json::array())) {
            kept_enforcers.insert(e.value("id", ""));
            enforcers.push_back({e.value("id", ""), e});
        }
        for (const auto& e : (*before)["enforcers"]) {
            if (!kept_enforcers.contains(e.value("id", ""))) {
                if (auto gone = inventory_.delete_enforcer_definition(e.value("id", "")); !gone) {
                    return std::unexpected(gone.error());
                }
            }
        }
        if (auto up = inventory_.upsert_enforcer_definitions(enforcers); !up) {
            return std::unexpected(up.error());
        }
        std::vector<WorkloadRecord> workloads;
        for (const auto& w : document.value("workloads", json::array())) {
            workloads.push_back(*workload_record(w, clock_()));
        }
        if (auto up = inventory_.upsert_workloads(workloads); !up) {
            return std::unexpected(up.error());
        }
        return audit_.record(caller, "inventory.replace", "inventory",
              json{{"enforcers", (*before)["enforcers"].size()}, {"workloads", (*before)["workloads"].size()}},
              json{{"enforcers", enforcers.size()}, {"workloads", workloads.size()}});
    });
    if (!tx) {
        return std::unexpected(from_store(tx.error()));
    }
    if (auto reloaded = reload(); !reloaded) {
        return std::unexpected(reloaded.error());
    }
    bus_.publish("inventory", json{{"workloads", document.value("workloads", json::array()).size()}});
    return json{{"enforcers", document.value("enforcers", json::array()).size()},
                {"workloads", document.value("workloads", json::array()).size()},
                {"generation", fleet_.generation()}};
}

ServiceResult InventoryService::list_workloads() {
    auto workloads = inventory_.list_workloads();
    if (!workloads) {
        return std::unexpected(from_store(workloads.error()));
    }
    json list = json::array();
    for (const auto& w : *workloads) {
        list.push_back(w.document);
    }
    return json{{"workloads", list}};
}

ServiceResult InventoryService::get_workload(const std::string& id) {
    auto workload = inventory_.get_workload(id);
    if (!workload) {
        return std::unexpected(from_store(workload.error()));
    }
    if (!*workload) {
        return std::unexpected(service_error(ErrorKind::NotFound, "not-found", "no workload \"" + id + "\""));
    }
    json result = (*workload)->document;
    auto quarantined = quarantines_.active_quarantine(id);
    if (!quarantined) {
        return std::unexpected(from_store(quarantined.error(), "workload quarantine"));
    }
    if (*quarantined) {
        result["quarantine"] = quarantine_.quarantine_json(**quarantined);
    }
    return result;
}

ServiceResult InventoryService::bulk_workloads(const Caller& caller, const json& body) {
    auto changes = configuration_.lock_changes();
    if (auto ok = only_members(body, {"upsert", "delete"}, "a bulk workload change"); !ok) {
        return std::unexpected(ok.error());
    }
    const json* upsert = member(body, "upsert");
    const json* remove = member(body, "delete");
    if (upsert != nullptr && !upsert->is_array()) {
        return std::unexpected(service_error(ErrorKind::BadRequest, "wrong-type", "\"upsert\" must be an array", json{{"pointer", "/upsert"}}));
    }
    if (remove != nullptr && !remove->is_array()) {
        return std::unexpected(service_error(ErrorKind::BadRequest, "wrong-type", "\"delete\" must be an array", json{{"pointer", "/delete"}}));
    }
    auto current = configuration_.inventory_document();
    if (!current) {
        return std::unexpected(current.error());
    }
    std::set<std::string> deleted;
    if (remove != nullptr) {
        for (std::size_t i = 0; i < remove->size(); ++i) {
            if (!(*remove)[i].is_string()) {
                return std::unexpected(service_error(ErrorKind::BadRequest, "wrong-type", "workload ids are strings",
                                             json{{"pointer", "/delete/" + std::to_string(i)}}));
            }
            deleted.insert((*remove)[i].get<std::string>());
        }
    }
    // The merged inventory is validated as a whole, so a bulk import is all or nothing
    // and its errors point into the merged document's workloads.
    std::map<std::string, json> merged;
    for (const auto& w : (*current)["workloads"]) {
        merged[w.value("id", "")] = w;
    }
    for (const auto& id : deleted) {
        merged.erase(id);
    }
    if (upsert != nullptr) {
        for (std::size_t i = 0; i < upsert->size(); ++i) {
            const auto& w = (*upsert)[i];
            if (!w.is_object() || !w.contains("id") || !w["id"].is_string()) {
                return std::unexpected(service_error(ErrorKind::BadRequest, "invalid-value", "each workload needs a string \"id\"",
                                             json{{"pointer", "/upsert/" + std::to_string(i)}}));
            }
            merged[w["id"].get<std::string>()] = w;
        }
    }
    json document{{"enforcers", (*current)["enforcers"]}, {"workloads", json::array()}};
    for (auto& [id, w] : merged) {
        document["workloads"].push_back(w);
    }
    if (auto ok = check_inventory_against_policy(document); !ok) {
        return std::unexpected(ok.error());
    }
    configuration_.inventory_changing();
    auto tx = transactions_.in_transaction([&]() -> StoreResult<void> {
        if (auto d = inventory_.delete_workloads({deleted.begin(), deleted.end()}); !d) {
            return std::unexpected(d.error());
        }
        std::vector<WorkloadRecord> records;
        if (upsert != nullptr) {
            for (const auto& w : *upsert) {
                records.push_back(*workload_record(w, clock_()));
            }
        }
        if (auto u = inventory_.upsert_workloads(records); !u) {
            return std::unexpected(u.error());
        }
        return audit_.record(caller, "inventory.bulk", "workloads", json{{"delete", json(deleted)}},
              upsert != nullptr ? *upsert : json::array());
    });
    if (!tx) {
        return std::unexpected(from_store(tx.error()));
    }
    if (auto reloaded = reload(); !reloaded) {
        return std::unexpected(reloaded.error());
    }
    return json{{"upserted", upsert != nullptr ? upsert->size() : 0},
                {"deleted", deleted.size()},
                {"generation", fleet_.generation()}};
}

ServiceResult InventoryService::put_workload(const Caller& caller, const std::string& id, const json& document) {
    if (!document.is_object()) {
        return std::unexpected(service_error(ErrorKind::BadRequest, "wrong-type", "a workload must be a JSON object", json{{"pointer", ""}}));
    }
    if (auto doc_id = string_member(document, "id"); doc_id && *doc_id != id) {
        return std::unexpected(service_error(ErrorKind::BadRequest, "invalid-value", "\"id\" differs from the workload in the path",
                                     json{{"pointer", "/id"}}));
    }
    json workload = document;
    workload["id"] = id;
    return bulk_workloads(caller, json{{"upsert", json::array({workload})}});
}

ServiceResult InventoryService::delete_workload(const Caller& caller, const std::string& id) {
    auto existing = inventory_.get_workload(id);
    if (!existing) {
        return std::unexpected(from_store(existing.error()));
    }
    if (!*existing) {
        return std::unexpected(service_error(ErrorKind::NotFound, "not-found", "no workload \"" + id + "\""));
    }
    auto quarantined = quarantines_.active_quarantine(id);
    if (!quarantined) {
        // Deleting a workload whose quarantine state is unknown could drop a quarantine.
        return std::unexpected(from_store(quarantined.error(), "workload quarantine"));
    }
    if (*quarantined) {
        return std::unexpected(service_error(ErrorKind::Conflict, "quarantined",
                                     "workload \"" + id + "\" is quarantined; release it before deleting it"));
    }
    return bulk_workloads(caller, json{{"delete", json::array({id})}});
}

ServiceResult InventoryService::list_vpn_sessions(std::optional<TimeMs> active_at, std::size_t limit) {
    auto sessions = vpn_sessions_.list_vpn_sessions(active_at, std::min<std::size_t>(limit, 10000));
    if (!sessions) {
        return std::unexpected(from_store(sessions.error()));
    }
    json list = json::array();
    for (const auto& s : *sessions) {
        list.push_back(vpn_session_json(s));
    }
    return json{{"sessions", list}};
}

ServiceResult InventoryService::add_vpn_session(const Caller& caller, const json& body) {
    if (auto ok = only_members(body, {"user", "pool_address", "real_address", "start_ms", "end_ms"}, "a VPN session"); !ok) {
        return std::unexpected(ok.error());
    }
    VpnSession session;
    auto user = required_string(body, "user", 256);
    if (!user) {
        return std::unexpected(user.error());
    }
    auto pool = required_string(body, "pool_address", 64);
    if (!pool) {
        return std::unexpected(pool.error());
    }
    if (!policy::parse_ip_address(*pool)) {
        return std::unexpected(service_error(ErrorKind::BadRequest, "invalid-address", "\"" + *pool + "\" is not an IP address",
                                     json{{"pointer", "/pool_address"}}));
    }
    auto real = optional_string(body, "real_address", 64);
    if (!real) {
        return std::unexpected(real.error());
    }
    session.user = *user;
    session.pool_address = *pool;
    session.real_address = real->value_or("");
    for (const char* key : {"start_ms", "end_ms"}) {
        if (const json* t = member(body, key); t != nullptr && !t->is_null() && !t->is_number_integer()) {
            return std::unexpected(service_error(ErrorKind::BadRequest, "wrong-type", "\"" + std::string(key) + "\" must be milliseconds since the epoch",
                                         json{{"pointer", "/" + std::string(key)}}));
        }
    }
    session.start = json_int(body, "start_ms", clock_());
    if (const json* end = member(body, "end_ms"); end != nullptr && end->is_number_integer()) {
        session.end = end->get<TimeMs>();
        if (*session.end < session.start) {
            return std::unexpected(service_error(ErrorKind::BadRequest, "invalid-value", "\"end_ms\" is before \"start_ms\"",
                                         json{{"pointer", "/end_ms"}}));
        }
    }
    std::optional<VpnSession> stored;
    auto tx = transactions_.in_transaction([&]() -> StoreResult<void> {
        auto added = vpn_sessions_.add_vpn_session(session);
        if (!added) {
            return std::unexpected(added.error());
        }
        stored = *added;
        return audit_.record(caller, "vpn.session.add", "vpn-session/" + std::to_string(added->id), nullptr, body);
    });
    if (!tx) {
        return std::unexpected(from_store(tx.error()));
    }
    return vpn_session_json(*stored);
}

ServiceResult InventoryService::end_vpn_session(const Caller& caller, std::int64_t id, const json& body) {
    if (auto ok = only_members(body, {"end_ms"}, "a VPN session end"); !ok) {
        return std::unexpected(ok.error());
    }
    if (const json* t = member(body, "end_ms"); t != nullptr && !t->is_number_integer()) {
        return std::unexpected(service_error(ErrorKind::BadRequest, "wrong-type", "\"end_ms\" must be milliseconds since the epoch",
                                     json{{"pointer", "/end_ms"}}));
    }
    const TimeMs end = json_int(body, "end_ms", clock_());
    std::optional<VpnSession> ended;
    auto tx = transactions_.in_transaction([&]() -> StoreResult<void> {
        auto done = vpn_sessions_.end_vpn_session(id, end);
        if (!done) {
            return std::unexpected(done.error());
        }
        ended = *done;
        return audit_.record(caller, "vpn.session.end", "vpn-session/" + std::to_string(id), nullptr, json{{"end_ms", end}});
    });
    if (!tx) {
        return std::unexpected(from_store(tx.error()));
    }
    return json{{"id", id}, {"end", format_time_ms(end)}};
}

}  // namespace bulkhead::controller
