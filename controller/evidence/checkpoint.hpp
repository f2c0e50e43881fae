// Signed checkpoints: the heads of every evidence stream at a moment, signed with the
// controller's Ed25519 key and sent away (to the SIEM, to a file on another disk). An
// attacker who controls the database can rebuild a consistent chain, but not one that
// agrees with the copies it cannot reach: the verifier checks the chain against them.
#pragma once

#include "controller/evidence/hash_chain.hpp"

#include <array>
#include <cstdint>
#include <expected>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace bulkhead::evidence {

using PublicKey = std::array<std::uint8_t, 32>;
using Signature = std::array<std::uint8_t, 64>;

struct Checkpoint {
    std::string controller;  // which controller signed it (printable, no spaces)
    std::int64_t at_ms = 0;  // wall clock when the heads were read
    std::vector<std::pair<Stream, ChainHead>> heads;
};

// The exact bytes that are signed: a versioned line-per-field text in a fixed stream
// order, so that re-encoding the JSON cannot change what the signature covers.
std::string signed_bytes(const Checkpoint& checkpoint);

// The controller's Ed25519 key. Reading and writing the key file (and its permissions)
// is the caller's business; this holds the key and signs.
class SigningKey {
public:
    static std::expected<SigningKey, std::string> generate();
    static std::expected<SigningKey, std::string> from_pem(std::string_view pem);
    ~SigningKey();
    SigningKey(SigningKey&&) noexcept;
    SigningKey& operator=(SigningKey&&) noexcept;

    std::string private_pem() const;
    PublicKey public_key() const;
    Signature sign(std::string_view bytes) const;

private:
    struct Key;
    explicit SigningKey(std::unique_ptr<Key> key);
    std::unique_ptr<Key> key_;
};

// The first 16 hex digits of SHA-256 of the public key: names the key in a checkpoint.
std::string key_id(const PublicKey& key);
bool signature_valid(const PublicKey& key, std::string_view bytes, const Signature& signature);

struct SignedCheckpoint {
    Checkpoint checkpoint;
    std::string key_id;
    Signature signature{};
};

SignedCheckpoint sign_checkpoint(Checkpoint checkpoint, const SigningKey& key);
bool checkpoint_valid(const SignedCheckpoint& signed_checkpoint, const PublicKey& key);

// One JSON line ({"type":"bulkhead.checkpoint","version":1,...}) for the checkpoint file
// and the SIEM; the reader names the member (JSON pointer) of anything malformed.
std::string to_json_line(const SignedCheckpoint& signed_checkpoint);
std::expected<SignedCheckpoint, std::string> checkpoint_from_json_line(std::string_view line);

}  // namespace bulkhead::evidence
