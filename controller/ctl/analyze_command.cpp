// bulkheadctl analyze replay: the analyzer offline over a file of recorded drop events.
#include "controller/analyzer/analyzer.hpp"
#include "controller/analyzer/drop_record.hpp"
#include "controller/ctl/ctl_commands.hpp"
#include "policies/policy_reader.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <memory>
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
        inventory = std::make_unique<analyzer::InventoryIndex>(*parsed);
    }
    std::ifstream in(options.events_file, std::ios::binary);
    if (!in) {
        err << "bulkheadctl: cannot read " << options.events_file << ": " << std::strerror(errno)
            << "\n";
        return exit_usage;
    }

    analyzer::Analyzer engine(std::move(config));
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
        engine.observe((*record)->view());
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
        for (const auto& incident : engine.incidents()) {
            incidents.push_back(analyzer::to_json(incident));
        }
        json summary = analyzer::to_json(totals);
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
    for (const auto& incident : engine.incidents()) {
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
    }
    out << "totals: " << lines << " lines, " << drops << " drops analysed, " << skipped
        << " other events skipped; " << totals.sources << " sources; " << totals.findings
        << " findings (" << totals.suppressed << " suppressed, " << totals.exempted
        << " exempted); " << totals.incidents << " incidents; state " << mib(peak_bytes)
        << " at most\n";
    return exit_ok;
}

} // namespace bulkhead::ctl
