// Drop events and allowed-flow summaries the enforcers upload.
#pragma once

#include "controller/domain/time.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace bulkhead::controller {

// A drop event or allowed-flow summary an enforcer uploaded (enforcer/nflog DropEvent
// JSON), with the fields queries filter on pulled out.
struct StoredEvent {
    std::int64_t id = 0;          // store-assigned, increasing in insertion order
    std::string enforcer;
    std::uint64_t enforcer_seq = 0; // the spool's sequence number: (enforcer, seq) is unique
    std::string type;             // "drop" | "allowed_flow" | enforcer lifecycle types
    std::int64_t time_ns = 0;     // kernel timestamp
    TimeMs received_at = 0;
    std::string workload;         // attributed workload ("" if none)
    std::string direction;        // "out" | "in"
    std::string reason;           // default | deny | decoy | quarantine | allow
    std::string src, dst;         // addresses as text
    std::string protocol;         // "tcp", "udp", "icmp", ...
    std::optional<std::uint16_t> dport;
    // The source port, for the analyzer (a retransmit repeats it, a new attempt does not); for
    // an ICMP echo its identifier (one per ping process). Not a column: ingest takes it from
    // the upload, a replay from the document.
    std::optional<std::uint16_t> sport;
    std::uint64_t count = 1;      // identical repeats folded by the enforcer
    // The enforcer's wall clock minus the controller's when the upload carrying the event
    // arrived (the batch's sent_ns against the receipt; includes the transit, a few ms).
    // Events keep the enforcer's kernel timestamp, so an enforcer whose clock is off shows
    // here, and the API flags its events (clock_suspect). nullopt: the upload had no sent_ns.
    std::optional<std::int64_t> clock_offset_ms;
    // The interface the packet came in on (physindev, else indev) and the source MAC, for
    // the analyzer's attribution. Not columns: ingest fills them from the upload, reads
    // from the document.
    std::string port, mac;
    // Monitor mode: the rule would have dropped the packet but let it pass. Not a column:
    // restore_upload_fields reads it from the document.
    bool would_drop = false;
    nlohmann::json document;      // the event as uploaded
    // Writing: the event as uploaded, already compact JSON text; when set, the store writes it
    // instead of serialising `document` (ingest parses into text, not a DOM). Reading: filled
    // instead of `document` when the query asks for text (EventQuery::parse_documents).
    std::string document_text;
    // Not stored: when the event passed each stage on its way in (CLOCK_REALTIME ns, 0 where
    // unknown), for the timeline of a containment it completes (ContainmentTimeline).
    struct PathTimes {
        std::int64_t enforcer_received_ns = 0;   // NFLOG delivery (the event's "received_ns")
        std::int64_t enforcer_sent_ns = 0;       // the upload left the enforcer (batch "sent_ns")
        std::int64_t controller_received_ns = 0; // the upload reached the event service
        std::int64_t stored_ns = 0;              // committed to the store
    } path;
};

// Blocked attempts (drops and their summaries), as opposed to allowed flows and lifecycle.
inline bool is_blocked_type(const std::string& type) {
    return type == "drop" || type == "drop_summary";
}
// Connection attempts, blocked or allowed (not enforcer lifecycle events).
inline bool is_traffic_type(const std::string& type) {
    return is_blocked_type(type) || type == "allowed_flow" || type == "allowed_flows";
}

struct EventQuery {
    std::optional<std::int64_t> from_ns, to_ns;   // kernel time range, [from, to)
    std::optional<std::string> workload;          // attributed workload
    std::optional<std::string> address;           // matches src or dst
    std::optional<std::uint16_t> port;            // destination port
    std::optional<std::string> reason;
    std::optional<std::string> type;              // default: any
    std::optional<std::string> enforcer;
    std::optional<std::int64_t> after_id;         // paging: ids greater than this
    std::optional<std::int64_t> through_id;       // ids up to and including this
    std::size_t limit = 100;                      // at most 10,000
    bool newest_first = true;
    // false: documents come back as text in document_text, `document` left null. For readers
    // that pass a document on or need a few members of it (the SIEM export), where building a
    // JSON tree per event was nearly half of the export's CPU.
    bool parse_documents = true;
};

struct EventInsertResult {
    std::size_t accepted = 0;
    std::size_t duplicates = 0;   // (enforcer, seq) already stored
    std::uint64_t through_seq = 0; // highest seq of the batch
    std::vector<std::int64_t> ids; // per input event, in order: its new id, 0 = a duplicate
};

struct CountBucket {
    std::int64_t start_ns = 0;
    std::uint64_t events = 0;     // sum of counts
};

}  // namespace bulkhead::controller
