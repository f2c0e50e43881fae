// SiemExport: delivers the controller's records to each configured SIEM destination
// (controller/siem: syslog over TLS, TCP or UDP, or a file; CEF, LEEF or OCSF), in order,
// each with its stable id, at least once.
//
// The durable outbox for the SIEM is the evidence itself: every record that is exported is
// already stored in order in its hash-chained stream (events, incident and quarantine
// changes, audit entries, signed checkpoints), so each destination keeps only a durable
// cursor per stream (the last record it received, in the settings table) instead of a copy
// of every record in an outbox table: at 1,000 drops/s and three destinations a copy per
// record would triple the store's writes. A destination that is down keeps its cursor and,
// when it is back, receives everything after it, in order; records are kept in the database
// for the hot period (90 days by default), which bounds how long a SIEM may be away.
//
// Each destination has its own thread, sender and token bucket, so a SIEM that is down or
// slow holds back only itself. A batch is sent, then the cursor is stored: a crash between
// the two sends the batch again (the SIEM de-duplicates by the stable id).
#pragma once

#include "controller/evidence/checkpoint.hpp"
#include "controller/services/evidence_archive.hpp"
#include "controller/siem/siem_destination.hpp"
#include "controller/siem/syslog_message.hpp"
#include "controller/siem/syslog_sender.hpp"
#include "controller/store/repositories.hpp"

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

namespace bulkhead::controller {

struct SiemExportOptions {
    std::vector<siem::SiemDestination> destinations;
    siem::SyslogIdentity identity;
    siem::SyslogSenderOptions sender;
    std::size_t batch = 1000;                         // records per send
    std::chrono::milliseconds poll{250};              // new records are looked for at least this often
    std::chrono::milliseconds first_backoff{500};     // after a failed send, doubling up to max_backoff
    std::chrono::milliseconds max_backoff{30'000};
};

// The streams a destination reads, each with its own cursor.
enum class SiemSource { Checkpoints, Audit, Quarantines, Incidents, Events };

struct SiemSourceBacklog {
    SiemSource source = SiemSource::Events;
    std::uint64_t delivered_through = 0;  // the cursor: sequence (event id; checkpoint time)
    std::uint64_t head = 0;               // the stream's last record
};

struct SiemDestinationStatus {
    std::string name, transport, format, address;
    std::string state;                     // "delivering" | "failing" | "starting"
    std::uint64_t pending = 0;             // records stored but not yet delivered
    std::optional<TimeMs> oldest_pending_at;
    std::uint64_t delivered = 0;           // records sent by this process
    std::uint64_t failures = 0;            // failed sends by this process
    std::uint64_t rate_limited = 0;        // times the token bucket held a batch back
    std::string last_error;                // "" when the last send succeeded
    std::string last_error_kind;           // unreachable | untrusted | closed | io | store
    std::optional<TimeMs> last_delivery_at;
    std::vector<SiemSourceBacklog> sources;
};

std::string_view to_string(SiemSource source);

class SiemExport {
public:
    using Clock = std::function<TimeMs()>;
    using SenderFactory = std::function<std::unique_ptr<siem::SyslogSender>(const siem::SiemDestination&)>;

    SiemExport(SiemExportOptions options, EventRepository& events, EvidenceRepository& evidence,
               SettingsRepository& settings, Clock clock, SenderFactory make_sender = {});
    ~SiemExport();
    SiemExport(const SiemExport&) = delete;
    SiemExport& operator=(const SiemExport&) = delete;

    bool enabled() const { return !destinations_.empty(); }
    // Reads every destination's cursors (a new destination starts at the streams' current
    // heads: it receives what is stored from now on) and starts the delivery threads.
    std::expected<void, std::string> start();
    void stop();
    // Records were stored: look now rather than at the next poll.
    void wake();

    std::vector<SiemDestinationStatus> status();

    // Events older than the hot tier: a destination that was away longer than the hot period
    // (or whose cursor is behind it) reads them from the archive, so nothing is skipped.
    void set_archive(ArchivedEvents* archive) { archive_ = archive; }

    // One record read from a source, owning what its SiemRecord points to.
    struct PendingRecord {
        std::uint64_t position = 0;  // the source's cursor once this record is delivered
        TimeMs at = 0;
        std::variant<StoredEvent, Incident, Quarantine, AuditEntry, evidence::SignedCheckpoint> subject;
        std::string id;              // the stable id
        bool skip_only = false;      // nothing to send, only moves the cursor past unreadable records
    };

private:
    struct Destination;
    void run(Destination& destination);
    std::expected<std::vector<PendingRecord>, std::string> read(SiemSource source, std::uint64_t after,
                                                                std::size_t limit);
    void fail(Destination& destination, std::string kind, std::string message);
    // One pass over the destination's sources; true when something was delivered.
    bool deliver_once(Destination& destination);
    std::expected<std::uint64_t, std::string> head_of(SiemSource source);

    SiemExportOptions options_;
    EventRepository& events_;
    EvidenceRepository& evidence_;
    SettingsRepository& settings_;
    Clock clock_;
    SenderFactory make_sender_;
    std::vector<std::unique_ptr<Destination>> destinations_;
    std::atomic<ArchivedEvents*> archive_{nullptr};
};

// GET /api/v1/evidence's "siem" member, and the destinations' lines of /api/v1/metrics
// (Prometheus text: pending records, age of the oldest, delivered, failures, up).
nlohmann::json siem_status_json(const std::vector<SiemDestinationStatus>& destinations, TimeMs now);
std::string siem_metrics_text(const std::vector<SiemDestinationStatus>& destinations, TimeMs now);

}  // namespace bulkhead::controller
