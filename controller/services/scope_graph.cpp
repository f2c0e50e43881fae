#include "controller/services/scope_graph.hpp"

#include <algorithm>
#include <limits>
#include <map>
#include <set>

namespace bulkhead::controller {

using nlohmann::json;

std::expected<json, ServiceError> ScopeGraph::build(const Incident& incident_record, std::int64_t margin_seconds,
                                                   const analyzer::InventoryIndex* inventory, TimeMs now) {
    const Incident* incident = &incident_record;
    const std::int64_t id = incident->id;
    std::optional<ServiceError> failure;
    const json& details = incident->details;
    // The incident's span: its findings' first and last drops, widened by the margin.
    std::int64_t from_ns = std::numeric_limits<std::int64_t>::max(), to_ns = 0;
    if (auto findings = details.find("findings"); findings != details.end() && findings->is_array()) {
        for (const auto& f : *findings) {
            from_ns = std::min(from_ns, f.value("first_ns", from_ns));
            to_ns = std::max(to_ns, f.value("last_ns", to_ns));
        }
    }
    if (to_ns == 0) {
        from_ns = incident->opened_at * 1'000'000;
        to_ns = incident->updated_at * 1'000'000;
    }
    from_ns -= margin_seconds * 1'000'000'000;
    to_ns += margin_seconds * 1'000'000'000 + 1;

    const bool about_target = details.value("subject_kind", "source") == "target";
    const json attribution = details.value("attribution", json::object());
    const std::string workload = attribution.value("workload", incident->source_workload);
    const std::string address = attribution.value("address", "");
    const bool vpn = is_vpn_source(workload);

    struct Edge {
        std::uint64_t blocked = 0, allowed = 0;
        std::set<std::string> services;
        std::int64_t first_ns = std::numeric_limits<std::int64_t>::max(), last_ns = 0;
    };
    std::map<std::string, json> nodes;                          // by node id
    std::map<std::pair<std::string, std::string>, Edge> edges;  // (from, to) -> traffic
    std::map<std::string, std::set<std::string>> memberships;   // node id -> policy segments
    json truncated = json::object();
    constexpr std::size_t kMaxHosts = 200;
    constexpr std::size_t kMaxOthersPerHost = 50;

    auto facts_of_address = [&](const std::string& a) -> const analyzer::WorkloadFacts* {
        return inventory ? inventory->by_address(a, "") : nullptr;
    };
    auto add_workload_node = [&](const std::string& node_id, const std::string& kind, const std::string& label,
                                 const std::string& node_address, const analyzer::WorkloadFacts* facts) {
        auto [it, fresh] = nodes.try_emplace(node_id, json{{"id", node_id}, {"kind", kind}, {"label", label}});
        if (!fresh) {
            return;
        }
        if (!node_address.empty()) {
            it->second["address"] = node_address;
        }
        if (facts != nullptr) {
            it->second["workload"] = facts->id;
            it->second["user"] = facts->user;
            it->second["hostname"] = facts->hostname;
            it->second["enforcer"] = facts->enforcer;
            it->second["critical"] = facts->critical;
            const auto segments = facts->policy_segments();
            memberships[node_id].insert(segments.begin(), segments.end());
        }
    };
    auto service_of = [](const StoredEvent& e) {
        return e.protocol + (e.dport ? "/" + std::to_string(*e.dport) : "");
    };
    auto count = [&](const std::string& from, const std::string& to, const StoredEvent& e) {
        auto& edge = edges[{from, to}];
        if (is_blocked_type(e.type)) {
            edge.blocked += e.count;
        } else {
            edge.allowed += e.count;
        }
        edge.services.insert(service_of(e));
        edge.first_ns = std::min(edge.first_ns, e.time_ns);
        edge.last_ns = std::max(edge.last_ns, e.time_ns);
    };
    auto events_where = [&](std::optional<std::string> by_workload, std::optional<std::string> by_address,
                            std::size_t limit) {
        EventQuery q;
        q.from_ns = from_ns;
        q.to_ns = to_ns;
        q.workload = std::move(by_workload);
        q.address = std::move(by_address);
        q.newest_first = false;
        q.limit = limit;
        auto found = events_.query_events(q);
        if (!found) {
            // A graph missing part of its edges would mislead an analyst: fail the request.
            failure = from_store(found.error(), "scope graph");
            return std::vector<StoredEvent>{};
        }
        return std::move(*found);
    };
    std::string source_node;
    std::vector<std::string> hosts;  // target hosts, most blocked first
    if (!about_target) {
        source_node = "source:" + incident->source_workload;
        const analyzer::WorkloadFacts* facts =
            (!vpn && inventory) ? inventory->by_workload(attribution.value("enforcer", ""), workload) : nullptr;
        add_workload_node(source_node, "source", incident->source_workload, address, facts);
        if (!attribution.value("user", "").empty()) {
            nodes[source_node]["user"] = attribution.value("user", "");
        }
        // The source's own traffic: its outbound events, and inbound drops elsewhere whose
        // sender address is its address.
        std::vector<StoredEvent> own;
        if (!workload.empty() && !vpn) {
            for (auto& e : events_where(workload, std::nullopt, 10000)) {
                if (e.direction != "in" && is_traffic_type(e.type)) {
                    own.push_back(std::move(e));
                }
            }
        }
        if (!address.empty()) {
            for (auto& e : events_where(std::nullopt, address, 10000)) {
                if (e.src == address && (e.direction == "in" || workload.empty() || vpn) && is_traffic_type(e.type)) {
                    own.push_back(std::move(e));
                }
            }
        }
        std::map<std::string, std::uint64_t> blocked_by_host;
        for (const auto& e : own) {
            blocked_by_host[e.dst] += is_blocked_type(e.type) ? e.count : 0;
        }
        for (const auto& [host, n] : blocked_by_host) {
            hosts.push_back(host);
        }
        std::stable_sort(hosts.begin(), hosts.end(),
                         [&](const std::string& a, const std::string& b) { return blocked_by_host[a] > blocked_by_host[b]; });
        if (hosts.size() > kMaxHosts) {
            truncated["targets"] = hosts.size() - kMaxHosts;
            hosts.resize(kMaxHosts);
        }
        const std::set<std::string> kept(hosts.begin(), hosts.end());
        for (const auto& e : own) {
            if (!kept.contains(e.dst)) {
                continue;
            }
            const auto* target_facts = facts_of_address(e.dst);
            const std::string node = "host:" + e.dst;
            add_workload_node(node, "target", target_facts ? target_facts->id + " (" + e.dst + ")" : e.dst, e.dst,
                              target_facts);
            count(source_node, node, e);
        }
    } else {
        // Fan-in: the subject is "host proto/port"; its sources are the graph.
        const std::string subject = details.value("subject", incident->source_workload);
        const std::string host = subject.substr(0, subject.find(' '));
        const auto* facts = facts_of_address(host);
        add_workload_node("host:" + host, "target", subject, host, facts);
        hosts.push_back(host);
    }

    // Other sources that tried the same targets in the span.
    std::uint64_t others_left_out = 0;
    for (const auto& host : hosts) {
        std::map<std::string, std::vector<const StoredEvent*>> by_sender;
        const auto events = events_where(std::nullopt, host, 2000);
        for (const auto& e : events) {
            if (e.dst != host || !is_blocked_type(e.type)) {
                continue;
            }
            std::string sender = e.direction != "in" && !e.workload.empty() ? e.workload : e.src;
            if (!about_target && (sender == incident->source_workload || sender == workload ||
                                  (e.src == address && (workload.empty() || vpn || e.direction == "in")))) {
                continue;  // the incident's own source
            }
            by_sender[sender].push_back(&e);
        }
        std::size_t taken = 0;
        for (const auto& [sender, list] : by_sender) {
            if (taken++ >= kMaxOthersPerHost) {
                ++others_left_out;
                continue;
            }
            const StoredEvent& first = *list.front();
            const bool attributed = first.direction != "in" && !first.workload.empty();
            const analyzer::WorkloadFacts* facts =
                attributed && inventory ? inventory->by_workload(first.enforcer, first.workload) : facts_of_address(first.src);
            const std::string node = "source:" + sender;
            add_workload_node(node, about_target ? "source" : "other-source", sender, first.src, facts);
            for (const auto* e : list) {
                count(node, "host:" + host, *e);
            }
        }
    }
    if (others_left_out != 0) {
        truncated["other_sources"] = others_left_out;
    }

    json edge_list = json::array();
    for (const auto& [ends, edge] : edges) {
        edge_list.push_back(json{{"source", ends.first},
                                 {"target", ends.second},
                                 {"kind", edge.blocked > 0 ? "blocked" : "allowed"},
                                 {"count", edge.blocked + edge.allowed},
                                 {"blocked", edge.blocked},
                                 {"allowed", edge.allowed},
                                 {"services", edge.services},
                                 {"first_ns", edge.first_ns},
                                 {"last_ns", edge.last_ns}});
    }
    std::set<std::string> segments;
    for (const auto& [node, names] : memberships) {
        for (const auto& name : names) {
            segments.insert(name);
            edge_list.push_back(json{{"source", node}, {"target", "segment:" + name}, {"kind", "member"}});
        }
        nodes[node]["segments"] = names;
    }
    json node_list = json::array();
    for (auto& [node_id, node] : nodes) {
        node_list.push_back(std::move(node));
    }
    for (const auto& name : segments) {
        node_list.push_back(json{{"id", "segment:" + name}, {"kind", "segment"}, {"label", name}});
    }
    if (failure) {
        return std::unexpected(*failure);
    }
    return json{{"schema", "bulkhead.incident-scope.v1"},
                {"incident", id},
                {"subject", details.value("subject", incident->source_workload)},
                {"subject_kind", about_target ? "target" : "source"},
                {"severity", incident->severity},
                {"explanation", incident->explanation},
                {"attribution", attribution},
                {"window", json{{"from_ns", from_ns}, {"to_ns", to_ns}, {"margin_s", margin_seconds}}},
                {"generated_at", format_time_ms(now)},
                {"nodes", node_list},
                {"edges", edge_list},
                {"truncated", truncated}};
}


}  // namespace bulkhead::controller
