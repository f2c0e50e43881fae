// Quarantine: a workload cut off except for its remediation allow-list.
#pragma once

#include "controller/domain/time.hpp"

#include <cstdint>
#include <optional>
#include <string>

namespace bulkhead::controller {

struct Quarantine {
    std::int64_t id = 0;
    std::string workload;
    std::string reason;
    std::string actor;            // token name, or "analyzer" for automatic ones
    bool automatic = false;
    std::optional<std::int64_t> incident_id;
    TimeMs created_at = 0;
    std::optional<TimeMs> released_at;
    std::string released_by;
};

}  // namespace bulkhead::controller
