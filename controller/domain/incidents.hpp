// Incidents as the SOC handles them: one per source identity, with findings, notes and a
// timeline of linked drop events.
#pragma once

#include "controller/domain/time.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace bulkhead::controller {

enum class IncidentState { Open, Acknowledged, Resolved };
std::string_view to_string(IncidentState state);
std::optional<IncidentState> incident_state_from_string(std::string_view text);

struct Incident {
    std::int64_t id = 0;
    std::string source_workload;
    IncidentState state = IncidentState::Open;
    std::string severity;         // "low" | "medium" | "high" | "critical"
    std::string title;            // one line for lists
    std::string explanation;      // "vdi-0042 (user kimura) tried 37 hosts on tcp/445 in 12 s"
    TimeMs opened_at = 0;
    TimeMs updated_at = 0;
    std::uint64_t event_count = 0;
    nlohmann::json details = nlohmann::json::object(); // detector findings, targets, user, timeline
    // Optimistic concurrency: every update names the version it read and fails with a
    // Conflict when another writer (the SOC's resolve, another batch) got there first.
    std::int64_t version = 1;
    // The newest stored event counted in event_count. Events are analysed in id order, so
    // an event at or below it was counted already (a replay after a restart skips it).
    std::int64_t counted_through_event = 0;
};

struct IncidentNote {
    std::int64_t id = 0;
    std::int64_t incident_id = 0;
    std::string author;
    TimeMs at = 0;
    std::string text;
};

struct IncidentQuery {
    std::optional<IncidentState> state;
    std::optional<std::string> source_workload;
    std::optional<std::int64_t> before_id;        // paging, newest first
    std::size_t limit = 100;
};

// A known scanner the SOC exempted from detection, by workload (optionally on one enforcer)
// or by segment; it always expires.
struct Exemption {
    std::int64_t id = 0;
    std::string workload;
    std::string enforcer;
    std::string segment;
    TimeMs expires_at = 0;
    std::string reason;
    std::string created_by;
    TimeMs created_at = 0;
};

}  // namespace bulkhead::controller
