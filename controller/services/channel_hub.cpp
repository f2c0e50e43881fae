#include "controller/services/channel_hub.hpp"

#include "policies/ruleset_diff.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace bulkhead::controller {

using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

namespace {
constexpr std::size_t kDiffCacheEntries = 4096;
// changed() of at most this many enforcers prepares their diffs itself (see the header).
constexpr std::size_t kPrepareAtMost = 8;

// {"generation":G,"hash":H,"ruleset":{...},"type":"ruleset"} as nlohmann would write it (its
// members sorted), with the document written from the element lists' cached texts.
std::string full_ruleset_line(std::uint64_t generation, const std::string& hash, const ruleset::Ruleset& ruleset) {
    const std::string document = ruleset::to_json_text(ruleset, hash);
    std::string line;
    line.reserve(document.size() + hash.size() + 64);
    line += "{\"generation\":";
    line += std::to_string(generation);
    line += ",\"hash\":";
    line += json(hash).dump();
    line += ",\"ruleset\":";
    line += document;
    line += ",\"type\":\"ruleset\"}\n";
    return line;
}
}  // namespace

// One enforcer's current stream: what wakes it and whether it must end.
struct ChannelHub::Mailbox {
    std::mutex mutex;
    std::condition_variable condition;  // next_line() waits here
    bool pending = true;                // something may be due (a change, or the hello)
    bool closed = false;
    bool waiting_full = false;  // queued for a full-ruleset turn (guarded by the hub's full_mutex_)
    std::function<void()> wake;
    // The last rulesets handed to this stream, (generation, CLOCK_REALTIME ns), oldest first:
    // the "pushed" stage of a containment's timeline.
    std::deque<std::pair<std::uint64_t, std::int64_t>> pushes;
    // What the stream last sent (it publishes it here), and the diff from there to the
    // desired ruleset that changed() prepared, for take_prepared().
    std::uint64_t sent_generation = 0;
    std::string sent_hash;
    bool format1 = false;
    struct Prepared {
        std::uint64_t base_generation = 0;
        std::string base_hash;
        std::uint64_t generation = 0;
        std::string hash;
        std::shared_ptr<const std::string> line;
    };
    std::optional<Prepared> prepared;

    void record_push(std::uint64_t generation) {
        std::lock_guard lock(mutex);
        pushes.emplace_back(generation, wall_clock_ns());
        if (pushes.size() > 16) {
            pushes.pop_front();
        }
    }

    void notify(bool close) {
        std::function<void()> call;
        {
            std::lock_guard lock(mutex);
            pending = true;
            closed = closed || close;
            call = wake;
        }
        condition.notify_all();
        if (call) {
            call();
        }
    }
};

class ChannelHub::Stream final : public ChannelStream {
  public:
    Stream(ChannelHub& hub, std::string enforcer, std::shared_ptr<Mailbox> mailbox, std::uint64_t generation,
           std::string hash, bool format1)
        : hub_(hub), enforcer_(std::move(enforcer)), mailbox_(std::move(mailbox)), sent_generation_(generation),
          sent_hash_(std::move(hash)), format1_(format1), last_sent_(SteadyClock::now()) {
        std::lock_guard lock(mailbox_->mutex);
        mailbox_->sent_generation = sent_generation_;
        mailbox_->sent_hash = sent_hash_;
        mailbox_->format1 = format1_;
    }

    ~Stream() override {
        if (holding_full_) {
            hub_.release_full();
        }
        std::lock_guard lock(hub_.mutex_);
        auto it = hub_.mailboxes_.find(enforcer_);
        if (it != hub_.mailboxes_.end() && it->second == mailbox_) {
            hub_.mailboxes_.erase(it);
        }
    }

    void set_wake(std::function<void()> wake) override {
        std::lock_guard lock(mailbox_->mutex);
        mailbox_->wake = std::move(wake);
    }

    std::chrono::steady_clock::time_point next_heartbeat() const override {
        return last_sent_ + hub_.heartbeat_interval_;
    }

    std::optional<std::string> poll_line() override {
        if (holding_full_) {
            // Polled again: the full ruleset sent last time has been written.
            holding_full_ = false;
            hub_.release_full();
        }
        {
            std::lock_guard lock(mailbox_->mutex);
            if (mailbox_->closed || hub_.stopping_) {
                return std::nullopt;
            }
            mailbox_->pending = false;  // a change after this point marks it again
        }
        if (!hello_sent_) {
            hello_sent_ = true;
            auto desired = hub_.desired_.current(enforcer_);
            {
                std::lock_guard lock(mailbox_->mutex);
                mailbox_->pending = true;  // the ruleset or diff may follow at once
            }
            return sent(json{{"type", "hello"},
                             {"controller_time_ms", hub_.clock_()},
                             {"heartbeat_interval_ms", hub_.heartbeat_interval_.count()},
                             {"desired_generation", desired ? desired->generation : 0}}
                            .dump() +
                        "\n");
        }
        auto desired = hub_.desired_.current(enforcer_);
        if (desired && (desired->hash != sent_hash_ || desired->generation != sent_generation_)) {
            auto base = hub_.desired_.find(enforcer_, sent_generation_, sent_hash_);
            const bool full = !base || !base->ruleset;
            if (!full || hub_.acquire_full(mailbox_)) {
                holding_full_ = full;
                sent_generation_ = desired->generation;
                sent_hash_ = desired->hash;
                {
                    std::lock_guard lock(mailbox_->mutex);
                    mailbox_->sent_generation = sent_generation_;
                    mailbox_->sent_hash = sent_hash_;
                }
                mailbox_->record_push(desired->generation);
                if (format1_) {
                    return sent(format1_update_line(base, *desired));
                }
                return sent(*hub_.update_line(base, *desired));
            }
            // Waiting for a full-ruleset turn: heartbeats still go out meanwhile.
        }
        if (SteadyClock::now() >= next_heartbeat()) {
            return sent(json{{"type", "heartbeat"}, {"controller_time_ms", hub_.clock_()}}.dump() + "\n");
        }
        return std::string();
    }

    std::optional<std::string> take_prepared() override {
        if (!hello_sent_ || holding_full_ || format1_) {
            return std::nullopt;  // poll_line() has its own work first
        }
        std::shared_ptr<const std::string> line;
        std::uint64_t generation = 0;
        {
            // Under the mailbox's lock, so that changed() cannot prepare from what this
            // stream is about to stop holding. A newer change than the prepared one has moved
            // the desired ruleset already: left to poll_line(), which its notify reaches.
            std::lock_guard lock(mailbox_->mutex);
            if (!mailbox_->prepared || mailbox_->closed || hub_.stopping_) {
                return std::nullopt;
            }
            auto prepared = std::move(*mailbox_->prepared);
            mailbox_->prepared.reset();
            if (prepared.base_generation != sent_generation_ || prepared.base_hash != sent_hash_) {
                return std::nullopt;
            }
            const auto desired = hub_.desired_.current(enforcer_);
            if (!desired || desired->generation != prepared.generation || desired->hash != prepared.hash) {
                return std::nullopt;
            }
            sent_generation_ = prepared.generation;
            sent_hash_ = prepared.hash;
            mailbox_->sent_generation = sent_generation_;
            mailbox_->sent_hash = sent_hash_;
            line = std::move(prepared.line);
            generation = prepared.generation;
        }
        mailbox_->record_push(generation);
        return sent(*line);
    }

    std::optional<std::string> next_line() override {
        for (;;) {
            auto line = poll_line();
            if (!line || !line->empty()) {
                return line;
            }
            std::unique_lock lock(mailbox_->mutex);
            mailbox_->condition.wait_until(lock, next_heartbeat(),
                                           [&] { return mailbox_->pending || mailbox_->closed || hub_.stopping_; });
        }
    }

  private:
    std::string sent(std::string line) {
        last_sent_ = SteadyClock::now();
        return line;
    }

    ChannelHub& hub_;
    std::string enforcer_;
    std::shared_ptr<Mailbox> mailbox_;
    std::uint64_t sent_generation_;
    std::string sent_hash_;  // format 2
    bool format1_;
    bool holding_full_ = false;  // a full-ruleset turn, returned at the next poll
    bool hello_sent_ = false;
    SteadyClock::time_point last_sent_;
};

ChannelHub::ChannelHub(const DesiredVersions& desired, std::chrono::milliseconds heartbeat_interval, Clock clock,
                       std::size_t full_rulesets_in_flight)
    : desired_(desired), heartbeat_interval_(heartbeat_interval), clock_(std::move(clock)),
      full_limit_(std::max<std::size_t>(1, full_rulesets_in_flight)) {}

bool ChannelHub::acquire_full(const std::shared_ptr<Mailbox>& mailbox) {
    std::lock_guard lock(full_mutex_);
    if (full_in_flight_ < full_limit_) {
        ++full_in_flight_;
        mailbox->waiting_full = false;
        return true;
    }
    if (!mailbox->waiting_full) {
        mailbox->waiting_full = true;
        full_waiting_.push_back(mailbox);
    }
    return false;
}

void ChannelHub::release_full() {
    std::shared_ptr<Mailbox> next;
    {
        std::lock_guard lock(full_mutex_);
        --full_in_flight_;
        while (!full_waiting_.empty() && !next) {
            next = full_waiting_.front().lock();
            full_waiting_.pop_front();
        }
        if (next) {
            next->waiting_full = false;
        }
    }
    if (next) {
        next->notify(false);  // its stream polls again and takes the turn
    }
}

std::pair<std::size_t, std::size_t> ChannelHub::full_rulesets() const {
    std::lock_guard lock(full_mutex_);
    return {full_in_flight_, full_waiting_.size()};
}

ChannelHub::~ChannelHub() { shutdown(); }

std::optional<std::int64_t> ChannelHub::pushed_at(const std::string& enforcer, std::uint64_t generation) const {
    std::shared_ptr<Mailbox> mailbox;
    {
        std::lock_guard lock(mutex_);
        auto it = mailboxes_.find(enforcer);
        if (it == mailboxes_.end()) {
            return std::nullopt;
        }
        mailbox = it->second;
    }
    std::lock_guard lock(mailbox->mutex);
    for (const auto& [pushed, ns] : mailbox->pushes) {
        if (pushed >= generation) {
            return ns;
        }
    }
    return std::nullopt;
}

std::unique_ptr<ChannelStream> ChannelHub::open(const std::string& enforcer, std::uint64_t generation,
                                                const std::string& hash, int hash_format) {
    std::string held_hash = hash;
    const bool format1 = hash_format == 1;
    if (format1 && !hash.empty()) {
        // What the previous release holds, as a format-2 hash; unknown: nothing matches and
        // the enforcer gets a full ruleset.
        auto held = desired_.find_format1(enforcer, generation, hash);
        held_hash = held ? held->hash : "format1:" + hash;
    }
    auto mailbox = std::make_shared<Mailbox>();
    std::shared_ptr<Mailbox> replaced;
    {
        std::lock_guard lock(mutex_);
        auto& slot = mailboxes_[enforcer];
        replaced = std::exchange(slot, mailbox);
    }
    if (replaced) {
        replaced->notify(true);
    }
    return std::make_unique<Stream>(*this, enforcer, std::move(mailbox), generation, held_hash, format1);
}

void ChannelHub::changed(const std::vector<std::string>& enforcers) {
    std::vector<std::pair<std::string, std::shared_ptr<Mailbox>>> woken;
    {
        std::lock_guard lock(mutex_);
        for (const auto& id : enforcers) {
            if (auto it = mailboxes_.find(id); it != mailboxes_.end()) {
                woken.emplace_back(id, it->second);
            }
        }
    }
    if (woken.size() <= kPrepareAtMost) {
        for (const auto& [id, mailbox] : woken) {
            prepare(id, *mailbox);
        }
    }
    for (const auto& [id, mailbox] : woken) {
        mailbox->notify(false);
    }
}

void ChannelHub::prepare(const std::string& enforcer, Mailbox& mailbox) {
    std::uint64_t held_generation = 0;
    std::string held_hash;
    {
        std::lock_guard lock(mailbox.mutex);
        if (mailbox.format1 || mailbox.closed) {
            return;  // an enforcer of the previous release gets lines built for it alone
        }
        held_generation = mailbox.sent_generation;
        held_hash = mailbox.sent_hash;
    }
    const auto target = desired_.current(enforcer);
    if (!target || (target->generation == held_generation && target->hash == held_hash)) {
        return;
    }
    const auto base = desired_.find(enforcer, held_generation, held_hash);
    if (!base || !base->ruleset) {
        return;  // a full ruleset: the stream waits for its turn (acquire_full)
    }
    auto line = update_line(base, *target);
    std::lock_guard lock(mailbox.mutex);
    mailbox.prepared = Mailbox::Prepared{held_generation, held_hash, target->generation, target->hash, std::move(line)};
}

void ChannelHub::shutdown() {
    stopping_ = true;
    std::vector<std::shared_ptr<Mailbox>> all;
    {
        std::lock_guard lock(mutex_);
        for (auto& [id, mailbox] : mailboxes_) {
            all.push_back(mailbox);
        }
    }
    for (auto& mailbox : all) {
        mailbox->notify(true);
    }
}

bool ChannelHub::connected(const std::string& enforcer) const {
    std::lock_guard lock(mutex_);
    return mailboxes_.contains(enforcer);
}

std::size_t ChannelHub::open_streams() const {
    std::lock_guard lock(mutex_);
    return mailboxes_.size();
}

ChannelHub::DiffCacheStats ChannelHub::diff_cache_stats() const {
    std::lock_guard lock(cache_mutex_);
    return {cache_hits_, cache_misses_, diff_cache_.size()};
}

std::shared_ptr<const std::string> ChannelHub::update_line(const std::optional<RulesetVersion>& base,
                                                           const RulesetVersion& target) {
    if (!base || !base->ruleset) {
        // A full ruleset (first connection, unknown base) names its enforcer inside and is
        // large: built for this stream, not kept.
        return std::make_shared<const std::string>(full_ruleset_line(target.generation, target.hash, *target.ruleset));
    }
    // A diff is the same for every stream that holds the base (the same enforcer
    // reconnecting, identical hosts).
    const std::string key = std::to_string(base->generation) + "/" + base->hash + ">" +
                            std::to_string(target.generation) + "/" + target.hash;
    {
        std::lock_guard lock(cache_mutex_);
        if (auto it = diff_cache_.find(key); it != diff_cache_.end()) {
            ++cache_hits_;
            return it->second;
        }
        ++cache_misses_;
    }
    json message{{"type", "diff"},
                 {"base_generation", base->generation},
                 {"base_hash", base->hash},
                 {"generation", target.generation},
                 {"hash", target.hash},
                 {"diff", ruleset::wire_diff(*base->ruleset, *target.ruleset)}};
    auto line = std::make_shared<const std::string>(message.dump() + "\n");
    std::lock_guard lock(cache_mutex_);
    if (diff_cache_.emplace(key, line).second) {
        diff_cache_order_.push_back(key);
        while (diff_cache_order_.size() > kDiffCacheEntries) {
            diff_cache_.erase(diff_cache_order_.front());
            diff_cache_order_.pop_front();
        }
    }
    return line;
}

std::string ChannelHub::format1_update_line(const std::optional<RulesetVersion>& base, const RulesetVersion& target) {
    // An enforcer of the previous release: the same messages with format-1 hashes. Built
    // for it alone (not cached): a mixed fleet is a transition, not a steady state.
    if (!base || !base->ruleset) {
        return full_ruleset_line(target.generation, target.format1_hash(), *target.ruleset);
    }
    auto diff = ruleset::diff_rulesets(*base->ruleset, *target.ruleset);
    json message{{"type", "diff"},
                 {"base_generation", base->generation},
                 {"base_hash", base->format1_hash()},
                 {"generation", target.generation},
                 {"hash", target.format1_hash()},
                 {"diff", ruleset::diff_to_wire(diff, *base->ruleset, *target.ruleset)}};
    return message.dump() + "\n";
}

}  // namespace bulkhead::controller
