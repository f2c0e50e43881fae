#include "controller/siem/siem_formats.hpp"

#include "common/version.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <concepts>
#include <iterator>
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
// Not a column: restore_upload_fields takes it from the document, as it does port, MAC and
// source port.
bool would_drop(const StoredEvent& event) { return event.would_drop; }
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

// ---- JSON text ------------------------------------------------------------------------

// The length of the UTF-8 sequence that starts `text` (not empty, first byte >= 0x80) and
// whether it is well-formed (Unicode 15, table 3-7). An ill-formed one's length is that of its
// maximal subpart, at least 1: the bytes one U+FFFD replaces. A byte that breaks off a
// sequence is not part of it and starts the next one. These are the bytes nlohmann::json's
// dump replaces too, so the text did not change with the writer.
struct Utf8Sequence {
    std::size_t length;
    bool well_formed;
};
Utf8Sequence utf8_sequence(std::string_view text) {
    const auto lead = static_cast<unsigned char>(text[0]);
    std::size_t length = 0;
    // The range of the second byte; those after it are 0x80..0xBF. The narrower ranges rule
    // out overlong forms (E0, F0), surrogates (ED) and code points above U+10FFFF (F4).
    unsigned char low = 0x80;
    unsigned char high = 0xBF;
    if (lead >= 0xC2 && lead <= 0xDF) {
        length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        length = 3;
        low = lead == 0xE0 ? 0xA0 : 0x80;
        high = lead == 0xED ? 0x9F : 0xBF;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        length = 4;
        low = lead == 0xF0 ? 0x90 : 0x80;
        high = lead == 0xF4 ? 0x8F : 0xBF;
    } else {
        return {1, false}; // a continuation byte, C0, C1 (overlong) or F5..FF starts nothing
    }
    for (std::size_t i = 1; i < length; ++i) {
        if (i == text.size()) {
            return {i, false}; // cut short by the end of the text
        }
        const auto byte = static_cast<unsigned char>(text[i]);
        if (byte < low || byte > high) {
            return {i, false};
        }
        low = 0x80;
        high = 0xBF;
    }
    return {length, true};
}

void append_json_escape(std::string& out, unsigned char control_or_quote) {
    switch (control_or_quote) {
    case '"':
        out += "\\\"";
        break;
    case '\\':
        out += "\\\\";
        break;
    case '\b':
        out += "\\b";
        break;
    case '\t':
        out += "\\t";
        break;
    case '\n':
        out += "\\n";
        break;
    case '\f':
        out += "\\f";
        break;
    case '\r':
        out += "\\r";
        break;
    default: {
        constexpr std::string_view kHex = "0123456789abcdef";
        const char escape[] = {
            '\\', 'u', '0', '0', kHex[control_or_quote >> 4], kHex[control_or_quote & 0xF]};
        out.append(escape, sizeof escape);
    }
    }
}

// Compact JSON text appended to a string, for objects whose members are known in advance.
// The caller writes each member once, in order, and closes what it opens. Keys are this
// file's own constants (plain ASCII, nothing to escape). A comma goes before every member or
// element except the first of its object or array, which the text so far tells: no value
// ends in '{' or '['.
class JsonText {
  public:
    explicit JsonText(std::string& out) : out_(out) {}

    JsonText& begin_object() {
        separate();
        out_ += '{';
        return *this;
    }
    JsonText& begin_object(std::string_view key) {
        write_key(key);
        out_ += '{';
        return *this;
    }
    JsonText& end_object() {
        out_ += '}';
        return *this;
    }
    JsonText& begin_array(std::string_view key) {
        write_key(key);
        out_ += '[';
        return *this;
    }
    JsonText& end_array() {
        out_ += ']';
        return *this;
    }
    JsonText& string(std::string_view key, std::string_view value) {
        write_key(key);
        append_json_string(out_, value);
        return *this;
    }
    // An array's element.
    JsonText& string(std::string_view value) {
        separate();
        append_json_string(out_, value);
        return *this;
    }
    template <std::integral Integer> JsonText& number(std::string_view key, Integer value) {
        write_key(key);
        char digits[24];
        const auto written = std::to_chars(std::begin(digits), std::end(digits), value);
        out_.append(digits, written.ptr);
        return *this;
    }
    JsonText& number(std::string_view key, bool value) = delete; // a flag is boolean()
    JsonText& boolean(std::string_view key, bool value) {
        write_key(key);
        out_ += value ? "true" : "false";
        return *this;
    }
    // A value that already is JSON: as nlohmann::json's dump writes it, so its object
    // members come in name order too.
    JsonText& json_value(std::string_view key, const json& value) {
        write_key(key);
        out_ += value.dump(-1, ' ', false, json::error_handler_t::replace);
        return *this;
    }

  private:
    void separate() {
        if (!out_.empty() && out_.back() != '{' && out_.back() != '[') {
            out_ += ',';
        }
    }
    void write_key(std::string_view key) {
        separate();
        out_ += '"';
        out_ += key;
        out_ += "\":";
    }

    std::string& out_;
};

// ---- OCSF -----------------------------------------------------------------------------
//
// The objects are written as text, straight into the message: a drop's object built as an
// nlohmann::json tree and dumped took five times the CPU of its CEF message
// (docs/benchmarks.md, "Evidence"), and drops are exported by the hundred thousand. The values
// that already are JSON (an incident's details, an audit entry's before and after, a
// checkpoint's object) are on rare records and still go through nlohmann.
//
// Every object's members, at every level, are written in the byte order of their names: the
// order nlohmann::json (a std::map) wrote them in, so the text is byte for byte what earlier
// releases sent. tests/unit/test_siem_formats.cpp compares it with a reference built as a
// DOM; a member written out of order fails there.

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

// What every OCSF object says whatever its class: OCSF's base event attributes. The five
// functions below write them, each called where its members' names fall in the order.
struct OcsfBase {
    const OcsfClass& ocsf_class;
    int activity_id;
    std::string_view activity_name;
    controller::TimeMs time;
    const SiemRecord& record;
};

// activity_id, activity_name
void write_activity(JsonText& object, const OcsfBase& base) {
    object.number("activity_id", base.activity_id).string("activity_name", base.activity_name);
}
// category_name, category_uid, class_name, class_uid
void write_category_and_class(JsonText& object, const OcsfBase& base) {
    object.string("category_name", base.ocsf_class.category_name)
        .number("category_uid", base.ocsf_class.category_uid)
        .string("class_name", base.ocsf_class.class_name)
        .number("class_uid", base.ocsf_class.class_uid);
}
// metadata; a network event adds when the controller received it and its profile.
void write_metadata(JsonText& object, const OcsfBase& base,
                    std::optional<controller::TimeMs> logged_time = {},
                    bool security_control = false) {
    object.begin_object("metadata");
    if (logged_time) {
        object.number("logged_time", *logged_time);
    }
    object.begin_object("product")
        .string("name", kProduct)
        .string("vendor_name", kVendor)
        .string("version", product_version)
        .end_object();
    if (security_control) {
        object.begin_array("profiles").string("security_control").end_array();
    }
    object.string("uid", base.record.id).string("version", kOcsfVersion).end_object();
}
// severity, severity_id
void write_severity(JsonText& object, const OcsfBase& base) {
    const int severity_id = ocsf_severity_id(record_severity(base.record));
    object.string("severity", ocsf_severity_name(severity_id)).number("severity_id", severity_id);
}
// time, type_name, type_uid
void write_time_and_type(JsonText& object, const OcsfBase& base) {
    std::string type_name;
    type_name.reserve(base.ocsf_class.class_name.size() + 2 + base.activity_name.size());
    type_name.append(base.ocsf_class.class_name).append(": ").append(base.activity_name);
    object.number("time", base.time)
        .string("type_name", type_name)
        .number("type_uid", base.ocsf_class.class_uid * 100 + base.activity_id);
}

// A network endpoint's members in name order; empty ones and a missing port are left out,
// except the address.
struct OcsfEndpoint {
    std::string_view interface_name = {};
    std::string_view ip = {};
    std::string_view mac = {};
    std::string_view name = {};
    std::optional<std::uint16_t> port = {};
};
void write_endpoint(JsonText& object, std::string_view key, const OcsfEndpoint& endpoint) {
    object.begin_object(key);
    if (!endpoint.interface_name.empty()) {
        object.string("interface_name", endpoint.interface_name);
    }
    object.string("ip", endpoint.ip);
    if (!endpoint.mac.empty()) {
        object.string("mac", endpoint.mac);
    }
    if (!endpoint.name.empty()) {
        object.string("name", endpoint.name);
    }
    if (endpoint.port) {
        object.number("port", *endpoint.port);
    }
    object.end_object();
}

// Network Activity: a drop refused, an allowed flow or a monitor-mode drop as traffic.
std::string ocsf_event(const SiemRecord& record, const StoredEvent& event) {
    // Monitor mode let the packet pass: to the SIEM that is traffic, marked would_drop.
    const bool monitored = would_drop(event);
    const bool refused = !is_allowed_flow(event) && !monitored;
    const OcsfBase base{kNetworkActivity, refused ? 5 : 6, refused ? "Refuse" : "Traffic",
                        event_time_ms(event), record};
    const bool inbound = event.direction == "in";
    const bool outbound = event.direction == "out";
    // The attributed workload is the side the enforcer protects: the source of outbound
    // traffic, the destination of inbound.
    const std::string_view source_name = inbound ? std::string_view{} : event.workload;
    const std::string_view destination_name = inbound ? event.workload : std::string_view{};

    std::string out;
    out.reserve(1024); // a drop's object is 800-1,000 bytes
    JsonText object(out);
    object.begin_object();
    object.string("action", refused ? "Denied" : "Allowed").number("action_id", refused ? 2 : 1);
    write_activity(object, base);
    write_category_and_class(object, base);
    object.begin_object("connection_info");
    if (inbound || outbound) {
        object.string("direction", inbound ? "Inbound" : "Outbound")
            .number("direction_id", inbound ? 1 : 2);
    }
    object.string("protocol_name", event.protocol).end_object();
    object.number("count", event.count);
    object.begin_object("device")
        .string("hostname", event.enforcer)
        .string("type", "Firewall")
        .number("type_id", 9)
        .end_object();
    object.string("disposition", refused ? "Blocked" : "Allowed")
        .number("disposition_id", refused ? 2 : 1);
    write_endpoint(object, "dst_endpoint",
                   {.ip = event.dst, .name = destination_name, .port = event.dport});
    write_metadata(object, base, event.received_at, /*security_control=*/true);
    write_severity(object, base);
    write_endpoint(object, "src_endpoint",
                   {.interface_name = event.port,
                    .ip = event.src,
                    .mac = event.mac,
                    .name = source_name,
                    .port = event.sport});
    write_time_and_type(object, base);
    object.begin_object("unmapped")
        .begin_object("bulkhead")
        .number("enforcer_seq", event.enforcer_seq)
        .string("event_type", event.type)
        .string("reason", event.reason);
    if (monitored) {
        object.boolean("would_drop", true);
    }
    object.end_object().end_object();
    object.end_object();
    return out;
}

// A workload as the one resource of a finding or an API call.
void write_workload_resources(JsonText& object, std::string_view workload) {
    object.begin_array("resources")
        .begin_object()
        .string("name", workload)
        .string("type", "workload")
        .end_object()
        .end_array();
}

// API Activity's actor and api: who called which operation of the controller.
void write_actor_and_api(JsonText& object, std::string_view user, std::string_view operation) {
    object.begin_object("actor")
        .begin_object("user")
        .string("name", user)
        .end_object()
        .end_object();
    object.begin_object("api")
        .string("operation", operation)
        .begin_object("service")
        .string("name", "bulkhead-controller")
        .end_object()
        .end_object();
}

// Detection Finding: an incident opened (version 1), changed or resolved.
std::string ocsf_incident(const SiemRecord& record, const Incident& incident) {
    const bool closed = incident.state == IncidentState::Resolved;
    const bool created = !closed && incident.version == 1;
    const auto [activity_id, activity_name] = closed    ? std::pair{3, "Close"}
                                              : created ? std::pair{1, "Create"}
                                                        : std::pair{2, "Update"};
    const OcsfBase base{kDetectionFinding, activity_id, activity_name, incident.updated_at, record};
    const auto [status_id, status] = closed ? std::pair{4, "Resolved"}
                                     : incident.state == IncidentState::Acknowledged
                                         ? std::pair{2, "In Progress"}
                                         : std::pair{1, "New"};
    const std::string user = incident_user(incident);

    std::string out;
    out.reserve(1024);
    JsonText object(out);
    object.begin_object();
    write_activity(object, base);
    write_category_and_class(object, base);
    object.number("count", incident.event_count);
    object.begin_object("finding_info")
        .number("created_time", incident.opened_at)
        .string("desc", incident.explanation)
        .number("modified_time", incident.updated_at)
        .string("title", incident.title)
        .string("uid", "incidents/" + std::to_string(incident.id))
        .end_object();
    object.string("message", incident.explanation);
    write_metadata(object, base);
    write_workload_resources(object, incident.source_workload);
    write_severity(object, base);
    object.string("status", status).number("status_id", status_id);
    write_time_and_type(object, base);
    object.begin_object("unmapped")
        .begin_object("bulkhead")
        .json_value("details", incident.details)
        .number("incident_id", incident.id)
        .string("severity", incident.severity)
        .string("state", to_string(incident.state));
    if (!user.empty()) {
        object.string("user", user);
    }
    object.number("version", incident.version).end_object().end_object();
    object.end_object();
    return out;
}

// API Activity: a quarantine created (Create) or released (Delete).
std::string ocsf_quarantine(const SiemRecord& record, const Quarantine& quarantine) {
    const bool released = quarantine.released_at.has_value();
    const OcsfBase base{kApiActivity, released ? 4 : 1, released ? "Delete" : "Create",
                        quarantine_time(quarantine), record};

    std::string out;
    out.reserve(1024);
    JsonText object(out);
    object.begin_object();
    write_activity(object, base);
    write_actor_and_api(object, released ? quarantine.released_by : quarantine.actor,
                        released ? "quarantine.release" : "quarantine.create");
    write_category_and_class(object, base);
    object.string("message", quarantine.reason);
    write_metadata(object, base);
    write_workload_resources(object, quarantine.workload);
    write_severity(object, base);
    object.string("status", "Success").number("status_id", 1);
    write_time_and_type(object, base);
    object.begin_object("unmapped")
        .begin_object("bulkhead")
        .boolean("automatic", quarantine.automatic)
        .number("created_at", quarantine.created_at);
    if (quarantine.incident_id) {
        object.number("incident_id", *quarantine.incident_id);
    }
    object.number("quarantine_id", quarantine.id)
        .string("reason", quarantine.reason)
        .end_object()
        .end_object();
    object.end_object();
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

// API Activity: an audit entry, its activity from the action's verb.
std::string ocsf_audit(const SiemRecord& record, const AuditEntry& entry) {
    const auto [activity_id, activity_name] = api_activity(entry.action);
    const OcsfBase base{kApiActivity, activity_id, activity_name, entry.at, record};
    // The resource's type is the target's prefix ("revision/7" -> "revision").
    const auto slash = entry.target.find('/');

    std::string out;
    out.reserve(1024);
    JsonText object(out);
    object.begin_object();
    write_activity(object, base);
    write_actor_and_api(object, entry.actor, entry.action);
    write_category_and_class(object, base);
    write_metadata(object, base);
    object.begin_array("resources").begin_object();
    if (slash != std::string::npos) {
        object.string("type", std::string_view(entry.target).substr(0, slash));
    }
    object.string("uid", entry.target).end_object().end_array();
    write_severity(object, base);
    object.string("status", "Success").number("status_id", 1);
    write_time_and_type(object, base);
    object.begin_object("unmapped")
        .begin_object("bulkhead")
        .json_value("after", entry.after)
        .number("audit_id", entry.id)
        .json_value("before", entry.before)
        .string("role", entry.role)
        .end_object()
        .end_object();
    object.end_object();
    return out;
}

// Base Event: a signed checkpoint, carrying its own object.
std::string ocsf_checkpoint(const SiemRecord& record, const SignedCheckpoint& checkpoint) {
    const OcsfBase base{kBaseEvent, 99, "Other", checkpoint.checkpoint.at_ms, record};

    std::string out;
    out.reserve(1024);
    JsonText object(out);
    object.begin_object();
    write_activity(object, base);
    write_category_and_class(object, base);
    object.string("message", "Evidence checkpoint of " + checkpoint.checkpoint.controller);
    write_metadata(object, base);
    write_severity(object, base);
    write_time_and_type(object, base);
    // The checkpoint's own JSON object, as the checkpoint file holds it: the signature covers
    // signed_bytes(), not this encoding, so a verifier can read it back from the SIEM.
    object.begin_object("unmapped")
        .json_value("bulkhead_checkpoint", json::parse(evidence::to_json_line(checkpoint)))
        .end_object();
    object.end_object();
    return out;
}

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

void append_json_string(std::string& out, std::string_view text) {
    out += '"';
    // Runs of bytes that need nothing are appended whole: text[0, copied) is in `out` already.
    std::size_t copied = 0;
    std::size_t i = 0;
    while (i < text.size()) {
        const auto byte = static_cast<unsigned char>(text[i]);
        if (byte >= 0x80) {
            const auto sequence = utf8_sequence(text.substr(i));
            if (!sequence.well_formed) {
                out.append(text.data() + copied, i - copied);
                out += "\xEF\xBF\xBD"; // U+FFFD REPLACEMENT CHARACTER for the sequence's bytes
                copied = i + sequence.length;
            }
            i += sequence.length;
        } else if (byte < 0x20 || byte == '"' || byte == '\\') {
            out.append(text.data() + copied, i - copied);
            append_json_escape(out, byte);
            copied = ++i;
        } else {
            ++i;
        }
    }
    out.append(text.data() + copied, text.size() - copied);
    out += '"';
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
                return ocsf_event(record, *subject);
            } else if constexpr (std::is_same_v<Subject, Incident>) {
                return ocsf_incident(record, *subject);
            } else if constexpr (std::is_same_v<Subject, Quarantine>) {
                return ocsf_quarantine(record, *subject);
            } else if constexpr (std::is_same_v<Subject, AuditEntry>) {
                return ocsf_audit(record, *subject);
            } else {
                return ocsf_checkpoint(record, *subject);
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
