#include "policies/ruleset_diff.hpp"

#include "policies/nft_text.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <sstream>

namespace bulkhead::ruleset {

bool RulesetDiff::empty() const {
    return !full_replace && sets_added.empty() && sets_removed.empty() && set_changes.empty() &&
           chains_added.empty() && chains_changed.empty() && chains_removed.empty();
}

std::size_t RulesetDiff::elements_added() const {
    std::size_t n = 0;
    for (const auto& s : sets_added) {
        n += s.elements->size();
    }
    for (const auto& d : set_changes) {
        n += d.added.size();
    }
    return n;
}

std::size_t RulesetDiff::elements_removed() const {
    std::size_t n = 0;
    for (const auto& d : set_changes) {
        n += d.removed.size();
    }
    return n;
}

std::size_t RulesetDiff::rules_written() const {
    std::size_t n = 0;
    for (const auto& c : chains_added) {
        n += c.rules.size();
    }
    for (const auto& c : chains_changed) {
        n += c.rules.size();
    }
    return n;
}

RulesetDiff diff_rulesets(const Ruleset& old, const Ruleset& updated) {
    RulesetDiff diff;
    diff.enforcer = updated.enforcer;
    for (const auto& set : updated.sets) {
        const SetDefinition* before = old.find_set(set.name);
        if (before == nullptr) {
            diff.sets_added.push_back(set);
            continue;
        }
        if (!before->same_definition(set)) {
            diff.full_replace = true;
            continue;
        }
        if (before->elements == set.elements) {
            continue;  // shared list: unchanged by construction
        }
        SetDelta delta{set.name, {}, {}};
        std::set_difference(before->elements->begin(), before->elements->end(),
                            set.elements->begin(), set.elements->end(),
                            std::back_inserter(delta.removed));
        std::set_difference(set.elements->begin(), set.elements->end(),
                            before->elements->begin(), before->elements->end(),
                            std::back_inserter(delta.added));
        if (!delta.removed.empty() || !delta.added.empty()) {
            diff.set_changes.push_back(std::move(delta));
        }
    }
    for (const auto& set : old.sets) {
        if (updated.find_set(set.name) == nullptr) {
            diff.sets_removed.push_back(set.name);
        }
    }
    for (const auto& chain : updated.chains) {
        const Chain* before = old.find_chain(chain.name);
        if (before == nullptr) {
            diff.chains_added.push_back(chain);
        } else if (before->base != chain.base) {
            diff.full_replace = true;
        } else if (before->rules != chain.rules) {
            diff.chains_changed.push_back(chain);
        }
    }
    for (const auto& chain : old.chains) {
        if (updated.find_chain(chain.name) == nullptr) {
            diff.chains_removed.push_back(chain.name);
        }
    }
    return diff;
}

namespace {

std::string element_block(const ElementList& elements, const SetDefinition& set) {
    std::string out = "{ ";
    for (std::size_t i = 0; i < elements.size(); ++i) {
        out += (i == 0 ? "" : ", ") + render_element(elements[i], set);
    }
    return out + " }";
}

}  // namespace

std::string render_nft_diff(const RulesetDiff& diff, const Ruleset& updated) {
    if (diff.full_replace) {
        return render_nft(updated);
    }
    std::ostringstream out;
    const std::string table = "inet bulkhead";
    out << "# Bulkhead diff for enforcer " << diff.enforcer << ": +" << diff.elements_added()
        << " -" << diff.elements_removed() << " elements, " << diff.rules_written()
        << " rules written\n";
    out << "add table " << table << "\n";
    for (const auto& set : diff.sets_added) {
        out << "add " << (set.verdict_map ? "map " : "set ") << table << " " << set.name << " { "
            << render_set_header(set) << " }\n";
    }
    for (const auto& chain : diff.chains_added) {
        out << "add chain " << table << " " << chain.name;
        if (chain.base) {
            out << " { " << render_base_chain_header(*chain.base) << " }";
        }
        out << "\n";
    }
    for (const auto& delta : diff.set_changes) {
        if (!delta.removed.empty()) {
            out << "delete element " << table << " " << delta.set << " "
                << element_block(delta.removed, *updated.find_set(delta.set)) << "\n";
        }
    }
    for (const auto& set : diff.sets_added) {
        if (!set.elements->empty()) {
            out << "add element " << table << " " << set.name << " "
                << element_block(*set.elements, set) << "\n";
        }
    }
    for (const auto& delta : diff.set_changes) {
        if (!delta.added.empty()) {
            out << "add element " << table << " " << delta.set << " "
                << element_block(delta.added, *updated.find_set(delta.set)) << "\n";
        }
    }
    for (const auto& chain : diff.chains_changed) {
        out << "flush chain " << table << " " << chain.name << "\n";
        for (const auto& rule : chain.rules) {
            out << "add rule " << table << " " << chain.name << " " << render_rule(rule) << "\n";
        }
    }
    for (const auto& chain : diff.chains_added) {
        for (const auto& rule : chain.rules) {
            out << "add rule " << table << " " << chain.name << " " << render_rule(rule) << "\n";
        }
    }
    for (const auto& name : diff.chains_removed) {
        out << "flush chain " << table << " " << name << "\n";
    }
    for (const auto& name : diff.chains_removed) {
        out << "delete chain " << table << " " << name << "\n";
    }
    for (const auto& name : diff.sets_removed) {
        out << "delete set " << table << " " << name << "\n";
    }
    return out.str();
}

std::string render_text_diff(const RulesetDiff& diff, const Ruleset& old, const Ruleset& updated) {
    std::ostringstream out;
    out << "enforcer " << diff.enforcer << ": +" << diff.elements_added() << " -"
        << diff.elements_removed() << " elements, " << diff.rules_written() << " rules written";
    if (diff.full_replace) {
        out << " (set definitions changed: full replace)";
    }
    out << "\n";
    for (const auto& set : diff.sets_added) {
        out << "+ set " << set.name << " (" << set.elements->size() << " elements)\n";
    }
    for (const auto& name : diff.sets_removed) {
        out << "- set " << name << "\n";
    }
    for (const auto& delta : diff.set_changes) {
        const auto& def = *updated.find_set(delta.set);
        for (const auto& e : delta.removed) {
            out << "- " << delta.set << ": " << render_element(e, *old.find_set(delta.set)) << "\n";
        }
        for (const auto& e : delta.added) {
            out << "+ " << delta.set << ": " << render_element(e, def) << "\n";
        }
    }
    for (const auto& chain : diff.chains_added) {
        out << "+ chain " << chain.name << " (" << chain.rules.size() << " rules)\n";
    }
    for (const auto& chain : diff.chains_changed) {
        out << "~ chain " << chain.name << " (" << chain.rules.size() << " rules rewritten)\n";
    }
    for (const auto& name : diff.chains_removed) {
        out << "- chain " << name << "\n";
    }
    return out.str();
}

nlohmann::json to_json(const RulesetDiff& diff, const Ruleset& old, const Ruleset& updated) {
    using nlohmann::json;
    auto elements = [](const ElementList& list, const SetDefinition& set) {
        json out = json::array();
        for (const auto& e : list) {
            out.push_back(render_element(e, set));
        }
        return out;
    };
    json out = {{"enforcer", diff.enforcer},
                {"full_replace", diff.full_replace},
                {"elements_added", diff.elements_added()},
                {"elements_removed", diff.elements_removed()},
                {"rules_written", diff.rules_written()},
                {"old_hash", ruleset_hash(old)},
                {"new_hash", ruleset_hash(updated)}};
    json sets_added = json::array();
    for (const auto& s : diff.sets_added) {
        sets_added.push_back({{"set", s.name}, {"elements", elements(*s.elements, s)}});
    }
    json changes = json::array();
    for (const auto& d : diff.set_changes) {
        changes.push_back({{"set", d.set},
                           {"removed", elements(d.removed, *old.find_set(d.set))},
                           {"added", elements(d.added, *updated.find_set(d.set))}});
    }
    json chains_added = json::array();
    for (const auto& c : diff.chains_added) {
        chains_added.push_back(c.name);
    }
    json chains_changed = json::array();
    for (const auto& c : diff.chains_changed) {
        chains_changed.push_back(c.name);
    }
    out["sets_added"] = sets_added;
    out["sets_removed"] = diff.sets_removed;
    out["set_changes"] = changes;
    out["chains_added"] = chains_added;
    out["chains_changed"] = chains_changed;
    out["chains_removed"] = diff.chains_removed;
    return out;
}

}  // namespace bulkhead::ruleset
