// The checkpoints' byte encoding (Analyzer::save_state, ResponsePlanner::save_state), internal
// to the analyzer. A checkpoint is
//
//   magic (4 bytes) | format version (1 byte) | payload | FNV-1a 64 of the payload (8 bytes LE)
//
// and the payload a sequence of LEB128 varints (signed values zigzag-encoded), 8-byte
// little-endian doubles and length-prefixed byte strings. The checksum turns a torn or
// damaged file into a clean rejection; the reader still checks every length against what is
// left, because a checksum does not make input trustworthy.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace bulkhead::analyzer::detail {

inline std::uint64_t fnv1a64(std::string_view bytes) {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (const char c : bytes) {
        h ^= static_cast<unsigned char>(c);
        h *= 0x100000001b3ULL;
    }
    return h;
}

class CheckpointWriter {
  public:
    CheckpointWriter(std::string_view magic, std::uint8_t version) {
        out_.append(magic);
        out_.push_back(static_cast<char>(version));
        header_ = out_.size();
    }
    void u(std::uint64_t v) {
        while (v >= 0x80) {
            out_.push_back(static_cast<char>((v & 0x7F) | 0x80));
            v >>= 7;
        }
        out_.push_back(static_cast<char>(v));
    }
    void i(std::int64_t v) {
        u((static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63));
    }
    void f64(double v) { fixed64(std::bit_cast<std::uint64_t>(v)); }
    void str(std::string_view s) {
        u(s.size());
        out_.append(s);
    }
    // Closes the payload with its checksum.
    std::string finish() && {
        fixed64(fnv1a64(std::string_view(out_).substr(header_)));
        return std::move(out_);
    }

  private:
    void fixed64(std::uint64_t v) {
        for (int k = 0; k < 8; ++k) {
            out_.push_back(static_cast<char>(v >> (8 * k)));
        }
    }
    std::string out_;
    std::size_t header_ = 0;
};

// Sticky failure: after the first bad read every read yields 0 and count() yields 0, so a
// decoder runs to its end without branching on every field, allocating nothing large, and
// reports the first problem.
class CheckpointReader {
  public:
    // Checks magic, version and checksum; the payload is what lies between.
    CheckpointReader(std::string_view bytes, std::string_view magic, std::uint8_t version,
                     std::string_view what)
        : what_(what) {
        if (bytes.size() < magic.size() + 1 + 8 || bytes.substr(0, magic.size()) != magic) {
            fail(std::string(what) + " checkpoint: not a checkpoint (bad magic or too short)");
            return;
        }
        const auto found = static_cast<std::uint8_t>(bytes[magic.size()]);
        if (found != version) {
            fail(std::string(what) + " checkpoint: format version " + std::to_string(found) +
                 " is not supported (this build reads version " + std::to_string(version) + ")");
            return;
        }
        payload_ = bytes.substr(magic.size() + 1, bytes.size() - magic.size() - 1 - 8);
        std::uint64_t stored = 0;
        for (int k = 0; k < 8; ++k) {
            stored |=
                static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[bytes.size() - 8 + k]))
                << (8 * k);
        }
        if (stored != fnv1a64(payload_)) {
            fail(std::string(what) + " checkpoint: checksum mismatch (truncated or damaged)");
        }
    }

    bool ok() const { return error_.empty(); }
    const std::string& error() const { return error_; }
    void fail(std::string message) {
        if (error_.empty()) {
            error_ = std::move(message);
            payload_ = {};
            pos_ = 0;
        }
    }
    // A structural problem found by the decoder (a reference out of range, ...).
    void invalid(std::string_view why) {
        fail(what_ + " checkpoint: invalid state: " + std::string(why));
    }
    std::size_t remaining() const { return payload_.size() - pos_; }
    bool at_end() const { return ok() && pos_ == payload_.size(); }

    std::uint64_t u() {
        std::uint64_t v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (pos_ >= payload_.size()) {
                truncated();
                return 0;
            }
            const auto byte = static_cast<unsigned char>(payload_[pos_++]);
            v |= static_cast<std::uint64_t>(byte & 0x7F) << shift;
            if ((byte & 0x80) == 0) {
                return v;
            }
        }
        invalid("varint longer than 10 bytes");
        return 0;
    }
    std::uint32_t u32() {
        const auto v = u();
        if (v > 0xFFFFFFFFULL) {
            invalid("value out of range");
            return 0;
        }
        return static_cast<std::uint32_t>(v);
    }
    std::uint8_t u8(std::uint8_t max) {
        const auto v = u();
        if (v > max) {
            invalid("enumeration value out of range");
            return 0;
        }
        return static_cast<std::uint8_t>(v);
    }
    bool flag() { return u8(1) != 0; }
    std::int64_t i() {
        const auto v = u();
        return static_cast<std::int64_t>((v >> 1) ^ (~(v & 1) + 1));
    }
    double f64() {
        if (remaining() < 8) {
            truncated();
            return 0;
        }
        std::uint64_t v = 0;
        for (int k = 0; k < 8; ++k) {
            v |= static_cast<std::uint64_t>(static_cast<unsigned char>(payload_[pos_++]))
                 << (8 * k);
        }
        return std::bit_cast<double>(v);
    }
    std::string str() {
        const auto n = u();
        if (n > remaining()) {
            truncated();
            return {};
        }
        std::string s(payload_.substr(pos_, static_cast<std::size_t>(n)));
        pos_ += static_cast<std::size_t>(n);
        return s;
    }
    // An element count, each element taking at least `min_bytes`: a count the rest of the
    // input cannot hold is rejected before anything is allocated for it.
    std::size_t count(std::size_t min_bytes) {
        const auto n = u();
        if (n > remaining() / (min_bytes == 0 ? 1 : min_bytes)) {
            truncated();
            return 0;
        }
        return static_cast<std::size_t>(n);
    }

  private:
    void truncated() { fail(what_ + " checkpoint: truncated or damaged (read past its end)"); }
    std::string_view payload_;
    std::size_t pos_ = 0;
    std::string what_;
    std::string error_;
};

} // namespace bulkhead::analyzer::detail
