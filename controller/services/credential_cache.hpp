// CredentialCache: the credential repository with the bearer-token lookups every request
// makes kept in memory. The store's answer took a pooled reader, which re-reads its pages
// after every commit: ~0.1 ms of each API call and enforcer post. Every write through the
// cache empties it, so a replaced or deleted credential stops working at once; an entry is
// also kept no longer than `max_age`, which bounds how long a change made outside this
// process (another replica) takes to be seen. Only found tokens are kept: an unknown token
// always asks the store. Thread-safe.
#pragma once

#include "controller/store/repositories.hpp"

#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>

namespace bulkhead::controller {

class CredentialCache final : public CredentialRepository {
public:
    using SteadyClock = std::function<std::chrono::steady_clock::time_point()>;

    explicit CredentialCache(CredentialRepository& store, std::chrono::milliseconds max_age = std::chrono::seconds(1),
                             std::size_t max_entries = 4096,
                             SteadyClock now = [] { return std::chrono::steady_clock::now(); });

    StoreResult<void> put_api_token(const ApiToken& token) override;
    StoreResult<std::optional<ApiToken>> find_api_token(const std::string& token_sha256) override;
    StoreResult<void> delete_api_tokens_of_enforcer(const std::string& enforcer) override;
    StoreResult<void> add_enrollment_token(const EnrollmentToken& token) override;
    StoreResult<void> redeem_enrollment_token(const std::string& token_sha256, const std::string& enforcer, TimeMs now,
                                              const ApiToken& credential) override;

    std::uint64_t hits() const;

private:
    void clear();

    struct Entry {
        ApiToken token;
        std::chrono::steady_clock::time_point fetched;
    };
    CredentialRepository& store_;
    const std::chrono::milliseconds max_age_;
    const std::size_t max_entries_;
    SteadyClock now_;
    mutable std::mutex mutex_;
    std::unordered_map<std::string, Entry> entries_;
    // Bumped after every write: a lookup that started before the write ended does not keep
    // its answer.
    std::uint64_t epoch_ = 0;
    std::uint64_t hits_ = 0;
};

}  // namespace bulkhead::controller
