// Time as the controller's records carry it: milliseconds since the Unix epoch (UTC). Drop
// events keep the enforcer's kernel nanoseconds beside it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace bulkhead::controller {

using TimeMs = std::int64_t;

// "2026-11-23T10:00:00.000Z"
std::string format_time_ms(TimeMs ms);

}  // namespace bulkhead::controller
