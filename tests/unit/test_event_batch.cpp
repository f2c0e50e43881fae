// EventBatchParser: enforcer uploads straight into store records; every refusal names the
// spot (JSON pointer) and keeps nothing.
#include "controller/services/event_batch.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

using namespace bulkhead::controller;
using nlohmann::json;

namespace {

EventBatchProblem refused(std::string_view body, std::size_t max_events = 5000) {
    auto r = EventBatchParser(EventBatchLimits{max_events}).parse(body, "hv1", 1'700'000'000'000);
    REQUIRE_FALSE(r.has_value());
    return r.error();
}

}  // namespace

TEST_CASE("event batch: fields become columns, the event its document text") {
    const json event = {{"type", "drop"},      {"time_ns", 1'700'000'000'123'456'789}, {"workload", "vdi-001"},
                        {"direction", "out"},  {"reason", "default"}, {"src", "10.1.0.1"},
                        {"dst", "10.1.0.2"},   {"proto_name", "tcp"}, {"dport", 445},
                        {"sport", 50000},      {"count", 3},          {"note", "caf\u00e9 \"quoted\""}};
    const json body = {{"events", {{{"seq", 7}, {"event", event}}, {{"seq", 8}, {"event", {{"type", "heartbeat"}}}}}}};
    auto r = EventBatchParser().parse(body.dump(), "hv1", 1'700'000'000'000);
    REQUIRE(r);
    REQUIRE(r->size() == 2);
    const auto& e = (*r)[0];
    CHECK(e.enforcer == "hv1");
    CHECK(e.enforcer_seq == 7);
    CHECK(e.type == "drop");
    CHECK(e.time_ns == 1'700'000'000'123'456'789);
    CHECK(e.received_at == 1'700'000'000'000);
    CHECK(e.workload == "vdi-001");
    CHECK(e.direction == "out");
    CHECK(e.reason == "default");
    CHECK(e.src == "10.1.0.1");
    CHECK(e.dst == "10.1.0.2");
    CHECK(e.protocol == "tcp");
    CHECK(e.dport == std::optional<std::uint16_t>(445));
    CHECK(e.sport == std::optional<std::uint16_t>(50000)); // not a column: for the analyzer
    CHECK(e.count == 3);
    CHECK(json::parse(e.document_text) == event);  // the document as uploaded, escapes intact
    // No kernel time: the receive time stands in; defaults for the rest.
    const auto& h = (*r)[1];
    CHECK(h.time_ns == 1'700'000'000'000 * 1'000'000);
    CHECK(h.count == 1);
    CHECK_FALSE(h.dport);
    CHECK_FALSE(h.sport);
    CHECK(h.workload.empty());
}

TEST_CASE("event batch: an ICMP echo's identifier stands for the source port (the analyzer's attempts)") {
    const auto r = EventBatchParser().parse(
        R"({"events":[{"seq":1,"event":{"type":"drop","proto":1,"icmp_type":8,"icmp_id":4242,"icmp_seq":3}}]})",
        "hv1", 1'700'000'000'000);
    REQUIRE(r);
    CHECK((*r)[0].sport == std::optional<std::uint16_t>(4242));
}

TEST_CASE("event batch: time falls back from time_ns to last_seen_ns to time_unix_ms") {
    auto r = EventBatchParser().parse(
        R"({"events":[{"seq":1,"event":{"type":"drop_summary","last_seen_ns":5}},)"
        R"({"seq":2,"event":{"type":"drop","time_unix_ms":9}}]})",
        "hv1", 1);
    REQUIRE(r);
    CHECK((*r)[0].time_ns == 5);
    CHECK((*r)[1].time_ns == 9'000'000);
}

TEST_CASE("event batch: bad input is refused with the pointer of the first problem") {
    CHECK(refused("").code == "empty-body");
    CHECK(refused(R"({"events": [{"seq": 1,}]})").code == "invalid-json");
    CHECK(refused("[]").code == "wrong-type");
    CHECK(refused("[]").pointer == "");
    auto unknown = refused(R"({"events":[],"a/b~c":1})");
    CHECK(unknown.code == "unknown-field");
    CHECK(unknown.pointer == "/a~1b~0c");
    CHECK(refused(R"({"events":{}})").pointer == "/events");
    CHECK(refused(R"({})").pointer == "/events");
    struct Case {
        const char* body;
        const char* code;
        const char* pointer;
    };
    for (const Case& c : {
             Case{R"({"events":[5]})", "invalid-value", "/events/0/seq"},
             Case{R"({"events":[{"seq":0,"event":{"type":"drop"}}]})", "invalid-value", "/events/0/seq"},
             Case{R"({"events":[{"seq":-1,"event":{"type":"drop"}}]})", "invalid-value", "/events/0/seq"},
             Case{R"({"events":[{"seq":1.5,"event":{"type":"drop"}}]})", "invalid-value", "/events/0/seq"},
             Case{R"({"events":[{"seq":"1","event":{"type":"drop"}}]})", "invalid-value", "/events/0/seq"},
             Case{R"({"events":[{"seq":9223372036854775808,"event":{"type":"drop"}}]})", "invalid-value",
                  "/events/0/seq"},
             Case{R"({"events":[{"seq":1,"event":{"type":"drop"}},{"seq":2}]})", "invalid-value", "/events/1/event"},
             Case{R"({"events":[{"seq":1,"event":{"type":7}}]})", "invalid-value", "/events/0/event"},
             Case{R"({"events":[{"seq":1,"event":[]}]})", "invalid-value", "/events/0/event"},
             Case{R"({"events":[{"seq":1,"event":{"type":"drop","time_ns":"now"}}]})", "wrong-type",
                  "/events/0/event/time_ns"},
             Case{R"({"events":[{"seq":1,"event":{"type":"drop","time_unix_ms":1.5}}]})", "wrong-type",
                  "/events/0/event/time_unix_ms"},
             Case{R"({"events":[{"seq":1,"event":{"type":"drop","dport":65536}}]})", "invalid-port",
                  "/events/0/event/dport"},
             Case{R"({"events":[{"seq":1,"event":{"type":"drop","sport":-1}}]})", "invalid-port",
                  "/events/0/event/sport"},
             Case{R"({"events":[{"seq":1,"event":{"type":"drop","proto":1,"icmp_id":70000}}]})", "invalid-value",
                  "/events/0/event/icmp_id"},
             Case{R"({"events":[{"seq":1,"event":{"type":"drop","count":0}}]})", "invalid-value",
                  "/events/0/event/count"},
         }) {
        CAPTURE(c.body);
        auto p = refused(c.body);
        CHECK(p.status == 400);
        CHECK(p.code == c.code);
        CHECK(p.pointer == c.pointer);
    }
    auto big = refused(R"({"events":[{"seq":1,"event":{"type":"a"}},{"seq":2,"event":{"type":"a"}}]})", 1);
    CHECK(big.status == 413);
    CHECK(big.code == "too-large");
}
