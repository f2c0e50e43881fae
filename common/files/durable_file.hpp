// Small durable file helpers for daemons' state (the enforcer's credential, channel position
// and spool sequence; the controller's evidence signing key): written to a temporary file,
// fsynced, renamed, directory fsynced.
#pragma once

#include <expected>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>

namespace bulkhead::files {

std::expected<void, std::string> write_durably(const std::filesystem::path& path,
                                               std::string_view contents, mode_t mode = 0644);
// Nothing when the file does not exist; an error when it exists but cannot be read.
std::expected<std::optional<std::string>, std::string> read_small_file(const std::filesystem::path& path);
std::expected<void, std::string> fsync_directory(const std::filesystem::path& directory);

}  // namespace bulkhead::files
