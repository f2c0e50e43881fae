// The shapes of the controller's answers the dashboard reads (controller/server/openapi.json
// is authoritative; only the members the views use are typed here).

export type Role = "admin" | "soc" | "automation" | "enforcer";
export type Severity = "low" | "medium" | "high" | "critical";
export type IncidentState = "open" | "acknowledged" | "resolved";

export interface Whoami {
  name: string;
  role: Role;
}

export interface Health {
  status: "ok";
  version: string;
  active_revision: number | null;
  generation: number;
}

export interface Diagnostic {
  severity?: "error" | "warning";
  code?: string;
  message?: string;
  pointer?: string;
  line?: number;
  column?: number;
  snippet?: string;
}

export interface ErrorBody {
  code: string;
  message: string;
  pointer?: string;
  parameter?: string;
  errors?: Diagnostic[];
  candidates?: { workload: string; enforcer?: string }[];
}

/** A stored event: the enforcer's DropEvent members plus the controller's. */
export interface DropEvent {
  id: number;
  type: string;
  enforcer: string;
  enforcer_seq: number;
  received_at: string;
  time_ns?: number;
  time_unix_ms?: number;
  count?: number;
  direction?: "out" | "in";
  reason?: "default" | "deny" | "decoy" | "tripwire" | "quarantine" | "spoof" | "allow";
  workload?: string;
  src?: string;
  dst?: string;
  proto_name?: string;
  sport?: number;
  dport?: number;
  indev?: string;
  outdev?: string;
  src_mac?: string;
  subject?: string;
  mode?: string;
  would_drop?: boolean;
  /** The enforcer's clock minus the controller's when the upload arrived. */
  clock_offset_ms?: number;
  /** |clock_offset_ms| was over the controller's threshold (1 s). */
  clock_suspect?: boolean;
  [member: string]: unknown;
}

/** GET /api/v1/events: one page; next_after_id when order=asc filled the page. */
export interface EventPage {
  events: DropEvent[];
  next_after_id?: number;
}

export interface EventCounts {
  from_ns: number;
  to_ns: number;
  bucket_ns: number;
  buckets: { start_ns: number; events: number }[];
}

export interface Finding {
  kind?: string;
  severity?: Severity;
  distinct_targets?: number;
  distinct_hosts?: number;
  distinct_ports?: number;
  first_ns?: number;
  last_ns?: number;
  targets?: string[];
  explanation?: string;
  at?: string;
}

export interface IncidentDetails {
  user?: string;
  findings?: Finding[];
  findings_folded?: number;
  dry_run_quarantine?: { at: string; reason: string };
  [member: string]: unknown;
}

export interface Incident {
  id: number;
  source_workload: string;
  state: IncidentState;
  severity: Severity;
  title: string;
  explanation: string;
  opened_at: string;
  updated_at: string;
  event_count: number;
  details: IncidentDetails;
  user?: string;
}

export interface Note {
  id: number;
  author: string;
  at: string;
  text: string;
}

export interface Workload {
  id: string;
  enforcer?: string;
  addresses: string[];
  mac?: string;
  labels?: Record<string, string>;
  user?: string;
  hostname?: string;
  critical?: boolean;
  attachment?: { mode?: string; interface?: string; [member: string]: unknown };
  quarantine?: Quarantine;
}

export interface QuarantineEnforcerState {
  enforcer: string;
  state: "pending" | "applied";
  desired_generation: number;
}

export interface Quarantine {
  workload: string;
  reason: string;
  actor: string;
  automatic: boolean;
  /** "kernel": a tripwire quarantined it on the packet itself; the controller recorded it. */
  contained_by?: "kernel" | "controller";
  incident: number | null;
  created_at: string;
  released_at: string | null;
  released_by: string;
  enforcers: QuarantineEnforcerState[];
  created?: boolean;
}

export interface IncidentDetail extends Incident {
  timeline: DropEvent[];
  targets: Record<string, number>;
  notes: Note[];
  source?: Workload;
  quarantine?: Quarantine;
}

export type ScopeNodeKind = "source" | "target" | "other-source" | "segment";
export type ScopeEdgeKind = "blocked" | "allowed" | "member";

export interface IncidentScope {
  incident: number;
  window: { from_ns: number; to_ns: number };
  nodes: { id: string; kind: ScopeNodeKind; label: string; [member: string]: unknown }[];
  edges: { source: string; target: string; kind: ScopeEdgeKind; count?: number; [member: string]: unknown }[];
}

export interface VpnSession {
  id: number;
  user: string;
  pool_address: string;
  real_address: string;
  start: string;
  end: string | null;
}

export interface Enforcer {
  id: string;
  description: string;
  desired_generation: number;
  desired_hash: string;
  connected: boolean;
  enrolled_at: string | null;
  last_heartbeat: string | null;
  in_sync: boolean;
  applied_generation?: number;
  applied_hash?: string;
  apply_state?: string;
  last_error?: string;
  drift_repairs?: number;
  last_drift_at?: string | null;
  clock_offset_ms?: number;
  version?: string;
  hostname?: string;
}

// A VM port an enforcer found by port discovery (GET /api/v1/ports).
export interface Port {
  enforcer: string;
  enforcer_connected?: boolean;
  reported_at?: string | null;
  interface: string;
  mac: string;
  link_mac?: string;
  state: "bound" | "unidentified";
  workload?: string;
  identified_by?: "libvirt" | "link" | "tap-convention" | "neighbour";
  domain?: { name?: string; uuid?: string; labels?: Record<string, string> };
  addresses?: string[];
}

export interface Revision {
  id: number;
  state: "draft" | "active" | "superseded";
  name: string;
  author: string;
  comment: string;
  created_at: string;
  activated_at: string | null;
}

export interface RevisionWithDocument extends Revision {
  document: unknown;
}

export interface Activation extends Revision {
  generation: number;
}

export interface PolicyDiff {
  revision: number;
  against: number | null;
  elements_added: number;
  elements_removed: number;
  rules_written: number;
  enforcers: {
    enforcer: string;
    unchanged: boolean;
    full_replace: boolean;
    elements_added: number;
    elements_removed: number;
    rules_written: number;
    text: string;
  }[];
}

export interface WhatIf {
  revision: number;
  against?: number | null;
  events: number;
  truncated?: boolean;
  not_evaluated?: number;
  unchanged: number;
  newly_allowed: number;
  newly_blocked: number;
  newly_enforced?: number;
  newly_monitored?: number;
  groups: { change: string; reason: string; rules: string[]; events: number; packets?: number }[];
}

export interface AuditEntry {
  id: number;
  at: string;
  actor: string;
  role: string;
  action: string;
  target: string;
  before: unknown;
  after: unknown;
}

export interface PolicySegment {
  name: string;
  decoy?: boolean;
  selector?: { labels?: Record<string, string | string[]>; workloads?: string[]; cidrs?: string[] };
}

// GET /api/v1/evidence: checkpoint signing and each SIEM destination's delivery.
export type SiemState = "starting" | "delivering" | "failing";

export interface SiemDestinationStatus {
  name: string;
  transport: string;
  format: string;
  address: string;
  state: SiemState;
  pending: number;
  oldest_pending_at: string | null;
  oldest_pending_age_ms: number | null;
  delivered: number;
  failures: number;
  rate_limited: number;
  last_error: string;
  last_error_kind: string;
  last_delivery_at: string | null;
  sources: { source: string; delivered_through: number; head: number }[];
}

export interface EvidenceStatus {
  key_id: string;
  checkpoints: { written: number; failures: number; interval_ms: number; file: string };
  siem: SiemDestinationStatus[];
}
