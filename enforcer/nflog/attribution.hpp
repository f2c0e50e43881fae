// Attribution: which workload a logged packet belongs to. Pure.
//
// The prefix says the direction; the interface says the workload (Ruleset::ports):
//   dir out  the workload the packet comes FROM: port mode (forward hook) -> its input
//            interface; host mode (output hook, no input interface) -> its output interface
//   dir in   the workload the packet goes TO: port mode -> its output interface; host mode
//            (input hook, no output interface) -> its input interface
// i.e. out looks at indev, or outdev when there is no indev; in looks at outdev, or indev
// when there is no outdev. When the preferred interface is present but not bound, the
// other one is NOT tried: in a forward hook it is the peer's side, never the subject's.
// Interface names must have been resolved already (NflogStream does it).
#pragma once

#include "enforcer/nflog/drop_event.hpp"
#include "policies/ruleset.hpp"

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace bulkhead::nflog {

enum class AttributionOutcome : std::uint8_t {
    Attributed,
    UnknownInterface,    // a name, but no binding in Ruleset::ports (stale or foreign)
    UnresolvedInterface, // an ifindex whose name could not be resolved
    NoInterface,         // neither indev nor outdev
    Count_
};
std::string_view to_string(AttributionOutcome outcome);

// The interface the event is attributed through ("" if none), per the rules above.
const std::string& attribution_interface(const DropEvent& event);

// Sets event.workload (cleared if not found) and event.policy_generation. `ports` must be
// sorted by interface, as Ruleset::ports is.
AttributionOutcome attribute(DropEvent& event, const std::vector<ruleset::PortBinding>& ports,
                             std::uint64_t policy_generation);

// The same with an index built once per applied ruleset, and outcome counters.
class Attributor {
  public:
    Attributor() = default;
    Attributor(const std::vector<ruleset::PortBinding>& ports, std::uint64_t policy_generation);

    AttributionOutcome attribute(DropEvent& event);
    std::uint64_t policy_generation() const { return generation_; }
    std::uint64_t count(AttributionOutcome outcome) const {
        return counts_[static_cast<std::size_t>(outcome)];
    }

  private:
    struct StringHash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const {
            return std::hash<std::string_view>{}(s);
        }
    };
    std::unordered_map<std::string, std::string, StringHash, std::equal_to<>>
        workload_by_interface_;
    std::uint64_t generation_ = 0;
    std::array<std::uint64_t, static_cast<std::size_t>(AttributionOutcome::Count_)> counts_{};
};

} // namespace bulkhead::nflog
