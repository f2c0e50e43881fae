// The analyzer: a pure detection engine fed by attributed drop observations.
//
// Observation (what one drop event says, as views) -> detectors (host sweep, vertical and
// box port scans, lateral-movement services, forbidden zones, beaconing, fan-in) -> Findings
// -> correlator (one incident per source identity, escalation, storm suppression,
// exemptions, repeat offenders). No I/O, no clock reads (time is the events' kernel time),
// no threads, no globals. Its memory is bounded (MemoryLimits) and its whole state can be
// saved and restored (save_state / restore_state) so a restarted controller carries on where
// the last checkpoint left it. See README.md for the detectors' rules and their defaults.
#pragma once

#include "policies/policy_model.hpp"

#include <array>
#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bulkhead::analyzer {

using policy::Severity;

// The drop reasons of the enforcer's prefix (allowed flows are not analysed).
// Tripwire: a decoy touch or a tripwire rule's match the kernel contained on the packet.
// Spoof: the spoof guard dropped a packet a port sent from an address (or MAC) that is not
// its workload's own.
enum class DropReason : std::uint8_t { Default, Deny, Decoy, Quarantine, Tripwire, Spoof };
std::string_view to_string(DropReason reason);
std::optional<DropReason> drop_reason_from_string(std::string_view text);

// Who sent the packet, as the enforcer saw it. The workload id is unique per enforcer;
// when it is empty (interface not bound, or an inbound drop whose sender is not ours) the
// source is told apart by enforcer + port + address. Two workloads holding the same
// private address behind different enforcers are therefore never one source.
struct SourceIdentity {
    std::string_view enforcer;
    std::string_view workload;
    std::string_view port;    // interface the packet came in on (port mode), may be empty
    std::string_view mac;     // "52:54:00:01:00:01", may be empty
    std::string_view address; // source address text
};

// One attributed drop, as views into storage the caller owns for the duration of
// Analyzer::observe (DropRecord::view() makes one; a benchmark reuses its buffers).
struct Observation {
    std::int64_t time_ns = 0; // kernel time (CLOCK_REALTIME ns)
    SourceIdentity source;
    std::string_view user;                        // "" if unknown
    std::span<const std::string> source_segments; // segment names / "key=value" labels
    std::string_view destination;                 // destination address text
    std::uint8_t protocol = 0;                    // IP protocol number
    std::optional<std::uint16_t> dport;
    // Tells a retransmit (same source port) from a new attempt (a new one); for an ICMP echo
    // its identifier; none for other ICMP and for events recorded before the field was read.
    std::optional<std::uint16_t> sport;
    DropReason reason = DropReason::Default;
    std::uint64_t count = 1;               // identical repeats folded by the enforcer
    std::string_view destination_workload; // "" if unknown
    std::span<const std::string> destination_segments;
};

// ------------------------------------------------------------------ configuration -------

// Sweep, vertical and box scans read one sliding window of distinct (host, protocol, port)
// targets per source, hence one window length for the three.
struct ScanWindowConfig {
    std::uint32_t window_seconds = 60;
    std::uint32_t max_targets_per_source = 1024; // distinct targets held; beyond: saturated
};
struct HostSweepConfig {
    bool enabled = true;
    std::uint32_t min_hosts = 16; // distinct destination hosts, any port
    Severity severity = Severity::Medium;
};
struct VerticalScanConfig {
    bool enabled = true;
    std::uint32_t min_ports = 16; // distinct protocol/ports on one host
    Severity severity = Severity::Medium;
};
struct BoxScanConfig {
    bool enabled = true;
    std::uint32_t min_ports = 8; // distinct protocol/ports ...
    std::uint32_t min_hosts = 4; // ... spread over at least this many hosts
    Severity severity = Severity::High;
};
// Scans spread over minutes (nmap -T1, a patient worm): the same distinct-target counting
// over a long window, with thresholds that a host-sweep's 60 s window never sees. Fires only
// when no fast scan rule (sweep, vertical, box) fired for the source within this window, so
// a fast scan is not reported twice.
struct SlowScanConfig {
    bool enabled = true;
    // An hour: an operator probing one host every 2.5 min reaches 16 hosts in 40 min.
    std::uint32_t window_seconds = 3600;
    std::uint32_t min_hosts = 16; // distinct destination hosts, any port
    std::uint32_t min_ports = 16; // or distinct protocol/ports, any hosts
    // Distinct targets held per source: a threshold of 16 needs few, and every source keeps
    // this window for an hour (beyond the cap counts err low, never high).
    std::uint32_t max_targets = 128;
    Severity severity = Severity::Medium;
};
// The policy's own rule (policy "response.incident"): a source with `min_targets` distinct
// (host, protocol, port) targets within the scan window, whatever their shape. Off unless a
// policy (or configuration) turns it on: the controller sets it from the active policy.
struct DistinctTargetsConfig {
    bool enabled = false;
    std::uint32_t min_targets = 10;
    Severity severity = Severity::High;
};
struct LateralService {
    std::string name;          // "SMB"
    std::uint8_t protocol = 6; // IP protocol number
    std::uint16_t port = 0;
};
std::vector<LateralService> default_lateral_services();
struct LateralMovementConfig {
    bool enabled = true;
    std::uint32_t window_seconds = 600;
    std::uint32_t min_targets_user = 3;   // distinct (host, lateral port) from a user segment
    std::uint32_t min_targets_other = 10; // from any other source
    // ... spread over at least this many hosts: Windows opens SMB on 445 and 139 at once, so a
    // logon script mapping two denied shares is 4 targets on 2 hosts, not lateral movement.
    std::uint32_t min_hosts_user = 3;
    std::uint32_t min_hosts_other = 2;
    Severity severity_user = Severity::High;
    Severity severity_other = Severity::Medium;
    std::vector<LateralService> services = default_lateral_services();
};
struct ForbiddenZoneConfig {
    bool enabled = true;
    std::uint32_t quiet_seconds = 300; // one finding per rule per source in this period
    Severity decoy_severity = Severity::Critical;
    Severity user_to_admin_severity = Severity::High;
    Severity vdi_file_sharing_severity = Severity::High;
    // Spoofing: a desktop has no business forging a source (seed 002's lateral movement
    // hides behind other desktops' addresses); a server in port mode that does it is more
    // often a misconfiguration (a secondary address missing from the inventory).
    Severity spoof_severity_vdi = Severity::High;
    Severity spoof_severity_other = Severity::Medium;
    std::vector<std::string> decoy_addresses; // besides drops the enforcer marked "decoy"
    std::vector<std::uint16_t> file_sharing_ports{445, 139}; // tcp
};
struct BeaconingConfig {
    bool enabled = true;
    // Judged over the last min_intervals intervals (attempts - 1) when their median is at
    // least min_period_seconds, else over short_min_intervals (<= 16 both).
    std::uint32_t min_intervals = 8;
    // Regular: median absolute deviation / median at most this (uniform +-30 % jitter gives
    // ~0.15), Bowley skew within +-max_skew, at most one interval in 8 off the median by
    // more than a factor max_spread, and no steady rise (a back-off).
    double max_dispersion = 0.25;
    double max_skew = 0.8;
    double max_spread = 2.0;
    // Without a source port (ICMP, older events): drops closer than this are one attempt.
    std::uint32_t min_interval_seconds = 5;
    // With one: a new source port is a new attempt, unless this close after the last one began
    // (a burst of parallel connections is one attempt, not a 10 ms beacon).
    std::uint32_t min_attempt_gap_ms = 500;
    std::uint32_t min_period_seconds = 15;
    std::uint32_t short_min_intervals = 16;
    // Attempts split by silence alone (no source port) are at least min_interval apart, and
    // near that floor random retries look regular: a period under min_period then needs this.
    double short_max_dispersion_without_ports = 0.05;
    // A longer pause starts a new series: an hourly beacon with +-30 % jitter fits (the ring
    // holds intervals up to 6,553 s).
    std::uint32_t max_interval_seconds = 5400;
    std::uint32_t max_tracked_per_source = 32; // (destination, port) pairs followed
    std::uint32_t quiet_seconds = 3600;
    Severity severity = Severity::Medium;
    // A source that is not a user workload calling a workload of the inventory: most likely
    // a scheduled check or job (monitoring, backup), so reported, not acted on.
    Severity internal_severity = Severity::Low;
};
struct FanInConfig {
    bool enabled = true;
    std::uint32_t window_seconds = 300;
    std::uint32_t min_sources = 5;
    std::uint32_t max_targets = 65536; // targets followed at once
    std::uint32_t max_sources_per_target = 256;
    std::uint32_t misconfig_min_attempts = 3; // per source, attempts min_interval apart
    std::uint32_t misconfig_max_hosts = 2;    // distinct hosts a retrying source tried
    Severity worm_severity = Severity::High;
    Severity misconfig_severity = Severity::Low;
    Severity undetermined_severity = Severity::Medium;
};
struct CorrelatorConfig {
    bool escalate_multiple_detectors = true;        // +1 level once 2 detector kinds fired
    std::uint32_t repeat_offender_seconds = 86400;  // +1 level within this after a resolve
    std::uint32_t auto_resolve_idle_seconds = 3600; // 0 = incidents stay open
    std::uint32_t max_timeline = 100;               // findings kept per incident
};
// What the engine holds at most, whatever the traffic (a flood of spoofed senders, a day of
// incidents). Idle sources and resolved incidents leave memory on their own; these caps
// decide what goes first when the traffic outruns that, and every eviction is counted in
// Totals. Defaults sized for a fleet of 100,000 workloads plus unattributed senders.
struct MemoryLimits {
    // Source identities held. Beyond: the least recently seen sources without an open
    // incident are evicted (their windows are lost, the detection of what they were doing
    // starts over).
    std::uint32_t max_sources = 200'000;
    // Open incidents. Beyond: the least recently active open incident leaves memory
    // unresolved (the controller keeps its stored copy); its subject's next finding opens a
    // new incident.
    std::uint32_t max_open_incidents = 10'000;
    // Resolved incidents kept for incident(id) lookups, the most recently resolved; older
    // ones leave memory. Repeat-offender escalation does not need them (see below).
    std::uint32_t max_resolved_incidents = 1'024;
    // "Resolved at" records of source identities, for repeat-offender escalation; each
    // expires repeat_offender_seconds after its resolve. Beyond: the oldest are evicted.
    std::uint32_t max_repeat_offender_records = 200'000;
};
// Exempt a known scanner by workload (optionally on one enforcer) or by segment, until
// `expires_ns` (event time). An exempted source's findings open no incident.
struct Exemption {
    std::string enforcer; // "" = any enforcer
    std::string workload; // "" = match by segment
    std::string segment;
    std::int64_t expires_ns = 0;
    std::string reason;
};

// Destinations no detector judges: broadcast and multicast are announcements (DHCP, NetBIOS,
// SSDP, LLMNR, mDNS), not attempts at a host. Add a site's subnet broadcast addresses
// ("10.1.0.255/32"). Drops toward them still count on an open incident.
std::vector<std::string> default_ignored_destinations(); // 255.255.255.255, 224.0.0.0/4, ff00::/8

struct AnalyzerConfig {
    ScanWindowConfig scan;
    HostSweepConfig host_sweep;
    VerticalScanConfig vertical_scan;
    BoxScanConfig box_scan;
    SlowScanConfig slow_scan;
    DistinctTargetsConfig distinct_targets;
    LateralMovementConfig lateral;
    ForbiddenZoneConfig forbidden;
    BeaconingConfig beaconing;
    FanInConfig fan_in;
    CorrelatorConfig correlator;
    MemoryLimits limits;
    std::vector<std::string> user_segments{"role=vdi", "role=user-terminal"};
    std::vector<std::string> admin_segments{"role=admin-terminal"};
    std::vector<std::string> vdi_segments{"role=vdi"};
    std::vector<Exemption> exemptions;
    std::vector<std::string> ignored_destinations = default_ignored_destinations(); // CIDRs
    std::uint32_t sweep_seconds = 60; // event time between passes freeing idle state
};

// ------------------------------------------------------------------ output --------------

enum class Rule : std::uint8_t {
    HostSweep,
    VerticalScan,
    BoxScan,
    LateralMovement,
    Decoy,
    UserToAdmin,
    VdiFileSharing,
    Beaconing,
    FanIn,
    SlowScan,
    DistinctTargets,
    Spoofing,
};
inline constexpr std::size_t rule_count = 12;
std::string_view detector_name(Rule rule); // "host-sweep", ..., "forbidden-zone", "fan-in"
std::string_view rule_name(Rule rule);     // as detector_name, but "decoy", "user-to-admin", ...
std::optional<Rule> rule_from_name(std::string_view name); // a rule name (not "forbidden-zone")

struct Finding {
    Rule rule = Rule::HostSweep;
    std::string detector;  // detector_name(rule)
    std::string rule_text; // rule_name(rule)
    Severity severity = Severity::Medium;
    double score = 0;           // >= 1 at threshold; beaconing: periodicity 1 - cv
    std::string explanation;    // for a SOC analyst
    std::string classification; // fan-in: "worm-like" | "misconfigured-service" | "undetermined"
    std::size_t distinct_hosts = 0;
    std::size_t distinct_ports = 0;
    std::size_t distinct_targets = 0; // (host, port) pairs; fan-in: distinct sources
    std::int64_t first_ns = 0;
    std::int64_t last_ns = 0;
    std::vector<std::string> sample_targets; // up to 10, "10.1.0.2 tcp/445", earliest first
    std::uint64_t incident_id = 0;
};

enum class IncidentState : std::uint8_t { Open, Resolved };

struct Incident {
    std::uint64_t id = 0;
    bool about_target = false; // fan-in: the subject is a target, not a source
    std::string subject;       // "hv1/vdi-001" or "10.0.0.30 tcp/445"
    std::string enforcer, workload, port, mac, address, user;
    Severity severity = Severity::Low;
    bool repeat_offender = false;
    IncidentState state = IncidentState::Open;
    std::int64_t opened_ns = 0, last_ns = 0, resolved_ns = 0;
    std::uint64_t events = 0; // drops of the subject since the incident opened
    std::array<std::uint64_t, rule_count> findings{};   // per rule
    std::array<std::uint64_t, rule_count> suppressed{}; // storm: would have fired again
    std::vector<Finding> timeline;                      // first max_timeline findings
    std::uint64_t timeline_dropped = 0;
};

struct Totals {
    std::uint64_t observations = 0;
    std::uint64_t findings = 0;
    std::uint64_t suppressed = 0; // storm suppression
    std::uint64_t exempted = 0;   // findings of exempted sources
    std::uint64_t saturated = 0;  // targets not tracked because a cap was reached
    std::uint64_t ignored = 0;    // drops toward ignored (broadcast, multicast) destinations
    // Regular series from a managed server to a workload of the inventory (a backup, a
    // monitoring check): not reported, counted here once per series.
    std::uint64_t scheduled_jobs = 0;
    std::uint64_t incidents = 0;
    // Source identities seen (one that returns after leaving memory counts again).
    std::size_t sources = 0;
    std::size_t active_sources = 0;  // sources held with live windows
    std::size_t tracked_targets = 0; // fan-in
    // Memory bounds at work (MemoryLimits). Released: left memory in the normal course
    // (idle, or resolved and beyond the kept ones). Evicted: pushed out early by a cap.
    std::uint64_t released_sources = 0;  // idle beyond every window
    std::uint64_t evicted_sources = 0;   // max_sources
    std::uint64_t released_incidents = 0; // resolved, beyond max_resolved_incidents
    std::uint64_t evicted_incidents = 0;  // open, beyond max_open_incidents
    std::uint64_t expired_repeat_offender_records = 0; // older than repeat_offender_seconds
    std::uint64_t evicted_repeat_offender_records = 0; // max_repeat_offender_records
    std::size_t held_sources = 0;   // source identities in memory (active or with an incident)
    std::size_t open_incidents = 0;
    std::size_t held_incidents = 0; // open and kept resolved ones
    std::size_t repeat_offender_records = 0;
};

std::string
format_duration(std::int64_t ns); // "850 ms", "3.2 s", "12 s", "4 min 10 s", "2 h 5 min"

class Analyzer {
  public:
    explicit Analyzer(AnalyzerConfig config = {});
    ~Analyzer();
    Analyzer(const Analyzer&) = delete;
    Analyzer& operator=(const Analyzer&) = delete;
    Analyzer(Analyzer&&) noexcept;
    Analyzer& operator=(Analyzer&&) noexcept;

    // Feeds one drop; returns the findings it raised (valid until the next call). Findings
    // suppressed by a storm or an exemption are counted, not returned.
    std::span<const Finding> observe(const Observation& observation);

    // Resolves an incident at `at_ns`: its source is re-armed (quiet periods forgotten),
    // and a new incident of the same subject within repeat_offender_seconds escalates.
    // False when the incident is unknown, already resolved, or no longer in memory.
    bool resolve(std::uint64_t incident_id, std::int64_t at_ns);
    void add_exemption(Exemption exemption);
    // Replaces thresholds, severities, services, segment lists and exemptions (a new policy
    // or configuration); the sources' windows, incidents and counters are kept.
    void reconfigure(AnalyzerConfig config);
    // The source of this (source) incident starts afresh: windows and quiet periods are
    // forgotten, the incident stays open. After a quarantine is released, what the source
    // does next is judged on its own, not folded into the old storm.
    bool rearm(std::uint64_t incident_id);
    // The incident the last observe() counted its drop toward (0: none): the source's, or
    // else the target's (fan-in).
    std::uint64_t last_incident() const;

    // The incidents in memory (open, and the last max_resolved_incidents resolved), by id.
    // The pointers are valid until the next non-const call.
    std::vector<const Incident*> incidents() const;
    // nullptr when unknown or no longer in memory (resolved long ago, or evicted).
    const Incident* incident(std::uint64_t id) const;
    Totals totals() const;
    std::size_t memory_bytes() const; // state held (approximate: containers' capacities)
    const AnalyzerConfig& config() const;

    // Checkpoint: everything the engine holds (sources' windows, fan-in, incidents,
    // quiet periods, repeat-offender records, totals), not the configuration, in a versioned
    // binary encoding (README.md, "Checkpoints"). restore_state(save_state(), config) then
    // the same observations give the same findings as if the engine had never stopped.
    std::string save_state() const;
    // Rejects a truncated, damaged or unknown-version checkpoint with a message saying so.
    static std::expected<Analyzer, std::string> restore_state(std::string_view bytes,
                                                              AnalyzerConfig config);

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace bulkhead::analyzer
