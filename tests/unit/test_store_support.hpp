// Helpers for the store tests: a unique temporary directory removed at the end, and
// small builders for records.
#pragma once

#include "controller/store/sqlite_store.hpp"

#include <cstdlib>
#include <doctest/doctest.h>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace bulkhead::test {

class TempDir {
  public:
    TempDir() {
        std::string pattern =
            (std::filesystem::temp_directory_path() / "bulkhead-store-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr)
            throw std::runtime_error("mkdtemp failed");
        path_ = pattern;
    }
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::filesystem::path& path() const { return path_; }

  private:
    std::filesystem::path path_;
};

inline std::unique_ptr<controller::SqliteStore> open_store(const std::filesystem::path& file) {
    auto store = controller::SqliteStore::open(file);
    if (!store)
        FAIL("open failed: " << store.error().message);
    return std::move(*store);
}

struct StoreFixture {
    TempDir dir;
    std::unique_ptr<controller::SqliteStore> store = open_store(dir.path() / "controller.db");
};

inline controller::StoredEvent make_event(std::string enforcer, std::uint64_t seq,
                                          std::int64_t time_ns) {
    controller::StoredEvent e;
    e.enforcer = std::move(enforcer);
    e.enforcer_seq = seq;
    e.type = "drop";
    e.time_ns = time_ns;
    e.received_at = 1'700'000'000'000;
    e.workload = "vdi-001";
    e.direction = "out";
    e.reason = "default";
    e.src = "10.1.0.1";
    e.dst = "10.1.0.2";
    e.protocol = "tcp";
    e.dport = 445;
    e.count = 1;
    e.document = {{"seq", seq}, {"src", e.src}, {"dst", e.dst}};
    return e;
}

} // namespace bulkhead::test

namespace bulkhead::test {

// A value-initialised T with some fields set (designated initializers would trip
// -Wmissing-field-initializers on GCC 12).
template <typename T, typename Set> T make(Set&& set) {
    T value{};
    set(value);
    return value;
}

} // namespace bulkhead::test
