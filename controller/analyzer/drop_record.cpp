#include "controller/analyzer/drop_record.hpp"

#include "policies/policy_classes.hpp"

#include "policies/net_address.hpp"

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>

namespace bulkhead::analyzer {

using nlohmann::json;

// ------------------------------------------------------------------ inventory -----------

InventoryIndex::InventoryIndex(const policy::Inventory& inventory, const policy::Policy* policy,
                               const SegmentsOf& segments_of) {
    facts_.reserve(inventory.workloads.size());
    for (const auto& w : inventory.workloads) {
        WorkloadFacts facts;
        facts.id = w.id;
        facts.enforcer = w.enforcer;
        facts.user = w.user;
        facts.hostname = w.hostname;
        facts.critical = w.critical;
        for (const auto& [key, value] : w.labels) {
            facts.segments.push_back(key + "=" + value);
        }
        facts.policy_segments_from = facts.segments.size();
        if (policy != nullptr && segments_of) {
            auto names = segments_of(facts_.size());
            facts.segments.insert(facts.segments.end(), std::make_move_iterator(names.begin()),
                                  std::make_move_iterator(names.end()));
        } else if (policy != nullptr) {
            for (const auto& segment : policy->segments) {
                if (policy::selector_matches(segment.selector, w)) {
                    facts.segments.push_back(segment.name);
                }
            }
        }
        const auto index = facts_.size();
        facts_.push_back(std::move(facts));
        enforcer_of_.push_back(w.enforcer);
        by_id_.emplace(w.id, index);
        for (const auto& address : w.addresses) {
            by_address_[policy::to_string(address)].push_back(index);
        }
    }
}

const WorkloadFacts* InventoryIndex::by_workload(std::string_view enforcer,
                                                 std::string_view workload) const {
    auto it = by_id_.find(std::string(workload));
    if (it == by_id_.end()) {
        return nullptr;
    }
    // Workload ids are unique in an inventory; an event from another enforcer than the
    // inventory's is still the same id, but say nothing rather than mix identities.
    const auto& owner = enforcer_of_[it->second];
    if (!enforcer.empty() && !owner.empty() && owner != enforcer) {
        return nullptr;
    }
    return &facts_[it->second];
}

const WorkloadFacts* InventoryIndex::by_address(std::string_view address,
                                                std::string_view near_enforcer) const {
    auto it = by_address_.find(std::string(address));
    if (it == by_address_.end()) {
        return nullptr;
    }
    const auto& holders = it->second;
    if (holders.size() == 1) {
        return &facts_[holders.front()];
    }
    const WorkloadFacts* near = nullptr;
    for (auto index : holders) {
        if (enforcer_of_[index] == near_enforcer) {
            if (near != nullptr) {
                return nullptr;
            }
            near = &facts_[index];
        }
    }
    return near;
}

// ------------------------------------------------------------------ drop events ---------

Observation DropRecord::view() const {
    Observation o;
    o.time_ns = time_ns;
    o.source = SourceIdentity{enforcer, workload, port, mac, address};
    o.user = user;
    o.source_segments = source_segments;
    o.destination = destination;
    o.protocol = protocol;
    o.dport = dport;
    o.sport = sport;
    o.reason = reason;
    o.count = count;
    o.destination_workload = destination_workload;
    o.destination_segments = destination_segments;
    return o;
}

namespace {

std::string text_member(const json& event, const char* key) {
    auto it = event.find(key);
    return it != event.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// A non-negative integer no larger than `max` (parsed text gives unsigned, built values signed).
std::optional<std::uint64_t> bounded(const json& value, std::uint64_t max) {
    if (!value.is_number_integer() ||
        (!value.is_number_unsigned() && value.get<std::int64_t>() < 0)) {
        return std::nullopt;
    }
    const auto n = value.get<std::uint64_t>();
    return n <= max ? std::optional<std::uint64_t>(n) : std::nullopt;
}

} // namespace

std::expected<std::optional<DropRecord>, std::string>
drop_record_from_json(const json& event, const InventoryView* inventory) {
    if (!event.is_object()) {
        return std::unexpected("not a JSON object");
    }
    if (auto type = event.find("type"); type != event.end()) {
        if (!type->is_string()) {
            return std::unexpected("\"type\" is not a string");
        }
        if (*type != "drop" && *type != "drop_summary") {
            return std::nullopt; // allowed flows, lifecycle events
        }
    }
    // A summary folds the repeats of one drop in a second: it counts at its last sighting.
    const bool summary = event.value("type", "") == "drop_summary";
    DropRecord r;
    auto reason = event.find("reason");
    if (reason == event.end() || !reason->is_string()) {
        return std::unexpected("\"reason\" missing or not a string");
    }
    if (*reason == "allow") {
        return std::nullopt;
    }
    auto parsed_reason = drop_reason_from_string(reason->get<std::string>());
    if (!parsed_reason) {
        return std::unexpected("\"reason\" " + reason->dump() +
                               " is not default, deny, decoy or quarantine");
    }
    r.reason = *parsed_reason;
    auto time = event.find(summary ? "last_seen_ns" : "time_ns");
    if (time == event.end() || !time->is_number_integer()) {
        return std::unexpected(summary ? "\"last_seen_ns\" missing or not an integer"
                                       : "\"time_ns\" missing or not an integer");
    }
    r.time_ns = time->get<std::int64_t>();
    const std::string src = text_member(event, "src");
    const std::string dst = text_member(event, "dst");
    if (src.empty() || dst.empty()) {
        return std::unexpected("\"src\" or \"dst\" missing");
    }
    if (auto proto = event.find("proto"); proto != event.end()) {
        auto n = bounded(*proto, 255);
        if (!n) {
            return std::unexpected("\"proto\" is not a protocol number");
        }
        r.protocol = static_cast<std::uint8_t>(*n);
    } else {
        r.protocol = policy::ip_protocol_number(text_member(event, "proto_name")).value_or(0);
    }
    if (auto dport = event.find("dport"); dport != event.end()) {
        auto n = bounded(*dport, 65535);
        if (!n) {
            return std::unexpected("\"dport\" is not a port number");
        }
        r.dport = static_cast<std::uint16_t>(*n);
    }
    if (auto sport = event.find("sport"); sport != event.end()) {
        auto n = bounded(*sport, 65535);
        if (!n) {
            return std::unexpected("\"sport\" is not a port number");
        }
        r.sport = static_cast<std::uint16_t>(*n);
    } else if (auto id = event.find("icmp_id"); id != event.end()) {
        // An ICMP echo's identifier stands for the source port (one per ping process).
        auto n = bounded(*id, 65535);
        if (!n) {
            return std::unexpected("\"icmp_id\" is not an integer from 0 to 65535");
        }
        r.sport = static_cast<std::uint16_t>(*n);
    }
    if (auto count = event.find("count"); count != event.end()) {
        auto n = bounded(*count, std::numeric_limits<std::uint64_t>::max());
        if (!n || *n == 0) {
            return std::unexpected("\"count\" is not a positive integer");
        }
        r.count = *n;
    }
    const std::string direction = text_member(event, "direction");
    if (!direction.empty() && direction != "out" && direction != "in") {
        return std::unexpected("\"direction\" is not \"out\" or \"in\"");
    }
    r.enforcer = text_member(event, "enforcer");
    std::string port = text_member(event, "physindev");
    if (port.empty())
        port = text_member(event, "indev");
    attribute_drop(r, text_member(event, "workload"), direction == "in", src, dst, port,
                   text_member(event, "src_mac"), inventory);
    return r;
}

void attribute_drop(DropRecord& r, std::string_view workload, bool inbound, std::string_view src,
                    std::string_view dst, std::string_view port, std::string_view mac,
                    const InventoryView* inventory) {
    r.destination = dst;
    r.port = port;
    r.address = src;
    if (inbound) {
        // Toward our workload: the sender is only an address seen by this enforcer...
        r.destination_workload = workload;
        if (inventory != nullptr && !workload.empty()) {
            if (const auto* facts = inventory->by_workload(r.enforcer, workload)) {
                r.destination_segments = facts->segments;
            }
        }
        if (inventory != nullptr) {
            // ... unless exactly one managed workload of the whole inventory holds that
            // address: then it is that workload (its own enforcer and id), and its inbound
            // and outbound drops are one source. A colliding private address stays enforcer
            // + port + address: two holders are never merged, nor one guessed.
            if (const auto* only = inventory->by_address(src, "");
                only != nullptr && !only->enforcer.empty()) {
                r.enforcer = only->enforcer;
                r.workload = only->id;
                r.port.clear();
                r.user = only->user;
                r.source_segments = only->segments;
            }
        }
        return;
    }
    r.workload = workload;
    r.mac = mac;
    if (inventory != nullptr) {
        if (!workload.empty()) {
            if (const auto* facts = inventory->by_workload(r.enforcer, workload)) {
                r.user = facts->user;
                r.source_segments = facts->segments;
            }
        }
        if (const auto* facts = inventory->by_address(dst, r.enforcer)) {
            r.destination_workload = facts->id;
            r.destination_segments = facts->segments;
        }
    }
}

// ------------------------------------------------------------------ configuration -------

namespace {

// Reads the members of one object, remembering the first error; finish() rejects members
// nobody asked for.
class Fields {
  public:
    Fields(const json& object, std::string path, std::string& error)
        : object_(object), path_(std::move(path)), error_(error) {
        if (!object.is_object() && error_.empty()) {
            error_ = path_ + ": not an object";
        }
    }

    const json* take(const char* key) {
        known_.emplace_back(key);
        if (!object_.is_object()) {
            return nullptr;
        }
        auto it = object_.find(key);
        return it == object_.end() ? nullptr : &*it;
    }
    void fail(const char* key, const char* what) {
        if (error_.empty()) {
            error_ = path_ + "/" + key + ": " + what;
        }
    }
    // A member an earlier release read: refused (its meaning is gone), with what replaced it,
    // so an upgraded controller names the fix instead of "unknown member".
    void retired(const char* key, const char* replaced_by) {
        if (take(key) != nullptr) {
            fail(key, replaced_by);
        }
    }
    void boolean(const char* key, bool& out) {
        if (const auto* v = take(key)) {
            v->is_boolean() ? void(out = v->get<bool>()) : fail(key, "not a boolean");
        }
    }
    template <class T> void integer(const char* key, T& out) {
        if (const auto* v = take(key)) {
            if (!v->is_number_integer() ||
                (!v->is_number_unsigned() && v->get<std::int64_t>() < 0)) {
                return fail(key, "not a non-negative integer");
            }
            if constexpr (std::is_unsigned_v<T>) {
                if (v->get<std::uint64_t>() > std::numeric_limits<T>::max()) {
                    return fail(key, "too large");
                }
            }
            out = v->get<T>();
        }
    }
    void number(const char* key, double& out) {
        if (const auto* v = take(key)) {
            v->is_number() && v->get<double>() >= 0 ? void(out = v->get<double>())
                                                    : fail(key, "not a non-negative number");
        }
    }
    void text(const char* key, std::string& out) {
        if (const auto* v = take(key)) {
            v->is_string() ? void(out = v->get<std::string>()) : fail(key, "not a string");
        }
    }
    void severity(const char* key, Severity& out) {
        if (const auto* v = take(key)) {
            auto parsed =
                v->is_string() ? policy::severity_from_string(v->get<std::string>()) : std::nullopt;
            parsed ? void(out = *parsed) : fail(key, "not low, medium, high or critical");
        }
    }
    void strings(const char* key, std::vector<std::string>& out) {
        if (const auto* v = take(key)) {
            if (!v->is_array() ||
                !std::all_of(v->begin(), v->end(), [](const json& e) { return e.is_string(); })) {
                return fail(key, "not an array of strings");
            }
            out = v->get<std::vector<std::string>>();
        }
    }
    void ports(const char* key, std::vector<std::uint16_t>& out) {
        if (const auto* v = take(key)) {
            if (!v->is_array() || !std::all_of(v->begin(), v->end(), [](const json& e) {
                    return e.is_number_unsigned() && e.get<std::uint64_t>() <= 65535;
                })) {
                return fail(key, "not an array of port numbers");
            }
            out = v->get<std::vector<std::uint16_t>>();
        }
    }
    const std::string& path() const { return path_; }
    void finish() {
        if (!object_.is_object() || !error_.empty()) {
            return;
        }
        for (const auto& [key, value] : object_.items()) {
            // "comment" and "$schema" are free for people and editors, as in policies.
            if (key != "comment" && key != "$schema" &&
                std::find(known_.begin(), known_.end(), key) == known_.end()) {
                error_ = path_ + "/" + key + ": unknown member";
                return;
            }
        }
    }

  private:
    const json& object_;
    std::string path_;
    std::string& error_;
    std::vector<std::string> known_;
};

} // namespace

std::expected<AnalyzerConfig, std::string> config_from_json(const json& document) {
    AnalyzerConfig c;
    std::string error;
    Fields top(document, "", error);
    auto section = [&](const char* key, auto&& read) {
        if (const auto* v = top.take(key)) {
            Fields f(*v, std::string("/") + key, error);
            read(f);
            f.finish();
        }
    };
    section("scan", [&](Fields& f) {
        f.integer("window_seconds", c.scan.window_seconds);
        f.integer("max_targets_per_source", c.scan.max_targets_per_source);
    });
    section("host_sweep", [&](Fields& f) {
        f.boolean("enabled", c.host_sweep.enabled);
        f.integer("min_hosts", c.host_sweep.min_hosts);
        f.severity("severity", c.host_sweep.severity);
    });
    section("vertical_scan", [&](Fields& f) {
        f.boolean("enabled", c.vertical_scan.enabled);
        f.integer("min_ports", c.vertical_scan.min_ports);
        f.severity("severity", c.vertical_scan.severity);
    });
    section("box_scan", [&](Fields& f) {
        f.boolean("enabled", c.box_scan.enabled);
        f.integer("min_ports", c.box_scan.min_ports);
        f.integer("min_hosts", c.box_scan.min_hosts);
        f.severity("severity", c.box_scan.severity);
    });
    section("lateral_movement", [&](Fields& f) {
        f.boolean("enabled", c.lateral.enabled);
        f.integer("window_seconds", c.lateral.window_seconds);
        f.integer("min_targets_user", c.lateral.min_targets_user);
        f.integer("min_targets_other", c.lateral.min_targets_other);
        f.integer("min_hosts_user", c.lateral.min_hosts_user);
        f.integer("min_hosts_other", c.lateral.min_hosts_other);
        f.severity("severity_user", c.lateral.severity_user);
        f.severity("severity_other", c.lateral.severity_other);
        if (const auto* services = f.take("services")) {
            if (!services->is_array()) {
                return f.fail("services", "not an array");
            }
            c.lateral.services.clear();
            for (std::size_t i = 0; i < services->size(); ++i) {
                Fields s((*services)[i], f.path() + "/services/" + std::to_string(i), error);
                LateralService service;
                std::string protocol = "tcp";
                s.text("name", service.name);
                s.text("protocol", protocol);
                s.integer("port", service.port);
                s.finish();
                service.protocol = policy::ip_protocol_number(protocol).value_or(0);
                if (service.protocol != 6 && service.protocol != 17 && service.protocol != 132) {
                    s.fail("protocol", "not tcp, udp or sctp");
                }
                c.lateral.services.push_back(std::move(service));
            }
        }
    });
    section("forbidden_zone", [&](Fields& f) {
        f.boolean("enabled", c.forbidden.enabled);
        f.integer("quiet_seconds", c.forbidden.quiet_seconds);
        f.severity("decoy_severity", c.forbidden.decoy_severity);
        f.severity("user_to_admin_severity", c.forbidden.user_to_admin_severity);
        f.severity("vdi_file_sharing_severity", c.forbidden.vdi_file_sharing_severity);
        f.severity("spoof_severity_vdi", c.forbidden.spoof_severity_vdi);
        f.severity("spoof_severity_other", c.forbidden.spoof_severity_other);
        f.strings("decoy_addresses", c.forbidden.decoy_addresses);
        f.ports("file_sharing_ports", c.forbidden.file_sharing_ports);
    });
    section("slow_scan", [&](Fields& f) {
        f.boolean("enabled", c.slow_scan.enabled);
        f.integer("window_seconds", c.slow_scan.window_seconds);
        f.integer("min_hosts", c.slow_scan.min_hosts);
        f.integer("min_ports", c.slow_scan.min_ports);
        f.integer("max_targets", c.slow_scan.max_targets);
        f.severity("severity", c.slow_scan.severity);
    });
    section("distinct_targets", [&](Fields& f) {
        f.boolean("enabled", c.distinct_targets.enabled);
        f.integer("min_targets", c.distinct_targets.min_targets);
        f.severity("severity", c.distinct_targets.severity);
    });
    section("beaconing", [&](Fields& f) {
        f.boolean("enabled", c.beaconing.enabled);
        f.integer("min_intervals", c.beaconing.min_intervals);
        f.number("max_dispersion", c.beaconing.max_dispersion);
        f.number("max_skew", c.beaconing.max_skew);
        f.number("max_spread", c.beaconing.max_spread);
        f.integer("min_interval_seconds", c.beaconing.min_interval_seconds);
        f.integer("min_attempt_gap_ms", c.beaconing.min_attempt_gap_ms);
        f.integer("min_period_seconds", c.beaconing.min_period_seconds);
        f.integer("short_min_intervals", c.beaconing.short_min_intervals);
        f.number("short_max_dispersion_without_ports", c.beaconing.short_max_dispersion_without_ports);
        f.integer("max_interval_seconds", c.beaconing.max_interval_seconds);
        f.integer("max_tracked_per_source", c.beaconing.max_tracked_per_source);
        f.integer("quiet_seconds", c.beaconing.quiet_seconds);
        f.severity("severity", c.beaconing.severity);
        f.severity("internal_severity", c.beaconing.internal_severity);
        f.retired("max_cv", "retired: replaced by max_dispersion (median absolute deviation / median of the "
                            "intervals, default 0.25; see controller/analyzer/README.md)");
        f.retired("short_max_cv", "retired: replaced by short_max_dispersion_without_ports (default 0.05)");
    });
    section("fan_in", [&](Fields& f) {
        f.boolean("enabled", c.fan_in.enabled);
        f.integer("window_seconds", c.fan_in.window_seconds);
        f.integer("min_sources", c.fan_in.min_sources);
        f.integer("max_targets", c.fan_in.max_targets);
        f.integer("max_sources_per_target", c.fan_in.max_sources_per_target);
        f.integer("misconfig_min_attempts", c.fan_in.misconfig_min_attempts);
        f.integer("misconfig_max_hosts", c.fan_in.misconfig_max_hosts);
        f.severity("worm_severity", c.fan_in.worm_severity);
        f.severity("misconfig_severity", c.fan_in.misconfig_severity);
        f.severity("undetermined_severity", c.fan_in.undetermined_severity);
    });
    section("correlator", [&](Fields& f) {
        f.boolean("escalate_multiple_detectors", c.correlator.escalate_multiple_detectors);
        f.integer("repeat_offender_seconds", c.correlator.repeat_offender_seconds);
        f.integer("auto_resolve_idle_seconds", c.correlator.auto_resolve_idle_seconds);
        f.integer("max_timeline", c.correlator.max_timeline);
    });
    section("limits", [&](Fields& f) {
        f.integer("max_sources", c.limits.max_sources);
        f.integer("max_open_incidents", c.limits.max_open_incidents);
        f.integer("max_resolved_incidents", c.limits.max_resolved_incidents);
        f.integer("max_repeat_offender_records", c.limits.max_repeat_offender_records);
    });
    top.strings("user_segments", c.user_segments);
    top.strings("admin_segments", c.admin_segments);
    top.strings("vdi_segments", c.vdi_segments);
    top.integer("sweep_seconds", c.sweep_seconds);
    top.strings("ignored_destinations", c.ignored_destinations);
    for (std::size_t i = 0; i < c.ignored_destinations.size(); ++i) {
        if (auto range = policy::parse_cidr(c.ignored_destinations[i]); !range && error.empty()) {
            error = "/ignored_destinations/" + std::to_string(i) + ": " + range.error();
        }
    }
    if (const auto* exemptions = top.take("exemptions")) {
        if (!exemptions->is_array()) {
            top.fail("exemptions", "not an array");
        } else {
            for (std::size_t i = 0; i < exemptions->size(); ++i) {
                Fields f((*exemptions)[i], "/exemptions/" + std::to_string(i), error);
                Exemption e;
                f.text("enforcer", e.enforcer);
                f.text("workload", e.workload);
                f.text("segment", e.segment);
                f.integer("expires_ns", e.expires_ns);
                f.text("reason", e.reason);
                f.finish();
                if (e.workload.empty() == e.segment.empty()) {
                    f.fail("workload", "give either a workload or a segment");
                }
                if (f.take("expires_ns") == nullptr) {
                    f.fail("expires_ns", "missing (an exemption always expires)");
                }
                c.exemptions.push_back(std::move(e));
            }
        }
    }
    top.finish();
    if (c.scan.window_seconds == 0 || c.lateral.window_seconds == 0 ||
        c.fan_in.window_seconds == 0 || c.slow_scan.window_seconds == 0) {
        error = error.empty() ? "window_seconds must be positive" : error;
    }
    if (!error.empty()) {
        return std::unexpected(error);
    }
    return c;
}

void apply_response_policy(AnalyzerConfig& config, const policy::ResponsePolicy& response) {
    config.distinct_targets.enabled = true;
    config.distinct_targets.min_targets = response.incident.distinct_targets;
    config.distinct_targets.severity = response.incident.severity;
    config.scan.window_seconds = response.incident.window_seconds;
    config.forbidden.decoy_severity = response.decoy_severity;
}

// ------------------------------------------------------------------ output --------------

json to_json(const Finding& f) {
    json j{{"detector", f.detector},
           {"rule", f.rule_text},
           {"severity", std::string(policy::to_string(f.severity))},
           {"score", f.score},
           {"explanation", f.explanation},
           {"distinct_hosts", f.distinct_hosts},
           {"distinct_ports", f.distinct_ports},
           {"distinct_targets", f.distinct_targets},
           {"first_ns", f.first_ns},
           {"last_ns", f.last_ns},
           {"samples", f.sample_targets},
           {"incident", f.incident_id}};
    if (!f.classification.empty()) {
        j["classification"] = f.classification;
    }
    return j;
}

json rule_counts(const std::array<std::uint64_t, rule_count>& counts) {
    json by_rule = json::object();
    for (std::size_t r = 0; r < rule_count; ++r) {
        if (counts[r] != 0) {
            by_rule[std::string(rule_name(static_cast<Rule>(r)))] = counts[r];
        }
    }
    return by_rule;
}

json to_json(const Incident& i) {
    json timeline = json::array();
    for (const auto& f : i.timeline) {
        timeline.push_back(to_json(f));
    }
    json j{{"id", i.id},
           {"subject", i.subject},
           {"subject_kind", i.about_target ? "target" : "source"},
           {"severity", std::string(policy::to_string(i.severity))},
           {"state", i.state == IncidentState::Open ? "open" : "resolved"},
           {"repeat_offender", i.repeat_offender},
           {"opened_ns", i.opened_ns},
           {"last_ns", i.last_ns},
           {"events", i.events},
           {"findings", rule_counts(i.findings)},
           {"suppressed", rule_counts(i.suppressed)},
           {"timeline", timeline},
           {"timeline_dropped", i.timeline_dropped}};
    if (i.state == IncidentState::Resolved)
        j["resolved_ns"] = i.resolved_ns;
    if (!i.about_target) {
        j["source"] = json{{"enforcer", i.enforcer}, {"workload", i.workload}, {"port", i.port},
                           {"mac", i.mac},           {"address", i.address},   {"user", i.user}};
    }
    return j;
}

json to_json(const Totals& t) {
    return json{{"observations", t.observations},
                {"findings", t.findings},
                {"suppressed", t.suppressed},
                {"exempted", t.exempted},
                {"saturated", t.saturated},
                {"scheduled_jobs", t.scheduled_jobs},
                {"ignored", t.ignored},
                {"incidents", t.incidents},
                {"sources", t.sources},
                {"active_sources", t.active_sources},
                {"tracked_targets", t.tracked_targets},
                {"released_sources", t.released_sources},
                {"evicted_sources", t.evicted_sources},
                {"released_incidents", t.released_incidents},
                {"evicted_incidents", t.evicted_incidents},
                {"expired_repeat_offender_records", t.expired_repeat_offender_records},
                {"evicted_repeat_offender_records", t.evicted_repeat_offender_records},
                {"held_sources", t.held_sources},
                {"open_incidents", t.open_incidents},
                {"held_incidents", t.held_incidents},
                {"repeat_offender_records", t.repeat_offender_records}};
}

} // namespace bulkhead::analyzer
