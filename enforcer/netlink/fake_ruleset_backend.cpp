#include "enforcer/netlink/fake_ruleset_backend.hpp"

#include "policies/nft_text.hpp"

#include <algorithm>
#include <cerrno>
#include <set>

namespace bulkhead::enforcer {

namespace {

std::vector<ruleset::SetDefinition>::iterator find_set(ruleset::Ruleset& r, const std::string& name) {
    return std::find_if(r.sets.begin(), r.sets.end(),
                        [&](const auto& s) { return s.name == name; });
}

std::vector<ruleset::Chain>::iterator find_chain(ruleset::Ruleset& r, const std::string& name) {
    return std::find_if(r.chains.begin(), r.chains.end(),
                        [&](const auto& c) { return c.name == name; });
}

KernelError missing(const std::string& what) {
    return KernelError{"the kernel rejected " + what + ": No such file or directory", ENOENT, what};
}

KernelError exists(const std::string& what) {
    return KernelError{"the kernel rejected " + what + ": File exists", EEXIST, what};
}

}  // namespace

std::expected<ApplyStats, KernelError> FakeRulesetBackend::commit(const Batch& batch,
                                                                  ruleset::Ruleset next) {
    table_ = std::move(next);
    ++generation_;
    ++transactions_;
    ApplyStats stats;
    stats.generation = generation_;
    stats.messages = batch.messages().size();
    stats.bytes = batch.bytes();
    stats.elements = batch.elements();
    return stats;
}

std::expected<ApplyStats, KernelError> FakeRulesetBackend::replace(const ruleset::Ruleset& desired) {
    auto batch = build_replace_batch(desired);
    if (!batch) {
        return std::unexpected(batch.error());
    }
    if (fail_next_) {
        auto e = std::move(*fail_next_);
        fail_next_.reset();
        return std::unexpected(e);
    }
    // The kernel refuses a duplicate element (NLM_F_EXCL on fresh sets).
    for (const auto& set : desired.sets) {
        std::set<ruleset::Element> seen;
        for (const auto& e : *set.elements) {
            if (!seen.insert(e).second) {
                return std::unexpected(exists("element " + ruleset::render_element(e, set) +
                                              " of " + (set.verdict_map ? "map " : "set ") + set.name));
            }
        }
    }
    return commit(*batch, desired);
}

std::expected<ApplyStats, KernelError> FakeRulesetBackend::apply_diff(const ruleset::RulesetDiff& diff,
                                                                      const ruleset::Ruleset& desired) {
    if (diff.full_replace) {
        return replace(desired);
    }
    auto batch = build_diff_batch(diff, desired);
    if (!batch) {
        return std::unexpected(batch.error());
    }
    if (fail_next_) {
        auto e = std::move(*fail_next_);
        fail_next_.reset();
        return std::unexpected(e);
    }
    if (diff.empty()) {
        ApplyStats stats;
        stats.generation = generation_;
        return stats;
    }
    // Work on a copy: any failure leaves the table as it was (one transaction).
    ruleset::Ruleset next = table_.value_or(ruleset::Ruleset{desired.enforcer, desired.policy_name, {}, {}, {}});
    for (const auto& set : diff.sets_added) {
        if (find_set(next, set.name) != next.sets.end()) {
            return std::unexpected(exists("set " + set.name));
        }
        next.sets.push_back(set);
    }
    for (const auto& chain : diff.chains_added) {
        if (find_chain(next, chain.name) != next.chains.end()) {
            return std::unexpected(exists("chain " + chain.name));
        }
        next.chains.push_back(chain);
    }
    for (const auto& delta : diff.set_changes) {
        auto it = find_set(next, delta.set);
        if (it == next.sets.end()) {
            return std::unexpected(missing("set " + delta.set));
        }
        auto elements = *it->elements;
        for (const auto& e : delta.removed) {
            auto pos = std::find(elements.begin(), elements.end(), e);
            if (pos == elements.end()) {
                return std::unexpected(missing("element " + ruleset::render_element(e, *it) +
                                               " of set " + delta.set));
            }
            elements.erase(pos);
        }
        for (const auto& e : delta.added) {
            if (std::find(elements.begin(), elements.end(), e) == elements.end()) {
                elements.push_back(e);
            }
        }
        std::sort(elements.begin(), elements.end());
        it->elements = std::make_shared<const ruleset::ElementList>(std::move(elements));
    }
    for (const auto& chain : diff.chains_changed) {
        auto it = find_chain(next, chain.name);
        if (it == next.chains.end()) {
            return std::unexpected(missing("chain " + chain.name));
        }
        it->rules = chain.rules;
    }
    for (const auto& name : diff.chains_removed) {
        auto it = find_chain(next, name);
        if (it == next.chains.end()) {
            return std::unexpected(missing("chain " + name));
        }
        next.chains.erase(it);
    }
    for (const auto& name : diff.sets_removed) {
        auto it = find_set(next, name);
        if (it == next.sets.end()) {
            return std::unexpected(missing("set " + name));
        }
        next.sets.erase(it);
    }
    std::sort(next.sets.begin(), next.sets.end(),
              [](const auto& a, const auto& b) { return a.name < b.name; });
    next.ports = desired.ports;
    return commit(*batch, std::move(next));
}

std::expected<DriftReport, KernelError> FakeRulesetBackend::check(const ruleset::Ruleset& desired) {
    DriftReport report;
    if (!table_) {
        report.table_missing = true;
        return report;
    }
    const auto& have = *table_;
    for (const auto& set : desired.sets) {
        const auto* k = have.find_set(set.name);
        if (k == nullptr) {
            report.missing_sets.push_back(set.name);
            report.missing_elements += set.elements->size();
        } else if (!k->same_definition(set)) {
            report.changed_sets.push_back(set.name);
        } else {
            std::set<ruleset::Element> want(set.elements->begin(), set.elements->end());
            std::set<ruleset::Element> got(k->elements->begin(), k->elements->end());
            for (const auto& e : want) {
                report.missing_elements += got.count(e) == 0 ? 1 : 0;
            }
            for (const auto& e : got) {
                report.unexpected_elements += want.count(e) == 0 ? 1 : 0;
                if (set.dynamic && want.count(e) == 0) {
                    report.dynamic_additions[set.name].push_back(e);
                }
            }
        }
    }
    for (const auto& set : have.sets) {
        if (desired.find_set(set.name) == nullptr) {
            report.unexpected_sets.push_back(set.name);
        }
    }
    for (const auto& chain : desired.chains) {
        const auto* k = have.find_chain(chain.name);
        if (k == nullptr) {
            report.missing_chains.push_back(chain.name);
        } else if (k->base != chain.base || k->rules != chain.rules) {
            report.changed_chains.push_back(chain.name);
        }
    }
    for (const auto& chain : have.chains) {
        if (desired.find_chain(chain.name) == nullptr) {
            report.unexpected_chains.push_back(chain.name);
        }
    }
    return report;
}

}  // namespace bulkhead::enforcer
