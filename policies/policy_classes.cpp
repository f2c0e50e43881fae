#include "policies/policy_classes.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string_view>

namespace bulkhead::policy {

std::uint32_t fnv1a32(std::string_view text) {
    std::uint32_t h = 2166136261u;
    for (unsigned char c : text) {
        h ^= c;
        h *= 16777619u;
    }
    return h;
}

std::string hex(std::uint64_t value, int digits) {
    char buffer[20];
    std::snprintf(buffer, sizeof buffer, "%0*llx", digits, static_cast<unsigned long long>(value));
    return buffer;
}

bool selector_matches(const Selector& selector, const Workload& w) {
    if (std::find(selector.workloads.begin(), selector.workloads.end(), w.id) != selector.workloads.end()) {
        return true;
    }
    if (!selector.labels.empty()) {
        const bool all = std::all_of(selector.labels.begin(), selector.labels.end(), [&](const auto& kv) {
            auto it = w.labels.find(kv.first);
            return it != w.labels.end() &&
                   std::find(kv.second.begin(), kv.second.end(), it->second) != kv.second.end();
        });
        if (all) {
            return true;
        }
    }
    for (const auto& cidr : selector.cidrs) {
        for (const auto& a : w.addresses) {
            if (cidr.contains(a)) {
                return true;
            }
        }
    }
    return false;
}

std::string PolicyClassNamer::name(const std::vector<std::size_t>& segments, const Policy& policy) {
    std::string key;
    for (auto s : segments) {
        key += policy.segments[s].name;
        key += '\n';
    }
    std::string name = "c" + hex(fnv1a32(key), 8);
    if (auto clash = taken_.find(name); clash != taken_.end() && clash->second != segments) {
        std::uint64_t wide = fnv1a32(key);
        wide = (wide << 32) | fnv1a32(key + "#");
        name = "c" + hex(wide, 16);
    }
    taken_.emplace(name, segments);
    return name;
}

}  // namespace bulkhead::policy
