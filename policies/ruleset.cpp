#include "policies/ruleset.hpp"

#include "policies/policy_reader.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdio>

namespace bulkhead::ruleset {
namespace {

using nlohmann::json;

struct FieldInfo {
    Field field;
    std::string_view name;
    KeyType type;
};
constexpr std::array field_table{
    FieldInfo{Field::Iifname, "iifname", KeyType::Ifname},
    FieldInfo{Field::Oifname, "oifname", KeyType::Ifname},
    FieldInfo{Field::L4proto, "meta l4proto", KeyType::InetProto},
    FieldInfo{Field::Ip4Saddr, "ip saddr", KeyType::Ipv4Addr},
    FieldInfo{Field::Ip4Daddr, "ip daddr", KeyType::Ipv4Addr},
    FieldInfo{Field::Ip6Saddr, "ip6 saddr", KeyType::Ipv6Addr},
    FieldInfo{Field::Ip6Daddr, "ip6 daddr", KeyType::Ipv6Addr},
    FieldInfo{Field::ThSport, "th sport", KeyType::InetService},
    FieldInfo{Field::ThDport, "th dport", KeyType::InetService},
    FieldInfo{Field::IcmpType, "icmp type", KeyType::IcmpType},
    FieldInfo{Field::Icmpv6Type, "icmpv6 type", KeyType::Icmpv6Type},
    FieldInfo{Field::EtherSaddr, "ether saddr", KeyType::EtherAddr},
};

struct KeyTypeInfo {
    KeyType type;
    std::string_view name;
};
constexpr std::array key_type_table{
    KeyTypeInfo{KeyType::Ifname, "ifname"},
    KeyTypeInfo{KeyType::InetProto, "inet_proto"},
    KeyTypeInfo{KeyType::Ipv4Addr, "ipv4_addr"},
    KeyTypeInfo{KeyType::Ipv6Addr, "ipv6_addr"},
    KeyTypeInfo{KeyType::InetService, "inet_service"},
    KeyTypeInfo{KeyType::IcmpType, "icmp_type"},
    KeyTypeInfo{KeyType::Icmpv6Type, "icmpv6_type"},
    KeyTypeInfo{KeyType::EtherAddr, "ether_addr"},
};

constexpr std::array ct_state_names{
    std::pair<CtState, std::string_view>{CtInvalid, "invalid"},
    std::pair<CtState, std::string_view>{CtEstablished, "established"},
    std::pair<CtState, std::string_view>{CtRelated, "related"},
    std::pair<CtState, std::string_view>{CtNew, "new"},
};

constexpr std::array hook_names{
    std::pair<Hook, std::string_view>{Hook::Forward, "forward"},
    std::pair<Hook, std::string_view>{Hook::Input, "input"},
    std::pair<Hook, std::string_view>{Hook::Output, "output"},
};

constexpr std::array verdict_names{
    std::pair<VerdictKind, std::string_view>{VerdictKind::Accept, "accept"},
    std::pair<VerdictKind, std::string_view>{VerdictKind::Drop, "drop"},
    std::pair<VerdictKind, std::string_view>{VerdictKind::Return, "return"},
    std::pair<VerdictKind, std::string_view>{VerdictKind::Jump, "jump"},
    std::pair<VerdictKind, std::string_view>{VerdictKind::Goto, "goto"},
};

std::uint32_t max_of(KeyType type) {
    switch (type) {
    case KeyType::InetProto:
    case KeyType::IcmpType:
    case KeyType::Icmpv6Type: return 255;
    case KeyType::InetService: return 65535;
    default: return 0;
    }
}

json number_range_to_json(const NumberRange& r) {
    if (r.low == r.high) {
        return r.low;
    }
    return std::to_string(r.low) + "-" + std::to_string(r.high);
}

std::expected<NumberRange, std::string> number_range_from_json(const json& v, std::uint32_t max) {
    NumberRange r;
    if (v.is_number_unsigned()) {
        if (v.get<std::uint64_t>() > max) {
            return std::unexpected("value " + v.dump() + " above " + std::to_string(max));
        }
        r.low = r.high = static_cast<std::uint32_t>(v.get<std::uint64_t>());
        return r;
    }
    if (!v.is_string()) {
        return std::unexpected("expected a number or \"low-high\", got " + v.dump());
    }
    const auto text = v.get<std::string>();
    const auto dash = text.find('-');
    auto parse = [](std::string_view s, std::uint32_t& out) {
        auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
        return !s.empty() && ec == std::errc{} && end == s.data() + s.size();
    };
    if (dash == std::string::npos || !parse(std::string_view(text).substr(0, dash), r.low) ||
        !parse(std::string_view(text).substr(dash + 1), r.high) || r.low > r.high ||
        r.high > max) {
        return std::unexpected("invalid range \"" + text + "\"");
    }
    return r;
}

std::expected<IpRange, std::string> ip_range_from_string(const std::string& text,
                                                         KeyType type) {
    std::expected<IpRange, std::string> range;
    if (auto dash = text.find('-'); dash != std::string::npos) {
        auto low = policy::parse_ip_address(text.substr(0, dash));
        auto high = policy::parse_ip_address(text.substr(dash + 1));
        if (!low || !high || low->family != high->family || *high < *low) {
            return std::unexpected("invalid address range \"" + text + "\"");
        }
        range = IpRange{*low, *high};
    } else {
        range = policy::parse_cidr(text);
    }
    if (!range) {
        return range;
    }
    const auto want = type == KeyType::Ipv4Addr ? policy::Family::Ipv4 : policy::Family::Ipv6;
    if (range->family() != want) {
        return std::unexpected("address \"" + text + "\" has the wrong family for " +
                               std::string(nft_name(type)));
    }
    return range;
}

json match_to_json(const Match& match) {
    return std::visit(
        [](const auto& m) -> json {
            using T = std::decay_t<decltype(m)>;
            if constexpr (std::is_same_v<T, SetLookup>) {
                json fields = json::array();
                for (auto f : m.fields) {
                    fields.push_back(std::string(nft_name(f)));
                }
                return {{"lookup", {{"fields", fields}, {"set", m.set}}}};
            } else if constexpr (std::is_same_v<T, ValueMatch>) {
                json values = json::array();
                for (const auto& v : m.values) {
                    values.push_back(number_range_to_json(v));
                }
                return {{"values", {{"field", std::string(nft_name(m.field))}, {"values", values}}}};
            } else if constexpr (std::is_same_v<T, CtStateMatch>) {
                json states = json::array();
                for (const auto& [bit, name] : ct_state_names) {
                    if ((m.states & bit) != 0) {
                        states.push_back(std::string(name));
                    }
                }
                return {{"ct_state", states}};
            } else {
                return {{"ct_direction", "reply"}};
            }
        },
        match);
}

template <typename T>
std::expected<T, std::string> fail(std::string message) {
    return std::unexpected(std::move(message));
}

std::expected<Field, std::string> field_from_json(const json& v) {
    if (!v.is_string()) {
        return fail<Field>("field must be a string");
    }
    auto f = field_from_name(v.get<std::string>());
    if (!f) {
        return fail<Field>("unknown field \"" + v.get<std::string>() + "\"");
    }
    return *f;
}

std::expected<Match, std::string> match_from_json(const json& v) {
    if (!v.is_object() || v.size() != 1) {
        return fail<Match>("a match is an object with one member");
    }
    if (auto it = v.find("lookup"); it != v.end()) {
        SetLookup lookup;
        if (!it->is_object() || !it->contains("fields") || !it->contains("set") ||
            !(*it)["fields"].is_array() || !(*it)["set"].is_string() || (*it)["fields"].empty()) {
            return fail<Match>("lookup needs \"fields\" and \"set\"");
        }
        for (const auto& f : (*it)["fields"]) {
            auto field = field_from_json(f);
            if (!field) {
                return std::unexpected(field.error());
            }
            lookup.fields.push_back(*field);
        }
        lookup.set = (*it)["set"].get<std::string>();
        return lookup;
    }
    if (auto it = v.find("values"); it != v.end()) {
        if (!it->is_object() || !it->contains("field") || !it->contains("values") ||
            !(*it)["values"].is_array()) {
            return fail<Match>("values needs \"field\" and \"values\"");
        }
        auto field = field_from_json((*it)["field"]);
        if (!field) {
            return std::unexpected(field.error());
        }
        ValueMatch m{*field, {}};
        for (const auto& value : (*it)["values"]) {
            auto range = number_range_from_json(value, max_of(key_type_of(*field)));
            if (!range) {
                return std::unexpected(range.error());
            }
            m.values.push_back(*range);
        }
        return m;
    }
    if (auto it = v.find("ct_state"); it != v.end()) {
        if (!it->is_array()) {
            return fail<Match>("ct_state is an array");
        }
        CtStateMatch m;
        for (const auto& s : *it) {
            auto found = std::find_if(ct_state_names.begin(), ct_state_names.end(),
                                      [&](const auto& p) { return s.is_string() && s == p.second; });
            if (found == ct_state_names.end()) {
                return fail<Match>("unknown ct state " + s.dump());
            }
            m.states = static_cast<std::uint8_t>(m.states | found->first);
        }
        return m;
    }
    if (auto it = v.find("ct_direction"); it != v.end() && *it == "reply") {
        return CtDirectionReply{};
    }
    return fail<Match>("unknown match " + v.dump());
}

json verdict_to_json(const Verdict& verdict) {
    for (const auto& [kind, name] : verdict_names) {
        if (kind == verdict.kind) {
            if (kind == VerdictKind::Jump || kind == VerdictKind::Goto) {
                return {{std::string(name), verdict.chain}};
            }
            return std::string(name);
        }
    }
    return nullptr;
}

std::expected<Verdict, std::string> verdict_from_json(const json& v) {
    if (v.is_null()) {
        return Verdict{};
    }
    for (const auto& [kind, name] : verdict_names) {
        if (v.is_string() && v == name && kind != VerdictKind::Jump && kind != VerdictKind::Goto) {
            return Verdict{kind, ""};
        }
        if (v.is_object() && v.size() == 1 && v.contains(name) && v[name].is_string()) {
            return Verdict{kind, v[name].get<std::string>()};
        }
    }
    return fail<Verdict>("unknown verdict " + v.dump());
}

}  // namespace

KeyType key_type_of(Field field) {
    for (const auto& info : field_table) {
        if (info.field == field) {
            return info.type;
        }
    }
    return KeyType::Ifname;
}

std::string_view nft_name(KeyType type) {
    for (const auto& info : key_type_table) {
        if (info.type == type) {
            return info.name;
        }
    }
    return "?";
}

std::string_view nft_name(Field field) {
    for (const auto& info : field_table) {
        if (info.field == field) {
            return info.name;
        }
    }
    return "?";
}

std::optional<KeyType> key_type_from_name(std::string_view name) {
    for (const auto& info : key_type_table) {
        if (info.name == name) {
            return info.type;
        }
    }
    return std::nullopt;
}

std::optional<Field> field_from_name(std::string_view name) {
    for (const auto& info : field_table) {
        if (info.name == name) {
            return info.field;
        }
    }
    return std::nullopt;
}

std::string key_part_to_string(const KeyPart& part, KeyType type) {
    if (const auto* name = std::get_if<std::string>(&part)) {
        return type == KeyType::EtherAddr ? *name : "\"" + *name + "\"";
    }
    if (const auto* range = std::get_if<IpRange>(&part)) {
        return policy::to_string(*range);
    }
    const auto& numbers = std::get<NumberRange>(part);
    if (numbers.low == numbers.high) {
        if (type == KeyType::IcmpType || type == KeyType::Icmpv6Type) {
            return policy::icmp_type_name(static_cast<std::uint8_t>(numbers.low),
                                          type == KeyType::IcmpType ? policy::Protocol::Icmp
                                                                    : policy::Protocol::Icmpv6);
        }
        return std::to_string(numbers.low);
    }
    return std::to_string(numbers.low) + "-" + std::to_string(numbers.high);
}

const SetDefinition* Ruleset::find_set(std::string_view name) const {
    auto it = std::lower_bound(sets.begin(), sets.end(), name,
                               [](const SetDefinition& s, std::string_view n) { return s.name < n; });
    return it != sets.end() && it->name == name ? &*it : nullptr;
}

const Chain* Ruleset::find_chain(std::string_view name) const {
    for (const auto& chain : chains) {
        if (chain.name == name) {
            return &chain;
        }
    }
    return nullptr;
}

std::size_t Ruleset::element_count() const {
    std::size_t n = 0;
    for (const auto& set : sets) {
        n += set.elements->size();
    }
    return n;
}

std::size_t Ruleset::rule_count() const {
    std::size_t n = 0;
    for (const auto& chain : chains) {
        n += chain.rules.size();
    }
    return n;
}

json chains_to_json(const std::vector<Chain>& chain_list) {
    json chains = json::array();
    for (const auto& chain : chain_list) {
        json rules = json::array();
        for (const auto& rule : chain.rules) {
            json r = json::object();
            json matches = json::array();
            for (const auto& m : rule.matches) {
                matches.push_back(match_to_json(m));
            }
            r["matches"] = std::move(matches);
            if (rule.update) {
                json fields = json::array();
                for (auto f : rule.update->fields) {
                    fields.push_back(std::string(nft_name(f)));
                }
                r["update"] = {{"fields", fields}, {"set", rule.update->set}};
            }
            if (rule.counter) {
                r["counter"] = true;
            }
            if (rule.log) {
                r["log"] = {{"prefix", rule.log->prefix}, {"group", rule.log->group}};
            }
            if (rule.dispatch) {
                r["dispatch"] = {{"field", std::string(nft_name(rule.dispatch->field))},
                                 {"map", rule.dispatch->map}};
            }
            r["verdict"] = verdict_to_json(rule.verdict);
            if (!rule.comment.empty()) {
                r["comment"] = rule.comment;
            }
            rules.push_back(std::move(r));
        }
        json c = {{"name", chain.name}, {"rules", rules}};
        if (chain.base) {
            for (const auto& [hook, name] : hook_names) {
                if (hook == chain.base->hook) {
                    c["hook"] = std::string(name);
                }
            }
            c["priority"] = chain.base->priority;
        }
        chains.push_back(std::move(c));
    }
    return chains;
}

json sets_to_json(const std::vector<SetDefinition>& set_list) {
    json sets = json::array();
    for (const auto& set : set_list) {
        json key = json::array();
        for (auto type : set.key) {
            key.push_back(std::string(nft_name(type)));
        }
        json elements = json::array();
        for (const auto& element : *set.elements) {
            json parts = json::array();
            for (const auto& part : element.key) {
                if (const auto* name = std::get_if<std::string>(&part)) {
                    parts.push_back(*name);
                } else if (const auto* range = std::get_if<IpRange>(&part)) {
                    parts.push_back(policy::to_string(*range));
                } else {
                    parts.push_back(number_range_to_json(std::get<NumberRange>(part)));
                }
            }
            json e = {{"key", parts}};
            if (set.verdict_map) {
                e["jump"] = element.jump;
            }
            elements.push_back(std::move(e));
        }
        json s = {{"name", set.name}, {"key", key}, {"elements", elements}};
        if (set.interval) {
            s["interval"] = true;
        }
        if (set.verdict_map) {
            s["verdict_map"] = true;
        }
        if (set.dynamic) {
            s["dynamic"] = true;
        }
        if (!set.comment.empty()) {
            s["comment"] = set.comment;
        }
        sets.push_back(std::move(s));
    }
    return sets;
}

namespace {

// The kernel-relevant part of a ruleset (no hash, no port bindings).
json ruleset_body(const Ruleset& ruleset) {
    json sets = sets_to_json(ruleset.sets);
    json chains = chains_to_json(ruleset.chains);
    return {{"format", "bulkhead-ruleset/1"},
            {"family", "inet"},
            {"table", std::string(table_name)},
            {"enforcer", ruleset.enforcer},
            {"policy", ruleset.policy_name},
            {"sets", sets},
            {"chains", chains}};
}

std::uint64_t fnv1a64(std::string_view text) {
    std::uint64_t h = 14695981039346656037ULL;  // FNV-1a 64-bit offset basis
    for (unsigned char c : text) {
        h ^= c;
        h *= 1099511628211ULL;
    }
    return h;
}

std::string hex16(std::uint64_t value) {
    // Once per set per hash: snprintf's format parsing showed in profiles.
    static constexpr char digits[] = "0123456789abcdef";
    std::string out(16, '0');
    for (int i = 15; i >= 0; --i, value >>= 4) {
        out[static_cast<std::size_t>(i)] = digits[value & 0xf];
    }
    return out;
}

// Feeds FNV-1a 64 with what would be appended to a string: the ruleset hash is FNV-1a over
// the canonical body text, and hashing it this way never builds that text (hundreds of
// kilobytes per host, 2,000 hosts per policy change on the controller, once per update on
// every enforcer).
class Fnv1aWriter {
  public:
    Fnv1aWriter& operator+=(char c) {
        mix(static_cast<unsigned char>(c));
        return *this;
    }
    Fnv1aWriter& operator+=(std::string_view text) {
        for (unsigned char c : text) {
            mix(c);
        }
        return *this;
    }
    std::uint64_t value() const { return hash_; }

  private:
    void mix(unsigned char c) {
        hash_ ^= c;
        hash_ *= 1099511628211ULL;
    }
    std::uint64_t hash_ = 14695981039346656037ULL;  // FNV-1a 64-bit offset basis
};

// Appends `text` as a JSON string exactly as nlohmann::json::dump() writes it.
template <class Out>
void append_json_string(Out& out, std::string_view text) {
    const bool plain = std::all_of(text.begin(), text.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u >= 0x20 && u < 0x7f && c != '"' && c != '\\';
    });
    if (plain) {
        out += '"';
        out += text;
        out += '"';
    } else {
        out += json(std::string(text)).dump();
    }
}


// chains_to_json(chains).dump(), written directly: hashing a ruleset writes its chains
// every time (the lists are cached, chains are not), so this is on the quarantine path.
template <class Out>
void append_number_range(Out& out, const NumberRange& r) {
    if (r.low == r.high) {
        out += std::to_string(r.low);
    } else {
        out += '"';
        out += std::to_string(r.low);
        out += '-';
        out += std::to_string(r.high);
        out += '"';
    }
}

template <class Out>
void append_match(Out& out, const Match& match) {
    std::visit(
        [&](const auto& m) {
            using T = std::decay_t<decltype(m)>;
            if constexpr (std::is_same_v<T, SetLookup>) {
                out += "{\"lookup\":{\"fields\":[";
                for (std::size_t i = 0; i < m.fields.size(); ++i) {
                    out += i == 0 ? "" : ",";
                    append_json_string(out, nft_name(m.fields[i]));
                }
                out += "],\"set\":";
                append_json_string(out, m.set);
                out += "}}";
            } else if constexpr (std::is_same_v<T, ValueMatch>) {
                out += "{\"values\":{\"field\":";
                append_json_string(out, nft_name(m.field));
                out += ",\"values\":[";
                for (std::size_t i = 0; i < m.values.size(); ++i) {
                    out += i == 0 ? "" : ",";
                    append_number_range(out, m.values[i]);
                }
                out += "]}}";
            } else if constexpr (std::is_same_v<T, CtStateMatch>) {
                out += "{\"ct_state\":[";
                bool first = true;
                for (const auto& [bit, name] : ct_state_names) {
                    if ((m.states & bit) != 0) {
                        out += first ? "" : ",";
                        first = false;
                        append_json_string(out, name);
                    }
                }
                out += "]}";
            } else {
                out += "{\"ct_direction\":\"reply\"}";
            }
        },
        match);
}

template <class Out>
void append_verdict(Out& out, const Verdict& verdict) {
    for (const auto& [kind, name] : verdict_names) {
        if (kind == verdict.kind) {
            if (kind == VerdictKind::Jump || kind == VerdictKind::Goto) {
                out += '{';
                append_json_string(out, name);
                out += ':';
                append_json_string(out, verdict.chain);
                out += '}';
            } else {
                append_json_string(out, name);
            }
            return;
        }
    }
    out += "null";
}

template <class Out>
void append_chains(Out& out, const std::vector<Chain>& chains) {
    out += '[';
    for (std::size_t c = 0; c < chains.size(); ++c) {
        const auto& chain = chains[c];
        out += c == 0 ? "{" : ",{";
        // Members sorted as nlohmann writes them: hook, name, priority, rules.
        if (chain.base) {
            for (const auto& [hook, name] : hook_names) {
                if (hook == chain.base->hook) {
                    out += "\"hook\":";
                    append_json_string(out, name);
                    out += ',';
                }
            }
        }
        out += "\"name\":";
        append_json_string(out, chain.name);
        if (chain.base) {
            out += ",\"priority\":";
            out += std::to_string(chain.base->priority);
        }
        out += ",\"rules\":[";
        for (std::size_t r = 0; r < chain.rules.size(); ++r) {
            const auto& rule = chain.rules[r];
            out += r == 0 ? "{" : ",{";
            // comment, counter, dispatch, log, matches, update, verdict.
            if (!rule.comment.empty()) {
                out += "\"comment\":";
                append_json_string(out, rule.comment);
                out += ',';
            }
            if (rule.counter) {
                out += "\"counter\":true,";
            }
            if (rule.dispatch) {
                out += "\"dispatch\":{\"field\":";
                append_json_string(out, nft_name(rule.dispatch->field));
                out += ",\"map\":";
                append_json_string(out, rule.dispatch->map);
                out += "},";
            }
            if (rule.log) {
                out += "\"log\":{\"group\":";
                out += std::to_string(rule.log->group);
                out += ",\"prefix\":";
                append_json_string(out, rule.log->prefix);
                out += "},";
            }
            out += "\"matches\":[";
            for (std::size_t m = 0; m < rule.matches.size(); ++m) {
                out += m == 0 ? "" : ",";
                append_match(out, rule.matches[m]);
            }
            out += ']';
            if (rule.update) {
                // A tripwire's `add @set { fields }` (sorted: fields, set).
                out += ",\"update\":{\"fields\":[";
                for (std::size_t f = 0; f < rule.update->fields.size(); ++f) {
                    out += f == 0 ? "" : ",";
                    append_json_string(out, nft_name(rule.update->fields[f]));
                }
                out += "],\"set\":";
                append_json_string(out, rule.update->set);
                out += '}';
            }
            out += ",\"verdict\":";
            append_verdict(out, rule.verdict);
            out += '}';
        }
        out += "]}";
    }
    out += ']';
}

enum class ElementsAs { Text, Digest };

template <class Out>
void append_set(Out& out, const SetDefinition& set, ElementsAs as) {
    // Members in nlohmann's (sorted) order: comment, dynamic, elements, interval, key, name,
    // verdict_map.
    out += '{';
    if (!set.comment.empty()) {
        out += "\"comment\":";
        append_json_string(out, set.comment);
        out += ',';
    }
    if (set.dynamic) {
        out += "\"dynamic\":true,";
    }
    out += "\"elements\":";
    if (as == ElementsAs::Text) {
        out += *set.elements->canonical_text(set.verdict_map);
    } else {
        out += '"';
        out += hex16(set.elements->digest(set.verdict_map));
        out += '"';
    }
    if (set.interval) {
        out += ",\"interval\":true";
    }
    out += ",\"key\":[";
    for (std::size_t i = 0; i < set.key.size(); ++i) {
        out += i == 0 ? "" : ",";
        append_json_string(out, nft_name(set.key[i]));
    }
    out += "],\"name\":";
    append_json_string(out, set.name);
    if (set.verdict_map) {
        out += ",\"verdict_map\":true";
    }
    out += '}';
}

// The canonical body text (what ruleset_body(ruleset).dump() writes), optionally with the
// "hash" and "ports" members of the full document.
template <class Out>
void write_body(Out& out, const Ruleset& ruleset, ElementsAs as, const std::string* hash, const json* ports) {
    out += "{\"chains\":";
    append_chains(out, ruleset.chains);
    out += ",\"enforcer\":";
    append_json_string(out, ruleset.enforcer);
    out += ",\"family\":\"inet\",\"format\":\"bulkhead-ruleset/1\"";
    if (hash != nullptr) {
        out += ",\"hash\":";
        append_json_string(out, *hash);
    }
    out += ",\"policy\":";
    append_json_string(out, ruleset.policy_name);
    if (ports != nullptr) {
        out += ",\"ports\":";
        out += ports->dump();
    }
    out += ",\"sets\":[";
    bool first = true;
    for (const auto& set : ruleset.sets) {
        if (!first) {
            out += ',';
        }
        first = false;
        append_set(out, set, as);
    }
    out += "],\"table\":";
    append_json_string(out, table_name);
    out += '}';
}

std::string body_text(const Ruleset& ruleset, ElementsAs as, const std::string* hash, const json* ports) {
    std::string out;
    std::size_t reserve = 4096 + ruleset.sets.size() * 256 + ruleset.rule_count() * 256;
    if (as == ElementsAs::Text) {
        for (const auto& set : ruleset.sets) {
            reserve += set.elements->canonical_text(set.verdict_map)->size();
        }
    }
    out.reserve(reserve);
    write_body(out, ruleset, as, hash, ports);
    return out;
}

std::uint64_t body_digest(const Ruleset& ruleset, ElementsAs as) {
    Fnv1aWriter writer;
    write_body(writer, ruleset, as, nullptr, nullptr);
    return writer.value();
}

json ports_to_json(const Ruleset& ruleset) {
    json ports = json::array();
    for (const auto& p : ruleset.ports) {
        ports.push_back({{"interface", p.interface},
                         {"workload", p.workload},
                         {"mode", p.mode == policy::AttachmentMode::Port ? "port" : "host"},
                         {"class", p.policy_class}});
    }
    return ports;
}

std::string element_text(const Element& element, bool with_jump) {
    std::string out = "{";
    if (with_jump) {
        out += "\"jump\":";
        append_json_string(out, element.jump);
        out += ',';
    }
    out += "\"key\":[";
    bool first = true;
    for (const auto& part : element.key) {
        if (!first) {
            out += ',';
        }
        first = false;
        if (const auto* name = std::get_if<std::string>(&part)) {
            append_json_string(out, *name);
        } else if (const auto* range = std::get_if<IpRange>(&part)) {
            append_json_string(out, policy::to_string(*range));
        } else {
            out += number_range_to_json(std::get<NumberRange>(part)).dump();
        }
    }
    out += "]}";
    return out;
}

}  // namespace

std::shared_ptr<const ElementList::Cache> ElementList::cache(bool with_jump) const {
    {
        std::lock_guard lock(cache_mutex_);
        if (cache_ && cache_->with_jump == with_jump) {
            return cache_;
        }
    }
    // Built outside the lock: two threads may both build it, and get the same text.
    auto fresh = std::make_shared<Cache>();
    fresh->with_jump = with_jump;
    std::string text = "[";
    text.reserve(size() * 24 + 2);
    bool first = true;
    for (const auto& element : *this) {
        if (!first) {
            text += ',';
        }
        first = false;
        text += element_text(element, with_jump);
    }
    text += ']';
    fresh->digest = fnv1a64(text);
    fresh->text = std::make_shared<const std::string>(std::move(text));
    std::lock_guard lock(cache_mutex_);
    if (!cache_) {
        cache_ = fresh;
    }
    return fresh;
}

std::shared_ptr<const std::string> ElementList::canonical_text(bool with_jump) const {
    return cache(with_jump)->text;
}

std::uint64_t ElementList::digest(bool with_jump) const { return cache(with_jump)->digest; }

std::optional<std::uint64_t> ElementList::digest_if_known(bool with_jump) const {
    std::lock_guard lock(cache_mutex_);
    if (cache_ && cache_->with_jump == with_jump) {
        return cache_->digest;
    }
    return std::nullopt;
}

json to_json(const Ruleset& ruleset) {
    json document = ruleset_body(ruleset);
    document["hash"] = ruleset_hash(ruleset);
    document["ports"] = ports_to_json(ruleset);
    return document;
}

std::string to_json_text(const Ruleset& ruleset, const std::string& hash) {
    const json ports = ports_to_json(ruleset);
    return body_text(ruleset, ElementsAs::Text, &hash, &ports);
}

namespace {

// The pieces below throw json::exception on a wrong JSON type; their public wrappers and
// ruleset_from_json turn that into "malformed ruleset: ...".
std::expected<ElementList, std::string> decode_elements(const std::string& set_name, const std::vector<KeyType>& key,
                                                        bool verdict_map, const json& list) {
    ElementList elements;
    elements.reserve(list.size());
    for (const auto& e : list) {
        const auto& parts = e.at("key");
        if (!parts.is_array() || parts.size() != key.size()) {
            return fail<ElementList>("set " + set_name + ": element " + e.dump() + " does not match the key");
        }
        Element element;
        element.key.reserve(parts.size());
        for (std::size_t i = 0; i < parts.size(); ++i) {
            const auto type = key[i];
            if (type == KeyType::Ifname) {
                element.key.emplace_back(parts[i].get<std::string>());
            } else if (type == KeyType::EtherAddr) {
                // Normalised, so that two spellings of one MAC are one element.
                auto mac = policy::normalize_mac(parts[i].get<std::string>());
                if (!mac) {
                    return fail<ElementList>("set " + set_name + ": " + mac.error());
                }
                element.key.emplace_back(*mac);
            } else if (type == KeyType::Ipv4Addr || type == KeyType::Ipv6Addr) {
                auto range = ip_range_from_string(parts[i].get<std::string>(), type);
                if (!range) {
                    return fail<ElementList>("set " + set_name + ": " + range.error());
                }
                element.key.emplace_back(*range);
            } else {
                auto range = number_range_from_json(parts[i], max_of(type));
                if (!range) {
                    return fail<ElementList>("set " + set_name + ": " + range.error());
                }
                element.key.emplace_back(*range);
            }
        }
        if (verdict_map) {
            element.jump = e.at("jump").get<std::string>();
        }
        elements.push_back(std::move(element));
    }
    std::sort(elements.begin(), elements.end());
    return elements;
}

std::expected<SetDefinition, std::string> decode_set(const json& s) {
    SetDefinition set;
    set.name = s.at("name").get<std::string>();
    for (const auto& k : s.at("key")) {
        auto type = key_type_from_name(k.get<std::string>());
        if (!type) {
            return fail<SetDefinition>("set " + set.name + ": unknown key type " + k.dump());
        }
        set.key.push_back(*type);
    }
    if (set.key.empty()) {
        return fail<SetDefinition>("set " + set.name + ": empty key");
    }
    set.interval = s.value("interval", false);
    set.verdict_map = s.value("verdict_map", false);
    set.dynamic = s.value("dynamic", false);
    set.comment = s.value("comment", "");
    auto elements = decode_elements(set.name, set.key, set.verdict_map, s.at("elements"));
    if (!elements) {
        return std::unexpected(elements.error());
    }
    set.elements = std::make_shared<const ElementList>(std::move(*elements));
    return set;
}

std::expected<Chain, std::string> decode_chain(const json& c) {
    Chain chain;
    chain.name = c.at("name").get<std::string>();
    if (c.contains("hook")) {
        bool found = false;
        for (const auto& [hook, name] : hook_names) {
            if (c["hook"] == name) {
                chain.base = BaseChain{hook, c.value("priority", 0)};
                found = true;
            }
        }
        if (!found) {
            return fail<Chain>("chain " + chain.name + ": unknown hook");
        }
    }
    for (const auto& r : c.at("rules")) {
        Rule rule;
        for (const auto& m : r.at("matches")) {
            auto match = match_from_json(m);
            if (!match) {
                return fail<Chain>("chain " + chain.name + ": " + match.error());
            }
            rule.matches.push_back(std::move(*match));
        }
        if (r.contains("update")) {
            const auto& u = r["update"];
            if (!u.is_object() || !u.contains("fields") || !u["fields"].is_array() || u["fields"].empty() ||
                !u.contains("set") || !u["set"].is_string()) {
                return fail<Chain>("chain " + chain.name + ": update needs \"fields\" and \"set\"");
            }
            SetUpdate update;
            for (const auto& f : u["fields"]) {
                auto field = field_from_json(f);
                if (!field) {
                    return fail<Chain>("chain " + chain.name + ": " + field.error());
                }
                update.fields.push_back(*field);
            }
            update.set = u["set"].get<std::string>();
            rule.update = std::move(update);
        }
        rule.counter = r.value("counter", false);
        if (r.contains("log")) {
            rule.log = LogAction{r["log"].at("prefix").get<std::string>(), r["log"].at("group").get<std::uint16_t>()};
        }
        if (r.contains("dispatch")) {
            auto field = field_from_json(r["dispatch"].at("field"));
            if (!field) {
                return fail<Chain>("chain " + chain.name + ": " + field.error());
            }
            rule.dispatch = VerdictMapDispatch{*field, r["dispatch"].at("map").get<std::string>()};
        }
        auto verdict = verdict_from_json(r.value("verdict", json()));
        if (!verdict) {
            return fail<Chain>("chain " + chain.name + ": " + verdict.error());
        }
        rule.verdict = *verdict;
        rule.comment = r.value("comment", "");
        chain.rules.push_back(std::move(rule));
    }
    return chain;
}

template <typename Decode>
auto guarded(Decode decode) -> decltype(decode()) {
    try {
        return decode();
    } catch (const json::exception& e) {
        return std::unexpected(std::string("malformed ruleset: ") + e.what());
    }
}

}  // namespace

std::expected<SetDefinition, std::string> set_from_json(const json& set) {
    return guarded([&] { return decode_set(set); });
}

std::expected<ElementList, std::string> elements_from_json(const SetDefinition& set, const json& elements) {
    return guarded([&] { return decode_elements(set.name, set.key, set.verdict_map, elements); });
}

std::expected<Chain, std::string> chain_from_json(const json& chain) {
    return guarded([&] { return decode_chain(chain); });
}

std::optional<std::string> unresolved_reference(const Ruleset& ruleset) {
    // A ruleset that names a missing set or chain would be rejected by the kernel half-way
    // through an apply.
    for (const auto& chain : ruleset.chains) {
        for (const auto& rule : chain.rules) {
            for (const auto& m : rule.matches) {
                if (const auto* lookup = std::get_if<SetLookup>(&m)) {
                    if (ruleset.find_set(lookup->set) == nullptr) {
                        return "chain " + chain.name + " looks up missing set " + lookup->set;
                    }
                }
            }
            if (rule.update) {
                // Only a dynamic set may be written from the packet path; the kernel would
                // refuse anything else half-way through an apply.
                const auto* target = ruleset.find_set(rule.update->set);
                if (target == nullptr || !target->dynamic || target->verdict_map ||
                    target->key.size() != rule.update->fields.size()) {
                    return "chain " + chain.name + " adds to " + rule.update->set +
                           ", which is not a dynamic set with that key";
                }
            }
            if (rule.dispatch && ruleset.find_set(rule.dispatch->map) == nullptr) {
                return "chain " + chain.name + " dispatches on missing map " + rule.dispatch->map;
            }
            if ((rule.verdict.kind == VerdictKind::Jump || rule.verdict.kind == VerdictKind::Goto) &&
                ruleset.find_chain(rule.verdict.chain) == nullptr) {
                return "chain " + chain.name + " jumps to missing chain " + rule.verdict.chain;
            }
        }
    }
    for (const auto& set : ruleset.sets) {
        if (!set.verdict_map) {
            continue;
        }
        for (const auto& e : *set.elements) {
            if (ruleset.find_chain(e.jump) == nullptr) {
                return "map " + set.name + " jumps to missing chain " + e.jump;
            }
        }
    }
    return std::nullopt;
}

std::expected<Ruleset, std::string> ruleset_from_json(const json& document) {
    try {
        if (!document.is_object() || document.value("format", "") != "bulkhead-ruleset/1") {
            return fail<Ruleset>("not a bulkhead-ruleset/1 document");
        }
        Ruleset ruleset;
        ruleset.enforcer = document.at("enforcer").get<std::string>();
        ruleset.policy_name = document.at("policy").get<std::string>();
        for (const auto& s : document.at("sets")) {
            auto set = decode_set(s);
            if (!set) {
                return std::unexpected(set.error());
            }
            ruleset.sets.push_back(std::move(*set));
        }
        std::sort(ruleset.sets.begin(), ruleset.sets.end(),
                  [](const auto& a, const auto& b) { return a.name < b.name; });
        for (const auto& c : document.at("chains")) {
            auto chain = decode_chain(c);
            if (!chain) {
                return std::unexpected(chain.error());
            }
            ruleset.chains.push_back(std::move(*chain));
        }
        for (const auto& p : document.at("ports")) {
            ruleset.ports.push_back(PortBinding{
                p.at("interface").get<std::string>(), p.at("workload").get<std::string>(),
                p.at("mode") == "host" ? policy::AttachmentMode::Host : policy::AttachmentMode::Port,
                p.at("class").get<std::string>()});
        }
        if (auto unresolved = unresolved_reference(ruleset)) {
            return fail<Ruleset>(*unresolved);
        }
        return ruleset;
    } catch (const json::exception& e) {
        return fail<Ruleset>(std::string("malformed ruleset: ") + e.what());
    }
}

std::string ruleset_hash(const Ruleset& ruleset) {
    return hex16(body_digest(ruleset, ElementsAs::Digest));
}

std::string ruleset_hash_format1(const Ruleset& ruleset) {
    return hex16(body_digest(ruleset, ElementsAs::Text));
}

}  // namespace bulkhead::ruleset
