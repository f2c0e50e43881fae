#include "controller/services/evidence_service.hpp"

#include "common/files/durable_file.hpp"
#include "common/files/secret_file.hpp"
#include "controller/evidence/digest.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sstream>
#include <unistd.h>

namespace bulkhead::controller {

namespace {

// The whole of a small file that must exist.
std::expected<std::string, std::string> read_text(const std::filesystem::path& file) {
    auto text = files::read_small_file(file);
    if (!text)
        return std::unexpected(text.error());
    if (!*text)
        return std::unexpected("cannot read " + file.string() + ": it does not exist");
    return std::move(**text);
}

// Appends one line and syncs it: a checkpoint that is not on disk does not count.
std::expected<void, std::string> append_line_durably(const std::filesystem::path& file, const std::string& line) {
    if (file.has_parent_path()) {
        std::error_code ec;
        std::filesystem::create_directories(file.parent_path(), ec);
    }
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0)
        return std::unexpected("cannot open " + file.string() + ": " + std::strerror(errno));
    const std::string text = line + "\n";
    // One write: O_APPEND keeps it whole even if another process appends too.
    const ssize_t n = ::write(fd, text.data(), text.size());
    const int write_errno = errno;
    const bool synced = ::fdatasync(fd) == 0;
    ::close(fd);
    if (n != static_cast<ssize_t>(text.size()))
        return std::unexpected("cannot append to " + file.string() + ": " + std::strerror(write_errno));
    if (!synced)
        return std::unexpected("cannot sync " + file.string() + ": " + std::strerror(errno));
    return {};
}

std::string public_key_text(const evidence::PublicKey& key) { return evidence::to_hex(key) + "\n"; }

}  // namespace

std::expected<evidence::SigningKey, std::string> load_or_create_signing_key(const std::filesystem::path& private_pem) {
    std::error_code ec;
    if (!std::filesystem::exists(private_pem, ec)) {
        if (private_pem.has_parent_path())
            std::filesystem::create_directories(private_pem.parent_path(), ec);
        auto key = evidence::SigningKey::generate();
        if (!key)
            return std::unexpected("evidence signing key: " + key.error());
        if (auto written = files::write_durably(private_pem, key->private_pem(), 0600); !written)
            return std::unexpected("evidence signing key: " + written.error());
        spdlog::info("evidence: created the signing key {} (key id {})", private_pem.string(),
                     evidence::key_id(key->public_key()));
    }
    if (auto safe = files::check_secret_file(private_pem.string(), "evidence signing key"); !safe)
        return std::unexpected(safe.error());
    auto pem = read_text(private_pem);
    if (!pem)
        return std::unexpected(pem.error());
    auto key = evidence::SigningKey::from_pem(*pem);
    if (!key)
        return std::unexpected(private_pem.string() + ": " + key.error());
    const std::filesystem::path public_file = private_pem.string() + ".pub";
    if (auto written = files::write_durably(public_file, public_key_text(key->public_key()), 0644); !written)
        return std::unexpected("evidence public key: " + written.error());
    return key;
}

std::expected<evidence::PublicKey, std::string> load_public_key(const std::filesystem::path& file) {
    auto text = read_text(file);
    if (!text)
        return std::unexpected(text.error());
    if (text->find("PRIVATE KEY") != std::string::npos) {
        auto key = evidence::SigningKey::from_pem(*text);
        if (!key)
            return std::unexpected(file.string() + ": " + key.error());
        return key->public_key();
    }
    std::string hex = *text;
    while (!hex.empty() && (hex.back() == '\n' || hex.back() == '\r' || hex.back() == ' '))
        hex.pop_back();
    evidence::PublicKey key{};
    if (!evidence::from_hex(hex, key))
        return std::unexpected(file.string() + ": not a public key (64 hexadecimal digits) or a private key PEM");
    return key;
}

std::expected<std::vector<evidence::SignedCheckpoint>, std::string>
read_checkpoint_lines(const std::string& text, const std::string& origin) {
    std::vector<evidence::SignedCheckpoint> out;
    std::istringstream lines(text);
    std::string line;
    std::size_t number = 0;
    while (std::getline(lines, line)) {
        ++number;
        if (line.empty() || line.find_first_not_of(" \t\r") == std::string::npos)
            continue;
        auto checkpoint = evidence::checkpoint_from_json_line(line);
        if (!checkpoint)
            return std::unexpected(origin + ":" + std::to_string(number) + ": " + checkpoint.error());
        out.push_back(std::move(*checkpoint));
    }
    return out;
}

namespace {

struct RangeOutcome {
    std::uint64_t verified = 0;
    evidence::ChainHead head;                    // the last record verified in order
    std::optional<evidence::ChainBreak> broken;  // the lowest broken record
};

// Verifies records (before.sequence, through] of one stream. Every link is checked against
// the previous record's *stored* hash, so that disjoint parts of the range can be checked on
// every core at once: if each stored hash is the hash of its record and the stored hash
// before it, the chain from `before` holds, exactly as a walk from the start would find; the
// lowest broken record is the one a walk would name.
RangeOutcome verify_chain_range(EvidenceRepository& store, evidence::Stream stream, const evidence::ChainHead& before,
                                std::uint64_t through, const std::vector<std::pair<evidence::ChainHead, std::string>>& expected,
                                std::size_t page, std::vector<std::string>& problems) {
    const std::string name(evidence::to_string(stream));
    const std::uint64_t total = through > before.sequence ? through - before.sequence : 0;
    const std::size_t workers =
        total < 4 * page ? 1 : std::clamp<std::size_t>(std::thread::hardware_concurrency(), 1, 4);
    const std::uint64_t chunk = std::max<std::uint64_t>(page, (total + workers * 8 - 1) / (workers * 8));
    struct Part {
        std::uint64_t first = 0, last = 0;
        std::uint64_t verified = 0;
        evidence::ChainHead head;
        std::optional<evidence::ChainBreak> broken;
        std::optional<std::string> problem;
    };
    std::vector<Part> parts;
    for (std::uint64_t first = before.sequence + 1; first <= through; first += chunk) {
        Part part;
        part.first = first;
        part.last = std::min(through, first + chunk - 1);
        parts.push_back(std::move(part));
    }

    const auto verify_part = [&](Part& part) {
        evidence::ChainHead previous{part.first - 1, {}};
        if (part.first - 1 == before.sequence) {
            previous = before;
        } else if (auto prior = store.evidence_records(stream, part.first - 2, 1); !prior) {
            part.problem = name + ": cannot read record " + std::to_string(part.first - 1) + ": " + prior.error().message;
            return;
        } else if (!prior->empty() && prior->front().sequence == part.first - 1 && prior->front().hash) {
            previous.hash = *prior->front().hash;  // absent or unreadable: the part before reports it
        }
        evidence::ChainVerifier verifier(stream, previous);
        std::uint64_t confirmed = before.sequence;  // checkpoints before this part: the parts before check them
        for (const auto& [checkpoint_head, origin] : expected) {
            if (checkpoint_head.sequence >= part.first && checkpoint_head.sequence <= part.last)
                verifier.expect(checkpoint_head, origin);
            else if (checkpoint_head.sequence < part.first)
                confirmed = std::max(confirmed, checkpoint_head.sequence);
        }
        verifier.confirmed_through(confirmed);
        std::uint64_t after = part.first - 1;
        bool reading = true;
        while (reading && after < part.last) {
            auto records = store.evidence_records(stream, after, std::min<std::uint64_t>(page, part.last - after));
            if (!records) {
                part.problem = name + ": cannot read records after " + std::to_string(after) + ": " + records.error().message;
                return;
            }
            for (const auto& record : *records) {
                if (record.sequence > part.last) {
                    reading = false;
                    break;
                }
                // The previous hash is not stored with each record (it is the record before's
                // own): a replaced record shows as "altered" at the first one that no longer
                // hashes to what is stored.
                const evidence::StoredRecord stored{record.sequence, verifier.head().hash,
                                                    record.hash.value_or(evidence::Digest{}), record.record};
                if (!verifier.feed(stored)) {
                    reading = false;
                    break;
                }
                after = record.sequence;
            }
            if (records->empty())
                break;
        }
        part.verified = verifier.verified();
        part.head = verifier.head();
        part.broken = verifier.broken();
        if (!part.broken && part.head.sequence < part.last) {
            const std::uint64_t absent = part.head.sequence + 1;
            part.broken = evidence::ChainBreak{
                stream, absent, evidence::BreakKind::Missing,
                absent == part.last ? "record " + std::to_string(absent) + " is absent (deleted)"
                                    : "records " + std::to_string(absent) + " to " + std::to_string(part.last) +
                                          " are absent (deleted)"};
        }
    };

    std::atomic<std::size_t> next{0};
    const auto work = [&] {
        for (std::size_t i = next++; i < parts.size(); i = next++)
            verify_part(parts[i]);
    };
    std::vector<std::thread> threads;
    for (std::size_t w = 1; w < workers; ++w)
        threads.emplace_back(work);
    work();
    for (auto& thread : threads)
        thread.join();

    RangeOutcome outcome;
    outcome.head = before;
    for (const auto& part : parts) {
        if (part.problem)
            problems.push_back(*part.problem);
        if (part.broken) {
            outcome.broken = part.broken;
            outcome.verified += part.verified;
            outcome.head = part.head;
            break;
        }
        if (part.problem)
            break;
        outcome.verified += part.verified;
        outcome.head = part.head;
    }
    return outcome;
}

}  // namespace

EvidenceVerification verify_evidence(EvidenceRepository& store, const EvidenceVerifyOptions& options) {
    EvidenceVerification result;
    const std::string expected_key = evidence::key_id(options.public_key);

    // Every checkpoint must be the controller's own: one that does not verify is reported,
    // never used (a forged checkpoint must not vouch for a rewritten chain).
    std::vector<std::pair<evidence::SignedCheckpoint, std::string>> checkpoints;
    const auto admit = [&](const evidence::SignedCheckpoint& checkpoint, const std::string& origin) {
        const std::string name = "checkpoint " + format_time_ms(checkpoint.checkpoint.at_ms) + " in " + origin;
        if (checkpoint.key_id != expected_key) {
            result.problems.push_back(name + ": signed by key " + checkpoint.key_id + ", not by " + expected_key);
            return;
        }
        if (!evidence::checkpoint_valid(checkpoint, options.public_key)) {
            result.problems.push_back(name + ": the signature does not verify (the checkpoint was altered)");
            return;
        }
        checkpoints.emplace_back(checkpoint, name);
    };
    for (const auto& [checkpoint, origin] : options.checkpoints)
        admit(checkpoint, origin);
    if (auto stored = store.evidence_checkpoints(0, 1'000'000); stored) {
        std::size_t number = 0;
        for (const auto& line : *stored) {
            ++number;
            auto checkpoint = evidence::checkpoint_from_json_line(line);
            if (!checkpoint) {
                result.problems.push_back("stored checkpoint " + std::to_string(number) + ": " + checkpoint.error());
                continue;
            }
            admit(*checkpoint, "the database");
        }
    } else {
        result.problems.push_back("cannot read the stored checkpoints: " + stored.error().message);
    }
    result.checkpoints_checked = checkpoints.size();

    for (const auto stream : evidence::kStreams) {
        StreamVerification summary;
        summary.stream = stream;
        const std::string name(evidence::to_string(stream));
        auto start = store.evidence_chain_start(stream);
        auto head = store.evidence_head(stream);
        if (!start || !head) {
            result.problems.push_back(name + ": cannot read the chain's bounds: " +
                                      (start ? head.error().message : start.error().message));
            result.streams.push_back(summary);
            continue;
        }
        summary.start = *start;
        // Heads at or before the start lie in records the database no longer keeps.
        std::vector<std::pair<evidence::ChainHead, std::string>> expected;
        for (const auto& [checkpoint, origin] : checkpoints) {
            for (const auto& [head_stream, checkpoint_head] : checkpoint.checkpoint.heads) {
                if (head_stream == stream && checkpoint_head.sequence > start->sequence)
                    expected.emplace_back(checkpoint_head, origin);
            }
        }
        const std::uint64_t through = std::max(head->sequence, start->sequence);
        auto outcome = verify_chain_range(store, stream, *start, through, expected, options.page, result.problems);
        summary.head = outcome.head;
        summary.verified = outcome.verified;
        if (!outcome.broken) {
            // Records a signed checkpoint names beyond the stored end were deleted from the end.
            for (const auto& [checkpoint_head, origin] : expected) {
                if (checkpoint_head.sequence > outcome.head.sequence &&
                    (!outcome.broken || checkpoint_head.sequence < outcome.broken->sequence)) {
                    outcome.broken = evidence::ChainBreak{
                        stream, outcome.head.sequence + 1, evidence::BreakKind::Truncated,
                        "the store ends at record " + std::to_string(outcome.head.sequence) + ", " + origin +
                            " holds " + std::to_string(checkpoint_head.sequence) + " (records deleted from the end)"};
                }
            }
        }
        if (outcome.broken && !result.first_break)
            result.first_break = outcome.broken;
        result.streams.push_back(summary);
    }
    return result;
}

std::string describe(const EvidenceVerification& verification) {
    std::string out;
    for (const auto& stream : verification.streams) {
        out += std::string(evidence::to_string(stream.stream)) + ": " + std::to_string(stream.verified) +
               " records verified (" + std::to_string(stream.start.sequence + 1) + " to " +
               std::to_string(stream.head.sequence) + ")\n";
    }
    out += std::to_string(verification.checkpoints_checked) + " signed checkpoints checked\n";
    for (const auto& problem : verification.problems)
        out += "problem: " + problem + "\n";
    if (verification.first_break)
        out += "first broken record: " + evidence::describe(*verification.first_break) + "\n";
    out += verification.ok() ? "evidence verifies\n" : "evidence does NOT verify\n";
    return out;
}

// ---- EvidenceCheckpointer ------------------------------------------------------------------------

EvidenceCheckpointer::EvidenceCheckpointer(EvidenceRepository& store, evidence::SigningKey key,
                                           EvidenceCheckpointerOptions options, Clock clock, Sink on_checkpoint)
    : store_(store),
      key_(std::move(key)),
      public_key_(key_.public_key()),
      options_(std::move(options)),
      clock_(std::move(clock)),
      on_checkpoint_(std::move(on_checkpoint)),
      task_({options_.interval, false, true}, [this] { run(); }) {}

EvidenceCheckpointer::~EvidenceCheckpointer() { stop(); }

std::expected<evidence::SignedCheckpoint, std::string> EvidenceCheckpointer::checkpoint_now() {
    evidence::Checkpoint checkpoint;
    checkpoint.controller = options_.controller_name;
    checkpoint.at_ms = clock_();
    {
        // Two checkpoints in one millisecond would share the stored row's key.
        std::lock_guard lock(mutex_);
        if (checkpoint.at_ms <= last_at_)
            checkpoint.at_ms = last_at_ + 1;
        last_at_ = checkpoint.at_ms;
    }
    for (const auto stream : evidence::kStreams) {
        auto head = store_.evidence_head(stream);
        if (!head)
            return std::unexpected("cannot read the head of " + std::string(evidence::to_string(stream)) + ": " +
                                   head.error().message);
        checkpoint.heads.emplace_back(stream, *head);
    }
    const evidence::SignedCheckpoint signed_checkpoint = evidence::sign_checkpoint(std::move(checkpoint), key_);
    const std::string line = evidence::to_json_line(signed_checkpoint);
    if (!options_.checkpoint_file.empty()) {
        if (auto appended = append_line_durably(options_.checkpoint_file, line); !appended)
            return std::unexpected(appended.error());
    }
    if (auto stored = store_.add_evidence_checkpoint(signed_checkpoint.checkpoint.at_ms, line); !stored)
        return std::unexpected("cannot store the checkpoint: " + stored.error().message);
    if (on_checkpoint_)
        on_checkpoint_(signed_checkpoint, line);
    std::lock_guard lock(mutex_);
    ++written_;
    return signed_checkpoint;
}

void EvidenceCheckpointer::start() { task_.start(); }

void EvidenceCheckpointer::stop() { task_.stop(); }

void EvidenceCheckpointer::run() {
    if (auto done = checkpoint_now(); !done) {
        std::lock_guard lock(mutex_);
        ++failures_;
        spdlog::error("evidence: checkpoint failed: {}", done.error());
    }
}

std::uint64_t EvidenceCheckpointer::written() const {
    std::lock_guard lock(mutex_);
    return written_;
}

std::uint64_t EvidenceCheckpointer::failures() const {
    std::lock_guard lock(mutex_);
    return failures_;
}

}  // namespace bulkhead::controller
