#include "controller/services/event_batch.hpp"

#include <simdjson.h>

#include <array>
#include <cstdint>
#include <limits>
#include <optional>

namespace bulkhead::controller {
namespace {

using simdjson::dom::element;
using simdjson::dom::object;

// RFC 6901: "~" and "/" inside a member name are escaped.
std::string pointer_token(std::string_view key) {
    std::string out;
    out.reserve(key.size());
    for (char c : key) {
        if (c == '~') {
            out += "~0";
        } else if (c == '/') {
            out += "~1";
        } else {
            out += c;
        }
    }
    return out;
}

std::unexpected<EventBatchProblem> problem(int status, std::string code, std::string message, std::string pointer) {
    return std::unexpected(EventBatchProblem{status, std::move(code), std::move(message), std::move(pointer)});
}

// A JSON integer that fits int64 (simdjson keeps non-negative integers up to 2^63-1 as int64).
std::optional<std::int64_t> integer(element value) {
    std::int64_t v = 0;
    if (value.is_int64() && value.get_int64().get(v) == simdjson::SUCCESS) {
        return v;
    }
    return std::nullopt;
}

std::optional<element> find(object o, std::string_view key) {
    element value;
    if (o.at_key(key).get(value) != simdjson::SUCCESS) {
        return std::nullopt;
    }
    return value;
}

std::string string_or_empty(object o, std::string_view key) {
    std::string_view text;
    if (auto v = find(o, key); v && v->get_string().get(text) == simdjson::SUCCESS) {
        return std::string(text);
    }
    return {};
}

std::optional<std::int64_t> integer_member(object o, std::string_view key) {
    if (auto v = find(o, key)) {
        return integer(*v);
    }
    return std::nullopt;
}

}  // namespace

std::expected<std::vector<StoredEvent>, EventBatchProblem> EventBatchParser::parse(std::string_view body,
                                                                                   const std::string& enforcer,
                                                                                   TimeMs now_ms) const {
    if (body.empty()) {
        return problem(400, "empty-body", "the request needs a JSON body", "");
    }
    // One parser per thread: it keeps its buffers between requests.
    thread_local simdjson::dom::parser parser;
    element root;
    if (auto failure = parser.parse(body.data(), body.size(), true).get(root); failure != simdjson::SUCCESS) {
        return problem(400, "invalid-json", simdjson::error_message(failure), "");
    }
    object top;
    if (root.get_object().get(top) != simdjson::SUCCESS) {
        return problem(400, "wrong-type", "an event batch must be a JSON object", "");
    }
    std::int64_t sent_ns = 0;
    for (auto field : top) {
        if (field.key == "sent_ns") {
            // When the enforcer sent the batch (docs/control-channel.md): a stage of time to contain.
            const auto sent = integer(field.value);
            if (!sent || *sent < 0) {
                return problem(400, "invalid-value", "\"sent_ns\" must be a non-negative integer", "/sent_ns");
            }
            sent_ns = *sent;
        } else if (field.key != "events") {
            return problem(400, "unknown-field", "unknown member \"" + std::string(field.key) + "\" in an event batch",
                           "/" + pointer_token(field.key));
        }
    }
    simdjson::dom::array events;
    if (auto e = find(top, "events"); !e || e->get_array().get(events) != simdjson::SUCCESS) {
        return problem(400, "wrong-type", "\"events\" must be an array", "/events");
    }
    if (events.size() > limits_.max_events) {
        return problem(413, "too-large", "at most " + std::to_string(limits_.max_events) + " events per batch",
                       "/events");
    }
    std::vector<StoredEvent> records;
    records.reserve(events.size());
    std::size_t i = 0;
    for (element item : events) {
        // Built only for an error: ingest must not pay a string per event.
        const auto at = [&i](std::string_view rest) { return "/events/" + std::to_string(i) + std::string(rest); };
        object entry;
        if (item.get_object().get(entry) != simdjson::SUCCESS) {
            return problem(400, "invalid-value", "\"seq\" must be a positive integer", at("/seq"));
        }
        const auto seq = integer_member(entry, "seq");
        if (!seq || *seq <= 0) {
            return problem(400, "invalid-value", "\"seq\" must be a positive integer", at("/seq"));
        }
        object event;
        std::string_view type;
        const auto type_value = [&]() -> std::optional<element> {
            auto e = find(entry, "event");
            if (!e || e->get_object().get(event) != simdjson::SUCCESS) {
                return std::nullopt;
            }
            return find(event, "type");
        }();
        if (!type_value || type_value->get_string().get(type) != simdjson::SUCCESS) {
            return problem(400, "invalid-value", "\"event\" must be an object with a string \"type\"", at("/event"));
        }
        // time_ns, else last_seen_ns (a summary), else time_unix_ms; each must be an integer.
        std::array<std::optional<std::int64_t>, 3> times;
        constexpr std::array<const char*, 3> time_keys{"time_ns", "last_seen_ns", "time_unix_ms"};
        for (std::size_t k = 0; k < time_keys.size(); ++k) {
            if (auto t = find(event, time_keys[k])) {
                times[k] = integer(*t);
                if (!times[k]) {
                    return problem(400, "wrong-type", std::string("\"") + time_keys[k] + "\" must be an integer",
                                   at(std::string("/event/") + time_keys[k]));
                }
            }
        }
        StoredEvent r;
        for (const char* key : {"dport", "sport"}) {
            if (auto p = find(event, key)) {
                const auto port = integer(*p);
                if (!port || *port < 0 || *port > 65535) {
                    return problem(400, "invalid-port", std::string("\"") + key + "\" must be a port number",
                                   at(std::string("/event/") + key));
                }
                if (key == std::string_view("dport")) {
                    r.dport = static_cast<std::uint16_t>(*port);
                } else {
                    r.sport = static_cast<std::uint16_t>(*port);
                }
            }
        }
        // An ICMP echo's identifier stands for the source port: the analyzer tells attempts
        // apart by it (domain/events.hpp).
        if (auto id = find(event, "icmp_id")) {
            const auto value = integer(*id);
            if (!value || *value < 0 || *value > 65535) {
                return problem(400, "invalid-value", "\"icmp_id\" must be an integer from 0 to 65535",
                               at("/event/icmp_id"));
            }
            if (!r.sport) {
                r.sport = static_cast<std::uint16_t>(*value);
            }
        }
        std::int64_t count = 1;
        if (auto c = find(event, "count")) {
            const auto n = integer(*c);
            if (!n || *n <= 0) {
                return problem(400, "invalid-value", "\"count\" must be a positive integer", at("/event/count"));
            }
            count = *n;
        }
        r.enforcer = enforcer;
        r.enforcer_seq = static_cast<std::uint64_t>(*seq);
        r.type = std::string(type);
        r.time_ns = times[0] ? *times[0] : times[1] ? *times[1] : times[2].value_or(now_ms) * 1'000'000;
        r.received_at = now_ms;
        r.path.enforcer_sent_ns = sent_ns;
        if (const auto received = integer_member(event, "received_ns"); received && *received > 0) {
            r.path.enforcer_received_ns = *received;
        }
        r.workload = string_or_empty(event, "workload");
        r.direction = string_or_empty(event, "direction");
        r.reason = string_or_empty(event, "reason");
        r.src = string_or_empty(event, "src");
        r.dst = string_or_empty(event, "dst");
        r.protocol = string_or_empty(event, "proto_name");
        r.port = string_or_empty(event, "physindev");
        if (r.port.empty()) {
            r.port = string_or_empty(event, "indev");
        }
        r.mac = string_or_empty(event, "src_mac");
        r.count = static_cast<std::uint64_t>(count);
        r.document_text = simdjson::minify(event);
        records.push_back(std::move(r));
        ++i;
    }
    return records;
}

}  // namespace bulkhead::controller
