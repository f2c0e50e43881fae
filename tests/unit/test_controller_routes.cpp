// HttpApi's route table against the OpenAPI document compiled into the binary
// (controller/server/openapi.json), both ways: every route the server serves is an
// operation of the document with the same permission (or public), and every operation of
// the document is a route.
#include "controller/server/http_api.hpp"
#include "controller/server/path_template.hpp"
#include "controller/services/controller_services.hpp"
#include "test_store_support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

using namespace bulkhead::controller;
using nlohmann::json;

namespace {

struct ApiFixture {
    bulkhead::test::TempDir dir;
    std::shared_ptr<Store> store{bulkhead::test::open_store(dir.path() / "controller.db")};
    ControllerServices service{store, ControllerOptions{}, [] { return TimeMs{1'764'000'000'000}; }};
    HttpApi api{service, std::string(embedded_openapi_document())};
};

json document() {
    auto parsed = json::parse(embedded_openapi_document(), nullptr, false);
    REQUIRE_FALSE(parsed.is_discarded());
    return parsed;
}

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

std::string upper(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    return s;
}

const std::set<std::string> http_methods{"get", "put", "post", "delete", "options", "head", "patch", "trace"};

// Every operation of the document as "METHOD path".
std::set<std::string> document_operations(const json& doc) {
    std::set<std::string> out;
    for (const auto& [path, item] : doc.at("paths").items()) {
        for (const auto& [method, operation] : item.items()) {
            if (http_methods.contains(method)) {
                out.insert(upper(method) + " " + path);
            }
        }
    }
    return out;
}

std::set<std::string> route_operations(const HttpApi& api) {
    std::set<std::string> out;
    for (const auto& r : api.routes()) {
        out.insert(r.method + " " + r.path);
    }
    return out;
}

// Follows a local "$ref" ("#/components/parameters/X").
const json& resolve(const json& doc, const json& node) {
    if (!node.contains("$ref")) {
        return node;
    }
    std::string ref = node.at("$ref").get<std::string>();
    REQUIRE(ref.rfind("#/", 0) == 0);
    return doc.at(json::json_pointer(ref.substr(1)));
}

std::vector<std::string> template_parameters(const std::string& path) {
    std::vector<std::string> names;
    static const std::regex parameter(R"(\{([a-z_]+)\})");
    for (auto it = std::sregex_iterator(path.begin(), path.end(), parameter); it != std::sregex_iterator(); ++it) {
        names.push_back((*it)[1].str());
    }
    return names;
}

std::set<std::string> roles_with(Permission permission) {
    std::set<std::string> roles;
    for (Role role : {Role::Admin, Role::Soc, Role::Automation, Role::Enforcer}) {
        if (role_allows(role, permission)) {
            roles.insert(std::string(to_string(role)));
        }
    }
    return roles;
}

}  // namespace

TEST_CASE("controller routes: the embedded OpenAPI document is OpenAPI 3.0.3 with bearer security") {
    const json doc = document();
    CHECK(doc.at("openapi") == "3.0.3");
    CHECK(doc.at("info").contains("title"));
    CHECK(doc.at("components").at("securitySchemes").at("bearerAuth").at("scheme") == "bearer");
    REQUIRE(doc.at("components").at("schemas").contains("Error"));
    const json& body = doc.at("components").at("schemas").at("ErrorBody").at("properties");
    for (const char* member : {"code", "message", "pointer", "errors", "candidates"}) {
        CAPTURE(member);
        CHECK(body.contains(member));
    }
}

TEST_CASE("controller routes: every route is an operation of the OpenAPI document and vice versa") {
    ApiFixture f;
    const json doc = document();
    const auto routes = route_operations(f.api);
    const auto operations = document_operations(doc);
    REQUIRE(routes.size() == f.api.routes().size());  // no route registered twice
    CHECK(routes.size() >= 40);

    for (const auto& r : routes) {
        CAPTURE(r);
        CHECK_MESSAGE(operations.contains(r), "route missing from controller/server/openapi.json");
    }
    for (const auto& o : operations) {
        CAPTURE(o);
        CHECK_MESSAGE(routes.contains(o), "operation in openapi.json that the server does not serve");
    }
}

TEST_CASE("controller routes: permission, roles and public flag match the route table") {
    ApiFixture f;
    const json doc = document();
    REQUIRE(doc.contains("security"));
    CHECK(doc.at("security") == json::array({json{{"bearerAuth", json::array()}}}));
    std::size_t public_routes = 0;
    for (const auto& route : f.api.routes()) {
        CAPTURE(route.method);
        CAPTURE(route.path);
        const json* operation = nullptr;
        if (doc.at("paths").contains(route.path) && doc.at("paths").at(route.path).contains(lower(route.method))) {
            operation = &doc.at("paths").at(route.path).at(lower(route.method));
        }
        REQUIRE(operation != nullptr);
        CHECK(operation->contains("operationId"));
        if (!route.permission) {
            ++public_routes;
            // Public: an empty security requirement overrides the document's bearer default.
            REQUIRE(operation->contains("security"));
            CHECK(operation->at("security") == json::array());
            CHECK_FALSE(operation->contains("x-bulkhead-permission"));
            CHECK_FALSE(operation->at("responses").contains("403"));  // no role to lack
        } else {
            REQUIRE(operation->contains("x-bulkhead-permission"));
            CHECK(operation->at("x-bulkhead-permission") == std::string(to_string(*route.permission)));
            REQUIRE(operation->contains("x-bulkhead-roles"));
            const auto roles = operation->at("x-bulkhead-roles").get<std::set<std::string>>();
            CHECK(roles == roles_with(*route.permission));
            if (operation->contains("security")) {
                CHECK_FALSE(operation->at("security").empty());
                CHECK(operation->at("security").at(0).contains("bearerAuth"));
            }
            CHECK(operation->at("responses").contains("401"));
            CHECK(operation->at("responses").contains("403"));
        }
    }
    CHECK(public_routes == 3);  // health, openapi.json, enroll
}

TEST_CASE("controller routes: path parameters in the template are the operation's path parameters") {
    ApiFixture f;
    const json doc = document();
    for (const auto& route : f.api.routes()) {
        CAPTURE(route.method);
        CAPTURE(route.path);
        const json& operation = doc.at("paths").at(route.path).at(lower(route.method));
        std::vector<std::string> declared;
        for (const auto& p : operation.value("parameters", json::array())) {
            const json& parameter = resolve(doc, p);
            if (parameter.at("in") == "path") {
                CHECK(parameter.at("required") == true);
                declared.push_back(parameter.at("name").get<std::string>());
            }
        }
        CHECK(declared == template_parameters(route.path));
    }
}

TEST_CASE("controller routes: the served /api/v1/openapi.json is the embedded document") {
    ApiFixture f;
    auto it = std::find_if(f.api.routes().begin(), f.api.routes().end(),
                           [](const Route& r) { return r.method == "GET" && r.path == "/api/v1/openapi.json"; });
    REQUIRE(it != f.api.routes().end());
    httplib::Request request;
    httplib::Response response;
    Caller nobody;
    RouteContext context{request, response, nobody, {}, nullptr};
    it->handler(context);
    CHECK(response.body == std::string(embedded_openapi_document()));
    CHECK(response.get_header_value("Content-Type") == "application/json");
    CHECK(json::parse(response.body, nullptr, false) == document());
}

TEST_CASE("controller routes: a path template matches segment by segment") {
    using Parameters = std::vector<std::string>;
    const PathTemplate literal("/api/v1/openapi.json");
    CHECK(literal.match("/api/v1/openapi.json") == Parameters{});
    CHECK_FALSE(literal.match("/api/v1/openapiXjson"));  // '.' is itself, not any character
    CHECK_FALSE(literal.match("/api/v1/openapi.json/"));
    CHECK_FALSE(literal.match("/api/v1"));
    CHECK_FALSE(literal.match("api/v1/openapi.json"));

    const PathTemplate one("/api/v1/quarantines/{workload}");
    CHECK(one.match("/api/v1/quarantines/vdi-001") == Parameters{"vdi-001"});
    CHECK(one.match("/api/v1/quarantines/%2E%2E") == Parameters{"%2E%2E"});  // decoding is the handler's
    CHECK_FALSE(one.match("/api/v1/quarantines/"));                           // a parameter is never empty
    CHECK_FALSE(one.match("/api/v1/quarantines"));
    CHECK_FALSE(one.match("/api/v1/quarantines/a/b"));                        // nor spans a '/'
    CHECK_FALSE(one.match("/api/v1/quarantine/vdi-001"));

    const PathTemplate two("/api/v1/incidents/{id}/notes");
    CHECK(two.match("/api/v1/incidents/42/notes") == Parameters{"42"});
    CHECK_FALSE(two.match("/api/v1/incidents/42/note"));
    CHECK_FALSE(two.match("/api/v1/incidents//notes"));

    const PathTemplate root("/");
    CHECK(root.match("/") == Parameters{});
    CHECK_FALSE(root.match("/x"));
}

TEST_CASE("controller routes: every route's template matches its own path with the parameters filled in") {
    ApiFixture f;
    for (const auto& route : f.api.routes()) {
        CAPTURE(route.path);
        const auto names = template_parameters(route.path);
        std::string path = route.path;
        std::vector<std::string> values;
        for (std::size_t i = 0; i < names.size(); ++i) {
            const std::string value = "value-" + std::to_string(i);
            path.replace(path.find("{" + names[i] + "}"), names[i].size() + 2, value);
            values.push_back(value);
        }
        CHECK(PathTemplate(route.path).match(path) == std::optional<std::vector<std::string>>(values));
    }
}
