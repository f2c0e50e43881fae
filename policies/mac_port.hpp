// A port bound by MAC. On a real hypervisor a desktop's tap device is named at boot
// (vnet17, tap3f…) and renamed when a non-persistent desktop is refreshed; its NIC's MAC
// stays. An inventory may therefore name a port-mode workload by its `mac` alone. The
// compiled ruleset then carries a stand-in interface name that encodes the MAC, and the
// enforcer replaces it with the port's current name before anything reaches the kernel
// (enforcer/ports/port_binder.hpp). Pure: no I/O.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace bulkhead::policy {

// "m:525400123456" for "52:54:00:12:34:56" (a MAC as normalize_mac writes it).
// Why this shape: ':' is refused by Linux in an interface name, so the stand-in can never
// be a real port; 14 characters fit IFNAMSIZ, so the controller's ruleset still loads with
// `nft -f` (where it matches nothing) and passes every check an interface name passes.
std::string mac_port_name(std::string_view normalized_mac);

// The MAC ("52:54:00:12:34:56") a stand-in names, or nothing for any other name.
std::optional<std::string> mac_of_port_name(std::string_view interface);

}  // namespace bulkhead::policy
