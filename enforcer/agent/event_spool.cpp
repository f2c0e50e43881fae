#include "enforcer/agent/event_spool.hpp"

#include "common/files/durable_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace bulkhead::enforcer::agent {
namespace {

constexpr std::string_view seq_prefix = "{\"seq\":";

// Lines are written as {"seq":N,"event":...}; the seq is read without parsing the event.
std::optional<std::uint64_t> seq_of(std::string_view line) {
    if (line.substr(0, seq_prefix.size()) != seq_prefix) {
        return std::nullopt;
    }
    line.remove_prefix(seq_prefix.size());
    std::uint64_t seq = 0;
    auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), seq);
    if (ec != std::errc{} || end == line.data() || *end != ',') {
        return std::nullopt;
    }
    return seq;
}

std::string segment_name(std::uint64_t first_seq) {
    char name[48];
    std::snprintf(name, sizeof name, "seg-%020llu.jsonl", static_cast<unsigned long long>(first_seq));
    return name;
}

std::expected<std::string, std::string> read_file(const std::filesystem::path& path, std::uint64_t offset = 0) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return std::unexpected("cannot read " + path.string());
    }
    if (offset > 0 && !in.seekg(static_cast<std::streamoff>(offset))) {
        return std::unexpected("cannot read " + path.string() + " from byte " + std::to_string(offset));
    }
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

bool write_all(int fd, std::string_view data) {
    while (!data.empty()) {
        const auto n = ::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return false;
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

}  // namespace

std::expected<std::unique_ptr<EventSpool>, std::string> EventSpool::open(SpoolConfig config) {
    if (config.segment_bytes == 0) {
        config.segment_bytes = std::clamp<std::uint64_t>(config.max_bytes / 8, 16 * 1024, 4 * 1024 * 1024);
    }
    std::error_code ec;
    std::filesystem::create_directories(config.directory, ec);
    if (ec) {
        return std::unexpected("spool: cannot create " + config.directory.string() + ": " + ec.message());
    }
    std::unique_ptr<EventSpool> spool(new EventSpool(std::move(config)));
    if (auto loaded = spool->load(); !loaded) {
        return std::unexpected(loaded.error());
    }
    return spool;
}

EventSpool::~EventSpool() {
    if (active_unsynced_ && active_fd_ >= 0) {
        (void)::fdatasync(active_fd_);
    }
    // The active segment outlives its acknowledgement while running (acknowledge()); a
    // clean stop removes it, as a restart would otherwise send its events again.
    while (!segments_.empty() && segments_.front().last_seq <= acked_through_) {
        if (!drop_oldest_segment(nullptr)) {
            break;
        }
    }
    // A segment acknowledged in part (events appended after an acknowledgement): the next
    // start skips what the controller has. Written at a clean stop only, so it never claims
    // more than was confirmed; after a crash the acknowledged lines come again (duplicates).
    if (!segments_.empty() && acked_through_ >= segments_.front().first_seq) {
        (void)files::write_durably(config_.directory / "acked_through", std::to_string(acked_through_) + "\n", 0600);
    }
    close_active();
}

std::expected<void, std::string> EventSpool::sync() {
    int fd = -1;
    {
        std::lock_guard lock(mutex_);
        if (!active_unsynced_ || active_fd_ < 0) {
            return {};
        }
        // A duplicate: an acknowledgement may close the active segment meanwhile.
        fd = ::dup(active_fd_);
        active_unsynced_ = false;
    }
    if (fd < 0) {
        std::lock_guard lock(mutex_);
        ++counters_.write_errors;
        return std::unexpected(std::string("spool: dup: ") + std::strerror(errno));
    }
    const bool synced = ::fdatasync(fd) == 0;
    const int saved_errno = errno;
    ::close(fd);
    if (!synced) {
        std::lock_guard lock(mutex_);
        ++counters_.write_errors;
        return std::unexpected(std::string("spool: fdatasync: ") + std::strerror(saved_errno));
    }
    return {};
}

void EventSpool::close_active() {
    if (active_fd_ >= 0) {
        ::close(active_fd_);
        active_fd_ = -1;
    }
}

std::expected<void, std::string> EventSpool::load() {
    auto stored = files::read_small_file(config_.directory / "last_seq");
    if (!stored) {
        return std::unexpected("spool: " + stored.error());
    }
    if (*stored) {
        std::uint64_t seq = 0;
        const auto& text = **stored;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), seq);
        if (ec != std::errc{}) {
            return std::unexpected("spool: " + (config_.directory / "last_seq").string() + " is not a number");
        }
        (void)end;
        last_seq_ = seq;
    }
    // What the controller had confirmed at the last clean stop (see ~EventSpool); read once.
    std::uint64_t acked_at_stop = 0;
    const auto acked_path = config_.directory / "acked_through";
    if (auto acked = files::read_small_file(acked_path); acked && *acked) {
        const auto& text = **acked;
        if (std::from_chars(text.data(), text.data() + text.size(), acked_at_stop).ec != std::errc{}) {
            acked_at_stop = 0;  // unreadable: everything is sent again, which is only duplicates
        }
    }
    std::error_code removed;
    std::filesystem::remove(acked_path, removed);
    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(config_.directory)) {
        const auto name = entry.path().filename().string();
        if (entry.is_regular_file() && name.starts_with("seg-") && name.ends_with(".jsonl")) {
            files.push_back(entry.path());
        }
    }
    std::sort(files.begin(), files.end());
    for (const auto& path : files) {
        auto contents = read_file(path);
        if (!contents) {
            return std::unexpected("spool: " + contents.error());
        }
        // A crash mid-append leaves a torn last line: cut the file back to its last newline.
        const auto last_newline = contents->rfind('\n');
        const std::size_t whole = last_newline == std::string::npos ? 0 : last_newline + 1;
        if (whole != contents->size()) {
            std::filesystem::resize_file(path, whole);
            contents->resize(whole);
            ++counters_.recovered_truncations;
        }
        Segment segment{path, 0, 0, whole, 0};
        std::string_view rest(*contents);
        while (!rest.empty()) {
            const auto newline = rest.find('\n');
            const auto line = rest.substr(0, newline);
            rest.remove_prefix(newline + 1);
            if (auto seq = seq_of(line)) {
                if (segment.events == 0) {
                    segment.first_seq = *seq;
                }
                segment.last_seq = std::max(segment.last_seq, *seq);
                ++segment.events;
            }
        }
        if (segment.events == 0) {
            std::filesystem::remove(path);
            continue;
        }
        last_seq_ = std::max(last_seq_, segment.last_seq);
        total_bytes_ += segment.bytes;
        segments_.push_back(std::move(segment));
    }
    acked_through_ = std::min(acked_at_stop, last_seq_);
    return {};
}

std::expected<void, std::string> EventSpool::remember_seq(std::uint64_t seq) {
    return files::write_durably(config_.directory / "last_seq", std::to_string(seq) + "\n", 0600);
}

std::uint64_t EventSpool::unacked_in(const Segment& s) const {
    if (s.last_seq <= acked_through_) {
        return 0;
    }
    if (acked_through_ < s.first_seq) {
        return s.events;
    }
    return std::min<std::uint64_t>(s.events, s.last_seq - acked_through_);
}

std::expected<void, std::string> EventSpool::drop_oldest_segment(std::uint64_t* evicted) {
    const Segment oldest = segments_.front();
    // The highest seq must survive the segment that holds it.
    if (oldest.last_seq >= last_seq_) {
        if (auto saved = remember_seq(last_seq_); !saved) {
            return saved;
        }
    }
    if (segments_.size() == 1) {
        close_active();
    }
    if (evicted != nullptr) {
        *evicted += unacked_in(oldest);
    }
    std::error_code ec;
    std::filesystem::remove(oldest.path, ec);
    total_bytes_ -= oldest.bytes;
    segments_.erase(segments_.begin());
    return {};
}

std::expected<AppendResult, std::string> EventSpool::append(const std::vector<nlohmann::json>& events, bool sync) {
    std::lock_guard lock(mutex_);
    AppendResult result;
    if (events.empty()) {
        return result;
    }
    std::vector<std::string> lines;
    lines.reserve(events.size());
    std::uint64_t seq = last_seq_;
    std::uint64_t batch_bytes = 0;
    for (const auto& event : events) {
        std::string line = std::string(seq_prefix) + std::to_string(++seq) + ",\"event\":" +
                           event.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "}\n";
        batch_bytes += line.size();
        lines.push_back(std::move(line));
    }
    result.first_seq = last_seq_ + 1;
    result.last_seq = seq;
    // A batch larger than the whole bound keeps its newest events (the oldest are evicted).
    std::size_t skip = 0;
    while (batch_bytes > config_.max_bytes && skip + 1 < lines.size()) {
        batch_bytes -= lines[skip].size();
        ++skip;
    }
    if (skip > 0) {
        result.evicted += skip;
        result.evicted_first_seq = result.first_seq;
        result.evicted_last_seq = result.first_seq + skip - 1;
    }
    while (!segments_.empty() && total_bytes_ + batch_bytes > config_.max_bytes) {
        const auto first = segments_.front().first_seq;
        const auto last = segments_.front().last_seq;
        std::uint64_t evicted = 0;
        if (auto dropped = drop_oldest_segment(&evicted); !dropped) {
            return std::unexpected(dropped.error());
        }
        ++counters_.evicted_segments;
        if (evicted > 0) {
            result.evicted += evicted;
            if (result.evicted_first_seq == 0 || first < result.evicted_first_seq) {
                result.evicted_first_seq = std::max(first, acked_through_ + 1);
            }
            result.evicted_last_seq = std::max(result.evicted_last_seq, last);
        }
    }
    counters_.evicted += result.evicted;
    std::size_t index = skip;
    while (index < lines.size()) {
        if (segments_.empty() || active_fd_ < 0 || segments_.back().bytes >= config_.segment_bytes) {
            if (active_unsynced_ && active_fd_ >= 0 && ::fdatasync(active_fd_) != 0) {
                ++counters_.write_errors;
                const auto error = std::string("spool: fdatasync: ") + std::strerror(errno);
                close_active();
                return std::unexpected(error);
            }
            active_unsynced_ = false;
            close_active();
            const auto first = result.first_seq + index;
            const auto path = config_.directory / segment_name(first);
            active_fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
            if (active_fd_ < 0) {
                ++counters_.write_errors;
                return std::unexpected("spool: open " + path.string() + ": " + std::strerror(errno));
            }
            (void)files::fsync_directory(config_.directory);
            segments_.push_back(Segment{path, first, first, 0, 0});
        }
        auto& active = segments_.back();
        std::string chunk;
        const auto chunk_first = result.first_seq + index;
        while (index < lines.size() && (chunk.empty() || active.bytes + chunk.size() < config_.segment_bytes)) {
            chunk += lines[index++];
        }
        const bool last_chunk = index == lines.size();
        const bool sync_chunk = sync || !last_chunk;
        if (!write_all(active_fd_, chunk) || (sync_chunk && ::fdatasync(active_fd_) != 0)) {
            ++counters_.write_errors;
            const auto error = std::string("spool: write: ") + std::strerror(errno);
            close_active();
            return std::unexpected(error);
        }
        active_unsynced_ = !sync_chunk;
        if (active.events == 0) {
            active.first_seq = chunk_first;
        }
        active.last_seq = result.first_seq + index - 1;
        active.events += active.last_seq - chunk_first + 1;
        active.bytes += chunk.size();
        total_bytes_ += chunk.size();
    }
    last_seq_ = result.last_seq;
    return result;
}

std::optional<UploadBatch> EventSpool::next_batch(std::size_t max_events, std::size_t max_bytes) {
    std::lock_guard lock(mutex_);
    UploadBatch batch;
    batch.body = "{\"events\":[";
    const std::size_t closing = 2;  // "]}"
    for (auto& segment : segments_) {
        if (segment.last_seq <= acked_through_) {
            continue;
        }
        auto contents = read_file(segment.path, segment.scan_offset);
        if (!contents) {
            ++counters_.write_errors;
            return std::nullopt;
        }
        std::string_view rest(*contents);
        bool acked_prefix = true;  // every line so far is acknowledged: skip it next time
        while (!rest.empty()) {
            const auto newline = rest.find('\n');
            if (newline == std::string_view::npos) {
                break;  // a tail still being written (not possible under the lock, but harmless)
            }
            const auto line = rest.substr(0, newline);
            rest.remove_prefix(newline + 1);
            const auto seq = seq_of(line);
            if (!seq || *seq <= acked_through_) {
                if (acked_prefix && seq) {
                    segment.scan_offset += newline + 1;
                } else {
                    acked_prefix = false;  // an unreadable line: keep reading from before it
                }
                continue;
            }
            acked_prefix = false;
            if (batch.count >= max_events ||
                batch.body.size() + line.size() + 1 + closing > max_bytes) {
                if (batch.count == 0) {
                    // One event larger than a request may be: it can never be sent. Count
                    // it as evicted and skip it rather than block the spool forever.
                    acked_through_ = *seq;
                    ++counters_.evicted;
                    continue;
                }
                batch.body += "]}";
                return batch;
            }
            if (batch.count > 0) {
                batch.body += ',';
            } else {
                batch.first_seq = *seq;
            }
            batch.body += line;
            batch.last_seq = *seq;
            ++batch.count;
        }
    }
    if (batch.count == 0) {
        return std::nullopt;
    }
    batch.body += "]}";
    return batch;
}

std::expected<void, std::string> EventSpool::acknowledge(std::uint64_t seq) {
    std::lock_guard lock(mutex_);
    seq = std::min(seq, last_seq_);
    if (seq <= acked_through_) {
        return {};
    }
    acked_through_ = seq;
    while (!segments_.empty() && segments_.front().last_seq <= acked_through_) {
        // The active segment stays open, acknowledged lines and all, until it is full (or
        // the spool closes): deleting it would make the next quiet-time event pay for a new
        // file and a synced directory on its way to the controller, and this call for a
        // durable last_seq (milliseconds each on a busy disk, under the lock the writer
        // needs). next_batch() skips its acknowledged lines without re-reading them.
        if (segments_.size() == 1 && active_fd_ >= 0 && segments_.front().bytes < config_.segment_bytes) {
            break;
        }
        if (auto dropped = drop_oldest_segment(nullptr); !dropped) {
            return dropped;
        }
    }
    return {};
}

std::expected<void, std::string> EventSpool::set_aside(std::uint64_t seq, std::string_view reason, std::int64_t now_ms) {
    std::lock_guard lock(mutex_);
    if (seq <= acked_through_ || seq > last_seq_) {
        return std::unexpected("set aside: event " + std::to_string(seq) + " is not waiting in the spool");
    }
    // The event itself, kept for whoever investigates why the controller refused it.
    std::string line;
    for (const auto& segment : segments_) {
        if (segment.last_seq < seq || segment.first_seq > seq) {
            continue;
        }
        auto contents = read_file(segment.path);
        if (!contents) {
            ++counters_.write_errors;
            return std::unexpected("set aside: " + contents.error());
        }
        std::string_view rest(*contents);
        while (!rest.empty() && line.empty()) {
            const auto newline = rest.find('\n');
            if (newline == std::string_view::npos) {
                break;
            }
            const auto candidate = rest.substr(0, newline);
            rest.remove_prefix(newline + 1);
            if (seq_of(candidate) == seq) {
                line = std::string(candidate);
            }
        }
    }
    if (line.empty()) {
        return std::unexpected("set aside: event " + std::to_string(seq) + " not found in the spool");
    }
    const auto path = config_.directory / "set-aside.ndjson";
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    if (!ec && size > std::max<std::uint64_t>(config_.max_bytes / 8, 64 * 1024)) {
        std::filesystem::rename(path, config_.directory / "set-aside.ndjson.1", ec);
    }
    nlohmann::json record{{"seq", seq}, {"reason", std::string(reason)}, {"at_ms", now_ms}};
    auto event = nlohmann::json::parse(line, nullptr, false);
    if (event.is_discarded()) {
        record["spooled_text"] = line;  // kept as it was, whatever it is
    } else {
        record["spooled"] = std::move(event);  // the spool's line: {"seq", "event"}
    }
    const std::string text = record.dump() + "\n";
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        ++counters_.write_errors;
        return std::unexpected("set aside: cannot open " + path.string() + ": " + std::strerror(errno));
    }
    const bool written = write_all(fd, text) && ::fdatasync(fd) == 0;
    const int saved_errno = errno;
    ::close(fd);
    if (!written) {
        ++counters_.write_errors;
        return std::unexpected("set aside: cannot write " + path.string() + ": " + std::strerror(saved_errno));
    }
    // Only now does it leave the spool: a crash before this line keeps it spooled.
    acked_through_ = std::max(acked_through_, seq);
    ++counters_.set_aside;
    while (!segments_.empty() && segments_.front().last_seq <= acked_through_) {
        if (auto dropped = drop_oldest_segment(nullptr); !dropped) {
            return dropped;
        }
    }
    return {};
}

SpoolStats EventSpool::stats() const {
    std::lock_guard lock(mutex_);
    SpoolStats s = counters_;
    s.bytes = total_bytes_;
    s.segments = segments_.size();
    s.last_seq = last_seq_;
    s.acked_through = acked_through_;
    s.events = 0;
    for (const auto& segment : segments_) {
        s.events += unacked_in(segment);
    }
    return s;
}

bool EventSpool::has_unacknowledged() const {
    std::lock_guard lock(mutex_);
    return std::any_of(segments_.begin(), segments_.end(),
                       [&](const Segment& s) { return s.last_seq > acked_through_; });
}

}  // namespace bulkhead::enforcer::agent
