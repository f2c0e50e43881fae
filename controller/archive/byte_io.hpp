// Little-endian integers, LEB128 varints and zig-zag signs, written to a std::string and read
// back with a bounds check before every advance: an archive segment is read years after it
// was written, possibly damaged, so every decoder step may fail and says so instead of
// reading past its buffer. Internal to bulkhead_archive.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace bulkhead::archive::bytes {

inline std::uint64_t zigzag(std::int64_t value) {
    return (static_cast<std::uint64_t>(value) << 1) ^ static_cast<std::uint64_t>(value >> 63);
}
inline std::int64_t unzigzag(std::uint64_t value) {
    return static_cast<std::int64_t>(value >> 1) ^ -static_cast<std::int64_t>(value & 1);
}

inline void put_varint(std::string& out, std::uint64_t value) {
    char buffer[10];
    std::size_t n = 0;
    while (value >= 0x80) {
        buffer[n++] = static_cast<char>((value & 0x7f) | 0x80);
        value >>= 7;
    }
    buffer[n++] = static_cast<char>(value);
    out.append(buffer, n);
}
inline void put_svarint(std::string& out, std::int64_t value) { put_varint(out, zigzag(value)); }

inline void put_u8(std::string& out, std::uint8_t value) { out += static_cast<char>(value); }
inline void put_le(std::string& out, std::uint64_t value, std::size_t width) {
    for (std::size_t i = 0; i < width; ++i) {
        out += static_cast<char>((value >> (8 * i)) & 0xff);
    }
}
inline void put_u16(std::string& out, std::uint16_t value) { put_le(out, value, 2); }
inline void put_u32(std::string& out, std::uint32_t value) { put_le(out, value, 4); }
inline void put_u64(std::string& out, std::uint64_t value) { put_le(out, value, 8); }
inline void put_i64(std::string& out, std::int64_t value) { put_le(out, static_cast<std::uint64_t>(value), 8); }
// A varint length, then the bytes.
inline void put_bytes(std::string& out, std::string_view bytes) {
    put_varint(out, bytes.size());
    out += bytes;
}

// Reads forward through a byte range. Every getter returns false (and leaves the reader
// failed) instead of reading past the end; callers check once per structure with ok().
class Reader {
public:
    Reader() = default;
    explicit Reader(std::string_view bytes) : data_(bytes.data()), end_(bytes.data() + bytes.size()) {}

    bool ok() const { return ok_; }
    bool at_end() const { return data_ == end_; }
    std::size_t remaining() const { return static_cast<std::size_t>(end_ - data_); }
    std::size_t position_from(const char* start) const { return static_cast<std::size_t>(data_ - start); }

    bool varint(std::uint64_t& value) {
        std::uint64_t result = 0;
        for (unsigned shift = 0; shift < 64; shift += 7) {
            if (data_ == end_) {
                return fail();
            }
            const auto byte = static_cast<std::uint8_t>(*data_++);
            result |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
            if ((byte & 0x80) == 0) {
                value = result;
                return true;
            }
        }
        return fail();  // more than ten bytes: not a varint we wrote
    }
    bool svarint(std::int64_t& value) {
        std::uint64_t raw = 0;
        if (!varint(raw)) {
            return false;
        }
        value = unzigzag(raw);
        return true;
    }
    bool le(std::uint64_t& value, std::size_t width) {
        if (remaining() < width) {
            return fail();
        }
        value = 0;
        for (std::size_t i = 0; i < width; ++i) {
            value |= static_cast<std::uint64_t>(static_cast<std::uint8_t>(data_[i])) << (8 * i);
        }
        data_ += width;
        return true;
    }
    bool u8(std::uint8_t& value) {
        std::uint64_t raw = 0;
        if (!le(raw, 1)) {
            return false;
        }
        value = static_cast<std::uint8_t>(raw);
        return true;
    }
    bool u16(std::uint16_t& value) {
        std::uint64_t raw = 0;
        if (!le(raw, 2)) {
            return false;
        }
        value = static_cast<std::uint16_t>(raw);
        return true;
    }
    bool u32(std::uint32_t& value) {
        std::uint64_t raw = 0;
        if (!le(raw, 4)) {
            return false;
        }
        value = static_cast<std::uint32_t>(raw);
        return true;
    }
    bool u64(std::uint64_t& value) { return le(value, 8); }
    bool i64(std::int64_t& value) {
        std::uint64_t raw = 0;
        if (!le(raw, 8)) {
            return false;
        }
        value = static_cast<std::int64_t>(raw);
        return true;
    }
    bool fixed(std::size_t size, std::string_view& out) {
        if (remaining() < size) {
            return fail();
        }
        out = std::string_view(data_, size);
        data_ += size;
        return true;
    }
    template <std::size_t N>
    bool array(std::array<std::uint8_t, N>& out) {
        if (remaining() < N) {
            return fail();
        }
        std::memcpy(out.data(), data_, N);
        data_ += N;
        return true;
    }
    // A varint length, then that many bytes.
    bool bytes(std::string_view& out) {
        std::uint64_t size = 0;
        if (!varint(size) || size > remaining()) {
            return fail();
        }
        return fixed(static_cast<std::size_t>(size), out);
    }

private:
    bool fail() {
        ok_ = false;
        data_ = end_;
        return false;
    }
    const char* data_ = nullptr;
    const char* end_ = nullptr;
    bool ok_ = true;
};

}  // namespace bulkhead::archive::bytes
