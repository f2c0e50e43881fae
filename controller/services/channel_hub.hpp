// ChannelHub: the open control-channel streams, one mailbox per enforcer.
//
// A change of one enforcer's desired ruleset marks that enforcer's mailbox and wakes that
// stream only (not every stream in the fleet); the stream then builds its message outside any
// fleet-wide lock, from a diff cache shared by every stream: the diff from a (generation,
// hash) to another is computed and serialised once however many streams need it (the same
// enforcer reconnecting, or identical hosts). Full rulesets are written per stream from the
// element lists' cached texts (policies/ruleset.hpp), not rebuilt.
//
// Streams are pulled, never pushing by themselves: poll_line() answers at once (the event-
// driven server calls it when woken and on its heartbeat timer); next_line() blocks for the
// thread-per-connection server.
#pragma once

#include "controller/core/desired_state.hpp"
#include "controller/services/service_support.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace bulkhead::controller {

class ChannelStream {
  public:
    virtual ~ChannelStream() = default;
    // The next NDJSON line if one is due (hello, ruleset, diff or heartbeat), "" when nothing
    // is due now, nothing when the stream must end (replaced by a newer stream of the same
    // enforcer, or shutdown). Never blocks on other streams.
    virtual std::optional<std::string> poll_line() = 0;
    // Like poll_line() but waits until a line is due.
    virtual std::optional<std::string> next_line() = 0;
    // Called from any thread when poll_line() may have something new. It must only schedule
    // work (it may run under the hub's locks). Set before the first poll_line().
    virtual void set_wake(std::function<void()> wake) = 0;
    // When poll_line() will next have a heartbeat to send if nothing else happens.
    virtual std::chrono::steady_clock::time_point next_heartbeat() const = 0;
    // The diff ChannelHub::changed() prepared for this stream, if it is still the one due;
    // nothing otherwise (poll_line() then does the work). It computes nothing, so the event-
    // driven server sends it from its I/O thread, without the two hops to a worker and back
    // that poll_line() costs (a quarantine's time in force).
    virtual std::optional<std::string> take_prepared() { return std::nullopt; }
};

// Where the hub reads what an enforcer should have (the fleet service's DesiredState).
class DesiredVersions {
  public:
    virtual ~DesiredVersions() = default;
    virtual std::optional<RulesetVersion> current(const std::string& enforcer) const = 0;
    virtual std::optional<RulesetVersion> find(const std::string& enforcer, std::uint64_t generation,
                                               const std::string& hash) const = 0;
    // By the format-1 hash of an enforcer of the previous release.
    virtual std::optional<RulesetVersion> find_format1(const std::string& enforcer, std::uint64_t generation,
                                                       const std::string& format1_hash) const = 0;
};

class ChannelHub {
  public:
    // `full_rulesets_in_flight`: how many streams may be writing a full ruleset at once. In a
    // large fleet a host's full ruleset is megabytes (every segment's members), and 2,000
    // enforcers connecting together would otherwise hold 2,000 of them in memory while slow
    // peers read; the others wait their turn (a diff, a heartbeat never waits).
    ChannelHub(const DesiredVersions& desired, std::chrono::milliseconds heartbeat_interval, Clock clock,
               std::size_t full_rulesets_in_flight = 32);
    ~ChannelHub();
    ChannelHub(const ChannelHub&) = delete;
    ChannelHub& operator=(const ChannelHub&) = delete;

    // Opens the stream of `enforcer`, which holds (generation, hash); an older stream of the
    // same enforcer ends. `hash_format` is what the enforcer announced (1: an enforcer of
    // the previous release, whose hashes are translated at this edge and whose messages
    // are built for it alone; inside, every hash is format 2).
    std::unique_ptr<ChannelStream> open(const std::string& enforcer, std::uint64_t generation, const std::string& hash,
                                        int hash_format = ruleset::ruleset_hash_format);
    // The desired ruleset of these enforcers changed: wake their streams. For a few of them
    // (a quarantine, a release) the diff each stream needs is built here first, on the
    // caller's thread, for take_prepared(); a fleet-wide change leaves it to the streams'
    // polls, which share the diff cache and run on every worker.
    void changed(const std::vector<std::string>& enforcers);
    // Ends every stream.
    void shutdown();

    bool connected(const std::string& enforcer) const;
    // When the stream of `enforcer` was handed `generation` or a later one (CLOCK_REALTIME
    // ns); nothing if it was not, or the stream has ended since.
    std::optional<std::int64_t> pushed_at(const std::string& enforcer, std::uint64_t generation) const;
    std::size_t open_streams() const;
    struct DiffCacheStats {
        std::uint64_t hits = 0;
        std::uint64_t misses = 0;
        std::size_t entries = 0;
    };
    DiffCacheStats diff_cache_stats() const;
    // Streams writing a full ruleset now, and streams waiting for their turn.
    std::pair<std::size_t, std::size_t> full_rulesets() const;

  private:
    struct Mailbox;
    class Stream;
    std::shared_ptr<const std::string> update_line(const std::optional<RulesetVersion>& base, const RulesetVersion& target);
    void prepare(const std::string& enforcer, Mailbox& mailbox);
    static std::string format1_update_line(const std::optional<RulesetVersion>& base, const RulesetVersion& target);

    // A full-ruleset turn; false: `mailbox` is queued and notified when a turn frees.
    bool acquire_full(const std::shared_ptr<Mailbox>& mailbox);
    void release_full();

    const DesiredVersions& desired_;
    std::chrono::milliseconds heartbeat_interval_;
    Clock clock_;
    std::atomic<bool> stopping_{false};

    mutable std::mutex mutex_;  // guards mailboxes_ only
    std::map<std::string, std::shared_ptr<Mailbox>> mailboxes_;

    // (base generation, base hash, generation, hash) -> the serialised diff line.
    mutable std::mutex cache_mutex_;
    std::map<std::string, std::shared_ptr<const std::string>> diff_cache_;
    std::deque<std::string> diff_cache_order_;  // oldest first, for eviction
    std::uint64_t cache_hits_ = 0;
    std::uint64_t cache_misses_ = 0;

    std::size_t full_limit_;
    mutable std::mutex full_mutex_;
    std::size_t full_in_flight_ = 0;
    std::deque<std::weak_ptr<Mailbox>> full_waiting_;
};

}  // namespace bulkhead::controller
