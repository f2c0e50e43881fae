#include "controller/archive/link_hasher.hpp"

#include <openssl/evp.h>

#include <stdexcept>

namespace bulkhead::archive {

struct LinkHasher::Context {
    EVP_MD* sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    EVP_MD_CTX* context = EVP_MD_CTX_new();
    ~Context() {
        EVP_MD_CTX_free(context);
        EVP_MD_free(sha256);
    }
    void begin() {
        if (EVP_DigestInit_ex2(context, sha256, nullptr) != 1) {
            throw std::runtime_error("SHA-256: EVP_DigestInit_ex2 failed");  // out of memory: fatal
        }
    }
    void add(const void* data, std::size_t size) { EVP_DigestUpdate(context, data, size); }
    evidence::Digest finish() {
        evidence::Digest out{};
        unsigned int length = 0;
        EVP_DigestFinal_ex(context, out.data(), &length);
        return out;
    }
};

LinkHasher::LinkHasher() : context_(std::make_unique<Context>()) {
    if (context_->sha256 == nullptr || context_->context == nullptr) {
        throw std::runtime_error("SHA-256 is not available from OpenSSL");
    }
}
LinkHasher::~LinkHasher() = default;

evidence::Digest LinkHasher::link(evidence::Stream stream, std::uint64_t sequence, const evidence::Digest& previous,
                                  std::string_view record) {
    static constexpr std::string_view kDomain = "bulkhead-evidence-v1";
    const auto name = evidence::to_string(stream);
    unsigned char sequence_bytes[8];
    for (int i = 0; i < 8; ++i) {
        sequence_bytes[i] = static_cast<unsigned char>(sequence >> (56 - 8 * i));
    }
    const unsigned char zero = 0;
    auto& c = *context_;
    c.begin();
    c.add(kDomain.data(), kDomain.size());
    c.add(&zero, 1);
    c.add(name.data(), name.size());
    c.add(&zero, 1);
    c.add(sequence_bytes, sizeof sequence_bytes);
    c.add(previous.data(), previous.size());
    c.add(record.data(), record.size());
    return c.finish();
}

evidence::Digest LinkHasher::leaf(const evidence::Digest& data) {
    const unsigned char tag = 0x00;
    auto& c = *context_;
    c.begin();
    c.add(&tag, 1);
    c.add(data.data(), data.size());
    return c.finish();
}

evidence::Digest LinkHasher::node(const evidence::Digest& left, const evidence::Digest& right) {
    const unsigned char tag = 0x01;
    auto& c = *context_;
    c.begin();
    c.add(&tag, 1);
    c.add(left.data(), left.size());
    c.add(right.data(), right.size());
    return c.finish();
}

}  // namespace bulkhead::archive
