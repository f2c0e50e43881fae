// The daemon's own ruleset source: a file it watches (written by `bulkheadctl policy compile
// --format json --enforcer E`, replaced atomically by rename). The controller's push channel
// is the other RulesetSource (enforcer/agent/controller_ruleset_source.hpp).
#pragma once

#include "enforcer/interfaces/ruleset_source.hpp"
#include "policies/ruleset.hpp"

#include <expected>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace bulkhead::enforcer {

class FileRulesetSource final : public RulesetSource {
public:
    // `path` is the ruleset file, or a directory holding ruleset.json. Rulesets compiled
    // for another enforcer than `enforcer_id` are refused.
    static std::expected<FileRulesetSource, std::string> open(std::filesystem::path path,
                                                              std::string enforcer_id);
    FileRulesetSource(FileRulesetSource&& other) noexcept;
    FileRulesetSource& operator=(FileRulesetSource&&) = delete;
    FileRulesetSource(const FileRulesetSource&) = delete;
    ~FileRulesetSource() override;

    int fd() const override { return inotify_fd_; }
    std::expected<std::optional<ruleset::Ruleset>, std::string> poll() override;

private:
    FileRulesetSource(std::filesystem::path file, std::string enforcer_id, int inotify_fd)
        : file_(std::move(file)), enforcer_id_(std::move(enforcer_id)), inotify_fd_(inotify_fd) {}
    std::filesystem::path file_;
    std::string enforcer_id_;
    int inotify_fd_ = -1;
    bool first_poll_ = true;
    std::string last_contents_hash_;
};

// Parses a ruleset document (JSON text) and checks it is meant for `enforcer_id`.
std::expected<ruleset::Ruleset, std::string> parse_ruleset_document(std::string_view text,
                                                                    std::string_view origin,
                                                                    std::string_view enforcer_id);

}  // namespace bulkhead::enforcer
