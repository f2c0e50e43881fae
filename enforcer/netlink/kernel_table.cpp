#include "enforcer/netlink/kernel_table.hpp"

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <memory>
#include <set>

namespace bulkhead::enforcer::detail {
namespace {

constexpr const char* table = "bulkhead";
constexpr int snapshot_attempts = 5;

template <auto Free>
struct Deleter {
    template <typename T>
    void operator()(T* p) const { Free(p); }
};
using ChainPtr = std::unique_ptr<nftnl_chain, Deleter<nftnl_chain_free>>;
using SetPtr = std::unique_ptr<nftnl_set, Deleter<nftnl_set_free>>;
using RulePtr = std::unique_ptr<nftnl_rule, Deleter<nftnl_rule_free>>;

Bytes data_of(const void* p, std::uint32_t len) {
    const auto* b = static_cast<const std::uint8_t*>(p);
    return p == nullptr ? Bytes{} : Bytes(b, b + len);
}

// libnftnl getters report the length through a pointer: read it after the call.
Bytes element_data(nftnl_set_elem* e, std::uint16_t attr) {
    std::uint32_t len = 0;
    const void* p = nftnl_set_elem_get(e, attr, &len);
    return data_of(p, len);
}

std::optional<std::uint64_t> fingerprint_of(const Bytes& udata) {
    std::size_t i = 0;
    while (i + 2 <= udata.size()) {
        const auto type = udata[i];
        const auto len = udata[i + 1];
        if (i + 2 + len > udata.size()) {
            break;
        }
        if (type == fingerprint_udata_type && len == 8) {
            std::uint64_t v = 0;
            for (int k = 0; k < 8; ++k) {
                v = (v << 8) | udata[i + 2 + static_cast<std::size_t>(k)];
            }
            return v;
        }
        i += 2 + len;
    }
    return std::nullopt;
}

std::string expressions_of(nftnl_rule* r) {
    std::string out;
    auto* it = nftnl_expr_iter_create(r);
    for (auto* e = nftnl_expr_iter_next(it); e != nullptr; e = nftnl_expr_iter_next(it)) {
        char buf[1024];
        nftnl_expr_snprintf(buf, sizeof(buf), e, NFTNL_OUTPUT_DEFAULT, 0);
        out += "[ ";
        out += nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
        out += " ";
        out += buf;
        out += "]\n";
    }
    nftnl_expr_iter_destroy(it);
    return out;
}

std::expected<KernelTable, KernelError> read_once(NetlinkSocket& socket, std::uint32_t& seq) {
    KernelTable t;
    auto gen = socket.generation(seq++);
    if (!gen) {
        return std::unexpected(gen.error());
    }
    t.generation = *gen;
    char buf[8192];

    // The table itself.
    auto* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETTABLE, NFPROTO_INET, 0, seq++);
    mnl_attr_put_strz(nlh, NFTA_TABLE_NAME, table);
    auto r = socket.request(nlh, [&](const nlmsghdr*) { t.exists = true; });
    if (!r) {
        if (r.error().error_number == ENOENT) {
            return t;  // exists = false
        }
        return std::unexpected(r.error());
    }

    // Chains: the dump is per family; keep ours.
    nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETCHAIN, NFPROTO_INET, NLM_F_DUMP, seq++);
    std::string parse_error;
    r = socket.request(nlh, [&](const nlmsghdr* m) {
        ChainPtr c(nftnl_chain_alloc());
        if (nftnl_chain_nlmsg_parse(m, c.get()) < 0) {
            parse_error = "unparsable chain";
            return;
        }
        if (std::string(nftnl_chain_get_str(c.get(), NFTNL_CHAIN_TABLE)) != table) {
            return;
        }
        KernelChain chain;
        chain.name = nftnl_chain_get_str(c.get(), NFTNL_CHAIN_NAME);
        if (nftnl_chain_is_set(c.get(), NFTNL_CHAIN_HOOKNUM)) {
            chain.base = true;
            chain.hooknum = nftnl_chain_get_u32(c.get(), NFTNL_CHAIN_HOOKNUM);
            chain.priority = nftnl_chain_get_s32(c.get(), NFTNL_CHAIN_PRIO);
            if (nftnl_chain_is_set(c.get(), NFTNL_CHAIN_TYPE)) {
                chain.type = nftnl_chain_get_str(c.get(), NFTNL_CHAIN_TYPE);
            }
            chain.policy = nftnl_chain_get_u32(c.get(), NFTNL_CHAIN_POLICY);
        }
        t.chains.push_back(std::move(chain));
    });
    if (!r) {
        return std::unexpected(r.error());
    }

    // Sets of our table (the kernel filters on NFTA_SET_TABLE).
    nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSET, NFPROTO_INET, NLM_F_DUMP, seq++);
    mnl_attr_put_strz(nlh, NFTA_SET_TABLE, table);
    r = socket.request(nlh, [&](const nlmsghdr* m) {
        SetPtr s(nftnl_set_alloc());
        if (nftnl_set_nlmsg_parse(m, s.get()) < 0) {
            parse_error = "unparsable set";
            return;
        }
        if (std::string(nftnl_set_get_str(s.get(), NFTNL_SET_TABLE)) != table) {
            return;
        }
        KernelSet set;
        set.name = nftnl_set_get_str(s.get(), NFTNL_SET_NAME);
        set.flags = nftnl_set_get_u32(s.get(), NFTNL_SET_FLAGS);
        set.key_type = nftnl_set_get_u32(s.get(), NFTNL_SET_KEY_TYPE);
        set.key_len = nftnl_set_get_u32(s.get(), NFTNL_SET_KEY_LEN);
        if (nftnl_set_is_set(s.get(), NFTNL_SET_DATA_TYPE)) {
            set.data_type = nftnl_set_get_u32(s.get(), NFTNL_SET_DATA_TYPE);
            set.data_len = nftnl_set_get_u32(s.get(), NFTNL_SET_DATA_LEN);
        }
        if (nftnl_set_is_set(s.get(), NFTNL_SET_DESC_SIZE)) {
            set.desc_size = nftnl_set_get_u32(s.get(), NFTNL_SET_DESC_SIZE);
        }
        std::uint32_t len = 0;
        if (nftnl_set_is_set(s.get(), NFTNL_SET_DESC_CONCAT)) {
            const auto* p = nftnl_set_get_data(s.get(), NFTNL_SET_DESC_CONCAT, &len);
            set.concat_lengths = data_of(p, len);
            // libnftnl hands back its whole field array: keep the used fields.
            while (!set.concat_lengths.empty() && set.concat_lengths.back() == 0) {
                set.concat_lengths.pop_back();
            }
        }
        if (nftnl_set_is_set(s.get(), NFTNL_SET_USERDATA)) {
            const auto* p = nftnl_set_get_data(s.get(), NFTNL_SET_USERDATA, &len);
            set.userdata = data_of(p, len);
        }
        t.sets.push_back(std::move(set));
    });
    if (!r) {
        return std::unexpected(r.error());
    }

    // Elements, set by set.
    for (auto& set : t.sets) {
        nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_DUMP, seq++);
        mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_TABLE, table);
        mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_SET, set.name.c_str());
        r = socket.request(nlh, [&](const nlmsghdr* m) {
            SetPtr s(nftnl_set_alloc());
            if (nftnl_set_elems_nlmsg_parse(m, s.get()) < 0) {
                parse_error = "unparsable elements of set " + set.name;
                return;
            }
            auto* it = nftnl_set_elems_iter_create(s.get());
            for (auto* e = nftnl_set_elems_iter_next(it); e != nullptr;
                 e = nftnl_set_elems_iter_next(it)) {
                RawElement raw;
                if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_KEY)) {
                    raw.key = element_data(e, NFTNL_SET_ELEM_KEY);
                }
                if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_KEY_END)) {
                    raw.key_end = element_data(e, NFTNL_SET_ELEM_KEY_END);
                }
                if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_FLAGS)) {
                    raw.flags = nftnl_set_elem_get_u32(e, NFTNL_SET_ELEM_FLAGS);
                }
                if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_VERDICT)) {
                    raw.has_verdict = true;
                    raw.verdict = static_cast<std::int32_t>(nftnl_set_elem_get_u32(e, NFTNL_SET_ELEM_VERDICT));
                }
                if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_CHAIN)) {
                    raw.chain = nftnl_set_elem_get_str(e, NFTNL_SET_ELEM_CHAIN);
                }
                Bytes udata;
                if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_USERDATA)) {
                    udata = element_data(e, NFTNL_SET_ELEM_USERDATA);
                }
                set.elements.push_back(std::move(raw));
                set.element_userdata.push_back(std::move(udata));
            }
            nftnl_set_elems_iter_destroy(it);
        });
        if (!r) {
            return std::unexpected(r.error());
        }
    }

    // Rules of our table, in chain order.
    nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETRULE, NFPROTO_INET, NLM_F_DUMP, seq++);
    mnl_attr_put_strz(nlh, NFTA_RULE_TABLE, table);
    std::map<std::string, std::size_t> chain_index;
    for (std::size_t i = 0; i < t.chains.size(); ++i) {
        chain_index[t.chains[i].name] = i;
    }
    r = socket.request(nlh, [&](const nlmsghdr* m) {
        RulePtr rule(nftnl_rule_alloc());
        if (nftnl_rule_nlmsg_parse(m, rule.get()) < 0) {
            parse_error = "unparsable rule";
            return;
        }
        if (std::string(nftnl_rule_get_str(rule.get(), NFTNL_RULE_TABLE)) != table) {
            return;
        }
        auto it = chain_index.find(nftnl_rule_get_str(rule.get(), NFTNL_RULE_CHAIN));
        if (it == chain_index.end()) {
            parse_error = "rule of an unknown chain";
            return;
        }
        KernelRule kr;
        kr.handle = nftnl_rule_get_u64(rule.get(), NFTNL_RULE_HANDLE);
        if (nftnl_rule_is_set(rule.get(), NFTNL_RULE_USERDATA)) {
            std::uint32_t len = 0;
            const void* p = nftnl_rule_get_data(rule.get(), NFTNL_RULE_USERDATA, &len);
            kr.userdata = data_of(p, len);
            kr.fingerprint = fingerprint_of(kr.userdata);
        }
        kr.expressions = expressions_of(rule.get());
        t.chains[it->second].rules.push_back(std::move(kr));
    });
    if (!r) {
        return std::unexpected(r.error());
    }
    if (!parse_error.empty()) {
        return std::unexpected(KernelError{"cannot read table inet bulkhead back: " + parse_error,
                                           EPROTO, "table inet bulkhead"});
    }

    auto after = socket.generation(seq++);
    if (!after) {
        return std::unexpected(after.error());
    }
    if (*after != t.generation) {
        return std::unexpected(KernelError{"the ruleset changed while it was read", EINTR,
                                           "table inet bulkhead"});
    }
    return t;
}

std::uint32_t hook_number(ruleset::Hook hook) {
    switch (hook) {
    case ruleset::Hook::Forward: return NF_INET_FORWARD;
    case ruleset::Hook::Input: return NF_INET_LOCAL_IN;
    case ruleset::Hook::Output: return NF_INET_LOCAL_OUT;
    }
    return 0;
}

}  // namespace

std::expected<KernelTable, KernelError> read_table(NetlinkSocket& socket, std::uint32_t& seq) {
    for (int attempt = 1;; ++attempt) {
        auto t = read_once(socket, seq);
        if (t || t.error().error_number != EINTR || attempt == snapshot_attempts) {
            return t;
        }
    }
}

DriftReport compare(const KernelTable& kernel, const ruleset::Ruleset& desired) {
    DriftReport report;
    if (!kernel.exists) {
        report.table_missing = true;
        return report;
    }
    std::map<std::string, const KernelSet*> sets;
    for (const auto& s : kernel.sets) {
        if ((s.flags & NFT_SET_ANONYMOUS) == 0) {
            sets[s.name] = &s;
        }
    }
    for (const auto& set : desired.sets) {
        auto it = sets.find(set.name);
        if (it == sets.end()) {
            report.missing_sets.push_back(set.name);
            report.missing_elements += set.elements->size();
            continue;
        }
        const KernelSet& k = *it->second;
        const auto layout = set_layout(set);
        const bool same = k.flags == layout.flags && k.key_type == layout.key_type &&
                          k.key_len == layout.key_len &&
                          (layout.is_map ? k.data_type == NFT_DATA_VERDICT : k.data_type == 0);
        if (!same) {
            report.changed_sets.push_back(set.name);
            continue;
        }
        auto decoded = decode_elements(set, k.elements);
        auto want = *set.elements;
        std::sort(want.begin(), want.end());
        want.erase(std::unique(want.begin(), want.end()), want.end());
        ruleset::ElementList missing;
        ruleset::ElementList unexpected;
        std::set_difference(want.begin(), want.end(), decoded.elements.begin(),
                            decoded.elements.end(), std::back_inserter(missing));
        std::set_difference(decoded.elements.begin(), decoded.elements.end(), want.begin(),
                            want.end(), std::back_inserter(unexpected));
        report.missing_elements += missing.size();
        report.unexpected_elements += unexpected.size() + decoded.undecodable.size();
        if (set.dynamic && !unexpected.empty()) {
            report.dynamic_additions[set.name] = unexpected;
        }
    }
    for (const auto& [name, s] : sets) {
        if (desired.find_set(name) == nullptr) {
            report.unexpected_sets.push_back(name);
        }
    }

    std::map<std::string, const KernelChain*> chains;
    for (const auto& c : kernel.chains) {
        chains[c.name] = &c;
    }
    for (const auto& chain : desired.chains) {
        auto it = chains.find(chain.name);
        if (it == chains.end()) {
            report.missing_chains.push_back(chain.name);
            continue;
        }
        const KernelChain& k = *it->second;
        bool same = k.base == chain.base.has_value();
        if (same && chain.base) {
            same = k.hooknum == hook_number(chain.base->hook) &&
                   k.priority == chain.base->priority && k.type == "filter" &&
                   k.policy == NF_ACCEPT;
        }
        same = same && k.rules.size() == chain.rules.size();
        for (std::size_t i = 0; same && i < chain.rules.size(); ++i) {
            same = k.rules[i].fingerprint == rule_fingerprint(chain.rules[i]);
        }
        if (!same) {
            report.changed_chains.push_back(chain.name);
        }
    }
    for (const auto& [name, c] : chains) {
        if (desired.find_chain(name) == nullptr) {
            report.unexpected_chains.push_back(name);
        }
    }
    return report;
}

}  // namespace bulkhead::enforcer::detail
