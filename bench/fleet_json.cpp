#include "bench/fleet_json.hpp"

#include "policies/net_address.hpp"

namespace bulkhead::bench {
namespace {

using nlohmann::ordered_json;
using policy::NumberRange;

ordered_json number_range(const NumberRange& r) {
    if (r.low == r.high) {
        return r.low;
    }
    return std::to_string(r.low) + "-" + std::to_string(r.high);
}

std::string_view action_word(policy::RuleAction a) {
    return a == policy::RuleAction::Allow ? "allow" : "deny";
}

}  // namespace

ordered_json policy_to_json(const policy::Policy& policy) {
    ordered_json out;
    out["name"] = policy.name;
    if (!policy.description.empty()) {
        out["description"] = policy.description;
    }
    const auto& d = policy.defaults;
    out["defaults"] = {{"action", d.action == policy::DefaultAction::Deny ? "deny" : "allow"},
                       {"mode", d.mode == policy::Mode::Enforce ? "enforce" : "monitor"},
                       {"log_drops", d.log_drops},
                       {"log_group", d.log_group},
                       {"log_allowed", d.log_allowed},
                       {"allowed_log_group", d.allowed_log_group}};
    ordered_json services = ordered_json::array();
    for (const auto& s : policy.services) {
        ordered_json entries = ordered_json::array();
        for (const auto& e : s.entries) {
            ordered_json entry{{"protocol", policy::to_string(e.protocol)}};
            if (!e.ports.empty()) {
                entry["ports"] = ordered_json::array();
                for (const auto& p : e.ports) {
                    entry["ports"].push_back(number_range(p));
                }
            }
            if (!e.icmp_types.empty()) {
                entry["types"] = ordered_json::array();
                for (const auto& t : e.icmp_types) {
                    for (auto type = t.low; type <= t.high; ++type) {  // no ranges for types
                        entry["types"].push_back(type);
                    }
                }
            }
            entries.push_back(std::move(entry));
        }
        ordered_json service{{"name", s.name}};
        if (!s.description.empty()) {
            service["description"] = s.description;
        }
        service["entries"] = std::move(entries);
        services.push_back(std::move(service));
    }
    out["services"] = std::move(services);
    ordered_json segments = ordered_json::array();
    for (const auto& s : policy.segments) {
        ordered_json segment{{"name", s.name}};
        if (!s.description.empty()) {
            segment["description"] = s.description;
        }
        if (s.decoy) {
            segment["decoy"] = true;
        }
        ordered_json selector = ordered_json::object();
        if (!s.selector.labels.empty()) {
            selector["labels"] = ordered_json::object();
            for (const auto& [key, values] : s.selector.labels) {
                selector["labels"][key] = values.size() == 1 ? ordered_json(values.front())
                                                             : ordered_json(values);
            }
        }
        if (!s.selector.workloads.empty()) {
            selector["workloads"] = s.selector.workloads;
        }
        if (!s.selector.cidrs.empty()) {
            selector["cidrs"] = ordered_json::array();
            for (const auto& c : s.selector.cidrs) {
                selector["cidrs"].push_back(policy::to_string(c));
            }
        }
        segment["selector"] = std::move(selector);
        segments.push_back(std::move(segment));
    }
    out["segments"] = std::move(segments);
    ordered_json rules = ordered_json::array();
    for (const auto& r : policy.rules) {
        ordered_json rule{{"name", r.name}};
        if (!r.description.empty()) {
            rule["description"] = r.description;
        }
        rule["action"] = action_word(r.action);
        rule["from"] = r.from;
        rule["to"] = r.to;
        rule["services"] = r.services;
        rules.push_back(std::move(rule));
    }
    out["rules"] = std::move(rules);
    auto grants = [](const std::vector<policy::QuarantineGrant>& list, const char* peer) {
        ordered_json a = ordered_json::array();
        for (const auto& g : list) {
            a.push_back({{peer, g.segments}, {"services", g.services}});
        }
        return a;
    };
    out["quarantine"] = {{"allow", grants(policy.quarantine.allow, "to")},
                         {"allow_from", grants(policy.quarantine.allow_from, "from")}};
    return out;
}

ordered_json workload_to_json(const policy::Workload& w) {
    ordered_json out{{"id", w.id}};
    if (!w.enforcer.empty()) {
        out["enforcer"] = w.enforcer;
    }
    out["addresses"] = ordered_json::array();
    for (const auto& a : w.addresses) {
        out["addresses"].push_back(policy::to_string(a));
    }
    if (!w.mac.empty()) {
        out["mac"] = w.mac;
    }
    if (!w.labels.empty()) {
        out["labels"] = ordered_json::object();
        for (const auto& [key, value] : w.labels) {
            out["labels"][key] = value;
        }
    }
    if (!w.user.empty()) {
        out["user"] = w.user;
    }
    if (!w.hostname.empty()) {
        out["hostname"] = w.hostname;
    }
    if (w.critical) {
        out["critical"] = true;
    }
    if (w.attachment) {
        if (w.attachment->mode == policy::AttachmentMode::Port) {
            out["attachment"] = {{"mode", "port"}, {"interface", w.attachment->interfaces.front()}};
        } else {
            out["attachment"] = {{"mode", "host"}, {"interfaces", w.attachment->interfaces}};
        }
    }
    return out;
}

ordered_json inventory_to_json(const policy::Inventory& inventory) {
    ordered_json out;
    out["enforcers"] = ordered_json::array();
    for (const auto& e : inventory.enforcers) {
        ordered_json enforcer{{"id", e.id}};
        if (!e.description.empty()) {
            enforcer["description"] = e.description;
        }
        out["enforcers"].push_back(std::move(enforcer));
    }
    out["workloads"] = ordered_json::array();
    for (const auto& w : inventory.workloads) {
        out["workloads"].push_back(workload_to_json(w));
    }
    return out;
}

}  // namespace bulkhead::bench
