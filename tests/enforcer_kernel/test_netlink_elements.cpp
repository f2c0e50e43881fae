// apply_element_changes(): independent element changes, each with its own result, in both
// modes (strict per-change transactions sent pipelined; coalesced group commit). A change
// the kernel refuses fails alone; the kernel then holds exactly what a fresh replace() of
// the ruleset with the successful changes would; a foreign table never moves.
#include "enforcer/netlink/ruleset_backend.hpp"
#include "kernel_support.hpp"
#include "policies/net_address.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>

using namespace bulkhead;
using namespace bulkhead::ktest;
using Kind = enforcer::ElementChange::Kind;

namespace {

std::string describe(const std::optional<enforcer::KernelError>& e) {
    return e ? e->message + " [object: " + e->object + ", errno " + std::to_string(e->error_number) + "]"
             : "ok";
}

// `r` with the successful changes applied (what the kernel must now hold).
ruleset::Ruleset with_changes(ruleset::Ruleset r, const std::vector<enforcer::ElementChange>& changes,
                              const enforcer::ElementChangesReport& report) {
    for (std::size_t i = 0; i < changes.size(); ++i) {
        if (!report.results[i].ok()) {
            continue;
        }
        for (auto& set : r.sets) {
            if (set.name != changes[i].set) {
                continue;
            }
            auto elements = *set.elements;
            const auto pos = std::find(elements.begin(), elements.end(), changes[i].element);
            if (changes[i].kind == Kind::Add && pos == elements.end()) {
                elements.push_back(changes[i].element);
            } else if (changes[i].kind == Kind::Remove && pos != elements.end()) {
                elements.erase(pos);
            }
            std::sort(elements.begin(), elements.end());
            set.elements = std::make_shared<const ruleset::ElementList>(std::move(elements));
        }
    }
    return r;
}

ruleset::Element address(const std::string& text) {
    return ruleset::Element{{policy::host_range(*policy::parse_ip_address(text))}, ""};
}

ruleset::Element port(const std::string& name) {
    return ruleset::Element{{name}, ""};
}

std::vector<enforcer::ElementChange> undo(const std::vector<enforcer::ElementChange>& changes,
                                          const enforcer::ElementChangesReport& report) {
    std::vector<enforcer::ElementChange> out;
    for (std::size_t i = changes.size(); i-- > 0;) {
        if (report.results[i].ok()) {
            out.push_back({changes[i].kind == Kind::Add ? Kind::Remove : Kind::Add, changes[i].set,
                           changes[i].element});
        }
    }
    return out;
}

}  // namespace

TEST_CASE("netlink element changes: a refused change fails alone, in both modes") {
    ScopedNetns ns;
    REQUIRE(nft_script("table inet foreign {\n\tchain c {\n\t\ttype filter hook forward priority 0; "
                       "policy accept;\n\t\tcounter\n\t}\n}\n")
                .status == 0);
    const auto foreign_before = raw_listing("inet foreign");
    const auto good = compile(load_example("vdi-pool"), "hv1");
    const std::string ports = pick_set(good, [](const auto& s) {
        return s.dynamic && !s.verdict_map && s.key == std::vector{ruleset::KeyType::Ifname};
    }, "dynamic interface set").name;
    const std::string hosts = pick_set(good, [](const auto& s) {
        return s.interval && !s.verdict_map && s.key == std::vector{ruleset::KeyType::Ipv4Addr} &&
               !s.elements->empty();
    }, "IPv4 interval set with elements").name;
    enforcer::NetlinkRulesetBackend backend;
    REQUIRE(backend.replace(good));

    const std::vector<enforcer::ElementChange> changes{
        {Kind::Add, ports, port("qa001")},
        {Kind::Add, ports, port("qa002")},
        {Kind::Remove, ports, port("ghost")},  // not in the set: ENOENT, this change only
        {Kind::Add, ports, port("qa003")},
        {Kind::Add, hosts, address("192.0.2.77")},
        {Kind::Add, "no_such_set", port("qa004")},  // refused before sending
        {Kind::Add, ports, port("qa005")},
    };
    for (const auto mode : {enforcer::ElementCommit::PipelinedPerChange, enforcer::ElementCommit::Coalesced}) {
        const bool strict = mode == enforcer::ElementCommit::PipelinedPerChange;
        CAPTURE(strict);
        const auto before = backend.generation();
        REQUIRE(before);
        const auto report = backend.apply_element_changes(changes, good, mode);
        REQUIRE(report.results.size() == changes.size());
        for (const std::size_t i : {0u, 1u, 3u, 4u, 6u}) {
            CHECK_MESSAGE(report.results[i].ok(), i << ": " << describe(report.results[i].error));
        }
        REQUIRE_FALSE(report.results[2].ok());
        CHECK(report.results[2].error->error_number == ENOENT);
        CHECK(report.results[2].error->object == "element \"ghost\" of set " + ports);
        REQUIRE_FALSE(report.results[5].ok());
        CHECK(report.results[5].error->error_number == 0);
        CHECK(report.results[5].error->object == "set no_such_set");
        CHECK(report.failed() == 2);
        CHECK_FALSE(report.acks_incomplete);
        if (strict) {
            // Six transactions sent, five committed, one generation each.
            CHECK(report.transactions == 6);
            CHECK(report.committed == 5);
            CHECK(report.generation == *before + 5);
            CHECK(report.results[2].transaction == 2);
        } else {
            // The first attempt aborted on "ghost"; the retry without it committed.
            CHECK(report.transactions == 2);
            CHECK(report.committed == 1);
            CHECK(report.generation == *before + 1);
            CHECK(report.results[0].transaction == 1);
        }
        const auto expected = with_changes(good, changes, report);
        auto drift = backend.check(expected);
        REQUIRE(drift);
        CHECK_MESSAGE(drift->clean(), drift->summary());
        const auto after_changes = snapshot();
        REQUIRE(backend.replace(expected));
        const auto fresh = snapshot();
        CHECK_MESSAGE((after_changes == fresh), first_difference(fresh, after_changes));

        // Undo, for the next mode.
        const auto back = undo(changes, report);
        const auto undone = backend.apply_element_changes(back, expected, mode);
        CHECK(undone.failed() == 0);
        drift = backend.check(good);
        REQUIRE(drift);
        CHECK_MESSAGE(drift->clean(), drift->summary());
    }
    CHECK(raw_listing("inet foreign") == foreign_before);
}

TEST_CASE("netlink element changes: hundreds of pipelined transactions, then one coalesced") {
    ScopedNetns ns;
    const auto good = compile(load_example("vdi-pool"), "hv1");
    const std::string ports = pick_set(good, [](const auto& s) {
        return s.dynamic && !s.verdict_map && s.key == std::vector{ruleset::KeyType::Ifname};
    }, "dynamic interface set").name;
    enforcer::NetlinkRulesetBackend backend;
    REQUIRE(backend.replace(good));
    std::vector<enforcer::ElementChange> adds, removes;
    for (int i = 0; i < 600; ++i) {  // more than two sendmmsg windows of 256
        adds.push_back({Kind::Add, ports, port("qp" + std::to_string(i))});
        removes.push_back({Kind::Remove, ports, port("qp" + std::to_string(i))});
    }
    const auto before = backend.generation();
    REQUIRE(before);
    const auto added = backend.apply_element_changes(adds, good, enforcer::ElementCommit::PipelinedPerChange);
    CHECK(added.failed() == 0);
    CHECK(added.transactions == 600);
    CHECK(added.committed == 600);
    CHECK(added.send_calls >= 3);
    CHECK(added.generation == *before + 600);
    const auto expected = with_changes(good, adds, added);
    auto drift = backend.check(expected);
    REQUIRE(drift);
    CHECK_MESSAGE(drift->clean(), drift->summary());

    const auto removed = backend.apply_element_changes(removes, expected, enforcer::ElementCommit::Coalesced);
    CHECK(removed.failed() == 0);
    CHECK(removed.transactions == 1);
    CHECK(removed.generation == *before + 601);
    drift = backend.check(good);
    REQUIRE(drift);
    CHECK_MESSAGE(drift->clean(), drift->summary());
}

TEST_CASE("netlink element changes: lost ACKs are settled from the table") {
    ScopedNetns ns;
    const auto good = compile(load_example("vdi-pool"), "hv1");
    const std::string ports = pick_set(good, [](const auto& s) {
        return s.dynamic && !s.verdict_map && s.key == std::vector{ruleset::KeyType::Ifname};
    }, "dynamic interface set").name;
    {
        enforcer::NetlinkRulesetBackend loader;
        REQUIRE(loader.replace(good));
    }
    enforcer::NetlinkOptions options;
    options.receive_buffer = 1;  // far too small for a window's ACKs: ENOBUFS
    enforcer::NetlinkRulesetBackend backend(options);
    std::vector<enforcer::ElementChange> adds;
    for (int i = 0; i < 300; ++i) {
        adds.push_back({Kind::Add, ports, port("ql" + std::to_string(i))});
    }
    adds[150] = {Kind::Remove, ports, port("ghost")};
    const auto report = backend.apply_element_changes(adds, good, enforcer::ElementCommit::PipelinedPerChange);
    CHECK(report.acks_incomplete);
    for (std::size_t i = 0; i < adds.size(); ++i) {
        if (i == 150) {
            // Its ENOENT may have been dropped with the ACKs; then the table (no "ghost") is
            // what it asked for. Either way the kernel holds no "ghost".
            MESSAGE("removal of a missing element with lost ACKs: " << describe(report.results[i].error));
            if (!report.results[i].ok()) {
                CHECK(report.results[i].error->error_number == ENOENT);
            } else {
                CHECK(report.results[i].settled_from_table);
            }
            continue;
        }
        CHECK_MESSAGE(report.results[i].ok(), i << ": " << describe(report.results[i].error));
    }
    auto drift = backend.check(with_changes(good, adds, report));
    REQUIRE(drift);
    CHECK_MESSAGE(drift->clean(), drift->summary());
}
