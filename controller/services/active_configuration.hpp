// ActiveConfiguration: the active policy revision resolved against the current inventory,
// compiled once and shared (read by the fleet's recompiles, the analyzer's attribution and
// the what-if). It is a cache of the store: rebuilt at start and after every activation or
// inventory change. Listeners (the fleet, the analysis) hear of each new configuration in
// order; changes are serialised so two activations cannot interleave their recompiles.
#pragma once

#include "controller/services/service_support.hpp"
#include "policies/policy_model.hpp"
#include "policies/ruleset_compiler.hpp"

#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace bulkhead::controller {

struct CompiledConfiguration {
    std::optional<PolicyRevision> revision;
    std::optional<policy::Policy> policy;
    policy::Inventory inventory;
    std::unique_ptr<ruleset::RulesetCompiler> compiler;  // null without an active policy
};

class ActiveConfiguration {
  public:
    using Listener = std::function<std::expected<void, ServiceError>(
        const std::shared_ptr<const CompiledConfiguration>&)>;

    explicit ActiveConfiguration(InventoryRepository& inventory) : inventory_(inventory) {}

    // The inventory as one document ({"enforcers": [...], "workloads": [...]}).
    std::expected<nlohmann::json, ServiceError> inventory_document();
    std::expected<policy::Inventory, ServiceError> load_inventory();
    // `revision` (none: no policy) resolved and compiled against the stored inventory.
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

    // Holds configuration changes off while a caller reads, changes the store and installs.
    std::unique_lock<std::recursive_mutex> lock_changes() { return std::unique_lock(change_mutex_); }

  private:
    static void release_freed_memory();

    InventoryRepository& inventory_;
    mutable std::mutex mutex_;
    std::recursive_mutex change_mutex_;
    std::shared_ptr<const CompiledConfiguration> current_;
    std::vector<Listener> listeners_;
};

}  // namespace bulkhead::controller
