#include "controller/ctl/evidence_command.hpp"

#include "controller/ctl/ctl_commands.hpp"
#include "controller/services/evidence_service.hpp"
#include "controller/store/sqlite_store.hpp"

#include <nlohmann/json.hpp>

#include <filesystem>
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
    const auto verification = controller::verify_evidence(**store, verify);
    if (options.json)
        out << to_json(verification).dump(2) << "\n";
    else
        out << controller::describe(verification);
    return verification.ok() ? exit_ok : exit_invalid;
}

}  // namespace bulkhead::ctl
