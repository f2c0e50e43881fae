// The canonical bytes of each stored record that a hash chain covers: drop events (and the
// other events enforcers upload), incident changes, quarantine changes and audit entries.
//
// Every field is written as a netstring ("<length>:<bytes>,"), so no two different records
// encode alike whatever bytes their fields hold, and the encoding needs no escaping, no JSON
// tree and no allocation beyond the output: ingest computes one per event. The layout is part
// of the evidence format (v1): a year-old record must encode the same way with the next
// release, so fields are only ever appended to a new version, never reordered.
#pragma once

#include "controller/domain/audit.hpp"
#include "controller/domain/events.hpp"
#include "controller/domain/incidents.hpp"
#include "controller/domain/quarantine.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace bulkhead::evidence {

// An event's columns as views, for readers that build the record straight from stored
// columns (verification reads millions) without a StoredEvent.
struct EventRecordFields {
    std::string_view enforcer;
    std::int64_t enforcer_seq = 0;
    std::string_view type;
    std::int64_t time_ns = 0;
    std::int64_t received_at = 0;
    std::string_view workload, direction, reason, src, dst, protocol;
    std::optional<std::int64_t> dport;
    std::int64_t count = 0;
    std::optional<std::int64_t> clock_offset_ms;
    std::string_view document_text;
};
void append_event_record(std::string& out, const EventRecordFields& fields);

// An event exactly as stored: its columns and its document text as written (`document_text`
// when set, otherwise `document` compacted). The event's id is its sequence number in the
// chain and is not repeated here.
void append_event_record(std::string& out, const controller::StoredEvent& event,
                         std::string_view document_text);
std::string event_record(const controller::StoredEvent& event, std::string_view document_text);

// An audit entry as stored (before/after compacted by nlohmann::json, whose output for the
// same value never changes).
std::string audit_record(const controller::AuditEntry& entry);

// An incident after a change (opened, updated, resolved), as stored.
std::string incident_record(const controller::Incident& incident);

// A quarantine after a change (created, released), as stored.
std::string quarantine_record(const controller::Quarantine& quarantine);

// The records back (for export from the chains in order): nullopt when `record` is not one
// of that kind in this version's layout.
std::optional<controller::AuditEntry> audit_from_record(std::string_view record);
std::optional<controller::Incident> incident_from_record(std::string_view record);
std::optional<controller::Quarantine> quarantine_from_record(std::string_view record);

}  // namespace bulkhead::evidence
