// bench_fleet: one controller holding a fleet of simulated enforcers (bench/benchmarks/fleet.sh).
//
// Against a running bulkhead-controller (TLS listener for the fleet, plain loopback listener
// for the admin side, a fresh data directory):
//   1. puts a generated inventory (bench/fleet_generator: by default 100,000 VDIs on 2,000
//      hypervisors) and its policy, and activates it;
//   2. creates an enrollment token per enforcer; the simulated enforcers redeem them over TLS;
//   3. ingest alone: a few enforcers upload drop events as the agent does (the baseline of
//      the ingest ratio);
//   4. starts the fleet: every enforcer opens its channel and status connections, applies its
//      ruleset and acks it; then the controller's RSS and threads, and /api/v1/health over TLS;
//   5. policy change: a new revision whose rule touches every VDI is activated; time from the
//      activation request to each enforcer's ack of its new desired hash;
//   6. quarantines through the API: time from the request to the ack of the workload's
//      enforcer, then the release;
//   7. ingest again with the whole fleet heart-beating: the ratio to step 3, and the
//      heartbeats the controller absorbed meanwhile.
// Every phase has a deadline: a controller that cannot hold the fleet yields figures of what
// was reached ("acked": how many) rather than a hang.
// Prints one JSON line per figure on stdout (the bench/lib.sh format); logs on stderr.
#include "bench/drop_event_batches.hpp"
#include "bench/fleet_generator.hpp"
#include "bench/fleet_json.hpp"
#include "bench/fleet_simulator.hpp"
#include "common/logging/logging.hpp"
#include "policies/net_address.hpp"

#include <CLI/CLI.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <fstream>
#include <map>
#include <set>
#include <thread>

namespace {

using nlohmann::json;
using bulkhead::bench::FleetSimulator;
using SteadyClock = std::chrono::steady_clock;

struct Options {
    std::string host = "127.0.0.1";
    std::string tls_port;
    int plain_port = 0;
    std::string ca_file;
    std::string server_name = "localhost";
    std::string admin_token;
    int controller_pid = 0;
    std::size_t enforcers = 2000;
    std::size_t vdis = 100'000;
    std::size_t segments = 200;  // the generated policy's size (bench/fleet_generator.hpp)
    std::size_t rules = 1'000;
    std::size_t departments = 12;
    std::size_t teams = 96;
    // 200: the 99th percentile of 50 samples is their maximum, one scheduling hiccup of a
    // two-core machine; of 200 it is the third slowest.
    std::size_t quarantines = 200;
    std::uint64_t ingest_events = 200'000;
    std::size_t ingest_enforcers = 8;
    int io_threads = 2;
    int phase_seconds = 120;
    int health_probes = 50;
    std::size_t abuse_streams = 500;
    std::size_t abuse_slow = 500;
    int hash_format = 2;
    int protocol = 3;
    std::string tls_host;  // the fleet's listener when not `host` (the lab's management address)
    bool join = false;
};

[[noreturn]] void fail(const std::string& what) {
    spdlog::critical("bench_fleet: {}", what);
    std::exit(1);
}

json call(httplib::Client& client, const std::string& method, const std::string& path, const std::string& token,
          const json& body, int expect) {
    const httplib::Headers headers{{"Authorization", "Bearer " + token}};
    const std::string text = body.is_null() ? std::string() : body.dump();
    httplib::Result r = method == "PUT"      ? client.Put(path, headers, text, "application/json")
                        : method == "GET"    ? client.Get(path, headers)
                        : method == "DELETE" ? client.Delete(path, headers)
                                             : client.Post(path, headers, text, "application/json");
    if (!r) {
        fail(method + " " + path + ": " + httplib::to_string(r.error()));
    }
    if (r->status != expect) {
        fail(method + " " + path + ": HTTP " + std::to_string(r->status) + " " + r->body.substr(0, 400));
    }
    return r->body.empty() ? json() : json::parse(r->body);
}

void emit(const std::string& metric, double value, const std::string& unit, const std::string& target,
          json extra = json::object()) {
    json line = {{"benchmark", "fleet"}, {"metric", metric}, {"value", value}, {"unit", unit},
                 {"target", target.empty() ? json() : json(target)}};
    for (auto& [k, v] : extra.items()) {
        line[k] = v;
    }
    // "< N" and ">= N" targets; a phase that did not complete (-1) misses its target.
    if (!target.empty()) {
        const double bound = std::stod(target.substr(target.find_first_of("0123456789")));
        line["met"] = value >= 0 && (target.rfind(">=", 0) == 0 ? value >= bound : value < bound);
    }
    std::printf("%s\n", line.dump().c_str());
    std::fflush(stdout);
}

double percentile(std::vector<double> values, double p) {
    if (values.empty()) {
        return 0;
    }
    std::sort(values.begin(), values.end());
    const auto rank = static_cast<std::size_t>(p / 100.0 * static_cast<double>(values.size() - 1) + 0.5);
    return values[std::min(rank, values.size() - 1)];
}

double ms_since(SteadyClock::time_point from, SteadyClock::time_point to) {
    return std::chrono::duration<double, std::milli>(to - from).count();
}

// The controller's resident memory (MiB) and thread count from /proc.
std::pair<double, long> process_facts(int pid) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    std::string key;
    double rss_mib = 0;
    long threads = 0;
    while (status >> key) {
        if (key == "VmRSS:") {
            long kib = 0;
            status >> kib;
            rss_mib = static_cast<double>(kib) / 1024.0;
        } else if (key == "Threads:") {
            status >> threads;
        }
        status.ignore(1 << 20, '\n');
    }
    return {rss_mib, threads};
}

// Enforcers the controller reports in sync (applied hash == desired hash), polled until all
// of them are or the deadline passes.
std::size_t wait_for_in_sync(httplib::Client& admin, const std::string& token, std::size_t enforcers,
                             SteadyClock::time_point deadline) {
    std::size_t in_sync = 0;
    while (SteadyClock::now() < deadline) {
        const json listed = call(admin, "GET", "/api/v1/enforcers", token, json(), 200);
        in_sync = 0;
        for (const auto& e : listed.at("enforcers")) {
            in_sync += e.value("in_sync", false) ? 1 : 0;
        }
        if (in_sync >= enforcers) {
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return in_sync;
}

// Stores and activates `policy` plus a new rule from every VDI to a new address: a change
// of every enforcer's ruleset. Returns when the activation request was sent.
SteadyClock::time_point activate_change_touching_every_vdi(httplib::Client& admin, const std::string& token,
                                                           json policy) {
    policy["services"].push_back({{"name", "bench-change"}, {"entries", {{{"protocol", "tcp"}, {"ports", {7001}}}}}});
    policy["segments"].push_back({{"name", "bench-all-vdis"}, {"selector", {{"labels", {{"role", "vdi"}}}}}});
    policy["segments"].push_back({{"name", "bench-change-target"}, {"selector", {{"cidrs", {"198.18.0.1/32"}}}}});
    policy["rules"].push_back({{"name", "bench-change"}, {"action", "allow"}, {"from", {"bench-all-vdis"}},
                               {"to", {"bench-change-target"}}, {"services", {"bench-change"}}});
    const json revision = call(admin, "POST", "/api/v1/policies", token, policy, 201);
    const auto sent = SteadyClock::now();
    call(admin, "POST", "/api/v1/policies/" + std::to_string(revision["id"].get<std::int64_t>()) + "/activate",
         token, json::object(), 200);
    return sent;
}

std::map<std::string, std::string> desired_hashes(httplib::Client& admin, const std::string& token) {
    std::map<std::string, std::string> hashes;
    const json listed = call(admin, "GET", "/api/v1/enforcers", token, json(), 200);
    for (const auto& e : listed.at("enforcers")) {
        hashes[e.at("id").get<std::string>()] = e.value("desired_hash", "");
    }
    return hashes;
}

// Latencies from `t0` (ms) of the enforcers that acked: the ack, and when the message that
// brought the acked ruleset had arrived (the controller's part) and was applied.
struct AckLatencies {
    std::vector<double> acked, delivered, applied;
};

// Waits until every enforcer acked its desired hash or the deadline. The first
// `connected_before` enforcers were started before t0 (they upload the ingest phase's
// events up their channel): an ack of theirs from any time counts, without a latency.
AckLatencies wait_for_acks(const FleetSimulator& fleet, const std::map<std::string, std::string>& desired,
                           SteadyClock::time_point t0, SteadyClock::time_point deadline,
                           std::size_t connected_before = 0) {
    std::vector<std::optional<double>> latency(fleet.size());
    AckLatencies out;
    std::size_t done = 0;
    while (done < fleet.size() && SteadyClock::now() < deadline) {
        for (std::size_t i = 0; i < fleet.size(); ++i) {
            if (latency[i]) {
                continue;
            }
            const auto it = desired.find(fleet.id(i));
            const auto ack = fleet.last_ack(i);
            if (i < connected_before && it != desired.end() && ack && ack->hash == it->second) {
                latency[i] = -1;
                ++done;
                continue;
            }
            if (it != desired.end() && ack && ack->hash == it->second && ack->at >= t0) {
                latency[i] = ms_since(t0, ack->at);
                out.delivered.push_back(ms_since(t0, ack->received_at));
                out.applied.push_back(ms_since(t0, ack->applied_at));
                ++done;
            }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (done < fleet.size()) {
        for (std::size_t i = 0; i < fleet.size(); ++i) {
            if (!latency[i]) {
                const auto it = desired.find(fleet.id(i));
                const auto ack = fleet.last_ack(i);
                spdlog::info("bench_fleet: {} did not ack its desired {} (last ack: {})", fleet.id(i),
                             it == desired.end() ? std::string("(none)") : it->second, ack ? ack->hash : std::string("none"));
                break;  // one example is enough
            }
        }
    }
    for (const auto& l : latency) {
        if (l && *l >= 0) {
            out.acked.push_back(*l);
        }
    }
    return out;
}

// Uploads `events` events from each of the first `n` enforcers at once; events/s.
double ingest(FleetSimulator& fleet, const bulkhead::bench::Fleet& model, const Options& o, std::uint64_t first_seq,
              std::uint64_t& accepted) {
    std::vector<std::vector<std::string>> bodies(o.ingest_enforcers);
    const std::uint64_t share = o.ingest_events / o.ingest_enforcers;
    const auto start_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::system_clock::now().time_since_epoch()).count() - 3'600'000'000'000;
    for (std::size_t e = 0; e < o.ingest_enforcers; ++e) {
        bulkhead::bench::DropBatchSpec spec;
        spec.seed = 1000003 + e;
        for (const auto& w : model.inventory.workloads) {
            if (w.enforcer == fleet.id(e) && !w.addresses.empty() && w.attachment &&
                !w.attachment->interfaces.empty() && spec.sources.size() < 64) {
                spec.sources.push_back({w.id, bulkhead::policy::to_string(w.addresses.front()),
                                        w.attachment->interfaces.front()});
            }
        }
        bodies[e] = bulkhead::bench::drop_event_upload_bodies(spec, first_seq, share, start_ns);
    }
    std::vector<std::uint64_t> counts(o.ingest_enforcers);
    std::vector<std::thread> uploaders;
    const auto t0 = SteadyClock::now();
    const auto deadline = t0 + std::chrono::seconds(o.phase_seconds);
    for (std::size_t e = 0; e < o.ingest_enforcers; ++e) {
        uploaders.emplace_back([&, e] { counts[e] = fleet.upload(e, bodies[e], deadline); });
    }
    for (auto& t : uploaders) {
        t.join();
    }
    const double seconds = std::chrono::duration<double>(SteadyClock::now() - t0).count();
    accepted = 0;
    for (auto c : counts) {
        accepted += c;
    }
    return static_cast<double>(accepted) / seconds;
}

struct QuarantineTimes {
    std::vector<double> ms;
    std::vector<double> pushed_ms;  // request -> the diff verified on the channel
    std::size_t missed = 0;
};

// Quarantines `count` random managed workloads through the API, each timed from the request
// to its enforcer's ack of the new desired hash, and releases each (the release waits for its
// ack too, untimed).
QuarantineTimes measure_quarantines(httplib::Client& admin, const Options& o, const bulkhead::bench::Fleet& model,
                                    const FleetSimulator& fleet, std::size_t count, std::uint64_t seed) {
    QuarantineTimes out;
    std::map<std::string, std::size_t> index_of;
    for (std::size_t i = 0; i < fleet.size(); ++i) {
        index_of[fleet.id(i)] = i;
    }
    std::vector<const bulkhead::policy::Workload*> managed;
    for (const auto& w : model.inventory.workloads) {
        if (!w.enforcer.empty() && !w.critical) {
            managed.push_back(&w);
        }
    }
    bulkhead::bench::Prng pick(seed);
    for (std::size_t q = 0; q < count && !managed.empty(); ++q) {
        const auto& w = *managed[pick.below(managed.size())];
        const auto where = index_of.find(w.enforcer);
        if (where == index_of.end() || !fleet.last_ack(where->second)) {
            ++out.missed;
            continue;
        }
        const std::string path = "/api/v1/enforcers/" + w.enforcer;
        for (const bool release : {false, true}) {
            const auto t = SteadyClock::now();
            if (release) {
                call(admin, "DELETE", "/api/v1/quarantines/" + w.id, o.admin_token, json(), 200);
            } else {
                call(admin, "POST", "/api/v1/quarantines", o.admin_token, {{"workload", w.id}, {"reason", "bench"}}, 201);
            }
            const std::string hash = call(admin, "GET", path, o.admin_token, json(), 200).value("desired_hash", "");
            bool acked = false;
            while (SteadyClock::now() < t + std::chrono::seconds(10)) {
                const auto ack = fleet.last_ack(where->second);
                if (ack && ack->hash == hash && ack->at >= t) {
                    if (!release) {
                        out.ms.push_back(ms_since(t, ack->at));
                        out.pushed_ms.push_back(ms_since(t, ack->applied_at));
                    }
                    acked = true;
                    break;
                }
                std::this_thread::sleep_for(std::chrono::microseconds(200));
            }
            if (!acked) {
                ++out.missed;
                break;
            }
        }
        if (out.missed >= 3 && out.ms.empty()) {
            out.missed += count - q - 1;  // none goes through: the rest would not either
            break;
        }
    }
    return out;
}

// Health over TLS: latencies of the probes answered 200 within 5 s, and how many were not.
std::pair<std::vector<double>, std::size_t> probe_health(FleetSimulator& fleet, int probes) {
    std::vector<double> health;
    std::size_t failures = 0;
    for (int i = 0; i < probes; ++i) {
        const auto h0 = SteadyClock::now();
        const auto status = fleet.probe("/api/v1/health", std::chrono::milliseconds(5000));
        if (status && *status == 200) {
            health.push_back(ms_since(h0, SteadyClock::now()));
        } else {
            ++failures;
            if (health.empty() && failures == 3) {
                failures = static_cast<std::size_t>(probes);  // not answering at all: do not wait out every probe
                break;
            }
        }
    }
    return {health, failures};
}

}  // namespace

// The simulated fleet, every enforcer enrolled over TLS (not connected yet).
std::unique_ptr<FleetSimulator> enrolled_fleet(const Options& o, const bulkhead::bench::Fleet& model,
                                               httplib::Client& admin) {
    std::vector<bulkhead::bench::SimulatedEnforcerIdentity> identities;
    std::vector<std::string> tokens;
    for (const auto& e : model.inventory.enforcers) {
        identities.push_back({e.id, ""});
        tokens.push_back(call(admin, "POST", "/api/v1/enforcers/" + e.id + "/enrollment-token", o.admin_token, json(),
                              201)["token"].get<std::string>());
        if (identities.size() == o.enforcers) {
            break;
        }
    }
    bulkhead::bench::SimulatorOptions sim_options;
    sim_options.host = o.tls_host.empty() ? o.host : o.tls_host;
    sim_options.port = o.tls_port;
    sim_options.ca_file = o.ca_file;
    sim_options.server_name = o.server_name;
    sim_options.io_threads = o.io_threads;
    sim_options.hash_format = o.hash_format;
    // An enforcer of the previous release speaks protocol 2 (stream plus POSTs) as well.
    sim_options.protocol = o.hash_format == 1 ? 2 : o.protocol;
    auto fleet = std::make_unique<FleetSimulator>(sim_options, identities);
    const auto enrolled = fleet->enroll_all(tokens, 16, std::chrono::seconds(o.phase_seconds));
    if (enrolled != identities.size()) {
        fail(std::to_string(enrolled) + " of " + std::to_string(identities.size()) + " enforcers enrolled");
    }
    spdlog::info("bench_fleet: {} enforcers enrolled over TLS", enrolled);
    return fleet;
}

// --join: the abuse acceptance on a controller that already runs a site (tests/lab_fleet).
// The generated hypervisors and VDIs join its inventory under its active policy; the fleet
// connects and every enforcer acks; dashboard streams and slow unauthenticated heads pile
// on; health is probed; `{"ready":true}` on stdout tells the caller, which checks a
// quarantine on a real enforcer meanwhile and then writes a line (or closes stdin); health
// is probed again and no simulated enforcer may have lost its channel. Exit 0 only when
// every enforcer acked, every stream and slow head was held open, every health probe
// answered within 5 s with p99 < 100 ms, and no channel was lost.
int run_join(const Options& o, const bulkhead::bench::Fleet& model, httplib::Client& admin) {
    json site = call(admin, "GET", "/api/v1/inventory", o.admin_token, json(), 200);
    const json generated = bulkhead::bench::inventory_to_json(model.inventory);
    for (const auto& e : generated.at("enforcers")) {
        site["enforcers"].push_back(e);
    }
    // The site's own workloads keep their MACs and addresses; a generated workload that
    // would share one is left out (the fleet generator numbers MACs from the same prefix).
    std::set<std::string> taken;
    for (const auto& w : site["workloads"]) {
        taken.insert(w.value("mac", ""));
        for (const auto& a : w.value("addresses", json::array())) {
            taken.insert(a.get<std::string>());
        }
    }
    std::size_t left_out = 0;
    for (const auto& w : generated.at("workloads")) {
        bool clash = taken.contains(w.value("mac", "-"));
        for (const auto& a : w.value("addresses", json::array())) {
            clash = clash || taken.contains(a.get<std::string>());
        }
        if (clash) {
            ++left_out;
            continue;
        }
        site["workloads"].push_back(w);
    }
    spdlog::info("bench_fleet: joining the site's {} workloads with {} generated ({} left out: MAC or address in use)",
                 site["workloads"].size() - (generated.at("workloads").size() - left_out),
                 generated.at("workloads").size() - left_out, left_out);
    call(admin, "PUT", "/api/v1/inventory", o.admin_token, site, 200);
    auto fleet = enrolled_fleet(o, model, admin);

    const auto desired = desired_hashes(admin, o.admin_token);
    auto t = SteadyClock::now();
    fleet->start();
    const auto connected = wait_for_acks(*fleet, desired, t, t + std::chrono::seconds(o.phase_seconds)).acked;
    emit("join_all_acked", connected.size() == o.enforcers ? percentile(connected, 100) : -1, "ms", "",
         {{"acked", connected.size()}, {"enforcers", o.enforcers}, {"vdis", o.vdis}});
    bool ok = connected.size() == o.enforcers;

    const auto before = fleet->counters();
    fleet->open_abuse(o.abuse_streams, o.admin_token, o.abuse_slow, std::chrono::milliseconds(2000));
    const auto until = SteadyClock::now() + std::chrono::seconds(o.phase_seconds);
    while (SteadyClock::now() < until &&
           (fleet->abuse().streams_open < o.abuse_streams || fleet->abuse().slow_open < o.abuse_slow)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    const auto opened = fleet->abuse();
    ok = ok && opened.streams_open == o.abuse_streams && opened.slow_open == o.abuse_slow;
    auto [health, failures] = probe_health(*fleet, o.health_probes);

    std::cout << json{{"ready", true}}.dump() << std::endl;
    std::string line;
    std::getline(std::cin, line);  // the caller's quarantine on a real enforcer is done

    auto [more, more_failures] = probe_health(*fleet, o.health_probes);
    health.insert(health.end(), more.begin(), more.end());
    failures += more_failures;
    const auto after = fleet->counters();
    const auto held = fleet->abuse();
    const double lost = static_cast<double>(after.channel_failures - before.channel_failures);
    const double p99 = failures == 0 ? percentile(health, 99) : -1;
    emit("health_p99_under_abuse", p99, "ms", "< 100",
         {{"probes", health.size()}, {"failed_or_over_5s", failures}, {"p50_ms", percentile(health, 50)},
          {"dashboard_streams", o.abuse_streams}, {"streams_open", held.streams_open},
          {"slow_heads", o.abuse_slow}, {"slow_open", held.slow_open}, {"slow_cut_by_server", held.slow_cut},
          {"enforcers", o.enforcers}});
    emit("channels_lost_under_abuse", lost, "channels", "< 1",
         {{"channels_open", fleet->channels_open()}, {"enforcers", o.enforcers}});
    ok = ok && failures == 0 && p99 >= 0 && p99 < 100 && lost == 0 && fleet->channels_open() == o.enforcers;
    fleet->stop();
    return ok ? 0 : 1;
}

int main(int argc, char** argv) {
    Options o;
    CLI::App app{"One controller holding a fleet of simulated enforcers (bench/benchmarks/fleet.sh)"};
    app.add_option("--host", o.host, "controller address");
    app.add_option("--tls-port", o.tls_port, "the controller's TLS listener port (the fleet's)")->required();
    app.add_option("--plain-port", o.plain_port, "the controller's plain loopback port (admin)")->required();
    app.add_option("--ca", o.ca_file, "the controller's CA (PEM)")->required();
    app.add_option("--server-name", o.server_name, "the name in the controller's certificate");
    app.add_option("--admin-token", o.admin_token, "an admin bearer token")->required();
    app.add_option("--controller-pid", o.controller_pid, "the controller's process id (RSS, threads)")->required();
    app.add_option("--enforcers", o.enforcers, "simulated enforcers (hypervisors)");
    app.add_option("--vdis", o.vdis, "VDIs in the inventory");
    app.add_option("--segments", o.segments, "segments in the generated policy");
    app.add_option("--rules", o.rules, "rules in the generated policy");
    app.add_option("--departments", o.departments, "departments (VDI pools) in the generated fleet");
    app.add_option("--teams", o.teams, "teams over the departments");
    app.add_option("--quarantines", o.quarantines, "quarantines measured");
    app.add_option("--ingest-events", o.ingest_events, "events per ingest phase");
    app.add_option("--ingest-enforcers", o.ingest_enforcers, "enforcers uploading in the ingest phases");
    app.add_option("--io-threads", o.io_threads, "simulator threads");
    app.add_option("--phase-seconds", o.phase_seconds, "deadline of each phase");
    app.add_option("--health-probes", o.health_probes, "health requests measured");
    app.add_option("--abuse-streams", o.abuse_streams, "dashboard streams opened in the abuse phase");
    app.add_option("--abuse-slow", o.abuse_slow, "slow-header connections in the abuse phase");
    app.add_option("--hash-format", o.hash_format,
                   "1: the simulated enforcers speak the previous release's protocol (format-1 hashes); "
                   "the run then checks only that they get in sync and follow a policy change")
        ->check(CLI::Range(1, 2));
    app.add_option("--protocol", o.protocol,
                   "3: one WebSocket per enforcer (this release); 2: stream plus status and upload POSTs "
                   "(the previous release; implied by --hash-format 1)")
        ->check(CLI::Range(2, 3));
    std::string log_level = "info";
    app.add_option("--tls-host", o.tls_host, "the controller's TLS listener address when not --host");
    app.add_flag("--join", o.join,
                 "join the controller's site (its inventory and active policy) and check that the fleet is held "
                 "under abuse (tests/lab_fleet); see run_join");
    app.add_option("--log-level", log_level, "spdlog level (debug shows every simulated enforcer's errors)");
    CLI11_PARSE(app, argc, argv);
    if (auto logging = bulkhead::logging::setup("bench_fleet", log_level); !logging) {
        std::fprintf(stderr, "bench_fleet: --log-level: %s\n", logging.error().c_str());
        return 2;
    }
    if (o.ingest_enforcers == 0 || o.ingest_enforcers > o.enforcers) {
        fail("--ingest-enforcers must be 1..--enforcers");
    }

    bulkhead::bench::FleetSpec spec;
    spec.vdis = o.vdis;
    spec.hypervisors = o.enforcers;
    spec.segments = o.segments;
    spec.rules = o.rules;
    spec.departments = o.departments;
    spec.teams = o.teams;
    bulkhead::bench::Fleet model;
    try {
        model = bulkhead::bench::generate_fleet(spec);
    } catch (const std::invalid_argument& e) {
        fail(e.what());
    }
    json policy = bulkhead::bench::policy_to_json(model.policy);
    const json inventory = bulkhead::bench::inventory_to_json(model.inventory);

    httplib::Client admin(o.host, o.plain_port);
    admin.set_read_timeout(600, 0);
    admin.set_tcp_nodelay(true);  // else a request's head and body may wait on a delayed ACK (~40 ms)
    admin.set_write_timeout(600, 0);
    if (o.join) {
        return run_join(o, model, admin);
    }
    // 100,000 workloads are more than one request may carry (16 MiB): the enforcers and the
    // first workloads in one PUT, the rest in bulk upserts of 10,000.
    auto t = SteadyClock::now();
    constexpr std::size_t kWorkloadsPerRequest = 10'000;
    const auto& workloads = inventory.at("workloads");
    json first = inventory;
    first["workloads"] = json::array();
    for (std::size_t i = 0; i < std::min(workloads.size(), kWorkloadsPerRequest); ++i) {
        first["workloads"].push_back(workloads[i]);
    }
    call(admin, "PUT", "/api/v1/inventory", o.admin_token, first, 200);
    for (std::size_t start = kWorkloadsPerRequest; start < workloads.size(); start += kWorkloadsPerRequest) {
        json chunk = json::array();
        for (std::size_t i = start; i < std::min(workloads.size(), start + kWorkloadsPerRequest); ++i) {
            chunk.push_back(workloads[i]);
        }
        call(admin, "POST", "/api/v1/workloads/bulk", o.admin_token, json{{"upsert", std::move(chunk)}}, 200);
    }
    const double inventory_ms = ms_since(t, SteadyClock::now());
    auto revision = call(admin, "POST", "/api/v1/policies", o.admin_token, policy, 201);
    t = SteadyClock::now();
    call(admin, "POST", "/api/v1/policies/" + std::to_string(revision["id"].get<std::int64_t>()) + "/activate",
         o.admin_token, json::object(), 200);
    const double activate_ms = ms_since(t, SteadyClock::now());
    spdlog::info("bench_fleet: inventory of {} VDIs on {} enforcers put in {:.0f} ms, policy activated in {:.0f} ms",
                 o.vdis, o.enforcers, inventory_ms, activate_ms);

    auto fleet_holder = enrolled_fleet(o, model, admin);
    FleetSimulator& fleet = *fleet_holder;

    // 3. Ingest alone. With protocol 3 events go up the channel socket, so the uploading
    // enforcers connect first (the rest of the fleet stays away until step 4).
    if (o.hash_format != 1 && o.protocol == 3) {
        fleet.start(o.ingest_enforcers);
        if (!fleet.wait_connected(o.ingest_enforcers, SteadyClock::now() + std::chrono::seconds(o.phase_seconds))) {
            fail("the uploading enforcers did not connect");
        }
    }
    std::uint64_t accepted_alone = 0;
    const double ingest_alone = ingest(fleet, model, o, 1, accepted_alone);
    spdlog::info("bench_fleet: ingest alone {:.0f} events/s ({} accepted)", ingest_alone, accepted_alone);

    if (o.hash_format == 1) {
        // Enforcers of the previous release: hashes of their own format, which only the
        // controller translates; so the check is the controller's own view (in_sync).
        t = SteadyClock::now();
        fleet.start();
        auto deadline = t + std::chrono::seconds(o.phase_seconds);
        const auto in_sync_first = wait_for_in_sync(admin, o.admin_token, o.enforcers, deadline);
        emit("previous_release_in_sync", static_cast<double>(in_sync_first), "enforcers", "",
             {{"enforcers", o.enforcers}, {"ms", ms_since(t, SteadyClock::now())}});
        t = activate_change_touching_every_vdi(admin, o.admin_token, policy);
        const auto after_change = wait_for_in_sync(admin, o.admin_token, o.enforcers,
                                                   SteadyClock::now() + std::chrono::seconds(o.phase_seconds));
        emit("previous_release_in_sync_after_change", static_cast<double>(after_change), "enforcers", "",
             {{"enforcers", o.enforcers}, {"ms", ms_since(t, SteadyClock::now())},
              {"diffs", fleet.counters().diffs}, {"resyncs", fleet.counters().resyncs}});
        fleet.stop();
        if (in_sync_first < o.enforcers || after_change < o.enforcers) {
            fail("enforcers of the previous release not in sync: " + std::to_string(in_sync_first) + " then " +
                 std::to_string(after_change) + " of " + std::to_string(o.enforcers));
        }
        return 0;
    }

    // 4. The fleet connects.
    auto desired = desired_hashes(admin, o.admin_token);
    t = SteadyClock::now();
    fleet.start();
    const std::size_t connected_before = o.protocol == 3 ? std::min(o.ingest_enforcers, o.enforcers) : 0;
    const auto connected =
        wait_for_acks(fleet, desired, t, t + std::chrono::seconds(o.phase_seconds), connected_before).acked;
    const double connect_ms = ms_since(t, SteadyClock::now());
    spdlog::info("bench_fleet: {} of {} enforcers acked their first ruleset ({} channels open, {} connected "
                 "before) after {:.0f} ms",
                 connected.size() + connected_before, o.enforcers, fleet.channels_open(), connected_before, connect_ms);
    emit("connect_all_acked",
         connected.size() + connected_before == o.enforcers ? percentile(connected, 100) : -1, "ms", "",
         {{"acked", connected.size() + connected_before}, {"connected_before", connected_before},
          {"protocol", o.protocol}, {"enforcers", o.enforcers}, {"vdis", o.vdis}, {"segments", o.segments},
          {"rules", o.rules},
          {"channels_open", fleet.channels_open()}, {"p50_ms", percentile(connected, 50)},
          {"inventory_put_ms", inventory_ms}, {"first_activation_ms", activate_ms}});
    const auto [rss_mib, threads] = process_facts(o.controller_pid);
    emit("controller_rss", rss_mib, "MiB", "", {{"enforcers_connected", fleet.channels_open()}});
    emit("controller_threads", static_cast<double>(threads), "threads", "",
         {{"enforcers_connected", fleet.channels_open()}});

    const auto [health, health_failures] = probe_health(fleet, o.health_probes);
    emit("health_p99_with_fleet", health_failures == 0 ? percentile(health, 99) : -1, "ms", "< 100",
         {{"probes", o.health_probes}, {"failed_or_over_5s", health_failures}, {"p50_ms", percentile(health, 50)}});

    // 5. A policy change that touches every VDI: a new rule from all VDIs to a new address.
    t = activate_change_touching_every_vdi(admin, o.admin_token, policy);
    const double change_activation_ms = ms_since(t, SteadyClock::now());
    desired = desired_hashes(admin, o.admin_token);
    // The deadline runs from the answer: the activation itself (compiling every enforcer) is
    // part of the latency but may be long on its own.
    const auto change = wait_for_acks(fleet, desired, t, SteadyClock::now() + std::chrono::seconds(o.phase_seconds));
    const auto& changed = change.acked;
    spdlog::info("bench_fleet: policy change acked by {} of {} enforcers", changed.size(), o.enforcers);
    // delivered: the diff had arrived whole at the simulated enforcer (what the controller
    // does); applied: the enforcer had applied and verified it (the simulator's two threads
    // apply 2,000 diffs on the controller's cores, which real enforcers do on their own).
    emit("policy_change_all_acked_p99", changed.size() == o.enforcers ? percentile(changed, 99) : -1, "ms", "< 5000",
         {{"acked", changed.size()}, {"enforcers", o.enforcers}, {"p50_ms", percentile(changed, 50)},
          {"max_ms", percentile(changed, 100)}, {"activation_answer_ms", change_activation_ms},
          {"delivered_p50_ms", percentile(change.delivered, 50)}, {"delivered_p99_ms", percentile(change.delivered, 99)},
          {"applied_p99_ms", percentile(change.applied, 99)}});

    // 6. Quarantines of workloads on enforcers that are in sync.
    const auto quarantines = measure_quarantines(admin, o, model, fleet, o.quarantines, 7);
    emit("quarantine_acked_p99", quarantines.missed == 0 ? percentile(quarantines.ms, 99) : -1, "ms", "< 10",
         {{"quarantines", o.quarantines}, {"missed", quarantines.missed}, {"p50_ms", percentile(quarantines.ms, 50)},
          {"pushed_p50_ms", percentile(quarantines.pushed_ms, 50)}, {"pushed_p99_ms", percentile(quarantines.pushed_ms, 99)},
          {"max_ms", percentile(quarantines.ms, 100)}, {"p99_is_max", quarantines.ms.size() < 100},
          {"enforcers_connected", fleet.channels_open()}});

    // 7. Ingest while the fleet heart-beats.
    const auto status_before = fleet.counters().status_ok;
    const auto i0 = SteadyClock::now();
    std::uint64_t accepted_with = 0;
    const double ingest_with = ingest(fleet, model, o, 1 + o.ingest_events, accepted_with);
    const double window = std::chrono::duration<double>(SteadyClock::now() - i0).count();
    const double heartbeats = static_cast<double>(fleet.counters().status_ok - status_before) / window;
    emit("heartbeats_absorbed_during_ingest", heartbeats, "heartbeats/s", "",
         {{"enforcers", o.enforcers}, {"heartbeat_interval_ms", 5000}, {"nominal", static_cast<double>(o.enforcers) / 5.0}});
    emit("ingest_with_fleet_ratio", ingest_alone > 0 ? ingest_with / ingest_alone : 0, "ratio", ">= 0.9",
         {{"baseline", "ingest_alone"}, {"baseline_value", ingest_alone}, {"value_events_per_second", ingest_with},
          {"accepted_alone", accepted_alone}, {"accepted_with_fleet", accepted_with},
          {"events_per_phase", o.ingest_events}});

    // 8. Abuse: dashboard streams and slow unauthenticated heads on top of the fleet.
    if (o.abuse_streams + o.abuse_slow > 0) {
        const auto before = fleet.counters();
        const std::string soc_token = o.admin_token;
        fleet.open_abuse(o.abuse_streams, soc_token, o.abuse_slow, std::chrono::milliseconds(2000));
        const auto until = SteadyClock::now() + std::chrono::seconds(o.phase_seconds);
        while (SteadyClock::now() < until &&
               (fleet.abuse().streams_open < o.abuse_streams || fleet.abuse().slow_open < o.abuse_slow)) {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        std::this_thread::sleep_for(std::chrono::seconds(5));  // the slow heads are mid-way
        const auto abuse = fleet.abuse();
        const auto [abused_health, abused_failures] = probe_health(fleet, o.health_probes);
        const auto abused_quarantines = measure_quarantines(admin, o, model, fleet, 10, 11);
        const auto after = fleet.counters();
        const json figures{{"dashboard_streams", o.abuse_streams}, {"streams_open", abuse.streams_open},
                           {"slow_heads", o.abuse_slow}, {"slow_open", abuse.slow_open},
                           {"slow_cut_by_server", fleet.abuse().slow_cut}, {"enforcers", o.enforcers}};
        json health_extra = figures;
        health_extra["failed_or_over_5s"] = abused_failures;
        health_extra["p50_ms"] = percentile(abused_health, 50);
        emit("health_p99_under_abuse", abused_failures == 0 ? percentile(abused_health, 99) : -1, "ms", "< 100",
             health_extra);
        emit("quarantine_acked_p99_under_abuse",
             abused_quarantines.missed == 0 ? percentile(abused_quarantines.ms, 99) : -1, "ms", "",
             {{"quarantines", 10}, {"missed", abused_quarantines.missed}});
        emit("channels_lost_under_abuse",
             static_cast<double>(after.channel_failures - before.channel_failures), "channels", "< 1",
             {{"channels_open", fleet.channels_open()}, {"enforcers", o.enforcers}});
    }

    const auto c = fleet.counters();
    spdlog::info("bench_fleet: channels opened {}, channel failures {}, resyncs {}, rulesets {}, diffs {}, status ok {}, "
                 "status failures {}, upload failures {}",
                 c.channels_opened, c.channel_failures, c.resyncs, c.rulesets, c.diffs, c.status_ok, c.status_failures,
                 c.upload_failures);
    fleet.stop();
    return 0;
}
