// Helpers for the kernel tests: throwaway network namespaces, nft as the oracle,
// normalised listings and byte-level snapshots, and the rulesets the tests load.
#pragma once

#include "policies/policy_model.hpp"
#include "policies/ruleset.hpp"

#include <nlohmann/json.hpp>

#include <functional>
#include <set>
#include <string>

namespace bulkhead::ktest {

// Enters a fresh network namespace (unshare(CLONE_NEWNET)) for the calling thread and
// returns to the original one on destruction; the new namespace, with everything the test
// put in it, disappears with it. Child processes (nft) inherit the current namespace.
class ScopedNetns {
public:
    ScopedNetns();
    ~ScopedNetns();
    ScopedNetns(const ScopedNetns&) = delete;
    ScopedNetns& operator=(const ScopedNetns&) = delete;

private:
    int original_ = -1;
};

// Why the kernel tests cannot run here ("" if they can): not root, no user/net namespace
// support, no nf_tables, no nft binary.
std::string probe_environment();

struct CommandResult {
    int status = -1;
    std::string output;  // stdout and stderr
};
CommandResult run(const std::string& command);
// `nft -f` of a script (written to a temporary file).
CommandResult nft_script(const std::string& script);

// `nft -j list table <table>` with handles dropped, counters zeroed and set elements
// sorted: what must be equal between an nft-built and a netlink-built table.
nlohmann::json listing(const std::string& table = "inet bulkhead");
// `nft -a list table <table>` verbatim (handles included), for tables that must not move.
std::string raw_listing(const std::string& table);

// The table read back over netlink, every attribute nft stores (set flags, key type and
// length, userdata bytes, concat field lengths, element bytes and flags, rule expressions),
// as sorted text. Handles, rule userdata (our fingerprint), anonymous set numbers and
// nft's dangling leading interval-end element are normalised away.
std::string snapshot();

// "" when equal, else the first differing line of each (for CHECK_MESSAGE).
std::string first_difference(const std::string& expected, const std::string& actual);

struct Example {
    policy::Policy policy;
    policy::Inventory inventory;
};
Example load_example(const std::string& name);
ruleset::Ruleset compile(const Example& example, const std::string& enforcer,
                         const std::set<std::string>& quarantined = {});

// The first set of `ruleset` that satisfies `what` (tests name sets by shape, not by the
// compiler's naming); throws if there is none.
const ruleset::SetDefinition& pick_set(const ruleset::Ruleset& ruleset,
                                      const std::function<bool(const ruleset::SetDefinition&)>& what,
                                      const std::string& description);

// A VDI like `like` (same labels, same enforcer) with a new id, addresses and port.
policy::Workload clone_workload(const policy::Workload& like, const std::string& id,
                                const std::string& ipv4, const std::string& ipv6,
                                const std::string& interface);

// Every match kind and set shape the IR allows, by hand (rules and sets nothing compiles
// today: non-interval concatenations, open-ended ranges, interval maps, ValueMatch on
// every numeric field).
ruleset::Ruleset variety_ruleset();

// vdi-pool with `vdis` extra desktops spread over hv1 and hv2: hv1's table then holds
// about 5 elements per desktop (ports in two maps, addresses in four deny sets).
Example big_example(std::size_t vdis);

}  // namespace bulkhead::ktest
