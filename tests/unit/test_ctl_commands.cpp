#include "controller/ctl/ctl_commands.hpp"

#include "test_support.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

using namespace bulkhead::ctl;
using bulkhead::test::read_source_file;
using bulkhead::test::source_path;
using nlohmann::json;
using nlohmann::ordered_json;
using namespace std::string_literals;

namespace {

const std::string kPolicy = source_path("examples/vdi-pool/policy.json");
const std::string kInventory = source_path("examples/vdi-pool/inventory.json");

// A scratch directory for edited documents, removed with everything in it.
class TempDir {
public:
    TempDir() {
        std::string pattern =
            (std::filesystem::temp_directory_path() / "bulkhead-ctl-test-XXXXXX").string();
        REQUIRE(::mkdtemp(pattern.data()) != nullptr);
        path_ = pattern;
    }
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    std::string write(const std::string& name, const std::string& content) const {
        const auto file = path_ / name;
        std::ofstream out(file, std::ios::binary);
        out << content;
        REQUIRE(out.good());
        return file.string();
    }

    // The example policy/inventory with one edit.
    template <typename Edit>
    std::string write_edited(const std::string& name, const std::string& example, Edit edit) const {
        auto doc = ordered_json::parse(read_source_file(example));
        edit(doc);
        return write(name, doc.dump(2));
    }

    std::string path(const std::string& name) const { return (path_ / name).string(); }

private:
    std::filesystem::path path_;
};

struct Run {
    int code = -1;
    std::string out;
    std::string err;
};

Run validate(const std::string& policy, std::optional<std::string> inventory = std::nullopt,
             OutputFormat format = OutputFormat::Text) {
    std::ostringstream out;
    std::ostringstream err;
    Run run;
    run.code = validate_policy({policy, std::move(inventory), format}, out, err);
    run.out = out.str();
    run.err = err.str();
    return run;
}

Run validate_inv(const std::string& inventory, OutputFormat format = OutputFormat::Text) {
    std::ostringstream out;
    std::ostringstream err;
    Run run;
    run.code = validate_inventory(inventory, format, out, err);
    run.out = out.str();
    run.err = err.str();
    return run;
}

Run compile(CompileOptions options) {
    std::ostringstream out;
    std::ostringstream err;
    Run run;
    run.code = compile_policy(options, out, err);
    run.out = out.str();
    run.err = err.str();
    return run;
}

Run diff(DiffOptions options) {
    std::ostringstream out;
    std::ostringstream err;
    Run run;
    run.code = diff_policy(options, out, err);
    run.out = out.str();
    run.err = err.str();
    return run;
}

bool contains(std::string_view haystack, std::string_view needle) {
    return haystack.find(needle) != std::string_view::npos;
}

CompileOptions compile_options(OutputFormat format = OutputFormat::Nft) {
    CompileOptions options;
    options.policy_file = kPolicy;
    options.inventory_file = kInventory;
    options.format = format;
    return options;
}

DiffOptions diff_options() {
    DiffOptions options;
    options.old_policy_file = kPolicy;
    options.new_policy_file = kPolicy;
    options.inventory_file = kInventory;
    return options;
}

}  // namespace

TEST_CASE("ctl: exit codes are 0 valid, 1 invalid input, 2 usage or I/O") {
    CHECK(exit_ok == 0);
    CHECK(exit_invalid == 1);
    CHECK(exit_usage == 2);
}

// ---------------------------------------------------------------------------------------
// policy validate

TEST_CASE("ctl: policy validate accepts the vdi-pool example with exit 0") {
    SUBCASE("alone") {
        auto run = validate(kPolicy);
        CHECK(run.code == exit_ok);
        CHECK(run.out == kPolicy + ": valid (6 services, 6 segments, 6 rules)\n");
        CHECK(run.err.empty());
    }
    SUBCASE("with its inventory") {
        auto run = validate(kPolicy, kInventory);
        CHECK(run.code == exit_ok);
        CHECK(run.out == kPolicy + ": valid (6 services, 6 segments, 6 rules)\n");
        CHECK(run.err.empty());
    }
    SUBCASE("json output") {
        auto run = validate(kPolicy, kInventory, OutputFormat::Json);
        CHECK(run.code == exit_ok);
        CHECK(json::parse(run.out) == json{{"valid", true}, {"errors", json::array()}});
        CHECK(run.err.empty());
    }
}

TEST_CASE("ctl: policy validate prints every error with file, pointer and code and exits 1") {
    TempDir dir;
    const auto file = dir.write_edited("policy.json", "examples/vdi-pool/policy.json", [](auto& doc) {
        doc["rules"][0]["from"][0] = "vdis";
    });
    auto run = validate(file);
    CHECK(run.code == exit_invalid);
    CHECK(run.out.empty());
    CHECK(run.err == file + R"(: /rules/0/from/0: unknown-reference: unknown segment "vdis")" + "\n" +
                         "1 error\n");
}

TEST_CASE("ctl: policy validate counts several errors") {
    TempDir dir;
    const auto file = dir.write_edited("policy.json", "examples/vdi-pool/policy.json", [](auto& doc) {
        doc["rules"][0]["from"][0] = "vdis";
        doc["services"][0]["entries"][0]["ports"][0] = 65536;
        doc["segments"][3]["selector"]["cidrs"][0] = "10.0.0.10/33";
    });
    auto run = validate(file);
    CHECK(run.code == exit_invalid);
    INFO(run.err);
    CHECK(contains(run.err, file + ": /services/0/entries/0/ports/0: invalid-port: port 65536 is outside 0..65535\n"));
    CHECK(contains(run.err, file + ": /segments/3/selector/cidrs/0: invalid-address: "));
    CHECK(contains(run.err, file + ": /rules/0/from/0: unknown-reference: "));
    CHECK(run.err.ends_with("\n3 errors\n"));
}

TEST_CASE("ctl: policy validate json output lists document, pointer, code and message") {
    TempDir dir;
    const auto file = dir.write_edited("policy.json", "examples/vdi-pool/policy.json", [](auto& doc) {
        doc["rules"][2]["services"][0] = "dnss";
        doc["defaults"]["allowed_log_group"] = 10;
    });
    auto run = validate(file, std::nullopt, OutputFormat::Json);
    CHECK(run.code == exit_invalid);
    CHECK(run.err.empty());
    const auto doc = json::parse(run.out);
    CHECK(doc["valid"] == false);
    REQUIRE(doc["errors"].size() == 2);
    CHECK(doc["errors"][0] == json{{"document", file},
                                   {"pointer", "/defaults/allowed_log_group"},
                                   {"code", "conflict"},
                                   {"message", "allowed connections and drops must log to different NFLOG groups"}});
    CHECK(doc["errors"][1] == json{{"document", file},
                                   {"pointer", "/rules/2/services/0"},
                                   {"code", "unknown-reference"},
                                   {"message", "unknown service \"dnss\""}});
}

TEST_CASE("ctl: policy validate reports malformed JSON with its location and exits 1") {
    TempDir dir;
    const auto file = dir.write("broken.json", "{\n  \"name\": \"x\",\n  \"rules\": [\n");
    auto run = validate(file);
    CHECK(run.code == exit_invalid);
    CHECK(contains(run.err, file + ": /rules/0: syntax: invalid JSON at line 4, column 1"));
    SUBCASE("too deep") {
        const auto deep = dir.write("deep.json", std::string(10'000, '['));
        auto r = validate(deep);
        CHECK(r.code == exit_invalid);
        CHECK(contains(r.err, ": too-deep: nesting deeper than 32 levels"));
    }
    SUBCASE("an empty file") {
        auto r = validate(dir.write("empty.json", ""));
        CHECK(r.code == exit_invalid);
        CHECK(contains(r.err, "empty.json: (document root): syntax: invalid JSON at line 1, column 1"));
    }
}

TEST_CASE("ctl: a file over 16 MiB is too-large without being read whole") {
    TempDir dir;
    std::string text = R"({"enforcers": [], "workloads": []})";
    text.resize(16u * 1024 * 1024 + 4096, ' ');
    const auto file = dir.write("huge.json", text);
    auto run = validate_inv(file);
    CHECK(run.code == exit_invalid);
    CHECK(contains(run.err, file + ": (document root): too-large: "));
    CHECK(contains(run.err, "the limit is 16777216"));
}

TEST_CASE("ctl: a missing file is an I/O error with exit 2") {
    TempDir dir;
    const auto missing = dir.path("missing.json");
    SUBCASE("policy validate") {
        auto run = validate(missing);
        CHECK(run.code == exit_usage);
        CHECK(run.err == "bulkheadctl: cannot read " + missing + ": No such file or directory\n");
        CHECK(run.out.empty());
    }
    SUBCASE("policy validate --inventory") {
        auto run = validate(kPolicy, missing);
        CHECK(run.code == exit_usage);
        CHECK(contains(run.err, "cannot read " + missing));
        CHECK(run.out.empty());
    }
    SUBCASE("inventory validate") {
        auto run = validate_inv(missing);
        CHECK(run.code == exit_usage);
        CHECK(contains(run.err, "cannot read " + missing));
    }
    SUBCASE("compile") {
        auto options = compile_options();
        options.inventory_file = missing;
        auto run = compile(options);
        CHECK(run.code == exit_usage);
        CHECK(contains(run.err, "cannot read " + missing));
        CHECK(run.out.empty());
    }
    SUBCASE("diff") {
        auto options = diff_options();
        options.new_policy_file = missing;
        auto run = diff(options);
        CHECK(run.code == exit_usage);
        CHECK(contains(run.err, "cannot read " + missing));
    }
    SUBCASE("a directory is not a file") {
        auto run = validate_inv(dir.path(""));
        CHECK(run.code == exit_usage);
    }
}

TEST_CASE("ctl: policy validate --inventory reports cross-check errors with exit 1") {
    TempDir dir;
    const auto file = dir.write_edited("policy.json", "examples/vdi-pool/policy.json", [](auto& doc) {
        doc["segments"][2]["selector"] = {{"workloads", {"admin-01", "admin-99"}}};
    });
    SUBCASE("alone the policy is valid") {
        CHECK(validate(file).code == exit_ok);
    }
    SUBCASE("text") {
        auto run = validate(file, kInventory);
        CHECK(run.code == exit_invalid);
        CHECK(run.err == file +
                             R"(: /segments/2/selector/workloads/1: unknown-reference: unknown workload "admin-99" (not in the inventory))" +
                             "\n1 error\n");
    }
    SUBCASE("json") {
        auto run = validate(file, kInventory, OutputFormat::Json);
        CHECK(run.code == exit_invalid);
        const auto doc = json::parse(run.out);
        REQUIRE(doc["errors"].size() == 1);
        CHECK(doc["errors"][0]["pointer"] == "/segments/2/selector/workloads/1");
        CHECK(doc["errors"][0]["code"] == "unknown-reference");
        CHECK(doc["errors"][0]["document"] == file);
    }
}

TEST_CASE("ctl: policy validate --inventory reports an invalid inventory with exit 1") {
    TempDir dir;
    const auto inventory = dir.write_edited("inventory.json", "examples/vdi-pool/inventory.json",
                                            [](auto& doc) { doc["workloads"][1]["enforcer"] = "hv3"; });
    auto run = validate(kPolicy, inventory);
    CHECK(run.code == exit_invalid);
    CHECK(run.err == inventory + R"(: /workloads/1/enforcer: unknown-reference: unknown enforcer "hv3")" +
                         "\n1 error\n");
}

// ---------------------------------------------------------------------------------------
// inventory validate

TEST_CASE("ctl: inventory validate accepts the vdi-pool example with exit 0") {
    auto run = validate_inv(kInventory);
    CHECK(run.code == exit_ok);
    CHECK(run.out == kInventory + ": valid (2 enforcers, 7 workloads)\n");
    CHECK(run.err.empty());
    auto as_json = validate_inv(kInventory, OutputFormat::Json);
    CHECK(as_json.code == exit_ok);
    CHECK(json::parse(as_json.out) == json{{"valid", true}, {"errors", json::array()}});
}

TEST_CASE("ctl: inventory validate prints each error at its pointer and exits 1") {
    TempDir dir;
    const auto file = dir.write_edited("inventory.json", "examples/vdi-pool/inventory.json", [](auto& doc) {
        doc["workloads"][1]["attachment"]["interface"] = "vdi001";
        doc["workloads"][6]["addresses"][0] = "10.0.0.300";
    });
    SUBCASE("text") {
        auto run = validate_inv(file);
        CHECK(run.code == exit_invalid);
        CHECK(run.out.empty());
        CHECK(run.err == file + R"(: /workloads/1/attachment: conflict: interface "vdi001" on enforcer "hv1" is already used at /workloads/0/attachment)" +
                             "\n" + file +
                             R"(: /workloads/6/addresses/0: invalid-address: "10.0.0.300" is not an IP address)" +
                             "\n2 errors\n");
    }
    SUBCASE("json") {
        auto run = validate_inv(file, OutputFormat::Json);
        CHECK(run.code == exit_invalid);
        CHECK(run.err.empty());
        const auto doc = json::parse(run.out);
        CHECK(doc["valid"] == false);
        REQUIRE(doc["errors"].size() == 2);
        CHECK(doc["errors"][0]["pointer"] == "/workloads/1/attachment");
        CHECK(doc["errors"][0]["code"] == "conflict");
        CHECK(doc["errors"][1]["pointer"] == "/workloads/6/addresses/0");
        CHECK(doc["errors"][1]["code"] == "invalid-address");
    }
}

TEST_CASE("ctl: json output survives input that is not UTF-8") {
    // The syntax message quotes the bytes nlohmann "last read"; dumping them as JSON throws
    // type_error 316, which escapes validate_* and aborts bulkheadctl (exit 134).
    TempDir dir;
    SUBCASE("invalid UTF-8 in a string") {
        const auto file = dir.write("latin1.json", "{\"enforcers\": [{\"id\": \"hv\xed\"}], \"workloads\": []}");
        Run run;
        CHECK_NOTHROW(run = validate_inv(file, OutputFormat::Json));
        CHECK(run.code == exit_invalid);
        CHECK_NOTHROW(json::parse(run.out));
    }
    SUBCASE("a file name that is not UTF-8") {
        const auto file = dir.write("inventory-\xff.json", R"({"enforcers": [], "workloads": [], "x": 1})");
        Run run;
        CHECK_NOTHROW(run = validate_inv(file, OutputFormat::Json));
        CHECK(run.code == exit_invalid);
        CHECK_NOTHROW(json::parse(run.out));
    }
    SUBCASE("policy validate too") {
        const auto file = dir.write("policy.json", "{\"name\": \"\xc0\xaf\", \"segments\": [], \"rules\": []}");
        Run run;
        CHECK_NOTHROW(run = validate(file, std::nullopt, OutputFormat::Json));
        CHECK(run.code == exit_invalid);
    }
    SUBCASE("text output is unaffected") {
        const auto file = dir.write("latin1.json", "{\"enforcers\": [{\"id\": \"hv\xed\"}], \"workloads\": []}");
        auto run = validate_inv(file);
        CHECK(run.code == exit_invalid);
        CHECK(contains(run.err, ": /enforcers/0/id: syntax: invalid JSON at line 1, column"));
    }
}

// ---------------------------------------------------------------------------------------
// compile and diff

TEST_CASE("ctl: policy compile of the example exits 0") {
    SUBCASE("nft, every enforcer") {
        auto run = compile(compile_options());
        CHECK(run.code == exit_ok);
        CHECK(run.err.empty());
        CHECK(contains(run.out, "table inet bulkhead"));
    }
    SUBCASE("json for one enforcer is the ruleset document itself") {
        auto options = compile_options(OutputFormat::Json);
        options.enforcer = "hv1";
        options.quarantined = {"vdi-001"};
        auto run = compile(options);
        CHECK(run.code == exit_ok);
        CHECK(run.err.empty());
        const auto doc = json::parse(run.out);
        CHECK(doc.is_object());
        CHECK(doc.contains("chains"));
    }
    SUBCASE("json for every enforcer is keyed by enforcer id") {
        auto run = compile(compile_options(OutputFormat::Json));
        CHECK(run.code == exit_ok);
        const auto doc = json::parse(run.out);
        CHECK(doc.contains("hv1"));
        CHECK(doc.contains("hv2"));
        CHECK(doc.size() == 2);
    }
}

TEST_CASE("ctl: policy compile rejects an unknown enforcer with exit 2") {
    auto options = compile_options();
    options.enforcer = "hv9";
    auto run = compile(options);
    CHECK(run.code == exit_usage);
    CHECK(run.out.empty());
    CHECK(run.err == "bulkheadctl: unknown enforcer \"hv9\"\n");
}

TEST_CASE("ctl: policy compile rejects an unknown quarantine workload with exit 2") {
    auto options = compile_options();
    options.quarantined = {"vdi-001", "vdi-999"};
    auto run = compile(options);
    CHECK(run.code == exit_usage);
    CHECK(run.out.empty());
    CHECK(run.err == "bulkheadctl: --quarantine vdi-999: unknown workload\n");
}

TEST_CASE("ctl: policy compile of an invalid policy prints diagnostics and exits 1") {
    TempDir dir;
    const auto file = dir.write_edited("policy.json", "examples/vdi-pool/policy.json", [](auto& doc) {
        doc["rules"][4]["to"][0] = "vdi-pool";
    });
    auto options = compile_options();
    options.policy_file = file;
    SUBCASE("nft format prints text diagnostics on stderr") {
        auto run = compile(options);
        CHECK(run.code == exit_invalid);
        CHECK(run.out.empty());
        CHECK(contains(run.err, file + R"(: /rules/4/to/0: unknown-reference: unknown segment "vdi-pool")"));
    }
    SUBCASE("json format prints them as JSON") {
        options.format = OutputFormat::Json;
        auto run = compile(options);
        CHECK(run.code == exit_invalid);
        const auto doc = json::parse(run.out);
        CHECK(doc["valid"] == false);
        CHECK(doc["errors"][0]["pointer"] == "/rules/4/to/0");
    }
}

TEST_CASE("ctl: policy diff exits 0 on identical policies and 2 on an unknown enforcer") {
    SUBCASE("identical") {
        auto run = diff(diff_options());
        CHECK(run.code == exit_ok);
        CHECK(run.err.empty());
    }
    SUBCASE("json is an array, one document per enforcer") {
        auto options = diff_options();
        options.format = OutputFormat::Json;
        auto run = diff(options);
        CHECK(run.code == exit_ok);
        const auto doc = json::parse(run.out);
        CHECK(doc.is_array());
        CHECK(doc.size() == 2);
    }
    SUBCASE("unknown enforcer") {
        auto options = diff_options();
        options.enforcer = "hv9";
        auto run = diff(options);
        CHECK(run.code == exit_usage);
        CHECK(run.err == "bulkheadctl: unknown enforcer \"hv9\"\n");
    }
    SUBCASE("unknown quarantine workload") {
        auto options = diff_options();
        options.new_quarantined = {"nobody"};
        auto run = diff(options);
        CHECK(run.code == exit_usage);
        CHECK(run.err == "bulkheadctl: --quarantine nobody: unknown workload\n");
    }
    SUBCASE("an invalid new policy exits 1 with its pointer") {
        TempDir dir;
        auto options = diff_options();
        options.new_policy_file = dir.write_edited("new.json", "examples/vdi-pool/policy.json",
                                                   [](auto& doc) { doc["rules"][0]["action"] = "permit"; });
        auto run = diff(options);
        CHECK(run.code == exit_invalid);
        CHECK(contains(run.err, "/rules/0/action: invalid-value"));
    }
}
