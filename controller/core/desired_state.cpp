#include "controller/core/desired_state.hpp"


#include <algorithm>

namespace bulkhead::controller {

namespace {

bool same_ruleset(const ruleset::Ruleset& a, const std::string& a_hash, const ruleset::Ruleset& b,
                  const std::string& b_hash) {
    return a_hash == b_hash && a.ports == b.ports && a.policy_name == b.policy_name;
}

}  // namespace

std::vector<std::string> DesiredState::update(std::map<std::string, ruleset::Ruleset> compiled,
                                              std::uint64_t next_generation) {
    std::erase_if(versions_, [&](const auto& entry) { return !compiled.contains(entry.first); });
    return update_some(std::move(compiled), next_generation);
}

std::vector<std::string> DesiredState::update_some(std::map<std::string, ruleset::Ruleset> compiled,
                                                   std::uint64_t next_generation) {
    std::map<std::string, HashedRuleset> hashed;
    for (auto& [enforcer, ruleset] : compiled) {
        std::string hash = ruleset::ruleset_hash(ruleset);
        hashed.emplace(enforcer, HashedRuleset{std::move(ruleset), std::move(hash)});
    }
    return update_some_hashed(std::move(hashed), next_generation);
}

std::vector<std::string> DesiredState::update_hashed(std::map<std::string, HashedRuleset> compiled,
                                                     std::uint64_t next_generation) {
    std::erase_if(versions_, [&](const auto& entry) { return !compiled.contains(entry.first); });
    return update_some_hashed(std::move(compiled), next_generation);
}

std::vector<std::string> DesiredState::update_some_hashed(std::map<std::string, HashedRuleset> compiled,
                                                          std::uint64_t next_generation) {
    std::vector<std::string> changed;
    for (auto& [enforcer, entry] : compiled) {
        auto& [ruleset, hash] = entry;
        auto& history = versions_[enforcer];
        if (!history.empty() && same_ruleset(*history.back().ruleset, history.back().hash, ruleset, hash)) {
            continue;
        }
        history.push_back({next_generation, std::move(hash),
                           std::make_shared<const ruleset::Ruleset>(std::move(ruleset))});
        while (history.size() > history_) {
            history.pop_front();
        }
        changed.push_back(enforcer);
    }
    return changed;
}

void DesiredState::adopt_generation(const std::string& enforcer, const std::string& hash,
                                    std::uint64_t generation) {
    auto it = versions_.find(enforcer);
    if (it == versions_.end() || it->second.empty()) {
        return;
    }
    auto& newest = it->second.back();
    if (newest.hash == hash && generation > 0) {
        newest.generation = generation;
    }
}

std::optional<RulesetVersion> DesiredState::current(const std::string& enforcer) const {
    auto it = versions_.find(enforcer);
    if (it == versions_.end() || it->second.empty()) {
        return std::nullopt;
    }
    return it->second.back();
}

std::optional<RulesetVersion> DesiredState::find(const std::string& enforcer, std::uint64_t generation,
                                                 const std::string& hash) const {
    auto it = versions_.find(enforcer);
    if (it == versions_.end()) {
        return std::nullopt;
    }
    for (const auto& version : it->second) {
        if (version.generation == generation && version.hash == hash) {
            return version;
        }
    }
    return std::nullopt;
}

std::optional<RulesetVersion> DesiredState::find_format1(const std::string& enforcer, std::uint64_t generation,
                                                         const std::string& format1_hash) const {
    auto it = versions_.find(enforcer);
    if (it == versions_.end()) {
        return std::nullopt;
    }
    for (const auto& version : it->second) {
        if (version.generation == generation && version.format1_hash() == format1_hash) {
            return version;
        }
    }
    return std::nullopt;
}

const std::string& RulesetVersion::format1_hash() const {
    std::call_once(format1->once, [&] { format1->value = ruleset ? ruleset::ruleset_hash_format1(*ruleset) : ""; });
    return format1->value;
}

std::vector<std::string> DesiredState::enforcers() const {
    std::vector<std::string> ids;
    for (const auto& [id, history] : versions_) {
        ids.push_back(id);
    }
    return ids;
}

std::uint64_t DesiredState::highest_generation() const {
    std::uint64_t highest = 0;
    for (const auto& [id, history] : versions_) {
        for (const auto& version : history) {
            highest = std::max(highest, version.generation);
        }
    }
    return highest;
}

}  // namespace bulkhead::controller
