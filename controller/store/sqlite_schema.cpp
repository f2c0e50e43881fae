// The SQLite schema as numbered migrations. Append new migrations at the end; never edit
// one that has shipped. Types are the standard ones (INTEGER/BIGINT, TEXT) so the
// PostgreSQL DDL differs only in how ids are generated (INTEGER PRIMARY KEY AUTOINCREMENT
// here, BIGINT GENERATED ALWAYS AS IDENTITY there).
#include "controller/store/sqlite_store.hpp"

#include <array>

namespace bulkhead::controller {
namespace {

constexpr std::string_view kInitialSchema = R"sql(
CREATE TABLE settings (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);

-- Internal counters (inventory version), apart from the caller-visible settings.
CREATE TABLE counters (
  name TEXT PRIMARY KEY,
  value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('inventory', 0);

CREATE TABLE policy_revisions (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  state TEXT NOT NULL CHECK (state IN ('draft', 'active', 'superseded')),
  name TEXT NOT NULL,
  author TEXT NOT NULL,
  comment TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  activated_at BIGINT,
  document TEXT NOT NULL
);
-- At most one active revision.
CREATE UNIQUE INDEX policy_revisions_one_active ON policy_revisions (state) WHERE state = 'active';

CREATE TABLE enforcer_definitions (
  id TEXT PRIMARY KEY,
  document TEXT NOT NULL
);

CREATE TABLE workloads (
  id TEXT PRIMARY KEY,
  enforcer TEXT NOT NULL,
  user_name TEXT NOT NULL,
  document TEXT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE INDEX workloads_by_enforcer ON workloads (enforcer);
CREATE INDEX workloads_by_user ON workloads (user_name);

-- One row per address of a workload, rewritten on every upsert.
CREATE TABLE workload_addresses (
  workload_id TEXT NOT NULL REFERENCES workloads (id) ON DELETE CASCADE,
  address TEXT NOT NULL,
  PRIMARY KEY (workload_id, address)
);
CREATE INDEX workload_addresses_by_address ON workload_addresses (address);

CREATE TABLE vpn_sessions (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  user_name TEXT NOT NULL,
  pool_address TEXT NOT NULL,
  real_address TEXT NOT NULL,
  started_at BIGINT NOT NULL,
  ended_at BIGINT
);
CREATE INDEX vpn_sessions_by_pool_address ON vpn_sessions (pool_address, started_at);
CREATE INDEX vpn_sessions_by_start ON vpn_sessions (started_at);

CREATE TABLE enforcer_status (
  id TEXT PRIMARY KEY,
  enrolled_at BIGINT,
  last_heartbeat BIGINT,
  applied_generation BIGINT NOT NULL,
  applied_hash TEXT NOT NULL,
  apply_state TEXT NOT NULL,
  last_error TEXT NOT NULL,
  drift_repairs BIGINT NOT NULL,
  last_drift_at BIGINT,
  clock_offset_ms BIGINT NOT NULL,
  version TEXT NOT NULL,
  hostname TEXT NOT NULL,
  details TEXT NOT NULL
);

CREATE TABLE api_tokens (
  name TEXT PRIMARY KEY,
  role TEXT NOT NULL CHECK (role IN ('admin', 'soc', 'automation', 'enforcer')),
  token_sha256 TEXT NOT NULL UNIQUE,
  enforcer TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE INDEX api_tokens_by_enforcer ON api_tokens (enforcer);

CREATE TABLE enrollment_tokens (
  token_sha256 TEXT PRIMARY KEY,
  enforcer TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  used_at BIGINT
);

-- Drop events and flow summaries. The id is a plain rowid alias (no AUTOINCREMENT: it
-- costs a sqlite_sequence write per row, and ids only repeat if the newest row is
-- deleted, which retention never does).
CREATE TABLE events (
  id INTEGER PRIMARY KEY,
  enforcer TEXT NOT NULL,
  enforcer_seq BIGINT NOT NULL,
  type TEXT NOT NULL,
  time_ns BIGINT NOT NULL,
  received_at BIGINT NOT NULL,
  workload TEXT NOT NULL,
  direction TEXT NOT NULL,
  reason TEXT NOT NULL,
  src TEXT NOT NULL,
  dst TEXT NOT NULL,
  protocol TEXT NOT NULL,
  dport INTEGER,
  event_count BIGINT NOT NULL,
  document TEXT NOT NULL
);
CREATE UNIQUE INDEX events_by_enforcer_seq ON events (enforcer, enforcer_seq);
CREATE INDEX events_by_time ON events (time_ns);
CREATE INDEX events_by_workload_time ON events (workload, time_ns);
CREATE INDEX events_by_dport_time ON events (dport, time_ns);
CREATE INDEX events_by_reason_time ON events (reason, time_ns);
-- "address matches src or dst": two single-column indexes, OR-ed by the planner.
CREATE INDEX events_by_src ON events (src);
CREATE INDEX events_by_dst ON events (dst);

CREATE TABLE incidents (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  source_workload TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
  severity TEXT NOT NULL,
  title TEXT NOT NULL,
  explanation TEXT NOT NULL,
  opened_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  event_count BIGINT NOT NULL,
  details TEXT NOT NULL
);
CREATE INDEX incidents_by_state ON incidents (state);
CREATE INDEX incidents_by_source_state ON incidents (source_workload, state);

CREATE TABLE incident_notes (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  incident_id BIGINT NOT NULL REFERENCES incidents (id),
  author TEXT NOT NULL,
  at BIGINT NOT NULL,
  body TEXT NOT NULL
);
CREATE INDEX incident_notes_by_incident ON incident_notes (incident_id);

CREATE TABLE incident_events (
  incident_id BIGINT NOT NULL REFERENCES incidents (id),
  event_id BIGINT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
  PRIMARY KEY (incident_id, event_id)
);
CREATE INDEX incident_events_by_event ON incident_events (event_id);

CREATE TABLE quarantines (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  workload TEXT NOT NULL,
  reason TEXT NOT NULL,
  actor TEXT NOT NULL,
  automatic INTEGER NOT NULL,
  incident_id BIGINT REFERENCES incidents (id),
  created_at BIGINT NOT NULL,
  released_at BIGINT,
  released_by TEXT NOT NULL
);
-- At most one active (unreleased) quarantine per workload.
CREATE UNIQUE INDEX quarantines_one_active ON quarantines (workload) WHERE released_at IS NULL;
CREATE INDEX quarantines_by_workload ON quarantines (workload);

CREATE TABLE audit_log (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at BIGINT NOT NULL,
  actor TEXT NOT NULL,
  role TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT NOT NULL,
  before_doc TEXT,
  after_doc TEXT
);
CREATE INDEX audit_log_by_time ON audit_log (at);
CREATE INDEX audit_log_by_actor ON audit_log (actor);
)sql";

// Ingest at 100,000 events/s cannot afford a B-tree entry per event in every
// secondary index: four of them (port, reason, source and destination address: random
// keys, about half of all insert work) give way to a coarse index, as column stores keep
// per-block summaries. event_terms holds one row per (term, minute) in which at least one
// event had that term ("a:10.1.0.2", "p:445", "r:default"), written once per minute per
// term however many events carry it. A query filtered by one of them scans, in time
// order, only the minutes in which the term occurs and checks the column itself. The
// time index, the (enforcer, seq) key and (workload, time) stay: workload is what
// incidents and analysts query most, and an enforcer's events cluster on few workloads.
constexpr std::string_view kEventTerms = R"sql(
CREATE TABLE event_terms (
  term TEXT NOT NULL,
  minute BIGINT NOT NULL,
  PRIMARY KEY (term, minute)
) WITHOUT ROWID;
INSERT INTO event_terms (term, minute)
  SELECT DISTINCT 'a:' || src, (time_ns - ((time_ns % 60000000000) + 60000000000) % 60000000000) / 60000000000
  FROM events WHERE src <> ''
  UNION SELECT DISTINCT 'a:' || dst, (time_ns - ((time_ns % 60000000000) + 60000000000) % 60000000000) / 60000000000
  FROM events WHERE dst <> ''
  UNION SELECT DISTINCT 'p:' || dport, (time_ns - ((time_ns % 60000000000) + 60000000000) % 60000000000) / 60000000000
  FROM events WHERE dport IS NOT NULL
  UNION SELECT DISTINCT 'r:' || reason, (time_ns - ((time_ns % 60000000000) + 60000000000) % 60000000000) / 60000000000
  FROM events WHERE reason <> '';
DROP INDEX events_by_dport_time;
DROP INDEX events_by_reason_time;
DROP INDEX events_by_src;
DROP INDEX events_by_dst;
)sql";

// What the controller must remember across a restart that used to live in its memory or in
// JSON blobs: the analyzer's checkpoint, the webhook outbox, exemptions and the generation
// counter in tables of their own, and incidents with a version (optimistic concurrency) and
// the newest event counted in them (an event replayed after a restart is not counted twice).
constexpr std::string_view kDurableState = R"sql(
ALTER TABLE incidents ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE incidents ADD COLUMN counted_through_event BIGINT NOT NULL DEFAULT 0;

CREATE TABLE exemptions (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  workload TEXT NOT NULL,
  enforcer TEXT NOT NULL,
  segment TEXT NOT NULL,
  expires_at BIGINT NOT NULL,
  reason TEXT NOT NULL,
  created_by TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
INSERT INTO exemptions (id, workload, enforcer, segment, expires_at, reason, created_by, created_at)
  SELECT json_extract(e.value, '$.id'), COALESCE(json_extract(e.value, '$.workload'), ''),
         COALESCE(json_extract(e.value, '$.enforcer'), ''), COALESCE(json_extract(e.value, '$.segment'), ''),
         COALESCE(json_extract(e.value, '$.expires_ms'), 0), COALESCE(json_extract(e.value, '$.reason'), ''),
         COALESCE(json_extract(e.value, '$.created_by'), ''), 0
  FROM settings s, json_each(s.value) e
  WHERE s.key = 'analyzer.exemptions' AND json_valid(s.value);
DELETE FROM settings WHERE key = 'analyzer.exemptions';

CREATE TABLE ruleset_generation (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  value BIGINT NOT NULL
);
INSERT INTO ruleset_generation (id, value)
  SELECT 1, COALESCE((SELECT CAST(value AS INTEGER) FROM settings WHERE key = 'ruleset_generation'), 0);
DELETE FROM settings WHERE key = 'ruleset_generation';

CREATE TABLE outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  delivery_id TEXT NOT NULL UNIQUE,
  destination TEXT NOT NULL,
  type TEXT NOT NULL,
  body TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  attempts INTEGER NOT NULL,
  next_attempt_at BIGINT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
  last_error TEXT NOT NULL,
  finished_at BIGINT
);
CREATE INDEX outbox_by_state ON outbox (state, id);

CREATE TABLE analysis_checkpoint (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  through_event_id BIGINT NOT NULL,
  taken_at BIGINT NOT NULL,
  engine BLOB NOT NULL,
  planner BLOB NOT NULL,
  ledger TEXT NOT NULL
);
)sql";

// Tamper evidence (issue 16; controller/evidence). Each stream is a hash chain: events carry
// their link's hash (their id is the sequence number), audit entries a sequence number of
// their own and a hash, and incident and quarantine changes (their rows are updated in
// place) are appended to evidence_changes with their canonical bytes. evidence_chain_start
// holds the link before the first record the database keeps: the records stored before this
// migration, and later those moved to archive segments, are not in the database's part of a
// chain. Checkpoints are kept here as well as outside (a file, the SIEM), where they count.
constexpr std::string_view kEvidence = R"sql(
ALTER TABLE events ADD COLUMN clock_offset_ms BIGINT;
ALTER TABLE events ADD COLUMN chain_hash BLOB;
ALTER TABLE audit_log ADD COLUMN chain_seq BIGINT;
ALTER TABLE audit_log ADD COLUMN chain_hash BLOB;
CREATE INDEX audit_log_by_chain_seq ON audit_log (chain_seq);

CREATE TABLE evidence_changes (
  stream TEXT NOT NULL,
  sequence BIGINT NOT NULL,
  subject_id BIGINT NOT NULL,
  at BIGINT NOT NULL,
  record BLOB NOT NULL,
  hash BLOB NOT NULL,
  PRIMARY KEY (stream, sequence)
);

CREATE TABLE evidence_chain_start (
  stream TEXT PRIMARY KEY,
  sequence BIGINT NOT NULL,
  hash BLOB NOT NULL
);
INSERT INTO evidence_chain_start (stream, sequence, hash)
  SELECT 'drops', COALESCE(MAX(id), 0), zeroblob(32) FROM events;
INSERT INTO evidence_chain_start (stream, sequence, hash) VALUES
  ('incidents', 0, zeroblob(32)), ('quarantines', 0, zeroblob(32)), ('audit', 0, zeroblob(32));

CREATE TABLE evidence_checkpoints (
  at_ms BIGINT PRIMARY KEY,
  line TEXT NOT NULL
);
)sql";

// An incident's timeline outlives the hot tier: its links to events that moved to archive
// segments stay (the event service reads those events from the archive). SQLite cannot drop a
// foreign key in place, so the link table is rebuilt without the one to events; links are
// only made to stored events (link_incident_events checks).
constexpr std::string_view kIncidentLinksOutliveArchive = R"sql(
CREATE TABLE incident_events_kept (
  incident_id BIGINT NOT NULL REFERENCES incidents (id),
  event_id BIGINT NOT NULL,
  PRIMARY KEY (incident_id, event_id)
);
INSERT INTO incident_events_kept (incident_id, event_id) SELECT incident_id, event_id FROM incident_events;
DROP TABLE incident_events;
ALTER TABLE incident_events_kept RENAME TO incident_events;
CREATE INDEX incident_events_by_event ON incident_events (event_id);
)sql";

constexpr std::array kMigrations{
    Migration{1, "initial schema", kInitialSchema},
    Migration{2, "coarse event index (event_terms) instead of four per-event indexes", kEventTerms},
    Migration{3, "durable controller state: checkpoint, outbox, exemptions, generations, incident versions",
              kDurableState},
    Migration{4, "tamper evidence: hash chains over events, audit, incident and quarantine changes", kEvidence},
    Migration{5, "incident timelines keep their links to archived events", kIncidentLinksOutliveArchive},
};

} // namespace

std::span<const Migration> sqlite_migrations() {
    return kMigrations;
}

} // namespace bulkhead::controller
