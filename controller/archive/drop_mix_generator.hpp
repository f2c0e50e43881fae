// A deterministic, realistic mix of drop events for the archive's tests and benchmark: a few
// enforcers hosting a few hundred VDIs, some of which scan (one host, the usual lateral ports)
// or sweep (a subnet, one port), uploads arriving in batches per enforcer and interleaving in
// id order, kernel timestamps in microseconds advancing 1-50 ms per enforcer, NFLOG delivery a
// few hundred microseconds later, random source ports with retransmits repeating them. The
// documents are what enforcer/nflog/drop_event.cpp's to_json writes, compacted. Header-only
// (tests and archive_bench share it); its own PRNG, so the bytes never depend on the library's
// distributions.
#pragma once

#include "controller/domain/events.hpp"
#include "controller/evidence/evidence_records.hpp"
#include "controller/evidence/hash_chain.hpp"

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace bulkhead::archive::testing {

class SplitMix64 {
public:
    explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
    std::uint64_t next() {
        std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    // In [low, high].
    std::int64_t between(std::int64_t low, std::int64_t high) {
        return low + static_cast<std::int64_t>(next() % static_cast<std::uint64_t>(high - low + 1));
    }
    bool chance(int percent) { return between(0, 99) < percent; }

private:
    std::uint64_t state_;
};

struct ChainedEvent {
    controller::StoredEvent event;  // document_text filled
    evidence::Digest link{};
};

// `count` events with ids first_id.., linked into a drops chain from `previous`.
inline std::vector<ChainedEvent> generate_drop_mix(std::size_t count, std::uint64_t seed = 16,
                                                   evidence::ChainHead previous = {}) {
    constexpr int kEnforcers = 4;
    constexpr int kVdisPerEnforcer = 80;
    constexpr std::array<std::uint16_t, 4> kPorts{445, 3389, 22, 135};
    constexpr std::array<const char*, 5> kClasses{"c06ffe5b0", "c1a2b3c4d", "c77e0f123", "c0badf00d", "c5e5e5e5e"};
    SplitMix64 rng(seed);

    struct Scanner {
        int vdi = 0;
        bool sweeping = false;
        std::uint16_t port = 445;
        std::uint32_t target = 0;  // current destination (sweep: advances by one)
        std::uint16_t sport = 50000;
    };
    struct Enforcer {
        std::string name;
        std::int64_t clock_ns = 0;
        std::uint64_t spool_seq = 0;
        std::uint64_t nflog_seq = 0;
        std::uint64_t nflog_global = 0;
        std::vector<Scanner> active;
    };
    std::vector<Enforcer> enforcers(kEnforcers);
    for (int e = 0; e < kEnforcers; ++e) {
        enforcers[e].name = "enforcer-" + std::string(1, static_cast<char>('a' + e)) + ".vdi.example.net";
        enforcers[e].clock_ns = 1'767'225'600'000'000'000LL + rng.between(0, 5'000'000) * 1000;
        enforcers[e].spool_seq = static_cast<std::uint64_t>(rng.between(1000, 900000));
        enforcers[e].nflog_seq = static_cast<std::uint64_t>(rng.between(1, 100000));
        enforcers[e].nflog_global = enforcers[e].nflog_seq + static_cast<std::uint64_t>(rng.between(0, 5000));
    }
    auto address = [](std::uint32_t v) {
        return std::to_string(v >> 24) + "." + std::to_string((v >> 16) & 0xff) + "." + std::to_string((v >> 8) & 0xff) +
               "." + std::to_string(v & 0xff);
    };
    auto vdi_address = [](int enforcer, int vdi) {
        return (10U << 24) | (static_cast<std::uint32_t>(enforcer + 20) << 16) |
               (static_cast<std::uint32_t>(vdi / 200) << 8) | static_cast<std::uint32_t>(10 + vdi % 200);
    };
    auto new_scanner = [&](int enforcer) {
        Scanner s;
        s.vdi = static_cast<int>(rng.between(0, kVdisPerEnforcer - 1));
        s.sweeping = rng.chance(60);
        s.port = kPorts[static_cast<std::size_t>(rng.between(0, kPorts.size() - 1))];
        s.target = s.sweeping ? ((10U << 24) | (static_cast<std::uint32_t>(rng.between(20, 23)) << 16) |
                                 (static_cast<std::uint32_t>(rng.between(0, 3)) << 8) | 1U)
                              : vdi_address(static_cast<int>(rng.between(0, kEnforcers - 1)),
                                            static_cast<int>(rng.between(0, kVdisPerEnforcer - 1)));
        s.sport = static_cast<std::uint16_t>(rng.between(32768, 60999));
        (void)enforcer;
        return s;
    };
    for (int e = 0; e < kEnforcers; ++e) {
        for (int i = 0; i < 3; ++i) {
            enforcers[e].active.push_back(new_scanner(e));
        }
    }

    std::vector<ChainedEvent> out;
    out.reserve(count);
    evidence::ChainAppender chain(evidence::Stream::Drops, previous);
    std::int64_t next_id = static_cast<std::int64_t>(previous.sequence) + 1;
    std::int64_t policy_generation = 41;
    while (out.size() < count) {
        // One upload batch from one enforcer.
        const int e = static_cast<int>(rng.between(0, kEnforcers - 1));
        auto& enforcer = enforcers[e];
        const auto batch = static_cast<std::size_t>(rng.between(20, 400));
        std::vector<controller::StoredEvent> events;
        for (std::size_t k = 0; k < batch && out.size() + events.size() < count; ++k) {
            if (rng.chance(1)) {  // a scanner stops, another starts
                enforcer.active[static_cast<std::size_t>(rng.between(0, enforcer.active.size() - 1))] = new_scanner(e);
            }
            auto& s = enforcer.active[static_cast<std::size_t>(rng.between(0, enforcer.active.size() - 1))];
            const bool retransmit = rng.chance(20);
            if (!retransmit) {
                s.sport = static_cast<std::uint16_t>(rng.between(32768, 60999));
                if (s.sweeping) {
                    s.target = (s.target & 0xffffff00U) | ((s.target + 1) & 0xffU);
                } else {
                    s.port = kPorts[static_cast<std::size_t>(rng.between(0, kPorts.size() - 1))];
                }
            }
            enforcer.clock_ns += rng.between(1'000, 50'000) * 1000;
            ++enforcer.spool_seq;
            enforcer.nflog_seq += rng.chance(2) ? 2 : 1;
            enforcer.nflog_global += rng.chance(5) ? 3 : 1;
            if (out.size() + events.size() == count / 2) {  // one policy change mid-run
                ++policy_generation;
            }

            const auto src = address(vdi_address(e, s.vdi));
            const auto dst = address(s.target);
            const std::string workload = "vdi-" + std::string(1, static_cast<char>('a' + e)) + "-" + std::to_string(s.vdi);
            const std::string reason = rng.chance(90) ? "default" : "deny";
            const std::string subject = kClasses[static_cast<std::size_t>(s.vdi % kClasses.size())];
            const std::int64_t received_ns = enforcer.clock_ns + rng.between(5'000, 400'000);

            nlohmann::json j;
            j["type"] = "drop";
            j["count"] = 1;
            j["time_ns"] = enforcer.clock_ns;
            j["time_unix_ms"] = enforcer.clock_ns / 1'000'000;
            {
                const std::int64_t seconds = enforcer.clock_ns / 1'000'000'000;
                const std::int64_t micros = enforcer.clock_ns % 1'000'000'000 / 1000;
                const std::int64_t day_seconds = seconds % 86400;
                char text[40];
                std::snprintf(text, sizeof text, "2026-01-01T%02d:%02d:%02d.%06dZ", static_cast<int>(day_seconds / 3600),
                              static_cast<int>(day_seconds / 60 % 60), static_cast<int>(day_seconds % 60),
                              static_cast<int>(micros));
                j["time"] = text;  // the clock starts at 2026-01-01 and these runs stay within the day
            }
            j["time_source"] = "kernel";
            j["received_ns"] = received_ns;
            j["group"] = 10;
            j["seq"] = enforcer.nflog_seq;
            j["seq_global"] = enforcer.nflog_global;
            j["hook"] = "forward";
            j["prefix"] = "bh:enf:out:" + reason + ":" + subject;
            j["mode"] = "enforce";
            j["direction"] = "out";
            j["reason"] = reason;
            j["subject"] = subject;
            j["indev_ifindex"] = 3;
            j["indev"] = "br0";
            j["physindev_ifindex"] = 100 + s.vdi;
            j["physindev"] = "vnet" + std::to_string(s.vdi);
            char mac[18];
            std::snprintf(mac, sizeof mac, "52:54:00:%02x:%02x:%02x", e, s.vdi / 256, s.vdi % 256);
            j["src_mac"] = mac;
            j["dst_mac"] = "52:54:00:ff:00:01";
            j["mark"] = 0x1000 + e;
            j["family"] = 4;
            j["src"] = src;
            j["dst"] = dst;
            j["proto"] = 6;
            j["proto_name"] = "tcp";
            j["sport"] = s.sport;
            j["dport"] = s.port;
            j["tcp_flags"] = "syn";
            j["tcp_flags_raw"] = 2;
            j["ip_len"] = 60;
            j["workload"] = workload;
            j["would_drop"] = false;
            j["policy_generation"] = policy_generation;

            controller::StoredEvent event;
            event.enforcer = enforcer.name;
            event.enforcer_seq = enforcer.spool_seq;
            event.type = "drop";
            event.time_ns = enforcer.clock_ns;
            event.workload = workload;
            event.direction = "out";
            event.reason = reason;
            event.src = src;
            event.dst = dst;
            event.protocol = "tcp";
            event.dport = s.port;
            event.count = 1;
            event.document_text = j.dump();
            events.push_back(std::move(event));
        }
        // The controller stamps the batch when it arrives.
        const std::int64_t received_at = enforcer.clock_ns / 1'000'000 + rng.between(100, 900);
        for (auto& event : events) {
            event.id = next_id++;
            event.received_at = received_at;
            ChainedEvent chained;
            chained.link = chain.append(evidence::event_record(event, event.document_text)).hash;
            chained.event = std::move(event);
            out.push_back(std::move(chained));
        }
    }
    return out;
}

}  // namespace bulkhead::archive::testing
