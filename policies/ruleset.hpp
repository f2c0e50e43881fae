// The compiled ruleset of one enforcer: Bulkhead's intermediate representation of the
// `inet bulkhead` table. It is structured (fields, set lookups, verdicts), not text, so
// that it renders to nft text for humans and `nft -f`, and to libnftnl objects in the
// enforcer, from one source. Values only: no kernel, no I/O.
#pragma once

#include "policies/net_address.hpp"
#include "policies/policy_model.hpp"

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace bulkhead::ruleset {

using policy::IpRange;
using policy::NumberRange;

inline constexpr std::string_view table_name = "bulkhead";  // always family inet

// nft data types that appear in set keys.
enum class KeyType : std::uint8_t {
    Ifname,
    InetProto,
    Ipv4Addr,
    Ipv6Addr,
    InetService,
    IcmpType,
    Icmpv6Type
};

// Packet fields the rules read.
enum class Field : std::uint8_t {
    Iifname,
    Oifname,
    L4proto,
    Ip4Saddr,
    Ip4Daddr,
    Ip6Saddr,
    Ip6Daddr,
    ThSport,
    ThDport,
    IcmpType,
    Icmpv6Type
};

KeyType key_type_of(Field field);
std::string_view nft_name(KeyType type);   // "ipv4_addr"
std::string_view nft_name(Field field);    // "ip daddr"
std::optional<KeyType> key_type_from_name(std::string_view name);
std::optional<Field> field_from_name(std::string_view name);

// One component of an element key: an interface name, an address range, or a number range.
using KeyPart = std::variant<std::string, IpRange, NumberRange>;

struct Element {
    std::vector<KeyPart> key;
    std::string jump;  // verdict maps only: the chain this key jumps to
    auto operator<=>(const Element&) const = default;
};

using ElementList = std::vector<Element>;

struct SetDefinition {
    std::string name;
    std::vector<KeyType> key;
    bool interval = false;     // ranges / CIDR blocks
    bool verdict_map = false;  // key : verdict
    bool dynamic = false;      // the packet path may add to it (same-packet containment)
    std::string comment;
    // Shared and immutable: one class's sets are identical on every enforcer hosting it,
    // so a fleet compile builds each list once.
    std::shared_ptr<const ElementList> elements = std::make_shared<const ElementList>();

    bool same_definition(const SetDefinition& other) const {
        return name == other.name && key == other.key && interval == other.interval &&
               verdict_map == other.verdict_map && dynamic == other.dynamic;
    }
};

enum CtState : std::uint8_t {
    CtInvalid = 1,
    CtEstablished = 2,
    CtRelated = 4,
    CtNew = 8,
};

// `fields... @set` (a concatenation when more than one field).
struct SetLookup {
    std::vector<Field> fields;
    std::string set;
    bool operator==(const SetLookup&) const = default;
};
// `field { v1, v2-v3 }` on a numeric field.
struct ValueMatch {
    Field field;
    std::vector<NumberRange> values;
    bool operator==(const ValueMatch&) const = default;
};
struct CtStateMatch {
    std::uint8_t states = 0;
    bool operator==(const CtStateMatch&) const = default;
};
struct CtDirectionReply {
    bool operator==(const CtDirectionReply&) const = default;
};
using Match = std::variant<SetLookup, ValueMatch, CtStateMatch, CtDirectionReply>;

struct LogAction {
    std::string prefix;
    std::uint16_t group = 0;
    bool operator==(const LogAction&) const = default;
};

enum class VerdictKind : std::uint8_t { None, Accept, Drop, Return, Jump, Goto };
struct Verdict {
    VerdictKind kind = VerdictKind::None;
    std::string chain;
    bool operator==(const Verdict&) const = default;
};

// `field vmap @map`: dispatch on a verdict map.
struct VerdictMapDispatch {
    Field field;
    std::string map;
    bool operator==(const VerdictMapDispatch&) const = default;
};

// `add @set { fields }`: the packet path adds its own key to a `dynamic` set. This is how a
// tripwire contains its source on the packet that tripped it (the port, or in host mode the
// remote address, joins a quarantine set before the next packet is looked at).
struct SetUpdate {
    std::vector<Field> fields;
    std::string set;
    bool operator==(const SetUpdate&) const = default;
};

struct Rule {
    std::vector<Match> matches;
    std::optional<SetUpdate> update;  // runs after the matches, before counter and log
    bool counter = false;
    std::optional<LogAction> log;
    std::optional<VerdictMapDispatch> dispatch;
    Verdict verdict;
    std::string comment;
    bool operator==(const Rule&) const = default;
};

enum class Hook : std::uint8_t { Forward, Input, Output };
struct BaseChain {
    Hook hook;
    int priority = 0;  // "filter"
    bool operator==(const BaseChain&) const = default;
};

struct Chain {
    std::string name;
    std::optional<BaseChain> base;  // absent: a regular chain reached by jump/goto
    std::vector<Rule> rules;
    bool operator==(const Chain&) const = default;
};

// Who sits behind which interface: lets the enforcer attribute a drop logged in a shared
// class chain to one workload through the packet's in/out interface.
struct PortBinding {
    std::string interface;
    std::string workload;
    policy::AttachmentMode mode = policy::AttachmentMode::Port;
    std::string policy_class;
    auto operator<=>(const PortBinding&) const = default;
};

struct Ruleset {
    std::string enforcer;
    std::string policy_name;
    std::vector<SetDefinition> sets;  // sorted by name
    std::vector<Chain> chains;        // base chains first, then by name
    std::vector<PortBinding> ports;   // sorted by interface

    const SetDefinition* find_set(std::string_view name) const;
    const Chain* find_chain(std::string_view name) const;
    std::size_t element_count() const;
    std::size_t rule_count() const;
};

// Content hash of the kernel-relevant parts (sets, elements, chains), hex. Two rulesets
// with the same hash program the same table.
std::string ruleset_hash(const Ruleset& ruleset);

// The interchange format between controller and enforcer, and the on-disk state format.
nlohmann::json to_json(const Ruleset& ruleset);
std::expected<Ruleset, std::string> ruleset_from_json(const nlohmann::json& document);

std::string key_part_to_string(const KeyPart& part, KeyType type);

}  // namespace bulkhead::ruleset
