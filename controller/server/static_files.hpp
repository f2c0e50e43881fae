// StaticFiles: serves the dashboard's built bundle (webui/dist) from one directory.
// index.html at "/" and for every other non-API path (the single-page app routes itself),
// content types by extension, a year-long immutable Cache-Control for Vite's hashed assets
// and no-cache for the rest, never a file outside the directory (".." segments and symlinks
// that leave it are refused), and a plain page saying how to build the bundle when it has
// not been built.
#pragma once

#include <httplib.h>

#include <filesystem>
#include <string>
#include <string_view>

namespace bulkhead::controller {

struct StaticAnswer {
    int status = 200;
    std::string content_type;
    std::string cache_control;
    std::string body;
};

class StaticFiles {
public:
    explicit StaticFiles(std::filesystem::path root);

    // The answer to GET `request_path` (the decoded URL path, starting with '/').
    StaticAnswer answer(std::string_view request_path) const;

    // Answers a GET (or HEAD) of a path outside /api/ into `response`.
    void serve(const httplib::Request& request, httplib::Response& response) const;

    const std::filesystem::path& root() const { return root_; }

private:
    std::filesystem::path root_;
};

// "text/html; charset=utf-8" for ".html", ...; "application/octet-stream" when unknown.
std::string_view content_type_for(std::string_view extension);

// Vite's content-hashed build output: assets/<name>-<hash>.<ext>.
bool is_hashed_asset(std::string_view relative_path);

// The plain page served while the bundle is missing.
std::string bundle_missing_page(const std::filesystem::path& root);

}  // namespace bulkhead::controller
