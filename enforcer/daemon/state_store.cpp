#include "enforcer/daemon/state_store.hpp"

#include "policies/json_reader.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace bulkhead::enforcer {
namespace {

std::string errno_text(const std::string& what, const std::filesystem::path& path) {
    return what + " " + path.string() + ": " + std::strerror(errno);
}

std::expected<AppliedState, std::string> read_state(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return std::unexpected(errno_text("cannot open", path));
    }
    std::ostringstream buffer;
    buffer << in.rdbuf();
    policy::JsonReadLimits limits;
    limits.max_bytes = 512 * 1024 * 1024;  // a 100,000-element ruleset is ~10 MiB
    auto document = policy::read_json(buffer.str(), path.string(), limits);
    if (!document) {
        return std::unexpected(path.string() + " is not valid JSON: " +
                               policy::format_diagnostic(document.error().front()));
    }
    const auto& doc = *document;
    if (!doc.is_object() || !doc.contains("generation") || !doc["generation"].is_number_unsigned() ||
        !doc.contains("ruleset")) {
        return std::unexpected(path.string() +
                               " is not a Bulkhead state file (needs \"generation\" and \"ruleset\")");
    }
    auto ruleset = ruleset::ruleset_from_json(doc["ruleset"]);
    if (!ruleset) {
        return std::unexpected(path.string() + " holds an invalid ruleset: " + ruleset.error());
    }
    // A state file written by a release before hash format 2 carries a format-1 hash.
    if (doc.contains("hash") && doc["hash"] != ruleset::ruleset_hash(*ruleset) &&
        doc["hash"] != ruleset::ruleset_hash_format1(*ruleset)) {
        return std::unexpected(path.string() + " fails its hash check (file altered or truncated)");
    }
    AppliedState state;
    state.generation = doc["generation"].get<std::uint64_t>();
    state.applied_at_unix_ms = doc.value("applied_at_unix_ms", std::int64_t{0});
    state.ruleset = std::move(*ruleset);
    if (auto it = doc.find("kernel_contained"); it != doc.end() && it->is_array()) {
        for (const auto& port : *it) {
            if (port.is_string()) {
                state.kernel_contained.push_back(port.get<std::string>());
            }
        }
    }
    if (auto it = doc.find("kernel_blocked_sources"); it != doc.end() && it->is_array()) {
        for (const auto& address : *it) {
            if (address.is_string()) {
                state.kernel_blocked_sources.push_back(address.get<std::string>());
            }
        }
    }
    return state;
}

}  // namespace

std::expected<void, std::string> write_file_atomically(const std::filesystem::path& path,
                                                       std::string_view contents, FileDurability durability) {
    const bool durable = durability == FileDurability::Durable;
    const auto temporary = path.string() + ".tmp";
    const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return std::unexpected(errno_text("cannot create", temporary));
    }
    std::size_t written = 0;
    while (written < contents.size()) {
        const auto n = ::write(fd, contents.data() + written, contents.size() - written);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            auto error = errno_text("cannot write", temporary);
            ::close(fd);
            return std::unexpected(error);
        }
        written += static_cast<std::size_t>(n);
    }
    if (durable && ::fsync(fd) != 0) {
        auto error = errno_text("cannot fsync", temporary);
        ::close(fd);
        return std::unexpected(error);
    }
    ::close(fd);
    if (::rename(temporary.c_str(), path.c_str()) != 0) {
        return std::unexpected(errno_text("cannot rename onto", path));
    }
    if (!durable) {
        return {};
    }
    // The rename is durable only once the directory entry is.
    const auto directory = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
    const int dir_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0) {
        return std::unexpected(errno_text("cannot open directory", directory));
    }
    const int rc = ::fsync(dir_fd);
    ::close(dir_fd);
    if (rc != 0) {
        return std::unexpected(errno_text("cannot fsync directory", directory));
    }
    return {};
}

StateStore::StateStore(std::filesystem::path directory)
    : directory_(std::move(directory)),
      current_(directory_ / "state.json"),
      previous_(directory_ / "state.json.prev") {}

std::expected<StateStore::LoadResult, std::string> StateStore::load() const {
    LoadResult result;
    std::error_code ec;
    if (!std::filesystem::exists(current_, ec)) {
        if (ec) {
            return std::unexpected("cannot inspect " + current_.string() + ": " + ec.message());
        }
        return result;
    }
    auto state = read_state(current_);
    if (state) {
        result.state = std::move(*state);
        return result;
    }
    // Keep the evidence, never apply it; fall back to the previous good state.
    std::filesystem::path aside;
    for (int n = 1;; ++n) {
        aside = current_.string() + ".corrupt-" + std::to_string(n);
        if (!std::filesystem::exists(aside, ec)) {
            break;
        }
    }
    std::filesystem::rename(current_, aside, ec);
    result.warning = state.error() + "; moved aside to " + aside.string();
    if (std::filesystem::exists(previous_, ec)) {
        auto previous = read_state(previous_);
        if (previous) {
            result.warning += "; using the previous state (generation " +
                              std::to_string(previous->generation) + ")";
            result.state = std::move(*previous);
        } else {
            result.warning += "; the previous state is unusable too: " + previous.error();
        }
    }
    return result;
}

std::expected<void, std::string> StateStore::save(const AppliedState& state) const {
    std::error_code ec;
    std::filesystem::create_directories(directory_, ec);
    if (ec) {
        return std::unexpected("cannot create state directory " + directory_.string() + ": " +
                               ec.message());
    }
    nlohmann::json document = {{"format", "bulkhead-enforcer-state/1"},
                                {"generation", state.generation},
                                {"applied_at_unix_ms", state.applied_at_unix_ms},
                                {"hash", ruleset::ruleset_hash(state.ruleset)},
                                {"ruleset", ruleset::to_json(state.ruleset)}};
    if (!state.kernel_contained.empty()) {
        document["kernel_contained"] = state.kernel_contained;
    }
    if (!state.kernel_blocked_sources.empty()) {
        document["kernel_blocked_sources"] = state.kernel_blocked_sources;
    }
    if (std::filesystem::exists(current_, ec)) {
        // A hard link keeps the old good file as .prev without copying it.
        std::filesystem::remove(previous_, ec);
        std::filesystem::create_hard_link(current_, previous_, ec);
        if (ec) {
            return std::unexpected("cannot keep previous state " + previous_.string() + ": " +
                                   ec.message());
        }
    }
    return write_file_atomically(current_, document.dump());
}

}  // namespace bulkhead::enforcer
