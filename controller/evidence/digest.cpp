#include "controller/evidence/digest.hpp"

#include <openssl/evp.h>

#include <stdexcept>

namespace bulkhead::evidence {

namespace {
constexpr char kHexDigits[] = "0123456789abcdef";

int hex_value(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}
}  // namespace

std::string to_hex(std::span<const std::uint8_t> bytes) {
    std::string text(bytes.size() * 2, '0');
    for (std::size_t i = 0; i < bytes.size(); ++i) {
        text[2 * i] = kHexDigits[bytes[i] >> 4];
        text[2 * i + 1] = kHexDigits[bytes[i] & 0x0f];
    }
    return text;
}

bool from_hex(std::string_view text, std::span<std::uint8_t> out) {
    if (text.size() != out.size() * 2) {
        return false;
    }
    for (std::size_t i = 0; i < out.size(); ++i) {
        const int high = hex_value(text[2 * i]);
        const int low = hex_value(text[2 * i + 1]);
        if (high < 0 || low < 0) {
            return false;
        }
        out[i] = static_cast<std::uint8_t>((high << 4) | low);
    }
    return true;
}

std::optional<Digest> digest_from_hex(std::string_view text) {
    Digest digest{};
    if (!from_hex(text, digest)) {
        return std::nullopt;
    }
    return digest;
}

struct Sha256::Context {
    EVP_MD_CTX* context = EVP_MD_CTX_new();
    ~Context() { EVP_MD_CTX_free(context); }
};

Sha256::Sha256() : context_(std::make_unique<Context>()) {
    if (context_->context == nullptr) {
        throw std::bad_alloc();
    }
    begin();
}

Sha256::~Sha256() = default;
Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;

namespace {
// Fetched once: EVP_sha256() makes OpenSSL 3 fetch the algorithm again on every
// EVP_DigestInit_ex (a lock and a reference count), about three times the cost of hashing a
// drop event's record. Kept for the process's life.
const EVP_MD* sha256_algorithm() {
    static EVP_MD* const algorithm = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    return algorithm != nullptr ? algorithm : EVP_sha256();
}
}  // namespace

Sha256& Sha256::begin() {
    // SHA-256 is always available in libcrypto; a failure here is memory exhaustion.
    if (EVP_DigestInit_ex(context_->context, sha256_algorithm(), nullptr) != 1) {
        throw std::runtime_error("SHA-256: EVP_DigestInit_ex failed");
    }
    return *this;
}

Sha256& Sha256::add(std::string_view bytes) {
    EVP_DigestUpdate(context_->context, bytes.data(), bytes.size());
    return *this;
}

Sha256& Sha256::add(const Digest& digest) {
    EVP_DigestUpdate(context_->context, digest.data(), digest.size());
    return *this;
}

Sha256& Sha256::add_byte(std::uint8_t byte) {
    EVP_DigestUpdate(context_->context, &byte, 1);
    return *this;
}

Sha256& Sha256::add_u64(std::uint64_t value) {
    std::array<std::uint8_t, 8> bytes{};
    for (int i = 7; i >= 0; --i) {
        bytes[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(value & 0xff);
        value >>= 8;
    }
    EVP_DigestUpdate(context_->context, bytes.data(), bytes.size());
    return *this;
}

Digest Sha256::finish() {
    Digest digest{};
    unsigned int length = 0;
    EVP_DigestFinal_ex(context_->context, digest.data(), &length);
    begin();
    return digest;
}

Digest Sha256::of(std::string_view bytes) {
    Sha256 hasher;
    return hasher.add(bytes).finish();
}

}  // namespace bulkhead::evidence
