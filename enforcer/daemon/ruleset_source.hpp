// Where desired rulesets come from. This issue: a file the enforcer watches (written by
// `bulkheadctl policy compile --format json --enforcer E`, replaced atomically by rename).
// Issue 4 adds the controller's push channel behind the same interface.
#pragma once

#include "policies/ruleset.hpp"

#include <cstdint>
#include <expected>
#include <filesystem>
#include <optional>
#include <string>

namespace bulkhead::enforcer {

// What the daemon did with the ruleset poll() returned last, and its running counters:
// a source that talks to a controller turns these into acks and heartbeats (issue 4).
struct EnforcerCounters {
    std::uint64_t drift_repairs = 0;
    std::int64_t last_drift_at_ms = 0;  // 0: never
    std::uint64_t elements = 0;         // elements of the ruleset in force
    std::uint64_t nflog_received = 0;
    std::uint64_t nflog_lost = 0;
};

struct ApplyReport {
    bool ok = false;
    std::string error;              // why, when !ok
    std::int64_t applied_at_ms = 0; // wall clock, when the apply finished
    double apply_ms = 0;            // how long the apply took
    std::uint64_t local_generation = 0;  // the daemon's own applied generation
    EnforcerCounters counters;
};

class RulesetSource {
public:
    virtual ~RulesetSource() = default;
    // Called once for each ruleset poll() returned, right after the daemon applied it (or
    // failed to). The file source ignores it.
    virtual void report_applied(const ApplyReport& /*report*/) {}
    // Called about once a second with the daemon's counters.
    virtual void report_counters(const EnforcerCounters& /*counters*/) {}
    // A descriptor that becomes readable when poll() may have something new.
    virtual int fd() const = 0;
    // A new desired ruleset if one arrived since the last call, nothing if unchanged, an
    // error (with file and reason) if what arrived is unusable; the caller keeps the
    // ruleset in force either way.
    virtual std::expected<std::optional<ruleset::Ruleset>, std::string> poll() = 0;
};

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
