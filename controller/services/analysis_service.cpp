#include "controller/services/analysis_service.hpp"

#include <spdlog/spdlog.h>

namespace bulkhead::controller {

using nlohmann::json;

namespace {

// The store keys incidents by a source text: the workload id for attributed sources (what
// quarantine, the API's ?workload= and the dashboard link by), else the analyzer's subject.
std::string incident_key(const analyzer::Incident& incident) {
    if (incident.about_target) {
        return "target:" + incident.subject;
    }
    return incident.workload.empty() ? incident.subject : incident.workload;
}

std::vector<analyzer::Exemption> to_analyzer_exemptions(const std::vector<Exemption>& list) {
    std::vector<analyzer::Exemption> out;
    for (const auto& e : list) {
        out.push_back(analyzer::Exemption{e.enforcer, e.workload, e.segment, e.expires_at * 1'000'000, e.reason});
    }
    return out;
}

}  // namespace

struct AnalysisService::Engine {
    explicit Engine(const analyzer::AnalyzerConfig& config) : engine(config) {}
    analyzer::Analyzer engine;
    analyzer::ResponsePlanner planner;
    std::shared_ptr<const analyzer::InventoryIndex> inventory;
};

AnalysisService::AnalysisService(AnalysisOptions options, EventRepository& events, VpnSessionRepository& vpn_sessions,
                                 IncidentRepository& incidents, QuarantineRepository& quarantines,
                                 ExemptionRepository& exemptions, AnalysisStateRepository& state,
                                 IncidentLedger& ledger, QuarantineService& quarantine, EventBus& bus, Clock clock)
    : options_(std::move(options)), events_(events), vpn_sessions_(vpn_sessions), incidents_(incidents),
      quarantines_(quarantines), exemptions_(exemptions), state_(&state), ledger_(ledger), quarantine_(quarantine),
      bus_(bus), clock_(std::move(clock)), engine_(std::make_unique<Engine>(options_.analyzer)),
      sequencer_(
          [this](std::vector<StoredEvent>& batch) {
              analyse(batch);
              analysed_through_ = batch.back().id;
          },
          [this](std::int64_t from, std::int64_t to) {
              std::vector<StoredEvent> found;
              EventQuery q;
              q.after_id = from - 1;
              q.through_id = to - 1;
              q.newest_first = false;
              q.limit = 10000;
              while (true) {
                  auto page = events_.query_events(q);
                  if (!page) {
                      spdlog::error("analysis: cannot read events {}..{} back: {}", from, to - 1,
                                    page.error().message);
                      ++store_errors_;
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
          std::chrono::milliseconds(1000)) {}

AnalysisService::~AnalysisService() { shutdown(); }

std::expected<void, ServiceError> AnalysisService::configure(const std::shared_ptr<const CompiledConfiguration>& compiled) {
    analyzer::AnalyzerConfig config = options_.analyzer;
    // The configuration file's exemptions, then those the SOC added through the API.
    if (auto stored = exemptions_.list_exemptions()) {
        for (auto& e : to_analyzer_exemptions(*stored)) {
            config.exemptions.push_back(std::move(e));
        }
    } else {
        // Keeping the engine's current exemptions is the safe side: forgetting them would
        // page for every known scanner, inventing some is impossible.
        spdlog::error("analysis: cannot read the exemptions: {}; the analyzer keeps the ones it has",
                      stored.error().message);
        ++store_errors_;
        std::lock_guard lock(mutex_);
        config.exemptions = engine_->engine.config().exemptions;
    }
    policy::ResponsePolicy response;
    if (compiled && compiled->policy) {
        response = compiled->policy->response;
        analyzer::apply_response_policy(config, response);
    }
    analyzer::InventoryIndex::SegmentsOf segments_of;
    if (compiled && compiled->policy && compiled->compiler) {
        segments_of = [&compiled](std::size_t workload) { return compiled->compiler->segments_of(workload); };
    }
    auto index = std::make_shared<const analyzer::InventoryIndex>(
        compiled ? compiled->inventory() : policy::Inventory{},
        compiled && compiled->policy ? &*compiled->policy : nullptr, segments_of);
    std::lock_guard lock(mutex_);
    configuration_ = compiled;
    engine_->engine.reconfigure(config);
    engine_->planner.set_policy(response);
    engine_->inventory = std::move(index);
    return {};
}

void AnalysisService::reconfigure() {
    std::shared_ptr<const CompiledConfiguration> compiled;
    {
        std::lock_guard lock(mutex_);
        compiled = configuration_;
    }
    (void)configure(compiled);  // cannot fail: a failed exemptions read keeps the current ones
}

void AnalysisService::resolved(std::int64_t stored_incident) {
    if (auto analyzer_id = ledger_.analyzer_of(stored_incident)) {
        std::lock_guard lock(mutex_);
        engine_->engine.resolve(*analyzer_id, clock_() * 1'000'000);
    }
}

void AnalysisService::released(const std::string& workload) {
    auto open = incidents_.unresolved_incident_of(workload);
    if (!open) {
        spdlog::warn("analysis: release of {}: cannot find its incident to re-arm: {}", workload,
                     open.error().message);
        ++store_errors_;
        return;
    }
    if (!*open) {
        return;
    }
    if (auto analyzer_id = ledger_.analyzer_of((*open)->id)) {
        std::lock_guard lock(mutex_);
        engine_->engine.rearm(*analyzer_id);
    }
}

std::shared_ptr<const analyzer::InventoryIndex> AnalysisService::inventory_index() const {
    std::lock_guard lock(mutex_);
    return engine_->inventory;
}

void AnalysisService::analyse(std::vector<StoredEvent>& fresh) {
    std::vector<PendingFinding> pending;
    // The events each engine incident (or contained workload) counted, as (event id, count).
    std::map<std::uint64_t, CountedEvents> counted;
    std::map<std::string, CountedEvents> contained;
    // VPN sessions of this batch's unattributed senders (one lookup per address).
    std::map<std::string, std::optional<VpnSession>> sessions;
    {
        std::lock_guard lock(mutex_);
        auto& engine = engine_->engine;
        const auto* inventory = engine_->inventory.get();
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
            r.sport = e.sport;
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
                    auto session = vpn_sessions_.vpn_session_for(r.address, at);
                    if (!session) {
                        // Attribution degrades to the address; the drop is still analysed.
                        spdlog::warn("analysis: VPN session of {} at {}: {}", r.address, at, session.error().message);
                        ++store_errors_;
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
                p.kernel_contained = e.reason == "tripwire";
                p.kernel_ns = e.time_ns;
                p.path = e.path;
                p.detected_ns = wall_clock_ns();
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
        act_on(p);
    }
    // An enforcer's report that its kernel quarantined a port on a tripwire. Normally the
    // tripwire's drop (same batch) has recorded the quarantine with its incident above; this
    // catches a drop that was lost or analysed earlier, so the record never misses what is
    // in force on the host.
    // A host-mode tripwire names the sender's address instead ("source"): the workload is
    // the managed one holding that address, if exactly one does (never a guess); an address
    // the inventory does not know stays blocked on that host, recorded by its drop event.
    const auto inventory = inventory_index();
    for (const auto& e : fresh) {
        if (e.type != "kernel_contained") {
            continue;
        }
        const auto detail = json::parse(e.document_text, nullptr, false);
        std::string workload = e.workload;
        std::string where = e.enforcer + "/" + (detail.is_object() ? detail.value("interface", "") : "");
        if (workload.empty() && detail.is_object() && detail.contains("source") && inventory != nullptr) {
            const std::string source = detail.value("source", "");
            if (const auto* holder = inventory->by_address(source, ""); holder != nullptr && !holder->enforcer.empty()) {
                workload = holder->id;
                where = e.enforcer + " (sender " + source + " blocked)";
            }
        }
        if (workload.empty()) {
            continue;
        }
        if (auto done = quarantine_.quarantine_automatically(
                workload, "contained by the kernel: tripwire on " + where, std::nullopt, nullptr, std::string(kernel_actor));
            !done) {
            ++store_errors_;
            spdlog::error("analysis: kernel containment of {} on {} not recorded: {}", workload, where,
                          done.error().message);
        }
    }
    if (auto done = ledger_.count(counted, contained); !done) {
        // The events are stored (the upload is answered as accepted, so the enforcer does
        // not resend them); only the incident counters lag. Counted so the operator sees it.
        ++store_errors_;
        spdlog::error("analysis: incident counters not updated: {}", done.error().message);
    }
}

void AnalysisService::act_on(PendingFinding& p) {
    const TimeMs now = clock_();
    const auto& ai = p.incident;
    // What to do about it (policy "response"), decided once per finding.
    analyzer::ResponseSubject subject;
    subject.managed = p.managed;
    subject.critical = p.critical;
    subject.segments = p.policy_segments;
    if (p.managed) {
        auto q = quarantines_.active_quarantine(ai.workload);
        if (!q) {
            spdlog::warn("analysis: quarantine state of {}: {}", ai.workload, q.error().message);
            ++store_errors_;
        }
        subject.already_quarantined = q && *q;
    }
    {
        std::lock_guard lock(mutex_);
        p.decision = engine_->planner.decide(ai, p.finding, subject, now * 1'000'000);
    }
    auto recorded = ledger_.record(p);
    const std::int64_t recorded_ns = wall_clock_ns();
    if (!recorded) {
        ++store_errors_;
        spdlog::error("analysis: finding {} of {} not stored: {}", p.finding.rule_text, p.key,
                      recorded.error().message);
        return;
    }
    if (recorded->skipped) {
        // The SOC resolved this storm (before a restart, or just now): the engine follows.
        std::lock_guard lock(mutex_);
        engine_->engine.resolve(ai.id, now * 1'000'000);
        return;
    }
    const json incident_view = incident_json(recorded->incident);
    if (recorded->created || recorded->escalated) {
        bus_.publish("incident", json{{"action", recorded->created ? "opened" : "escalated"}, {"incident", incident_view}});
    }
    if (!recorded->page.is_null()) {
        bus_.publish("page", recorded->page);
        spdlog::warn("analysis: PAGE incident {} ({}): {}", recorded->incident.id, ai.subject, p.decision.reason);
    }
    if (recorded->created || recorded->escalated || !recorded->page.is_null()) {
        if (outbox_written_) {
            outbox_written_();
        }
    }
    if (p.kernel_contained && p.managed && !ai.about_target) {
        // In force on the host already: record it whatever the planner says (the compiler
        // armed this tripwire only where the guardrails allow automatic quarantine).
        const std::string reason = "contained by the kernel: incident " + std::to_string(recorded->incident.id) +
                                   ": " + p.finding.explanation;
        if (auto done = quarantine_.quarantine_automatically(ai.workload, reason, recorded->incident.id,
                                                             incident_view, std::string(kernel_actor));
            !done) {
            spdlog::error("analysis: kernel containment of {} (incident {}) not recorded: {}", ai.workload,
                          recorded->incident.id, done.error().message);
        }
        return;
    }
    if (!recorded->first_of_kind || p.decision.action != analyzer::ResponseAction::Quarantine) {
        return;
    }
    const std::string reason = "incident " + std::to_string(recorded->incident.id) + ": " + p.finding.explanation +
                               " (" + p.decision.reason + ")";
    auto done = quarantine_.quarantine_automatically(ai.workload, reason, recorded->incident.id, incident_view);
    if (!done) {
        spdlog::error("analysis: automatic quarantine of {} (incident {}) failed: {}", ai.workload,
                      recorded->incident.id, done.error().message);
        return;
    }
    if ((*done)["created"].get<bool>()) {
        ContainmentTimeline t;
        t.quarantined_ns = wall_clock_ns();
        t.incident = recorded->incident.id;
        t.workload = ai.workload;
        t.enforcer = done->value("enforcer", "");
        t.detector = p.finding.rule_text;
        t.generation = done->value("generation", std::uint64_t{0});
        t.event = p.event_id;
        t.kernel_ns = p.kernel_ns;
        t.path = p.path;
        t.detected_ns = p.detected_ns;
        t.recorded_ns = recorded_ns;
        timelines_.add(std::move(t));
    }
}

// A restart: the checkpoint, if one can be read, then the events stored after it; else the
// events of the replay horizon. Either way in id order through the same path as live
// events, which is idempotent (IncidentLedger), so what was already recorded before a crash
// is joined, not repeated.
std::optional<std::int64_t> AnalysisService::restore_checkpoint() {
    auto stored = state_->load_analysis_checkpoint();
    if (!stored) {
        spdlog::warn("analysis: cannot read the checkpoint ({}); rebuilding from the replay horizon",
                     stored.error().message);
        ++store_errors_;
        return std::nullopt;
    }
    if (!*stored) {
        return std::nullopt;
    }
    const auto& cp = **stored;
    std::lock_guard lock(mutex_);
    auto engine = analyzer::Analyzer::restore_state(cp.engine, engine_->engine.config());
    if (!engine) {
        spdlog::warn("analysis: checkpoint through event {} not usable ({}); rebuilding from the replay horizon",
                     cp.through_event_id, engine.error());
        return std::nullopt;
    }
    analyzer::ResponsePlanner planner = engine_->planner;
    if (auto restored = planner.restore_state(cp.planner); !restored) {
        spdlog::warn("analysis: the response planner's checkpoint is not usable ({}); its rate limit starts afresh",
                     restored.error());
    }
    auto ledger = json::parse(cp.ledger, nullptr, false);
    if (ledger.is_discarded()) {
        spdlog::warn("analysis: checkpoint through event {} has a corrupt incident map; rebuilding from the replay "
                     "horizon",
                     cp.through_event_id);
        return std::nullopt;
    }
    engine_->engine = std::move(*engine);
    engine_->planner = std::move(planner);
    ledger_.restore(ledger);
    checkpoint_through_ = cp.through_event_id;
    return cp.through_event_id + 1;
}

std::expected<std::size_t, std::string> AnalysisService::replay(EventQuery q) {
    std::size_t replayed = 0;
    q.newest_first = false;
    q.limit = 5000;
    while (true) {
        auto page = events_.query_events(q);
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
            restore_upload_fields(e);
        }
        const bool last_page = page->size() < q.limit;
        analyse(*page);
        if (last_page) {
            break;
        }
    }
    return replayed;
}

std::expected<void, std::string> AnalysisService::start() {
    const auto started = std::chrono::steady_clock::now();
    auto newest = events_.last_event_id();
    if (!newest) {
        return std::unexpected("cannot read the event log: " + newest.error().message);
    }
    EventQuery q;
    q.through_id = *newest;
    const auto resume_at = restore_checkpoint();
    if (resume_at) {
        q.after_id = *resume_at - 1;
    } else if (*newest > 0) {
        EventQuery last;
        last.limit = 1;
        last.through_id = *newest;
        auto newest_event = events_.query_events(last);
        if (!newest_event) {
            return std::unexpected("cannot read the event log: " + newest_event.error().message);
        }
        const std::int64_t horizon_ns =
            std::chrono::duration_cast<std::chrono::nanoseconds>(options_.replay_horizon).count();
        q.from_ns = newest_event->empty() ? 0 : newest_event->front().time_ns - horizon_ns;
    }
    std::size_t replayed = 0;
    if (*newest > 0 && (!resume_at || *resume_at <= *newest)) {
        auto done = replay(q);
        if (!done) {
            return std::unexpected(done.error());
        }
        replayed = *done;
    }
    const std::int64_t from_id = std::max<std::int64_t>(*newest + 1, resume_at.value_or(1));
    sequencer_.reset(from_id);
    analysed_through_ = from_id - 1;
    const auto took_ms = milliseconds_since(started);
    restart_ = json{{"from_checkpoint", resume_at.has_value()},
                    {"checkpoint_through_event", resume_at ? json(*resume_at - 1) : json(nullptr)},
                    {"replayed_events", replayed},
                    {"took_ms", took_ms}};
    spdlog::info("analysis: {}; replayed {} stored events in {} ms; analysing from event {}",
                 resume_at ? "restored the checkpoint through event " + std::to_string(*resume_at - 1)
                           : "no usable checkpoint, replay horizon " +
                                 std::to_string(std::chrono::duration_cast<std::chrono::seconds>(options_.replay_horizon)
                                                    .count()) +
                                 " s",
                 replayed, took_ms, from_id);
    maintenance_ = std::thread([this] { maintenance_loop(); });
    return {};
}

std::expected<void, std::string> AnalysisService::checkpoint() {
    std::expected<void, std::string> result;
    sequencer_.at_quiet_point([&](std::int64_t next_id) {
        const std::int64_t through = next_id - 1;
        if (through <= checkpoint_through_.load()) {
            return;  // nothing analysed since the last one
        }
        AnalysisCheckpoint cp;
        cp.through_event_id = through;
        cp.taken_at = clock_();
        {
            std::lock_guard lock(mutex_);
            cp.engine = engine_->engine.save_state();
            cp.planner = engine_->planner.save_state();
        }
        cp.ledger = ledger_.save().dump();
        if (auto saved = state_->save_analysis_checkpoint(cp); !saved) {
            ++store_errors_;
            result = std::unexpected("cannot save the analysis checkpoint: " + saved.error().message);
            return;
        }
        checkpoint_through_ = through;
    });
    if (!result) {
        spdlog::error("analysis: {}; a restart replays from the previous one", result.error());
    }
    return result;
}

void AnalysisService::shutdown() {
    if (stopping_.exchange(true)) {
        return;
    }
    {
        std::lock_guard lock(maintenance_mutex_);
    }
    maintenance_wake_.notify_all();
    if (maintenance_.joinable()) {
        maintenance_.join();
        // A clean stop leaves nothing to replay.
        sequencer_.drain(std::chrono::seconds(5));
        (void)checkpoint();  // a failure is logged and counted there; the replay covers it
    }
}

void AnalysisService::maintenance_loop() {
    auto next_checkpoint = std::chrono::steady_clock::now() + options_.checkpoint_interval;
    std::unique_lock lock(maintenance_mutex_);
    while (!stopping_) {
        maintenance_wake_.wait_for(lock, std::chrono::milliseconds(250), [this] { return stopping_.load(); });
        if (stopping_) {
            break;
        }
        lock.unlock();
        sequencer_.close_stale_gaps();
        if (std::chrono::steady_clock::now() >= next_checkpoint) {
            (void)checkpoint();  // a failure is logged and counted there; the next one retries
            next_checkpoint = std::chrono::steady_clock::now() + options_.checkpoint_interval;
        }
        lock.lock();
    }
}

ServiceResult AnalysisService::status() {
    json result;
    {
        std::lock_guard lock(mutex_);
        const auto totals = engine_->engine.totals();
        result["totals"] = analyzer::to_json(totals);
        result["memory_bytes"] = engine_->engine.memory_bytes();
        result["auto_quarantines_last_minute"] = engine_->planner.recent_quarantines(clock_() * 1'000'000);
        result["max_auto_quarantines_per_minute"] = engine_->planner.policy().max_auto_quarantines_per_minute;
    }
    result["open_incidents_tracked"] = ledger_.size();
    result["analysed_through_event"] = analysed_through_.load();
    result["sequence_gaps_filled"] = sequencer_.gaps_filled();
    result["store_errors"] = store_errors_.load();
    result["checkpoint_through_event"] = checkpoint_through_.load();
    result["last_start"] = restart_;
    return result;
}

}  // namespace bulkhead::controller
