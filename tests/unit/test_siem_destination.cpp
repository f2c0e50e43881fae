// SIEM destinations from configuration: a valid document, the defaults, and every refusal
// naming the JSON pointer of what is wrong.
#include "controller/siem/siem_destination.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <string>

using namespace bulkhead::siem;
using nlohmann::json;

namespace {

json tls_destination() {
    return json{{"name", "soc-splunk"},  {"transport", "tls"},       {"address", "siem.example.net:6514"},
                {"format", "cef"},       {"records", {"drops", "incidents"}},
                {"ca_file", "/etc/bulkhead/siem-ca.pem"}};
}

// The messages of a refused destination, "pointer: reason" each.
std::vector<std::string> errors_of(const json& object, std::string_view pointer = "/siem/destinations/0") {
    auto parsed = parse_siem_destination(object, pointer);
    REQUIRE_FALSE(parsed.has_value());
    std::vector<std::string> messages;
    for (const auto& error : parsed.error()) {
        messages.push_back(error.message());
    }
    return messages;
}

bool contains(const std::vector<std::string>& messages, const std::string& wanted) {
    return std::ranges::find(messages, wanted) != messages.end();
}

} // namespace

TEST_CASE("siem destination: a TLS destination with every field") {
    json object = tls_destination();
    object["server_name"] = "siem.soc.example";
    object["client_certificate"] = "/etc/bulkhead/client.pem";
    object["client_key"] = "/etc/bulkhead/client.key";
    object["rate_limit_per_second"] = 250;
    auto parsed = parse_siem_destination(object);
    REQUIRE(parsed.has_value());
    CHECK(parsed->name == "soc-splunk");
    CHECK(parsed->transport == TransportKind::Tls);
    REQUIRE(parsed->address.has_value());
    CHECK(*parsed->address == HostPort{"siem.example.net", 6514});
    CHECK(parsed->format == SiemFormat::Cef);
    CHECK(parsed->records == std::vector{SiemRecordKind::Drops, SiemRecordKind::Incidents});
    CHECK(parsed->wants(SiemRecordKind::Drops));
    CHECK_FALSE(parsed->wants(SiemRecordKind::Audit));
    CHECK(parsed->rate_limit_per_second == 250);
    CHECK(parsed->tls.ca_file == "/etc/bulkhead/siem-ca.pem");
    CHECK(parsed->tls.server_name == "siem.soc.example");
    CHECK(parsed->tls.client_certificate == "/etc/bulkhead/client.pem");
    CHECK(parsed->tls.client_key == "/etc/bulkhead/client.key");
}

TEST_CASE("siem destination: defaults, IPv6 addresses and the file transport") {
    SUBCASE("rate limit defaults to 10000") {
        auto parsed = parse_siem_destination(tls_destination());
        REQUIRE(parsed.has_value());
        CHECK(parsed->rate_limit_per_second == 10000);
        CHECK(parsed->tls.server_name.empty());
    }
    SUBCASE("udp to a bracketed IPv6 address") {
        auto parsed = parse_siem_destination(json{
            {"name", "qradar_1"}, {"transport", "udp"}, {"address", "[::1]:514"}, {"format", "leef"},
            {"records", {"audit"}}});
        REQUIRE(parsed.has_value());
        CHECK(*parsed->address == HostPort{"::1", 514});
        CHECK(parsed->format == SiemFormat::Leef);
    }
    SUBCASE("file needs a path, no address") {
        auto parsed = parse_siem_destination(json{{"name", "archive"}, {"transport", "file"},
                                                  {"path", "/var/lib/bulkhead/siem.log"}, {"format", "ocsf"},
                                                  {"records", {"checkpoints", "quarantines"}}});
        REQUIRE(parsed.has_value());
        CHECK_FALSE(parsed->address.has_value());
        CHECK(parsed->path == "/var/lib/bulkhead/siem.log");
        CHECK(parsed->records == std::vector{SiemRecordKind::Checkpoints, SiemRecordKind::Quarantines});
    }
}

TEST_CASE("siem destination: each fault names its JSON pointer and reason") {
    SUBCASE("bad format") {
        json object = tls_destination();
        object["format"] = "syslog";
        const auto messages = errors_of(object, "/siem/destinations/1");
        CHECK(messages == std::vector<std::string>{"/siem/destinations/1/format: must be one of cef, leef, ocsf"});
    }
    SUBCASE("unknown key") {
        json object = tls_destination();
        object["adress"] = "x:1";
        CHECK(contains(errors_of(object), "/siem/destinations/0/adress: unknown key"));
    }
    SUBCASE("bad and missing name") {
        json object = tls_destination();
        object["name"] = "SOC Splunk";
        CHECK(contains(errors_of(object),
                       "/siem/destinations/0/name: must be 1 to 64 characters of a-z, 0-9, '_' and '-'"));
        object["name"] = std::string(65, 'a');
        CHECK(errors_of(object).size() == 1);
        object.erase("name");
        CHECK(contains(errors_of(object), "/siem/destinations/0/name: is required"));
    }
    SUBCASE("transport") {
        json object = tls_destination();
        object["transport"] = "http";
        CHECK(contains(errors_of(object), "/siem/destinations/0/transport: must be one of tls, tcp, udp, file"));
    }
    SUBCASE("addresses") {
        json object = tls_destination();
        object["address"] = "::1:6514";
        CHECK(contains(errors_of(object),
                       "/siem/destinations/0/address: an IPv6 address goes in brackets, as in [::1]:6514"));
        object["address"] = "siem.example.net:0";
        CHECK(contains(errors_of(object), "/siem/destinations/0/address: the port must be a number from 1 to 65535"));
        object["address"] = "siem.example.net:70000";
        CHECK(contains(errors_of(object), "/siem/destinations/0/address: the port must be a number from 1 to 65535"));
        object["address"] = "siem.example.net";
        CHECK(contains(errors_of(object), "/siem/destinations/0/address: must be host:port"));
        object["address"] = "[::1:6514";
        CHECK(contains(errors_of(object), "/siem/destinations/0/address: must be [ipv6-address]:port"));
        object.erase("address");
        CHECK(contains(errors_of(object), "/siem/destinations/0/address: is required"));
    }
    SUBCASE("records") {
        json object = tls_destination();
        object["records"] = json::array();
        CHECK(contains(errors_of(object), "/siem/destinations/0/records: must be a non-empty array"));
        object["records"] = {"drops", "flows"};
        CHECK(contains(errors_of(object),
                       "/siem/destinations/0/records/1: must be one of drops, allowed_flows, incidents, "
                       "quarantines, audit, checkpoints"));
        object["records"] = {"drops", "drops"};
        CHECK(contains(errors_of(object), "/siem/destinations/0/records/1: repeats drops"));
    }
    SUBCASE("rate limit") {
        json object = tls_destination();
        for (const json& bad : {json(0), json(-5), json(2.5), json("100"), json(2'000'000)}) {
            object["rate_limit_per_second"] = bad;
            CHECK(contains(errors_of(object),
                           "/siem/destinations/0/rate_limit_per_second: must be an integer from 1 to 1000000"));
        }
    }
    SUBCASE("tls needs ca_file; client certificate and key go together") {
        json object = tls_destination();
        object.erase("ca_file");
        object["client_certificate"] = "/c.pem";
        const auto messages = errors_of(object);
        CHECK(contains(messages, "/siem/destinations/0/ca_file: is required"));
        CHECK(contains(messages, "/siem/destinations/0/client_key: is required with client_certificate"));
    }
    SUBCASE("TLS keys on other transports, path on network ones, address on file") {
        json object = tls_destination();
        object["transport"] = "tcp";
        object["path"] = "/tmp/x";
        const auto messages = errors_of(object);
        CHECK(contains(messages, "/siem/destinations/0/ca_file: only for the tls transport"));
        CHECK(contains(messages, "/siem/destinations/0/path: only for the file transport"));
        json file{{"name", "f"}, {"transport", "file"}, {"address", "a:1"}, {"format", "cef"}, {"records", {"audit"}}};
        const auto file_messages = errors_of(file);
        CHECK(contains(file_messages, "/siem/destinations/0/address: not used by the file transport (it takes path)"));
        CHECK(contains(file_messages, "/siem/destinations/0/path: is required"));
        file.erase("address");
        file["path"] = "relative.log";
        CHECK(contains(errors_of(file), "/siem/destinations/0/path: must be an absolute path"));
    }
    SUBCASE("not an object") {
        CHECK(errors_of(json::array()) == std::vector<std::string>{"/siem/destinations/0: must be an object"});
    }
}

TEST_CASE("siem destination: a whole document, duplicate names refused") {
    json second = tls_destination();
    second["name"] = "soc-qradar";
    second["format"] = "leef";
    SUBCASE("two destinations") {
        auto parsed = parse_siem_destinations(json{{"destinations", {tls_destination(), second}}}, "/siem");
        REQUIRE(parsed.has_value());
        REQUIRE(parsed->size() == 2);
        CHECK((*parsed)[1].name == "soc-qradar");
        CHECK((*parsed)[1].format == SiemFormat::Leef);
    }
    SUBCASE("an empty list turns export off") {
        auto parsed = parse_siem_destinations(json{{"destinations", json::array()}});
        REQUIRE(parsed.has_value());
        CHECK(parsed->empty());
    }
    SUBCASE("duplicate name") {
        auto parsed = parse_siem_destinations(json{{"destinations", {tls_destination(), tls_destination()}}}, "/siem");
        REQUIRE_FALSE(parsed.has_value());
        REQUIRE(parsed.error().size() == 1);
        CHECK(parsed.error()[0].message() ==
              "/siem/destinations/1/name: another destination is already named soc-splunk");
    }
    SUBCASE("errors of several destinations and the document together") {
        second["format"] = "xml";
        json first = tls_destination();
        first.erase("records");
        auto parsed =
            parse_siem_destinations(json{{"destinations", {first, second}}, {"enabled", true}}, "/siem");
        REQUIRE_FALSE(parsed.has_value());
        const std::string text = describe(parsed.error());
        CHECK(text.find("/siem/enabled: unknown key\n") != std::string::npos);
        CHECK(text.find("/siem/destinations/0/records: is required\n") != std::string::npos);
        CHECK(text.find("/siem/destinations/1/format: must be one of cef, leef, ocsf\n") != std::string::npos);
    }
    SUBCASE("missing list") {
        auto parsed = parse_siem_destinations(json::object(), "/siem");
        REQUIRE_FALSE(parsed.has_value());
        CHECK(parsed.error()[0].message() == "/siem/destinations: is required");
    }
}
