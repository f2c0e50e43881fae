#include "controller/domain/fleet.hpp"
#include "controller/domain/incidents.hpp"
#include "controller/domain/policy_revision.hpp"
#include "controller/domain/time.hpp"

#include <cstdio>
#include <ctime>


namespace bulkhead::controller {

std::string format_time_ms(TimeMs ms) {
    const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&seconds, &tm);
    char text[64];
    std::snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
    return text;
}

std::string_view to_string(RevisionState state) {
    switch (state) {
    case RevisionState::Draft:
        return "draft";
    case RevisionState::Active:
        return "active";
    case RevisionState::Superseded:
        return "superseded";
    }
    return "draft";
}

std::optional<RevisionState> revision_state_from_string(std::string_view text) {
    if (text == "draft")
        return RevisionState::Draft;
    if (text == "active")
        return RevisionState::Active;
    if (text == "superseded")
        return RevisionState::Superseded;
    return std::nullopt;
}

std::string_view to_string(Role role) {
    switch (role) {
    case Role::Admin:
        return "admin";
    case Role::Soc:
        return "soc";
    case Role::Automation:
        return "automation";
    case Role::Enforcer:
        return "enforcer";
    }
    return "soc";
}

std::optional<Role> role_from_string(std::string_view text) {
    if (text == "admin")
        return Role::Admin;
    if (text == "soc")
        return Role::Soc;
    if (text == "automation")
        return Role::Automation;
    if (text == "enforcer")
        return Role::Enforcer;
    return std::nullopt;
}

std::string_view to_string(IncidentState state) {
    switch (state) {
    case IncidentState::Open:
        return "open";
    case IncidentState::Acknowledged:
        return "acknowledged";
    case IncidentState::Resolved:
        return "resolved";
    }
    return "open";
}

std::optional<IncidentState> incident_state_from_string(std::string_view text) {
    if (text == "open")
        return IncidentState::Open;
    if (text == "acknowledged")
        return IncidentState::Acknowledged;
    if (text == "resolved")
        return IncidentState::Resolved;
    return std::nullopt;
}

} // namespace bulkhead::controller
