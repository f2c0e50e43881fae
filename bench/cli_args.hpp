// Command-line number parsing shared by the benchmark programs.
#pragma once

#include <charconv>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace bulkhead::bench {

// A whole decimal number for `flag`, or std::invalid_argument naming the flag.
inline std::uint64_t to_number(const std::string& flag, const std::string& text) {
    std::uint64_t v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || end != text.data() + text.size()) {
        throw std::invalid_argument(flag + ": not a number: \"" + text + "\"");
    }
    return v;
}

}  // namespace bulkhead::bench
