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
#include <memory>
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

    bool clean() const;
    std::string summary() const;  // "clean" or "table missing" or "2 missing elements; ..."
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

// The rules of a batch in `nft --debug=netlink` notation ("inet bulkhead forward" then one
// "  [ expr ]" line per expression), decoded back from the built messages with libnftnl.
std::string render_batch_rules(const Batch& batch);

// Short stable fingerprint of an IR rule (FNV-1a 64 of its nft text), carried in the
// rule's NFTNL_RULE_USERDATA so that check() compares chains rule by rule.
std::uint64_t rule_fingerprint(const ruleset::Rule& rule);

}  // namespace bulkhead::enforcer
