#include "controller/siem/siem_formats.hpp"

#include "common/version.hpp"

#include <algorithm>
#include <cctype>
#include <utility>
#include <vector>

namespace bulkhead::siem {

using controller::AuditEntry;
using controller::Incident;
using controller::IncidentState;
using controller::Quarantine;
using controller::StoredEvent;
using evidence::SignedCheckpoint;
using nlohmann::json;

namespace {

constexpr std::string_view kVendor = "Bulkhead";
constexpr std::string_view kProduct = "Bulkhead Controller";

// ---- what the records say, before any format ------------------------------------------

bool is_allowed_flow(const StoredEvent& event) {
    return event.type == "allowed_flow" || event.type == "allowed_flows";
}
// Monitor mode: the rule would have dropped the packet but let it pass (enforcer DropEvent).
bool would_drop(const StoredEvent& event) {
    return event.document.is_object() && event.document.value("would_drop", false);
}
controller::TimeMs event_time_ms(const StoredEvent& event) {
    return event.time_ns != 0 ? event.time_ns / 1'000'000 : event.received_at;
}
bool is_ipv6(std::string_view address) { return address.find(':') != std::string_view::npos; }
std::string upper(std::string_view text) {
    std::string out(text);
    std::ranges::transform(out, out.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    return out;
}
controller::TimeMs quarantine_time(const Quarantine& quarantine) {
    return quarantine.released_at.value_or(quarantine.created_at);
}
std::string incident_user(const Incident& incident) {
    if (incident.details.is_object()) {
        const auto user = incident.details.find("user");
        if (user != incident.details.end() && user->is_string()) {
            return user->get<std::string>();
        }
    }
    return {};
}
std::string_view direction_word(const StoredEvent& event) {
    return event.direction == "in" ? "inbound" : event.direction == "out" ? "outbound" : "";
}

// One key=value pair for the key-value formats. Either key may be empty: the pair is then
// written by the other format only (CEF's custom-field labels have no LEEF counterpart).
struct Field {
    std::string_view cef;
    std::string_view leef;
    std::string value;
};

// A record as CEF and LEEF see it: the header's class, name and severity and the pairs.
struct KeyValueRecord {
    std::string class_id;
    std::string name;
    std::string category;
    int severity = 0;
    controller::TimeMs time = 0;
    std::vector<Field> fields;

    void add(std::string_view cef, std::string_view leef, std::string value) {
        if (!value.empty()) {
            fields.push_back(Field{cef, leef, std::move(value)});
        }
    }
    // CEF custom string n with its label; LEEF gets the value under its own key.
    void add_custom(std::string_view cef_value_key, std::string_view cef_label_key, std::string_view label,
                    std::string_view leef, std::string value) {
        if (!value.empty()) {
            fields.push_back(Field{cef_label_key, "", std::string(label)});
            fields.push_back(Field{cef_value_key, leef, std::move(value)});
        }
    }
};

void add_event_fields(KeyValueRecord& out, const StoredEvent& event) {
    // CEF's src and dst are IPv4 only; IPv6 addresses go in the c6a2/c6a3 pair.
    out.add(is_ipv6(event.src) ? "c6a2" : "src", "src", event.src);
    out.add(is_ipv6(event.dst) ? "c6a3" : "dst", "dst", event.dst);
    out.add("spt", "srcPort", event.sport ? std::to_string(*event.sport) : "");
    out.add("dpt", "dstPort", event.dport ? std::to_string(*event.dport) : "");
    out.add("proto", "proto", upper(event.protocol));
    const std::string action = is_allowed_flow(event) ? "allowed" : would_drop(event) ? "would-block" : "blocked";
    out.add("act", "action", action);
    out.add("reason", "reason", event.reason);
    out.add("cnt", "eventCount", std::to_string(event.count));
    if (event.direction == "in" || event.direction == "out") {
        out.add("deviceDirection", "", event.direction == "in" ? "0" : "1");
        out.add("", "direction", std::string(direction_word(event)));
    }
    out.add("deviceExternalId", "enforcer", event.enforcer);
    out.add_custom("cs1", "cs1Label", "workload", "workload", event.workload);
    out.add("smac", "srcMAC", event.mac);
    out.add("deviceInboundInterface", "inInterface", event.port);
    out.add_custom("cn1", "cn1Label", "enforcerSequence", "enforcerSequence", std::to_string(event.enforcer_seq));
}

KeyValueRecord key_values(const SiemRecord& record) {
    KeyValueRecord out;
    out.class_id = event_class_id(record);
    out.severity = record_severity(record);
    std::visit(
        [&](const auto* subject) {
            using Subject = std::remove_cvref_t<decltype(*subject)>;
            if constexpr (std::is_same_v<Subject, StoredEvent>) {
                const bool allowed = is_allowed_flow(*subject);
                out.name = allowed ? "Connection allowed" : "Connection blocked";
                out.category = allowed ? "allowed_flow" : "drop";
                out.time = event_time_ms(*subject);
                add_event_fields(out, *subject);
            } else if constexpr (std::is_same_v<Subject, Incident>) {
                out.name = subject->title.empty() ? "Incident" : subject->title;
                out.category = "incident";
                out.time = subject->updated_at;
                out.add("start", "openedTime", std::to_string(subject->opened_at));
                out.add_custom("cs1", "cs1Label", "workload", "workload", subject->source_workload);
                out.add_custom("cs2", "cs2Label", "incidentState", "state", std::string(to_string(subject->state)));
                out.add_custom("cs3", "cs3Label", "incidentSeverity", "incidentSeverity", subject->severity);
                out.add("suser", "usrName", incident_user(*subject));
                out.add("cnt", "eventCount", std::to_string(subject->event_count));
                out.add("msg", "description", subject->explanation);
                out.add_custom("cn1", "cn1Label", "incidentVersion", "incidentVersion",
                               std::to_string(subject->version));
                out.add_custom("cn2", "cn2Label", "incidentId", "incidentId", std::to_string(subject->id));
            } else if constexpr (std::is_same_v<Subject, Quarantine>) {
                const bool released = subject->released_at.has_value();
                out.name = released ? "Workload released from quarantine" : "Workload quarantined";
                out.category = "quarantine";
                out.time = quarantine_time(*subject);
                out.add("act", "action", released ? "release" : "quarantine");
                out.add_custom("cs1", "cs1Label", "workload", "workload", subject->workload);
                out.add("reason", "reason", subject->reason);
                out.add("suser", "usrName", released ? subject->released_by : subject->actor);
                out.add_custom("cs4", "cs4Label", "quarantineKind", "quarantineKind",
                               subject->automatic ? "automatic" : "manual");
                if (released) {
                    out.add("start", "quarantinedTime", std::to_string(subject->created_at));
                }
                out.add_custom("cn2", "cn2Label", "incidentId", "incidentId",
                               subject->incident_id ? std::to_string(*subject->incident_id) : "");
                out.add_custom("cn3", "cn3Label", "quarantineId", "quarantineId", std::to_string(subject->id));
            } else if constexpr (std::is_same_v<Subject, AuditEntry>) {
                out.name = "Audit: " + subject->action;
                out.category = "audit";
                out.time = subject->at;
                out.add("suser", "usrName", subject->actor);
                out.add("spriv", "role", subject->role);
                out.add("act", "action", subject->action);
                out.add_custom("cs5", "cs5Label", "auditTarget", "resource", subject->target);
                out.add_custom("cn3", "cn3Label", "auditId", "auditId", std::to_string(subject->id));
            } else {
                static_assert(std::is_same_v<Subject, SignedCheckpoint>);
                out.name = "Evidence checkpoint";
                out.category = "checkpoint";
                out.time = subject->checkpoint.at_ms;
                out.add_custom("cs5", "cs5Label", "controller", "controller", subject->checkpoint.controller);
                out.add_custom("cs6", "cs6Label", "checkpoint", "checkpoint", evidence::to_json_line(*subject));
            }
        },
        record.subject);
    return out;
}

// The record's subject, or why it cannot be exported.
std::expected<void, std::string> exportable(const SiemRecord& record) {
    const bool null_subject = std::visit([](const auto* subject) { return subject == nullptr; }, record.subject);
    if (null_subject) {
        return std::unexpected("record " + record.id + " has no subject");
    }
    if (!record_kind(record)) {
        const auto* event = std::get<const StoredEvent*>(record.subject);
        return std::unexpected("record " + record.id + ": events of type '" + event->type + "' are not exported");
    }
    return {};
}

// ---- OCSF -----------------------------------------------------------------------------

std::string_view ocsf_severity_name(int severity_id) {
    switch (severity_id) {
    case 1: return "Informational";
    case 2: return "Low";
    case 3: return "Medium";
    case 4: return "High";
    case 5: return "Critical";
    default: return "Unknown";
    }
}

struct OcsfClass {
    int category_uid;
    std::string_view category_name;
    int class_uid;
    std::string_view class_name;
};
constexpr OcsfClass kNetworkActivity{4, "Network Activity", 4001, "Network Activity"};
constexpr OcsfClass kDetectionFinding{2, "Findings", 2004, "Detection Finding"};
constexpr OcsfClass kApiActivity{6, "Application Activity", 6003, "API Activity"};
constexpr OcsfClass kBaseEvent{0, "Uncategorized", 0, "Base Event"};

json ocsf_base(const SiemRecord& record, const OcsfClass& ocsf_class, int activity_id, std::string_view activity_name,
               controller::TimeMs time) {
    const int severity_id = ocsf_severity_id(record_severity(record));
    return json{
        {"category_uid", ocsf_class.category_uid},
        {"category_name", ocsf_class.category_name},
        {"class_uid", ocsf_class.class_uid},
        {"class_name", ocsf_class.class_name},
        {"activity_id", activity_id},
        {"activity_name", activity_name},
        {"type_uid", ocsf_class.class_uid * 100 + activity_id},
        {"type_name", std::string(ocsf_class.class_name) + ": " + std::string(activity_name)},
        {"time", time},
        {"severity_id", severity_id},
        {"severity", ocsf_severity_name(severity_id)},
        {"metadata",
         {{"version", kOcsfVersion},
          {"uid", record.id},
          {"product", {{"name", kProduct}, {"vendor_name", kVendor}, {"version", product_version}}}}},
    };
}

json ocsf_event(const SiemRecord& record, const StoredEvent& event) {
    // Monitor mode let the packet pass: to the SIEM that is traffic, marked would_drop.
    const bool refused = !is_allowed_flow(event) && !would_drop(event);
    json out = refused ? ocsf_base(record, kNetworkActivity, 5, "Refuse", event_time_ms(event))
                       : ocsf_base(record, kNetworkActivity, 6, "Traffic", event_time_ms(event));
    out["metadata"]["logged_time"] = event.received_at;
    out["metadata"]["profiles"] = json::array({"security_control"});
    out["action_id"] = refused ? 2 : 1;
    out["action"] = refused ? "Denied" : "Allowed";
    out["disposition_id"] = refused ? 2 : 1;
    out["disposition"] = refused ? "Blocked" : "Allowed";
    out["count"] = event.count;
    json source{{"ip", event.src}};
    json destination{{"ip", event.dst}};
    if (event.sport) {
        source["port"] = *event.sport;
    }
    if (event.dport) {
        destination["port"] = *event.dport;
    }
    if (!event.mac.empty()) {
        source["mac"] = event.mac;
    }
    if (!event.port.empty()) {
        source["interface_name"] = event.port;
    }
    // The attributed workload is the side the enforcer protects: the source of outbound
    // traffic, the destination of inbound.
    if (!event.workload.empty()) {
        (event.direction == "in" ? destination : source)["name"] = event.workload;
    }
    out["src_endpoint"] = std::move(source);
    out["dst_endpoint"] = std::move(destination);
    json connection{{"protocol_name", event.protocol}};
    if (event.direction == "in" || event.direction == "out") {
        connection["direction_id"] = event.direction == "in" ? 1 : 2;
        connection["direction"] = event.direction == "in" ? "Inbound" : "Outbound";
    }
    out["connection_info"] = std::move(connection);
    out["device"] = json{{"hostname", event.enforcer}, {"type_id", 9}, {"type", "Firewall"}};
    json bulkhead{{"reason", event.reason}, {"enforcer_seq", event.enforcer_seq}, {"event_type", event.type}};
    if (would_drop(event)) {
        bulkhead["would_drop"] = true;
    }
    out["unmapped"] = json{{"bulkhead", std::move(bulkhead)}};
    return out;
}

json ocsf_incident(const SiemRecord& record, const Incident& incident) {
    const bool closed = incident.state == IncidentState::Resolved;
    const bool created = !closed && incident.version == 1;
    json out = closed    ? ocsf_base(record, kDetectionFinding, 3, "Close", incident.updated_at)
               : created ? ocsf_base(record, kDetectionFinding, 1, "Create", incident.updated_at)
                         : ocsf_base(record, kDetectionFinding, 2, "Update", incident.updated_at);
    const auto status = closed ? std::pair{4, "Resolved"}
                        : incident.state == IncidentState::Acknowledged ? std::pair{2, "In Progress"}
                                                                        : std::pair{1, "New"};
    out["status_id"] = status.first;
    out["status"] = status.second;
    out["message"] = incident.explanation;
    out["count"] = incident.event_count;
    out["finding_info"] = json{{"uid", "incidents/" + std::to_string(incident.id)},
                               {"title", incident.title},
                               {"desc", incident.explanation},
                               {"created_time", incident.opened_at},
                               {"modified_time", incident.updated_at}};
    out["resources"] = json::array({json{{"type", "workload"}, {"name", incident.source_workload}}});
    json bulkhead{{"incident_id", incident.id}, {"version", incident.version}, {"severity", incident.severity},
                  {"state", to_string(incident.state)}, {"details", incident.details}};
    if (const auto user = incident_user(incident); !user.empty()) {
        bulkhead["user"] = user;
    }
    out["unmapped"] = json{{"bulkhead", std::move(bulkhead)}};
    return out;
}

json ocsf_quarantine(const SiemRecord& record, const Quarantine& quarantine) {
    const bool released = quarantine.released_at.has_value();
    json out = released ? ocsf_base(record, kApiActivity, 4, "Delete", quarantine_time(quarantine))
                        : ocsf_base(record, kApiActivity, 1, "Create", quarantine_time(quarantine));
    out["actor"] = json{{"user", {{"name", released ? quarantine.released_by : quarantine.actor}}}};
    out["api"] = json{{"operation", released ? "quarantine.release" : "quarantine.create"},
                      {"service", {{"name", "bulkhead-controller"}}}};
    out["resources"] = json::array({json{{"type", "workload"}, {"name", quarantine.workload}}});
    out["status_id"] = 1;
    out["status"] = "Success";
    out["message"] = quarantine.reason;
    json bulkhead{{"quarantine_id", quarantine.id},
                  {"automatic", quarantine.automatic},
                  {"reason", quarantine.reason},
                  {"created_at", quarantine.created_at}};
    if (quarantine.incident_id) {
        bulkhead["incident_id"] = *quarantine.incident_id;
    }
    out["unmapped"] = json{{"bulkhead", std::move(bulkhead)}};
    return out;
}

// API Activity's activity from the audit action's verb ("policy.activate" -> Update).
std::pair<int, std::string_view> api_activity(std::string_view action) {
    const auto dot = action.rfind('.');
    const std::string_view verb = dot == std::string_view::npos ? action : action.substr(dot + 1);
    for (const std::string_view create : {"create", "add", "import", "register"}) {
        if (verb == create) {
            return {1, "Create"};
        }
    }
    for (const std::string_view read : {"read", "get", "list", "export"}) {
        if (verb == read) {
            return {2, "Read"};
        }
    }
    for (const std::string_view remove : {"delete", "remove", "release", "revoke"}) {
        if (verb == remove) {
            return {4, "Delete"};
        }
    }
    for (const std::string_view update :
         {"update", "activate", "set", "edit", "acknowledge", "resolve", "enable", "disable", "rename"}) {
        if (verb == update) {
            return {3, "Update"};
        }
    }
    return {99, "Other"};
}

json ocsf_audit(const SiemRecord& record, const AuditEntry& entry) {
    const auto [activity_id, activity_name] = api_activity(entry.action);
    json out = ocsf_base(record, kApiActivity, activity_id, activity_name, entry.at);
    out["actor"] = json{{"user", {{"name", entry.actor}}}};
    out["api"] = json{{"operation", entry.action}, {"service", {{"name", "bulkhead-controller"}}}};
    const auto slash = entry.target.find('/');
    json resource{{"uid", entry.target}};
    if (slash != std::string::npos) {
        resource["type"] = entry.target.substr(0, slash);
    }
    out["resources"] = json::array({std::move(resource)});
    out["status_id"] = 1;
    out["status"] = "Success";
    out["unmapped"] = json{{"bulkhead", {{"audit_id", entry.id},
                                         {"role", entry.role},
                                         {"before", entry.before},
                                         {"after", entry.after}}}};
    return out;
}

json ocsf_checkpoint(const SiemRecord& record, const SignedCheckpoint& checkpoint) {
    json out = ocsf_base(record, kBaseEvent, 99, "Other", checkpoint.checkpoint.at_ms);
    out["message"] = "Evidence checkpoint of " + checkpoint.checkpoint.controller;
    // The checkpoint's own JSON object, as the checkpoint file holds it: the signature covers
    // signed_bytes(), not this encoding, so a verifier can read it back from the SIEM.
    out["unmapped"] = json{{"bulkhead_checkpoint", json::parse(evidence::to_json_line(checkpoint))}};
    return out;
}

// Compact JSON; bytes that are not UTF-8 (a workload name from a broken upload) become
// U+FFFD instead of throwing.
std::string compact(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

} // namespace

std::optional<SiemRecordKind> record_kind(const SiemRecord& record) {
    return std::visit(
        [](const auto* subject) -> std::optional<SiemRecordKind> {
            using Subject = std::remove_cvref_t<decltype(*subject)>;
            if (subject == nullptr) {
                return std::nullopt;
            }
            if constexpr (std::is_same_v<Subject, StoredEvent>) {
                if (controller::is_blocked_type(subject->type)) {
                    return SiemRecordKind::Drops;
                }
                if (is_allowed_flow(*subject)) {
                    return SiemRecordKind::AllowedFlows;
                }
                return std::nullopt;
            } else if constexpr (std::is_same_v<Subject, Incident>) {
                return SiemRecordKind::Incidents;
            } else if constexpr (std::is_same_v<Subject, Quarantine>) {
                return SiemRecordKind::Quarantines;
            } else if constexpr (std::is_same_v<Subject, AuditEntry>) {
                return SiemRecordKind::Audit;
            } else {
                return SiemRecordKind::Checkpoints;
            }
        },
        record.subject);
}

int record_severity(const SiemRecord& record) {
    return std::visit(
        [](const auto* subject) -> int {
            using Subject = std::remove_cvref_t<decltype(*subject)>;
            if (subject == nullptr) {
                return 0;
            }
            if constexpr (std::is_same_v<Subject, StoredEvent>) {
                if (is_allowed_flow(*subject)) {
                    return 1;
                }
                // A decoy has no legitimate client: touching it is a strong signal.
                return subject->reason == "decoy" ? 7 : subject->reason == "quarantine" ? 6 : 4;
            } else if constexpr (std::is_same_v<Subject, Incident>) {
                const auto& severity = subject->severity;
                return severity == "critical" ? 10 : severity == "high" ? 8 : severity == "medium" ? 5 : 3;
            } else if constexpr (std::is_same_v<Subject, Quarantine>) {
                return subject->released_at ? 3 : 8;
            } else if constexpr (std::is_same_v<Subject, AuditEntry>) {
                return 2;
            } else {
                return 1;
            }
        },
        record.subject);
}

int syslog_severity(int severity) {
    return severity >= 9 ? 2 : severity >= 7 ? 3 : severity >= 5 ? 4 : severity >= 3 ? 5 : 6;
}

int ocsf_severity_id(int severity) {
    return severity >= 9 ? 5 : severity >= 7 ? 4 : severity >= 5 ? 3 : severity >= 3 ? 2 : 1;
}

std::string event_class_id(const SiemRecord& record) {
    return std::visit(
        [](const auto* subject) -> std::string {
            using Subject = std::remove_cvref_t<decltype(*subject)>;
            if (subject == nullptr) {
                return "unknown";
            }
            if constexpr (std::is_same_v<Subject, StoredEvent>) {
                return is_allowed_flow(*subject) ? "allowed_flow" : "drop";
            } else if constexpr (std::is_same_v<Subject, Incident>) {
                return "incident." + std::string(to_string(subject->state));
            } else if constexpr (std::is_same_v<Subject, Quarantine>) {
                return subject->released_at ? "quarantine.released" : "quarantine.created";
            } else if constexpr (std::is_same_v<Subject, AuditEntry>) {
                return "audit." + subject->action;
            } else {
                return "checkpoint";
            }
        },
        record.subject);
}

std::string cef_escape_header(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (const char c : text) {
        if (c == '\\' || c == '|') {
            out += '\\';
            out += c;
        } else if (c == '\n' || c == '\r') {
            out += ' '; // CEF has no escape for a line break in the header
        } else {
            out += c;
        }
    }
    return out;
}

std::string cef_escape_extension(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (const char c : text) {
        switch (c) {
        case '\\': out += "\\\\"; break;
        case '=': out += "\\="; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        default: out += c;
        }
    }
    return out;
}

std::string leef_escape_header(std::string_view text) { return cef_escape_header(text); }

std::string leef_clean_value(std::string_view text) {
    std::string out(text);
    // LEEF defines no escape inside a value: a tab would end the attribute, a line break the
    // message. A space keeps the rest of the value readable.
    std::ranges::replace_if(out, [](char c) { return c == '\t' || c == '\n' || c == '\r'; }, ' ');
    return out;
}

std::expected<std::string, std::string> format_cef(const SiemRecord& record) {
    if (auto ok = exportable(record); !ok) {
        return std::unexpected(ok.error());
    }
    const auto values = key_values(record);
    std::string out = "CEF:0|" + cef_escape_header(kVendor) + "|" + cef_escape_header(kProduct) + "|" +
                      cef_escape_header(product_version) + "|" + cef_escape_header(values.class_id) + "|" +
                      cef_escape_header(values.name) + "|" + std::to_string(values.severity) + "|";
    out += "rt=" + std::to_string(values.time);
    out += " cat=" + cef_escape_extension(values.category);
    out += " externalId=" + cef_escape_extension(record.id);
    for (const auto& field : values.fields) {
        if (!field.cef.empty()) {
            out += ' ';
            out += field.cef;
            out += '=';
            out += cef_escape_extension(field.value);
        }
    }
    return out;
}

std::expected<std::string, std::string> format_leef(const SiemRecord& record) {
    if (auto ok = exportable(record); !ok) {
        return std::unexpected(ok.error());
    }
    const auto values = key_values(record);
    // The delimiter field names the tab by its hex value, "x09": a literal tab in the header is
    // easy to lose in copy and paste and in some relays.
    std::string out = "LEEF:2.0|" + leef_escape_header(kVendor) + "|" + leef_escape_header(kProduct) + "|" +
                      leef_escape_header(product_version) + "|" + leef_escape_header(values.class_id) + "|x09|";
    out += "devTime=" + controller::format_time_ms(values.time);
    out += "\tdevTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSSX";
    out += "\tcat=" + leef_clean_value(values.category);
    out += "\tsev=" + std::to_string(std::max(1, values.severity));
    out += "\texternalId=" + leef_clean_value(record.id);
    for (const auto& field : values.fields) {
        if (!field.leef.empty()) {
            out += '\t';
            out += field.leef;
            out += '=';
            out += leef_clean_value(field.value);
        }
    }
    return out;
}

std::expected<std::string, std::string> format_ocsf(const SiemRecord& record) {
    if (auto ok = exportable(record); !ok) {
        return std::unexpected(ok.error());
    }
    return std::visit(
        [&](const auto* subject) {
            using Subject = std::remove_cvref_t<decltype(*subject)>;
            if constexpr (std::is_same_v<Subject, StoredEvent>) {
                return compact(ocsf_event(record, *subject));
            } else if constexpr (std::is_same_v<Subject, Incident>) {
                return compact(ocsf_incident(record, *subject));
            } else if constexpr (std::is_same_v<Subject, Quarantine>) {
                return compact(ocsf_quarantine(record, *subject));
            } else if constexpr (std::is_same_v<Subject, AuditEntry>) {
                return compact(ocsf_audit(record, *subject));
            } else {
                return compact(ocsf_checkpoint(record, *subject));
            }
        },
        record.subject);
}

std::expected<std::string, std::string> format_record(SiemFormat format, const SiemRecord& record) {
    switch (format) {
    case SiemFormat::Cef: return format_cef(record);
    case SiemFormat::Leef: return format_leef(record);
    case SiemFormat::Ocsf: return format_ocsf(record);
    }
    return std::unexpected("unknown format");
}

} // namespace bulkhead::siem
