#include "policies/policy_reader.hpp"

#include "test_support.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

using namespace bulkhead::policy;
using namespace std::string_literals;
using nlohmann::ordered_json;
using bulkhead::test::read_source_file;

namespace {

// The examples, as ordered JSON so that an edited copy keeps the member order (and so the
// order of diagnostics) of the file.
const ordered_json& example_policy() {
    static const ordered_json doc =
        ordered_json::parse(read_source_file("examples/vdi-pool/policy.json"));
    return doc;
}
const ordered_json& example_inventory() {
    static const ordered_json doc =
        ordered_json::parse(read_source_file("examples/vdi-pool/inventory.json"));
    return doc;
}

std::string describe(const Diagnostics& diagnostics) {
    std::string out;
    for (const auto& d : diagnostics) {
        out += format_diagnostic(d) + "\n";
    }
    return out.empty() ? "(no diagnostics)" : out;
}

std::string located(const Diagnostic& d) {
    return (d.pointer.empty() ? "(document root)"s : d.pointer) + ": " +
           std::string(to_string(d.code));
}

std::vector<std::string> located(const Diagnostics& diagnostics) {
    std::vector<std::string> out;
    for (const auto& d : diagnostics) {
        out.push_back(located(d));
    }
    return out;
}

bool contains(std::string_view haystack, std::string_view needle) {
    return haystack.find(needle) != std::string_view::npos;
}

using Edit = std::function<void(ordered_json&)>;

// Diagnostics of the example policy after `edit`, read the way the CLI reads it (text).
Diagnostics policy_errors(const Edit& edit) {
    ordered_json doc = example_policy();
    edit(doc);
    auto result = parse_policy(doc.dump(), "policy.json");
    return result ? Diagnostics{} : result.error();
}

Diagnostics inventory_errors(const Edit& edit) {
    ordered_json doc = example_inventory();
    edit(doc);
    auto result = parse_inventory(doc.dump(), "inventory.json");
    return result ? Diagnostics{} : result.error();
}

Diagnostics policy_text_errors(std::string_view text) {
    auto result = parse_policy(text, "policy.json");
    return result ? Diagnostics{} : result.error();
}

Diagnostics inventory_text_errors(std::string_view text) {
    auto result = parse_inventory(text, "inventory.json");
    return result ? Diagnostics{} : result.error();
}

// Exactly one diagnostic: `where` ("POINTER: code") and a message holding `fragment`.
void check_only(const Diagnostics& diagnostics, const std::string& where,
                std::string_view fragment) {
    INFO(describe(diagnostics));
    REQUIRE(diagnostics.size() == 1);
    CHECK(located(diagnostics[0]) == where);
    CHECK(contains(diagnostics[0].message, fragment));
}

// A document that must be accepted.
void check_none(const Diagnostics& diagnostics) {
    CHECK(describe(diagnostics) == "(no diagnostics)");
}

// At least this diagnostic among others.
void check_has(const Diagnostics& diagnostics, const std::string& where,
               std::string_view fragment) {
    INFO(describe(diagnostics));
    const bool found = std::any_of(diagnostics.begin(), diagnostics.end(), [&](const auto& d) {
        return located(d) == where && contains(d.message, fragment);
    });
    CHECK_MESSAGE(found, "expected " << where << " with \"" << fragment << "\"");
}

Edit set(const std::string& pointer, ordered_json value) {
    return [pointer, value](ordered_json& doc) { doc[ordered_json::json_pointer(pointer)] = value; };
}

Edit erase(const std::string& parent, const std::string& key) {
    return [parent, key](ordered_json& doc) {
        (parent.empty() ? doc : doc[ordered_json::json_pointer(parent)]).erase(key);
    };
}

// Renames a member in place (a typo keeps its position in the object).
Edit rename(const std::string& parent, const std::string& from, const std::string& to) {
    return [parent, from, to](ordered_json& doc) {
        auto& object = parent.empty() ? doc : doc[ordered_json::json_pointer(parent)];
        ordered_json renamed = ordered_json::object();
        for (auto& [key, value] : object.items()) {
            renamed[key == from ? to : key] = value;
        }
        object = std::move(renamed);
    };
}

Edit append(const std::string& pointer, ordered_json value) {
    return [pointer, value](ordered_json& doc) {
        doc[ordered_json::json_pointer(pointer)].push_back(value);
    };
}

Edit both(Edit a, Edit b) {
    return [a, b](ordered_json& doc) {
        a(doc);
        b(doc);
    };
}

const std::string kPort = "/services/0/entries/0/ports/0";  // smb's 445

}  // namespace

// ---------------------------------------------------------------------------------------
// Diagnostics as values

TEST_CASE("diagnostics: every code has a stable distinct name") {
    const std::vector<std::pair<DiagnosticCode, std::string_view>> names{
        {DiagnosticCode::Syntax, "syntax"},
        {DiagnosticCode::TooLarge, "too-large"},
        {DiagnosticCode::TooDeep, "too-deep"},
        {DiagnosticCode::DuplicateKey, "duplicate-key"},
        {DiagnosticCode::MissingField, "missing-field"},
        {DiagnosticCode::UnknownField, "unknown-field"},
        {DiagnosticCode::WrongType, "wrong-type"},
        {DiagnosticCode::InvalidValue, "invalid-value"},
        {DiagnosticCode::DuplicateName, "duplicate-name"},
        {DiagnosticCode::UnknownReference, "unknown-reference"},
        {DiagnosticCode::InvalidAddress, "invalid-address"},
        {DiagnosticCode::InvalidPort, "invalid-port"},
        {DiagnosticCode::ReversedRange, "reversed-range"},
        {DiagnosticCode::EmptySelector, "empty-selector"},
        {DiagnosticCode::Conflict, "conflict"},
    };
    for (const auto& [code, name] : names) {
        CHECK(to_string(code) == name);
    }
}

TEST_CASE("diagnostics: pointers escape tilde and slash and format with the document name") {
    CHECK(pointer_append("/labels", "a/b~c") == "/labels/a~1b~0c");
    CHECK(pointer_append("", std::size_t{3}) == "/3");
    CHECK(format_diagnostic({"/rules/3/to/0", DiagnosticCode::UnknownReference,
                             "unknown segment \"x\"", "policy.json"}) ==
          "policy.json: /rules/3/to/0: unknown-reference: unknown segment \"x\"");
    CHECK(format_diagnostic({"", DiagnosticCode::Syntax, "bad", ""}) ==
          "(document root): syntax: bad");
    const auto j = diagnostics_to_json({{"/a", DiagnosticCode::Conflict, "m", "doc"}});
    CHECK(j.dump() == R"([{"code":"conflict","document":"doc","message":"m","pointer":"/a"}])");
}

// ---------------------------------------------------------------------------------------
// The examples parse into the model

TEST_CASE("policy reader: the vdi-pool example parses into the model") {
    auto policy = parse_policy(read_source_file("examples/vdi-pool/policy.json"));
    INFO((policy ? ""s : describe(policy.error())));
    REQUIRE(policy.has_value());

    CHECK(policy->name == "vdi-pool");
    CHECK(contains(policy->description, "per-VDI firewalls"));
    CHECK(policy->defaults.action == DefaultAction::Deny);
    CHECK(policy->defaults.mode == Mode::Enforce);
    CHECK(policy->defaults.log_drops);
    CHECK(policy->defaults.log_group == 10);
    CHECK(policy->defaults.log_allowed);
    CHECK(policy->defaults.allowed_log_group == 11);

    REQUIRE(policy->services.size() == 6);
    const auto& smb = policy->services[0];
    CHECK(smb.name == "smb");
    CHECK(smb.pointer == "/services/0");
    REQUIRE(smb.entries.size() == 1);
    CHECK(smb.entries[0].protocol == Protocol::Tcp);
    CHECK(smb.entries[0].ports == std::vector<NumberRange>{{445, 445}});
    CHECK(smb.entries[0].icmp_types.empty());

    const auto& dns = policy->services[1];
    REQUIRE(dns.entries.size() == 2);
    CHECK(dns.entries[0].protocol == Protocol::Udp);
    CHECK(dns.entries[1].protocol == Protocol::Tcp);
    CHECK(dns.entries[1].ports == std::vector<NumberRange>{{53, 53}});

    const auto& edr = policy->services[4];
    CHECK(edr.name == "edr");
    CHECK(edr.entries[0].ports == std::vector<NumberRange>{{443, 443}, {8443, 8444}});

    const auto& ping = policy->services[5];
    REQUIRE(ping.entries.size() == 2);
    CHECK(ping.entries[0].protocol == Protocol::Icmp);
    CHECK(ping.entries[0].icmp_types == std::vector<NumberRange>{{8, 8}});
    CHECK(ping.entries[0].ports.empty());
    CHECK(ping.entries[1].protocol == Protocol::Icmpv6);
    CHECK(ping.entries[1].icmp_types == std::vector<NumberRange>{{128, 128}});

    REQUIRE(policy->segments.size() == 6);
    const auto& vdi = policy->segments[0];
    CHECK(vdi.name == "vdi");
    CHECK(vdi.description == "Every virtual desktop");
    CHECK_FALSE(vdi.decoy);
    CHECK(vdi.pointer == "/segments/0");
    CHECK(vdi.selector.labels == std::map<std::string, std::vector<std::string>>{{"role", {"vdi"}}});
    CHECK(vdi.selector.workloads.empty());
    CHECK(vdi.selector.cidrs.empty());
    const auto& proxy = policy->segments[3];
    CHECK(proxy.name == "proxy");
    REQUIRE(proxy.selector.cidrs.size() == 2);
    CHECK(to_string(proxy.selector.cidrs[0]) == "10.0.0.10");
    CHECK(proxy.selector.cidrs[0].prefix_length() == 32);
    CHECK(to_string(proxy.selector.cidrs[1]) == "fd00:0:0:1::10");
    CHECK(proxy.selector.cidrs[1].family() == Family::Ipv6);
    CHECK(proxy.selector.labels.empty());

    REQUIRE(policy->rules.size() == 6);
    const auto& first = policy->rules[0];
    CHECK(first.name == "vdi-to-file-servers");
    CHECK(first.action == RuleAction::Allow);
    CHECK(first.from == std::vector<std::string>{"vdi"});
    CHECK(first.to == std::vector<std::string>{"file-servers"});
    CHECK(first.services == std::vector<std::string>{"smb", "ping"});
    CHECK(first.pointer == "/rules/0");
    const auto& last = policy->rules[5];
    CHECK(last.name == "no-vdi-to-vdi");
    CHECK(last.action == RuleAction::Deny);
    CHECK(last.services == std::vector<std::string>{"any"});
    CHECK(last.description == "Never, even if a later rule allows it");

    REQUIRE(policy->quarantine.allow.size() == 2);
    CHECK(policy->quarantine.allow[0].segments == std::vector<std::string>{"edr"});
    CHECK(policy->quarantine.allow[0].services == std::vector<std::string>{"edr"});
    CHECK(policy->quarantine.allow[0].pointer == "/quarantine/allow/0");
    CHECK(policy->quarantine.allow[1].segments == std::vector<std::string>{"dns"});
    REQUIRE(policy->quarantine.allow_from.size() == 1);
    CHECK(policy->quarantine.allow_from[0].segments == std::vector<std::string>{"admin-terminals"});
    CHECK(policy->quarantine.allow_from[0].services == std::vector<std::string>{"rdp"});
    CHECK(policy->quarantine.allow_from[0].pointer == "/quarantine/allow_from/0");
}

TEST_CASE("inventory reader: the vdi-pool example parses into the model") {
    auto inventory = parse_inventory(read_source_file("examples/vdi-pool/inventory.json"));
    INFO((inventory ? ""s : describe(inventory.error())));
    REQUIRE(inventory.has_value());

    REQUIRE(inventory->enforcers.size() == 2);
    CHECK(inventory->enforcers[0].id == "hv1");
    CHECK(inventory->enforcers[0].description == "Hypervisor 1");
    CHECK(inventory->enforcers[1].id == "hv2");

    REQUIRE(inventory->workloads.size() == 7);
    const auto& w = inventory->workloads[0];
    CHECK(w.id == "vdi-001");
    CHECK(w.enforcer == "hv1");
    CHECK(w.pointer == "/workloads/0");
    REQUIRE(w.addresses.size() == 2);
    CHECK(to_string(w.addresses[0]) == "10.1.0.1");
    CHECK(w.addresses[0].family == Family::Ipv4);
    CHECK(to_string(w.addresses[1]) == "fd00:0:0:10::1");
    CHECK(w.addresses[1].family == Family::Ipv6);
    CHECK(w.mac == "52:54:00:01:00:01");
    CHECK(w.labels == std::map<std::string, std::string>{{"pool", "sales"}, {"role", "vdi"}});
    CHECK(w.user == "kimura");
    CHECK(w.hostname == "VDI-001");
    CHECK_FALSE(w.critical);
    REQUIRE(w.attachment.has_value());
    CHECK(w.attachment->mode == AttachmentMode::Port);
    CHECK(w.attachment->interfaces == std::vector<std::string>{"vdi001"});

    const auto& fs = inventory->workloads[6];
    CHECK(fs.id == "fs-01");
    CHECK(fs.enforcer.empty());  // unmanaged peer
    CHECK_FALSE(fs.attachment.has_value());
    CHECK(fs.critical);
    CHECK(fs.mac.empty());
    CHECK(fs.labels.at("role") == "file-server");
}

TEST_CASE("policy reader: the vdi-pool example passes the cross-check with its inventory") {
    auto policy = parse_policy(read_source_file("examples/vdi-pool/policy.json"));
    auto inventory = parse_inventory(read_source_file("examples/vdi-pool/inventory.json"));
    REQUIRE(policy.has_value());
    REQUIRE(inventory.has_value());
    CHECK(describe(cross_check(*policy, *inventory)) == "(no diagnostics)");
}

TEST_CASE("policy reader: accepted values cover the whole documented ranges") {
    SUBCASE("port boundaries and ranges") {
        ordered_json doc = example_policy();
        doc["services"][0]["entries"][0]["ports"] = {0, 65535, "0-65535", "137-139", "80"};
        auto policy = parse_policy(doc.dump());
        INFO((policy ? ""s : describe(policy.error())));
        REQUIRE(policy.has_value());
        CHECK(policy->services[0].entries[0].ports ==
              std::vector<NumberRange>{{0, 0}, {65535, 65535}, {0, 65535}, {137, 139}, {80, 80}});
    }
    SUBCASE("a service entry without ports means every port") {
        ordered_json doc = example_policy();
        doc["services"][0]["entries"][0].erase("ports");
        auto policy = parse_policy(doc.dump());
        REQUIRE(policy.has_value());
        CHECK(policy->services[0].entries[0].ports.empty());
    }
    SUBCASE("ICMP types by number and by name; any protocol") {
        ordered_json doc = example_policy();
        doc["services"][5]["entries"][0]["types"] = {0, 255, "time-exceeded"};
        doc["services"][5]["entries"][1]["types"] = {"nd-neighbor-solicit"};
        doc["services"].push_back({{"name", "all"}, {"entries", {{{"protocol", "any"}}}}});
        auto policy = parse_policy(doc.dump());
        INFO((policy ? ""s : describe(policy.error())));
        REQUIRE(policy.has_value());
        CHECK(policy->services[5].entries[0].icmp_types ==
              std::vector<NumberRange>{{0, 0}, {255, 255}, {11, 11}});
        CHECK(policy->services[5].entries[1].icmp_types == std::vector<NumberRange>{{135, 135}});
        CHECK(policy->services[6].entries[0].protocol == Protocol::Any);
    }
    SUBCASE("label selectors with a list of values, workload selectors, monitor mode") {
        ordered_json doc = example_policy();
        doc["segments"][0]["selector"] = {{"labels", {{"role", {"vdi", "kiosk"}}, {"pool", "dev"}}},
                                          {"workloads", {"vdi-001"}}};
        doc["defaults"]["mode"] = "monitor";
        doc["defaults"]["action"] = "allow";
        auto policy = parse_policy(doc.dump());
        INFO((policy ? ""s : describe(policy.error())));
        REQUIRE(policy.has_value());
        CHECK(policy->segments[0].selector.labels.at("role") ==
              std::vector<std::string>{"vdi", "kiosk"});
        CHECK(policy->segments[0].selector.labels.at("pool") == std::vector<std::string>{"dev"});
        CHECK(policy->segments[0].selector.workloads == std::vector<std::string>{"vdi-001"});
        CHECK(policy->defaults.mode == Mode::Monitor);
        CHECK(policy->defaults.action == DefaultAction::Allow);
    }
    SUBCASE("the free members $schema and comment are allowed everywhere") {
        auto ds = policy_errors([](ordered_json& doc) {
            doc["comment"] = "top";
            doc["rules"][0]["comment"] = "why this rule exists";
            doc["segments"][0]["selector"]["comment"] = "who";
            doc["defaults"]["$schema"] = "x";
        });
        CHECK(describe(ds) == "(no diagnostics)");
    }
}

// ---------------------------------------------------------------------------------------
// JSON-level problems surface through parse_policy / parse_inventory

TEST_CASE("policy reader: syntax, size, depth and duplicate keys surface from parse_policy") {
    SUBCASE("syntax") {
        check_only(policy_text_errors(R"({"name": "x", "segments": [], "rules": [)"),
                   "/rules/0: syntax", "line 1, column 41");
    }
    SUBCASE("too large") {
        auto result = parse_policy(read_source_file("examples/vdi-pool/policy.json"), "policy.json",
                                   JsonReadLimits{.max_bytes = 100});
        REQUIRE_FALSE(result.has_value());
        check_only(result.error(), "(document root): too-large", "the limit is 100");
        CHECK(result.error()[0].document == "policy.json");
    }
    SUBCASE("the deepest valid policy is 6 levels") {
        const auto text = read_source_file("examples/vdi-pool/policy.json");
        CHECK(parse_policy(text, "policy.json", JsonReadLimits{.max_depth = 6}).has_value());
        auto result = parse_policy(text, "policy.json", JsonReadLimits{.max_depth = 5});
        REQUIRE_FALSE(result.has_value());
        check_only(result.error(), "/services/0/entries/0/ports: too-deep", "deeper than 5");
    }
    SUBCASE("a duplicate key stops the schema checks") {
        check_only(policy_text_errors(
                       R"({"name": "x", "segments": [], "rules": [], "name": 5, "bogus": 1})"),
                   "/name: duplicate-key", R"(key "name")");
    }
    SUBCASE("inventory: syntax") {
        check_only(inventory_text_errors("{\"enforcers\": [],\n \"workloads\": [}"),
                   "/workloads/0: syntax", "line 2, column 16");
    }
}

// ---------------------------------------------------------------------------------------
// Policy validation, one diagnostic code at a time

TEST_CASE("policy reader: missing required members are reported at the object that lacks them") {
    SUBCASE("policy name") {
        check_only(policy_errors(erase("", "name")), "(document root): missing-field",
                   R"(required member "name" is missing)");
    }
    SUBCASE("segments and rules: both reported") {
        auto ds = policy_text_errors(R"({"name": "x"})");
        INFO(describe(ds));
        CHECK(located(ds) == std::vector<std::string>{"(document root): missing-field",
                                                      "(document root): missing-field"});
        check_has(ds, "(document root): missing-field", R"("segments")");
        check_has(ds, "(document root): missing-field", R"("rules")");
    }
    SUBCASE("rule action") {
        check_only(policy_errors(erase("/rules/5", "action")), "/rules/5: missing-field",
                   R"(required member "action" is missing)");
    }
    SUBCASE("rule from") {
        check_only(policy_errors(erase("/rules/1", "from")), "/rules/1: missing-field",
                   R"("from")");
    }
    SUBCASE("service entries") {
        check_only(policy_errors(erase("/services/2", "entries")), "/services/2: missing-field",
                   R"("entries")");
    }
    SUBCASE("entry protocol") {
        check_only(policy_errors(erase("/services/1/entries/1", "protocol")),
                   "/services/1/entries/1: missing-field", R"("protocol")");
    }
    SUBCASE("segment selector") {
        check_only(policy_errors(erase("/segments/2", "selector")), "/segments/2: missing-field",
                   R"("selector")");
    }
    SUBCASE("quarantine grant: allow needs to, allow_from needs from") {
        check_only(policy_errors(erase("/quarantine/allow/1", "to")),
                   "/quarantine/allow/1: missing-field", R"("to")");
        check_only(policy_errors(erase("/quarantine/allow_from/0", "from")),
                   "/quarantine/allow_from/0: missing-field", R"("from")");
    }
}

TEST_CASE("policy reader: unknown members are reported so that typos cannot pass") {
    SUBCASE("acton instead of action") {
        auto ds = policy_errors(rename("/rules/5", "action", "acton"));
        INFO(describe(ds));
        CHECK(located(ds) == std::vector<std::string>{"/rules/5: missing-field",
                                                      "/rules/5/acton: unknown-field"});
        check_has(ds, "/rules/5/acton: unknown-field", R"(unknown member "acton")");
    }
    SUBCASE("top level") {
        check_only(policy_errors(set("/segmnets", ordered_json::array())),
                   "/segmnets: unknown-field", R"("segmnets")");
    }
    SUBCASE("defaults") {
        check_only(policy_errors(rename("/defaults", "log_group", "log_grp")),
                   "/defaults/log_grp: unknown-field", R"("log_grp")");
    }
    SUBCASE("service entry: port instead of ports") {
        check_only(policy_errors(rename("/services/0/entries/0", "ports", "port")),
                   "/services/0/entries/0/port: unknown-field", R"("port")");
    }
    SUBCASE("selector: label instead of labels leaves an empty selector") {
        auto ds = policy_errors(rename("/segments/1/selector", "labels", "label"));
        INFO(describe(ds));
        CHECK(located(ds) == std::vector<std::string>{"/segments/1/selector/label: unknown-field",
                                                      "/segments/1/selector: empty-selector"});
    }
    SUBCASE("quarantine") {
        check_only(policy_errors(set("/quarantine/deny", ordered_json::array())),
                   "/quarantine/deny: unknown-field", R"("deny")");
    }
    SUBCASE("a key needing escapes is escaped in the pointer") {
        check_only(policy_errors(set("/rules/0/a~1b", 1)), "/rules/0/a~1b: unknown-field",
                   R"(unknown member "a/b")");
    }
}

TEST_CASE("policy reader: values of the wrong JSON type are reported at their pointer") {
    struct Case {
        std::string pointer;
        ordered_json value;
        const char* fragment;
    };
    const std::vector<Case> cases{
        {"/name", 7, "must be a string, not integer"},
        {"/description", false, "must be a string, not boolean"},
        {"/defaults", ordered_json::array({"deny"}), R"("defaults" must be an object, not array)"},
        {"/defaults/log_drops", 1, "must be true or false, not integer"},
        {"/defaults/log_group", "10", "must be an integer, not string"},
        {"/defaults/log_group", 10.5, "must be an integer, not number"},
        {"/defaults/action", 0, "must be a string, not integer"},
        {"/services", ordered_json::object(), "must be an array, not object"},
        {"/services/0/entries/0", "tcp/445", "a service entry must be an object, not string"},
        {"/services/0/entries/0/ports", 445, "must be an array, not integer"},
        {"/services/5/entries/0/types/0", true, "ICMP type must be an integer or a"},
        {"/segments/0", "vdi", "a segment must be an object, not string"},
        {"/segments/0/decoy", "true", "must be true or false, not string"},
        {"/segments/0/selector", ordered_json::array(), "a selector must be an object, not array"},
        {"/segments/0/selector/labels", ordered_json::array({"vdi"}),
         "must be an object of label: value (or [values]), not array"},
        {"/segments/0/selector/labels/role", ordered_json::object(),
         "a label value is a string or an array of strings, not object"},
        {"/segments/0/selector/labels/role", ordered_json::array({"vdi", 1}),
         "label values are strings, not integer"},
        {"/segments/3/selector/cidrs/0", 167772170, "CIDR blocks are strings, not integer"},
        {"/segments/3/selector/cidrs", "10.0.0.10/32", "must be an array, not string"},
        {"/rules", ordered_json::object(), "must be an array, not object"},
        {"/rules/1", ordered_json::array({"vdi"}), "a rule must be an object, not array"},
        {"/rules/1/from", "vdi", "must be an array, not string"},
        {"/rules/1/services", nullptr, "must be an array, not null"},
        {"/quarantine", ordered_json::array(), R"("quarantine" must be an object, not array)"},
        {"/quarantine/allow", ordered_json::object(), "must be an array, not object"},
        {"/quarantine/allow/0", "edr", "a quarantine grant must be an object, not string"},
        {kPort, true, R"(port must be an integer or a "low-high" string, not boolean)"},
        {kPort, nullptr, "not null"},
        {kPort, 1.5, "not number"},
        {kPort, ordered_json::object({{"from", 1}}), "not object"},
    };
    for (const auto& c : cases) {
        CAPTURE(c.pointer);
        CAPTURE(c.value.dump());
        auto ds = policy_errors(set(c.pointer, c.value));
        // The element with the wrong type is reported; references to what it would have
        // defined may follow, but the type error comes first and at the exact pointer.
        INFO(describe(ds));
        REQUIRE_FALSE(ds.empty());
        std::string where = c.pointer;
        if (c.value.is_array() && c.pointer == "/segments/0/selector/labels/role") {
            where += "/1";
        }
        CHECK(located(ds[0]) == where + ": wrong-type");
        CHECK(contains(ds[0].message, c.fragment));
    }
}

TEST_CASE("policy reader: wrong-type diagnostics do not cascade into unrelated ones") {
    check_only(policy_errors(set("/segments/0/decoy", "true")), "/segments/0/decoy: wrong-type",
               "true or false");
    check_only(policy_errors(set("/rules/1/from/0", 42)), "/rules/1/from/0: wrong-type",
               "must be a string, not integer");
    check_only(policy_text_errors(R"(["not", "a", "policy"])"), "(document root): wrong-type",
               "a policy must be an object, not array");
    check_only(policy_text_errors("null"), "(document root): wrong-type", "not null");
}

TEST_CASE("policy reader: invalid values of the right type are invalid-value") {
    SUBCASE("rule action") {
        check_only(policy_errors(set("/rules/0/action", "permit")), "/rules/0/action: invalid-value",
                   R"("permit" is not one of: allow, deny)");
    }
    SUBCASE("protocol is case-sensitive") {
        check_only(policy_errors(set("/services/0/entries/0/protocol", "TCP")),
                   "/services/0/entries/0/protocol: invalid-value",
                   R"("TCP" is not one of: tcp, udp, sctp, icmp, icmpv6, any)");
    }
    SUBCASE("default action and mode") {
        check_only(policy_errors(set("/defaults/action", "reject")), "/defaults/action: invalid-value",
                   R"("reject" is not one of: deny, allow)");
        check_only(policy_errors(set("/defaults/mode", "audit")), "/defaults/mode: invalid-value",
                   R"("audit" is not one of: enforce, monitor)");
    }
    SUBCASE("NFLOG groups are 16 bits") {
        check_only(policy_errors(set("/defaults/log_group", 65536)), "/defaults/log_group: invalid-value",
                   "must be between 0 and 65535, got 65536");
        check_only(policy_errors(set("/defaults/allowed_log_group", -1)),
                   "/defaults/allowed_log_group: invalid-value", "got -1");
    }
    SUBCASE("names") {
        check_only(policy_errors(set("/rules/2/name", "vdi to dns")), "/rules/2/name: invalid-value",
                   R"("vdi to dns" is not a valid name (1-64 characters of A-Z a-z 0-9 - _ .))");
        check_only(policy_errors(set("/name", std::string(65, 'p'))), "/name: invalid-value",
                   "is not a valid name");
        check_none(policy_errors(set("/rules/2/name", std::string(64, 'r'))));
    }
    SUBCASE("ports only for port protocols, types only for ICMP") {
        check_only(policy_errors(set("/services/5/entries/0/ports", {7})),
                   "/services/5/entries/0/ports: invalid-value",
                   R"("ports" only applies to tcp, udp and sctp, not icmp)");
        check_only(policy_errors(set("/services/0/entries/0/types", {8})),
                   "/services/0/entries/0/types: invalid-value",
                   R"("types" only applies to icmp and icmpv6, not tcp)");
    }
    SUBCASE("empty lists") {
        check_only(policy_errors(set("/services/0/entries/0/ports", ordered_json::array())),
                   "/services/0/entries/0/ports: invalid-value", R"(omit "ports" to mean every port)");
        check_only(policy_errors(set("/services/5/entries/1/types", ordered_json::array())),
                   "/services/5/entries/1/types: invalid-value", R"(omit "types")");
        check_only(policy_errors(set("/services/2/entries", ordered_json::array())),
                   "/services/2/entries: invalid-value", "a service needs at least one entry");
        check_only(policy_errors(set("/rules/3/to", ordered_json::array())),
                   "/rules/3/to: invalid-value", "must not be empty");
        check_only(policy_errors(set("/quarantine/allow/0/services", ordered_json::array())),
                   "/quarantine/allow/0/services: invalid-value", "must not be empty");
    }
    SUBCASE("port strings that are not numbers") {
        for (const char* text : {"http", "", "-5", "80-", "+80", " 80", "0x50", "1-2-3"}) {
            CAPTURE(text);
            check_only(policy_errors(set(kPort, text)), kPort + ": invalid-value",
                       R"(is not a port or a "low-high" range)");
        }
    }
    SUBCASE("ICMP types") {
        check_only(policy_errors(set("/services/5/entries/0/types/0", 256)),
                   "/services/5/entries/0/types/0: invalid-value", "ICMP type 256 is outside 0..255");
        check_only(policy_errors(set("/services/5/entries/0/types/0", "ping")),
                   "/services/5/entries/0/types/0: invalid-value",
                   R"("ping" is not a known icmp type name)");
        // An ICMPv6 name is not an ICMP name.
        check_only(policy_errors(set("/services/5/entries/0/types/0", "nd-router-advert")),
                   "/services/5/entries/0/types/0: invalid-value", "not a known icmp type name");
    }
}

TEST_CASE("policy reader: duplicate names are reported at the second definition") {
    SUBCASE("service") {
        auto ds = policy_errors(append("/services", {{"name", "dns"},
                                                     {"entries", {{{"protocol", "tcp"}}}}}));
        check_only(ds, "/services/6/name: duplicate-name",
                   R"(service "dns" is already defined at /services/1/name)");
    }
    SUBCASE("segment") {
        auto ds = policy_errors(append("/segments", {{"name", "proxy"},
                                                     {"selector", {{"cidrs", {"10.0.0.11/32"}}}}}));
        check_only(ds, "/segments/6/name: duplicate-name",
                   R"(segment "proxy" is already defined at /segments/3/name)");
    }
    SUBCASE("rule") {
        check_only(policy_errors(set("/rules/4/name", "vdi-to-dns")),
                   "/rules/4/name: duplicate-name",
                   R"(rule "vdi-to-dns" is already defined at /rules/2/name)");
    }
    SUBCASE("the built-in service any") {
        auto ds = policy_errors(append("/services", {{"name", "any"},
                                                     {"entries", {{{"protocol", "tcp"}}}}}));
        check_only(ds, "/services/6/name: duplicate-name",
                   R"("any" is the built-in service for all traffic and cannot be redefined)");
    }
    SUBCASE("a service and a segment may share a name") {
        // "dns" and "proxy" already name both a service and a segment in the example.
        check_none(policy_errors([](ordered_json&) {}));
    }
}

TEST_CASE("policy reader: unknown segment in a rule is reported at its pointer") {
    SUBCASE("from") {
        check_only(policy_errors(set("/rules/4/from/0", "admin-terminal")),
                   "/rules/4/from/0: unknown-reference", R"(unknown segment "admin-terminal")");
    }
    SUBCASE("to, second element") {
        check_only(policy_errors(set("/rules/5/to", {"vdi", "vdis"})),
                   "/rules/5/to/1: unknown-reference", R"(unknown segment "vdis")");
    }
    SUBCASE("quarantine allow to") {
        check_only(policy_errors(set("/quarantine/allow/1/to/0", "dns-servers")),
                   "/quarantine/allow/1/to/0: unknown-reference", R"(unknown segment "dns-servers")");
    }
    SUBCASE("quarantine allow_from from") {
        check_only(policy_errors(set("/quarantine/allow_from/0/from/0", "soc")),
                   "/quarantine/allow_from/0/from/0: unknown-reference", R"(unknown segment "soc")");
    }
}

TEST_CASE("policy reader: unknown service in a rule is reported at its pointer") {
    SUBCASE("rule") {
        check_only(policy_errors(set("/rules/0/services/1", "icmp")),
                   "/rules/0/services/1: unknown-reference", R"(unknown service "icmp")");
    }
    SUBCASE("quarantine grant") {
        check_only(policy_errors(set("/quarantine/allow_from/0/services/0", "ssh")),
                   "/quarantine/allow_from/0/services/0: unknown-reference", R"(unknown service "ssh")");
    }
    SUBCASE("a segment name is not a service name") {
        check_only(policy_errors(set("/rules/0/services/0", "vdi")),
                   "/rules/0/services/0: unknown-reference", R"(unknown service "vdi")");
    }
}

TEST_CASE("policy reader: a reference after a non-string element keeps its own index") {
    // string_array() drops the non-string element, and the reference check then counts
    // positions in the shortened list: "nope" is at /from/1 in the document.
    SUBCASE("rule from") {
        auto ds = policy_errors(set("/rules/0/from", {42, "nope"}));
        INFO(describe(ds));
        CHECK(located(ds) ==
              std::vector<std::string>{"/rules/0/from/0: wrong-type", "/rules/0/from/1: unknown-reference"});
    }
    SUBCASE("rule services") {
        auto ds = policy_errors(set("/rules/0/services", {"smb", true, "pong"}));
        INFO(describe(ds));
        CHECK(located(ds) == std::vector<std::string>{"/rules/0/services/1: wrong-type",
                                                      "/rules/0/services/2: unknown-reference"});
    }
    SUBCASE("quarantine grant") {
        auto ds = policy_errors(set("/quarantine/allow/0/to", {nullptr, "nope"}));
        INFO(describe(ds));
        CHECK(located(ds) == std::vector<std::string>{"/quarantine/allow/0/to/0: wrong-type",
                                                      "/quarantine/allow/0/to/1: unknown-reference"});
    }
    SUBCASE("allow to a decoy") {
        auto ds = policy_errors(both(set("/segments/1/decoy", true), set("/rules/0/to", {1, "file-servers"})));
        INFO(describe(ds));
        CHECK(located(ds) ==
              std::vector<std::string>{"/rules/0/to/0: wrong-type", "/rules/0/to/1: conflict"});
    }
}

TEST_CASE("policy reader: invalid CIDR blocks are invalid-address at their pointer") {
    const std::string v4 = "/segments/3/selector/cidrs/0";
    const std::string v6 = "/segments/3/selector/cidrs/1";
    SUBCASE("IPv4 prefix /33") {
        check_only(policy_errors(set(v4, "10.0.0.10/33")), v4 + ": invalid-address",
                   R"("10.0.0.10/33" has an invalid prefix length (0..32))");
    }
    SUBCASE("IPv6 prefix /129") {
        check_only(policy_errors(set(v6, "fd00:0:0:1::10/129")), v6 + ": invalid-address",
                   "has an invalid prefix length (0..128)");
    }
    SUBCASE("IPv4 host bits") {
        check_only(policy_errors(set(v4, "10.0.0.10/24")), v4 + ": invalid-address",
                   "has host bits set (did you mean 10.0.0.0/24?)");
    }
    SUBCASE("IPv6 host bits") {
        check_only(policy_errors(set(v6, "fd00:0:0:1::10/64")), v6 + ": invalid-address",
                   "has host bits set (did you mean fd00:0:0:1::/64?)");
    }
    SUBCASE("garbage") {
        for (const char* text : {"proxy.example.org", "10.0.0.256/32", "10.0.0", "fd00:::1/128",
                                 "10.0.0.0/", "10.0.0.0/-8", "10.0.0.0/8/8", "10.0.0.0/8x", ""}) {
            CAPTURE(text);
            check_only(policy_errors(set(v4, text)), v4 + ": invalid-address", text);
        }
    }
}

TEST_CASE("policy reader: an escaped NUL does not truncate a CIDR block") {
    // parse_ip_address() hands c_str() to inet_pton, which stops at the NUL:
    // "10.0.0.0\0junk/8" is read as 10.0.0.0/8 today.
    const std::string pointer = "/segments/3/selector/cidrs/0";
    check_only(policy_errors(set(pointer, "10.0.0.0\0junk/8"s)), pointer + ": invalid-address", "");
    check_only(policy_errors(set(pointer, "10.0.0.10\0"s)), pointer + ": invalid-address", "");
    check_only(policy_errors(set(pointer, "10.0.0.10/32\0junk"s)), pointer + ": invalid-address", "");
}

TEST_CASE("policy reader: ports outside 0..65535 are invalid-port") {
    SUBCASE("65536") {
        check_only(policy_errors(set(kPort, 65536)), kPort + ": invalid-port",
                   "port 65536 is outside 0..65535");
    }
    SUBCASE("-1") {
        check_only(policy_errors(set(kPort, -1)), kPort + ": invalid-port",
                   "port -1 is outside 0..65535");
    }
    SUBCASE("largest unsigned 64-bit integer") {
        check_only(policy_errors(set(kPort, std::numeric_limits<std::uint64_t>::max())),
                   kPort + ": invalid-port", "18446744073709551615 is outside 0..65535");
    }
    SUBCASE("string 70000") {
        check_only(policy_errors(set(kPort, "70000")), kPort + ": invalid-port",
                   R"(port range "70000" is outside 0..65535)");
    }
    SUBCASE("range ending above the top") {
        check_only(policy_errors(set(kPort, "1000-65536")), kPort + ": invalid-port",
                   R"("1000-65536" is outside 0..65535)");
    }
    SUBCASE("a string beyond 64 bits") {
        check_only(policy_errors(set(kPort, "99999999999999999999999")), kPort + ": invalid-port",
                   "is outside 0..65535");
    }
}

TEST_CASE("policy reader: integers beyond 64 bits are out of range, not of the wrong type") {
    // nlohmann stores 99999999999999999999999 as a double, and the reader then says "must
    // be an integer ..., not number" about an integer.
    auto with_literal = [](const std::string& marker_pointer, const std::string& literal) {
        ordered_json doc = example_policy();
        doc[ordered_json::json_pointer(marker_pointer)] = "@@HUGE@@";
        auto text = doc.dump();
        text.replace(text.find("\"@@HUGE@@\""), 10, literal);
        auto result = parse_policy(text, "policy.json");
        return result ? Diagnostics{} : result.error();
    };
    // The text of the number is gone by then (a double prints as 1e+23): the message
    // names the range instead.
    check_only(with_literal(kPort, "99999999999999999999999"), kPort + ": invalid-port",
               "is outside 0..65535");
    check_only(with_literal(kPort, "1e9"), kPort + ": invalid-port", "is outside 0..65535");
    check_only(with_literal(kPort, "-99999999999999999999999"), kPort + ": invalid-port", "");
    check_only(with_literal("/defaults/log_group", "99999999999999999999999"),
               "/defaults/log_group: invalid-value", "must be between 0 and 65535");
}

TEST_CASE("policy reader: reversed port ranges are reversed-range") {
    check_only(policy_errors(set(kPort, "10-5")), kPort + ": reversed-range",
               R"(range "10-5" is reversed (low end above high end))");
    check_only(policy_errors(set("/services/4/entries/0/ports/1", "8444-8443")),
               "/services/4/entries/0/ports/1: reversed-range", R"("8444-8443")");
    // A one-port range is fine.
    check_none(policy_errors(set(kPort, "445-445")));
}

TEST_CASE("policy reader: empty selectors are empty-selector") {
    SUBCASE("no criterion at all") {
        check_only(policy_errors(set("/segments/1/selector", ordered_json::object())),
                   "/segments/1/selector: empty-selector",
                   R"(a selector needs "labels", "workloads" or "cidrs")");
    }
    SUBCASE("labels {} would match everything") {
        check_only(policy_errors(set("/segments/1/selector/labels", ordered_json::object())),
                   "/segments/1/selector/labels: empty-selector", "would match every workload");
    }
    SUBCASE("a label with no values matches nothing") {
        check_only(policy_errors(set("/segments/1/selector/labels/role", ordered_json::array())),
                   "/segments/1/selector/labels/role: empty-selector",
                   "an empty list of values matches nothing");
    }
    SUBCASE("empty workload list") {
        check_only(policy_errors(set("/segments/1/selector", {{"workloads", ordered_json::array()}})),
                   "/segments/1/selector/workloads: empty-selector",
                   "an empty workload list selects nothing");
    }
    SUBCASE("empty CIDR list") {
        check_only(policy_errors(set("/segments/4/selector/cidrs", ordered_json::array())),
                   "/segments/4/selector/cidrs: empty-selector", "an empty CIDR list selects nothing");
    }
}

TEST_CASE("policy reader: an allow rule to a decoy segment is a conflict") {
    SUBCASE("allow to the decoy") {
        check_only(policy_errors(set("/segments/1/decoy", true)), "/rules/0/to/0: conflict",
                   R"(segment "file-servers" is a decoy: nothing may be allowed to reach it)");
    }
    SUBCASE("a quarantine grant to the decoy too") {
        auto ds = policy_errors(set("/segments/4/decoy", true));  // dns
        INFO(describe(ds));
        CHECK(located(ds) == std::vector<std::string>{"/rules/2/to/0: conflict",
                                                      "/quarantine/allow/1/to/0: conflict"});
        check_has(ds, "/quarantine/allow/1/to/0: conflict", R"(segment "dns" is a decoy)");
    }
    SUBCASE("deny to a decoy, and a decoy as a source, are fine") {
        auto ds = policy_errors([](ordered_json& doc) {
            doc["segments"].push_back({{"name", "honeypot"},
                                       {"decoy", true},
                                       {"selector", {{"cidrs", {"10.9.9.0/24"}}}}});
            doc["rules"].push_back({{"name", "no-honeypot"},
                                    {"action", "deny"},
                                    {"from", {"vdi"}},
                                    {"to", {"honeypot"}},
                                    {"services", {"any"}}});
            doc["rules"].push_back({{"name", "honeypot-out"},
                                    {"action", "allow"},
                                    {"from", {"honeypot"}},
                                    {"to", {"dns"}},
                                    {"services", {"dns"}}});
        });
        CHECK(describe(ds) == "(no diagnostics)");
    }
}

TEST_CASE("policy reader: drops and allowed flows on one NFLOG group are a conflict") {
    SUBCASE("same group") {
        check_only(policy_errors(set("/defaults/allowed_log_group", 10)),
                   "/defaults/allowed_log_group: conflict",
                   "allowed connections and drops must log to different NFLOG groups");
    }
    SUBCASE("same group but allowed flows are not logged") {
        check_none(policy_errors(both(set("/defaults/allowed_log_group", 10),
                                      set("/defaults/log_allowed", false))));
    }
    SUBCASE("same group but drops are not logged") {
        check_none(policy_errors(both(set("/defaults/allowed_log_group", 10),
                                      set("/defaults/log_drops", false))));
    }
}

TEST_CASE("policy reader: an empty name is rejected like any other invalid name") {
    // The readers only call check_name() for non-empty strings, so "" passes everywhere.
    SUBCASE("policy") {
        check_only(policy_errors(set("/name", "")), "/name: invalid-value", R"("" is not a valid name)");
    }
    SUBCASE("segment") {
        check_only(policy_errors(append("/segments", {{"name", ""},
                                                      {"selector", {{"labels", {{"pool", "dev"}}}}}})),
                   "/segments/6/name: invalid-value", R"("" is not a valid name)");
    }
    SUBCASE("service") {
        check_only(policy_errors(append("/services", {{"name", ""},
                                                      {"entries", {{{"protocol", "tcp"}}}}})),
                   "/services/6/name: invalid-value", R"("" is not a valid name)");
    }
    SUBCASE("rule") {
        check_only(policy_errors(set("/rules/2/name", "")), "/rules/2/name: invalid-value",
                   R"("" is not a valid name)");
    }
}

TEST_CASE("policy reader: every error in a document is reported, not just the first") {
    auto ds = policy_errors([](ordered_json& doc) {
        doc["defaults"]["mode"] = "audit";
        doc["services"][0]["entries"][0]["ports"][0] = 70000;
        doc["services"][4]["entries"][0]["ports"][1] = "8444-8443";
        doc["services"][3]["name"] = "smb";
        doc["segments"][3]["selector"]["cidrs"][0] = "10.0.0.10/8";
        doc["segments"][2]["selector"] = ordered_json::object();
        doc["rules"][0]["from"][0] = "vdis";
        doc["rules"][1]["acton"] = "allow";
        doc["rules"][1].erase("action");
        doc["quarantine"]["allow"][1]["services"][0] = "dnss";
    });
    INFO(describe(ds));
    CHECK(located(ds) == std::vector<std::string>{
                             "/defaults/mode: invalid-value",
                             "/services/0/entries/0/ports/0: invalid-port",
                             "/services/3/name: duplicate-name",
                             "/services/4/entries/0/ports/1: reversed-range",
                             "/segments/2/selector: empty-selector",
                             "/segments/3/selector/cidrs/0: invalid-address",
                             "/rules/1: missing-field",
                             "/rules/1/acton: unknown-field",
                             "/rules/0/from/0: unknown-reference",
                             // "rdp" was renamed to "smb" above: its users now dangle
                             "/rules/4/services/0: unknown-reference",
                             "/quarantine/allow/1/services/0: unknown-reference",
                             "/quarantine/allow_from/0/services/0: unknown-reference",
                         });
    for (const auto& d : ds) {
        CHECK(d.document == "policy.json");
        CHECK_FALSE(d.message.empty());
    }
}

// ---------------------------------------------------------------------------------------
// Inventory validation

TEST_CASE("inventory reader: ids of dots only are refused (URLs resolve them away)") {
    for (const char* id : {".", "..", "..."}) {
        check_only(inventory_errors(set("/workloads/0/id", id)), "/workloads/0/id: invalid-value",
                   "not safe as one URL path segment");
    }
    check_only(inventory_errors(append("/enforcers", {{"id", ".."}})), "/enforcers/2/id: invalid-value",
               "not safe as one URL path segment");
    CHECK(inventory_errors(set("/workloads/0/id", "vdi.001")).empty());  // a dot inside is fine
}

TEST_CASE("inventory reader: missing required members are reported at the object that lacks them") {
    SUBCASE("enforcers and workloads") {
        check_only(inventory_text_errors(R"({"workloads": []})"), "(document root): missing-field",
                   R"(required member "enforcers" is missing)");
        check_only(inventory_text_errors(R"({"enforcers": []})"), "(document root): missing-field",
                   R"(required member "workloads" is missing)");
    }
    SUBCASE("enforcer id") {
        check_only(inventory_errors(append("/enforcers", {{"description", "spare"}})),
                   "/enforcers/2: missing-field", R"(required member "id" is missing)");
    }
    SUBCASE("workload id and addresses") {
        check_only(inventory_errors(erase("/workloads/6", "id")), "/workloads/6: missing-field",
                   R"("id")");
        check_only(inventory_errors(erase("/workloads/6", "addresses")),
                   "/workloads/6: missing-field", R"(required member "addresses" is missing)");
    }
    SUBCASE("a workload behind an enforcer needs an attachment") {
        check_only(inventory_errors(erase("/workloads/2", "attachment")),
                   "/workloads/2: missing-field", R"(a workload behind an enforcer needs an "attachment")");
    }
    SUBCASE("an attachment needs an enforcer") {
        check_only(inventory_errors(erase("/workloads/2", "enforcer")),
                   "/workloads/2/attachment: missing-field", R"(an attached workload needs an "enforcer")");
    }
    SUBCASE("attachment members") {
        // Port mode names its interface, or the workload's MAC binds the port
        // (test_enforcer_ports.cpp); with neither it is incomplete.
        check_only(inventory_errors(both(erase("/workloads/2/attachment", "interface"), erase("/workloads/2", "mac"))),
                   "/workloads/2/attachment: missing-field", R"(required member "interface" is missing)");
        check_only(inventory_errors(set("/workloads/2/attachment", {{"mode", "host"}})),
                   "/workloads/2/attachment: missing-field", R"(required member "interfaces" is missing)");
        auto ds = inventory_errors(erase("/workloads/2/attachment", "mode"));
        INFO(describe(ds));
        CHECK(located(ds) == std::vector<std::string>{"/workloads/2/attachment: missing-field",
                                                      "/workloads/2/attachment/interface: unknown-field"});
    }
}

TEST_CASE("inventory reader: unknown members are reported so that typos cannot pass") {
    SUBCASE("adresses") {
        auto ds = inventory_errors(rename("/workloads/6", "addresses", "adresses"));
        INFO(describe(ds));
        CHECK(located(ds) == std::vector<std::string>{"/workloads/6: missing-field",
                                                      "/workloads/6/adresses: unknown-field"});
    }
    SUBCASE("top level") {
        check_only(inventory_errors(set("/segments", ordered_json::array())),
                   "/segments: unknown-field", R"(unknown member "segments")");
    }
    SUBCASE("enforcer") {
        check_only(inventory_errors(set("/enforcers/1/name", "HV 2")), "/enforcers/1/name: unknown-field",
                   R"("name")");
    }
    SUBCASE("host-mode spelling in port mode") {
        auto ds = inventory_errors(
            both(rename("/workloads/0/attachment", "interface", "interfaces"), erase("/workloads/0", "mac")));
        INFO(describe(ds));
        // The unknown member is reported while the attachment is read, the missing interface
        // after, once the workload's MAC is known not to stand in for it.
        CHECK(located(ds) == std::vector<std::string>{"/workloads/0/attachment/interfaces: unknown-field",
                                                      "/workloads/0/attachment: missing-field"});
    }
}

TEST_CASE("inventory reader: values of the wrong JSON type are reported at their pointer") {
    struct Case {
        std::string pointer;
        ordered_json value;
        const char* fragment;
    };
    const std::vector<Case> cases{
        {"/enforcers", ordered_json::object(), "must be an array, not object"},
        {"/workloads", "all", "must be an array, not string"},
        {"/workloads/6", "fs-01", "a workload must be an object, not string"},
        {"/workloads/6/id", 42, "must be a string, not integer"},
        {"/workloads/6/critical", "yes", "must be true or false, not string"},
        {"/workloads/6/labels", ordered_json::array({"file-server"}),
         "labels are an object of strings, not array"},
        {"/workloads/6/labels/role", 1, "label values are strings, not integer"},
        {"/workloads/6/addresses", "10.0.0.30", "must be an array, not string"},
        {"/workloads/6/addresses/0", 167772190, "addresses are strings, not integer"},
        {"/workloads/6/hostname", ordered_json::array(), "must be a string, not array"},
        {"/workloads/0/mac", 525400010001, "must be a string, not integer"},
        {"/workloads/0/attachment", "vdi001", "an attachment must be an object, not string"},
        {"/workloads/0/attachment/interface", ordered_json::array({"vdi001"}),
         "must be a string, not array"},
    };
    for (const auto& c : cases) {
        CAPTURE(c.pointer);
        CAPTURE(c.value.dump());
        auto ds = inventory_errors(set(c.pointer, c.value));
        INFO(describe(ds));
        REQUIRE_FALSE(ds.empty());
        CHECK(located(ds[0]) == c.pointer + ": wrong-type");
        CHECK(contains(ds[0].message, c.fragment));
    }
    check_only(inventory_text_errors("[]"), "(document root): wrong-type",
               "an inventory must be an object, not array");
    // The workloads on hv2 then name an unknown enforcer; the type error comes first.
    auto ds = inventory_errors(set("/enforcers/1", "hv2"));
    INFO(describe(ds));
    REQUIRE_FALSE(ds.empty());
    CHECK(located(ds[0]) == "/enforcers/1: wrong-type");
    CHECK(ds[0].message == "an enforcer must be an object, not string");
    check_has(ds, "/workloads/3/enforcer: unknown-reference", R"(unknown enforcer "hv2")");
}

TEST_CASE("inventory reader: invalid values of the right type are invalid-value") {
    SUBCASE("MAC address") {
        for (const char* mac : {"52:54:00:01:00", "52:54:00:01:00:zz", "525400010001", ""}) {
            CAPTURE(mac);
            check_only(inventory_errors(set("/workloads/0/mac", mac)), "/workloads/0/mac: invalid-value",
                       "is not a MAC address");
        }
    }
    SUBCASE("ids") {
        check_only(inventory_errors(set("/workloads/6/id", "fs 01")), "/workloads/6/id: invalid-value",
                   R"("fs 01" is not a valid name)");
        check_only(inventory_errors(set("/workloads/6/id", std::string(65, 'f'))),
                   "/workloads/6/id: invalid-value", "1-64 characters");
        check_only(inventory_errors(append("/enforcers", {{"id", "hv/3"}})), "/enforcers/2/id: invalid-value",
                   R"("hv/3" is not a valid name)");
    }
    SUBCASE("attachment mode") {
        auto ds = inventory_errors(set("/workloads/0/attachment/mode", "bridge"));
        INFO(describe(ds));
        CHECK(located(ds) == std::vector<std::string>{"/workloads/0/attachment/mode: invalid-value",
                                                      "/workloads/0/attachment/interface: unknown-field"});
        check_has(ds, "/workloads/0/attachment/mode: invalid-value", R"("bridge" is not one of: port, host)");
    }
    SUBCASE("interface names") {
        check_only(inventory_errors(set("/workloads/0/attachment/interface", "vdi-interface-01")),
                   "/workloads/0/attachment/interface: invalid-value", "must be 1 to 15 characters");
        check_only(inventory_errors(set("/workloads/0/attachment/interface", "")),
                   "/workloads/0/attachment/interface: invalid-value", "must be 1 to 15 characters");
        check_only(inventory_errors(set("/workloads/0/attachment",
                                        {{"mode", "host"}, {"interfaces", {"eth0", "eth 1"}}})),
                   "/workloads/0/attachment/interfaces/1: invalid-value",
                   "contains a character Linux or nft does not accept");
    }
    SUBCASE("empty lists") {
        check_only(inventory_errors(set("/workloads/6/addresses", ordered_json::array())),
                   "/workloads/6/addresses: invalid-value", "a workload needs at least one address");
        check_only(inventory_errors(set("/workloads/0/attachment",
                                        {{"mode", "host"}, {"interfaces", ordered_json::array()}})),
                   "/workloads/0/attachment/interfaces: invalid-value", "must not be empty");
    }
}

TEST_CASE("inventory reader: invalid addresses are invalid-address at their pointer") {
    for (const char* address : {"10.1.0.256", "10.1.0", "010.1.0.1", "fd00:0:0:10::zz", "fd00::10::1",
                                "fe80::1%eth0", "10.1.0.0/24", "", "vdi-001.example.org"}) {
        CAPTURE(address);
        check_only(inventory_errors(set("/workloads/0/addresses/1", address)),
                   "/workloads/0/addresses/1: invalid-address", "is not an IP address");
    }
}

TEST_CASE("inventory reader: an escaped NUL does not truncate an address") {
    // "10.0.0.30\u0000evil" is read as 10.0.0.30 today (inet_pton on c_str()).
    check_only(inventory_errors(set("/workloads/6/addresses/0", "10.0.0.30\0evil"s)),
               "/workloads/6/addresses/0: invalid-address", "is not an IP address");
    check_only(inventory_errors(set("/workloads/6/addresses/0", "fd00::30\0"s)),
               "/workloads/6/addresses/0: invalid-address", "is not an IP address");
}

TEST_CASE("inventory reader: duplicate ids are duplicate-name at the second definition") {
    SUBCASE("workload") {
        check_only(inventory_errors(set("/workloads/3/id", "vdi-001")), "/workloads/3/id: duplicate-name",
                   R"(workload "vdi-001" is already defined at /workloads/0/id)");
    }
    SUBCASE("enforcer") {
        check_only(inventory_errors(append("/enforcers", {{"id", "hv1"}})),
                   "/enforcers/2/id: duplicate-name", R"(enforcer "hv1" is already defined at /enforcers/0/id)");
    }
}

TEST_CASE("inventory reader: an empty id is rejected like any other invalid name") {
    SUBCASE("workload") {
        check_only(inventory_errors(set("/workloads/6/id", "")), "/workloads/6/id: invalid-value",
                   R"("" is not a valid name)");
    }
    SUBCASE("two workloads with an empty id") {
        auto ds = inventory_errors(both(set("/workloads/5/id", ""), set("/workloads/6/id", "")));
        INFO(describe(ds));
        CHECK_FALSE(ds.empty());
    }
    SUBCASE("enforcer") {
        check_only(inventory_errors(append("/enforcers", {{"id", ""}})), "/enforcers/2/id: invalid-value",
                   R"("" is not a valid name)");
    }
}

TEST_CASE("inventory reader: a workload on an unknown enforcer is unknown-reference") {
    check_only(inventory_errors(set("/workloads/4/enforcer", "hv3")), "/workloads/4/enforcer: unknown-reference",
               R"(unknown enforcer "hv3")");
    // Enforcer ids are case-sensitive.
    check_only(inventory_errors(set("/workloads/4/enforcer", "HV2")), "/workloads/4/enforcer: unknown-reference",
               R"(unknown enforcer "HV2")");
}

TEST_CASE("inventory reader: two workloads claiming one unique thing are a conflict") {
    SUBCASE("one interface on one enforcer") {
        check_only(inventory_errors(set("/workloads/1/attachment/interface", "vdi001")),
                   "/workloads/1/attachment: conflict",
                   R"(interface "vdi001" on enforcer "hv1" is already used at /workloads/0/attachment)");
    }
    SUBCASE("a host-mode interface that is already a port") {
        check_only(inventory_errors(set("/workloads/1/attachment",
                                        {{"mode", "host"}, {"interfaces", {"eth0", "vdi001"}}})),
                   "/workloads/1/attachment: conflict", R"(interface "vdi001" on enforcer "hv1")");
    }
    SUBCASE("one MAC, in another notation") {
        check_only(inventory_errors(set("/workloads/4/mac", "52-54-00-01-00-01")),
                   "/workloads/4/mac: conflict", "MAC 52:54:00:01:00:01 is already used at /workloads/0/mac");
    }
    SUBCASE("one MAC behind different enforcers") {
        check_only(inventory_errors(set("/workloads/3/mac", "52:54:00:01:00:02")),
                   "/workloads/3/mac: conflict", "already used at /workloads/1/mac");
    }
    SUBCASE("the same address twice behind one enforcer") {
        check_only(inventory_errors(set("/workloads/2/addresses/1", "fd00:0:0:10::1")),
                   "/workloads/2/addresses/1: conflict",
                   "address fd00:0:0:10::1 is already used at /workloads/0/addresses/1 behind the same enforcer");
    }
    SUBCASE("an address spelt differently is still the same address") {
        check_only(inventory_errors(set("/workloads/2/addresses/1", "FD00:0000:0000:0010::0001")),
                   "/workloads/2/addresses/1: conflict", "already used at /workloads/0/addresses/1");
    }
    SUBCASE("an address listed twice in one workload") {
        check_only(inventory_errors(set("/workloads/2/addresses", {"10.1.0.3", "10.1.0.3"})),
                   "/workloads/2/addresses/1: conflict", "already used at /workloads/2/addresses/0");
    }
    SUBCASE("two host-mode workloads on one enforcer") {
        auto ds = inventory_errors([](ordered_json& doc) {
            doc["enforcers"].push_back({{"id", "srv01"}});
            doc["workloads"].push_back({{"id", "srv-a"}, {"enforcer", "srv01"}, {"addresses", {"10.0.0.41"}},
                                        {"attachment", {{"mode", "host"}, {"interfaces", {"eth0"}}}}});
            doc["workloads"].push_back({{"id", "srv-b"}, {"enforcer", "srv01"}, {"addresses", {"10.0.0.42"}},
                                        {"attachment", {{"mode", "host"}, {"interfaces", {"eth1"}}}}});
        });
        check_only(ds, "/workloads/8/attachment: conflict",
                   R"(enforcer "srv01" already protects a host-mode workload at /workloads/7/attachment)");
    }
}

TEST_CASE("inventory reader: colliding addresses behind different enforcers are accepted") {
    // Seed 000: home and office networks reuse the same private ranges.
    SUBCASE("same address, other enforcer") {
        check_none(inventory_errors(set("/workloads/3/addresses", {"10.1.0.1", "fd00:0:0:10::1"})));
    }
    SUBCASE("same interface name, other enforcer") {
        check_none(inventory_errors(set("/workloads/3/attachment/interface", "vdi001")));
    }
    SUBCASE("unmanaged peers may share an address") {
        check_none(inventory_errors(append("/workloads", {{"id", "fs-02"}, {"addresses", {"10.0.0.30"}}})));
    }
    SUBCASE("an unmanaged peer may share a managed workload's address") {
        check_none(inventory_errors(set("/workloads/6/addresses/0", "10.1.0.1")));
    }
    SUBCASE("host-mode workloads on different enforcers") {
        auto ds = inventory_errors([](ordered_json& doc) {
            doc["enforcers"].push_back({{"id", "srv01"}});
            doc["enforcers"].push_back({{"id", "srv02"}});
            doc["workloads"].push_back({{"id", "srv-a"}, {"enforcer", "srv01"}, {"addresses", {"10.0.0.41"}},
                                        {"attachment", {{"mode", "host"}, {"interfaces", {"eth0"}}}}});
            doc["workloads"].push_back({{"id", "srv-b"}, {"enforcer", "srv02"}, {"addresses", {"10.0.0.41"}},
                                        {"attachment", {{"mode", "host"}, {"interfaces", {"eth0"}}}}});
        });
        CHECK(describe(ds) == "(no diagnostics)");
    }
}

TEST_CASE("inventory reader: every error in a document is reported, not just the first") {
    auto ds = inventory_errors([](ordered_json& doc) {
        doc["enforcers"].push_back({{"id", "hv1"}});
        doc["workloads"][0]["enforcer"] = "hv9";
        doc["workloads"][1]["mac"] = "zz";
        doc["workloads"][2]["addresses"][0] = "300.1.1.1";
        doc["workloads"][3]["critical"] = "no";
        doc["workloads"][4]["attachment"]["interface"] = "vdi101";
        doc["workloads"][6]["hostnme"] = "FS-01";
    });
    INFO(describe(ds));
    CHECK(located(ds) == std::vector<std::string>{
                             "/enforcers/2/id: duplicate-name",
                             "/workloads/0/enforcer: unknown-reference",
                             "/workloads/1/mac: invalid-value",
                             "/workloads/2/addresses/0: invalid-address",
                             "/workloads/3/critical: wrong-type",
                             "/workloads/4/attachment: conflict",
                             "/workloads/6/hostnme: unknown-field",
                         });
    for (const auto& d : ds) {
        CHECK(d.document == "inventory.json");
    }
}

// ---------------------------------------------------------------------------------------
// Cross-check

TEST_CASE("cross check: a segment naming a workload the inventory lacks is unknown-reference") {
    auto inventory = parse_inventory(read_source_file("examples/vdi-pool/inventory.json"));
    REQUIRE(inventory.has_value());
    ordered_json doc = example_policy();
    doc["segments"][2]["selector"] = {{"workloads", {"admin-01", "admin-99", "vdi-001", "VDI-002"}}};
    auto policy = parse_policy(doc.dump(), "policy.json");
    REQUIRE(policy.has_value());

    auto ds = cross_check(*policy, *inventory, "site/policy.json");
    INFO(describe(ds));
    REQUIRE(ds.size() == 2);
    CHECK(located(ds[0]) == "/segments/2/selector/workloads/1: unknown-reference");
    CHECK(ds[0].message == R"(unknown workload "admin-99" (not in the inventory))");
    CHECK(ds[0].document == "site/policy.json");
    CHECK(located(ds[1]) == "/segments/2/selector/workloads/3: unknown-reference");
    CHECK(contains(ds[1].message, R"("VDI-002")"));  // ids are case-sensitive

    SUBCASE("an empty inventory makes every named workload unknown") {
        CHECK(cross_check(*policy, Inventory{}).size() == 4);
    }
}

TEST_CASE("policy reader: a tripwire only on a decoy segment or a deny rule") {
    // vdi-pool: segment 0 is "vdi" (not a decoy); rule 0 allows, rule 5 denies vdi -> vdi.
    check_only(policy_errors(set("/segments/0/tripwire", true)), "/segments/0/tripwire: conflict",
               "only a decoy segment");
    check_only(policy_errors(set("/rules/0/tripwire", true)), "/rules/0/tripwire: conflict",
               "only a deny rule");
    check_none(policy_errors(set("/rules/5/tripwire", true)));
    check_only(policy_errors(set("/rules/5/tripwire", "yes")), "/rules/5/tripwire: wrong-type", "true or false");
    auto parsed = parse_policy([] {
        ordered_json doc = example_policy();
        doc["rules"][5]["tripwire"] = true;
        return doc.dump();
    }());
    REQUIRE(parsed);
    CHECK(parsed->rules[5].tripwire);
    CHECK_FALSE(parsed->rules[0].tripwire);
}
