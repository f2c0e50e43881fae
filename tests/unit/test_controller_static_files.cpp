// StaticFiles: the dashboard bundle served by the controller.
#include "controller/server/static_files.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

using namespace bulkhead::controller;
namespace fs = std::filesystem;

namespace {

struct BundleDirectory {
    fs::path base;
    fs::path root;
    BundleDirectory() {
        base = fs::temp_directory_path() / ("bulkhead-static-" + std::to_string(::getpid()) + "-" +
                                            std::to_string(reinterpret_cast<std::uintptr_t>(this)));
        root = base / "dist";
        fs::create_directories(root / "assets");
    }
    ~BundleDirectory() {
        std::error_code ec;
        fs::remove_all(base, ec);
    }
    void write(const fs::path& path, const std::string& text) const {
        fs::create_directories(path.parent_path());
        std::ofstream(path, std::ios::binary) << text;
    }
};

}  // namespace

TEST_CASE("static files: index.html at / and for app routes, assets with their type and cache policy") {
    BundleDirectory dir;
    dir.write(dir.root / "index.html", "<!doctype html><title>app</title>");
    dir.write(dir.root / "assets/index-BTEXEMoW.js", "console.log(1)");
    dir.write(dir.root / "assets/index-BTEXEMoW.css", "body{}");
    dir.write(dir.root / "favicon.svg", "<svg/>");
    StaticFiles files(dir.root);

    auto index = files.answer("/");
    CHECK(index.status == 200);
    CHECK(index.content_type == "text/html; charset=utf-8");
    CHECK(index.cache_control == "no-cache");
    CHECK(index.body == "<!doctype html><title>app</title>");

    SUBCASE("an app route gets index.html") {
        auto route = files.answer("/incidents/12");
        CHECK(route.status == 200);
        CHECK(route.body == index.body);
    }
    SUBCASE("hashed assets are immutable for a year") {
        auto script = files.answer("/assets/index-BTEXEMoW.js");
        CHECK(script.status == 200);
        CHECK(script.content_type == "text/javascript; charset=utf-8");
        CHECK(script.cache_control == "public, max-age=31536000, immutable");
        CHECK(files.answer("/assets/index-BTEXEMoW.css").content_type == "text/css; charset=utf-8");
    }
    SUBCASE("other files are revalidated") {
        auto icon = files.answer("/favicon.svg");
        CHECK(icon.content_type == "image/svg+xml");
        CHECK(icon.cache_control == "no-cache");
    }
    SUBCASE("a missing asset is 404, not index.html") {
        CHECK(files.answer("/assets/index-OLDHASH1.js").status == 404);
        CHECK(files.answer("/missing.js").status == 404);
    }
}

TEST_CASE("static files: nothing outside the directory") {
    BundleDirectory dir;
    dir.write(dir.root / "index.html", "app");
    dir.write(dir.base / "secret.txt", "secret");
    fs::create_symlink(dir.base / "secret.txt", dir.root / "link.txt");
    StaticFiles files(dir.root);

    CHECK(files.answer("/../secret.txt").status == 404);
    CHECK(files.answer("/assets/../../secret.txt").status == 404);
    CHECK(files.answer("/a\\..\\secret.txt").status == 404);
    CHECK(files.answer("/link.txt").status == 404);  // a symlink leaving the root
    CHECK(files.answer("relative").status == 404);
    CHECK(files.answer("/secret.txt").status == 404);
}

TEST_CASE("static files: a plain page says how to build a missing bundle") {
    BundleDirectory dir;
    StaticFiles files(dir.root);
    auto page = files.answer("/");
    CHECK(page.status == 503);
    CHECK(page.content_type == "text/html; charset=utf-8");
    CHECK(page.body.find("not built") != std::string::npos);
    CHECK(page.body.find("scripts/build.sh") != std::string::npos);
    CHECK(files.answer("/incidents").status == 503);
}

TEST_CASE("static files: hashed asset names and content types") {
    CHECK(is_hashed_asset("assets/lib-uplot-CANum5s6.js"));
    CHECK(is_hashed_asset("assets/index-BTEXEMoW.css"));
    CHECK_FALSE(is_hashed_asset("index.html"));
    CHECK_FALSE(is_hashed_asset("assets/logo.svg"));
    CHECK_FALSE(is_hashed_asset("assets/sub/index-BTEXEMoW.js"));
    CHECK(content_type_for(".woff2") == "font/woff2");
    CHECK(content_type_for(".exe") == "application/octet-stream");
}
