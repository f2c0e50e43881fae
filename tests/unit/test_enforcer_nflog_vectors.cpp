// Runs every NFLOG decoder vector in tests/vectors/nflog/ (made by make_vectors.py there):
// each must decode to exactly what manifest.json says, and no prefix of any vector (every
// truncation point) and no single-byte corruption of it may crash or read out of bounds
// (the ASan/UBSan build runs this file too).
#include "enforcer/nflog/nflog_decoder.hpp"
#include "enforcer/nflog/nflog_stream.hpp"
#include "test_support.hpp"

#include <cstring>
#include <doctest/doctest.h>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

using namespace bulkhead;
using namespace bulkhead::nflog;

namespace {

std::vector<std::byte> bytes_of(const std::string& text) {
    std::vector<std::byte> out(text.size());
    if (!text.empty()) {
        std::memcpy(out.data(), text.data(), text.size());
    }
    return out;
}

std::set<std::string> note_names(std::uint16_t notes) {
    std::set<std::string> names;
    for (std::size_t i = 0; i < decode_note_count; ++i) {
        if (has_note(notes, static_cast<DecodeNote>(i))) {
            names.insert(std::string(note_name(static_cast<DecodeNote>(i))));
        }
    }
    return names;
}

nlohmann::json manifest() {
    return nlohmann::json::parse(test::read_source_file("tests/vectors/nflog/manifest.json"));
}

} // namespace

TEST_CASE("nflog vectors: every vector decodes to what the manifest says") {
    const auto vectors = manifest()["vectors"];
    REQUIRE(vectors.size() >= 40);
    std::set<std::string> anomalies_covered;
    for (const auto& v : vectors) {
        const std::string file = v["file"];
        INFO("vector " << file << ": " << v["description"].get<std::string>());
        const auto data = bytes_of(test::read_source_file("tests/vectors/nflog/" + file));
        const std::string expect = v["expect"];
        if (v["level"] == "message") {
            auto decoded = decode_nflog_message(data, 77);
            if (expect == "ok") {
                REQUIRE_MESSAGE(decoded.has_value(),
                                "anomaly " << (decoded ? "" : anomaly_name(decoded.error())));
                const auto expected_notes = v["notes"].get<std::set<std::string>>();
                CHECK(note_names(decoded->notes) == expected_notes);
            } else {
                REQUIRE_FALSE(decoded.has_value());
                CHECK(anomaly_name(decoded.error()) == expect);
                anomalies_covered.insert(expect);
            }
            // The stream, fed the same bytes as a datagram, never delivers a rejected message.
            NflogStream stream;
            std::size_t events = 0;
            stream.process_datagram(data, 77, [&](const DropEvent&) { ++events; });
            CHECK(events == (expect == "ok" ? 1U : 0U));
        } else {
            NflogStream stream;
            std::size_t events = 0;
            stream.process_datagram(data, 77, [&](const DropEvent&) { ++events; });
            CHECK(events == v["events"].get<std::size_t>());
            std::map<std::string, std::uint64_t> anomalies;
            for (std::size_t i = 0; i < decode_anomaly_count; ++i) {
                if (auto n = stream.counters().anomalies[i]) {
                    anomalies[std::string(anomaly_name(static_cast<DecodeAnomaly>(i)))] = n;
                }
            }
            CHECK(anomalies == v["anomalies"].get<std::map<std::string, std::uint64_t>>());
        }
    }
    // Every anomaly the decoder of one message can report has a vector (the datagram-level
    // one has its own).
    for (std::size_t i = 0; i < decode_anomaly_count; ++i) {
        const auto a = static_cast<DecodeAnomaly>(i);
        if (a == DecodeAnomaly::UnexpectedMessageType)
            continue;
        CHECK_MESSAGE(anomalies_covered.count(std::string(anomaly_name(a))) == 1,
                      "no vector for " << anomaly_name(a));
    }
}

TEST_CASE("nflog vectors: every truncation and every single-byte corruption is survived") {
    const auto vectors = manifest()["vectors"];
    std::size_t decoded = 0, rejected = 0;
    for (const auto& v : vectors) {
        const auto data =
            bytes_of(test::read_source_file("tests/vectors/nflog/" + v["file"].get<std::string>()));
        NflogStream stream;
        for (std::size_t length = 0; length <= data.size(); ++length) {
            // A copy of exactly `length` bytes, so that a read past the end is one for ASan.
            std::vector<std::byte> cut(data.begin(),
                                       data.begin() + static_cast<std::ptrdiff_t>(length));
            auto r = decode_nflog_message(cut, 0);
            r ? ++decoded : ++rejected;
            stream.process_datagram(cut, 0, {});
        }
        for (std::size_t at = 0; at < data.size(); ++at) {
            for (std::uint8_t value : {0x00, 0x01, 0x7f, 0x80, 0xff}) {
                auto corrupt = data;
                corrupt[at] = std::byte{value};
                auto r = decode_nflog_message(corrupt, 0);
                r ? ++decoded : ++rejected;
                stream.process_datagram(corrupt, 0, {});
            }
        }
    }
    // Both outcomes occur: the loop exercised the decoder, not just its first check.
    CHECK(decoded > 100);
    CHECK(rejected > 1000);
}
