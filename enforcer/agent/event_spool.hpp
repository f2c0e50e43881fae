// The enforcer's disk spool of events (docs/control-channel.md, "The enforcer's spool"):
// <dir>/seg-<first seq>.jsonl segment files of lines {"seq":N,"event":{...}} (exactly the
// upload envelope), appended with one fdatasync per batch, bounded in bytes by evicting the
// oldest segment (counted), drained oldest first. Sequence numbers are per enforcer,
// strictly increasing and survive restarts: the highest one ever assigned is always either
// in a segment on disk or in <dir>/last_seq (written durably before a segment is deleted).
// Thread-safe: the sink's writer thread appends while its uploader thread reads batches.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <expected>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace bulkhead::enforcer::agent {

struct SpoolConfig {
    std::filesystem::path directory;
    std::uint64_t max_bytes = 64ull * 1024 * 1024;
    std::uint64_t segment_bytes = 0;  // 0: max_bytes / 8, within [16 KiB, 4 MiB]
};

struct SpoolStats {
    std::uint64_t bytes = 0;           // on disk, in segments
    std::uint64_t events = 0;          // spooled and not yet acknowledged
    std::uint64_t segments = 0;
    std::uint64_t evicted = 0;         // events lost to the size bound (since start)
    std::uint64_t evicted_segments = 0;
    std::uint64_t last_seq = 0;        // highest seq assigned
    std::uint64_t acked_through = 0;   // highest seq the controller confirmed (this run)
    std::uint64_t write_errors = 0;
    std::uint64_t recovered_truncations = 0;  // torn tails cut at start
    std::uint64_t set_aside = 0;       // events the controller refused for good (since start)
};

struct AppendResult {
    std::uint64_t first_seq = 0;
    std::uint64_t last_seq = 0;
    std::uint64_t evicted = 0;  // unacknowledged events evicted to make room
    std::uint64_t evicted_first_seq = 0;
    std::uint64_t evicted_last_seq = 0;
};

struct UploadBatch {
    std::string body;  // {"events":[...]}
    std::uint64_t first_seq = 0;
    std::uint64_t last_seq = 0;
    std::size_t count = 0;
};

class EventSpool {
public:
    static std::expected<std::unique_ptr<EventSpool>, std::string> open(SpoolConfig config);
    ~EventSpool();
    EventSpool(const EventSpool&) = delete;
    EventSpool& operator=(const EventSpool&) = delete;

    // Gives each event the next seq and appends them with one fdatasync, evicting the oldest
    // segments first if the bound would be exceeded. With `sync` false the last write is
    // left for sync(): the events can be read for upload at once, before the disk has
    // them (a crash in between loses what it would have lost a moment earlier; nothing
    // leaves the spool before the controller confirms it either way).
    std::expected<AppendResult, std::string> append(const std::vector<nlohmann::json>& events, bool sync = true);
    // fdatasync of what append(..., false) wrote; outside the lock, so uploads go on meanwhile.
    std::expected<void, std::string> sync();

    // The oldest events not yet acknowledged, at most `max_events` and `max_bytes` of body.
    std::optional<UploadBatch> next_batch(std::size_t max_events, std::size_t max_bytes);

    // The controller committed everything through `seq`: segments wholly at or below it go,
    // except the active one, which stays open for the next append until it is full (a crash
    // before then sends its acknowledged events again; the controller de-duplicates them).
    std::expected<void, std::string> acknowledge(std::uint64_t seq);

    // The oldest unacknowledged event, `seq`, was refused by the controller for good (a
    // malformed or oversized body, not an outage): it is moved, with `reason`, to
    // <directory>/set-aside.ndjson (one JSON line each, {"seq","reason","at_ms","spooled"};
    // the file is rotated to set-aside.ndjson.1 past max_bytes / 8) and the spool goes on
    // with the next one. A poison event must never block the events behind it.
    std::expected<void, std::string> set_aside(std::uint64_t seq, std::string_view reason, std::int64_t now_ms);

    SpoolStats stats() const;
    bool has_unacknowledged() const;

private:
    struct Segment {
        std::filesystem::path path;
        std::uint64_t first_seq = 0;
        std::uint64_t last_seq = 0;
        std::uint64_t bytes = 0;
        std::uint64_t events = 0;
        // The first bytes hold only acknowledged lines: next_batch() reads from here, not
        // the whole segment again for every upload.
        std::uint64_t scan_offset = 0;
    };
    explicit EventSpool(SpoolConfig config) : config_(std::move(config)) {}
    std::expected<void, std::string> load();
    std::expected<void, std::string> remember_seq(std::uint64_t seq);
    std::expected<void, std::string> drop_oldest_segment(std::uint64_t* evicted);
    std::uint64_t unacked_in(const Segment& s) const;
    void close_active();

    SpoolConfig config_;
    mutable std::mutex mutex_;
    std::vector<Segment> segments_;  // oldest first; the last one is the active one
    int active_fd_ = -1;
    bool active_unsynced_ = false;  // written by append(..., false), not yet fdatasync'ed
    std::uint64_t last_seq_ = 0;
    std::uint64_t acked_through_ = 0;
    std::uint64_t total_bytes_ = 0;
    SpoolStats counters_;
};

}  // namespace bulkhead::enforcer::agent
