// RFC 5424 messages around SIEM bodies (PRI, timestamp, header field limits, structured data
// escaping), octet-count framing, UDP truncation, and the per-destination token bucket.
#include "controller/siem/siem_rate_limiter.hpp"
#include "controller/siem/syslog_message.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace bulkhead::siem;

namespace {

// Splits the header on spaces: PRI+VERSION, TIMESTAMP, HOSTNAME, APP-NAME, PROCID, MSGID,
// then the rest (structured data and message).
std::vector<std::string> header_fields(const std::string& message) {
    std::vector<std::string> fields;
    std::size_t start = 0;
    for (int i = 0; i < 6; ++i) {
        const auto space = message.find(' ', start);
        REQUIRE(space != std::string::npos);
        fields.push_back(message.substr(start, space - start));
        start = space + 1;
    }
    fields.push_back(message.substr(start));
    return fields;
}

} // namespace

TEST_CASE("siem syslog: RFC 5424 header fields") {
    SyslogIdentity identity;
    identity.hostname = "ctl-1.example.net";
    identity.procid = "4242";
    SyslogEntry entry;
    entry.severity = 4;
    entry.time = 1'764'000'000'123;
    entry.msgid = "drop";
    entry.stable_id = "drops/123";
    entry.body = "CEF:0|Bulkhead|Bulkhead Controller|0.6.0|drop|Connection blocked|4|rt=1";
    const auto message = rfc5424_message(identity, entry);
    const auto fields = header_fields(message);
    CHECK(fields[0] == "<164>1"); // local4 (20) * 8 + warning (4)
    CHECK(fields[1] == "2025-11-24T16:00:00.123Z");
    CHECK(fields[2] == "ctl-1.example.net");
    CHECK(fields[3] == "bulkhead-controller");
    CHECK(fields[4] == "4242");
    CHECK(fields[5] == "drop");
    CHECK(fields[6] == R"([bulkhead@32473 id="drops/123"] )" + entry.body);

    SUBCASE("other facility and severity, clamped") {
        identity.facility = 16; // local0
        entry.severity = 2;
        CHECK(rfc5424_message(identity, entry).starts_with("<130>1 "));
        identity.facility = 99;
        entry.severity = -3;
        CHECK(rfc5424_message(identity, entry).starts_with("<184>1 ")); // 23 * 8 + 0
    }
    SUBCASE("NILVALUE for empty fields and no structured data") {
        SyslogIdentity bare;
        bare.app_name = "";
        SyslogEntry plain;
        plain.time = 0;
        plain.body = "x";
        CHECK(rfc5424_message(bare, plain) == "<166>1 1970-01-01T00:00:00.000Z - - - - - x");
    }
    SUBCASE("field limits and printable US-ASCII only") {
        identity.hostname = std::string(300, 'h');
        identity.app_name = std::string(60, 'a');
        identity.procid = std::string(200, 'p');
        entry.msgid = "audit.policy.activate.with.a.long.suffix";
        const auto limited = header_fields(rfc5424_message(identity, entry));
        CHECK(limited[2].size() == 255);
        CHECK(limited[3].size() == 48);
        CHECK(limited[4].size() == 128);
        CHECK(limited[5] == "audit.policy.activate.with.a.lon");
        CHECK(header_field("host name\xC3\xA9", 255) == "host_name__");
    }
}

TEST_CASE("siem syslog: structured data escapes quote, backslash and bracket") {
    CHECK(sd_param_value(R"(a"b\c]d)") == R"(a\"b\\c\]d)");
    SyslogEntry entry;
    entry.stable_id = R"(odd"id])";
    entry.body = "b";
    const auto message = rfc5424_message(SyslogIdentity{}, entry);
    CHECK(message.find(R"([bulkhead@32473 id="odd\"id\]"] b)") != std::string::npos);
}

TEST_CASE("siem syslog: octet counting counts bytes, not characters") {
    CHECK(octet_counted("<14>1 - - - - - - hi") == "20 <14>1 - - - - - - hi");
    CHECK(octet_counted("é") == "2 é");
    const std::string framed = octet_counted("abc") + octet_counted("de");
    CHECK(framed == "3 abc2 de");
}

TEST_CASE("siem syslog: UDP datagrams are truncated with a marker, never split") {
    const std::string short_message(100, 'x');
    CHECK(udp_datagram(short_message, 100) == short_message);
    const std::string long_message(500, 'y');
    const auto datagram = udp_datagram(long_message, 100);
    CHECK(datagram.size() == 100);
    CHECK(datagram.ends_with(kTruncationMarker));
    CHECK(datagram.starts_with(std::string(100 - kTruncationMarker.size(), 'y')));
    SUBCASE("a multi-byte character is not cut in half") {
        // 85 'a' then 'é' (2 bytes) at bytes 85-86: the cut at 86 would split it.
        const std::string text = std::string(85, 'a') + "\xC3\xA9" + std::string(50, 'b');
        const auto cut = udp_datagram(text, 100);
        CHECK(cut == std::string(85, 'a') + std::string(kTruncationMarker));
    }
    CHECK(kDefaultMaxDatagram == 8192);
    CHECK(udp_datagram(std::string(9000, 'z')).size() == 8192);
}

TEST_CASE("siem rate limiter: a token bucket with time passed in") {
    TokenBucket bucket(10, 0, 1000); // 10 a second, burst 10, full at t=1000
    CHECK(bucket.burst() == 10);
    CHECK(bucket.take(4, 1000) == 4);
    CHECK(bucket.take(10, 1000) == 6); // only what is left
    CHECK(bucket.take(1, 1000) == 0);
    CHECK(bucket.wait_for(1, 1000) == 100);
    CHECK(bucket.take(1, 1099) == 0);
    CHECK(bucket.take(1, 1100) == 1); // one token per 100 ms
    CHECK(bucket.take(5, 1600) == 5);
    SUBCASE("refill never exceeds the burst") {
        CHECK(bucket.available(1'000'000) == 10);
        CHECK(bucket.take(20, 1'000'000) == 10);
    }
    SUBCASE("a clock stepping back adds nothing and credits no millisecond twice") {
        CHECK(bucket.take(1, 500) == 0);
        CHECK(bucket.take(1, 1699) == 0);
        CHECK(bucket.take(1, 1700) == 1);
    }
    SUBCASE("an explicit burst") {
        TokenBucket bursty(1000, 50, 0);
        CHECK(bursty.take(100, 0) == 50);
        CHECK(bursty.take(100, 10) == 10); // 1 per ms
        CHECK(bursty.wait_for(80, 10) == 50); // more than the burst waits for the burst
    }
    SUBCASE("a very long idle time does not overflow") {
        TokenBucket fast(4'000'000'000U, 0, 0);
        CHECK(fast.take(4'000'000'000U, 0) == 4'000'000'000U);
        CHECK(fast.available(std::int64_t{1} << 60) == 4'000'000'000U);
    }
}
