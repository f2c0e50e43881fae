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
        // Lists of two compiles are different objects; equal digests mean equal content
        // with the very confidence the ruleset hash (built on these digests) gives. Only
        // digests the hash already computed are used: computing one here costs more than
        // the element comparison below.
        const auto before_digest = before->elements->digest_if_known(set.verdict_map);
        const auto digest = set.elements->digest_if_known(set.verdict_map);
        if (before_digest && digest && *before_digest == *digest &&
            before->elements->size() == set.elements->size()) {
            continue;
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

json diff_to_wire(const RulesetDiff& diff, const Ruleset& old, const Ruleset& updated) {
    json wire = diff_to_wire(diff);
    wire["policy"] = updated.policy_name;
    json ports_removed = json::array();
    json ports_added = json::array();
    std::vector<PortBinding> only_old;
    std::vector<PortBinding> only_new;
    auto old_ports = old.ports;
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
        // What diff_rulesets leaves out when it decides on a full replace: sets that kept
        // their name but changed type or flags, chains whose hook or priority changed.
        std::vector<SetDefinition> redefined_sets;
        for (const auto& set : updated.sets) {
            const auto* before = old.find_set(set.name);
            if (before != nullptr && !before->same_definition(set)) {
                redefined_sets.push_back(set);
            }
        }
        std::vector<Chain> redefined_chains;
        for (const auto& chain : updated.chains) {
            const auto* before = old.find_chain(chain.name);
            if (before != nullptr && before->base != chain.base) {
                redefined_chains.push_back(chain);
            }
        }
        wire["sets_redefined"] = sets_json(std::move(redefined_sets));
        wire["chains_redefined"] = chains_json(std::move(redefined_chains));
    }
    return wire;
}

namespace {

// A name's class part: the text before its first '_', or the whole name.
std::string_view class_part(std::string_view name) { return name.substr(0, name.find('_')); }

bool is_class_token(const std::string& name) {
    return !name.empty() && name.find('_') == std::string::npos;
}

struct CommentRewrite {
    std::string from;
    std::string to;
};

// A comment that starts with a rewrite's `from` gets its `to` instead; of several, the
// longest `from` wins.
std::string rewritten_comment(const std::string& comment, const std::vector<CommentRewrite>& rewrites) {
    const CommentRewrite* best = nullptr;
    for (const auto& r : rewrites) {
        if (comment.starts_with(r.from) && (best == nullptr || r.from.size() > best->from.size())) {
            best = &r;
        }
    }
    return best == nullptr ? comment : best->to + comment.substr(best->from.size());
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

std::expected<Ruleset, std::string> rename_classes(const Ruleset& ruleset, const std::vector<ClassRename>& renames) {
    std::map<std::string, std::string, std::less<>> to_of;
    for (const auto& r : renames) {
        if (!is_class_token(r.from) || !is_class_token(r.to)) {
            return std::unexpected("rename " + r.from + " -> " + r.to + ": a class name is non-empty without '_'");
        }
        if (!to_of.emplace(r.from, r.to).second) {
            return std::unexpected("class " + r.from + " is renamed twice");
        }
    }
    std::set<std::string> used;
    auto renamed = [&](const std::string& name) -> std::string {
        const auto token = class_part(name);
        auto it = to_of.find(token);
        if (it == to_of.end()) {
            return name;
        }
        used.insert(it->first);
        return it->second + name.substr(token.size());
    };
    Ruleset out;
    out.enforcer = ruleset.enforcer;
    out.policy_name = ruleset.policy_name;
    out.sets.reserve(ruleset.sets.size());
    for (const auto& set : ruleset.sets) {
        SetDefinition copy = set;
        copy.name = renamed(set.name);
        if (set.verdict_map) {
            ElementList elements = *set.elements;
            bool changed = false;
            for (auto& e : elements) {
                auto jump = renamed(e.jump);
                changed = changed || jump != e.jump;
                e.jump = std::move(jump);
            }
            if (changed) {
                std::sort(elements.begin(), elements.end());
                copy.elements = std::make_shared<const ElementList>(std::move(elements));
            }
        }
        out.sets.push_back(std::move(copy));
    }
    std::sort(out.sets.begin(), out.sets.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    out.chains = ruleset.chains;
    for (auto& chain : out.chains) {
        chain.name = renamed(chain.name);
        for (auto& rule : chain.rules) {
            for (auto& m : rule.matches) {
                if (auto* lookup = std::get_if<SetLookup>(&m)) {
                    lookup->set = renamed(lookup->set);
                }
            }
            if (rule.update) {
                rule.update->set = renamed(rule.update->set);
            }
            if (rule.dispatch) {
                rule.dispatch->map = renamed(rule.dispatch->map);
            }
            if (rule.verdict.kind == VerdictKind::Jump || rule.verdict.kind == VerdictKind::Goto) {
                rule.verdict.chain = renamed(rule.verdict.chain);
            }
            if (rule.log) {
                // Log prefixes name the class as one ':'-separated part
                // ("bh:enf:in:deny:c39efdf1a"); drop attribution reads it.
                std::string prefix;
                std::size_t start = 0;
                for (;;) {
                    const auto end = rule.log->prefix.find(':', start);
                    const auto part = std::string_view(rule.log->prefix).substr(start, end - start);
                    auto it = to_of.find(part);
                    prefix += it == to_of.end() ? std::string(part) : it->second;
                    if (end == std::string::npos) {
                        break;
                    }
                    prefix += ':';
                    start = end + 1;
                }
                rule.log->prefix = std::move(prefix);
            }
        }
    }
    // The compiler's order: base chains first (kept as they are), then regular chains by name.
    std::stable_sort(out.chains.begin(), out.chains.end(), canonical_chain_less);
    out.ports = ruleset.ports;
    for (auto& port : out.ports) {
        if (auto it = to_of.find(port.policy_class); it != to_of.end()) {
            port.policy_class = it->second;
            used.insert(it->first);
        }
    }
    for (const auto& r : renames) {
        if (!used.contains(r.from)) {
            return std::unexpected("renames class " + r.from + " which the base does not hold");
        }
    }
    for (std::size_t i = 1; i < out.sets.size(); ++i) {
        if (out.sets[i].name == out.sets[i - 1].name) {
            return std::unexpected("renaming classes gives two sets named " + out.sets[i].name);
        }
    }
    std::set<std::string> chain_names;
    for (const auto& chain : out.chains) {
        if (!chain_names.insert(chain.name).second) {
            return std::unexpected("renaming classes gives two chains named " + chain.name);
        }
    }
    return out;
}

json wire_diff(const Ruleset& old, const Ruleset& updated) {
    const auto renames = class_renames(old, updated);
    std::optional<Ruleset> renamed;
    if (!renames.empty()) {
        if (auto result = rename_classes(old, renames)) {
            renamed = std::move(*result);
        }
    }
    const Ruleset& base = renamed ? *renamed : old;
    json wire = diff_to_wire(diff_rulesets(base, updated), base, updated);
    if (renamed) {
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
    std::map<std::string, std::string> rewrite_to;
    for (const auto& set : updated.sets) {
        const auto* before = base.find_set(set.name);
        if (before == nullptr || !before->same_definition(set) || before->comment == set.comment) {
            continue;
        }
        // Strip the common ending: what is left is the part that changed.
        std::size_t common = 0;
        while (common < before->comment.size() && common < set.comment.size() &&
               before->comment[before->comment.size() - 1 - common] == set.comment[set.comment.size() - 1 - common]) {
            ++common;
        }
        auto from = before->comment.substr(0, before->comment.size() - common);
        if (!from.empty()) {
            rewrite_to.emplace(std::move(from), set.comment.substr(0, set.comment.size() - common));
        }
    }
    std::vector<CommentRewrite> rewrites;
    for (auto& [from, to] : rewrite_to) {
        rewrites.push_back({from, to});
    }
    json explicit_comments = json::array();
    for (const auto& set : updated.sets) {
        const auto* before = base.find_set(set.name);
        if (before == nullptr || !before->same_definition(set)) {
            continue;  // added or redefined: carried whole
        }
        if (rewritten_comment(before->comment, rewrites) != set.comment) {
            explicit_comments.push_back({{"set", set.name}, {"comment", set.comment}});
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
        Ruleset base;
        if (renames.empty()) {
            base = base_ruleset;
        } else {
            std::vector<ClassRename> list;
            for (const auto& r : renames) {
                if (!r.is_object() || !r.contains("from") || !r["from"].is_string() || !r.contains("to") ||
                    !r["to"].is_string()) {
                    return wire_error<Ruleset>("malformed rename " + r.dump().substr(0, 200));
                }
                list.push_back({r["from"].get<std::string>(), r["to"].get<std::string>()});
            }
            auto result = rename_classes(base_ruleset, list);
            if (!result) {
                return wire_error<Ruleset>(result.error());
            }
            base = std::move(*result);
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

        // Sets, by name.
        std::map<std::string, SetDefinition> sets;
        for (auto& s : base.sets) {
            auto name = s.name;
            sets.emplace(std::move(name), std::move(s));
        }
        auto removed_sets = decode_names(sets_removed, "sets_removed");
        if (!removed_sets) {
            return wire_error<Ruleset>(removed_sets.error());
        }
        for (const auto& name : *removed_sets) {
            if (sets.erase(name) == 0) {
                return wire_error<Ruleset>("removes set " + name + " which the base does not hold");
            }
        }
        auto redefined = decode_sets(sets_redefined);
        if (!redefined) {
            return wire_error<Ruleset>("sets_redefined: " + redefined.error());
        }
        std::set<std::string> added_names;  // carried whole, with their comment
        for (auto& s : *redefined) {
            added_names.insert(s.name);
            auto it = sets.find(s.name);
            if (it == sets.end()) {
                return wire_error<Ruleset>("redefines set " + s.name + " which the base does not hold");
            }
            it->second = std::move(s);
        }
        auto added = decode_sets(sets_added);
        if (!added) {
            return wire_error<Ruleset>("sets_added: " + added.error());
        }
        for (auto& s : *added) {
            const auto name = s.name;
            added_names.insert(name);
            if (!sets.emplace(name, std::move(s)).second) {
                return wire_error<Ruleset>("adds set " + name + " which the base already holds");
            }
        }
        std::set<std::string> changed_sets;
        for (const auto& change : set_changes) {
            if (!change.is_object() || !change.contains("set") || !change["set"].is_string()) {
                return wire_error<Ruleset>("malformed set change " + change.dump().substr(0, 200));
            }
            const auto name = change["set"].get<std::string>();
            auto it = sets.find(name);
            if (it == sets.end()) {
                return wire_error<Ruleset>("changes elements of set " + name + " which the base does not hold");
            }
            if (!changed_sets.insert(name).second) {
                return wire_error<Ruleset>("set " + name + " is changed twice");
            }
            SetDefinition& set = it->second;
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
            for (auto& [name, set] : sets) {
                if (!added_names.contains(name)) {
                    set.comment = rewritten_comment(set.comment, rewrites);
                }
            }
        }
        for (const auto& c : set_comments) {
            if (!c.is_object() || !c.contains("set") || !c["set"].is_string() || !c.contains("comment") ||
                !c["comment"].is_string()) {
                return wire_error<Ruleset>("malformed set comment " + c.dump().substr(0, 200));
            }
            auto it = sets.find(c["set"].get<std::string>());
            if (it == sets.end()) {
                return wire_error<Ruleset>("comments set " + c["set"].get<std::string>() +
                                           " which the result does not hold");
            }
            it->second.comment = c["comment"].get<std::string>();
        }
        for (auto& [name, set] : sets) {
            out.sets.push_back(std::move(set));  // std::map: already sorted by name
        }

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
