// The audit log: who changed what, when, before and after. Append-only.
#pragma once

#include "controller/domain/time.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace bulkhead::controller {

struct AuditEntry {
    std::int64_t id = 0;
    TimeMs at = 0;
    std::string actor;            // token name
    std::string role;
    std::string action;           // "policy.activate", "quarantine.create", ...
    std::string target;           // what it acted on ("workload/vdi-001", "revision/7")
    nlohmann::json before;        // null when nothing existed
    nlohmann::json after;         // null when deleted
};

struct AuditQuery {
    std::optional<TimeMs> from, to;
    std::optional<std::string> actor;
    std::optional<std::string> action;
    std::optional<std::int64_t> before_id;
    std::size_t limit = 100;
};

}  // namespace bulkhead::controller
