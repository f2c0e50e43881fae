#include "controller/ctl/ctl_commands.hpp"

#include "policies/nft_text.hpp"
#include "policies/policy_reader.hpp"
#include "policies/ruleset_compiler.hpp"
#include "policies/ruleset_diff.hpp"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

namespace bulkhead::ctl {
namespace {

using policy::Diagnostics;

// Reads at most one byte past the JSON limit, so an oversized file is reported by the
// reader's size check instead of being slurped whole.
std::optional<std::string> read_file(const std::string& path, std::ostream& err) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        err << "bulkheadctl: cannot read " << path << ": " << std::strerror(errno) << "\n";
        return std::nullopt;
    }
    const std::size_t cap = policy::JsonReadLimits{}.max_bytes + 1;
    std::string text(cap, '\0');
    in.read(text.data(), static_cast<std::streamsize>(cap));
    if (in.bad()) {
        err << "bulkheadctl: error reading " << path << "\n";
        return std::nullopt;
    }
    text.resize(static_cast<std::size_t>(in.gcount()));
    return text;
}

void print_diagnostics(const Diagnostics& diagnostics, OutputFormat format, std::ostream& out,
                       std::ostream& err) {
    if (format == OutputFormat::Json) {
        out << nlohmann::json{{"valid", false},
                              {"errors", policy::diagnostics_to_json(diagnostics)}}
                   .dump(2, ' ', false, nlohmann::json::error_handler_t::replace)
            << "\n";
        return;
    }
    for (const auto& d : diagnostics) {
        err << policy::format_diagnostic(d) << "\n";
    }
    err << diagnostics.size() << (diagnostics.size() == 1 ? " error" : " errors") << "\n";
}

struct Loaded {
    policy::Policy policy;
    policy::Inventory inventory;
};

// Reads, validates and cross-checks a policy and an inventory. On failure prints the
// diagnostics and returns the exit code in `code`.
std::optional<Loaded> load(const std::string& policy_file, const std::string& inventory_file,
                           OutputFormat format, std::ostream& out, std::ostream& err, int& code) {
    auto policy_text = read_file(policy_file, err);
    auto inventory_text = read_file(inventory_file, err);
    if (!policy_text || !inventory_text) {
        code = exit_usage;
        return std::nullopt;
    }
    auto policy = policy::parse_policy(*policy_text, policy_file);
    auto inventory = policy::parse_inventory(*inventory_text, inventory_file);
    Diagnostics all;
    if (!policy) {
        all.insert(all.end(), policy.error().begin(), policy.error().end());
    }
    if (!inventory) {
        all.insert(all.end(), inventory.error().begin(), inventory.error().end());
    }
    if (policy && inventory) {
        all = policy::cross_check(*policy, *inventory, policy_file);
    }
    if (!all.empty()) {
        print_diagnostics(all, format == OutputFormat::Json ? OutputFormat::Json : OutputFormat::Text,
                          out, err);
        code = exit_invalid;
        return std::nullopt;
    }
    return Loaded{std::move(*policy), std::move(*inventory)};
}

bool check_quarantined(const std::set<std::string>& ids, const policy::Inventory& inventory,
                       std::ostream& err) {
    for (const auto& id : ids) {
        const bool known = std::any_of(inventory.workloads.begin(), inventory.workloads.end(),
                                       [&](const auto& w) { return w.id == id; });
        if (!known) {
            err << "bulkheadctl: --quarantine " << id << ": unknown workload\n";
            return false;
        }
    }
    return true;
}

}  // namespace

int validate_policy(const ValidateOptions& options, std::ostream& out, std::ostream& err) {
    auto text = read_file(options.policy_file, err);
    if (!text) {
        return exit_usage;
    }
    auto policy = policy::parse_policy(*text, options.policy_file);
    if (!policy) {
        print_diagnostics(policy.error(), options.format, out, err);
        return exit_invalid;
    }
    if (options.inventory_file) {
        int code = exit_ok;
        if (!load(options.policy_file, *options.inventory_file, options.format, out, err, code)) {
            return code;
        }
    }
    if (options.format == OutputFormat::Json) {
        out << nlohmann::json{{"valid", true}, {"errors", nlohmann::json::array()}}.dump(2) << "\n";
    } else {
        out << options.policy_file << ": valid (" << policy->services.size() << " services, "
            << policy->segments.size() << " segments, " << policy->rules.size() << " rules)\n";
    }
    return exit_ok;
}

int validate_inventory(const std::string& inventory_file, OutputFormat format, std::ostream& out,
                       std::ostream& err) {
    auto text = read_file(inventory_file, err);
    if (!text) {
        return exit_usage;
    }
    auto inventory = policy::parse_inventory(*text, inventory_file);
    if (!inventory) {
        print_diagnostics(inventory.error(), format, out, err);
        return exit_invalid;
    }
    if (format == OutputFormat::Json) {
        out << nlohmann::json{{"valid", true}, {"errors", nlohmann::json::array()}}.dump(2) << "\n";
    } else {
        out << inventory_file << ": valid (" << inventory->enforcers.size() << " enforcers, "
            << inventory->workloads.size() << " workloads)\n";
    }
    return exit_ok;
}

int compile_policy(const CompileOptions& options, std::ostream& out, std::ostream& err) {
    int code = exit_ok;
    auto loaded = load(options.policy_file, options.inventory_file, options.format, out, err, code);
    if (!loaded) {
        return code;
    }
    if (!check_quarantined(options.quarantined, loaded->inventory, err)) {
        return exit_usage;
    }
    ruleset::RulesetCompiler compiler(loaded->policy, loaded->inventory);
    std::vector<std::string> targets =
        options.enforcer ? std::vector<std::string>{*options.enforcer} : compiler.enforcers();
    nlohmann::json documents = nlohmann::json::object();
    for (const auto& enforcer : targets) {
        auto compiled = compiler.compile(enforcer, options.quarantined);
        if (!compiled) {
            err << "bulkheadctl: " << compiled.error() << "\n";
            return exit_usage;
        }
        if (options.format == OutputFormat::Json) {
            documents[enforcer] = ruleset::to_json(*compiled);
        } else {
            out << ruleset::render_nft(*compiled);
        }
    }
    if (options.format == OutputFormat::Json) {
        // One enforcer: the ruleset document itself, ready for the enforcer to load.
        out << (options.enforcer ? documents[*options.enforcer] : documents).dump(1, '\t', false, nlohmann::json::error_handler_t::replace) << "\n";
    }
    return exit_ok;
}

int diff_policy(const DiffOptions& options, std::ostream& out, std::ostream& err) {
    int code = exit_ok;
    auto old_loaded =
        load(options.old_policy_file, options.inventory_file, options.format, out, err, code);
    if (!old_loaded) {
        return code;
    }
    auto new_loaded = load(options.new_policy_file,
                           options.new_inventory_file.value_or(options.inventory_file),
                           options.format, out, err, code);
    if (!new_loaded) {
        return code;
    }
    if (!check_quarantined(options.old_quarantined, old_loaded->inventory, err) ||
        !check_quarantined(options.new_quarantined, new_loaded->inventory, err)) {
        return exit_usage;
    }
    ruleset::RulesetCompiler old_compiler(old_loaded->policy, old_loaded->inventory);
    ruleset::RulesetCompiler new_compiler(new_loaded->policy, new_loaded->inventory);
    std::set<std::string> targets;
    if (options.enforcer) {
        targets.insert(*options.enforcer);
    } else {
        for (const auto& e : old_compiler.enforcers()) {
            targets.insert(e);
        }
        for (const auto& e : new_compiler.enforcers()) {
            targets.insert(e);
        }
    }
    nlohmann::json documents = nlohmann::json::array();
    for (const auto& enforcer : targets) {
        // An enforcer absent on one side diffs against an empty ruleset.
        auto before = old_compiler.compile(enforcer, options.old_quarantined)
                          .value_or(ruleset::Ruleset{enforcer, old_loaded->policy.name, {}, {}, {}});
        auto after = new_compiler.compile(enforcer, options.new_quarantined)
                         .value_or(ruleset::Ruleset{enforcer, new_loaded->policy.name, {}, {}, {}});
        if (options.enforcer && before.sets.empty() && after.sets.empty()) {
            err << "bulkheadctl: unknown enforcer \"" << enforcer << "\"\n";
            return exit_usage;
        }
        auto diff = ruleset::diff_rulesets(before, after);
        switch (options.format) {
        case OutputFormat::Json: documents.push_back(ruleset::to_json(diff, before, after)); break;
        case OutputFormat::Nft: out << ruleset::render_nft_diff(diff, after); break;
        case OutputFormat::Text: out << ruleset::render_text_diff(diff, before, after); break;
        }
    }
    if (options.format == OutputFormat::Json) {
        out << documents.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    }
    return exit_ok;
}

}  // namespace bulkhead::ctl
