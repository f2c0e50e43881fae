// The daemon's own event sink: JSON lines on stdout or appended to a file (alone when the
// daemon runs from a ruleset file, a tee beside the agent's spool when it has a controller).
#pragma once

#include "enforcer/interfaces/event_sink.hpp"

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <cstdio>
#include <expected>
#include <string>

namespace bulkhead::enforcer {

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

}  // namespace bulkhead::enforcer
