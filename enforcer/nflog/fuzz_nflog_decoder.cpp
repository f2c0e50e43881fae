// libFuzzer target for the NFLOG wire decoder (nflog_wire.hpp): whatever the bytes, the
// decoder returns (a record or a named anomaly), never crashes, never reads outside its
// input, and every view it hands out lies inside the input.
//
// Compiled to nothing unless BULKHEAD_FUZZ_TARGET is defined: this folder's *.cpp are
// globbed into the bulkhead_nflog library, which must not contain LLVMFuzzerTestOneInput.
// The fuzz build (CMake option BULKHEAD_FUZZ, see README.md) compiles this file and
// nflog_wire.cpp with clang++ -fsanitize=fuzzer,address,undefined -DBULKHEAD_FUZZ_TARGET.
// Seeds: tests/vectors/nflog/*.bin. The decoder side of this file includes no <expected>:
// clang 14 cannot compile libstdc++ 12's std::expected (it needs C++20 concepts P0848).
#ifdef BULKHEAD_FUZZ_TARGET

#include "enforcer/nflog/nflog_wire.hpp"

#include <cstddef>
#include <cstdint>
#include <span>

namespace {

using bulkhead::nflog::RawNflogRecord;

void require(bool condition) {
    if (!condition) {
        __builtin_trap();
    }
}

template <typename T>
void require_inside(std::span<const T> view, std::span<const std::byte> input) {
    if (view.empty())
        return;
    const auto* begin = reinterpret_cast<const std::byte*>(view.data());
    require(begin >= input.data() && begin + view.size_bytes() <= input.data() + input.size());
}

void check(const RawNflogRecord& r, std::span<const std::byte> input) {
    require_inside(r.payload, input);
    require_inside(std::span<const char>(r.prefix.data(), r.prefix.size()), input);
    require(r.ip_version == 0 || r.ip_version == 4 || r.ip_version == 6);
    require(!r.has_tcp_flags || r.protocol == 6);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data), size);
    RawNflogRecord record;

    // One message, as decode_nflog_message() sees it.
    (void)bulkhead::nflog::decode_nflog_wire(input, record);
    check(record, input);

    // A datagram, as NflogStream walks it.
    (void)bulkhead::nflog::for_each_netlink_message(
        input, [&](const bulkhead::nflog::NetlinkMessageView& m) {
            require_inside(m.bytes, input);
            (void)bulkhead::nflog::decode_nflog_wire(m.bytes, record);
            check(record, input);
        });

    // A bare copied packet, both ways.
    for (std::uint8_t version : {4, 6}) {
        RawNflogRecord packet;
        (void)bulkhead::nflog::decode_network_header(input, version, packet);
        check(packet, input);
    }
    return 0;
}

#endif // BULKHEAD_FUZZ_TARGET
