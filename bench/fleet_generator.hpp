// A deterministic, synthetic VDI fleet: a Policy and an Inventory as model values, for the
// benchmarks (and for tests that need a large realistic input). Pure: no I/O, no clock, no
// global state; the same FleetSpec always yields the same fleet, on every platform (the
// generator uses its own PRNG and its own bounded-integer mapping, not <random>'s
// implementation-defined distributions).
//
// Shape of the fleet (see docs/benchmarks.md):
//   * hypervisors are grouped into department pools: hypervisor h hosts the VDIs of
//     department h % departments (VDI brokers place a pool's desktops on its own cluster),
//     so the diversity of policy classes on one hypervisor depends on the department's
//     teams and personas, never on the size of the fleet;
//   * every VDI carries role=vdi, dept, team, persona (standard / developer / contractor),
//     a port attachment "vnet<k>" and one IPv4 and one IPv6 address;
//   * every `admin_every`-th hypervisor also hosts privileged admin terminals;
//   * servers (AD, file servers, app servers, ...) are unmanaged workloads (no enforcer):
//     rules name them through CIDR, label and workload-id segments;
//   * the policy has exactly `segments` segments and `rules` rules over ~30 services: the
//     VDI baseline (AD, DNS, proxy, EDR, ...), an explicit "no VDI-to-VDI" deny guard,
//     department file/app servers, admins reaching VDIs on RDP, contractor denies, and
//     per-team access to application servers.
#pragma once

#include "policies/policy_model.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bulkhead::bench {

struct FleetSpec {
    std::size_t vdis = 10'000;
    std::size_t hypervisors = 50;
    std::size_t segments = 200;  // exact
    std::size_t rules = 1'000;   // exact
    std::size_t departments = 12;
    std::size_t teams = 96;      // spread over the departments
    std::size_t admin_every = 5; // every n-th hypervisor hosts admin terminals (0: none)
    // The explicit "no-vdi-to-vdi" deny rule (the examples/vdi-pool guard). Only for
    // analysis: the benchmark figures always use the default.
    bool vdi_deny_guard = true;
    std::uint64_t seed = 0x0b01'6ead'5eed'0001ULL;
};

struct Fleet {
    policy::Policy policy;
    policy::Inventory inventory;
};

// Throws std::invalid_argument on an impossible spec (e.g. more fixed segments than
// `segments`, zero hypervisors).
Fleet generate_fleet(const FleetSpec& spec);

// One more VDI on `enforcer` with the labels (and so the policy class) of the existing
// workload `like`: a fresh id, addresses, MAC and interface that collide with nothing
// generate_fleet made. Throws std::invalid_argument if `like` is unknown or `enforcer` is
// not in the inventory.
policy::Workload clone_vdi(const Fleet& fleet, std::string_view like, std::string_view enforcer);

// Small deterministic PRNG (SplitMix64), exposed for the benchmarks' own sampling.
class Prng {
public:
    explicit Prng(std::uint64_t seed) : state_(seed) {}
    std::uint64_t next();
    // Uniform in [0, bound) (bound > 0), by rejection: no modulo bias, portable.
    std::uint64_t below(std::uint64_t bound);
    bool chance(std::uint32_t percent) { return below(100) < percent; }

private:
    std::uint64_t state_;
};

}  // namespace bulkhead::bench
