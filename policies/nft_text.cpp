#include "policies/nft_text.hpp"

#include <sstream>

namespace bulkhead::ruleset {
namespace {

std::string render_match(const Match& match) {
    return std::visit(
        [](const auto& m) -> std::string {
            using T = std::decay_t<decltype(m)>;
            if constexpr (std::is_same_v<T, SetLookup>) {
                std::string out;
                for (std::size_t i = 0; i < m.fields.size(); ++i) {
                    out += (i == 0 ? "" : " . ") + std::string(nft_name(m.fields[i]));
                }
                return out + " @" + m.set;
            } else if constexpr (std::is_same_v<T, ValueMatch>) {
                std::string out = std::string(nft_name(m.field)) + " { ";
                for (std::size_t i = 0; i < m.values.size(); ++i) {
                    out += (i == 0 ? "" : ", ") +
                           key_part_to_string(m.values[i], KeyType::InetService);
                }
                return out + " }";
            } else if constexpr (std::is_same_v<T, CtStateMatch>) {
                std::string out = "ct state ";
                bool first = true;
                for (auto [bit, name] : {std::pair{CtInvalid, "invalid"},
                                         std::pair{CtEstablished, "established"},
                                         std::pair{CtRelated, "related"}, std::pair{CtNew, "new"}}) {
                    if ((m.states & bit) != 0) {
                        out += (first ? "" : ",") + std::string(name);
                        first = false;
                    }
                }
                return out;
            } else {
                return "ct direction reply";
            }
        },
        match);
}

std::string hook_name(Hook hook) {
    switch (hook) {
    case Hook::Forward: return "forward";
    case Hook::Input: return "input";
    case Hook::Output: return "output";
    }
    return "?";
}

}  // namespace

std::string render_rule(const Rule& rule) {
    std::string out;
    auto add = [&out](const std::string& piece) {
        if (!out.empty()) {
            out += ' ';
        }
        out += piece;
    };
    for (const auto& m : rule.matches) {
        add(render_match(m));
    }
    if (rule.update) {
        std::string key;
        for (std::size_t i = 0; i < rule.update->fields.size(); ++i) {
            key += (i == 0 ? "" : " . ") + std::string(nft_name(rule.update->fields[i]));
        }
        add("add @" + rule.update->set + " { " + key + " }");
    }
    if (rule.counter) {
        add("counter");
    }
    if (rule.log) {
        add("log prefix \"" + rule.log->prefix + "\" group " + std::to_string(rule.log->group));
    }
    if (rule.dispatch) {
        add(std::string(nft_name(rule.dispatch->field)) + " vmap @" + rule.dispatch->map);
    }
    switch (rule.verdict.kind) {
    case VerdictKind::None: break;
    case VerdictKind::Accept: add("accept"); break;
    case VerdictKind::Drop: add("drop"); break;
    case VerdictKind::Return: add("return"); break;
    case VerdictKind::Jump: add("jump " + rule.verdict.chain); break;
    case VerdictKind::Goto: add("goto " + rule.verdict.chain); break;
    }
    return out;
}

std::string render_element(const Element& element, const SetDefinition& set) {
    std::string out;
    for (std::size_t i = 0; i < element.key.size(); ++i) {
        out += (i == 0 ? "" : " . ") + key_part_to_string(element.key[i], set.key[i]);
    }
    if (set.verdict_map) {
        out += " : jump " + element.jump;
    }
    return out;
}

std::string render_set_header(const SetDefinition& set) {
    std::string out = "type ";
    for (std::size_t i = 0; i < set.key.size(); ++i) {
        out += (i == 0 ? "" : " . ") + std::string(nft_name(set.key[i]));
    }
    if (set.verdict_map) {
        out += " : verdict";
    }
    out += ";";
    if (set.interval || set.dynamic) {
        out += " flags ";
        out += set.dynamic ? "dynamic" : "";
        out += set.interval && set.dynamic ? "," : "";
        out += set.interval ? "interval" : "";
        out += ";";
    }
    return out;
}

std::string render_base_chain_header(const BaseChain& base) {
    return "type filter hook " + hook_name(base.hook) + " priority " +
           (base.priority == 0 ? std::string("filter") : std::to_string(base.priority)) +
           "; policy accept;";
}

std::string render_nft(const Ruleset& ruleset) {
    std::ostringstream out;
    out << "# Bulkhead ruleset for enforcer " << ruleset.enforcer << " (policy "
        << ruleset.policy_name << ", hash " << ruleset_hash(ruleset) << ")\n";
    out << "# Generated; do not edit. Replaces table inet bulkhead atomically, touches no other "
           "table.\n";
    out << "table inet bulkhead\ndelete table inet bulkhead\n";
    out << "table inet bulkhead {\n";
    for (const auto& set : ruleset.sets) {
        if (!set.comment.empty()) {
            out << "\t# " << set.comment << "\n";
        }
        out << '\t' << (set.verdict_map ? "map " : "set ") << set.name << " {\n";
        out << "\t\t" << render_set_header(set) << "\n";
        if (!set.elements->empty()) {
            out << "\t\telements = {";
            bool first = true;
            for (const auto& e : *set.elements) {
                out << (first ? "\n\t\t\t" : ",\n\t\t\t") << render_element(e, set);
                first = false;
            }
            out << "\n\t\t}\n";
        }
        out << "\t}\n";
    }
    for (const auto& chain : ruleset.chains) {
        out << "\tchain " << chain.name << " {\n";
        if (chain.base) {
            out << "\t\t" << render_base_chain_header(*chain.base) << "\n";
        }
        for (const auto& rule : chain.rules) {
            out << "\t\t" << render_rule(rule) << "\n";
        }
        out << "\t}\n";
    }
    out << "}\n";
    return out.str();
}

}  // namespace bulkhead::ruleset
