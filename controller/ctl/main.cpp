// bulkheadctl: validate, compile and diff segment policies; replay drop events through the analyzer;
// enrol this host's enforcer with a controller.
#include "common/version.hpp"
#include "controller/ctl/ctl_commands.hpp"
#include "controller/ctl/enroll_command.hpp"
#include "controller/ctl/evidence_command.hpp"

#include <CLI/CLI.hpp>

#include <iostream>
#include <map>

namespace {

using bulkhead::ctl::OutputFormat;

const std::map<std::string, OutputFormat> format_names{
    {"text", OutputFormat::Text}, {"json", OutputFormat::Json}, {"nft", OutputFormat::Nft}};

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"bulkheadctl: Bulkhead microsegmentation policy tool"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "bulkheadctl " + std::string(bulkhead::product_version));

    auto* policy_cmd = app.add_subcommand("policy", "Validate, compile and diff segment policies");
    policy_cmd->require_subcommand(1);

    bulkhead::ctl::ValidateOptions validate;
    std::string validate_format = "text";
    auto* validate_cmd = policy_cmd->add_subcommand("validate", "Check a policy and report every error with its JSON pointer");
    validate_cmd->add_option("FILE", validate.policy_file, "Policy JSON file")->required();
    validate_cmd->add_option("--inventory", validate.inventory_file,
                             "Also check references against this inventory");
    validate_cmd->add_option("--format", validate_format, "text or json")
        ->check(CLI::IsMember({"text", "json"}));

    bulkhead::ctl::CompileOptions compile;
    std::string compile_format = "nft";
    std::vector<std::string> compile_quarantine;
    std::string compile_enforcer;
    auto* compile_cmd = policy_cmd->add_subcommand("compile", "Compile a policy into per-enforcer nftables rulesets");
    compile_cmd->add_option("--policy", compile.policy_file, "Policy JSON file")->required();
    compile_cmd->add_option("--inventory", compile.inventory_file, "Inventory JSON file")->required();
    auto* enforcer_opt = compile_cmd->add_option("--enforcer", compile_enforcer, "Only this enforcer");
    compile_cmd->add_option("--format", compile_format, "nft or json")
        ->check(CLI::IsMember({"nft", "json"}));
    compile_cmd->add_option("--quarantine", compile_quarantine, "Workload id to compile as quarantined (repeatable)");

    bulkhead::ctl::DiffOptions diff;
    std::string diff_format = "text";
    std::string diff_enforcer;
    std::vector<std::string> diff_old_quarantine, diff_new_quarantine;
    auto* diff_cmd = policy_cmd->add_subcommand("diff", "Element-level diff between the rulesets of two policies");
    diff_cmd->add_option("OLD", diff.old_policy_file, "Old policy JSON file")->required();
    diff_cmd->add_option("NEW", diff.new_policy_file, "New policy JSON file")->required();
    diff_cmd->add_option("--inventory", diff.inventory_file, "Inventory JSON file")->required();
    diff_cmd->add_option("--new-inventory", diff.new_inventory_file, "Inventory for NEW (default: --inventory)");
    auto* diff_enforcer_opt = diff_cmd->add_option("--enforcer", diff_enforcer, "Only this enforcer");
    diff_cmd->add_option("--format", diff_format, "text, nft (a script applying the diff) or json")
        ->check(CLI::IsMember({"text", "json", "nft"}));
    diff_cmd->add_option("--old-quarantine", diff_old_quarantine, "Workload quarantined in OLD (repeatable)");
    diff_cmd->add_option("--new-quarantine", diff_new_quarantine, "Workload quarantined in NEW (repeatable)");

    auto* inventory_cmd = app.add_subcommand("inventory", "Workload inventory tools");
    inventory_cmd->require_subcommand(1);
    std::string inventory_file;
    std::string inventory_format = "text";
    auto* inventory_validate = inventory_cmd->add_subcommand("validate", "Check an inventory");
    inventory_validate->add_option("FILE", inventory_file, "Inventory JSON file")->required();
    inventory_validate->add_option("--format", inventory_format, "text or json")
        ->check(CLI::IsMember({"text", "json"}));

    auto* analyze_cmd = app.add_subcommand("analyze", "Run the analyzer's detections offline");
    analyze_cmd->require_subcommand(1);
    bulkhead::ctl::ReplayOptions replay;
    std::string replay_config, replay_inventory;
    auto* replay_cmd = analyze_cmd->add_subcommand(
        "replay", "Run the detection engine over recorded drop events (JSON lines) and print incidents");
    replay_cmd->add_option("EVENTS", replay.events_file, "Drop events, one JSON object per line")->required();
    auto* replay_config_opt = replay_cmd->add_option("--config", replay_config, "Analyzer configuration JSON");
    auto* replay_inventory_opt =
        replay_cmd->add_option("--inventory", replay_inventory, "Inventory JSON (users, labels as segments)");
    std::string replay_policy;
    auto* replay_policy_opt = replay_cmd->add_option(
        "--policy", replay_policy,
        "Policy JSON (needs --inventory): its response section decides automatic quarantine, its segments join the "
        "workloads' segments");
    replay_cmd->add_flag("--json", replay.json, "Print incidents and totals as JSON");

    auto* enforcer_cmd = app.add_subcommand("enforcer", "This host's bulkhead-enforcer");
    enforcer_cmd->require_subcommand(1);
    bulkhead::ctl::EnrollOptions enroll;
    auto* enroll_cmd = enforcer_cmd->add_subcommand(
        "enroll", "Enrol this host's enforcer: write /etc/bulkhead/enforcer.json, the pinned CA and the token, "
                  "start bulkhead-enforcer.service and wait until it has enrolled");
    enroll_cmd->add_option("--controller", enroll.controller_url, "Controller URL https://HOST:PORT")->required();
    enroll_cmd->add_option("--ca", enroll.ca_file, "The controller's CA certificate (PEM) to pin")->required();
    auto* token_opt = enroll_cmd->add_option("--token", enroll.token,
                                             "One-time enrollment token (POST /api/v1/enforcers/{id}/enrollment-token)");
    auto* token_file_opt = enroll_cmd->add_option("--token-file", enroll.token_file, "File holding the token (- for stdin)");
    token_opt->excludes(token_file_opt);
    enroll_cmd->add_option("--enforcer-id", enroll.enforcer_id, "This enforcer's id in the inventory (default: host name)");
    enroll_cmd->add_option("--config-dir", enroll.config_dir, "Where enforcer.json goes")->capture_default_str();
    enroll_cmd->add_option("--wait", enroll.wait_seconds, "Seconds to wait for the enrollment")
        ->capture_default_str()
        ->check(CLI::Range(1, 3600));
    bool no_start = false;
    enroll_cmd->add_flag("--no-start", no_start, "Only write the files; do not start the service");

    auto* evidence_cmd = app.add_subcommand("evidence", "Tamper evidence of the controller's records");
    evidence_cmd->require_subcommand(1);
    bulkhead::ctl::EvidenceVerifyCommand evidence_verify;
    auto* evidence_verify_cmd = evidence_cmd->add_subcommand(
        "verify", "Check every hash chain and signed checkpoint; name the first broken record (exit 0 only if all verify)");
    evidence_verify_cmd->add_option("--data-dir", evidence_verify.data_dir, "The controller's data directory")
        ->capture_default_str();
    evidence_verify_cmd->add_option("--database", evidence_verify.database, "Database file (default: DATA_DIR/bulkhead.db)");
    evidence_verify_cmd->add_option("--public-key", evidence_verify.public_key,
                                    "The controller's evidence public key (default: DATA_DIR/evidence/signing-key.pem.pub)");
    evidence_verify_cmd->add_option("--checkpoints", evidence_verify.checkpoint_files,
                                    "Signed checkpoints kept outside the database, JSON lines (repeatable; default: "
                                    "DATA_DIR/evidence/checkpoints.jsonl)");
    evidence_verify_cmd->add_option("--archive-dir", evidence_verify.archive_dir,
                                    "Archive segments (default: DATA_DIR/archive)");
    evidence_verify_cmd->add_flag("--json", evidence_verify.json, "Print the report as JSON");
    bulkhead::ctl::EvidenceQueryCommand evidence_query;
    auto* evidence_query_cmd = evidence_cmd->add_subcommand(
        "query", "Drop events of a time range from the database and the archive alike, one JSON object per line");
    evidence_query_cmd->add_option("--data-dir", evidence_query.data_dir, "The controller's data directory")
        ->capture_default_str();
    evidence_query_cmd->add_option("--database", evidence_query.database, "Database file (default: DATA_DIR/bulkhead.db)");
    evidence_query_cmd->add_option("--archive-dir", evidence_query.archive_dir, "Archive segments (default: DATA_DIR/archive)");
    evidence_query_cmd->add_option("--from", evidence_query.from, "From (kernel time), RFC 3339 UTC or nanoseconds");
    evidence_query_cmd->add_option("--to", evidence_query.to, "Up to, not including");
    evidence_query_cmd->add_option("--workload", evidence_query.workload, "Only this workload's events");
    evidence_query_cmd->add_option("--address", evidence_query.address, "Only events from or to this address");
    evidence_query_cmd->add_option("--limit", evidence_query.limit, "At most this many")->capture_default_str();

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int code = app.exit(e);
        return code == 0 ? 0 : bulkhead::ctl::exit_usage;
    }

    if (*evidence_query_cmd) {
        return bulkhead::ctl::evidence_query(evidence_query, std::cout, std::cerr);
    }
    if (*evidence_verify_cmd) {
        return bulkhead::ctl::evidence_verify(evidence_verify, std::cout, std::cerr);
    }
    if (*enroll_cmd) {
        enroll.start = !no_start;
        return bulkhead::ctl::enroll_enforcer(enroll, std::cout, std::cerr);
    }
    if (*validate_cmd) {
        validate.format = format_names.at(validate_format);
        return bulkhead::ctl::validate_policy(validate, std::cout, std::cerr);
    }
    if (*compile_cmd) {
        compile.format = format_names.at(compile_format);
        if (*enforcer_opt) {
            compile.enforcer = compile_enforcer;
        }
        compile.quarantined.insert(compile_quarantine.begin(), compile_quarantine.end());
        return bulkhead::ctl::compile_policy(compile, std::cout, std::cerr);
    }
    if (*diff_cmd) {
        diff.format = format_names.at(diff_format);
        if (*diff_enforcer_opt) {
            diff.enforcer = diff_enforcer;
        }
        diff.old_quarantined.insert(diff_old_quarantine.begin(), diff_old_quarantine.end());
        diff.new_quarantined.insert(diff_new_quarantine.begin(), diff_new_quarantine.end());
        return bulkhead::ctl::diff_policy(diff, std::cout, std::cerr);
    }
    if (*inventory_validate) {
        return bulkhead::ctl::validate_inventory(inventory_file, format_names.at(inventory_format),
                                                 std::cout, std::cerr);
    }
    if (*replay_cmd) {
        if (*replay_config_opt) {
            replay.config_file = replay_config;
        }
        if (*replay_inventory_opt) {
            replay.inventory_file = replay_inventory;
        }
        if (*replay_policy_opt) {
            replay.policy_file = replay_policy;
        }
        return bulkhead::ctl::analyze_replay(replay, std::cout, std::cerr);
    }
    return bulkhead::ctl::exit_usage;
}
