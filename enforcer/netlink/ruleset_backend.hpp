// The enforcer's kernel edge: programs table `inet bulkhead` from the ruleset IR through
// libnftnl + libmnl, in-process (no nft child process, no libnftables text parsing).
//
//   RulesetBackend          the interface the daemon uses (a fake implements it in tests)
//   NetlinkRulesetBackend   the real one: one netlink batch transaction per change, every
//                           ACK read, lost ACKs reconciled through the ruleset generation
//   build_*_batch()         pure: the batch as messages and bytes, for golden tests
//
// Only messages for table "bulkhead" family inet are ever built; other tables are read
// (chain dumps are per family) but never written.
#pragma once

#include "policies/ruleset.hpp"
#include "policies/ruleset_diff.hpp"

#include <chrono>
#include <cstdint>
#include <expected>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace bulkhead::enforcer {

// A failure of the kernel edge. `object` names what the failing message was about, in the
// IR's terms: "set c1_out_allow4", "element 10.0.0.5 . 6 . 445 of set c1_out_allow4",
// "rule 3 of chain forward", "batch" (commit or transport), "" when not attributable.
struct KernelError {
    std::string message;
    int error_number = 0;  // errno (positive); 0 when the error is ours, not the kernel's
    std::string object;
};

struct ApplyStats {
    std::uint32_t generation = 0;  // ruleset generation after the change
    std::size_t messages = 0;      // netlink messages in the batch, begin and end included
    std::size_t bytes = 0;         // bytes sent
    std::size_t elements = 0;      // IR elements written (added + removed)
    std::chrono::nanoseconds latency{};
    // ACKs went missing (ENOBUFS or a short read) and the outcome was decided by re-reading
    // the generation id and the table instead.
    bool acks_incomplete = false;
};

struct DriftReport {
    bool table_missing = false;
    std::vector<std::string> missing_sets, unexpected_sets, missing_chains, unexpected_chains,
        changed_chains;
    // Same name, different type or flags (a kernel set cannot be altered in place).
    std::vector<std::string> changed_sets;
    std::size_t missing_elements = 0, unexpected_elements = 0;
    // Unexpected elements of sets flagged dynamic (the packet path adds to them), by set:
    // the kernel's own containments. Counted in unexpected_elements too.
    std::map<std::string, ruleset::ElementList> dynamic_additions;

    bool clean() const;
    std::string summary() const;  // "clean" or "table missing" or "2 missing elements; ..."
};

// One set-element change (a quarantine, a released port, a VDI's address), independent of
// the others: each gets its own result.
struct ElementChange {
    enum class Kind : std::uint8_t { Add, Remove };
    Kind kind = Kind::Add;
    std::string set;  // a named set or map of the ruleset
    ruleset::Element element;
};

// How apply_element_changes() commits.
enum class ElementCommit : std::uint8_t {
    // Strict: every change is its own transaction (BEGIN, one element message, END), atomic
    // and reported on its own, exactly as if each were a separate apply_diff(). The
    // transactions are pipelined: written back to back, one datagram each (the kernel
    // commits a datagram's first batch and drops anything after its END), handed over in
    // windows with one sendmmsg() per window, the ACKs collected after each window.
    PipelinedPerChange,
    // Group commit: the changes go into one transaction (consecutive changes of the same set
    // and kind share a message). A change the kernel refuses is reported alone and the
    // others are retried without it (bounded; then per change). Committed changes of one
    // call commit together, so a refused change never takes the others down with it.
    Coalesced,
};

struct ElementChangeResult {
    std::optional<KernelError> error;  // nullopt: committed
    std::size_t transaction = 0;       // which transaction of the call decided it (0-based)
    // The transaction's ACKs were lost (ENOBUFS) and the result was read from the table: an
    // addition whose element is there, or a removal whose element is gone, is reported as
    // done, even if the kernel refused it because that was already so.
    bool settled_from_table = false;
    bool ok() const { return !error.has_value(); }
};

struct ElementChangesReport {
    std::vector<ElementChangeResult> results;  // one per change, in the changes' order
    std::size_t transactions = 0;              // sent (committed or aborted)
    std::size_t committed = 0;                 // of those, committed
    std::size_t send_calls = 0;                // sendmmsg()/sendmsg() system calls
    std::uint32_t generation = 0;              // ruleset generation afterwards (0: unknown)
    std::chrono::nanoseconds latency{};
    // ACKs went missing; the outcome of the changes concerned was read back from the table.
    bool acks_incomplete = false;
    std::size_t failed() const;
};

class RulesetBackend {
public:
    virtual ~RulesetBackend() = default;
    // One batch: add table; delete table; add table + chains + sets + elements + rules.
    virtual std::expected<ApplyStats, KernelError> replace(const ruleset::Ruleset& desired) = 0;
    // One batch in render_nft_diff's order; a diff with full_replace is a replace().
    virtual std::expected<ApplyStats, KernelError> apply_diff(const ruleset::RulesetDiff& diff,
                                                              const ruleset::Ruleset& desired) = 0;
    // Reads the kernel's table back over netlink and compares it with `desired`.
    virtual std::expected<DriftReport, KernelError> check(const ruleset::Ruleset& desired) = 0;
    // NFT_MSG_GETGEN: the ruleset generation id, bumped by every committed transaction.
    virtual std::expected<std::uint32_t, KernelError> generation() = 0;
    // Independent element changes, each with its own result. `current` supplies the sets'
    // definitions (key types, flags). Element additions behave like `nft add element` (an
    // element already present is fine), removals fail for a missing element. The default
    // implementation is serial: one apply_diff() per change (what the fakes use); `mode`
    // only changes how the netlink backend batches the transactions, never a result
    // (except that a coalesced call commits its successful changes together).
    virtual ElementChangesReport apply_element_changes(std::span<const ElementChange> changes,
                                                       const ruleset::Ruleset& current,
                                                       ElementCommit mode);
};

struct NetlinkOptions {
    // Size of one batch page. Element messages are capped near 64 KiB (the element list is
    // one attribute and nla_len is 16 bits), so a page holds several of them; the pages go
    // to the kernel in one sendmsg() over an iovec, as one datagram and so one transaction.
    std::size_t page_size = 256 * 1024;
    // SO_RCVBUF for the ACKs; 0 sizes it from the number of messages (about 1 KiB of skb
    // truesize per ACK, as nftables does). A tiny value forces ENOBUFS (tests).
    std::size_t receive_buffer = 0;
};

// Talks to nf_tables in the network namespace of the calling thread at the time of each
// call (a fresh netlink socket per operation, so no stale ACK can leak between calls).
namespace detail {
class NetlinkSocket;
}  // namespace detail

class NetlinkRulesetBackend final : public RulesetBackend {
public:
    explicit NetlinkRulesetBackend(NetlinkOptions options = {});

    std::expected<ApplyStats, KernelError> replace(const ruleset::Ruleset& desired) override;
    std::expected<ApplyStats, KernelError> apply_diff(const ruleset::RulesetDiff& diff,
                                                      const ruleset::Ruleset& desired) override;
    std::expected<DriftReport, KernelError> check(const ruleset::Ruleset& desired) override;
    std::expected<std::uint32_t, KernelError> generation() override;
    ElementChangesReport apply_element_changes(std::span<const ElementChange> changes,
                                               const ruleset::Ruleset& current,
                                               ElementCommit mode) override;

    // Check mode: sends the replace batch without its end message, so the kernel parses and
    // validates every object and then aborts. Nothing is committed.
    std::expected<ApplyStats, KernelError> validate(const ruleset::Ruleset& desired);

private:
    // One socket for the backend's life, opened on first use in the caller's network
    // namespace: closing a netlink socket right after a commit makes the kernel wait for
    // the transaction's deferred cleanup (7-28 ms measured), which dominated single-element
    // changes. Dropped after any failure and reopened by the next call.
    std::expected<detail::NetlinkSocket*, KernelError> socket();
    NetlinkOptions options_;
    std::uint32_t next_seq_;
    std::shared_ptr<detail::NetlinkSocket> socket_;
};

// ---- Pure batch building (no kernel) ---------------------------------------------------

struct BatchMessage {
    std::uint16_t type = 0;  // NFT_MSG_* or NFNL_MSG_BATCH_BEGIN/END
    std::uint32_t seq = 0;
    std::string object;       // as in KernelError::object
    std::size_t elements = 0; // IR elements carried (element messages)
    std::size_t page = 0;     // where the message sits in the batch
    std::size_t offset = 0;
    std::size_t length = 0;
};

struct BatchOptions {
    std::size_t page_size = NetlinkOptions{}.page_size;
    std::uint32_t first_seq = 1;
    bool commit = true;  // false: no NFNL_MSG_BATCH_END (check mode)
};

class Batch {
public:
    Batch();
    ~Batch();
    Batch(Batch&&) noexcept;
    Batch& operator=(Batch&&) noexcept;

    const std::vector<BatchMessage>& messages() const;
    const std::vector<std::vector<std::uint8_t>>& pages() const;
    std::size_t bytes() const;
    std::size_t elements() const;  // IR elements written
    // The batch as (message type name, object) lines: "NEWSET set c1_out_allow4".
    std::vector<std::string> describe() const;
    // A message's bytes.
    std::vector<std::uint8_t> message_bytes(std::size_t index) const;
    // The message (and element, if the kernel pointed at one) that `seq`/`offset` name.
    std::string object_at(std::uint32_t seq, std::uint32_t error_offset) const;
    // Element-change batches: the index of the ElementChange the kernel pointed at (the
    // element at `offset` of message `seq`, or the message's only change), if known.
    std::optional<std::size_t> change_at(std::uint32_t seq, std::uint32_t error_offset) const;
    const BatchMessage* find(std::uint32_t seq) const;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
    friend struct BatchAccess;
};

// Replace batch: add table (create if absent); delete table; add table, chains, sets with
// their elements, rules. Errors are IR problems the kernel could not express (a range in
// a set without `flags interval`, a lookup on a set the ruleset lacks).
std::expected<Batch, KernelError> build_replace_batch(const ruleset::Ruleset& desired,
                                                      const BatchOptions& options = {});
// Diff batch, in render_nft_diff's order. `desired` is the full new ruleset (set types
// and rule context come from it). A diff with full_replace builds the replace batch.
std::expected<Batch, KernelError> build_diff_batch(const ruleset::RulesetDiff& diff,
                                                   const ruleset::Ruleset& desired,
                                                   const BatchOptions& options = {});

// Element changes as transactions (pure). PipelinedPerChange: one transaction per change
// (BEGIN, NEWSETELEM/DELSETELEM with one element, END; no table message: a missing table or
// set is that change's error). Coalesced: one transaction for all of them. `which` selects
// the changes (indices into `changes`); a change that cannot be encoded (unknown set,
// element that does not fit the set) is not sent and gets its error in `refused`.
struct ElementTransaction {
    std::size_t first_message = 0;     // its BATCH_BEGIN
    std::size_t end_message = 0;       // one past its BATCH_END
    std::vector<std::size_t> changes;  // indices into `changes`
};
struct ElementChangeBatch {
    Batch batch;
    std::vector<ElementTransaction> transactions;
    std::vector<std::pair<std::size_t, KernelError>> refused;
};
ElementChangeBatch build_element_change_batch(std::span<const ElementChange> changes,
                                              std::span<const std::size_t> which,
                                              const ruleset::Ruleset& current, ElementCommit mode,
                                              const BatchOptions& options = {});

// The order (indices into desired.sets) in which build_replace_batch creates the sets:
// `dynamic` sets first, then by how often the kernel will look each one up by name, per
// byte of name (see batch_builder.cpp). The order changes nothing but the kernel's cost.
std::vector<std::size_t> set_creation_order(const ruleset::Ruleset& desired);

// The rules of a batch in `nft --debug=netlink` notation ("inet bulkhead forward" then one
// "  [ expr ]" line per expression), decoded back from the built messages with libnftnl.
std::string render_batch_rules(const Batch& batch);

// Short stable fingerprint of an IR rule (FNV-1a 64 of its nft text), carried in the
// rule's NFTNL_RULE_USERDATA so that check() compares chains rule by rule.
std::uint64_t rule_fingerprint(const ruleset::Rule& rule);

}  // namespace bulkhead::enforcer
