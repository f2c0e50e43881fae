// bench_apply: loading a ~100,000-element ruleset into an empty nf_tables, two ways, same
// run: NetlinkRulesetBackend::replace() (libnftnl batch, in-process) and `nft -f` of
// render_nft() of the same ruleset. Run it inside a throwaway network namespace
// (bench/benchmarks/apply.sh does); it deletes table inet bulkhead before every load.
//
//   bench_apply --netns NAME [--reps N] [--ruleset FILE] [--vdis N] [--nft-timeout S]
//               [--work-dir DIR] [--netlink-only]   (--netlink-only: only the netlink loads,
//               for perf)
//   bench_apply --ruleset FILE --memory-whatif     (no kernel: heap/RSS holding the ruleset)
//   bench_apply --write-ruleset FILE [--write-nft FILE] [--write-facts FILE] [--vdis N]
//                 (no kernel: write the ruleset as bulkhead-ruleset/1 JSON, nft script, and/or
//                 {"enforcer","elements","rules","sets"})
//
// Figures (JSON lines, bench/run.sh format) on stdout, progress on stderr.
#include "bench/cli_args.hpp"
#include "bench/kernel_bench.hpp"

#include "enforcer/netlink/netlink_io.hpp"
#include "enforcer/netlink/ruleset_backend.hpp"
#include "policies/nft_text.hpp"

#include <malloc.h>
#include <unistd.h>

#include <charconv>
#include <cstring>
#include <fstream>
#include <cstdio>
#include <map>
#include <tuple>
#include <variant>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

namespace {

using namespace bulkhead;
using bench::BenchClock;
using bench::FigureWriter;

struct Options {
    std::string netns;
    std::size_t reps = 5;
    std::string ruleset_path;
    std::string write_ruleset;
    std::string write_nft;
    std::string write_facts;
    std::size_t vdis = bench::default_bench_vdis;
    double nft_timeout = 300;
    bool netlink_only = false;  // profiling: only the netlink replaces, no figures
    bool memory_whatif = false;  // for rss.sh: what holding the parsed ruleset costs
    std::string work_dir;
};

using bulkhead::bench::to_number;

Options parse(int argc, char** argv) {
    Options o;
    std::vector<std::string> args(argv + 1, argv + argc);
    for (std::size_t i = 0; i < args.size(); ++i) {
        const auto& a = args[i];
        auto value = [&]() -> const std::string& {
            if (i + 1 >= args.size()) {
                throw std::invalid_argument(a + " needs a value");
            }
            return args[++i];
        };
        if (a == "--netns") {
            o.netns = value();
        } else if (a == "--reps") {
            o.reps = std::max<std::size_t>(3, to_number(a, value()));
        } else if (a == "--ruleset") {
            o.ruleset_path = value();
        } else if (a == "--write-ruleset") {
            o.write_ruleset = value();
        } else if (a == "--write-facts") {
            o.write_facts = value();
        } else if (a == "--write-nft") {
            o.write_nft = value();
        } else if (a == "--vdis") {
            o.vdis = to_number(a, value());
        } else if (a == "--memory-whatif") {
            o.memory_whatif = true;
        } else if (a == "--netlink-only") {
            o.netlink_only = true;
        } else if (a == "--nft-timeout") {
            o.nft_timeout = static_cast<double>(to_number(a, value()));
        } else if (a == "--work-dir") {
            o.work_dir = value();
        } else {
            throw std::invalid_argument("unknown option " + a);
        }
    }
    return o;
}

// What-if for the kernel's share: nf_tables finds a set by name by walking the table's set
// list in creation order (strcmp per set), for every NEWSET, NEWSETELEM and lookup
// expression. This copy renames the sets "u<rank>_<name>" by how many rules look them up
// (most first), so a batch in name order creates the most used sets first. Same sets,
// elements and rules otherwise.
ruleset::Ruleset sets_by_use(const ruleset::Ruleset& r) {
    std::map<std::string, std::size_t> uses;
    for (const auto& chain : r.chains) {
        for (const auto& rule : chain.rules) {
            for (const auto& m : rule.matches) {
                if (const auto* lookup = std::get_if<ruleset::SetLookup>(&m)) {
                    ++uses[lookup->set];
                }
            }
            if (rule.dispatch) {
                ++uses[rule.dispatch->map];
            }
        }
    }
    std::vector<const ruleset::SetDefinition*> order;
    for (const auto& set : r.sets) {
        order.push_back(&set);
    }
    std::stable_sort(order.begin(), order.end(), [&](const auto* a, const auto* b) {
        return uses[a->name] > uses[b->name];
    });
    std::map<std::string, std::string> renamed;
    ruleset::Ruleset out = r;
    out.sets.clear();
    for (std::size_t i = 0; i < order.size(); ++i) {
        std::string rank = std::to_string(i);
        rank.insert(0, rank.size() < 4 ? 4 - rank.size() : 0, '0');
        renamed[order[i]->name] = "u" + rank + "_" + order[i]->name;
        out.sets.push_back(*order[i]);
        out.sets.back().name = renamed[order[i]->name];
    }
    for (auto& chain : out.chains) {
        for (auto& rule : chain.rules) {
            for (auto& m : rule.matches) {
                if (auto* lookup = std::get_if<ruleset::SetLookup>(&m)) {
                    lookup->set = renamed.at(lookup->set);
                }
            }
            if (rule.dispatch) {
                rule.dispatch->map = renamed.at(rule.dispatch->map);
            }
        }
    }
    return out;
}

long status_kib(const char* field) {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(field, 0) == 0) {
            return std::stol(line.substr(std::strlen(field)));
        }
    }
    return -1;
}

// rss.sh's what-if (no kernel): this process after reading the ruleset file the way the
// daemon does (text -> nlohmann DOM -> IR, the DOM freed): the heap the IR holds, RSS as
// glibc leaves it, and RSS after malloc_trim(0) returns the freed pages.
int memory_whatif(const Options& o) {
    const FigureWriter out("rss");
    const long rss0 = status_kib("VmRSS:");
    const auto desired = bench::load_or_generate(o.ruleset_path, o.vdis);
    const auto info = mallinfo2();
    const double in_use = static_cast<double>(info.uordblks + info.hblkhd) / 1048576.0;
    const double rss_loaded = static_cast<double>(status_kib("VmRSS:")) / 1024.0;
    malloc_trim(0);
    const double rss_trimmed = static_cast<double>(status_kib("VmRSS:")) / 1024.0;
    const nlohmann::ordered_json note{{"note", "bench_apply holding the parsed ruleset (not the daemon)"}};
    out.emit("whatif_ir_heap_in_use", in_use, "MiB", std::nullopt, std::nullopt, note, 1);
    out.emit("whatif_process_rss_before_load", static_cast<double>(rss0) / 1024.0, "MiB", std::nullopt,
             std::nullopt, {}, 1);
    out.emit("whatif_rss_after_parse", rss_loaded, "MiB", std::nullopt, std::nullopt, {}, 1);
    out.emit("whatif_rss_after_parse_and_malloc_trim", rss_trimmed, "MiB", std::nullopt, std::nullopt, {}, 1);
    std::cerr << "rss what-if: " << desired.element_count() << " elements: heap in use " << in_use
              << " MiB, RSS " << rss_loaded << " MiB, after malloc_trim " << rss_trimmed << " MiB\n";
    return 0;
}

int run(const Options& o) {
    if (o.memory_whatif) {
        return memory_whatif(o);
    }
    const FigureWriter out("apply");
    const auto desired = bench::load_or_generate(o.ruleset_path, o.vdis);
    if (!o.write_facts.empty()) {
        const nlohmann::ordered_json facts{{"enforcer", desired.enforcer},
                                           {"elements", desired.element_count()},
                                           {"rules", desired.rule_count()},
                                           {"sets", desired.sets.size()}};
        bench::write_text(o.write_facts, facts.dump() + "\n");
    }
    if (!o.write_ruleset.empty() || !o.write_nft.empty() || !o.write_facts.empty()) {
        if (!o.write_ruleset.empty()) {
            bench::save_ruleset(desired, o.write_ruleset);
            std::cerr << "wrote " << o.write_ruleset << "\n";
        }
        if (!o.write_nft.empty()) {
            bench::write_text(o.write_nft, ruleset::render_nft(desired));
            std::cerr << "wrote " << o.write_nft << "\n";
        }
        return 0;
    }
    if (geteuid() != 0) {
        out.skip("netlink_replace_median", "needs root (network namespace, nf_tables)");
        out.skip("replace_to_nft_ratio", "needs root (network namespace, nf_tables)");
        return 0;
    }
    bench::require_netns(o.netns);
    const std::string dir = o.work_dir.empty() ? std::filesystem::temp_directory_path().string() : o.work_dir;
    const std::string script_path = dir + "/bench-apply-" + std::to_string(getpid()) + ".nft";
    const std::string script = ruleset::render_nft(desired);
    bench::write_text(script_path, script);
    struct Unlink {
        std::string path;
        ~Unlink() { std::filesystem::remove(path); }
    } unlink_script{script_path};

    const auto elements = static_cast<double>(desired.element_count());
    out.emit("ruleset_elements", elements, "elements");
    out.emit("ruleset_rules", static_cast<double>(desired.rule_count()), "rules");
    out.emit("ruleset_sets", static_cast<double>(desired.sets.size()), "sets");
    out.emit("nft_script_bytes", static_cast<double>(script.size()), "bytes");
    std::cerr << "apply: " << elements << " elements, " << desired.rule_count() << " rules, "
              << desired.sets.size() << " sets; nft script " << script.size() << " bytes\n";

    // Userspace share of replace(): building the batch (no kernel).
    std::vector<double> build_ms;
    std::size_t messages = 0, bytes = 0;
    for (std::size_t i = 0; i < o.reps; ++i) {
        const auto t0 = BenchClock::now();
        auto batch = enforcer::build_replace_batch(desired);
        build_ms.push_back(std::chrono::duration<double, std::milli>(BenchClock::now() - t0).count());
        if (!batch) {
            std::cerr << "apply: build_replace_batch: " << batch.error().message << "\n";
            return 1;
        }
        messages = batch->messages().size();
        bytes = batch->bytes();
    }

    enforcer::NetlinkRulesetBackend backend;
    std::vector<double> nl_wall, nl_user, nl_sys, nl_internal, nft_wall, nft_user, nft_sys;
    auto netlink_load = [&](std::size_t i) -> bool {
        if (!bench::delete_table()) {
            std::cerr << "apply: cannot delete table inet bulkhead\n";
            return false;
        }
        const auto cpu0 = bench::self_cpu();
        const auto t0 = BenchClock::now();
        auto applied = backend.replace(desired);
        const double wall = std::chrono::duration<double, std::milli>(BenchClock::now() - t0).count();
        const auto cpu1 = bench::self_cpu();
        if (!applied) {
            std::cerr << "apply: replace failed: " << applied.error().message << "\n";
            return false;
        }
        nl_wall.push_back(wall);
        nl_internal.push_back(std::chrono::duration<double, std::milli>(applied->latency).count());
        nl_user.push_back(cpu1.user_ms - cpu0.user_ms);
        nl_sys.push_back(cpu1.sys_ms - cpu0.sys_ms);
        std::cerr << "  netlink replace " << i + 1 << "/" << o.reps << ": " << wall << " ms (user "
                  << nl_user.back() << ", sys " << nl_sys.back() << "; " << applied->messages
                  << " messages, " << applied->bytes << " bytes"
                  << (applied->acks_incomplete ? ", ACKs incomplete" : "") << ")\n";
        return true;
    };
    auto nft_load = [&](std::size_t i) -> bool {
        if (!bench::delete_table()) {
            std::cerr << "apply: cannot delete table inet bulkhead\n";
            return false;
        }
        auto r = bench::run_timed({"nft", "-f", script_path}, o.nft_timeout);
        if (r.status != 0) {
            std::cerr << "apply: nft -f failed (" << r.status << "): " << r.output.substr(0, 2000) << "\n";
            return false;
        }
        nft_wall.push_back(r.wall_ms);
        nft_user.push_back(r.user_ms);
        nft_sys.push_back(r.sys_ms);
        std::cerr << "  nft -f " << i + 1 << "/" << o.reps << ": " << r.wall_ms << " ms (user "
                  << r.user_ms << ", sys " << r.sys_ms << ")\n";
        return true;
    };
    if (o.netlink_only) {
        for (std::size_t i = 0; i < o.reps; ++i) {
            if (!netlink_load(i)) {
                return 1;
            }
        }
        bench::delete_table();
        return 0;
    }
    // Interleaved, alternating which goes first, so slow drift of the machine hits both.
    for (std::size_t i = 0; i < o.reps; ++i) {
        const bool ok = (i % 2 == 0) ? (nft_load(i) && netlink_load(i)) : (netlink_load(i) && nft_load(i));
        if (!ok) {
            return 1;
        }
    }

    // What-if (informative): the same ruleset with its most used sets created first.
    std::vector<double> by_use_wall, kept_wall, kept_by_use_wall;
    {
        const auto reordered = sets_by_use(desired);
        // What-if (informative): replace() as the backend does it (GETGEN, the batch, every
        // ACK, GETGEN) on one netlink socket kept open across loads, so the socket close --
        // which waits for nf_tables' deferred cleanup of the previous transaction -- is not
        // on the path.
        auto socket = enforcer::detail::NetlinkSocket::open();
        if (!socket) {
            std::cerr << "apply: netlink socket: " << socket.error().message << "\n";
            return 1;
        }
        std::uint32_t seq = 1;
        auto kept_replace = [&](const ruleset::Ruleset& r) -> double {
            if (!bench::delete_table()) {
                return -1;
            }
            const auto t0 = BenchClock::now();
            auto before = socket->generation(seq++);
            auto batch = enforcer::build_replace_batch(r, {enforcer::NetlinkOptions{}.page_size, seq, true});
            if (!before || !batch) {
                return -1;
            }
            seq += static_cast<std::uint32_t>(batch->messages().size());
            auto outcome = socket->send_batch(*batch, 0);
            auto after = socket->generation(seq++);
            if (!outcome || !outcome->errors.empty() || !outcome->complete() || !after) {
                return -1;
            }
            return std::chrono::duration<double, std::milli>(BenchClock::now() - t0).count();
        };
        for (std::size_t i = 0; i < o.reps; ++i) {
            const double a = kept_replace(desired);
            const double b = kept_replace(reordered);
            if (a < 0 || b < 0) {
                std::cerr << "apply: kept-socket replace failed\n";
                return 1;
            }
            kept_wall.push_back(a);
            kept_by_use_wall.push_back(b);
        }
        for (std::size_t i = 0; i < o.reps; ++i) {
            if (!bench::delete_table()) {
                return 1;
            }
            const auto t0 = BenchClock::now();
            auto applied = backend.replace(reordered);
            by_use_wall.push_back(std::chrono::duration<double, std::milli>(BenchClock::now() - t0).count());
            if (!applied) {
                std::cerr << "apply: replace (sets by use) failed: " << applied.error().message << "\n";
                return 1;
            }
        }
        std::cerr << "apply: what-if, most used sets first: median " << bench::stats_of(by_use_wall).median
                  << " ms; kept socket: " << bench::stats_of(kept_wall).median << " ms; both: "
                  << bench::stats_of(kept_by_use_wall).median << " ms\n";
    }

    // Same table both ways (once): the last load above was nft's or netlink's; list both.
    bool same = false;
    std::string difference;
    {
        if (!bench::delete_table() || !backend.replace(desired)) {
            return 1;
        }
        auto drift = backend.check(desired);
        const auto by_netlink = bench::normalised_listing();
        if (!bench::delete_table()) {
            return 1;
        }
        auto r = bench::run_timed({"nft", "-f", script_path}, o.nft_timeout);
        if (r.status != 0) {
            return 1;
        }
        auto drift_after_nft = backend.check(desired);
        const auto by_nft = bench::normalised_listing();
        difference = by_netlink.contains("error") ? "listing failed: " + by_netlink["error"].dump()
                                                  : bench::first_difference(by_nft, by_netlink);
        same = difference.empty();
        std::cerr << "apply: nft -j listings " << (same ? "identical" : "DIFFER: " + difference) << "\n";
        if (drift && drift_after_nft) {
            std::cerr << "apply: check() after the netlink load: " << drift->summary()
                      << "; after the nft load: " << drift_after_nft->summary()
                      << " (expected: rules nft loads carry no Bulkhead fingerprint in their userdata)\n";
        }
        bench::delete_table();
    }

    const auto nl = bench::stats_of(nl_wall);
    const auto nf = bench::stats_of(nft_wall);
    const auto build = bench::stats_of(build_ms);
    const double ratio = nf.median > 0 ? nl.median / nf.median : 0;
    out.emit("batch_messages", static_cast<double>(messages), "messages");
    out.emit("batch_bytes", static_cast<double>(bytes), "bytes");
    out.emit("batch_build_median", build.median, "ms");
    out.emit("netlink_replace_median", nl.median, "ms", std::nullopt, std::nullopt,
             FigureWriter::baseline("nft_load_median", nf.median, nl.median));
    out.emit("netlink_replace_best", nl.best, "ms");
    out.emit("netlink_replace_backend_latency_median", bench::stats_of(nl_internal).median, "ms", std::nullopt,
             std::nullopt,
             {{"note", "ApplyStats::latency: ends before the backend closes its socket, which waits for "
                       "nf_tables' deferred transaction cleanup"}});
    out.emit("netlink_replace_user_cpu_median", bench::stats_of(nl_user).median, "ms");
    out.emit("netlink_replace_sys_cpu_median", bench::stats_of(nl_sys).median, "ms");
    out.emit("netlink_replace_elements_per_s", elements / (nl.median / 1e3), "elements/s", std::nullopt,
             std::nullopt, {}, 0);
    out.emit("nft_load_median", nf.median, "ms");
    out.emit("nft_load_best", nf.best, "ms");
    out.emit("nft_load_user_cpu_median", bench::stats_of(nft_user).median, "ms");
    out.emit("nft_load_sys_cpu_median", bench::stats_of(nft_sys).median, "ms");
    const double by_use = bench::stats_of(by_use_wall).median;
    out.emit("whatif_sets_by_use_replace_median", by_use, "ms", std::nullopt, std::nullopt,
             {{"note", "same ruleset, sets renamed so the most looked-up are created first (kernel set-name lookups walk the set list)"},
              {"ratio_to_nft", bench::round_to(nf.median > 0 ? by_use / nf.median : 0, 4)}});
    for (const auto& [metric, values, note] : std::vector<std::tuple<std::string, std::vector<double>, std::string>>{
             {"whatif_kept_socket_replace_median", kept_wall,
              "the backend's transaction on one netlink socket kept open across loads"},
             {"whatif_kept_socket_sets_by_use_replace_median", kept_by_use_wall, "both what-ifs together"}}) {
        const double v = bench::stats_of(values).median;
        out.emit(metric, v, "ms", std::nullopt, std::nullopt,
                 {{"note", note}, {"ratio_to_nft", bench::round_to(nf.median > 0 ? v / nf.median : 0, 4)}});
    }
    out.emit("replace_to_nft_ratio", bench::round_to(ratio, 4), "ratio", "<= 0.5", ratio <= 0.5,
             {{"reps", o.reps}}, 4);
    out.emit("same_table_as_nft", same ? 1 : 0, "bool", "1", same,
             same ? nlohmann::ordered_json::object() : nlohmann::ordered_json{{"difference", difference}});
    return same ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(parse(argc, argv));
    } catch (const std::exception& e) {
        std::cerr << "bench_apply: " << e.what() << "\n";
        return 2;
    }
}
