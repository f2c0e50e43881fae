#include "controller/evidence/evidence_records.hpp"

#include <charconv>
#include <cstdint>

namespace bulkhead::evidence {

namespace {

void field(std::string& out, std::string_view bytes) {
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, bytes.size()).ptr;
    out.append(digits, end);
    out += ':';
    out += bytes;
    out += ',';
}

void field(std::string& out, std::int64_t value) {
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
    field(out, std::string_view(digits, static_cast<std::size_t>(end - digits)));
}

// An absent optional is the empty field; a present one is never empty (a number).
template <typename T>
void optional_field(std::string& out, const std::optional<T>& value) {
    if (value)
        field(out, static_cast<std::int64_t>(*value));
    else
        field(out, std::string_view());
}

}  // namespace

void append_event_record(std::string& out, const controller::StoredEvent& e,
                         std::string_view document_text) {
    field(out, "event/1");
    field(out, e.enforcer);
    field(out, static_cast<std::int64_t>(e.enforcer_seq));
    field(out, e.type);
    field(out, e.time_ns);
    field(out, e.received_at);
    field(out, e.workload);
    field(out, e.direction);
    field(out, e.reason);
    field(out, e.src);
    field(out, e.dst);
    field(out, e.protocol);
    optional_field(out, e.dport);
    field(out, static_cast<std::int64_t>(e.count));
    optional_field(out, e.clock_offset_ms);
    field(out, document_text);
}

std::string event_record(const controller::StoredEvent& event, std::string_view document_text) {
    std::string out;
    out.reserve(document_text.size() + 160);
    append_event_record(out, event, document_text);
    return out;
}

std::string audit_record(const controller::AuditEntry& a) {
    std::string out;
    field(out, "audit/1");
    field(out, a.id);
    field(out, a.at);
    field(out, a.actor);
    field(out, a.role);
    field(out, a.action);
    field(out, a.target);
    field(out, a.before.dump());
    field(out, a.after.dump());
    return out;
}

std::string incident_record(const controller::Incident& i) {
    std::string out;
    field(out, "incident/1");
    field(out, i.id);
    field(out, i.source_workload);
    field(out, controller::to_string(i.state));
    field(out, i.severity);
    field(out, i.title);
    field(out, i.explanation);
    field(out, i.opened_at);
    field(out, i.updated_at);
    field(out, static_cast<std::int64_t>(i.event_count));
    field(out, i.details.dump());
    field(out, i.version);
    return out;
}

std::string quarantine_record(const controller::Quarantine& q) {
    std::string out;
    field(out, "quarantine/1");
    field(out, q.id);
    field(out, q.workload);
    field(out, q.reason);
    field(out, q.actor);
    field(out, std::int64_t{q.automatic ? 1 : 0});
    optional_field(out, q.incident_id);
    field(out, q.created_at);
    optional_field(out, q.released_at);
    field(out, q.released_by);
    return out;
}

}  // namespace bulkhead::evidence
