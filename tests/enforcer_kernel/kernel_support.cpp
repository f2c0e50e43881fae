#include "kernel_support.hpp"

#include "enforcer/netlink/kernel_table.hpp"
#include "policies/policy_reader.hpp"
#include "policies/ruleset_compiler.hpp"

#include <fcntl.h>
#include <linux/netfilter/nf_tables.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>

namespace bulkhead::ktest {

ScopedNetns::ScopedNetns() {
    original_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (original_ < 0) {
        throw std::runtime_error("cannot open the current network namespace");
    }
    if (unshare(CLONE_NEWNET) != 0) {
        close(original_);
        throw std::runtime_error("unshare(CLONE_NEWNET) failed");
    }
}

ScopedNetns::~ScopedNetns() {
    if (setns(original_, CLONE_NEWNET) != 0) {
        std::perror("setns back to the original network namespace");
        std::abort();  // every later test would run in the wrong namespace
    }
    close(original_);
}

CommandResult run(const std::string& command) {
    CommandResult result;
    FILE* pipe = popen((command + " 2>&1").c_str(), "r");
    if (pipe == nullptr) {
        return result;
    }
    std::array<char, 4096> buf{};
    std::size_t n = 0;
    while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) {
        result.output.append(buf.data(), n);
    }
    const int status = pclose(pipe);
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return result;
}

CommandResult nft_script(const std::string& script) {
    char path[] = "/tmp/bulkhead-kernel-test-XXXXXX";
    const int fd = mkstemp(path);
    if (fd < 0) {
        return {};
    }
    close(fd);
    std::ofstream(path) << script;
    auto result = run(std::string("nft -f ") + path);
    unlink(path);
    return result;
}

std::string probe_environment() {
    if (geteuid() != 0) {
        return "not running as root (the tests create network namespaces and program nf_tables)";
    }
    if (run("nft --version").status != 0) {
        return "the nft binary (the test oracle) is not installed";
    }
    const pid_t pid = fork();
    if (pid == 0) {
        if (unshare(CLONE_NEWNET) != 0) {
            _exit(2);
        }
        _exit(run("nft add table inet bulkhead_probe").status == 0 ? 0 : 3);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status)) {
        return "the namespace probe crashed";
    }
    switch (WEXITSTATUS(status)) {
    case 0: return "";
    case 2: return "cannot create a network namespace (unshare(CLONE_NEWNET) failed)";
    default: return "nf_tables does not work in a fresh network namespace";
    }
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
            std::sort(it->begin(), it->end(),
                      [](const nlohmann::json& a, const nlohmann::json& b) { return a.dump() < b.dump(); });
        }
    } else if (j.is_array()) {
        for (auto& v : j) {
            normalise(v);
        }
    }
}

std::string hex(const std::vector<std::uint8_t>& bytes) {
    static const char* digits = "0123456789abcdef";
    std::string s;
    for (auto b : bytes) {
        s += digits[b >> 4];
        s += digits[b & 15];
    }
    return s;
}

std::string anon(const std::string& text) {
    static const std::regex number("__set[0-9]+");
    return std::regex_replace(text, number, "__set#");
}

}  // namespace

nlohmann::json listing(const std::string& table) {
    auto result = run("nft -j list table " + table);
    if (result.status != 0) {
        return {{"error", result.output}};
    }
    auto j = nlohmann::json::parse(result.output, nullptr, false);
    normalise(j);
    // The kernel lists objects in creation order, and a diff creates new sets and chains
    // after the old ones: order objects by kind and name, keeping each chain's rule order.
    if (j.contains("nftables") && j["nftables"].is_array()) {
        auto& items = j["nftables"];
        auto key = [](const nlohmann::json& item) {
            static const std::vector<std::string> order{"metainfo", "table", "set", "map", "chain", "rule"};
            if (!item.is_object() || item.empty()) {
                return std::pair{std::ptrdiff_t{-1}, std::string()};
            }
            const auto it = item.begin();
            const std::string kind = it.key();
            const nlohmann::json& body = it.value();
            std::string name;
            if (body.is_object()) {
                name = body.contains("name") ? body["name"].get<std::string>()
                       : body.contains("chain") ? body["chain"].get<std::string>() : "";
            }
            const auto rank = std::find(order.begin(), order.end(), kind) - order.begin();
            return std::pair{rank, name};
        };
        std::stable_sort(items.begin(), items.end(),
                         [&](const nlohmann::json& a, const nlohmann::json& b) { return key(a) < key(b); });
    }
    return j;
}

std::string raw_listing(const std::string& table) {
    auto result = run("nft -a list table " + table);
    return result.status == 0 ? result.output : "error: " + result.output;
}

std::string snapshot() {
    auto socket = enforcer::detail::NetlinkSocket::open();
    if (!socket) {
        return "error: " + socket.error().message;
    }
    std::uint32_t seq = 1;
    auto table = enforcer::detail::read_table(*socket, seq);
    if (!table) {
        return "error: " + table.error().message;
    }
    if (!table->exists) {
        return "no table";
    }
    std::vector<std::string> sets;
    for (const auto& s : table->sets) {
        std::ostringstream out;
        out << "set " << anon(s.name) << " flags " << s.flags << " key " << s.key_type << '/'
            << s.key_len << " data " << s.data_type << '/' << s.data_len << " size " << s.desc_size
            << " concat " << hex(s.concat_lengths) << " udata " << hex(s.userdata) << '\n';
        struct Line {
            std::vector<std::uint8_t> key;
            bool end;
            std::string text;
        };
        std::vector<Line> lines;
        for (std::size_t i = 0; i < s.elements.size(); ++i) {
            const auto& e = s.elements[i];
            std::ostringstream l;
            l << "  elem " << hex(e.key);
            if (!e.key_end.empty()) {
                l << '-' << hex(e.key_end);
            }
            l << " flags " << e.flags;
            if (e.has_verdict) {
                l << " verdict " << e.verdict << ' ' << e.chain;
            }
            l << " udata " << hex(s.element_userdata[i]) << '\n';
            lines.push_back({e.key, (e.flags & NFT_SET_ELEM_INTERVAL_END) != 0, l.str()});
        }
        std::sort(lines.begin(), lines.end(), [](const Line& a, const Line& b) {
            return std::tie(a.key, b.end) < std::tie(b.key, a.end);
        });
        const bool rbtree = (s.flags & NFT_SET_INTERVAL) != 0 && (s.flags & NFT_SET_CONCAT) == 0;
        bool open_start = false;
        std::vector<std::string> kept;
        for (const auto& l : lines) {
            if (rbtree && l.end && !open_start) {
                continue;  // an end without a start: nft's leading zero segment
            }
            open_start = !l.end;
            kept.push_back(l.text);
        }
        std::sort(kept.begin(), kept.end());
        for (const auto& k : kept) {
            out << k;
        }
        sets.push_back(out.str());
    }
    std::sort(sets.begin(), sets.end());
    std::vector<std::string> chains;
    for (const auto& c : table->chains) {
        std::ostringstream out;
        out << "chain " << c.name << " base " << c.base << " hook " << c.hooknum << " prio "
            << c.priority << " type " << c.type << " policy " << c.policy << '\n';
        for (const auto& r : c.rules) {
            out << "  rule\n" << anon(r.expressions);
        }
        chains.push_back(out.str());
    }
    std::sort(chains.begin(), chains.end());
    std::string text;
    for (const auto& s : sets) {
        text += s;
    }
    for (const auto& c : chains) {
        text += c;
    }
    return text;
}

std::string first_difference(const std::string& expected, const std::string& actual) {
    if (expected == actual) {
        return "";
    }
    std::istringstream a(expected);
    std::istringstream b(actual);
    std::string la;
    std::string lb;
    for (int line = 1;; ++line) {
        const bool ha = static_cast<bool>(std::getline(a, la));
        const bool hb = static_cast<bool>(std::getline(b, lb));
        if (!ha && !hb) {
            return "texts differ only in line endings";
        }
        if (!ha || !hb || la != lb) {
            return "line " + std::to_string(line) + ":\n  expected: " + (ha ? la : "<end>") +
                   "\n  actual:   " + (hb ? lb : "<end>");
        }
    }
}

namespace {

std::string read_source(const std::string& relative) {
    std::ifstream in(std::string(BULKHEAD_SOURCE_DIR) + "/" + relative);
    if (!in) {
        throw std::runtime_error("cannot read " + relative);
    }
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

}  // namespace

Example load_example(const std::string& name) {
    auto p = policy::parse_policy(read_source("examples/" + name + "/policy.json"));
    auto i = policy::parse_inventory(read_source("examples/" + name + "/inventory.json"));
    if (!p || !i) {
        throw std::runtime_error("example " + name + " does not parse");
    }
    return {*p, *i};
}

ruleset::Ruleset compile(const Example& example, const std::string& enforcer,
                         const std::set<std::string>& quarantined) {
    ruleset::RulesetCompiler compiler(example.policy, example.inventory);
    auto r = compiler.compile(enforcer, quarantined);
    if (!r) {
        throw std::runtime_error("compile " + enforcer + ": " + r.error());
    }
    return *r;
}

const ruleset::SetDefinition& pick_set(const ruleset::Ruleset& ruleset,
                                      const std::function<bool(const ruleset::SetDefinition&)>& what,
                                      const std::string& description) {
    for (const auto& set : ruleset.sets) {
        if (what(set)) {
            return set;
        }
    }
    throw std::runtime_error("the ruleset has no " + description);
}

policy::Workload clone_workload(const policy::Workload& like, const std::string& id,
                                const std::string& ipv4, const std::string& ipv6,
                                const std::string& interface) {
    policy::Workload w = like;
    w.id = id;
    w.hostname = id;
    w.addresses = {*policy::parse_ip_address(ipv4), *policy::parse_ip_address(ipv6)};
    w.mac.clear();
    w.attachment->interfaces = {interface};
    return w;
}

Example big_example(std::size_t vdis) {
    auto example = load_example("vdi-pool");
    const auto find = [&](const std::string& id) {
        for (const auto& w : example.inventory.workloads) {
            if (w.id == id) {
                return w;
            }
        }
        throw std::runtime_error("no workload " + id);
    };
    const auto on_hv1 = find("vdi-001");
    const auto on_hv2 = find("vdi-101");
    for (std::size_t i = 0; i < vdis; ++i) {
        char v6[48];
        std::snprintf(v6, sizeof(v6), "fd00:0:0:20::%zx", i + 1);
        std::string number = std::to_string(i);
        number.insert(0, number.size() < 5 ? 5 - number.size() : 0, '0');
        example.inventory.workloads.push_back(clone_workload(
            i % 2 == 0 ? on_hv1 : on_hv2, "bvdi-" + number,
            "10.2." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1), v6,
            "bv" + number));
    }
    return example;
}

ruleset::Ruleset variety_ruleset() {
    static const char* text = R"({
 "format": "bulkhead-ruleset/1", "table": "bulkhead", "family": "inet",
 "enforcer": "variety", "policy": "variety", "ports": [],
 "sets": [
  {"name": "a_concat_hash", "key": ["ipv4_addr", "inet_proto", "inet_service"],
   "elements": [{"key": ["10.0.0.1", 6, 22]}, {"key": ["10.0.0.2", 17, 53]}]},
  {"name": "b_rbtree", "key": ["ipv4_addr"], "interval": true,
   "elements": [{"key": ["0.0.0.0/8"]}, {"key": ["10.0.0.0/8"]}, {"key": ["11.0.0.0/8"]},
                {"key": ["224.0.0.0-255.255.255.255"]}]},
  {"name": "c_ports", "key": ["inet_service"], "interval": true,
   "elements": [{"key": ["1000-2000"]}, {"key": [65535]}]},
  {"name": "d_proto", "key": ["inet_proto"], "elements": [{"key": [6]}, {"key": [17]}]},
  {"name": "e_if_concat", "key": ["ifname", "ipv6_addr"], "interval": true,
   "elements": [{"key": ["eth0", "fd00::/64"]}]},
  {"name": "f_icmp", "key": ["icmp_type"], "elements": [{"key": [8]}]},
  {"name": "g_v6", "key": ["ipv6_addr"], "interval": true, "elements": [{"key": ["::/0"]}]},
  {"name": "h_dyn", "key": ["ifname"], "dynamic": true, "elements": []},
  {"name": "i_map_int", "key": ["ipv4_addr"], "interval": true, "verdict_map": true,
   "elements": [{"key": ["10.0.0.0/8"], "jump": "x2"}]},
  {"name": "j_icmp6_concat", "key": ["ipv6_addr", "icmpv6_type"], "interval": true,
   "elements": [{"key": ["fd00::1", "1-4"]}, {"key": ["fd00::/16", 128]}]}
 ],
 "chains": [
  {"name": "x", "rules": [
   {"matches": [{"lookup": {"fields": ["ip daddr", "meta l4proto", "th dport"], "set": "a_concat_hash"}}], "verdict": "accept"},
   {"matches": [{"lookup": {"fields": ["ip saddr"], "set": "b_rbtree"}}], "counter": true, "verdict": "drop"},
   {"matches": [{"lookup": {"fields": ["th sport"], "set": "c_ports"}}], "verdict": "accept"},
   {"matches": [{"lookup": {"fields": ["meta l4proto"], "set": "d_proto"}}], "verdict": "accept"},
   {"matches": [{"lookup": {"fields": ["oifname", "ip6 saddr"], "set": "e_if_concat"}}], "verdict": {"goto": "x2"}},
   {"matches": [{"lookup": {"fields": ["icmp type"], "set": "f_icmp"}}], "verdict": "accept"},
   {"matches": [{"lookup": {"fields": ["ip6 daddr"], "set": "g_v6"}}], "verdict": "accept"},
   {"matches": [{"lookup": {"fields": ["ip6 saddr", "icmpv6 type"], "set": "j_icmp6_concat"}}], "verdict": "accept"},
   {"matches": [{"values": {"field": "meta l4proto", "values": [6, 17]}}], "verdict": "accept"},
   {"matches": [{"values": {"field": "th dport", "values": [22]}}], "verdict": "accept"},
   {"matches": [{"values": {"field": "th dport", "values": ["22-23"]}}], "verdict": "accept"},
   {"matches": [{"values": {"field": "th dport", "values": [22, "80-90", 443]}}], "verdict": "drop"},
   {"matches": [{"values": {"field": "icmp type", "values": [8]}}], "verdict": "accept"},
   {"matches": [{"values": {"field": "icmp type", "values": [8, "13-14"]}}], "verdict": "accept"},
   {"matches": [{"values": {"field": "icmpv6 type", "values": ["130-136", 143]}}], "verdict": "accept"},
   {"matches": [{"values": {"field": "th sport", "values": ["1-5", "6-9", 100]}}], "verdict": "accept"},
   {"matches": [{"values": {"field": "meta l4proto", "values": [6, "17-20"]}}], "verdict": "accept"},
   {"matches": [{"values": {"field": "th dport", "values": ["1000-65535", 5]}}], "verdict": "accept"},
   {"matches": [{"ct_state": ["invalid", "established", "related", "new"]}], "verdict": "accept"},
   {"matches": [{"ct_direction": "reply"}, {"lookup": {"fields": ["ip saddr"], "set": "b_rbtree"}}],
    "counter": true, "log": {"prefix": "p", "group": 3}, "verdict": "return"},
   {"matches": [], "log": {"prefix": "only", "group": 0}},
   {"matches": [], "counter": true},
   {"dispatch": {"field": "ip daddr", "map": "i_map_int"}, "matches": [], "verdict": null},
   {"matches": [], "verdict": {"jump": "x2"}}
  ]},
  {"name": "x2", "rules": []}
 ]
})";
    auto r = ruleset::ruleset_from_json(nlohmann::json::parse(text));
    if (!r) {
        throw std::runtime_error("variety ruleset: " + r.error());
    }
    return *r;
}

}  // namespace bulkhead::ktest
