// The analyzer's edges that deal in values, not I/O: an owning drop record built from the
// enforcer's drop-event JSON (enforcer/nflog/drop_event.cpp to_json; events the controller
// stored add "enforcer"), the inventory lookup that adds user and segments, the analyzer
// configuration as JSON, and incidents as JSON. Still pure: text and values in, values out.
#pragma once

#include "controller/analyzer/analyzer.hpp"
#include "policies/policy_model.hpp"

#include <expected>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace bulkhead::analyzer {

// What the inventory knows of one workload.
struct WorkloadFacts {
    std::string id;
    std::string enforcer;
    std::string user;
    std::string hostname;
    bool critical = false;               // never quarantined automatically
    std::vector<std::string> segments;   // "key=value" per label, then policy segment names
    std::size_t policy_segments_from = 0; // index of the first policy segment name
    std::span<const std::string> policy_segments() const {
        return std::span<const std::string>(segments).subspan(policy_segments_from);
    }
};

// The lookup the caller supplies (the controller over its inventory, the replay tool over
// an inventory file, a test over a few literals).
class InventoryView {
  public:
    virtual ~InventoryView() = default;
    virtual const WorkloadFacts* by_workload(std::string_view enforcer,
                                             std::string_view workload) const = 0;
    // A destination address: the workload of `near_enforcer` holding it, else the only
    // workload holding it; nullptr when unknown or ambiguous (never a guess).
    virtual const WorkloadFacts* by_address(std::string_view address,
                                            std::string_view near_enforcer) const = 0;
};

// InventoryView over policy::Inventory; a workload's segments are its labels as "key=value",
// then, given a policy, the names of the policy segments it is a member of.
class InventoryIndex final : public InventoryView {
  public:
    // Policy segment names of the inventory's workload number i, when already resolved
    // (RulesetCompiler::segments_of over the same inventory and policy).
    using SegmentsOf = std::function<std::vector<std::string>(std::size_t)>;

    explicit InventoryIndex(const policy::Inventory& inventory, const policy::Policy* policy = nullptr,
                            const SegmentsOf& segments_of = {});
    const WorkloadFacts* by_workload(std::string_view enforcer,
                                     std::string_view workload) const override;
    const WorkloadFacts* by_address(std::string_view address,
                                    std::string_view near_enforcer) const override;

  private:
    std::vector<WorkloadFacts> facts_;
    std::vector<std::string> enforcer_of_;
    std::unordered_map<std::string, std::size_t> by_id_;                   // workload id
    std::unordered_map<std::string, std::vector<std::size_t>> by_address_; // canonical text
};

// An owning drop observation; view() lends it to Analyzer::observe.
struct DropRecord {
    std::int64_t time_ns = 0;
    std::string enforcer, workload, port, mac, address, user;
    std::vector<std::string> source_segments;
    std::string destination;
    std::uint8_t protocol = 0;
    std::optional<std::uint16_t> dport, sport;
    DropReason reason = DropReason::Default;
    std::uint64_t count = 1;
    std::string destination_workload;
    std::vector<std::string> destination_segments;

    Observation view() const;
};

// One drop event object -> a record. std::nullopt: a valid event that is not a drop
// (allowed flows, enforcer lifecycle events). Errors name the offending member.
// Direction "out": the source is the event's workload (interface, source MAC). Direction
// "in": the sender is not the enforcer's workload; the source is the sender's address on
// that enforcer and the event's workload is the destination.
std::expected<std::optional<DropRecord>, std::string>
drop_record_from_json(const nlohmann::json& event, const InventoryView* inventory);

// Attribution shared by drop_record_from_json and the controller's ingest: `r` holds time,
// enforcer, protocol, port, reason and count; this fills source identity, user, segments and
// destination. Outbound (`inbound` false): the source is the enforcer's `workload` seen on
// `port` with `mac`. Inbound: the sender is not ours: enforcer + port + address.
void attribute_drop(DropRecord& r, std::string_view workload, bool inbound, std::string_view src,
                    std::string_view dst, std::string_view port, std::string_view mac,
                    const InventoryView* inventory);

// Configuration as JSON: every member optional, defaults as in analyzer.hpp; unknown
// members are errors (a typo must not silently keep a default).
std::expected<AnalyzerConfig, std::string> config_from_json(const nlohmann::json& document);

// The active policy's part in detection: "response.incident" is the distinct-targets rule
// (and sets the scan window), "response.decoy_severity" the decoy rule's severity.
void apply_response_policy(AnalyzerConfig& config, const policy::ResponsePolicy& response);

// Per-rule counters (Incident::findings, Incident::suppressed) by rule name, zeros left out.
nlohmann::json rule_counts(const std::array<std::uint64_t, rule_count>& counts);
nlohmann::json to_json(const Finding& finding);
nlohmann::json to_json(const Incident& incident);
nlohmann::json to_json(const Totals& totals);

} // namespace bulkhead::analyzer
