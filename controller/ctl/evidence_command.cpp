#include "controller/ctl/evidence_command.hpp"

#include "controller/ctl/ctl_commands.hpp"
#include "controller/services/evidence_archive.hpp"
#include "controller/services/evidence_service.hpp"
#include "controller/services/service_support.hpp"
#include "controller/store/sqlite_store.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <tuple>
#include <fstream>
#include <ostream>
#include <sstream>

namespace bulkhead::ctl {

namespace {

nlohmann::json to_json(const controller::EvidenceVerification& v) {
    nlohmann::json streams = nlohmann::json::array();
    for (const auto& s : v.streams) {
        streams.push_back({{"stream", evidence::to_string(s.stream)},
                           {"verified", s.verified},
                           {"first_sequence", s.start.sequence + 1},
                           {"last_sequence", s.head.sequence},
                           {"last_hash", evidence::to_hex(s.head.hash)}});
    }
    nlohmann::json out{{"ok", v.ok()},
                       {"streams", streams},
                       {"checkpoints_checked", v.checkpoints_checked},
                       {"problems", v.problems}};
    if (v.first_break) {
        out["first_break"] = {{"stream", evidence::to_string(v.first_break->stream)},
                              {"sequence", v.first_break->sequence},
                              {"kind", evidence::to_string(v.first_break->kind)},
                              {"detail", v.first_break->detail}};
    }
    return out;
}

}  // namespace

int evidence_verify(const EvidenceVerifyCommand& options, std::ostream& out, std::ostream& err) {
    const std::filesystem::path data_dir(options.data_dir);
    const std::filesystem::path database =
        options.database.empty() ? data_dir / "bulkhead.db" : std::filesystem::path(options.database);
    const std::filesystem::path key_file = options.public_key.empty()
                                               ? data_dir / "evidence" / "signing-key.pem.pub"
                                               : std::filesystem::path(options.public_key);
    std::error_code ec;
    if (!std::filesystem::is_regular_file(database, ec)) {
        err << "evidence verify: no database at " << database.string() << "\n";
        return exit_usage;
    }
    auto key = controller::load_public_key(key_file);
    if (!key) {
        err << "evidence verify: " << key.error() << "\n";
        return exit_usage;
    }
    controller::EvidenceVerifyOptions verify;
    verify.public_key = *key;
    std::vector<std::string> files = options.checkpoint_files;
    if (files.empty()) {
        const auto default_file = data_dir / "evidence" / "checkpoints.jsonl";
        if (std::filesystem::exists(default_file, ec))
            files.push_back(default_file.string());
    }
    for (const auto& file : files) {
        std::ifstream in(file, std::ios::binary);
        if (!in) {
            err << "evidence verify: cannot read " << file << "\n";
            return exit_usage;
        }
        std::ostringstream text;
        text << in.rdbuf();
        auto checkpoints = controller::read_checkpoint_lines(text.str(), file);
        if (!checkpoints) {
            err << "evidence verify: " << checkpoints.error() << "\n";
            return exit_invalid;
        }
        for (auto& checkpoint : *checkpoints)
            verify.checkpoints.emplace_back(std::move(checkpoint), file);
    }
    auto store = controller::SqliteStore::open(database);
    if (!store) {
        err << "evidence verify: " << store.error().message << "\n";
        return exit_usage;
    }
    auto verification = controller::verify_evidence(**store, verify);
    const std::filesystem::path archive_dir =
        options.archive_dir.empty() ? data_dir / "archive" : std::filesystem::path(options.archive_dir);
    auto segments = controller::list_archive_segments(archive_dir);
    if (!segments) {
        verification.problems.push_back(segments.error());
    } else {
        controller::verify_archive(*segments, **store, **store, *key, verification);
    }
    if (options.json)
        out << to_json(verification).dump(2) << "\n";
    else
        out << controller::describe(verification);
    return verification.ok() ? exit_ok : exit_invalid;
}

namespace {

// RFC 3339 in UTC ("2026-12-07T10:00:00Z", fractions allowed) or plain nanoseconds.
std::optional<std::int64_t> parse_time_ns(const std::string& text) {
    if (!text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return std::stoll(text);
    std::tm tm{};
    const char* rest = ::strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
    if (rest == nullptr)
        return std::nullopt;
    std::int64_t fraction_ns = 0;
    if (*rest == '.') {
        ++rest;
        std::int64_t scale = 100'000'000;
        while (*rest >= '0' && *rest <= '9') {
            fraction_ns += (*rest - '0') * scale;
            scale /= 10;
            ++rest;
        }
    }
    if (std::string_view(rest) != "Z")
        return std::nullopt;
    return static_cast<std::int64_t>(::timegm(&tm)) * 1'000'000'000 + fraction_ns;
}

}  // namespace

int evidence_query(const EvidenceQueryCommand& options, std::ostream& out, std::ostream& err) {
    const std::filesystem::path data_dir(options.data_dir);
    const std::filesystem::path database =
        options.database.empty() ? data_dir / "bulkhead.db" : std::filesystem::path(options.database);
    controller::EventQuery query;
    query.newest_first = false;
    for (const auto& [text, field, name] : {std::tuple{options.from, &query.from_ns, "--from"},
                                            std::tuple{options.to, &query.to_ns, "--to"}}) {
        if (text.empty())
            continue;
        auto ns = parse_time_ns(text);
        if (!ns) {
            err << "evidence query: " << name << " \"" << text
                << "\": not a time (RFC 3339 in UTC, e.g. 2026-12-07T10:00:00Z, or nanoseconds)\n";
            return exit_usage;
        }
        *field = *ns;
    }
    if (!options.workload.empty())
        query.workload = options.workload;
    if (!options.address.empty())
        query.address = options.address;
    std::error_code ec;
    if (!std::filesystem::is_regular_file(database, ec)) {
        err << "evidence query: no database at " << database.string() << "\n";
        return exit_usage;
    }
    auto store = controller::SqliteStore::open(database);
    if (!store) {
        err << "evidence query: " << store.error().message << "\n";
        return exit_usage;
    }
    controller::EvidenceArchiveOptions archive_options;
    archive_options.directory =
        options.archive_dir.empty() ? data_dir / "archive" : std::filesystem::path(options.archive_dir);
    controller::EvidenceArchive archive(archive_options, **store, **store, nullptr, [] { return 0; });
    if (auto loaded = archive.load(); !loaded) {
        err << "evidence query: " << loaded.error() << "\n";
        return exit_usage;
    }
    // Pages of at most 10,000 (the store's bound), the archive's ids first.
    std::size_t printed = 0;
    while (printed < options.limit) {
        query.limit = std::min<std::size_t>(10'000, options.limit - printed);
        std::vector<controller::StoredEvent> page;
        if (query.after_id.value_or(0) < archive.archived_through()) {
            auto archived = archive.query_archived(query);
            if (!archived) {
                err << "evidence query: " << archived.error().message << "\n";
                return exit_usage;
            }
            page = std::move(*archived);
            if (page.empty())
                query.after_id = archive.archived_through();  // nothing more in the archive's range
        }
        if (page.empty()) {
            auto stored = (*store)->query_events(query);
            if (!stored) {
                err << "evidence query: " << stored.error().message << "\n";
                return exit_usage;
            }
            page = std::move(*stored);
            if (page.empty())
                break;
        }
        for (const auto& e : page)
            out << controller::event_json(e).dump() << "\n";
        printed += page.size();
        query.after_id = page.back().id;
    }
    return exit_ok;
}

}  // namespace bulkhead::ctl
