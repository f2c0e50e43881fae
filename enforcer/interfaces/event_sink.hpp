// Where the enforcer's events go: drop events, allowed-flow summaries and its own lifecycle
// events (ruleset applied, drift repaired, state corrupt). Implementations: the daemon's
// JsonLinesSink (JSON lines on stdout or a file) and the agent's SpoolingEventSink (a disk
// spool uploaded to the controller). The interface lives here, apart from both, so the
// daemon can use the agent and the agent depends on no daemon code.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <utility>
#include <vector>

namespace bulkhead::enforcer {

class EventSink {
public:
    virtual ~EventSink() = default;
    virtual void emit(const nlohmann::json& event) = 0;
    virtual void flush() {}
};

// Hands every event to several sinks (the controller's spool and a JSON-lines tee).
class TeeEventSink final : public EventSink {
public:
    explicit TeeEventSink(std::vector<EventSink*> sinks) : sinks_(std::move(sinks)) {}
    void emit(const nlohmann::json& event) override {
        for (auto* sink : sinks_) {
            sink->emit(event);
        }
    }
    void flush() override {
        for (auto* sink : sinks_) {
            sink->flush();
        }
    }

private:
    std::vector<EventSink*> sinks_;
};

}  // namespace bulkhead::enforcer
