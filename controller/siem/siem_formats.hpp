// SIEM message bodies: one record (a drop or allowed-flow summary, an incident change, a
// quarantine or its release, an audit entry, a signed evidence checkpoint) as one CEF, LEEF
// 2.0 or OCSF 1.1 JSON message, without the syslog header (syslog_message.hpp adds it).
//
// Pure: values in, text out; no clock, no store. The caller (the exporter, writing outbox
// rows) gives every record its stable id ("drops/123", "incidents/45/v3",
// "quarantines/7/released", "audit/88", "checkpoint/<at_ms>"); the formatters write it where
// each format keeps a record's identity (CEF externalId, LEEF externalId, OCSF metadata.uid)
// so a SIEM can de-duplicate the copies an at-least-once outbox may deliver.
// docs/siem.md has the field tables.
#pragma once

#include "controller/domain/audit.hpp"
#include "controller/domain/events.hpp"
#include "controller/domain/incidents.hpp"
#include "controller/domain/quarantine.hpp"
#include "controller/evidence/checkpoint.hpp"
#include "controller/siem/siem_destination.hpp"

#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace bulkhead::siem {

// One record to export. The pointer is borrowed for the duration of the format call.
// Checkpoints are the signed ones: a SIEM copy is only worth keeping with its signature.
struct SiemRecord {
    std::string id; // stable id, given by the exporter
    std::variant<const controller::StoredEvent*, const controller::Incident*, const controller::Quarantine*,
                 const controller::AuditEntry*, const evidence::SignedCheckpoint*>
        subject;
};

// Which subscription the record belongs to; nullopt for what is never exported (enforcer
// lifecycle events, a null subject).
std::optional<SiemRecordKind> record_kind(const SiemRecord& record);

// How urgent the record is on CEF's 0-10 scale, which the other scales derive from:
// allowed flow 1, checkpoint 1, audit 2, drop 4 (decoy hit 7, from a quarantined workload
// 6), incident low 3 / medium 5 / high 8 / critical 10, quarantine 8 / release 3.
int record_severity(const SiemRecord& record);
// RFC 5424 severity (0 emergency .. 7 debug) for a 0-10 severity: 9-10 critical (2),
// 7-8 error (3), 5-6 warning (4), 3-4 notice (5), 0-2 informational (6).
int syslog_severity(int severity_0_to_10);
// OCSF severity_id: 1 informational, 2 low, 3 medium, 4 high, 5 critical.
int ocsf_severity_id(int severity_0_to_10);

// The event class a SIEM files the record under: CEF's Signature ID and LEEF's Event ID
// ("drop", "allowed_flow", "incident.open", "quarantine.created", "audit.policy.activate",
// "checkpoint"). Also the syslog MSGID's source (truncated to 32 characters there).
std::string event_class_id(const SiemRecord& record);

std::expected<std::string, std::string> format_cef(const SiemRecord& record);
std::expected<std::string, std::string> format_leef(const SiemRecord& record);
std::expected<std::string, std::string> format_ocsf(const SiemRecord& record);
// Dispatches on the destination's format. The error names a record that cannot be
// exported (a lifecycle event, a null subject).
std::expected<std::string, std::string> format_record(SiemFormat format, const SiemRecord& record);

// Escaping, public for the tests and for anyone building a message by hand.
std::string cef_escape_header(std::string_view text);    // "\" -> "\\", "|" -> "\|"
std::string cef_escape_extension(std::string_view text); // "\", "=", CR, LF
std::string leef_escape_header(std::string_view text);   // "\" -> "\\", "|" -> "\|"
std::string leef_clean_value(std::string_view text);     // tab, CR, LF -> space
// Appends `text` as a JSON string (RFC 8259), quotes included: '"', '\' and the control
// characters escaped (\b \t \n \f \r, else \u00xx), other bytes kept as they are. Bytes that
// are not UTF-8 (a workload name from a broken upload) become U+FFFD, one per ill-formed
// sequence, exactly as nlohmann::json's dump with error_handler_t::replace writes them: the
// OCSF text has always been that dump's, and a SIEM's copies must not change with the writer.
void append_json_string(std::string& out, std::string_view text);

// OCSF's schema version the JSON follows.
inline constexpr std::string_view kOcsfVersion = "1.1.0";

} // namespace bulkhead::siem
