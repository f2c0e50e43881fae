// EventBatchParser: an enforcer's event upload, `{"events":[{"seq":N,"event":{...}},...]}`
// (docs/control-channel.md), turned straight into store records.
//
// Why not the JSON reader every other endpoint uses: ingest must keep up with scans
// (100,000 events/s on two cores), and building a DOM of every event, copying it and
// serialising it again for the store cost about a core at that rate. This parser uses
// simdjson (validating, several GB/s) and keeps each event's document as the compact JSON
// text the store writes as is. Validation is the same as the rest of the API: the first
// problem is reported with its JSON pointer and nothing of the batch is kept.
#pragma once

#include "controller/store/store.hpp"

#include <cstddef>
#include <expected>
#include <string>
#include <string_view>
#include <vector>

namespace bulkhead::controller {

struct EventBatchProblem {
    int status = 400;
    std::string code;     // "invalid-json", "wrong-type", "unknown-field", "invalid-value", ...
    std::string message;
    std::string pointer;  // JSON pointer of the offending value ("" = the whole body)
};

struct EventBatchLimits {
    std::size_t max_events = 5000;  // more is 413 too-large
};

class EventBatchParser {
public:
    explicit EventBatchParser(EventBatchLimits limits = {}) : limits_(limits) {}

    // Records for `enforcer`, in upload order, with `received_at` = now_ms; an event
    // without a kernel time gets now (as `time_ns`). `document_text` holds each event as
    // uploaded (compact JSON); `document` stays null.
    std::expected<std::vector<StoredEvent>, EventBatchProblem> parse(std::string_view body,
                                                                     const std::string& enforcer,
                                                                     TimeMs now_ms) const;

private:
    EventBatchLimits limits_;
};

}  // namespace bulkhead::controller
