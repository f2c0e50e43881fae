#define DOCTEST_CONFIG_IMPLEMENT
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
    context.applyCommandLine(doctest_argc, argv);
    return context.run();
}
