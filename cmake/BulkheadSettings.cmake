# Target-based settings: every Bulkhead target links bulkhead_settings instead of
# editing global flags, so a vendored or fetched target never inherits our -Werror.
add_library(bulkhead_settings INTERFACE)
target_compile_features(bulkhead_settings INTERFACE cxx_std_23)
target_include_directories(bulkhead_settings INTERFACE ${PROJECT_SOURCE_DIR})
target_compile_options(bulkhead_settings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast
  -Wcast-align -Wunused -Woverloaded-virtual -Wformat=2
  $<$<BOOL:${BULKHEAD_WERROR}>:-Werror>
  # GCC 12 reports false "maybe-uninitialized" positives inside libstdc++'s std::variant
  # and std::vector move paths at -O2 (GCC PR 105562, 107138); real uninitialised reads
  # are caught by the ASan/UBSan and valgrind runs instead.
  $<$<CXX_COMPILER_ID:GNU>:-Wno-maybe-uninitialized>)

if(BULKHEAD_SANITIZE)
  target_compile_options(bulkhead_settings INTERFACE
    -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
  target_link_options(bulkhead_settings INTERFACE -fsanitize=address,undefined)
endif()
