#include "bench/kernel_bench.hpp"

#include "bench/fleet_generator.hpp"
#include "policies/ruleset_compiler.hpp"

#include <fcntl.h>
#include <signal.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace bulkhead::bench {

double round_to(double value, int decimals) {
    const double scale = std::pow(10.0, decimals);
    return std::round(value * scale) / scale;
}

namespace {

nlohmann::ordered_json number(double value, int decimals) {
    if (!std::isfinite(value)) {
        return nullptr;
    }
    if (value == std::floor(value) && std::abs(value) < 1e15) {
        return static_cast<long long>(value);
    }
    return round_to(value, decimals);
}

}  // namespace

void FigureWriter::emit(const std::string& metric, double value, const std::string& unit,
                        std::optional<std::string> target, std::optional<bool> met,
                        const nlohmann::ordered_json& extra, int decimals) const {
    nlohmann::ordered_json line{{"benchmark", benchmark_}, {"metric", metric}};
    line["value"] = number(value, decimals);
    line["unit"] = unit;
    line["target"] = target ? nlohmann::ordered_json(*target) : nlohmann::ordered_json(nullptr);
    if (met) {
        line["met"] = *met;
    }
    for (const auto& [k, v] : extra.items()) {
        line[k] = v;
    }
    std::cout << line.dump() << std::endl;
}

void FigureWriter::skip(const std::string& metric, const std::string& reason) const {
    nlohmann::ordered_json line{{"benchmark", benchmark_}, {"metric", metric}, {"value", nullptr},
                                {"unit", nullptr},         {"target", nullptr}, {"skipped", reason}};
    std::cout << line.dump() << std::endl;
}

nlohmann::ordered_json FigureWriter::baseline(const std::string& name, double baseline_value,
                                              double value) {
    return {{"baseline", name},
            {"baseline_value", number(baseline_value, 3)},
            {"ratio", baseline_value > 0 ? number(round_to(value / baseline_value, 4), 4)
                                         : nlohmann::ordered_json(nullptr)}};
}

Stats stats_of(std::vector<double> values) {
    Stats s;
    s.count = values.size();
    if (values.empty()) {
        return s;
    }
    std::sort(values.begin(), values.end());
    auto rank = [&](double p) {
        // nearest rank: the smallest value with at least p of the values at or below it
        auto r = static_cast<std::size_t>(std::ceil(p * static_cast<double>(values.size())));
        return values[std::clamp<std::size_t>(r, 1, values.size()) - 1];
    };
    s.median = values[values.size() / 2];
    s.best = values.front();
    s.worst = values.back();
    s.p50 = rank(0.50);
    s.p99 = rank(0.99);
    double sum = 0;
    for (double v : values) {
        sum += v;
    }
    s.mean = sum / static_cast<double>(values.size());
    return s;
}

CommandResult run_capture(const std::string& command) {
    CommandResult result;
    const auto start = BenchClock::now();
    FILE* pipe = popen((command + " 2>&1").c_str(), "r");
    if (pipe == nullptr) {
        return result;
    }
    std::array<char, 65536> buf{};
    std::size_t n = 0;
    while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) {
        result.output.append(buf.data(), n);
    }
    const int status = pclose(pipe);
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    result.wall_ms = std::chrono::duration<double, std::milli>(BenchClock::now() - start).count();
    return result;
}

CommandResult run_timed(const std::vector<std::string>& argv, double timeout_s) {
    CommandResult result;
    int err_pipe[2];
    if (pipe2(err_pipe, O_CLOEXEC) != 0) {
        throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
    }
    std::vector<char*> args;
    for (const auto& a : argv) {
        args.push_back(const_cast<char*>(a.c_str()));
    }
    args.push_back(nullptr);
    const auto start = BenchClock::now();
    const pid_t pid = fork();
    if (pid < 0) {
        throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    }
    if (pid == 0) {
        const int null = open("/dev/null", O_WRONLY);
        dup2(null, STDOUT_FILENO);
        dup2(err_pipe[1], STDERR_FILENO);
        execvp(args[0], args.data());
        _exit(127);
    }
    close(err_pipe[1]);
    // Block in poll() on a pidfd and the stderr pipe (no busy polling that would steal CPU
    // from the measured process on a small machine); stderr is drained as it comes, so a
    // long error message cannot block the child.
    const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    const auto deadline = start + std::chrono::duration_cast<BenchClock::duration>(
                                      std::chrono::duration<double>(timeout_s));
    bool killed = false;
    bool exited = false;
    bool pipe_open = true;
    while (!exited) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - BenchClock::now());
        const int wait_ms = killed ? 1000 : static_cast<int>(std::max<std::int64_t>(0, left.count()));
        pollfd fds[2] = {{pidfd, POLLIN, 0}, {pipe_open ? err_pipe[0] : -1, POLLIN, 0}};
        const int n = pidfd >= 0 ? poll(fds, 2, wait_ms) : 0;
        if (n < 0 && errno != EINTR) {
            throw std::runtime_error(std::string("poll: ") + std::strerror(errno));
        }
        if (pipe_open && (fds[1].revents & (POLLIN | POLLHUP)) != 0) {
            std::array<char, 4096> buf{};
            const ssize_t got = read(err_pipe[0], buf.data(), buf.size());
            if (got > 0) {
                result.output.append(buf.data(), static_cast<std::size_t>(got));
            } else {
                pipe_open = false;
            }
        }
        if (pidfd < 0 || (fds[0].revents & POLLIN) != 0) {
            exited = true;  // (without a pidfd: fall through to a blocking wait4)
        } else if (!killed && BenchClock::now() >= deadline) {
            kill(pid, SIGKILL);
            killed = true;
        }
    }
    rusage usage{};
    int status = 0;
    while (wait4(pid, &status, 0, &usage) < 0 && errno == EINTR) {
    }
    if (pidfd >= 0) {
        close(pidfd);
    }
    result.wall_ms = std::chrono::duration<double, std::milli>(BenchClock::now() - start).count();
    std::array<char, 4096> buf{};
    ssize_t n = 0;
    while ((n = read(err_pipe[0], buf.data(), buf.size())) > 0) {
        result.output.append(buf.data(), static_cast<std::size_t>(n));
    }
    close(err_pipe[0]);
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (killed) {
        result.output += "\n(killed after " + std::to_string(timeout_s) + " s)";
    }
    result.user_ms = static_cast<double>(usage.ru_utime.tv_sec) * 1e3 +
                     static_cast<double>(usage.ru_utime.tv_usec) / 1e3;
    result.sys_ms = static_cast<double>(usage.ru_stime.tv_sec) * 1e3 +
                    static_cast<double>(usage.ru_stime.tv_usec) / 1e3;
    return result;
}

namespace {

CpuTimes cpu(int who) {
    rusage u{};
    getrusage(who, &u);
    return {static_cast<double>(u.ru_utime.tv_sec) * 1e3 + static_cast<double>(u.ru_utime.tv_usec) / 1e3,
            static_cast<double>(u.ru_stime.tv_sec) * 1e3 + static_cast<double>(u.ru_stime.tv_usec) / 1e3};
}

}  // namespace

CpuTimes self_cpu() { return cpu(RUSAGE_SELF); }
CpuTimes thread_cpu() { return cpu(RUSAGE_THREAD); }

ruleset::Ruleset generate_big_ruleset(std::size_t vdis) {
    FleetSpec spec;
    spec.vdis = vdis;
    const auto t0 = BenchClock::now();
    const Fleet fleet = generate_fleet(spec);
    ruleset::RulesetCompiler compiler(fleet.policy, fleet.inventory);
    std::optional<ruleset::Ruleset> largest;
    for (const auto& enforcer : compiler.enforcers()) {
        auto r = compiler.compile(enforcer);
        if (!r) {
            throw std::runtime_error("compile " + enforcer + ": " + r.error());
        }
        if (!largest || r->element_count() > largest->element_count()) {
            largest = std::move(*r);
        }
    }
    if (!largest) {
        throw std::runtime_error("the generated fleet has no enforcer");
    }
    std::cerr << "generated the fleet (" << vdis << " VDIs / " << spec.hypervisors
              << " hypervisors) and compiled its largest host " << largest->enforcer << ": "
              << largest->element_count() << " elements, " << largest->rule_count() << " rules, "
              << largest->sets.size() << " sets in "
              << std::chrono::duration<double>(BenchClock::now() - t0).count() << " s\n";
    return std::move(*largest);
}

ruleset::Ruleset load_or_generate(const std::string& path, std::size_t vdis) {
    if (path.empty()) {
        return generate_big_ruleset(vdis);
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw std::runtime_error("cannot read " + path);
    }
    const auto t0 = BenchClock::now();
    auto parsed = ruleset::ruleset_from_json(nlohmann::json::parse(in));
    if (!parsed) {
        throw std::runtime_error(path + ": " + parsed.error());
    }
    std::cerr << "read " << path << ": " << parsed->element_count() << " elements, "
              << parsed->rule_count() << " rules in "
              << std::chrono::duration<double>(BenchClock::now() - t0).count() << " s\n";
    return std::move(*parsed);
}

void write_text(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary);
    out << text;
    out.close();
    if (!out) {
        throw std::runtime_error("cannot write " + path);
    }
}

void save_ruleset(const ruleset::Ruleset& ruleset, const std::string& path) {
    write_text(path, ruleset::to_json(ruleset).dump() + "\n");
}

namespace {

void normalise(nlohmann::json& j) {
    if (j.is_object()) {
        j.erase("handle");
        if (auto it = j.find("counter"); it != j.end() && it->is_object()) {
            (*it)["packets"] = 0;
            (*it)["bytes"] = 0;
        }
        for (auto& [key, value] : j.items()) {
            normalise(value);
        }
        if (auto it = j.find("elem"); it != j.end() && it->is_array()) {
            std::sort(it->begin(), it->end(), [](const nlohmann::json& a, const nlohmann::json& b) {
                return a.dump() < b.dump();
            });
        }
    } else if (j.is_array()) {
        for (auto& v : j) {
            normalise(v);
        }
    }
}

}  // namespace

nlohmann::json normalised_listing() {
    auto result = run_capture("nft -j list table inet bulkhead");
    if (result.status != 0) {
        return {{"error", result.output}};
    }
    auto j = nlohmann::json::parse(result.output, nullptr, false);
    if (j.is_discarded()) {
        return {{"error", "nft -j printed no JSON"}};
    }
    normalise(j);
    if (j.contains("nftables") && j["nftables"].is_array()) {
        auto& items = j["nftables"];
        auto key = [](const nlohmann::json& item) {
            static const std::vector<std::string> order{"metainfo", "table", "set", "map", "chain", "rule"};
            if (!item.is_object() || item.empty()) {
                return std::pair{std::ptrdiff_t{-1}, std::string()};
            }
            const auto it = item.begin();
            const nlohmann::json& body = it.value();
            std::string name;
            if (body.is_object()) {
                name = body.contains("name")    ? body["name"].get<std::string>()
                       : body.contains("chain") ? body["chain"].get<std::string>()
                                                : "";
            }
            const auto rank = std::find(order.begin(), order.end(), it.key()) - order.begin();
            return std::pair{rank, name};
        };
        std::stable_sort(items.begin(), items.end(), [&](const nlohmann::json& a, const nlohmann::json& b) {
            return key(a) < key(b);
        });
        // nft's version and release name are not the table's content.
        items.erase(std::remove_if(items.begin(), items.end(),
                                   [](const nlohmann::json& i) { return i.contains("metainfo"); }),
                    items.end());
    }
    return j;
}

std::string first_difference(const nlohmann::json& a, const nlohmann::json& b) {
    if (a == b) {
        return "";
    }
    std::istringstream sa(a.dump(1));
    std::istringstream sb(b.dump(1));
    std::string la;
    std::string lb;
    for (int line = 1;; ++line) {
        const bool ha = static_cast<bool>(std::getline(sa, la));
        const bool hb = static_cast<bool>(std::getline(sb, lb));
        if (!ha && !hb) {
            return "documents differ";
        }
        if (!ha || !hb || la != lb) {
            return "line " + std::to_string(line) + ": " + (ha ? la : "<end>") + " vs " + (hb ? lb : "<end>");
        }
    }
}

void require_netns(const std::string& name) {
    if (name.empty() || name.find('/') != std::string::npos) {
        throw std::runtime_error(
            "pass --netns NAME, the throwaway network namespace this runs in (it deletes and "
            "loads table inet bulkhead); bench/run.sh does");
    }
    struct stat mine{};
    struct stat named{};
    if (stat("/proc/self/ns/net", &mine) != 0 || stat(("/run/netns/" + name).c_str(), &named) != 0 ||
        mine.st_ino != named.st_ino || mine.st_dev != named.st_dev) {
        throw std::runtime_error("not running inside network namespace " + name +
                                 " (use `ip netns exec " + name + " ...`)");
    }
}

bool delete_table() {
    // Not `nft list tables` first: nft fills its cache with the whole ruleset for that
    // (~0.5 s with 100,000 elements); `delete table` alone is quick.
    auto r = run_capture("nft delete table inet bulkhead");
    return r.status == 0 || r.output.find("No such file or directory") != std::string::npos;
}

void replace_elements(ruleset::Ruleset& ruleset, const std::string& set, ruleset::ElementList elements) {
    for (auto& s : ruleset.sets) {
        if (s.name == set) {
            s.elements = std::make_shared<const ruleset::ElementList>(std::move(elements));
            return;
        }
    }
    throw std::runtime_error("the ruleset has no set " + set);
}

}  // namespace bulkhead::bench
