// Upload bodies of drop events shaped like the enforcer's own (enforcer/nflog to_json), for
// the benchmarks that drive the controller's event endpoint (bench_ingest, bench_fleet).
// Pure: builds strings, no I/O; the same input always yields the same bodies.
//
// The mix: two scanners per enforcer make 70% of its drops, sweeping 4,096 hosts on 1,024
// ports; the rest is background noise: every other workload retrying the two blocked
// services it is configured for (a backup job, a stale drive mapping).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace bulkhead::bench {

struct DropSource {
    std::string workload;   // inventory id
    std::string address;    // its IPv4 address
    std::string interface;  // its port on the hypervisor
};

struct DropBatchSpec {
    std::vector<DropSource> sources;  // at least 3: the first two are the scanners
    std::size_t batch = 5000;         // events per upload body
    std::uint64_t seed = 1;
};

// `events` events numbered first_seq, first_seq + 1, ... (the spool's seq), in bodies of
// {"events":[{"seq":S,"event":{...}}...]}; event i is stamped start_ns + seq * 10 us.
std::vector<std::string> drop_event_upload_bodies(const DropBatchSpec& spec, std::uint64_t first_seq,
                                                  std::uint64_t events, std::int64_t start_ns);

}  // namespace bulkhead::bench
