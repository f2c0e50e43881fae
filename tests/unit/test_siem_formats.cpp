// SIEM message bodies, read back with small parsers written here (not the formatter's code):
// CEF's header split on unescaped pipes and its extension on unescaped '=', LEEF split on its
// tab delimiter, OCSF through nlohmann. Every record kind in every format, field by field,
// and the escaping edge cases.
#include "common/version.hpp"
#include "controller/siem/siem_formats.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <array>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

using namespace bulkhead;
using namespace bulkhead::siem;
using controller::AuditEntry;
using controller::Incident;
using controller::IncidentState;
using controller::Quarantine;
using controller::StoredEvent;
using nlohmann::json;

namespace {

// ---- an independent CEF reader ----
struct Cef {
    std::vector<std::string> header; // "CEF:0", vendor, product, version, signature, name, severity
    std::map<std::string, std::string> extension;
};

Cef parse_cef(const std::string& line) {
    Cef cef;
    std::string field;
    std::size_t i = 0;
    for (; i < line.size() && cef.header.size() < 7; ++i) {
        if (line[i] == '\\' && i + 1 < line.size()) {
            field += line[++i]; // "\|" -> "|", "\\" -> "\"
        } else if (line[i] == '|') {
            cef.header.push_back(field);
            field.clear();
        } else {
            field += line[i];
        }
    }
    REQUIRE(cef.header.size() == 7);
    const std::string ext = line.substr(i);
    // Positions of unescaped '='; the key is the word before each.
    std::vector<std::size_t> equals;
    for (std::size_t j = 0; j < ext.size(); ++j) {
        if (ext[j] == '\\') {
            ++j;
        } else if (ext[j] == '=') {
            equals.push_back(j);
        }
    }
    for (std::size_t k = 0; k < equals.size(); ++k) {
        const std::size_t key_start = ext.rfind(' ', equals[k]) == std::string::npos ? 0 : ext.rfind(' ', equals[k]) + 1;
        const std::string key = ext.substr(key_start, equals[k] - key_start);
        std::size_t value_end = ext.size();
        if (k + 1 < equals.size()) {
            value_end = ext.rfind(' ', equals[k + 1]);
        }
        const std::string raw = ext.substr(equals[k] + 1, value_end - equals[k] - 1);
        std::string value;
        for (std::size_t j = 0; j < raw.size(); ++j) {
            if (raw[j] == '\\' && j + 1 < raw.size()) {
                const char next = raw[++j];
                value += next == 'n' ? '\n' : next == 'r' ? '\r' : next;
            } else {
                value += raw[j];
            }
        }
        CHECK_MESSAGE(cef.extension.count(key) == 0, "key written twice: " << key);
        cef.extension[key] = value;
    }
    return cef;
}

// The CEF custom field labelled `label` (cs1..cs6, cn1..cn3).
std::string cef_custom(const Cef& cef, const std::string& label) {
    for (const auto& [key, value] : cef.extension) {
        if (key.ends_with("Label") && value == label) {
            const auto it = cef.extension.find(key.substr(0, key.size() - 5));
            return it == cef.extension.end() ? "<no value>" : it->second;
        }
    }
    return "<no label>";
}

// ---- an independent LEEF reader ----
struct Leef {
    std::vector<std::string> header; // "LEEF:2.0", vendor, product, version, event id, delimiter
    std::map<std::string, std::string> attributes;
};

Leef parse_leef(const std::string& line) {
    Leef leef;
    std::string field;
    std::size_t i = 0;
    for (; i < line.size() && leef.header.size() < 6; ++i) {
        if (line[i] == '\\' && i + 1 < line.size()) {
            field += line[++i];
        } else if (line[i] == '|') {
            leef.header.push_back(field);
            field.clear();
        } else {
            field += line[i];
        }
    }
    REQUIRE(leef.header.size() == 6);
    REQUIRE(leef.header[5] == "x09");
    CHECK(line.find('\n') == std::string::npos);
    std::size_t start = i;
    while (start <= line.size()) {
        const std::size_t end = std::min(line.find('\t', start), line.size());
        const std::string attribute = line.substr(start, end - start);
        const auto equals = attribute.find('=');
        REQUIRE_MESSAGE(equals != std::string::npos, "attribute without '=': " << attribute);
        leef.attributes[attribute.substr(0, equals)] = attribute.substr(equals + 1);
        start = end + 1;
    }
    return leef;
}

// ---- the records ----
StoredEvent drop_event() {
    StoredEvent event;
    event.id = 123;
    event.enforcer = "enf-rack-7";
    event.enforcer_seq = 9001;
    event.type = "drop";
    event.time_ns = 1'764'000'000'123'456'789;
    event.received_at = 1'764'000'000'500;
    event.workload = "vdi-0042";
    event.direction = "out";
    event.reason = "deny";
    event.src = "10.1.2.3";
    event.dst = "10.9.8.7";
    event.protocol = "tcp";
    event.sport = 50123;
    event.dport = 445;
    event.count = 3;
    event.port = "eth0";
    event.mac = "52:54:00:12:34:56";
    event.document = json{{"would_drop", false}};
    return event;
}

Incident incident() {
    Incident i;
    i.id = 45;
    i.source_workload = "vdi-0042";
    i.state = IncidentState::Acknowledged;
    i.severity = "high";
    i.title = "SMB sweep from vdi-0042";
    i.explanation = "vdi-0042 (user kimura) tried 37 hosts on tcp/445 in 12 s";
    i.opened_at = 1'764'000'000'000;
    i.updated_at = 1'764'000'060'000;
    i.event_count = 37;
    i.details = json{{"user", "kimura"}, {"findings", json::array({"smb_sweep"})}};
    i.version = 3;
    return i;
}

Quarantine quarantine(bool released) {
    Quarantine q;
    q.id = 7;
    q.workload = "vdi-0042";
    q.reason = "SMB sweep";
    q.actor = "analyzer";
    q.automatic = true;
    q.incident_id = 45;
    q.created_at = 1'764'000'061'000;
    if (released) {
        q.released_at = 1'764'003'600'000;
        q.released_by = "soc-alice";
    }
    return q;
}

AuditEntry audit_entry() {
    AuditEntry a;
    a.id = 88;
    a.at = 1'764'000'100'000;
    a.actor = "soc-alice";
    a.role = "operator";
    a.action = "policy.activate";
    a.target = "revision/7";
    a.before = json{{"revision", 6}};
    a.after = json{{"revision", 7}};
    return a;
}

evidence::SignedCheckpoint signed_checkpoint() {
    evidence::Checkpoint checkpoint;
    checkpoint.controller = "ctl-1";
    checkpoint.at_ms = 1'764'000'200'000;
    for (const auto stream : evidence::kStreams) {
        checkpoint.heads.emplace_back(stream, evidence::ChainHead{});
    }
    auto key = evidence::SigningKey::generate();
    REQUIRE(key.has_value());
    return evidence::sign_checkpoint(std::move(checkpoint), *key);
}

void check_cef_header(const Cef& cef, const std::string& signature, const std::string& name, int severity) {
    CHECK(cef.header[0] == "CEF:0");
    CHECK(cef.header[1] == "Bulkhead");
    CHECK(cef.header[2] == "Bulkhead Controller");
    CHECK(cef.header[3] == std::string(product_version));
    CHECK(cef.header[4] == signature);
    CHECK(cef.header[5] == name);
    CHECK(cef.header[6] == std::to_string(severity));
}

void check_leef_header(const Leef& leef, const std::string& event_id) {
    CHECK(leef.header[0] == "LEEF:2.0");
    CHECK(leef.header[1] == "Bulkhead");
    CHECK(leef.header[2] == "Bulkhead Controller");
    CHECK(leef.header[3] == std::string(product_version));
    CHECK(leef.header[4] == event_id);
    CHECK(leef.attributes.at("devTimeFormat") == "yyyy-MM-dd'T'HH:mm:ss.SSSX");
}

json parse_ocsf(const SiemRecord& record) {
    const auto text = format_ocsf(record);
    REQUIRE(text.has_value());
    CHECK(text->find('\n') == std::string::npos); // compact: one object per message
    const json object = json::parse(*text);
    CHECK(object.at("type_uid") == object.at("class_uid").get<int>() * 100 + object.at("activity_id").get<int>());
    CHECK(object.at("metadata").at("uid") == record.id);
    CHECK(object.at("metadata").at("version") == "1.1.0");
    CHECK(object.at("metadata").at("product").at("name") == "Bulkhead Controller");
    CHECK(object.at("metadata").at("product").at("vendor_name") == "Bulkhead");
    CHECK(object.at("metadata").at("product").at("version") == std::string(product_version));
    return object;
}

} // namespace

TEST_CASE("siem formats: a drop in CEF, LEEF and OCSF") {
    const auto event = drop_event();
    const SiemRecord record{"drops/123", &event};
    CHECK(record_kind(record) == SiemRecordKind::Drops);
    CHECK(record_severity(record) == 4);

    SUBCASE("CEF") {
        const auto text = format_cef(record);
        REQUIRE(text.has_value());
        const auto cef = parse_cef(*text);
        check_cef_header(cef, "drop", "Connection blocked", 4);
        const auto& x = cef.extension;
        CHECK(x.at("rt") == "1764000000123");
        CHECK(x.at("src") == "10.1.2.3");
        CHECK(x.at("dst") == "10.9.8.7");
        CHECK(x.at("spt") == "50123");
        CHECK(x.at("dpt") == "445");
        CHECK(x.at("proto") == "TCP");
        CHECK(x.at("act") == "blocked");
        CHECK(x.at("reason") == "deny");
        CHECK(x.at("cnt") == "3");
        CHECK(x.at("deviceDirection") == "1");
        CHECK(x.at("externalId") == "drops/123");
        CHECK(x.at("deviceExternalId") == "enf-rack-7");
        CHECK(x.at("smac") == "52:54:00:12:34:56");
        CHECK(x.at("deviceInboundInterface") == "eth0");
        CHECK(x.at("cat") == "drop");
        CHECK(cef_custom(cef, "workload") == "vdi-0042");
        CHECK(cef_custom(cef, "enforcerSequence") == "9001");
    }
    SUBCASE("LEEF") {
        const auto text = format_leef(record);
        REQUIRE(text.has_value());
        const auto leef = parse_leef(*text);
        check_leef_header(leef, "drop");
        const auto& a = leef.attributes;
        CHECK(a.at("devTime") == "2025-11-24T16:00:00.123Z");
        CHECK(a.at("src") == "10.1.2.3");
        CHECK(a.at("dst") == "10.9.8.7");
        CHECK(a.at("srcPort") == "50123");
        CHECK(a.at("dstPort") == "445");
        CHECK(a.at("proto") == "TCP");
        CHECK(a.at("sev") == "4");
        CHECK(a.at("cat") == "drop");
        CHECK(a.at("action") == "blocked");
        CHECK(a.at("reason") == "deny");
        CHECK(a.at("direction") == "outbound");
        CHECK(a.at("externalId") == "drops/123");
        CHECK(a.at("enforcer") == "enf-rack-7");
        CHECK(a.at("workload") == "vdi-0042");
        CHECK(a.at("srcMAC") == "52:54:00:12:34:56");
        CHECK(a.count("cs1Label") == 0);
    }
    SUBCASE("OCSF Network Activity: Refuse") {
        const auto o = parse_ocsf(record);
        CHECK(o.at("class_uid") == 4001);
        CHECK(o.at("category_uid") == 4);
        CHECK(o.at("activity_id") == 5);
        CHECK(o.at("activity_name") == "Refuse");
        CHECK(o.at("type_uid") == 400105);
        CHECK(o.at("time") == 1764000000123);
        CHECK(o.at("severity_id") == 2);
        CHECK(o.at("disposition") == "Blocked");
        CHECK(o.at("disposition_id") == 2);
        CHECK(o.at("action_id") == 2);
        CHECK(o.at("src_endpoint").at("ip") == "10.1.2.3");
        CHECK(o.at("src_endpoint").at("port") == 50123);
        CHECK(o.at("src_endpoint").at("name") == "vdi-0042");
        CHECK(o.at("dst_endpoint").at("ip") == "10.9.8.7");
        CHECK(o.at("dst_endpoint").at("port") == 445);
        CHECK(o.at("connection_info").at("protocol_name") == "tcp");
        CHECK(o.at("connection_info").at("direction_id") == 2);
        CHECK(o.at("count") == 3);
        CHECK(o.at("metadata").at("logged_time") == 1764000000500);
        CHECK(o.at("device").at("hostname") == "enf-rack-7");
        CHECK(o.at("unmapped").at("bulkhead").at("reason") == "deny");
    }
}

TEST_CASE("siem formats: allowed flows, monitor-mode drops and IPv6") {
    SUBCASE("allowed flow is Traffic") {
        auto event = drop_event();
        event.type = "allowed_flow";
        event.reason = "allow";
        const SiemRecord record{"drops/124", &event};
        CHECK(record_kind(record) == SiemRecordKind::AllowedFlows);
        const auto cef = parse_cef(*format_cef(record));
        check_cef_header(cef, "allowed_flow", "Connection allowed", 1);
        CHECK(cef.extension.at("act") == "allowed");
        CHECK(parse_leef(*format_leef(record)).attributes.at("sev") == "1");
        const auto o = parse_ocsf(record);
        CHECK(o.at("activity_id") == 6);
        CHECK(o.at("type_uid") == 400106);
        CHECK(o.at("disposition") == "Allowed");
        CHECK(o.at("severity_id") == 1);
    }
    SUBCASE("a would-drop in monitor mode is traffic that passed") {
        auto event = drop_event();
        event.document = json{{"would_drop", true}};
        event.would_drop = true;  // as restore_upload_fields reads it from the document
        const SiemRecord record{"drops/125", &event};
        CHECK(parse_cef(*format_cef(record)).extension.at("act") == "would-block");
        const auto o = parse_ocsf(record);
        CHECK(o.at("activity_id") == 6);
        CHECK(o.at("unmapped").at("bulkhead").at("would_drop") == true);
    }
    SUBCASE("IPv6 goes to c6a2/c6a3 in CEF, src/dst in LEEF and OCSF") {
        auto event = drop_event();
        event.src = "fd00::1";
        event.dst = "fd00::2";
        event.direction = "in";
        const SiemRecord record{"drops/126", &event};
        const auto cef = parse_cef(*format_cef(record));
        CHECK(cef.extension.at("c6a2") == "fd00::1");
        CHECK(cef.extension.at("c6a3") == "fd00::2");
        CHECK(cef.extension.count("src") == 0);
        CHECK(cef.extension.at("deviceDirection") == "0");
        CHECK(parse_leef(*format_leef(record)).attributes.at("src") == "fd00::1");
        const auto o = parse_ocsf(record);
        CHECK(o.at("dst_endpoint").at("name") == "vdi-0042"); // inbound: the workload is the destination
        CHECK(o.at("connection_info").at("direction") == "Inbound");
    }
    SUBCASE("lifecycle events and null subjects are refused") {
        auto event = drop_event();
        event.type = "enforcer_started";
        const SiemRecord record{"drops/127", &event};
        CHECK_FALSE(record_kind(record).has_value());
        const auto refused = format_record(SiemFormat::Cef, record);
        REQUIRE_FALSE(refused.has_value());
        CHECK(refused.error().find("enforcer_started") != std::string::npos);
        const SiemRecord empty{"drops/0", static_cast<const StoredEvent*>(nullptr)};
        CHECK_FALSE(format_record(SiemFormat::Ocsf, empty).has_value());
    }
    SUBCASE("decoy hits rank higher") {
        auto event = drop_event();
        event.reason = "decoy";
        CHECK(record_severity(SiemRecord{"drops/1", &event}) == 7);
    }
}

TEST_CASE("siem formats: an incident update") {
    const auto i = incident();
    const SiemRecord record{"incidents/45/v3", &i};
    CHECK(record_kind(record) == SiemRecordKind::Incidents);
    SUBCASE("CEF") {
        const auto cef = parse_cef(*format_cef(record));
        check_cef_header(cef, "incident.acknowledged", "SMB sweep from vdi-0042", 8);
        const auto& x = cef.extension;
        CHECK(x.at("rt") == "1764000060000");
        CHECK(x.at("start") == "1764000000000");
        CHECK(x.at("externalId") == "incidents/45/v3");
        CHECK(x.at("suser") == "kimura");
        CHECK(x.at("cnt") == "37");
        CHECK(x.at("msg") == "vdi-0042 (user kimura) tried 37 hosts on tcp/445 in 12 s");
        CHECK(cef_custom(cef, "workload") == "vdi-0042");
        CHECK(cef_custom(cef, "incidentState") == "acknowledged");
        CHECK(cef_custom(cef, "incidentSeverity") == "high");
        CHECK(cef_custom(cef, "incidentVersion") == "3");
        CHECK(cef_custom(cef, "incidentId") == "45");
    }
    SUBCASE("LEEF") {
        const auto leef = parse_leef(*format_leef(record));
        check_leef_header(leef, "incident.acknowledged");
        const auto& a = leef.attributes;
        CHECK(a.at("devTime") == "2025-11-24T16:01:00.000Z");
        CHECK(a.at("sev") == "8");
        CHECK(a.at("cat") == "incident");
        CHECK(a.at("usrName") == "kimura");
        CHECK(a.at("workload") == "vdi-0042");
        CHECK(a.at("state") == "acknowledged");
        CHECK(a.at("incidentId") == "45");
        CHECK(a.at("externalId") == "incidents/45/v3");
    }
    SUBCASE("OCSF Detection Finding: Create, Update, Close") {
        const auto o = parse_ocsf(record);
        CHECK(o.at("class_uid") == 2004);
        CHECK(o.at("category_uid") == 2);
        CHECK(o.at("activity_id") == 2);
        CHECK(o.at("type_uid") == 200402);
        CHECK(o.at("status_id") == 2);
        CHECK(o.at("severity_id") == 4);
        CHECK(o.at("time") == 1764000060000);
        CHECK(o.at("finding_info").at("uid") == "incidents/45");
        CHECK(o.at("finding_info").at("title") == "SMB sweep from vdi-0042");
        CHECK(o.at("finding_info").at("created_time") == 1764000000000);
        CHECK(o.at("resources").at(0).at("name") == "vdi-0042");
        CHECK(o.at("unmapped").at("bulkhead").at("details").at("findings").at(0) == "smb_sweep");

        auto opened = i;
        opened.state = IncidentState::Open;
        opened.version = 1;
        const auto created = parse_ocsf(SiemRecord{"incidents/45/v1", &opened});
        CHECK(created.at("activity_id") == 1);
        CHECK(created.at("type_uid") == 200401);
        CHECK(created.at("status") == "New");
        auto resolved = i;
        resolved.state = IncidentState::Resolved;
        resolved.severity = "critical";
        const auto closed = parse_ocsf(SiemRecord{"incidents/45/v4", &resolved});
        CHECK(closed.at("activity_id") == 3);
        CHECK(closed.at("type_uid") == 200403);
        CHECK(closed.at("status_id") == 4);
        CHECK(closed.at("severity_id") == 5);
    }
}

TEST_CASE("siem formats: quarantine and its release") {
    const auto created = quarantine(false);
    const auto released = quarantine(true);
    const SiemRecord created_record{"quarantines/7", &created};
    const SiemRecord released_record{"quarantines/7/released", &released};
    CHECK(record_kind(created_record) == SiemRecordKind::Quarantines);
    SUBCASE("CEF") {
        const auto cef = parse_cef(*format_cef(created_record));
        check_cef_header(cef, "quarantine.created", "Workload quarantined", 8);
        CHECK(cef.extension.at("act") == "quarantine");
        CHECK(cef.extension.at("suser") == "analyzer");
        CHECK(cef.extension.at("reason") == "SMB sweep");
        CHECK(cef.extension.at("rt") == "1764000061000");
        CHECK(cef_custom(cef, "workload") == "vdi-0042");
        CHECK(cef_custom(cef, "quarantineKind") == "automatic");
        CHECK(cef_custom(cef, "incidentId") == "45");
        CHECK(cef_custom(cef, "quarantineId") == "7");
        const auto release = parse_cef(*format_cef(released_record));
        check_cef_header(release, "quarantine.released", "Workload released from quarantine", 3);
        CHECK(release.extension.at("act") == "release");
        CHECK(release.extension.at("suser") == "soc-alice");
        CHECK(release.extension.at("rt") == "1764003600000");
        CHECK(release.extension.at("start") == "1764000061000");
        CHECK(release.extension.at("externalId") == "quarantines/7/released");
    }
    SUBCASE("LEEF") {
        const auto leef = parse_leef(*format_leef(released_record));
        check_leef_header(leef, "quarantine.released");
        CHECK(leef.attributes.at("action") == "release");
        CHECK(leef.attributes.at("usrName") == "soc-alice");
        CHECK(leef.attributes.at("workload") == "vdi-0042");
        CHECK(leef.attributes.at("sev") == "3");
        CHECK(leef.attributes.at("quarantineKind") == "automatic");
    }
    SUBCASE("OCSF API Activity: Create, then Delete") {
        const auto o = parse_ocsf(created_record);
        CHECK(o.at("class_uid") == 6003);
        CHECK(o.at("category_uid") == 6);
        CHECK(o.at("activity_id") == 1);
        CHECK(o.at("type_uid") == 600301);
        CHECK(o.at("api").at("operation") == "quarantine.create");
        CHECK(o.at("actor").at("user").at("name") == "analyzer");
        CHECK(o.at("resources").at(0).at("name") == "vdi-0042");
        CHECK(o.at("unmapped").at("bulkhead").at("incident_id") == 45);
        const auto r = parse_ocsf(released_record);
        CHECK(r.at("activity_id") == 4);
        CHECK(r.at("type_uid") == 600304);
        CHECK(r.at("api").at("operation") == "quarantine.release");
        CHECK(r.at("actor").at("user").at("name") == "soc-alice");
        CHECK(r.at("time") == 1764003600000);
    }
}

TEST_CASE("siem formats: an audit entry") {
    const auto entry = audit_entry();
    const SiemRecord record{"audit/88", &entry};
    CHECK(record_kind(record) == SiemRecordKind::Audit);
    const auto cef = parse_cef(*format_cef(record));
    check_cef_header(cef, "audit.policy.activate", "Audit: policy.activate", 2);
    CHECK(cef.extension.at("suser") == "soc-alice");
    CHECK(cef.extension.at("spriv") == "operator");
    CHECK(cef.extension.at("act") == "policy.activate");
    CHECK(cef.extension.at("externalId") == "audit/88");
    CHECK(cef_custom(cef, "auditTarget") == "revision/7");
    const auto leef = parse_leef(*format_leef(record));
    check_leef_header(leef, "audit.policy.activate");
    CHECK(leef.attributes.at("usrName") == "soc-alice");
    CHECK(leef.attributes.at("role") == "operator");
    CHECK(leef.attributes.at("resource") == "revision/7");
    const auto o = parse_ocsf(record);
    CHECK(o.at("class_uid") == 6003);
    CHECK(o.at("activity_id") == 3); // activate: an update
    CHECK(o.at("type_uid") == 600303);
    CHECK(o.at("api").at("operation") == "policy.activate");
    CHECK(o.at("resources").at(0).at("uid") == "revision/7");
    CHECK(o.at("resources").at(0).at("type") == "revision");
    CHECK(o.at("unmapped").at("bulkhead").at("before").at("revision") == 6);
    CHECK(o.at("unmapped").at("bulkhead").at("after").at("revision") == 7);
    auto unknown_verb = entry;
    unknown_verb.action = "token.rotate";
    CHECK(parse_ocsf(SiemRecord{"audit/89", &unknown_verb}).at("type_uid") == 600399);
}

TEST_CASE("siem formats: a signed checkpoint survives each format and verifies from OCSF") {
    const auto checkpoint = signed_checkpoint();
    const SiemRecord record{"checkpoint/1764000200000", &checkpoint};
    CHECK(record_kind(record) == SiemRecordKind::Checkpoints);
    const std::string line = evidence::to_json_line(checkpoint);
    const auto cef = parse_cef(*format_cef(record));
    check_cef_header(cef, "checkpoint", "Evidence checkpoint", 1);
    CHECK(cef_custom(cef, "checkpoint") == line); // '=' and '\' inside come back exactly
    CHECK(cef_custom(cef, "controller") == "ctl-1");
    CHECK(parse_leef(*format_leef(record)).attributes.at("checkpoint") == line);
    const auto o = parse_ocsf(record);
    CHECK(o.at("class_uid") == 0);
    CHECK(o.at("type_uid") == 99);
    const auto read_back = evidence::checkpoint_from_json_line(o.at("unmapped").at("bulkhead_checkpoint").dump());
    REQUIRE(read_back.has_value());
    CHECK(read_back->signature == checkpoint.signature);
    CHECK(read_back->checkpoint.at_ms == 1764000200000);
}

TEST_CASE("siem formats: escaping of pipes, equals, backslashes, newlines and non-ASCII") {
    CHECK(cef_escape_header(R"(a|b\c)") == R"(a\|b\\c)");
    CHECK(cef_escape_extension("a=b\\c\nd\re|f") == "a\\=b\\\\c\\nd\\re|f");
    CHECK(leef_escape_header("x|y") == "x\\|y");
    CHECK(leef_clean_value("a\tb\nc\rd=e") == "a b c d=e");

    auto i = incident();
    i.title = R"(sweep | from \\share)";
    i.source_workload = "vdi-Müller=1 x|y\\z\nnext";
    i.explanation = "line one\r\nline two key=value";
    const SiemRecord record{"incidents/45/v3", &i};
    SUBCASE("CEF round-trips header and extension values") {
        const auto text = *format_cef(record);
        CHECK(text.find('\n') == std::string::npos);
        const auto cef = parse_cef(text);
        CHECK(cef.header[5] == R"(sweep | from \\share)");
        CHECK(cef_custom(cef, "workload") == "vdi-Müller=1 x|y\\z\nnext");
        CHECK(cef.extension.at("msg") == "line one\r\nline two key=value");
    }
    SUBCASE("LEEF keeps '=' and UTF-8, turns line breaks into spaces") {
        const auto text = *format_leef(record);
        CHECK(text.find('\n') == std::string::npos);
        CHECK(text.find('\r') == std::string::npos);
        const auto leef = parse_leef(text);
        CHECK(leef.attributes.at("workload") == "vdi-Müller=1 x|y\\z next");
        CHECK(leef.attributes.at("description") == "line one  line two key=value");
    }
    SUBCASE("OCSF keeps everything, and invalid UTF-8 does not throw") {
        CHECK(parse_ocsf(record).at("resources").at(0).at("name") == "vdi-Müller=1 x|y\\z\nnext");
        i.source_workload = "bad\xff";
        const auto text = format_ocsf(SiemRecord{"incidents/45/v3", &i});
        REQUIRE(text.has_value());
        CHECK(json::parse(*text).at("resources").at(0).at("name") == "bad\xEF\xBF\xBD");
    }
}

TEST_CASE("siem formats: severity scales") {
    CHECK(syslog_severity(10) == 2);
    CHECK(syslog_severity(8) == 3);
    CHECK(syslog_severity(5) == 4);
    CHECK(syslog_severity(3) == 5);
    CHECK(syslog_severity(1) == 6);
    CHECK(ocsf_severity_id(10) == 5);
    CHECK(ocsf_severity_id(7) == 4);
    CHECK(ocsf_severity_id(6) == 3);
    CHECK(ocsf_severity_id(4) == 2);
    CHECK(ocsf_severity_id(0) == 1);
}

// ---- the OCSF text against nlohmann ----
// format_ocsf writes its JSON as text. The escaper is compared with nlohmann's dump (the
// writer it replaced) on fixed and random strings; each record kind's text with a reference
// object built here as a DOM from docs/siem.md's OCSF table: the text must parse, equal the
// reference as a value, and equal its compact dump byte for byte (members in name order, as
// the OCSF text has always been).
namespace {

std::string json_string(std::string_view text) {
    std::string out;
    append_json_string(out, text);
    return out;
}

std::string nlohmann_dump(const std::string& text) {
    return json(text).dump(-1, ' ', false, json::error_handler_t::replace);
}

const char* const kReplacement = "\xEF\xBF\xBD"; // U+FFFD

std::string_view ocsf_severity_name_for(int severity_id) {
    static constexpr std::array<std::string_view, 6> names{"Unknown", "Informational", "Low",
                                                           "Medium",  "High",          "Critical"};
    return names.at(static_cast<std::size_t>(severity_id));
}

json reference_base(const std::string& uid, int class_uid, const std::string& class_name,
                    int category_uid, const std::string& category_name, int activity_id,
                    const std::string& activity_name, std::int64_t time, int severity_id) {
    return json{{"class_uid", class_uid},
                {"class_name", class_name},
                {"category_uid", category_uid},
                {"category_name", category_name},
                {"activity_id", activity_id},
                {"activity_name", activity_name},
                {"type_uid", class_uid * 100 + activity_id},
                {"type_name", class_name + ": " + activity_name},
                {"time", time},
                {"severity_id", severity_id},
                {"severity", ocsf_severity_name_for(severity_id)},
                {"metadata",
                 {{"version", "1.1.0"},
                  {"uid", uid},
                  {"product",
                   {{"name", "Bulkhead Controller"},
                    {"vendor_name", "Bulkhead"},
                    {"version", std::string(product_version)}}}}}};
}

json reference_event(const std::string& uid, const StoredEvent& e) {
    const bool allowed = e.type == "allowed_flow" || e.type == "allowed_flows";
    const bool would_drop = e.document.is_object() && e.document.contains("would_drop") &&
                            e.document.at("would_drop").get<bool>();
    const bool refused = !allowed && !would_drop;
    // drop 4 (Low), decoy 7 (High), from a quarantined workload 6 (Medium); allowed 1
    const int severity_id = allowed                    ? 1
                            : e.reason == "decoy"      ? 4
                            : e.reason == "quarantine" ? 3
                                                       : 2;
    const std::int64_t time = e.time_ns != 0 ? e.time_ns / 1'000'000 : e.received_at;
    json o = reference_base(uid, 4001, "Network Activity", 4, "Network Activity", refused ? 5 : 6,
                            refused ? "Refuse" : "Traffic", time, severity_id);
    o["metadata"]["logged_time"] = e.received_at;
    o["metadata"]["profiles"] = json::array({"security_control"});
    o["action_id"] = refused ? 2 : 1;
    o["action"] = refused ? "Denied" : "Allowed";
    o["disposition_id"] = refused ? 2 : 1;
    o["disposition"] = refused ? "Blocked" : "Allowed";
    o["count"] = e.count;
    json source = json::object();
    json destination = json::object();
    source["ip"] = e.src;
    destination["ip"] = e.dst;
    if (e.sport) {
        source["port"] = *e.sport;
    }
    if (e.dport) {
        destination["port"] = *e.dport;
    }
    if (!e.mac.empty()) {
        source["mac"] = e.mac;
    }
    if (!e.port.empty()) {
        source["interface_name"] = e.port;
    }
    if (!e.workload.empty()) {
        (e.direction == "in" ? destination : source)["name"] = e.workload;
    }
    o["src_endpoint"] = source;
    o["dst_endpoint"] = destination;
    o["connection_info"] = json{{"protocol_name", e.protocol}};
    if (e.direction == "in") {
        o["connection_info"]["direction_id"] = 1;
        o["connection_info"]["direction"] = "Inbound";
    } else if (e.direction == "out") {
        o["connection_info"]["direction_id"] = 2;
        o["connection_info"]["direction"] = "Outbound";
    }
    o["device"] = json{{"hostname", e.enforcer}, {"type_id", 9}, {"type", "Firewall"}};
    o["unmapped"]["bulkhead"] =
        json{{"reason", e.reason}, {"enforcer_seq", e.enforcer_seq}, {"event_type", e.type}};
    if (would_drop) {
        o["unmapped"]["bulkhead"]["would_drop"] = true;
    }
    return o;
}

json reference_incident(const std::string& uid, const Incident& i, const std::string& state) {
    const int severity_id = i.severity == "critical" ? 5
                            : i.severity == "high"   ? 4
                            : i.severity == "medium" ? 3
                                                     : 2;
    const auto activity = state == "resolved" ? std::pair{3, "Close"}
                          : i.version == 1    ? std::pair{1, "Create"}
                                              : std::pair{2, "Update"};
    json o = reference_base(uid, 2004, "Detection Finding", 2, "Findings", activity.first,
                            activity.second, i.updated_at, severity_id);
    o["status_id"] = state == "resolved" ? 4 : state == "acknowledged" ? 2 : 1;
    o["status"] = state == "resolved"       ? "Resolved"
                  : state == "acknowledged" ? "In Progress"
                                            : "New";
    o["message"] = i.explanation;
    o["count"] = i.event_count;
    o["finding_info"] = json{{"uid", "incidents/" + std::to_string(i.id)},
                             {"title", i.title},
                             {"desc", i.explanation},
                             {"created_time", i.opened_at},
                             {"modified_time", i.updated_at}};
    o["resources"] = json::array({json{{"type", "workload"}, {"name", i.source_workload}}});
    o["unmapped"]["bulkhead"] = json{{"incident_id", i.id},
                                     {"version", i.version},
                                     {"severity", i.severity},
                                     {"state", state},
                                     {"details", i.details}};
    if (i.details.is_object() && i.details.contains("user") && i.details.at("user").is_string() &&
        !i.details.at("user").get<std::string>().empty()) {
        o["unmapped"]["bulkhead"]["user"] = i.details.at("user");
    }
    return o;
}

json reference_quarantine(const std::string& uid, const Quarantine& q) {
    const bool released = q.released_at.has_value();
    json o = reference_base(uid, 6003, "API Activity", 6, "Application Activity", released ? 4 : 1,
                            released ? "Delete" : "Create",
                            released ? *q.released_at : q.created_at, released ? 2 : 4);
    o["actor"]["user"]["name"] = released ? q.released_by : q.actor;
    o["api"] = json{{"operation", released ? "quarantine.release" : "quarantine.create"},
                    {"service", {{"name", "bulkhead-controller"}}}};
    o["resources"] = json::array({json{{"type", "workload"}, {"name", q.workload}}});
    o["status_id"] = 1;
    o["status"] = "Success";
    o["message"] = q.reason;
    o["unmapped"]["bulkhead"] = json{{"quarantine_id", q.id},
                                     {"automatic", q.automatic},
                                     {"reason", q.reason},
                                     {"created_at", q.created_at}};
    if (q.incident_id) {
        o["unmapped"]["bulkhead"]["incident_id"] = *q.incident_id;
    }
    return o;
}

json reference_audit(const std::string& uid, const AuditEntry& a, int activity_id,
                     const std::string& activity_name) {
    json o = reference_base(uid, 6003, "API Activity", 6, "Application Activity", activity_id,
                            activity_name, a.at, 1);
    o["actor"]["user"]["name"] = a.actor;
    o["api"] = json{{"operation", a.action}, {"service", {{"name", "bulkhead-controller"}}}};
    json resource{{"uid", a.target}};
    if (const auto slash = a.target.find('/'); slash != std::string::npos) {
        resource["type"] = a.target.substr(0, slash);
    }
    o["resources"] = json::array({resource});
    o["status_id"] = 1;
    o["status"] = "Success";
    o["unmapped"]["bulkhead"] =
        json{{"audit_id", a.id}, {"role", a.role}, {"before", a.before}, {"after", a.after}};
    return o;
}

void check_ocsf_text(const SiemRecord& record, const json& reference) {
    const auto text = format_ocsf(record);
    REQUIRE(text.has_value());
    json parsed;
    REQUIRE_NOTHROW(parsed = json::parse(*text)); // strict: the text is valid UTF-8 too
    CHECK(parsed == reference);
    CHECK(*text == reference.dump());
}

} // namespace

TEST_CASE("siem formats: JSON strings are escaped as nlohmann's dump escapes them") {
    CHECK(json_string("") == R"("")");
    CHECK(json_string("vdi-0042") == R"("vdi-0042")");
    CHECK(json_string(R"(say "hi" \ bye/)") == R"("say \"hi\" \\ bye/")");
    CHECK(json_string("\b\t\n\f\r") == R"("\b\t\n\f\r")");
    CHECK(json_string(std::string("\x00\x01\x1f\x7f", 4)) ==
          std::string("\"\\u0000\\u0001\\u001f\x7f\""));
    CHECK(json_string("Müller € 😀") == "\"Müller € 😀\""); // UTF-8 kept, not \u-escaped
    // Ill-formed UTF-8: one U+FFFD per maximal subpart, the byte that breaks a sequence off
    // starts the next one.
    const std::string r = kReplacement;
    CHECK(json_string("bad\xff") == "\"bad" + r + "\"");
    CHECK(json_string("\x80\xbf") == "\"" + r + r + "\""); // lone continuations
    CHECK(json_string("\xe2\x82") == "\"" + r + "\"");     // cut short at the end
    CHECK(json_string("\xe2\x82"
                      "A") == "\"" + r + "A\""); // broken off by ASCII
    CHECK(json_string("\xf0\x9f\x98\xe2\x82\xac") ==
          "\"" + r + "\xe2\x82\xac\"");                                    // by a whole sequence
    CHECK(json_string("\xc0\xaf") == "\"" + r + r + "\"");                 // overlong '/'
    CHECK(json_string("\xe0\x80\xaf") == "\"" + r + r + r + "\"");         // overlong, 3 bytes
    CHECK(json_string("\xed\xa0\x80") == "\"" + r + r + r + "\"");         // a surrogate
    CHECK(json_string("\xf4\x90\x80\x80") == "\"" + r + r + r + r + "\""); // above U+10FFFF
    CHECK(json_string("\xf5\x80") == "\"" + r + r + "\"");
    CHECK(json_string("\xf4\x8f\xbf\xbf") == "\"\xf4\x8f\xbf\xbf\""); // U+10FFFF itself

    // Random strings, mostly pieces of UTF-8 sequences, against nlohmann's dump.
    std::mt19937 random(20261207);
    const std::array<unsigned char, 24> interesting{0x00, 0x08, 0x09, 0x0a, 0x1f, '"',  '\\', 'a',
                                                    0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0,
                                                    0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xff};
    for (int n = 0; n < 20'000; ++n) {
        std::string text(random() % 12, '\0');
        for (auto& c : text) {
            c = static_cast<char>(random() % 4 == 0 ? random() % 256
                                                    : interesting[random() % interesting.size()]);
        }
        const auto ours = json_string(text);
        const auto theirs = nlohmann_dump(text);
        if (ours != theirs) {
            FAIL_CHECK("string " << json(text).dump(-1, ' ', true, json::error_handler_t::replace)
                                 << ": " << ours << " != " << theirs);
            break;
        }
    }
}

TEST_CASE("siem formats: OCSF drops and flows are the reference object, byte for byte") {
    SUBCASE("a drop with every field") {
        const auto event = drop_event();
        check_ocsf_text(SiemRecord{"drops/123", &event}, reference_event("drops/123", event));
    }
    SUBCASE("an allowed ICMP flow, inbound over IPv6: no ports") {
        auto event = drop_event();
        event.type = "allowed_flows";
        event.reason = "allow";
        event.direction = "in";
        event.src = "fd00::1";
        event.dst = "2001:db8::42";
        event.protocol = "icmpv6";
        event.sport.reset();
        event.dport.reset();
        check_ocsf_text(SiemRecord{"drops/124", &event}, reference_event("drops/124", event));
    }
    SUBCASE("a monitor-mode drop without workload, MAC, interface or direction") {
        auto event = drop_event();
        event.document = json{{"would_drop", true}, {"mode", "monitor"}};
        event.would_drop = true;  // as restore_upload_fields reads it from the document
        event.workload.clear();
        event.mac.clear();
        event.port.clear();
        event.direction.clear();
        event.dport.reset();
        check_ocsf_text(SiemRecord{"drops/125", &event}, reference_event("drops/125", event));
    }
    SUBCASE("decoy and quarantine drops; no kernel time; the largest counters") {
        auto event = drop_event();
        event.type = "drop_summary";
        event.reason = "decoy";
        event.time_ns = 0; // the time falls back to the receipt
        event.count = std::numeric_limits<std::uint64_t>::max();
        event.enforcer_seq = std::numeric_limits<std::uint64_t>::max();
        event.sport = 0;
        event.dport = 65535;
        event.document = json(); // not an object: no would_drop
        check_ocsf_text(SiemRecord{"drops/126", &event}, reference_event("drops/126", event));
        event.reason = "quarantine";
        check_ocsf_text(SiemRecord{"drops/126", &event}, reference_event("drops/126", event));
    }
    SUBCASE("empty strings and awkward ones: quotes, backslashes, control bytes, UTF-8") {
        auto event = drop_event();
        event.enforcer = "";
        event.reason = "";
        event.protocol = "";
        event.src = "";
        event.workload = "vdi-\"Müller\"\\share\t\x01\x1f\x7f 日本 😀";
        event.port = "eth0\n";
        event.mac = "{\"not\":\"json\"}";
        check_ocsf_text(SiemRecord{"drops/\"127\"\\", &event},
                        reference_event("drops/\"127\"\\", event));
    }
    SUBCASE("bytes that are not UTF-8 become U+FFFD") {
        auto event = drop_event();
        event.workload = "vdi-\xff\xfe-\xc3";
        event.enforcer = "hv\xe2\x82-1";
        event.dst = "\xed\xa0\x80";
        auto expected = event;
        expected.workload = std::string("vdi-") + kReplacement + kReplacement + "-" + kReplacement;
        expected.enforcer = std::string("hv") + kReplacement + "-1";
        expected.dst = std::string(kReplacement) + kReplacement + kReplacement;
        check_ocsf_text(SiemRecord{"drops/128", &event}, reference_event("drops/128", expected));
    }
}

TEST_CASE("siem formats: OCSF incidents, quarantines, audit entries and checkpoints are the "
          "reference object") {
    SUBCASE("incidents: updated, opened without details, resolved with awkward text") {
        const auto updated = incident();
        check_ocsf_text(SiemRecord{"incidents/45/v3", &updated},
                        reference_incident("incidents/45/v3", updated, "acknowledged"));
        auto opened = incident();
        opened.state = IncidentState::Open;
        opened.version = 1;
        opened.severity = "low";
        opened.title = "";
        opened.details = json(); // null: no user
        check_ocsf_text(SiemRecord{"incidents/45/v1", &opened},
                        reference_incident("incidents/45/v1", opened, "open"));
        auto resolved = incident();
        resolved.state = IncidentState::Resolved;
        resolved.severity = "critical";
        resolved.version = 4;
        resolved.source_workload = "vdi-\"x\"\\y\n";
        resolved.explanation = "line one\r\nline two \x02 — done";
        resolved.details =
            json{{"user", "kí\"mura"}, {"scores", json::array({1, 2.5, -3, nullptr, true})}};
        check_ocsf_text(SiemRecord{"incidents/45/v4", &resolved},
                        reference_incident("incidents/45/v4", resolved, "resolved"));
        auto medium = incident();
        medium.severity = "medium";
        medium.details = json{{"user", 42}}; // not a string: no user
        check_ocsf_text(SiemRecord{"incidents/45/v3", &medium},
                        reference_incident("incidents/45/v3", medium, "acknowledged"));
    }
    SUBCASE("quarantines: created with an incident, released without one") {
        const auto created = quarantine(false);
        check_ocsf_text(SiemRecord{"quarantines/7", &created},
                        reference_quarantine("quarantines/7", created));
        auto released = quarantine(true);
        released.incident_id.reset();
        released.automatic = false;
        released.reason = "";
        released.released_by = "soc \"alice\"";
        check_ocsf_text(SiemRecord{"quarantines/7/released", &released},
                        reference_quarantine("quarantines/7/released", released));
    }
    SUBCASE("audit entries: with and without a typed target, before and after of any kind") {
        const auto activate = audit_entry();
        check_ocsf_text(SiemRecord{"audit/88", &activate},
                        reference_audit("audit/88", activate, 3, "Update"));
        auto rotate = audit_entry();
        rotate.action = "token.rotate";
        rotate.target = "no-slash";
        rotate.before = json();
        rotate.after = json::array({"a\"b", 1.25, json::object()});
        check_ocsf_text(SiemRecord{"audit/89", &rotate},
                        reference_audit("audit/89", rotate, 99, "Other"));
        auto list = audit_entry();
        list.action = "events.list";
        list.target = "/leading";
        list.role = "";
        check_ocsf_text(SiemRecord{"audit/90", &list},
                        reference_audit("audit/90", list, 2, "Read"));
    }
    SUBCASE("a checkpoint carries its own object") {
        const auto checkpoint = signed_checkpoint();
        json reference = reference_base("checkpoint/1764000200000", 0, "Base Event", 0,
                                        "Uncategorized", 99, "Other", 1'764'000'200'000, 1);
        reference["message"] = "Evidence checkpoint of ctl-1";
        reference["unmapped"]["bulkhead_checkpoint"] =
            json::parse(evidence::to_json_line(checkpoint));
        check_ocsf_text(SiemRecord{"checkpoint/1764000200000", &checkpoint}, reference);
    }
}
