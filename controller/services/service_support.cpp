#include "controller/services/service_support.hpp"

#include <openssl/rand.h>
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <stdexcept>

namespace bulkhead::controller {

using nlohmann::json;

ServiceError service_error(ErrorKind kind, std::string code, std::string message, json details) {
    return ServiceError{kind, std::move(code), std::move(message), std::move(details)};
}

ServiceError from_store(const StoreError& e, std::string_view context) {
    switch (e.kind) {
    case StoreError::Kind::NotFound:
        return service_error(ErrorKind::NotFound, "not-found", e.message);
    case StoreError::Kind::Conflict:
        return service_error(ErrorKind::Conflict, "conflict", e.message);
    case StoreError::Kind::Invalid:
        return service_error(ErrorKind::BadRequest, "invalid", e.message);
    case StoreError::Kind::Io:
        break;
    }
    spdlog::error("{}: {}", context, e.message);
    return service_error(ErrorKind::Unavailable, "store-unavailable", "the controller's store failed: " + e.message);
}

ServiceError invalid_document(std::string message, const policy::Diagnostics& diagnostics) {
    return service_error(ErrorKind::InvalidDocument, "invalid-document", std::move(message),
                         json{{"errors", policy::diagnostics_to_json(diagnostics)}});
}

// A quarantine's stored form inside results (found by ADL from nlohmann::json).
void to_json(json& j, const Quarantine& q) {
    j = json{{"id", q.id}, {"workload", q.workload}, {"reason", q.reason}, {"actor", q.actor},
             {"automatic", q.automatic}, {"incident_id", q.incident_id ? json(*q.incident_id) : json(nullptr)},
             {"created_at", q.created_at}, {"released_at", q.released_at ? json(*q.released_at) : json(nullptr)},
             {"released_by", q.released_by}};
}

void from_json(const json& j, Quarantine& q) {
    q.id = j.value("id", std::int64_t{0});
    q.workload = j.value("workload", "");
    q.reason = j.value("reason", "");
    q.actor = j.value("actor", "");
    q.automatic = j.value("automatic", false);
    if (j.contains("incident_id") && j["incident_id"].is_number_integer()) {
        q.incident_id = j["incident_id"].get<std::int64_t>();
    }
    q.created_at = j.value("created_at", TimeMs{0});
    if (j.contains("released_at") && j["released_at"].is_number_integer()) {
        q.released_at = j["released_at"].get<TimeMs>();
    }
    q.released_by = j.value("released_by", "");
}

json optional_time(const std::optional<TimeMs>& ms) {
    return ms ? json(format_time_ms(*ms)) : json(nullptr);
}

json revision_json(const PolicyRevision& r, bool with_document) {
    json j{{"id", r.id},
           {"state", std::string(to_string(r.state))},
           {"name", r.name},
           {"author", r.author},
           {"comment", r.comment},
           {"created_at", format_time_ms(r.created_at)},
           {"activated_at", optional_time(r.activated_at)}};
    if (with_document) {
        j["document"] = r.document;
    }
    return j;
}

namespace {

// The members of a document left as text, read without building a tree: one parser per
// thread, reused (its buffers grow to the largest document and stay).
void restore_upload_fields_from_text(StoredEvent& e) {
    thread_local simdjson::dom::parser parser;
    simdjson::dom::object document;
    if (parser.parse(e.document_text).get(document) != simdjson::SUCCESS)
        return;  // as a document that does not parse as an object: nothing to restore
    const auto text_member = [&](std::string_view key) -> std::string {
        std::string_view value;
        if (document.at_key(key).get_string().get(value) != simdjson::SUCCESS)
            return {};
        return std::string(value);
    };
    e.port = text_member("physindev");
    if (e.port.empty())
        e.port = text_member("indev");
    e.mac = text_member("src_mac");
    for (const char* key : {"sport", "icmp_id"}) {
        std::uint64_t value = 0;
        if (!e.sport && document.at_key(key).get_uint64().get(value) == simdjson::SUCCESS && value <= 65535)
            e.sport = static_cast<std::uint16_t>(value);
    }
    bool would_drop = false;
    if (document.at_key("would_drop").get_bool().get(would_drop) == simdjson::SUCCESS)
        e.would_drop = would_drop;
}

}  // namespace

void restore_upload_fields(StoredEvent& e) {
    if (!e.document.is_object()) {
        if (e.document.is_null() && !e.document_text.empty())
            restore_upload_fields_from_text(e);
        return;
    }
    const auto would_drop = e.document.find("would_drop");
    e.would_drop = would_drop != e.document.end() && would_drop->is_boolean() && would_drop->get<bool>();
    e.port = string_member(e.document, "physindev").value_or("");
    if (e.port.empty())
        e.port = string_member(e.document, "indev").value_or("");
    e.mac = string_member(e.document, "src_mac").value_or("");
    for (const char* key : {"sport", "icmp_id"}) {
        if (auto sport = e.document.find(key); !e.sport && sport != e.document.end() && sport->is_number_unsigned() &&
                                               sport->get<std::uint64_t>() <= 65535)
            e.sport = static_cast<std::uint16_t>(sport->get<std::uint64_t>());
    }
}

json event_json(const StoredEvent& e, std::int64_t clock_offset_threshold_ms) {
    json j = e.document.is_object() ? e.document : json::object();
    j["id"] = e.id;
    j["enforcer"] = e.enforcer;
    j["enforcer_seq"] = e.enforcer_seq;
    j["received_at"] = format_time_ms(e.received_at);
    if (e.clock_offset_ms) {
        j["clock_offset_ms"] = *e.clock_offset_ms;
        j["clock_suspect"] = std::abs(*e.clock_offset_ms) > clock_offset_threshold_ms;
    }
    return j;
}

json incident_json(const Incident& i) {
    return json{{"id", i.id},
                {"source_workload", i.source_workload},
                {"state", std::string(to_string(i.state))},
                {"severity", i.severity},
                {"title", i.title},
                {"explanation", i.explanation},
                {"opened_at", format_time_ms(i.opened_at)},
                {"updated_at", format_time_ms(i.updated_at)},
                {"event_count", i.event_count},
                {"details", i.details}};
}

// A quarantine as the API shows it, without the enforcers' applied state.
json quarantine_record_json(const Quarantine& q) {
    return json{{"workload", q.workload},
                {"reason", q.reason},
                {"actor", q.actor},
                {"automatic", q.automatic},
                // A tripwire's quarantine was put in force by the enforcer's kernel on the
                // packet itself; the controller recorded it afterwards.
                {"contained_by", q.actor == kernel_actor ? "kernel" : "controller"},
                {"incident", q.incident_id ? json(*q.incident_id) : json(nullptr)},
                {"created_at", format_time_ms(q.created_at)},
                {"released_at", optional_time(q.released_at)},
                {"released_by", q.released_by}};
}

json vpn_session_json(const VpnSession& s) {
    return json{{"id", s.id},
                {"user", s.user},
                {"pool_address", s.pool_address},
                {"real_address", s.real_address},
                {"start", format_time_ms(s.start)},
                {"end", optional_time(s.end)}};
}

json audit_json(const AuditEntry& a) {
    return json{{"id", a.id},         {"at", format_time_ms(a.at)}, {"actor", a.actor},
                {"role", a.role},     {"action", a.action},         {"target", a.target},
                {"before", a.before}, {"after", a.after}};
}


json exemption_json(const Exemption& e) {
    return json{{"id", e.id},
                {"workload", e.workload},
                {"enforcer", e.enforcer},
                {"segment", e.segment},
                {"expires_ms", e.expires_at},
                {"expires_at", format_time_ms(e.expires_at)},
                {"reason", e.reason},
                {"created_by", e.created_by},
                {"created_at", format_time_ms(e.created_at)}};
}

const json* member(const json& object, std::string_view key) {
    if (!object.is_object()) {
        return nullptr;
    }
    auto it = object.find(key);
    return it == object.end() ? nullptr : &*it;
}

std::optional<std::string> string_member(const json& object, std::string_view key) {
    const json* v = member(object, key);
    if (v == nullptr || !v->is_string()) {
        return std::nullopt;
    }
    return v->get<std::string>();
}

// Checks that `body` is an object holding only `allowed` members: typos get a 400 naming
// the member, as everywhere else in Bulkhead.
std::expected<void, ServiceError> only_members(const json& body, std::initializer_list<std::string_view> allowed,
                                           std::string_view what) {
    if (!body.is_object()) {
        return std::unexpected(service_error(ErrorKind::BadRequest, "wrong-type", std::string(what) + " must be a JSON object",
                                     json{{"pointer", ""}}));
    }
    for (const auto& [key, value] : body.items()) {
        if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
            return std::unexpected(service_error(ErrorKind::BadRequest, "unknown-field", "unknown member \"" + key + "\" in " + std::string(what),
                                         json{{"pointer", "/" + key}}));
        }
    }
    return {};
}

std::expected<std::string, ServiceError> required_string(const json& body, std::string_view key,
                                                     std::size_t max_length) {
    const json* v = member(body, key);
    if (v == nullptr) {
        return std::unexpected(service_error(ErrorKind::BadRequest, "missing-field", "required member \"" + std::string(key) + "\" is missing",
                                     json{{"pointer", ""}}));
    }
    if (!v->is_string() || v->get_ref<const std::string&>().empty()) {
        return std::unexpected(service_error(ErrorKind::BadRequest, "wrong-type", "\"" + std::string(key) + "\" must be a non-empty string",
                                     json{{"pointer", "/" + std::string(key)}}));
    }
    if (v->get_ref<const std::string&>().size() > max_length) {
        return std::unexpected(service_error(ErrorKind::BadRequest, "invalid-value",
                                     "\"" + std::string(key) + "\" is longer than " + std::to_string(max_length),
                                     json{{"pointer", "/" + std::string(key)}}));
    }
    return v->get<std::string>();
}

std::expected<std::optional<std::string>, ServiceError> optional_string(const json& body, std::string_view key,
                                                                    std::size_t max_length) {
    const json* v = member(body, key);
    if (v == nullptr || v->is_null()) {
        return std::optional<std::string>{};
    }
    if (!v->is_string()) {
        return std::unexpected(service_error(ErrorKind::BadRequest, "wrong-type", "\"" + std::string(key) + "\" must be a string",
                                     json{{"pointer", "/" + std::string(key)}}));
    }
    if (v->get_ref<const std::string&>().size() > max_length) {
        return std::unexpected(service_error(ErrorKind::BadRequest, "invalid-value",
                                     "\"" + std::string(key) + "\" is longer than " + std::to_string(max_length),
                                     json{{"pointer", "/" + std::string(key)}}));
    }
    return std::optional<std::string>{v->get<std::string>()};
}

std::optional<std::uint16_t> json_port(const json& event, std::string_view key) {
    const json* v = member(event, key);
    if (v != nullptr && v->is_number_unsigned() && v->get<std::uint64_t>() <= 65535) {
        return static_cast<std::uint16_t>(v->get<std::uint64_t>());
    }
    return std::nullopt;
}

std::int64_t json_int(const json& object, std::string_view key, std::int64_t fallback) {
    const json* v = member(object, key);
    if (v != nullptr && v->is_number_integer()) {
        return v->get<std::int64_t>();
    }
    return fallback;
}


std::string random_secret() {
    std::array<unsigned char, 32> bytes{};
    if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
        throw std::runtime_error("RAND_bytes failed: no randomness for secrets");
    }
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    for (unsigned char b : bytes) {
        out.push_back(hex[b >> 4]);
        out.push_back(hex[b & 0xf]);
    }
    return out;
}

std::expected<void, ServiceError> check_own_channel(const Caller& caller, const std::string& id) {
    if (caller.role != Role::Enforcer || caller.enforcer != id) {
        return std::unexpected(service_error(ErrorKind::Forbidden, "forbidden",
                                             "this credential may not speak for enforcer \"" + id + "\""));
    }
    return {};
}

std::string vpn_source(const VpnSession& session) {
    return "vpn:" + session.user + "#" + std::to_string(session.id);
}

bool is_vpn_source(std::string_view workload) {
    return workload.starts_with("vpn:");
}

}  // namespace bulkhead::controller
