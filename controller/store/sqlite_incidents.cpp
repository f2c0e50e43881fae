// SqliteStore: incidents with their notes and event links (IncidentRepository), updated
// with optimistic versions, and exemptions (ExemptionRepository).
#include "controller/evidence/evidence_records.hpp"
#include "controller/store/sqlite_connection.hpp"

namespace bulkhead::controller {

using namespace sqlite_detail;

namespace {

StoreResult<Incident> read_incident(Stmt& s) {
    Incident i;
    i.id = s.i64(0);
    i.source_workload = s.text(1);
    const auto state = incident_state_from_string(s.text(2));
    if (!state)
        return s.corrupt("incidents.state");
    i.state = *state;
    i.severity = s.text(3);
    i.title = s.text(4);
    i.explanation = s.text(5);
    i.opened_at = s.i64(6);
    i.updated_at = s.i64(7);
    i.event_count = static_cast<std::uint64_t>(s.i64(8));
    auto details = s.document(9, "incidents.details");
    if (!details)
        return std::unexpected(details.error());
    i.details = std::move(*details);
    i.version = s.i64(10);
    i.counted_through_event = s.i64(11);
    return i;
}

StoreResult<Exemption> read_exemption(Stmt& s) {
    Exemption e;
    e.id = s.i64(0);
    e.workload = s.text(1);
    e.enforcer = s.text(2);
    e.segment = s.text(3);
    e.expires_at = s.i64(4);
    e.reason = s.text(5);
    e.created_by = s.text(6);
    e.created_at = s.i64(7);
    return e;
}

StoreResult<IncidentNote> read_note(Stmt& s) {
    IncidentNote n;
    n.id = s.i64(0);
    n.incident_id = s.i64(1);
    n.author = s.text(2);
    n.at = s.i64(3);
    n.text = s.text(4);
    return n;
}

} // namespace

// ---- incidents -----------------------------------------------------------------------------

StoreResult<Incident> SqliteStore::add_incident(Incident incident) {
    constexpr std::string_view op = "add_incident";
    const auto count = to_i64(incident.event_count);
    if (!count)
        return fail(Kind::Invalid, op, "event_count exceeds 2^63-1");
    return impl_->write(op, [&](Connection& c) -> StoreResult<Incident> {
        const std::string details = dump(incident.details);
        Stmt s(c, sql::kAddIncident, op);
        s.bind_all(incident.source_workload, to_string(incident.state), incident.severity,
                   incident.title, incident.explanation, incident.opened_at, incident.updated_at,
                   *count, details, incident.counted_through_event);
        auto row = required(s.one(read_incident), op, "inserted incident");
        if (!row)
            return row;
        if (auto linked = append_evidence_change(c, evidence::Stream::Incidents, row->id, row->updated_at,
                                                 evidence::incident_record(*row), op);
            !linked)
            return std::unexpected(linked.error());
        return row;
    });
}

StoreResult<Incident> SqliteStore::update_incident(const Incident& incident) {
    constexpr std::string_view op = "update_incident";
    const auto count = to_i64(incident.event_count);
    if (!count)
        return fail(Kind::Invalid, op, "event_count exceeds 2^63-1");
    return impl_->write(op, [&](Connection& c) -> StoreResult<Incident> {
        const std::string details = dump(incident.details);
        Stmt s(c, sql::kUpdateIncident, op);
        s.bind_all(incident.id, incident.source_workload, to_string(incident.state),
                   incident.severity, incident.title, incident.explanation, incident.opened_at,
                   incident.updated_at, *count, details, incident.version,
                   incident.counted_through_event);
        auto row = s.one(read_incident);
        if (!row)
            return std::unexpected(row.error());
        if (*row) {
            if (auto linked = append_evidence_change(c, evidence::Stream::Incidents, (*row)->id,
                                                     (*row)->updated_at, evidence::incident_record(**row), op);
                !linked)
                return std::unexpected(linked.error());
            return std::move(**row);
        }
        // No row: either it does not exist, or another writer moved its version on.
        if (auto found = require_incident(c, incident.id, op); !found)
            return std::unexpected(found.error());
        return fail(Kind::Conflict, op,
                    "incident " + std::to_string(incident.id) + " changed since version " +
                        std::to_string(incident.version) + " was read");
    });
}

StoreResult<Incident> SqliteStore::get_incident(std::int64_t id) {
    constexpr std::string_view op = "get_incident";
    return impl_->read(op, [&](Connection& c) -> StoreResult<Incident> {
        Stmt s(c, sql::kGetIncident, op);
        s.bind_all(id);
        return required(s.one(read_incident), op, "incident " + std::to_string(id));
    });
}

StoreResult<std::vector<Incident>> SqliteStore::list_incidents(const IncidentQuery& query) {
    constexpr std::string_view op = "list_incidents";
    const auto q = sql::select_incidents(query);
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, q.text, op);
        s.bind_params(q.params);
        return s.all(read_incident);
    });
}

StoreResult<std::map<std::string, std::uint64_t>> SqliteStore::count_incidents_by_severity(IncidentState state) {
    constexpr std::string_view op = "count_incidents_by_severity";
    return impl_->read(op, [&](Connection& c) -> StoreResult<std::map<std::string, std::uint64_t>> {
        Stmt s(c, sql::kCountIncidentsBySeverity, op);
        s.bind_all(to_string(state));
        auto rows = s.all([](Stmt& st) -> StoreResult<std::pair<std::string, std::uint64_t>> {
            return std::pair{st.text(0), static_cast<std::uint64_t>(st.i64(1))};
        });
        if (!rows) {
            return std::unexpected(rows.error());
        }
        return std::map<std::string, std::uint64_t>(rows->begin(), rows->end());
    });
}

StoreResult<std::optional<Incident>>
SqliteStore::unresolved_incident_of(const std::string& workload) {
    constexpr std::string_view op = "unresolved_incident_of";
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, sql::kUnresolvedIncidentOf, op);
        s.bind_all(workload);
        return s.one(read_incident);
    });
}

StoreResult<IncidentNote> SqliteStore::add_incident_note(IncidentNote note) {
    constexpr std::string_view op = "add_incident_note";
    return impl_->write(op, [&](Connection& c) -> StoreResult<IncidentNote> {
        if (auto found = require_incident(c, note.incident_id, op); !found)
            return std::unexpected(found.error());
        Stmt s(c, sql::kAddIncidentNote, op);
        s.bind_all(note.incident_id, note.author, note.at, note.text);
        return required(s.one(read_note), op, "inserted note");
    });
}

StoreResult<std::vector<IncidentNote>> SqliteStore::incident_notes(std::int64_t incident_id) {
    constexpr std::string_view op = "incident_notes";
    return impl_->read(op, [&](Connection& c) -> StoreResult<std::vector<IncidentNote>> {
        if (auto found = require_incident(c, incident_id, op); !found)
            return std::unexpected(found.error());
        Stmt s(c, sql::kIncidentNotes, op);
        s.bind_all(incident_id);
        return s.all(read_note);
    });
}

StoreResult<void> SqliteStore::link_incident_events(std::int64_t incident_id,
                                                    const std::vector<std::int64_t>& event_ids) {
    constexpr std::string_view op = "link_incident_events";
    return impl_->write(op, [&](Connection& c) -> StoreResult<void> {
        if (auto found = require_incident(c, incident_id, op); !found)
            return found;
        Stmt exists(c, sql::kEventExists, op);
        Stmt link(c, sql::kLinkIncidentEvent, op);
        for (const auto event_id : event_ids) {
            exists.bind_all(event_id);
            auto row = exists.step();
            if (!row)
                return std::unexpected(row.error());
            if (!*row)
                return fail(Kind::NotFound, op, "event " + std::to_string(event_id) + " not found");
            exists.reset();
            link.bind_all(incident_id, event_id);
            if (auto done = link.run(); !done)
                return done;
            link.reset();
        }
        return {};
    });
}

StoreResult<std::vector<StoredEvent>> SqliteStore::incident_events(std::int64_t incident_id,
                                                                   std::size_t limit) {
    constexpr std::string_view op = "incident_events";
    return impl_->read(op, [&](Connection& c) -> StoreResult<std::vector<StoredEvent>> {
        if (auto found = require_incident(c, incident_id, op); !found)
            return std::unexpected(found.error());
        Stmt s(c, sql::kIncidentEvents, op);
        s.bind_all(incident_id, limit_of(limit));
        return s.all(read_event);
    });
}

StoreResult<std::vector<std::int64_t>> SqliteStore::incident_event_ids(std::int64_t incident_id,
                                                                        std::size_t limit) {
    constexpr std::string_view op = "incident_event_ids";
    return impl_->read(op, [&](Connection& c) -> StoreResult<std::vector<std::int64_t>> {
        if (auto found = require_incident(c, incident_id, op); !found)
            return std::unexpected(found.error());
        Stmt s(c, sql::kIncidentEventIds, op);
        s.bind_all(incident_id, limit_of(limit));
        return s.all([](Stmt& row) -> StoreResult<std::int64_t> { return row.i64(0); });
    });
}

// ---- exemptions ----------------------------------------------------------------------------

StoreResult<Exemption> SqliteStore::add_exemption(Exemption e) {
    constexpr std::string_view op = "add_exemption";
    return impl_->write(op, [&](Connection& c) -> StoreResult<Exemption> {
        Stmt s(c, sql::kAddExemption, op);
        s.bind_all(e.workload, e.enforcer, e.segment, e.expires_at, e.reason, e.created_by,
                   e.created_at);
        return required(s.one(read_exemption), op, "inserted exemption");
    });
}

StoreResult<std::vector<Exemption>> SqliteStore::list_exemptions() {
    constexpr std::string_view op = "list_exemptions";
    return impl_->read(op, [&](Connection& c) {
        Stmt s(c, sql::kListExemptions, op);
        return s.all(read_exemption);
    });
}

StoreResult<Exemption> SqliteStore::delete_exemption(std::int64_t id) {
    constexpr std::string_view op = "delete_exemption";
    return impl_->write(op, [&](Connection& c) -> StoreResult<Exemption> {
        Stmt s(c, sql::kDeleteExemption, op);
        s.bind_all(id);
        return required(s.one(read_exemption), op, "exemption " + std::to_string(id));
    });
}

} // namespace bulkhead::controller
