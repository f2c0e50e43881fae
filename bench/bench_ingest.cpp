// bench_ingest: drop-event ingest rate through the controller's real API into its store.
//
// Against a running bulkhead-controller (plain HTTP on loopback, a fresh data directory):
//   1. puts an inventory of E enforcers with W workloads each (PUT /api/v1/inventory);
//   2. enrolls every enforcer (enrollment token, then /enforcers/enroll) for its credential;
//   3. builds every upload body in advance (not timed): events shaped like the enforcer's
//      own drop events (enforcer/nflog to_json), a mix of scanners sweeping many hosts and
//      ports and ordinary workloads hitting a few blocked services;
//   4. timed: one thread per enforcer uploads its batches one request at a time, as the
//      agent does (POST /api/v1/enforcers/{id}/events), each waiting for the answer, which
//      the controller gives only after the batch is committed;
//   5. checks every event was accepted exactly once, then re-sends each enforcer's first
//      batch and checks it is recognised as duplicates (at-least-once delivery).
// Prints one JSON object: events, seconds, events_per_second, batches, and the check results.
// Exit 1 when a request fails or a check does not hold.
#include "bench/drop_event_batches.hpp"

#include <CLI/CLI.hpp>
#include <httplib.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>


namespace {

using nlohmann::json;

struct Options {
    std::string host = "127.0.0.1";
    int port = 0;
    std::string admin_token;
    int enforcers = 8;
    int workloads_per_enforcer = 64;
    std::uint64_t events = 1'000'000;
    std::size_t batch = 5000;
    std::uint64_t seed = 1;
};

[[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr, "bench_ingest: %s\n", what.c_str());
    std::exit(1);
}

httplib::Headers bearer(const std::string& token) {
    return {{"Authorization", "Bearer " + token}};
}

json call(httplib::Client& client, const std::string& method, const std::string& path,
          const std::string& token, const json& body, int expect) {
    const std::string text = body.is_null() ? std::string() : body.dump();
    httplib::Result r = method == "PUT"
                            ? client.Put(path, bearer(token), text, "application/json")
                            : client.Post(path, bearer(token), text, "application/json");
    if (!r) {
        fail(method + " " + path + ": " + httplib::to_string(r.error()));
    }
    if (r->status != expect) {
        fail(method + " " + path + ": HTTP " + std::to_string(r->status) + " " + r->body.substr(0, 400));
    }
    return r->body.empty() ? json() : json::parse(r->body);
}

std::string enforcer_id(int e) {
    char text[16];
    std::snprintf(text, sizeof text, "hv-%02d", e + 1);
    return text;
}

std::string workload_id(int e, int w) {
    char text[24];
    std::snprintf(text, sizeof text, "vdi-%02d-%03d", e + 1, w + 1);
    return text;
}

std::string workload_address(int e, int w) {
    char text[24];
    std::snprintf(text, sizeof text, "10.%d.%d.%d", 64 + e, w / 250, w % 250 + 1);
    return text;
}

json inventory(const Options& o) {
    json enforcers = json::array();
    json workloads = json::array();
    for (int e = 0; e < o.enforcers; ++e) {
        enforcers.push_back({{"id", enforcer_id(e)}});
        for (int w = 0; w < o.workloads_per_enforcer; ++w) {
            char port[16];
            std::snprintf(port, sizeof port, "vdi%02d%03d", e + 1, w + 1);
            workloads.push_back({{"id", workload_id(e, w)},
                                 {"enforcer", enforcer_id(e)},
                                 {"addresses", {workload_address(e, w)}},
                                 {"labels", {{"role", "vdi"}}},
                                 {"user", "user-" + workload_id(e, w)},
                                 {"attachment", {{"mode", "port"}, {"interface", port}}}});
        }
    }
    return {{"enforcers", enforcers}, {"workloads", workloads}};
}

// One enforcer's upload bodies, `seq` counting from 1 as the agent's spool does.
std::vector<std::string> upload_bodies(const Options& o, int e, std::uint64_t events, std::int64_t start_ns) {
    bulkhead::bench::DropBatchSpec spec;
    spec.batch = o.batch;
    spec.seed = o.seed * 1000003 + static_cast<std::uint64_t>(e);
    for (int w = 0; w < o.workloads_per_enforcer; ++w) {
        char port[16];
        std::snprintf(port, sizeof port, "vdi%02d%03d", e + 1, w + 1);
        spec.sources.push_back({workload_id(e, w), workload_address(e, w), port});
    }
    return bulkhead::bench::drop_event_upload_bodies(spec, 1, events, start_ns);
}

} // namespace

int main(int argc, char** argv) {
    Options o;
    CLI::App app{"Drop-event ingest rate through the controller's API (bench/benchmarks/ingest.sh)"};
    app.add_option("--host", o.host, "controller address");
    app.add_option("--port", o.port, "controller plain-HTTP port")->required();
    app.add_option("--admin-token", o.admin_token, "an admin bearer token")->required();
    app.add_option("--enforcers", o.enforcers, "enforcers uploading at once");
    app.add_option("--workloads", o.workloads_per_enforcer, "workloads per enforcer");
    app.add_option("--events", o.events, "events in all");
    app.add_option("--batch", o.batch, "events per upload");
    app.add_option("--seed", o.seed, "random seed");
    CLI11_PARSE(app, argc, argv);
    if (o.port <= 0 || o.admin_token.empty() || o.enforcers < 1 || o.workloads_per_enforcer < 3 || o.batch < 1) {
        fail("usage: bench_ingest --port P --admin-token T [--enforcers 8] [--workloads 64] [--events N] "
             "[--batch 5000] [--seed 1]");
    }

    httplib::Client admin(o.host, o.port);
    admin.set_read_timeout(60, 0);
    call(admin, "PUT", "/api/v1/inventory", o.admin_token, inventory(o), 200);
    std::vector<std::string> credentials;
    for (int e = 0; e < o.enforcers; ++e) {
        const std::string id = enforcer_id(e);
        json token = call(admin, "POST", "/api/v1/enforcers/" + id + "/enrollment-token", o.admin_token, json(), 201);
        json enrolled = call(admin, "POST", "/api/v1/enforcers/enroll", "",
                             {{"enforcer", id}, {"token", token["token"]}, {"version", "bench"}, {"hostname", id}}, 201);
        credentials.push_back(enrolled["credential"].get<std::string>());
    }

    const std::int64_t start_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count() -
        3'600'000'000'000;
    std::vector<std::vector<std::string>> bodies(static_cast<std::size_t>(o.enforcers));
    std::uint64_t body_bytes = 0;
    std::size_t batches = 0;
    for (int e = 0; e < o.enforcers; ++e) {
        const std::uint64_t share = o.events / static_cast<std::uint64_t>(o.enforcers) +
                                    (static_cast<std::uint64_t>(e) < o.events % static_cast<std::uint64_t>(o.enforcers));
        bodies[static_cast<std::size_t>(e)] = upload_bodies(o, e, share, start_ns);
        for (const auto& b : bodies[static_cast<std::size_t>(e)]) {
            body_bytes += b.size();
            ++batches;
        }
    }
    std::fprintf(stderr, "bench_ingest: %llu events in %zu batches (%.1f MiB of JSON) from %d enforcers\n",
                 static_cast<unsigned long long>(o.events), batches, static_cast<double>(body_bytes) / 1048576.0,
                 o.enforcers);

    std::atomic<std::uint64_t> accepted{0};
    std::atomic<std::uint64_t> duplicates{0};
    std::atomic<bool> failed{false};
    std::vector<std::thread> uploaders;
    const auto t0 = std::chrono::steady_clock::now();
    for (int e = 0; e < o.enforcers; ++e) {
        uploaders.emplace_back([&, e] {
            httplib::Client client(o.host, o.port);
            client.set_read_timeout(120, 0);
            const std::string path = "/api/v1/enforcers/" + enforcer_id(e) + "/events";
            for (const auto& body : bodies[static_cast<std::size_t>(e)]) {
                auto r = client.Post(path, bearer(credentials[static_cast<std::size_t>(e)]), body, "application/json");
                if (!r || r->status != 200) {
                    std::fprintf(stderr, "bench_ingest: %s: %s\n", path.c_str(),
                                 r ? (std::to_string(r->status) + " " + r->body.substr(0, 300)).c_str()
                                   : httplib::to_string(r.error()).c_str());
                    failed = true;
                    return;
                }
                const json answer = json::parse(r->body);
                accepted += answer.value("accepted", std::uint64_t{0});
                duplicates += answer.value("duplicates", std::uint64_t{0});
            }
        });
    }
    for (auto& t : uploaders) {
        t.join();
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (failed) {
        fail("an upload failed");
    }

    // At-least-once delivery: a retried batch is recognised, not stored twice.
    std::uint64_t resent = 0;
    std::uint64_t resent_duplicates = 0;
    for (int e = 0; e < o.enforcers; ++e) {
        const auto& first = bodies[static_cast<std::size_t>(e)].front();
        json answer = call(admin, "POST", "/api/v1/enforcers/" + enforcer_id(e) + "/events",
                           credentials[static_cast<std::size_t>(e)], json::parse(first), 200);
        resent += json::parse(first)["events"].size();
        resent_duplicates += answer.value("duplicates", std::uint64_t{0});
        if (answer.value("accepted", std::uint64_t{1}) != 0) {
            fail("a re-sent batch was stored again");
        }
    }
    const bool exact = accepted == o.events && duplicates == 0 && resent_duplicates == resent;
    json result = {{"events", o.events},
                   {"accepted", accepted.load()},
                   {"duplicates_during_run", duplicates.load()},
                   {"resent", resent},
                   {"resent_recognised", resent_duplicates},
                   {"batches", batches},
                   {"batch", o.batch},
                   {"enforcers", o.enforcers},
                   {"json_mib", static_cast<double>(body_bytes) / 1048576.0},
                   {"seconds", seconds},
                   {"events_per_second", static_cast<double>(o.events) / seconds},
                   {"exact", exact}};
    std::printf("%s\n", result.dump().c_str());
    return exact ? 0 : 1;
}
