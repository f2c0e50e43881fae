#include "controller/evidence/merkle_tree.hpp"

#include <bit>

namespace bulkhead::evidence {

namespace {

// The largest power of two strictly below n (n >= 2).
std::size_t split_point(std::size_t n) { return std::bit_floor(n - 1); }

Digest subtree_root(Sha256& hasher, std::span<const Digest> leaves) {
    if (leaves.size() == 1) {
        return merkle_leaf_hash(hasher, leaves[0]);
    }
    const std::size_t k = split_point(leaves.size());
    const Digest left = subtree_root(hasher, leaves.first(k));
    const Digest right = subtree_root(hasher, leaves.subspan(k));
    return merkle_node_hash(hasher, left, right);
}

void audit_path(Sha256& hasher, std::span<const Digest> leaves, std::size_t index, std::vector<Digest>& path) {
    if (leaves.size() <= 1) {
        return;
    }
    const std::size_t k = split_point(leaves.size());
    if (index < k) {
        audit_path(hasher, leaves.first(k), index, path);
        path.push_back(subtree_root(hasher, leaves.subspan(k)));
    } else {
        audit_path(hasher, leaves.subspan(k), index - k, path);
        path.push_back(subtree_root(hasher, leaves.first(k)));
    }
}

// Walks the same splits as audit_path, from the root down, then folds the path back up.
bool fold_path(Sha256& hasher, const Digest& leaf, std::size_t index, std::size_t count,
               std::span<const Digest>& path, Digest& out) {
    if (count == 1) {
        out = merkle_leaf_hash(hasher, leaf);
        return true;
    }
    const std::size_t k = split_point(count);
    Digest below{};
    const bool left_side = index < k;
    if (!fold_path(hasher, leaf, left_side ? index : index - k, left_side ? k : count - k, path, below)) {
        return false;
    }
    if (path.empty()) {
        return false;
    }
    const Digest sibling = path.front();
    path = path.subspan(1);
    out = left_side ? merkle_node_hash(hasher, below, sibling) : merkle_node_hash(hasher, sibling, below);
    return true;
}

}  // namespace

Digest merkle_leaf_hash(Sha256& hasher, const Digest& link_hash) {
    return hasher.begin().add_byte(0x00).add(link_hash).finish();
}

Digest merkle_node_hash(Sha256& hasher, const Digest& left, const Digest& right) {
    return hasher.begin().add_byte(0x01).add(left).add(right).finish();
}

Digest merkle_root(std::span<const Digest> link_hashes) {
    Sha256 hasher;
    if (link_hashes.empty()) {
        return hasher.finish();
    }
    return subtree_root(hasher, link_hashes);
}

std::vector<Digest> merkle_audit_path(std::span<const Digest> link_hashes, std::size_t index) {
    std::vector<Digest> path;
    if (index < link_hashes.size()) {
        Sha256 hasher;
        audit_path(hasher, link_hashes, index, path);
    }
    return path;
}

bool merkle_path_leads_to(const Digest& link_hash, std::size_t index, std::size_t count,
                          std::span<const Digest> path, const Digest& root) {
    if (count == 0 || index >= count) {
        return false;
    }
    Sha256 hasher;
    Digest computed{};
    std::span<const Digest> rest = path;
    return fold_path(hasher, link_hash, index, count, rest, computed) && rest.empty() && computed == root;
}

}  // namespace bulkhead::evidence
