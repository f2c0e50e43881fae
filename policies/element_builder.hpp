// Turns overlapping allow/deny rectangles into the disjoint elements a kernel interval
// set needs. nft's concatenated-range sets (pipapo) reject overlapping elements, and two
// rules can easily overlap: "vdi -> anywhere on dns" and "vdi -> file-servers on any".
#pragma once

#include "policies/ruleset.hpp"

#include <vector>

namespace bulkhead::ruleset {

// An address range crossed with one or two number ranges (protocol and port, or ICMP type).
struct Box {
    IpRange address;
    NumberRange second;
    NumberRange third;  // ignored for two-part keys
};

// The union of `boxes` as disjoint elements, sorted. Addresses are split only where a box
// starts or ends, so one host address stays one element; within each address piece the
// (second, third) union is merged into as few rectangles as possible.
ElementList disjoint_elements(std::vector<Box> boxes, bool three_parts);

// The union of address ranges as sorted, disjoint ranges: overlapping ranges merge,
// adjacent ones stay separate elements (decoy, segment and quarantine address sets).
ElementList merged_address_elements(std::vector<IpRange> ranges);

}  // namespace bulkhead::ruleset
