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
#include <mutex>
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
    Icmpv6Type,
    EtherAddr  // a MAC address; its key part is the lowercase text "52:54:00:12:34:56"
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
    Icmpv6Type,
    EtherSaddr  // the frame's source MAC (ethernet ports only)
};

KeyType key_type_of(Field field);
std::string_view nft_name(KeyType type);   // "ipv4_addr"
std::string_view nft_name(Field field);    // "ip daddr"
std::optional<KeyType> key_type_from_name(std::string_view name);
std::optional<Field> field_from_name(std::string_view name);

// One component of an element key: an interface name or a MAC address (text), an address
// range, or a number range.
using KeyPart = std::variant<std::string, IpRange, NumberRange>;

struct Element {
    std::vector<KeyPart> key;
    std::string jump;  // verdict maps only: the chain this key jumps to
    auto operator<=>(const Element&) const = default;
};

// A set's elements, sorted. Once shared through SetDefinition::elements it is immutable,
// and then remembers its canonical text (the "elements" array of a bulkhead-ruleset/1
// document) and that text's digest: a fleet compile shares one list among every host of a
// segment, so serialising or hashing 2,000 rulesets touches each list once, not 2,000
// times. Only call canonical_text()/digest() on a list nobody modifies any more.
class ElementList : public std::vector<Element> {
public:
    using std::vector<Element>::vector;
    ElementList() = default;
    ElementList(std::vector<Element> elements) : std::vector<Element>(std::move(elements)) {}
    // The cache belongs to one object: copies and moves start without it.
    ElementList(const ElementList& other) : std::vector<Element>(other) {}
    ElementList(ElementList&& other) noexcept : std::vector<Element>(std::move(other)) {}
    ElementList& operator=(const ElementList& other) {
        std::vector<Element>::operator=(other);
        forget();
        return *this;
    }
    ElementList& operator=(ElementList&& other) noexcept {
        std::vector<Element>::operator=(std::move(other));
        forget();
        return *this;
    }

    // `with_jump`: the set is a verdict map (each element carries its "jump").
    std::shared_ptr<const std::string> canonical_text(bool with_jump) const;
    std::uint64_t digest(bool with_jump) const;
    // The digest if it was already computed (for that form), without computing it.
    std::optional<std::uint64_t> digest_if_known(bool with_jump) const;

private:
    struct Cache {
        bool with_jump = false;
        std::shared_ptr<const std::string> text;
        std::uint64_t digest = 0;
    };
    std::shared_ptr<const Cache> cache(bool with_jump) const;
    void forget() {
        std::lock_guard lock(cache_mutex_);
        cache_.reset();
    }
    mutable std::mutex cache_mutex_;
    mutable std::shared_ptr<const Cache> cache_;
};

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

    bool same_definition(const SetDefinition& other) const { return name == other.name && same_kind(other); }
    // The same key and flags, whatever the name (a set under a renamed class).
    bool same_kind(const SetDefinition& other) const {
        return key == other.key && interval == other.interval && verdict_map == other.verdict_map &&
               dynamic == other.dynamic;
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
//
// Format 2 (this release): FNV-1a 64 over the canonical body in which each set's
// "elements" array is replaced by its list's digest (FNV-1a 64 of the array's canonical
// text, as a 16-digit hex string); shared lists are hashed once for the whole fleet.
// Format 1 (releases up to 0.6): FNV-1a 64 over the whole canonical body; the controller
// still computes it for enforcers that announce no hash format (docs/control-channel.md).
inline constexpr int ruleset_hash_format = 2;
std::string ruleset_hash(const Ruleset& ruleset);
std::string ruleset_hash_format1(const Ruleset& ruleset);

// The interchange format between controller and enforcer, and the on-disk state format.
// Its "hash" member is ruleset_hash().
nlohmann::json to_json(const Ruleset& ruleset);
// Exactly to_json(ruleset).dump() with `hash` as the "hash" member, written from the
// lists' cached texts (a full ruleset of 100,000 elements costs a copy, not a rebuild).
std::string to_json_text(const Ruleset& ruleset, const std::string& hash);
// The document's encodings of sets (with their elements) and of chains, for documents
// assembled from pieces (the wire diff).
nlohmann::json sets_to_json(const std::vector<SetDefinition>& sets);
nlohmann::json chains_to_json(const std::vector<Chain>& chains);
std::expected<Ruleset, std::string> ruleset_from_json(const nlohmann::json& document);
// The document's pieces decoded on their own, with ruleset_from_json's checks and messages
// (the wire diff carries pieces). Elements come back sorted. References are not checked
// here: check the assembled ruleset with unresolved_reference().
std::expected<SetDefinition, std::string> set_from_json(const nlohmann::json& set);
std::expected<ElementList, std::string> elements_from_json(const SetDefinition& set, const nlohmann::json& elements);
std::expected<Chain, std::string> chain_from_json(const nlohmann::json& chain);
// The first reference that does not resolve: a lookup or dispatch on a missing set, a jump
// to a missing chain, a packet-path update of a set that is not dynamic with that key.
std::optional<std::string> unresolved_reference(const Ruleset& ruleset);

std::string key_part_to_string(const KeyPart& part, KeyType type);

}  // namespace bulkhead::ruleset
