// The libvirt adapter: what a hypervisor running libvirt says about its desktops. libvirt
// keeps each running domain's live XML under /run/libvirt/qemu/<name>.xml (a <domstatus>
// around the <domain>; the directory is configurable): its name, UUID, each interface's
// <mac address=…> (the guest's MAC) and <target dev=…> (the tap's current name), and our
// labels in <metadata>:
//
//   <metadata>
//     <bulkhead:labels xmlns:bulkhead="urn:bulkhead:libvirt:1">
//       <bulkhead:label name="role">vdi</bulkhead:label>
//     </bulkhead:labels>
//   </metadata>
//
// parse_domain_xml is pure (text in, values out; libxml2 with network access and entity
// expansion off); read_domain_directory is the edge that reads the files.
#pragma once

#include "enforcer/ports/port_discovery.hpp"

#include <expected>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace bulkhead::enforcer::ports {

inline constexpr std::string_view libvirt_label_namespace = "urn:bulkhead:libvirt:1";
inline constexpr std::string_view default_libvirt_dir = "/run/libvirt/qemu";

// One NIC per <interface> with a <mac>; an error names what is wrong ("no <name>", "bad MAC
// … at interface 2") for a document that is not a libvirt domain.
std::expected<std::vector<DomainNic>, std::string> parse_domain_xml(std::string_view text);

struct DomainDirectory {
    std::vector<DomainNic> nics;
    std::vector<std::string> errors;  // "<file>: <why>", one per unreadable or invalid file
};
// Every *.xml in `directory`; a missing directory is no domains, not an error.
DomainDirectory read_domain_directory(const std::filesystem::path& directory);

}  // namespace bulkhead::enforcer::ports
