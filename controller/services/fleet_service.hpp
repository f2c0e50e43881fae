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
#include "controller/services/channel_hub.hpp"
#include "controller/services/enforcer_status_book.hpp"
#include "controller/services/event_bus.hpp"
#include "controller/services/fleet_figures.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

namespace bulkhead::controller {

struct FleetOptions {
    std::chrono::milliseconds heartbeat_interval{5000};
    // How often reported statuses (acks, heartbeats) are written to the store in one batch.
    std::chrono::milliseconds status_flush_interval{1000};
    // Threads that compile and hash a fleet-wide change (a policy activation, an inventory
    // change); 0 is taken as 1.
    std::size_t compile_threads = std::max(1u, std::thread::hardware_concurrency());
    std::chrono::seconds enrollment_token_lifetime{3600};
};

class FleetService final : public DesiredVersions {
  public:
    FleetService(FleetOptions options, ActiveConfiguration& configuration, Transactions& transactions,
                 InventoryRepository& inventory, EnforcerRepository& enforcers, CredentialRepository& credentials,
                 QuarantineRepository& quarantines, AuditLog& audit, EventBus& bus, Clock clock);
    ~FleetService() override;
    FleetService(const FleetService&) = delete;
    FleetService& operator=(const FleetService&) = delete;

    // Compiles every enforcer, then adopts the generations enforcers already hold (a
    // restarted controller that compiles what an enforcer has does not renumber it).
    std::expected<void, std::string> start();
    // Ends every channel stream (so server threads return), wakes every waiter and writes
    // the statuses not yet written.
    void shutdown();

    // Recompiles every enforcer (a new configuration) or some (a quarantine touches one).
    std::expected<void, ServiceError> recompile_all();
    std::expected<void, ServiceError> recompile(const std::set<std::string>& enforcers);
    // The workloads quarantined now; an error when the store cannot say.
    std::expected<std::set<std::string>, ServiceError> quarantined_workloads();

    ServiceResult list_enforcers();
    ServiceResult get_enforcer(const std::string& id);
    // The VM ports the enforcers reported last (their status's "ports"), each with its
    // enforcer; filtered by state ("bound", "unidentified") and enforcer when given.
    ServiceResult list_ports(const std::optional<std::string>& state, const std::optional<std::string>& enforcer);
    ServiceResult create_enrollment_token(const Caller& caller, const std::string& id);
    ServiceResult enroll(const nlohmann::json& body);
    std::expected<std::unique_ptr<ChannelStream>, ServiceError> open_channel(const Caller& caller, const std::string& id,
                                                                             std::uint64_t generation,
                                                                             const std::string& hash,
                                                                             int hash_format = ruleset::ruleset_hash_format);
    ServiceResult report_status(const Caller& caller, const std::string& id, const nlohmann::json& body);

    // The enforcer's desired version now, and whether it acked it.
    std::optional<RulesetVersion> desired(const std::string& enforcer) const;
    // DesiredVersions, for the channel streams.
    std::optional<RulesetVersion> current(const std::string& enforcer) const override;
    std::optional<RulesetVersion> find(const std::string& enforcer, std::uint64_t generation,
                                       const std::string& hash) const override;
    std::optional<RulesetVersion> find_format1(const std::string& enforcer, std::uint64_t generation,
                                               const std::string& format1_hash) const override;
    bool acked(const std::string& enforcer, const std::string& hash) const;
    // When the channel handed `generation` (or a later one) to `enforcer` (ChannelHub::pushed_at).
    std::optional<std::int64_t> pushed_at(const std::string& enforcer, std::uint64_t generation) const {
        return hub_.pushed_at(enforcer, generation);
    }
    // Waits until `enforcer` acked `hash` (true) or `wait` ended or shutdown (false).
    bool wait_for_ack(const std::string& enforcer, const std::string& hash, std::chrono::milliseconds wait);
    std::uint64_t generation() const;

    struct ChannelFigures {
        std::size_t open_streams = 0;
        std::size_t statuses_pending = 0;  // reported, not yet written
        ChannelHub::DiffCacheStats diff_cache;
    };
    ChannelFigures channel_figures() const;
    // The enforcers' last reports as counts and per-enforcer figures, from memory only
    // (the metrics page; no store read).
    FleetFigures fleet_figures() const;

  private:
    std::expected<void, ServiceError> recompile_locked(bool everything, const std::set<std::string>& only);
    std::expected<std::map<std::string, DesiredState::HashedRuleset>, ServiceError> compile_and_hash(
        const ruleset::RulesetCompiler& compiler, const std::vector<std::string>& enforcers,
        const std::set<std::string>& quarantined) const;
    // Makes sure `generation` is below the ceiling the store holds, reserving the next block
    // of numbers when it is not.
    std::expected<void, ServiceError> reserve_generation_locked(std::uint64_t generation);
    nlohmann::json enforcer_json(const std::string& id, const std::optional<EnforcerStatus>& status);
    void flush_loop();

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

    // Guards the desired state and the generation counter (not the streams: ChannelHub).
    mutable std::mutex mutex_;
    // Guards desired_ alone, inside mutex_ where both are taken: the channel streams read
    // versions without waiting for a recompile's store writes.
    mutable std::mutex desired_mutex_;
    DesiredState desired_;
    std::uint64_t generation_counter_ = 0;
    // The store holds the highest number this controller may hand out; numbers up to it are
    // spent from memory, so a quarantine's recompile does not wait for a commit (a restart
    // continues above the ceiling and skips what was not spent).
    std::uint64_t generation_reserved_ = 0;

    EnforcerStatusBook statuses_;
    ChannelHub hub_;

    std::mutex flush_mutex_;
    std::condition_variable flush_wake_;
    bool stopping_ = false;  // guarded by flush_mutex_
    std::thread flusher_;
};

}  // namespace bulkhead::controller
