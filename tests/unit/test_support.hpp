// Small helpers shared by the unit tests.
#pragma once

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace bulkhead::test {

inline std::string source_path(const std::string& relative) {
    return std::string(BULKHEAD_SOURCE_DIR) + "/" + relative;
}

inline std::string read_source_file(const std::string& relative) {
    std::ifstream in(source_path(relative), std::ios::binary);
    if (!in) {
        throw std::runtime_error("cannot open " + source_path(relative));
    }
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

}  // namespace bulkhead::test
