// FleetService: owns the enforcers' side of the controller: what each enforcer should have
// in force (desired rulesets numbered by generation), what each last acked, enrollment, and
// the control channel that pushes changes to them.
//
// Rulesets are compiled from the active configuration and the stored quarantines. Reading
// the quarantines is part of every compile; when that read fails the compile is abandoned and
// the enforcers keep what they have (fail closed: a failed read never removes a quarantine).
#pragma once

#include "controller/core/desired_state.hpp"
#include "controller/services/active_configuration.hpp"
#include "controller/services/audit_log.hpp"
#include "controller/services/event_bus.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>

namespace bulkhead::controller {

struct FleetOptions {
    std::chrono::milliseconds heartbeat_interval{5000};
    std::chrono::seconds enrollment_token_lifetime{3600};
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

class FleetService {
  public:
    FleetService(FleetOptions options, ActiveConfiguration& configuration, Transactions& transactions,
                 InventoryRepository& inventory, EnforcerRepository& enforcers, CredentialRepository& credentials,
                 QuarantineRepository& quarantines, AuditLog& audit, EventBus& bus, Clock clock);
    ~FleetService();
    FleetService(const FleetService&) = delete;
    FleetService& operator=(const FleetService&) = delete;

    // Compiles every enforcer, then adopts the generations enforcers already hold (a
    // restarted controller that compiles what an enforcer has does not renumber it).
    std::expected<void, std::string> start();
    // Ends every channel stream (so server threads return) and wakes every waiter.
    void shutdown();

    // Recompiles every enforcer (a new configuration) or some (a quarantine touches one).
    std::expected<void, ServiceError> recompile_all();
    std::expected<void, ServiceError> recompile(const std::set<std::string>& enforcers);
    // The workloads quarantined now; an error when the store cannot say.
    std::expected<std::set<std::string>, ServiceError> quarantined_workloads();

    ServiceResult list_enforcers();
    ServiceResult get_enforcer(const std::string& id);
    ServiceResult create_enrollment_token(const Caller& caller, const std::string& id);
    ServiceResult enroll(const nlohmann::json& body);
    std::expected<std::unique_ptr<ChannelStream>, ServiceError> open_channel(const Caller& caller, const std::string& id,
                                                                             std::uint64_t generation,
                                                                             const std::string& hash);
    ServiceResult report_status(const Caller& caller, const std::string& id, const nlohmann::json& body);

    // The enforcer's desired version now, and whether it acked it.
    std::optional<RulesetVersion> desired(const std::string& enforcer) const;
    bool acked(const std::string& enforcer, const std::string& hash) const;
    // Waits until `enforcer` acked `hash` (true) or `wait` ended or shutdown (false).
    bool wait_for_ack(const std::string& enforcer, const std::string& hash, std::chrono::milliseconds wait);
    std::uint64_t generation() const;

  private:
    class Stream;
    std::expected<void, ServiceError> recompile_locked(bool everything, const std::set<std::string>& only);
    std::expected<std::uint64_t, ServiceError> next_generation_locked();
    nlohmann::json enforcer_json(const std::string& id, const std::optional<EnforcerStatus>& status);

    FleetOptions options_;
    ActiveConfiguration& configuration_;
    Transactions& transactions_;
    InventoryRepository& inventory_;
    EnforcerRepository& enforcers_;
    CredentialRepository& credentials_;
    QuarantineRepository& quarantines_;
    AuditLog& audit_;
    EventBus& bus_;
    Clock clock_;

    // Guards everything below. A stream waits on `changed_` for its own enforcer's change.
    mutable std::mutex mutex_;
    std::condition_variable changed_;  // desired ruleset changed, an ack arrived, or shutdown
    DesiredState desired_;
    std::uint64_t generation_counter_ = 0;
    std::map<std::string, std::uint64_t> stream_epoch_;  // newest stream per enforcer
    std::map<std::string, std::string> acked_hash_;      // last hash each enforcer acked
    std::atomic<std::uint64_t> epochs_{0};
    std::atomic<bool> stopping_{false};
};

}  // namespace bulkhead::controller
