#include "controller/services/incident_ledger.hpp"

#include "policies/policy_model.hpp"

#include <algorithm>

namespace bulkhead::controller {

using nlohmann::json;

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

json finding_json(const analyzer::Finding& f, TimeMs now) {
    json j = analyzer::to_json(f);
    j["kind"] = f.rule_text;  // the rule, under the name incidents have always used
    j["targets"] = f.sample_targets;
    j["at"] = format_time_ms(now);
    j.erase("incident");
    return j;
}

}  // namespace

IncidentLedger::IncidentLedger(Transactions& transactions, IncidentRepository& incidents, EventRepository& events,
                               OutboxRepository& outbox_store, const WebhookOutbox& outbox, AuditLog& audit,
                               Clock clock)
    : transactions_(transactions), incidents_(incidents), events_(events), outbox_store_(outbox_store),
      outbox_(outbox), audit_(audit), clock_(std::move(clock)) {}

std::optional<std::int64_t> IncidentLedger::stored_of(std::uint64_t analyzer_incident) const {
    std::lock_guard lock(mutex_);
    auto it = stored_of_.find(analyzer_incident);
    return it == stored_of_.end() ? std::nullopt : std::optional<std::int64_t>(it->second);
}

std::optional<std::uint64_t> IncidentLedger::analyzer_of(std::int64_t stored_incident) const {
    std::lock_guard lock(mutex_);
    auto it = analyzer_of_.find(stored_incident);
    return it == analyzer_of_.end() ? std::nullopt : std::optional<std::uint64_t>(it->second);
}

std::size_t IncidentLedger::size() const {
    std::lock_guard lock(mutex_);
    return stored_of_.size();
}

json IncidentLedger::save() const {
    std::lock_guard lock(mutex_);
    json pairs = json::array();
    for (const auto& [analyzer_id, stored_id] : stored_of_) {
        pairs.push_back(json::array({analyzer_id, stored_id}));
    }
    return json{{"version", 1}, {"incidents", pairs}};
}

void IncidentLedger::restore(const json& saved) {
    std::lock_guard lock(mutex_);
    stored_of_.clear();
    analyzer_of_.clear();
    if (!saved.is_object() || saved.value("version", 0) != 1 || !saved.contains("incidents")) {
        return;
    }
    for (const auto& pair : saved["incidents"]) {
        if (pair.is_array() && pair.size() == 2 && pair[0].is_number_unsigned() && pair[1].is_number_integer()) {
            stored_of_[pair[0].get<std::uint64_t>()] = pair[1].get<std::int64_t>();
            analyzer_of_[pair[1].get<std::int64_t>()] = pair[0].get<std::uint64_t>();
        }
    }
}

std::expected<RecordedFinding, StoreError> IncidentLedger::record(const PendingFinding& p) {
    std::lock_guard writes(write_mutex_);
    const TimeMs now = clock_();
    const auto& f = p.finding;
    const auto& ai = p.incident;
    const auto& decision = p.decision;
    const std::string severity(policy::to_string(ai.severity));
    const std::int64_t mapped_id = stored_of(ai.id).value_or(0);
    const std::string action(analyzer::to_string(decision.action));
    const json finding = finding_json(f, now);
    const Caller analyzer_caller{"analyzer", Role::Automation, ""};

    // The incident, its timeline links, the response record, the audit entries and the
    // webhook rows: one transaction, so a crash leaves all or none of them. Versioned
    // updates make a concurrent change (the SOC resolving it) win rather than be reverted.
    RecordedFinding out;
    Incident& incident = out.incident;
    bool& created = out.created;
    bool& escalated = out.escalated;
    bool& skipped = out.skipped;
    bool& first_of_kind = out.first_of_kind;
    json& page = out.page;
    auto write = [&]() -> StoreResult<void> {
        created = escalated = skipped = first_of_kind = false;
        page = nullptr;
        std::int64_t stored_id = mapped_id;
        if (stored_id != 0) {
            auto existing = incidents_.get_incident(stored_id);
            if (!existing) {
                return std::unexpected(existing.error());
            }
            incident = *existing;
            if (incident.state == IncidentState::Resolved) {
                skipped = true;  // resolved while this finding was on its way
                return {};
            }
        } else {
            auto latest = incidents_.list_incidents(IncidentQuery{std::nullopt, p.key, std::nullopt, 1});
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
            auto added = incidents_.add_incident(incident);
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
                auto earlier = events_.query_events(window);
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
                if (auto links = incidents_.link_incident_events(incident.id, linked); !links) {
                    return links;
                }
            }
        }
        auto updated = incidents_.update_incident(incident);
        if (!updated) {
            return std::unexpected(updated.error());
        }
        incident = *updated;
        const json incident_view = incident_json(incident);
        if (created || escalated) {
            if (auto queued = outbox_.enqueue(outbox_store_, created ? "incident.opened" : "incident.escalated",
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
            return audit_.record(analyzer_caller, "quarantine.dry-run", "workload/" + ai.workload, nullptr,
                         json{{"reason", decision.reason}, {"incident", incident.id}});
        case analyzer::ResponseAction::Page:
        case analyzer::ResponseAction::RateLimited: {
            page = json{{"incident", incident.id}, {"action", action}, {"reason", decision.reason},
                        {"subject", ai.subject}, {"severity", severity}};
            if (auto audited = audit_.record(analyzer_caller, action == "page" ? "incident.page" : "quarantine.rate-limited",
                                     "incident/" + std::to_string(incident.id), nullptr, page);
                !audited) {
                return audited;
            }
            return outbox_.enqueue(outbox_store_, "incident.page", json{{"page", page}, {"incident", incident_view}}, now);
        }
        case analyzer::ResponseAction::None:
        case analyzer::ResponseAction::Quarantine:
            return {};
        }
        return {};
    };
    StoreResult<void> done;
    for (int attempt = 0; attempt < 5; ++attempt) {
        done = transactions_.in_transaction(write);
        if (done || done.error().kind != StoreError::Kind::Conflict) {
            break;  // a Conflict means someone updated the incident meanwhile: read it again
        }
    }
    if (!done) {
        return std::unexpected(done.error());
    }
    if (!out.skipped) {
        std::lock_guard lock(mutex_);
        stored_of_[ai.id] = out.incident.id;
        analyzer_of_[out.incident.id] = ai.id;
    }
    return out;
}

StoreResult<void> IncidentLedger::count(const std::map<std::uint64_t, CountedEvents>& counted,
                                        const std::map<std::string, CountedEvents>& contained) {
    std::lock_guard writes(write_mutex_);
    const TimeMs now = clock_();
    std::vector<std::pair<std::int64_t, const CountedEvents*>> touched;
    for (const auto& [analyzer_id, events] : counted) {
        if (auto stored = stored_of(analyzer_id)) {
            touched.emplace_back(*stored, &events);
        }
    }
    if (touched.empty() && contained.empty()) {
        return {};
    }
    auto add_events = [&](Incident incident, const CountedEvents& events) -> StoreResult<void> {
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
        if (auto updated = incidents_.update_incident(incident); !updated) {
            return std::unexpected(updated.error());
        }
        if (!timeline_full) {
            return incidents_.link_incident_events(incident.id, ids);
        }
        return {};
    };
    auto done = transactions_.in_transaction([&]() -> StoreResult<void> {
        for (const auto& [stored_id, events] : touched) {
            auto incident = incidents_.get_incident(stored_id);
            if (!incident) {
                return std::unexpected(incident.error());
            }
            if (auto ok = add_events(std::move(*incident), *events); !ok) {
                return ok;
            }
        }
        for (const auto& [workload, events] : contained) {
            auto open = incidents_.unresolved_incident_of(workload);
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
    return done;
}

}  // namespace bulkhead::controller
