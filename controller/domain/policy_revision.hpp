// Policy revisions: every uploaded policy is kept; one is active at a time.
#pragma once

#include "controller/domain/time.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace bulkhead::controller {

enum class RevisionState { Draft, Active, Superseded };
std::string_view to_string(RevisionState state);
std::optional<RevisionState> revision_state_from_string(std::string_view text);

struct PolicyRevision {
    std::int64_t id = 0;          // increasing, assigned by the store
    RevisionState state = RevisionState::Draft;
    std::string name;             // the policy's "name"
    std::string author;           // token name of who uploaded it
    std::string comment;
    TimeMs created_at = 0;
    std::optional<TimeMs> activated_at;
    nlohmann::json document;      // the policy JSON as uploaded (validated before storing)
};

}  // namespace bulkhead::controller
