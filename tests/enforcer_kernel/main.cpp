// Kernel test runner: listing the test cases needs nothing; running them needs root, network
// namespaces, nf_tables and nft. When something is missing, every case exits 77 (ctest:
// skipped) and says why, instead of passing silently.
#define DOCTEST_CONFIG_IMPLEMENT
#include "kernel_support.hpp"

#include <doctest/doctest.h>

#include <cstdio>
#include <string_view>

int main(int argc, char** argv) {
    bool listing = false;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg.starts_with("--list") || arg.starts_with("-l") || arg == "--help" || arg == "-h" ||
            arg == "-?" || arg.starts_with("--version") || arg == "-v") {
            listing = true;
        }
    }
    if (!listing) {
        if (const auto reason = bulkhead::ktest::probe_environment(); !reason.empty()) {
            std::printf("SKIPPED: kernel tests need root, network namespaces, nf_tables and nft: %s\n",
                        reason.c_str());
            return 77;
        }
    }
    doctest::Context context(argc, argv);
    return context.run();
}
