// Merkle roots over a run of chain links, in the shape of RFC 6962 (Certificate
// Transparency): an archive segment is sealed with the root of its records' link hashes,
// so one signature covers the whole segment and a single record can later be proven to
// belong to it without reading the rest.
#pragma once

#include "controller/evidence/digest.hpp"

#include <cstddef>
#include <span>
#include <vector>

namespace bulkhead::evidence {

// RFC 6962 §2.1: leaf = SHA-256(0x00 || leaf data), node = SHA-256(0x01 || left || right),
// the left subtree holding the largest power of two below the count; the empty tree is
// SHA-256 of nothing. The leaf data here is a record's 32-byte link hash.
Digest merkle_root(std::span<const Digest> link_hashes);

// The two RFC 6962 hashes, for builders that add leaves as they come (archive segments).
Digest merkle_leaf_hash(Sha256& hasher, const Digest& link_hash);
Digest merkle_node_hash(Sha256& hasher, const Digest& left, const Digest& right);

// The sibling hashes from leaf `index` up to the root (RFC 6962 §2.1.1 audit path).
std::vector<Digest> merkle_audit_path(std::span<const Digest> link_hashes, std::size_t index);

// Recomputes the root from one leaf and its audit path; true when it equals `root`.
bool merkle_path_leads_to(const Digest& link_hash, std::size_t index, std::size_t count,
                          std::span<const Digest> path, const Digest& root);

}  // namespace bulkhead::evidence
