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
// '/' has its first segment before one), until it returns false; false if it did.
template <typename Each>
bool for_each_segment(std::string_view path, Each&& each) {
    std::size_t start = path.starts_with('/') ? 1 : 0;
    while (true) {
        const std::size_t slash = path.find('/', start);
        if (slash == std::string_view::npos) {
            return each(path.substr(start));
        }
        if (!each(path.substr(start, slash - start))) {
            return false;
        }
        start = slash + 1;
    }
}

}  // namespace

PathTemplate::PathTemplate(std::string_view path) {
    for_each_segment(path, [this](std::string_view segment) {
        segments_.push_back(is_parameter(segment) ? Segment{std::string(segment.substr(1, segment.size() - 2)), true}
                                                  : Segment{std::string(segment), false});
        return true;
    });
}

std::optional<std::vector<std::string>> PathTemplate::match(std::string_view path) const {
    if (!path.starts_with('/')) {
        return std::nullopt;
    }
    // Stops at the first segment that differs: every request is matched against every route.
    std::vector<std::string> parameters;
    std::size_t index = 0;
    const bool matches = for_each_segment(path, [&](std::string_view segment) {
        if (index >= segments_.size()) {
            return false;
        }
        const Segment& expected = segments_[index++];
        if (!expected.parameter) {
            return segment == expected.literal;
        }
        if (segment.empty()) {
            return false;
        }
        parameters.emplace_back(segment);
        return true;
    });
    if (!matches || index != segments_.size()) {
        return std::nullopt;
    }
    return parameters;
}

}  // namespace bulkhead::controller
