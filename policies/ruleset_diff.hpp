// Element-level difference between two compiled rulesets of one enforcer: what the
// enforcer must change in the kernel to go from `old` to `updated`. Adding a VDI or
// quarantining one changes set elements, not the table.
#pragma once

#include "policies/ruleset.hpp"

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <vector>

namespace bulkhead::ruleset {

struct SetDelta {
    std::string set;
    ElementList removed;
    ElementList added;
};

struct RulesetDiff {
    std::string enforcer;
    // A set kept its name but changed its type or flags: the kernel cannot alter a set in
    // place, so the enforcer replaces the whole table (still one transaction).
    bool full_replace = false;
    std::vector<SetDefinition> sets_added;  // with their elements
    std::vector<std::string> sets_removed;
    std::vector<SetDelta> set_changes;      // existing sets whose elements differ
    std::vector<Chain> chains_added;
    std::vector<Chain> chains_changed;      // new content; applied as flush + re-add
    std::vector<std::string> chains_removed;

    bool empty() const;
    std::size_t elements_added() const;    // including the elements of added sets
    std::size_t elements_removed() const;
    std::size_t rules_written() const;     // rules of added and changed chains
};

RulesetDiff diff_rulesets(const Ruleset& old, const Ruleset& updated);

// An nft script that turns `old` into `updated` in one transaction. Ordering: add sets and
// chains; delete, then add elements; rewrite changed chains; add rules of new chains;
// finally flush and delete what is gone (after nothing refers to it any more).
std::string render_nft_diff(const RulesetDiff& diff, const Ruleset& updated);

// Human summary, one line per change: "+ set c1_out_allow4: 10.0.0.5 . 6 . 445".
std::string render_text_diff(const RulesetDiff& diff, const Ruleset& old, const Ruleset& updated);

nlohmann::json to_json(const RulesetDiff& diff, const Ruleset& old, const Ruleset& updated);

}  // namespace bulkhead::ruleset
