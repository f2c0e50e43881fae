#include "controller/services/credential_cache.hpp"

namespace bulkhead::controller {

CredentialCache::CredentialCache(CredentialRepository& store, std::chrono::milliseconds max_age,
                                 std::size_t max_entries, SteadyClock now)
    : store_(store), max_age_(max_age), max_entries_(max_entries), now_(std::move(now)) {}

void CredentialCache::clear() {
    std::lock_guard lock(mutex_);
    entries_.clear();
    ++epoch_;
}

StoreResult<std::optional<ApiToken>> CredentialCache::find_api_token(const std::string& token_sha256) {
    std::uint64_t epoch = 0;
    {
        std::lock_guard lock(mutex_);
        if (auto it = entries_.find(token_sha256); it != entries_.end()) {
            if (now_() - it->second.fetched <= max_age_) {
                ++hits_;
                return std::optional<ApiToken>(it->second.token);
            }
            entries_.erase(it);
        }
        epoch = epoch_;
    }
    const auto fetched = now_();
    auto found = store_.find_api_token(token_sha256);
    if (found && *found) {
        std::lock_guard lock(mutex_);
        if (epoch == epoch_) {
            if (entries_.size() >= max_entries_) {
                entries_.clear();  // many distinct tokens: the store answers again, once each
            }
            entries_.insert_or_assign(token_sha256, Entry{**found, fetched});
        }
    }
    return found;
}

// Each write empties the cache once it is done: what was kept before goes, and a lookup that
// read the store before the write does not keep its answer (the epoch). Until the write is
// done the old answer is the right one.
StoreResult<void> CredentialCache::put_api_token(const ApiToken& token) {
    auto done = store_.put_api_token(token);
    clear();
    return done;
}

StoreResult<void> CredentialCache::delete_api_tokens_of_enforcer(const std::string& enforcer) {
    auto done = store_.delete_api_tokens_of_enforcer(enforcer);
    clear();
    return done;
}

StoreResult<void> CredentialCache::add_enrollment_token(const EnrollmentToken& token) {
    return store_.add_enrollment_token(token);  // enrollment tokens are not cached
}

StoreResult<void> CredentialCache::redeem_enrollment_token(const std::string& token_sha256, const std::string& enforcer,
                                                           TimeMs now, const ApiToken& credential) {
    auto done = store_.redeem_enrollment_token(token_sha256, enforcer, now, credential);
    clear();
    return done;
}

std::uint64_t CredentialCache::hits() const {
    std::lock_guard lock(mutex_);
    return hits_;
}

}  // namespace bulkhead::controller
