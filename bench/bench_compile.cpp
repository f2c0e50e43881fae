// bench_compile: the compile benchmark on a generated VDI fleet (bench/fleet_generator).
//
// Prints one JSON object per line per figure on stdout:
//   {"benchmark":"compile","metric":…,"value":…,"unit":…,"target":…[,"met":bool]}
// and human progress on stderr. Single-threaded; timings use std::chrono::steady_clock,
// repeated, reporting the median and the best. See docs/benchmarks.md.
#include "bench/cli_args.hpp"
#include "bench/fleet_generator.hpp"
#include "bench/fleet_json.hpp"

#include "policies/nft_text.hpp"
#include "policies/policy_reader.hpp"
#include "policies/ruleset_compiler.hpp"
#include "policies/ruleset_diff.hpp"

#include <nlohmann/json.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace {

using bulkhead::bench::Fleet;
using bulkhead::bench::FleetSpec;
using bulkhead::ruleset::Ruleset;
using bulkhead::ruleset::RulesetCompiler;
using Clock = std::chrono::steady_clock;
using nlohmann::ordered_json;

constexpr const char* usage = R"(usage: bench_compile [options]
  --vdis N            VDIs in the fleet (10000)
  --hypervisors N     hypervisors (50)
  --segments N        segments (200)
  --rules N           rules (1000)
  --seed N            generator seed
  --reps N            timed repetitions of the fleet compile (5)
  --scale LIST        fleet sizes for the per-host growth figures, same VDIs per
                      hypervisor ("2500,5000,10000"; "" to skip)
  --nft-out FILE      write the largest per-host ruleset as an `nft -f` script, and
                      FILE.json: {"enforcer","elements","rules","diff_elements",...}
  --nft-diff-out FILE write the one-VDI-change diff of that host as an `nft -f` script
                      (applies on top of --nft-out)
  --emit-only         no timing or figures: generate, compile once, write the files
  --write-fleet DIR   write the generated policy.json and inventory.json to DIR
  --validate          round-trip the generated fleet through the policy reader first
  --explain           print the one-VDI change set by set on stderr
  --no-vdi-guard      analysis only: drop the explicit no-vdi-to-vdi deny rule
)";

struct Options {
    FleetSpec spec;
    std::size_t reps = 5;
    std::vector<std::size_t> scale{2500, 5000, 10000};
    std::string nft_out, nft_diff_out, write_fleet;
    bool emit_only = false;
    bool validate = false;
    bool explain = false;
};

using bulkhead::bench::to_number;

Options parse_options(int argc, char** argv) {
    Options o;
    std::vector<std::string> args(argv + 1, argv + argc);
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        auto value = [&]() -> const std::string& {
            if (i + 1 >= args.size()) {
                throw std::invalid_argument(a + " needs a value");
            }
            return args[++i];
        };
        if (a == "--vdis") {
            o.spec.vdis = to_number(a, value());
        } else if (a == "--hypervisors") {
            o.spec.hypervisors = to_number(a, value());
        } else if (a == "--segments") {
            o.spec.segments = to_number(a, value());
        } else if (a == "--rules") {
            o.spec.rules = to_number(a, value());
        } else if (a == "--seed") {
            o.spec.seed = to_number(a, value());
        } else if (a == "--reps") {
            o.reps = std::max<std::size_t>(1, to_number(a, value()));
        } else if (a == "--scale") {
            o.scale.clear();
            const std::string list = value();
            std::size_t start = 0;
            while (start < list.size()) {
                auto comma = list.find(',', start);
                if (comma == std::string::npos) {
                    comma = list.size();
                }
                o.scale.push_back(to_number(a, list.substr(start, comma - start)));
                start = comma + 1;
            }
        } else if (a == "--nft-out") {
            o.nft_out = value();
        } else if (a == "--nft-diff-out") {
            o.nft_diff_out = value();
        } else if (a == "--write-fleet") {
            o.write_fleet = value();
        } else if (a == "--emit-only") {
            o.emit_only = true;
        } else if (a == "--validate") {
            o.validate = true;
        } else if (a == "--explain") {
            o.explain = true;
        } else if (a == "--no-vdi-guard") {
            o.spec.vdi_deny_guard = false;
        } else if (a == "--help" || a == "-h") {
            std::cout << usage;
            std::exit(0);
        } else {
            throw std::invalid_argument("unknown option " + a);
        }
    }
    return o;
}

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Rounded to `decimals` places (divides by a power of ten, so 229.7 stays 229.7).
double round_to(double v, int decimals) {
    const double scale = std::pow(10.0, decimals);
    return std::round(v * scale) / scale;
}

template <typename T>
T median(std::vector<T> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? T{} : v[v.size() / 2];
}

// One figure. `target` is the requirement it is held to ("< 1 s"); `met` is set with it.
void emit(const std::string& metric, double value, const std::string& unit,
          std::optional<std::string> target = std::nullopt, std::optional<bool> met = std::nullopt) {
    ordered_json line{{"benchmark", "compile"}, {"metric", metric}};
    if (value == std::floor(value) && std::abs(value) < 1e15) {
        line["value"] = static_cast<long long>(value);
    } else {
        line["value"] = value;
    }
    line["unit"] = unit;
    line["target"] = target ? ordered_json(*target) : ordered_json(nullptr);
    if (met) {
        line["met"] = *met;
    }
    std::cout << line.dump() << std::endl;
}

std::string describe(const FleetSpec& s) {
    return std::to_string(s.vdis) + " VDIs / " + std::to_string(s.hypervisors) + " hypervisors / " +
           std::to_string(s.segments) + " segments / " + std::to_string(s.rules) + " rules";
}

struct HostFigures {
    std::vector<std::size_t> elements, rules, classes;
    // hv-001 hosts the same 200 desktops at every fleet size (the generator fills
    // hypervisors in order from one seeded stream), so its rule count isolates the effect
    // of the fleet's size from the luck of which classes land on the fullest host.
    std::size_t first_host_rules = 0;
    std::string largest;  // enforcer with the most elements
};

HostFigures host_figures(const std::map<std::string, Ruleset>& all) {
    HostFigures f;
    std::size_t most = 0;
    if (!all.empty()) {
        f.first_host_rules = all.begin()->second.rule_count();
    }
    for (const auto& [enforcer, ruleset] : all) {
        const auto elements = ruleset.element_count();
        f.elements.push_back(elements);
        f.rules.push_back(ruleset.rule_count());
        std::set<std::string> classes;
        for (const auto& p : ruleset.ports) {
            classes.insert(p.policy_class);
        }
        f.classes.push_back(classes.size());
        if (f.largest.empty() || elements > most) {
            most = elements;
            f.largest = enforcer;
        }
    }
    return f;
}

std::size_t max_of(const std::vector<std::size_t>& v) {
    return v.empty() ? 0 : *std::max_element(v.begin(), v.end());
}

struct Compiled {
    std::unique_ptr<RulesetCompiler> compiler;
    std::map<std::string, Ruleset> rulesets;
    double resolve_s = 0;  // RulesetCompiler constructor
    double compile_s = 0;  // compile_all
    double total() const { return resolve_s + compile_s; }
};

Compiled compile_fleet(const Fleet& fleet) {
    Compiled c;
    const auto t0 = Clock::now();
    c.compiler = std::make_unique<RulesetCompiler>(fleet.policy, fleet.inventory);
    const auto t1 = Clock::now();
    c.rulesets = c.compiler->compile_all();
    const auto t2 = Clock::now();
    c.resolve_s = seconds(t1 - t0);
    c.compile_s = seconds(t2 - t1);
    return c;
}

// Best and median of `reps` whole-fleet compiles; keeps the last result.
struct Timing {
    double best = 0, median = 0, resolve_median = 0, compile_median = 0;
};
Timing time_compiles(const Fleet& fleet, std::size_t reps, Compiled& keep) {
    std::vector<double> totals, resolves, compiles;
    for (std::size_t i = 0; i < reps; ++i) {
        keep = Compiled{};  // free the previous run before the next one
        keep = compile_fleet(fleet);
        totals.push_back(keep.total());
        resolves.push_back(keep.resolve_s);
        compiles.push_back(keep.compile_s);
        std::cerr << "  rep " << i + 1 << "/" << reps << ": " << keep.total() << " s (resolve "
                  << keep.resolve_s << " s, compile_all " << keep.compile_s << " s)\n";
    }
    return {*std::min_element(totals.begin(), totals.end()), median(totals), median(resolves),
            median(compiles)};
}

void write_file(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary);
    out << text;
    if (!out) {
        throw std::runtime_error("cannot write " + path);
    }
    std::cerr << "wrote " << path << " (" << text.size() << " bytes)\n";
}

void validate_fleet(const Fleet& fleet) {
    using namespace bulkhead;
    auto policy = policy::read_policy(nlohmann::json::parse(bench::policy_to_json(fleet.policy).dump()));
    auto inventory =
        policy::read_inventory(nlohmann::json::parse(bench::inventory_to_json(fleet.inventory).dump()));
    std::size_t problems = 0;
    auto report = [&](const policy::Diagnostics& diagnostics) {
        for (const auto& d : diagnostics) {
            std::cerr << "  " << d.pointer << ": " << d.message << "\n";
            ++problems;
        }
    };
    if (!policy) {
        report(policy.error());
    }
    if (!inventory) {
        report(inventory.error());
    }
    if (policy && inventory) {
        report(policy::cross_check(*policy, *inventory));
    }
    if (problems != 0) {
        throw std::runtime_error("the generated fleet does not pass the policy reader");
    }
    std::cerr << "generated fleet passes read_policy / read_inventory / cross_check\n";
}

std::string vdi_on(const Fleet& fleet, const std::string& enforcer) {
    for (const auto& w : fleet.inventory.workloads) {
        if (w.enforcer == enforcer && w.labels.contains("role") && w.labels.at("role") == "vdi") {
            return w.id;
        }
    }
    throw std::runtime_error("no VDI on " + enforcer);
}

void explain_diff(const bulkhead::ruleset::RulesetDiff& d) {
    std::cerr << "  " << d.enforcer << ": +" << d.elements_added() << " -" << d.elements_removed()
              << " elements, " << d.rules_written() << " rules written"
              << (d.full_replace ? " (full replace)" : "") << "\n";
    std::map<std::string, std::size_t> by_kind;  // set name without the class prefix
    for (const auto& s : d.set_changes) {
        auto name = s.set;
        if (name.size() > 10 && name[0] == 'c' && name[9] == '_') {
            name = "<class>" + name.substr(9);
        }
        by_kind[name] += s.added.size() + s.removed.size();
    }
    for (const auto& [name, n] : by_kind) {
        std::cerr << "    " << name << ": " << n << "\n";
    }
}

int run(const Options& o) {
    std::cerr << "fleet: " << describe(o.spec) << (o.spec.vdi_deny_guard ? "" : " (no vdi guard)")
              << "\n";
    const Fleet fleet = bulkhead::bench::generate_fleet(o.spec);
    if (o.validate) {
        validate_fleet(fleet);
    }
    if (!o.write_fleet.empty()) {
        std::filesystem::create_directories(o.write_fleet);
        write_file(o.write_fleet + "/policy.json",
                   bulkhead::bench::policy_to_json(fleet.policy).dump(2) + "\n");
        write_file(o.write_fleet + "/inventory.json",
                   bulkhead::bench::inventory_to_json(fleet.inventory).dump(2) + "\n");
    }

    // 1. Whole-fleet compile.
    Compiled base;
    Timing timing;
    if (o.emit_only) {
        base = compile_fleet(fleet);
    } else {
        std::cerr << "whole-fleet compile, " << o.reps << " reps\n";
        timing = time_compiles(fleet, o.reps, base);
    }
    const HostFigures hosts = host_figures(base.rulesets);
    const Ruleset& largest = base.rulesets.at(hosts.largest);

    // 2. One more VDI on the largest host, like one already there; diff every enforcer.
    Fleet grown = fleet;
    grown.inventory.workloads.push_back(
        bulkhead::bench::clone_vdi(fleet, vdi_on(fleet, hosts.largest), hosts.largest));
    const auto& added = grown.inventory.workloads.back();
    std::cerr << "one-VDI change: " << added.id << " (like " << vdi_on(fleet, hosts.largest)
              << ", class " << base.compiler->class_of(vdi_on(fleet, hosts.largest)) << ") on "
              << hosts.largest << "\n";
    const auto t_recompile = Clock::now();
    Compiled after = compile_fleet(grown);
    const auto t_diff = Clock::now();
    std::size_t own = 0, other_max = 0, total = 0, rules_written = 0, full_replaces = 0;
    std::string other_max_host;
    std::optional<bulkhead::ruleset::RulesetDiff> own_diff, other_diff;
    for (const auto& [enforcer, updated] : after.rulesets) {
        auto d = bulkhead::ruleset::diff_rulesets(base.rulesets.at(enforcer), updated);
        const auto n = d.elements_added() + d.elements_removed();
        total += n;
        rules_written += d.rules_written();
        full_replaces += d.full_replace ? 1 : 0;
        if (enforcer == hosts.largest) {
            own = n;
            own_diff = std::move(d);
        } else if (other_max_host.empty() || n > other_max) {
            other_max = n;
            other_max_host = enforcer;
            other_diff = std::move(d);
        }
    }
    const auto t_done = Clock::now();
    if (o.explain) {
        std::cerr << "one-VDI change, set by set:\n";
        explain_diff(*own_diff);
        if (other_diff) {
            explain_diff(*other_diff);
        }
    }

    if (!o.nft_out.empty()) {
        write_file(o.nft_out, bulkhead::ruleset::render_nft(largest));
        // Sidecar facts for the nft_load benchmark (one JSON object, one line).
        const ordered_json facts{{"enforcer", hosts.largest},
                                 {"elements", largest.element_count()},
                                 {"rules", largest.rule_count()},
                                 {"diff_elements", own},
                                 {"diff_rules_written", own_diff->rules_written()}};
        write_file(o.nft_out + ".json", facts.dump() + "\n");
    }
    if (!o.nft_diff_out.empty()) {
        write_file(o.nft_diff_out,
                   bulkhead::ruleset::render_nft_diff(*own_diff, after.rulesets.at(hosts.largest)));
    }
    if (o.emit_only) {
        return 0;
    }

    // Context.
    emit("fleet_vdis", static_cast<double>(o.spec.vdis), "count");
    emit("fleet_hypervisors", static_cast<double>(o.spec.hypervisors), "count");
    emit("fleet_segments", static_cast<double>(fleet.policy.segments.size()), "count");
    emit("fleet_rules", static_cast<double>(fleet.policy.rules.size()), "count");
    std::set<std::string> all_classes;
    for (const auto& w : fleet.inventory.workloads) {
        if (auto c = base.compiler->class_of(w.id); !c.empty()) {
            all_classes.insert(c);
        }
    }
    emit("policy_classes_fleet", static_cast<double>(all_classes.size()), "count");
    emit("policy_classes_per_host_max", static_cast<double>(max_of(hosts.classes)), "count");

    // Compile time.
    const auto ms = [](double s) { return round_to(s * 1e3, 2); };
    emit("fleet_compile_median", ms(timing.median), "ms", "< 1000 ms", timing.median < 1.0);
    emit("fleet_compile_best", ms(timing.best), "ms", "< 1000 ms", timing.best < 1.0);
    emit("fleet_compile_resolve_median", ms(timing.resolve_median), "ms");
    emit("fleet_compile_compile_all_median", ms(timing.compile_median), "ms");

    // Per-host ruleset size.
    emit("elements_per_host_max", static_cast<double>(max_of(hosts.elements)), "elements");
    emit("elements_per_host_median", static_cast<double>(median(hosts.elements)), "elements");
    emit("rules_per_host_max", static_cast<double>(max_of(hosts.rules)), "rules");
    emit("rules_per_host_median", static_cast<double>(median(hosts.rules)), "rules");

    // One-VDI change.
    emit("one_vdi_change_elements_own_host", static_cast<double>(own), "elements", "< 50", own < 50);
    emit("one_vdi_change_elements_other_host_max", static_cast<double>(other_max), "elements",
         "< 50", other_max < 50);
    emit("one_vdi_change_elements_fleet_total", static_cast<double>(total), "elements");
    emit("one_vdi_change_rules_written_fleet_total", static_cast<double>(rules_written), "rules");
    emit("one_vdi_change_full_replaces", static_cast<double>(full_replaces), "enforcers");
    emit("one_vdi_recompile", ms(seconds(t_diff - t_recompile)), "ms");
    emit("one_vdi_diff_all_enforcers", ms(seconds(t_done - t_diff)), "ms");
    after = Compiled{};

    // Per-host rule count across fleet sizes at the same density.
    std::map<std::size_t, std::size_t> rules_max;
    for (const auto n : o.scale) {
        FleetSpec s = o.spec;
        s.vdis = n;
        s.hypervisors = std::max<std::size_t>(1, n * o.spec.hypervisors / o.spec.vdis);
        HostFigures f;
        double best = 0;
        if (s.vdis == o.spec.vdis && s.hypervisors == o.spec.hypervisors) {
            f = hosts;
            best = timing.best;
        } else {
            std::cerr << "scale: " << describe(s) << "\n";
            const Fleet scaled = bulkhead::bench::generate_fleet(s);
            Compiled c;
            best = time_compiles(scaled, std::min<std::size_t>(o.reps, 3), c).best;
            f = host_figures(c.rulesets);
        }
        const std::string suffix = "_" + std::to_string(n) + "vdis_" + std::to_string(s.hypervisors) + "hv";
        rules_max[n] = f.first_host_rules;
        emit("rules_on_first_host" + suffix, static_cast<double>(f.first_host_rules), "rules");
        emit("rules_per_host_max" + suffix, static_cast<double>(max_of(f.rules)), "rules");
        emit("rules_per_host_median" + suffix, static_cast<double>(median(f.rules)), "rules");
        emit("elements_per_host_max" + suffix, static_cast<double>(max_of(f.elements)), "elements");
        emit("fleet_compile_best" + suffix, ms(best), "ms");
    }
    if (rules_max.size() >= 2) {
        const double ratio = static_cast<double>(rules_max.rbegin()->second) /
                             static_cast<double>(std::max<std::size_t>(1, rules_max.begin()->second));
        // Same host, same desktops, fleets of different sizes: 1.0 means the fleet's size
        // does not leak into a host's ruleset.
        emit("rules_per_host_growth_ratio", round_to(ratio, 3), "ratio", "1.0", ratio == 1.0);
    }

    rusage resources{};
    getrusage(RUSAGE_SELF, &resources);
    emit("peak_rss", round_to(static_cast<double>(resources.ru_maxrss) / 1024.0, 1), "MiB");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(parse_options(argc, argv));
    } catch (const std::exception& e) {
        std::cerr << "bench_compile: " << e.what() << "\n";
        return 2;
    }
}
