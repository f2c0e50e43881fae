#include "enforcer/daemon/file_ruleset_source.hpp"

#include "policies/json_reader.hpp"

#include <sys/inotify.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace bulkhead::enforcer {

std::expected<ruleset::Ruleset, std::string> parse_ruleset_document(std::string_view text,
                                                                    std::string_view origin,
                                                                    std::string_view enforcer_id) {
    policy::JsonReadLimits limits;
    limits.max_bytes = 512 * 1024 * 1024;
    auto document = policy::read_json(text, origin, limits);
    if (!document) {
        return std::unexpected(policy::format_diagnostic(document.error().front()));
    }
    auto parsed = ruleset::ruleset_from_json(*document);
    if (!parsed) {
        return std::unexpected(std::string(origin) + ": " + parsed.error());
    }
    if (parsed->enforcer != enforcer_id) {
        return std::unexpected(std::string(origin) + ": ruleset is for enforcer \"" +
                               parsed->enforcer + "\", this is \"" + std::string(enforcer_id) +
                               "\"");
    }
    return parsed;
}

std::expected<FileRulesetSource, std::string> FileRulesetSource::open(std::filesystem::path path,
                                                                      std::string enforcer_id) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
        path /= "ruleset.json";
    }
    const auto directory = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
    const int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) {
        return std::unexpected(std::string("inotify_init1: ") + std::strerror(errno));
    }
    // Watch the directory, not the file: editors and `mv` replace the inode.
    if (::inotify_add_watch(fd, directory.c_str(),
                            IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE) < 0) {
        const auto error = std::string("cannot watch ") + directory.string() + ": " + std::strerror(errno);
        ::close(fd);
        return std::unexpected(error);
    }
    return FileRulesetSource(std::move(path), std::move(enforcer_id), fd);
}

FileRulesetSource::FileRulesetSource(FileRulesetSource&& other) noexcept
    : file_(std::move(other.file_)),
      enforcer_id_(std::move(other.enforcer_id_)),
      inotify_fd_(other.inotify_fd_),
      first_poll_(other.first_poll_),
      last_contents_hash_(std::move(other.last_contents_hash_)) {
    other.inotify_fd_ = -1;
}

FileRulesetSource::~FileRulesetSource() {
    if (inotify_fd_ >= 0) {
        ::close(inotify_fd_);
    }
}

std::expected<std::optional<ruleset::Ruleset>, std::string> FileRulesetSource::poll() {
    bool relevant = first_poll_;
    first_poll_ = false;
    alignas(inotify_event) std::array<char, 4096> buffer{};
    const auto name = file_.filename().string();
    for (;;) {
        const auto n = ::read(inotify_fd_, buffer.data(), buffer.size());
        if (n <= 0) {
            break;
        }
        for (std::size_t offset = 0; offset + sizeof(inotify_event) <= static_cast<std::size_t>(n);) {
            inotify_event header;
            std::memcpy(&header, buffer.data() + offset, sizeof header);
            const char* event_name = buffer.data() + offset + sizeof(inotify_event);
            if (header.len > 0 && name == event_name) {
                relevant = true;
            }
            offset += sizeof(inotify_event) + header.len;
        }
    }
    if (!relevant) {
        return std::optional<ruleset::Ruleset>{};
    }
    std::ifstream in(file_, std::ios::binary);
    if (!in) {
        // Absent (not written yet, or being replaced): keep what is in force.
        return std::optional<ruleset::Ruleset>{};
    }
    std::ostringstream contents;
    contents << in.rdbuf();
    const auto text = contents.str();
    // Cheap change detection: an identical rewrite is not a new ruleset.
    const auto fingerprint = std::to_string(std::hash<std::string>{}(text)) + ":" +
                             std::to_string(text.size());
    if (fingerprint == last_contents_hash_) {
        return std::optional<ruleset::Ruleset>{};
    }
    last_contents_hash_ = fingerprint;
    auto parsed = parse_ruleset_document(text, file_.string(), enforcer_id_);
    if (!parsed) {
        return std::unexpected(parsed.error());
    }
    return std::optional<ruleset::Ruleset>{std::move(*parsed)};
}

}  // namespace bulkhead::enforcer
