// A checkpoint of the analyzer's state: the engine and response planner as they stood after
// analysing every stored event up to `through_event_id`, and the map between the engine's
// incidents and stored incidents. After a restart the controller restores it and analyses
// the events stored after it, so windows and correlation survive.
#pragma once

#include "controller/domain/time.hpp"

#include <cstdint>
#include <string>

namespace bulkhead::controller {

struct AnalysisCheckpoint {
    std::int64_t through_event_id = 0;
    TimeMs taken_at = 0;
    std::string engine;   // analyzer::Analyzer::save_state()
    std::string planner;  // analyzer::ResponsePlanner::save_state()
    std::string ledger;   // the incident map, JSON text
};

}  // namespace bulkhead::controller
