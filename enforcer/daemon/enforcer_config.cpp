#include "enforcer/daemon/enforcer_config.hpp"

#include "enforcer/ports/port_discovery.hpp"
#include "policies/json_reader.hpp"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

namespace bulkhead::enforcer {

namespace {

using nlohmann::json;
using Apply = std::function<std::expected<void, std::string>(const json&)>;

std::expected<void, std::string> need(bool ok, std::string what) {
    if (ok) {
        return {};
    }
    return std::unexpected(std::move(what));
}

Apply string_member(std::string& field) {
    return [&field](const json& v) -> std::expected<void, std::string> {
        if (!v.is_string()) {
            return std::unexpected("must be a string");
        }
        field = v.get<std::string>();
        return {};
    };
}

Apply integer_member(int& field, std::int64_t min, std::int64_t max) {
    return [&field, min, max](const json& v) -> std::expected<void, std::string> {
        const bool ok = (v.is_number_integer() || v.is_number_unsigned()) && v.get<std::int64_t>() >= min &&
                        v.get<std::int64_t>() <= max;
        if (auto checked = need(ok, "must be an integer from " + std::to_string(min) + " to " + std::to_string(max));
            !checked) {
            return checked;
        }
        field = static_cast<int>(v.get<std::int64_t>());
        return {};
    };
}

}  // namespace

std::expected<void, std::string> apply_enforcer_config(const json& document, std::string_view path,
                                                       const std::set<std::string>& given_flags,
                                                       EnforcerSettings& settings) {
    auto& o = settings.daemon;
    const std::string where(path);
    if (!document.is_object()) {
        return std::unexpected(where + ": the configuration must be a JSON object");
    }
    std::uint64_t spool = o.spool_max_bytes;
    const std::map<std::string, Apply> members{
        {"enforcer_id", string_member(o.enforcer_id)},
        {"ruleset", string_member(o.ruleset_path)},
        {"controller", string_member(o.controller_url)},
        {"ca", string_member(o.ca_file)},
        {"enrollment_token", string_member(o.enrollment_token_file)},
        {"spool_max_bytes",
         [&spool](const json& v) -> std::expected<void, std::string> {
             constexpr std::uint64_t min = 64 * 1024, max = std::uint64_t{1} << 40;
             if (!v.is_number_unsigned() || v.get<std::uint64_t>() < min || v.get<std::uint64_t>() > max) {
                 return std::unexpected("must be an integer from 65536 to 1099511627776");
             }
             spool = v.get<std::uint64_t>();
             return {};
         }},
        {"state_dir", string_member(o.state_dir)},
        {"events", string_member(o.events_path)},
        {"metrics_file", string_member(o.metrics_path)},
        {"metrics_listen", string_member(o.metrics_listen)},
        {"drift_interval", integer_member(o.drift_interval_seconds, 1, 86400)},
        {"drop_group", integer_member(o.drop_group, 0, 65535)},
        {"allowed_group", integer_member(o.allowed_group, -1, 65535)},
        {"repeat_window_ms", integer_member(o.repeat_window_ms, 0, 3'600'000)},
        {"flow_interval", integer_member(o.flow_interval_seconds, 1, 86400)},
        {"no_nflog",
         [&o](const json& v) -> std::expected<void, std::string> {
             if (!v.is_boolean()) {
                 return std::unexpected("must be true or false");
             }
             o.no_nflog = v.get<bool>();
             return {};
         }},
        {"log_level", string_member(settings.log_level)},
        {"port_discovery",
         [&o](const json& v) -> std::expected<void, std::string> {
             if (!v.is_boolean()) {
                 return std::unexpected("must be true or false");
             }
             o.port_discovery = v.get<bool>();
             return {};
         }},
        {"port_patterns",
         [&o](const json& v) -> std::expected<void, std::string> {
             if (!v.is_array() || v.empty()) {
                 return std::unexpected("must be a non-empty array of interface name patterns");
             }
             std::vector<std::string> patterns;
             for (std::size_t i = 0; i < v.size(); ++i) {
                 if (!v[i].is_string()) {
                     return std::unexpected("/" + std::to_string(i) + ": must be a string");
                 }
                 patterns.push_back(v[i].get<std::string>());
                 if (auto ok = ports::PortPatterns::parse({patterns.back()}); !ok) {
                     return std::unexpected("/" + std::to_string(i) + ": " + ok.error());
                 }
             }
             o.port_patterns = std::move(patterns);
             return {};
         }},
        {"unknown_ports",
         [&o](const json& v) -> std::expected<void, std::string> {
             if (!v.is_string() || !ports::unknown_port_mode_from_string(v.get<std::string>())) {
                 return std::unexpected("must be \"isolate\", \"monitor\" or \"allow\"");
             }
             o.unknown_ports = v.get<std::string>();
             return {};
         }},
        {"libvirt_dir", string_member(o.libvirt_dir)},
    };
    for (const auto& [key, value] : document.items()) {
        if (key == "$schema" || key == "comment") {
            continue;
        }
        auto member = members.find(key);
        if (member == members.end()) {
            return std::unexpected(where + ": /" + key + ": unknown member");
        }
        std::string flag = "--" + key;
        std::replace(flag.begin(), flag.end(), '_', '-');
        if (given_flags.contains(flag)) {
            continue;
        }
        if (auto applied = member->second(value); !applied) {
            // An array item's error starts with its own pointer segment ("/2: …").
            const auto& why = applied.error();
            return std::unexpected(where + ": /" + key + (why.starts_with('/') ? why : ": " + why));
        }
    }
    o.spool_max_bytes = spool;
    if (!o.ruleset_path.empty() && !o.controller_url.empty()) {
        return std::unexpected(where + ": /ruleset and /controller exclude each other (one ruleset source)");
    }
    if (o.controller_url.empty() && (!o.ca_file.empty() || !o.enrollment_token_file.empty())) {
        return std::unexpected(where + ": /ca and /enrollment_token need /controller");
    }
    return {};
}

std::expected<void, std::string> load_enforcer_config(const std::string& path,
                                                      const std::set<std::string>& given_flags,
                                                      EnforcerSettings& settings) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return std::unexpected("cannot read configuration file " + path);
    }
    std::stringstream text;
    text << in.rdbuf();
    auto document = policy::read_json(text.str(), path);
    if (!document) {
        return std::unexpected(policy::format_diagnostic(document.error().front()));
    }
    return apply_enforcer_config(*document, path, given_flags, settings);
}

}  // namespace bulkhead::enforcer
