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

// Reads the fields of a record back, in order.
class FieldReader {
public:
    explicit FieldReader(std::string_view record) : rest_(record) {}

    std::optional<std::string_view> text() {
        std::size_t length = 0;
        const auto [end, error] = std::from_chars(rest_.data(), rest_.data() + rest_.size(), length);
        if (error != std::errc() || end == rest_.data())
            return std::nullopt;
        const auto digits = static_cast<std::size_t>(end - rest_.data());
        if (digits >= rest_.size() || rest_[digits] != ':' || rest_.size() - digits - 1 < length + 1 ||
            rest_[digits + 1 + length] != ',')
            return std::nullopt;
        const std::string_view value = rest_.substr(digits + 1, length);
        rest_.remove_prefix(digits + 2 + length);
        return value;
    }
    std::optional<std::int64_t> number() {
        const auto value = text();
        if (!value || value->empty())
            return std::nullopt;
        std::int64_t n = 0;
        const auto [end, error] = std::from_chars(value->data(), value->data() + value->size(), n);
        if (error != std::errc() || end != value->data() + value->size())
            return std::nullopt;
        return n;
    }
    // An optional number: the empty field is nullopt; `ok` turns false on anything else.
    std::optional<std::int64_t> optional_number(bool& ok) {
        const auto value = text();
        if (!value) {
            ok = false;
            return std::nullopt;
        }
        if (value->empty())
            return std::nullopt;
        std::int64_t n = 0;
        const auto [end, error] = std::from_chars(value->data(), value->data() + value->size(), n);
        if (error != std::errc() || end != value->data() + value->size())
            ok = false;
        return n;
    }
    std::optional<nlohmann::json> document() {
        const auto value = text();
        if (!value)
            return std::nullopt;
        auto parsed = nlohmann::json::parse(*value, nullptr, false);
        if (parsed.is_discarded())
            return std::nullopt;
        return parsed;
    }
    bool done() const { return rest_.empty(); }

private:
    std::string_view rest_;
};

}  // namespace

void append_event_record(std::string& out, const EventRecordFields& e) {
    field(out, "event/1");
    field(out, e.enforcer);
    field(out, e.enforcer_seq);
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
    field(out, e.count);
    optional_field(out, e.clock_offset_ms);
    field(out, e.document_text);
}

void append_event_record(std::string& out, const controller::StoredEvent& e, std::string_view document_text) {
    EventRecordFields fields;
    fields.enforcer = e.enforcer;
    fields.enforcer_seq = static_cast<std::int64_t>(e.enforcer_seq);
    fields.type = e.type;
    fields.time_ns = e.time_ns;
    fields.received_at = e.received_at;
    fields.workload = e.workload;
    fields.direction = e.direction;
    fields.reason = e.reason;
    fields.src = e.src;
    fields.dst = e.dst;
    fields.protocol = e.protocol;
    if (e.dport)
        fields.dport = *e.dport;
    fields.count = static_cast<std::int64_t>(e.count);
    fields.clock_offset_ms = e.clock_offset_ms;
    fields.document_text = document_text;
    append_event_record(out, fields);
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

std::optional<controller::AuditEntry> audit_from_record(std::string_view record) {
    FieldReader in(record);
    controller::AuditEntry a;
    if (in.text() != std::optional<std::string_view>("audit/1"))
        return std::nullopt;
    auto id = in.number();
    auto at = in.number();
    auto actor = in.text();
    auto role = in.text();
    auto action = in.text();
    auto target = in.text();
    auto before = in.document();
    auto after = in.document();
    if (!id || !at || !actor || !role || !action || !target || !before || !after || !in.done())
        return std::nullopt;
    a.id = *id;
    a.at = *at;
    a.actor = *actor;
    a.role = *role;
    a.action = *action;
    a.target = *target;
    a.before = std::move(*before);
    a.after = std::move(*after);
    return a;
}

std::optional<controller::Incident> incident_from_record(std::string_view record) {
    FieldReader in(record);
    controller::Incident i;
    if (in.text() != std::optional<std::string_view>("incident/1"))
        return std::nullopt;
    auto id = in.number();
    auto source = in.text();
    auto state_text = in.text();
    auto severity = in.text();
    auto title = in.text();
    auto explanation = in.text();
    auto opened = in.number();
    auto updated = in.number();
    auto count = in.number();
    auto details = in.document();
    auto version = in.number();
    if (!id || !source || !state_text || !severity || !title || !explanation || !opened || !updated || !count ||
        !details || !version || !in.done())
        return std::nullopt;
    const auto state = controller::incident_state_from_string(*state_text);
    if (!state)
        return std::nullopt;
    i.id = *id;
    i.source_workload = *source;
    i.state = *state;
    i.severity = *severity;
    i.title = *title;
    i.explanation = *explanation;
    i.opened_at = *opened;
    i.updated_at = *updated;
    i.event_count = static_cast<std::uint64_t>(*count);
    i.details = std::move(*details);
    i.version = *version;
    return i;
}

std::optional<controller::Quarantine> quarantine_from_record(std::string_view record) {
    FieldReader in(record);
    controller::Quarantine q;
    if (in.text() != std::optional<std::string_view>("quarantine/1"))
        return std::nullopt;
    bool ok = true;
    auto id = in.number();
    auto workload = in.text();
    auto reason = in.text();
    auto actor = in.text();
    auto automatic = in.number();
    auto incident = in.optional_number(ok);
    auto created = in.number();
    auto released = in.optional_number(ok);
    auto released_by = in.text();
    if (!ok || !id || !workload || !reason || !actor || !automatic || !created || !released_by || !in.done())
        return std::nullopt;
    q.id = *id;
    q.workload = *workload;
    q.reason = *reason;
    q.actor = *actor;
    q.automatic = *automatic != 0;
    q.incident_id = incident;
    q.created_at = *created;
    q.released_at = released;
    q.released_by = *released_by;
    return q;
}

}  // namespace bulkhead::evidence
