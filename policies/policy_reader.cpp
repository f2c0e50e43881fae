#include "policies/policy_reader.hpp"

#include "policies/mac_port.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace bulkhead::policy {
namespace {

using nlohmann::json;

std::string_view type_name(const json& value) {
    if (value.is_number_integer() || value.is_number_unsigned()) {
        return "integer";
    }
    if (value.is_number_float()) {
        return "number";
    }
    return value.type_name();
}

// JSON has one number type: 99999999999999999999999 or 1e9 arrive as doubles. A whole
// number outside the range is an out-of-range value, not a type error.
bool is_integral_beyond(const json& item, std::uint64_t max) {
    const double v = item.get<double>();
    return std::isfinite(v) && std::floor(v) == v && (v < 0 || v > static_cast<double>(max));
}

// Reads one JSON object member by member, remembering which members were consumed so
// that every member the schema does not know is reported (a typo like "acton" must not
// silently fall back to a default).
class ObjectReader {
public:
    ObjectReader(const json& value, std::string pointer, DiagnosticSink& sink,
                 std::string_view what)
        : value_(value), pointer_(std::move(pointer)), sink_(sink) {
        valid_ = value.is_object();
        if (!valid_) {
            sink_.add(pointer_, DiagnosticCode::WrongType,
                      std::string(what) + " must be an object, not " +
                          std::string(type_name(value)));
        }
    }

    bool valid() const { return valid_; }
    const std::string& pointer() const { return pointer_; }
    std::string at(std::string_view key) const { return pointer_append(pointer_, key); }

    const json* member(std::string_view key, bool required) {
        if (!valid_) {
            return nullptr;
        }
        consumed_.insert(std::string(key));
        auto it = value_.find(key);
        if (it == value_.end()) {
            if (required) {
                sink_.add(pointer_, DiagnosticCode::MissingField,
                          "required member \"" + std::string(key) + "\" is missing");
            }
            return nullptr;
        }
        return &*it;
    }

    std::optional<std::string> string(std::string_view key, bool required) {
        const json* v = member(key, required);
        if (v == nullptr) {
            return std::nullopt;
        }
        if (!v->is_string()) {
            sink_.add(at(key), DiagnosticCode::WrongType,
                      "must be a string, not " + std::string(type_name(*v)));
            return std::nullopt;
        }
        return v->get<std::string>();
    }

    std::optional<bool> boolean(std::string_view key) {
        const json* v = member(key, false);
        if (v == nullptr) {
            return std::nullopt;
        }
        if (!v->is_boolean()) {
            sink_.add(at(key), DiagnosticCode::WrongType,
                      "must be true or false, not " + std::string(type_name(*v)));
            return std::nullopt;
        }
        return v->get<bool>();
    }

    std::optional<std::uint64_t> unsigned_integer(std::string_view key, std::uint64_t max) {
        const json* v = member(key, false);
        if (v == nullptr) {
            return std::nullopt;
        }
        if (v->is_number_float() && is_integral_beyond(*v, max)) {
            sink_.add(at(key), DiagnosticCode::InvalidValue,
                      "must be between 0 and " + std::to_string(max) + ", got " + v->dump());
            return std::nullopt;
        }
        if (!v->is_number_integer()) {
            sink_.add(at(key), DiagnosticCode::WrongType,
                      "must be an integer, not " + std::string(type_name(*v)));
            return std::nullopt;
        }
        if (v->is_number_unsigned() && v->get<std::uint64_t>() <= max) {
            return v->get<std::uint64_t>();
        }
        sink_.add(at(key), DiagnosticCode::InvalidValue,
                  "must be between 0 and " + std::to_string(max) + ", got " + v->dump());
        return std::nullopt;
    }

    // One of a fixed set of words.
    template <typename Enum, std::size_t N>
    std::optional<Enum> choice(std::string_view key, bool required,
                               const std::array<std::pair<std::string_view, Enum>, N>& words) {
        auto text = string(key, required);
        if (!text) {
            return std::nullopt;
        }
        for (const auto& [word, value] : words) {
            if (*text == word) {
                return value;
            }
        }
        std::string expected;
        for (const auto& [word, value] : words) {
            expected += (expected.empty() ? "" : ", ") + std::string(word);
        }
        sink_.add(at(key), DiagnosticCode::InvalidValue,
                  "\"" + *text + "\" is not one of: " + expected);
        return std::nullopt;
    }

    // An array member; returns nullptr (and reports) if present with the wrong type.
    const json* array(std::string_view key, bool required) {
        const json* v = member(key, required);
        if (v != nullptr && !v->is_array()) {
            sink_.add(at(key), DiagnosticCode::WrongType,
                      "must be an array, not " + std::string(type_name(*v)));
            return nullptr;
        }
        return v;
    }

    std::vector<std::string> string_array(std::string_view key, bool required,
                                          bool non_empty) {
        std::vector<std::string> out;
        const json* v = array(key, required);
        if (v == nullptr) {
            return out;
        }
        if (non_empty && v->empty()) {
            sink_.add(at(key), DiagnosticCode::InvalidValue, "must not be empty");
        }
        for (std::size_t i = 0; i < v->size(); ++i) {
            const auto& item = (*v)[i];
            if (!item.is_string()) {
                sink_.add(pointer_append(at(key), i), DiagnosticCode::WrongType,
                          "must be a string, not " + std::string(type_name(item)));
                // Keep the slot so later checks report the document's own indices; the
                // document is already invalid, so the placeholder never reaches a compiler.
                out.emplace_back();
                continue;
            }
            out.push_back(item.get<std::string>());
        }
        return out;
    }

    // Call once all known members were read.
    void finish() {
        if (!valid_) {
            return;
        }
        if (auto schema = value_.find("$schema"); schema != value_.end() && !schema->is_string()) {
            sink_.add(pointer_append(pointer_, "$schema"), DiagnosticCode::WrongType,
                      "must be a string (the schema's path or URL), not " +
                          std::string(type_name(*schema)));
        }
        for (const auto& [key, unused] : value_.items()) {
            // "$schema" and "comment" are free for editors and humans everywhere.
            if (!consumed_.contains(key) && key != "$schema" && key != "comment") {
                sink_.add(pointer_append(pointer_, key), DiagnosticCode::UnknownField,
                          "unknown member \"" + key + "\"");
            }
        }
    }

private:
    const json& value_;
    std::string pointer_;
    DiagnosticSink& sink_;
    bool valid_ = false;
    std::unordered_set<std::string> consumed_;
};

// Names of services, segments, rules, enforcers and workloads: they end up in logs,
// URLs and nft comments, so keep them to a safe alphabet.
bool dots_only(std::string_view name) {
    return !name.empty() && name.find_first_not_of('.') == std::string_view::npos;
}

bool valid_name(std::string_view name) {
    if (name.empty() || name.size() > 64 || dots_only(name)) {
        return false;
    }
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '_' || c == '.';
    });
}

void check_name(const std::string& name, const std::string& pointer, DiagnosticSink& sink) {
    if (dots_only(name)) {
        // "." and ".." are resolved away by browsers, curl and proxies before the request
        // leaves: a workload so named could never be fetched or deleted by its URL.
        sink.add(pointer, DiagnosticCode::InvalidValue,
                 "\"" + name + "\" is not a valid name: a name of dots only is not safe as one URL path segment");
        return;
    }
    if (!valid_name(name)) {
        sink.add(pointer, DiagnosticCode::InvalidValue,
                 "\"" + name + "\" is not a valid name (1-64 characters of A-Z a-z 0-9 - _ .)");
    }
}

// Records names and reports the second occurrence with the first one's location.
class NameRegistry {
public:
    NameRegistry(std::string_view kind, DiagnosticSink& sink) : kind_(kind), sink_(sink) {}
    void add(const std::string& name, const std::string& pointer) {
        auto [it, inserted] = first_.emplace(name, pointer);
        if (!inserted) {
            sink_.add(pointer, DiagnosticCode::DuplicateName,
                      std::string(kind_) + " \"" + name + "\" is already defined at " +
                          it->second);
        }
    }
    bool contains(const std::string& name) const { return first_.contains(name); }

private:
    std::string_view kind_;
    DiagnosticSink& sink_;
    std::unordered_map<std::string, std::string> first_;
};

struct IcmpName {
    std::string_view name;
    std::uint8_t type;
};
constexpr std::array icmp_names{
    IcmpName{"echo-reply", 0},          IcmpName{"destination-unreachable", 3},
    IcmpName{"source-quench", 4},       IcmpName{"redirect", 5},
    IcmpName{"echo-request", 8},        IcmpName{"router-advertisement", 9},
    IcmpName{"router-solicitation", 10}, IcmpName{"time-exceeded", 11},
    IcmpName{"parameter-problem", 12},  IcmpName{"timestamp-request", 13},
    IcmpName{"timestamp-reply", 14},
};
constexpr std::array icmpv6_names{
    IcmpName{"destination-unreachable", 1}, IcmpName{"packet-too-big", 2},
    IcmpName{"time-exceeded", 3},           IcmpName{"parameter-problem", 4},
    IcmpName{"echo-request", 128},          IcmpName{"echo-reply", 129},
    IcmpName{"nd-router-solicit", 133},     IcmpName{"nd-router-advert", 134},
    IcmpName{"nd-neighbor-solicit", 135},   IcmpName{"nd-neighbor-advert", 136},
};

// A port or type: 445, "445" or "137-139".
std::optional<NumberRange> read_number_range(const json& item, const std::string& pointer,
                                             std::uint32_t max, DiagnosticCode out_of_range,
                                             std::string_view what, DiagnosticSink& sink) {
    if (item.is_number_integer()) {
        if (!item.is_number_unsigned() || item.get<std::uint64_t>() > max) {
            sink.add(pointer, out_of_range,
                     std::string(what) + " " + item.dump() + " is outside 0.." +
                         std::to_string(max));
            return std::nullopt;
        }
        auto v = static_cast<std::uint32_t>(item.get<std::uint64_t>());
        return NumberRange{v, v};
    }
    if (item.is_number_float() && is_integral_beyond(item, max)) {
        sink.add(pointer, out_of_range,
                 std::string(what) + " " + item.dump() + " is outside 0.." + std::to_string(max));
        return std::nullopt;
    }
    if (!item.is_string()) {
        sink.add(pointer, DiagnosticCode::WrongType,
                 std::string(what) + " must be an integer or a \"low-high\" string, not " +
                     std::string(type_name(item)));
        return std::nullopt;
    }
    const auto text = item.get<std::string>();
    auto parse_one = [&](std::string_view part) -> std::optional<std::uint64_t> {
        std::uint64_t v = 0;
        auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
        if (part.empty() || ec == std::errc::invalid_argument || end != part.data() + part.size()) {
            return std::nullopt;
        }
        if (ec == std::errc::result_out_of_range) {
            return std::numeric_limits<std::uint64_t>::max();
        }
        return v;
    };
    const auto dash = text.find('-');
    auto low = parse_one(std::string_view(text).substr(0, dash));
    auto high = dash == std::string::npos ? low
                                          : parse_one(std::string_view(text).substr(dash + 1));
    if (!low || !high) {
        sink.add(pointer, DiagnosticCode::InvalidValue,
                 "\"" + text + "\" is not a " + std::string(what) + " or a \"low-high\" range");
        return std::nullopt;
    }
    if (*low > max || *high > max) {
        sink.add(pointer, out_of_range,
                 std::string(what) + " range \"" + text + "\" is outside 0.." +
                     std::to_string(max));
        return std::nullopt;
    }
    if (*low > *high) {
        sink.add(pointer, DiagnosticCode::ReversedRange,
                 "range \"" + text + "\" is reversed (low end above high end)");
        return std::nullopt;
    }
    return NumberRange{static_cast<std::uint32_t>(*low), static_cast<std::uint32_t>(*high)};
}

constexpr std::array protocol_words{
    std::pair<std::string_view, Protocol>{"tcp", Protocol::Tcp},
    std::pair<std::string_view, Protocol>{"udp", Protocol::Udp},
    std::pair<std::string_view, Protocol>{"sctp", Protocol::Sctp},
    std::pair<std::string_view, Protocol>{"icmp", Protocol::Icmp},
    std::pair<std::string_view, Protocol>{"icmpv6", Protocol::Icmpv6},
    std::pair<std::string_view, Protocol>{"any", Protocol::Any},
};

std::optional<ServiceEntry> read_service_entry(const json& value, const std::string& pointer,
                                               DiagnosticSink& sink) {
    ObjectReader r(value, pointer, sink, "a service entry");
    if (!r.valid()) {
        return std::nullopt;
    }
    ServiceEntry entry;
    auto protocol = r.choice("protocol", true, protocol_words);
    const json* ports = r.array("ports", false);
    const json* types = r.array("types", false);
    r.finish();
    if (!protocol) {
        return std::nullopt;
    }
    entry.protocol = *protocol;
    const bool port_protocol =
        *protocol == Protocol::Tcp || *protocol == Protocol::Udp || *protocol == Protocol::Sctp;
    const bool icmp_protocol = *protocol == Protocol::Icmp || *protocol == Protocol::Icmpv6;
    if (ports != nullptr) {
        if (!port_protocol) {
            sink.add(r.at("ports"), DiagnosticCode::InvalidValue,
                     "\"ports\" only applies to tcp, udp and sctp, not " +
                         std::string(to_string(*protocol)));
        } else if (ports->empty()) {
            sink.add(r.at("ports"), DiagnosticCode::InvalidValue,
                     "must not be empty (omit \"ports\" to mean every port)");
        } else {
            for (std::size_t i = 0; i < ports->size(); ++i) {
                if (auto range = read_number_range((*ports)[i], pointer_append(r.at("ports"), i),
                                                   65535, DiagnosticCode::InvalidPort, "port",
                                                   sink)) {
                    entry.ports.push_back(*range);
                }
            }
        }
    }
    if (types != nullptr) {
        if (!icmp_protocol) {
            sink.add(r.at("types"), DiagnosticCode::InvalidValue,
                     "\"types\" only applies to icmp and icmpv6, not " +
                         std::string(to_string(*protocol)));
        } else if (types->empty()) {
            sink.add(r.at("types"), DiagnosticCode::InvalidValue,
                     "must not be empty (omit \"types\" to mean every type)");
        } else {
            for (std::size_t i = 0; i < types->size(); ++i) {
                const auto& item = (*types)[i];
                const auto item_pointer = pointer_append(r.at("types"), i);
                if (item.is_string()) {
                    auto number = icmp_type_number(item.get<std::string>(), *protocol);
                    if (!number) {
                        sink.add(item_pointer, DiagnosticCode::InvalidValue,
                                 "\"" + item.get<std::string>() + "\" is not a known " +
                                     std::string(to_string(*protocol)) +
                                     " type name (use a number 0..255 otherwise)");
                        continue;
                    }
                    entry.icmp_types.push_back({*number, *number});
                } else if (auto range = read_number_range(item, item_pointer, 255,
                                                          DiagnosticCode::InvalidValue,
                                                          "ICMP type", sink)) {
                    entry.icmp_types.push_back(*range);
                }
            }
        }
    }
    return entry;
}

void read_services(const json* list, const std::string& pointer, Policy& policy,
                   DiagnosticSink& sink) {
    if (list == nullptr) {
        return;
    }
    NameRegistry names("service", sink);
    for (std::size_t i = 0; i < list->size(); ++i) {
        const auto item_pointer = pointer_append(pointer, i);
        ObjectReader r((*list)[i], item_pointer, sink, "a service");
        if (!r.valid()) {
            continue;
        }
        Service service;
        service.pointer = item_pointer;
        auto service_name = r.string("name", true);
        service.name = service_name.value_or("");
        service.description = r.string("description", false).value_or("");
        const json* entries = r.array("entries", true);
        r.finish();
        if (service_name) {
            check_name(service.name, r.at("name"), sink);
            if (service.name == "any") {
                sink.add(r.at("name"), DiagnosticCode::DuplicateName,
                         "\"any\" is the built-in service for all traffic and cannot be redefined");
            }
            names.add(service.name, r.at("name"));
        }
        if (entries != nullptr) {
            if (entries->empty()) {
                sink.add(r.at("entries"), DiagnosticCode::InvalidValue,
                         "a service needs at least one entry");
            }
            for (std::size_t e = 0; e < entries->size(); ++e) {
                if (auto entry = read_service_entry((*entries)[e],
                                                    pointer_append(r.at("entries"), e), sink)) {
                    service.entries.push_back(std::move(*entry));
                }
            }
        }
        policy.services.push_back(std::move(service));
    }
}

Selector read_selector(const json& value, const std::string& pointer, DiagnosticSink& sink) {
    Selector selector;
    ObjectReader r(value, pointer, sink, "a selector");
    if (!r.valid()) {
        return selector;
    }
    const json* labels = r.member("labels", false);
    const json* workloads = r.array("workloads", false);
    const json* cidrs = r.array("cidrs", false);
    r.finish();
    if (labels == nullptr && workloads == nullptr && cidrs == nullptr) {
        sink.add(pointer, DiagnosticCode::EmptySelector,
                 "a selector needs \"labels\", \"workloads\" or \"cidrs\"");
        return selector;
    }
    if (labels != nullptr) {
        const auto labels_pointer = r.at("labels");
        if (!labels->is_object()) {
            sink.add(labels_pointer, DiagnosticCode::WrongType,
                     "must be an object of label: value (or [values]), not " +
                         std::string(type_name(*labels)));
        } else if (labels->empty()) {
            sink.add(labels_pointer, DiagnosticCode::EmptySelector,
                     "an empty label selector would match every workload; name at least one "
                     "label");
        }
        if (labels->is_object()) {
            for (const auto& [key, wanted] : labels->items()) {
                const auto key_pointer = pointer_append(labels_pointer, key);
                auto& values = selector.labels[key];
                if (wanted.is_string()) {
                    values.push_back(wanted.get<std::string>());
                } else if (wanted.is_array()) {
                    if (wanted.empty()) {
                        sink.add(key_pointer, DiagnosticCode::EmptySelector,
                                 "an empty list of values matches nothing");
                    }
                    for (std::size_t i = 0; i < wanted.size(); ++i) {
                        if (!wanted[i].is_string()) {
                            sink.add(pointer_append(key_pointer, i), DiagnosticCode::WrongType,
                                     "label values are strings, not " +
                                         std::string(type_name(wanted[i])));
                            continue;
                        }
                        values.push_back(wanted[i].get<std::string>());
                    }
                } else {
                    sink.add(key_pointer, DiagnosticCode::WrongType,
                             "a label value is a string or an array of strings, not " +
                                 std::string(type_name(wanted)));
                }
            }
        }
    }
    if (workloads != nullptr) {
        if (workloads->empty()) {
            sink.add(r.at("workloads"), DiagnosticCode::EmptySelector,
                     "an empty workload list selects nothing");
        }
        for (std::size_t i = 0; i < workloads->size(); ++i) {
            const auto& item = (*workloads)[i];
            if (!item.is_string()) {
                sink.add(pointer_append(r.at("workloads"), i), DiagnosticCode::WrongType,
                         "workload ids are strings, not " + std::string(type_name(item)));
                continue;
            }
            selector.workloads.push_back(item.get<std::string>());
        }
    }
    if (cidrs != nullptr) {
        if (cidrs->empty()) {
            sink.add(r.at("cidrs"), DiagnosticCode::EmptySelector,
                     "an empty CIDR list selects nothing");
        }
        for (std::size_t i = 0; i < cidrs->size(); ++i) {
            const auto& item = (*cidrs)[i];
            const auto item_pointer = pointer_append(r.at("cidrs"), i);
            if (!item.is_string()) {
                sink.add(item_pointer, DiagnosticCode::WrongType,
                         "CIDR blocks are strings, not " + std::string(type_name(item)));
                continue;
            }
            auto range = parse_cidr(item.get<std::string>());
            if (!range) {
                sink.add(item_pointer, DiagnosticCode::InvalidAddress, range.error());
                continue;
            }
            selector.cidrs.push_back(*range);
        }
    }
    return selector;
}

void read_segments(const json* list, const std::string& pointer, Policy& policy,
                   DiagnosticSink& sink) {
    if (list == nullptr) {
        return;
    }
    NameRegistry names("segment", sink);
    for (std::size_t i = 0; i < list->size(); ++i) {
        const auto item_pointer = pointer_append(pointer, i);
        ObjectReader r((*list)[i], item_pointer, sink, "a segment");
        if (!r.valid()) {
            continue;
        }
        Segment segment;
        segment.pointer = item_pointer;
        auto segment_name = r.string("name", true);
        segment.name = segment_name.value_or("");
        segment.description = r.string("description", false).value_or("");
        segment.decoy = r.boolean("decoy").value_or(false);
        segment.tripwire = r.boolean("tripwire").value_or(false);
        const json* selector = r.member("selector", true);
        r.finish();
        if (segment_name) {
            check_name(segment.name, r.at("name"), sink);
            names.add(segment.name, r.at("name"));
        }
        if (selector != nullptr) {
            segment.selector = read_selector(*selector, r.at("selector"), sink);
        }
        policy.segments.push_back(std::move(segment));
    }
}

constexpr std::array action_words{
    std::pair<std::string_view, RuleAction>{"allow", RuleAction::Allow},
    std::pair<std::string_view, RuleAction>{"deny", RuleAction::Deny},
};

void read_rules(const json* list, const std::string& pointer, Policy& policy,
                DiagnosticSink& sink) {
    if (list == nullptr) {
        return;
    }
    NameRegistry names("rule", sink);
    for (std::size_t i = 0; i < list->size(); ++i) {
        const auto item_pointer = pointer_append(pointer, i);
        ObjectReader r((*list)[i], item_pointer, sink, "a rule");
        if (!r.valid()) {
            continue;
        }
        Rule rule;
        rule.pointer = item_pointer;
        auto rule_name = r.string("name", true);
        rule.name = rule_name.value_or("");
        rule.description = r.string("description", false).value_or("");
        rule.action = r.choice("action", true, action_words).value_or(RuleAction::Allow);
        rule.from = r.string_array("from", true, true);
        rule.to = r.string_array("to", true, true);
        rule.services = r.string_array("services", true, true);
        rule.tripwire = r.boolean("tripwire").value_or(false);
        r.finish();
        if (rule_name) {
            check_name(rule.name, r.at("name"), sink);
            names.add(rule.name, r.at("name"));
        }
        policy.rules.push_back(std::move(rule));
    }
}

constexpr std::array default_action_words{
    std::pair<std::string_view, DefaultAction>{"deny", DefaultAction::Deny},
    std::pair<std::string_view, DefaultAction>{"allow", DefaultAction::Allow},
};
constexpr std::array mode_words{
    std::pair<std::string_view, Mode>{"enforce", Mode::Enforce},
    std::pair<std::string_view, Mode>{"monitor", Mode::Monitor},
};

void read_defaults(const json* value, const std::string& pointer, Policy& policy,
                   DiagnosticSink& sink) {
    if (value == nullptr) {
        return;
    }
    ObjectReader r(*value, pointer, sink, "\"defaults\"");
    auto& d = policy.defaults;
    d.action = r.choice("action", false, default_action_words).value_or(d.action);
    d.mode = r.choice("mode", false, mode_words).value_or(d.mode);
    d.log_drops = r.boolean("log_drops").value_or(d.log_drops);
    d.log_group = static_cast<std::uint16_t>(r.unsigned_integer("log_group", 65535).value_or(d.log_group));
    d.log_allowed = r.boolean("log_allowed").value_or(d.log_allowed);
    d.allowed_log_group = static_cast<std::uint16_t>(
        r.unsigned_integer("allowed_log_group", 65535).value_or(d.allowed_log_group));
    r.finish();
    if (d.log_allowed && d.log_drops && d.log_group == d.allowed_log_group) {
        sink.add(r.at("allowed_log_group"), DiagnosticCode::Conflict,
                 "allowed connections and drops must log to different NFLOG groups");
    }
}

std::vector<QuarantineGrant> read_grants(const json* list, const std::string& pointer,
                                         std::string_view peer_key, DiagnosticSink& sink) {
    std::vector<QuarantineGrant> grants;
    if (list == nullptr) {
        return grants;
    }
    for (std::size_t i = 0; i < list->size(); ++i) {
        const auto item_pointer = pointer_append(pointer, i);
        ObjectReader r((*list)[i], item_pointer, sink, "a quarantine grant");
        if (!r.valid()) {
            continue;
        }
        QuarantineGrant grant;
        grant.pointer = item_pointer;
        grant.segments = r.string_array(peer_key, true, true);
        grant.services = r.string_array("services", true, true);
        r.finish();
        grants.push_back(std::move(grant));
    }
    return grants;
}

void read_quarantine(const json* value, const std::string& pointer, Policy& policy,
                     DiagnosticSink& sink) {
    if (value == nullptr) {
        return;
    }
    ObjectReader r(*value, pointer, sink, "\"quarantine\"");
    const json* allow = r.array("allow", false);
    const json* allow_from = r.array("allow_from", false);
    r.finish();
    policy.quarantine.allow = read_grants(allow, r.at("allow"), "to", sink);
    policy.quarantine.allow_from = read_grants(allow_from, r.at("allow_from"), "from", sink);
}

constexpr std::array severity_words{
    std::pair<std::string_view, Severity>{"low", Severity::Low},
    std::pair<std::string_view, Severity>{"medium", Severity::Medium},
    std::pair<std::string_view, Severity>{"high", Severity::High},
    std::pair<std::string_view, Severity>{"critical", Severity::Critical},
};
constexpr std::array auto_quarantine_words{
    std::pair<std::string_view, AutoQuarantineMode>{"off", AutoQuarantineMode::Off},
    std::pair<std::string_view, AutoQuarantineMode>{"on", AutoQuarantineMode::On},
    std::pair<std::string_view, AutoQuarantineMode>{"dry-run", AutoQuarantineMode::DryRun},
};

// The analyzer's detector and rule names (controller/analyzer/analyzer.hpp).
// "tripwire" selects what the kernel contains on the packet itself (decided at compile time).
constexpr std::array<std::string_view, 14> auto_quarantine_detector_words{
    "host-sweep", "port-scan-vertical", "port-scan-box", "slow-scan", "distinct-targets",
    "lateral-movement", "forbidden-zone", "decoy", "user-to-admin", "vdi-file-sharing",
    "beaconing", "fan-in", "tripwire", "spoof-guard"};

void read_response(const json* value, const std::string& pointer, Policy& policy,
                   DiagnosticSink& sink) {
    if (value == nullptr) {
        return;
    }
    ObjectReader r(*value, pointer, sink, "\"response\"");
    auto& response = policy.response;
    if (const json* incident = r.member("incident", false)) {
        ObjectReader ir(*incident, r.at("incident"), sink, "\"incident\"");
        auto& rule = response.incident;
        // 100,000 distinct targets or a day bound what a detection window can mean.
        if (auto n = ir.unsigned_integer("distinct_targets", 100000)) {
            if (*n == 0) {
                sink.add(ir.at("distinct_targets"), DiagnosticCode::InvalidValue,
                         "must be at least 1");
            }
            rule.distinct_targets = static_cast<std::uint32_t>(*n);
        }
        if (auto n = ir.unsigned_integer("window_seconds", 86400)) {
            if (*n == 0) {
                sink.add(ir.at("window_seconds"), DiagnosticCode::InvalidValue,
                         "must be at least 1");
            }
            rule.window_seconds = static_cast<std::uint32_t>(*n);
        }
        rule.severity = ir.choice("severity", false, severity_words).value_or(rule.severity);
        ir.finish();
    }
    response.decoy_severity =
        r.choice("decoy_severity", false, severity_words).value_or(response.decoy_severity);
    if (const json* automatic = r.member("auto_quarantine", false)) {
        ObjectReader ar(*automatic, r.at("auto_quarantine"), sink, "\"auto_quarantine\"");
        response.auto_quarantine =
            ar.choice("mode", true, auto_quarantine_words).value_or(response.auto_quarantine);
        response.auto_quarantine_min_severity =
            ar.choice("min_severity", false, severity_words)
                .value_or(response.auto_quarantine_min_severity);
        if (auto n = ar.unsigned_integer("max_per_minute", 10000)) {
            response.max_auto_quarantines_per_minute = static_cast<std::uint32_t>(*n);
        }
        if (const json* rules = ar.array("rules", false)) {
            for (std::size_t i = 0; i < rules->size(); ++i) {
                const std::string at = pointer_append(ar.at("rules"), i);
                ObjectReader rr((*rules)[i], at, sink, "an automatic quarantine rule");
                AutoQuarantineRule rule;
                rule.pointer = at;
                rule.segments = rr.string_array("segments", false, true);
                rule.detectors = rr.string_array("detectors", false, true);
                for (std::size_t k = 0; k < rule.detectors.size(); ++k) {
                    if (std::find(auto_quarantine_detector_words.begin(),
                                  auto_quarantine_detector_words.end(),
                                  rule.detectors[k]) == auto_quarantine_detector_words.end()) {
                        std::string known;
                        for (auto word : auto_quarantine_detector_words) {
                            known += (known.empty() ? "" : ", ") + std::string(word);
                        }
                        sink.add(pointer_append(rr.at("detectors"), k), DiagnosticCode::InvalidValue,
                                 "\"" + rule.detectors[k] + "\" is not a detector: " + known);
                    }
                }
                rule.mode = rr.choice("mode", true, auto_quarantine_words).value_or(rule.mode);
                rule.min_severity =
                    rr.choice("min_severity", false, severity_words)
                        .value_or(response.auto_quarantine_min_severity);
                rr.finish();
                response.auto_quarantine_rules.push_back(std::move(rule));
            }
        }
        ar.finish();
    }
    r.finish();
}

// References between parts of one policy.
void check_policy_references(const Policy& policy, DiagnosticSink& sink) {
    std::unordered_map<std::string, const Segment*> segments;
    for (const auto& s : policy.segments) {
        segments.emplace(s.name, &s);
    }
    std::unordered_set<std::string> services{"any"};
    for (const auto& s : policy.services) {
        services.insert(s.name);
    }
    auto check_segments = [&](const std::vector<std::string>& names, const std::string& pointer) {
        for (std::size_t i = 0; i < names.size(); ++i) {
            if (!names[i].empty() && !segments.contains(names[i])) {
                sink.add(pointer_append(pointer, i), DiagnosticCode::UnknownReference,
                         "unknown segment \"" + names[i] + "\"");
            }
        }
    };
    auto check_services = [&](const std::vector<std::string>& names, const std::string& pointer) {
        for (std::size_t i = 0; i < names.size(); ++i) {
            if (!names[i].empty() && !services.contains(names[i])) {
                sink.add(pointer_append(pointer, i), DiagnosticCode::UnknownReference,
                         "unknown service \"" + names[i] + "\"");
            }
        }
    };
    for (const auto& segment : policy.segments) {
        if (segment.tripwire && !segment.decoy) {
            sink.add(pointer_append(segment.pointer, "tripwire"), DiagnosticCode::Conflict,
                     "only a decoy segment can be a tripwire: touching \"" + segment.name +
                         "\" is not proof of anything");
        }
    }
    for (const auto& rule : policy.rules) {
        if (rule.tripwire && rule.action != RuleAction::Deny) {
            sink.add(pointer_append(rule.pointer, "tripwire"), DiagnosticCode::Conflict,
                     "only a deny rule can be a tripwire: rule \"" + rule.name +
                         "\" allows what it matches");
        }
        check_segments(rule.from, pointer_append(rule.pointer, "from"));
        check_segments(rule.to, pointer_append(rule.pointer, "to"));
        check_services(rule.services, pointer_append(rule.pointer, "services"));
        if (rule.action == RuleAction::Allow) {
            for (std::size_t i = 0; i < rule.to.size(); ++i) {
                auto it = segments.find(rule.to[i]);
                if (it != segments.end() && it->second->decoy) {
                    sink.add(pointer_append(pointer_append(rule.pointer, "to"), i),
                             DiagnosticCode::Conflict,
                             "segment \"" + rule.to[i] +
                                 "\" is a decoy: nothing may be allowed to reach it");
                }
            }
        }
    }
    for (const auto& grant : policy.quarantine.allow) {
        check_segments(grant.segments, pointer_append(grant.pointer, "to"));
        for (std::size_t i = 0; i < grant.segments.size(); ++i) {
            auto it = segments.find(grant.segments[i]);
            if (it != segments.end() && it->second->decoy) {
                sink.add(pointer_append(pointer_append(grant.pointer, "to"), i),
                         DiagnosticCode::Conflict,
                         "segment \"" + grant.segments[i] +
                             "\" is a decoy: a quarantined workload may not be granted it either");
            }
        }
        check_services(grant.services, pointer_append(grant.pointer, "services"));
    }
    for (const auto& grant : policy.quarantine.allow_from) {
        check_segments(grant.segments, pointer_append(grant.pointer, "from"));
        check_services(grant.services, pointer_append(grant.pointer, "services"));
    }
    for (const auto& rule : policy.response.auto_quarantine_rules) {
        check_segments(rule.segments, pointer_append(rule.pointer, "segments"));
    }
}

std::optional<Attachment> read_attachment(const json& value, const std::string& pointer,
                                          DiagnosticSink& sink) {
    ObjectReader r(value, pointer, sink, "an attachment");
    if (!r.valid()) {
        return std::nullopt;
    }
    constexpr std::array attachment_words{
        std::pair<std::string_view, AttachmentMode>{"port", AttachmentMode::Port},
        std::pair<std::string_view, AttachmentMode>{"host", AttachmentMode::Host},
    };
    auto mode = r.choice("mode", true, attachment_words);
    Attachment attachment;
    if (mode == AttachmentMode::Port) {
        // Optional here: a workload with a "mac" may leave its port's name to the enforcer
        // (checked by the caller, which knows the MAC).
        if (auto name = r.string("interface", false)) {
            attachment.interfaces.push_back(*name);
        }
    } else if (mode == AttachmentMode::Host) {
        attachment.interfaces = r.string_array("interfaces", true, true);
    }
    r.finish();
    if (!mode) {
        return std::nullopt;
    }
    attachment.mode = *mode;
    for (std::size_t i = 0; i < attachment.interfaces.size(); ++i) {
        if (auto ok = check_interface_name(attachment.interfaces[i]); !ok) {
            sink.add(*mode == AttachmentMode::Port ? r.at("interface")
                                                   : pointer_append(r.at("interfaces"), i),
                     DiagnosticCode::InvalidValue, ok.error());
        }
    }
    return attachment;
}

}  // namespace

std::optional<std::uint8_t> icmp_type_number(std::string_view name, Protocol protocol) {
    const auto& table = protocol == Protocol::Icmpv6 ? std::span<const IcmpName>(icmpv6_names)
                                                     : std::span<const IcmpName>(icmp_names);
    for (const auto& entry : table) {
        if (entry.name == name) {
            return entry.type;
        }
    }
    return std::nullopt;
}

std::string icmp_type_name(std::uint8_t type, Protocol protocol) {
    const auto& table = protocol == Protocol::Icmpv6 ? std::span<const IcmpName>(icmpv6_names)
                                                     : std::span<const IcmpName>(icmp_names);
    for (const auto& entry : table) {
        if (entry.type == type) {
            return std::string(entry.name);
        }
    }
    return std::to_string(type);
}

std::string_view to_string(Protocol p) {
    switch (p) {
    case Protocol::Tcp: return "tcp";
    case Protocol::Udp: return "udp";
    case Protocol::Sctp: return "sctp";
    case Protocol::Icmp: return "icmp";
    case Protocol::Icmpv6: return "icmpv6";
    case Protocol::Any: return "any";
    }
    return "?";
}

std::string_view to_string(Severity severity) {
    for (const auto& [word, value] : severity_words) {
        if (value == severity) {
            return word;
        }
    }
    return "?";
}

std::optional<Severity> severity_from_string(std::string_view text) {
    for (const auto& [word, value] : severity_words) {
        if (word == text) {
            return value;
        }
    }
    return std::nullopt;
}

std::string_view to_string(AutoQuarantineMode mode) {
    for (const auto& [word, value] : auto_quarantine_words) {
        if (value == mode) {
            return word;
        }
    }
    return "?";
}

std::uint8_t protocol_number(Protocol p) {
    switch (p) {
    case Protocol::Tcp: return 6;
    case Protocol::Udp: return 17;
    case Protocol::Sctp: return 132;
    case Protocol::Icmp: return 1;
    case Protocol::Icmpv6: return 58;
    case Protocol::Any: return 0;
    }
    return 0;
}

std::expected<Policy, Diagnostics> read_policy(const nlohmann::json& document,
                                               std::string_view document_name) {
    DiagnosticSink sink{std::string(document_name)};
    Policy policy;
    ObjectReader r(document, "", sink, "a policy");
    if (r.valid()) {
        auto policy_name = r.string("name", true);
        policy.name = policy_name.value_or("");
        policy.description = r.string("description", false).value_or("");
        read_defaults(r.member("defaults", false), r.at("defaults"), policy, sink);
        read_services(r.array("services", false), r.at("services"), policy, sink);
        read_segments(r.array("segments", true), r.at("segments"), policy, sink);
        read_rules(r.array("rules", true), r.at("rules"), policy, sink);
        read_quarantine(r.member("quarantine", false), r.at("quarantine"), policy, sink);
        read_response(r.member("response", false), r.at("response"), policy, sink);
        r.finish();
        if (policy_name) {
            check_name(policy.name, r.at("name"), sink);
        }
        check_policy_references(policy, sink);
    }
    if (!sink.empty()) {
        return std::unexpected(sink.take());
    }
    return policy;
}

std::expected<Inventory, Diagnostics> read_inventory(const nlohmann::json& document,
                                                     std::string_view document_name) {
    DiagnosticSink sink{std::string(document_name)};
    Inventory inventory;
    ObjectReader r(document, "", sink, "an inventory");
    if (!r.valid()) {
        return std::unexpected(sink.take());
    }
    const json* enforcers = r.array("enforcers", true);
    const json* workloads = r.array("workloads", true);
    r.finish();

    NameRegistry enforcer_ids("enforcer", sink);
    if (enforcers != nullptr) {
        for (std::size_t i = 0; i < enforcers->size(); ++i) {
            const auto item_pointer = pointer_append(r.at("enforcers"), i);
            ObjectReader er((*enforcers)[i], item_pointer, sink, "an enforcer");
            if (!er.valid()) {
                continue;
            }
            Enforcer enforcer;
            auto enforcer_id = er.string("id", true);
            enforcer.id = enforcer_id.value_or("");
            enforcer.description = er.string("description", false).value_or("");
            er.finish();
            if (enforcer_id) {
                check_name(enforcer.id, er.at("id"), sink);
                enforcer_ids.add(enforcer.id, er.at("id"));
            }
            inventory.enforcers.push_back(std::move(enforcer));
        }
    }

    NameRegistry workload_ids("workload", sink);
    std::unordered_map<std::string, std::string> macs;             // mac -> pointer
    std::map<std::pair<std::string, std::string>, std::string> ports;     // (enforcer, ifname)
    std::map<std::pair<std::string, IpAddress>, std::string> addresses;   // (enforcer, address)
    std::unordered_map<std::string, std::string> host_mode;        // enforcer -> pointer
    if (workloads != nullptr) {
        for (std::size_t i = 0; i < workloads->size(); ++i) {
            const auto item_pointer = pointer_append(r.at("workloads"), i);
            ObjectReader wr((*workloads)[i], item_pointer, sink, "a workload");
            if (!wr.valid()) {
                continue;
            }
            Workload w;
            w.pointer = item_pointer;
            auto workload_id = wr.string("id", true);
            w.id = workload_id.value_or("");
            auto enforcer_reference = wr.string("enforcer", false);
            w.enforcer = enforcer_reference.value_or("");
            const json* address_list = wr.array("addresses", true);
            auto mac = wr.string("mac", false);
            const json* labels = wr.member("labels", false);
            w.user = wr.string("user", false).value_or("");
            w.hostname = wr.string("hostname", false).value_or("");
            w.critical = wr.boolean("critical").value_or(false);
            const json* attachment = wr.member("attachment", false);
            wr.finish();

            if (workload_id) {
                check_name(w.id, wr.at("id"), sink);
                workload_ids.add(w.id, wr.at("id"));
            }
            if (enforcer_reference && !enforcer_ids.contains(w.enforcer)) {
                sink.add(wr.at("enforcer"), DiagnosticCode::UnknownReference,
                         "unknown enforcer \"" + w.enforcer + "\"");
            }
            if (address_list != nullptr) {
                if (address_list->empty()) {
                    sink.add(wr.at("addresses"), DiagnosticCode::InvalidValue,
                             "a workload needs at least one address");
                }
                for (std::size_t a = 0; a < address_list->size(); ++a) {
                    const auto& item = (*address_list)[a];
                    const auto a_pointer = pointer_append(wr.at("addresses"), a);
                    if (!item.is_string()) {
                        sink.add(a_pointer, DiagnosticCode::WrongType,
                                 "addresses are strings, not " + std::string(type_name(item)));
                        continue;
                    }
                    auto address = parse_ip_address(item.get<std::string>());
                    if (!address) {
                        sink.add(a_pointer, DiagnosticCode::InvalidAddress, address.error());
                        continue;
                    }
                    // Colliding private addresses behind *different* enforcers are normal
                    // (home and office networks); behind one enforcer they are a mistake.
                    auto [it, inserted] =
                        addresses.emplace(std::pair{w.enforcer, *address}, a_pointer);
                    if (!inserted && !w.enforcer.empty()) {
                        sink.add(a_pointer, DiagnosticCode::Conflict,
                                 "address " + to_string(*address) + " is already used at " +
                                     it->second + " behind the same enforcer");
                    }
                    w.addresses.push_back(*address);
                }
            }
            if (mac) {
                auto normalized = normalize_mac(*mac);
                if (!normalized) {
                    sink.add(wr.at("mac"), DiagnosticCode::InvalidValue, normalized.error());
                } else {
                    w.mac = *normalized;
                    auto [it, inserted] = macs.emplace(w.mac, wr.at("mac"));
                    if (!inserted) {
                        sink.add(wr.at("mac"), DiagnosticCode::Conflict,
                                 "MAC " + w.mac + " is already used at " + it->second);
                    }
                }
            }
            if (labels != nullptr) {
                if (!labels->is_object()) {
                    sink.add(wr.at("labels"), DiagnosticCode::WrongType,
                             "labels are an object of strings, not " +
                                 std::string(type_name(*labels)));
                } else {
                    for (const auto& [key, value] : labels->items()) {
                        if (!value.is_string()) {
                            sink.add(pointer_append(wr.at("labels"), key),
                                     DiagnosticCode::WrongType,
                                     "label values are strings, not " +
                                         std::string(type_name(value)));
                            continue;
                        }
                        w.labels[key] = value.get<std::string>();
                    }
                }
            }
            if (attachment != nullptr) {
                w.attachment = read_attachment(*attachment, wr.at("attachment"), sink);
                const bool names_interface = attachment->is_object() && attachment->contains("interface");
                if (w.attachment && w.attachment->mode == AttachmentMode::Port && !names_interface) {
                    if (!w.mac.empty()) {
                        // Bound by MAC: the enforcer finds the port's current name.
                        w.attachment->interfaces.push_back(mac_port_name(w.mac));
                    } else if (!mac) {
                        sink.add(wr.at("attachment"), DiagnosticCode::MissingField,
                                 "required member \"interface\" is missing (or give the workload a "
                                 "\"mac\" to bind its port by MAC)");
                    }
                }
                if (w.enforcer.empty()) {
                    sink.add(wr.at("attachment"), DiagnosticCode::MissingField,
                             "an attached workload needs an \"enforcer\"");
                }
            } else if (!w.enforcer.empty()) {
                sink.add(item_pointer, DiagnosticCode::MissingField,
                         "a workload behind an enforcer needs an \"attachment\"");
            }
            if (w.attachment && !w.enforcer.empty()) {
                for (std::size_t n = 0; n < w.attachment->interfaces.size(); ++n) {
                    auto [it, inserted] = ports.emplace(
                        std::pair{w.enforcer, w.attachment->interfaces[n]}, wr.at("attachment"));
                    if (!inserted) {
                        sink.add(wr.at("attachment"), DiagnosticCode::Conflict,
                                 "interface \"" + w.attachment->interfaces[n] +
                                     "\" on enforcer \"" + w.enforcer + "\" is already used at " +
                                     it->second);
                    }
                }
                if (w.attachment->mode == AttachmentMode::Host) {
                    auto [it, inserted] = host_mode.emplace(w.enforcer, wr.at("attachment"));
                    if (!inserted) {
                        sink.add(wr.at("attachment"), DiagnosticCode::Conflict,
                                 "enforcer \"" + w.enforcer +
                                     "\" already protects a host-mode workload at " + it->second);
                    }
                }
            }
            inventory.workloads.push_back(std::move(w));
        }
    }
    if (!sink.empty()) {
        return std::unexpected(sink.take());
    }
    return inventory;
}

std::expected<Policy, Diagnostics> parse_policy(std::string_view text,
                                                std::string_view document_name,
                                                JsonReadLimits limits) {
    auto document = read_json(text, document_name, limits);
    if (!document) {
        return std::unexpected(document.error());
    }
    return read_policy(*document, document_name);
}

std::expected<Inventory, Diagnostics> parse_inventory(std::string_view text,
                                                      std::string_view document_name,
                                                      JsonReadLimits limits) {
    auto document = read_json(text, document_name, limits);
    if (!document) {
        return std::unexpected(document.error());
    }
    return read_inventory(*document, document_name);
}

Diagnostics cross_check(const Policy& policy, const Inventory& inventory,
                        std::string_view policy_name) {
    DiagnosticSink sink{std::string(policy_name)};
    std::unordered_set<std::string> ids;
    for (const auto& w : inventory.workloads) {
        ids.insert(w.id);
    }
    for (const auto& segment : policy.segments) {
        const auto base = pointer_append(pointer_append(segment.pointer, "selector"), "workloads");
        for (std::size_t i = 0; i < segment.selector.workloads.size(); ++i) {
            if (!ids.contains(segment.selector.workloads[i])) {
                sink.add(pointer_append(base, i), DiagnosticCode::UnknownReference,
                         "unknown workload \"" + segment.selector.workloads[i] +
                             "\" (not in the inventory)");
            }
        }
    }
    return sink.take();
}

}  // namespace bulkhead::policy
