// IR -> one nf_tables batch: libnftnl objects serialised into mnl_nlmsg_batch pages, every
// message numbered and labelled with the IR object it carries (for error reports).
#include "enforcer/netlink/nft_encoding.hpp"
#include "enforcer/netlink/ruleset_backend.hpp"
#include "policies/nft_text.hpp"

#include <arpa/inet.h>
#include <net/if_arp.h>
#include <netinet/in.h>

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netlink.h>
#include <linux/netfilter/nfnetlink.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <memory>
#include <set>
#include <string_view>
#include <variant>

namespace bulkhead::enforcer {

namespace {

using detail::Bytes;
using ruleset::Field;

constexpr const char* table = "bulkhead";
constexpr std::uint16_t family = NFPROTO_INET;
// The element list of one NEWSETELEM is a single attribute: nla_len is 16 bits.
constexpr std::size_t element_nest_limit = std::numeric_limits<std::uint16_t>::max();
constexpr std::size_t min_page_size = 96 * 1024;  // > one maximum-size element message

struct ElementMark {
    std::uint32_t begin = 0;  // offset of the element's nest in its message
    std::uint32_t end = 0;
    std::size_t ir_index = 0;
};

template <auto Free>
struct Deleter {
    template <typename T>
    void operator()(T* p) const { Free(p); }
};
using TablePtr = std::unique_ptr<nftnl_table, Deleter<nftnl_table_free>>;
using ChainPtr = std::unique_ptr<nftnl_chain, Deleter<nftnl_chain_free>>;
using SetPtr = std::unique_ptr<nftnl_set, Deleter<nftnl_set_free>>;
using ElemPtr = std::unique_ptr<nftnl_set_elem, Deleter<nftnl_set_elem_free>>;
using RulePtr = std::unique_ptr<nftnl_rule, Deleter<nftnl_rule_free>>;

std::string type_name(std::uint16_t type) {
    switch (type) {
    case NFNL_MSG_BATCH_BEGIN: return "BATCH_BEGIN";
    case NFNL_MSG_BATCH_END: return "BATCH_END";
    case NFT_MSG_NEWTABLE: return "NEWTABLE";
    case NFT_MSG_DELTABLE: return "DELTABLE";
    case NFT_MSG_NEWCHAIN: return "NEWCHAIN";
    case NFT_MSG_DELCHAIN: return "DELCHAIN";
    case NFT_MSG_NEWSET: return "NEWSET";
    case NFT_MSG_DELSET: return "DELSET";
    case NFT_MSG_NEWSETELEM: return "NEWSETELEM";
    case NFT_MSG_DELSETELEM: return "DELSETELEM";
    case NFT_MSG_NEWRULE: return "NEWRULE";
    case NFT_MSG_DELRULE: return "DELRULE";
    default: return "MSG" + std::to_string(type);
    }
}

}  // namespace

struct Batch::Impl {
    std::vector<std::vector<std::uint8_t>> pages;
    std::vector<BatchMessage> messages;
    std::map<std::uint32_t, std::size_t> by_seq;
    // Per element message: where each element sits, and the set it belongs to.
    std::map<std::size_t, std::vector<ElementMark>> marks;
    struct ElementSet {
        ruleset::SetDefinition set;
        const ruleset::ElementList* list;
        std::string name;  // "set x", "map x", "anonymous set of rule 3 of chain forward"
    };
    std::map<std::size_t, ElementSet> element_sets;
    std::vector<std::shared_ptr<const ruleset::ElementList>> kept_lists;
    // Element-change batches: per element message, the ElementChange index of each IR
    // element of its list.
    std::map<std::size_t, std::shared_ptr<const std::vector<std::size_t>>> change_of;
    std::size_t bytes = 0;
    std::size_t elements = 0;
};

Batch::Batch() : impl_(std::make_unique<Impl>()) {}
Batch::~Batch() = default;
Batch::Batch(Batch&&) noexcept = default;
Batch& Batch::operator=(Batch&&) noexcept = default;

const std::vector<BatchMessage>& Batch::messages() const { return impl_->messages; }
const std::vector<std::vector<std::uint8_t>>& Batch::pages() const { return impl_->pages; }
std::size_t Batch::bytes() const { return impl_->bytes; }
std::size_t Batch::elements() const { return impl_->elements; }

std::vector<std::string> Batch::describe() const {
    std::vector<std::string> out;
    for (const auto& m : impl_->messages) {
        std::string line = type_name(m.type);
        if (!m.object.empty()) {
            line += " " + m.object;
        }
        if (m.elements != 0) {
            line += " (" + std::to_string(m.elements) + " elements)";
        }
        out.push_back(std::move(line));
    }
    return out;
}

std::vector<std::uint8_t> Batch::message_bytes(std::size_t index) const {
    const auto& m = impl_->messages.at(index);
    const auto& page = impl_->pages.at(m.page);
    return {page.begin() + static_cast<std::ptrdiff_t>(m.offset),
            page.begin() + static_cast<std::ptrdiff_t>(m.offset + m.length)};
}

const BatchMessage* Batch::find(std::uint32_t seq) const {
    auto it = impl_->by_seq.find(seq);
    return it == impl_->by_seq.end() ? nullptr : &impl_->messages[it->second];
}

std::string Batch::object_at(std::uint32_t seq, std::uint32_t error_offset) const {
    auto it = impl_->by_seq.find(seq);
    if (it == impl_->by_seq.end()) {
        return "";
    }
    const auto& message = impl_->messages[it->second];
    if (error_offset != 0) {
        auto marks = impl_->marks.find(it->second);
        auto sets = impl_->element_sets.find(it->second);
        if (marks != impl_->marks.end() && sets != impl_->element_sets.end()) {
            for (const auto& mark : marks->second) {
                if (error_offset >= mark.begin && error_offset < mark.end) {
                    const auto& es = sets->second;
                    if (mark.ir_index < es.list->size()) {
                        return "element " + detail::describe_element(es.set, (*es.list)[mark.ir_index]) +
                               " of " + es.name;
                    }
                }
            }
        }
    }
    return message.object;
}

std::optional<std::size_t> Batch::change_at(std::uint32_t seq, std::uint32_t error_offset) const {
    auto it = impl_->by_seq.find(seq);
    if (it == impl_->by_seq.end()) {
        return std::nullopt;
    }
    auto changes = impl_->change_of.find(it->second);
    if (changes == impl_->change_of.end()) {
        return std::nullopt;
    }
    const auto& index = *changes->second;
    auto marks = impl_->marks.find(it->second);
    if (error_offset != 0 && marks != impl_->marks.end()) {
        for (const auto& mark : marks->second) {
            if (error_offset >= mark.begin && error_offset < mark.end && mark.ir_index < index.size()) {
                return index[mark.ir_index];
            }
        }
    }
    // No element named: only attributable when the message carries elements of one change.
    if (marks != impl_->marks.end() && !marks->second.empty()) {
        const auto first = marks->second.front().ir_index;
        const bool one = std::all_of(marks->second.begin(), marks->second.end(),
                                     [&](const ElementMark& m) { return m.ir_index == first; });
        if (one && first < index.size()) {
            return index[first];
        }
    }
    return std::nullopt;
}

struct BatchAccess {
    static Batch::Impl& impl(Batch& b) { return *b.impl_; }
    static const Batch::Impl& impl(const Batch& b) { return *b.impl_; }
};

namespace {

// Writes messages into mnl_nlmsg_batch pages. A page's buffer is twice the page size: a
// message that crosses the limit is moved to the next page by mnl_nlmsg_batch_reset().
class Writer {
public:
    Writer(Batch& batch, std::size_t page_size, std::uint32_t first_seq)
        : impl_(BatchAccess::impl(batch)),
          limit_(std::max(page_size, min_page_size)),
          buffer_(new char[2 * limit_]),
          batch_(mnl_nlmsg_batch_start(buffer_.get(), limit_)),
          seq_(first_seq) {}
    ~Writer() { mnl_nlmsg_batch_stop(batch_); }
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;

    char* current() { return static_cast<char*>(mnl_nlmsg_batch_current(batch_)); }
    std::uint32_t next_seq() const { return seq_; }

    nlmsghdr* header(std::uint16_t type, std::uint16_t flags) {
        return nftnl_nlmsg_build_hdr(current(), type, family, flags, seq_);
    }

    // Commits the message at current(); returns its index.
    std::size_t commit(std::uint16_t type, std::string object, std::size_t elements = 0) {
        auto* nlh = static_cast<nlmsghdr*>(mnl_nlmsg_batch_current(batch_));
        BatchMessage m;
        m.type = type;
        m.seq = nlh->nlmsg_seq;
        m.object = std::move(object);
        m.elements = elements;
        m.length = nlh->nlmsg_len;
        m.page = impl_.pages.size();
        m.offset = mnl_nlmsg_batch_size(batch_);
        if (!mnl_nlmsg_batch_next(batch_)) {
            flush();
            mnl_nlmsg_batch_reset(batch_);  // the message moves to the start of a new page
            m.page = impl_.pages.size();
            m.offset = 0;
        }
        impl_.bytes += m.length;
        impl_.by_seq[m.seq] = impl_.messages.size();
        impl_.messages.push_back(std::move(m));
        ++seq_;
        return impl_.messages.size() - 1;
    }

    void begin_batch() {
        nftnl_batch_begin(current(), seq_);
        commit(NFNL_MSG_BATCH_BEGIN, "batch");
    }
    void end_batch() {
        nftnl_batch_end(current(), seq_);
        commit(NFNL_MSG_BATCH_END, "batch");
    }
    void finish() {
        if (mnl_nlmsg_batch_size(batch_) > 0) {
            flush();
        }
    }

private:
    void flush() {
        const auto* head = static_cast<const std::uint8_t*>(mnl_nlmsg_batch_head(batch_));
        impl_.pages.emplace_back(head, head + mnl_nlmsg_batch_size(batch_));
    }

    Batch::Impl& impl_;
    std::size_t limit_;
    std::unique_ptr<char[]> buffer_;
    mnl_nlmsg_batch* batch_;
    std::uint32_t seq_;
};

KernelError build_error(std::string message, std::string object) {
    return KernelError{std::move(message), 0, std::move(object)};
}

std::string set_object(const ruleset::SetDefinition& set) {
    return (set.verdict_map ? "map " : "set ") + set.name;
}

std::uint32_t reg_for(std::uint32_t offset32) {
    // nft's netlink_put_register: 128-bit register numbers where aligned, else 32-bit.
    return offset32 % 4 == 0 ? NFT_REG_1 + offset32 / 4 : NFT_REG32_00 + offset32;
}

class Builder {
public:
    Builder(Batch& batch, const ruleset::Ruleset& desired, const BatchOptions& options)
        : batch_(batch), desired_(desired), w_(batch, options.page_size, options.first_seq) {}

    Writer& writer() { return w_; }

    void add_table() {
        TablePtr t(nftnl_table_alloc());
        nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, table);
        nftnl_table_set_u32(t.get(), NFTNL_TABLE_FAMILY, family);
        nftnl_table_set_u32(t.get(), NFTNL_TABLE_FLAGS, 0);
        auto* nlh = w_.header(NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_ACK);
        nftnl_table_nlmsg_build_payload(nlh, t.get());
        w_.commit(NFT_MSG_NEWTABLE, "table inet bulkhead");
    }

    void delete_table() {
        TablePtr t(nftnl_table_alloc());
        nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, table);
        nftnl_table_set_u32(t.get(), NFTNL_TABLE_FAMILY, family);
        auto* nlh = w_.header(NFT_MSG_DELTABLE, NLM_F_ACK);
        nftnl_table_nlmsg_build_payload(nlh, t.get());
        w_.commit(NFT_MSG_DELTABLE, "table inet bulkhead");
    }

    void add_chain(const ruleset::Chain& chain) {
        ChainPtr c(nftnl_chain_alloc());
        nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, table);
        nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, chain.name.c_str());
        nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, family);
        if (chain.base) {
            std::uint32_t hook = NF_INET_FORWARD;
            switch (chain.base->hook) {
            case ruleset::Hook::Forward: hook = NF_INET_FORWARD; break;
            case ruleset::Hook::Input: hook = NF_INET_LOCAL_IN; break;
            case ruleset::Hook::Output: hook = NF_INET_LOCAL_OUT; break;
            }
            nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_HOOKNUM, hook);
            nftnl_chain_set_s32(c.get(), NFTNL_CHAIN_PRIO, chain.base->priority);
            nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TYPE, "filter");
            nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_POLICY, NF_ACCEPT);
        }
        auto* nlh = w_.header(NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK);
        nftnl_chain_nlmsg_build_payload(nlh, c.get());
        w_.commit(NFT_MSG_NEWCHAIN, "chain " + chain.name);
    }

    void chain_op(std::uint16_t type, const std::string& name) {
        // DELRULE without a handle flushes the chain; DELCHAIN deletes it.
        auto* nlh = w_.header(type, NLM_F_ACK);
        if (type == NFT_MSG_DELRULE) {
            mnl_attr_put_strz(nlh, NFTA_RULE_TABLE, table);
            mnl_attr_put_strz(nlh, NFTA_RULE_CHAIN, name.c_str());
        } else {
            mnl_attr_put_strz(nlh, NFTA_CHAIN_TABLE, table);
            mnl_attr_put_strz(nlh, NFTA_CHAIN_NAME, name.c_str());
        }
        w_.commit(type, "chain " + name);
    }

    void delete_set(const std::string& name) {
        auto* nlh = w_.header(NFT_MSG_DELSET, NLM_F_ACK);
        mnl_attr_put_strz(nlh, NFTA_SET_TABLE, table);
        mnl_attr_put_strz(nlh, NFTA_SET_NAME, name.c_str());
        w_.commit(NFT_MSG_DELSET, "set " + name);
    }

    void add_set(const ruleset::SetDefinition& set) {
        const auto id = ++set_id_;
        new_sets_[set.name] = id;
        write_set(set.name, detail::set_layout(set), id, std::nullopt, set_object(set));
    }

    // Elements of `set` (a named set). `first_segment`: nft's leading zero element (sent
    // when nft would: the set is new or empty). `exclusive`: NLM_F_EXCL, so that adding an
    // element that exists fails (replace: the sets are new, a duplicate is an IR bug);
    // diffs add like `nft add element` (an identical element already there is fine).
    std::expected<void, KernelError> elements(std::uint16_t type, const ruleset::SetDefinition& set,
                                              std::shared_ptr<const ruleset::ElementList> list,
                                              bool first_segment, bool exclusive) {
        if (list->empty()) {
            return {};
        }
        auto encoded = detail::encode_elements(set, *list, first_segment && type == NFT_MSG_NEWSETELEM);
        if (!encoded) {
            return std::unexpected(build_error(encoded.error(), set_object(set)));
        }
        BatchAccess::impl(batch_).kept_lists.push_back(list);
        BatchAccess::impl(batch_).elements += list->size();
        write_elements(type, set.name, set_id(set.name), *encoded, set, list.get(), exclusive,
                       set_object(set));
        return {};
    }

    std::expected<void, KernelError> add_rule(const ruleset::Chain& chain, std::size_t index) {
        const auto& rule = chain.rules[index];
        const std::string object =
            "rule " + std::to_string(index + 1) + " of chain " + chain.name;
        RulePtr r(nftnl_rule_alloc());
        nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, table);
        nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, chain.name.c_str());
        nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, family);
        auto built = rule_expressions(r.get(), rule, object);
        if (!built) {
            return std::unexpected(built.error());
        }
        // Fingerprint userdata: one TLV, 8 bytes big endian.
        const std::uint64_t fp = rule_fingerprint(rule);
        std::uint8_t udata[10];
        udata[0] = detail::fingerprint_udata_type;
        udata[1] = 8;
        for (int i = 0; i < 8; ++i) {
            udata[2 + i] = static_cast<std::uint8_t>(fp >> (56 - 8 * i));
        }
        nftnl_rule_set_data(r.get(), NFTNL_RULE_USERDATA, udata, sizeof(udata));
        auto* nlh = w_.header(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK);
        nftnl_rule_nlmsg_build_payload(nlh, r.get());
        w_.commit(NFT_MSG_NEWRULE, object);
        return {};
    }

private:
    std::uint32_t set_id(const std::string& name) const {
        auto it = new_sets_.find(name);
        return it == new_sets_.end() ? 0 : it->second;
    }

    void write_set(const std::string& name, const detail::SetLayout& layout, std::uint32_t id,
                   std::optional<std::uint32_t> size, const std::string& object) {
        SetPtr s(nftnl_set_alloc());
        nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, table);
        nftnl_set_set_str(s.get(), NFTNL_SET_NAME, name.c_str());
        nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, family);
        nftnl_set_set_u32(s.get(), NFTNL_SET_ID, id);
        nftnl_set_set_u32(s.get(), NFTNL_SET_FLAGS, layout.flags);
        nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_TYPE, layout.key_type);
        nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_LEN, layout.key_len);
        if (layout.is_map) {
            nftnl_set_set_u32(s.get(), NFTNL_SET_DATA_TYPE, NFT_DATA_VERDICT);
            nftnl_set_set_u32(s.get(), NFTNL_SET_DATA_LEN, 0);
        }
        if (size) {
            nftnl_set_set_u32(s.get(), NFTNL_SET_DESC_SIZE, *size);
        }
        if (!layout.concat_lengths.empty()) {
            nftnl_set_set_data(s.get(), NFTNL_SET_DESC_CONCAT, layout.concat_lengths.data(),
                               static_cast<std::uint32_t>(layout.concat_lengths.size()));
        }
        nftnl_set_set_data(s.get(), NFTNL_SET_USERDATA, layout.userdata.data(),
                           static_cast<std::uint32_t>(layout.userdata.size()));
        auto* nlh = w_.header(NFT_MSG_NEWSET, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK);
        nftnl_set_nlmsg_build_payload(nlh, s.get());
        w_.commit(NFT_MSG_NEWSET, object);
    }

    // Many elements per message; a new message when the element list attribute would
    // outgrow its 16-bit length.
    void write_elements(std::uint16_t type, const std::string& name, std::uint32_t id,
                        const std::vector<detail::KernelElement>& encoded,
                        const ruleset::SetDefinition& set, const ruleset::ElementList* list,
                        bool exclusive, const std::string& set_name) {
        std::uint16_t flags = NLM_F_ACK;
        if (type == NFT_MSG_NEWSETELEM) {
            flags |= NLM_F_CREATE | (exclusive ? NLM_F_EXCL : 0);
        }
        const std::string object = "elements of " + set_name;
        std::size_t i = 0;
        while (i < encoded.size()) {
            auto* nlh = w_.header(type, flags);
            mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_TABLE, table);
            mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_SET, name.c_str());
            if (id != 0) {
                mnl_attr_put_u32(nlh, NFTA_SET_ELEM_LIST_SET_ID, htonl(id));
            }
            auto* list_nest = mnl_attr_nest_start(nlh, NFTA_SET_ELEM_LIST_ELEMENTS);
            const auto list_start = reinterpret_cast<const char*>(list_nest) -
                                    reinterpret_cast<const char*>(nlh);
            std::vector<ElementMark> marks;
            std::set<std::size_t> ir;
            for (; i < encoded.size(); ++i) {
                const auto before = nlh->nlmsg_len;
                write_element(nlh, encoded[i], type == NFT_MSG_NEWSETELEM);
                // Does not fit: into the next message (an element is at most ~120 bytes,
                // so a message always takes at least one).
                if (nlh->nlmsg_len - static_cast<std::size_t>(list_start) > element_nest_limit &&
                    !marks.empty()) {
                    nlh->nlmsg_len = before;
                    break;
                }
                marks.push_back({before, nlh->nlmsg_len, encoded[i].ir_index});
                if (encoded[i].ir_index != std::numeric_limits<std::size_t>::max()) {
                    ir.insert(encoded[i].ir_index);
                }
            }
            mnl_attr_nest_end(nlh, list_nest);
            const auto index = w_.commit(type, object, ir.size());
            auto& impl = BatchAccess::impl(batch_);
            impl.marks[index] = std::move(marks);
            impl.element_sets.emplace(index, Batch::Impl::ElementSet{set, list, set_name});
        }
    }

    static void write_element(nlmsghdr* nlh, const detail::KernelElement& k, bool with_data) {
        ElemPtr e(nftnl_set_elem_alloc());
        nftnl_set_elem_set(e.get(), NFTNL_SET_ELEM_KEY, k.key.data(),
                           static_cast<std::uint32_t>(k.key.size()));
        if (!k.key_end.empty()) {
            nftnl_set_elem_set(e.get(), NFTNL_SET_ELEM_KEY_END, k.key_end.data(),
                               static_cast<std::uint32_t>(k.key_end.size()));
        }
        if (k.flags != 0) {
            nftnl_set_elem_set_u32(e.get(), NFTNL_SET_ELEM_FLAGS, k.flags);
        }
        if (with_data && !k.jump.empty() && (k.flags & NFT_SET_ELEM_INTERVAL_END) == 0) {
            nftnl_set_elem_set_u32(e.get(), NFTNL_SET_ELEM_VERDICT,
                                   static_cast<std::uint32_t>(NFT_JUMP));
            nftnl_set_elem_set_str(e.get(), NFTNL_SET_ELEM_CHAIN, k.jump.c_str());
        }
        if (with_data && k.interval_open) {
            // NFTNL_UDATA_SET_ELEM_FLAGS = NFTNL_SET_ELEM_F_INTERVAL_OPEN, as nft marks a
            // range that runs to the maximum.
            std::uint8_t udata[6] = {NFTNL_UDATA_SET_ELEM_FLAGS, 4, 0, 0, 0, 0};
            const std::uint32_t open = NFTNL_SET_ELEM_F_INTERVAL_OPEN;
            std::memcpy(udata + 2, &open, 4);
            nftnl_set_elem_set(e.get(), NFTNL_SET_ELEM_USERDATA, udata, sizeof(udata));
        }
        auto* nest = mnl_attr_nest_start(nlh, NFTA_LIST_ELEM);
        nftnl_set_elem_nlmsg_build_payload(nlh, e.get());
        mnl_attr_nest_end(nlh, nest);
    }

    // ---- expressions --------------------------------------------------------------

    static nftnl_expr* expr(const char* name) { return nftnl_expr_alloc(name); }

    void meta(nftnl_rule* r, std::uint32_t key, std::uint32_t dreg) {
        auto* e = expr("meta");
        nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
        nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, dreg);
        nftnl_rule_add_expr(r, e);
    }
    void cmp(nftnl_rule* r, std::uint32_t op, const Bytes& data) {
        auto* e = expr("cmp");
        nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
        nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, op);
        nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data.data(), static_cast<std::uint32_t>(data.size()));
        nftnl_rule_add_expr(r, e);
    }
    void load(nftnl_rule* r, Field field, std::uint32_t dreg) {
        const auto spec = detail::field_spec(field);
        if (spec.source == detail::FieldSpec::Source::Meta) {
            meta(r, spec.meta_key, dreg);
            return;
        }
        auto* e = expr("payload");
        nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, dreg);
        nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, spec.base);
        nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, spec.offset);
        nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, spec.length);
        nftnl_rule_add_expr(r, e);
    }

    // The implicit protocol dependencies nft adds in an inet table, once per rule.
    struct Dependencies {
        std::uint8_t nfproto = 0;
        std::uint8_t l4proto = 0;
        bool ether = false;
    };
    std::expected<void, std::string> dependencies(nftnl_rule* r, const std::vector<Field>& fields,
                                                  Dependencies& have) {
        // A link-layer field reads the Ethernet header only from an Ethernet interface
        // (`meta iiftype ether`, ARPHRD_ETHER in host byte order), before anything else.
        for (auto f : fields) {
            if (detail::field_spec(f).ether && !have.ether) {
                const std::uint16_t arphrd_ether = ARPHRD_ETHER;
                Bytes value(sizeof arphrd_ether);
                std::memcpy(value.data(), &arphrd_ether, sizeof arphrd_ether);
                meta(r, NFT_META_IIFTYPE, NFT_REG_1);
                cmp(r, NFT_CMP_EQ, value);
                have.ether = true;
            }
        }
        for (auto f : fields) {
            const auto spec = detail::field_spec(f);
            if (spec.nfproto == 0) {
                continue;
            }
            if (have.nfproto != 0 && have.nfproto != spec.nfproto) {
                return std::unexpected("mixes IPv4 and IPv6 fields");
            }
            if (have.nfproto == 0) {
                meta(r, NFT_META_NFPROTO, NFT_REG_1);
                cmp(r, NFT_CMP_EQ, Bytes{spec.nfproto});
                have.nfproto = spec.nfproto;
            }
        }
        for (auto f : fields) {
            const auto spec = detail::field_spec(f);
            if (spec.l4proto == 0) {
                continue;
            }
            if (have.l4proto != 0 && have.l4proto != spec.l4proto) {
                return std::unexpected("needs two different layer 4 protocols");
            }
            if (have.l4proto == 0) {
                meta(r, NFT_META_L4PROTO, NFT_REG_1);
                cmp(r, NFT_CMP_EQ, Bytes{spec.l4proto});
                have.l4proto = spec.l4proto;
            }
        }
        return {};
    }

    void lookup(nftnl_rule* r, const std::string& set, std::uint32_t id, bool verdict) {
        auto* e = expr("lookup");
        nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SREG, NFT_REG_1);
        if (verdict) {
            nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_DREG, NFT_REG_VERDICT);
        }
        nftnl_expr_set_str(e, NFTNL_EXPR_LOOKUP_SET, set.c_str());
        if (id != 0) {
            nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SET_ID, id);
        }
        nftnl_rule_add_expr(r, e);
    }

    // Loads `fields` as a concatenation starting at register 1, each field 4-byte aligned.
    void load_key(nftnl_rule* r, const std::vector<Field>& fields, bool interval) {
        std::uint32_t offset32 = 0;
        for (auto f : fields) {
            const auto spec = detail::field_spec(f);
            const auto reg = reg_for(offset32);
            load(r, f, reg);
            if (interval && fields.size() > 1 && spec.host_endian_integer) {
                // Interval concatenations are compared in big endian: nft wraps host-endian
                // integers (meta l4proto) in hton (size 2 for sub-32-bit lengths).
                auto* e = expr("byteorder");
                nftnl_expr_set_u32(e, NFTNL_EXPR_BYTEORDER_SREG, reg);
                nftnl_expr_set_u32(e, NFTNL_EXPR_BYTEORDER_DREG, reg);
                nftnl_expr_set_u32(e, NFTNL_EXPR_BYTEORDER_OP, NFT_BYTEORDER_HTON);
                nftnl_expr_set_u32(e, NFTNL_EXPR_BYTEORDER_LEN, spec.length);
                nftnl_expr_set_u32(e, NFTNL_EXPR_BYTEORDER_SIZE,
                                   spec.length * 8 % 64 == 0 ? 8 : spec.length * 8 % 32 == 0 ? 4 : 2);
                nftnl_rule_add_expr(r, e);
            }
            offset32 += detail::padded(spec.length) / 4;
        }
    }

    std::expected<void, KernelError> rule_expressions(nftnl_rule* r, const ruleset::Rule& rule,
                                                      const std::string& object) {
        Dependencies have;
        auto fail = [&](const std::string& why) {
            return std::unexpected(build_error(object + " (" + ruleset::render_rule(rule) + ") " + why, object));
        };
        for (const auto& match : rule.matches) {
            if (const auto* l = std::get_if<ruleset::SetLookup>(&match)) {
                const auto* set = desired_.find_set(l->set);
                if (set == nullptr) {
                    return fail("looks up set " + l->set + ", which the ruleset does not define");
                }
                if (set->key.size() != l->fields.size() || l->fields.empty()) {
                    return fail("looks up " + std::to_string(l->fields.size()) +
                                " fields in set " + l->set + " keyed by " +
                                std::to_string(set->key.size()));
                }
                if (auto d = dependencies(r, l->fields, have); !d) {
                    return fail(d.error());
                }
                load_key(r, l->fields, set->interval);
                lookup(r, l->set, set_id(l->set), false);
            } else if (const auto* v = std::get_if<ruleset::ValueMatch>(&match)) {
                const auto type = ruleset::key_type_of(v->field);
                if (type == ruleset::KeyType::Ifname || type == ruleset::KeyType::EtherAddr ||
                    type == ruleset::KeyType::Ipv4Addr ||
                    type == ruleset::KeyType::Ipv6Addr || v->values.empty()) {
                    return fail("matches values on a non-numeric field or with no values");
                }
                if (auto d = dependencies(r, {v->field}, have); !d) {
                    return fail(d.error());
                }
                auto anon = detail::anonymous_set(v->field, v->values);
                const auto max = (1u << (8 * detail::field_spec(v->field).length)) - 1;
                if (anon.values.back().high > max) {
                    return fail("matches a value above " + std::to_string(max));
                }
                load(r, v->field, NFT_REG_1);
                if (anon.values.size() == 1) {
                    // nft turns a one-value set into a comparison (a range into two).
                    const auto& only = anon.values.front();
                    if (only.low == only.high) {
                        cmp(r, NFT_CMP_EQ, detail::field_value(v->field, only.low));
                    } else {
                        cmp(r, NFT_CMP_GTE, detail::field_value(v->field, only.low));
                        cmp(r, NFT_CMP_LTE, detail::field_value(v->field, only.high));
                    }
                } else {
                    const auto id = ++set_id_;
                    auto encoded = detail::encode_values(v->field, anon);
                    const std::string anon_name = "anonymous set of " + object;
                    write_set("__set%d", anon.layout, id, anon.size, anon_name);
                    ruleset::SetDefinition def;
                    def.name = "__set%d";
                    def.key = {type};
                    def.interval = (anon.layout.flags & NFT_SET_INTERVAL) != 0;
                    auto list = std::make_shared<ruleset::ElementList>();
                    for (const auto& value : anon.values) {
                        list->push_back(ruleset::Element{{value}, ""});
                    }
                    BatchAccess::impl(batch_).kept_lists.push_back(list);
                    write_elements(NFT_MSG_NEWSETELEM, "__set%d", id, encoded, def, list.get(), true,
                                   anon_name);
                    lookup(r, "__set%d", id, false);
                }
            } else if (const auto* c = std::get_if<ruleset::CtStateMatch>(&match)) {
                auto* e = expr("ct");
                nftnl_expr_set_u32(e, NFTNL_EXPR_CT_KEY, NFT_CT_STATE);
                nftnl_expr_set_u32(e, NFTNL_EXPR_CT_DREG, NFT_REG_1);
                nftnl_rule_add_expr(r, e);
                const std::uint32_t mask = c->states;
                const std::uint32_t zero = 0;
                auto* b = expr("bitwise");
                nftnl_expr_set_u32(b, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
                nftnl_expr_set_u32(b, NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
                nftnl_expr_set_u32(b, NFTNL_EXPR_BITWISE_LEN, 4);
                nftnl_expr_set(b, NFTNL_EXPR_BITWISE_MASK, &mask, 4);
                nftnl_expr_set(b, NFTNL_EXPR_BITWISE_XOR, &zero, 4);
                nftnl_rule_add_expr(r, b);
                cmp(r, NFT_CMP_NEQ, Bytes(4, 0));
            } else {
                auto* e = expr("ct");
                nftnl_expr_set_u32(e, NFTNL_EXPR_CT_KEY, NFT_CT_DIRECTION);
                nftnl_expr_set_u32(e, NFTNL_EXPR_CT_DREG, NFT_REG_1);
                nftnl_rule_add_expr(r, e);
                cmp(r, NFT_CMP_EQ, Bytes{1});  // IP_CT_DIR_REPLY
            }
        }
        if (rule.update) {
            const auto* set = desired_.find_set(rule.update->set);
            if (set == nullptr || !set->dynamic || set->key.size() != rule.update->fields.size()) {
                return fail("adds to " + rule.update->set + ", which the ruleset does not define "
                            "as a dynamic set with that key");
            }
            if (auto d = dependencies(r, rule.update->fields, have); !d) {
                return fail(d.error());
            }
            load_key(r, rule.update->fields, set->interval);
            // What nft emits for `add @set { key }`: dynset op add, key from register 1,
            // no timeout; the set is found by name (or by id when created in this batch).
            auto* e = expr("dynset");
            nftnl_expr_set_u32(e, NFTNL_EXPR_DYNSET_SREG_KEY, NFT_REG_1);
            nftnl_expr_set_u32(e, NFTNL_EXPR_DYNSET_OP, NFT_DYNSET_OP_ADD);
            nftnl_expr_set_str(e, NFTNL_EXPR_DYNSET_SET_NAME, rule.update->set.c_str());
            if (const auto id = set_id(rule.update->set); id != 0) {
                nftnl_expr_set_u32(e, NFTNL_EXPR_DYNSET_SET_ID, id);
            }
            nftnl_rule_add_expr(r, e);
        }
        if (rule.counter) {
            nftnl_rule_add_expr(r, expr("counter"));
        }
        if (rule.log) {
            auto* e = expr("log");
            nftnl_expr_set_str(e, NFTNL_EXPR_LOG_PREFIX, rule.log->prefix.c_str());
            nftnl_expr_set_u16(e, NFTNL_EXPR_LOG_GROUP, rule.log->group);
            nftnl_rule_add_expr(r, e);
        }
        if (rule.dispatch) {
            const auto* map = desired_.find_set(rule.dispatch->map);
            if (map == nullptr || !map->verdict_map) {
                return fail("dispatches on " + rule.dispatch->map +
                            ", which the ruleset does not define as a verdict map");
            }
            if (map->key.size() != 1) {
                return fail("dispatches one field on a map with a concatenated key");
            }
            if (auto d = dependencies(r, {rule.dispatch->field}, have); !d) {
                return fail(d.error());
            }
            load_key(r, {rule.dispatch->field}, map->interval);
            lookup(r, rule.dispatch->map, set_id(rule.dispatch->map), true);
        }
        if (rule.verdict.kind != ruleset::VerdictKind::None) {
            auto* e = expr("immediate");
            nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
            std::int32_t code = NF_ACCEPT;
            switch (rule.verdict.kind) {
            case ruleset::VerdictKind::Accept: code = NF_ACCEPT; break;
            case ruleset::VerdictKind::Drop: code = NF_DROP; break;
            case ruleset::VerdictKind::Return: code = NFT_RETURN; break;
            case ruleset::VerdictKind::Jump: code = NFT_JUMP; break;
            case ruleset::VerdictKind::Goto: code = NFT_GOTO; break;
            case ruleset::VerdictKind::None: break;
            }
            nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, static_cast<std::uint32_t>(code));
            if (code == NFT_JUMP || code == NFT_GOTO) {
                nftnl_expr_set_str(e, NFTNL_EXPR_IMM_CHAIN, rule.verdict.chain.c_str());
            }
            nftnl_rule_add_expr(r, e);
        }
        return {};
    }

    Batch& batch_;
    const ruleset::Ruleset& desired_;
    Writer w_;
    std::uint32_t set_id_ = 0;
    std::map<std::string, std::uint32_t> new_sets_;
};

}  // namespace

// The order in which a replace creates the sets. nf_tables finds a set by name by walking the
// table's set list in creation order (nla_strcmp, i.e. a strlen of every set name passed),
// for every NEWSET (the existence check walks the whole list), every NEWSETELEM and every
// lookup expression: with 1,611 sets that walk was ~40 % of the kernel's time for a replace.
// A set's position costs (1 NEWSET + its element messages + the rules that look it up) times
// the name lengths of the sets before it; ordering by weight / (name length + constant)
// descending minimises the sum (Smith's rule). Sets flagged `dynamic` (the quarantine sets,
// changed at run time one element at a time) go first, so that each later single-element
// transaction finds its set after one comparison instead of walking ~1,600 names.
std::vector<std::size_t> set_creation_order(const ruleset::Ruleset& desired) {
    std::map<std::string_view, double> refs;
    for (const auto& chain : desired.chains) {
        for (const auto& rule : chain.rules) {
            for (const auto& m : rule.matches) {
                if (const auto* lookup = std::get_if<ruleset::SetLookup>(&m)) {
                    refs[lookup->set] += 1;
                }
            }
            if (rule.dispatch) {
                refs[rule.dispatch->map] += 1;
            }
        }
    }
    std::vector<double> priority(desired.sets.size());
    for (std::size_t i = 0; i < desired.sets.size(); ++i) {
        const auto& set = desired.sets[i];
        const auto it = refs.find(set.name);
        // Element messages: about 1,000 elements fit one 64 KiB element list.
        const double messages =
            set.elements->empty() ? 0.0 : 1.0 + static_cast<double>(set.elements->size() / 1000);
        const double weight = 1.0 + messages + (it == refs.end() ? 0.0 : it->second);
        priority[i] = weight / (static_cast<double>(set.name.size()) + 8.0);
    }
    std::vector<std::size_t> order(desired.sets.size());
    for (std::size_t i = 0; i < order.size(); ++i) {
        order[i] = i;
    }
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        const bool da = desired.sets[a].dynamic, db = desired.sets[b].dynamic;
        if (da != db) {
            return da;
        }
        return priority[a] > priority[b];
    });
    return order;
}

namespace {

std::expected<void, KernelError> build_table_contents(Builder& b, const ruleset::Ruleset& desired) {
    // nft's order for a table block: chains, then each set with its elements, then rules
    // (anonymous sets just before the rule that uses them). Verdict-map elements jump to
    // chains, so the chains come first. The sets in set_creation_order() (not the IR's).
    for (const auto& chain : desired.chains) {
        b.add_chain(chain);
    }
    for (const auto index : set_creation_order(desired)) {
        const auto& set = desired.sets[index];
        b.add_set(set);
        if (auto r = b.elements(NFT_MSG_NEWSETELEM, set, set.elements, true, true); !r) {
            return r;
        }
    }
    for (const auto& chain : desired.chains) {
        for (std::size_t i = 0; i < chain.rules.size(); ++i) {
            if (auto r = b.add_rule(chain, i); !r) {
                return r;
            }
        }
    }
    return {};
}

}  // namespace

std::expected<Batch, KernelError> build_replace_batch(const ruleset::Ruleset& desired,
                                                      const BatchOptions& options) {
    Batch batch;
    {
        Builder b(batch, desired, options);
        b.writer().begin_batch();
        b.add_table();     // "table inet bulkhead": create it if absent ...
        b.delete_table();  // ... so that this delete cannot fail
        b.add_table();
        if (auto r = build_table_contents(b, desired); !r) {
            return std::unexpected(r.error());
        }
        if (options.commit) {
            b.writer().end_batch();
        }
        b.writer().finish();
    }
    return batch;
}

std::expected<Batch, KernelError> build_diff_batch(const ruleset::RulesetDiff& diff,
                                                   const ruleset::Ruleset& desired,
                                                   const BatchOptions& options) {
    if (diff.full_replace) {
        return build_replace_batch(desired, options);
    }
    Batch batch;
    {
        Builder b(batch, desired, options);
        auto set_of = [&](const std::string& name) -> std::expected<const ruleset::SetDefinition*, KernelError> {
            const auto* set = desired.find_set(name);
            if (set == nullptr) {
                return std::unexpected(build_error("the diff changes set " + name +
                                                   ", which the new ruleset does not define",
                                                   "set " + name));
            }
            return set;
        };
        b.writer().begin_batch();
        b.add_table();
        for (const auto& set : diff.sets_added) {
            b.add_set(set);
        }
        for (const auto& chain : diff.chains_added) {
            b.add_chain(chain);
        }
        for (const auto& delta : diff.set_changes) {
            if (delta.removed.empty()) {
                continue;
            }
            auto set = set_of(delta.set);
            if (!set) {
                return std::unexpected(set.error());
            }
            auto list = std::make_shared<const ruleset::ElementList>(delta.removed);
            if (auto r = b.elements(NFT_MSG_DELSETELEM, **set, list, false, false); !r) {
                return std::unexpected(r.error());
            }
        }
        for (const auto& set : diff.sets_added) {
            if (auto r = b.elements(NFT_MSG_NEWSETELEM, set, set.elements, true, false); !r) {
                return std::unexpected(r.error());
            }
        }
        for (const auto& delta : diff.set_changes) {
            if (delta.added.empty()) {
                continue;
            }
            auto set = set_of(delta.set);
            if (!set) {
                return std::unexpected(set.error());
            }
            // nft adds the leading zero segment to a set it finds empty; the set was empty
            // if nothing of it survives the removals.
            const bool was_empty =
                (*set)->elements->size() + delta.removed.size() == delta.added.size();
            auto list = std::make_shared<const ruleset::ElementList>(delta.added);
            if (auto r = b.elements(NFT_MSG_NEWSETELEM, **set, list, was_empty, false); !r) {
                return std::unexpected(r.error());
            }
        }
        for (const auto& chain : diff.chains_changed) {
            b.chain_op(NFT_MSG_DELRULE, chain.name);
            for (std::size_t i = 0; i < chain.rules.size(); ++i) {
                if (auto r = b.add_rule(chain, i); !r) {
                    return std::unexpected(r.error());
                }
            }
        }
        for (const auto& chain : diff.chains_added) {
            for (std::size_t i = 0; i < chain.rules.size(); ++i) {
                if (auto r = b.add_rule(chain, i); !r) {
                    return std::unexpected(r.error());
                }
            }
        }
        for (const auto& name : diff.chains_removed) {
            b.chain_op(NFT_MSG_DELRULE, name);
        }
        for (const auto& name : diff.chains_removed) {
            b.chain_op(NFT_MSG_DELCHAIN, name);
        }
        for (const auto& name : diff.sets_removed) {
            b.delete_set(name);
        }
        if (options.commit) {
            b.writer().end_batch();
        }
        b.writer().finish();
    }
    return batch;
}

ElementChangeBatch build_element_change_batch(std::span<const ElementChange> changes,
                                              std::span<const std::size_t> which,
                                              const ruleset::Ruleset& current, ElementCommit mode,
                                              const BatchOptions& options) {
    ElementChangeBatch out;
    // Refuse what cannot be encoded, change by change, before anything is grouped.
    std::vector<std::size_t> valid;
    valid.reserve(which.size());
    for (const auto index : which) {
        const auto& change = changes[index];
        const auto* set = current.find_set(change.set);
        if (set == nullptr) {
            out.refused.emplace_back(index, build_error("the change names set " + change.set +
                                                            ", which the ruleset does not define",
                                                        "set " + change.set));
            continue;
        }
        auto encoded = detail::encode_elements(*set, ruleset::ElementList{change.element}, false);
        if (!encoded) {
            out.refused.emplace_back(index, build_error(encoded.error(), set_object(*set)));
            continue;
        }
        valid.push_back(index);
    }
    if (valid.empty()) {
        return out;
    }
    auto& impl = BatchAccess::impl(out.batch);
    {
        Builder b(out.batch, current, options);
        // One group = consecutive changes of one set and kind = one element list (>= 1 message).
        auto write_group = [&](std::size_t from, std::size_t to) {
            const auto& first = changes[valid[from]];
            const auto& set = *current.find_set(first.set);
            auto list = std::make_shared<ruleset::ElementList>();
            auto index = std::make_shared<std::vector<std::size_t>>();
            for (std::size_t i = from; i < to; ++i) {
                list->push_back(changes[valid[i]].element);
                index->push_back(valid[i]);
            }
            const auto before = impl.messages.size();
            const auto type = first.kind == ElementChange::Kind::Add ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM;
            // Encoding was checked above, element by element.
            (void)b.elements(type, set, list, false, false);
            for (auto m = before; m < impl.messages.size(); ++m) {
                impl.change_of[m] = index;
            }
        };
        if (mode == ElementCommit::PipelinedPerChange) {
            for (std::size_t i = 0; i < valid.size(); ++i) {
                ElementTransaction t;
                t.first_message = impl.messages.size();
                b.writer().begin_batch();
                write_group(i, i + 1);
                b.writer().end_batch();
                t.end_message = impl.messages.size();
                t.changes = {valid[i]};
                out.transactions.push_back(std::move(t));
            }
        } else {
            ElementTransaction t;
            t.first_message = impl.messages.size();
            b.writer().begin_batch();
            std::size_t from = 0;
            for (std::size_t i = 1; i <= valid.size(); ++i) {
                if (i == valid.size() || changes[valid[i]].set != changes[valid[from]].set ||
                    changes[valid[i]].kind != changes[valid[from]].kind) {
                    write_group(from, i);
                    from = i;
                }
            }
            b.writer().end_batch();
            t.end_message = impl.messages.size();
            t.changes = valid;
            out.transactions.push_back(std::move(t));
        }
        b.writer().finish();
    }
    return out;
}

std::string render_batch_rules(const Batch& batch) {
    std::string out;
    for (std::size_t i = 0; i < batch.messages().size(); ++i) {
        const auto& m = batch.messages()[i];
        if (m.type != NFT_MSG_NEWRULE) {
            continue;
        }
        auto bytes = batch.message_bytes(i);
        RulePtr r(nftnl_rule_alloc());
        if (nftnl_rule_nlmsg_parse(reinterpret_cast<const nlmsghdr*>(bytes.data()), r.get()) < 0) {
            out += "(unparsable rule)\n";
            continue;
        }
        out += "inet bulkhead ";
        out += nftnl_rule_get_str(r.get(), NFTNL_RULE_CHAIN);
        out += "\n";
        auto* it = nftnl_expr_iter_create(r.get());
        for (auto* e = nftnl_expr_iter_next(it); e != nullptr; e = nftnl_expr_iter_next(it)) {
            char buf[1024];
            nftnl_expr_snprintf(buf, sizeof(buf), e, NFTNL_OUTPUT_DEFAULT, 0);
            out += "  [ ";
            out += nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
            out += " ";
            out += buf;
            out += "]\n";
        }
        nftnl_expr_iter_destroy(it);
        out += "\n";
    }
    return out;
}

std::uint64_t rule_fingerprint(const ruleset::Rule& rule) {
    std::uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a 64
    for (unsigned char c : ruleset::render_rule(rule)) {
        h ^= c;
        h *= 0x100000001b3ULL;
    }
    return h;
}

}  // namespace bulkhead::enforcer
