// Reading and validating policy and inventory documents: JSON -> model values, with every
// problem reported as a located Diagnostic. Nothing here throws to the caller.
#pragma once

#include "policies/diagnostics.hpp"
#include "policies/json_reader.hpp"
#include "policies/policy_model.hpp"

#include <expected>
#include <string_view>
#include <vector>

namespace bulkhead::policy {

using Diagnostics = std::vector<Diagnostic>;

// Structural and self-contained checks of each document.
std::expected<Policy, Diagnostics> read_policy(const nlohmann::json& document,
                                               std::string_view document_name = "policy");
std::expected<Inventory, Diagnostics> read_inventory(const nlohmann::json& document,
                                                     std::string_view document_name = "inventory");

// Text -> validated model (read_json + read_*), the entry point for CLI and API.
std::expected<Policy, Diagnostics> parse_policy(std::string_view text,
                                                std::string_view document_name = "policy",
                                                JsonReadLimits limits = {});
std::expected<Inventory, Diagnostics> parse_inventory(std::string_view text,
                                                      std::string_view document_name = "inventory",
                                                      JsonReadLimits limits = {});

// Checks that need both documents (a segment naming a workload id the inventory lacks).
Diagnostics cross_check(const Policy& policy, const Inventory& inventory,
                        std::string_view policy_name = "policy");

// The ICMP/ICMPv6 type names the policy accepts, as nft spells them.
std::optional<std::uint8_t> icmp_type_number(std::string_view name, Protocol protocol);
std::string icmp_type_name(std::uint8_t type, Protocol protocol);

}  // namespace bulkhead::policy
