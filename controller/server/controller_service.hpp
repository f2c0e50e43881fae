// ControllerService: what the controller does, independent of HTTP. Each API call maps to
// one method that validates its input, changes the store in one transaction together with
// its audit entry, recompiles what the change touches and wakes the enforcers' channels.
// Results are JSON values or ApiErrors carrying the HTTP status, so the HTTP layer stays a
// table of routes and client mistakes are 4xx by construction.
#pragma once

#include "controller/analyzer/analyzer.hpp"
#include "controller/core/access_policy.hpp"
#include "controller/core/desired_state.hpp"
#include "controller/server/event_bus.hpp"
#include "controller/server/event_sequencer.hpp"
#include "controller/server/webhook.hpp"
#include "controller/store/store.hpp"
#include "policies/policy_model.hpp"
#include "policies/ruleset_compiler.hpp"

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <expected>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

namespace bulkhead::controller {

struct ApiError {
    int status = 400;
    std::string code;      // machine-readable: "invalid-json", "not-found", "ambiguous", ...
    std::string message;   // for people
    nlohmann::json details = nullptr;  // diagnostics with JSON pointers, candidates, ...
};

using ApiResult = std::expected<nlohmann::json, ApiError>;

// Who is calling, as authenticated from the bearer token.
struct Caller {
    std::string name;
    Role role = Role::Soc;
    std::string enforcer;  // role Enforcer: the id the credential speaks for
};

// Quarantines travel inside results in their stored form (times in ms).
void to_json(nlohmann::json& j, const Quarantine& q);
void from_json(const nlohmann::json& j, Quarantine& q);

struct ServiceOptions {
    std::chrono::milliseconds heartbeat_interval{5000};
    std::size_t max_events_per_batch = 5000;
    std::chrono::seconds enrollment_token_lifetime{3600};
    std::string version = "0.4.0";
    // Detector thresholds and windows (controller/analyzer/README.md); the active policy's
    // "response" section adds its own incident rule and decides automatic quarantine.
    analyzer::AnalyzerConfig analyzer;
    WebhookOptions webhooks;
    // The analyzer's state is checkpointed into the store this often (and at shutdown);
    // after a restart the events stored after the checkpoint are analysed again.
    std::chrono::milliseconds analysis_checkpoint_interval{30000};
    // Without a usable checkpoint (first start, or one from an incompatible version), the
    // analyzer is rebuilt from the events of this period before the newest stored event.
    std::chrono::milliseconds analysis_replay_horizon{2 * 3600 * 1000};
};

// One enforcer's open channel stream: the HTTP layer pulls lines from it until it ends.
class ChannelStream {
public:
    virtual ~ChannelStream() = default;
    // Blocks until there is something to send (a ruleset, a diff or a heartbeat) and
    // returns the NDJSON line; nothing when the stream must end (replaced by a newer
    // stream of the same enforcer, or shutdown).
    virtual std::optional<std::string> next_line() = 0;
};

class ControllerService {
public:
    using Clock = std::function<TimeMs()>;

    ControllerService(std::shared_ptr<Store> store, ServiceOptions options, Clock clock);
    ~ControllerService();
    ControllerService(const ControllerService&) = delete;
    ControllerService& operator=(const ControllerService&) = delete;

    // Loads the active policy and inventory, compiles, seeds generations from what the
    // enforcers last acked. Errors only when the store is unusable.
    std::expected<void, std::string> start();
    // Ends every channel and dashboard stream (so server threads return).
    void shutdown();

    // Bearer tokens: the bootstrap file's tokens are stored (hashed) at start-up.
    std::expected<void, std::string> add_bootstrap_token(const std::string& name, Role role,
                                                         const std::string& token);
    std::optional<Caller> authenticate(std::string_view bearer_token);

    EventBus& bus() { return bus_; }
    const ServiceOptions& options() const { return options_; }

    ApiResult health();

    // Policies.
    ApiResult validate_policy(const nlohmann::json& document);
    ApiResult upload_policy(const Caller& caller, const nlohmann::json& body);
    ApiResult list_policies(std::size_t limit);
    ApiResult get_policy(std::int64_t id);
    ApiResult active_policy();
    ApiResult diff_policy(std::int64_t id);
    ApiResult what_if(std::int64_t id, std::int64_t from_ns, std::int64_t to_ns, std::size_t limit);
    ApiResult activate_policy(const Caller& caller, std::int64_t id);
    ApiResult rollback_policy(const Caller& caller);

    // Inventory.
    ApiResult get_inventory();
    ApiResult replace_inventory(const Caller& caller, const nlohmann::json& document);
    ApiResult list_workloads();
    ApiResult get_workload(const std::string& id);
    ApiResult put_workload(const Caller& caller, const std::string& id, const nlohmann::json& document);
    ApiResult bulk_workloads(const Caller& caller, const nlohmann::json& body);
    ApiResult delete_workload(const Caller& caller, const std::string& id);
    ApiResult list_vpn_sessions(std::optional<TimeMs> active_at, std::size_t limit);
    ApiResult add_vpn_session(const Caller& caller, const nlohmann::json& body);
    ApiResult end_vpn_session(const Caller& caller, std::int64_t id, const nlohmann::json& body);

    // Enforcers and the control channel.
    ApiResult list_enforcers();
    ApiResult get_enforcer(const std::string& id);
    ApiResult create_enrollment_token(const Caller& caller, const std::string& id);
    ApiResult enroll(const nlohmann::json& body);
    std::expected<std::unique_ptr<ChannelStream>, ApiError> open_channel(
        const Caller& caller, const std::string& id, std::uint64_t generation, const std::string& hash);
    ApiResult report_status(const Caller& caller, const std::string& id, const nlohmann::json& body);
    // The raw body: uploads are parsed by EventBatchParser, not the generic JSON reader.
    ApiResult ingest_events(const Caller& caller, const std::string& id, std::string_view body);

    // Events.
    ApiResult query_events(const EventQuery& query);
    ApiResult count_events(std::int64_t from_ns, std::int64_t to_ns, std::int64_t bucket_ns,
                           const EventQuery& filter);

    // Incidents.
    ApiResult list_incidents(const IncidentQuery& query);
    ApiResult get_incident(std::int64_t id);
    ApiResult set_incident_state(const Caller& caller, std::int64_t id, IncidentState state);
    ApiResult add_incident_note(const Caller& caller, std::int64_t id, const nlohmann::json& body);
    // The incident's scope graph (seed 002 step 3): the source's attempted targets (blocked
    // and allowed), other sources that tried the same targets, the segments involved; within
    // the incident's time span widened by `margin_seconds` on each side.
    ApiResult incident_scope(std::int64_t id, std::int64_t margin_seconds);
    // The analyzer's state: totals, memory, rate limit, webhook delivery counters.
    ApiResult analyzer_status();
    // Known scanners: exemptions by workload (optionally on one enforcer) or by segment, each
    // with an expiry (at most 90 days) and a reason; audited. They join the configuration
    // file's and apply from the next drop on.
    ApiResult list_exemptions();
    ApiResult add_exemption(const Caller& caller, const nlohmann::json& body);
    ApiResult delete_exemption(const Caller& caller, std::int64_t id);

    // Quarantine. `wait` > 0: answer once the enforcer acked the change or the wait ended
    // (the answer says which).
    ApiResult create_quarantine(const Caller& caller, const nlohmann::json& body,
                                std::chrono::milliseconds wait);
    ApiResult list_quarantines();
    ApiResult get_quarantine(const std::string& workload);
    ApiResult release_quarantine(const Caller& caller, const std::string& workload,
                                 std::chrono::milliseconds wait);

    ApiResult query_audit(const AuditQuery& query);

private:
    struct Compiled;  // the active policy + inventory, resolved once
    class Stream;

    std::expected<void, ApiError> recompile_locked(bool everything,
                                                   const std::set<std::string>& only_enforcers);
    std::expected<std::shared_ptr<const Compiled>, ApiError> build_compiled(
        const std::optional<PolicyRevision>& revision);
    // The revision compiled against the current inventory, and the active state beside it.
    std::expected<std::pair<std::shared_ptr<const Compiled>, std::shared_ptr<const Compiled>>, ApiError>
    draft_and_active(std::int64_t id);
    // After an inventory change: re-resolve the active policy and recompile every enforcer.
    std::expected<void, ApiError> reload_inventory_locked();
    std::expected<policy::Inventory, ApiError> load_inventory();
    std::expected<nlohmann::json, ApiError> inventory_document();
    std::expected<void, ApiError> check_inventory_against_policy(const nlohmann::json& inventory);
    // Fails when the store cannot say what is quarantined: callers then keep what is in force.
    std::expected<std::set<std::string>, ApiError> quarantined_workloads();
    std::expected<std::uint64_t, ApiError> next_generation_locked();
    bool wait_for_ack(const std::string& enforcer, const std::string& hash,
                      std::chrono::milliseconds wait);
    nlohmann::json quarantine_json(const Quarantine& quarantine);
    nlohmann::json enforcer_json(const std::string& id, const std::optional<EnforcerStatus>& status);
    // Appends to the audit log; inside Store::in_transaction a failure rolls the change back.
    StoreResult<void> audit(const Caller& caller, std::string action, std::string target,
                            nlohmann::json before, nlohmann::json after);
    struct Analysis;        // the analyzer engine and what ties it to stored incidents
    struct PendingFinding;  // a finding taken out of the engine, to be stored and acted on
    // Feeds newly stored drops to the analyzer (event order per batch) and acts on findings.
    void analyse(const std::vector<StoredEvent>& fresh, TimeMs now);
    void handle_finding(PendingFinding& pending);
    // Restores the analyzer from its checkpoint and analyses what was stored after it.
    std::expected<void, std::string> restore_analysis();
    // Saves the analyzer's state with the id of the last event it has seen.
    void checkpoint_analysis();
    void maintenance_loop();  // checkpoints and stale sequence gaps, on a timer
    void apply_policy_to_analysis(const std::shared_ptr<const Compiled>& compiled);
    void reapply_analysis();  // the active policy again, after the exemptions changed
    void rearm_analysis(std::int64_t stored_incident_id);
    std::expected<nlohmann::json, ApiError> quarantine_locked(const std::string& workload,
                                                              const std::string& reason,
                                                              const std::string& actor,
                                                              const std::string& role, bool automatic,
                                                              std::optional<std::int64_t> incident,
                                                              const nlohmann::json& incident_view = nullptr);

    std::shared_ptr<Store> store_;
    ServiceOptions options_;
    Clock clock_;
    EventBus bus_;

    // Guards everything below: compiled state, desired rulesets, detector, channels.
    mutable std::mutex mutex_;
    std::condition_variable changed_;  // desired ruleset changed, an ack arrived, or shutdown
    std::shared_ptr<const Compiled> compiled_;
    DesiredState desired_;
    std::uint64_t generation_counter_ = 0;
    std::unique_ptr<Analysis> analysis_;  // guarded by analysis_mutex_
    std::mutex analysis_mutex_;           // the engine: one batch at a time, in order
    std::mutex incident_mutex_;           // stored incidents: one finding at a time
    WebhookOutbox outbox_;                       // webhook rows, written inside transactions
    std::unique_ptr<WebhookDelivery> delivery_;  // sends them from the store
    std::unique_ptr<EventSequencer> sequencer_;  // stored events to the analyzer, in id order
    std::atomic<std::int64_t> analysed_through_{0};  // last event id the analyzer has seen
    std::atomic<std::uint64_t> analysis_store_errors_{0};
    std::thread maintenance_;
    std::mutex maintenance_mutex_;
    std::condition_variable maintenance_wake_;
    std::map<std::string, std::uint64_t> stream_epoch_;  // newest stream per enforcer
    std::map<std::string, std::string> acked_hash_;      // last hash each enforcer acked
    std::atomic<bool> stopping_{false};
};

// 32 random bytes, hex: enrollment tokens and credentials.
std::string random_secret();

}  // namespace bulkhead::controller
