// FaultInjectingStore: a Store that forwards every call to a real one (SQLite in a
// temporary directory) and fails the calls a test names, on demand, with StoreError::Io.
// Tests use it to prove that the controller keeps what is in force when a read of what must
// be enforced fails (fail closed), and that errors are reported rather than swallowed.
// Generated from controller/store/repositories.hpp by tests/unit/make_fault_injecting_store.py.
#pragma once

#include "controller/store/store.hpp"

#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <string>

namespace bulkhead::test {

using namespace bulkhead::controller;

class FaultInjectingStore final : public Store {
  public:
    explicit FaultInjectingStore(std::shared_ptr<Store> inner) : inner_(std::move(inner)) {}

    // Calls named here fail until healed.
    void fail(const std::string& method) {
        std::lock_guard lock(mutex_);
        failing_.insert(method);
    }
    void heal() {
        std::lock_guard lock(mutex_);
        failing_.clear();
    }
    std::uint64_t failures() const { return failures_; }
    StoreResult<void> in_transaction(const std::function<StoreResult<void>()>& work) override {
        if (should_fail("in_transaction"))
            return std::unexpected(injected("in_transaction"));
        return inner_->in_transaction(work);
    }
    StoreResult<PolicyRevision> add_revision(PolicyRevision revision) override {
        if (should_fail("add_revision"))
            return std::unexpected(injected("add_revision"));
        return inner_->add_revision(revision);
    }
    StoreResult<PolicyRevision> get_revision(std::int64_t id) override {
        if (should_fail("get_revision"))
            return std::unexpected(injected("get_revision"));
        return inner_->get_revision(id);
    }
    StoreResult<std::vector<PolicyRevision>> list_revisions(std::size_t limit) override {
        if (should_fail("list_revisions"))
            return std::unexpected(injected("list_revisions"));
        return inner_->list_revisions(limit);
    }
    StoreResult<std::optional<PolicyRevision>> active_revision() override {
        if (should_fail("active_revision"))
            return std::unexpected(injected("active_revision"));
        return inner_->active_revision();
    }
    StoreResult<PolicyRevision> activate_revision(std::int64_t id, TimeMs at) override {
        if (should_fail("activate_revision"))
            return std::unexpected(injected("activate_revision"));
        return inner_->activate_revision(id, at);
    }
    StoreResult<std::vector<EnforcerDefinition>> list_enforcer_definitions() override {
        if (should_fail("list_enforcer_definitions"))
            return std::unexpected(injected("list_enforcer_definitions"));
        return inner_->list_enforcer_definitions();
    }
    StoreResult<void> upsert_enforcer_definitions(const std::vector<EnforcerDefinition>& definitions) override {
        if (should_fail("upsert_enforcer_definitions"))
            return std::unexpected(injected("upsert_enforcer_definitions"));
        return inner_->upsert_enforcer_definitions(definitions);
    }
    StoreResult<void> delete_enforcer_definition(const std::string& id) override {
        if (should_fail("delete_enforcer_definition"))
            return std::unexpected(injected("delete_enforcer_definition"));
        return inner_->delete_enforcer_definition(id);
    }
    StoreResult<std::vector<WorkloadRecord>> list_workloads() override {
        if (should_fail("list_workloads"))
            return std::unexpected(injected("list_workloads"));
        return inner_->list_workloads();
    }
    StoreResult<std::optional<WorkloadRecord>> get_workload(const std::string& id) override {
        if (should_fail("get_workload"))
            return std::unexpected(injected("get_workload"));
        return inner_->get_workload(id);
    }
    StoreResult<void> upsert_workloads(const std::vector<WorkloadRecord>& workloads) override {
        if (should_fail("upsert_workloads"))
            return std::unexpected(injected("upsert_workloads"));
        return inner_->upsert_workloads(workloads);
    }
    StoreResult<std::size_t> delete_workloads(const std::vector<std::string>& ids) override {
        if (should_fail("delete_workloads"))
            return std::unexpected(injected("delete_workloads"));
        return inner_->delete_workloads(ids);
    }
    StoreResult<std::vector<WorkloadRecord>> workloads_with_address(const std::string& address) override {
        if (should_fail("workloads_with_address"))
            return std::unexpected(injected("workloads_with_address"));
        return inner_->workloads_with_address(address);
    }
    StoreResult<std::uint64_t> inventory_version() override {
        if (should_fail("inventory_version"))
            return std::unexpected(injected("inventory_version"));
        return inner_->inventory_version();
    }
    StoreResult<VpnSession> add_vpn_session(VpnSession session) override {
        if (should_fail("add_vpn_session"))
            return std::unexpected(injected("add_vpn_session"));
        return inner_->add_vpn_session(session);
    }
    StoreResult<VpnSession> end_vpn_session(std::int64_t id, TimeMs end) override {
        if (should_fail("end_vpn_session"))
            return std::unexpected(injected("end_vpn_session"));
        return inner_->end_vpn_session(id, end);
    }
    StoreResult<std::vector<VpnSession>> list_vpn_sessions(std::optional<TimeMs> active_at, std::size_t limit) override {
        if (should_fail("list_vpn_sessions"))
            return std::unexpected(injected("list_vpn_sessions"));
        return inner_->list_vpn_sessions(active_at, limit);
    }
    StoreResult<std::optional<VpnSession>> vpn_session_for(const std::string& pool_address, TimeMs at) override {
        if (should_fail("vpn_session_for"))
            return std::unexpected(injected("vpn_session_for"));
        return inner_->vpn_session_for(pool_address, at);
    }
    StoreResult<std::vector<EnforcerStatus>> list_enforcer_status() override {
        if (should_fail("list_enforcer_status"))
            return std::unexpected(injected("list_enforcer_status"));
        return inner_->list_enforcer_status();
    }
    StoreResult<std::optional<EnforcerStatus>> get_enforcer_status(const std::string& id) override {
        if (should_fail("get_enforcer_status"))
            return std::unexpected(injected("get_enforcer_status"));
        return inner_->get_enforcer_status(id);
    }
    StoreResult<void> put_enforcer_status(const EnforcerStatus& status) override {
        if (should_fail("put_enforcer_status"))
            return std::unexpected(injected("put_enforcer_status"));
        return inner_->put_enforcer_status(status);
    }
    StoreResult<std::uint64_t> current_generation() override {
        if (should_fail("current_generation"))
            return std::unexpected(injected("current_generation"));
        return inner_->current_generation();
    }
    StoreResult<std::uint64_t> next_generation(std::uint64_t at_least) override {
        if (should_fail("next_generation"))
            return std::unexpected(injected("next_generation"));
        return inner_->next_generation(at_least);
    }
    StoreResult<void> put_api_token(const ApiToken& token) override {
        if (should_fail("put_api_token"))
            return std::unexpected(injected("put_api_token"));
        return inner_->put_api_token(token);
    }
    StoreResult<std::optional<ApiToken>> find_api_token(const std::string& token_sha256) override {
        if (should_fail("find_api_token"))
            return std::unexpected(injected("find_api_token"));
        return inner_->find_api_token(token_sha256);
    }
    StoreResult<void> delete_api_tokens_of_enforcer(const std::string& enforcer) override {
        if (should_fail("delete_api_tokens_of_enforcer"))
            return std::unexpected(injected("delete_api_tokens_of_enforcer"));
        return inner_->delete_api_tokens_of_enforcer(enforcer);
    }
    StoreResult<void> add_enrollment_token(const EnrollmentToken& token) override {
        if (should_fail("add_enrollment_token"))
            return std::unexpected(injected("add_enrollment_token"));
        return inner_->add_enrollment_token(token);
    }
    StoreResult<void> redeem_enrollment_token(const std::string& token_sha256, const std::string& enforcer, TimeMs now, const ApiToken& credential) override {
        if (should_fail("redeem_enrollment_token"))
            return std::unexpected(injected("redeem_enrollment_token"));
        return inner_->redeem_enrollment_token(token_sha256, enforcer, now, credential);
    }
    StoreResult<EventInsertResult> insert_events(const std::vector<StoredEvent>& events) override {
        if (should_fail("insert_events"))
            return std::unexpected(injected("insert_events"));
        return inner_->insert_events(events);
    }
    StoreResult<std::vector<StoredEvent>> query_events(const EventQuery& query) override {
        if (should_fail("query_events"))
            return std::unexpected(injected("query_events"));
        return inner_->query_events(query);
    }
    StoreResult<std::vector<CountBucket>> count_events(std::int64_t from_ns, std::int64_t to_ns, std::int64_t bucket_ns, const EventQuery& filter) override {
        if (should_fail("count_events"))
            return std::unexpected(injected("count_events"));
        return inner_->count_events(from_ns, to_ns, bucket_ns, filter);
    }
    StoreResult<std::uint64_t> last_event_seq(const std::string& enforcer) override {
        if (should_fail("last_event_seq"))
            return std::unexpected(injected("last_event_seq"));
        return inner_->last_event_seq(enforcer);
    }
    StoreResult<std::int64_t> last_event_id() override {
        if (should_fail("last_event_id"))
            return std::unexpected(injected("last_event_id"));
        return inner_->last_event_id();
    }
    StoreResult<Incident> add_incident(Incident incident) override {
        if (should_fail("add_incident"))
            return std::unexpected(injected("add_incident"));
        return inner_->add_incident(incident);
    }
    StoreResult<Incident> update_incident(const Incident& incident) override {
        if (should_fail("update_incident"))
            return std::unexpected(injected("update_incident"));
        return inner_->update_incident(incident);
    }
    StoreResult<Incident> get_incident(std::int64_t id) override {
        if (should_fail("get_incident"))
            return std::unexpected(injected("get_incident"));
        return inner_->get_incident(id);
    }
    StoreResult<std::vector<Incident>> list_incidents(const IncidentQuery& query) override {
        if (should_fail("list_incidents"))
            return std::unexpected(injected("list_incidents"));
        return inner_->list_incidents(query);
    }
    StoreResult<std::map<std::string, std::uint64_t>> count_incidents_by_severity(IncidentState state) override {
        if (should_fail("count_incidents_by_severity"))
            return std::unexpected(injected("count_incidents_by_severity"));
        return inner_->count_incidents_by_severity(state);
    }
    StoreResult<std::optional<Incident>> unresolved_incident_of(const std::string& workload) override {
        if (should_fail("unresolved_incident_of"))
            return std::unexpected(injected("unresolved_incident_of"));
        return inner_->unresolved_incident_of(workload);
    }
    StoreResult<IncidentNote> add_incident_note(IncidentNote note) override {
        if (should_fail("add_incident_note"))
            return std::unexpected(injected("add_incident_note"));
        return inner_->add_incident_note(note);
    }
    StoreResult<std::vector<IncidentNote>> incident_notes(std::int64_t incident_id) override {
        if (should_fail("incident_notes"))
            return std::unexpected(injected("incident_notes"));
        return inner_->incident_notes(incident_id);
    }
    StoreResult<void> link_incident_events(std::int64_t incident_id, const std::vector<std::int64_t>& event_ids) override {
        if (should_fail("link_incident_events"))
            return std::unexpected(injected("link_incident_events"));
        return inner_->link_incident_events(incident_id, event_ids);
    }
    StoreResult<std::vector<StoredEvent>> incident_events(std::int64_t incident_id, std::size_t limit) override {
        if (should_fail("incident_events"))
            return std::unexpected(injected("incident_events"));
        return inner_->incident_events(incident_id, limit);
    }
    StoreResult<std::vector<std::int64_t>> incident_event_ids(std::int64_t incident_id, std::size_t limit) override {
        if (should_fail("incident_event_ids"))
            return std::unexpected(injected("incident_event_ids"));
        return inner_->incident_event_ids(incident_id, limit);
    }
    StoreResult<Exemption> add_exemption(Exemption exemption) override {
        if (should_fail("add_exemption"))
            return std::unexpected(injected("add_exemption"));
        return inner_->add_exemption(exemption);
    }
    StoreResult<std::vector<Exemption>> list_exemptions() override {
        if (should_fail("list_exemptions"))
            return std::unexpected(injected("list_exemptions"));
        return inner_->list_exemptions();
    }
    StoreResult<Exemption> delete_exemption(std::int64_t id) override {
        if (should_fail("delete_exemption"))
            return std::unexpected(injected("delete_exemption"));
        return inner_->delete_exemption(id);
    }
    StoreResult<Quarantine> add_quarantine(Quarantine quarantine) override {
        if (should_fail("add_quarantine"))
            return std::unexpected(injected("add_quarantine"));
        return inner_->add_quarantine(quarantine);
    }
    StoreResult<Quarantine> release_quarantine(const std::string& workload, TimeMs at, const std::string& released_by) override {
        if (should_fail("release_quarantine"))
            return std::unexpected(injected("release_quarantine"));
        return inner_->release_quarantine(workload, at, released_by);
    }
    StoreResult<std::vector<Quarantine>> active_quarantines() override {
        if (should_fail("active_quarantines"))
            return std::unexpected(injected("active_quarantines"));
        return inner_->active_quarantines();
    }
    StoreResult<std::optional<Quarantine>> active_quarantine(const std::string& workload) override {
        if (should_fail("active_quarantine"))
            return std::unexpected(injected("active_quarantine"));
        return inner_->active_quarantine(workload);
    }
    StoreResult<std::vector<Quarantine>> quarantine_history(const std::string& workload, std::size_t limit) override {
        if (should_fail("quarantine_history"))
            return std::unexpected(injected("quarantine_history"));
        return inner_->quarantine_history(workload, limit);
    }
    StoreResult<AuditEntry> append_audit(AuditEntry entry) override {
        if (should_fail("append_audit"))
            return std::unexpected(injected("append_audit"));
        return inner_->append_audit(entry);
    }
    StoreResult<std::vector<AuditEntry>> query_audit(const AuditQuery& query) override {
        if (should_fail("query_audit"))
            return std::unexpected(injected("query_audit"));
        return inner_->query_audit(query);
    }
    StoreResult<OutboxMessage> enqueue_outbox(OutboxMessage message) override {
        if (should_fail("enqueue_outbox"))
            return std::unexpected(injected("enqueue_outbox"));
        return inner_->enqueue_outbox(message);
    }
    StoreResult<std::vector<OutboxMessage>> pending_outbox(std::size_t limit) override {
        if (should_fail("pending_outbox"))
            return std::unexpected(injected("pending_outbox"));
        return inner_->pending_outbox(limit);
    }
    StoreResult<void> update_outbox(const OutboxMessage& message) override {
        if (should_fail("update_outbox"))
            return std::unexpected(injected("update_outbox"));
        return inner_->update_outbox(message);
    }
    StoreResult<OutboxStats> outbox_stats() override {
        if (should_fail("outbox_stats"))
            return std::unexpected(injected("outbox_stats"));
        return inner_->outbox_stats();
    }
    StoreResult<std::optional<AnalysisCheckpoint>> load_analysis_checkpoint() override {
        if (should_fail("load_analysis_checkpoint"))
            return std::unexpected(injected("load_analysis_checkpoint"));
        return inner_->load_analysis_checkpoint();
    }
    StoreResult<void> save_analysis_checkpoint(const AnalysisCheckpoint& checkpoint) override {
        if (should_fail("save_analysis_checkpoint"))
            return std::unexpected(injected("save_analysis_checkpoint"));
        return inner_->save_analysis_checkpoint(checkpoint);
    }
    StoreResult<evidence::ChainHead> evidence_head(evidence::Stream stream) override {
        if (should_fail("evidence_head"))
            return std::unexpected(injected("evidence_head"));
        return inner_->evidence_head(stream);
    }
    StoreResult<evidence::ChainHead> evidence_chain_start(evidence::Stream stream) override {
        if (should_fail("evidence_chain_start"))
            return std::unexpected(injected("evidence_chain_start"));
        return inner_->evidence_chain_start(stream);
    }
    StoreResult<void> set_evidence_chain_start(evidence::Stream stream, const evidence::ChainHead& start) override {
        if (should_fail("set_evidence_chain_start"))
            return std::unexpected(injected("set_evidence_chain_start"));
        return inner_->set_evidence_chain_start(stream, start);
    }
    StoreResult<std::vector<EvidenceChainRecord>> evidence_records(evidence::Stream stream, std::uint64_t after,
                                                                   std::size_t limit) override {
        if (should_fail("evidence_records"))
            return std::unexpected(injected("evidence_records"));
        return inner_->evidence_records(stream, after, limit);
    }
    StoreResult<std::vector<ChainedEvent>> chained_events(std::uint64_t after, std::size_t limit) override {
        if (should_fail("chained_events"))
            return std::unexpected(injected("chained_events"));
        return inner_->chained_events(after, limit);
    }
    StoreResult<std::size_t> archive_events_through(const evidence::ChainHead& head) override {
        if (should_fail("archive_events_through"))
            return std::unexpected(injected("archive_events_through"));
        return inner_->archive_events_through(head);
    }
    StoreResult<void> add_evidence_checkpoint(TimeMs at, const std::string& line) override {
        if (should_fail("add_evidence_checkpoint"))
            return std::unexpected(injected("add_evidence_checkpoint"));
        return inner_->add_evidence_checkpoint(at, line);
    }
    StoreResult<std::vector<std::string>> evidence_checkpoints(TimeMs from, std::size_t limit) override {
        if (should_fail("evidence_checkpoints"))
            return std::unexpected(injected("evidence_checkpoints"));
        return inner_->evidence_checkpoints(from, limit);
    }
    StoreResult<std::optional<std::string>> get_setting(const std::string& key) override {
        if (should_fail("get_setting"))
            return std::unexpected(injected("get_setting"));
        return inner_->get_setting(key);
    }
    StoreResult<void> put_setting(const std::string& key, const std::string& value) override {
        if (should_fail("put_setting"))
            return std::unexpected(injected("put_setting"));
        return inner_->put_setting(key, value);
    }

  private:
    bool should_fail(const char* method) {
        std::lock_guard lock(mutex_);
        if (!failing_.contains(method))
            return false;
        ++failures_;
        return true;
    }
    static StoreError injected(const char* method) {
        return StoreError{StoreError::Kind::Io, std::string("injected failure in ") + method};
    }

    std::shared_ptr<Store> inner_;
    std::mutex mutex_;
    std::set<std::string> failing_;
    std::atomic<std::uint64_t> failures_{0};
};

}  // namespace bulkhead::test
