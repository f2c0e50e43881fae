// The real bulkhead-enforcer with --controller against the fake controller, applying to the
// real kernel. The whole test process moves into a fresh network namespace first
// (unshare(CLONE_NEWNET)), so the fake controller's 127.0.0.1, the daemon and its table
// inet bulkhead all live there and vanish with the process, even on failure; the daemon
// gets PR_SET_PDEATHSIG so it cannot outlive the test. Needs root and nft; exits 77 (ctest:
// skipped) with the reason otherwise.
#include "fake_controller.hpp"
#include "policies/policy_reader.hpp"
#include "policies/ruleset_compiler.hpp"

#include <doctest/doctest.h>
#include <httplib.h>

#include <algorithm>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

namespace bulkhead::test {
extern std::string enforcer_binary;
}

using namespace bulkhead;
using bulkhead::test::eventually;
using bulkhead::test::FakeController;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

[[noreturn]] void skip(const std::string& why) {
    std::cout << "SKIP: " << why << std::endl;
    std::_Exit(77);
}

std::string read_text(const std::string& path) {
    std::ifstream in(path);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

ruleset::Ruleset compile(const std::set<std::string>& quarantined = {}) {
    auto policy = policy::parse_policy(read_text(std::string(BULKHEAD_SOURCE_DIR) + "/examples/vdi-pool/policy.json"));
    auto inventory =
        policy::parse_inventory(read_text(std::string(BULKHEAD_SOURCE_DIR) + "/examples/vdi-pool/inventory.json"));
    REQUIRE(policy);
    REQUIRE(inventory);
    ruleset::RulesetCompiler compiler(*policy, *inventory);
    auto r = compiler.compile("hv1", quarantined);
    REQUIRE(r);
    return *r;
}

// Runs a shell command, returns (exit status, stdout).
std::pair<int, std::string> run(const std::string& command) {
    std::string out;
    FILE* p = ::popen((command + " 2>&1").c_str(), "r");
    if (p == nullptr) {
        return {-1, {}};
    }
    char buffer[4096];
    std::size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, p)) > 0) {
        out.append(buffer, n);
    }
    const int status = ::pclose(p);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

class Daemon {
public:
    Daemon(const std::vector<std::string>& args, const std::string& log_path) {
        pid_ = ::fork();
        REQUIRE(pid_ >= 0);
        if (pid_ == 0) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            std::vector<char*> argv;
            argv.push_back(const_cast<char*>(test::enforcer_binary.c_str()));
            for (const auto& a : args) {
                argv.push_back(const_cast<char*>(a.c_str()));
            }
            argv.push_back(nullptr);
            ::execv(argv[0], argv.data());
            std::_Exit(127);
        }
    }
    ~Daemon() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
    }
    void signal(int s) const { ::kill(pid_, s); }
    // Without waiting: the exit code once the process has ended, -1 if killed, else -2.
    int exit_code() {
        int status = 0;
        if (pid_ > 0 && ::waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        return exit_code_;
    }
    // SIGTERM and wait (bounded); the exit code, or -1.
    int stop() {
        ::kill(pid_, SIGTERM);
        int status = 0;
        for (int i = 0; i < 500; ++i) {
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            }
            ::usleep(20'000);
        }
        return -1;
    }

private:
    int exit_code_ = -2;
    pid_t pid_ = -1;
};

bool contiguous_from_one(const std::map<std::uint64_t, json>& events) {
    std::uint64_t expect = 1;
    for (const auto& [seq, e] : events) {
        if (seq != expect++) {
            return false;
        }
    }
    return true;
}

std::size_t count_type(const std::map<std::uint64_t, json>& events, const std::string& type) {
    std::size_t n = 0;
    for (const auto& [seq, e] : events) {
        n += e.value("type", "") == type ? 1 : 0;
    }
    return n;
}

}  // namespace

TEST_CASE("daemon: bulkhead-enforcer --controller applies pushes to the kernel, spools through an outage") {
    if (::geteuid() != 0) {
        skip("needs root (network namespace, nftables)");
    }
    if (test::enforcer_binary.empty() || ::access(test::enforcer_binary.c_str(), X_OK) != 0) {
        skip("no bulkhead-enforcer binary given (-- --enforcer PATH)");
    }
    if (::unshare(CLONE_NEWNET) != 0) {
        skip("unshare(CLONE_NEWNET) failed: no network namespaces");
    }
    if (run("ip link set lo up").first != 0) {
        skip("cannot bring up lo in the new namespace (iproute2 missing?)");
    }
    if (run("nft list tables").first != 0) {
        skip("nft does not work here: " + run("nft list tables").second);
    }

    const auto dir = std::filesystem::temp_directory_path() / ("bulkhead-agent-daemon-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    struct Cleanup {
        std::filesystem::path dir;
        ~Cleanup() {
            std::error_code ec;
            std::filesystem::remove_all(dir, ec);
        }
    } cleanup{dir};
    const auto log = (dir / "enforcer.log").string();

    FakeController fake("hv1");
    fake.set_heartbeat_interval_ms(300);
    fake.add_token("daemon-token");
    fake.start();
    const auto base = compile();
    const auto quarantined = compile({"vdi-002"});
    fake.set_desired(base);
    std::ofstream(dir / "token") << "daemon-token\n";
    // The enforcer refuses a secret file other users can read, as an installed one would be.
    std::filesystem::permissions(dir / "token", std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    const std::vector<std::string> args = {"--enforcer-id", "hv1", "--controller", fake.url(),
                                           "--enrollment-token", (dir / "token").string(),
                                           "--state-dir", (dir / "state").string(), "--no-nflog",
                                           "--metrics-file", (dir / "metrics.prom").string(),
                                           // This test's own network namespace: nothing else holds the port.
                                           "--metrics-listen", "127.0.0.1:19464",
                                           "--drift-interval", "3600"};
    auto dump_log = [&] { MESSAGE("enforcer log:\n" << read_text(log)); };

    {
        Daemon daemon(args, log);
        // Enrolled, full ruleset applied to the kernel, acked.
        const auto h1 = ruleset::ruleset_hash(base);
        const bool acked = eventually([&] {
            return fake.last_status_matching([&](const json& b) {
                return b["generation"] == 1 && b["hash"] == h1 && b["state"] == "applied";
            }).has_value();
        }, 20s);
        if (!acked) {
            dump_log();
        }
        REQUIRE(acked);
        CHECK(fake.enrollments() == 1);
        CHECK(run("nft list table inet bulkhead").first == 0);
        CHECK(run("nft list set inet bulkhead quarantined_ports").second.find("vdi002") == std::string::npos);
        const auto ack = fake.last_status_matching([](const json& b) { return b["generation"] == 1; })->body;
        CHECK(ack["elements"] == base.element_count());
        CHECK(ack["apply_ms"].get<double>() > 0);
        CHECK(ack.contains("spool"));

        // Quarantine pushed as a diff: one element in the kernel, acked.
        fake.set_desired(quarantined);
        const auto h2 = ruleset::ruleset_hash(quarantined);
        REQUIRE(eventually([&] {
            return fake.last_status_matching([&](const json& b) { return b["generation"] == 2 && b["hash"] == h2; })
                .has_value();
        }));
        CHECK(run("nft list set inet bulkhead quarantined_ports").second.find("vdi002") != std::string::npos);
        // The same metrics over HTTP on the management address (published once a second).
        httplib::Client scraper("127.0.0.1", 19464);
        std::string scraped;
        CHECK(eventually([&] {
            auto answer = scraper.Get("/metrics");
            scraped = answer && answer->status == 200 ? answer->body : "";
            return scraped.find("bulkhead_enforcer_controller_generation 2\n") != std::string::npos;
        }));
        CHECK(scraped.find("# TYPE bulkhead_enforcer_controller_connected gauge") != std::string::npos);
        CHECK(scraped.find("bulkhead_enforcer_controller_connected 1\n") != std::string::npos);
        auto missing = scraper.Get("/nothing");
        REQUIRE(missing);
        CHECK(missing->status == 404);
        REQUIRE(eventually([&] { return count_type(fake.events(), "ruleset_applied") >= 2; }));
        {
            const auto events = fake.events();
            std::vector<std::string> modes;
            for (const auto& [seq, e] : events) {
                if (e["type"] == "ruleset_applied") {
                    modes.push_back(e["mode"]);
                }
            }
            CHECK(modes.back() == "diff");
        }

        // Controller outage: the table is flushed and repaired meanwhile; those events are
        // spooled and arrive after the controller is back, none lost.
        fake.stop();
        REQUIRE(run("nft flush ruleset").first == 0);
        daemon.signal(SIGUSR1);
        const bool repaired = eventually([&] {
            return run("nft list set inet bulkhead quarantined_ports").second.find("vdi002") != std::string::npos;
        });
        if (!repaired) {
            dump_log();
        }
        REQUIRE(repaired);
        fake.start(fake.port());
        // Drained on both sides: the controller holds the events, and the enforcer has their
        // answer (its latest status reports an empty spool). Stopping between the two would
        // send them again at the next start, which the duplicate check below counts.
        const bool drained = eventually([&] {
            const auto events = fake.events();
            const auto latest = fake.last_status_matching([](const json&) { return true; });
            return count_type(events, "drift_repaired") == 1 && contiguous_from_one(events) && latest &&
                   latest->body.contains("spool") && latest->body["spool"]["events"] == 0;
        }, 20s);
        if (!drained) {
            dump_log();
        }
        CHECK(drained);
        CHECK(daemon.stop() == 0);
    }
    // A metrics address that is not on this host is refused at start, with its reason.
    {
        auto refused_args = args;
        const auto at = std::find(refused_args.begin(), refused_args.end(), "127.0.0.1:19464");
        REQUIRE(at != refused_args.end());
        *at = "192.0.2.1:19464";
        const auto refused_log = (dir / "refused.log").string();
        Daemon refused(refused_args, refused_log);
        int code = -2;
        CHECK(eventually([&] {
            code = refused.exit_code();
            return code != -2;
        }));
        CHECK(code == 2);
        CHECK(read_text(refused_log).find("--metrics-listen: cannot listen on 192.0.2.1:19464") != std::string::npos);
    }
    // The log: spdlog records on stderr, component and enforcer first, at the default level
    // (info) the milestones a person looks for.
    const auto first_log = read_text(log);
    for (const char* line : {" info bulkhead-enforcer: agent: enforcer hv1: enrolled with the controller",
                             " info bulkhead-enforcer: agent: enforcer hv1: control channel connected to ",
                             " info bulkhead-enforcer: daemon: enforcer hv1: running, generation ",
                             " info bulkhead-enforcer: daemon: enforcer hv1: applied generation ",
                             " warning bulkhead-enforcer: daemon: enforcer hv1: drift found in table inet bulkhead",
                             " info bulkhead-enforcer: daemon: enforcer hv1: stopped; table inet bulkhead stays"}) {
        CHECK_MESSAGE(first_log.find(line) != std::string::npos, "no \"" << line << "\" in:\n" << first_log);
    }
    // Stopping the daemon leaves the table in force.
    CHECK(run("nft list set inet bulkhead quarantined_ports").second.find("vdi002") != std::string::npos);

    // Restart: no new enrollment, last-known-good first, the reconnect says generation 2,
    // and the "stopped" event spooled at shutdown arrives with the next seq.
    const auto before = fake.events().size();
    const auto connects = fake.connects().size();
    auto quiet_args = args;
    quiet_args.insert(quiet_args.end(), {"--log-level", "warn"});
    {
        Daemon daemon(quiet_args, log);
        REQUIRE(eventually([&] { return fake.connects().size() > connects; }, 20s));
        CHECK(fake.connects().back().generation == 2);
        CHECK(fake.connects().back().hash == ruleset::ruleset_hash(quarantined));
        CHECK(fake.enrollments() == 1);
        REQUIRE(eventually([&] {
            const auto events = fake.events();
            return events.size() > before && count_type(events, "stopped") == 1 && contiguous_from_one(events);
        }));
        CHECK(daemon.stop() == 0);
    }
    // --log-level warn: the restart ran and stopped without writing an info record.
    const auto restart_log = read_text(log).substr(first_log.size());
    CHECK_MESSAGE(restart_log.find(" info ") == std::string::npos, "info records at --log-level warn:\n" << restart_log);
    CHECK(fake.duplicates() == 0);
    const auto metrics = read_text((dir / "metrics.prom").string());
    CHECK(metrics.find("bulkhead_enforcer_spool_evicted_events_total 0") != std::string::npos);
    CHECK(metrics.find("bulkhead_enforcer_controller_generation 2") != std::string::npos);
}
