// Segment membership and policy-class names, shared by the RulesetCompiler and the
// PolicyEvaluator: the what-if answers are only right if both resolve workloads exactly alike.
#pragma once

#include "policies/policy_model.hpp"

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace bulkhead::policy {

// What generated names are built from (class names here, set identifiers in the compiler):
// the 32-bit FNV-1a hash of a text and fixed-width lower-case hex, the same on every build
// and machine so names stay stable across compiles.
std::uint32_t fnv1a32(std::string_view text);
std::string hex(std::uint64_t value, int digits);

// A workload is in a segment if the selector names it, all its label constraints match, or
// one of its addresses lies in one of the selector's CIDR blocks.
bool selector_matches(const Selector& selector, const Workload& workload);

// Names policy classes (workloads with identical segment membership) "c<8 hex digits>"
// from a hash of their segment names, so names stay stable across compiles. A 32-bit clash
// between different memberships widens the later name to 16 hex digits, never renumbers.
class PolicyClassNamer {
public:
    std::string name(const std::vector<std::size_t>& segments, const Policy& policy);

private:
    std::map<std::string, std::vector<std::size_t>> taken_;
};

}  // namespace bulkhead::policy
