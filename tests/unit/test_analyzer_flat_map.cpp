// The analyzer's internal containers against the standard library's.
#include "controller/analyzer/flat_map.hpp"

#include <deque>
#include <doctest/doctest.h>
#include <random>
#include <unordered_map>

using bulkhead::analyzer::detail::FlatMap;
using bulkhead::analyzer::detail::Ring;

TEST_CASE("analyzer: flat map agrees with std::unordered_map under random inserts and erases") {
    FlatMap<std::uint32_t> map;
    std::unordered_map<std::uint64_t, std::uint32_t> reference;
    std::mt19937_64 random(7);
    std::size_t disagreements = 0;
    for (int step = 0; step < 200000; ++step) {
        // Few distinct keys, clustered, so probe runs collide and wrap.
        const std::uint64_t key = random() % 512 + (random() % 4) * (std::uint64_t{1} << 40);
        const auto action = random() % 3;
        if (action < 2) {
            bool inserted = false;
            auto& value = map.get_or_insert(key, inserted);
            disagreements += inserted != (reference.count(key) == 0) ? 1 : 0;
            value += 1;
            reference[key] += 1;
        } else {
            disagreements += map.erase(key) != (reference.erase(key) == 1) ? 1 : 0;
        }
        if (step % 997 == 0) {
            REQUIRE(map.size() == reference.size());
            for (const auto& [k, v] : reference) {
                const auto* found = map.find(k);
                disagreements += found == nullptr || *found != v ? 1 : 0;
            }
            std::size_t seen = 0;
            map.for_each([&](std::uint64_t k, std::uint32_t v) {
                ++seen;
                disagreements += reference.count(k) == 0 || reference.at(k) != v ? 1 : 0;
            });
            CHECK(seen == reference.size());
        }
    }
    CHECK(disagreements == 0);
    CHECK(map.size() == reference.size());
    map.clear_and_release();
    CHECK(map.size() == 0);
    CHECK(map.find(1) == nullptr);
    CHECK(map.memory_bytes() == 0);
}

TEST_CASE("analyzer: ring keeps FIFO order across growth and wrap-around") {
    Ring<int> ring;
    std::deque<int> reference;
    std::mt19937 random(3);
    std::size_t disagreements = 0;
    for (int i = 0; i < 50000; ++i) {
        if (random() % 3 != 0 || reference.empty()) {
            ring.push_back(i);
            reference.push_back(i);
        } else {
            disagreements += ring.front() != reference.front() ? 1 : 0;
            ring.pop_front();
            reference.pop_front();
        }
        disagreements += ring.size() != reference.size() ? 1 : 0;
    }
    CHECK(disagreements == 0);
    while (!reference.empty()) {
        REQUIRE(ring.front() == reference.front());
        ring.pop_front();
        reference.pop_front();
    }
    CHECK(ring.empty());
}
