// AnalysisService: owns the analyzer engine in the controller. Every stored drop reaches it
// once, in id order (EventSequencer); it attributes the drop (workload, port, VPN session),
// feeds the pure engine, asks the ResponsePlanner what to do about each finding, has the
// IncidentLedger record it and the QuarantineService contain the source.
//
// Durable: at start the engine is rebuilt from the store (the events of the replay horizon
// go through the same idempotent path as live ones), so windows and correlation survive a
// kill -9; a checkpoint of the engine shortens that replay once the engine can save itself.
#pragma once

#include "controller/analyzer/analyzer.hpp"
#include "controller/analyzer/drop_record.hpp"
#include "controller/analyzer/response_planner.hpp"
#include "controller/services/active_configuration.hpp"
#include "controller/services/containment_timelines.hpp"
#include "controller/services/event_bus.hpp"
#include "controller/services/event_sequencer.hpp"
#include "controller/services/incident_ledger.hpp"
#include "controller/services/quarantine_service.hpp"

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

namespace bulkhead::controller {

struct AnalysisOptions {
    // Detector thresholds and windows (controller/analyzer/README.md); the active policy's
    // "response" section adds its own incident rule and decides automatic quarantine.
    analyzer::AnalyzerConfig analyzer;
    // The engine's state is saved in the store this often when it moved (and at a clean
    // stop); after a restart only the events stored after the checkpoint are analysed again.
    std::chrono::milliseconds checkpoint_interval{60000};
    // Without a usable checkpoint (first start, a version this build cannot read), the engine
    // is rebuilt from the events of this period before the newest stored event.
    std::chrono::milliseconds replay_horizon{2 * 3600 * 1000};
};

class AnalysisService {
  public:
    AnalysisService(AnalysisOptions options, EventRepository& events, VpnSessionRepository& vpn_sessions,
                    IncidentRepository& incidents, QuarantineRepository& quarantines, ExemptionRepository& exemptions,
                    AnalysisStateRepository& state, IncidentLedger& ledger, QuarantineService& quarantine,
                    EventBus& bus, Clock clock);
    ~AnalysisService();
    AnalysisService(const AnalysisService&) = delete;
    AnalysisService& operator=(const AnalysisService&) = delete;

    // Rebuilds the engine from the stored events, then starts the timer for stale gaps.
    std::expected<void, std::string> start();
    void shutdown();

    // Freshly stored events of one commit (ids increasing); analysed in id order.
    void submit(std::vector<StoredEvent> events) { sequencer_.submit(std::move(events)); }
    // The stages of the last automatic containments (the "pushed" stage is the channel's).
    const ContainmentTimelines& containment_timelines() const { return timelines_; }
    // Waits until every submitted event was analysed (tests, shutdown).
    bool drain(std::chrono::milliseconds wait) { return sequencer_.drain(wait); }
    // Saves the engine, planner and incident map with the last event they have seen.
    std::expected<void, std::string> checkpoint();

    // A new configuration: thresholds, the policy's response section, attribution index.
    std::expected<void, ServiceError> configure(const std::shared_ptr<const CompiledConfiguration>& compiled);
    // The exemptions changed: the current configuration again.
    void reconfigure();
    // The SOC resolved a stored incident: the engine's incident is resolved too.
    void resolved(std::int64_t stored_incident);
    // A quarantine of `workload` was released: its source is judged afresh.
    void released(const std::string& workload);
    // The inventory index attribution uses (the scope graph reads it too).
    std::shared_ptr<const analyzer::InventoryIndex> inventory_index() const;

    ServiceResult status();
    // Called after a finding committed webhook rows (the sender looks at once).
    void on_outbox_written(std::function<void()> listener) { outbox_written_ = std::move(listener); }

  private:
    struct Engine;
    void analyse(std::vector<StoredEvent>& fresh);
    void act_on(PendingFinding& pending);
    void maintenance_loop();
    // Restores the stored checkpoint; the id of the first event still to analyse, or none.
    std::optional<std::int64_t> restore_checkpoint();
    std::expected<std::size_t, std::string> replay(EventQuery query);

    AnalysisOptions options_;
    EventRepository& events_;
    VpnSessionRepository& vpn_sessions_;
    IncidentRepository& incidents_;
    QuarantineRepository& quarantines_;
    ExemptionRepository& exemptions_;
    AnalysisStateRepository* state_;  // where checkpoints go
    IncidentLedger& ledger_;
    QuarantineService& quarantine_;
    EventBus& bus_;
    Clock clock_;

    mutable std::mutex mutex_;  // the engine, the planner and the index
    std::unique_ptr<Engine> engine_;
    std::shared_ptr<const CompiledConfiguration> configuration_;
    EventSequencer sequencer_;
    std::atomic<std::int64_t> analysed_through_{0};
    std::atomic<std::uint64_t> store_errors_{0};
    std::atomic<std::int64_t> checkpoint_through_{0};
    nlohmann::json restart_;  // how the last start rebuilt the engine (status)
    std::atomic<bool> stopping_{false};
    std::function<void()> outbox_written_;
    ContainmentTimelines timelines_;
    std::thread maintenance_;
    std::mutex maintenance_mutex_;
    std::condition_variable maintenance_wake_;
};

}  // namespace bulkhead::controller
