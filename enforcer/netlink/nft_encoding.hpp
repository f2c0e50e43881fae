// How the ruleset IR maps onto nf_tables objects, byte for byte as nft 1.0.6 encodes the
// same text (the oracle: `nft --debug=netlink,mnl -f` in a throwaway netns). Pure: no
// sockets, no libnftnl objects; the batch builder and the read-back share it.
#pragma once

#include "policies/ruleset.hpp"

#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <vector>

namespace bulkhead::enforcer::detail {

using Bytes = std::vector<std::uint8_t>;

// nftables' datatype ids (include/datatype.h), as stored in NFTA_SET_KEY_TYPE.
inline constexpr std::uint32_t type_ipaddr = 7;
inline constexpr std::uint32_t type_ip6addr = 8;
inline constexpr std::uint32_t type_etheraddr = 9;
inline constexpr std::uint32_t type_inet_protocol = 12;
inline constexpr std::uint32_t type_inet_service = 13;
inline constexpr std::uint32_t type_icmp_type = 14;
inline constexpr std::uint32_t type_icmp6_type = 29;
inline constexpr std::uint32_t type_ifname = 41;
inline constexpr unsigned concat_type_bits = 6;

// nftables' enum byteorder, stored in the set's userdata (NFTNL_UDATA_SET_KEYBYTEORDER).
inline constexpr std::uint32_t byteorder_invalid = 0;
inline constexpr std::uint32_t byteorder_host = 1;
inline constexpr std::uint32_t byteorder_big = 2;

// Our private rule userdata TLV: the IR rule's fingerprint (8 bytes, big endian). nft
// ignores unknown rule userdata types, so listings stay identical to nft's own.
inline constexpr std::uint8_t fingerprint_udata_type = 0xb7;

// Where a packet field comes from.
struct FieldSpec {
    enum class Source : std::uint8_t { Meta, Payload } source;
    std::uint32_t meta_key = 0;    // NFT_META_*
    std::uint32_t base = 0;        // NFT_PAYLOAD_*_HEADER
    std::uint32_t offset = 0;
    std::uint32_t length = 0;      // bytes loaded
    std::uint8_t nfproto = 0;      // implicit `meta nfproto` dependency (0: none)
    std::uint8_t l4proto = 0;      // implicit `meta l4proto` dependency (0: none)
    bool host_endian_integer = false;  // needs hton inside interval concatenations
    // nft's typeof userdata for anonymous sets keyed by this field.
    std::uint32_t typeof_expr = 0;     // EXPR_META / EXPR_PAYLOAD
    std::uint32_t typeof_a = 0;        // meta key, or payload protocol description id
    std::uint32_t typeof_b = 0;        // payload template index
    bool ether = false;            // implicit `meta iiftype ether` dependency (link header)
};
FieldSpec field_spec(ruleset::Field field);

std::uint32_t datatype_id(ruleset::KeyType type);
std::uint32_t key_length(ruleset::KeyType type);      // bytes, unpadded
std::uint32_t key_byteorder(ruleset::KeyType type);   // nft's byteorder of the datatype
inline std::uint32_t padded(std::uint32_t length) { return (length + 3) / 4 * 4; }

// Everything NEWSET carries besides table and name.
struct SetLayout {
    std::uint32_t flags = 0;     // NFT_SET_*
    std::uint32_t key_type = 0;
    std::uint32_t key_len = 0;
    bool is_map = false;         // data type verdict, data length 0
    std::vector<std::uint8_t> concat_lengths;  // NFTA_SET_DESC_CONCAT (interval concat)
    Bytes userdata;
};
SetLayout set_layout(const ruleset::SetDefinition& set);
bool is_concat_interval(const ruleset::SetDefinition& set);

// The anonymous set nft builds for `field { v1, v2-v3 }` (more than one value).
struct AnonymousSet {
    SetLayout layout;
    std::vector<ruleset::NumberRange> values;  // sorted; merged when interval
    std::uint32_t size = 0;                    // NFTA_SET_DESC_SIZE
};
AnonymousSet anonymous_set(ruleset::Field field, std::vector<ruleset::NumberRange> values);

// One kernel element (NFTA_LIST_ELEM) and the IR element it encodes.
struct KernelElement {
    Bytes key;
    Bytes key_end;              // concat interval sets
    std::uint32_t flags = 0;    // NFT_SET_ELEM_INTERVAL_END
    bool interval_open = false; // range up to the maximum: userdata flag, no end element
    std::string jump;           // verdict maps: jump target
    std::size_t ir_index = 0;   // index into the encoded ElementList (SIZE_MAX: synthetic)
};

// IR elements -> kernel elements. `first_segment` adds nft's leading interval-end element
// at zero to a single-field interval set whose first range does not start at zero (what
// `nft -f` sends when it creates a set with elements). `for_delete` leaves it out.
std::expected<std::vector<KernelElement>, std::string> encode_elements(
    const ruleset::SetDefinition& set, const ruleset::ElementList& elements, bool first_segment);

// Anonymous-set values -> kernel elements (nft: zero segment, merged adjacent ranges).
std::vector<KernelElement> encode_values(ruleset::Field field, const AnonymousSet& set);

// Big-endian value of `length` bytes for a cmp against a field.
Bytes field_value(ruleset::Field field, std::uint32_t value);

// Kernel elements read back -> IR elements (ranges rebuilt for rbtree sets, key/key_end
// for concatenations). Elements that decode to nothing sensible are reported as text in
// `undecodable` and counted as unexpected by the caller.
struct RawElement {
    Bytes key;
    Bytes key_end;
    std::uint32_t flags = 0;
    bool has_verdict = false;
    std::int32_t verdict = 0;
    std::string chain;
};
struct DecodedElements {
    ruleset::ElementList elements;  // sorted
    std::vector<std::string> undecodable;
};
DecodedElements decode_elements(const ruleset::SetDefinition& set,
                                std::vector<RawElement> raw);

// "10.0.0.5 . 6 . 445" for error messages.
std::string describe_element(const ruleset::SetDefinition& set, const ruleset::Element& element);

}  // namespace bulkhead::enforcer::detail
