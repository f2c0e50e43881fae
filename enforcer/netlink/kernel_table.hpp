// Reading table `inet bulkhead` back from the kernel and comparing it with the IR (drift).
// Internal to bulkhead_nft; the kernel tests use it as a byte-level oracle too.
#pragma once

#include "enforcer/netlink/netlink_io.hpp"
#include "enforcer/netlink/nft_encoding.hpp"
#include "enforcer/netlink/ruleset_backend.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace bulkhead::enforcer::detail {

struct KernelSet {
    std::string name;
    std::uint32_t flags = 0;
    std::uint32_t key_type = 0;
    std::uint32_t key_len = 0;
    std::uint32_t data_type = 0;
    std::uint32_t data_len = 0;
    std::uint32_t desc_size = 0;
    std::vector<std::uint8_t> concat_lengths;
    Bytes userdata;
    std::vector<RawElement> elements;
    std::vector<Bytes> element_userdata;  // parallel to elements (oracle comparisons)
};

struct KernelRule {
    std::uint64_t handle = 0;
    std::optional<std::uint64_t> fingerprint;
    std::string expressions;  // libnftnl's rendering, one "[ ... ]" per expression
    Bytes userdata;
};

struct KernelChain {
    std::string name;
    bool base = false;
    std::uint32_t hooknum = 0;
    std::int32_t priority = 0;
    std::string type;
    std::uint32_t policy = 0;
    std::vector<KernelRule> rules;
};

struct KernelTable {
    bool exists = false;
    std::uint32_t generation = 0;
    std::vector<KernelSet> sets;      // anonymous sets included (flag NFT_SET_ANONYMOUS)
    std::vector<KernelChain> chains;  // kernel order
};

// A consistent snapshot: the dumps are retried when the generation moves under them.
std::expected<KernelTable, KernelError> read_table(NetlinkSocket& socket, std::uint32_t& seq);

// Pure: what differs between the kernel's table and `desired`.
DriftReport compare(const KernelTable& kernel, const ruleset::Ruleset& desired);

}  // namespace bulkhead::enforcer::detail
