#include "controller/services/evidence_service.hpp"

#include "common/files/secret_file.hpp"
#include "controller/evidence/digest.hpp"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace bulkhead::controller {

namespace {

std::expected<std::string, std::string> read_text(const std::filesystem::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in)
        return std::unexpected("cannot read " + file.string() + ": " + std::strerror(errno));
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

// Writes `text` to a new file with `mode`, synced, then renames it over `file`.
std::expected<void, std::string> write_file_durably(const std::filesystem::path& file, const std::string& text,
                                                    mode_t mode) {
    const std::string temporary = file.string() + ".tmp";
    const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return std::unexpected("cannot create " + temporary + ": " + std::strerror(errno));
    ::fchmod(fd, mode);  // the umask may have narrowed it; never widened
    std::size_t done = 0;
    while (done < text.size()) {
        const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            const std::string reason = std::strerror(errno);
            ::close(fd);
            return std::unexpected("cannot write " + temporary + ": " + reason);
        }
        done += static_cast<std::size_t>(n);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0)
        return std::unexpected("cannot sync " + temporary + ": " + std::strerror(errno));
    std::error_code ec;
    std::filesystem::rename(temporary, file, ec);
    if (ec)
        return std::unexpected("cannot rename " + temporary + ": " + ec.message());
    return {};
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
        if (auto written = write_file_durably(private_pem, key->private_pem(), 0600); !written)
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
    if (auto written = write_file_durably(public_file, public_key_text(key->public_key()), 0644); !written)
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
        auto start = store.evidence_chain_start(stream);
        if (!start) {
            result.problems.push_back(std::string(evidence::to_string(stream)) +
                                      ": cannot read the chain's start: " + start.error().message);
            result.streams.push_back(summary);
            continue;
        }
        summary.start = *start;
        evidence::ChainVerifier verifier(stream, *start);
        for (const auto& [checkpoint, name] : checkpoints) {
            for (const auto& [head_stream, head] : checkpoint.checkpoint.heads) {
                // Heads at or before the start lie in records the database no longer keeps.
                if (head_stream == stream && head.sequence > start->sequence)
                    verifier.expect(head, name);
            }
        }
        std::uint64_t after = start->sequence;
        bool reading = true;
        while (reading) {
            auto page = store.evidence_records(stream, after, options.page);
            if (!page) {
                result.problems.push_back(std::string(evidence::to_string(stream)) + ": cannot read records after " +
                                          std::to_string(after) + ": " + page.error().message);
                break;
            }
            for (const auto& record : *page) {
                // The previous hash is not stored with each record (it is the record before's
                // own), so a replaced record shows as "altered" at the first one that no longer
                // hashes to what is stored.
                const evidence::StoredRecord stored{record.sequence, verifier.head().hash,
                                                    record.hash.value_or(evidence::Digest{}), record.record};
                if (!verifier.feed(stored)) {
                    reading = false;
                    break;
                }
                after = record.sequence;
            }
            if (page->size() < options.page)
                break;
        }
        auto broken = verifier.finish();
        summary.head = verifier.head();
        summary.verified = verifier.verified();
        if (broken && !result.first_break)
            result.first_break = broken;
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
      on_checkpoint_(std::move(on_checkpoint)) {}

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

void EvidenceCheckpointer::start() {
    std::lock_guard lock(mutex_);
    if (worker_.joinable())
        return;
    stopping_ = false;
    worker_ = std::thread([this] { run(); });
}

void EvidenceCheckpointer::stop() {
    {
        std::lock_guard lock(mutex_);
        if (!worker_.joinable())
            return;
        stopping_ = true;
    }
    wake_.notify_all();
    worker_.join();
}

void EvidenceCheckpointer::run() {
    for (;;) {
        bool last = false;
        {
            std::unique_lock lock(mutex_);
            last = wake_.wait_for(lock, options_.interval, [this] { return stopping_; });
        }
        if (auto done = checkpoint_now(); !done) {
            std::lock_guard lock(mutex_);
            ++failures_;
            spdlog::error("evidence: checkpoint failed: {}", done.error());
        }
        if (last)
            return;
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
