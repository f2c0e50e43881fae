// Strict JSON reading for documents an admin or an API client hands us.
// nlohmann::json alone accepts duplicate keys (the last one silently wins) and any
// nesting depth; a security policy must reject both, and say where.
#pragma once

#include "policies/diagnostics.hpp"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <expected>
#include <string_view>
#include <vector>

namespace bulkhead::policy {

struct JsonReadLimits {
    std::size_t max_bytes = 16 * 1024 * 1024;
    int max_depth = 32;  // the deepest valid policy is 6 levels; 32 leaves room for comments
};

// Parses `text`; on failure returns every problem found (duplicate keys are all reported,
// a syntax error stops the scan) with JSON pointers and line:column in the message.
std::expected<nlohmann::json, std::vector<Diagnostic>> read_json(std::string_view text,
                                                                 std::string_view document,
                                                                 JsonReadLimits limits = {});

}  // namespace bulkhead::policy
