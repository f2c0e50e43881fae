// SIEM message bodies, read back with small parsers written here (not the formatter's code):
// CEF's header split on unescaped pipes and its extension on unescaped '=', LEEF split on its
// tab delimiter, OCSF through nlohmann. Every record kind in every format, field by field,
// and the escaping edge cases.
#include "common/version.hpp"
#include "controller/siem/siem_formats.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <map>
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
