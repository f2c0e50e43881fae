// Logging for every Bulkhead program: spdlog (Debian's libspdlog-dev), one line per record
// on standard error, which systemd's journal and the test harnesses both capture.
//
//   bulkhead::logging::setup("bulkhead-controller", "info");
//   spdlog::warn("store: incident {}: {}", id, error.message);
//
// Records carry their context in the message (the component, then the object it concerns),
// so a grep for "incident 42" or "enforcer hv1" finds every line about it. Levels: trace,
// debug, info, warn, error, critical, off. No global logger object of our own: spdlog's
// default logger is configured once at start by main() and used through spdlog's functions.
#pragma once

#include <expected>
#include <string>
#include <string_view>

namespace bulkhead::logging {

// Configures spdlog's default logger: stderr, ISO-8601 UTC timestamps with milliseconds,
// the level and `program`. An unknown level name is an error (the caller exits with it).
std::expected<void, std::string> setup(std::string_view program, std::string_view level = "info");

}  // namespace bulkhead::logging
