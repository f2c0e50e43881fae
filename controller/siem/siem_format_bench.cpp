// siem_format_bench [records] [reps]: formats a drop mix as CEF, LEEF and OCSF message bodies
// (siem_formats.hpp, no syslog header, no I/O) and prints the CPU time per record of each
// format, best of `reps` passes. CPU time of this process, not wall time: the build machines
// are shared. The mix is bench/evidence_bench.py's (50 workloads, in and out, default, deny
// and quarantine drops, TCP and UDP, source port, MAC, interface; every tenth one an allowed
// flow), read back as the exporter sees it: a StoredEvent with its uploaded document.
#include "controller/siem/siem_formats.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

using bulkhead::controller::StoredEvent;
using bulkhead::siem::SiemFormat;
using bulkhead::siem::SiemRecord;

StoredEvent drop_event(std::size_t i) {
    const std::size_t k = i % 50;
    const std::string workload =
        "vdi-" + std::string(4 - std::to_string(k).size(), '0') + std::to_string(k);
    StoredEvent event;
    event.id = static_cast<std::int64_t>(i + 1);
    event.enforcer = "hv" + std::to_string(1 + (i / 5000) % 4);
    event.enforcer_seq = i + 1;
    event.type = i % 10 == 9 ? "allowed_flow" : "drop";
    event.time_ns = 1'764'000'000'000'000'000 + static_cast<std::int64_t>(i) * 1000;
    event.received_at = 1'764'000'000'500 + static_cast<std::int64_t>(i / 5000);
    event.workload = workload;
    event.direction = i % 4 != 0 ? "out" : "in";
    event.reason = std::array{"default", "deny", "default", "quarantine"}[i % 4];
    event.src = "10.64." + std::to_string(k / 256) + "." + std::to_string(k % 256);
    event.dst = "10.0." + std::to_string((i / 50) % 16) + "." + std::to_string((i * 7) % 250 + 1);
    event.protocol = i % 5 != 0 ? "tcp" : "udp";
    event.dport = std::array<std::uint16_t, 5>{445, 3389, 22, 135, 5985}[i % 5];
    event.sport = static_cast<std::uint16_t>(32768 + i % 28000);
    event.count = i % 7 == 0 ? 2 : 1;
    event.port = "vnet" + std::to_string(k);
    char mac[18];
    std::snprintf(mac, sizeof mac, "52:54:00:00:%02zx:%02zx", k / 256, k % 256);
    event.mac = mac;
    event.document = {{"type", event.type},
                      {"count", event.count},
                      {"time_ns", event.time_ns},
                      {"direction", event.direction},
                      {"reason", event.reason},
                      {"workload", event.workload},
                      {"src", event.src},
                      {"dst", event.dst},
                      {"proto_name", event.protocol},
                      {"dport", *event.dport},
                      {"sport", *event.sport},
                      {"family", 4},
                      {"mode", "enforce"},
                      {"physindev", event.port},
                      {"src_mac", event.mac}};
    return event;
}

double cpu_seconds() {
    timespec now{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
    return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) / 1e9;
}

} // namespace

int main(int argc, char** argv) {
    const std::size_t count = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 200'000;
    const int reps = argc > 2 ? std::max(1, std::atoi(argv[2])) : 3;
    std::vector<StoredEvent> events;
    events.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
        events.push_back(drop_event(i));
    }
    std::vector<SiemRecord> records;
    records.reserve(count);
    for (const auto& event : events) {
        records.push_back(SiemRecord{"drops/" + std::to_string(event.id), &event});
    }

    for (const auto& [name, format] :
         {std::pair{"cef", SiemFormat::Cef}, std::pair{"leef", SiemFormat::Leef},
          std::pair{"ocsf", SiemFormat::Ocsf}}) {
        double best = 0;
        std::size_t bytes = 0;
        for (int rep = 0; rep < reps; ++rep) {
            bytes = 0;
            const double start = cpu_seconds();
            for (const auto& record : records) {
                const auto body = bulkhead::siem::format_record(format, record);
                if (!body) {
                    std::fprintf(stderr, "%s: %s\n", name, body.error().c_str());
                    return 1;
                }
                bytes += body->size();
            }
            const double seconds = cpu_seconds() - start;
            best = rep == 0 ? seconds : std::min(best, seconds);
        }
        std::printf("%-5s %8.0f ns/record (CPU) %10.0f records/CPU-s %6.0f bytes/record\n", name,
                    best * 1e9 / static_cast<double>(count), static_cast<double>(count) / best,
                    static_cast<double>(bytes) / static_cast<double>(count));
    }
    return 0;
}
