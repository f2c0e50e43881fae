#include "controller/core/access_policy.hpp"

#include <openssl/evp.h>

#include <array>

namespace bulkhead::controller {

bool role_allows(Role role, Permission permission) {
    switch (role) {
    case Role::Admin:
        return permission != Permission::EnforcerChannel;
    case Role::Soc:
        return permission == Permission::Read || permission == Permission::ReadAudit ||
               permission == Permission::HandleIncidents || permission == Permission::Quarantine;
    case Role::Automation:
        return permission == Permission::Read || permission == Permission::Quarantine;
    case Role::Enforcer:
        return permission == Permission::EnforcerChannel;
    }
    return false;
}

std::string_view to_string(Permission permission) {
    switch (permission) {
    case Permission::Read: return "read";
    case Permission::ReadAudit: return "read-audit";
    case Permission::WritePolicy: return "write-policy";
    case Permission::WriteInventory: return "write-inventory";
    case Permission::HandleIncidents: return "handle-incidents";
    case Permission::Quarantine: return "quarantine";
    case Permission::EnforcerChannel: return "enforcer-channel";
    }
    return "?";
}

std::string sha256_hex(std::string_view text) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int length = 0;
    EVP_Digest(text.data(), text.size(), digest.data(), &length, EVP_sha256(), nullptr);
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(length * 2);
    for (unsigned int i = 0; i < length; ++i) {
        out.push_back(hex[digest[i] >> 4]);
        out.push_back(hex[digest[i] & 0xf]);
    }
    return out;
}

}  // namespace bulkhead::controller
