#include "controller/services/fleet_service.hpp"

#include "controller/core/access_policy.hpp"
#include "policies/ruleset_diff.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <thread>

namespace bulkhead::controller {

using nlohmann::json;

FleetService::FleetService(FleetOptions options, ActiveConfiguration& configuration, Transactions& transactions,
                           InventoryRepository& inventory, EnforcerRepository& enforcers,
                           CredentialRepository& credentials, QuarantineRepository& quarantines, AuditLog& audit,
                           EventBus& bus, Clock clock)
    : options_(options), configuration_(configuration), transactions_(transactions), inventory_(inventory),
      enforcers_(enforcers), credentials_(credentials), quarantines_(quarantines), audit_(audit), bus_(bus),
      clock_(std::move(clock)), statuses_(transactions, enforcers), hub_(*this, options.heartbeat_interval, clock_) {}

FleetService::~FleetService() { shutdown(); }

std::expected<void, std::string> FleetService::start() {
    auto counter = enforcers_.current_generation();
    if (!counter) {
        return std::unexpected(counter.error().message);
    }
    auto statuses = statuses_.load();
    if (!statuses) {
        return std::unexpected(statuses.error().message);
    }
    {
        std::lock_guard lock(mutex_);
        generation_counter_ = *counter;
        generation_reserved_ = *counter;
        if (auto rc = recompile_locked(true, {}); !rc) {
            return std::unexpected(rc.error().message);
        }
        // An enforcer that already holds what we just compiled keeps its generation number.
        for (const auto& status : *statuses) {
            std::lock_guard versions(desired_mutex_);
            desired_.adopt_generation(status.id, status.applied_hash, status.applied_generation);
            generation_counter_ = std::max(generation_counter_, status.applied_generation);
        }
    }
    flusher_ = std::thread([this] { flush_loop(); });
    return {};
}

void FleetService::shutdown() {
    {
        std::lock_guard lock(flush_mutex_);
        stopping_ = true;
    }
    flush_wake_.notify_all();
    if (flusher_.joinable()) {
        flusher_.join();
    }
    hub_.shutdown();
    statuses_.close();
    if (auto flushed = statuses_.flush(); !flushed) {
        spdlog::error("fleet: {} enforcer statuses not written at shutdown: {}", statuses_.pending(),
                      flushed.error().message);
    }
}

void FleetService::flush_loop() {
    std::unique_lock lock(flush_mutex_);
    bool failing = false;
    while (!stopping_) {
        flush_wake_.wait_for(lock, options_.status_flush_interval, [&] { return stopping_; });
        if (stopping_) {
            break;
        }
        lock.unlock();
        auto flushed = statuses_.flush();
        if (!flushed && !failing) {
            spdlog::error("fleet: writing enforcer statuses failed (kept in memory, retried): {}", flushed.error().message);
        } else if (flushed && failing) {
            spdlog::info("fleet: enforcer statuses written again");
        }
        failing = !flushed;
        lock.lock();
    }
}

FleetService::ChannelFigures FleetService::channel_figures() const {
    return ChannelFigures{hub_.open_streams(), statuses_.pending(), hub_.diff_cache_stats()};
}

FleetFigures FleetService::fleet_figures() const {
    FleetFigures figures;
    const auto statuses = statuses_.in_memory();
    figures.enforcers.reserve(statuses.size());
    for (const auto& status : statuses) {
        std::string desired_hash;
        {
            std::lock_guard lock(desired_mutex_);
            if (auto desired = desired_.current(status.id)) {
                desired_hash = desired->hash;
            }
        }
        figures.enforcers.push_back(enforcer_figures(status, desired_hash, hub_.connected(status.id)));
    }
    figures.states = count_enforcer_states(figures.enforcers);
    return figures;
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
    std::lock_guard lock(desired_mutex_);
    return desired_.current(enforcer);
}

std::optional<RulesetVersion> FleetService::current(const std::string& enforcer) const { return desired(enforcer); }

std::optional<RulesetVersion> FleetService::find(const std::string& enforcer, std::uint64_t generation,
                                                 const std::string& hash) const {
    std::lock_guard lock(desired_mutex_);
    return desired_.find(enforcer, generation, hash);
}

std::optional<RulesetVersion> FleetService::find_format1(const std::string& enforcer, std::uint64_t generation,
                                                         const std::string& format1_hash) const {
    std::lock_guard lock(desired_mutex_);
    return desired_.find_format1(enforcer, generation, format1_hash);
}

bool FleetService::acked(const std::string& enforcer, const std::string& hash) const {
    return statuses_.acked(enforcer, hash);
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

std::expected<void, ServiceError> FleetService::reserve_generation_locked(std::uint64_t generation) {
    // 64 numbers per commit: a busy minute of quarantines costs a handful of writes.
    constexpr std::uint64_t block = 64;
    if (generation <= generation_reserved_) {
        return {};
    }
    auto ceiling = enforcers_.next_generation(generation + block - 1);
    if (!ceiling) {
        return std::unexpected(from_store(ceiling.error()));
    }
    generation_reserved_ = *ceiling;
    return {};
}

std::expected<std::map<std::string, DesiredState::HashedRuleset>, ServiceError> FleetService::compile_and_hash(
    const ruleset::RulesetCompiler& compiler, const std::vector<std::string>& enforcers,
    const std::set<std::string>& quarantined) const {
    // Compiling and hashing one enforcer reads only the compiler and the shared element
    // lists (whose caches lock themselves), so a fleet-wide change runs on every core; one
    // enforcer (a quarantine) stays on the caller's thread.
    const std::size_t workers =
        std::min<std::size_t>(enforcers.size(), std::clamp<std::size_t>(options_.compile_threads, 1, 64));
    std::vector<std::map<std::string, DesiredState::HashedRuleset>> parts(std::max<std::size_t>(workers, 1));
    std::vector<std::string> errors(parts.size());
    std::atomic<std::size_t> next{0};
    auto work = [&](std::size_t part) {
        for (std::size_t i = next++; i < enforcers.size(); i = next++) {
            auto compiled = compiler.compile(enforcers[i], quarantined);
            if (!compiled) {
                errors[part] = enforcers[i] + ": " + compiled.error();
                return;
            }
            std::string hash = ruleset::ruleset_hash(*compiled);
            parts[part].emplace(enforcers[i], DesiredState::HashedRuleset{std::move(*compiled), std::move(hash)});
        }
    };
    if (workers <= 1) {
        work(0);
    } else {
        std::vector<std::jthread> pool;
        for (std::size_t part = 1; part < workers; ++part) {
            pool.emplace_back(work, part);
        }
        work(0);
    }
    std::map<std::string, DesiredState::HashedRuleset> all;
    for (std::size_t part = 0; part < parts.size(); ++part) {
        if (!errors[part].empty()) {
            return std::unexpected(service_error(ErrorKind::Internal, "compile-failed", errors[part]));
        }
        all.merge(parts[part]);
    }
    return all;
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
    auto some = only_enforcers;
    if (!everything) {
        // A quarantine also changes what servers arming host-mode tripwires block; a set
        // whose rulesets come out unchanged is not pushed.
        for (auto& e : compiled_->compiler->enforcers_blocking_quarantined()) {
            some.insert(std::move(e));
        }
    }
    const auto enforcers = everything ? compiled_->compiler->enforcers()
                                      : std::vector<std::string>(some.begin(), some.end());
    const auto started = std::chrono::steady_clock::now();
    auto rulesets = compile_and_hash(*compiled_->compiler, enforcers, quarantined);
    if (!rulesets) {
        return std::unexpected(rulesets.error());
    }
    const auto compile_ms = milliseconds_since(started);
    // The generation number is only spent when something changed.
    const std::uint64_t candidate = generation_counter_ + 1;
    std::vector<std::string> changed;
    {
        std::lock_guard versions(desired_mutex_);
        changed = everything ? desired_.update_hashed(std::move(*rulesets), candidate)
                             : desired_.update_some_hashed(std::move(*rulesets), candidate);
    }
    if (!changed.empty()) {
        // The streams first: they read the new versions under desired_mutex_ only, so a
        // quarantine is on its way to the enforcer while the number is stored and the
        // dashboard told (time to contain).
        hub_.changed(changed);  // wakes those enforcers' streams only
        // The pushed ruleset is right either way; a number that could not be stored may be
        // handed out again after a restart, which the enforcers' hash check tolerates.
        generation_counter_ = candidate;
        if (auto stored = reserve_generation_locked(candidate); !stored) {
            spdlog::error("recompile: generation {} not stored: {}", candidate, stored.error().message);
        }
        for (const auto& enforcer : changed) {
            auto version = desired(enforcer);
            bus_.publish("enforcer", json{{"enforcer", enforcer},
                                          {"desired_generation", version ? version->generation : 0},
                                          {"desired_hash", version ? version->hash : ""}});
        }
    }
    if (everything) {
        spdlog::info("fleet: {} enforcers compiled and hashed in {} ms, {} changed, streams woken after {} ms",
                     enforcers.size(), compile_ms, changed.size(), milliseconds_since(started));
    }
    return {};
}


// -------------------------------------------------------------- enforcers -----------------

nlohmann::json FleetService::enforcer_json(const std::string& id, const std::optional<EnforcerStatus>& status) {
    json j{{"id", id}};
    {
        std::lock_guard lock(desired_mutex_);
        auto desired = desired_.current(id);
        j["desired_generation"] = desired ? desired->generation : 0;
        j["desired_hash"] = desired ? desired->hash : "";
    }
    j["connected"] = hub_.connected(id);
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
    auto statuses = statuses_.list();
    if (!statuses) {
        return std::unexpected(from_store(statuses.error()));
    }
    std::map<std::string, const EnforcerStatus*> by_id;
    for (const auto& s : *statuses) {
        by_id[s.id] = &s;
    }
    json list = json::array();
    for (const auto& d : *definitions) {
        std::optional<EnforcerStatus> status;
        if (auto it = by_id.find(d.id); it != by_id.end()) {
            status = *it->second;
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
    auto status = statuses_.get(id);
    if (!status) {
        return std::unexpected(from_store(status.error()));
    }
    json j = enforcer_json(id, *status);
    j["description"] = it->document.value("description", "");
    return j;
}

ServiceResult FleetService::list_ports(const std::optional<std::string>& state,
                                       const std::optional<std::string>& enforcer) {
    auto statuses = statuses_.list();
    if (!statuses) {
        return std::unexpected(from_store(statuses.error()));
    }
    json ports = json::array();
    for (const auto& status : *statuses) {
        if (enforcer && status.id != *enforcer) {
            continue;
        }
        const auto reported = status.details.find("ports");
        if (reported == status.details.end() || !reported->is_array()) {
            continue;
        }
        const bool connected = hub_.connected(status.id);
        for (const auto& port : *reported) {
            if (!port.is_object() || (state && port.value("state", "") != *state)) {
                continue;
            }
            json p = port;
            p["enforcer"] = status.id;
            p["enforcer_connected"] = connected;
            p["reported_at"] = optional_time(status.last_heartbeat);
            ports.push_back(std::move(p));
        }
    }
    return json{{"ports", std::move(ports)}};
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
    EnforcerStatus enrolled;
    enrolled.id = *enforcer;
    enrolled.enrolled_at = api_token.created_at;
    enrolled.version = string_member(body, "version").value_or("");
    enrolled.hostname = string_member(body, "hostname").value_or("");
    statuses_.enrolled(enrolled);
    return json{{"enforcer", *enforcer}, {"credential", credential}};
}



std::expected<std::unique_ptr<ChannelStream>, ServiceError> FleetService::open_channel(
    const Caller& caller, const std::string& id, std::uint64_t generation, const std::string& hash, int hash_format) {
    if (auto own = check_own_channel(caller, id); !own) {
        return std::unexpected(own.error());
    }
    auto stream = hub_.open(id, generation, hash, hash_format);  // an older stream of this enforcer ends
    bus_.publish("enforcer", json{{"enforcer", id}, {"connected", true}});
    return stream;
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
        {"last_drift_at_ms", json::value_t::number_unsigned}, {"elements", json::value_t::number_unsigned},
        {"hash_format", json::value_t::number_unsigned}};
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
    if (const json* p = member(body, "ports"); p != nullptr && !p->is_null() && !p->is_array()) {
        return std::unexpected(service_error(ErrorKind::BadRequest, "wrong-type", "\"ports\" must be an array",
                                             json{{"pointer", "/ports"}}));
    }
    if (auto state = string_member(body, "state"); state && *state != "applied" && *state != "failed") {
        return std::unexpected(service_error(ErrorKind::BadRequest, "invalid-value", "\"state\" must be applied or failed", json{{"pointer", "/state"}}));
    }
    const TimeMs now = clock_();
    auto current = statuses_.get(id);
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
        const json* format = member(body, "hash_format");
        const bool format1 = format == nullptr || format->is_null() || format->get<std::uint64_t>() == 1;
        if (format1 && !hash->empty()) {
            // An enforcer of the previous release: its format-1 hash, translated to the one
            // every other part of the controller compares.
            if (auto version = find_format1(id, status.applied_generation, *hash)) {
                status.applied_hash = version->hash;
            }
        }
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
    // In memory now (acks wake their waiters), in the store with the next batch.
    const bool acked_change = statuses_.record(status);
    if (acked_change || status.apply_state == "failed") {
        bus_.publish("enforcer", enforcer_json(id, status));
    }
    return json{{"controller_time_ms", now}};
}


bool FleetService::wait_for_ack(const std::string& enforcer, const std::string& hash,
                                std::chrono::milliseconds wait) {
    return statuses_.wait_for_ack(enforcer, hash, wait);
}

}  // namespace bulkhead::controller
