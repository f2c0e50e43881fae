#include "policies/net_address.hpp"

#include <doctest/doctest.h>

using namespace bulkhead::policy;

TEST_CASE("net_address: CIDR blocks parse to inclusive ranges") {
    auto r = parse_cidr("10.1.0.0/16");
    REQUIRE(r);
    CHECK(to_string(r->low) == "10.1.0.0");
    CHECK(to_string(r->high) == "10.1.255.255");
    CHECK(r->prefix_length() == 16);
    CHECK(to_string(*r) == "10.1.0.0/16");

    auto v6 = parse_cidr("fd00::/64");
    REQUIRE(v6);
    CHECK(to_string(v6->high) == "fd00::ffff:ffff:ffff:ffff");
    CHECK(to_string(*v6) == "fd00::/64");
}

TEST_CASE("net_address: invalid CIDR blocks are rejected with a reason") {
    SUBCASE("host bits set") {
        auto r = parse_cidr("10.1.2.3/16");
        REQUIRE_FALSE(r);
        CHECK(r.error().find("did you mean 10.1.0.0/16") != std::string::npos);
    }
    SUBCASE("prefix too long") { CHECK_FALSE(parse_cidr("10.0.0.0/33")); }
    SUBCASE("not an address") { CHECK_FALSE(parse_cidr("10.0.0.256/32")); }
    SUBCASE("empty prefix") { CHECK_FALSE(parse_cidr("10.0.0.0/")); }
    SUBCASE("garbage prefix") { CHECK_FALSE(parse_cidr("10.0.0.0/8x")); }
}

TEST_CASE("net_address: increment and decrement wrap only at the ends") {
    auto a = *parse_ip_address("10.0.0.255");
    CHECK(increment(a));
    CHECK(to_string(a) == "10.0.1.0");
    CHECK(decrement(a));
    CHECK(to_string(a) == "10.0.0.255");
    auto top = *parse_ip_address("255.255.255.255");
    CHECK_FALSE(increment(top));
}

TEST_CASE("net_address: non-CIDR ranges render as low-high") {
    IpRange r{*parse_ip_address("10.0.0.1"), *parse_ip_address("10.0.0.6")};
    CHECK(r.prefix_length() == -1);
    CHECK(to_string(r) == "10.0.0.1-10.0.0.6");
}

TEST_CASE("net_address: MAC addresses normalise to lower case with colons") {
    CHECK(*normalize_mac("52-54-00-AB-cd-0F") == "52:54:00:ab:cd:0f");
    CHECK_FALSE(normalize_mac("52:54:00:ab:cd"));
    CHECK_FALSE(normalize_mac("52:54:00:ab:cd:zz"));
}

TEST_CASE("net_address: interface names follow Linux rules") {
    CHECK(check_interface_name("vdi0001"));
    CHECK_FALSE(check_interface_name(""));
    CHECK_FALSE(check_interface_name("a-very-long-interface"));
    CHECK_FALSE(check_interface_name("eth/0"));
    CHECK_FALSE(check_interface_name("eth 0"));
}
