// CredentialCache over a real SQLite store: a found token is answered from memory, and
// every credential write (replace, enforcer re-enrollment, deletion) takes effect on the
// next lookup; an entry older than the limit asks the store again.
#include "controller/services/credential_cache.hpp"

#include "test_store_support.hpp"

#include <doctest/doctest.h>

using namespace bulkhead::controller;

namespace {

struct CacheFixture {
    bulkhead::test::TempDir dir;
    std::unique_ptr<SqliteStore> store{bulkhead::test::open_store(dir.path() / "controller.db")};
    std::chrono::steady_clock::time_point now{};
    CredentialCache cache{*store, std::chrono::milliseconds(1000), 4096, [this] { return now; }};

    ApiToken token(const std::string& name, const std::string& sha, Role role = Role::Soc,
                   const std::string& enforcer = "") {
        return ApiToken{name, role, sha, enforcer, 1'764'000'000'000};
    }
    std::optional<ApiToken> find(const std::string& sha) {
        auto found = cache.find_api_token(sha);
        REQUIRE(found);
        return *found;
    }
};

}  // namespace

TEST_CASE("credential cache: a found token comes from memory until it is older than the limit") {
    CacheFixture f;
    REQUIRE(f.cache.put_api_token(f.token("soc", std::string(64, 'a'))));
    REQUIRE(f.find(std::string(64, 'a')));
    CHECK(f.cache.hits() == 0);
    REQUIRE(f.find(std::string(64, 'a')));
    CHECK(f.cache.hits() == 1);
    // Changed behind the cache's back (as another replica would): seen once the entry ages out.
    REQUIRE(f.store->put_api_token(f.token("soc", std::string(64, 'b'))));
    CHECK(f.find(std::string(64, 'a')));
    f.now += std::chrono::milliseconds(1001);
    CHECK_FALSE(f.find(std::string(64, 'a')));
    CHECK(f.find(std::string(64, 'b'))->name == "soc");
}

TEST_CASE("credential cache: every write through it takes effect on the next lookup") {
    CacheFixture f;
    const std::string old_sha(64, 'c'), new_sha(64, 'd'), enrollment_sha(64, 'e');
    REQUIRE(f.cache.put_api_token(f.token("enforcer:hv1", old_sha, Role::Enforcer, "hv1")));
    REQUIRE(f.find(old_sha));
    REQUIRE(f.find(old_sha));  // cached

    SUBCASE("re-enrollment replaces the enforcer's credential") {
        REQUIRE(f.cache.add_enrollment_token(EnrollmentToken{enrollment_sha, "hv1", 1'764'000'000'000,
                                                             1'764'000'600'000, std::nullopt}));
        REQUIRE(f.cache.redeem_enrollment_token(enrollment_sha, "hv1", 1'764'000'000'001,
                                                f.token("enforcer:hv1", new_sha, Role::Enforcer, "hv1")));
        CHECK_FALSE(f.find(old_sha));
        CHECK(f.find(new_sha)->enforcer == "hv1");
    }
    SUBCASE("deleting the enforcer's credentials") {
        REQUIRE(f.cache.delete_api_tokens_of_enforcer("hv1"));
        CHECK_FALSE(f.find(old_sha));
    }
    SUBCASE("replacing a token by name") {
        REQUIRE(f.cache.put_api_token(f.token("enforcer:hv1", new_sha, Role::Enforcer, "hv1")));
        CHECK_FALSE(f.find(old_sha));
        CHECK(f.find(new_sha));
    }
}

TEST_CASE("credential cache: unknown tokens always ask the store, and the cache stays bounded") {
    CacheFixture f;
    CHECK_FALSE(f.find(std::string(64, 'f')));
    CHECK_FALSE(f.find(std::string(64, 'f')));
    CHECK(f.cache.hits() == 0);
    CredentialCache small{*f.store, std::chrono::milliseconds(1000), 2, [&f] { return f.now; }};
    for (char c : {'1', '2', '3'}) {
        REQUIRE(f.store->put_api_token(f.token(std::string("t") + c, std::string(64, c))));
        REQUIRE(small.find_api_token(std::string(64, c)));
    }
    auto again = small.find_api_token(std::string(64, '3'));
    REQUIRE(again);
    CHECK(*again);
    CHECK(small.hits() == 1);  // the third emptied the full cache and was kept
}
