// Helpers for the analyzer's unit tests: drop records in a line, findings as values.
#pragma once

#include "controller/analyzer/analyzer.hpp"
#include "controller/analyzer/drop_record.hpp"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace bulkhead::test::analyzer {

using namespace bulkhead::analyzer;

inline constexpr std::int64_t S = 1'000'000'000;
inline constexpr std::int64_t T0 = 1'790'000'000LL * S;

struct Source {
    std::string enforcer = "hv1";
    std::string workload = "vdi-001";
    std::string user = "kimura";
    std::vector<std::string> segments{"role=vdi"};
    std::string address = "10.1.0.1";
};

inline Source admin() {
    return {"hv9", "adm-01", "yamada", {"role=admin-terminal"}, "10.0.9.1"};
}
inline Source server(std::string id = "srv-01", std::string address = "10.0.5.1") {
    return {"hv3", std::move(id), "", {"role=server"}, std::move(address)};
}

inline DropRecord drop(const Source& s, std::string destination, std::uint16_t port,
                       std::int64_t time_ns, std::uint8_t protocol = 6) {
    DropRecord r;
    r.time_ns = time_ns;
    r.enforcer = s.enforcer;
    r.workload = s.workload;
    r.user = s.user;
    r.source_segments = s.segments;
    r.address = s.address;
    r.port = s.workload.empty() ? "tap0" : s.workload;
    r.destination = std::move(destination);
    r.protocol = protocol;
    r.dport = port;
    return r;
}

inline std::vector<Finding> feed(Analyzer& a, const DropRecord& r) {
    auto found = a.observe(r.view());
    return {found.begin(), found.end()};
}

// Feeds all; returns every finding raised.
inline std::vector<Finding> feed_all(Analyzer& a, const std::vector<DropRecord>& records) {
    std::vector<Finding> all;
    for (const auto& r : records) {
        auto found = a.observe(r.view());
        all.insert(all.end(), found.begin(), found.end());
    }
    return all;
}

inline std::size_t count_rule(const std::vector<Finding>& findings, Rule rule) {
    return static_cast<std::size_t>(std::count_if(
        findings.begin(), findings.end(), [&](const Finding& f) { return f.rule == rule; }));
}

inline const Finding* first_of(const std::vector<Finding>& findings, Rule rule) {
    auto it = std::find_if(findings.begin(), findings.end(),
                           [&](const Finding& f) { return f.rule == rule; });
    return it == findings.end() ? nullptr : &*it;
}

inline std::string host(int i) {
    return "10.0.1." + std::to_string(i);
}

} // namespace bulkhead::test::analyzer
