#include "controller/services/fleet_figures.hpp"

namespace bulkhead::controller {

namespace {

double number_at(const nlohmann::json& object, const char* key) {
    if (!object.is_object()) {
        return 0;
    }
    const auto it = object.find(key);
    return it != object.end() && it->is_number() && it->get<double>() >= 0 ? it->get<double>() : 0;
}

std::uint64_t count_at(const nlohmann::json& object, const char* key) {
    if (!object.is_object()) {
        return 0;
    }
    const auto it = object.find(key);
    if (it == object.end()) {
        return 0;
    }
    if (it->is_number_unsigned()) {
        return it->get<std::uint64_t>();
    }
    // A signed integer (a body built in memory, not parsed) counts when it is not negative.
    return it->is_number_integer() && it->get<std::int64_t>() >= 0 ? static_cast<std::uint64_t>(it->get<std::int64_t>())
                                                                   : 0;
}

}  // namespace

EnforcerFigures enforcer_figures(const EnforcerStatus& status, const std::string& desired_hash, bool connected) {
    EnforcerFigures f;
    f.id = status.id;
    f.connected = connected;
    f.in_sync = status.applied_hash == desired_hash;
    f.apply_failed = status.apply_state == "failed";
    f.applied_generation = status.applied_generation;
    f.apply_seconds = number_at(status.details, "apply_ms") / 1000.0;
    f.drift_repairs = status.drift_repairs;
    if (status.details.is_object()) {
        if (const auto nflog = status.details.find("nflog"); nflog != status.details.end()) {
            f.nflog_received = count_at(*nflog, "received");
            f.nflog_lost = count_at(*nflog, "lost");
        }
    }
    return f;
}

EnforcerStateCounts count_enforcer_states(std::span<const EnforcerFigures> enforcers) {
    EnforcerStateCounts counts;
    for (const auto& e : enforcers) {
        ++counts.known;
        counts.connected += e.connected ? 1 : 0;
        counts.in_sync += e.in_sync ? 1 : 0;
        counts.apply_failed += e.apply_failed ? 1 : 0;
    }
    return counts;
}

}  // namespace bulkhead::controller
