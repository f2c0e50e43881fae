#include "enforcer/daemon/ruleset_keeper.hpp"

#include "policies/ruleset_diff.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace bulkhead::enforcer {
namespace {

nlohmann::json base_event(std::string_view type, std::int64_t now_unix_ms) {
    return {{"type", std::string(type)}, {"time_unix_ms", now_unix_ms}};
}

std::string describe(const KernelError& error) {
    std::string out = error.message;
    if (!error.object.empty()) {
        out += " (" + error.object + ")";
    }
    return out;
}

}  // namespace

RulesetKeeper::RulesetKeeper(RulesetBackend& backend, const StateStore& state, EventSink& events,
                             Metrics& metrics)
    : backend_(backend), state_(state), events_(events), metrics_(metrics) {
    metrics_.describe("bulkhead_enforcer_applied_generation", Metrics::Kind::Gauge,
                      "Generation of the ruleset in force (monotonic per enforcer)");
    metrics_.describe("bulkhead_enforcer_applies_total", Metrics::Kind::Counter,
                      "Ruleset applies by mode (replace, diff) and result");
    metrics_.describe("bulkhead_enforcer_apply_latency_seconds", Metrics::Kind::Gauge,
                      "Latency of the last apply, kernel batch round trip included");
    metrics_.describe("bulkhead_enforcer_ruleset_elements", Metrics::Kind::Gauge,
                      "Set and map elements in the ruleset in force");
    metrics_.describe("bulkhead_enforcer_ruleset_rules", Metrics::Kind::Gauge,
                      "Rules in the ruleset in force");
    metrics_.describe("bulkhead_enforcer_drift_checks_total", Metrics::Kind::Counter,
                      "Comparisons of the kernel table with the intended ruleset");
    metrics_.describe("bulkhead_enforcer_drift_repairs_total", Metrics::Kind::Counter,
                      "Drifts found and repaired");
    metrics_.set("bulkhead_enforcer_drift_repairs_total", 0);
    metrics_.set("bulkhead_enforcer_drift_checks_total", 0);
}

std::expected<ApplyStats, KernelError> RulesetKeeper::replace(const ruleset::Ruleset& desired) {
    return backend_.replace(desired);
}

void RulesetKeeper::record_applied(const ruleset::Ruleset& desired, const ApplyStats& stats,
                                   std::string_view mode, std::int64_t now_unix_ms,
                                   std::size_t added, std::size_t removed) {
    ++generation_;
    applied_ = desired;
    metrics_.add("bulkhead_enforcer_applies_total", 1,
                 "mode=\"" + std::string(mode) + "\",result=\"ok\"");
    metrics_.set("bulkhead_enforcer_applied_generation", static_cast<double>(generation_));
    metrics_.set("bulkhead_enforcer_apply_latency_seconds",
                 std::chrono::duration<double>(stats.latency).count(),
                 "mode=\"" + std::string(mode) + "\"");
    metrics_.set("bulkhead_enforcer_ruleset_elements", static_cast<double>(desired.element_count()));
    metrics_.set("bulkhead_enforcer_ruleset_rules", static_cast<double>(desired.rule_count()));
    auto event = base_event("ruleset_applied", now_unix_ms);
    event["generation"] = generation_;
    event["hash"] = ruleset::ruleset_hash(desired);
    event["policy"] = desired.policy_name;
    event["mode"] = std::string(mode);
    event["elements_added"] = added;
    event["elements_removed"] = removed;
    event["latency_us"] = std::chrono::duration_cast<std::chrono::microseconds>(stats.latency).count();
    event["kernel_generation"] = stats.generation;
    events_.emit(event);
    // Persist only what the kernel accepted: last-known-good means exactly that.
    save_state(now_unix_ms);
}

void RulesetKeeper::save_state(std::int64_t now_unix_ms) {
    if (!applied_) {
        return;
    }
    std::vector<std::string> sources;
    for (const auto& a : held_sources_) {
        sources.push_back(policy::to_string(a));
    }
    auto saved = state_.save({generation_, now_unix_ms, *applied_, {held_.begin(), held_.end()}, std::move(sources)});
    if (!saved) {
        auto error = base_event("state_write_failed", now_unix_ms);
        error["error"] = saved.error();
        events_.emit(error);
    }
}

namespace {

constexpr std::string_view contained_set = "quarantined_ports";

bool holds(const ruleset::SetDefinition& set, const std::string& interface) {
    return std::any_of(set.elements->begin(), set.elements->end(), [&](const ruleset::Element& e) {
        return e.key.size() == 1 && std::get_if<std::string>(&e.key[0]) != nullptr &&
               std::get<std::string>(e.key[0]) == interface;
    });
}

// Whether the ruleset has ports whose tripwires the kernel may fire (the compiler's
// `tripwire_ports`): only then can the kernel add to quarantined_ports by itself.
bool arms_tripwires(const ruleset::Ruleset& ruleset) {
    const auto* armed = ruleset.find_set("tripwire_ports");
    return armed != nullptr && armed->elements && !armed->elements->empty();
}

// The same for host-mode tripwires (the compiler's `host_tripwires`): only then can the
// kernel add to blocked_sources4/6 by itself.
bool arms_host_tripwires(const ruleset::Ruleset& ruleset) {
    const auto* armed = ruleset.find_set("host_tripwires");
    return armed != nullptr && armed->elements && !armed->elements->empty();
}

std::string blocked_set_for(const policy::IpAddress& a) {
    return a.family == policy::Family::Ipv4 ? "blocked_sources4" : "blocked_sources6";
}

bool holds_address(const ruleset::SetDefinition& set, const policy::IpAddress& a) {
    const ruleset::KeyPart key = policy::IpRange{a, a};
    return std::any_of(set.elements->begin(), set.elements->end(),
                       [&](const ruleset::Element& e) { return e.key.size() == 1 && e.key[0] == key; });
}

// A copy of `set` with `part` added as one more element.
void add_element(ruleset::SetDefinition& set, ruleset::KeyPart part) {
    auto elements = std::make_shared<ruleset::ElementList>(*set.elements);
    elements->push_back(ruleset::Element{{std::move(part)}, ""});
    std::sort(elements->begin(), elements->end());
    set.elements = std::move(elements);
}

}  // namespace

ruleset::Ruleset RulesetKeeper::with_held(const ruleset::Ruleset& desired, std::int64_t now_unix_ms) {
    if (held_.empty() && held_sources_.empty()) {
        return desired;
    }
    ruleset::Ruleset out = desired;
    for (auto it = held_sources_.begin(); it != held_sources_.end();) {
        auto set = std::find_if(out.sets.begin(), out.sets.end(),
                                [&](const ruleset::SetDefinition& s) { return s.name == blocked_set_for(*it); });
        const bool owned = set != out.sets.end() && holds_address(*set, *it);
        if (set == out.sets.end() || owned) {
            // The source blocks it now (its release will unblock it), or no longer arms
            // host-mode tripwires at all.
            auto event = base_event(owned ? "kernel_containment_adopted" : "kernel_containment_dropped",
                                    now_unix_ms);
            event["source"] = policy::to_string(*it);
            events_.emit(event);
            it = held_sources_.erase(it);
            continue;
        }
        add_element(*set, policy::IpRange{*it, *it});
        ++it;
    }
    auto set = std::find_if(out.sets.begin(), out.sets.end(),
                            [](const ruleset::SetDefinition& s) { return s.name == contained_set; });
    for (auto it = held_.begin(); it != held_.end();) {
        const bool is_port = std::any_of(desired.ports.begin(), desired.ports.end(), [&](const auto& p) {
            return p.interface == *it && p.mode == policy::AttachmentMode::Port;
        });
        const bool owned = set != out.sets.end() && holds(*set, *it);
        if (!is_port || owned || set == out.sets.end()) {
            // The source holds it now (its release will remove it), or it names no port here.
            auto event = base_event(owned ? "kernel_containment_adopted" : "kernel_containment_dropped",
                                    now_unix_ms);
            event["interface"] = *it;
            events_.emit(event);
            it = held_.erase(it);
            continue;
        }
        ++it;
    }
    if (set != out.sets.end() && !held_.empty()) {
        auto elements = std::make_shared<ruleset::ElementList>(*set->elements);
        for (const auto& port : held_) {
            elements->push_back(ruleset::Element{{port}, ""});
        }
        std::sort(elements->begin(), elements->end());
        set->elements = std::move(elements);
    }
    return out;
}

bool RulesetKeeper::note_kernel_contained(const std::string& interface, std::string_view how,
                                          std::int64_t now_unix_ms) {
    if (!applied_) {
        return false;
    }
    auto set = std::find_if(applied_->sets.begin(), applied_->sets.end(),
                            [](const ruleset::SetDefinition& s) { return s.name == contained_set; });
    if (set == applied_->sets.end() || holds(*set, interface)) {
        return false;  // already quarantined (by the source, or noted before)
    }
    const auto port = std::find_if(applied_->ports.begin(), applied_->ports.end(),
                                   [&](const auto& p) { return p.interface == interface; });
    if (port == applied_->ports.end()) {
        return false;
    }
    held_.insert(interface);
    auto elements = std::make_shared<ruleset::ElementList>(*set->elements);
    elements->push_back(ruleset::Element{{interface}, ""});
    std::sort(elements->begin(), elements->end());
    set->elements = std::move(elements);
    auto event = base_event("kernel_contained", now_unix_ms);
    event["workload"] = port->workload;
    event["interface"] = interface;
    event["set"] = std::string(contained_set);
    event["seen_by"] = std::string(how);
    event["generation"] = generation_;
    events_.emit(event);
    save_state(now_unix_ms);
    return true;
}

bool RulesetKeeper::note_kernel_blocked(const policy::IpAddress& source, std::string_view how,
                                        std::int64_t now_unix_ms) {
    if (!applied_ || !arms_host_tripwires(*applied_)) {
        return false;
    }
    const std::string set_name = blocked_set_for(source);
    auto set = std::find_if(applied_->sets.begin(), applied_->sets.end(),
                            [&](const ruleset::SetDefinition& s) { return s.name == set_name; });
    if (set == applied_->sets.end() || holds_address(*set, source)) {
        return false;  // already blocked (by the source, or noted before)
    }
    held_sources_.insert(source);
    add_element(*set, policy::IpRange{source, source});
    // No workload: the sender is a remote address, which the controller maps to a workload
    // of its inventory (the server this enforcer protects is not the one contained).
    auto event = base_event("kernel_contained", now_unix_ms);
    event["source"] = policy::to_string(source);
    event["set"] = set_name;
    event["seen_by"] = std::string(how);
    event["generation"] = generation_;
    events_.emit(event);
    save_state(now_unix_ms);
    return true;
}

bool RulesetKeeper::adopt(const DriftReport& report, std::int64_t now_unix_ms) {
    bool any = false;
    // Host mode: anything in blocked_sources4/6 the ruleset does not hold was put there by
    // a tripwire rule, if this ruleset arms any (otherwise it is drift, repaired).
    if (applied_ && arms_host_tripwires(*applied_)) {
        for (const auto* name : {"blocked_sources4", "blocked_sources6"}) {
            auto it = report.dynamic_additions.find(name);
            if (it == report.dynamic_additions.end()) {
                continue;
            }
            for (const auto& e : it->second) {
                const auto* range = e.key.size() == 1 ? std::get_if<policy::IpRange>(&e.key[0]) : nullptr;
                if (range != nullptr && range->low == range->high) {
                    any = note_kernel_blocked(range->low, "read-back", now_unix_ms) || any;
                }
            }
        }
    }
    // Only an armed port can have been added by the kernel (the tripwire chains are entered
    // from `@tripwire_ports` only); anything else in the set was put there by someone else
    // and is drift, repaired like any other.
    const auto* armed = applied_ ? applied_->find_set("tripwire_ports") : nullptr;
    if (auto it = report.dynamic_additions.find(std::string(contained_set));
        armed != nullptr && it != report.dynamic_additions.end()) {
        for (const auto& e : it->second) {
            if (e.key.size() == 1 && std::get_if<std::string>(&e.key[0]) != nullptr &&
                holds(*armed, std::get<std::string>(e.key[0]))) {
                any = note_kernel_contained(std::get<std::string>(e.key[0]), "read-back", now_unix_ms) || any;
            }
        }
    }
    return any;
}

void RulesetKeeper::restore(std::int64_t now_unix_ms) {
    auto loaded = state_.load();
    if (!loaded) {
        auto event = base_event("state_unreadable", now_unix_ms);
        event["error"] = loaded.error();
        events_.emit(event);
        return;
    }
    if (!loaded->warning.empty()) {
        auto event = base_event("state_corrupt", now_unix_ms);
        event["error"] = loaded->warning;
        events_.emit(event);
    }
    if (!loaded->state) {
        return;
    }
    generation_ = loaded->state->generation;
    auto& lkg = loaded->state->ruleset;
    held_.insert(loaded->state->kernel_contained.begin(), loaded->state->kernel_contained.end());
    for (const auto& text : loaded->state->kernel_blocked_sources) {
        if (auto address = policy::parse_ip_address(text)) {
            held_sources_.insert(*address);
        }
    }
    if (!loaded->warning.empty()) {
        // The newest state was corrupt and this is the one before it. The kernel may well
        // hold that newer ruleset (a quarantine, say): rolling it back would release what
        // it contained. Leave a table that exists alone, and wait for the source; only an
        // empty kernel (a reboot) gets the older ruleset, as better than nothing.
        // The lost state was one generation newer: never hand its number out again.
        generation_ = loaded->state->generation + 1;
        metrics_.set("bulkhead_enforcer_applied_generation", static_cast<double>(generation_));
        auto report = backend_.check(lkg);
        if (report && !report->table_missing) {
            auto event = base_event("kernel_table_kept", now_unix_ms);
            event["reason"] = "the current state file was corrupt; the table in the kernel is "
                              "kept as it is until the next ruleset arrives";
            event["previous_state_generation"] = loaded->state->generation;
            events_.emit(event);
            return;
        }
    }
    // A daemon restart (not a reboot) finds its table intact: do not rewrite it. Ports a
    // tripwire quarantined while the daemon was down are adopted, not repaired away.
    auto report = backend_.check(lkg);
    if (report && !report->dynamic_additions.empty()) {
        applied_ = lkg;
        if (adopt(*report, now_unix_ms)) {
            report = backend_.check(*applied_);
        }
        lkg = *applied_;
        applied_.reset();
    }
    if (report && report->clean()) {
        applied_ = lkg;
        metrics_.set("bulkhead_enforcer_applied_generation", static_cast<double>(generation_));
        metrics_.set("bulkhead_enforcer_ruleset_elements", static_cast<double>(lkg.element_count()));
        metrics_.set("bulkhead_enforcer_ruleset_rules", static_cast<double>(lkg.rule_count()));
        auto event = base_event("last_known_good_in_force", now_unix_ms);
        event["generation"] = generation_;
        event["hash"] = ruleset::ruleset_hash(lkg);
        events_.emit(event);
        return;
    }
    auto stats = replace(lkg);
    if (!stats) {
        metrics_.add("bulkhead_enforcer_applies_total", 1, "mode=\"replace\",result=\"error\"");
        auto event = base_event("last_known_good_failed", now_unix_ms);
        event["error"] = describe(stats.error());
        events_.emit(event);
        return;
    }
    // Re-applying the same ruleset keeps its generation number; after a corrupt newest
    // state it gets a fresh one (the lost state's number is never reused).
    if (loaded->warning.empty()) {
        --generation_;
    }
    record_applied(lkg, *stats, "restore", now_unix_ms, lkg.element_count(), 0);
}

std::expected<void, std::string> RulesetKeeper::apply(const ruleset::Ruleset& from_source,
                                                      std::int64_t now_unix_ms) {
    const auto held_before = held_.size() + held_sources_.size();
    ruleset::Ruleset desired = with_held(from_source, now_unix_ms);
    if (applied_) {
        auto diff = ruleset::diff_rulesets(*applied_, desired);
        if (diff.empty()) {
            if (held_.size() + held_sources_.size() != held_before) {
                save_state(now_unix_ms);  // the source took a held port over: forget it on disk too
            }
            return {};
        }
        if (!diff.full_replace) {
            auto stats = backend_.apply_diff(diff, desired);
            if (stats) {
                record_applied(desired, *stats, "diff", now_unix_ms, diff.elements_added(),
                               diff.elements_removed());
                return {};
            }
            // The kernel disagrees with what we believe is applied (drift between checks):
            // fall back to a full replace, still one transaction.
            metrics_.add("bulkhead_enforcer_applies_total", 1, "mode=\"diff\",result=\"error\"");
            auto event = base_event("diff_rejected", now_unix_ms);
            event["error"] = describe(stats.error());
            events_.emit(event);
        }
    }
    if (applied_ && (arms_tripwires(*applied_) || arms_host_tripwires(*applied_))) {
        // A replace rewrites every set. A tripwire may have fired since the last read and
        // its NFLOG message not be read yet: take the kernel's additions in first, so the
        // replace cannot release what the kernel contained.
        if (auto report = backend_.check(*applied_);
            report && !report->dynamic_additions.empty() && adopt(*report, now_unix_ms)) {
            desired = with_held(from_source, now_unix_ms);
        }
    }
    auto stats = replace(desired);
    if (!stats) {
        metrics_.add("bulkhead_enforcer_applies_total", 1, "mode=\"replace\",result=\"error\"");
        auto event = base_event("apply_failed", now_unix_ms);
        event["error"] = describe(stats.error());
        event["hash"] = ruleset::ruleset_hash(desired);
        events_.emit(event);
        return std::unexpected(describe(stats.error()));
    }
    record_applied(desired, *stats, "replace", now_unix_ms, desired.element_count(), 0);
    return {};
}

std::expected<bool, std::string> RulesetKeeper::check_drift(std::int64_t now_unix_ms) {
    if (!applied_) {
        return false;
    }
    metrics_.add("bulkhead_enforcer_drift_checks_total", 1);
    auto report = backend_.check(*applied_);
    if (!report) {
        return std::unexpected("drift check failed: " + describe(report.error()));
    }
    if (!report->dynamic_additions.empty() && adopt(*report, now_unix_ms)) {
        // The kernel's own containments are not drift: hold them and look again.
        report = backend_.check(*applied_);
        if (!report) {
            return std::unexpected("drift check failed: " + describe(report.error()));
        }
    }
    if (report->clean()) {
        return false;
    }
    auto event = base_event("drift_detected", now_unix_ms);
    event["summary"] = report->summary();
    event["generation"] = generation_;
    events_.emit(event);
    auto stats = replace(*applied_);
    if (!stats) {
        auto failed = base_event("drift_repair_failed", now_unix_ms);
        failed["error"] = describe(stats.error());
        events_.emit(failed);
        return std::unexpected("drift repair failed: " + describe(stats.error()));
    }
    metrics_.add("bulkhead_enforcer_drift_repairs_total", 1);
    auto repaired = base_event("drift_repaired", now_unix_ms);
    repaired["generation"] = generation_;
    repaired["latency_us"] = std::chrono::duration_cast<std::chrono::microseconds>(stats->latency).count();
    events_.emit(repaired);
    return true;
}

}  // namespace bulkhead::enforcer
