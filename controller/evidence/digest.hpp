// Digest: a SHA-256 value, its hexadecimal text, and Sha256, a reusable hasher (one OpenSSL
// context for many records: verifying a year of drop logs hashes millions of short records,
// and allocating a context per record would cost more than the hashing).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace bulkhead::evidence {

using Digest = std::array<std::uint8_t, 32>;

// Lowercase hexadecimal, two digits per byte.
std::string to_hex(std::span<const std::uint8_t> bytes);
// Exactly two hexadecimal digits (either case) per byte of `out`; false otherwise.
bool from_hex(std::string_view text, std::span<std::uint8_t> out);
// Exactly 64 hexadecimal digits; anything else is nullopt.
std::optional<Digest> digest_from_hex(std::string_view text);

class Sha256 {
public:
    Sha256();
    ~Sha256();
    Sha256(const Sha256&) = delete;
    Sha256& operator=(const Sha256&) = delete;
    Sha256(Sha256&&) noexcept;
    Sha256& operator=(Sha256&&) noexcept;

    Sha256& begin();
    Sha256& add(std::string_view bytes);
    Sha256& add(const Digest& digest);
    Sha256& add_byte(std::uint8_t byte);
    Sha256& add_u64(std::uint64_t value);  // big-endian, 8 bytes: no ambiguity between fields
    Digest finish();

    static Digest of(std::string_view bytes);

private:
    struct Context;
    std::unique_ptr<Context> context_;
};

}  // namespace bulkhead::evidence
