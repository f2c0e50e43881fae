#!/usr/bin/env python3
"""Writes tests/unit/fault_injecting_store.hpp from controller/store/repositories.hpp: one
forwarding override per repository method, each failing on demand. Run it after adding a
repository method (the build fails on the missing override until you do)."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
src = (ROOT / "controller/store/repositories.hpp").read_text()
methods = [(m.group(1), m.group(2), " ".join(m.group(3).split()))
           for m in re.finditer(r"virtual\s+(StoreResult<.*?>)\s+(\w+)\((.*?)\)\s*=\s*0;", src, flags=re.S)]

head = '''// FaultInjectingStore: a Store that forwards every call to a real one (SQLite in a
// temporary directory) and fails the calls a test names, on demand, with StoreError::Io.
// Tests use it to prove that the controller keeps what is in force when a read of what must
// be enforced fails (fail closed), and that errors are reported rather than swallowed.
// Generated from controller/store/repositories.hpp by tests/unit/make_fault_injecting_store.py.
#pragma once

#include "controller/store/store.hpp"

#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <string>

namespace bulkhead::test {

using namespace bulkhead::controller;

class FaultInjectingStore final : public Store {
  public:
    explicit FaultInjectingStore(std::shared_ptr<Store> inner) : inner_(std::move(inner)) {}

    // Calls named here fail until healed.
    void fail(const std::string& method) {
        std::lock_guard lock(mutex_);
        failing_.insert(method);
    }
    void heal() {
        std::lock_guard lock(mutex_);
        failing_.clear();
    }
    std::uint64_t failures() const { return failures_; }
'''
tail = '''
  private:
    bool should_fail(const char* method) {
        std::lock_guard lock(mutex_);
        if (!failing_.contains(method))
            return false;
        ++failures_;
        return true;
    }
    static StoreError injected(const char* method) {
        return StoreError{StoreError::Kind::Io, std::string("injected failure in ") + method};
    }

    std::shared_ptr<Store> inner_;
    std::mutex mutex_;
    std::set<std::string> failing_;
    std::atomic<std::uint64_t> failures_{0};
};

}  // namespace bulkhead::test
'''
body = []
for ret, name, args in methods:
    params = [a.strip().split()[-1].lstrip("&*") for a in re.split(r",(?![^<]*>)", args) if a.strip()]
    body.append(f'''    {ret} {name}({args}) override {{
        if (should_fail("{name}"))
            return std::unexpected(injected("{name}"));
        return inner_->{name}({", ".join(params)});
    }}''')
(ROOT / "tests/unit/fault_injecting_store.hpp").write_text(head + "\n".join(body) + "\n" + tail)
