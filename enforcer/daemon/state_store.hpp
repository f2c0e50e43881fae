// Last-known-good persistence. Every ruleset the kernel accepted is written to the state
// directory (write to a temporary file, fsync, rename, fsync the directory), so a reboot or
// a daemon restart re-applies it before anything else and workloads are never unprotected.
#pragma once

#include "policies/ruleset.hpp"

#include <cstdint>
#include <expected>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace bulkhead::enforcer {

struct AppliedState {
    std::uint64_t generation = 0;  // the enforcer's applied generation, monotonic
    std::int64_t applied_at_unix_ms = 0;
    ruleset::Ruleset ruleset;
    // Ports the kernel quarantined itself (tripwires) that the source has not taken over
    // yet: a restart must keep holding them (RulesetKeeper::note_kernel_contained).
    std::vector<std::string> kernel_contained;
    // Sender addresses a host-mode tripwire blocked, held the same way
    // (RulesetKeeper::note_kernel_blocked).
    std::vector<std::string> kernel_blocked_sources;
};

class StateStore {
public:
    explicit StateStore(std::filesystem::path directory);

    // Nothing stored yet: an empty optional. A corrupt current file is moved aside
    // (state.json.corrupt-<n>) and the previous good state is tried; the error describes
    // both. Never throws.
    struct LoadResult {
        std::optional<AppliedState> state;
        std::string warning;  // non-empty when a corrupt file was set aside
    };
    std::expected<LoadResult, std::string> load() const;

    // Keeps the replaced file as state.json.prev.
    std::expected<void, std::string> save(const AppliedState& state) const;

    const std::filesystem::path& current_path() const { return current_; }

private:
    std::filesystem::path directory_;
    std::filesystem::path current_;
    std::filesystem::path previous_;
};

// Durable: the file and its directory entry are synced before the call returns (state a
// restart depends on). Atomic only: readers see the old or the new contents, never a mix, but
// a crash may leave the old file (what is rewritten every second anyway: the metrics file).
enum class FileDurability { Durable, AtomicOnly };

// Writes `contents` to `path` atomically (tmp + rename), and durably unless told otherwise
// (fsync of the file before the rename, of the directory after it).
std::expected<void, std::string> write_file_atomically(const std::filesystem::path& path,
                                                       std::string_view contents,
                                                       FileDurability durability = FileDurability::Durable);

}  // namespace bulkhead::enforcer
