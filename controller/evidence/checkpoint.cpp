#include "controller/evidence/checkpoint.hpp"

#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <algorithm>

namespace bulkhead::evidence {

namespace {

constexpr std::string_view kSignedHeader = "bulkhead-checkpoint-v1\n";

bool printable_name(std::string_view name) {
    return !name.empty() && name.size() <= 256 &&
           std::all_of(name.begin(), name.end(), [](char c) { return c > ' ' && c < 0x7f; });
}

struct PkeyDeleter {
    void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyDeleter>;

struct MdContextDeleter {
    void operator()(EVP_MD_CTX* context) const { EVP_MD_CTX_free(context); }
};

struct BioDeleter {
    void operator()(BIO* bio) const { BIO_free(bio); }
};

}  // namespace

std::string signed_bytes(const Checkpoint& checkpoint) {
    std::string text(kSignedHeader);
    text += "controller " + checkpoint.controller + "\n";
    text += "at_ms " + std::to_string(checkpoint.at_ms) + "\n";
    for (auto stream : kStreams) {
        for (const auto& [s, head] : checkpoint.heads) {
            if (s == stream) {
                text += std::string(to_string(s)) + " " + std::to_string(head.sequence) + " " + to_hex(head.hash) + "\n";
            }
        }
    }
    return text;
}

struct SigningKey::Key {
    Pkey key;
};

SigningKey::SigningKey(std::unique_ptr<Key> key) : key_(std::move(key)) {}
SigningKey::~SigningKey() = default;
SigningKey::SigningKey(SigningKey&&) noexcept = default;
SigningKey& SigningKey::operator=(SigningKey&&) noexcept = default;

std::expected<SigningKey, std::string> SigningKey::generate() {
    std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> context(EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr),
                                                                        EVP_PKEY_CTX_free);
    EVP_PKEY* raw = nullptr;
    if (!context || EVP_PKEY_keygen_init(context.get()) != 1 || EVP_PKEY_keygen(context.get(), &raw) != 1) {
        return std::unexpected("cannot generate an Ed25519 key (OpenSSL)");
    }
    return SigningKey(std::make_unique<Key>(Key{Pkey(raw)}));
}

std::expected<SigningKey, std::string> SigningKey::from_pem(std::string_view pem) {
    std::unique_ptr<BIO, BioDeleter> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio) {
        return std::unexpected("out of memory reading the key");
    }
    Pkey key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
    if (!key) {
        return std::unexpected("not a PEM private key");
    }
    if (EVP_PKEY_get_id(key.get()) != EVP_PKEY_ED25519) {
        return std::unexpected("the key is not an Ed25519 key");
    }
    return SigningKey(std::make_unique<Key>(Key{std::move(key)}));
}

std::string SigningKey::private_pem() const {
    std::unique_ptr<BIO, BioDeleter> bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_PrivateKey(bio.get(), key_->key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
        return {};
    }
    char* data = nullptr;
    const long size = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(size));
}

PublicKey SigningKey::public_key() const {
    PublicKey key{};
    std::size_t length = key.size();
    EVP_PKEY_get_raw_public_key(key_->key.get(), key.data(), &length);
    return key;
}

Signature SigningKey::sign(std::string_view bytes) const {
    Signature signature{};
    std::unique_ptr<EVP_MD_CTX, MdContextDeleter> context(EVP_MD_CTX_new());
    std::size_t length = signature.size();
    // Ed25519 signs the message itself (no separate digest): EVP_DigestSign in one call.
    if (!context || EVP_DigestSignInit(context.get(), nullptr, nullptr, nullptr, key_->key.get()) != 1 ||
        EVP_DigestSign(context.get(), signature.data(), &length, reinterpret_cast<const unsigned char*>(bytes.data()),
                       bytes.size()) != 1) {
        // Only memory exhaustion fails here; an all-zero signature never verifies.
        signature.fill(0);
    }
    return signature;
}

std::string key_id(const PublicKey& key) {
    return to_hex(Sha256::of(std::string_view(reinterpret_cast<const char*>(key.data()), key.size()))).substr(0, 16);
}

bool signature_valid(const PublicKey& key, std::string_view bytes, const Signature& signature) {
    Pkey pkey(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, key.data(), key.size()));
    std::unique_ptr<EVP_MD_CTX, MdContextDeleter> context(EVP_MD_CTX_new());
    return pkey && context && EVP_DigestVerifyInit(context.get(), nullptr, nullptr, nullptr, pkey.get()) == 1 &&
           EVP_DigestVerify(context.get(), signature.data(), signature.size(),
                            reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()) == 1;
}

SignedCheckpoint sign_checkpoint(Checkpoint checkpoint, const SigningKey& key) {
    SignedCheckpoint out;
    out.signature = key.sign(signed_bytes(checkpoint));
    out.key_id = key_id(key.public_key());
    out.checkpoint = std::move(checkpoint);
    return out;
}

bool checkpoint_valid(const SignedCheckpoint& signed_checkpoint, const PublicKey& key) {
    return signed_checkpoint.key_id == key_id(key) &&
           signature_valid(key, signed_bytes(signed_checkpoint.checkpoint), signed_checkpoint.signature);
}

std::string to_json_line(const SignedCheckpoint& signed_checkpoint) {
    const auto& c = signed_checkpoint.checkpoint;
    nlohmann::ordered_json heads = nlohmann::ordered_json::object();
    for (auto stream : kStreams) {
        for (const auto& [s, head] : c.heads) {
            if (s == stream) {
                heads[std::string(to_string(s))] = {{"sequence", head.sequence}, {"hash", to_hex(head.hash)}};
            }
        }
    }
    nlohmann::ordered_json line = {{"type", "bulkhead.checkpoint"},
                                   {"version", 1},
                                   {"controller", c.controller},
                                   {"at_ms", c.at_ms},
                                   {"heads", heads},
                                   {"key_id", signed_checkpoint.key_id},
                                   {"signature", to_hex(signed_checkpoint.signature)}};
    return line.dump();
}

std::expected<SignedCheckpoint, std::string> checkpoint_from_json_line(std::string_view line) {
    const auto doc = nlohmann::json::parse(line, nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) {
        return std::unexpected("not a JSON object");
    }
    auto wrong = [](std::string_view pointer, std::string_view why) {
        return std::unexpected(std::string(pointer) + ": " + std::string(why));
    };
    if (doc.value("type", "") != "bulkhead.checkpoint") {
        return wrong("/type", "must be \"bulkhead.checkpoint\"");
    }
    if (!doc.contains("version") || !doc["version"].is_number_integer() || doc["version"].get<int>() != 1) {
        return wrong("/version", "must be 1");
    }
    SignedCheckpoint out;
    if (!doc.contains("controller") || !doc["controller"].is_string() ||
        !printable_name(doc["controller"].get<std::string>())) {
        return wrong("/controller", "must be a printable name without spaces");
    }
    out.checkpoint.controller = doc["controller"].get<std::string>();
    if (!doc.contains("at_ms") || !doc["at_ms"].is_number_integer()) {
        return wrong("/at_ms", "must be an integer (milliseconds since the epoch)");
    }
    out.checkpoint.at_ms = doc["at_ms"].get<std::int64_t>();
    if (!doc.contains("heads") || !doc["heads"].is_object()) {
        return wrong("/heads", "must be an object");
    }
    for (const auto& [name, head] : doc["heads"].items()) {
        const std::string pointer = "/heads/" + name;
        auto stream = stream_from_string(name);
        if (!stream) {
            return wrong(pointer, "is not an evidence stream (drops, incidents, quarantines, audit)");
        }
        if (!head.is_object() || !head.contains("sequence") || !head["sequence"].is_number_unsigned()) {
            return wrong(pointer + "/sequence", "must be a non-negative integer");
        }
        auto hash = head.contains("hash") && head["hash"].is_string()
                        ? digest_from_hex(head["hash"].get<std::string>())
                        : std::nullopt;
        if (!hash) {
            return wrong(pointer + "/hash", "must be 64 hexadecimal digits");
        }
        out.checkpoint.heads.emplace_back(*stream, ChainHead{head["sequence"].get<std::uint64_t>(), *hash});
    }
    if (!doc.contains("key_id") || !doc["key_id"].is_string()) {
        return wrong("/key_id", "must be a string");
    }
    out.key_id = doc["key_id"].get<std::string>();
    if (!doc.contains("signature") || !doc["signature"].is_string() ||
        !from_hex(doc["signature"].get<std::string>(), out.signature)) {
        return wrong("/signature", "must be 128 hexadecimal digits");
    }
    return out;
}

}  // namespace bulkhead::evidence
