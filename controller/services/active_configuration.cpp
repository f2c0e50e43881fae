#include "controller/services/active_configuration.hpp"

#include "policies/policy_reader.hpp"

#include <spdlog/spdlog.h>

#include <chrono>

#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace bulkhead::controller {

using nlohmann::json;

std::expected<json, ServiceError> ActiveConfiguration::inventory_document() {
    auto enforcers = inventory_.list_enforcer_definitions();
    if (!enforcers) {
        return std::unexpected(from_store(enforcers.error(), "inventory"));
    }
    auto workloads = inventory_.list_workloads();
    if (!workloads) {
        return std::unexpected(from_store(workloads.error(), "inventory"));
    }
    json document{{"enforcers", json::array()}, {"workloads", json::array()}};
    for (const auto& e : *enforcers) {
        document["enforcers"].push_back(e.document);
    }
    for (const auto& w : *workloads) {
        document["workloads"].push_back(w.document);
    }
    return document;
}

std::expected<policy::Inventory, ServiceError> ActiveConfiguration::load_inventory() {
    auto document = inventory_document();
    if (!document) {
        return std::unexpected(document.error());
    }
    auto inventory = policy::read_inventory(*document, "inventory");
    if (!inventory) {
        // Only validated inventories are stored, so this is the store's fault, not the caller's.
        return std::unexpected(service_error(ErrorKind::Internal, "inventory-corrupt",
                                             "the stored inventory no longer validates",
                                             json{{"errors", policy::diagnostics_to_json(inventory.error())}}));
    }
    return *inventory;
}

std::expected<std::shared_ptr<const CompiledConfiguration>, ServiceError> ActiveConfiguration::build(
    const std::optional<PolicyRevision>& revision) {
    const auto started = std::chrono::steady_clock::now();
    auto compiled = std::make_shared<CompiledConfiguration>();
    // Writes and builds both run under lock_changes(), so the version cannot move meanwhile.
    compiled->inventory_version = inventory_version_.load();
    const auto active = current();
    const bool reused = active && active->inventory_version == compiled->inventory_version;
    if (reused) {
        compiled->inventory_snapshot = active->inventory_snapshot;
    } else {
        auto inventory = load_inventory();
        if (!inventory) {
            return std::unexpected(inventory.error());
        }
        compiled->inventory_snapshot = std::make_shared<const policy::Inventory>(std::move(*inventory));
    }
    compiled->revision = revision;
    if (revision) {
        auto policy = policy::read_policy(revision->document, "policy");
        if (!policy) {
            return std::unexpected(invalid_document(
                "policy revision " + std::to_string(revision->id) + " does not validate", policy.error()));
        }
        auto problems = policy::cross_check(*policy, compiled->inventory(), "policy");
        if (!problems.empty()) {
            return std::unexpected(invalid_document("the policy does not fit the inventory", problems));
        }
        compiled->policy = std::move(*policy);
        compiled->compiler = std::make_unique<ruleset::RulesetCompiler>(*compiled->policy, compiled->inventory());
    }
    spdlog::info("configuration: built in {} ms ({} workloads {}, policy revision {})", milliseconds_since(started),
                 compiled->inventory().workloads.size(), reused ? "as held" : "read from the store",
                 revision ? std::to_string(revision->id) : "none");
    return std::shared_ptr<const CompiledConfiguration>(std::move(compiled));
}

std::shared_ptr<const CompiledConfiguration> ActiveConfiguration::current() const {
    std::lock_guard lock(mutex_);
    return current_;
}

std::expected<void, ServiceError> ActiveConfiguration::install(std::shared_ptr<const CompiledConfiguration> compiled) {
    auto changes = lock_changes();
    {
        std::lock_guard lock(mutex_);
        current_ = compiled;
    }
    std::expected<void, ServiceError> first_error;
    const auto started = std::chrono::steady_clock::now();
    for (const auto& listener : listeners_) {
        if (auto done = listener(compiled); !done && first_error) {
            first_error = std::unexpected(done.error());
        }
    }
    const auto installed_ms = milliseconds_since(started);
    const auto trim_started = std::chrono::steady_clock::now();
    release_freed_memory();
    spdlog::info("configuration: installed in {} ms (every service), freed memory returned in {} ms", installed_ms,
                 milliseconds_since(trim_started));
    return first_error;
}

void ActiveConfiguration::release_freed_memory() {
#ifdef __GLIBC__
    // A configuration change over a large inventory builds and drops gigabytes of
    // transient documents on whichever worker threads served it; glibc keeps those pages in
    // per-thread arenas, and the controller's RSS stays at the peak of the largest change.
    // Hand the free pages back (measured in docs/benchmarks.md, "fleet").
    malloc_trim(0);
#endif
}

void ActiveConfiguration::adopt(std::shared_ptr<const CompiledConfiguration> compiled) {
    std::lock_guard lock(mutex_);
    current_ = std::move(compiled);
}

void ActiveConfiguration::add_listener(Listener listener) {
    auto changes = lock_changes();
    listeners_.push_back(std::move(listener));
}

}  // namespace bulkhead::controller
