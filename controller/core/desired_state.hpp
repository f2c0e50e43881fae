// DesiredState: the ruleset every enforcer should have in force, numbered by generation,
// with a short history so a change can travel as a diff from what the enforcer holds.
// Pure; the controller service feeds it compiled rulesets and reads targets from it.
//
// Generations are one counter for the whole fleet (persisted by the caller): every
// enforcer whose ruleset changed in an update gets the counter's next value, so a
// generation number names one fleet-wide change and "acked generation >= G" means "has
// that change or a later one".
#pragma once

#include "policies/ruleset.hpp"

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace bulkhead::controller {

struct RulesetVersion {
    std::uint64_t generation = 0;
    std::string hash;  // ruleset_hash: what the enforcer acks
    std::shared_ptr<const ruleset::Ruleset> ruleset;

    // The format-1 hash an enforcer of the previous release computes for this ruleset;
    // computed on first use (a full pass over the ruleset's text) and kept.
    const std::string& format1_hash() const;

    struct Format1Hash {
        std::once_flag once;
        std::string value;
    };
    std::shared_ptr<Format1Hash> format1 = std::make_shared<Format1Hash>();
};

class DesiredState {
public:
    // `history` versions per enforcer are kept as diff bases.
    explicit DesiredState(std::size_t history = 8) : history_(history) {}

    // Replaces the desired rulesets. Enforcers whose ruleset differs from their current
    // one (content or port bindings) get generation `next_generation`; the others keep
    // theirs. Enforcers absent from `compiled` are dropped. Returns the changed ids.
    std::vector<std::string> update(std::map<std::string, ruleset::Ruleset> compiled,
                                    std::uint64_t next_generation);

    // Like update(), for some enforcers only (a quarantine touches one host); the others
    // keep what they have.
    std::vector<std::string> update_some(std::map<std::string, ruleset::Ruleset> compiled,
                                         std::uint64_t next_generation);

    // The same with each ruleset's ruleset_hash() already computed (by the caller's
    // threads: hashing 2,000 rulesets is most of a fleet-wide update).
    using HashedRuleset = std::pair<ruleset::Ruleset, std::string>;
    std::vector<std::string> update_hashed(std::map<std::string, HashedRuleset> compiled,
                                           std::uint64_t next_generation);
    std::vector<std::string> update_some_hashed(std::map<std::string, HashedRuleset> compiled,
                                                std::uint64_t next_generation);

    // Seeds an enforcer's generation from what it reported, so a restarted controller that
    // compiles the very ruleset an enforcer already holds does not renumber it.
    void adopt_generation(const std::string& enforcer, const std::string& hash,
                          std::uint64_t generation);

    std::optional<RulesetVersion> current(const std::string& enforcer) const;
    // A version the enforcer may hold, by generation and hash, for diffs.
    std::optional<RulesetVersion> find(const std::string& enforcer, std::uint64_t generation,
                                       const std::string& hash) const;
    // The same, by the format-1 hash an enforcer of the previous release reports.
    std::optional<RulesetVersion> find_format1(const std::string& enforcer, std::uint64_t generation,
                                               const std::string& format1_hash) const;
    std::vector<std::string> enforcers() const;
    std::uint64_t highest_generation() const;

private:
    std::size_t history_;
    std::map<std::string, std::deque<RulesetVersion>> versions_;  // newest last
};

}  // namespace bulkhead::controller
