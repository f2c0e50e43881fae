// Policy and Inventory model values -> the JSON documents policy_reader accepts, so a
// generated fleet can be written out (bench_compile --write-fleet) and round-tripped through
// the real reader. Pure: builds json values, does no I/O.
#pragma once

#include "policies/policy_model.hpp"

#include <nlohmann/json.hpp>

namespace bulkhead::bench {

nlohmann::ordered_json policy_to_json(const policy::Policy& policy);
nlohmann::ordered_json inventory_to_json(const policy::Inventory& inventory);
nlohmann::ordered_json workload_to_json(const policy::Workload& workload);

}  // namespace bulkhead::bench
