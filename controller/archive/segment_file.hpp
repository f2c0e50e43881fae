// The file edge of archive segments: the atomic, append-only write of a sealed segment and
// the sources a reader reads from (a file through pread, or bytes in memory). Everything
// else in bulkhead_archive is pure.
#pragma once

#include "controller/archive/archive_segment.hpp"

#include <expected>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace bulkhead::archive {

// Writes `bytes` to path.tmp, fsyncs it, links it to `path` (refusing to replace an existing
// file: a sealed segment is never rewritten), removes path.tmp and fsyncs the directory.
std::expected<void, std::string> write_segment_file(const std::filesystem::path& path, std::string_view bytes);

std::expected<std::unique_ptr<SegmentSource>, std::string> open_segment_file(const std::filesystem::path& path);
std::unique_ptr<SegmentSource> memory_segment_source(std::string bytes);

}  // namespace bulkhead::archive
