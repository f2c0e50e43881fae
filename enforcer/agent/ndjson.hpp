// NDJSON framing for the control channel's NDJSON stream (protocol 2, the previous
// release's; the enforcer itself now reads the channel as a WebSocket, and the fleet
// simulator speaks both): the stream arrives in arbitrary chunks (TLS records, HTTP
// chunks); lines are cut at '\n' only. Pure, no I/O.
#pragma once

#include <cstddef>
#include <expected>
#include <functional>
#include <string>
#include <string_view>

namespace bulkhead::enforcer::agent {

class NdjsonFramer {
public:
    // A full ruleset for a large hypervisor is tens of MB; a line beyond the limit means a
    // broken peer and ends the connection.
    explicit NdjsonFramer(std::size_t max_line_bytes = 256u * 1024 * 1024)
        : max_line_bytes_(max_line_bytes) {}

    // Calls `on_line` for every complete line (without '\n' and a trailing '\r'; empty lines
    // are skipped). Stops early and returns false when `on_line` returns false. An error when
    // a line grows beyond the limit (the framer is then unusable).
    std::expected<bool, std::string> feed(std::string_view chunk,
                                          const std::function<bool(std::string_view)>& on_line);

    std::size_t buffered() const { return partial_.size(); }
    std::size_t lines() const { return lines_; }

private:
    std::size_t max_line_bytes_;
    std::string partial_;
    std::size_t lines_ = 0;
};

}  // namespace bulkhead::enforcer::agent
