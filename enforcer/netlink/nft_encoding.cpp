#include "enforcer/netlink/nft_encoding.hpp"

#include "policies/nft_text.hpp"

#include <netinet/in.h>

#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>

#include <algorithm>
#include <string>
#include <cstring>
#include <limits>
#include <tuple>

namespace bulkhead::enforcer::detail {
namespace {

using ruleset::Field;
using ruleset::KeyType;

// nftables' enum expr_types (include/expression.h) for the typeof userdata.
constexpr std::uint32_t expr_payload = 7;
constexpr std::uint32_t expr_meta = 9;
constexpr std::uint32_t expr_concat = 13;
// nftables' enum proto_desc_id (include/proto.h).
constexpr std::uint32_t proto_desc_icmp = 4;
constexpr std::uint32_t proto_desc_th = 11;
constexpr std::uint32_t proto_desc_icmpv6 = 14;
constexpr std::uint32_t proto_desc_ether = 17;
// nftables' set userdata keys.
constexpr std::uint8_t udata_set_keybyteorder = 0;
constexpr std::uint8_t udata_set_databyteorder = 1;
constexpr std::uint8_t udata_set_merge_elements = 2;
constexpr std::uint8_t udata_set_key_typeof = 3;
constexpr std::uint8_t udata_set_data_interval = 6;
constexpr std::uint8_t udata_typeof_expr = 0;
constexpr std::uint8_t udata_typeof_data = 1;

// Userdata is a list of TLVs: type (1 byte), length (1 byte), value; integers are u32 in
// host byte order (nftnl_udata_put_u32).
class Udata {
public:
    void put_u32(std::uint8_t type, std::uint32_t value) {
        bytes_.push_back(type);
        bytes_.push_back(4);
        const auto* p = reinterpret_cast<const std::uint8_t*>(&value);
        bytes_.insert(bytes_.end(), p, p + 4);
    }
    std::size_t begin_nest(std::uint8_t type) {
        bytes_.push_back(type);
        bytes_.push_back(0);
        return bytes_.size();
    }
    void end_nest(std::size_t start) {
        bytes_[start - 1] = static_cast<std::uint8_t>(bytes_.size() - start);
    }
    Bytes take() { return std::move(bytes_); }

private:
    Bytes bytes_;
};

std::uint32_t max_number(KeyType type) {
    switch (type) {
    case KeyType::InetService: return 65535;
    case KeyType::InetProto:
    case KeyType::IcmpType:
    case KeyType::Icmpv6Type: return 255;
    default: return 0;
    }
}

void put_number(Bytes& out, std::uint32_t value, std::uint32_t length) {
    for (std::uint32_t i = 0; i < length; ++i) {
        out.push_back(static_cast<std::uint8_t>(value >> (8 * (length - 1 - i))));
    }
}

// Low and high bound of one key part, `key_length(type)` bytes each.
std::expected<std::pair<Bytes, Bytes>, std::string> part_bounds(const ruleset::KeyPart& part,
                                                                KeyType type) {
    const std::uint32_t length = key_length(type);
    switch (type) {
    case KeyType::Ifname: {
        const auto* name = std::get_if<std::string>(&part);
        if (name == nullptr) {
            return std::unexpected("an ifname key part must be an interface name");
        }
        if (name->empty() || name->size() >= length) {
            return std::unexpected("interface name \"" + *name + "\" is not 1..15 bytes");
        }
        Bytes b(length, 0);
        std::memcpy(b.data(), name->data(), name->size());
        return std::pair{b, b};
    }
    case KeyType::EtherAddr: {
        const auto* text = std::get_if<std::string>(&part);
        auto mac = text == nullptr ? std::expected<std::string, std::string>(std::unexpected("no text"))
                                   : policy::normalize_mac(*text);
        if (!mac) {
            return std::unexpected("an ether_addr key part must be a MAC address like 52:54:00:12:34:56");
        }
        Bytes b(length, 0);
        for (std::uint32_t i = 0; i < length; ++i) {
            b[i] = static_cast<std::uint8_t>(std::stoul(mac->substr(3 * i, 2), nullptr, 16));
        }
        return std::pair{b, b};
    }
    case KeyType::Ipv4Addr:
    case KeyType::Ipv6Addr: {
        const auto* range = std::get_if<ruleset::IpRange>(&part);
        const auto want = type == KeyType::Ipv4Addr ? policy::Family::Ipv4 : policy::Family::Ipv6;
        if (range == nullptr || range->family() != want || range->high.family != want ||
            range->high < range->low) {
            return std::unexpected(std::string("a ") + std::string(ruleset::nft_name(type)) +
                                   " key part must be an address range of that family");
        }
        return std::pair{Bytes(range->low.bytes.begin(), range->low.bytes.begin() + length),
                         Bytes(range->high.bytes.begin(), range->high.bytes.begin() + length)};
    }
    default: {
        const auto* numbers = std::get_if<ruleset::NumberRange>(&part);
        if (numbers == nullptr || numbers->low > numbers->high || numbers->high > max_number(type)) {
            return std::unexpected(std::string("a ") + std::string(ruleset::nft_name(type)) +
                                   " key part must be a number range within 0-" +
                                   std::to_string(max_number(type)));
        }
        Bytes low;
        Bytes high;
        put_number(low, numbers->low, length);
        put_number(high, numbers->high, length);
        return std::pair{low, high};
    }
    }
}

ruleset::KeyPart part_from_bytes(const std::uint8_t* data, KeyType type) {
    const std::uint32_t length = key_length(type);
    switch (type) {
    case KeyType::Ifname: {
        std::size_t n = 0;
        while (n < length && data[n] != 0) {
            ++n;
        }
        return std::string(reinterpret_cast<const char*>(data), n);
    }
    case KeyType::EtherAddr: {
        static constexpr char hex[] = "0123456789abcdef";
        std::string mac;
        for (std::uint32_t i = 0; i < length; ++i) {
            if (i != 0) {
                mac.push_back(':');
            }
            mac.push_back(hex[data[i] >> 4]);
            mac.push_back(hex[data[i] & 0xf]);
        }
        return mac;
    }
    case KeyType::Ipv4Addr:
    case KeyType::Ipv6Addr: {
        policy::IpAddress a;
        a.family = type == KeyType::Ipv4Addr ? policy::Family::Ipv4 : policy::Family::Ipv6;
        std::memcpy(a.bytes.data(), data, length);
        return ruleset::IpRange{a, a};
    }
    default: {
        std::uint32_t v = 0;
        for (std::uint32_t i = 0; i < length; ++i) {
            v = (v << 8) | data[i];
        }
        return ruleset::NumberRange{v, v};
    }
    }
}

// Widens `low` (a single value part) to the range [low, high-part].
void set_high(ruleset::KeyPart& part, const ruleset::KeyPart& high) {
    if (auto* r = std::get_if<ruleset::IpRange>(&part)) {
        r->high = std::get<ruleset::IpRange>(high).high;
    } else if (auto* n = std::get_if<ruleset::NumberRange>(&part)) {
        n->high = std::get<ruleset::NumberRange>(high).high;
    }
}

// Big-endian increment; false on overflow (the value was all ones).
bool increment(Bytes& value) {
    for (std::size_t i = value.size(); i-- > 0;) {
        if (++value[i] != 0) {
            return true;
        }
    }
    return false;
}

bool decrement(Bytes& value) {
    for (std::size_t i = value.size(); i-- > 0;) {
        if (value[i]-- != 0) {
            return true;
        }
    }
    return false;
}

bool all_zero(const Bytes& value) {
    return std::all_of(value.begin(), value.end(), [](std::uint8_t b) { return b == 0; });
}

}  // namespace

FieldSpec field_spec(Field field) {
    using S = FieldSpec::Source;
    switch (field) {
    case Field::Iifname:
        return {S::Meta, NFT_META_IIFNAME, 0, 0, 16, 0, 0, false, expr_meta, NFT_META_IIFNAME, 0};
    case Field::Oifname:
        return {S::Meta, NFT_META_OIFNAME, 0, 0, 16, 0, 0, false, expr_meta, NFT_META_OIFNAME, 0};
    case Field::L4proto:
        return {S::Meta, NFT_META_L4PROTO, 0, 0, 1, 0, 0, true, expr_meta, NFT_META_L4PROTO, 0};
    case Field::Ip4Saddr:
        return {S::Payload, 0, NFT_PAYLOAD_NETWORK_HEADER, 12, 4, NFPROTO_IPV4, 0, false, 0, 0, 0};
    case Field::Ip4Daddr:
        return {S::Payload, 0, NFT_PAYLOAD_NETWORK_HEADER, 16, 4, NFPROTO_IPV4, 0, false, 0, 0, 0};
    case Field::Ip6Saddr:
        return {S::Payload, 0, NFT_PAYLOAD_NETWORK_HEADER, 8, 16, NFPROTO_IPV6, 0, false, 0, 0, 0};
    case Field::Ip6Daddr:
        return {S::Payload, 0, NFT_PAYLOAD_NETWORK_HEADER, 24, 16, NFPROTO_IPV6, 0, false, 0, 0, 0};
    case Field::ThSport:
        return {S::Payload, 0, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2, 0, 0, false, expr_payload,
                proto_desc_th, 1};
    case Field::ThDport:
        return {S::Payload, 0, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, 0, 0, false, expr_payload,
                proto_desc_th, 2};
    case Field::IcmpType:
        return {S::Payload, 0, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1, NFPROTO_IPV4, IPPROTO_ICMP,
                false, expr_payload, proto_desc_icmp, 1};
    case Field::Icmpv6Type:
        return {S::Payload, 0, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1, NFPROTO_IPV6, IPPROTO_ICMPV6,
                false, expr_payload, proto_desc_icmpv6, 1};
    case Field::EtherSaddr:
        return {S::Payload, 0, NFT_PAYLOAD_LL_HEADER, 6, 6, 0, 0, false, expr_payload,
                proto_desc_ether, 2, true};
    }
    return {};
}

std::uint32_t datatype_id(KeyType type) {
    switch (type) {
    case KeyType::Ifname: return type_ifname;
    case KeyType::InetProto: return type_inet_protocol;
    case KeyType::Ipv4Addr: return type_ipaddr;
    case KeyType::Ipv6Addr: return type_ip6addr;
    case KeyType::InetService: return type_inet_service;
    case KeyType::IcmpType: return type_icmp_type;
    case KeyType::Icmpv6Type: return type_icmp6_type;
    case KeyType::EtherAddr: return type_etheraddr;
    }
    return 0;
}

std::uint32_t key_length(KeyType type) {
    switch (type) {
    case KeyType::Ifname: return 16;
    case KeyType::Ipv4Addr: return 4;
    case KeyType::Ipv6Addr: return 16;
    case KeyType::EtherAddr: return 6;
    case KeyType::InetService: return 2;
    case KeyType::InetProto:
    case KeyType::IcmpType:
    case KeyType::Icmpv6Type: return 1;
    }
    return 0;
}

std::uint32_t key_byteorder(KeyType type) {
    switch (type) {
    case KeyType::Ifname: return byteorder_host;
    case KeyType::InetProto: return byteorder_invalid;  // nft's inet_proto has none
    default: return byteorder_big;
    }
}

bool is_concat_interval(const ruleset::SetDefinition& set) {
    return set.interval && set.key.size() > 1;
}

SetLayout set_layout(const ruleset::SetDefinition& set) {
    SetLayout layout;
    const bool concat = set.key.size() > 1;
    if (set.interval) {
        layout.flags |= NFT_SET_INTERVAL;
    }
    if (concat && set.interval) {
        layout.flags |= NFT_SET_CONCAT;
    }
    if (set.verdict_map) {
        layout.flags |= NFT_SET_MAP;
        layout.is_map = true;
    }
    if (set.dynamic) {
        layout.flags |= NFT_SET_EVAL;
    }
    if (concat) {
        for (auto type : set.key) {
            layout.key_type = (layout.key_type << concat_type_bits) | datatype_id(type);
            layout.key_len += padded(key_length(type));
            if (set.interval) {
                layout.concat_lengths.push_back(static_cast<std::uint8_t>(key_length(type)));
            }
        }
    } else if (!set.key.empty()) {
        layout.key_type = datatype_id(set.key.front());
        layout.key_len = key_length(set.key.front());
    }
    // What nft 1.0.6 stores (mnl_nft_set_add): key byte order, data byte order for maps,
    // the key's typeof (for a datatype concatenation: the concat expression with no
    // sub-expressions), and whether the data is an interval.
    Udata u;
    u.put_u32(udata_set_keybyteorder,
              concat || set.key.empty() ? byteorder_invalid : key_byteorder(set.key.front()));
    if (set.verdict_map) {
        u.put_u32(udata_set_databyteorder, byteorder_invalid);
    }
    if (concat) {
        const auto nest = u.begin_nest(udata_set_key_typeof);
        u.put_u32(udata_typeof_expr, expr_concat);
        u.end_nest(u.begin_nest(udata_typeof_data));
        u.end_nest(nest);
    }
    if (set.verdict_map) {
        u.put_u32(udata_set_data_interval, 0);
    }
    layout.userdata = u.take();
    return layout;
}

AnonymousSet anonymous_set(Field field, std::vector<ruleset::NumberRange> values) {
    AnonymousSet anon;
    std::sort(values.begin(), values.end());
    const bool interval = std::any_of(values.begin(), values.end(),
                                      [](const auto& v) { return v.low != v.high; });
    if (interval) {
        // nft merges overlapping and adjacent ranges of an anonymous set (automerge).
        std::vector<ruleset::NumberRange> merged;
        for (const auto& v : values) {
            if (!merged.empty() && v.low <= merged.back().high + 1) {
                merged.back().high = std::max(merged.back().high, v.high);
            } else {
                merged.push_back(v);
            }
        }
        values = std::move(merged);
    } else {
        values.erase(std::unique(values.begin(), values.end()), values.end());
    }
    const auto spec = field_spec(field);
    const auto type = ruleset::key_type_of(field);
    anon.layout.flags = NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | (interval ? static_cast<std::uint32_t>(NFT_SET_INTERVAL) : 0u);
    anon.layout.key_type = datatype_id(type);
    anon.layout.key_len = key_length(type);
    Udata u;
    u.put_u32(udata_set_keybyteorder,
              spec.host_endian_integer && !interval ? byteorder_host : byteorder_big);
    if (interval) {
        u.put_u32(udata_set_merge_elements, 1);
    }
    const auto nest = u.begin_nest(udata_set_key_typeof);
    u.put_u32(udata_typeof_expr, spec.typeof_expr);
    const auto data = u.begin_nest(udata_typeof_data);
    u.put_u32(0, spec.typeof_a);
    if (spec.typeof_expr == expr_payload) {
        u.put_u32(1, spec.typeof_b);
    }
    u.end_nest(data);
    u.end_nest(nest);
    anon.layout.userdata = u.take();
    // DESC_SIZE as nft counts it: for intervals, two per range plus the zero segment
    // (whether or not the last range is open-ended).
    anon.size = static_cast<std::uint32_t>(values.size());
    if (interval) {
        anon.size = 2 * anon.size + (values.front().low != 0 ? 1 : 0);
    }
    anon.values = std::move(values);
    return anon;
}

std::vector<KernelElement> encode_values(Field field, const AnonymousSet& set) {
    const auto type = ruleset::key_type_of(field);
    const auto length = key_length(type);
    std::vector<KernelElement> out;
    const bool interval = (set.layout.flags & NFT_SET_INTERVAL) != 0;
    for (std::size_t i = 0; i < set.values.size(); ++i) {
        const auto& v = set.values[i];
        KernelElement start;
        put_number(start.key, v.low, length);
        start.ir_index = i;
        if (!interval) {
            out.push_back(std::move(start));
            continue;
        }
        if (i == 0 && v.low != 0) {
            KernelElement zero;
            zero.key.assign(length, 0);
            zero.flags = NFT_SET_ELEM_INTERVAL_END;
            zero.ir_index = std::numeric_limits<std::size_t>::max();
            out.push_back(std::move(zero));
        }
        Bytes end;
        put_number(end, v.high, length);
        const bool has_end = increment(end);
        start.interval_open = !has_end;
        out.push_back(std::move(start));
        if (has_end) {
            KernelElement e;
            e.key = std::move(end);
            e.flags = NFT_SET_ELEM_INTERVAL_END;
            e.ir_index = i;
            out.push_back(std::move(e));
        }
    }
    return out;
}

Bytes field_value(Field field, std::uint32_t value) {
    Bytes out;
    put_number(out, value, field_spec(field).length);
    return out;
}

std::expected<std::vector<KernelElement>, std::string> encode_elements(
    const ruleset::SetDefinition& set, const ruleset::ElementList& elements, bool first_segment) {
    std::vector<KernelElement> out;
    out.reserve(elements.size() * (set.interval && set.key.size() == 1 ? 2 : 1) + 1);
    const bool concat = set.key.size() > 1;
    struct Range {
        Bytes low;
        Bytes high;
        std::size_t index;
    };
    std::vector<Range> rbtree;  // single-field interval sets: encoded after sorting
    for (std::size_t index = 0; index < elements.size(); ++index) {
        const auto& element = elements[index];
        if (element.key.size() != set.key.size()) {
            return std::unexpected("element " + describe_element(set, element) + " has " +
                                   std::to_string(element.key.size()) + " key parts, set " +
                                   set.name + " has " + std::to_string(set.key.size()));
        }
        if (set.verdict_map && element.jump.empty()) {
            return std::unexpected("element " + describe_element(set, element) + " of map " +
                                   set.name + " has no jump target");
        }
        KernelElement k;
        k.ir_index = index;
        k.jump = set.verdict_map ? element.jump : std::string();
        Bytes high;
        for (std::size_t i = 0; i < set.key.size(); ++i) {
            auto bounds = part_bounds(element.key[i], set.key[i]);
            if (!bounds) {
                return std::unexpected("element " + describe_element(set, element) + " of set " +
                                       set.name + ": " + bounds.error());
            }
            if (!set.interval && bounds->first != bounds->second) {
                return std::unexpected("element " + describe_element(set, element) + " of set " +
                                       set.name + " is a range but the set has no interval flag");
            }
            k.key.insert(k.key.end(), bounds->first.begin(), bounds->first.end());
            high.insert(high.end(), bounds->second.begin(), bounds->second.end());
            if (concat) {
                const auto pad = padded(key_length(set.key[i])) - key_length(set.key[i]);
                k.key.insert(k.key.end(), pad, 0);
                high.insert(high.end(), pad, 0);
            }
        }
        if (set.interval && concat) {
            k.key_end = std::move(high);  // pipapo: every element carries key and key end
            out.push_back(std::move(k));
        } else if (set.interval) {
            rbtree.push_back({std::move(k.key), std::move(high), index});
        } else {
            out.push_back(std::move(k));
        }
    }
    if (!rbtree.empty()) {
        // rbtree: a start element at low, an end element flagged INTERVAL_END at high + 1
        // (none when high is the maximum: the start then carries the "open" flag).
        std::sort(rbtree.begin(), rbtree.end(),
                  [](const Range& a, const Range& b) { return a.low < b.low; });
        if (first_segment && !all_zero(rbtree.front().low)) {
            KernelElement zero;
            zero.key.assign(rbtree.front().low.size(), 0);
            zero.flags = NFT_SET_ELEM_INTERVAL_END;
            zero.ir_index = std::numeric_limits<std::size_t>::max();
            out.push_back(std::move(zero));
        }
        for (auto& r : rbtree) {
            KernelElement start;
            start.key = std::move(r.low);
            start.ir_index = r.index;
            start.jump = set.verdict_map ? elements[r.index].jump : std::string();
            Bytes end = std::move(r.high);
            const bool has_end = increment(end);
            start.interval_open = !has_end;
            out.push_back(std::move(start));
            if (has_end) {
                KernelElement e;
                e.key = std::move(end);
                e.flags = NFT_SET_ELEM_INTERVAL_END;
                e.ir_index = r.index;
                out.push_back(std::move(e));
            }
        }
    }
    return out;
}

DecodedElements decode_elements(const ruleset::SetDefinition& set, std::vector<RawElement> raw) {
    DecodedElements out;
    const bool concat = set.key.size() > 1;
    std::uint32_t expected_len = 0;
    for (auto type : set.key) {
        expected_len += concat ? padded(key_length(type)) : key_length(type);
    }
    auto hex = [](const Bytes& b) {
        static const char* digits = "0123456789abcdef";
        std::string s;
        for (auto c : b) {
            s += digits[c >> 4];
            s += digits[c & 15];
        }
        return s;
    };
    auto parts_of = [&](const Bytes& key) {
        std::vector<ruleset::KeyPart> parts;
        std::size_t offset = 0;
        for (auto type : set.key) {
            parts.push_back(part_from_bytes(key.data() + offset, type));
            offset += concat ? padded(key_length(type)) : key_length(type);
        }
        return parts;
    };
    auto jump_of = [&](const RawElement& e) -> std::optional<std::string> {
        if (!set.verdict_map) {
            return std::string();
        }
        if (!e.has_verdict || e.verdict != NFT_JUMP) {
            return std::nullopt;
        }
        return e.chain;
    };
    if (set.interval && !concat) {
        // Rebuild ranges: sort by key, ends before starts at the same key (adjacent ranges).
        std::sort(raw.begin(), raw.end(), [](const RawElement& a, const RawElement& b) {
            const bool a_end = (a.flags & NFT_SET_ELEM_INTERVAL_END) != 0;
            const bool b_end = (b.flags & NFT_SET_ELEM_INTERVAL_END) != 0;
            return std::tie(a.key, b_end) < std::tie(b.key, a_end);
        });
        const RawElement* start = nullptr;
        auto emit = [&](const RawElement& s, const Bytes* end) {
            ruleset::Element e;
            e.key = parts_of(s.key);
            Bytes high;
            if (end != nullptr) {
                high = *end;
                decrement(high);
            } else {
                high.assign(s.key.size(), 0xff);
            }
            set_high(e.key.front(), parts_of(high).front());
            auto jump = jump_of(s);
            if (!jump) {
                out.undecodable.push_back("element " + hex(s.key) + " with a non-jump verdict");
                return;
            }
            e.jump = *jump;
            out.elements.push_back(std::move(e));
        };
        for (const auto& r : raw) {
            if (r.key.size() != expected_len) {
                out.undecodable.push_back("element " + hex(r.key) + " of unexpected length");
                continue;
            }
            if ((r.flags & NFT_SET_ELEM_INTERVAL_END) != 0) {
                if (start != nullptr) {
                    emit(*start, &r.key);
                    start = nullptr;
                }
                continue;  // an end without a start: nft's leading zero segment
            }
            if (start != nullptr) {
                emit(*start, nullptr);
            }
            start = &r;
        }
        if (start != nullptr) {
            emit(*start, nullptr);
        }
    } else {
        for (const auto& r : raw) {
            if (r.key.size() != expected_len ||
                (set.interval && r.key_end.size() != expected_len)) {
                out.undecodable.push_back("element " + hex(r.key) + " of unexpected length");
                continue;
            }
            ruleset::Element e;
            e.key = parts_of(r.key);
            if (set.interval) {
                auto high = parts_of(r.key_end);
                for (std::size_t i = 0; i < e.key.size(); ++i) {
                    set_high(e.key[i], high[i]);
                }
            }
            auto jump = jump_of(r);
            if (!jump) {
                out.undecodable.push_back("element " + hex(r.key) + " with a non-jump verdict");
                continue;
            }
            e.jump = *jump;
            out.elements.push_back(std::move(e));
        }
    }
    std::sort(out.elements.begin(), out.elements.end());
    return out;
}

std::string describe_element(const ruleset::SetDefinition& set, const ruleset::Element& element) {
    if (element.key.size() != set.key.size()) {
        return "(malformed element)";
    }
    return ruleset::render_element(element, set);
}

}  // namespace bulkhead::enforcer::detail
