// FleetFigures: what the enforcers last reported, reduced to the numbers the metrics page
// exports (counts by state and a few figures per enforcer).
//
// Why a separate, pure step: the metrics page must not read the store at every scrape, so
// FleetService hands over the statuses it holds in memory, and the reduction is tested alone.
#pragma once

#include "controller/domain/fleet.hpp"

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace bulkhead::controller {

struct EnforcerFigures {
    std::string id;
    bool connected = false;     // its control channel is open now
    bool in_sync = false;       // the hash it applied is the one desired for it (as the API says)
    bool apply_failed = false;  // its last apply failed
    std::uint64_t applied_generation = 0;
    double apply_seconds = 0;   // how long its last apply took
    std::uint64_t drift_repairs = 0;
    std::uint64_t nflog_received = 0;
    std::uint64_t nflog_lost = 0;
};

// One enforcer's figures from its last status (its "apply_ms" and "nflog" are read from the
// reported body; a member missing or of another type counts as 0).
EnforcerFigures enforcer_figures(const EnforcerStatus& status, const std::string& desired_hash, bool connected);

struct EnforcerStateCounts {
    std::size_t known = 0;
    std::size_t connected = 0;
    std::size_t in_sync = 0;
    std::size_t apply_failed = 0;
};

// The states are not exclusive: an enforcer can be connected and in sync.
EnforcerStateCounts count_enforcer_states(std::span<const EnforcerFigures> enforcers);

struct FleetFigures {
    EnforcerStateCounts states;
    std::vector<EnforcerFigures> enforcers;  // by id
};

}  // namespace bulkhead::controller
