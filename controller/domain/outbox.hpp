// The outbox: notifications for the outside world (SOAR webhooks) written in the same
// transaction as the change that causes them, delivered at least once from the store.
#pragma once

#include "controller/domain/time.hpp"

#include <cstdint>
#include <optional>
#include <string>

namespace bulkhead::controller {

enum class OutboxState { Pending, Delivered, Failed };

struct OutboxMessage {
    std::int64_t id = 0;          // store-assigned; delivery order per destination
    std::string delivery_id;      // stable across retries and restarts: receivers de-duplicate
    std::string destination;      // where it goes (a webhook URL)
    std::string type;             // "incident.opened", "quarantine.created", ...
    std::string body;             // the exact bytes to send
    TimeMs created_at = 0;
    int attempts = 0;
    TimeMs next_attempt_at = 0;
    OutboxState state = OutboxState::Pending;
    std::string last_error;
    std::optional<TimeMs> finished_at;
};

struct OutboxStats {
    std::uint64_t pending = 0;
    std::optional<TimeMs> oldest_pending_at;
    std::uint64_t delivered = 0;
    std::uint64_t failed = 0;
};

}  // namespace bulkhead::controller
