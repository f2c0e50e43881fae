#include "policies/ruleset_diff.hpp"

#include "policies/nft_text.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <optional>
#include <set>
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

namespace {

// A name's class part: the text before its first '_', or the whole name.
std::string_view class_part(std::string_view name) { return name.substr(0, name.find('_')); }

bool is_class_token(std::string_view name) { return !name.empty() && name.find('_') == std::string_view::npos; }

// The names of a base as class renames leave them (rename_classes_in_place), compared
// without building the renamed base: the controller diffs every host's ruleset on a
// fleet-wide change, and a renamed copy of each base cost more than the rest of the diff.
// The comparisons mirror rename_classes_in_place exactly; a field added to Rule must be
// compared in same_rule too (the round-trip tests in test_ruleset_wire_diff.cpp fail
// otherwise).
class ClassRenamer {
  public:
    explicit ClassRenamer(const std::vector<ClassRename>& renames) {
        for (const auto& r : renames) {
            by_from_.push_back(&r);
        }
        std::sort(by_from_.begin(), by_from_.end(), [](const auto* x, const auto* y) { return x->from < y->from; });
    }

    bool empty() const { return by_from_.empty(); }

    // A `from` given twice, or null.
    const ClassRename* renamed_twice() const {
        auto twin = std::adjacent_find(by_from_.begin(), by_from_.end(),
                                       [](const auto* x, const auto* y) { return x->from == y->from; });
        return twin == by_from_.end() ? nullptr : *twin;
    }

    const ClassRename* find(std::string_view token) const {
        auto it = std::lower_bound(by_from_.begin(), by_from_.end(), token,
                                   [](const ClassRename* r, std::string_view t) { return r->from < t; });
        return it != by_from_.end() && (*it)->from == token ? *it : nullptr;
    }

    std::string renamed(std::string_view name) const {
        const auto token = class_part(name);
        const auto* r = find(token);
        return r == nullptr ? std::string(name) : r->to + std::string(name.substr(token.size()));
    }

    // Whether `held`, renamed, is `updated`.
    bool same_name(std::string_view held, std::string_view updated) const {
        if (by_from_.empty()) {
            return held == updated;
        }
        const auto token = class_part(held);
        const auto* r = find(token);
        if (r == nullptr) {
            return held == updated;
        }
        return updated.size() == r->to.size() + held.size() - token.size() && updated.starts_with(r->to) &&
               updated.substr(r->to.size()) == held.substr(token.size());
    }

    // Log prefixes: each ':'-separated part that is a class as a whole is renamed.
    bool same_prefix(std::string_view held, std::string_view updated) const {
        if (by_from_.empty()) {
            return held == updated;
        }
        for (;;) {
            const auto held_end = held.find(':');
            const auto updated_end = updated.find(':');
            const auto held_part = held.substr(0, held_end);
            const auto* r = find(held_part);
            if ((r == nullptr ? held_part : std::string_view(r->to)) != updated.substr(0, updated_end)) {
                return false;
            }
            if (held_end == std::string_view::npos || updated_end == std::string_view::npos) {
                return held_end == updated_end;
            }
            held.remove_prefix(held_end + 1);
            updated.remove_prefix(updated_end + 1);
        }
    }

    bool same_rule(const Rule& held, const Rule& updated) const {
        if (by_from_.empty()) {
            return held == updated;
        }
        if (held.counter != updated.counter || held.comment != updated.comment ||
            held.matches.size() != updated.matches.size() || held.update.has_value() != updated.update.has_value() ||
            held.log.has_value() != updated.log.has_value() ||
            held.dispatch.has_value() != updated.dispatch.has_value() || held.verdict.kind != updated.verdict.kind) {
            return false;
        }
        for (std::size_t i = 0; i < held.matches.size(); ++i) {
            const auto* held_lookup = std::get_if<SetLookup>(&held.matches[i]);
            const auto* updated_lookup = std::get_if<SetLookup>(&updated.matches[i]);
            if (held_lookup != nullptr && updated_lookup != nullptr) {
                if (held_lookup->fields != updated_lookup->fields || !same_name(held_lookup->set, updated_lookup->set)) {
                    return false;
                }
            } else if (!(held.matches[i] == updated.matches[i])) {
                return false;
            }
        }
        if (held.update &&
            (held.update->fields != updated.update->fields || !same_name(held.update->set, updated.update->set))) {
            return false;
        }
        if (held.log && (held.log->group != updated.log->group || !same_prefix(held.log->prefix, updated.log->prefix))) {
            return false;
        }
        if (held.dispatch &&
            (held.dispatch->field != updated.dispatch->field || !same_name(held.dispatch->map, updated.dispatch->map))) {
            return false;
        }
        const bool jumps = held.verdict.kind == VerdictKind::Jump || held.verdict.kind == VerdictKind::Goto;
        return jumps ? same_name(held.verdict.chain, updated.verdict.chain) : held.verdict.chain == updated.verdict.chain;
    }

    bool same_rules(const std::vector<Rule>& held, const std::vector<Rule>& updated) const {
        if (by_from_.empty()) {
            return held == updated;
        }
        return held.size() == updated.size() &&
               std::equal(held.begin(), held.end(), updated.begin(),
                          [this](const Rule& x, const Rule& y) { return same_rule(x, y); });
    }

    // A verdict map's elements with their jumps renamed, in order.
    ElementList renamed_elements(const ElementList& elements) const {
        ElementList out = elements;
        for (auto& e : out) {
            e.jump = renamed(e.jump);
        }
        std::sort(out.begin(), out.end());
        return out;
    }

    std::vector<PortBinding> renamed_ports(const std::vector<PortBinding>& ports) const {
        auto out = ports;
        for (auto& p : out) {
            if (const auto* r = find(p.policy_class)) {
                p.policy_class = r->to;
            }
        }
        return out;
    }

  private:
    std::vector<const ClassRename*> by_from_;
};

// The base's sets matched by (renamed) name to the updated ruleset's.
struct SetMatching {
    std::vector<const SetDefinition*> held;  // per updated set, in its order; null: added
    std::vector<std::string> removed;        // (renamed) names of the base's sets not kept, sorted
};

// Both lists are sorted by name (by renamed name for the base once renamed): one merge walk.
// std::nullopt when the renames would give two sets one name (then no renames are used).
std::optional<SetMatching> match_sets(const Ruleset& old, const Ruleset& updated, const ClassRenamer& renamer) {
    std::vector<std::pair<std::string_view, const SetDefinition*>> base;
    std::vector<std::string> renamed_names;
    base.reserve(old.sets.size());
    if (renamer.empty()) {
        for (const auto& set : old.sets) {
            base.emplace_back(set.name, &set);
        }
    } else {
        renamed_names.reserve(old.sets.size());  // no reallocation: the views below point into it
        for (const auto& set : old.sets) {
            renamed_names.push_back(renamer.renamed(set.name));
            base.emplace_back(renamed_names.back(), &set);
        }
        std::sort(base.begin(), base.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
        if (std::adjacent_find(base.begin(), base.end(), [](const auto& x, const auto& y) {
                return x.first == y.first;
            }) != base.end()) {
            return std::nullopt;
        }
    }
    SetMatching matching;
    matching.held.reserve(updated.sets.size());
    auto held = base.begin();
    for (const auto& set : updated.sets) {
        while (held != base.end() && held->first < set.name) {
            matching.removed.emplace_back(held->first);
            ++held;
        }
        if (held != base.end() && held->first == set.name) {
            matching.held.push_back(held->second);
            ++held;
        } else {
            matching.held.push_back(nullptr);
        }
    }
    for (; held != base.end(); ++held) {
        matching.removed.emplace_back(held->first);
    }
    return matching;
}

// The chain of `old` that becomes `name` once renamed, or null.
const Chain* matching_chain(const Ruleset& old, std::string_view name, const ClassRenamer& renamer) {
    if (renamer.empty()) {
        return old.find_chain(name);
    }
    for (const auto& chain : old.chains) {
        if (renamer.same_name(chain.name, name)) {
            return &chain;
        }
    }
    return nullptr;
}

bool chain_names_unique_once_renamed(const Ruleset& old, const ClassRenamer& renamer) {
    std::vector<std::string> names;
    names.reserve(old.chains.size());
    for (const auto& chain : old.chains) {
        names.push_back(renamer.renamed(chain.name));
    }
    std::sort(names.begin(), names.end());
    return std::adjacent_find(names.begin(), names.end()) == names.end();
}

// diff_rulesets(rename_classes(old, renames), updated), without the renamed copy.
RulesetDiff diff_renamed(const Ruleset& old, const Ruleset& updated, const ClassRenamer& renamer,
                         const SetMatching& matching) {
    RulesetDiff diff;
    diff.enforcer = updated.enforcer;
    for (std::size_t i = 0; i < updated.sets.size(); ++i) {
        const auto& set = updated.sets[i];
        const SetDefinition* held = matching.held[i];
        if (held == nullptr) {
            diff.sets_added.push_back(set);
            continue;
        }
        if (!held->same_kind(set)) {
            diff.full_replace = true;
            continue;
        }
        std::optional<ElementList> renamed_elements;
        if (set.verdict_map && !renamer.empty()) {
            renamed_elements = renamer.renamed_elements(*held->elements);  // a host's few ports
        } else {
            if (held->elements == set.elements) {
                continue;  // shared list: unchanged by construction
            }
            // Lists of two compiles are different objects; equal digests mean equal content
            // with the very confidence the ruleset hash (built on these digests) gives. Only
            // digests the hash already computed are used: computing one here costs more than
            // the element comparison below.
            const auto held_digest = held->elements->digest_if_known(set.verdict_map);
            const auto digest = set.elements->digest_if_known(set.verdict_map);
            if (held_digest && digest && *held_digest == *digest && held->elements->size() == set.elements->size()) {
                continue;
            }
        }
        const ElementList& before = renamed_elements ? *renamed_elements : *held->elements;
        SetDelta delta{set.name, {}, {}};
        std::set_difference(before.begin(), before.end(), set.elements->begin(), set.elements->end(),
                            std::back_inserter(delta.removed));
        std::set_difference(set.elements->begin(), set.elements->end(), before.begin(), before.end(),
                            std::back_inserter(delta.added));
        if (!delta.removed.empty() || !delta.added.empty()) {
            diff.set_changes.push_back(std::move(delta));
        }
    }
    diff.sets_removed = matching.removed;
    std::vector<bool> kept(old.chains.size(), false);
    for (const auto& chain : updated.chains) {
        const Chain* held = matching_chain(old, chain.name, renamer);
        if (held == nullptr) {
            diff.chains_added.push_back(chain);
            continue;
        }
        kept[static_cast<std::size_t>(held - old.chains.data())] = true;
        if (held->base != chain.base) {
            diff.full_replace = true;
        } else if (!renamer.same_rules(held->rules, chain.rules)) {
            diff.chains_changed.push_back(chain);
        }
    }
    for (std::size_t i = 0; i < old.chains.size(); ++i) {
        if (!kept[i]) {
            diff.chains_removed.push_back(renamer.renamed(old.chains[i].name));
        }
    }
    return diff;
}

}  // namespace

RulesetDiff diff_rulesets(const Ruleset& old, const Ruleset& updated) {
    const ClassRenamer none({});
    return diff_renamed(old, updated, none, *match_sets(old, updated, none));
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

// ---- wire form (control channel) -------------------------------------------------------

namespace bulkhead::ruleset {
namespace {

using nlohmann::json;

constexpr std::string_view wire_format = "bulkhead-ruleset-diff/1";

// The encodings of sets, elements and chains are those of the ruleset document.
json sets_json(const std::vector<SetDefinition>& sets) { return sets_to_json(sets); }

json chains_json(const std::vector<Chain>& chains) { return chains_to_json(chains); }

json elements_json(const ElementList& elements) {
    // An element's encoding depends only on its parts and on whether it carries a verdict.
    SetDefinition holder;
    holder.name = "elements";
    holder.verdict_map = std::any_of(elements.begin(), elements.end(),
                                     [](const Element& e) { return !e.jump.empty(); });
    holder.elements = std::make_shared<const ElementList>(elements);
    return sets_json({holder}).at(0).at("elements");
}

json port_json(const PortBinding& p) {
    return {{"interface", p.interface},
            {"workload", p.workload},
            {"mode", p.mode == policy::AttachmentMode::Port ? "port" : "host"},
            {"class", p.policy_class}};
}

template <typename T>
std::expected<T, std::string> wire_error(std::string message) {
    return std::unexpected("wire diff: " + std::move(message));
}

const json& array_member(const json& wire, const char* name, bool& ok, std::string& error) {
    static const json empty = json::array();
    if (!wire.contains(name)) {
        return empty;
    }
    const auto& value = wire.at(name);
    if (!value.is_array()) {
        ok = false;
        error = std::string("\"") + name + "\" is not an array";
        return empty;
    }
    return value;
}

// Each piece of `list` decoded by `decode` (set_from_json, chain_from_json); a name given
// twice is refused. Whether references resolve is checked once the result is assembled.
template <typename Piece>
std::expected<std::vector<Piece>, std::string> decode_pieces(const json& list,
                                                             std::expected<Piece, std::string> (*decode)(const json&),
                                                             const char* what) {
    std::vector<Piece> out;
    std::set<std::string> seen;
    for (const auto& item : list) {
        auto piece = decode(item);
        if (!piece) {
            return std::unexpected(piece.error());
        }
        if (!seen.insert(piece->name).second) {
            return std::unexpected(std::string(what) + " " + piece->name + " appears twice");
        }
        out.push_back(std::move(*piece));
    }
    return out;
}

std::expected<std::vector<SetDefinition>, std::string> decode_sets(const json& sets) {
    return decode_pieces<SetDefinition>(sets, set_from_json, "set");
}

std::expected<std::vector<Chain>, std::string> decode_chains(const json& chains) {
    return decode_pieces<Chain>(chains, chain_from_json, "chain");
}

std::expected<std::vector<std::string>, std::string> decode_names(const json& names, const char* what) {
    std::vector<std::string> out;
    for (const auto& n : names) {
        if (!n.is_string()) {
            return std::unexpected(std::string(what) + ": expected a name, got " + n.dump());
        }
        out.push_back(n.get<std::string>());
    }
    return out;
}

std::expected<PortBinding, std::string> decode_port(const json& p) {
    if (!p.is_object() || !p.contains("interface") || !p["interface"].is_string() ||
        !p.contains("workload") || !p["workload"].is_string() || !p.contains("class") ||
        !p["class"].is_string() || !p.contains("mode") ||
        (p["mode"] != "port" && p["mode"] != "host")) {
        return std::unexpected("malformed port binding " + p.dump());
    }
    return PortBinding{p["interface"].get<std::string>(), p["workload"].get<std::string>(),
                       p["mode"] == "host" ? policy::AttachmentMode::Host : policy::AttachmentMode::Port,
                       p["class"].get<std::string>()};
}

bool canonical_chain_less(const Chain& a, const Chain& b) {
    // The compiler's order: base chains first, then regular chains by name.
    if (a.base.has_value() != b.base.has_value()) {
        return a.base.has_value();
    }
    return a.name < b.name;
}

}  // namespace

json diff_to_wire(const RulesetDiff& diff) {
    json changes = json::array();
    for (const auto& d : diff.set_changes) {
        changes.push_back({{"set", d.set}, {"removed", elements_json(d.removed)}, {"added", elements_json(d.added)}});
    }
    return {{"format", std::string(wire_format)},
            {"enforcer", diff.enforcer},
            {"full_replace", diff.full_replace},
            {"sets_added", sets_json(diff.sets_added)},
            {"sets_removed", diff.sets_removed},
            {"set_changes", std::move(changes)},
            {"chains_added", chains_json(diff.chains_added)},
            {"chains_changed", chains_json(diff.chains_changed)},
            {"chains_removed", diff.chains_removed}};
}

namespace {

// diff_to_wire's three-argument form against the renamed base.
json diff_to_wire_renamed(const RulesetDiff& diff, const Ruleset& old, const Ruleset& updated,
                          const ClassRenamer& renamer, const SetMatching& matching) {
    json wire = diff_to_wire(diff);
    wire["policy"] = updated.policy_name;
    json ports_removed = json::array();
    json ports_added = json::array();
    std::vector<PortBinding> only_old;
    std::vector<PortBinding> only_new;
    auto old_ports = renamer.renamed_ports(old.ports);
    auto new_ports = updated.ports;
    std::sort(old_ports.begin(), old_ports.end());
    std::sort(new_ports.begin(), new_ports.end());
    std::set_difference(old_ports.begin(), old_ports.end(), new_ports.begin(), new_ports.end(),
                        std::back_inserter(only_old));
    std::set_difference(new_ports.begin(), new_ports.end(), old_ports.begin(), old_ports.end(),
                        std::back_inserter(only_new));
    for (const auto& p : only_old) {
        ports_removed.push_back(port_json(p));
    }
    for (const auto& p : only_new) {
        ports_added.push_back(port_json(p));
    }
    wire["ports_removed"] = std::move(ports_removed);
    wire["ports_added"] = std::move(ports_added);
    if (diff.full_replace) {
        // What the diff leaves out when it decides on a full replace: sets that kept their
        // name but changed type or flags, chains whose hook or priority changed.
        std::vector<SetDefinition> redefined_sets;
        for (std::size_t i = 0; i < updated.sets.size(); ++i) {
            const auto* before = matching.held[i];
            if (before != nullptr && !before->same_kind(updated.sets[i])) {
                redefined_sets.push_back(updated.sets[i]);
            }
        }
        std::vector<Chain> redefined_chains;
        for (const auto& chain : updated.chains) {
            const auto* before = matching_chain(old, chain.name, renamer);
            if (before != nullptr && before->base != chain.base) {
                redefined_chains.push_back(chain);
            }
        }
        wire["sets_redefined"] = sets_json(std::move(redefined_sets));
        wire["chains_redefined"] = chains_json(std::move(redefined_chains));
    }
    return wire;
}

}  // namespace

json diff_to_wire(const RulesetDiff& diff, const Ruleset& old, const Ruleset& updated) {
    const ClassRenamer none({});
    return diff_to_wire_renamed(diff, old, updated, none, *match_sets(old, updated, none));
}

namespace {

struct CommentRewrite {
    std::string from;
    std::string to;
};

// A comment that starts with a rewrite's `from` gets its `to` instead; of several, the
// longest `from` wins.
const CommentRewrite* rewrite_for(std::string_view comment, const std::vector<CommentRewrite>& rewrites) {
    const CommentRewrite* best = nullptr;
    for (const auto& r : rewrites) {
        if (comment.starts_with(r.from) && (best == nullptr || r.from.size() > best->from.size())) {
            best = &r;
        }
    }
    return best;
}

// Whether rewriting `before` gives exactly `after`, without building it.
bool rewrites_to(std::string_view before, std::string_view after, const std::vector<CommentRewrite>& rewrites) {
    const auto* r = rewrite_for(before, rewrites);
    if (r == nullptr) {
        return before == after;
    }
    return after.size() == r->to.size() + before.size() - r->from.size() && after.starts_with(r->to) &&
           after.substr(r->to.size()) == before.substr(r->from.size());
}

void rewrite_comment(std::string& comment, const std::vector<CommentRewrite>& rewrites) {
    if (const auto* r = rewrite_for(comment, rewrites)) {
        comment.replace(0, r->from.size(), r->to);
    }
}

}  // namespace

std::vector<ClassRename> class_renames(const Ruleset& old, const Ruleset& updated) {
    std::map<std::string, std::string> old_class;  // interface -> class
    std::set<std::string> old_classes;
    std::set<std::string> new_classes;
    for (const auto& p : old.ports) {
        old_class[p.interface] = p.policy_class;
        old_classes.insert(p.policy_class);
    }
    for (const auto& p : updated.ports) {
        new_classes.insert(p.policy_class);
    }
    std::map<std::string, std::set<std::string>> forward;   // old class -> new classes
    std::map<std::string, std::set<std::string>> backward;  // new class -> old classes
    for (const auto& p : updated.ports) {
        auto it = old_class.find(p.interface);
        if (it != old_class.end()) {
            forward[it->second].insert(p.policy_class);
            backward[p.policy_class].insert(it->second);
        }
    }
    std::set<std::string> old_tokens;
    for (const auto& set : old.sets) {
        old_tokens.insert(std::string(class_part(set.name)));
    }
    for (const auto& chain : old.chains) {
        old_tokens.insert(std::string(class_part(chain.name)));
    }
    std::vector<ClassRename> renames;
    for (const auto& [from, targets] : forward) {
        if (targets.size() != 1) {
            continue;  // the class split
        }
        const auto& to = *targets.begin();
        // Only a one-to-one change of name: the old name is gone, the new one is new, and no
        // other class merged into it.
        if (to == from || !is_class_token(from) || !is_class_token(to) || new_classes.contains(from) ||
            old_classes.contains(to) || old_tokens.contains(to) || !old_tokens.contains(from) ||
            backward[to].size() != 1) {
            continue;
        }
        renames.push_back({from, to});
    }
    return renames;
}

std::expected<void, std::string> rename_classes_in_place(Ruleset& ruleset, const std::vector<ClassRename>& renames) {
    // In place on the caller's copy: a renamed base is a copy of the enforcer's whole
    // ruleset, made on both sides of every diff that renames (2,000 hosts per fleet-wide
    // policy change), so no name is copied twice and nothing is rebuilt that did not change.
    for (const auto& r : renames) {
        if (!is_class_token(r.from) || !is_class_token(r.to)) {
            return std::unexpected("rename " + r.from + " -> " + r.to + ": a class name is non-empty without '_'");
        }
    }
    const ClassRenamer renamer(renames);
    if (const auto* twice = renamer.renamed_twice()) {
        return std::unexpected("class " + twice->from + " is renamed twice");
    }
    std::vector<bool> used(renames.size(), false);  // by position in `renames`
    auto rename_of = [&](std::string_view token, bool mark_used = true) -> const ClassRename* {
        const auto* r = renamer.find(token);
        if (r != nullptr && mark_used) {
            used[static_cast<std::size_t>(r - renames.data())] = true;
        }
        return r;
    };
    // The class part of `name` (up to the first '_'): renamed when it is a `from`.
    auto rename = [&](std::string& name) -> bool {
        const auto token = class_part(name);
        const auto* r = rename_of(token);
        if (r == nullptr) {
            return false;
        }
        name.replace(0, token.size(), r->to);
        return true;
    };
    for (auto& set : ruleset.sets) {
        rename(set.name);
        if (!set.verdict_map) {
            continue;
        }
        const bool jumps_renamed = std::any_of(set.elements->begin(), set.elements->end(), [&](const Element& e) {
            return renamer.find(class_part(e.jump)) != nullptr;
        });
        if (jumps_renamed) {
            ElementList elements = *set.elements;
            for (auto& e : elements) {
                rename(e.jump);
            }
            std::sort(elements.begin(), elements.end());
            set.elements = std::make_shared<const ElementList>(std::move(elements));
        }
    }
    auto by_name = [](const SetDefinition& a, const SetDefinition& b) { return a.name < b.name; };
    if (!std::is_sorted(ruleset.sets.begin(), ruleset.sets.end(), by_name)) {
        std::sort(ruleset.sets.begin(), ruleset.sets.end(), by_name);
    }
    for (auto& chain : ruleset.chains) {
        rename(chain.name);
        for (auto& rule : chain.rules) {
            for (auto& m : rule.matches) {
                if (auto* lookup = std::get_if<SetLookup>(&m)) {
                    rename(lookup->set);
                }
            }
            if (rule.update) {
                rename(rule.update->set);
            }
            if (rule.dispatch) {
                rename(rule.dispatch->map);
            }
            if (rule.verdict.kind == VerdictKind::Jump || rule.verdict.kind == VerdictKind::Goto) {
                rename(rule.verdict.chain);
            }
            if (rule.log) {
                // Log prefixes name the class as one ':'-separated part
                // ("bh:enf:in:deny:c39efdf1a"); drop attribution reads it.
                auto& prefix = rule.log->prefix;
                std::size_t start = 0;
                for (;;) {
                    const auto end = prefix.find(':', start);
                    const auto length = (end == std::string::npos ? prefix.size() : end) - start;
                    std::size_t next = end == std::string::npos ? std::string::npos : end + 1;
                    if (const auto* r = rename_of(std::string_view(prefix).substr(start, length), false)) {
                        prefix.replace(start, length, r->to);
                        if (next != std::string::npos) {
                            next = start + r->to.size() + 1;
                        }
                    }
                    if (next == std::string::npos) {
                        break;
                    }
                    start = next;
                }
            }
        }
    }
    // The compiler's order: base chains first (kept as they are), then regular chains by name.
    if (!std::is_sorted(ruleset.chains.begin(), ruleset.chains.end(), canonical_chain_less)) {
        std::stable_sort(ruleset.chains.begin(), ruleset.chains.end(), canonical_chain_less);
    }
    for (auto& port : ruleset.ports) {
        if (const auto* r = rename_of(port.policy_class)) {
            port.policy_class = r->to;
        }
    }
    for (std::size_t i = 0; i < renames.size(); ++i) {
        if (!used[i]) {
            return std::unexpected("renames class " + renames[i].from + " which the base does not hold");
        }
    }
    for (std::size_t i = 1; i < ruleset.sets.size(); ++i) {
        if (ruleset.sets[i].name == ruleset.sets[i - 1].name) {
            return std::unexpected("renaming classes gives two sets named " + ruleset.sets[i].name);
        }
    }
    std::vector<std::string_view> chain_names;
    chain_names.reserve(ruleset.chains.size());
    for (const auto& chain : ruleset.chains) {
        chain_names.push_back(chain.name);
    }
    std::sort(chain_names.begin(), chain_names.end());
    if (auto twin = std::adjacent_find(chain_names.begin(), chain_names.end()); twin != chain_names.end()) {
        return std::unexpected("renaming classes gives two chains named " + std::string(*twin));
    }
    return {};
}

std::expected<Ruleset, std::string> rename_classes(const Ruleset& ruleset, const std::vector<ClassRename>& renames) {
    Ruleset out = ruleset;
    if (auto done = rename_classes_in_place(out, renames); !done) {
        return std::unexpected(done.error());
    }
    return out;
}

json wire_diff(const Ruleset& old, const Ruleset& updated) {
    auto renames = class_renames(old, updated);
    std::optional<ClassRenamer> renamer(std::in_place, renames);
    auto matching = match_sets(old, updated, *renamer);
    if (!matching || !chain_names_unique_once_renamed(old, *renamer)) {
        // Renames that would give two sets or chains one name: the plain diff instead.
        renames.clear();
        renamer.emplace(renames);
        matching = match_sets(old, updated, *renamer);
    }
    json wire = diff_to_wire_renamed(diff_renamed(old, updated, *renamer, *matching), old, updated, *renamer, *matching);
    if (!renames.empty()) {
        json list = json::array();
        for (const auto& r : renames) {
            list.push_back({{"from", r.from}, {"to", r.to}});
        }
        wire["renames"] = std::move(list);
    }
    // diff_rulesets looks at what the kernel holds; a set's comment is only in the document
    // (and its hash). A class's sets share the class's comment ("segments: a, b"), so a
    // change of membership changes the start of dozens of comments the same way: sent as
    // one rewrite each, and per set only where the rewrites do not give the new comment.
    // The sets kept under the same (renamed) name and definition, as (before, after) pairs.
    std::vector<std::pair<const SetDefinition*, const SetDefinition*>> kept;
    kept.reserve(updated.sets.size());
    for (std::size_t i = 0; i < updated.sets.size(); ++i) {
        const auto* held = matching->held[i];
        if (held != nullptr && held->same_kind(updated.sets[i])) {
            kept.emplace_back(held, &updated.sets[i]);  // others are added or redefined: carried whole
        }
    }
    std::map<std::string, std::string, std::less<>> rewrite_to;
    for (const auto& [held, set] : kept) {
        if (held->comment == set->comment) {
            continue;
        }
        // Strip the common ending: what is left is the part that changed.
        const std::string_view old_comment = held->comment;
        const std::string_view new_comment = set->comment;
        std::size_t common = 0;
        while (common < old_comment.size() && common < new_comment.size() &&
               old_comment[old_comment.size() - 1 - common] == new_comment[new_comment.size() - 1 - common]) {
            ++common;
        }
        const auto from = old_comment.substr(0, old_comment.size() - common);
        if (!from.empty() && !rewrite_to.contains(from)) {
            rewrite_to.emplace(std::string(from), std::string(new_comment.substr(0, new_comment.size() - common)));
        }
    }
    std::vector<CommentRewrite> rewrites;
    for (auto& [from, to] : rewrite_to) {
        rewrites.push_back({from, to});
    }
    json explicit_comments = json::array();
    for (const auto& [held, set] : kept) {
        if (held->comment == set->comment && rewrites.empty()) {
            continue;
        }
        if (!rewrites_to(held->comment, set->comment, rewrites)) {
            explicit_comments.push_back({{"set", set->name}, {"comment", set->comment}});
        }
    }
    if (!rewrites.empty()) {
        json list = json::array();
        for (const auto& r : rewrites) {
            list.push_back({{"from", r.from}, {"to", r.to}});
        }
        wire["comment_rewrites"] = std::move(list);
    }
    if (!explicit_comments.empty()) {
        wire["set_comments"] = std::move(explicit_comments);
    }
    return wire;
}

std::expected<Ruleset, std::string> apply_wire_diff(const Ruleset& base_ruleset, const json& wire) {
    try {
        if (!wire.is_object() || wire.value("format", "") != wire_format) {
            return wire_error<Ruleset>("not a " + std::string(wire_format) + " document");
        }
        if (!wire.contains("enforcer") || !wire["enforcer"].is_string()) {
            return wire_error<Ruleset>("\"enforcer\" missing");
        }
        if (wire["enforcer"] != base_ruleset.enforcer) {
            return wire_error<Ruleset>("diff is for enforcer \"" + wire["enforcer"].get<std::string>() +
                                       "\", the base ruleset is for \"" + base_ruleset.enforcer + "\"");
        }
        const bool full_replace = wire.value("full_replace", false);
        if (full_replace && !wire.contains("sets_redefined") && !wire.contains("chains_redefined")) {
            return wire_error<Ruleset>(
                "full_replace diff carries no sets_redefined/chains_redefined; a full ruleset is needed");
        }
        bool ok = true;
        std::string shape_error;
        const auto& renames = array_member(wire, "renames", ok, shape_error);
        const auto& set_comments = array_member(wire, "set_comments", ok, shape_error);
        const auto& comment_rewrites = array_member(wire, "comment_rewrites", ok, shape_error);
        const auto& sets_added = array_member(wire, "sets_added", ok, shape_error);
        const auto& sets_removed = array_member(wire, "sets_removed", ok, shape_error);
        const auto& sets_redefined = array_member(wire, "sets_redefined", ok, shape_error);
        const auto& set_changes = array_member(wire, "set_changes", ok, shape_error);
        const auto& chains_added = array_member(wire, "chains_added", ok, shape_error);
        const auto& chains_changed = array_member(wire, "chains_changed", ok, shape_error);
        const auto& chains_redefined = array_member(wire, "chains_redefined", ok, shape_error);
        const auto& chains_removed = array_member(wire, "chains_removed", ok, shape_error);
        const auto& ports_added = array_member(wire, "ports_added", ok, shape_error);
        const auto& ports_removed = array_member(wire, "ports_removed", ok, shape_error);
        if (!ok) {
            return wire_error<Ruleset>(shape_error);
        }

        // Our own copy of the base, its pieces moved into the result; with renamed classes,
        // the renamed base (the rest of the diff is relative to it).
        Ruleset base = base_ruleset;
        if (!renames.empty()) {
            std::vector<ClassRename> list;
            for (const auto& r : renames) {
                if (!r.is_object() || !r.contains("from") || !r["from"].is_string() || !r.contains("to") ||
                    !r["to"].is_string()) {
                    return wire_error<Ruleset>("malformed rename " + r.dump().substr(0, 200));
                }
                list.push_back({r["from"].get<std::string>(), r["to"].get<std::string>()});
            }
            if (auto renamed = rename_classes_in_place(base, list); !renamed) {
                return wire_error<Ruleset>(renamed.error());
            }
        }

        Ruleset out;
        out.enforcer = base.enforcer;
        out.policy_name = base.policy_name;
        if (wire.contains("policy")) {
            if (!wire["policy"].is_string()) {
                return wire_error<Ruleset>("\"policy\" is not a string");
            }
            out.policy_name = wire["policy"].get<std::string>();
        }

        // Sets, sorted by name as in every ruleset (a lookup is a binary search; no map of
        // copied names: this runs on every enforcer for every update it receives).
        std::vector<SetDefinition> sets = std::move(base.sets);
        auto find_set = [&sets](std::string_view name) -> SetDefinition* {
            auto it = std::lower_bound(sets.begin(), sets.end(), name,
                                       [](const SetDefinition& s, std::string_view n) { return s.name < n; });
            return it != sets.end() && it->name == name ? &*it : nullptr;
        };
        auto removed_sets = decode_names(sets_removed, "sets_removed");
        if (!removed_sets) {
            return wire_error<Ruleset>(removed_sets.error());
        }
        std::vector<bool> set_removed(sets.size(), false);
        for (const auto& name : *removed_sets) {
            auto* set = find_set(name);
            if (set == nullptr || set_removed[static_cast<std::size_t>(set - sets.data())]) {
                return wire_error<Ruleset>("removes set " + name + " which the base does not hold");
            }
            set_removed[static_cast<std::size_t>(set - sets.data())] = true;
        }
        auto redefined = decode_sets(sets_redefined);
        if (!redefined) {
            return wire_error<Ruleset>("sets_redefined: " + redefined.error());
        }
        std::set<std::string, std::less<>> added_names;  // carried whole, with their comment
        for (auto& s : *redefined) {
            added_names.insert(s.name);
            auto* set = find_set(s.name);
            if (set == nullptr || set_removed[static_cast<std::size_t>(set - sets.data())]) {
                return wire_error<Ruleset>("redefines set " + s.name + " which the base does not hold");
            }
            *set = std::move(s);
        }
        auto added = decode_sets(sets_added);
        if (!added) {
            return wire_error<Ruleset>("sets_added: " + added.error());
        }
        for (const auto& s : *added) {
            const auto* set = find_set(s.name);
            if ((set != nullptr && !set_removed[static_cast<std::size_t>(set - sets.data())]) ||
                !added_names.insert(s.name).second) {
                return wire_error<Ruleset>("adds set " + s.name + " which the base already holds");
            }
        }
        if (!removed_sets->empty() || !added->empty()) {
            std::size_t kept = 0;
            for (std::size_t i = 0; i < sets.size(); ++i) {
                if (!set_removed[i]) {
                    if (kept != i) {
                        sets[kept] = std::move(sets[i]);
                    }
                    ++kept;
                }
            }
            sets.resize(kept);
            const auto middle = static_cast<std::ptrdiff_t>(sets.size());
            std::move(added->begin(), added->end(), std::back_inserter(sets));
            auto by_name = [](const SetDefinition& x, const SetDefinition& y) { return x.name < y.name; };
            std::sort(sets.begin() + middle, sets.end(), by_name);
            std::inplace_merge(sets.begin(), sets.begin() + middle, sets.end(), by_name);
        }
        std::set<std::string> changed_sets;
        for (const auto& change : set_changes) {
            if (!change.is_object() || !change.contains("set") || !change["set"].is_string()) {
                return wire_error<Ruleset>("malformed set change " + change.dump().substr(0, 200));
            }
            const auto name = change["set"].get<std::string>();
            auto* found = find_set(name);
            if (found == nullptr) {
                return wire_error<Ruleset>("changes elements of set " + name + " which the base does not hold");
            }
            if (!changed_sets.insert(name).second) {
                return wire_error<Ruleset>("set " + name + " is changed twice");
            }
            SetDefinition& set = *found;
            auto removed = elements_from_json(set, change.value("removed", json::array()));
            auto added_elements = elements_from_json(set, change.value("added", json::array()));
            if (!removed || !added_elements) {
                return wire_error<Ruleset>("set " + name + ": " + (!removed ? removed.error() : added_elements.error()));
            }
            ElementList result;
            result.reserve(set.elements->size() + added_elements->size());
            // Both lists are sorted (ruleset_from_json sorts them); one merge pass each.
            auto held = set.elements->begin();
            for (const auto& e : *removed) {
                auto at = std::lower_bound(held, set.elements->end(), e);
                if (at == set.elements->end() || !(*at == e)) {
                    return wire_error<Ruleset>("removes element " + render_element(e, set) + " from set " +
                                               name + " which does not hold it");
                }
                result.insert(result.end(), held, at);
                held = at + 1;
            }
            result.insert(result.end(), held, set.elements->end());
            ElementList merged;
            merged.reserve(result.size() + added_elements->size());
            auto kept = result.begin();
            for (const auto& e : *added_elements) {
                auto at = std::lower_bound(kept, result.end(), e);
                if (at != result.end() && *at == e) {
                    return wire_error<Ruleset>("adds element " + render_element(e, set) + " to set " + name +
                                               " which already holds it");
                }
                merged.insert(merged.end(), std::make_move_iterator(kept), std::make_move_iterator(at));
                merged.push_back(e);
                kept = at;
            }
            merged.insert(merged.end(), std::make_move_iterator(kept), std::make_move_iterator(result.end()));
            set.elements = std::make_shared<const ElementList>(std::move(merged));
        }
        if (!comment_rewrites.empty()) {
            std::vector<CommentRewrite> rewrites;
            for (const auto& r : comment_rewrites) {
                if (!r.is_object() || !r.contains("from") || !r["from"].is_string() || r["from"].get<std::string>().empty() ||
                    !r.contains("to") || !r["to"].is_string()) {
                    return wire_error<Ruleset>("malformed comment rewrite " + r.dump().substr(0, 200));
                }
                rewrites.push_back({r["from"].get<std::string>(), r["to"].get<std::string>()});
            }
            for (auto& set : sets) {
                if (!added_names.contains(set.name)) {
                    rewrite_comment(set.comment, rewrites);
                }
            }
        }
        for (const auto& c : set_comments) {
            if (!c.is_object() || !c.contains("set") || !c["set"].is_string() || !c.contains("comment") ||
                !c["comment"].is_string()) {
                return wire_error<Ruleset>("malformed set comment " + c.dump().substr(0, 200));
            }
            auto* set = find_set(c["set"].get<std::string>());
            if (set == nullptr) {
                return wire_error<Ruleset>("comments set " + c["set"].get<std::string>() +
                                           " which the result does not hold");
            }
            set->comment = c["comment"].get<std::string>();
        }
        out.sets = std::move(sets);

        // Chains, keeping the base's order; new chains go where the compiler puts them.
        std::vector<Chain> chains = std::move(base.chains);
        auto removed_chains = decode_names(chains_removed, "chains_removed");
        if (!removed_chains) {
            return wire_error<Ruleset>(removed_chains.error());
        }
        for (const auto& name : *removed_chains) {
            auto it = std::find_if(chains.begin(), chains.end(), [&](const Chain& c) { return c.name == name; });
            if (it == chains.end()) {
                return wire_error<Ruleset>("removes chain " + name + " which the base does not hold");
            }
            chains.erase(it);
        }
        auto replace_chains = [&](const json& list, const char* what) -> std::optional<std::string> {
            auto decoded = decode_chains(list);
            if (!decoded) {
                return std::string(what) + ": " + decoded.error();
            }
            for (auto& c : *decoded) {
                auto it = std::find_if(chains.begin(), chains.end(), [&](const Chain& x) { return x.name == c.name; });
                if (it == chains.end()) {
                    return std::string(what) + ": chain " + c.name + " is not in the base";
                }
                *it = std::move(c);
            }
            return std::nullopt;
        };
        if (auto error = replace_chains(chains_redefined, "chains_redefined")) {
            return wire_error<Ruleset>(*error);
        }
        if (auto error = replace_chains(chains_changed, "chains_changed")) {
            return wire_error<Ruleset>(*error);
        }
        auto new_chains = decode_chains(chains_added);
        if (!new_chains) {
            return wire_error<Ruleset>("chains_added: " + new_chains.error());
        }
        for (auto& c : *new_chains) {
            if (std::any_of(chains.begin(), chains.end(), [&](const Chain& x) { return x.name == c.name; })) {
                return wire_error<Ruleset>("adds chain " + c.name + " which the base already holds");
            }
            auto at = std::find_if(chains.begin(), chains.end(),
                                   [&](const Chain& x) { return canonical_chain_less(c, x); });
            chains.insert(at, std::move(c));
        }
        out.chains = std::move(chains);

        // Port bindings.
        std::vector<PortBinding> ports = std::move(base.ports);
        for (const auto& p : ports_removed) {
            auto port = decode_port(p);
            if (!port) {
                return wire_error<Ruleset>("ports_removed: " + port.error());
            }
            auto it = std::find(ports.begin(), ports.end(), *port);
            if (it == ports.end()) {
                return wire_error<Ruleset>("removes port binding " + port->interface + " -> " + port->workload +
                                           " which the base does not hold");
            }
            ports.erase(it);
        }
        for (const auto& p : ports_added) {
            auto port = decode_port(p);
            if (!port) {
                return wire_error<Ruleset>("ports_added: " + port.error());
            }
            if (std::find(ports.begin(), ports.end(), *port) != ports.end()) {
                return wire_error<Ruleset>("adds port binding " + port->interface + " -> " + port->workload +
                                           " which the base already holds");
            }
            // The compiler keeps bindings sorted; an added one goes where it would put it.
            ports.insert(std::upper_bound(ports.begin(), ports.end(), *port), *port);
        }
        out.ports = std::move(ports);

        if (auto dangling = unresolved_reference(out)) {
            return wire_error<Ruleset>("result is inconsistent: " + *dangling);
        }
        return out;
    } catch (const json::exception& e) {
        return wire_error<Ruleset>(std::string("malformed: ") + e.what());
    }
}

}  // namespace bulkhead::ruleset
