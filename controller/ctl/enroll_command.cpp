#include "controller/ctl/enroll_command.hpp"

#include "controller/ctl/ctl_commands.hpp"
#include "policies/json_reader.hpp"

#include <nlohmann/json.hpp>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>
#include <vector>

namespace bulkhead::ctl {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string trimmed(std::string text) {
    const auto end = text.find_last_not_of(" \t\r\n");
    text.erase(end == std::string::npos ? 0 : end + 1);
    const auto begin = text.find_first_not_of(" \t\r\n");
    return begin == std::string::npos ? std::string() : text.substr(begin);
}

bool read_all(std::istream& in, std::string& text) {
    std::stringstream buffer;
    buffer << in.rdbuf();
    text = buffer.str();
    return !in.bad();
}

// Written beside the target, fsynced, renamed over it: a crash leaves the old file or the new.
bool write_atomically(const fs::path& path, const std::string& text, mode_t mode, std::ostream& err) {
    const fs::path tmp = path.string() + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "w");
    if (f == nullptr || ::fchmod(fileno(f), mode) != 0 || std::fwrite(text.data(), 1, text.size(), f) != text.size() ||
        std::fflush(f) != 0 || ::fsync(fileno(f)) != 0) {
        err << "bulkheadctl: cannot write " << tmp.string() << "\n";
        if (f != nullptr) {
            std::fclose(f);
        }
        return false;
    }
    std::fclose(f);
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) {
        err << "bulkheadctl: cannot replace " << path.string() << ": " << ec.message() << "\n";
        return false;
    }
    return true;
}

int run(const std::vector<std::string>& argv) {
    std::vector<char*> args;
    for (const auto& a : argv) {
        args.push_back(const_cast<char*>(a.c_str()));
    }
    args.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::execvp(args[0], args.data());
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || ::waitpid(pid, &status, 0) < 0) {
        return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

int enroll_enforcer(const EnrollOptions& options, std::ostream& out, std::ostream& err) {
    if (options.controller_url.rfind("https://", 0) != 0) {
        err << "bulkheadctl: --controller " << options.controller_url << ": expected https://HOST:PORT\n";
        return exit_usage;
    }
    std::string ca;
    if (std::ifstream in(options.ca_file, std::ios::binary); !in || !read_all(in, ca)) {
        err << "bulkheadctl: --ca " << options.ca_file << ": cannot read it\n";
        return exit_usage;
    }
    if (ca.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
        err << "bulkheadctl: --ca " << options.ca_file << ": not a PEM certificate\n";
        return exit_invalid;
    }
    std::string token = options.token;
    if (!options.token_file.empty()) {
        bool ok = false;
        if (options.token_file == "-") {
            ok = read_all(std::cin, token);
        } else if (std::ifstream in(options.token_file, std::ios::binary); in) {
            ok = read_all(in, token);
        }
        if (!ok) {
            err << "bulkheadctl: --token-file " << options.token_file << ": cannot read it\n";
            return exit_usage;
        }
    }
    token = trimmed(token);
    if (token.empty()) {
        err << "bulkheadctl: no enrollment token (--token or --token-file)\n";
        return exit_usage;
    }
    std::string id = options.enforcer_id;
    if (id.empty()) {
        char host[256] = {};
        ::gethostname(host, sizeof host - 1);
        id = host;
    }

    const fs::path dir = options.config_dir;
    std::error_code ec;
    fs::create_directories(dir, ec);
    const fs::path config_path = dir / "enforcer.json", ca_path = dir / "controller-ca.pem",
                   token_path = dir / "enrollment.token";
    // An existing configuration keeps its other members (log level, groups, ...).
    json config = json::object();
    if (std::ifstream in(config_path, std::ios::binary); in) {
        std::string text;
        read_all(in, text);
        auto existing = policy::read_json(text, config_path.string());
        if (!existing || !existing->is_object()) {
            err << "bulkheadctl: " << config_path.string() << " exists and is not a JSON object; move it away first\n";
            return exit_invalid;
        }
        config = *existing;
        config.erase("ruleset");
    }
    config["$schema"] = "/usr/share/bulkhead/schema/enforcer-config.schema.json";
    config["enforcer_id"] = id;
    config["controller"] = options.controller_url;
    config["ca"] = ca_path.string();
    config["enrollment_token"] = token_path.string();
    if (!config.contains("state_dir")) {
        config["state_dir"] = options.state_dir;
    }
    // A hypervisor names its VM ports itself (vnetN, tapN…): follow them, unless the file
    // already says otherwise (enforcer/README.md, Port discovery).
    if (!config.contains("port_discovery")) {
        config["port_discovery"] = true;
    }
    if (!write_atomically(ca_path, ca, 0644, err) || !write_atomically(token_path, token + "\n", 0600, err) ||
        !write_atomically(config_path, config.dump(2) + "\n", 0644, err)) {
        return exit_usage;
    }
    // A new enrollment replaces the old identity: the stored credential would otherwise win.
    const fs::path credential = fs::path(config.value("state_dir", options.state_dir)) / "credential";
    fs::remove(credential, ec);
    out << "wrote " << config_path.string() << " (enforcer " << id << ", controller " << options.controller_url
        << "), " << ca_path.string() << ", " << token_path.string() << "\n";
    if (!options.start) {
        return exit_ok;
    }
    if (run({"systemctl", "enable", "--quiet", "bulkhead-enforcer.service"}) != 0 ||
        run({"systemctl", "restart", "bulkhead-enforcer.service"}) != 0) {
        err << "bulkheadctl: systemctl could not start bulkhead-enforcer.service (journalctl -u bulkhead-enforcer)\n";
        return exit_invalid;
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(options.wait_seconds);
    while (!fs::exists(credential, ec)) {
        if (std::chrono::steady_clock::now() >= deadline) {
            err << "bulkheadctl: bulkhead-enforcer has not enrolled within " << options.wait_seconds
                << " s (journalctl -u bulkhead-enforcer says why)\n";
            return exit_invalid;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    out << "enforcer " << id << " enrolled with " << options.controller_url << "\n";
    return exit_ok;
}

}  // namespace bulkhead::ctl
