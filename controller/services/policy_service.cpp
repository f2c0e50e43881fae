#include "controller/services/policy_service.hpp"

#include "policies/net_address.hpp"
#include "policies/policy_evaluator.hpp"
#include "policies/policy_reader.hpp"
#include "policies/ruleset_diff.hpp"

#include <algorithm>

namespace bulkhead::controller {

using nlohmann::json;

PolicyService::PolicyService(ActiveConfiguration& configuration, FleetService& fleet, Transactions& transactions,
                             PolicyRepository& policies, EventRepository& events, AuditLog& audit, EventBus& bus,
                             Clock clock)
    : configuration_(configuration), fleet_(fleet), transactions_(transactions), policies_(policies), events_(events),
      audit_(audit), bus_(bus), clock_(std::move(clock)) {}

ServiceResult PolicyService::validate_policy(const json& document) {
    auto policy = policy::read_policy(document, "policy");
    if (!policy) {
        return std::unexpected(invalid_document("the policy is invalid", policy.error()));
    }
    auto inventory = configuration_.load_inventory();
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
            return std::unexpected(service_error(ErrorKind::InvalidDocument, "compile-failed", "enforcer " + enforcer + ": " + compiled.error()));
        }
    }
    return json{{"valid", true}, {"name", policy->name}, {"enforcers", compiler.enforcers()}};
}

ServiceResult PolicyService::upload_policy(const Caller& caller, const json& body) {
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
    auto tx = transactions_.in_transaction([&]() -> StoreResult<void> {
        auto added = policies_.add_revision(revision);
        if (!added) {
            return std::unexpected(added.error());
        }
        stored = *added;
        return audit_.record(caller, "policy.upload", "revision/" + std::to_string(added->id), nullptr,
              revision_json(*added, false));
    });
    if (!tx) {
        return std::unexpected(from_store(tx.error()));
    }
    return revision_json(*stored, false);
}

ServiceResult PolicyService::list_policies(std::size_t limit) {
    auto revisions = policies_.list_revisions(std::min<std::size_t>(limit, 1000));
    if (!revisions) {
        return std::unexpected(from_store(revisions.error()));
    }
    json list = json::array();
    for (const auto& r : *revisions) {
        list.push_back(revision_json(r, false));
    }
    return json{{"revisions", list}};
}

ServiceResult PolicyService::get_policy(std::int64_t id) {
    auto revision = policies_.get_revision(id);
    if (!revision) {
        return std::unexpected(from_store(revision.error()));
    }
    return revision_json(*revision, true);
}

ServiceResult PolicyService::active_policy() {
    auto revision = policies_.active_revision();
    if (!revision) {
        return std::unexpected(from_store(revision.error()));
    }
    if (!*revision) {
        return std::unexpected(service_error(ErrorKind::NotFound, "not-found", "no policy has been activated yet"));
    }
    return revision_json(**revision, true);
}

std::expected<std::pair<std::shared_ptr<const CompiledConfiguration>, std::shared_ptr<const CompiledConfiguration>>,
              ServiceError>
PolicyService::draft_and_active(std::int64_t id) {
    auto revision = policies_.get_revision(id);
    if (!revision) {
        return std::unexpected(from_store(revision.error()));
    }
    auto draft = configuration_.build(*revision);
    if (!draft) {
        return std::unexpected(draft.error());
    }
    return std::make_pair(*draft, configuration_.current());
}

ServiceResult PolicyService::diff_policy(std::int64_t id) {
    auto pair = draft_and_active(id);
    if (!pair) {
        return std::unexpected(pair.error());
    }
    const auto& [draft, active] = *pair;
    const auto quarantined_or_error = fleet_.quarantined_workloads();
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

ServiceResult PolicyService::what_if(std::int64_t id, std::int64_t from_ns, std::int64_t to_ns, std::size_t limit) {
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
                                                   draft->inventory());
    const policy::PolicyEvaluator draft_evaluator(*draft->policy, draft->inventory());

    // Stored drops and allowed flows of the range, oldest first, up to `limit`.
    std::vector<StoredEvent> events;
    EventQuery query;
    query.from_ns = from_ns;
    query.to_ns = to_ns;
    query.newest_first = false;
    query.limit = 5000;
    bool truncated = false;
    while (events.size() < limit) {
        auto page = events_.query_events(query);
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
    const auto quarantined = fleet_.quarantined_workloads();
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

ServiceResult PolicyService::activate_policy(const Caller& caller, std::int64_t id) {
    auto revision = policies_.get_revision(id);
    if (!revision) {
        return std::unexpected(from_store(revision.error()));
    }
    // One configuration change at a time, from the compile to the install.
    auto changes = configuration_.lock_changes();
    // Compile before anything is stored: a revision that no longer fits the inventory is
    // refused and nothing changes anywhere.
    auto compiled = configuration_.build(*revision);
    if (!compiled) {
        return std::unexpected(compiled.error());
    }
    std::optional<PolicyRevision> previous;
    auto active = policies_.active_revision();
    if (!active) {
        return std::unexpected(from_store(active.error(), "policy"));
    }
    if (*active) {
        previous = **active;
    }
    if (previous && previous->id == id) {
        json result = revision_json(*previous, false);  // already active: nothing to do
        result["generation"] = fleet_.generation();
        return result;
    }
    std::optional<PolicyRevision> activated;
    auto tx = transactions_.in_transaction([&]() -> StoreResult<void> {
        auto done = policies_.activate_revision(id, clock_());
        if (!done) {
            return std::unexpected(done.error());
        }
        activated = *done;
        return audit_.record(caller, "policy.activate", "revision/" + std::to_string(id),
                             previous ? json{{"active_revision", previous->id}} : json(nullptr),
                             json{{"active_revision", id}});
    });
    if (!tx) {
        return std::unexpected(from_store(tx.error(), "policy"));
    }
    if (auto installed = configuration_.install(*compiled); !installed) {
        return std::unexpected(installed.error());
    }
    json result = revision_json(*activated, false);
    result["generation"] = fleet_.generation();
    bus_.publish("policy", result);
    return result;
}

ServiceResult PolicyService::rollback_policy(const Caller& caller) {
    auto revisions = policies_.list_revisions(1000);
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
        return std::unexpected(service_error(ErrorKind::Conflict, "nothing-to-roll-back", "no earlier active revision exists"));
    }
    return activate_policy(caller, target->id);
}
}  // namespace bulkhead::controller
