#include "controller/services/fleet_service.hpp"

#include "controller/core/access_policy.hpp"
#include "policies/ruleset_diff.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace bulkhead::controller {

using nlohmann::json;

FleetService::FleetService(FleetOptions options, ActiveConfiguration& configuration, Transactions& transactions,
                           InventoryRepository& inventory, EnforcerRepository& enforcers,
                           CredentialRepository& credentials, QuarantineRepository& quarantines, AuditLog& audit,
                           EventBus& bus, Clock clock)
    : options_(options), configuration_(configuration), transactions_(transactions), inventory_(inventory),
      enforcers_(enforcers), credentials_(credentials), quarantines_(quarantines), audit_(audit), bus_(bus),
      clock_(std::move(clock)) {}

FleetService::~FleetService() { shutdown(); }

std::expected<void, std::string> FleetService::start() {
    auto counter = enforcers_.current_generation();
    if (!counter) {
        return std::unexpected(counter.error().message);
    }
    std::lock_guard lock(mutex_);
    generation_counter_ = *counter;
    if (auto rc = recompile_locked(true, {}); !rc) {
        return std::unexpected(rc.error().message);
    }
    // An enforcer that already holds what we just compiled keeps its generation number.
    auto statuses = enforcers_.list_enforcer_status();
    if (!statuses) {
        return std::unexpected(statuses.error().message);
    }
    for (const auto& status : *statuses) {
        desired_.adopt_generation(status.id, status.applied_hash, status.applied_generation);
        acked_hash_[status.id] = status.applied_hash;
        generation_counter_ = std::max(generation_counter_, status.applied_generation);
    }
    return {};
}

void FleetService::shutdown() {
    stopping_ = true;
    {
        std::lock_guard lock(mutex_);
    }
    changed_.notify_all();
}

std::expected<void, ServiceError> FleetService::recompile_all() {
    std::lock_guard lock(mutex_);
    return recompile_locked(true, {});
}

std::expected<void, ServiceError> FleetService::recompile(const std::set<std::string>& enforcers) {
    std::lock_guard lock(mutex_);
    return recompile_locked(false, enforcers);
}

std::optional<RulesetVersion> FleetService::desired(const std::string& enforcer) const {
    std::lock_guard lock(mutex_);
    return desired_.current(enforcer);
}

bool FleetService::acked(const std::string& enforcer, const std::string& hash) const {
    std::lock_guard lock(mutex_);
    auto it = acked_hash_.find(enforcer);
    return it != acked_hash_.end() && it->second == hash;
}

std::uint64_t FleetService::generation() const {
    std::lock_guard lock(mutex_);
    return generation_counter_;
}

std::expected<std::set<std::string>, ServiceError> FleetService::quarantined_workloads() {
    auto active = quarantines_.active_quarantines();
    if (!active) {
        return std::unexpected(service_error(ErrorKind::Unavailable, "store-unavailable",
                                     "cannot read the active quarantines: " + active.error().message));
    }
    std::set<std::string> ids;
    for (const auto& q : *active) {
        ids.insert(q.workload);
    }
    return ids;
}

std::expected<std::uint64_t, ServiceError> FleetService::next_generation_locked() {
    auto next = enforcers_.next_generation(generation_counter_ + 1);
    if (!next) {
        return std::unexpected(from_store(next.error()));
    }
    generation_counter_ = *next;
    return generation_counter_;
}

std::expected<void, ServiceError> FleetService::recompile_locked(bool everything,
                                                                  const std::set<std::string>& only_enforcers) {
    const auto compiled_ = configuration_.current();
    if (!compiled_ || !compiled_->compiler) {
        return {};
    }
    // Fail closed: without the list of quarantines a ruleset would release every contained
    // workload. Keep what the enforcers hold and report the error.
    const auto quarantined_or_error = quarantined_workloads();
    if (!quarantined_or_error) {
        spdlog::error("recompile: {}; the enforcers keep their current rulesets", quarantined_or_error.error().message);
        return std::unexpected(quarantined_or_error.error());
    }
    const auto& quarantined = *quarantined_or_error;
    std::map<std::string, ruleset::Ruleset> rulesets;
    if (everything) {
        rulesets = compiled_->compiler->compile_all(quarantined);
    } else {
        for (const auto& enforcer : only_enforcers) {
            auto compiled = compiled_->compiler->compile(enforcer, quarantined);
            if (!compiled) {
                return std::unexpected(service_error(ErrorKind::Internal, "compile-failed", compiled.error()));
            }
            rulesets.emplace(enforcer, std::move(*compiled));
        }
    }
    // The generation number is only spent when something changed.
    const std::uint64_t candidate = generation_counter_ + 1;
    auto changed = everything ? desired_.update(std::move(rulesets), candidate)
                              : desired_.update_some(std::move(rulesets), candidate);
    if (!changed.empty()) {
        // The pushed ruleset is right either way; a number that could not be stored may be
        // handed out again after a restart, which the enforcers' hash check tolerates.
        if (auto stored = next_generation_locked(); !stored) {
            generation_counter_ = candidate;
            spdlog::error("recompile: generation {} not stored: {}", candidate, stored.error().message);
        }
        for (const auto& enforcer : changed) {
            auto version = desired_.current(enforcer);
            bus_.publish("enforcer", json{{"enforcer", enforcer},
                                          {"desired_generation", version ? version->generation : 0},
                                          {"desired_hash", version ? version->hash : ""}});
        }
        changed_.notify_all();  // streams compare their enforcer's desired hash themselves
    }
    return {};
}


// -------------------------------------------------------------- enforcers -----------------

nlohmann::json FleetService::enforcer_json(const std::string& id, const std::optional<EnforcerStatus>& status) {
    json j{{"id", id}};
    {
        std::lock_guard lock(mutex_);
        auto desired = desired_.current(id);
        j["desired_generation"] = desired ? desired->generation : 0;
        j["desired_hash"] = desired ? desired->hash : "";
        j["connected"] = stream_epoch_.contains(id) && stream_epoch_.at(id) > 0;
    }
    if (status) {
        j["enrolled_at"] = optional_time(status->enrolled_at);
        j["last_heartbeat"] = optional_time(status->last_heartbeat);
        j["applied_generation"] = status->applied_generation;
        j["applied_hash"] = status->applied_hash;
        j["apply_state"] = status->apply_state;
        j["last_error"] = status->last_error;
        j["drift_repairs"] = status->drift_repairs;
        j["last_drift_at"] = optional_time(status->last_drift_at);
        j["clock_offset_ms"] = status->clock_offset_ms;
        j["version"] = status->version;
        j["hostname"] = status->hostname;
        j["in_sync"] = status->applied_hash == j["desired_hash"].get<std::string>();
        j["details"] = status->details;
    } else {
        j["enrolled_at"] = nullptr;
        j["last_heartbeat"] = nullptr;
        j["in_sync"] = false;
    }
    return j;
}

ServiceResult FleetService::list_enforcers() {
    auto definitions = inventory_.list_enforcer_definitions();
    if (!definitions) {
        return std::unexpected(from_store(definitions.error()));
    }
    auto statuses = enforcers_.list_enforcer_status();
    if (!statuses) {
        return std::unexpected(from_store(statuses.error()));
    }
    json list = json::array();
    for (const auto& d : *definitions) {
        std::optional<EnforcerStatus> status;
        for (const auto& s : *statuses) {
            if (s.id == d.id) {
                status = s;
            }
        }
        json j = enforcer_json(d.id, status);
        j["description"] = d.document.value("description", "");
        list.push_back(std::move(j));
    }
    return json{{"enforcers", list}};
}

ServiceResult FleetService::get_enforcer(const std::string& id) {
    auto definitions = inventory_.list_enforcer_definitions();
    if (!definitions) {
        return std::unexpected(from_store(definitions.error()));
    }
    auto it = std::find_if(definitions->begin(), definitions->end(), [&](const auto& d) { return d.id == id; });
    if (it == definitions->end()) {
        return std::unexpected(service_error(ErrorKind::NotFound, "not-found", "no enforcer \"" + id + "\" in the inventory"));
    }
    auto status = enforcers_.get_enforcer_status(id);
    if (!status) {
        return std::unexpected(from_store(status.error()));
    }
    json j = enforcer_json(id, *status);
    j["description"] = it->document.value("description", "");
    return j;
}

ServiceResult FleetService::create_enrollment_token(const Caller& caller, const std::string& id) {
    auto definitions = inventory_.list_enforcer_definitions();
    if (!definitions) {
        return std::unexpected(from_store(definitions.error()));
    }
    if (std::none_of(definitions->begin(), definitions->end(), [&](const auto& d) { return d.id == id; })) {
        return std::unexpected(service_error(ErrorKind::NotFound, "not-found", "no enforcer \"" + id + "\" in the inventory"));
    }
    const std::string secret = random_secret();
    EnrollmentToken token;
    token.token_sha256 = sha256_hex(secret);
    token.enforcer = id;
    token.created_at = clock_();
    token.expires_at = token.created_at + options_.enrollment_token_lifetime.count() * 1000;
    auto tx = transactions_.in_transaction([&]() -> StoreResult<void> {
        if (auto added = credentials_.add_enrollment_token(token); !added) {
            return std::unexpected(added.error());
        }
        return audit_.record(caller, "enforcer.enrollment-token", "enforcer/" + id, nullptr,
              json{{"expires_at", format_time_ms(token.expires_at)}});
    });
    if (!tx) {
        return std::unexpected(from_store(tx.error()));
    }
    return json{{"enforcer", id}, {"token", secret}, {"expires_at", format_time_ms(token.expires_at)}};
}

ServiceResult FleetService::enroll(const json& body) {
    if (auto ok = only_members(body, {"enforcer", "token", "version", "hostname"}, "an enrollment"); !ok) {
        return std::unexpected(ok.error());
    }
    auto enforcer = required_string(body, "enforcer", 128);
    if (!enforcer) {
        return std::unexpected(enforcer.error());
    }
    auto token = required_string(body, "token", 256);
    if (!token) {
        return std::unexpected(token.error());
    }
    const std::string credential = random_secret();
    ApiToken api_token;
    api_token.name = "enforcer:" + *enforcer;
    api_token.role = Role::Enforcer;
    api_token.token_sha256 = sha256_hex(credential);
    api_token.enforcer = *enforcer;
    api_token.created_at = clock_();
    auto tx = transactions_.in_transaction([&]() -> StoreResult<void> {
        if (auto redeemed = credentials_.redeem_enrollment_token(sha256_hex(*token), *enforcer, clock_(), api_token);
            !redeemed) {
            return std::unexpected(redeemed.error());
        }
        auto status = enforcers_.get_enforcer_status(*enforcer);
        if (!status) {
            return std::unexpected(status.error());
        }
        EnforcerStatus updated = status->value_or(EnforcerStatus{});
        updated.id = *enforcer;
        updated.enrolled_at = clock_();
        updated.version = string_member(body, "version").value_or("");
        updated.hostname = string_member(body, "hostname").value_or("");
        if (auto put = enforcers_.put_enforcer_status(updated); !put) {
            return std::unexpected(put.error());
        }
        return audit_.record(Caller{api_token.name, Role::Enforcer, *enforcer}, "enforcer.enroll", "enforcer/" + *enforcer, nullptr,
              json{{"version", updated.version}, {"hostname", updated.hostname}});
    });
    if (!tx) {
        if (tx.error().kind == StoreError::Kind::NotFound) {
            return std::unexpected(service_error(ErrorKind::Unauthenticated, "enrollment-refused",
                                         "the enrollment token is unknown, used, expired or for another enforcer"));
        }
        return std::unexpected(from_store(tx.error()));
    }
    return json{{"enforcer", *enforcer}, {"credential", credential}};
}



class FleetService::Stream final : public ChannelStream {
public:
    Stream(FleetService& service, std::string enforcer, std::uint64_t epoch, std::uint64_t generation,
           std::string hash)
        : service_(service), enforcer_(std::move(enforcer)), epoch_(epoch), sent_generation_(generation),
          sent_hash_(std::move(hash)) {}

    ~Stream() override {
        std::lock_guard lock(service_.mutex_);
        auto it = service_.stream_epoch_.find(enforcer_);
        if (it != service_.stream_epoch_.end() && it->second == epoch_) {
            service_.stream_epoch_.erase(it);
        }
    }

    std::optional<std::string> next_line() override {
        std::unique_lock lock(service_.mutex_);
        if (!hello_sent_) {
            hello_sent_ = true;
            auto desired = service_.desired_.current(enforcer_);
            return json{{"type", "hello"},
                        {"controller_time_ms", service_.clock_()},
                        {"heartbeat_interval_ms", service_.options_.heartbeat_interval.count()},
                        {"desired_generation", desired ? desired->generation : 0}}
                       .dump() + "\n";
        }
        const auto deadline = std::chrono::steady_clock::now() + service_.options_.heartbeat_interval;
        while (true) {
            if (service_.stopping_ || service_.stream_epoch_[enforcer_] != epoch_) {
                return std::nullopt;
            }
            auto desired = service_.desired_.current(enforcer_);
            if (desired && (desired->hash != sent_hash_ || desired->generation != sent_generation_)) {
                return update_line(*desired);
            }
            if (service_.changed_.wait_until(lock, deadline) == std::cv_status::timeout) {
                return json{{"type", "heartbeat"}, {"controller_time_ms", service_.clock_()}}.dump() + "\n";
            }
        }
    }

private:
    // Caller holds the service mutex.
    std::string update_line(const RulesetVersion& desired) {
        json message;
        auto base = service_.desired_.find(enforcer_, sent_generation_, sent_hash_);
        if (base && base->ruleset) {
            auto diff = ruleset::diff_rulesets(*base->ruleset, *desired.ruleset);
            message = json{{"type", "diff"},
                           {"base_generation", base->generation},
                           {"base_hash", base->hash},
                           {"generation", desired.generation},
                           {"hash", desired.hash},
                           {"diff", ruleset::diff_to_wire(diff, *base->ruleset, *desired.ruleset)}};
        } else {
            message = json{{"type", "ruleset"},
                           {"generation", desired.generation},
                           {"hash", desired.hash},
                           {"ruleset", ruleset::to_json(*desired.ruleset)}};
        }
        sent_generation_ = desired.generation;
        sent_hash_ = desired.hash;
        return message.dump() + "\n";
    }

    FleetService& service_;
    std::string enforcer_;
    std::uint64_t epoch_;
    std::uint64_t sent_generation_;
    std::string sent_hash_;
    bool hello_sent_ = false;
};

std::expected<std::unique_ptr<ChannelStream>, ServiceError> FleetService::open_channel(
    const Caller& caller, const std::string& id, std::uint64_t generation, const std::string& hash) {
    if (auto own = check_own_channel(caller, id); !own) {
        return std::unexpected(own.error());
    }
    const std::uint64_t epoch = ++epochs_;
    {
        std::lock_guard lock(mutex_);
        stream_epoch_[id] = epoch;  // an older stream of this enforcer ends at its next wake-up
    }
    changed_.notify_all();
    bus_.publish("enforcer", json{{"enforcer", id}, {"connected", true}});
    return std::make_unique<Stream>(*this, id, epoch, generation, hash);
}

ServiceResult FleetService::report_status(const Caller& caller, const std::string& id, const json& body) {
    if (auto own = check_own_channel(caller, id); !own) {
        return std::unexpected(own.error());
    }
    if (!body.is_object()) {
        return std::unexpected(service_error(ErrorKind::BadRequest, "wrong-type", "a status must be a JSON object", json{{"pointer", ""}}));
    }
    // Known members must have their documented types (docs/control-channel.md); the rest
    // (metrics, spool, nflog counters) is kept as reported.
    static const std::map<std::string, json::value_t> expected_types{
        {"generation", json::value_t::number_unsigned}, {"hash", json::value_t::string},
        {"state", json::value_t::string},               {"error", json::value_t::string},
        {"applied_at_ms", json::value_t::number_unsigned}, {"enforcer_time_ms", json::value_t::number_unsigned},
        {"version", json::value_t::string},             {"drift_repairs", json::value_t::number_unsigned},
        {"last_drift_at_ms", json::value_t::number_unsigned}, {"elements", json::value_t::number_unsigned}};
    for (const char* key : {"rtt_ms", "apply_ms"}) {  // measured durations: fractions allowed
        if (const json* v = member(body, key); v != nullptr && !v->is_null() && !(v->is_number() && v->get<double>() >= 0)) {
            return std::unexpected(service_error(ErrorKind::BadRequest, "wrong-type", "\"" + std::string(key) + "\" must be a non-negative number",
                                         json{{"pointer", "/" + std::string(key)}}));
        }
    }
    for (const auto& [key, type] : expected_types) {
        const json* v = member(body, key);
        if (v != nullptr && !v->is_null() && v->type() != type &&
            !(type == json::value_t::number_unsigned && v->is_number_integer() && v->get<std::int64_t>() >= 0)) {
            return std::unexpected(service_error(ErrorKind::BadRequest, "wrong-type",
                                         "\"" + key + "\" must be " +
                                             (type == json::value_t::string ? "a string" : "a non-negative integer"),
                                         json{{"pointer", "/" + key}}));
        }
    }
    if (auto state = string_member(body, "state"); state && *state != "applied" && *state != "failed") {
        return std::unexpected(service_error(ErrorKind::BadRequest, "invalid-value", "\"state\" must be applied or failed", json{{"pointer", "/state"}}));
    }
    const TimeMs now = clock_();
    auto current = enforcers_.get_enforcer_status(id);
    if (!current) {
        return std::unexpected(from_store(current.error()));
    }
    EnforcerStatus status = current->value_or(EnforcerStatus{});
    status.id = id;
    status.last_heartbeat = now;
    if (const json* g = member(body, "generation"); g != nullptr && g->is_number_unsigned()) {
        status.applied_generation = g->get<std::uint64_t>();
    }
    if (auto hash = string_member(body, "hash")) {
        status.applied_hash = *hash;
    }
    status.apply_state = string_member(body, "state").value_or(status.apply_state);
    status.last_error = string_member(body, "error").value_or("");
    if (const json* d = member(body, "drift_repairs"); d != nullptr && d->is_number_unsigned()) {
        status.drift_repairs = d->get<std::uint64_t>();
    }
    if (const json* d = member(body, "last_drift_at_ms"); d != nullptr && d->is_number_integer() && d->get<TimeMs>() > 0) {
        status.last_drift_at = d->get<TimeMs>();
    }
    if (const json* t = member(body, "enforcer_time_ms"); t != nullptr && t->is_number_integer()) {
        const json* rtt_value = member(body, "rtt_ms");
        const auto rtt = rtt_value != nullptr && rtt_value->is_number() ? static_cast<std::int64_t>(rtt_value->get<double>()) : 0;
        status.clock_offset_ms = t->get<std::int64_t>() + rtt / 2 - now;
    }
    status.version = string_member(body, "version").value_or(status.version);
    status.details = body;
    if (auto put = enforcers_.put_enforcer_status(status); !put) {
        return std::unexpected(from_store(put.error()));
    }
    bool acked_change = false;
    {
        std::lock_guard lock(mutex_);
        auto& acked = acked_hash_[id];
        acked_change = acked != status.applied_hash;
        acked = status.applied_hash;
    }
    changed_.notify_all();
    if (acked_change || status.apply_state == "failed") {
        bus_.publish("enforcer", enforcer_json(id, status));
    }
    return json{{"controller_time_ms", now}};
}


bool FleetService::wait_for_ack(const std::string& enforcer, const std::string& hash,
                                     std::chrono::milliseconds wait) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, wait, [&] {
        return stopping_ || (acked_hash_.contains(enforcer) && acked_hash_.at(enforcer) == hash);
    }) && !stopping_;
}


}  // namespace bulkhead::controller
