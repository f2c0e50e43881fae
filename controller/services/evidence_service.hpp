// Tamper evidence at the controller's edge (controller/evidence is the pure core):
//
//  * EvidenceCheckpointer signs the heads of every evidence stream at an interval (default one
//    minute) with the controller's Ed25519 key and keeps each checkpoint in three places: the
//    database, a file (ideally on another disk) and, through `on_checkpoint`, the SIEM. An
//    attacker who controls the database alone cannot rewrite history without these outside
//    copies disagreeing.
//  * verify_evidence walks every stream's chain in the database, checks each signed
//    checkpoint it is given against it, and names the first broken record.
//  * load_or_create_signing_key keeps the key in a 0600 PEM file beside the database and
//    writes its public half next to it for verifiers that must not hold the private key.
#pragma once

#include "controller/evidence/checkpoint.hpp"
#include "controller/services/periodic_task.hpp"
#include "controller/store/repositories.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <expected>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace bulkhead::controller {

// The key in `private_pem` (created with mode 0600 when absent); its public key is written
// to `private_pem` with ".pub" appended (64 hex digits and a newline) on every load.
std::expected<evidence::SigningKey, std::string> load_or_create_signing_key(const std::filesystem::path& private_pem);
// A public key file as written above (64 hex digits), or the private PEM (its public half).
std::expected<evidence::PublicKey, std::string> load_public_key(const std::filesystem::path& file);

// Signed checkpoints from a file of JSON lines (the checkpoint file, or lines a SIEM kept);
// a line that is not a checkpoint is an error naming its number.
std::expected<std::vector<evidence::SignedCheckpoint>, std::string>
read_checkpoint_lines(const std::string& text, const std::string& origin);

struct StreamVerification {
    evidence::Stream stream = evidence::Stream::Drops;
    evidence::ChainHead start;      // the link before the first record the database keeps
    evidence::ChainHead head;       // the last record verified
    std::uint64_t verified = 0;     // records verified
};

struct EvidenceVerification {
    std::vector<StreamVerification> streams;
    std::uint64_t checkpoints_checked = 0;
    // The first broken record over all streams (streams in their fixed order), if any.
    std::optional<evidence::ChainBreak> first_break;
    // Problems that are not a record: a checkpoint whose signature does not verify, one
    // from another key, a store that could not be read.
    std::vector<std::string> problems;
    bool ok() const { return !first_break && problems.empty(); }
};

struct EvidenceVerifyOptions {
    evidence::PublicKey public_key{};
    // Signed checkpoints kept outside the database (file, SIEM); each must verify with
    // `public_key`. Checkpoints stored in the database are checked as well.
    std::vector<std::pair<evidence::SignedCheckpoint, std::string>> checkpoints;  // with where it came from
    std::size_t page = 10'000;  // records read per query
};

EvidenceVerification verify_evidence(EvidenceRepository& store, const EvidenceVerifyOptions& options);

// One line per stream and the verdict, for bulkheadctl and logs.
std::string describe(const EvidenceVerification& verification);

struct EvidenceCheckpointerOptions {
    std::string controller_name = "controller";
    std::filesystem::path checkpoint_file;  // empty: the database only
    std::chrono::milliseconds interval{60'000};
};

class EvidenceCheckpointer {
public:
    using Clock = std::function<TimeMs()>;
    using Sink = std::function<void(const evidence::SignedCheckpoint&, const std::string& line)>;

    EvidenceCheckpointer(EvidenceRepository& store, evidence::SigningKey key, EvidenceCheckpointerOptions options,
                         Clock clock, Sink on_checkpoint = {});
    ~EvidenceCheckpointer();
    EvidenceCheckpointer(const EvidenceCheckpointer&) = delete;
    EvidenceCheckpointer& operator=(const EvidenceCheckpointer&) = delete;

    // Reads every head, signs, stores and appends the line to the file (synced). An error
    // says which step failed; nothing is half-written to the file.
    std::expected<evidence::SignedCheckpoint, std::string> checkpoint_now();

    // A thread that checkpoints at the interval, and once more when stopped.
    void start();
    void stop();

    std::uint64_t written() const;
    std::uint64_t failures() const;
    const evidence::PublicKey& public_key() const { return public_key_; }
    const evidence::SigningKey& signing_key() const { return key_; }

private:
    void run();

    EvidenceRepository& store_;
    evidence::SigningKey key_;
    evidence::PublicKey public_key_;
    EvidenceCheckpointerOptions options_;
    Clock clock_;
    Sink on_checkpoint_;
    mutable std::mutex mutex_;
    std::uint64_t written_ = 0;
    std::uint64_t failures_ = 0;
    TimeMs last_at_ = 0;
    PeriodicTask task_;  // last: stopped before anything it uses goes
};

}  // namespace bulkhead::controller
