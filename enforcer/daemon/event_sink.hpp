// Where the enforcer's events go: drop events, allowed-flow summaries and its own
// lifecycle events (ruleset applied, drift repaired, state corrupt). JSON lines today;
// the controller's upload channel implements the same interface in issue 4.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdio>
#include <expected>
#include <string>
#include <vector>

namespace bulkhead::enforcer {

class EventSink {
public:
    virtual ~EventSink() = default;
    virtual void emit(const nlohmann::json& event) = 0;
    virtual void flush() {}
};

// One JSON object per line on stdout or appended to a file; flushed once per loop turn so
// a burst costs one write, not one per event.
class JsonLinesSink final : public EventSink {
public:
    static std::expected<JsonLinesSink, std::string> open(const std::string& path);  // "-" = stdout
    JsonLinesSink(JsonLinesSink&& other) noexcept;
    JsonLinesSink& operator=(JsonLinesSink&&) = delete;
    JsonLinesSink(const JsonLinesSink&) = delete;
    ~JsonLinesSink() override;

    void emit(const nlohmann::json& event) override;
    void flush() override;
    std::uint64_t write_errors() const { return write_errors_; }

private:
    JsonLinesSink(std::FILE* file, bool owned) : file_(file), owned_(owned) {}
    std::FILE* file_ = nullptr;
    bool owned_ = false;
    std::uint64_t write_errors_ = 0;
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
