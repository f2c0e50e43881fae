#include "common/logging/logging.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <memory>

namespace bulkhead::logging {

std::expected<void, std::string> setup(std::string_view program, std::string_view level) {
    const auto parsed = spdlog::level::from_str(std::string(level));
    // from_str answers "off" for any name it does not know; only "off" itself means off.
    if (parsed == spdlog::level::off && level != "off") {
        return std::unexpected("unknown log level \"" + std::string(level) +
                               "\" (trace, debug, info, warn, error, critical, off)");
    }
    auto logger = std::make_shared<spdlog::logger>(std::string(program),
                                                   std::make_shared<spdlog::sinks::stderr_sink_mt>());
    // UTC, so lines from hosts in different zones line up (the seeds ask for one timeline).
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ %n: %v", spdlog::pattern_time_type::utc);
    logger->set_level(parsed);
    logger->flush_on(spdlog::level::warn);
    spdlog::set_default_logger(std::move(logger));
    return {};
}

}  // namespace bulkhead::logging
