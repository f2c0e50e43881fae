#include "controller/server/static_files.hpp"

#include <algorithm>
#include <array>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <utility>

namespace bulkhead::controller {

namespace {

constexpr std::string_view kImmutable = "public, max-age=31536000, immutable";
constexpr std::string_view kRevalidate = "no-cache";
// Everything the dashboard loads comes from the controller itself.
constexpr std::string_view kContentSecurityPolicy =
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

// The request path as a relative path, or nothing when it names something outside the root
// (a ".." segment, a backslash, a NUL) or is not absolute.
std::optional<std::filesystem::path> relative_request_path(std::string_view request_path) {
    if (request_path.empty() || request_path.front() != '/') {
        return std::nullopt;
    }
    std::filesystem::path relative;
    std::size_t start = 1;
    while (start <= request_path.size()) {
        std::size_t end = request_path.find('/', start);
        if (end == std::string_view::npos) {
            end = request_path.size();
        }
        std::string_view segment = request_path.substr(start, end - start);
        if (segment == "..") {
            return std::nullopt;
        }
        if (segment.find('\\') != std::string_view::npos || segment.find('\0') != std::string_view::npos) {
            return std::nullopt;
        }
        if (!segment.empty() && segment != ".") {
            relative /= std::string(segment);
        }
        start = end + 1;
    }
    return relative;
}

// `candidate` resolved (symlinks followed) still lies inside `root` (resolved).
bool inside(const std::filesystem::path& root, const std::filesystem::path& candidate) {
    std::error_code ec;
    auto real_root = std::filesystem::canonical(root, ec);
    if (ec) {
        return false;
    }
    auto real = std::filesystem::canonical(candidate, ec);
    if (ec) {
        return false;
    }
    auto [root_end, real_it] = std::mismatch(real_root.begin(), real_root.end(), real.begin(), real.end());
    return root_end == real_root.end();
}

std::optional<std::string> read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return std::nullopt;
    }
    std::ostringstream out;
    out << in.rdbuf();
    if (in.bad()) {
        return std::nullopt;
    }
    return std::move(out).str();
}

bool regular_file_exists(const std::filesystem::path& path) {
    std::error_code ec;
    return std::filesystem::is_regular_file(path, ec);
}

StaticAnswer plain(int status, std::string text) {
    return StaticAnswer{status, "text/plain; charset=utf-8", std::string(kRevalidate), std::move(text)};
}

}  // namespace

std::string_view content_type_for(std::string_view extension) {
    static constexpr std::array<std::pair<std::string_view, std::string_view>, 16> types{{
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".json", "application/json"},
        {".map", "application/json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".jpg", "image/jpeg"},
        {".jpeg", "image/jpeg"},
        {".gif", "image/gif"},
        {".ico", "image/x-icon"},
        {".webp", "image/webp"},
        {".woff", "font/woff"},
        {".woff2", "font/woff2"},
        {".txt", "text/plain; charset=utf-8"},
    }};
    for (const auto& [ext, type] : types) {
        if (ext == extension) {
            return type;
        }
    }
    return "application/octet-stream";
}

bool is_hashed_asset(std::string_view relative_path) {
    constexpr std::string_view prefix = "assets/";
    if (relative_path.substr(0, prefix.size()) != prefix) {
        return false;
    }
    std::string_view name = relative_path.substr(prefix.size());
    if (name.find('/') != std::string_view::npos) {
        return false;
    }
    auto dot = name.rfind('.');
    auto dash = name.rfind('-', dot);
    if (dot == std::string_view::npos || dash == std::string_view::npos || dot - dash - 1 < 8) {
        return false;
    }
    for (char c : name.substr(dash + 1, dot - dash - 1)) {
        const bool hash_char = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '-';
        if (!hash_char) {
            return false;
        }
    }
    return true;
}

std::string bundle_missing_page(const std::filesystem::path& root) {
    return "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Bulkhead: dashboard not built</title></head>\n"
           "<body style=\"font-family: sans-serif; max-width: 44em; margin: 3em auto\">\n"
           "<h1>The Bulkhead dashboard is not built</h1>\n"
           "<p>This controller serves the dashboard from <code>" +
           root.string() +
           "</code>, which has no <code>index.html</code>.</p>\n"
           "<p>Build it with <code>scripts/build.sh</code> (it runs <code>npm ci</code> and <code>npm run build</code> in "
           "<code>webui/</code>), or start the controller with <code>--webui-dir DIR</code> naming a built bundle.</p>\n"
           "<p>The REST API is available at <a href=\"/api/v1/health\">/api/v1</a>.</p>\n</body></html>\n";
}

StaticFiles::StaticFiles(std::filesystem::path root) : root_(std::move(root)) {}

StaticAnswer StaticFiles::answer(std::string_view request_path) const {
    auto relative = relative_request_path(request_path);
    if (!relative) {
        return plain(404, "not found\n");
    }
    const auto index = root_ / "index.html";
    if (!regular_file_exists(index)) {
        return StaticAnswer{503, "text/html; charset=utf-8", std::string(kRevalidate), bundle_missing_page(root_)};
    }
    std::filesystem::path file = relative->empty() ? index : root_ / *relative;
    if (!regular_file_exists(file)) {
        // An asset that is not there is a 404 (a stale page asking for an old hash must not
        // get HTML as JavaScript); any other path is a route of the app: index.html.
        const std::string relative_text = relative->generic_string();
        if (relative_text.rfind("assets/", 0) == 0 || relative->has_extension()) {
            return plain(404, "not found\n");
        }
        file = index;
    }
    if (!inside(root_, file)) {
        return plain(404, "not found\n");
    }
    auto body = read_file(file);
    if (!body) {
        return plain(500, "cannot read the file\n");
    }
    std::string relative_text = std::filesystem::relative(file, root_).generic_string();
    return StaticAnswer{200, std::string(content_type_for(file.extension().string())),
                        std::string(is_hashed_asset(relative_text) ? kImmutable : kRevalidate), std::move(*body)};
}

void StaticFiles::serve(const httplib::Request& request, httplib::Response& response) const {
    auto answer = this->answer(request.path);
    response.status = answer.status;
    response.set_header("Cache-Control", answer.cache_control);
    response.set_header("X-Content-Type-Options", "nosniff");
    if (answer.content_type.rfind("text/html", 0) == 0) {
        response.set_header("Content-Security-Policy", std::string(kContentSecurityPolicy));
        response.set_header("Referrer-Policy", "no-referrer");
    }
    response.set_content(answer.body, answer.content_type);
}

}  // namespace bulkhead::controller
