// Renders the ruleset IR as nft script text: for humans, for golden files, and for
// `nft -f` (the reference loader tests and benchmarks compare the netlink path against).
#pragma once

#include "policies/ruleset.hpp"

#include <string>

namespace bulkhead::ruleset {

// A script that atomically replaces the whole `inet bulkhead` table (and only it):
// "table …; delete table …; table … { … }" runs in one transaction under `nft -f`.
std::string render_nft(const Ruleset& ruleset);

// Pieces, shared with the diff renderer.
std::string render_rule(const Rule& rule);
std::string render_element(const Element& element, const SetDefinition& set);
std::string render_set_header(const SetDefinition& set);  // "type …; flags …;"
std::string render_base_chain_header(const BaseChain& base);

}  // namespace bulkhead::ruleset
