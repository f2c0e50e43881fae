// bench_element_rate: how fast the enforcer changes set elements of a loaded ~100,000-element
// table through NetlinkRulesetBackend::apply_diff(), against `nft -f` of the same diff
// (render_nft_diff) in the same run. Run it inside a throwaway network namespace
// (bench/benchmarks/element_rate.sh does).
//
//   1. quarantine-style single-element changes: N successive apply_diff() calls, each adding
//      (first half) or removing (second half) one interface of set quarantined_ports;
//      per-change latency p50/p99 and elements/s. Baseline: the same kind of change as
//      `nft -f` of its render_nft_diff script, M times.
//   2. 10,000-element diffs: 10,000 addresses added to (and then removed from) the shared
//      segment set seg_vdi_4 (an interval set of the VDI addresses), `reps` times each;
//      elements/s. Baseline: `nft -f` of the same diffs.
//
//   bench_element_rate --netns NAME [--ruleset FILE] [--vdis N] [--changes N]
//                      [--nft-changes M] [--bulk N] [--reps N] [--set NAME] [--burst N]
//                      [--nft-timeout S] [--nft-remove-sample N] [--quarantine-only]
// Also: ApplyStats::latency next to the wall time, and the same single-element transactions
// on one kept-open netlink socket (detail::NetlinkSocket; a what-if, not the shipped path).
#include "bench/cli_args.hpp"
#include "bench/kernel_bench.hpp"

#include "enforcer/netlink/netlink_io.hpp"
#include "enforcer/netlink/ruleset_backend.hpp"
#include "policies/nft_text.hpp"
#include "policies/ruleset_diff.hpp"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <iostream>
#include <set>
#include <string>
#include <vector>

namespace {

using namespace bulkhead;
using bench::BenchClock;
using bench::FigureWriter;
using ruleset::Element;
using ruleset::ElementList;
using ruleset::Ruleset;
using ruleset::RulesetDiff;

constexpr const char* quarantine_set = "quarantined_ports";
constexpr const char* target_text = ">= 200000 elements/s";
constexpr double target_rate = 200'000;

struct Options {
    std::string netns;
    std::string ruleset_path;
    std::size_t vdis = bench::default_bench_vdis;
    std::size_t changes = 1000;
    std::size_t nft_changes = 20;
    std::size_t bulk = 10'000;
    std::size_t reps = 3;
    std::size_t burst = 1000;  // changes per apply_element_changes() call
    std::string bulk_set = "seg_vdi_4";
    double nft_timeout = 15;            // one bounded attempt at nft's 10,000-element removal
    std::size_t nft_remove_sample = 100;  // then this many, to have a rate at all
    bool quarantine_only = false;        // profiling: skip part 2 and the nft baselines
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
        } else if (a == "--ruleset") {
            o.ruleset_path = value();
        } else if (a == "--vdis") {
            o.vdis = to_number(a, value());
        } else if (a == "--changes") {
            o.changes = std::clamp<std::size_t>(to_number(a, value()), 2, 100'000) / 2 * 2;
        } else if (a == "--nft-changes") {
            o.nft_changes = std::clamp<std::size_t>(to_number(a, value()), 2, 10'000) / 2 * 2;
        } else if (a == "--bulk") {
            o.bulk = std::clamp<std::size_t>(to_number(a, value()), 1, 1'000'000);
        } else if (a == "--burst") {
            o.burst = std::clamp<std::size_t>(to_number(a, value()), 1, 100'000);
        } else if (a == "--reps") {
            o.reps = std::clamp<std::size_t>(to_number(a, value()), 1, 100);
        } else if (a == "--nft-timeout") {
            o.nft_timeout = static_cast<double>(std::clamp<std::size_t>(to_number(a, value()), 1, 3600));
        } else if (a == "--nft-remove-sample") {
            o.nft_remove_sample = std::clamp<std::size_t>(to_number(a, value()), 1, 100'000);
        } else if (a == "--quarantine-only") {
            o.quarantine_only = true;
        } else if (a == "--set") {
            o.bulk_set = value();
        } else if (a == "--work-dir") {
            o.work_dir = value();
        } else {
            throw std::invalid_argument("unknown option " + a);
        }
    }
    return o;
}

const ruleset::SetDefinition& find_set(const Ruleset& r, const std::string& name) {
    const auto* s = r.find_set(name);
    if (s == nullptr) {
        throw std::runtime_error("the ruleset has no set " + name);
    }
    return *s;
}

// The one-set diff the controller's recompile would produce for this change (checked against
// diff_rulesets once, below).
RulesetDiff one_set_diff(const Ruleset& r, const std::string& set, ElementList removed, ElementList added) {
    RulesetDiff d;
    d.enforcer = r.enforcer;
    d.set_changes.push_back({set, std::move(removed), std::move(added)});
    return d;
}

std::string quarantine_name(const char* prefix, std::size_t i) {
    char name[48];
    std::snprintf(name, sizeof name, "%s%05zu", prefix, i);
    return name;
}

// `count` IPv4 host addresses in 172.31.0.0/16 and up, odd ones only, so no two are adjacent
// (an interval set would otherwise hold them as fewer ranges) and none touches the fleet's
// 10.64.0.0/10.
ElementList bulk_addresses(std::size_t count) {
    ElementList list;
    list.reserve(count);
    const std::uint32_t base = (172u << 24) | (31u << 16);
    for (std::size_t i = 0; i < count; ++i) {
        const std::uint32_t a = base + 2 * static_cast<std::uint32_t>(i) + 1;
        policy::IpAddress ip;
        ip.family = policy::Family::Ipv4;
        ip.bytes[0] = static_cast<std::uint8_t>(a >> 24);
        ip.bytes[1] = static_cast<std::uint8_t>(a >> 16);
        ip.bytes[2] = static_cast<std::uint8_t>(a >> 8);
        ip.bytes[3] = static_cast<std::uint8_t>(a);
        list.push_back(Element{{policy::host_range(ip)}, ""});
    }
    std::sort(list.begin(), list.end());
    return list;
}

ElementList merged(const ElementList& a, const ElementList& b) {
    ElementList out;
    out.reserve(a.size() + b.size());
    std::set_union(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
    return out;
}

double ms_since(BenchClock::time_point t0) {
    return std::chrono::duration<double, std::milli>(BenchClock::now() - t0).count();
}

int run(const Options& o) {
    const FigureWriter out("element_rate");
    if (geteuid() != 0) {
        for (const char* m : {"quarantine_elements_per_s", "bulk_add_elements_per_s"}) {
            out.skip(m, "needs root (network namespace, nf_tables)");
        }
        return 0;
    }
    bench::require_netns(o.netns);
    Ruleset desired = bench::load_or_generate(o.ruleset_path, o.vdis);
    const std::string dir = o.work_dir.empty() ? std::filesystem::temp_directory_path().string() : o.work_dir;
    const std::string script_path = dir + "/bench-element-rate-" + std::to_string(getpid()) + ".nft";
    struct Unlink {
        std::string path;
        ~Unlink() { std::filesystem::remove(path); }
    } unlink_script{script_path};

    enforcer::NetlinkRulesetBackend backend;
    bench::delete_table();
    {
        const auto t0 = BenchClock::now();
        auto loaded = backend.replace(desired);
        if (!loaded) {
            std::cerr << "element_rate: initial replace: " << loaded.error().message << "\n";
            return 1;
        }
        std::cerr << "element_rate: loaded " << desired.element_count() << " elements in "
                  << ms_since(t0) << " ms\n";
    }
    out.emit("table_elements", static_cast<double>(desired.element_count()), "elements");

    // apply_diff, timed; keeps `desired` in step (the backend reads set shapes from it).
    std::size_t failures = 0;
    double last_internal_ms = 0;  // ApplyStats::latency of the last apply: ends before the
                                  // backend closes its socket
    auto apply = [&](const RulesetDiff& diff, Ruleset& next) -> double {
        const auto t0 = BenchClock::now();
        auto r = backend.apply_diff(diff, next);
        const double ms = ms_since(t0);
        last_internal_ms = r ? std::chrono::duration<double, std::milli>(r->latency).count() : 0;
        if (!r) {
            ++failures;
            std::cerr << "element_rate: apply_diff failed: " << r.error().message << "\n";
        }
        return ms;
    };
    // nft -f of render_nft_diff(diff); nullopt when it failed or ran past `timeout_s`.
    bool nft_timed_out = false;  // the last nft_apply ran past its limit (and was killed)
    auto nft_apply = [&](const RulesetDiff& diff, const Ruleset& next,
                         double timeout_s = 300) -> std::optional<double> {
        bench::write_text(script_path, ruleset::render_nft_diff(diff, next));
        auto r = bench::run_timed({"nft", "-f", script_path}, timeout_s);
        nft_timed_out = r.status != 0 && r.wall_ms >= timeout_s * 1e3;
        if (r.status != 0) {
            std::cerr << "element_rate: nft -f diff failed (exit " << r.status << ", "
                      << r.wall_ms << " ms, user " << r.user_ms << " ms): " << r.output.substr(0, 500) << "\n";
            return std::nullopt;
        }
        return r.wall_ms;
    };

    // ---- 1. quarantine-style single-element changes ------------------------------------
    find_set(desired, quarantine_set);
    {
        // The hand-made diff is what diff_rulesets gives for the same change.
        Ruleset next = desired;
        ElementList one{Element{{quarantine_name("bhq", 0)}, ""}};
        bench::replace_elements(next, quarantine_set, merged(*find_set(desired, quarantine_set).elements, one));
        const auto computed = ruleset::diff_rulesets(desired, next);
        const auto mine = one_set_diff(desired, quarantine_set, {}, one);
        if (computed.set_changes.size() != 1 || computed.set_changes[0].added != mine.set_changes[0].added ||
            !computed.set_changes[0].removed.empty() || computed.rules_written() != 0) {
            std::cerr << "element_rate: a quarantine diff is not the single element expected\n";
            return 1;
        }
    }
    // `count` changes: the first half each adds one interface, the second half removes them.
    // mode: 0 apply_diff, 1 nft -f, 2 one persistent socket (what-if, see below)
    std::vector<double> internal_latencies;
    std::uint32_t seq = 1;
    std::optional<enforcer::detail::NetlinkSocket> kept_socket;
    auto persistent_apply = [&](const RulesetDiff& diff, const Ruleset& next) -> double {
        // What NetlinkRulesetBackend::apply_diff does (GETGEN, the diff batch, every ACK,
        // GETGEN), on one socket kept open across changes instead of a fresh one per call.
        const auto t0 = BenchClock::now();
        if (!kept_socket) {
            auto opened = enforcer::detail::NetlinkSocket::open();
            if (!opened) {
                throw std::runtime_error(opened.error().message);
            }
            kept_socket.emplace(std::move(*opened));
        }
        auto before_gen = kept_socket->generation(seq++);
        auto batch = enforcer::build_diff_batch(diff, next, {enforcer::NetlinkOptions{}.page_size, seq, true});
        if (!before_gen || !batch) {
            ++failures;
            return ms_since(t0);
        }
        seq += static_cast<std::uint32_t>(batch->messages().size());
        auto outcome = kept_socket->send_batch(*batch, 0);
        auto after_gen = kept_socket->generation(seq++);
        if (!outcome || !outcome->errors.empty() || !outcome->complete() || !after_gen) {
            ++failures;
        }
        return ms_since(t0);
    };
    auto single_changes = [&](std::size_t count, const char* prefix, int mode) {
        std::vector<double> latencies;
        ElementList current = *find_set(desired, quarantine_set).elements;
        for (std::size_t i = 0; i < count; ++i) {
            const bool add = i < count / 2;
            const std::size_t k = add ? i : i - count / 2;
            ElementList e{Element{{quarantine_name(prefix, k)}, ""}};
            RulesetDiff diff;
            if (add) {
                current = merged(current, e);
                diff = one_set_diff(desired, quarantine_set, {}, e);
            } else {
                current.erase(std::remove(current.begin(), current.end(), e.front()), current.end());
                diff = one_set_diff(desired, quarantine_set, e, {});
            }
            bench::replace_elements(desired, quarantine_set, current);
            if (mode == 1) {
                auto ms = nft_apply(diff, desired);
                if (!ms) {
                    ++failures;
                    continue;
                }
                latencies.push_back(*ms);
            } else if (mode == 2) {
                latencies.push_back(persistent_apply(diff, desired));
            } else {
                latencies.push_back(apply(diff, desired));
                internal_latencies.push_back(last_internal_ms);
            }
        }
        return latencies;
    };
    auto sum = [](const std::vector<double>& v) {
        double total = 0;
        for (double x : v) {
            total += x;
        }
        return total;
    };
    const auto t_q = BenchClock::now();
    const auto nl_q = single_changes(o.changes, "bhq", 0);
    const double nl_q_total_ms = ms_since(t_q);
    const auto q = bench::stats_of(nl_q);
    const double q_rate = static_cast<double>(nl_q.size()) / (sum(nl_q) / 1e3);
    std::cerr << "element_rate: " << nl_q.size() << " single-element apply_diff: p50 " << q.p50 * 1e3
              << " us, p99 " << q.p99 * 1e3 << " us, " << q_rate << " elements/s (loop wall "
              << nl_q_total_ms << " ms)\n";
    const auto qi = bench::stats_of(internal_latencies);
    const auto ps_q = single_changes(o.changes, "bhp", 2);
    kept_socket.reset();
    const auto qp = bench::stats_of(ps_q);
    const double qp_rate = static_cast<double>(ps_q.size()) / (sum(ps_q) / 1e3);
    std::cerr << "element_rate: ApplyStats::latency (before the socket close) p50 " << qi.p50 * 1e3
              << " us, p99 " << qi.p99 * 1e3 << " us; one kept socket: p50 " << qp.p50 * 1e3 << " us, p99 "
              << qp.p99 * 1e3 << " us, " << qp_rate << " elements/s\n";
    // ---- 1b. the same kind of change through apply_element_changes() ------------------
    // Bursts of `burst` single-element changes (adds, then the removal of the same ones),
    // each burst one call, in both modes: strict (one transaction per change, pipelined)
    // and coalesced (group commit). Every change's own result is checked.
    struct BurstFigures {
        std::vector<double> rates, call_ms;
        std::size_t transactions = 0, send_calls = 0, changes = 0;
    };
    auto bursts = [&](enforcer::ElementCommit mode, const char* prefix) {
        BurstFigures f;
        for (std::size_t rep = 0; rep < o.reps; ++rep) {
            for (const auto kind : {enforcer::ElementChange::Kind::Add, enforcer::ElementChange::Kind::Remove}) {
                std::vector<enforcer::ElementChange> changes;
                changes.reserve(o.burst);
                for (std::size_t k = 0; k < o.burst; ++k) {
                    changes.push_back({kind, quarantine_set, Element{{quarantine_name(prefix, k)}, ""}});
                }
                const auto t0 = BenchClock::now();
                const auto report = backend.apply_element_changes(changes, desired, mode);
                const double ms = ms_since(t0);
                f.call_ms.push_back(ms);
                f.rates.push_back(static_cast<double>(changes.size()) / (ms / 1e3));
                f.transactions += report.transactions;
                f.send_calls += report.send_calls;
                f.changes += changes.size();
                if (report.failed() != 0) {
                    ++failures;
                    for (const auto& r : report.results) {
                        if (!r.ok()) {
                            std::cerr << "element_rate: apply_element_changes: " << r.error->message << "\n";
                            break;
                        }
                    }
                }
            }
        }
        return f;
    };
    const auto pipelined = bursts(enforcer::ElementCommit::PipelinedPerChange, "bhs");
    const auto coalesced = bursts(enforcer::ElementCommit::Coalesced, "bhc");
    {
        auto drift = backend.check(desired);
        std::cerr << "element_rate: check() after the apply_element_changes bursts: "
                  << (drift ? drift->summary() : drift.error().message) << "\n";
        if (!drift || !drift->clean()) {
            ++failures;
        }
    }
    const auto pr = bench::stats_of(pipelined.rates);
    const auto cr = bench::stats_of(coalesced.rates);
    std::cerr << "element_rate: bursts of " << o.burst << ": strict pipelined median " << pr.median
              << " elements/s (" << pipelined.transactions << " transactions, " << pipelined.send_calls
              << " sendmmsg calls); coalesced median " << cr.median << " elements/s ("
              << coalesced.transactions << " transactions)\n";
    auto emit_bursts = [&](const std::string& name, const BurstFigures& f, const char* note) {
        const auto rate = bench::stats_of(f.rates).median;
        auto extra = FigureWriter::baseline("quarantine_elements_per_s", q_rate, rate);
        extra["note"] = note;
        extra["burst"] = o.burst;
        extra["calls"] = f.rates.size();
        out.emit(name + "_elements_per_s", rate, "elements/s", target_text, rate >= target_rate, extra, 0);
        out.emit(name + "_call_median", bench::stats_of(f.call_ms).median, "ms", std::nullopt, std::nullopt,
                 {{"note", "one apply_element_changes() call of a whole burst"}});
        out.emit(name + "_transactions_per_change", static_cast<double>(f.transactions) / static_cast<double>(f.changes),
                 "ratio", std::nullopt, std::nullopt, {}, 4);
        out.emit(name + "_send_calls", static_cast<double>(f.send_calls), "syscalls", std::nullopt, std::nullopt,
                 {{"changes", f.changes}});
    };
    emit_bursts("quarantine_pipelined", pipelined,
                "apply_element_changes(PipelinedPerChange): strict, one transaction per change, each "
                "atomic with its own result; 256 transactions per sendmmsg, ACKs collected per window");
    emit_bursts("quarantine_coalesced", coalesced,
                "apply_element_changes(Coalesced): group commit, the burst in one transaction; a refused "
                "change fails alone and the rest are retried");

    if (o.quarantine_only) {
        out.emit("quarantine_elements_per_s", q_rate, "elements/s", target_text, q_rate >= target_rate, {}, 0);
        out.emit("quarantine_latency_p50", q.p50 * 1e3, "us", std::nullopt, std::nullopt, {}, 1);
        out.emit("quarantine_latency_p99", q.p99 * 1e3, "us", std::nullopt, std::nullopt, {}, 1);
        bench::delete_table();
        return 0;
    }
    const auto nf_q = single_changes(o.nft_changes, "bhn", 1);
    const auto qn = bench::stats_of(nf_q);
    const double qn_rate = static_cast<double>(nf_q.size()) / (sum(nf_q) / 1e3);
    std::cerr << "element_rate: nft -f of the same single-element diffs x" << nf_q.size() << ": p50 "
              << qn.p50 << " ms\n";
    {
        auto drift = backend.check(desired);
        std::cerr << "element_rate: check() after the single-element changes: "
                  << (drift ? drift->summary() : drift.error().message) << "\n";
        if (!drift || !drift->clean()) {
            ++failures;
        }
    }

    // ---- 2. 10,000-element diffs on a shared segment set -------------------------------
    const auto& bulk_def = find_set(desired, o.bulk_set);
    const ElementList before = *bulk_def.elements;
    const ElementList addresses = bulk_addresses(o.bulk);
    const ElementList after = merged(before, addresses);
    if (after.size() != before.size() + addresses.size()) {
        std::cerr << "element_rate: the bulk addresses overlap set " << o.bulk_set << "\n";
        return 1;
    }
    const RulesetDiff add_diff = one_set_diff(desired, o.bulk_set, {}, addresses);
    const RulesetDiff remove_diff = one_set_diff(desired, o.bulk_set, addresses, {});
    Ruleset with = desired;
    bench::replace_elements(with, o.bulk_set, after);
    {
        const auto computed = ruleset::diff_rulesets(desired, with);
        if (computed.elements_added() != addresses.size() || computed.elements_removed() != 0) {
            std::cerr << "element_rate: the bulk diff is not " << addresses.size() << " additions\n";
            return 1;
        }
    }
    std::cerr << "element_rate: set " << o.bulk_set << " holds " << before.size() << " elements; diffs of "
              << addresses.size() << "\n";
    std::vector<double> nl_add, nl_del, nf_add, nl_add_internal, nl_del_internal;
    std::optional<double> nf_del;  // one bounded attempt: nft 1.0.6 is slow here (see docs)
    bool nf_del_tried = false;
    for (std::size_t i = 0; i < o.reps; ++i) {
        nl_add.push_back(apply(add_diff, with));
        nl_add_internal.push_back(last_internal_ms);
        if (i == 0) {
            auto drift = backend.check(with);
            std::cerr << "element_rate: check() with the " << addresses.size()
                      << " addresses added: " << (drift ? drift->summary() : drift.error().message) << "\n";
            if (!drift || !drift->clean()) {
                ++failures;
            }
        }
        nl_del.push_back(apply(remove_diff, desired));
        nl_del_internal.push_back(last_internal_ms);
        if (auto ms = nft_apply(add_diff, with)) {
            nf_add.push_back(*ms);
        } else {
            ++failures;
        }
        std::string del_text = "not tried";
        if (!nf_del_tried) {
            nf_del_tried = true;
            nf_del = nft_apply(remove_diff, desired, o.nft_timeout);
            if (!nf_del && !nft_timed_out) {
                ++failures;  // an error, not slowness
            }
            del_text = nf_del ? std::to_string(*nf_del) + " ms" : "killed after the time limit";
        }
        if (!nf_del || i > 0) {
            // nft did not remove them (a killed nft commits nothing): remove through netlink.
            apply(remove_diff, desired);
        }
        std::cerr << "  bulk " << i + 1 << "/" << o.reps << ": netlink +" << nl_add.back() << " ms -"
                  << nl_del.back() << " ms; nft -f +" << (nf_add.empty() ? -1 : nf_add.back()) << " ms -"
                  << del_text << "\n";
    }
    // nft's removal rate on a sample small enough to finish (same set, same kind of diff).
    const ElementList sample(addresses.begin(),
                             addresses.begin() + static_cast<std::ptrdiff_t>(std::min(o.nft_remove_sample, addresses.size())));
    std::optional<double> nf_del_sample;
    {
        Ruleset with_sample = desired;
        bench::replace_elements(with_sample, o.bulk_set, merged(before, sample));
        apply(one_set_diff(desired, o.bulk_set, {}, sample), with_sample);
        nf_del_sample = nft_apply(one_set_diff(desired, o.bulk_set, sample, {}), desired, 120);
        if (!nf_del_sample) {
            apply(one_set_diff(desired, o.bulk_set, sample, {}), desired);
        }
        std::cerr << "element_rate: nft -f removing " << sample.size() << " elements of " << o.bulk_set
                  << ": " << (nf_del_sample ? std::to_string(*nf_del_sample) + " ms" : "failed") << "\n";
    }
    {
        auto drift = backend.check(desired);
        if (!drift || !drift->clean()) {
            std::cerr << "element_rate: table differs after the bulk diffs: "
                      << (drift ? drift->summary() : drift.error().message) << "\n";
            ++failures;
        }
    }
    bench::delete_table();

    const auto n = static_cast<double>(addresses.size());
    const double add_ms = bench::stats_of(nl_add).median;
    const double del_ms = bench::stats_of(nl_del).median;
    const double nft_add_ms = bench::stats_of(nf_add).median;
    const double add_rate = n / (add_ms / 1e3);
    const double del_rate = n / (del_ms / 1e3);
    const double nft_add_rate = nf_add.empty() ? 0 : n / (nft_add_ms / 1e3);
    const double sample_rate =
        nf_del_sample ? static_cast<double>(sample.size()) / (*nf_del_sample / 1e3) : 0;

    out.emit("quarantine_changes", static_cast<double>(nl_q.size()), "changes");
    {
        auto extra = FigureWriter::baseline("nft_quarantine_elements_per_s", qn_rate, q_rate);
        extra["note"] = "reference: serial apply_diff(), one transaction per change, each waited for "
                        "(GETGEN, batch, ACKs, GETGEN) before the next";
        out.emit("quarantine_elements_per_s", q_rate, "elements/s", target_text, q_rate >= target_rate, extra, 0);
    }
    out.emit("quarantine_latency_p50", q.p50 * 1e3, "us", std::nullopt, std::nullopt,
             FigureWriter::baseline("nft_quarantine_latency_p50", qn.p50 * 1e3, q.p50 * 1e3), 1);
    out.emit("quarantine_latency_p99", q.p99 * 1e3, "us", std::nullopt, std::nullopt, {}, 1);
    out.emit("quarantine_latency_max", q.worst * 1e3, "us", std::nullopt, std::nullopt, {}, 1);
    out.emit("quarantine_latency_mean", q.mean * 1e3, "us", std::nullopt, std::nullopt, {}, 1);
    out.emit("quarantine_backend_latency_p50", qi.p50 * 1e3, "us", std::nullopt, std::nullopt,
             {{"note", "ApplyStats::latency: the transaction without the socket close"}}, 1);
    out.emit("quarantine_backend_latency_p99", qi.p99 * 1e3, "us", std::nullopt, std::nullopt, {}, 1);
    out.emit("quarantine_kept_socket_elements_per_s", qp_rate, "elements/s", target_text, qp_rate >= target_rate,
             {{"note", "what-if: the same transactions on one netlink socket kept open (not the shipped path)"}},
             0);
    out.emit("quarantine_kept_socket_latency_p50", qp.p50 * 1e3, "us", std::nullopt, std::nullopt, {}, 1);
    out.emit("quarantine_kept_socket_latency_p99", qp.p99 * 1e3, "us", std::nullopt, std::nullopt, {}, 1);
    out.emit("nft_quarantine_changes", static_cast<double>(nf_q.size()), "changes");
    out.emit("nft_quarantine_elements_per_s", qn_rate, "elements/s", std::nullopt, std::nullopt, {}, 2);
    out.emit("nft_quarantine_latency_p50", qn.p50 * 1e3, "us", std::nullopt, std::nullopt, {}, 0);
    out.emit("nft_quarantine_latency_p99", qn.p99 * 1e3, "us", std::nullopt, std::nullopt, {}, 0);

    out.emit("bulk_diff_elements", n, "elements", std::nullopt, std::nullopt,
             {{"set", o.bulk_set}, {"set_elements_before", before.size()}});
    out.emit("bulk_add_median", add_ms, "ms", std::nullopt, std::nullopt,
             FigureWriter::baseline("nft_bulk_add_median", nft_add_ms, add_ms));
    out.emit("bulk_add_elements_per_s", add_rate, "elements/s", target_text, add_rate >= target_rate,
             FigureWriter::baseline("nft_bulk_add_elements_per_s", nft_add_rate, add_rate), 0);
    out.emit("bulk_add_backend_latency_median", bench::stats_of(nl_add_internal).median, "ms", std::nullopt,
             std::nullopt, {{"note", "ApplyStats::latency: the transaction without the socket close"}});
    out.emit("bulk_remove_median", del_ms, "ms");
    out.emit("bulk_remove_backend_latency_median", bench::stats_of(nl_del_internal).median, "ms");
    if (nf_del) {
        const double nft_del_rate = n / (*nf_del / 1e3);
        out.emit("bulk_remove_elements_per_s", del_rate, "elements/s", target_text, del_rate >= target_rate,
                 FigureWriter::baseline("nft_bulk_remove_elements_per_s", nft_del_rate, del_rate), 0);
        out.emit("nft_bulk_remove", *nf_del, "ms");
        out.emit("nft_bulk_remove_elements_per_s", nft_del_rate, "elements/s", std::nullopt, std::nullopt, {}, 0);
    } else {
        out.emit("bulk_remove_elements_per_s", del_rate, "elements/s", target_text, del_rate >= target_rate,
                 nf_del_sample ? FigureWriter::baseline("nft_remove_sample_elements_per_s", sample_rate, del_rate)
                               : nlohmann::ordered_json::object(),
                 0);
        out.skip("nft_bulk_remove",
                 "nft -f of the " + std::to_string(addresses.size()) + "-element removal did not finish within " +
                     std::to_string(static_cast<int>(o.nft_timeout)) +
                     " s (killed; nft 1.0.6 spends user CPU per removed interval element over the whole set)");
    }
    if (nf_del_sample) {
        out.emit("nft_remove_sample_elements", static_cast<double>(sample.size()), "elements");
        out.emit("nft_remove_sample", *nf_del_sample, "ms");
        out.emit("nft_remove_sample_elements_per_s", sample_rate, "elements/s", std::nullopt, std::nullopt, {}, 1);
    }
    out.emit("nft_bulk_add_median", nft_add_ms, "ms");
    out.emit("nft_bulk_add_elements_per_s", nft_add_rate, "elements/s", std::nullopt, std::nullopt, {}, 0);
    out.emit("failures", static_cast<double>(failures), "count", "0", failures == 0);
    return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(parse(argc, argv));
    } catch (const std::exception& e) {
        std::cerr << "bench_element_rate: " << e.what() << "\n";
        return 2;
    }
}
