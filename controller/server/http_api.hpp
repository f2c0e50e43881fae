// HttpApi: the REST API v1, the enforcers' control channel and the dashboard's event
// stream on cpp-httplib. One route table is the single source of truth: it registers the
// handlers, carries each route's permission, and a test compares it with the OpenAPI
// document both ways.
#pragma once

#include "controller/core/access_policy.hpp"
#include "controller/services/controller_services.hpp"

#include <httplib.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace bulkhead::controller {

struct RouteContext {
    const httplib::Request& request;
    httplib::Response& response;
    const Caller& caller;               // empty name for public routes
    std::vector<std::string> params;    // path parameters in template order
};

struct Route {
    std::string method;                 // "GET", "POST", "PUT", "DELETE"
    std::string path;                   // OpenAPI template: "/api/v1/policies/{id}"
    std::optional<Permission> permission;  // none: public (health, openapi, enroll)
    std::function<void(RouteContext&)> handler;
};

class HttpApi {
public:
    HttpApi(ControllerServices& service, std::string openapi_document, std::string webui_dir = {});

    const std::vector<Route>& routes() const { return routes_; }

    // Registers every route, error handling and (when a web UI directory exists) static
    // files on `server`. Call once per listener.
    void install(httplib::Server& server) const;

private:
    void add(std::string method, std::string path, std::optional<Permission> permission,
             std::function<void(RouteContext&)> handler);
    void build_routes();

    ControllerServices& service_;
    std::string openapi_document_;
    std::string webui_dir_;
    std::vector<Route> routes_;
};

// The OpenAPI document compiled into the binary (controller/server/openapi.json).
std::string_view embedded_openapi_document();

}  // namespace bulkhead::controller
