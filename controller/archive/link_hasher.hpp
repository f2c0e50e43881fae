// SHA-256 for the archive's hot loops (recomputing a segment's chain links and Merkle tree),
// with the digest fetched from OpenSSL once. evidence::Sha256 calls EVP_DigestInit_ex with
// EVP_sha256(), which in OpenSSL 3 fetches the algorithm again on every record (a read-write
// lock and a reference count per call): about three times the cost of the hashing itself on
// archived drop events. The bytes hashed are evidence::link_hash's exactly; a unit test holds
// the two equal. (Better fixed in evidence::Sha256 itself; see README.md.)
#pragma once

#include "controller/evidence/hash_chain.hpp"

#include <memory>
#include <string_view>

namespace bulkhead::archive {

class LinkHasher {
public:
    LinkHasher();
    ~LinkHasher();
    LinkHasher(const LinkHasher&) = delete;
    LinkHasher& operator=(const LinkHasher&) = delete;

    // evidence::link_hash
    evidence::Digest link(evidence::Stream stream, std::uint64_t sequence, const evidence::Digest& previous,
                          std::string_view record);
    // RFC 6962 leaf (0x00 || data) and node (0x01 || left || right) hashes
    evidence::Digest leaf(const evidence::Digest& data);
    evidence::Digest node(const evidence::Digest& left, const evidence::Digest& right);

private:
    struct Context;
    std::unique_ptr<Context> context_;
};

}  // namespace bulkhead::archive
