// Element-level difference between two compiled rulesets of one enforcer: what the
// enforcer must change in the kernel to go from `old` to `updated`. Adding a VDI or
// quarantining one changes set elements, not the table.
#pragma once

#include "policies/ruleset.hpp"

#include <nlohmann/json_fwd.hpp>

#include <expected>
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

namespace bulkhead::ruleset {

// The machine form of a RulesetDiff that the controller pushes to an enforcer on the
// control channel (docs/control-channel.md, message "diff"). Format
// "bulkhead-ruleset-diff/1"; sets, elements and chains use the very encodings of the
// bulkhead-ruleset/1 document (policies/ruleset.hpp):
//   {"format": "bulkhead-ruleset-diff/1", "enforcer": E, "full_replace": false,
//    "sets_added": [<set>...],            full definitions with their elements
//    "sets_removed": ["name"...],
//    "set_changes": [{"set": "name", "removed": [<element>...], "added": [<element>...]}],
//    "chains_added": [<chain>...], "chains_changed": [<chain>...], "chains_removed": [...],
//  and, only from the three-argument overload:
//    "policy": P, "ports_removed": [<port>...], "ports_added": [<port>...],
//    "sets_redefined": [<set>...], "chains_redefined": [<chain>...],
//  and, only from wire_diff() (below):
//    "renames": [{"from": C, "to": D}...], "set_comments": [{"set": S, "comment": T}...]}
//
// diff_to_wire(diff) carries exactly what RulesetDiff holds. RulesetDiff does not hold the
// policy name, the port bindings (interface -> workload, used for drop attribution and not
// part of the ruleset hash) nor, for a full_replace diff, the redefined sets and chains;
// the overload with `old` and `updated` adds them, so that
//   apply_wire_diff(old, diff_to_wire(diff_rulesets(old, updated), old, updated))
// equals `updated` exactly (same to_json document, hence same hash and ports). Prefer it.
nlohmann::json diff_to_wire(const RulesetDiff& diff);
nlohmann::json diff_to_wire(const RulesetDiff& diff, const Ruleset& old, const Ruleset& updated);

// Applies a wire diff to `base`. Strict: every removal must name something `base` holds,
// every addition something it does not hold; the error names what does not fit, e.g.
// `removes element 10.1.0.5 from set seg_vdi_4 which does not hold it`. The result's
// references (set lookups, dispatch maps, jumps, map verdicts) must all resolve. A
// full_replace diff without "sets_redefined"/"chains_redefined" is refused (the one-argument
// diff_to_wire cannot express it; send the full ruleset instead). Sets stay sorted by name;
// added chains are placed like the compiler places them (base chains first, then by name).
// Without "policy"/"ports_*" the base's policy name and port bindings are kept.
std::expected<Ruleset, std::string> apply_wire_diff(const Ruleset& base, const nlohmann::json& wire);

// A policy class whose name changed between two compiles. A class is named by a hash of
// its segment membership (policies/policy_classes.hpp), so a new segment that holds every
// VDI renames every VDI class although its sets and chains ("<class>_out_allow4", ...) keep
// their content: sent as removals and additions, that is every class set and chain of
// every host.
struct ClassRename {
    std::string from;
    std::string to;
    bool operator==(const ClassRename&) const = default;
};

// Renames read from the port bindings: every port of class `from` in `old` is of class
// `to` in `updated` and every port of `to` was of `from`; `from` is gone from `updated`
// and `to` was not in `old`.
std::vector<ClassRename> class_renames(const Ruleset& old, const Ruleset& updated);

// `ruleset` with every set and chain whose class part (the name up to its first '_', or the
// whole name) is a `from` renamed to `to`, every reference to them (lookups, updates,
// dispatches, jumps, map verdicts) and the port bindings' classes, in the compiler's order.
// Fails when a `from` names nothing or two names would become one.
std::expected<Ruleset, std::string> rename_classes(const Ruleset& ruleset, const std::vector<ClassRename>& renames);
// The same on the caller's own copy (what a diff's receiver holds anyway); on failure the
// copy is half renamed and must be dropped.
std::expected<void, std::string> rename_classes_in_place(Ruleset& ruleset, const std::vector<ClassRename>& renames);

// The wire diff the controller sends to enforcers that announce hash format 2: the renamed
// classes ("renames": [{"from", "to"}], applied to the base first), the diff of the renamed
// base against `updated` (diff_to_wire's three-argument form), and the sets whose comment
// changed ("set_comments": [{"set", "comment"}]). apply_wire_diff(old, wire_diff(old,
// updated)) equals `updated` exactly.
nlohmann::json wire_diff(const Ruleset& old, const Ruleset& updated);

}  // namespace bulkhead::ruleset
