#include "enforcer/daemon/json_lines_sink.hpp"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>

namespace bulkhead::enforcer {

std::expected<JsonLinesSink, std::string> JsonLinesSink::open(const std::string& path) {
    if (path == "-") {
        return JsonLinesSink(stdout, false);
    }
    std::FILE* file = std::fopen(path.c_str(), "ae");
    if (file == nullptr) {
        return std::unexpected("cannot open event file " + path + ": " + std::strerror(errno));
    }
    return JsonLinesSink(file, true);
}

JsonLinesSink::JsonLinesSink(JsonLinesSink&& other) noexcept
    : file_(other.file_), owned_(other.owned_), write_errors_(other.write_errors_) {
    other.file_ = nullptr;
    other.owned_ = false;
}

JsonLinesSink::~JsonLinesSink() {
    if (file_ != nullptr) {
        std::fflush(file_);
        if (owned_) {
            std::fclose(file_);
        }
    }
}

void JsonLinesSink::emit(const nlohmann::json& event) {
    // Replace invalid UTF-8 (an interface name is bytes) instead of throwing mid-stream.
    auto line = event.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    line.push_back('\n');
    if (std::fwrite(line.data(), 1, line.size(), file_) != line.size()) {
        ++write_errors_;
    }
}

void JsonLinesSink::flush() {
    if (std::fflush(file_) != 0) {
        ++write_errors_;
    }
}

}  // namespace bulkhead::enforcer
