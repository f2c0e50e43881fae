#include "controller/services/enforcer_status_book.hpp"

namespace bulkhead::controller {

EnforcerStatusBook::EnforcerStatusBook(Transactions& transactions, EnforcerRepository& enforcers)
    : transactions_(transactions), enforcers_(enforcers) {}

StoreResult<std::vector<EnforcerStatus>> EnforcerStatusBook::load() {
    auto stored = enforcers_.list_enforcer_status();
    if (!stored) {
        return stored;
    }
    std::lock_guard lock(mutex_);
    for (const auto& status : *stored) {
        statuses_[status.id] = status;
    }
    return stored;
}

StoreResult<std::optional<EnforcerStatus>> EnforcerStatusBook::get(const std::string& id) {
    {
        std::lock_guard lock(mutex_);
        if (auto it = statuses_.find(id); it != statuses_.end()) {
            return it->second;
        }
    }
    return enforcers_.get_enforcer_status(id);
}

std::vector<EnforcerStatus> EnforcerStatusBook::in_memory() const {
    std::lock_guard lock(mutex_);
    std::vector<EnforcerStatus> out;
    out.reserve(statuses_.size());
    for (const auto& [id, status] : statuses_) {
        out.push_back(status);
    }
    return out;
}

StoreResult<std::vector<EnforcerStatus>> EnforcerStatusBook::list() {
    auto stored = enforcers_.list_enforcer_status();
    if (!stored) {
        return stored;
    }
    std::lock_guard lock(mutex_);
    std::map<std::string, EnforcerStatus> merged;
    for (auto& status : *stored) {
        merged[status.id] = std::move(status);
    }
    for (const auto& [id, status] : statuses_) {
        merged[id] = status;
    }
    std::vector<EnforcerStatus> out;
    out.reserve(merged.size());
    for (auto& [id, status] : merged) {
        out.push_back(std::move(status));
    }
    return out;
}

bool EnforcerStatusBook::record(const EnforcerStatus& status) {
    bool changed = false;
    {
        std::lock_guard lock(mutex_);
        auto& held = statuses_[status.id];
        changed = held.applied_hash != status.applied_hash;
        held = status;
        dirty_.insert(status.id);
    }
    if (changed) {
        acked_changed_.notify_all();
    }
    return changed;
}

void EnforcerStatusBook::enrolled(const EnforcerStatus& status) {
    std::lock_guard lock(mutex_);
    auto [it, added] = statuses_.try_emplace(status.id, status);
    if (!added) {
        it->second.enrolled_at = status.enrolled_at;
        it->second.version = status.version;
        it->second.hostname = status.hostname;
    }
}

StoreResult<std::size_t> EnforcerStatusBook::flush() {
    std::vector<EnforcerStatus> batch;
    {
        std::lock_guard lock(mutex_);
        for (const auto& id : dirty_) {
            batch.push_back(statuses_.at(id));
        }
        dirty_.clear();
    }
    if (batch.empty()) {
        return std::size_t{0};
    }
    // Short transactions: the store has one writer, and a quarantine or an event batch
    // waiting behind a whole second of a 2,000-host fleet's heartbeats (400 rows) showed in
    // the quarantine's tail latency (bench/run.sh fleet).
    constexpr std::size_t rows_per_transaction = 64;
    for (std::size_t first = 0; first < batch.size(); first += rows_per_transaction) {
        const std::size_t last = std::min(batch.size(), first + rows_per_transaction);
        auto written = transactions_.in_transaction([&]() -> StoreResult<void> {
            for (std::size_t i = first; i < last; ++i) {
                if (auto put = enforcers_.put_enforcer_status(batch[i]); !put) {
                    return put;
                }
            }
            return {};
        });
        if (!written) {
            std::lock_guard lock(mutex_);
            for (std::size_t i = first; i < batch.size(); ++i) {
                dirty_.insert(batch[i].id);  // newer reports meanwhile are in memory already
            }
            return std::unexpected(written.error());
        }
    }
    return batch.size();
}

std::size_t EnforcerStatusBook::pending() const {
    std::lock_guard lock(mutex_);
    return dirty_.size();
}

bool EnforcerStatusBook::acked(const std::string& id, const std::string& hash) const {
    std::lock_guard lock(mutex_);
    auto it = statuses_.find(id);
    return it != statuses_.end() && it->second.applied_hash == hash;
}

bool EnforcerStatusBook::wait_for_ack(const std::string& id, const std::string& hash, std::chrono::milliseconds wait) {
    std::unique_lock lock(mutex_);
    return acked_changed_.wait_for(lock, wait, [&] {
        if (closed_) {
            return true;
        }
        auto it = statuses_.find(id);
        return it != statuses_.end() && it->second.applied_hash == hash;
    }) && !closed_;
}

void EnforcerStatusBook::close() {
    {
        std::lock_guard lock(mutex_);
        closed_ = true;
    }
    acked_changed_.notify_all();
}

}  // namespace bulkhead::controller
