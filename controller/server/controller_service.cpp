#include "controller/server/controller_service.hpp"

#include "controller/analyzer/drop_record.hpp"
#include "controller/analyzer/response_planner.hpp"
#include "controller/server/event_batch.hpp"

#include "policies/diagnostics.hpp"
#include "policies/net_address.hpp"
#include "policies/policy_evaluator.hpp"
#include "policies/policy_reader.hpp"
#include "policies/ruleset_diff.hpp"

#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <limits>
#include <unordered_map>

namespace bulkhead::controller {

using nlohmann::json;

// ---------------------------------------------------------------- helpers ----------------

// A quarantine's stored form inside results (found by ADL from nlohmann::json).
void to_json(json& j, const Quarantine& q) {
    j = json{{"id", q.id}, {"workload", q.workload}, {"reason", q.reason}, {"actor", q.actor},
             {"automatic", q.automatic}, {"incident_id", q.incident_id ? json(*q.incident_id) : json(nullptr)},
             {"created_at", q.created_at}, {"released_at", q.released_at ? json(*q.released_at) : json(nullptr)},
             {"released_by", q.released_by}};
}

void from_json(const json& j, Quarantine& q) {
    q.id = j.value("id", std::int64_t{0});
    q.workload = j.value("workload", "");
    q.reason = j.value("reason", "");
    q.actor = j.value("actor", "");
    q.automatic = j.value("automatic", false);
    if (j.contains("incident_id") && j["incident_id"].is_number_integer()) {
        q.incident_id = j["incident_id"].get<std::int64_t>();
    }
    q.created_at = j.value("created_at", TimeMs{0});
    if (j.contains("released_at") && j["released_at"].is_number_integer()) {
        q.released_at = j["released_at"].get<TimeMs>();
    }
    q.released_by = j.value("released_by", "");
}


namespace {

// Events linked to one incident as its timeline; a storm's later events are counted, not linked.
constexpr std::uint64_t kTimelineEvents = 1'000;


ApiError error(int status, std::string code, std::string message, json details = nullptr) {
    return ApiError{status, std::move(code), std::move(message), std::move(details)};
}

ApiError from_store(const StoreError& e) {
    switch (e.kind) {
    case StoreError::Kind::NotFound: return error(404, "not-found", e.message);
    case StoreError::Kind::Conflict: return error(409, "conflict", e.message);
    case StoreError::Kind::Invalid: return error(400, "invalid", e.message);
    case StoreError::Kind::Io: break;
    }
    spdlog::error("store: {}", e.message);
    return error(500, "store-error", "the controller's store failed: " + e.message);
}

ApiError invalid_document(std::string message, const policy::Diagnostics& diagnostics) {
    return error(422, "invalid-document", std::move(message),
                 json{{"errors", policy::diagnostics_to_json(diagnostics)}});
}

json optional_time(const std::optional<TimeMs>& ms) {
    return ms ? json(format_time_ms(*ms)) : json(nullptr);
}

json revision_json(const PolicyRevision& r, bool with_document) {
    json j{{"id", r.id},
           {"state", std::string(to_string(r.state))},
           {"name", r.name},
           {"author", r.author},
           {"comment", r.comment},
           {"created_at", format_time_ms(r.created_at)},
           {"activated_at", optional_time(r.activated_at)}};
    if (with_document) {
        j["document"] = r.document;
    }
    return j;
}

json event_json(const StoredEvent& e) {
    json j = e.document.is_object() ? e.document : json::object();
    j["id"] = e.id;
    j["enforcer"] = e.enforcer;
    j["enforcer_seq"] = e.enforcer_seq;
    j["received_at"] = format_time_ms(e.received_at);
    return j;
}

json incident_json(const Incident& i) {
    return json{{"id", i.id},
                {"source_workload", i.source_workload},
                {"state", std::string(to_string(i.state))},
                {"severity", i.severity},
                {"title", i.title},
                {"explanation", i.explanation},
                {"opened_at", format_time_ms(i.opened_at)},
                {"updated_at", format_time_ms(i.updated_at)},
                {"event_count", i.event_count},
                {"details", i.details}};
}

// A quarantine as the API shows it, without the enforcers' applied state.
json quarantine_record_json(const Quarantine& q) {
    return json{{"workload", q.workload},
                {"reason", q.reason},
                {"actor", q.actor},
                {"automatic", q.automatic},
                {"incident", q.incident_id ? json(*q.incident_id) : json(nullptr)},
                {"created_at", format_time_ms(q.created_at)},
                {"released_at", optional_time(q.released_at)},
                {"released_by", q.released_by}};
}

json vpn_session_json(const VpnSession& s) {
    return json{{"id", s.id},
                {"user", s.user},
                {"pool_address", s.pool_address},
                {"real_address", s.real_address},
                {"start", format_time_ms(s.start)},
                {"end", optional_time(s.end)}};
}

json audit_json(const AuditEntry& a) {
    return json{{"id", a.id},         {"at", format_time_ms(a.at)}, {"actor", a.actor},
                {"role", a.role},     {"action", a.action},         {"target", a.target},
                {"before", a.before}, {"after", a.after}};
}

const json* member(const json& object, std::string_view key) {
    if (!object.is_object()) {
        return nullptr;
    }
    auto it = object.find(key);
    return it == object.end() ? nullptr : &*it;
}

std::optional<std::string> string_member(const json& object, std::string_view key) {
    const json* v = member(object, key);
    if (v == nullptr || !v->is_string()) {
        return std::nullopt;
    }
    return v->get<std::string>();
}

// Checks that `body` is an object holding only `allowed` members: typos get a 400 naming
// the member, as everywhere else in Bulkhead.
std::expected<void, ApiError> only_members(const json& body, std::initializer_list<std::string_view> allowed,
                                           std::string_view what) {
    if (!body.is_object()) {
        return std::unexpected(error(400, "wrong-type", std::string(what) + " must be a JSON object",
                                     json{{"pointer", ""}}));
    }
    for (const auto& [key, value] : body.items()) {
        if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
            return std::unexpected(error(400, "unknown-field", "unknown member \"" + key + "\" in " + std::string(what),
                                         json{{"pointer", "/" + key}}));
        }
    }
    return {};
}

std::expected<std::string, ApiError> required_string(const json& body, std::string_view key,
                                                     std::size_t max_length = 1024) {
    const json* v = member(body, key);
    if (v == nullptr) {
        return std::unexpected(error(400, "missing-field", "required member \"" + std::string(key) + "\" is missing",
                                     json{{"pointer", ""}}));
    }
    if (!v->is_string() || v->get_ref<const std::string&>().empty()) {
        return std::unexpected(error(400, "wrong-type", "\"" + std::string(key) + "\" must be a non-empty string",
                                     json{{"pointer", "/" + std::string(key)}}));
    }
    if (v->get_ref<const std::string&>().size() > max_length) {
        return std::unexpected(error(400, "invalid-value",
                                     "\"" + std::string(key) + "\" is longer than " + std::to_string(max_length),
                                     json{{"pointer", "/" + std::string(key)}}));
    }
    return v->get<std::string>();
}

std::expected<std::optional<std::string>, ApiError> optional_string(const json& body, std::string_view key,
                                                                    std::size_t max_length = 4096) {
    const json* v = member(body, key);
    if (v == nullptr || v->is_null()) {
        return std::optional<std::string>{};
    }
    if (!v->is_string()) {
        return std::unexpected(error(400, "wrong-type", "\"" + std::string(key) + "\" must be a string",
                                     json{{"pointer", "/" + std::string(key)}}));
    }
    if (v->get_ref<const std::string&>().size() > max_length) {
        return std::unexpected(error(400, "invalid-value",
                                     "\"" + std::string(key) + "\" is longer than " + std::to_string(max_length),
                                     json{{"pointer", "/" + std::string(key)}}));
    }
    return std::optional<std::string>{v->get<std::string>()};
}

std::optional<std::uint16_t> json_port(const json& event, std::string_view key) {
    const json* v = member(event, key);
    if (v != nullptr && v->is_number_unsigned() && v->get<std::uint64_t>() <= 65535) {
        return static_cast<std::uint16_t>(v->get<std::uint64_t>());
    }
    return std::nullopt;
}

std::int64_t json_int(const json& object, std::string_view key, std::int64_t fallback) {
    const json* v = member(object, key);
    if (v != nullptr && v->is_number_integer()) {
        return v->get<std::int64_t>();
    }
    return fallback;
}

}  // namespace

std::string random_secret() {
    std::array<unsigned char, 32> bytes{};
    if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
        throw std::runtime_error("RAND_bytes failed: no randomness for secrets");
    }
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    for (unsigned char b : bytes) {
        out.push_back(hex[b >> 4]);
        out.push_back(hex[b & 0xf]);
    }
    return out;
}

// ------------------------------------------------------------ compiled state --------------

struct ControllerService::Compiled {
    std::optional<PolicyRevision> revision;
    std::optional<policy::Policy> policy;
    policy::Inventory inventory;
    std::unique_ptr<ruleset::RulesetCompiler> compiler;  // null without an active policy
};

ControllerService::ControllerService(std::shared_ptr<Store> store, ServiceOptions options, Clock clock)
    : store_(std::move(store)), options_(std::move(options)), clock_(std::move(clock)), outbox_(options_.webhooks) {
    delivery_ = std::make_unique<WebhookDelivery>(options_.webhooks, *store_, clock_);
    sequencer_ = std::make_unique<EventSequencer>(
        [this](std::vector<StoredEvent>& events) {
            analyse(events, clock_());
            analysed_through_ = events.back().id;
        },
        [this](std::int64_t from, std::int64_t to) {
            std::vector<StoredEvent> found;
            EventQuery q;
            q.after_id = from - 1;
            q.through_id = to - 1;
            q.newest_first = false;
            q.limit = 10000;
            while (true) {
                auto page = store_->query_events(q);
                if (!page) {
                    spdlog::error("analysis: cannot read events {}..{} back: {}", from, to - 1, page.error().message);
                    ++analysis_store_errors_;
                    break;
                }
                for (auto& e : *page) {
                    found.push_back(std::move(e));
                }
                if (page->size() < q.limit) {
                    break;
                }
                q.after_id = found.back().id;
            }
            return found;
        },
        std::chrono::milliseconds(1000));
}

ControllerService::~ControllerService() { shutdown(); }

std::expected<nlohmann::json, ApiError> ControllerService::inventory_document() {
    auto enforcers = store_->list_enforcer_definitions();
    if (!enforcers) {
        return std::unexpected(from_store(enforcers.error()));
    }
    auto workloads = store_->list_workloads();
    if (!workloads) {
        return std::unexpected(from_store(workloads.error()));
    }
    json document{{"enforcers", json::array()}, {"workloads", json::array()}};
    for (const auto& e : *enforcers) {
        document["enforcers"].push_back(e.document);
    }
    for (const auto& w : *workloads) {
        document["workloads"].push_back(w.document);
    }
    return document;
}

std::expected<policy::Inventory, ApiError> ControllerService::load_inventory() {
    auto document = inventory_document();
    if (!document) {
        return std::unexpected(document.error());
    }
    auto inventory = policy::read_inventory(*document, "inventory");
    if (!inventory) {
        // Only validated inventories are stored, so this is the store's fault, not the caller's.
        return std::unexpected(error(500, "inventory-corrupt", "the stored inventory no longer validates",
                                     json{{"errors", policy::diagnostics_to_json(inventory.error())}}));
    }
    return *inventory;
}

std::expected<std::shared_ptr<const ControllerService::Compiled>, ApiError> ControllerService::build_compiled(
    const std::optional<PolicyRevision>& revision) {
    auto compiled = std::make_shared<Compiled>();
    auto inventory = load_inventory();
    if (!inventory) {
        return std::unexpected(inventory.error());
    }
    compiled->inventory = std::move(*inventory);
    compiled->revision = revision;
    if (revision) {
        auto policy = policy::read_policy(revision->document, "policy");
        if (!policy) {
            return std::unexpected(invalid_document("policy revision " + std::to_string(revision->id) + " does not validate",
                                                    policy.error()));
        }
        auto problems = policy::cross_check(*policy, compiled->inventory, "policy");
        if (!problems.empty()) {
            return std::unexpected(invalid_document("the policy does not fit the inventory", problems));
        }
        compiled->policy = std::move(*policy);
        compiled->compiler = std::make_unique<ruleset::RulesetCompiler>(*compiled->policy, compiled->inventory);
    }
    return std::shared_ptr<const Compiled>(std::move(compiled));
}

std::expected<std::set<std::string>, ApiError> ControllerService::quarantined_workloads() {
    auto active = store_->active_quarantines();
    if (!active) {
        return std::unexpected(error(503, "store-unavailable",
                                     "cannot read the active quarantines: " + active.error().message));
    }
    std::set<std::string> ids;
    for (const auto& q : *active) {
        ids.insert(q.workload);
    }
    return ids;
}

std::expected<std::uint64_t, ApiError> ControllerService::next_generation_locked() {
    auto next = store_->next_generation(generation_counter_ + 1);
    if (!next) {
        return std::unexpected(from_store(next.error()));
    }
    generation_counter_ = *next;
    return generation_counter_;
}

std::expected<void, ApiError> ControllerService::recompile_locked(bool everything,
                                                                  const std::set<std::string>& only_enforcers) {
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
                return std::unexpected(error(500, "compile-failed", compiled.error()));
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

std::expected<void, std::string> ControllerService::start() {
    if (auto counter = store_->current_generation(); !counter) {
        return std::unexpected(counter.error().message);
    } else {
        generation_counter_ = *counter;
    }
    auto revision = store_->active_revision();
    if (!revision) {
        return std::unexpected(revision.error().message);
    }
    auto compiled = build_compiled(*revision);
    if (!compiled) {
        return std::unexpected(compiled.error().message + (compiled.error().details.is_null()
                                                                ? std::string()
                                                                : ": " + compiled.error().details.dump()));
    }
    apply_policy_to_analysis(*compiled);
    std::lock_guard lock(mutex_);
    compiled_ = *compiled;
    if (auto rc = recompile_locked(true, {}); !rc) {
        return std::unexpected(rc.error().message);
    }
    // An enforcer that already holds what we just compiled keeps its generation number.
    if (auto statuses = store_->list_enforcer_status()) {
        for (const auto& status : *statuses) {
            desired_.adopt_generation(status.id, status.applied_hash, status.applied_generation);
            acked_hash_[status.id] = status.applied_hash;
            generation_counter_ = std::max(generation_counter_, status.applied_generation);
        }
    } else {
        return std::unexpected(statuses.error().message);
    }
    if (auto restored = restore_analysis(); !restored) {
        return std::unexpected(restored.error());
    }
    delivery_->start();
    maintenance_ = std::thread([this] { maintenance_loop(); });
    return {};
}

void ControllerService::shutdown() {
    if (stopping_.exchange(true)) {
        return;
    }
    {
        std::lock_guard lock(mutex_);
    }
    changed_.notify_all();
    bus_.close_all();
    {
        std::lock_guard lock(maintenance_mutex_);
    }
    maintenance_wake_.notify_all();
    if (maintenance_.joinable()) {
        maintenance_.join();
        // A clean stop leaves nothing to replay.
        sequencer_->drain(std::chrono::seconds(5));
        checkpoint_analysis();
    }
    delivery_->stop();
}

// ------------------------------------------------------------------ auth ------------------

std::expected<void, std::string> ControllerService::add_bootstrap_token(const std::string& name, Role role,
                                                                        const std::string& token) {
    if (token.size() < 16) {
        return std::unexpected("token of \"" + name + "\" is shorter than 16 characters");
    }
    ApiToken api_token;
    api_token.name = name;
    api_token.role = role;
    api_token.token_sha256 = sha256_hex(token);
    api_token.created_at = clock_();
    if (auto stored = store_->put_api_token(api_token); !stored) {
        return std::unexpected(stored.error().message);
    }
    return {};
}

std::optional<Caller> ControllerService::authenticate(std::string_view bearer_token) {
    if (bearer_token.empty() || bearer_token.size() > 512) {
        return std::nullopt;
    }
    auto found = store_->find_api_token(sha256_hex(bearer_token));
    if (!found || !*found) {
        return std::nullopt;
    }
    return Caller{(*found)->name, (*found)->role, (*found)->enforcer};
}

StoreResult<void> ControllerService::audit(const Caller& caller, std::string action, std::string target,
                                           json before, json after) {
    AuditEntry entry;
    entry.at = clock_();
    entry.actor = caller.name;
    entry.role = std::string(to_string(caller.role));
    entry.action = std::move(action);
    entry.target = std::move(target);
    entry.before = std::move(before);
    entry.after = std::move(after);
    auto stored = store_->append_audit(entry);
    if (!stored) {
        spdlog::error("audit: cannot record {} on {} by {}: {}", entry.action, entry.target, entry.actor,
                      stored.error().message);
        return std::unexpected(stored.error());
    }
    return {};
}

ApiResult ControllerService::health() {
    std::lock_guard lock(mutex_);
    return json{{"status", "ok"},
                {"version", options_.version},
                {"active_revision", compiled_ && compiled_->revision ? json(compiled_->revision->id) : json(nullptr)},
                {"generation", generation_counter_}};
}

// --------------------------------------------------------------- policies -----------------

ApiResult ControllerService::validate_policy(const json& document) {
    auto policy = policy::read_policy(document, "policy");
    if (!policy) {
        return std::unexpected(invalid_document("the policy is invalid", policy.error()));
    }
    auto inventory = load_inventory();
    if (!inventory) {
        return std::unexpected(inventory.error());
    }
    auto problems = policy::cross_check(*policy, *inventory, "policy");
    if (!problems.empty()) {
        return std::unexpected(invalid_document("the policy does not fit the inventory", problems));
    }
    ruleset::RulesetCompiler compiler(*policy, *inventory);
    for (const auto& enforcer : compiler.enforcers()) {
        if (auto compiled = compiler.compile(enforcer); !compiled) {
            return std::unexpected(error(422, "compile-failed", "enforcer " + enforcer + ": " + compiled.error()));
        }
    }
    return json{{"valid", true}, {"name", policy->name}, {"enforcers", compiler.enforcers()}};
}

ApiResult ControllerService::upload_policy(const Caller& caller, const json& body) {
    auto valid = validate_policy(body);
    if (!valid) {
        return valid;
    }
    PolicyRevision revision;
    revision.state = RevisionState::Draft;
    revision.name = (*valid)["name"].get<std::string>();
    revision.author = caller.name;
    revision.created_at = clock_();
    revision.document = body;
    std::optional<PolicyRevision> stored;
    auto tx = store_->in_transaction([&]() -> StoreResult<void> {
        auto added = store_->add_revision(revision);
        if (!added) {
            return std::unexpected(added.error());
        }
        stored = *added;
        return audit(caller, "policy.upload", "revision/" + std::to_string(added->id), nullptr,
              revision_json(*added, false));
    });
    if (!tx) {
        return std::unexpected(from_store(tx.error()));
    }
    return revision_json(*stored, false);
}

ApiResult ControllerService::list_policies(std::size_t limit) {
    auto revisions = store_->list_revisions(std::min<std::size_t>(limit, 1000));
    if (!revisions) {
        return std::unexpected(from_store(revisions.error()));
    }
    json list = json::array();
    for (const auto& r : *revisions) {
        list.push_back(revision_json(r, false));
    }
    return json{{"revisions", list}};
}

ApiResult ControllerService::get_policy(std::int64_t id) {
    auto revision = store_->get_revision(id);
    if (!revision) {
        return std::unexpected(from_store(revision.error()));
    }
    return revision_json(*revision, true);
}

ApiResult ControllerService::active_policy() {
    auto revision = store_->active_revision();
    if (!revision) {
        return std::unexpected(from_store(revision.error()));
    }
    if (!*revision) {
        return std::unexpected(error(404, "not-found", "no policy has been activated yet"));
    }
    return revision_json(**revision, true);
}

std::expected<std::pair<std::shared_ptr<const ControllerService::Compiled>, std::shared_ptr<const ControllerService::Compiled>>,
              ApiError>
ControllerService::draft_and_active(std::int64_t id) {
    auto revision = store_->get_revision(id);
    if (!revision) {
        return std::unexpected(from_store(revision.error()));
    }
    auto draft = build_compiled(*revision);
    if (!draft) {
        return std::unexpected(draft.error());
    }
    std::lock_guard lock(mutex_);
    return std::make_pair(*draft, compiled_);
}

ApiResult ControllerService::diff_policy(std::int64_t id) {
    auto pair = draft_and_active(id);
    if (!pair) {
        return std::unexpected(pair.error());
    }
    const auto& [draft, active] = *pair;
    const auto quarantined_or_error = quarantined_workloads();
    if (!quarantined_or_error) {
        return std::unexpected(quarantined_or_error.error());
    }
    const auto& quarantined = *quarantined_or_error;
    auto draft_rulesets = draft->compiler->compile_all(quarantined);
    std::map<std::string, ruleset::Ruleset> active_rulesets;
    if (active && active->compiler) {
        active_rulesets = active->compiler->compile_all(quarantined);
    }
    json enforcers = json::array();
    std::size_t added = 0, removed = 0, rules = 0;
    for (const auto& [enforcer, updated] : draft_rulesets) {
        ruleset::Ruleset empty;
        empty.enforcer = enforcer;
        auto it = active_rulesets.find(enforcer);
        const ruleset::Ruleset& old = it == active_rulesets.end() ? empty : it->second;
        auto diff = ruleset::diff_rulesets(old, updated);
        added += diff.elements_added();
        removed += diff.elements_removed();
        rules += diff.rules_written();
        enforcers.push_back(json{{"enforcer", enforcer},
                                 {"unchanged", diff.empty()},
                                 {"full_replace", diff.full_replace},
                                 {"elements_added", diff.elements_added()},
                                 {"elements_removed", diff.elements_removed()},
                                 {"rules_written", diff.rules_written()},
                                 {"text", ruleset::render_text_diff(diff, old, updated)}});
    }
    return json{{"revision", id},
                {"against", active && active->revision ? json(active->revision->id) : json(nullptr)},
                {"elements_added", added},
                {"elements_removed", removed},
                {"rules_written", rules},
                {"enforcers", enforcers}};
}

ApiResult ControllerService::what_if(std::int64_t id, std::int64_t from_ns, std::int64_t to_ns, std::size_t limit) {
    auto pair = draft_and_active(id);
    if (!pair) {
        return std::unexpected(pair.error());
    }
    const auto& [draft, active] = *pair;
    // Without an active policy nothing is enforced: the baseline allows everything.
    policy::Policy allow_all;
    allow_all.name = "none";
    allow_all.defaults.action = policy::DefaultAction::Allow;
    const policy::PolicyEvaluator active_evaluator(active && active->policy ? *active->policy : allow_all,
                                                   draft->inventory);
    const policy::PolicyEvaluator draft_evaluator(*draft->policy, draft->inventory);

    // Stored drops and allowed flows of the range, oldest first, up to `limit`.
    std::vector<StoredEvent> events;
    EventQuery query;
    query.from_ns = from_ns;
    query.to_ns = to_ns;
    query.newest_first = false;
    query.limit = 5000;
    bool truncated = false;
    while (events.size() < limit) {
        auto page = store_->query_events(query);
        if (!page) {
            return std::unexpected(from_store(page.error()));
        }
        for (auto& e : *page) {
            if (is_traffic_type(e.type)) {
                if (events.size() == limit) {
                    truncated = true;
                    break;
                }
                events.push_back(std::move(e));
            }
        }
        if (truncated || page->size() < query.limit) {
            break;
        }
        query.after_id = page->back().id;
    }
    std::vector<policy::Attempt> attempts;
    std::vector<std::size_t> event_of_attempt;
    std::size_t skipped = 0;
    for (std::size_t i = 0; i < events.size(); ++i) {
        const auto& e = events[i];
        auto src = policy::parse_ip_address(e.src);
        auto dst = policy::parse_ip_address(e.dst);
        // The protocol number as the enforcer decoded it, else its name (summaries and
        // other uploaders may carry only "proto_name").
        std::optional<std::uint8_t> protocol;
        if (const json* proto = member(e.document, "proto"); proto != nullptr && proto->is_number_unsigned() &&
                                                             proto->get<std::uint64_t>() <= 255) {
            protocol = static_cast<std::uint8_t>(proto->get<std::uint64_t>());
        } else if (!e.protocol.empty()) {
            protocol = policy::parse_protocol_number(e.protocol);
        }
        if (!src || !dst || !protocol) {
            ++skipped;  // e.g. a summary without a peer address
            continue;
        }
        policy::Attempt attempt;
        attempt.source.address = *src;
        attempt.destination.address = *dst;
        (e.direction == "in" ? attempt.destination : attempt.source).workload = e.workload;
        attempt.protocol = *protocol;
        if (e.dport) {
            attempt.port = *e.dport;
        } else if (auto type = json_port(e.document, "icmp_type")) {
            attempt.port = *type;
        }
        attempts.push_back(attempt);
        event_of_attempt.push_back(i);
    }
    const auto quarantined = quarantined_workloads();
    if (!quarantined) {
        return std::unexpected(quarantined.error());
    }
    const auto summary = policy::what_if(active_evaluator, draft_evaluator, attempts, *quarantined);
    json groups = json::array();
    for (const auto& g : summary.groups) {
        json sample = json::array();
        std::uint64_t weight = 0;
        for (std::size_t index : g.attempts) {
            const auto& e = events[event_of_attempt[index]];
            weight += e.count;
            if (sample.size() < 20) {
                sample.push_back(json{{"id", e.id}, {"workload", e.workload}, {"src", e.src}, {"dst", e.dst},
                                      {"protocol", e.protocol}, {"port", e.dport ? json(*e.dport) : json(nullptr)},
                                      {"type", e.type}});
            }
        }
        groups.push_back(json{{"change", std::string(policy::to_string(g.change))},
                              {"reason", std::string(policy::to_string(g.reason))},
                              {"rules", g.rules},
                              {"events", g.count},
                              {"packets", weight},
                              {"sample", sample}});
    }
    return json{{"revision", id},
                {"against", active && active->revision ? json(active->revision->id) : json(nullptr)},
                {"from_ns", from_ns},
                {"to_ns", to_ns},
                {"events", summary.total},
                {"truncated", truncated},
                {"not_evaluated", skipped + summary.invalid.size()},
                {"unchanged", summary.unchanged},
                {"newly_allowed", summary.newly_allowed},
                {"newly_blocked", summary.newly_blocked},
                {"newly_enforced", summary.newly_enforced},
                {"newly_monitored", summary.newly_monitored},
                {"groups", groups}};
}

ApiResult ControllerService::activate_policy(const Caller& caller, std::int64_t id) {
    auto revision = store_->get_revision(id);
    if (!revision) {
        return std::unexpected(from_store(revision.error()));
    }
    // Compile before anything is stored: a revision that no longer fits the inventory is
    // refused and nothing changes anywhere.
    auto compiled = build_compiled(*revision);
    if (!compiled) {
        return std::unexpected(compiled.error());
    }
    std::lock_guard lock(mutex_);
    std::optional<PolicyRevision> previous;
    if (auto active = store_->active_revision(); active && *active) {
        previous = **active;
    }
    if (previous && previous->id == id) {
        json result = revision_json(*previous, false);  // already active: nothing to do
        result["generation"] = generation_counter_;
        return result;
    }
    std::optional<PolicyRevision> activated;
    auto tx = store_->in_transaction([&]() -> StoreResult<void> {
        auto done = store_->activate_revision(id, clock_());
        if (!done) {
            return std::unexpected(done.error());
        }
        activated = *done;
        return audit(caller, "policy.activate", "revision/" + std::to_string(id),
              previous ? json{{"active_revision", previous->id}} : json(nullptr),
              json{{"active_revision", id}});
    });
    if (!tx) {
        return std::unexpected(from_store(tx.error()));
    }
    compiled_ = *compiled;
    apply_policy_to_analysis(compiled_);
    if (auto rc = recompile_locked(true, {}); !rc) {
        return std::unexpected(rc.error());
    }
    json result = revision_json(*activated, false);
    result["generation"] = generation_counter_;
    bus_.publish("policy", result);
    return result;
}

ApiResult ControllerService::rollback_policy(const Caller& caller) {
    auto revisions = store_->list_revisions(1000);
    if (!revisions) {
        return std::unexpected(from_store(revisions.error()));
    }
    // The previously active revision is the superseded one activated most recently.
    std::optional<PolicyRevision> target;
    for (const auto& r : *revisions) {
        if (r.state == RevisionState::Superseded && r.activated_at &&
            (!target || *r.activated_at > *target->activated_at)) {
            target = r;
        }
    }
    if (!target) {
        return std::unexpected(error(409, "nothing-to-roll-back", "no earlier active revision exists"));
    }
    return activate_policy(caller, target->id);
}

// -------------------------------------------------------------- inventory -----------------

std::expected<void, ApiError> ControllerService::check_inventory_against_policy(const json& document) {
    auto inventory = policy::read_inventory(document, "inventory");
    if (!inventory) {
        return std::unexpected(invalid_document("the inventory is invalid", inventory.error()));
    }
    std::shared_ptr<const Compiled> active;
    {
        std::lock_guard lock(mutex_);
        active = compiled_;
    }
    if (active && active->policy) {
        auto problems = policy::cross_check(*active->policy, *inventory, "policy");
        if (!problems.empty()) {
            return std::unexpected(invalid_document("the change does not fit the active policy", problems));
        }
    }
    return {};
}

std::expected<void, ApiError> ControllerService::reload_inventory_locked() {
    auto compiled = build_compiled(compiled_ ? compiled_->revision : std::nullopt);
    if (!compiled) {
        return std::unexpected(compiled.error());
    }
    compiled_ = *compiled;
    apply_policy_to_analysis(compiled_);
    return recompile_locked(true, {});
}

ApiResult ControllerService::get_inventory() {
    auto document = inventory_document();
    if (!document) {
        return std::unexpected(document.error());
    }
    return *document;
}

namespace {

std::expected<WorkloadRecord, ApiError> workload_record(const json& document, TimeMs now) {
    WorkloadRecord record;
    record.id = string_member(document, "id").value_or("");
    record.enforcer = string_member(document, "enforcer").value_or("");
    record.document = document;
    record.updated_at = now;
    return record;
}

}  // namespace

ApiResult ControllerService::replace_inventory(const Caller& caller, const json& document) {
    if (auto ok = check_inventory_against_policy(document); !ok) {
        return std::unexpected(ok.error());
    }
    auto before = inventory_document();
    if (!before) {
        return std::unexpected(before.error());
    }
    std::lock_guard lock(mutex_);
    auto tx = store_->in_transaction([&]() -> StoreResult<void> {
        std::vector<std::string> stale;
        std::set<std::string> kept;
        for (const auto& w : document.value("workloads", json::array())) {
            kept.insert(w.value("id", ""));
        }
        for (const auto& w : (*before)["workloads"]) {
            if (!kept.contains(w.value("id", ""))) {
                stale.push_back(w.value("id", ""));
            }
        }
        if (auto deleted = store_->delete_workloads(stale); !deleted) {
            return std::unexpected(deleted.error());
        }
        std::set<std::string> kept_enforcers;
        std::vector<EnforcerDefinition> enforcers;
        for (const auto& e : document.value("enforcers", json::array())) {
            kept_enforcers.insert(e.value("id", ""));
            enforcers.push_back({e.value("id", ""), e});
        }
        for (const auto& e : (*before)["enforcers"]) {
            if (!kept_enforcers.contains(e.value("id", ""))) {
                if (auto gone = store_->delete_enforcer_definition(e.value("id", "")); !gone) {
                    return std::unexpected(gone.error());
                }
            }
        }
        if (auto up = store_->upsert_enforcer_definitions(enforcers); !up) {
            return std::unexpected(up.error());
        }
        std::vector<WorkloadRecord> workloads;
        for (const auto& w : document.value("workloads", json::array())) {
            workloads.push_back(*workload_record(w, clock_()));
        }
        if (auto up = store_->upsert_workloads(workloads); !up) {
            return std::unexpected(up.error());
        }
        return audit(caller, "inventory.replace", "inventory",
              json{{"enforcers", (*before)["enforcers"].size()}, {"workloads", (*before)["workloads"].size()}},
              json{{"enforcers", enforcers.size()}, {"workloads", workloads.size()}});
    });
    if (!tx) {
        return std::unexpected(from_store(tx.error()));
    }
    if (auto reloaded = reload_inventory_locked(); !reloaded) {
        return std::unexpected(reloaded.error());
    }
    bus_.publish("inventory", json{{"workloads", document.value("workloads", json::array()).size()}});
    return json{{"enforcers", document.value("enforcers", json::array()).size()},
                {"workloads", document.value("workloads", json::array()).size()},
                {"generation", generation_counter_}};
}

ApiResult ControllerService::list_workloads() {
    auto workloads = store_->list_workloads();
    if (!workloads) {
        return std::unexpected(from_store(workloads.error()));
    }
    json list = json::array();
    for (const auto& w : *workloads) {
        list.push_back(w.document);
    }
    return json{{"workloads", list}};
}

ApiResult ControllerService::get_workload(const std::string& id) {
    auto workload = store_->get_workload(id);
    if (!workload) {
        return std::unexpected(from_store(workload.error()));
    }
    if (!*workload) {
        return std::unexpected(error(404, "not-found", "no workload \"" + id + "\""));
    }
    json result = (*workload)->document;
    if (auto q = store_->active_quarantine(id); q && *q) {
        result["quarantine"] = quarantine_json(**q);
    }
    return result;
}

ApiResult ControllerService::bulk_workloads(const Caller& caller, const json& body) {
    if (auto ok = only_members(body, {"upsert", "delete"}, "a bulk workload change"); !ok) {
        return std::unexpected(ok.error());
    }
    const json* upsert = member(body, "upsert");
    const json* remove = member(body, "delete");
    if (upsert != nullptr && !upsert->is_array()) {
        return std::unexpected(error(400, "wrong-type", "\"upsert\" must be an array", json{{"pointer", "/upsert"}}));
    }
    if (remove != nullptr && !remove->is_array()) {
        return std::unexpected(error(400, "wrong-type", "\"delete\" must be an array", json{{"pointer", "/delete"}}));
    }
    auto current = inventory_document();
    if (!current) {
        return std::unexpected(current.error());
    }
    std::set<std::string> deleted;
    if (remove != nullptr) {
        for (std::size_t i = 0; i < remove->size(); ++i) {
            if (!(*remove)[i].is_string()) {
                return std::unexpected(error(400, "wrong-type", "workload ids are strings",
                                             json{{"pointer", "/delete/" + std::to_string(i)}}));
            }
            deleted.insert((*remove)[i].get<std::string>());
        }
    }
    // The merged inventory is validated as a whole, so a bulk import is all or nothing
    // and its errors point into the merged document's workloads.
    std::map<std::string, json> merged;
    for (const auto& w : (*current)["workloads"]) {
        merged[w.value("id", "")] = w;
    }
    for (const auto& id : deleted) {
        merged.erase(id);
    }
    if (upsert != nullptr) {
        for (std::size_t i = 0; i < upsert->size(); ++i) {
            const auto& w = (*upsert)[i];
            if (!w.is_object() || !w.contains("id") || !w["id"].is_string()) {
                return std::unexpected(error(400, "invalid-value", "each workload needs a string \"id\"",
                                             json{{"pointer", "/upsert/" + std::to_string(i)}}));
            }
            merged[w["id"].get<std::string>()] = w;
        }
    }
    json document{{"enforcers", (*current)["enforcers"]}, {"workloads", json::array()}};
    for (auto& [id, w] : merged) {
        document["workloads"].push_back(w);
    }
    if (auto ok = check_inventory_against_policy(document); !ok) {
        return std::unexpected(ok.error());
    }
    std::lock_guard lock(mutex_);
    auto tx = store_->in_transaction([&]() -> StoreResult<void> {
        if (auto d = store_->delete_workloads({deleted.begin(), deleted.end()}); !d) {
            return std::unexpected(d.error());
        }
        std::vector<WorkloadRecord> records;
        if (upsert != nullptr) {
            for (const auto& w : *upsert) {
                records.push_back(*workload_record(w, clock_()));
            }
        }
        if (auto u = store_->upsert_workloads(records); !u) {
            return std::unexpected(u.error());
        }
        return audit(caller, "inventory.bulk", "workloads", json{{"delete", json(deleted)}},
              upsert != nullptr ? *upsert : json::array());
    });
    if (!tx) {
        return std::unexpected(from_store(tx.error()));
    }
    if (auto reloaded = reload_inventory_locked(); !reloaded) {
        return std::unexpected(reloaded.error());
    }
    return json{{"upserted", upsert != nullptr ? upsert->size() : 0},
                {"deleted", deleted.size()},
                {"generation", generation_counter_}};
}

ApiResult ControllerService::put_workload(const Caller& caller, const std::string& id, const json& document) {
    if (!document.is_object()) {
        return std::unexpected(error(400, "wrong-type", "a workload must be a JSON object", json{{"pointer", ""}}));
    }
    if (auto doc_id = string_member(document, "id"); doc_id && *doc_id != id) {
        return std::unexpected(error(400, "invalid-value", "\"id\" differs from the workload in the path",
                                     json{{"pointer", "/id"}}));
    }
    json workload = document;
    workload["id"] = id;
    return bulk_workloads(caller, json{{"upsert", json::array({workload})}});
}

ApiResult ControllerService::delete_workload(const Caller& caller, const std::string& id) {
    auto existing = store_->get_workload(id);
    if (!existing) {
        return std::unexpected(from_store(existing.error()));
    }
    if (!*existing) {
        return std::unexpected(error(404, "not-found", "no workload \"" + id + "\""));
    }
    if (auto q = store_->active_quarantine(id); q && *q) {
        return std::unexpected(error(409, "quarantined",
                                     "workload \"" + id + "\" is quarantined; release it before deleting it"));
    }
    return bulk_workloads(caller, json{{"delete", json::array({id})}});
}

ApiResult ControllerService::list_vpn_sessions(std::optional<TimeMs> active_at, std::size_t limit) {
    auto sessions = store_->list_vpn_sessions(active_at, std::min<std::size_t>(limit, 10000));
    if (!sessions) {
        return std::unexpected(from_store(sessions.error()));
    }
    json list = json::array();
    for (const auto& s : *sessions) {
        list.push_back(vpn_session_json(s));
    }
    return json{{"sessions", list}};
}

ApiResult ControllerService::add_vpn_session(const Caller& caller, const json& body) {
    if (auto ok = only_members(body, {"user", "pool_address", "real_address", "start_ms", "end_ms"}, "a VPN session"); !ok) {
        return std::unexpected(ok.error());
    }
    VpnSession session;
    auto user = required_string(body, "user", 256);
    if (!user) {
        return std::unexpected(user.error());
    }
    auto pool = required_string(body, "pool_address", 64);
    if (!pool) {
        return std::unexpected(pool.error());
    }
    if (!policy::parse_ip_address(*pool)) {
        return std::unexpected(error(400, "invalid-address", "\"" + *pool + "\" is not an IP address",
                                     json{{"pointer", "/pool_address"}}));
    }
    auto real = optional_string(body, "real_address", 64);
    if (!real) {
        return std::unexpected(real.error());
    }
    session.user = *user;
    session.pool_address = *pool;
    session.real_address = real->value_or("");
    for (const char* key : {"start_ms", "end_ms"}) {
        if (const json* t = member(body, key); t != nullptr && !t->is_null() && !t->is_number_integer()) {
            return std::unexpected(error(400, "wrong-type", "\"" + std::string(key) + "\" must be milliseconds since the epoch",
                                         json{{"pointer", "/" + std::string(key)}}));
        }
    }
    session.start = json_int(body, "start_ms", clock_());
    if (const json* end = member(body, "end_ms"); end != nullptr && end->is_number_integer()) {
        session.end = end->get<TimeMs>();
        if (*session.end < session.start) {
            return std::unexpected(error(400, "invalid-value", "\"end_ms\" is before \"start_ms\"",
                                         json{{"pointer", "/end_ms"}}));
        }
    }
    std::optional<VpnSession> stored;
    auto tx = store_->in_transaction([&]() -> StoreResult<void> {
        auto added = store_->add_vpn_session(session);
        if (!added) {
            return std::unexpected(added.error());
        }
        stored = *added;
        return audit(caller, "vpn.session.add", "vpn-session/" + std::to_string(added->id), nullptr, body);
    });
    if (!tx) {
        return std::unexpected(from_store(tx.error()));
    }
    return vpn_session_json(*stored);
}

ApiResult ControllerService::end_vpn_session(const Caller& caller, std::int64_t id, const json& body) {
    if (auto ok = only_members(body, {"end_ms"}, "a VPN session end"); !ok) {
        return std::unexpected(ok.error());
    }
    if (const json* t = member(body, "end_ms"); t != nullptr && !t->is_number_integer()) {
        return std::unexpected(error(400, "wrong-type", "\"end_ms\" must be milliseconds since the epoch",
                                     json{{"pointer", "/end_ms"}}));
    }
    const TimeMs end = json_int(body, "end_ms", clock_());
    std::optional<VpnSession> ended;
    auto tx = store_->in_transaction([&]() -> StoreResult<void> {
        auto done = store_->end_vpn_session(id, end);
        if (!done) {
            return std::unexpected(done.error());
        }
        ended = *done;
        return audit(caller, "vpn.session.end", "vpn-session/" + std::to_string(id), nullptr, json{{"end_ms", end}});
    });
    if (!tx) {
        return std::unexpected(from_store(tx.error()));
    }
    return json{{"id", id}, {"end", format_time_ms(end)}};
}

// -------------------------------------------------------------- enforcers -----------------

nlohmann::json ControllerService::enforcer_json(const std::string& id, const std::optional<EnforcerStatus>& status) {
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

ApiResult ControllerService::list_enforcers() {
    auto definitions = store_->list_enforcer_definitions();
    if (!definitions) {
        return std::unexpected(from_store(definitions.error()));
    }
    auto statuses = store_->list_enforcer_status();
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

ApiResult ControllerService::get_enforcer(const std::string& id) {
    auto definitions = store_->list_enforcer_definitions();
    if (!definitions) {
        return std::unexpected(from_store(definitions.error()));
    }
    auto it = std::find_if(definitions->begin(), definitions->end(), [&](const auto& d) { return d.id == id; });
    if (it == definitions->end()) {
        return std::unexpected(error(404, "not-found", "no enforcer \"" + id + "\" in the inventory"));
    }
    auto status = store_->get_enforcer_status(id);
    if (!status) {
        return std::unexpected(from_store(status.error()));
    }
    json j = enforcer_json(id, *status);
    j["description"] = it->document.value("description", "");
    return j;
}

ApiResult ControllerService::create_enrollment_token(const Caller& caller, const std::string& id) {
    auto definitions = store_->list_enforcer_definitions();
    if (!definitions) {
        return std::unexpected(from_store(definitions.error()));
    }
    if (std::none_of(definitions->begin(), definitions->end(), [&](const auto& d) { return d.id == id; })) {
        return std::unexpected(error(404, "not-found", "no enforcer \"" + id + "\" in the inventory"));
    }
    const std::string secret = random_secret();
    EnrollmentToken token;
    token.token_sha256 = sha256_hex(secret);
    token.enforcer = id;
    token.created_at = clock_();
    token.expires_at = token.created_at + options_.enrollment_token_lifetime.count() * 1000;
    auto tx = store_->in_transaction([&]() -> StoreResult<void> {
        if (auto added = store_->add_enrollment_token(token); !added) {
            return std::unexpected(added.error());
        }
        return audit(caller, "enforcer.enrollment-token", "enforcer/" + id, nullptr,
              json{{"expires_at", format_time_ms(token.expires_at)}});
    });
    if (!tx) {
        return std::unexpected(from_store(tx.error()));
    }
    return json{{"enforcer", id}, {"token", secret}, {"expires_at", format_time_ms(token.expires_at)}};
}

ApiResult ControllerService::enroll(const json& body) {
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
    auto tx = store_->in_transaction([&]() -> StoreResult<void> {
        if (auto redeemed = store_->redeem_enrollment_token(sha256_hex(*token), *enforcer, clock_(), api_token);
            !redeemed) {
            return std::unexpected(redeemed.error());
        }
        auto status = store_->get_enforcer_status(*enforcer);
        if (!status) {
            return std::unexpected(status.error());
        }
        EnforcerStatus updated = status->value_or(EnforcerStatus{});
        updated.id = *enforcer;
        updated.enrolled_at = clock_();
        updated.version = string_member(body, "version").value_or("");
        updated.hostname = string_member(body, "hostname").value_or("");
        if (auto put = store_->put_enforcer_status(updated); !put) {
            return std::unexpected(put.error());
        }
        return audit(Caller{api_token.name, Role::Enforcer, *enforcer}, "enforcer.enroll", "enforcer/" + *enforcer, nullptr,
              json{{"version", updated.version}, {"hostname", updated.hostname}});
    });
    if (!tx) {
        if (tx.error().kind == StoreError::Kind::NotFound) {
            return std::unexpected(error(401, "enrollment-refused",
                                         "the enrollment token is unknown, used, expired or for another enforcer"));
        }
        return std::unexpected(from_store(tx.error()));
    }
    return json{{"enforcer", *enforcer}, {"credential", credential}};
}

namespace {

std::expected<void, ApiError> check_own_channel(const Caller& caller, const std::string& id) {
    if (caller.role != Role::Enforcer || caller.enforcer != id) {
        return std::unexpected(error(403, "forbidden", "this credential may not speak for enforcer \"" + id + "\""));
    }
    return {};
}

}  // namespace

class ControllerService::Stream final : public ChannelStream {
public:
    Stream(ControllerService& service, std::string enforcer, std::uint64_t epoch, std::uint64_t generation,
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

    ControllerService& service_;
    std::string enforcer_;
    std::uint64_t epoch_;
    std::uint64_t sent_generation_;
    std::string sent_hash_;
    bool hello_sent_ = false;
};

std::expected<std::unique_ptr<ChannelStream>, ApiError> ControllerService::open_channel(
    const Caller& caller, const std::string& id, std::uint64_t generation, const std::string& hash) {
    if (auto own = check_own_channel(caller, id); !own) {
        return std::unexpected(own.error());
    }
    static std::atomic<std::uint64_t> epochs{0};
    const std::uint64_t epoch = ++epochs;
    {
        std::lock_guard lock(mutex_);
        stream_epoch_[id] = epoch;  // an older stream of this enforcer ends at its next wake-up
    }
    changed_.notify_all();
    bus_.publish("enforcer", json{{"enforcer", id}, {"connected", true}});
    return std::make_unique<Stream>(*this, id, epoch, generation, hash);
}

ApiResult ControllerService::report_status(const Caller& caller, const std::string& id, const json& body) {
    if (auto own = check_own_channel(caller, id); !own) {
        return std::unexpected(own.error());
    }
    if (!body.is_object()) {
        return std::unexpected(error(400, "wrong-type", "a status must be a JSON object", json{{"pointer", ""}}));
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
            return std::unexpected(error(400, "wrong-type", "\"" + std::string(key) + "\" must be a non-negative number",
                                         json{{"pointer", "/" + std::string(key)}}));
        }
    }
    for (const auto& [key, type] : expected_types) {
        const json* v = member(body, key);
        if (v != nullptr && !v->is_null() && v->type() != type &&
            !(type == json::value_t::number_unsigned && v->is_number_integer() && v->get<std::int64_t>() >= 0)) {
            return std::unexpected(error(400, "wrong-type",
                                         "\"" + key + "\" must be " +
                                             (type == json::value_t::string ? "a string" : "a non-negative integer"),
                                         json{{"pointer", "/" + key}}));
        }
    }
    if (auto state = string_member(body, "state"); state && *state != "applied" && *state != "failed") {
        return std::unexpected(error(400, "invalid-value", "\"state\" must be applied or failed", json{{"pointer", "/state"}}));
    }
    const TimeMs now = clock_();
    auto current = store_->get_enforcer_status(id);
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
    if (auto put = store_->put_enforcer_status(status); !put) {
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

ApiResult ControllerService::ingest_events(const Caller& caller, const std::string& id, std::string_view body) {
    if (auto own = check_own_channel(caller, id); !own) {
        return std::unexpected(own.error());
    }
    const TimeMs now = clock_();
    auto parsed = EventBatchParser(EventBatchLimits{options_.max_events_per_batch}).parse(body, id, now);
    if (!parsed) {
        if (parsed.error().code == "invalid-json") {
            // The fast parser says only that the text is not JSON; the API's reader says
            // where and why, as every other endpoint does.
            if (auto diagnosed = policy::read_json(body, "body"); !diagnosed) {
                const auto& first = diagnosed.error().front();
                return std::unexpected(error(400, "invalid-json", first.message,
                                             json{{"pointer", first.pointer},
                                                  {"errors", policy::diagnostics_to_json(diagnosed.error())}}));
            }
        }
        const auto& p = parsed.error();
        return std::unexpected(error(p.status, p.code, p.message, json{{"pointer", p.pointer}}));
    }
    std::vector<StoredEvent>& records = *parsed;
    auto inserted = store_->insert_events(records);
    if (!inserted) {
        return std::unexpected(from_store(inserted.error()));
    }
    // Live view and detection see only events stored now for the first time; a retried
    // batch changes nothing.
    if (inserted->accepted > 0) {
        std::vector<StoredEvent> fresh;
        fresh.reserve(inserted->accepted);
        for (std::size_t i = 0; i < records.size(); ++i) {
            if (inserted->ids[i] != 0) {
                records[i].id = inserted->ids[i];
                fresh.push_back(std::move(records[i]));
            }
        }
        if (bus_.subscribers() > 0) {
            json live = json::array();
            for (auto& e : fresh) {
                if (is_blocked_type(e.type)) {
                    e.document = json::parse(e.document_text, nullptr, false);
                    live.push_back(event_json(e));
                }
            }
            if (!live.empty()) {
                bus_.publish("drops", live);
            }
        }
        sequencer_->submit(std::move(fresh));
    }
    return json{{"accepted", inserted->accepted},
                {"duplicates", inserted->duplicates},
                {"through_seq", inserted->through_seq}};
}

// ----------------------------------------------------------- incidents --------------------

namespace {

int severity_rank(std::string_view severity) {
    auto s = policy::severity_from_string(severity);
    return s ? static_cast<int>(*s) : -1;
}

// An incident keeps its first finding (what opened it) and the newest ones; a source that
// scans for days must not grow its incident without bound. How many were folded away is
// counted beside them.
void append_finding(json& details, json finding) {
    constexpr std::size_t kMaxFindings = 32;
    json& findings = details["findings"];
    findings.push_back(std::move(finding));
    if (findings.size() > kMaxFindings) {
        findings.erase(findings.begin() + 1);
        details["findings_folded"] = details.value("findings_folded", std::uint64_t{0}) + 1;
    }
}

}  // namespace

// ----------------------------------------------------------- analysis ---------------------
//
// Every newly stored drop goes through the analyzer engine (controller/analyzer) in arrival
// order; each finding it returns is stored on the source's incident (one per source
// identity), published on the dashboard stream and to the SOAR webhook, and judged by the
// ResponsePlanner (policy "response": quarantine, dry-run, page, rate-limited).

struct ControllerService::Analysis {
    explicit Analysis(const analyzer::AnalyzerConfig& config) : engine(config) {}
    analyzer::Analyzer engine;
    analyzer::ResponsePlanner planner;
    std::shared_ptr<const analyzer::InventoryIndex> inventory;
    // Analyzer incident id <-> stored incident id: the one place findings and counts find
    // the incident they belong to. Kept in the checkpoint beside the engine.
    std::unordered_map<std::uint64_t, std::int64_t> stored_of;
    std::unordered_map<std::int64_t, std::uint64_t> analyzer_of;
};

struct ControllerService::PendingFinding {
    analyzer::Finding finding;
    analyzer::Incident incident;  // after the finding; timeline left out
    std::string key;              // the stored incident's source: workload, or a subject
    std::int64_t event_id = 0;    // the stored event that raised it
    json attribution;
    std::vector<std::string> policy_segments;
    bool managed = false;
    bool critical = false;
};

namespace {

// A remote user's source identity: one per VPN session, so a pool address that changes hands
// is two sources. Such a source has no workload to quarantine or to query events by.
std::string vpn_source(const VpnSession& session) {
    return "vpn:" + session.user + "#" + std::to_string(session.id);
}
bool is_vpn_source(std::string_view workload) {
    return workload.starts_with("vpn:");
}

// The store keys incidents by a source text: the workload id for attributed sources (what
// quarantine, the API's ?workload= and the dashboard link by), else the analyzer's subject.
std::string incident_key(const analyzer::Incident& incident) {
    if (incident.about_target) {
        return "target:" + incident.subject;
    }
    return incident.workload.empty() ? incident.subject : incident.workload;
}


json finding_json(const analyzer::Finding& f, TimeMs now) {
    json j = analyzer::to_json(f);
    j["kind"] = f.rule_text;  // the rule, as issue 4's incidents named it
    j["targets"] = f.sample_targets;
    j["at"] = format_time_ms(now);
    j.erase("incident");
    return j;
}


json exemption_json(const Exemption& e) {
    return json{{"id", e.id},
                {"workload", e.workload},
                {"enforcer", e.enforcer},
                {"segment", e.segment},
                {"expires_ms", e.expires_at},
                {"expires_at", format_time_ms(e.expires_at)},
                {"reason", e.reason},
                {"created_by", e.created_by},
                {"created_at", format_time_ms(e.created_at)}};
}

std::vector<analyzer::Exemption> to_analyzer_exemptions(const std::vector<Exemption>& list) {
    std::vector<analyzer::Exemption> out;
    for (const auto& e : list) {
        out.push_back(analyzer::Exemption{e.enforcer, e.workload, e.segment, e.expires_at * 1'000'000, e.reason});
    }
    return out;
}

}  // namespace

void ControllerService::apply_policy_to_analysis(const std::shared_ptr<const Compiled>& compiled) {
    analyzer::AnalyzerConfig config = options_.analyzer;
    // The configuration file's exemptions, then those the SOC added through the API.
    if (auto stored = store_->list_exemptions()) {
        for (auto& e : to_analyzer_exemptions(*stored)) {
            config.exemptions.push_back(std::move(e));
        }
    } else {
        // Keeping the engine's current exemptions is the safe side: forgetting them would
        // page for every known scanner, inventing some is impossible.
        spdlog::error("analysis: cannot read the exemptions: {}; the analyzer keeps the ones it has",
                      stored.error().message);
        ++analysis_store_errors_;
        std::lock_guard lock(analysis_mutex_);
        if (analysis_) {
            config.exemptions = analysis_->engine.config().exemptions;
        }
    }
    policy::ResponsePolicy response;
    if (compiled && compiled->policy) {
        response = compiled->policy->response;
        analyzer::apply_response_policy(config, response);
    }
    auto index = std::make_shared<const analyzer::InventoryIndex>(
        compiled ? compiled->inventory : policy::Inventory{},
        compiled && compiled->policy ? &*compiled->policy : nullptr);
    std::lock_guard lock(analysis_mutex_);
    if (!analysis_) {
        analysis_ = std::make_unique<Analysis>(config);
    } else {
        analysis_->engine.reconfigure(config);
    }
    analysis_->planner.set_policy(response);
    analysis_->inventory = std::move(index);
}

void ControllerService::reapply_analysis() {
    std::shared_ptr<const Compiled> compiled;
    {
        std::lock_guard lock(mutex_);
        compiled = compiled_;
    }
    apply_policy_to_analysis(compiled);
}

void ControllerService::rearm_analysis(std::int64_t stored_incident_id) {
    std::lock_guard lock(analysis_mutex_);
    if (!analysis_) {
        return;
    }
    if (auto it = analysis_->analyzer_of.find(stored_incident_id); it != analysis_->analyzer_of.end()) {
        analysis_->engine.rearm(it->second);
    }
}

void ControllerService::analyse(const std::vector<StoredEvent>& fresh, TimeMs now) {
    std::vector<PendingFinding> pending;
    // The events each engine incident (or contained workload) counted, as (event id, count).
    using Counted = std::vector<std::pair<std::int64_t, std::uint64_t>>;
    std::map<std::uint64_t, Counted> counted;
    std::map<std::string, Counted> contained;
    // VPN sessions of this batch's unattributed senders (one lookup per address).
    std::map<std::string, std::optional<VpnSession>> sessions;
    {
        std::lock_guard lock(analysis_mutex_);
        if (!analysis_) {
            return;
        }
        auto& engine = analysis_->engine;
        const auto* inventory = analysis_->inventory.get();
        analyzer::DropRecord r;
        for (const auto& e : fresh) {
            if (!is_blocked_type(e.type)) {
                continue;
            }
            if (e.reason == "quarantine" && e.direction != "in") {
                // The contained workload's own attempts: counted on its incident, they detect
                // nothing new. (An inbound quarantine drop is someone else's attempt toward a
                // contained workload: a scan that happens to cross it is analysed below.)
                if (!e.workload.empty()) {
                    contained[e.workload].emplace_back(e.id, e.count);
                }
                continue;
            }
            auto reason = analyzer::drop_reason_from_string(e.reason);
            if (!reason) {
                continue;
            }
            // One record reused for the batch: clearing keeps the strings' capacity, so the
            // per-event path copies text without allocating (ingest runs at 100,000 events/s).
            r.workload.clear();
            r.mac.clear();
            r.user.clear();
            r.source_segments.clear();
            r.destination_workload.clear();
            r.destination_segments.clear();
            r.time_ns = e.time_ns;
            r.enforcer = e.enforcer;
            r.protocol = policy::ip_protocol_number(e.protocol).value_or(0);
            r.dport = e.dport;
            r.reason = *reason;
            r.count = e.count;
            analyzer::attribute_drop(r, e.workload, e.direction == "in", e.src, e.dst, e.port, e.mac, inventory);
            const VpnSession* vpn = nullptr;  // into `sessions`; JSON only for a finding
            if (r.workload.empty()) {
                // A remote user: the VPN session that held the pool address at that time.
                auto found = sessions.find(r.address);
                const TimeMs at = e.time_ns / 1'000'000;
                if (found == sessions.end() || (found->second && (found->second->start > at ||
                                                                  (found->second->end && *found->second->end <= at)))) {
                    auto session = store_->vpn_session_for(r.address, at);
                    if (!session) {
                        // Attribution degrades to the address; the drop is still analysed.
                        spdlog::warn("analysis: VPN session of {} at {}: {}", r.address, at, session.error().message);
                        ++analysis_store_errors_;
                    }
                    found = sessions.insert_or_assign(r.address, session ? *session : std::nullopt).first;
                }
                if (found->second) {
                    vpn = &*found->second;
                    r.workload = vpn_source(*vpn);
                    r.user = vpn->user;
                }
            }
            auto findings = engine.observe(r.view());
            for (const auto& f : findings) {
                const auto* incident = engine.incident(f.incident_id);
                if (incident == nullptr) {
                    continue;
                }
                PendingFinding p;
                p.finding = f;
                p.incident = *incident;
                p.incident.timeline.clear();
                p.key = incident_key(*incident);
                p.event_id = e.id;
                if (!incident->about_target) {
                    const analyzer::WorkloadFacts* facts =
                        incident->workload.empty() || inventory == nullptr
                            ? nullptr
                            : inventory->by_workload(incident->enforcer, incident->workload);
                    p.managed = facts != nullptr && !facts->enforcer.empty();
                    p.critical = facts != nullptr && facts->critical;
                    json attribution{{"enforcer", incident->enforcer}, {"port", incident->port},
                                     {"mac", incident->mac},           {"address", incident->address},
                                     {"user", incident->user},         {"workload", incident->workload}};
                    if (facts != nullptr) {
                        p.policy_segments.assign(facts->policy_segments().begin(), facts->policy_segments().end());
                        attribution["hostname"] = facts->hostname;
                        attribution["hypervisor"] = facts->enforcer;
                        attribution["segments"] = p.policy_segments;
                        attribution["labels"] = std::vector<std::string>(
                            facts->segments.begin(),
                            facts->segments.begin() + static_cast<std::ptrdiff_t>(facts->policy_segments_from));
                        attribution["critical"] = facts->critical;
                    }
                    if (vpn != nullptr && is_vpn_source(incident->workload)) {
                        attribution["vpn_session"] = vpn_session_json(*vpn);
                    }
                    p.attribution = std::move(attribution);
                }
                pending.push_back(std::move(p));
            }
            if (const auto joined = engine.last_incident(); joined != 0) {
                counted[joined].emplace_back(e.id, e.count);
            }
        }
    }
    for (auto& p : pending) {
        handle_finding(p);
    }
    // Counters and event links of every stored incident the batch touched, in one
    // transaction. An event at or below an incident's counted_through_event was counted
    // before (a replay after a restart): counting is exactly once per event.
    std::lock_guard incidents_lock(incident_mutex_);
    std::vector<std::pair<std::int64_t, const Counted*>> touched;
    {
        std::lock_guard lock(analysis_mutex_);
        for (const auto& [analyzer_id, events] : counted) {
            if (auto stored = analysis_->stored_of.find(analyzer_id); stored != analysis_->stored_of.end()) {
                touched.emplace_back(stored->second, &events);
            }
        }
    }
    if (touched.empty() && contained.empty()) {
        return;
    }
    auto add_events = [&](Incident incident, const Counted& events) -> StoreResult<void> {
        if (incident.state == IncidentState::Resolved) {
            return {};
        }
        // The timeline keeps an incident's first events (about kTimelineEvents); its
        // counters keep growing with every event of the storm.
        const bool timeline_full = incident.event_count >= kTimelineEvents;
        std::vector<std::int64_t> ids;
        for (const auto& [id, n] : events) {
            if (id > incident.counted_through_event) {
                incident.event_count += n;
                ids.push_back(id);
            }
        }
        if (ids.empty()) {
            return {};
        }
        incident.counted_through_event = ids.back();
        incident.updated_at = now;
        if (auto updated = store_->update_incident(incident); !updated) {
            return std::unexpected(updated.error());
        }
        if (!timeline_full) {
            return store_->link_incident_events(incident.id, ids);
        }
        return {};
    };
    auto done = store_->in_transaction([&]() -> StoreResult<void> {
        for (const auto& [stored_id, events] : touched) {
            auto incident = store_->get_incident(stored_id);
            if (!incident) {
                return std::unexpected(incident.error());
            }
            if (auto ok = add_events(std::move(*incident), *events); !ok) {
                return ok;
            }
        }
        for (const auto& [workload, events] : contained) {
            auto open = store_->unresolved_incident_of(workload);
            if (!open) {
                return std::unexpected(open.error());
            }
            if (*open) {
                if (auto ok = add_events(std::move(**open), events); !ok) {
                    return ok;
                }
            }
        }
        return {};
    });
    if (!done) {
        // The events are stored (the upload is answered as accepted, so the enforcer does
        // not resend them); only the incident counters lag, and the restart replay after the
        // next checkpoint would not recount them. Counted so the operator sees it.
        ++analysis_store_errors_;
        spdlog::error("analysis: incident counters of {} incidents not updated: {}", touched.size() + contained.size(),
                      done.error().message);
    }
}

void ControllerService::handle_finding(PendingFinding& p) {
    std::lock_guard incidents_lock(incident_mutex_);
    const TimeMs now = clock_();
    const auto& f = p.finding;
    const auto& ai = p.incident;
    const std::string severity(policy::to_string(ai.severity));
    std::int64_t mapped_id = 0;
    {
        std::lock_guard lock(analysis_mutex_);
        if (auto it = analysis_->stored_of.find(ai.id); it != analysis_->stored_of.end()) {
            mapped_id = it->second;
        }
    }

    // What to do about it (policy "response"), decided once per finding.
    analyzer::ResponseSubject subject;
    subject.managed = p.managed;
    subject.critical = p.critical;
    subject.segments = p.policy_segments;
    if (p.managed) {
        auto q = store_->active_quarantine(ai.workload);
        if (!q) {
            spdlog::warn("analysis: quarantine state of {}: {}", ai.workload, q.error().message);
            ++analysis_store_errors_;
        }
        subject.already_quarantined = q && *q;
    }
    analyzer::ResponseDecision decision;
    {
        std::lock_guard lock(analysis_mutex_);
        decision = analysis_->planner.decide(ai, f, subject, now * 1'000'000);
    }
    const std::string action(analyzer::to_string(decision.action));
    const json finding = finding_json(f, now);
    const Caller analyzer_caller{"analyzer", Role::Automation, ""};

    // The incident, its timeline links, the response record, the audit entries and the
    // webhook rows: one transaction, so a crash leaves all or none of them. Versioned
    // updates make a concurrent change (the SOC resolving it) win rather than be reverted.
    Incident incident;
    bool created = false, escalated = false, skipped = false, first_of_kind = false;
    json page;
    auto write = [&]() -> StoreResult<void> {
        created = escalated = skipped = first_of_kind = false;
        page = nullptr;
        std::int64_t stored_id = mapped_id;
        if (stored_id != 0) {
            auto existing = store_->get_incident(stored_id);
            if (!existing) {
                return std::unexpected(existing.error());
            }
            incident = *existing;
            if (incident.state == IncidentState::Resolved) {
                skipped = true;  // resolved while this finding was on its way
                return {};
            }
        } else {
            auto latest = store_->list_incidents(IncidentQuery{std::nullopt, p.key, std::nullopt, 1});
            if (!latest) {
                return std::unexpected(latest.error());
            }
            if (!latest->empty() && latest->front().counted_through_event >= p.event_id) {
                // That incident has seen this very event: the finding was stored before a
                // restart and is being replayed. Join it, or leave it resolved.
                incident = latest->front();
                if (incident.state == IncidentState::Resolved) {
                    skipped = true;
                    return {};
                }
                stored_id = incident.id;
            } else if (!latest->empty() && latest->front().state != IncidentState::Resolved) {
                // The source already has an open incident (the SOC left it open while the
                // analyzer closed its own): the finding joins it.
                incident = latest->front();
                stored_id = incident.id;
            }
        }
        if (stored_id != 0) {
            escalated = severity_rank(severity) > severity_rank(incident.severity);
            if (escalated) {
                incident.severity = severity;
                incident.title = f.rule_text + " by " + ai.subject;
                incident.explanation = f.explanation;
            }
            incident.updated_at = now;
            append_finding(incident.details, finding);
        } else {
            incident = Incident{};
            incident.source_workload = p.key;
            incident.state = IncidentState::Open;
            incident.severity = severity;
            incident.title = f.rule_text + " by " + ai.subject;
            incident.explanation = f.explanation;
            incident.opened_at = now;
            incident.updated_at = now;
            incident.event_count = 0;
            incident.details = json{{"user", ai.user}, {"findings", json::array({finding})}};
            created = true;
        }
        incident.details["subject"] = ai.subject;
        incident.details["subject_kind"] = ai.about_target ? "target" : "source";
        incident.details["detectors"] = analyzer::rule_counts(ai.findings);
        incident.details["repeat_offender"] = ai.repeat_offender;
        incident.details["analyzer_severity"] = severity;
        if (!p.attribution.is_null()) {
            incident.details["attribution"] = p.attribution;
            if (!ai.user.empty()) {
                incident.details["user"] = ai.user;
            }
        }
        json& responses = incident.details["response"];
        if (!responses.is_array()) {
            responses = json::array();
        }
        first_of_kind = decision.action != analyzer::ResponseAction::None &&
                        std::none_of(responses.begin(), responses.end(),
                                     [&](const json& r) { return r.value("action", "") == action; });
        if (first_of_kind) {
            responses.push_back(json{{"at", format_time_ms(now)}, {"action", action}, {"reason", decision.reason},
                                     {"rule", f.rule_text}, {"severity", severity}});
            if (decision.action == analyzer::ResponseAction::DryRun) {
                incident.details["dry_run_quarantine"] = json{{"at", format_time_ms(now)}, {"reason", decision.reason}};
            }
            if (decision.action == analyzer::ResponseAction::Page ||
                decision.action == analyzer::ResponseAction::RateLimited) {
                incident.details["paged"] = json{{"at", format_time_ms(now)}, {"reason", decision.reason}};
            }
        }
        if (created) {
            auto added = store_->add_incident(incident);
            if (!added) {
                return std::unexpected(added.error());
            }
            incident = *added;
            // The timeline holds every blocked attempt of the finding's window, also those
            // that arrived in earlier batches, before the incident existed; the count starts
            // with them and goes on with every event after this one.
            std::vector<std::int64_t> linked;
            std::uint64_t weight = 0;
            if (!ai.about_target) {
                EventQuery window;
                if (!ai.workload.empty() && !is_vpn_source(ai.workload)) {
                    window.workload = ai.workload;
                } else {
                    window.address = ai.address;
                }
                window.from_ns = f.first_ns;
                window.to_ns = f.last_ns + 1;
                window.through_id = p.event_id;
                window.newest_first = false;
                window.limit = kTimelineEvents;
                auto earlier = store_->query_events(window);
                if (!earlier) {
                    return std::unexpected(earlier.error());
                }
                for (const auto& e : *earlier) {
                    if (is_blocked_type(e.type) && (window.workload || e.src == ai.address)) {
                        linked.push_back(e.id);
                        weight += e.count;
                    }
                }
            }
            incident.event_count = ai.about_target ? ai.events : std::max<std::uint64_t>(weight, 1);
            incident.counted_through_event = p.event_id;
            if (!linked.empty()) {
                if (auto links = store_->link_incident_events(incident.id, linked); !links) {
                    return links;
                }
            }
        }
        auto updated = store_->update_incident(incident);
        if (!updated) {
            return std::unexpected(updated.error());
        }
        incident = *updated;
        const json incident_view = incident_json(incident);
        if (created || escalated) {
            if (auto queued = outbox_.enqueue(*store_, created ? "incident.opened" : "incident.escalated",
                                              incident_view, now);
                !queued) {
                return queued;
            }
        }
        if (!first_of_kind) {
            return {};
        }
        switch (decision.action) {
        case analyzer::ResponseAction::DryRun:
            return audit(analyzer_caller, "quarantine.dry-run", "workload/" + ai.workload, nullptr,
                         json{{"reason", decision.reason}, {"incident", incident.id}});
        case analyzer::ResponseAction::Page:
        case analyzer::ResponseAction::RateLimited: {
            page = json{{"incident", incident.id}, {"action", action}, {"reason", decision.reason},
                        {"subject", ai.subject}, {"severity", severity}};
            if (auto audited = audit(analyzer_caller, action == "page" ? "incident.page" : "quarantine.rate-limited",
                                     "incident/" + std::to_string(incident.id), nullptr, page);
                !audited) {
                return audited;
            }
            return outbox_.enqueue(*store_, "incident.page", json{{"page", page}, {"incident", incident_view}}, now);
        }
        case analyzer::ResponseAction::None:
        case analyzer::ResponseAction::Quarantine:
            return {};
        }
        return {};
    };
    StoreResult<void> done;
    for (int attempt = 0; attempt < 5; ++attempt) {
        done = store_->in_transaction(write);
        if (done || done.error().kind != StoreError::Kind::Conflict) {
            break;  // a Conflict means someone updated the incident meanwhile: read it again
        }
    }
    if (!done) {
        ++analysis_store_errors_;
        spdlog::error("analysis: finding {} of {} not stored: {}", f.rule_text, p.key, done.error().message);
        return;
    }
    if (skipped) {
        // The SOC resolved this storm (before a restart, or just now): the engine follows.
        std::lock_guard lock(analysis_mutex_);
        analysis_->engine.resolve(ai.id, now * 1'000'000);
        return;
    }
    {
        std::lock_guard lock(analysis_mutex_);
        analysis_->stored_of[ai.id] = incident.id;
        analysis_->analyzer_of[incident.id] = ai.id;
    }
    delivery_->wake();
    const json incident_view = incident_json(incident);
    if (created || escalated) {
        bus_.publish("incident", json{{"action", created ? "opened" : "escalated"}, {"incident", incident_view}});
    }
    if (!page.is_null()) {
        bus_.publish("page", page);
        spdlog::warn("analysis: PAGE incident {} ({}): {}", incident.id, ai.subject, decision.reason);
    }
    if (!first_of_kind || decision.action != analyzer::ResponseAction::Quarantine) {
        return;
    }
    const std::string reason = "incident " + std::to_string(incident.id) + ": " + f.explanation;
    std::expected<json, ApiError> quarantined;
    {
        std::lock_guard lock(mutex_);
        quarantined = quarantine_locked(ai.workload, reason + " (" + decision.reason + ")", "analyzer", "automation",
                                        true, incident.id, incident_view);
    }
    if (!quarantined) {
        spdlog::error("analysis: automatic quarantine of {} (incident {}) failed: {}", ai.workload, incident.id,
                      quarantined.error().message);
        return;
    }
    if ((*quarantined)["created"].get<bool>()) {
        bus_.publish("quarantine", json{{"action", "created"},
                                        {"quarantine", quarantine_json((*quarantined)["quarantine"].get<Quarantine>())}});
    }
}

// ------------------------------------------------------- durable analysis ------------------
//
// The analyzer's windows and correlation are rebuilt at start from the stored events: the
// events of the replay horizon before the newest stored event go through the same path as
// live ones, in id order. What that path writes is idempotent: a finding whose incident has
// already seen the event joins it (or leaves it resolved), counts skip events at or below the
// incident's counted_through_event, responses are recorded once per kind, webhook rows are
// written only for incidents created or escalated now. So a kill -9 in the middle of a scan
// gives one incident that counts every drop, one quarantine, and no duplicate webhook.

std::expected<void, std::string> ControllerService::restore_analysis() {
    const auto started = std::chrono::steady_clock::now();
    auto newest = store_->last_event_id();
    if (!newest) {
        return std::unexpected("cannot read the event log: " + newest.error().message);
    }
    std::int64_t from_id = 1;
    std::size_t replayed = 0;
    if (*newest > 0) {
        EventQuery last;
        last.limit = 1;
        last.through_id = *newest;
        auto newest_event = store_->query_events(last);
        if (!newest_event) {
            return std::unexpected("cannot read the event log: " + newest_event.error().message);
        }
        const std::int64_t horizon_ns =
            std::chrono::duration_cast<std::chrono::nanoseconds>(options_.analysis_replay_horizon).count();
        EventQuery q;
        q.from_ns = newest_event->empty() ? 0 : newest_event->front().time_ns - horizon_ns;
        q.through_id = *newest;
        q.newest_first = false;
        q.limit = 5000;
        while (true) {
            auto page = store_->query_events(q);
            if (!page) {
                return std::unexpected("cannot replay the event log: " + page.error().message);
            }
            if (page->empty()) {
                break;
            }
            q.after_id = page->back().id;
            replayed += page->size();
            for (auto& e : *page) {
                // The analyzer reads the ingress port and MAC that ingest took from the upload.
                if (e.document.is_object()) {
                    e.port = string_member(e.document, "physindev").value_or("");
                    if (e.port.empty()) {
                        e.port = string_member(e.document, "indev").value_or("");
                    }
                    e.mac = string_member(e.document, "src_mac").value_or("");
                }
            }
            analyse(*page, clock_());
            if (page->size() < q.limit) {
                break;
            }
        }
        from_id = *newest + 1;
    }
    sequencer_->reset(from_id);
    analysed_through_ = from_id - 1;
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
    spdlog::info("analysis: replayed {} stored events (horizon {} s) in {} ms; analysing from event {}", replayed,
                 std::chrono::duration_cast<std::chrono::seconds>(options_.analysis_replay_horizon).count(),
                 took.count(), from_id);
    return {};
}

void ControllerService::checkpoint_analysis() {
    // The engine's state is rebuilt by replay (restore_analysis); a saved engine state that
    // shortens the replay joins here once the engine can save and restore itself.
}

void ControllerService::maintenance_loop() {
    auto next_checkpoint = std::chrono::steady_clock::now() + options_.analysis_checkpoint_interval;
    std::unique_lock lock(maintenance_mutex_);
    while (!stopping_) {
        maintenance_wake_.wait_for(lock, std::chrono::milliseconds(250), [this] { return stopping_.load(); });
        if (stopping_) {
            break;
        }
        lock.unlock();
        sequencer_->close_stale_gaps();
        if (std::chrono::steady_clock::now() >= next_checkpoint) {
            checkpoint_analysis();
            next_checkpoint = std::chrono::steady_clock::now() + options_.analysis_checkpoint_interval;
        }
        lock.lock();
    }
}

ApiResult ControllerService::incident_scope(std::int64_t id, std::int64_t margin_seconds) {
    auto incident = store_->get_incident(id);
    if (!incident) {
        return std::unexpected(from_store(incident.error()));
    }
    std::shared_ptr<const analyzer::InventoryIndex> inventory;
    {
        std::lock_guard lock(analysis_mutex_);
        if (analysis_) {
            inventory = analysis_->inventory;
        }
    }
    const json& details = incident->details;
    // The incident's span: its findings' first and last drops, widened by the margin.
    std::int64_t from_ns = std::numeric_limits<std::int64_t>::max(), to_ns = 0;
    if (auto findings = details.find("findings"); findings != details.end() && findings->is_array()) {
        for (const auto& f : *findings) {
            from_ns = std::min(from_ns, f.value("first_ns", from_ns));
            to_ns = std::max(to_ns, f.value("last_ns", to_ns));
        }
    }
    if (to_ns == 0) {
        from_ns = incident->opened_at * 1'000'000;
        to_ns = incident->updated_at * 1'000'000;
    }
    from_ns -= margin_seconds * 1'000'000'000;
    to_ns += margin_seconds * 1'000'000'000 + 1;

    const bool about_target = details.value("subject_kind", "source") == "target";
    const json attribution = details.value("attribution", json::object());
    const std::string workload = attribution.value("workload", incident->source_workload);
    const std::string address = attribution.value("address", "");
    const bool vpn = is_vpn_source(workload);

    struct Edge {
        std::uint64_t blocked = 0, allowed = 0;
        std::set<std::string> services;
        std::int64_t first_ns = std::numeric_limits<std::int64_t>::max(), last_ns = 0;
    };
    std::map<std::string, json> nodes;                          // by node id
    std::map<std::pair<std::string, std::string>, Edge> edges;  // (from, to) -> traffic
    std::map<std::string, std::set<std::string>> memberships;   // node id -> policy segments
    json truncated = json::object();
    constexpr std::size_t kMaxHosts = 200;
    constexpr std::size_t kMaxOthersPerHost = 50;

    auto facts_of_address = [&](const std::string& a) -> const analyzer::WorkloadFacts* {
        return inventory ? inventory->by_address(a, "") : nullptr;
    };
    auto add_workload_node = [&](const std::string& node_id, const std::string& kind, const std::string& label,
                                 const std::string& node_address, const analyzer::WorkloadFacts* facts) {
        auto [it, fresh] = nodes.try_emplace(node_id, json{{"id", node_id}, {"kind", kind}, {"label", label}});
        if (!fresh) {
            return;
        }
        if (!node_address.empty()) {
            it->second["address"] = node_address;
        }
        if (facts != nullptr) {
            it->second["workload"] = facts->id;
            it->second["user"] = facts->user;
            it->second["hostname"] = facts->hostname;
            it->second["enforcer"] = facts->enforcer;
            it->second["critical"] = facts->critical;
            const auto segments = facts->policy_segments();
            memberships[node_id].insert(segments.begin(), segments.end());
        }
    };
    auto service_of = [](const StoredEvent& e) {
        return e.protocol + (e.dport ? "/" + std::to_string(*e.dport) : "");
    };
    auto count = [&](const std::string& from, const std::string& to, const StoredEvent& e) {
        auto& edge = edges[{from, to}];
        if (is_blocked_type(e.type)) {
            edge.blocked += e.count;
        } else {
            edge.allowed += e.count;
        }
        edge.services.insert(service_of(e));
        edge.first_ns = std::min(edge.first_ns, e.time_ns);
        edge.last_ns = std::max(edge.last_ns, e.time_ns);
    };
    auto events_where = [&](std::optional<std::string> by_workload, std::optional<std::string> by_address,
                            std::size_t limit) {
        EventQuery q;
        q.from_ns = from_ns;
        q.to_ns = to_ns;
        q.workload = std::move(by_workload);
        q.address = std::move(by_address);
        q.newest_first = false;
        q.limit = limit;
        auto found = store_->query_events(q);
        return found ? std::move(*found) : std::vector<StoredEvent>{};
    };
    std::string source_node;
    std::vector<std::string> hosts;  // target hosts, most blocked first
    if (!about_target) {
        source_node = "source:" + incident->source_workload;
        const analyzer::WorkloadFacts* facts =
            (!vpn && inventory) ? inventory->by_workload(attribution.value("enforcer", ""), workload) : nullptr;
        add_workload_node(source_node, "source", incident->source_workload, address, facts);
        if (!attribution.value("user", "").empty()) {
            nodes[source_node]["user"] = attribution.value("user", "");
        }
        // The source's own traffic: its outbound events, and inbound drops elsewhere whose
        // sender address is its address.
        std::vector<StoredEvent> own;
        if (!workload.empty() && !vpn) {
            for (auto& e : events_where(workload, std::nullopt, 10000)) {
                if (e.direction != "in" && is_traffic_type(e.type)) {
                    own.push_back(std::move(e));
                }
            }
        }
        if (!address.empty()) {
            for (auto& e : events_where(std::nullopt, address, 10000)) {
                if (e.src == address && (e.direction == "in" || workload.empty() || vpn) && is_traffic_type(e.type)) {
                    own.push_back(std::move(e));
                }
            }
        }
        std::map<std::string, std::uint64_t> blocked_by_host;
        for (const auto& e : own) {
            blocked_by_host[e.dst] += is_blocked_type(e.type) ? e.count : 0;
        }
        for (const auto& [host, n] : blocked_by_host) {
            hosts.push_back(host);
        }
        std::stable_sort(hosts.begin(), hosts.end(),
                         [&](const std::string& a, const std::string& b) { return blocked_by_host[a] > blocked_by_host[b]; });
        if (hosts.size() > kMaxHosts) {
            truncated["targets"] = hosts.size() - kMaxHosts;
            hosts.resize(kMaxHosts);
        }
        const std::set<std::string> kept(hosts.begin(), hosts.end());
        for (const auto& e : own) {
            if (!kept.contains(e.dst)) {
                continue;
            }
            const auto* target_facts = facts_of_address(e.dst);
            const std::string node = "host:" + e.dst;
            add_workload_node(node, "target", target_facts ? target_facts->id + " (" + e.dst + ")" : e.dst, e.dst,
                              target_facts);
            count(source_node, node, e);
        }
    } else {
        // Fan-in: the subject is "host proto/port"; its sources are the graph.
        const std::string subject = details.value("subject", incident->source_workload);
        const std::string host = subject.substr(0, subject.find(' '));
        const auto* facts = facts_of_address(host);
        add_workload_node("host:" + host, "target", subject, host, facts);
        hosts.push_back(host);
    }

    // Other sources that tried the same targets in the span.
    std::uint64_t others_left_out = 0;
    for (const auto& host : hosts) {
        std::map<std::string, std::vector<const StoredEvent*>> by_sender;
        const auto events = events_where(std::nullopt, host, 2000);
        for (const auto& e : events) {
            if (e.dst != host || !is_blocked_type(e.type)) {
                continue;
            }
            std::string sender = e.direction != "in" && !e.workload.empty() ? e.workload : e.src;
            if (!about_target && (sender == incident->source_workload || sender == workload ||
                                  (e.src == address && (workload.empty() || vpn || e.direction == "in")))) {
                continue;  // the incident's own source
            }
            by_sender[sender].push_back(&e);
        }
        std::size_t taken = 0;
        for (const auto& [sender, list] : by_sender) {
            if (taken++ >= kMaxOthersPerHost) {
                ++others_left_out;
                continue;
            }
            const StoredEvent& first = *list.front();
            const bool attributed = first.direction != "in" && !first.workload.empty();
            const analyzer::WorkloadFacts* facts =
                attributed && inventory ? inventory->by_workload(first.enforcer, first.workload) : facts_of_address(first.src);
            const std::string node = "source:" + sender;
            add_workload_node(node, about_target ? "source" : "other-source", sender, first.src, facts);
            for (const auto* e : list) {
                count(node, "host:" + host, *e);
            }
        }
    }
    if (others_left_out != 0) {
        truncated["other_sources"] = others_left_out;
    }

    json edge_list = json::array();
    for (const auto& [ends, edge] : edges) {
        edge_list.push_back(json{{"source", ends.first},
                                 {"target", ends.second},
                                 {"kind", edge.blocked > 0 ? "blocked" : "allowed"},
                                 {"count", edge.blocked + edge.allowed},
                                 {"blocked", edge.blocked},
                                 {"allowed", edge.allowed},
                                 {"services", edge.services},
                                 {"first_ns", edge.first_ns},
                                 {"last_ns", edge.last_ns}});
    }
    std::set<std::string> segments;
    for (const auto& [node, names] : memberships) {
        for (const auto& name : names) {
            segments.insert(name);
            edge_list.push_back(json{{"source", node}, {"target", "segment:" + name}, {"kind", "member"}});
        }
        nodes[node]["segments"] = names;
    }
    json node_list = json::array();
    for (auto& [node_id, node] : nodes) {
        node_list.push_back(std::move(node));
    }
    for (const auto& name : segments) {
        node_list.push_back(json{{"id", "segment:" + name}, {"kind", "segment"}, {"label", name}});
    }
    return json{{"schema", "bulkhead.incident-scope.v1"},
                {"incident", id},
                {"subject", details.value("subject", incident->source_workload)},
                {"subject_kind", about_target ? "target" : "source"},
                {"severity", incident->severity},
                {"explanation", incident->explanation},
                {"attribution", attribution},
                {"window", json{{"from_ns", from_ns}, {"to_ns", to_ns}, {"margin_s", margin_seconds}}},
                {"generated_at", format_time_ms(clock_())},
                {"nodes", node_list},
                {"edges", edge_list},
                {"truncated", truncated}};
}

ApiResult ControllerService::list_exemptions() {
    auto stored = store_->list_exemptions();
    if (!stored) {
        return std::unexpected(from_store(stored.error()));
    }
    json list = json::array();
    for (const auto& e : *stored) {
        list.push_back(exemption_json(e));
    }
    return json{{"exemptions", list}};
}

ApiResult ControllerService::add_exemption(const Caller& caller, const json& body) {
    if (auto ok = only_members(body, {"workload", "enforcer", "segment", "expires_ms", "reason"}, "an exemption"); !ok) {
        return std::unexpected(ok.error());
    }
    auto workload = optional_string(body, "workload", 256);
    auto enforcer = optional_string(body, "enforcer", 256);
    auto segment = optional_string(body, "segment", 256);
    for (auto* field : {&workload, &enforcer, &segment}) {
        if (!*field) {
            return std::unexpected(field->error());
        }
    }
    if (workload->has_value() == segment->has_value()) {
        return std::unexpected(error(400, "invalid-value", "give either \"workload\" or \"segment\"",
                                     json{{"pointer", workload->has_value() ? "/segment" : "/workload"}}));
    }
    if (enforcer->has_value() && !workload->has_value()) {
        return std::unexpected(error(400, "invalid-value", "\"enforcer\" narrows a workload exemption only",
                                     json{{"pointer", "/enforcer"}}));
    }
    auto reason = required_string(body, "reason", 1024);
    if (!reason) {
        return std::unexpected(reason.error());
    }
    const json* expires = member(body, "expires_ms");
    const TimeMs now = clock_();
    // An exemption always ends: at most 90 days, so a forgotten one cannot blind the analyzer.
    constexpr TimeMs kMaxDays = 90;
    if (expires == nullptr) {
        return std::unexpected(error(400, "missing-field", "required member \"expires_ms\" is missing (an exemption always expires)",
                                     json{{"pointer", ""}}));
    }
    if (!expires->is_number_integer() || expires->get<std::int64_t>() <= now ||
        expires->get<std::int64_t>() > now + kMaxDays * 86'400'000) {
        return std::unexpected(error(400, "invalid-value", "\"expires_ms\" must be a time (ms since the epoch) in the next 90 days",
                                     json{{"pointer", "/expires_ms"}}));
    }
    Exemption exemption;
    exemption.workload = workload->value_or("");
    exemption.enforcer = enforcer->value_or("");
    exemption.segment = segment->value_or("");
    exemption.expires_at = expires->get<std::int64_t>();
    exemption.reason = *reason;
    exemption.created_by = caller.name;
    exemption.created_at = now;
    json stored;
    auto tx = store_->in_transaction([&]() -> StoreResult<void> {
        auto added = store_->add_exemption(exemption);
        if (!added) {
            return std::unexpected(added.error());
        }
        stored = exemption_json(*added);
        return audit(caller, "analyzer.exemption.add", "exemption/" + std::to_string(added->id), nullptr, stored);
    });
    if (!tx) {
        return std::unexpected(from_store(tx.error()));
    }
    reapply_analysis();
    return stored;
}

ApiResult ControllerService::delete_exemption(const Caller& caller, std::int64_t id) {
    auto tx = store_->in_transaction([&]() -> StoreResult<void> {
        auto removed = store_->delete_exemption(id);
        if (!removed) {
            return std::unexpected(removed.error());
        }
        return audit(caller, "analyzer.exemption.delete", "exemption/" + std::to_string(id), exemption_json(*removed),
                     nullptr);
    });
    if (!tx) {
        return std::unexpected(from_store(tx.error()));
    }
    reapply_analysis();
    return json{{"deleted", id}};
}

ApiResult ControllerService::analyzer_status() {
    json result;
    {
        std::lock_guard lock(analysis_mutex_);
        if (!analysis_) {
            return std::unexpected(error(503, "starting", "the analyzer is not running yet"));
        }
        const auto totals = analysis_->engine.totals();
        result["totals"] = analyzer::to_json(totals);
        result["memory_bytes"] = analysis_->engine.memory_bytes();
        result["open_incidents_tracked"] = analysis_->stored_of.size();
        result["auto_quarantines_last_minute"] = analysis_->planner.recent_quarantines(clock_() * 1'000'000);
        result["max_auto_quarantines_per_minute"] = analysis_->planner.policy().max_auto_quarantines_per_minute;
    }
    result["analysed_through_event"] = analysed_through_.load();
    result["sequence_gaps_filled"] = sequencer_->gaps_filled();
    result["store_errors"] = analysis_store_errors_.load();
    // The outbox as the store holds it (every replica's rows), and this process's sends.
    auto outbox = store_->outbox_stats();
    if (!outbox) {
        return std::unexpected(from_store(outbox.error()));
    }
    const TimeMs now = clock_();
    const auto sent = delivery_->stats();
    result["outbox"] = json{{"depth", outbox->pending},
                            {"oldest_age_ms", outbox->oldest_pending_at ? json(now - *outbox->oldest_pending_at)
                                                                        : json(nullptr)},
                            {"delivered", outbox->delivered},
                            {"failed", outbox->failed}};
    result["webhooks"] = json{{"targets", options_.webhooks.targets.size()},
                              {"delivered", outbox->delivered},
                              {"retries", sent.retries},
                              {"failed", outbox->failed},
                              {"queued", outbox->pending}};
    return result;
}

ApiResult ControllerService::list_incidents(const IncidentQuery& query) {
    auto incidents = store_->list_incidents(query);
    if (!incidents) {
        return std::unexpected(from_store(incidents.error()));
    }
    json list = json::array();
    for (const auto& i : *incidents) {
        json j = incident_json(i);
        j["user"] = i.details.value("user", "");
        list.push_back(std::move(j));
    }
    return json{{"incidents", list}};
}

ApiResult ControllerService::get_incident(std::int64_t id) {
    auto incident = store_->get_incident(id);
    if (!incident) {
        return std::unexpected(from_store(incident.error()));
    }
    json j = incident_json(*incident);
    auto events = store_->incident_events(id, 1000);
    json timeline = json::array();
    json targets = json::object();
    if (events) {
        for (const auto& e : *events) {
            timeline.push_back(event_json(e));
            std::string target = e.dst + " " + e.protocol + (e.dport ? "/" + std::to_string(*e.dport) : "");
            targets[target] = targets.value(target, 0) + e.count;
        }
    }
    j["timeline"] = timeline;
    j["targets"] = targets;
    auto notes = store_->incident_notes(id);
    json note_list = json::array();
    if (notes) {
        for (const auto& n : *notes) {
            note_list.push_back(json{{"id", n.id}, {"author", n.author}, {"at", format_time_ms(n.at)}, {"text", n.text}});
        }
    }
    j["notes"] = note_list;
    if (auto w = store_->get_workload(incident->source_workload); w && *w) {
        j["source"] = (*w)->document;
    }
    if (auto q = store_->active_quarantine(incident->source_workload); q && *q) {
        j["quarantine"] = quarantine_json(**q);
    }
    return j;
}

ApiResult ControllerService::set_incident_state(const Caller& caller, std::int64_t id, IncidentState state) {
    std::optional<Incident> result;
    auto tx = store_->in_transaction([&]() -> StoreResult<void> {
        auto incident = store_->get_incident(id);
        if (!incident) {
            return std::unexpected(incident.error());
        }
        const std::string before(to_string(incident->state));
        if (incident->state == IncidentState::Resolved && state != IncidentState::Resolved) {
            return std::unexpected(StoreError{StoreError::Kind::Conflict, "incident " + std::to_string(id) + " is resolved"});
        }
        incident->state = state;
        incident->updated_at = clock_();
        auto updated = store_->update_incident(*incident);
        if (!updated) {
            return std::unexpected(updated.error());
        }
        result = *updated;
        return audit(caller, state == IncidentState::Resolved ? "incident.resolve" : "incident.acknowledge",
              "incident/" + std::to_string(id), json{{"state", before}}, json{{"state", std::string(to_string(state))}});
    });
    if (!tx) {
        return std::unexpected(from_store(tx.error()));
    }
    if (state == IncidentState::Resolved) {
        // A resolved storm is over: the source's next scan is a new incident, at once.
        std::lock_guard lock(analysis_mutex_);
        if (analysis_) {
            if (auto it = analysis_->analyzer_of.find(id); it != analysis_->analyzer_of.end()) {
                analysis_->engine.resolve(it->second, clock_() * 1'000'000);
            }
        }
    }
    bus_.publish("incident", json{{"action", std::string(to_string(state))}, {"incident", incident_json(*result)}});
    return incident_json(*result);
}

ApiResult ControllerService::add_incident_note(const Caller& caller, std::int64_t id, const json& body) {
    if (auto ok = only_members(body, {"text"}, "a note"); !ok) {
        return std::unexpected(ok.error());
    }
    auto text = required_string(body, "text", 16384);
    if (!text) {
        return std::unexpected(text.error());
    }
    std::optional<IncidentNote> stored;
    auto tx = store_->in_transaction([&]() -> StoreResult<void> {
        if (auto incident = store_->get_incident(id); !incident) {
            return std::unexpected(incident.error());
        }
        auto added = store_->add_incident_note(IncidentNote{0, id, caller.name, clock_(), *text});
        if (!added) {
            return std::unexpected(added.error());
        }
        stored = *added;
        return audit(caller, "incident.note", "incident/" + std::to_string(id), nullptr, json{{"text", *text}});
    });
    if (!tx) {
        return std::unexpected(from_store(tx.error()));
    }
    return json{{"id", stored->id}, {"incident", id}, {"author", stored->author}, {"at", format_time_ms(stored->at)},
                {"text", stored->text}};
}

// ------------------------------------------------------------ quarantine ------------------

nlohmann::json ControllerService::quarantine_json(const Quarantine& q) {
    json j = quarantine_record_json(q);
    // Per-enforcer applied state: the workload's enforcer holds the quarantine once it
    // acked the ruleset that contains it (or a later one).
    std::string enforcer;
    if (auto w = store_->get_workload(q.workload); w && *w) {
        enforcer = (*w)->enforcer;
    }
    json enforcers = json::array();
    if (!enforcer.empty()) {
        std::lock_guard lock(mutex_);
        auto desired = desired_.current(enforcer);
        const std::string acked = acked_hash_.contains(enforcer) ? acked_hash_.at(enforcer) : "";
        std::string state = "pending";
        if (desired && acked == desired->hash) {
            state = "applied";
        }
        enforcers.push_back(json{{"enforcer", enforcer},
                                 {"state", state},
                                 {"desired_generation", desired ? desired->generation : 0}});
    }
    j["enforcers"] = enforcers;
    return j;
}

bool ControllerService::wait_for_ack(const std::string& enforcer, const std::string& hash,
                                     std::chrono::milliseconds wait) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, wait, [&] {
        return stopping_ || (acked_hash_.contains(enforcer) && acked_hash_.at(enforcer) == hash);
    }) && !stopping_;
}

std::expected<nlohmann::json, ApiError> ControllerService::quarantine_locked(
    const std::string& workload, const std::string& reason, const std::string& actor, const std::string& role,
    bool automatic, std::optional<std::int64_t> incident, const json& incident_view) {
    auto record = store_->get_workload(workload);
    if (!record) {
        return std::unexpected(from_store(record.error()));
    }
    if (!*record) {
        return std::unexpected(error(404, "not-found", "no workload \"" + workload + "\""));
    }
    if (auto existing = store_->active_quarantine(workload); existing && *existing) {
        return json{{"created", false}, {"quarantine", **existing}};  // idempotent: already in force
    }
    Quarantine q;
    q.workload = workload;
    q.reason = reason;
    q.actor = actor;
    q.automatic = automatic;
    q.incident_id = incident;
    q.created_at = clock_();
    std::optional<Quarantine> stored;
    Caller caller{actor, role_from_string(role).value_or(Role::Automation), ""};
    auto tx = store_->in_transaction([&]() -> StoreResult<void> {
        auto added = store_->add_quarantine(q);
        if (!added) {
            return std::unexpected(added.error());
        }
        stored = *added;
        AuditEntry entry{0, clock_(), actor, role, "quarantine.create", "workload/" + workload, nullptr,
                         json{{"reason", reason}, {"automatic", automatic},
                              {"incident", incident ? json(*incident) : json(nullptr)}}};
        if (auto a = store_->append_audit(entry); !a) {
            return std::unexpected(a.error());
        }
        if (!incident_view.is_null()) {
            // The SOAR learns of an automatic quarantine with the incident behind it.
            // quarantine_json would take mutex_, which the caller holds.
            return outbox_.enqueue(*store_, "quarantine.created",
                                   json{{"quarantine", quarantine_record_json(*stored)}, {"incident", incident_view}},
                                   clock_());
        }
        return {};
    });
    if (!tx) {
        if (tx.error().kind == StoreError::Kind::Conflict) {
            if (auto existing = store_->active_quarantine(workload); existing && *existing) {
                return json{{"created", false}, {"quarantine", **existing}};
            }
        }
        return std::unexpected(from_store(tx.error()));
    }
    delivery_->wake();
    // A workload without an enforcer (an unmanaged server) has nothing to recompile; its
    // quarantine still counts for attribution and the record.
    if (!(*record)->enforcer.empty()) {
        if (auto rc = recompile_locked(false, {(*record)->enforcer}); !rc) {
            return std::unexpected(rc.error());
        }
    }
    return json{{"created", true}, {"quarantine", *stored}};
}

ApiResult ControllerService::create_quarantine(const Caller& caller, const json& body, std::chrono::milliseconds wait) {
    if (auto ok = only_members(body, {"workload", "address", "enforcer", "reason", "incident"}, "a quarantine"); !ok) {
        return std::unexpected(ok.error());
    }
    auto workload = optional_string(body, "workload", 256);
    auto address = optional_string(body, "address", 64);
    auto enforcer = optional_string(body, "enforcer", 128);
    auto reason = optional_string(body, "reason", 4096);
    for (const auto* field : {&workload, &address, &enforcer, &reason}) {
        if (!*field) {
            return std::unexpected(field->error());
        }
    }
    std::optional<std::int64_t> incident;
    if (const json* i = member(body, "incident"); i != nullptr && !i->is_null()) {
        if (!i->is_number_integer()) {
            return std::unexpected(error(400, "wrong-type", "\"incident\" must be an incident id", json{{"pointer", "/incident"}}));
        }
        incident = i->get<std::int64_t>();
        if (auto found = store_->get_incident(*incident); !found) {
            return std::unexpected(error(404, "not-found", "no incident " + std::to_string(*incident),
                                         json{{"pointer", "/incident"}}));
        }
    }
    if (workload->has_value() == address->has_value()) {
        return std::unexpected(error(400, "invalid-value", "give exactly one of \"workload\" and \"address\"",
                                     json{{"pointer", ""}}));
    }
    std::string target;
    if (workload->has_value()) {
        target = **workload;
    } else {
        auto parsed = policy::parse_ip_address(**address);
        if (!parsed) {
            return std::unexpected(error(400, "invalid-address", "\"" + **address + "\" is not an IP address",
                                         json{{"pointer", "/address"}}));
        }
        // Canonical text (RFC 5952 for IPv6), the form the inventory reader accepts and
        // events carry.
        **address = policy::to_string(*parsed);
        auto owners = store_->workloads_with_address(**address);
        if (!owners) {
            return std::unexpected(from_store(owners.error()));
        }
        std::vector<WorkloadRecord> candidates;
        for (const auto& w : *owners) {
            if (!enforcer->has_value() || w.enforcer == **enforcer) {
                candidates.push_back(w);
            }
        }
        if (candidates.empty()) {
            return std::unexpected(error(404, "not-found", "no workload holds address " + **address,
                                         json{{"pointer", "/address"}}));
        }
        if (candidates.size() > 1) {
            json list = json::array();
            for (const auto& c : candidates) {
                list.push_back(json{{"workload", c.id}, {"enforcer", c.enforcer}});
            }
            return std::unexpected(error(409, "ambiguous",
                                         "address " + **address + " belongs to " + std::to_string(candidates.size()) +
                                             " workloads; name the workload or add \"enforcer\"",
                                         json{{"pointer", "/address"}, {"candidates", list}}));
        }
        target = candidates.front().id;
    }
    std::expected<json, ApiError> done;
    {
        std::lock_guard lock(mutex_);
        done = quarantine_locked(target, reason->value_or(""), caller.name, std::string(to_string(caller.role)), false,
                                 incident);
    }
    if (!done) {
        return std::unexpected(done.error());
    }
    const Quarantine q = (*done)["quarantine"].get<Quarantine>();
    if ((*done)["created"].get<bool>()) {
        bus_.publish("quarantine", json{{"action", "created"}, {"quarantine", quarantine_json(q)}});
    }
    if (wait.count() > 0) {
        if (auto w = store_->get_workload(target); w && *w) {
            std::string hash;
            {
                std::lock_guard lock(mutex_);
                if (auto desired = desired_.current((*w)->enforcer)) {
                    hash = desired->hash;
                }
            }
            if (!hash.empty()) {
                wait_for_ack((*w)->enforcer, hash, wait);
            }
        }
    }
    json result = quarantine_json(q);
    result["created"] = (*done)["created"];
    return result;
}

ApiResult ControllerService::list_quarantines() {
    auto active = store_->active_quarantines();
    if (!active) {
        return std::unexpected(from_store(active.error()));
    }
    json list = json::array();
    for (const auto& q : *active) {
        list.push_back(quarantine_json(q));
    }
    return json{{"quarantines", list}};
}

ApiResult ControllerService::get_quarantine(const std::string& workload) {
    auto active = store_->active_quarantine(workload);
    if (!active) {
        return std::unexpected(from_store(active.error()));
    }
    if (!*active) {
        return std::unexpected(error(404, "not-found", "workload \"" + workload + "\" is not quarantined"));
    }
    json j = quarantine_json(**active);
    if (auto history = store_->quarantine_history(workload, 20)) {
        json list = json::array();
        for (const auto& q : *history) {
            list.push_back(json{{"reason", q.reason}, {"actor", q.actor}, {"created_at", format_time_ms(q.created_at)},
                                {"released_at", optional_time(q.released_at)}, {"released_by", q.released_by}});
        }
        j["history"] = list;
    }
    return j;
}

ApiResult ControllerService::release_quarantine(const Caller& caller, const std::string& workload,
                                                std::chrono::milliseconds wait) {
    std::string enforcer;
    std::optional<Quarantine> released;
    {
        std::lock_guard lock(mutex_);
        auto active = store_->active_quarantine(workload);
        if (!active) {
            return std::unexpected(from_store(active.error()));
        }
        if (!*active) {
            // Idempotent: releasing what is not quarantined changes nothing.
            return json{{"workload", workload}, {"released", false}};
        }
        auto tx = store_->in_transaction([&]() -> StoreResult<void> {
            auto done = store_->release_quarantine(workload, clock_(), caller.name);
            if (!done) {
                return std::unexpected(done.error());
            }
            released = *done;
            return audit(caller, "quarantine.release", "workload/" + workload, json{{"reason", (*active)->reason}}, nullptr);
        });
        if (!tx) {
            return std::unexpected(from_store(tx.error()));
        }
        // Released: what the source does next is judged afresh, not as part of the old storm.
        if (auto open = store_->unresolved_incident_of(workload); open && *open) {
            rearm_analysis((*open)->id);
        }
        if (auto w = store_->get_workload(workload); w && *w && !(*w)->enforcer.empty()) {
            enforcer = (*w)->enforcer;
            if (auto rc = recompile_locked(false, {enforcer}); !rc) {
                return std::unexpected(rc.error());
            }
        }
    }
    bus_.publish("quarantine", json{{"action", "released"}, {"workload", workload}});
    bool applied = false;
    if (wait.count() > 0 && !enforcer.empty()) {
        std::string hash;
        {
            std::lock_guard lock(mutex_);
            if (auto desired = desired_.current(enforcer)) {
                hash = desired->hash;
            }
        }
        applied = !hash.empty() && wait_for_ack(enforcer, hash, wait);
    }
    return json{{"workload", workload},
                {"released", true},
                {"released_at", optional_time(released->released_at)},
                {"enforcer", enforcer},
                {"applied", applied}};
}

// ---------------------------------------------------------------- events ------------------

ApiResult ControllerService::query_events(const EventQuery& query) {
    auto events = store_->query_events(query);
    if (!events) {
        return std::unexpected(from_store(events.error()));
    }
    json list = json::array();
    std::int64_t last_id = 0;
    for (const auto& e : *events) {
        list.push_back(event_json(e));
        last_id = e.id;
    }
    json result{{"events", list}};
    if (!query.newest_first && events->size() == query.limit) {
        result["next_after_id"] = last_id;
    }
    return result;
}

ApiResult ControllerService::count_events(std::int64_t from_ns, std::int64_t to_ns, std::int64_t bucket_ns,
                                          const EventQuery& filter) {
    auto buckets = store_->count_events(from_ns, to_ns, bucket_ns, filter);
    if (!buckets) {
        return std::unexpected(from_store(buckets.error()));
    }
    json list = json::array();
    for (const auto& b : *buckets) {
        list.push_back(json{{"start_ns", b.start_ns}, {"events", b.events}});
    }
    return json{{"from_ns", from_ns}, {"to_ns", to_ns}, {"bucket_ns", bucket_ns}, {"buckets", list}};
}

ApiResult ControllerService::query_audit(const AuditQuery& query) {
    auto entries = store_->query_audit(query);
    if (!entries) {
        return std::unexpected(from_store(entries.error()));
    }
    json list = json::array();
    for (const auto& a : *entries) {
        list.push_back(audit_json(a));
    }
    return json{{"entries", list}};
}

}  // namespace bulkhead::controller
