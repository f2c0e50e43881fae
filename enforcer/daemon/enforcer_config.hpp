// The enforcer's configuration file (/etc/bulkhead/enforcer.json, packaging/schema/
// enforcer-config.schema.json): members named as the long flags with '_' for '-'. A flag
// given on the command line wins over the file, so a unit's ExecStart can still override one
// member. Pure: takes the parsed document, returns the options or the first problem, named
// by its JSON pointer (`/etc/bulkhead/enforcer.json: /drop_group: must be ...`).
#pragma once

#include "enforcer/daemon/enforcer_daemon.hpp"

#include <nlohmann/json.hpp>

#include <expected>
#include <set>
#include <string>
#include <string_view>

namespace bulkhead::enforcer {

struct EnforcerSettings {
    DaemonOptions daemon;
    std::string log_level = "info";
};

// Applies every member of `document` to `settings` except those whose flag name (e.g.
// "--drop-group") is in `given_flags`. Unknown members, wrong types and out-of-range
// values are errors; "$schema" and "comment" are allowed.
std::expected<void, std::string> apply_enforcer_config(const nlohmann::json& document, std::string_view path,
                                                       const std::set<std::string>& given_flags,
                                                       EnforcerSettings& settings);

// Reads, strictly parses (duplicate keys, depth) and applies the file at `path`.
std::expected<void, std::string> load_enforcer_config(const std::string& path,
                                                      const std::set<std::string>& given_flags,
                                                      EnforcerSettings& settings);

}  // namespace bulkhead::enforcer
