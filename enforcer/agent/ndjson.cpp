#include "enforcer/agent/ndjson.hpp"

namespace bulkhead::enforcer::agent {

std::expected<bool, std::string> NdjsonFramer::feed(
    std::string_view chunk, const std::function<bool(std::string_view)>& on_line) {
    auto deliver = [&](std::string_view line) {
        if (!line.empty() && line.back() == '\r') {
            line.remove_suffix(1);
        }
        if (line.empty()) {
            return true;
        }
        ++lines_;
        return on_line(line);
    };
    while (!chunk.empty()) {
        const auto newline = chunk.find('\n');
        if (newline == std::string_view::npos) {
            if (partial_.size() + chunk.size() > max_line_bytes_) {
                return std::unexpected("NDJSON line longer than " + std::to_string(max_line_bytes_) +
                                       " bytes");
            }
            partial_.append(chunk);
            return true;
        }
        bool go_on = true;
        if (partial_.size() + newline > max_line_bytes_) {
            return std::unexpected("NDJSON line longer than " + std::to_string(max_line_bytes_) + " bytes");
        }
        if (partial_.empty()) {
            go_on = deliver(chunk.substr(0, newline));
        } else {
            partial_.append(chunk.substr(0, newline));
            std::string line = std::move(partial_);
            partial_.clear();
            go_on = deliver(line);
        }
        chunk.remove_prefix(newline + 1);
        if (!go_on) {
            return false;
        }
    }
    return true;
}

}  // namespace bulkhead::enforcer::agent
