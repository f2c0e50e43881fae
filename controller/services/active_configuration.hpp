// ActiveConfiguration: the active policy revision resolved against the current inventory,
// compiled once and shared (read by the fleet's recompiles, the analyzer's attribution and
// the what-if). It is a cache of the store: rebuilt at start and after every activation or
// inventory change. Listeners (the fleet, the analysis) hear of each new configuration in
// order; changes are serialised so two activations cannot interleave their recompiles.
#pragma once

#include "controller/services/service_support.hpp"
#include "policies/policy_model.hpp"
#include "policies/ruleset_compiler.hpp"

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace bulkhead::controller {

struct CompiledConfiguration {
    std::optional<PolicyRevision> revision;
    std::optional<policy::Policy> policy;
    // Shared with the next configuration when the inventory did not change in between
    // (a policy activation): read from the store and parsed once per inventory change.
    std::shared_ptr<const policy::Inventory> inventory_snapshot = std::make_shared<const policy::Inventory>();
    std::uint64_t inventory_version = 0;  // ActiveConfiguration's count of inventory writes when read
    std::unique_ptr<ruleset::RulesetCompiler> compiler;  // null without an active policy

    const policy::Inventory& inventory() const { return *inventory_snapshot; }
};

class ActiveConfiguration {
  public:
    using Listener = std::function<std::expected<void, ServiceError>(
        const std::shared_ptr<const CompiledConfiguration>&)>;

    explicit ActiveConfiguration(InventoryRepository& inventory) : inventory_(inventory) {}

    // The inventory as one document ({"enforcers": [...], "workloads": [...]}).
    std::expected<nlohmann::json, ServiceError> inventory_document();
    std::expected<policy::Inventory, ServiceError> load_inventory();
    // `revision` (none: no policy) resolved and compiled against the stored inventory (the
    // current configuration's, when no inventory write happened since it was read).
    std::expected<std::shared_ptr<const CompiledConfiguration>, ServiceError> build(
        const std::optional<PolicyRevision>& revision);

    std::shared_ptr<const CompiledConfiguration> current() const;
    // Makes `compiled` current and tells the listeners, in registration order; the first
    // listener error is returned (the configuration stays current: the store already holds
    // the change, and the listener keeps what it had in force).
    std::expected<void, ServiceError> install(std::shared_ptr<const CompiledConfiguration> compiled);
    void add_listener(Listener listener);
    // Makes `compiled` current without telling the listeners (start-up, before they run).
    void adopt(std::shared_ptr<const CompiledConfiguration> compiled);

    // Called (under lock_changes) before the inventory is written: the next build reads it
    // from the store again, even when the write or its reload fails half-way.
    void inventory_changing() { ++inventory_version_; }

    // Holds configuration changes off while a caller reads, changes the store and installs.
    std::unique_lock<std::recursive_mutex> lock_changes() { return std::unique_lock(change_mutex_); }

  private:
    static void release_freed_memory();

    InventoryRepository& inventory_;
    mutable std::mutex mutex_;
    std::recursive_mutex change_mutex_;
    std::shared_ptr<const CompiledConfiguration> current_;
    std::atomic<std::uint64_t> inventory_version_{0};
    std::vector<Listener> listeners_;
};

}  // namespace bulkhead::controller
