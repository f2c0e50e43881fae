#include "controller/services/audit_log.hpp"

#include <spdlog/spdlog.h>

namespace bulkhead::controller {

using nlohmann::json;

StoreResult<void> AuditLog::record(const Caller& caller, std::string action, std::string target, json before,
                                   json after) {
    AuditEntry entry;
    entry.at = clock_();
    entry.actor = caller.name;
    entry.role = std::string(to_string(caller.role));
    entry.action = std::move(action);
    entry.target = std::move(target);
    entry.before = std::move(before);
    entry.after = std::move(after);
    auto stored = repository_.append_audit(entry);
    if (!stored) {
        spdlog::error("audit: cannot record {} on {} by {}: {}", entry.action, entry.target, entry.actor,
                      stored.error().message);
        return std::unexpected(stored.error());
    }
    return {};
}

ServiceResult AuditLog::query(const AuditQuery& query) {
    auto entries = repository_.query_audit(query);
    if (!entries) {
        return std::unexpected(from_store(entries.error(), "audit"));
    }
    json list = json::array();
    for (const auto& a : *entries) {
        list.push_back(audit_json(a));
    }
    return json{{"entries", list}};
}

}  // namespace bulkhead::controller
