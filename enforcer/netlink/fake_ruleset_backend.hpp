// An in-memory RulesetBackend for tests of code above the kernel edge (the daemon): a
// "kernel" that holds one IR ruleset, applies diffs to it with the kernel's strictness
// (deleting a missing element fails, a failed change changes nothing), bumps a generation,
// and reports drift at the IR level. Batches are still built with the real, pure batch
// builder, so IR the kernel could not express fails here too and the stats are real.
#pragma once

#include "enforcer/netlink/ruleset_backend.hpp"

#include <optional>

namespace bulkhead::enforcer {

class FakeRulesetBackend final : public RulesetBackend {
public:
    std::expected<ApplyStats, KernelError> replace(const ruleset::Ruleset& desired) override;
    std::expected<ApplyStats, KernelError> apply_diff(const ruleset::RulesetDiff& diff,
                                                      const ruleset::Ruleset& desired) override;
    std::expected<DriftReport, KernelError> check(const ruleset::Ruleset& desired) override;
    std::expected<std::uint32_t, KernelError> generation() override { return generation_; }

    // The table the fake kernel holds (nullopt: none). Tests tamper with it to make drift.
    const std::optional<ruleset::Ruleset>& table() const { return table_; }
    std::optional<ruleset::Ruleset>& table() { return table_; }
    // The next replace()/apply_diff() fails with `error` and changes nothing.
    void fail_next(KernelError error) { fail_next_ = std::move(error); }
    std::size_t transactions() const { return transactions_; }

private:
    std::expected<ApplyStats, KernelError> commit(const Batch& batch, ruleset::Ruleset next);

    std::optional<ruleset::Ruleset> table_;
    std::optional<KernelError> fail_next_;
    std::uint32_t generation_ = 1;
    std::size_t transactions_ = 0;
};

}  // namespace bulkhead::enforcer
