// bulkhead-controller: REST API, enforcer control channel and dashboard on one process,
// SQLite in a data directory. Configuration: a JSON file (--config) and flags, flags win.
#include "controller/analyzer/drop_record.hpp"
#include "common/files/secret_file.hpp"
#include "common/logging/logging.hpp"
#include "common/version.hpp"
#include "controller/server/controller_metrics.hpp"
#include "controller/server/http_api.hpp"
#include "controller/server/http_server.hpp"
#include "controller/services/evidence_service.hpp"
#include "controller/services/siem_export.hpp"
#include "controller/siem/siem_destination.hpp"
#include "controller/services/controller_services.hpp"
#include "controller/store/sqlite_store.hpp"
#include "policies/json_reader.hpp"
#include "policies/net_address.hpp"

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <httplib.h>

#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <thread>

#ifndef BULKHEAD_DEFAULT_WEBUI_DIR
#define BULKHEAD_DEFAULT_WEBUI_DIR ""  // set by CMake to <source>/webui/dist
#endif

namespace {

using bulkhead::controller::ControllerServices;
using nlohmann::json;

struct ControllerConfig {
    std::string data_dir = "/var/lib/bulkhead-controller";
    std::string listen;        // TLS, HOST:PORT
    std::string tls_cert;
    std::string tls_key;
    std::string plain_listen;  // plain HTTP, loopback only
    std::string bootstrap_tokens;
    std::string webui_dir = BULKHEAD_DEFAULT_WEBUI_DIR;  // "" serves no dashboard
    int heartbeat_interval_ms = 5000;
    int threads = 16;                        // route handler workers per listener
    int max_connections = 20000;             // per listener
    int max_connections_per_client = 256;    // per client address, per listener
    int header_timeout_ms = 10000;           // TLS handshake and each request head
    int api_rate_per_second = 200;           // per API token (0: none); burst 10 seconds' worth
    std::string analyzer_config;             // detector thresholds (controller/analyzer/README.md)
    std::vector<std::string> webhooks;       // SOAR receivers, http(s) URLs
    std::string webhook_secret_file;         // HMAC key for X-Bulkhead-Signature
    std::string webhook_ca;                  // CA bundle for https receivers
    std::string log_level;                   // "" = the flag's (info)
    // Tamper evidence: signed checkpoints of every hash chain, at this interval, to this file
    // (default DATA_DIR/evidence/checkpoints.jsonl; put it on another disk) and the database.
    std::string evidence_checkpoint_file;
    int evidence_checkpoint_interval_ms = 60000;
    std::string controller_name;             // names the signer in checkpoints (default: host name)
    // The drop log's tiers: the database keeps events for the hot period, then whole segment
    // periods are sealed into archive segments (DATA_DIR/archive), kept for the retention.
    std::int64_t evidence_hot_period_ms = 90LL * 24 * 3600 * 1000;
    std::int64_t evidence_segment_period_ms = 24LL * 3600 * 1000;
    std::int64_t evidence_archive_retention_ms = 400LL * 24 * 3600 * 1000;
    std::int64_t evidence_archive_interval_ms = 60000;
    std::string evidence_archive_dir;
    std::vector<bulkhead::siem::SiemDestination> siem_destinations;  // "siem": {"destinations": [...]}
};


bool is_loopback(const std::string& host) {
    if (host == "localhost") {
        return true;
    }
    in_addr v4{};
    if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
        return (ntohl(v4.s_addr) >> 24) == 127;
    }
    in6_addr v6{};
    return inet_pton(AF_INET6, host.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

std::optional<std::string> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return std::nullopt;
    }
    std::stringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
}

// Config file members mirror the long flags with '_' for '-'.
std::optional<std::string> load_config(const std::string& path, ControllerConfig& config) {
    auto text = read_file(path);
    if (!text) {
        return "cannot read config file " + path;
    }
    auto document = bulkhead::policy::read_json(*text, path);
    if (!document) {
        return bulkhead::policy::format_diagnostic(document.error().front());
    }
    if (!document->is_object()) {
        return path + ": the config must be a JSON object";
    }
    for (const auto& [key, value] : document->items()) {
        auto string_field = [&](std::string& field) -> std::optional<std::string> {
            if (!value.is_string()) {
                return path + ": /" + key + ": must be a string";
            }
            field = value.get<std::string>();
            return std::nullopt;
        };
        auto int_field = [&](int& field, int min, int max) -> std::optional<std::string> {
            if (!value.is_number_integer() || value.get<std::int64_t>() < min || value.get<std::int64_t>() > max) {
                return path + ": /" + key + ": must be an integer from " + std::to_string(min) + " to " +
                       std::to_string(max);
            }
            field = value.get<int>();
            return std::nullopt;
        };
        auto long_field = [&](std::int64_t& field, std::int64_t min, std::int64_t max) -> std::optional<std::string> {
            if (!value.is_number_integer() || value.get<std::int64_t>() < min || value.get<std::int64_t>() > max) {
                return path + ": /" + key + ": must be an integer from " + std::to_string(min) + " to " +
                       std::to_string(max);
            }
            field = value.get<std::int64_t>();
            return std::nullopt;
        };
        std::optional<std::string> problem;
        if (key == "data_dir") problem = string_field(config.data_dir);
        else if (key == "listen") problem = string_field(config.listen);
        else if (key == "tls_cert") problem = string_field(config.tls_cert);
        else if (key == "tls_key") problem = string_field(config.tls_key);
        else if (key == "plain_listen") problem = string_field(config.plain_listen);
        else if (key == "bootstrap_tokens") problem = string_field(config.bootstrap_tokens);
        else if (key == "webui_dir") problem = string_field(config.webui_dir);
        else if (key == "heartbeat_interval_ms") problem = int_field(config.heartbeat_interval_ms, 100, 60000);
        else if (key == "threads") problem = int_field(config.threads, 4, 1024);
        else if (key == "max_connections") problem = int_field(config.max_connections, 16, 1000000);
        else if (key == "max_connections_per_client") problem = int_field(config.max_connections_per_client, 4, 1000000);
        else if (key == "header_timeout_ms") problem = int_field(config.header_timeout_ms, 100, 600000);
        else if (key == "api_rate_per_second") problem = int_field(config.api_rate_per_second, 0, 1000000);
        else if (key == "analyzer_config") problem = string_field(config.analyzer_config);
        else if (key == "webhook_secret_file") problem = string_field(config.webhook_secret_file);
        else if (key == "webhook_ca") problem = string_field(config.webhook_ca);
        else if (key == "log_level") problem = string_field(config.log_level);
        else if (key == "evidence_checkpoint_file") problem = string_field(config.evidence_checkpoint_file);
        else if (key == "evidence_checkpoint_interval_ms")
            problem = int_field(config.evidence_checkpoint_interval_ms, 1000, 86400000);
        else if (key == "controller_name") problem = string_field(config.controller_name);
        else if (key == "evidence_hot_period_ms") problem = long_field(config.evidence_hot_period_ms, 1000, 3650LL * 86400000);
        else if (key == "evidence_segment_period_ms")
            problem = long_field(config.evidence_segment_period_ms, 1000, 366LL * 86400000);
        else if (key == "evidence_archive_retention_ms")
            problem = long_field(config.evidence_archive_retention_ms, 1000, 36500LL * 86400000);
        else if (key == "evidence_archive_interval_ms")
            problem = long_field(config.evidence_archive_interval_ms, 100, 86400000);
        else if (key == "evidence_archive_dir") problem = string_field(config.evidence_archive_dir);
        else if (key == "webhooks") {
            if (!value.is_array() || !std::all_of(value.begin(), value.end(), [](const json& v) { return v.is_string(); })) {
                problem = path + ": /webhooks: must be an array of URLs";
            } else {
                config.webhooks = value.get<std::vector<std::string>>();
            }
        }
        else if (key == "siem") {
            auto destinations = bulkhead::siem::parse_siem_destinations(value, "/siem");
            if (!destinations) {
                problem = path + ": " + bulkhead::siem::describe(destinations.error());
            } else {
                config.siem_destinations = std::move(*destinations);
            }
        }
        else if (key == "$schema" || key == "comment") {}
        else problem = path + ": /" + key + ": unknown member";
        if (problem) {
            return problem;
        }
    }
    return std::nullopt;
}

std::optional<std::string> load_bootstrap_tokens(const std::string& path, ControllerServices& service) {
    auto text = read_file(path);
    if (!text) {
        return "cannot read bootstrap tokens " + path;
    }
    auto document = bulkhead::policy::read_json(*text, path);
    if (!document) {
        return bulkhead::policy::format_diagnostic(document.error().front());
    }
    const json* tokens = document->is_object() && document->contains("tokens") ? &(*document)["tokens"] : nullptr;
    if (tokens == nullptr || !tokens->is_array()) {
        return path + ": /tokens: must be an array";
    }
    for (std::size_t i = 0; i < tokens->size(); ++i) {
        const json& t = (*tokens)[i];
        const std::string pointer = path + ": /tokens/" + std::to_string(i);
        if (!t.is_object() || !t.contains("name") || !t["name"].is_string() || !t.contains("role") ||
            !t["role"].is_string() || !t.contains("token") || !t["token"].is_string()) {
            return pointer + ": needs string members name, role and token";
        }
        auto role = bulkhead::controller::role_from_string(t["role"].get<std::string>());
        if (!role || *role == bulkhead::controller::Role::Enforcer) {
            return pointer + "/role: must be admin, soc or automation";
        }
        if (auto added = service.access.add_bootstrap_token(t["name"].get<std::string>(), *role, t["token"].get<std::string>());
            !added) {
            return pointer + ": " + added.error();
        }
    }
    return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"bulkhead-controller: Bulkhead's REST API, enforcer control channel and dashboard"};
    ControllerConfig config;
    std::string config_file;
    app.add_option("--config", config_file, "JSON config file (members as the long flags, '_' for '-')");
    ControllerConfig flags;
    auto* data_dir = app.add_option("--data-dir", flags.data_dir, "Directory of the SQLite database");
    auto* listen = app.add_option("--listen", flags.listen, "TLS listener HOST:PORT (API and control channel)");
    auto* cert = app.add_option("--tls-cert", flags.tls_cert, "Server certificate (PEM)");
    auto* key = app.add_option("--tls-key", flags.tls_key, "Server private key (PEM)");
    auto* plain = app.add_option("--plain-listen", flags.plain_listen, "Plain HTTP listener, loopback only (127.0.0.1:8080)");
    auto* tokens = app.add_option("--bootstrap-tokens", flags.bootstrap_tokens, "JSON file of API tokens to install");
    auto* webui = app.add_option("--webui-dir", flags.webui_dir,
                                 "Directory of the built dashboard, served at / (\"\": none)")
                      ->default_str(BULKHEAD_DEFAULT_WEBUI_DIR);
    auto* heartbeat = app.add_option("--heartbeat-interval-ms", flags.heartbeat_interval_ms, "Control channel heartbeat")
                          ->check(CLI::Range(100, 60000));
    auto* threads = app.add_option("--threads", flags.threads, "Request handler threads per listener (connections and streams need none)")
                        ->check(CLI::Range(4, 1024));
    auto* max_connections = app.add_option("--max-connections", flags.max_connections, "Open connections per listener")
                                ->check(CLI::Range(16, 1000000));
    auto* max_per_client = app.add_option("--max-connections-per-client", flags.max_connections_per_client,
                                          "Open connections per client address and listener")
                               ->check(CLI::Range(4, 1000000));
    auto* header_timeout = app.add_option("--header-timeout-ms", flags.header_timeout_ms,
                                          "Time a client has for the TLS handshake and for each request head")
                               ->check(CLI::Range(100, 600000));
    auto* api_rate = app.add_option("--api-rate-per-second", flags.api_rate_per_second,
                                    "Requests per second per API token, bursts of ten seconds' worth (0: no limit)")
                         ->check(CLI::Range(0, 1000000));
    auto* analyzer_config = app.add_option("--analyzer-config", flags.analyzer_config,
                                           "Analyzer thresholds and exemptions, JSON (controller/analyzer/README.md)");
    auto* webhooks = app.add_option("--webhook", flags.webhooks,
                                    "SOAR webhook URL (repeatable): incident opened/escalated/page, quarantine created");
    auto* webhook_secret = app.add_option("--webhook-secret-file", flags.webhook_secret_file,
                                          "File holding the HMAC-SHA256 key that signs webhook bodies");
    auto* webhook_ca = app.add_option("--webhook-ca", flags.webhook_ca, "CA bundle to verify https webhook receivers");
    std::string log_level = "info";
    auto* log_level_flag = app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off");
    app.set_version_flag("--version", "bulkhead-controller " + std::string(bulkhead::product_version));
    CLI11_PARSE(app, argc, argv);
    if (auto logging = bulkhead::logging::setup("bulkhead-controller", log_level); !logging) {
        std::fprintf(stderr, "bulkhead-controller: --log-level: %s\n", logging.error().c_str());
        return 2;
    }

    if (!config_file.empty()) {
        if (auto problem = load_config(config_file, config)) {
            spdlog::error("{}", *problem);
            return 2;
        }
        if (!config.log_level.empty() && log_level_flag->count() == 0) {
            if (auto logging = bulkhead::logging::setup("bulkhead-controller", config.log_level); !logging) {
                spdlog::error("{}: /log_level: {}", config_file, logging.error());
                return 2;
            }
        }
    }
    if (*data_dir) config.data_dir = flags.data_dir;
    if (*listen) config.listen = flags.listen;
    if (*cert) config.tls_cert = flags.tls_cert;
    if (*key) config.tls_key = flags.tls_key;
    if (*plain) config.plain_listen = flags.plain_listen;
    if (*tokens) config.bootstrap_tokens = flags.bootstrap_tokens;
    if (*webui) config.webui_dir = flags.webui_dir;
    if (*heartbeat) config.heartbeat_interval_ms = flags.heartbeat_interval_ms;
    if (*threads) config.threads = flags.threads;
    if (*max_connections) config.max_connections = flags.max_connections;
    if (*max_per_client) config.max_connections_per_client = flags.max_connections_per_client;
    if (*header_timeout) config.header_timeout_ms = flags.header_timeout_ms;
    if (*api_rate) config.api_rate_per_second = flags.api_rate_per_second;
    if (*analyzer_config) config.analyzer_config = flags.analyzer_config;
    if (*webhooks) config.webhooks = flags.webhooks;
    if (*webhook_secret) config.webhook_secret_file = flags.webhook_secret_file;
    if (*webhook_ca) config.webhook_ca = flags.webhook_ca;

    // Secrets are refused when other users can read them (common/files/secret_file.hpp).
    for (const auto& [file, what] : {std::pair{config.tls_key, "TLS key"}, std::pair{config.bootstrap_tokens, "bootstrap tokens"},
                                     std::pair{config.webhook_secret_file, "webhook secret"}}) {
        if (file.empty()) {
            continue;
        }
        if (auto safe = bulkhead::files::check_secret_file(file, what); !safe) {
            spdlog::error("{}", safe.error());
            return 2;
        }
    }

    bulkhead::controller::ControllerOptions options;
    options.fleet.heartbeat_interval = std::chrono::milliseconds(config.heartbeat_interval_ms);
    if (!config.analyzer_config.empty()) {
        auto text = read_file(config.analyzer_config);
        if (!text) {
            spdlog::error("cannot read analyzer configuration {}", config.analyzer_config);
            return 2;
        }
        auto document = bulkhead::policy::read_json(*text, config.analyzer_config);
        if (!document) {
            spdlog::error("{}", bulkhead::policy::format_diagnostic(document.error().front()));
            return 2;
        }
        auto parsed = bulkhead::analyzer::config_from_json(*document);
        if (!parsed) {
            spdlog::error("{}: {}", config.analyzer_config, parsed.error());
            return 2;
        }
        options.analysis.analyzer = std::move(*parsed);
    }
    std::string webhook_secret_text;
    if (!config.webhook_secret_file.empty()) {
        auto text = read_file(config.webhook_secret_file);
        if (!text || text->find_first_not_of(" \t\r\n") == std::string::npos) {
            spdlog::error("cannot read a webhook secret from {}", config.webhook_secret_file);
            return 2;
        }
        webhook_secret_text = text->substr(0, text->find_last_not_of(" \t\r\n") + 1);
    }
    for (const auto& url : config.webhooks) {
        if (!bulkhead::controller::parse_webhook_url(url)) {
            spdlog::error("--webhook {}: expected an http:// or https:// URL", url);
            return 2;
        }
        options.webhooks.targets.push_back({url, webhook_secret_text, config.webhook_ca});
    }

    if (config.listen.empty() && config.plain_listen.empty()) {
        spdlog::error("nothing to listen on: give --listen (TLS) and/or --plain-listen");
        return 2;
    }
    std::optional<std::pair<std::string, int>> tls_address, plain_address;
    if (!config.listen.empty()) {
        tls_address = bulkhead::policy::split_host_port(config.listen);
        if (!tls_address) {
            spdlog::error("--listen {}: expected HOST:PORT", config.listen);
            return 2;
        }
        if (config.tls_cert.empty() || config.tls_key.empty()) {
            spdlog::error("--listen needs --tls-cert and --tls-key");
            return 2;
        }
    }
    if (!config.plain_listen.empty()) {
        plain_address = bulkhead::policy::split_host_port(config.plain_listen);
        if (!plain_address) {
            spdlog::error("--plain-listen {}: expected HOST:PORT", config.plain_listen);
            return 2;
        }
        if (!is_loopback(plain_address->first)) {
            spdlog::error("--plain-listen {}: plain HTTP is allowed on a loopback address only; use --listen with TLS",
                          config.plain_listen);
            return 2;
        }
    }

    std::error_code ec;
    std::filesystem::create_directories(config.data_dir, ec);
    if (ec) {
        spdlog::error("cannot create data directory {}: {}", config.data_dir, ec.message());
        return 1;
    }
    auto store = bulkhead::controller::SqliteStore::open(std::filesystem::path(config.data_dir) / "bulkhead.db");
    if (!store) {
        spdlog::error("{}", store.error().message);
        return 1;
    }
    const auto wall_clock_ms = [] {
        return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    };
    std::shared_ptr<bulkhead::controller::Store> shared_store(std::move(*store));
    const std::filesystem::path evidence_dir = std::filesystem::path(config.data_dir) / "evidence";
    auto signing_key = bulkhead::controller::load_or_create_signing_key(evidence_dir / "signing-key.pem");
    if (!signing_key) {
        spdlog::error("{}", signing_key.error());
        return 1;
    }
    bulkhead::controller::EvidenceCheckpointerOptions checkpoint_options;
    checkpoint_options.controller_name = config.controller_name;
    if (checkpoint_options.controller_name.empty()) {
        char host[256] = {};
        checkpoint_options.controller_name = ::gethostname(host, sizeof host - 1) == 0 && host[0] ? host : "controller";
    }
    checkpoint_options.checkpoint_file = config.evidence_checkpoint_file.empty()
                                             ? evidence_dir / "checkpoints.jsonl"
                                             : std::filesystem::path(config.evidence_checkpoint_file);
    checkpoint_options.interval = std::chrono::milliseconds(config.evidence_checkpoint_interval_ms);
    bulkhead::controller::SiemExportOptions siem_options;
    siem_options.destinations = config.siem_destinations;
    siem_options.identity.hostname = checkpoint_options.controller_name;
    siem_options.identity.procid = std::to_string(::getpid());
    bulkhead::controller::SiemExport siem_export(siem_options, *shared_store, *shared_store, *shared_store,
                                                 wall_clock_ms);
    // A new checkpoint is stored, then the SIEM destinations that take checkpoints get it.
    bulkhead::controller::EvidenceCheckpointer checkpointer(
        *shared_store, std::move(*signing_key), checkpoint_options, wall_clock_ms,
        [&siem_export](const bulkhead::evidence::SignedCheckpoint&, const std::string&) { siem_export.wake(); });
    bulkhead::controller::EvidenceArchiveOptions archive_options;
    archive_options.directory = config.evidence_archive_dir.empty() ? std::filesystem::path(config.data_dir) / "archive"
                                                                    : std::filesystem::path(config.evidence_archive_dir);
    archive_options.hot_period = std::chrono::milliseconds(config.evidence_hot_period_ms);
    archive_options.segment_period = std::chrono::milliseconds(config.evidence_segment_period_ms);
    archive_options.retention = std::chrono::milliseconds(config.evidence_archive_retention_ms);
    archive_options.interval = std::chrono::milliseconds(config.evidence_archive_interval_ms);
    bulkhead::controller::EvidenceArchive evidence_archive(archive_options, *shared_store, *shared_store,
                                                           &checkpointer.signing_key(), wall_clock_ms);
    if (auto loaded = evidence_archive.load(); !loaded) {
        spdlog::error("evidence archive: {}", loaded.error());
        return 1;
    }
    ControllerServices service(shared_store, options, wall_clock_ms);
    service.events.set_archive(&evidence_archive);
    service.incidents.set_archive(&evidence_archive);
    siem_export.set_archive(&evidence_archive);
    if (!config.bootstrap_tokens.empty()) {
        if (auto problem = load_bootstrap_tokens(config.bootstrap_tokens, service)) {
            spdlog::error("{}", *problem);
            return 2;
        }
    }
    if (auto started = service.start(); !started) {
        spdlog::error("start-up failed: {}", started.error());
        return 1;
    }
    if (auto started = siem_export.start(); !started) {
        spdlog::error("start-up failed: {}", started.error());
        return 1;
    }
    checkpointer.start();
    evidence_archive.start();
    spdlog::info("evidence: signed checkpoints every {} ms to {} (key id {})", config.evidence_checkpoint_interval_ms,
                 checkpoint_options.checkpoint_file.string(), bulkhead::evidence::key_id(checkpointer.public_key()));
    const bulkhead::controller::RateLimit api_rate_limit{static_cast<double>(config.api_rate_per_second),
                                                         10.0 * config.api_rate_per_second};
    bulkhead::controller::HttpApi api(service, std::string(bulkhead::controller::embedded_openapi_document()),
                                      config.webui_dir, api_rate_limit);

    bulkhead::controller::HttpServerLimits limits;
    limits.worker_threads = static_cast<std::size_t>(config.threads);
    limits.max_connections = static_cast<std::size_t>(config.max_connections);
    limits.max_connections_per_client = static_cast<std::size_t>(config.max_connections_per_client);
    limits.header_timeout = std::chrono::milliseconds(config.header_timeout_ms);
    std::unique_ptr<bulkhead::controller::HttpServer> tls_server;
    std::unique_ptr<bulkhead::controller::HttpServer> plain_server;
    if (tls_address) {
        try {
            tls_server = std::make_unique<bulkhead::controller::HttpServer>(
                "tls", api, limits, bulkhead::controller::TlsFiles{config.tls_cert, config.tls_key});
        } catch (const std::exception& e) {
            spdlog::error("cannot load TLS certificate {} / key {}: {}", config.tls_cert, config.tls_key, e.what());
            return 1;
        }
        if (auto listening = tls_server->listen(tls_address->first, tls_address->second); !listening) {
            spdlog::error("cannot listen on {}: {}", config.listen, listening.error());
            return 1;
        }
    }
    if (plain_address) {
        plain_server = std::make_unique<bulkhead::controller::HttpServer>("plain", api, limits, std::nullopt);
        if (auto listening = plain_server->listen(plain_address->first, plain_address->second); !listening) {
            spdlog::error("cannot listen on {}: {}", config.plain_listen, listening.error());
            return 1;
        }
    }
    // SIGINT/SIGTERM are taken here with sigwait: the services end the long-lived streams
    // first, then the listeners stop.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    spdlog::info("serving{}{} (data {})", tls_address ? " https://" + config.listen : std::string(),
                 plain_address ? " http://" + config.plain_listen : std::string(), config.data_dir);
    if (!config.webui_dir.empty()) {
        const bool built = std::filesystem::is_regular_file(std::filesystem::path(config.webui_dir) / "index.html");
        spdlog::info("dashboard at / from {}{}", config.webui_dir, (built ? "" : " (not built yet: / explains how to build it)"));
    }

    std::vector<bulkhead::controller::ControllerMetrics::Listener> metric_listeners;
    if (tls_server) {
        metric_listeners.push_back({"tls", tls_server.get(), limits});
    }
    if (plain_server) {
        metric_listeners.push_back({"plain", plain_server.get(), limits});
    }
    bulkhead::controller::ControllerMetrics metrics(service, api, std::move(metric_listeners), api_rate_limit);
    api.set_metrics([&metrics, &siem_export, &checkpointer, wall_clock_ms] {
        std::string text = metrics.render();
        text += "# HELP bulkhead_evidence_checkpoints_total Signed evidence checkpoints written by this process.\n"
                "# TYPE bulkhead_evidence_checkpoints_total counter\n"
                "bulkhead_evidence_checkpoints_total " + std::to_string(checkpointer.written()) + "\n"
                "# HELP bulkhead_evidence_checkpoint_failures_total Evidence checkpoints that could not be written.\n"
                "# TYPE bulkhead_evidence_checkpoint_failures_total counter\n"
                "bulkhead_evidence_checkpoint_failures_total " + std::to_string(checkpointer.failures()) + "\n";
        return text + bulkhead::controller::siem_metrics_text(siem_export.status(), wall_clock_ms());
    });
    api.set_evidence_status([&siem_export, &checkpointer, &checkpoint_options, &evidence_archive, wall_clock_ms] {
        const auto figures = evidence_archive.figures();
        const auto& archive = evidence_archive.options();
        return json{{"key_id", bulkhead::evidence::key_id(checkpointer.public_key())},
                    {"archive", {{"directory", archive.directory.string()},
                                 {"hot_period_ms", archive.hot_period.count()},
                                 {"segment_period_ms", archive.segment_period.count()},
                                 {"retention_ms", archive.retention.count()},
                                 {"segments", figures.segments},
                                 {"records", figures.records},
                                 {"bytes", figures.bytes},
                                 {"bytes_per_event", figures.records ? static_cast<double>(figures.bytes) / figures.records : 0.0},
                                 {"archived_through", evidence_archive.archived_through()},
                                 {"sealed", figures.sealed},
                                 {"expired", figures.expired},
                                 {"failures", figures.failures},
                                 {"last_error", figures.last_error}}},
                    {"checkpoints", {{"written", checkpointer.written()},
                                     {"failures", checkpointer.failures()},
                                     {"interval_ms", checkpoint_options.interval.count()},
                                     {"file", checkpoint_options.checkpoint_file.string()}}},
                    {"siem", bulkhead::controller::siem_status_json(siem_export.status(), wall_clock_ms())}};
    });

    if (tls_server) {
        tls_server->start();
    }
    if (plain_server) {
        plain_server->start();
    }
    int received = 0;
    sigwait(&stop_signals, &received);
    spdlog::info("signal {}, stopping", received);
    service.shutdown();
    if (tls_server) {
        tls_server->stop();
    }
    if (plain_server) {
        plain_server->stop();
    }
    evidence_archive.stop();
    checkpointer.stop();  // a last checkpoint covers everything stored before the stop
    siem_export.stop();
    spdlog::info("stopped");
    return 0;
}
