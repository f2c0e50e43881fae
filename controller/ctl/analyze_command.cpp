// bulkheadctl analyze replay: the analyzer offline over a file of recorded drop events.
#include "controller/analyzer/analyzer.hpp"
#include "controller/analyzer/drop_record.hpp"
#include "controller/analyzer/response_planner.hpp"
#include "controller/ctl/ctl_commands.hpp"
#include "policies/policy_reader.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>

namespace bulkhead::ctl {
namespace {

using nlohmann::json;

std::optional<std::string> slurp(const std::string& path, std::ostream& err) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        err << "bulkheadctl: cannot read " << path << ": " << std::strerror(errno) << "\n";
        return std::nullopt;
    }
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad()) {
        err << "bulkheadctl: error reading " << path << "\n";
        return std::nullopt;
    }
    return text.str();
}

// RFC 3339 UTC, milliseconds: "2026-11-24T00:39:06.123Z" (conversion only, no clock read).
std::string utc(std::int64_t unix_ns) {
    const std::time_t s = static_cast<std::time_t>(unix_ns / 1'000'000'000);
    std::tm tm{};
    gmtime_r(&s, &tm);
    char text[96];
    std::snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>((unix_ns % 1'000'000'000) / 1'000'000));
    return text;
}

struct ReplayAction {
    std::int64_t at_ns = 0;
    analyzer::ResponseAction action = analyzer::ResponseAction::None;
    std::string reason;
    std::string rule;
    analyzer::Severity severity = analyzer::Severity::Low;
};
struct ActionTotals {
    std::uint64_t quarantines = 0, dry_runs = 0, pages = 0, rate_limited = 0;
};

std::string mib(std::size_t bytes) {
    char text[64];
    std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
    return text;
}

} // namespace

int analyze_replay(const ReplayOptions& options, std::ostream& out, std::ostream& err) {
    analyzer::AnalyzerConfig config;
    if (options.config_file) {
        auto text = slurp(*options.config_file, err);
        if (!text) {
            return exit_usage;
        }
        json document;
        try {
            document = json::parse(*text);
        } catch (const json::parse_error& e) {
            err << "bulkheadctl: " << *options.config_file << ": invalid JSON: " << e.what()
                << "\n";
            return exit_invalid;
        }
        auto parsed = analyzer::config_from_json(document);
        if (!parsed) {
            err << "bulkheadctl: " << *options.config_file << ": " << parsed.error() << "\n";
            return exit_invalid;
        }
        config = std::move(*parsed);
    }
    std::unique_ptr<analyzer::InventoryIndex> inventory;
    std::optional<policy::Policy> response_policy;
    if (options.policy_file && !options.inventory_file) {
        err << "bulkheadctl: --policy needs --inventory (segment membership comes from it)\n";
        return exit_usage;
    }
    if (options.inventory_file) {
        auto text = slurp(*options.inventory_file, err);
        if (!text) {
            return exit_usage;
        }
        auto parsed = policy::parse_inventory(*text, *options.inventory_file);
        if (!parsed) {
            for (const auto& d : parsed.error()) {
                err << policy::format_diagnostic(d) << "\n";
            }
            return exit_invalid;
        }
        if (options.policy_file) {
            auto policy_text = slurp(*options.policy_file, err);
            if (!policy_text) {
                return exit_usage;
            }
            auto read = policy::parse_policy(*policy_text, *options.policy_file);
            if (!read) {
                for (const auto& d : read.error()) {
                    err << policy::format_diagnostic(d) << "\n";
                }
                return exit_invalid;
            }
            if (auto problems = policy::cross_check(*read, *parsed, *options.policy_file);
                !problems.empty()) {
                for (const auto& d : problems) {
                    err << policy::format_diagnostic(d) << "\n";
                }
                return exit_invalid;
            }
            response_policy = std::move(*read);
            // The policy's own incident rule and decoy severity join the configuration.
            analyzer::apply_response_policy(config, response_policy->response);
        }
        inventory = std::make_unique<analyzer::InventoryIndex>(
            *parsed, response_policy ? &*response_policy : nullptr);
    }
    std::ifstream in(options.events_file, std::ios::binary);
    if (!in) {
        err << "bulkheadctl: cannot read " << options.events_file << ": " << std::strerror(errno)
            << "\n";
        return exit_usage;
    }

    // A replay reports every incident of the file at its end, resolved ones included: keep
    // them all (the file bounds them; the live controller keeps its own copies instead).
    config.limits.max_resolved_incidents = std::numeric_limits<std::uint32_t>::max();
    analyzer::Analyzer engine(std::move(config));
    // With a policy: what the controller would have done about each finding, in event time.
    analyzer::ResponsePlanner planner(response_policy ? response_policy->response
                                                      : policy::ResponsePolicy{});
    std::map<std::uint64_t, std::vector<ReplayAction>> actions; // by incident id
    std::set<std::string> quarantined;                          // enforcer/workload
    // Distinct source identities of the file, as the engine tells sources apart (workload
    // on its enforcer, else enforcer + port + address). The engine's own count counts an
    // identity again when it returns after leaving memory; the report counts the file's.
    std::set<std::string> identities;
    ActionTotals action_totals;
    auto respond = [&](std::span<const analyzer::Finding> findings) {
        for (const auto& finding : findings) {
            const auto* incident = engine.incident(finding.incident_id);
            if (incident == nullptr) {
                continue;
            }
            const auto* facts = incident->workload.empty()
                                    ? nullptr
                                    : inventory->by_workload(incident->enforcer, incident->workload);
            const std::string key = incident->enforcer + "/" + incident->workload;
            analyzer::ResponseSubject subject;
            subject.managed = facts != nullptr;
            subject.critical = facts != nullptr && facts->critical;
            subject.already_quarantined = quarantined.contains(key);
            if (facts != nullptr) {
                subject.segments = facts->policy_segments();
            }
            auto decision = planner.decide(*incident, finding, subject, finding.last_ns);
            if (decision.action == analyzer::ResponseAction::None) {
                continue;
            }
            auto& list = actions[incident->id];
            // One record per kind of action and incident: a storm of findings would
            // otherwise repeat the same dry-run or page.
            if (std::any_of(list.begin(), list.end(),
                            [&](const ReplayAction& a) { return a.action == decision.action; })) {
                continue;
            }
            list.push_back({finding.last_ns, decision.action, decision.reason, finding.rule_text,
                            incident->severity});
            switch (decision.action) {
            case analyzer::ResponseAction::Quarantine:
                quarantined.insert(key);
                ++action_totals.quarantines;
                break;
            case analyzer::ResponseAction::DryRun:
                ++action_totals.dry_runs;
                break;
            case analyzer::ResponseAction::Page:
                ++action_totals.pages;
                break;
            case analyzer::ResponseAction::RateLimited:
                ++action_totals.rate_limited;
                break;
            case analyzer::ResponseAction::None:
                break;
            }
        }
    };
    std::uint64_t lines = 0, drops = 0, skipped = 0;
    std::size_t peak_bytes = 0;
    std::string line;
    auto feed = [&](const json& event, std::uint64_t number) -> bool {
        auto record = analyzer::drop_record_from_json(event, inventory.get());
        if (!record) {
            err << "bulkheadctl: " << options.events_file << ":" << number << ": " << record.error()
                << "\n";
            return false;
        }
        if (!*record) {
            ++skipped;
            return true;
        }
        ++drops;
        const auto& r = **record;
        identities.insert(r.workload.empty()
                              ? r.enforcer + '\x1f' + '\x1f' + r.port + '\x1f' + r.address
                              : r.enforcer + '\x1f' + r.workload);
        auto findings = engine.observe((*record)->view());
        if (response_policy && !findings.empty()) {
            respond(findings);
        }
        if ((drops & 0xFFFF) == 0) {
            peak_bytes = std::max(peak_bytes, engine.memory_bytes());
        }
        return true;
    };
    while (std::getline(in, line)) {
        ++lines;
        if (line.find_first_not_of(" \t\r") == std::string::npos) {
            continue;
        }
        json event;
        try {
            event = json::parse(line);
        } catch (const json::parse_error& e) {
            err << "bulkheadctl: " << options.events_file << ":" << lines
                << ": invalid JSON: " << e.what() << "\n";
            return exit_invalid;
        }
        if (auto page = event.find("events");
            event.is_object() && page != event.end() && page->is_array()) {
            // A saved API page (newest first): in time order.
            std::vector<const json*> events;
            for (const auto& e : *page) {
                events.push_back(&e);
            }
            std::stable_sort(events.begin(), events.end(), [](const json* a, const json* b) {
                return a->value("time_ns", std::int64_t{0}) < b->value("time_ns", std::int64_t{0});
            });
            for (const auto* e : events) {
                if (!feed(*e, lines)) {
                    return exit_invalid;
                }
            }
            continue;
        }
        if (!feed(event, lines)) {
            return exit_invalid;
        }
    }
    if (in.bad()) {
        err << "bulkheadctl: error reading " << options.events_file << "\n";
        return exit_usage;
    }
    peak_bytes = std::max(peak_bytes, engine.memory_bytes());
    const auto totals = engine.totals();

    if (options.json) {
        json incidents = json::array();
        for (const auto* held : engine.incidents()) {
            const auto& incident = *held;
            json j = analyzer::to_json(incident);
            if (response_policy) {
                json list = json::array();
                bool was_quarantined = false;
                for (const auto& a : actions[incident.id]) {
                    list.push_back(json{{"at_ns", a.at_ns},
                                        {"action", std::string(analyzer::to_string(a.action))},
                                        {"reason", a.reason},
                                        {"rule", a.rule},
                                        {"severity", std::string(policy::to_string(a.severity))}});
                    was_quarantined |= a.action == analyzer::ResponseAction::Quarantine;
                }
                j["actions"] = std::move(list);
                j["quarantined"] = was_quarantined;
            }
            incidents.push_back(std::move(j));
        }
        json summary = analyzer::to_json(totals);
        if (response_policy) {
            summary["quarantines"] = action_totals.quarantines;
            summary["dry_runs"] = action_totals.dry_runs;
            summary["pages"] = action_totals.pages;
            summary["rate_limited"] = action_totals.rate_limited;
        }
        summary["sources"] = identities.size();
        summary["lines"] = lines;
        summary["drops"] = drops;
        summary["skipped"] = skipped;
        summary["memory_bytes"] = engine.memory_bytes();
        summary["peak_memory_bytes"] = peak_bytes;
        out << json{{"incidents", incidents}, {"totals", summary}}.dump(
                   2, ' ', false, json::error_handler_t::replace)
            << "\n";
        return exit_ok;
    }
    for (const auto* held : engine.incidents()) {
        const auto& incident = *held;
        out << "incident " << incident.id << "  " << policy::to_string(incident.severity) << "  "
            << incident.subject;
        if (!incident.user.empty()) {
            out << " (user " << incident.user << ")";
        }
        out << "  " << (incident.state == analyzer::IncidentState::Open ? "open" : "resolved")
            << (incident.repeat_offender ? "  repeat offender" : "") << "  events "
            << incident.events;
        std::uint64_t suppressed = 0;
        for (auto n : incident.suppressed) {
            suppressed += n;
        }
        if (suppressed != 0) {
            out << "  suppressed " << suppressed;
        }
        out << "\n";
        for (const auto& f : incident.timeline) {
            out << "  " << utc(f.last_ns) << "  " << f.rule_text << "  "
                << policy::to_string(f.severity) << "  " << f.explanation << "\n";
        }
        if (incident.timeline_dropped != 0) {
            out << "  ... " << incident.timeline_dropped << " more findings\n";
        }
        for (const auto& a : actions[incident.id]) {
            out << "  " << utc(a.at_ns) << "  -> " << analyzer::to_string(a.action) << ": "
                << a.reason << "\n";
        }
    }
    out << "totals: " << lines << " lines, " << drops << " drops analysed, " << skipped
        << " other events skipped; " << identities.size() << " sources; " << totals.findings
        << " findings (" << totals.suppressed << " suppressed, " << totals.exempted
        << " exempted); " << totals.incidents << " incidents; state " << mib(peak_bytes)
        << " at most\n";
    if (response_policy) {
        out << "response: " << action_totals.quarantines << " quarantines, "
            << action_totals.dry_runs << " dry-runs, " << action_totals.pages << " pages, "
            << action_totals.rate_limited << " rate-limited\n";
    }
    return exit_ok;
}

} // namespace bulkhead::ctl
