#include "controller/store/store.hpp"

namespace bulkhead::controller {

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
