// The bulkheadctl commands as functions: arguments in, text out, an exit code back.
// Exit codes: 0 success, 1 the input is invalid (diagnostics printed), 2 usage or I/O.
#pragma once

#include <iosfwd>
#include <optional>
#include <set>
#include <string>

namespace bulkhead::ctl {

inline constexpr int exit_ok = 0;
inline constexpr int exit_invalid = 1;
inline constexpr int exit_usage = 2;

enum class OutputFormat { Text, Json, Nft };

struct ValidateOptions {
    std::string policy_file;
    std::optional<std::string> inventory_file;
    OutputFormat format = OutputFormat::Text;
};

struct CompileOptions {
    std::string policy_file;
    std::string inventory_file;
    std::optional<std::string> enforcer;
    std::set<std::string> quarantined;
    OutputFormat format = OutputFormat::Nft;
};

struct DiffOptions {
    std::string old_policy_file;
    std::string new_policy_file;
    std::string inventory_file;
    std::optional<std::string> new_inventory_file;  // defaults to inventory_file
    std::optional<std::string> enforcer;
    std::set<std::string> old_quarantined;
    std::set<std::string> new_quarantined;
    OutputFormat format = OutputFormat::Text;
};

int validate_policy(const ValidateOptions& options, std::ostream& out, std::ostream& err);
int validate_inventory(const std::string& inventory_file, OutputFormat format, std::ostream& out,
                       std::ostream& err);
int compile_policy(const CompileOptions& options, std::ostream& out, std::ostream& err);
int diff_policy(const DiffOptions& options, std::ostream& out, std::ostream& err);

// `bulkheadctl analyze replay`: runs the analyzer (controller/analyzer) offline over
// recorded drop events, one JSON object per line (as the enforcer emits them, or as
// GET /api/v1/events returns them; a line holding a whole {"events": [...]} page is read
// in time order too). Prints the incidents and totals; a bad line is reported with its
// number (exit 1).
struct ReplayOptions {
    std::string events_file;
    std::optional<std::string> config_file;     // analyzer configuration JSON
    std::optional<std::string> inventory_file;  // users and segments (labels) of workloads
    std::optional<std::string> policy_file;     // response policy and segment names
    bool json = false;
};
int analyze_replay(const ReplayOptions& options, std::ostream& out, std::ostream& err);

}  // namespace bulkhead::ctl
