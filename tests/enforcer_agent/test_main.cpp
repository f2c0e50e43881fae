#define DOCTEST_CONFIG_IMPLEMENT
#include "common/logging/logging.hpp"

#include <doctest/doctest.h>

#include <string>

// Arguments after "--" belong to the tests (e.g. --enforcer PATH for the daemon test).
namespace bulkhead::test {
std::string enforcer_binary;
}

int main(int argc, char** argv) {
    doctest::Context context;
    int doctest_argc = argc;
    for (int i = 1; i < argc; ++i) {
        if (std::string(argv[i]) == "--") {
            doctest_argc = i;
            for (int j = i + 1; j + 1 < argc; ++j) {
                if (std::string(argv[j]) == "--enforcer") {
                    bulkhead::test::enforcer_binary = argv[j + 1];
                }
            }
            break;
        }
    }
    // The agent logs through spdlog; on stderr at debug, its lines sit beside a failing check.
    if (auto configured = bulkhead::logging::setup("enforcer_agent_tests", "debug"); !configured) {
        return 2;
    }
    context.applyCommandLine(doctest_argc, argv);
    return context.run();
}
