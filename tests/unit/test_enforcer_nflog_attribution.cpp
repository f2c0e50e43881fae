// Attribution of NFLOG events to workloads through Ruleset::ports.
#include "enforcer/nflog/attribution.hpp"

#include <doctest/doctest.h>

using namespace bulkhead;
using namespace bulkhead::nflog;

namespace {

std::vector<ruleset::PortBinding> ports() {
    // Sorted by interface, as Ruleset::ports is.
    return {
        {"eth0", "fileserver", policy::AttachmentMode::Host, "c00000003"},
        {"vdi1", "vdi-001", policy::AttachmentMode::Port, "c00000001"},
        {"vdi2", "vdi-002", policy::AttachmentMode::Port, "c00000002"},
    };
}

DropEvent event(Direction direction, std::string indev, std::string outdev) {
    DropEvent e;
    e.direction = direction;
    e.indev = indev.empty() ? 0 : 11;
    e.indev_name = std::move(indev);
    e.outdev = outdev.empty() ? 0 : 12;
    e.outdev_name = std::move(outdev);
    return e;
}

} // namespace

TEST_CASE("nflog attribution: port mode, forward hook") {
    auto bindings = ports();
    SUBCASE("out: the workload behind the input interface") {
        auto e = event(Direction::Out, "vdi1", "vdi2");
        CHECK(attribute(e, bindings, 7) == AttributionOutcome::Attributed);
        CHECK(e.workload == "vdi-001");
        CHECK(e.policy_generation == 7);
    }
    SUBCASE("in: the workload behind the output interface") {
        auto e = event(Direction::In, "vdi1", "vdi2");
        CHECK(attribute(e, bindings, 7) == AttributionOutcome::Attributed);
        CHECK(e.workload == "vdi-002");
    }
    SUBCASE("an unbound preferred interface is not replaced by the peer's") {
        auto e = event(Direction::Out, "uplink", "vdi2");
        e.workload = "stale";
        CHECK(attribute(e, bindings, 7) == AttributionOutcome::UnknownInterface);
        CHECK(e.workload.empty());
    }
}

TEST_CASE("nflog attribution: host mode, input and output hooks") {
    auto bindings = ports();
    SUBCASE("out in the output hook: no input interface, the output one is the host's") {
        auto e = event(Direction::Out, "", "eth0");
        CHECK(attribute(e, bindings, 1) == AttributionOutcome::Attributed);
        CHECK(e.workload == "fileserver");
    }
    SUBCASE("in in the input hook: no output interface, the input one is the host's") {
        auto e = event(Direction::In, "eth0", "");
        CHECK(attribute(e, bindings, 1) == AttributionOutcome::Attributed);
        CHECK(e.workload == "fileserver");
    }
}

TEST_CASE("nflog attribution: what cannot be attributed is said and counted") {
    auto bindings = ports();
    SUBCASE("no interface at all") {
        auto e = event(Direction::Out, "", "");
        CHECK(attribute(e, bindings, 1) == AttributionOutcome::NoInterface);
    }
    SUBCASE("an ifindex without a name") {
        auto e = event(Direction::Out, "", "");
        e.indev = 40;
        CHECK(attribute(e, bindings, 1) == AttributionOutcome::UnresolvedInterface);
    }
    SUBCASE("the Attributor counts outcomes and agrees with the free function") {
        Attributor attributor(bindings, 9);
        for (auto [dir, in, out] :
             {std::tuple{Direction::Out, "vdi1", "uplink"},
              std::tuple{Direction::In, "uplink", "vdi2"},
              std::tuple{Direction::Out, "eth9", "vdi2"}, std::tuple{Direction::Out, "", "eth0"}}) {
            auto a = event(dir, in, out);
            auto b = a;
            CHECK(attributor.attribute(a) == attribute(b, bindings, 9));
            CHECK(a.workload == b.workload);
            CHECK(a.policy_generation == 9);
        }
        CHECK(attributor.count(AttributionOutcome::Attributed) == 3);
        CHECK(attributor.count(AttributionOutcome::UnknownInterface) == 1);
        CHECK(to_string(AttributionOutcome::UnknownInterface) == "unknown_interface");
    }
}

TEST_CASE("nflog attribution: attribution_interface names the interface used") {
    CHECK(attribution_interface(event(Direction::Out, "vdi1", "vdi2")) == "vdi1");
    CHECK(attribution_interface(event(Direction::In, "vdi1", "vdi2")) == "vdi2");
    CHECK(attribution_interface(event(Direction::Out, "", "eth0")) == "eth0");
    CHECK(attribution_interface(event(Direction::In, "", "")).empty());
}
