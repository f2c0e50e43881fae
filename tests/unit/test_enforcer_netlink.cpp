// The enforcer's netlink edge without a kernel: the batches built from the IR (message
// sequence, expressions, element encoding, paging), the drift comparison and the fake.
// The expected expressions are `nft --debug=netlink -f` output (nftables 1.0.6) for
// render_nft() of the same ruleset. To regenerate: write render_nft(small_ruleset()) to
// x.nft, run `ip netns add t; ip netns exec t nft --debug=netlink -f x.nft; ip netns delete t`
// and keep the rule blocks ("inet bulkhead <chain>" and their "  [ ... ]" lines).
#include "enforcer/netlink/fake_ruleset_backend.hpp"
#include "enforcer/netlink/kernel_table.hpp"
#include "enforcer/netlink/nft_encoding.hpp"
#include "enforcer/netlink/ruleset_backend.hpp"
#include "policies/nft_text.hpp"
#include "policies/policy_reader.hpp"
#include "policies/ruleset_compiler.hpp"
#include "policies/ruleset_diff.hpp"
#include "test_support.hpp"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <limits>

using namespace bulkhead;
using namespace bulkhead::enforcer;
using bulkhead::ruleset::Element;
using bulkhead::ruleset::ElementList;
using bulkhead::ruleset::KeyType;

namespace {

const char* small_ruleset_json = R"json({
 "format": "bulkhead-ruleset/1", "table": "bulkhead", "family": "inet",
 "enforcer": "unit", "policy": "unit", "ports": [],
 "sets": [
  {"name": "allow4", "key": ["ipv4_addr", "inet_proto", "inet_service"], "interval": true,
   "elements": [{"key": ["10.0.0.5", 6, 445]}, {"key": ["10.1.0.0/16", "0-255", "0-65535"]}]},
  {"name": "allow6", "key": ["ipv6_addr", "inet_proto", "inet_service"], "interval": true,
   "elements": [{"key": ["fd00::5", 17, 53]}]},
  {"name": "hosts4", "key": ["ipv4_addr"], "interval": true,
   "elements": [{"key": ["10.0.0.1"]}, {"key": ["10.2.0.0/16"]}]},
  {"name": "icmp4", "key": ["ipv4_addr", "icmp_type"], "interval": true,
   "elements": [{"key": ["10.0.0.30", 8]}]},
  {"name": "ports", "key": ["ifname"], "verdict_map": true,
   "elements": [{"key": ["vdi001"], "jump": "c_out"}, {"key": ["vdi002"], "jump": "c_out"}]},
  {"name": "quarantined", "key": ["ifname"], "dynamic": true, "elements": []}
 ],
 "chains": [
  {"name": "forward", "hook": "forward", "priority": 0, "rules": [
   {"matches": [{"lookup": {"fields": ["iifname"], "set": "quarantined"}}], "verdict": "drop"},
   {"matches": [{"ct_state": ["established", "related"]}], "verdict": "accept"},
   {"matches": [{"values": {"field": "icmpv6 type", "values": ["130-136", 143]}}], "verdict": "accept"},
   {"dispatch": {"field": "iifname", "map": "ports"}, "matches": [], "verdict": null}
  ]},
  {"name": "c_extra", "rules": []},
  {"name": "c_out", "rules": [
   {"matches": [{"lookup": {"fields": ["ip daddr", "meta l4proto", "th dport"], "set": "allow4"}}],
    "counter": true, "log": {"prefix": "bh:enf:out:allow:c", "group": 11}, "verdict": "return"},
   {"matches": [{"lookup": {"fields": ["ip6 daddr", "meta l4proto", "th dport"], "set": "allow6"}}], "verdict": "return"},
   {"matches": [{"lookup": {"fields": ["ip daddr", "icmp type"], "set": "icmp4"}}], "verdict": "return"},
   {"matches": [{"ct_direction": "reply"}, {"lookup": {"fields": ["ip daddr"], "set": "hosts4"}}], "verdict": "accept"},
   {"matches": [{"values": {"field": "th dport", "values": [22]}}], "verdict": {"jump": "c_extra"}},
   {"counter": true, "matches": [], "log": {"prefix": "bh:enf:out:default:c", "group": 10}, "verdict": "drop"}
  ]}
 ]
}
)json";

// nft --debug=netlink for the rules of small_ruleset_json.
const char* small_ruleset_expressions = R"text(inet bulkhead forward
  [ meta load iifname => reg 1 ]
  [ lookup reg 1 set quarantined ]
  [ immediate reg 0 drop ]

inet bulkhead forward
  [ ct load state => reg 1 ]
  [ bitwise reg 1 = ( reg 1 & 0x00000006 ) ^ 0x00000000 ]
  [ cmp neq reg 1 0x00000000 ]
  [ immediate reg 0 accept ]

inet bulkhead forward
  [ meta load nfproto => reg 1 ]
  [ cmp eq reg 1 0x0000000a ]
  [ meta load l4proto => reg 1 ]
  [ cmp eq reg 1 0x0000003a ]
  [ payload load 1b @ transport header + 0 => reg 1 ]
  [ lookup reg 1 set __set%d ]
  [ immediate reg 0 accept ]

inet bulkhead forward
  [ meta load iifname => reg 1 ]
  [ lookup reg 1 set ports dreg 0 ]

inet bulkhead c_out
  [ meta load nfproto => reg 1 ]
  [ cmp eq reg 1 0x00000002 ]
  [ payload load 4b @ network header + 16 => reg 1 ]
  [ meta load l4proto => reg 9 ]
  [ byteorder reg 9 = hton(reg 9, 2, 1) ]
  [ payload load 2b @ transport header + 2 => reg 10 ]
  [ lookup reg 1 set allow4 ]
  [ counter pkts 0 bytes 0 ]
  [ log prefix bh:enf:out:allow:c group 11 snaplen 0 qthreshold 0 ]
  [ immediate reg 0 return ]

inet bulkhead c_out
  [ meta load nfproto => reg 1 ]
  [ cmp eq reg 1 0x0000000a ]
  [ payload load 16b @ network header + 24 => reg 1 ]
  [ meta load l4proto => reg 2 ]
  [ byteorder reg 2 = hton(reg 2, 2, 1) ]
  [ payload load 2b @ transport header + 2 => reg 13 ]
  [ lookup reg 1 set allow6 ]
  [ immediate reg 0 return ]

inet bulkhead c_out
  [ meta load nfproto => reg 1 ]
  [ cmp eq reg 1 0x00000002 ]
  [ meta load l4proto => reg 1 ]
  [ cmp eq reg 1 0x00000001 ]
  [ payload load 4b @ network header + 16 => reg 1 ]
  [ payload load 1b @ transport header + 0 => reg 9 ]
  [ lookup reg 1 set icmp4 ]
  [ immediate reg 0 return ]

inet bulkhead c_out
  [ ct load direction => reg 1 ]
  [ cmp eq reg 1 0x00000001 ]
  [ meta load nfproto => reg 1 ]
  [ cmp eq reg 1 0x00000002 ]
  [ payload load 4b @ network header + 16 => reg 1 ]
  [ lookup reg 1 set hosts4 ]
  [ immediate reg 0 accept ]

inet bulkhead c_out
  [ payload load 2b @ transport header + 2 => reg 1 ]
  [ cmp eq reg 1 0x00001600 ]
  [ immediate reg 0 jump -> c_extra ]

inet bulkhead c_out
  [ counter pkts 0 bytes 0 ]
  [ log prefix bh:enf:out:default:c group 10 snaplen 0 qthreshold 0 ]
  [ immediate reg 0 drop ]

)text";

ruleset::Ruleset small_ruleset() {
    auto r = ruleset::ruleset_from_json(nlohmann::json::parse(small_ruleset_json));
    REQUIRE_MESSAGE(r, (r ? "" : r.error()));
    return *r;
}

ruleset::Ruleset vdi_pool(const std::string& enforcer, const std::set<std::string>& quarantined = {}) {
    auto p = policy::parse_policy(test::read_source_file("examples/vdi-pool/policy.json"));
    auto i = policy::parse_inventory(test::read_source_file("examples/vdi-pool/inventory.json"));
    REQUIRE(p);
    REQUIRE(i);
    ruleset::RulesetCompiler compiler(*p, *i);
    auto r = compiler.compile(enforcer, quarantined);
    REQUIRE(r);
    return *r;
}

const nlmsghdr* header(const std::vector<std::uint8_t>& bytes) {
    return reinterpret_cast<const nlmsghdr*>(bytes.data());
}

// Top-level attribute `type` of an nf_tables message, as a string ("" if absent).
std::string string_attr(const std::vector<std::uint8_t>& bytes, std::uint16_t type) {
    std::string found;
    struct Ctx {
        std::uint16_t type;
        std::string* out;
    } ctx{type, &found};
    mnl_attr_parse(header(bytes), sizeof(nfgenmsg),
                   [](const nlattr* attr, void* data) {
                       auto* c = static_cast<Ctx*>(data);
                       if (mnl_attr_get_type(attr) == c->type &&
                           mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) >= 0) {
                           *c->out = mnl_attr_get_str(attr);
                       }
                       return MNL_CB_OK;
                   },
                   &ctx);
    return found;
}

// Offsets (from the message start) of the element nests of a NEWSETELEM/DELSETELEM message.
std::vector<std::uint32_t> element_offsets(const std::vector<std::uint8_t>& bytes) {
    std::vector<std::uint32_t> offsets;
    const auto* nlh = header(bytes);
    const auto* base = reinterpret_cast<const char*>(nlh);
    const auto* attr = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
    const auto* end = reinterpret_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh));
    while (mnl_attr_ok(attr, static_cast<int>(end - reinterpret_cast<const char*>(attr)))) {
        if (mnl_attr_get_type(attr) == NFTA_SET_ELEM_LIST_ELEMENTS) {
            const auto* e = static_cast<const nlattr*>(mnl_attr_get_payload(attr));
            const auto* list_end = reinterpret_cast<const char*>(attr) + mnl_attr_get_len(attr);
            while (mnl_attr_ok(e, static_cast<int>(list_end - reinterpret_cast<const char*>(e)))) {
                offsets.push_back(static_cast<std::uint32_t>(reinterpret_cast<const char*>(e) - base));
                e = mnl_attr_next(e);
            }
        }
        attr = mnl_attr_next(attr);
    }
    return offsets;
}

std::string hex(const std::vector<std::uint8_t>& b) {
    static const char* digits = "0123456789abcdef";
    std::string s;
    for (auto c : b) {
        s += digits[c >> 4];
        s += digits[c & 15];
    }
    return s;
}

// What the kernel would hold for `ruleset` (encoded the way the batch encodes it), for
// compare() tests.
detail::KernelTable kernel_of(const ruleset::Ruleset& ruleset) {
    detail::KernelTable t;
    t.exists = true;
    for (const auto& set : ruleset.sets) {
        detail::KernelSet k;
        const auto layout = detail::set_layout(set);
        k.name = set.name;
        k.flags = layout.flags;
        k.key_type = layout.key_type;
        k.key_len = layout.key_len;
        k.data_type = layout.is_map ? static_cast<std::uint32_t>(NFT_DATA_VERDICT) : 0u;
        auto encoded = detail::encode_elements(set, *set.elements, true);
        REQUIRE(encoded);
        for (const auto& e : *encoded) {
            detail::RawElement raw{e.key, e.key_end, e.flags, !e.jump.empty(), NFT_JUMP, e.jump};
            k.elements.push_back(raw);
        }
        t.sets.push_back(std::move(k));
    }
    for (const auto& chain : ruleset.chains) {
        detail::KernelChain k;
        k.name = chain.name;
        if (chain.base) {
            k.base = true;
            k.hooknum = NF_INET_FORWARD;
            k.type = "filter";
            k.policy = NF_ACCEPT;
        }
        for (const auto& rule : chain.rules) {
            detail::KernelRule r;
            r.fingerprint = rule_fingerprint(rule);
            k.rules.push_back(r);
        }
        t.chains.push_back(std::move(k));
    }
    return t;
}

}  // namespace

TEST_CASE("enforcer netlink: replace batch message sequence") {
    const auto ruleset = small_ruleset();
    BatchOptions options;
    options.first_seq = 100;
    auto batch = build_replace_batch(ruleset, options);
    REQUIRE(batch);
    const std::vector<std::string> expected{
        "BATCH_BEGIN batch",
        "NEWTABLE table inet bulkhead",
        "DELTABLE table inet bulkhead",
        "NEWTABLE table inet bulkhead",
        "NEWCHAIN chain forward",
        "NEWCHAIN chain c_extra",
        "NEWCHAIN chain c_out",
        // set_creation_order(): the dynamic set first, then (1 + element messages + rules
        // looking it up) / (name length + 8), highest first, ties in IR order.
        "NEWSET set quarantined",
        "NEWSET set icmp4",
        "NEWSETELEM elements of set icmp4 (1 elements)",
        "NEWSET map ports",
        "NEWSETELEM elements of map ports (2 elements)",
        "NEWSET set allow4",
        "NEWSETELEM elements of set allow4 (2 elements)",
        "NEWSET set allow6",
        "NEWSETELEM elements of set allow6 (1 elements)",
        "NEWSET set hosts4",
        "NEWSETELEM elements of set hosts4 (2 elements)",
        "NEWRULE rule 1 of chain forward",
        "NEWRULE rule 2 of chain forward",
        "NEWSET anonymous set of rule 3 of chain forward",
        "NEWSETELEM elements of anonymous set of rule 3 of chain forward (2 elements)",
        "NEWRULE rule 3 of chain forward",
        "NEWRULE rule 4 of chain forward",
        "NEWRULE rule 1 of chain c_out",
        "NEWRULE rule 2 of chain c_out",
        "NEWRULE rule 3 of chain c_out",
        "NEWRULE rule 4 of chain c_out",
        "NEWRULE rule 5 of chain c_out",
        "NEWRULE rule 6 of chain c_out",
        "BATCH_END batch",
    };
    CHECK(batch->describe() == expected);
    CHECK(batch->elements() == ruleset.element_count());
    std::size_t bytes = 0;
    for (std::size_t i = 0; i < batch->messages().size(); ++i) {
        const auto& m = batch->messages()[i];
        CHECK(m.seq == 100 + i);
        const auto b = batch->message_bytes(i);
        CHECK(header(b)->nlmsg_len == m.length);
        CHECK(header(b)->nlmsg_seq == m.seq);
        const bool control = m.type == NFNL_MSG_BATCH_BEGIN || m.type == NFNL_MSG_BATCH_END;
        // Every change is acknowledged; the batch delimiters are not.
        CHECK(((header(b)->nlmsg_flags & NLM_F_ACK) != 0) == !control);
        bytes += m.length;
    }
    CHECK(bytes == batch->bytes());

    SUBCASE("check mode leaves out the end message") {
        options.commit = false;
        auto check = build_replace_batch(ruleset, options);
        REQUIRE(check);
        CHECK(check->messages().size() == batch->messages().size() - 1);
        CHECK(check->messages().back().type == NFT_MSG_NEWRULE);
    }
}

TEST_CASE("enforcer netlink: rule expressions are nft's") {
    auto batch = build_replace_batch(small_ruleset());
    REQUIRE(batch);
    const std::string rendered = render_batch_rules(*batch);
    CHECK(rendered == small_ruleset_expressions);
    // The concatenation [ip daddr, meta l4proto, th dport] on an interval set: the nfproto
    // dependency, then each field in its own 4-byte-aligned register (1, 9, 10), the
    // protocol converted to big endian as pipapo compares it.
    CHECK(rendered.find("  [ meta load nfproto => reg 1 ]\n"
                        "  [ cmp eq reg 1 0x00000002 ]\n"
                        "  [ payload load 4b @ network header + 16 => reg 1 ]\n"
                        "  [ meta load l4proto => reg 9 ]\n"
                        "  [ byteorder reg 9 = hton(reg 9, 2, 1) ]\n"
                        "  [ payload load 2b @ transport header + 2 => reg 10 ]\n"
                        "  [ lookup reg 1 set allow4 ]\n") != std::string::npos);
}

TEST_CASE("enforcer netlink: every message addresses table inet bulkhead only") {
    const auto old = vdi_pool("hv2");
    const auto quarantined = vdi_pool("hv2", {"vdi-101"});
    auto monitor_like = old;  // every class chain rewritten: DELRULE messages too
    for (auto& chain : monitor_like.chains) {
        for (auto& rule : chain.rules) {
            rule.counter = !rule.counter;
        }
    }
    std::vector<Batch> batches;
    batches.push_back(*build_replace_batch(old));
    batches.push_back(*build_diff_batch(ruleset::diff_rulesets(old, quarantined), quarantined));
    batches.push_back(*build_diff_batch(ruleset::diff_rulesets(old, monitor_like), monitor_like));
    for (const auto& batch : batches) {
        for (std::size_t i = 0; i < batch.messages().size(); ++i) {
            const auto& m = batch.messages()[i];
            if (m.type == NFNL_MSG_BATCH_BEGIN || m.type == NFNL_MSG_BATCH_END) {
                continue;
            }
            const auto bytes = batch.message_bytes(i);
            const auto* nfg = static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(header(bytes)));
            CHECK(nfg->nfgen_family == NFPROTO_INET);
            CHECK((header(bytes)->nlmsg_type >> 8) == NFNL_SUBSYS_NFTABLES);
            // Attribute 1 is the table name in table, chain, set, element and rule messages.
            CHECK(string_attr(bytes, 1) == "bulkhead");
        }
    }
}

TEST_CASE("enforcer netlink: quarantine is one element in one message") {
    const auto old = vdi_pool("hv1");
    const auto quarantined = vdi_pool("hv1", {"vdi-001"});
    const auto diff = ruleset::diff_rulesets(old, quarantined);
    auto batch = build_diff_batch(diff, quarantined);
    REQUIRE(batch);
    const auto lines = batch->describe();
    REQUIRE(lines.size() == 4);
    CHECK(lines[0] == "BATCH_BEGIN batch");
    CHECK(lines[1] == "NEWTABLE table inet bulkhead");
    CHECK(lines[2].starts_with("NEWSETELEM elements of set "));
    CHECK(lines[2].ends_with("(1 elements)"));
    CHECK(lines[3] == "BATCH_END batch");
    CHECK(batch->elements() == 1);
    // "add table" must not fail when the table exists: NLM_F_CREATE without NLM_F_EXCL.
    const auto table = batch->message_bytes(1);
    CHECK((header(table)->nlmsg_flags & NLM_F_EXCL) == 0);
}

TEST_CASE("enforcer netlink: diff batch follows render_nft_diff's order") {
    const auto old = small_ruleset();
    auto updated = old;
    // A new set and chain, a removed set and chain, changed elements, a changed chain.
    ruleset::SetDefinition added;
    added.name = "added4";
    added.key = {KeyType::Ipv4Addr};
    added.elements = std::make_shared<const ElementList>(
        ElementList{Element{{ruleset::IpRange{*policy::parse_ip_address("192.0.2.1"),
                                              *policy::parse_ip_address("192.0.2.1")}}, ""}});
    updated.sets.push_back(added);
    std::erase_if(updated.sets, [](const auto& s) { return s.name == "icmp4"; });
    std::sort(updated.sets.begin(), updated.sets.end(),
              [](const auto& a, const auto& b) { return a.name < b.name; });
    for (auto& s : updated.sets) {
        if (s.name == "hosts4") {
            auto e = *s.elements;
            e.erase(e.begin());
            e.push_back(Element{{ruleset::IpRange{*policy::parse_ip_address("10.9.0.0"),
                                                  *policy::parse_ip_address("10.9.255.255")}}, ""});
            std::sort(e.begin(), e.end());
            s.elements = std::make_shared<const ElementList>(e);
        }
    }
    for (auto& c : updated.chains) {
        if (c.name == "c_out") {
            std::erase_if(c.rules, [](const auto& r) {
                return std::any_of(r.matches.begin(), r.matches.end(), [](const auto& m) {
                    const auto* l = std::get_if<ruleset::SetLookup>(&m);
                    return l != nullptr && l->set == "icmp4";
                });
            });
            ruleset::Rule r;
            r.matches.push_back(ruleset::SetLookup{{ruleset::Field::Ip4Saddr}, "added4"});
            r.verdict = {ruleset::VerdictKind::Drop, ""};
            c.rules.insert(c.rules.begin(), r);
            ruleset::Rule j;
            j.verdict = {ruleset::VerdictKind::Jump, "c_new"};
            c.rules.insert(c.rules.begin(), j);
        }
    }
    std::erase_if(updated.chains, [](const auto& c) { return c.name == "c_extra"; });
    for (auto& c : updated.chains) {
        for (auto& r : c.rules) {
            if (r.verdict.chain == "c_extra") {
                r.verdict.chain = "c_out";
                r.verdict.kind = ruleset::VerdictKind::Goto;
            }
        }
    }
    ruleset::Chain fresh;
    fresh.name = "c_new";
    ruleset::Rule counter;
    counter.counter = true;
    fresh.rules.push_back(counter);
    updated.chains.push_back(fresh);

    const auto diff = ruleset::diff_rulesets(old, updated);
    REQUIRE_FALSE(diff.full_replace);
    auto batch = build_diff_batch(diff, updated);
    REQUIRE(batch);
    const std::vector<std::string> expected{
        "BATCH_BEGIN batch",
        "NEWTABLE table inet bulkhead",
        "NEWSET set added4",
        "NEWCHAIN chain c_new",
        "DELSETELEM elements of set hosts4 (1 elements)",
        "NEWSETELEM elements of set added4 (1 elements)",
        "NEWSETELEM elements of set hosts4 (1 elements)",
        "DELRULE chain c_out",
        "NEWRULE rule 1 of chain c_out",
        "NEWRULE rule 2 of chain c_out",
        "NEWRULE rule 3 of chain c_out",
        "NEWRULE rule 4 of chain c_out",
        "NEWRULE rule 5 of chain c_out",
        "NEWRULE rule 6 of chain c_out",
        "NEWRULE rule 7 of chain c_out",
        "NEWRULE rule 1 of chain c_new",
        "DELRULE chain c_extra",
        "DELCHAIN chain c_extra",
        "DELSET set icmp4",
        "BATCH_END batch",
    };
    CHECK(batch->describe() == expected);
    CHECK(batch->elements() == diff.elements_added() + diff.elements_removed());
    // Diff element additions are like `nft add element` (NLM_F_CREATE only); a replace's
    // fresh sets refuse duplicates (NLM_F_EXCL).
    for (std::size_t i = 0; i < batch->messages().size(); ++i) {
        if (batch->messages()[i].type == NFT_MSG_NEWSETELEM) {
            CHECK((header(batch->message_bytes(i))->nlmsg_flags & NLM_F_EXCL) == 0);
        }
    }
    auto replace = build_replace_batch(updated);
    for (std::size_t i = 0; i < replace->messages().size(); ++i) {
        if (replace->messages()[i].type == NFT_MSG_NEWSETELEM) {
            CHECK((header(replace->message_bytes(i))->nlmsg_flags & NLM_F_EXCL) != 0);
        }
    }
}

TEST_CASE("enforcer netlink: large element lists are split into messages and pages") {
    ruleset::Ruleset r;
    r.enforcer = "big";
    ruleset::SetDefinition set;
    set.name = "big6";
    set.key = {KeyType::Ipv6Addr, KeyType::InetProto, KeyType::InetService};
    set.interval = true;
    ElementList elements;
    for (std::uint32_t i = 0; i < 5000; ++i) {
        auto a = *policy::parse_ip_address("fd00::1");
        a.bytes[12] = static_cast<std::uint8_t>(i >> 8);
        a.bytes[13] = static_cast<std::uint8_t>(i);
        elements.push_back(Element{{ruleset::IpRange{a, a}, ruleset::NumberRange{6, 6},
                                    ruleset::NumberRange{1000, 2000}}, ""});
    }
    set.elements = std::make_shared<const ElementList>(elements);
    r.sets.push_back(set);
    BatchOptions options;
    options.page_size = 100 * 1024;
    auto batch = build_replace_batch(r, options);
    REQUIRE(batch);
    std::size_t element_messages = 0;
    std::size_t carried = 0;
    for (const auto& m : batch->messages()) {
        if (m.type == NFT_MSG_NEWSETELEM) {
            ++element_messages;
            carried += m.elements;
            // The element list is one attribute: its 16-bit length caps the message.
            CHECK(m.length <= std::numeric_limits<std::uint16_t>::max() + 128u);
        }
    }
    CHECK(element_messages > 1);
    CHECK(carried == 5000);
    CHECK(batch->pages().size() > 1);
    // The pages, concatenated, are the messages in sequence order: one datagram.
    std::vector<std::uint8_t> all;
    for (const auto& page : batch->pages()) {
        CHECK(page.size() <= options.page_size);
        all.insert(all.end(), page.begin(), page.end());
    }
    CHECK(all.size() == batch->bytes());
    int remaining = static_cast<int>(all.size());
    std::size_t count = 0;
    std::uint32_t seq = batch->messages().front().seq;
    for (auto* nlh = reinterpret_cast<const nlmsghdr*>(all.data()); mnl_nlmsg_ok(nlh, remaining);
         nlh = mnl_nlmsg_next(nlh, &remaining)) {
        CHECK(nlh->nlmsg_seq == seq++);
        ++count;
    }
    CHECK(count == batch->messages().size());
    CHECK(remaining == 0);
}

TEST_CASE("enforcer netlink: a kernel error offset names the element") {
    const auto ruleset = small_ruleset();
    auto batch = build_replace_batch(ruleset);
    REQUIRE(batch);
    for (std::size_t i = 0; i < batch->messages().size(); ++i) {
        const auto& m = batch->messages()[i];
        if (m.object != "elements of map ports") {
            continue;
        }
        const auto offsets = element_offsets(batch->message_bytes(i));
        REQUIRE(offsets.size() == 2);
        CHECK(batch->object_at(m.seq, offsets[1] + 8) == "element \"vdi002\" : jump c_out of map ports");
        CHECK(batch->object_at(m.seq, 0) == "elements of map ports");
    }
    CHECK(batch->object_at(batch->messages()[4].seq, 0) == "chain forward");
    CHECK(batch->object_at(12345678, 0).empty());
}

TEST_CASE("enforcer netlink: set layouts are nft's") {
    const auto ruleset = small_ruleset();
    auto layout = detail::set_layout(*ruleset.find_set("allow4"));
    CHECK(layout.flags == (NFT_SET_INTERVAL | NFT_SET_CONCAT));
    CHECK(layout.key_type == 0x730d);  // ipv4_addr . inet_proto . inet_service
    CHECK(layout.key_len == 12);
    CHECK(layout.concat_lengths == std::vector<std::uint8_t>{4, 1, 2});
    CHECK(hex(layout.userdata) == "000400000000030800040d0000000100");

    layout = detail::set_layout(*ruleset.find_set("ports"));
    CHECK(layout.flags == NFT_SET_MAP);
    CHECK(layout.key_type == 41);
    CHECK(layout.key_len == 16);
    CHECK(layout.is_map);
    CHECK(hex(layout.userdata) == "000401000000010400000000060400000000");

    layout = detail::set_layout(*ruleset.find_set("quarantined"));
    CHECK(layout.flags == NFT_SET_EVAL);
    layout = detail::set_layout(*ruleset.find_set("hosts4"));
    CHECK(layout.flags == NFT_SET_INTERVAL);
    CHECK(hex(layout.userdata) == "000402000000");

    // icmpv6 type { 130-136, 143 }: nft's anonymous interval set.
    auto anon = detail::anonymous_set(ruleset::Field::Icmpv6Type, {{143, 143}, {130, 136}});
    CHECK(anon.layout.flags == (NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_INTERVAL));
    CHECK(anon.size == 5);
    const auto encoded = detail::encode_values(ruleset::Field::Icmpv6Type, anon);
    REQUIRE(encoded.size() == 5);
    CHECK(hex(encoded[0].key) == "00");
    CHECK(encoded[0].flags == NFT_SET_ELEM_INTERVAL_END);  // the leading zero segment
    CHECK(hex(encoded[1].key) == "82");
    CHECK(hex(encoded[2].key) == "89");
    CHECK(hex(encoded[4].key) == "90");
}

TEST_CASE("enforcer netlink: elements survive encoding and decoding") {
    auto addr = [](const char* a) { return *policy::parse_ip_address(a); };
    auto ip = [&](const char* low, const char* high) { return ruleset::IpRange{addr(low), addr(high)}; };
    SUBCASE("single-field interval set with adjacent, zero-based and open-ended ranges") {
        ruleset::SetDefinition set;
        set.name = "s";
        set.key = {KeyType::Ipv4Addr};
        set.interval = true;
        ElementList elements{
            Element{{ip("0.0.0.0", "0.255.255.255")}, ""},
            Element{{ip("10.0.0.1", "10.0.0.1")}, ""},
            Element{{ip("10.0.0.2", "10.0.0.9")}, ""},  // adjacent to the previous one
            Element{{ip("224.0.0.0", "255.255.255.255")}, ""},
        };
        auto encoded = detail::encode_elements(set, elements, true);
        REQUIRE(encoded);
        // Starts at zero: no leading zero segment. Ends at the maximum: no end element,
        // the start carries nft's "open interval" flag instead.
        CHECK(encoded->size() == 7);
        CHECK(encoded->back().interval_open);
        std::vector<detail::RawElement> raw;
        for (const auto& e : *encoded) {
            raw.push_back({e.key, e.key_end, e.flags, false, 0, ""});
        }
        std::reverse(raw.begin(), raw.end());  // the kernel's dump order is its own
        auto decoded = detail::decode_elements(set, raw);
        CHECK(decoded.undecodable.empty());
        CHECK(decoded.elements == elements);
    }
    SUBCASE("leading zero segment when the first range does not start at zero") {
        ruleset::SetDefinition set;
        set.name = "s";
        set.key = {KeyType::InetService};
        set.interval = true;
        ElementList elements{Element{{ruleset::NumberRange{22, 22}}, ""}};
        auto with = detail::encode_elements(set, elements, true);
        auto without = detail::encode_elements(set, elements, false);
        REQUIRE(with);
        REQUIRE(without);
        CHECK(with->size() == 3);
        CHECK(hex(with->front().key) == "0000");
        CHECK(with->front().flags == NFT_SET_ELEM_INTERVAL_END);
        CHECK(without->size() == 2);
        CHECK(hex((*without)[1].key) == "0017");  // 22 + 1
        std::vector<detail::RawElement> raw;
        for (const auto& e : *with) {
            raw.push_back({e.key, e.key_end, e.flags, false, 0, ""});
        }
        CHECK(detail::decode_elements(set, raw).elements == elements);
    }
    SUBCASE("concatenated interval set: key and key end, fields padded to 4 bytes") {
        ruleset::SetDefinition set;
        set.name = "c";
        set.key = {KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService};
        set.interval = true;
        ElementList elements{
            Element{{ip("10.0.0.5", "10.0.0.5"), ruleset::NumberRange{6, 6},
                     ruleset::NumberRange{445, 445}}, ""},
            Element{{ip("10.1.0.0", "10.1.255.255"), ruleset::NumberRange{0, 255},
                     ruleset::NumberRange{0, 65535}}, ""},
        };
        auto encoded = detail::encode_elements(set, elements, true);
        REQUIRE(encoded);
        REQUIRE(encoded->size() == 2);
        CHECK(hex((*encoded)[0].key) == "0a0000050600000001bd0000");
        CHECK(hex((*encoded)[1].key_end) == "0a01ffffff000000ffff0000");
        std::vector<detail::RawElement> raw;
        for (const auto& e : *encoded) {
            raw.push_back({e.key, e.key_end, e.flags, false, 0, ""});
        }
        CHECK(detail::decode_elements(set, raw).elements == elements);
    }
    SUBCASE("verdict map and hash set") {
        ruleset::SetDefinition map;
        map.name = "m";
        map.key = {KeyType::Ifname};
        map.verdict_map = true;
        ElementList elements{Element{{std::string("vdi001")}, "c1_out"},
                             Element{{std::string("vdi002")}, "c2_out"}};
        auto encoded = detail::encode_elements(map, elements, true);
        REQUIRE(encoded);
        CHECK(hex((*encoded)[0].key) == "76646930303100000000000000000000");
        std::vector<detail::RawElement> raw;
        for (const auto& e : *encoded) {
            raw.push_back({e.key, e.key_end, e.flags, true, NFT_JUMP, e.jump});
        }
        CHECK(detail::decode_elements(map, raw).elements == elements);
        raw[0].verdict = NF_ACCEPT;  // not a jump: not an IR element
        auto odd = detail::decode_elements(map, raw);
        CHECK(odd.elements.size() == 1);
        CHECK(odd.undecodable.size() == 1);
    }
}

TEST_CASE("enforcer netlink: IR the kernel cannot express is refused before sending") {
    auto ruleset = small_ruleset();
    SUBCASE("a range in a set without flags interval") {
        for (auto& s : ruleset.sets) {
            if (s.name == "quarantined") {
                s.key = {KeyType::InetService};
                s.elements = std::make_shared<const ElementList>(
                    ElementList{Element{{ruleset::NumberRange{1, 2}}, ""}});
            }
        }
        auto batch = build_replace_batch(ruleset);
        REQUIRE_FALSE(batch);
        CHECK(batch.error().object == "set quarantined");
        CHECK(batch.error().error_number == 0);
        CHECK(batch.error().message.find("no interval flag") != std::string::npos);
    }
    SUBCASE("an interface name too long for IFNAMSIZ") {
        for (auto& s : ruleset.sets) {
            if (s.name == "quarantined") {
                s.elements = std::make_shared<const ElementList>(
                    ElementList{Element{{std::string("a-much-too-long-ifname")}, ""}});
            }
        }
        auto batch = build_replace_batch(ruleset);
        REQUIRE_FALSE(batch);
        CHECK(batch.error().object == "set quarantined");
    }
    SUBCASE("a lookup on a set the ruleset lacks") {
        ruleset.chains.front().rules.front().matches = {
            ruleset::SetLookup{{ruleset::Field::Iifname}, "nonexistent"}};
        auto batch = build_replace_batch(ruleset);
        REQUIRE_FALSE(batch);
        CHECK(batch.error().object == "rule 1 of chain forward");
    }
    SUBCASE("IPv4 and IPv6 fields in one rule") {
        ruleset.chains.front().rules.front().matches = {
            ruleset::SetLookup{{ruleset::Field::Ip4Daddr}, "hosts4"},
            ruleset::ValueMatch{ruleset::Field::Icmpv6Type, {{1, 1}}}};
        auto batch = build_replace_batch(ruleset);
        REQUIRE_FALSE(batch);
        CHECK(batch.error().message.find("mixes IPv4 and IPv6") != std::string::npos);
    }
}

TEST_CASE("enforcer netlink: rule fingerprints are stable and tell rules apart") {
    const auto ruleset = small_ruleset();
    const auto& rules = ruleset.find_chain("c_out")->rules;
    CHECK(rule_fingerprint(rules[0]) == rule_fingerprint(rules[0]));
    CHECK(rule_fingerprint(rules[0]) != rule_fingerprint(rules[1]));
    auto changed = rules[0];
    changed.log->group = 12;
    CHECK(rule_fingerprint(changed) != rule_fingerprint(rules[0]));
    // FNV-1a 64 of "counter": the value is stored in kernels; changing the function would
    // make every enforcer see drift once after an upgrade.
    ruleset::Rule counter;
    counter.counter = true;
    CHECK(rule_fingerprint(counter) == 0x77976c7416517c63ULL);
}

TEST_CASE("enforcer netlink: compare() reports drift between kernel and IR") {
    const auto desired = small_ruleset();
    auto kernel = kernel_of(desired);
    CHECK(detail::compare(kernel, desired).clean());
    CHECK(detail::compare(kernel, desired).summary() == "clean");

    SUBCASE("missing table") {
        detail::KernelTable none;
        auto drift = detail::compare(none, desired);
        CHECK(drift.table_missing);
        CHECK(drift.summary() == "table inet bulkhead missing");
    }
    SUBCASE("a deleted element, an added element") {
        for (auto& s : kernel.sets) {
            if (s.name == "ports") {
                s.elements.pop_back();
            }
            if (s.name == "quarantined") {
                std::vector<std::uint8_t> key(16, 0);
                key[0] = 'x';
                s.elements.push_back({key, {}, 0, false, 0, ""});
            }
        }
        auto drift = detail::compare(kernel, desired);
        CHECK(drift.missing_elements == 1);
        CHECK(drift.unexpected_elements == 1);
        CHECK(drift.summary() == "1 missing elements; 1 unexpected elements");
    }
    SUBCASE("a rule without our fingerprint, a missing chain, an extra chain") {
        kernel.chains[0].rules.push_back({});
        kernel.chains.erase(kernel.chains.begin() + 1);
        kernel.chains.push_back({"sidecar", false, 0, 0, "", 0, {}});
        auto drift = detail::compare(kernel, desired);
        CHECK(drift.changed_chains == std::vector<std::string>{"forward"});
        CHECK(drift.missing_chains == std::vector<std::string>{"c_extra"});
        CHECK(drift.unexpected_chains == std::vector<std::string>{"sidecar"});
    }
    SUBCASE("a base chain turned into a drop policy") {
        kernel.chains[0].policy = NF_DROP;
        CHECK(detail::compare(kernel, desired).changed_chains == std::vector<std::string>{"forward"});
    }
    SUBCASE("sets: missing, unexpected, changed; anonymous sets belong to rules") {
        kernel.sets.erase(kernel.sets.begin());  // allow4, 2 elements
        kernel.sets.push_back({"intruder", 0, 7, 4, 0, 0, 0, {}, {}, {}, {}});
        kernel.sets.push_back({"__set0", NFT_SET_ANONYMOUS | NFT_SET_CONSTANT, 13, 2, 0, 0, 1, {}, {}, {}, {}});
        for (auto& s : kernel.sets) {
            if (s.name == "hosts4") {
                s.flags = 0;
            }
        }
        auto drift = detail::compare(kernel, desired);
        CHECK(drift.missing_sets == std::vector<std::string>{"allow4"});
        CHECK(drift.missing_elements == 2);
        CHECK(drift.unexpected_sets == std::vector<std::string>{"intruder"});
        CHECK(drift.changed_sets == std::vector<std::string>{"hosts4"});
    }
}

TEST_CASE("enforcer netlink: the fake backend behaves like the kernel edge") {
    FakeRulesetBackend fake;
    const auto old = vdi_pool("hv1");
    CHECK(fake.check(old)->table_missing);
    auto stats = fake.replace(old);
    REQUIRE(stats);
    CHECK(stats->generation == 2);
    CHECK(stats->messages > 10);
    CHECK(fake.check(old)->clean());

    const auto quarantined = vdi_pool("hv1", {"vdi-001"});
    const auto diff = ruleset::diff_rulesets(old, quarantined);
    stats = fake.apply_diff(diff, quarantined);
    REQUIRE(stats);
    CHECK(stats->elements == 1);
    CHECK(stats->messages == 4);
    CHECK(fake.check(quarantined)->clean());
    CHECK(fake.check(old)->missing_elements == 0);
    CHECK(fake.check(old)->unexpected_elements == 1);

    // Lifting the quarantine twice: the second removal finds no element and changes nothing.
    const auto lift = ruleset::diff_rulesets(quarantined, old);
    REQUIRE(fake.apply_diff(lift, old));
    const auto generation = *fake.generation();
    auto again = fake.apply_diff(lift, old);
    REQUIRE_FALSE(again);
    CHECK(again.error().error_number == ENOENT);
    CHECK(*fake.generation() == generation);
    CHECK(fake.check(old)->clean());

    fake.fail_next({"injected", EIO, "batch"});
    auto failed = fake.replace(old);
    REQUIRE_FALSE(failed);
    CHECK(failed.error().message == "injected");
    CHECK(*fake.generation() == generation);

    fake.table().reset();  // someone flushed the ruleset
    CHECK(fake.check(old)->table_missing);
    REQUIRE(fake.replace(old));
    CHECK(fake.check(old)->clean());
}

TEST_CASE("enforcer netlink: sets are created dynamic first, then by lookups per name byte") {
    const auto ruleset = small_ruleset();
    const auto order = set_creation_order(ruleset);
    REQUIRE(order.size() == ruleset.sets.size());
    std::vector<std::string> names;
    for (const auto i : order) {
        names.push_back(ruleset.sets[i].name);
    }
    // "quarantined" is dynamic (changed one element at a time at run time): first. The map
    // (dispatch + elements) and the looked-up sets follow; a permutation of the IR's sets.
    CHECK(names.front() == "quarantined");
    auto sorted = names;
    std::sort(sorted.begin(), sorted.end());
    std::vector<std::string> ir;
    for (const auto& s : ruleset.sets) {
        ir.push_back(s.name);
    }
    std::sort(ir.begin(), ir.end());
    CHECK(sorted == ir);

    SUBCASE("a set many rules look up comes before one no rule looks up") {
        ruleset::Ruleset r;
        ruleset::SetDefinition unused, used;
        unused.name = "aaaa";
        unused.key = {KeyType::Ipv4Addr};
        used.name = "bbbb";
        used.key = {KeyType::Ipv4Addr};
        r.sets = {unused, used};
        ruleset::Chain chain;
        chain.name = "c";
        for (int i = 0; i < 3; ++i) {
            ruleset::Rule rule;
            rule.matches.push_back(ruleset::SetLookup{{ruleset::Field::Ip4Daddr}, "bbbb"});
            chain.rules.push_back(rule);
        }
        r.chains = {chain};
        CHECK(set_creation_order(r) == std::vector<std::size_t>{1, 0});
    }
}

namespace {

std::vector<ElementChange> port_changes(const std::vector<std::pair<ElementChange::Kind, std::string>>& list,
                                        const std::string& set = "quarantined") {
    std::vector<ElementChange> out;
    for (const auto& [kind, port] : list) {
        out.push_back({kind, set, Element{{port}, ""}});
    }
    return out;
}

std::vector<std::size_t> all_of(std::size_t n) {
    std::vector<std::size_t> v(n);
    for (std::size_t i = 0; i < n; ++i) {
        v[i] = i;
    }
    return v;
}

}  // namespace

TEST_CASE("enforcer netlink: element changes as pipelined or coalesced transactions") {
    const auto ruleset = small_ruleset();
    using K = ElementChange::Kind;
    auto changes = port_changes({{K::Add, "vdi101"}, {K::Add, "vdi102"}, {K::Remove, "vdi103"}, {K::Add, "vdi104"}});
    changes.push_back({K::Add, "no_such_set", Element{{std::string("vdi105")}, ""}});
    // An address is no interface name: refused before sending.
    changes.push_back({K::Add, "quarantined", ruleset.find_set("hosts4")->elements->front()});
    const auto which = all_of(changes.size());

    SUBCASE("strict: one transaction per change, no table message") {
        auto built = build_element_change_batch(changes, which, ruleset, ElementCommit::PipelinedPerChange);
        REQUIRE(built.refused.size() == 2);
        CHECK(built.refused[0].first == 4);
        CHECK(built.refused[0].second.object == "set no_such_set");
        CHECK(built.refused[1].first == 5);
        CHECK(built.refused[1].second.object == "set quarantined");
        REQUIRE(built.transactions.size() == 4);
        const auto lines = built.batch.describe();
        const std::vector<std::string> expected{
            "BATCH_BEGIN batch", "NEWSETELEM elements of set quarantined (1 elements)", "BATCH_END batch",
            "BATCH_BEGIN batch", "NEWSETELEM elements of set quarantined (1 elements)", "BATCH_END batch",
            "BATCH_BEGIN batch", "DELSETELEM elements of set quarantined (1 elements)", "BATCH_END batch",
            "BATCH_BEGIN batch", "NEWSETELEM elements of set quarantined (1 elements)", "BATCH_END batch",
        };
        CHECK(lines == expected);
        for (std::size_t t = 0; t < 4; ++t) {
            const auto& tx = built.transactions[t];
            CHECK(tx.first_message == 3 * t);
            CHECK(tx.end_message == 3 * t + 3);
            REQUIRE(tx.changes.size() == 1);
            CHECK(tx.changes[0] == t);
            // An error on the element message names the change, with or without an offset.
            const auto& m = built.batch.messages()[3 * t + 1];
            CHECK(built.batch.change_at(m.seq, 0) == t);
            const auto offsets = element_offsets(built.batch.message_bytes(3 * t + 1));
            REQUIRE(offsets.size() == 1);
            CHECK(built.batch.change_at(m.seq, offsets[0] + 4) == t);
            CHECK_FALSE(built.batch.change_at(built.batch.messages()[3 * t].seq, 0));  // begin
            // Additions like `nft add element`: create, not exclusive; every change ACKed.
            const auto bytes = built.batch.message_bytes(3 * t + 1);
            const auto* nlh = header(bytes);
            CHECK((nlh->nlmsg_flags & NLM_F_EXCL) == 0);
            CHECK((nlh->nlmsg_flags & NLM_F_ACK) != 0);
        }
    }

    SUBCASE("coalesced: one transaction, consecutive changes of a set and kind share a message") {
        auto built = build_element_change_batch(changes, which, ruleset, ElementCommit::Coalesced);
        CHECK(built.refused.size() == 2);
        REQUIRE(built.transactions.size() == 1);
        CHECK(built.transactions[0].changes == std::vector<std::size_t>{0, 1, 2, 3});
        const std::vector<std::string> expected{
            "BATCH_BEGIN batch",
            "NEWSETELEM elements of set quarantined (2 elements)",
            "DELSETELEM elements of set quarantined (1 elements)",
            "NEWSETELEM elements of set quarantined (1 elements)",
            "BATCH_END batch",
        };
        CHECK(built.batch.describe() == expected);
        // The kernel's error offset inside the shared message names the one change.
        const auto& m = built.batch.messages()[1];
        const auto offsets = element_offsets(built.batch.message_bytes(1));
        REQUIRE(offsets.size() == 2);
        CHECK(built.batch.change_at(m.seq, offsets[0] + 4) == 0);
        CHECK(built.batch.change_at(m.seq, offsets[1] + 4) == 1);
        CHECK(built.batch.object_at(m.seq, offsets[1] + 4) == "element \"vdi102\" of set quarantined");
        CHECK_FALSE(built.batch.change_at(m.seq, 0));  // two changes, no offset: unknown
        CHECK(built.batch.change_at(built.batch.messages()[2].seq, 0) == 2);
    }

    SUBCASE("a subset of the changes") {
        const std::vector<std::size_t> some{1, 3};
        auto built = build_element_change_batch(changes, some, ruleset, ElementCommit::PipelinedPerChange);
        CHECK(built.refused.empty());
        REQUIRE(built.transactions.size() == 2);
        CHECK(built.transactions[0].changes == std::vector<std::size_t>{1});
        CHECK(built.transactions[1].changes == std::vector<std::size_t>{3});
    }
}

TEST_CASE("enforcer netlink: element changes on the fake fail one by one") {
    FakeRulesetBackend fake;
    const auto ruleset = small_ruleset();
    REQUIRE(fake.replace(ruleset));
    using K = ElementChange::Kind;
    // The removal in the middle finds nothing: only it fails.
    const auto changes = port_changes({{K::Add, "vdi201"}, {K::Remove, "ghost"}, {K::Add, "vdi202"}});
    for (const auto mode : {ElementCommit::PipelinedPerChange, ElementCommit::Coalesced}) {
        const auto before = *fake.generation();
        const auto report = fake.apply_element_changes(changes, ruleset, mode);
        REQUIRE(report.results.size() == 3);
        CHECK(report.results[0].ok());
        REQUIRE_FALSE(report.results[1].ok());
        CHECK(report.results[1].error->error_number == ENOENT);
        CHECK(report.results[2].ok());
        CHECK(report.failed() == 1);
        CHECK(report.committed == 2);
        CHECK(*fake.generation() == before + 2);
        const auto* set = fake.table()->find_set("quarantined");
        REQUIRE(set != nullptr);
        CHECK(set->elements->size() == 2);
        // Back to the start for the next mode.
        const auto undo = port_changes({{K::Remove, "vdi201"}, {K::Remove, "vdi202"}});
        CHECK(fake.apply_element_changes(undo, ruleset, mode).failed() == 0);
    }
}

TEST_CASE("enforcer netlink: a tripwire's packet-path set update is nft's dynset") {
    // nft --debug=netlink (nftables 1.0.6) for:
    //   iifname @armed ip daddr @trap4 add @quarantined { iifname } counter
    //     log prefix "bh:enf:out:tripwire:c" group 10 drop
    auto r = ruleset::ruleset_from_json(nlohmann::json::parse(R"json({
     "format": "bulkhead-ruleset/1", "table": "bulkhead", "family": "inet",
     "enforcer": "unit", "policy": "unit", "ports": [],
     "sets": [
      {"name": "armed", "key": ["ifname"], "elements": [{"key": ["vdi001"]}]},
      {"name": "quarantined", "key": ["ifname"], "dynamic": true, "elements": []},
      {"name": "trap4", "key": ["ipv4_addr"], "interval": true, "elements": [{"key": ["10.0.0.66"]}]}
     ],
     "chains": [
      {"name": "c_out", "rules": [
       {"matches": [{"lookup": {"fields": ["iifname"], "set": "armed"}},
                    {"lookup": {"fields": ["ip daddr"], "set": "trap4"}}],
        "update": {"fields": ["iifname"], "set": "quarantined"},
        "counter": true, "log": {"prefix": "bh:enf:out:tripwire:c", "group": 10}, "verdict": "drop"}
      ]}
     ]})json"));
    REQUIRE_MESSAGE(r, (r ? "" : r.error()));
    auto batch = build_replace_batch(*r);
    REQUIRE(batch);
    CHECK(render_batch_rules(*batch) == R"text(inet bulkhead c_out
  [ meta load iifname => reg 1 ]
  [ lookup reg 1 set armed ]
  [ meta load nfproto => reg 1 ]
  [ cmp eq reg 1 0x00000002 ]
  [ payload load 4b @ network header + 16 => reg 1 ]
  [ lookup reg 1 set trap4 ]
  [ meta load iifname => reg 1 ]
  [ dynset add reg_key 1 set quarantined ]
  [ counter pkts 0 bytes 0 ]
  [ log prefix bh:enf:out:tripwire:c group 10 snaplen 0 qthreshold 0 ]
  [ immediate reg 0 drop ]

)text");
    SUBCASE("only a dynamic set may be written from the packet path") {
        auto bad = ruleset::to_json(*r);
        bad["sets"][1]["dynamic"] = false;
        auto refused = ruleset::ruleset_from_json(bad);
        REQUIRE_FALSE(refused);
        CHECK(refused.error().find("not a dynamic set") != std::string::npos);
    }
}

TEST_CASE("enforcer netlink: the spoof guard's MAC lookup is nft's, its elements round-trip") {
    // nft --debug=netlink (nftables 1.0.6) for:
    //   set port_macs { type ifname . ether_addr; elements = { "v1" . 52:54:00:aa:bb:01 } }
    //   iifname . ether saddr @port_macs return
    // element 00003176 00000000 00000000 00000000 aa005452 000001bb
    auto r = ruleset::ruleset_from_json(nlohmann::json::parse(R"json({
     "format": "bulkhead-ruleset/1", "table": "bulkhead", "family": "inet",
     "enforcer": "unit", "policy": "unit", "ports": [],
     "sets": [
      {"name": "port_macs", "key": ["ifname", "ether_addr"], "elements": [{"key": ["v1", "52:54:00:AA:BB:01"]}]}
     ],
     "chains": [
      {"name": "spoof_guard_mac", "rules": [
       {"matches": [{"lookup": {"fields": ["iifname", "ether saddr"], "set": "port_macs"}}], "verdict": "return"}
      ]}
     ]})json"));
    REQUIRE_MESSAGE(r, (r ? "" : r.error()));
    auto batch = build_replace_batch(*r);
    REQUIRE(batch);
    // The link-layer field brings nft's `meta iiftype ether` dependency first.
    CHECK(render_batch_rules(*batch) == R"text(inet bulkhead spoof_guard_mac
  [ meta load iiftype => reg 1 ]
  [ cmp eq reg 1 0x00000001 ]
  [ meta load iifname => reg 1 ]
  [ payload load 6b @ link header + 6 => reg 2 ]
  [ lookup reg 1 set port_macs ]
  [ immediate reg 0 return ]

)text");
    const auto& set = *r->find_set("port_macs");
    const auto layout = detail::set_layout(set);
    CHECK(layout.key_type == ((detail::type_ifname << detail::concat_type_bits) | detail::type_etheraddr));
    CHECK(layout.key_len == 24);  // 16 + 6 padded to 8
    auto encoded = detail::encode_elements(set, *set.elements, true);
    REQUIRE(encoded);
    REQUIRE(encoded->size() == 1);
    const detail::Bytes expected{'v', '1', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                 0x52, 0x54, 0x00, 0xaa, 0xbb, 0x01, 0, 0};
    CHECK(encoded->front().key == expected);
    // The read-back decodes it to the same (normalised) element.
    std::vector<detail::RawElement> raw{{expected, {}, 0, false, 0, {}}};
    auto decoded = detail::decode_elements(set, raw);
    CHECK(decoded.undecodable.empty());
    CHECK(decoded.elements == *set.elements);
    CHECK(ruleset::key_part_to_string(decoded.elements.front().key[1], ruleset::KeyType::EtherAddr) ==
          "52:54:00:aa:bb:01");
}
