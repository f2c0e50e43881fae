#include "controller/server/path_template.hpp"

#include <algorithm>

namespace bulkhead::controller {

namespace {

bool is_parameter(std::string_view segment) {
    return segment.size() > 2 && segment.front() == '{' && segment.back() == '}' &&
           std::all_of(segment.begin() + 1, segment.end() - 1,
                       [](char c) { return (c >= 'a' && c <= 'z') || c == '_'; });
}

// Calls `each` with every segment of `path` after a '/' (a path that does not start with
// '/' has its first segment before one).
template <typename Each>
void for_each_segment(std::string_view path, Each&& each) {
    std::size_t start = path.starts_with('/') ? 1 : 0;
    while (true) {
        const std::size_t slash = path.find('/', start);
        if (slash == std::string_view::npos) {
            each(path.substr(start));
            return;
        }
        each(path.substr(start, slash - start));
        start = slash + 1;
    }
}

}  // namespace

PathTemplate::PathTemplate(std::string_view path) {
    for_each_segment(path, [this](std::string_view segment) {
        segments_.push_back(is_parameter(segment) ? Segment{std::string(segment.substr(1, segment.size() - 2)), true}
                                                  : Segment{std::string(segment), false});
    });
}

std::optional<std::vector<std::string>> PathTemplate::match(std::string_view path) const {
    if (!path.starts_with('/')) {
        return std::nullopt;
    }
    std::vector<std::string> parameters;
    std::size_t index = 0;
    bool matches = true;
    for_each_segment(path, [&](std::string_view segment) {
        if (!matches) {
            return;
        }
        if (index >= segments_.size()) {
            matches = false;
            return;
        }
        const Segment& expected = segments_[index++];
        if (expected.parameter) {
            if (segment.empty()) {
                matches = false;
            } else {
                parameters.emplace_back(segment);
            }
        } else if (segment != expected.literal) {
            matches = false;
        }
    });
    if (!matches || index != segments_.size()) {
        return std::nullopt;
    }
    return parameters;
}

}  // namespace bulkhead::controller
