#include "enforcer/nflog/attribution.hpp"

#include <algorithm>

namespace bulkhead::nflog {

std::string_view to_string(AttributionOutcome outcome) {
    switch (outcome) {
    case AttributionOutcome::Attributed:
        return "attributed";
    case AttributionOutcome::UnknownInterface:
        return "unknown_interface";
    case AttributionOutcome::UnresolvedInterface:
        return "unresolved_interface";
    case AttributionOutcome::NoInterface:
        return "no_interface";
    case AttributionOutcome::Count_:
        break;
    }
    return "unknown";
}

namespace {

struct Side {
    std::uint32_t ifindex = 0;
    const std::string* name = nullptr;
};

Side attribution_side(const DropEvent& e) {
    const Side in{e.indev, &e.indev_name};
    const Side out{e.outdev, &e.outdev_name};
    const Side& preferred = e.direction == Direction::Out ? in : out;
    const Side& fallback = e.direction == Direction::Out ? out : in;
    return preferred.ifindex != 0 ? preferred : fallback;
}

// Common tail of both attribute() flavours.
template <typename Find>
AttributionOutcome attribute_with(DropEvent& event, std::uint64_t generation, Find&& find) {
    event.policy_generation = generation;
    event.workload.clear();
    const Side side = attribution_side(event);
    if (side.ifindex == 0) {
        return AttributionOutcome::NoInterface;
    }
    if (side.name->empty()) {
        return AttributionOutcome::UnresolvedInterface;
    }
    const std::string* workload = find(*side.name);
    if (workload == nullptr) {
        return AttributionOutcome::UnknownInterface;
    }
    event.workload = *workload;
    return AttributionOutcome::Attributed;
}

} // namespace

const std::string& attribution_interface(const DropEvent& event) {
    static const std::string none;
    const Side side = attribution_side(event);
    return side.ifindex != 0 ? *side.name : none;
}

AttributionOutcome attribute(DropEvent& event, const std::vector<ruleset::PortBinding>& ports,
                             std::uint64_t policy_generation) {
    return attribute_with(
        event, policy_generation, [&](const std::string& name) -> const std::string* {
            auto it = std::ranges::lower_bound(ports, name, {}, &ruleset::PortBinding::interface);
            return it != ports.end() && it->interface == name ? &it->workload : nullptr;
        });
}

Attributor::Attributor(const std::vector<ruleset::PortBinding>& ports,
                       std::uint64_t policy_generation)
    : generation_(policy_generation) {
    workload_by_interface_.reserve(ports.size());
    for (const auto& binding : ports) {
        workload_by_interface_.emplace(binding.interface, binding.workload);
    }
}

AttributionOutcome Attributor::attribute(DropEvent& event) {
    auto outcome =
        attribute_with(event, generation_, [&](const std::string& name) -> const std::string* {
            auto it = workload_by_interface_.find(std::string_view(name));
            return it != workload_by_interface_.end() ? &it->second : nullptr;
        });
    ++counts_[static_cast<std::size_t>(outcome)];
    return outcome;
}

} // namespace bulkhead::nflog
