// SqliteStore: every method's success and failure paths on a real WAL database file.
#include "test_store_support.hpp"

#include <algorithm>
#include <doctest/doctest.h>
#include <set>

using namespace bulkhead::controller;
using bulkhead::test::make;
using bulkhead::test::make_event;
using bulkhead::test::StoreFixture;
using Kind = StoreError::Kind;

namespace {

PolicyRevision revision(std::string name, TimeMs at) {
    PolicyRevision r;
    r.name = std::move(name);
    r.author = "alice";
    r.comment = "initial";
    r.created_at = at;
    r.document = {{"name", r.name}, {"rules", nlohmann::json::array()}};
    return r;
}

WorkloadRecord workload(std::string id, std::string enforcer, std::vector<std::string> addresses,
                        std::string user = "") {
    WorkloadRecord w;
    w.id = std::move(id);
    w.enforcer = std::move(enforcer);
    w.document = {{"id", w.id}, {"enforcer", w.enforcer}, {"addresses", addresses}};
    if (!user.empty())
        w.document["user"] = user;
    w.updated_at = 1000;
    return w;
}

template <typename T> Kind kind_of(const StoreResult<T>& result) {
    REQUIRE_FALSE(result.has_value());
    return result.error().kind;
}

std::vector<std::int64_t> ids_of(const std::vector<StoredEvent>& events) {
    std::vector<std::int64_t> ids;
    for (const auto& e : events)
        ids.push_back(e.id);
    return ids;
}

} // namespace

TEST_CASE("store: to_string helpers round-trip every enum value") {
    for (auto s : {RevisionState::Draft, RevisionState::Active, RevisionState::Superseded}) {
        CHECK(revision_state_from_string(to_string(s)) == s);
    }
    for (auto r : {Role::Admin, Role::Soc, Role::Automation, Role::Enforcer})
        CHECK(role_from_string(to_string(r)) == r);
    for (auto s : {IncidentState::Open, IncidentState::Acknowledged, IncidentState::Resolved}) {
        CHECK(incident_state_from_string(to_string(s)) == s);
    }
    CHECK_FALSE(role_from_string("root").has_value());
    CHECK_FALSE(revision_state_from_string("Active").has_value());
    CHECK_FALSE(incident_state_from_string("").has_value());
}

TEST_CASE(
    "store: revisions are drafts until activated; activation supersedes; rollback re-activates") {
    StoreFixture f;
    auto& s = *f.store;

    auto r1 = s.add_revision(revision("v1", 100));
    REQUIRE(r1);
    auto r2 = s.add_revision(revision("v2", 200));
    REQUIRE(r2);
    CHECK(r2->id > r1->id);
    CHECK(r1->state == RevisionState::Draft);
    CHECK_FALSE(r1->activated_at);
    CHECK(r1->document["name"] == "v1");

    auto got = s.get_revision(r1->id);
    REQUIRE(got);
    CHECK(got->name == "v1");
    CHECK(got->author == "alice");
    CHECK(got->comment == "initial");
    CHECK(got->created_at == 100);

    auto none = s.active_revision();
    REQUIRE(none);
    CHECK_FALSE(none->has_value());

    auto a1 = s.activate_revision(r1->id, 1000);
    REQUIRE(a1);
    CHECK(a1->state == RevisionState::Active);
    CHECK(a1->activated_at == 1000);

    auto a2 = s.activate_revision(r2->id, 2000);
    REQUIRE(a2);
    CHECK(s.get_revision(r1->id)->state == RevisionState::Superseded);
    CHECK(s.active_revision()->value().id == r2->id);

    SUBCASE("roll back = activate the older revision again") {
        auto back = s.activate_revision(r1->id, 3000);
        REQUIRE(back);
        CHECK(back->state == RevisionState::Active);
        CHECK(back->activated_at == 3000);
        CHECK(s.get_revision(r2->id)->state == RevisionState::Superseded);
        CHECK(s.active_revision()->value().id == r1->id);
    }
    SUBCASE("activating the active revision again changes nothing") {
        auto again = s.activate_revision(r2->id, 9999);
        REQUIRE(again);
        CHECK(again->activated_at == 2000);
    }
    SUBCASE("list is newest first and limited") {
        auto list = s.list_revisions(10);
        REQUIRE(list);
        REQUIRE(list->size() == 2);
        CHECK((*list)[0].id == r2->id);
        CHECK(s.list_revisions(1)->size() == 1);
    }
    SUBCASE("failures") {
        CHECK(kind_of(s.get_revision(999)) == Kind::NotFound);
        CHECK(kind_of(s.activate_revision(999, 1)) == Kind::NotFound);
        CHECK(s.active_revision()->value().id == r2->id); // unchanged by the failed activation
        auto active = revision("v3", 1);
        active.state = RevisionState::Active;
        CHECK(kind_of(s.add_revision(active)) == Kind::Invalid);
    }
}

TEST_CASE("store: enforcer definitions and workloads; every inventory change bumps the version") {
    StoreFixture f;
    auto& s = *f.store;
    const auto v0 = s.inventory_version();
    REQUIRE(v0);
    CHECK(*v0 == 0);

    REQUIRE(s.upsert_enforcer_definitions(
        {{"hv1", {{"id", "hv1"}, {"description", "one"}}}, {"hv2", {{"id", "hv2"}}}}));
    CHECK(*s.inventory_version() == 1);
    REQUIRE(s.upsert_enforcer_definitions({{"hv1", {{"id", "hv1"}, {"description", "changed"}}}}));
    CHECK(*s.inventory_version() == 2);
    auto defs = s.list_enforcer_definitions();
    REQUIRE(defs);
    REQUIRE(defs->size() == 2);
    CHECK((*defs)[0].document["description"] == "changed");

    REQUIRE(s.delete_enforcer_definition("hv2"));
    CHECK(*s.inventory_version() == 3);
    CHECK(kind_of(s.delete_enforcer_definition("hv2")) == Kind::NotFound);
    CHECK(*s.inventory_version() == 3);
    CHECK(kind_of(s.upsert_enforcer_definitions({{"", {}}})) == Kind::Invalid);

    REQUIRE(s.upsert_workloads({workload("vdi-001", "hv1", {"10.1.0.1", "fd00::1"}, "kimura"),
                                workload("vdi-002", "hv1", {"10.1.0.2"}),
                                workload("laptop-9", "vpn", {"10.1.0.1"})}));
    CHECK(*s.inventory_version() == 4);

    auto one = s.get_workload("vdi-001");
    REQUIRE(one);
    REQUIRE(one->has_value());
    CHECK((*one)->enforcer == "hv1");
    CHECK((*one)->document["user"] == "kimura");
    CHECK((*one)->updated_at == 1000);
    CHECK_FALSE(s.get_workload("nope")->has_value());
    CHECK(s.list_workloads()->size() == 3);

    auto shared = s.workloads_with_address("10.1.0.1");
    REQUIRE(shared);
    REQUIRE(shared->size() == 2);
    CHECK((*shared)[0].id == "laptop-9");
    CHECK((*shared)[1].id == "vdi-001");
    CHECK(s.workloads_with_address("fd00::1")->size() == 1);
    CHECK(s.workloads_with_address("10.9.9.9")->empty());

    SUBCASE("re-upsert replaces the address rows") {
        REQUIRE(s.upsert_workloads({workload("vdi-001", "hv2", {"10.1.0.99"})}));
        CHECK(s.workloads_with_address("fd00::1")->empty());
        CHECK(s.workloads_with_address("10.1.0.1")->size() == 1);
        CHECK(s.workloads_with_address("10.1.0.99")->at(0).enforcer == "hv2");
        CHECK(*s.inventory_version() == 5);
    }
    SUBCASE("delete removes workloads and their addresses; unknown ids count zero") {
        auto deleted = s.delete_workloads({"vdi-001", "unknown"});
        REQUIRE(deleted);
        CHECK(*deleted == 1);
        CHECK(*s.inventory_version() == 5);
        CHECK(s.workloads_with_address("fd00::1")->empty());
        CHECK(*s.delete_workloads({"unknown"}) == 0);
        CHECK(*s.inventory_version() == 5);
    }
    SUBCASE("a bulk import with one bad record stores nothing") {
        auto bad = workload("vdi-003", "hv1", {});
        bad.document["addresses"] = "10.0.0.3";
        CHECK(kind_of(s.upsert_workloads({workload("vdi-004", "hv1", {"10.1.0.4"}), bad})) ==
              Kind::Invalid);
        CHECK_FALSE(s.get_workload("vdi-004")->has_value());
        auto mismatched = workload("vdi-005", "hv1", {});
        mismatched.document["id"] = "other";
        CHECK(kind_of(s.upsert_workloads({mismatched})) == Kind::Invalid);
        CHECK(kind_of(s.upsert_workloads({workload("", "hv1", {})})) == Kind::Invalid);
        CHECK(*s.inventory_version() == 4);
    }
}

TEST_CASE("store: vpn sessions and attribution by pool address at a time") {
    StoreFixture f;
    auto& s = *f.store;
    auto first = s.add_vpn_session({0, "kimura", "10.8.0.5", "203.0.113.7", 1000, 2000});
    REQUIRE(first);
    auto second = s.add_vpn_session({0, "sato", "10.8.0.5", "198.51.100.2", 3000, std::nullopt});
    REQUIRE(second);
    CHECK(second->id > first->id);

    CHECK(s.vpn_session_for("10.8.0.5", 1500)->value().user == "kimura");
    CHECK_FALSE(s.vpn_session_for("10.8.0.5", 2000)->has_value()); // end is exclusive
    CHECK_FALSE(s.vpn_session_for("10.8.0.5", 2500)->has_value());
    CHECK(s.vpn_session_for("10.8.0.5", 5000)->value().user == "sato");
    CHECK_FALSE(s.vpn_session_for("10.8.0.6", 5000)->has_value());

    CHECK(s.list_vpn_sessions(std::nullopt, 10)->size() == 2);
    CHECK(s.list_vpn_sessions(std::nullopt, 1)->at(0).id == second->id);
    CHECK(s.list_vpn_sessions(1500, 10)->size() == 1);
    CHECK(s.list_vpn_sessions(500, 10)->empty());

    auto ended = s.end_vpn_session(second->id, 4000);
    REQUIRE(ended);
    CHECK(ended->end == 4000);
    CHECK_FALSE(s.vpn_session_for("10.8.0.5", 5000)->has_value());
    CHECK(s.end_vpn_session(second->id, 4000)); // same end again: idempotent
    CHECK(kind_of(s.end_vpn_session(second->id, 4500)) == Kind::Conflict);
    CHECK(kind_of(s.end_vpn_session(999, 4000)) == Kind::NotFound);
    auto third = s.add_vpn_session({0, "ito", "10.8.0.7", "192.0.2.1", 5000, std::nullopt});
    REQUIRE(third);
    CHECK(kind_of(s.end_vpn_session(third->id, 4000)) == Kind::Invalid);
    CHECK(kind_of(s.add_vpn_session({0, "x", "10.8.0.9", "192.0.2.9", 5000, 4000})) ==
          Kind::Invalid);
}

TEST_CASE("store: enforcer status is replaced as a whole") {
    StoreFixture f;
    auto& s = *f.store;
    CHECK_FALSE(s.get_enforcer_status("hv1")->has_value());
    EnforcerStatus st;
    st.id = "hv1";
    st.enrolled_at = 10;
    st.last_heartbeat = 20;
    st.applied_generation = 7;
    st.applied_hash = "abc";
    st.apply_state = "applied";
    st.drift_repairs = 2;
    st.last_drift_at = 15;
    st.clock_offset_ms = -3;
    st.version = "0.1.0";
    st.hostname = "hv1.lab";
    st.details = {{"spool", 0}};
    REQUIRE(s.put_enforcer_status(st));
    st.applied_generation = 8;
    st.last_drift_at.reset();
    REQUIRE(s.put_enforcer_status(st));
    auto got = s.get_enforcer_status("hv1");
    REQUIRE(got);
    REQUIRE(got->has_value());
    CHECK((*got)->applied_generation == 8);
    CHECK_FALSE((*got)->last_drift_at);
    CHECK((*got)->clock_offset_ms == -3);
    CHECK((*got)->details["spool"] == 0);
    CHECK((*got)->hostname == "hv1.lab");
    CHECK(s.list_enforcer_status()->size() == 1);
    st.applied_generation = ~std::uint64_t{0};
    CHECK(kind_of(s.put_enforcer_status(st)) == Kind::Invalid);
}

TEST_CASE("store: api tokens are replaced by name and found by digest") {
    StoreFixture f;
    auto& s = *f.store;
    REQUIRE(s.put_api_token({"alice", Role::Admin, "h-alice", "", 1}));
    REQUIRE(s.put_api_token({"hv1", Role::Enforcer, "h-hv1", "hv1", 1}));
    auto alice = s.find_api_token("h-alice");
    REQUIRE(alice);
    REQUIRE(alice->has_value());
    CHECK((*alice)->role == Role::Admin);

    REQUIRE(s.put_api_token({"alice", Role::Soc, "h-alice-2", "", 2}));
    CHECK_FALSE(s.find_api_token("h-alice")->has_value());
    CHECK(s.find_api_token("h-alice-2")->value().role == Role::Soc);

    CHECK(kind_of(s.put_api_token({"bob", Role::Soc, "h-alice-2", "", 3})) == Kind::Conflict);
    CHECK(kind_of(s.put_api_token({"hv2", Role::Enforcer, "h-hv2", "", 3})) == Kind::Invalid);

    REQUIRE(s.delete_api_tokens_of_enforcer("hv1"));
    CHECK_FALSE(s.find_api_token("h-hv1")->has_value());
    CHECK(s.find_api_token("h-alice-2")->has_value());
}

TEST_CASE("store: enrollment tokens are single-use, expire, and belong to one enforcer") {
    StoreFixture f;
    auto& s = *f.store;
    REQUIRE(s.put_api_token({"hv1-old", Role::Enforcer, "h-old", "hv1", 1}));
    REQUIRE(s.add_enrollment_token({"e1", "hv1", 100, 1000, std::nullopt}));
    CHECK(kind_of(s.add_enrollment_token({"e1", "hv2", 100, 1000, std::nullopt})) ==
          Kind::Conflict);
    const ApiToken credential{"hv1", Role::Enforcer, "h-new", "hv1", 500};

    SUBCASE("wrong enforcer") {
        const ApiToken other{"hv2", Role::Enforcer, "h-hv2", "hv2", 500};
        CHECK(kind_of(s.redeem_enrollment_token("e1", "hv2", 500, other)) == Kind::NotFound);
        CHECK(s.find_api_token("h-old")->has_value());
    }
    SUBCASE("expired") {
        CHECK(kind_of(s.redeem_enrollment_token("e1", "hv1", 1000, credential)) == Kind::NotFound);
        CHECK_FALSE(s.find_api_token("h-new")->has_value());
    }
    SUBCASE("unknown token") {
        CHECK(kind_of(s.redeem_enrollment_token("nope", "hv1", 500, credential)) == Kind::NotFound);
    }
    SUBCASE("credential for another enforcer") {
        const ApiToken wrong{"hv1", Role::Admin, "h-new", "", 500};
        CHECK(kind_of(s.redeem_enrollment_token("e1", "hv1", 500, wrong)) == Kind::Invalid);
    }
    SUBCASE("redeemed once: old credentials replaced; the second use fails") {
        REQUIRE(s.redeem_enrollment_token("e1", "hv1", 500, credential));
        CHECK_FALSE(s.find_api_token("h-old")->has_value());
        CHECK(s.find_api_token("h-new")->value().enforcer == "hv1");
        CHECK(kind_of(s.redeem_enrollment_token("e1", "hv1", 600, credential)) == Kind::NotFound);
    }
    SUBCASE("a failure while storing the credential leaves the token unused") {
        REQUIRE(s.put_api_token({"someone", Role::Soc, "h-new", "", 1})); // digest clash
        CHECK(kind_of(s.redeem_enrollment_token("e1", "hv1", 500, credential)) == Kind::Conflict);
        CHECK(s.find_api_token("h-old")->has_value());
        REQUIRE(s.delete_api_tokens_of_enforcer("hv1"));
        REQUIRE(s.put_api_token({"someone", Role::Soc, "h-other", "", 1}));
        CHECK(s.redeem_enrollment_token("e1", "hv1", 500, credential));
    }
}

TEST_CASE("store: event batches skip and count duplicates by (enforcer, seq)") {
    StoreFixture f;
    auto& s = *f.store;
    std::vector<StoredEvent> batch;
    for (std::uint64_t seq = 1; seq <= 5; ++seq)
        batch.push_back(make_event("hv1", seq, 1000 + static_cast<std::int64_t>(seq)));
    auto first = s.insert_events(batch);
    REQUIRE(first);
    CHECK(first->accepted == 5);
    CHECK(first->duplicates == 0);
    CHECK(first->through_seq == 5);

    batch.push_back(make_event("hv1", 6, 2000));
    batch.push_back(make_event("hv1", 6, 2000)); // duplicate inside the batch
    batch.push_back(make_event("hv2", 1, 2000)); // same seq, other enforcer
    auto second = s.insert_events(batch);
    REQUIRE(second);
    CHECK(second->accepted == 2);
    CHECK(second->duplicates == 6);
    CHECK(second->through_seq == 6);

    CHECK(*s.last_event_seq("hv1") == 6);
    CHECK(*s.last_event_seq("hv2") == 1);
    CHECK(*s.last_event_seq("hv9") == 0);

    auto empty = s.insert_events({});
    REQUIRE(empty);
    CHECK(empty->accepted == 0);

    auto huge = make_event("hv1", ~std::uint64_t{0}, 1);
    CHECK(kind_of(s.insert_events({make_event("hv1", 100, 1), huge})) == Kind::Invalid);
    CHECK(*s.last_event_seq("hv1") == 6);

    auto stored = s.query_events(make<EventQuery>([&](auto& q) {
        q.limit = 100;
        q.newest_first = false;
    }));
    REQUIRE(stored);
    REQUIRE(stored->size() == 7);
    const auto& e = stored->front();
    CHECK(e.enforcer == "hv1");
    CHECK(e.enforcer_seq == 1);
    CHECK(e.type == "drop");
    CHECK(e.time_ns == 1001);
    CHECK(e.workload == "vdi-001");
    CHECK(e.direction == "out");
    CHECK(e.protocol == "tcp");
    CHECK(e.dport == 445);
    CHECK(e.count == 1);
    CHECK(e.document["seq"] == 1);
}

TEST_CASE("store: event queries filter, order and page") {
    StoreFixture f;
    auto& s = *f.store;
    std::vector<StoredEvent> events;
    // 20 events: alternating workloads, reasons, ports, addresses, types, enforcers.
    for (int i = 0; i < 20; ++i) {
        auto e = make_event(i % 2 == 0 ? "hv1" : "hv2", static_cast<std::uint64_t>(i + 1),
                            1000 + i * 10);
        e.workload = i % 2 == 0 ? "vdi-001" : "vdi-002";
        e.reason = i % 5 == 0 ? "decoy" : "default";
        e.dport = i % 4 == 0 ? std::optional<std::uint16_t>(22) : std::optional<std::uint16_t>(445);
        if (i % 3 == 0)
            e.dport.reset();
        e.src = i % 2 == 0 ? "10.1.0.1" : "10.1.0.2";
        e.dst = i % 2 == 0 ? "10.1.0.2" : "10.1.0.3";
        e.type = i == 19 ? "allowed_flow" : "drop";
        events.push_back(e);
    }
    REQUIRE(s.insert_events(events));
    auto all = s.query_events(make<EventQuery>([&](auto& q) {
        q.limit = 100;
        q.newest_first = false;
    }));
    REQUIRE(all);
    REQUIRE(all->size() == 20);
    const auto base = all->front().id;

    auto run = [&](EventQuery q) {
        q.newest_first = false;
        auto r = s.query_events(q);
        REQUIRE(r);
        std::vector<int> index;
        for (const auto& e : *r)
            index.push_back(static_cast<int>(e.id - base));
        return index;
    };
    auto expect = [&](auto predicate) {
        std::vector<int> index;
        for (int i = 0; i < 20; ++i) {
            if (predicate(i))
                index.push_back(i);
        }
        return index;
    };

    SUBCASE("time range is [from, to)") {
        CHECK(run(make<EventQuery>([&](auto& q) {
                  q.from_ns = 1050;
                  q.to_ns = 1100;
              })) == expect([](int i) { return i >= 5 && i < 10; }));
    }
    SUBCASE("workload") {
        CHECK(run(make<EventQuery>([&](auto& q) { q.workload = "vdi-002"; })) ==
              expect([](int i) { return i % 2 == 1; }));
    }
    SUBCASE("address matches src or dst") {
        CHECK(run(make<EventQuery>([&](auto& q) { q.address = "10.1.0.2"; })).size() == 20);
        CHECK(run(make<EventQuery>([&](auto& q) { q.address = "10.1.0.3"; })) ==
              expect([](int i) { return i % 2 == 1; }));
        CHECK(run(make<EventQuery>([&](auto& q) { q.address = "10.1.0.1"; })) ==
              expect([](int i) { return i % 2 == 0; }));
        CHECK(run(make<EventQuery>([&](auto& q) { q.address = "10.9.9.9"; })).empty());
    }
    SUBCASE("port") {
        CHECK(run(make<EventQuery>([&](auto& q) { q.port = 22; })) ==
              expect([](int i) { return i % 4 == 0 && i % 3 != 0; }));
    }
    SUBCASE("reason") {
        CHECK(run(make<EventQuery>([&](auto& q) { q.reason = "decoy"; })) ==
              expect([](int i) { return i % 5 == 0; }));
    }
    SUBCASE("type") {
        CHECK(run(make<EventQuery>([&](auto& q) { q.type = "allowed_flow"; })) ==
              std::vector<int>{19});
    }
    SUBCASE("enforcer") {
        CHECK(run(make<EventQuery>([&](auto& q) { q.enforcer = "hv1"; })) ==
              expect([](int i) { return i % 2 == 0; }));
    }
    SUBCASE("combined") {
        CHECK(run(make<EventQuery>([&](auto& q) {
                  q.from_ns = 1000;
                  q.to_ns = 1150;
                  q.workload = "vdi-001";
                  q.address = "10.1.0.1";
                  q.port = 445;
                  q.reason = "default";
                  q.type = "drop";
                  q.enforcer = "hv1";
              })) == expect([](int i) {
                  return i < 15 && i % 2 == 0 && i % 4 != 0 && i % 3 != 0 && i % 5 != 0;
              }));
        CHECK(run(make<EventQuery>([&](auto& q) {
                  q.workload = "vdi-001";
                  q.enforcer = "hv2";
              })).empty());
    }
    SUBCASE("paging oldest first with after_id visits every event once") {
        std::vector<std::int64_t> seen;
        std::optional<std::int64_t> after;
        int pages = 0;
        for (;;) {
            auto page = s.query_events(make<EventQuery>([&](auto& q) {
                q.after_id = after;
                q.limit = 7;
                q.newest_first = false;
            }));
            REQUIRE(page);
            if (page->empty())
                break;
            ++pages;
            for (const auto& e : *page)
                seen.push_back(e.id);
            after = page->back().id;
        }
        CHECK(pages == 3);
        CHECK(seen == ids_of(*all));
    }
    SUBCASE("newest first") {
        auto newest = s.query_events(make<EventQuery>([&](auto& q) { q.limit = 3; }));
        REQUIRE(newest);
        REQUIRE(newest->size() == 3);
        CHECK((*newest)[0].id == base + 19);
        CHECK((*newest)[2].id == base + 17);
        auto newer = s.query_events(make<EventQuery>([&](auto& q) {
            q.after_id = base + 17;
            q.limit = 100;
        }));
        REQUIRE(newer);
        CHECK(ids_of(*newer) == std::vector<std::int64_t>{base + 19, base + 18});
    }
    SUBCASE("limit is capped at 10,000 and 0 gives nothing") {
        CHECK(s.query_events(make<EventQuery>([&](auto& q) { q.limit = 1'000'000; }))->size() ==
              20);
        CHECK(s.query_events(make<EventQuery>([&](auto& q) { q.limit = 0; }))->empty());
    }
}

TEST_CASE("store: count_events sums counts per bucket with integer arithmetic") {
    StoreFixture f;
    auto& s = *f.store;
    std::vector<StoredEvent> events;
    std::uint64_t seq = 0;
    auto add = [&](std::int64_t t, std::uint64_t count, std::string type = "drop",
                   std::string workload = "vdi-001") {
        auto e = make_event("hv1", ++seq, t);
        e.count = count;
        e.type = std::move(type);
        e.workload = std::move(workload);
        events.push_back(e);
    };
    add(999, 100); // before the range
    add(1000, 1);  // bucket 0
    add(1099, 2);  // bucket 0
    add(1100, 3);  // bucket 1
    add(1350, 4);  // bucket 3 (bucket 2 is empty)
    add(1350, 50, "allowed_flow");
    add(1360, 5, "drop", "vdi-002");
    add(1400, 100); // at to: excluded
    REQUIRE(s.insert_events(events));

    auto buckets = s.count_events(1000, 1400, 100, {});
    REQUIRE(buckets);
    REQUIRE(buckets->size() == 3);
    CHECK((*buckets)[0].start_ns == 1000);
    CHECK((*buckets)[0].events == 3);
    CHECK((*buckets)[1].start_ns == 1100);
    CHECK((*buckets)[1].events == 3);
    CHECK((*buckets)[2].start_ns == 1300);
    CHECK((*buckets)[2].events == 9);

    SUBCASE("type given") {
        auto flows = s.count_events(1000, 1400, 100,
                                    make<EventQuery>([&](auto& q) { q.type = "allowed_flow"; }));
        REQUIRE(flows);
        REQUIRE(flows->size() == 1);
        CHECK((*flows)[0].events == 50);
    }
    SUBCASE("filters apply") {
        auto one = s.count_events(1000, 1400, 100,
                                  make<EventQuery>([&](auto& q) { q.workload = "vdi-002"; }));
        REQUIRE(one);
        REQUIRE(one->size() == 1);
        CHECK((*one)[0].start_ns == 1300);
        CHECK((*one)[0].events == 5);
    }
    SUBCASE("one bucket for everything") {
        auto total = s.count_events(0, 10'000, 10'000, {});
        REQUIRE(total);
        REQUIRE(total->size() == 1);
        CHECK((*total)[0].events == 215);
    }
    SUBCASE("bad arguments") {
        CHECK(kind_of(s.count_events(1000, 1400, 0, {})) == Kind::Invalid);
        CHECK(kind_of(s.count_events(1400, 1000, 100, {})) == Kind::Invalid);
        CHECK(s.count_events(1000, 1000, 100, {})->empty());
    }
}

TEST_CASE("store: incidents, notes and their event timeline") {
    StoreFixture f;
    auto& s = *f.store;
    Incident in;
    in.source_workload = "vdi-001";
    in.severity = "high";
    in.title = "scan";
    in.explanation = "vdi-001 tried 37 hosts";
    in.opened_at = 10;
    in.updated_at = 10;
    in.event_count = 37;
    in.details = {{"targets", {"10.1.0.2"}}};
    auto a = s.add_incident(in);
    REQUIRE(a);
    CHECK(a->state == IncidentState::Open);
    CHECK(a->details["targets"][0] == "10.1.0.2");
    in.source_workload = "vdi-002";
    auto b = s.add_incident(in);
    REQUIRE(b);
    in.source_workload = "vdi-001";
    in.state = IncidentState::Resolved;
    auto c = s.add_incident(in);
    REQUIRE(c);

    SUBCASE("get and update") {
        CHECK(s.get_incident(a->id)->title == "scan");
        CHECK(kind_of(s.get_incident(999)) == Kind::NotFound);
        auto changed = *a;
        changed.state = IncidentState::Acknowledged;
        changed.updated_at = 20;
        changed.event_count = 40;
        auto updated = s.update_incident(changed);
        REQUIRE(updated);
        CHECK(updated->state == IncidentState::Acknowledged);
        CHECK(s.get_incident(a->id)->event_count == 40);
        changed.id = 999;
        CHECK(kind_of(s.update_incident(changed)) == Kind::NotFound);
    }
    SUBCASE("unresolved incident of a source: newest open or acknowledged") {
        CHECK(s.unresolved_incident_of("vdi-001")->value().id == a->id);
        auto resolved = *a;
        resolved.state = IncidentState::Resolved;
        REQUIRE(s.update_incident(resolved));
        CHECK_FALSE(s.unresolved_incident_of("vdi-001")->has_value());
        CHECK_FALSE(s.unresolved_incident_of("nobody")->has_value());
    }
    SUBCASE("counts by severity in one state (the metrics page)") {
        in.state = IncidentState::Open;
        in.severity = "critical";
        REQUIRE(s.add_incident(in));
        const auto open = s.count_incidents_by_severity(IncidentState::Open);
        REQUIRE(open);
        CHECK(*open == std::map<std::string, std::uint64_t>{{"critical", 1}, {"high", 2}});
        const auto resolved = s.count_incidents_by_severity(IncidentState::Resolved);
        REQUIRE(resolved);
        CHECK(*resolved == std::map<std::string, std::uint64_t>{{"high", 1}});
        CHECK(s.count_incidents_by_severity(IncidentState::Acknowledged)->empty());
    }
    SUBCASE("list filters and pages newest first") {
        CHECK(s.list_incidents({})->size() == 3);
        CHECK(s.list_incidents(make<IncidentQuery>([&](auto& q) {
                   q.state = IncidentState::Open;
               }))->size() == 2);
        CHECK(s.list_incidents(make<IncidentQuery>([&](auto& q) {
                   q.source_workload = "vdi-001";
               }))->size() == 2);
        auto open_one = s.list_incidents(make<IncidentQuery>([&](auto& q) {
            q.state = IncidentState::Open;
            q.source_workload = "vdi-001";
        }));
        REQUIRE(open_one);
        REQUIRE(open_one->size() == 1);
        CHECK((*open_one)[0].id == a->id);
        auto page1 = s.list_incidents(make<IncidentQuery>([&](auto& q) { q.limit = 2; }));
        REQUIRE(page1);
        REQUIRE(page1->size() == 2);
        CHECK((*page1)[0].id == c->id);
        auto page2 = s.list_incidents(make<IncidentQuery>([&](auto& q) {
            q.before_id = page1->back().id;
            q.limit = 2;
        }));
        REQUIRE(page2);
        REQUIRE(page2->size() == 1);
        CHECK((*page2)[0].id == a->id);
    }
    SUBCASE("notes") {
        REQUIRE(s.add_incident_note({0, a->id, "bob", 30, "looking"}));
        auto second = s.add_incident_note({0, a->id, "bob", 40, "contained"});
        REQUIRE(second);
        auto notes = s.incident_notes(a->id);
        REQUIRE(notes);
        REQUIRE(notes->size() == 2);
        CHECK((*notes)[0].text == "looking");
        CHECK((*notes)[1].id == second->id);
        CHECK(s.incident_notes(b->id)->empty());
        CHECK(kind_of(s.add_incident_note({0, 999, "bob", 1, "x"})) == Kind::NotFound);
        CHECK(kind_of(s.incident_notes(999)) == Kind::NotFound);
    }
    SUBCASE("linked events, oldest first") {
        REQUIRE(s.insert_events(
            {make_event("hv1", 1, 300), make_event("hv1", 2, 100), make_event("hv1", 3, 200)}));
        auto events = s.query_events(make<EventQuery>([&](auto& q) { q.newest_first = false; }));
        REQUIRE(events);
        const auto ids = ids_of(*events);
        REQUIRE(s.link_incident_events(a->id, ids));
        REQUIRE(s.link_incident_events(a->id, {ids[0]})); // linking again is harmless
        auto timeline = s.incident_events(a->id, 10);
        REQUIRE(timeline);
        REQUIRE(timeline->size() == 3);
        CHECK((*timeline)[0].time_ns == 100);
        CHECK((*timeline)[2].time_ns == 300);
        CHECK(s.incident_events(a->id, 1)->size() == 1);
        CHECK(s.incident_events(b->id, 10)->empty());
        CHECK(kind_of(s.link_incident_events(999, ids)) == Kind::NotFound);
        CHECK(kind_of(s.incident_events(999, 10)) == Kind::NotFound);
        // A missing event fails the whole call: the valid link before it is undone too.
        CHECK(kind_of(s.link_incident_events(b->id, {ids[0], 99'999})) == Kind::NotFound);
        CHECK(s.incident_events(b->id, 10)->empty());
        CHECK(*s.incident_event_ids(a->id, 10) == ids);
        CHECK(kind_of(s.incident_event_ids(999, 10)) == Kind::NotFound);
    }
    SUBCASE("links outlive the events' move to the archive") {
        REQUIRE(s.insert_events({make_event("hv1", 1, 100), make_event("hv1", 2, 200), make_event("hv1", 3, 300)}));
        auto events = s.query_events(make<EventQuery>([&](auto& q) { q.newest_first = false; }));
        REQUIRE(events);
        const auto ids = ids_of(*events);
        REQUIRE(s.link_incident_events(a->id, ids));
        auto chained = s.chained_events(0, 10);
        REQUIRE(chained);
        REQUIRE(chained->size() == 3);
        REQUIRE((*chained)[1].hash.has_value());
        // The first two sealed into a segment elsewhere and removed from the database.
        REQUIRE(s.archive_events_through(bulkhead::evidence::ChainHead{static_cast<std::uint64_t>(ids[1]), *(*chained)[1].hash}));
        auto timeline = s.incident_events(a->id, 10);
        REQUIRE(timeline);
        CHECK(ids_of(*timeline) == std::vector<std::int64_t>{ids[2]});  // the database's part
        CHECK(*s.incident_event_ids(a->id, 10) == ids);                  // every link kept
    }
}

TEST_CASE("store: at most one active quarantine per workload") {
    StoreFixture f;
    auto& s = *f.store;
    Quarantine q;
    q.workload = "vdi-001";
    q.reason = "scan";
    q.actor = "analyzer";
    q.automatic = true;
    q.created_at = 100;
    auto first = s.add_quarantine(q);
    REQUIRE(first);
    CHECK(first->automatic);
    CHECK_FALSE(first->released_at);
    CHECK_FALSE(first->incident_id);

    auto again = s.add_quarantine(q);
    CHECK(kind_of(again) == Kind::Conflict);
    CHECK(again.error().message.find("already quarantined") != std::string::npos);

    q.workload = "vdi-002";
    q.automatic = false;
    REQUIRE(s.add_quarantine(q));
    CHECK(s.active_quarantines()->size() == 2);
    CHECK(s.active_quarantine("vdi-001")->value().id == first->id);
    CHECK_FALSE(s.active_quarantine("vdi-003")->has_value());

    auto released = s.release_quarantine("vdi-001", 200, "bob");
    REQUIRE(released);
    CHECK(released->released_at == 200);
    CHECK(released->released_by == "bob");
    CHECK(kind_of(s.release_quarantine("vdi-001", 300, "bob")) == Kind::NotFound);
    CHECK_FALSE(s.active_quarantine("vdi-001")->has_value());
    CHECK(s.active_quarantines()->size() == 1);

    q.workload = "vdi-001";
    q.created_at = 400;
    auto second = s.add_quarantine(q);
    REQUIRE(second);
    auto history = s.quarantine_history("vdi-001", 10);
    REQUIRE(history);
    REQUIRE(history->size() == 2);
    CHECK((*history)[0].id == second->id);
    CHECK((*history)[1].released_by == "bob");
    CHECK(s.quarantine_history("vdi-001", 1)->size() == 1);

    SUBCASE("linked incident must exist") {
        q.workload = "vdi-005";
        q.incident_id = 42;
        CHECK(kind_of(s.add_quarantine(q)) == Kind::NotFound);
        Incident in;
        in.source_workload = "vdi-005";
        auto incident = s.add_incident(in);
        REQUIRE(incident);
        q.incident_id = incident->id;
        auto linked = s.add_quarantine(q);
        REQUIRE(linked);
        CHECK(linked->incident_id == incident->id);
    }
}

TEST_CASE("store: audit log appends and queries newest first") {
    StoreFixture f;
    auto& s = *f.store;
    auto first = s.append_audit(
        {0, 100, "alice", "admin", "policy.activate", "revision/1", nullptr, {{"id", 1}}});
    REQUIRE(first);
    CHECK(first->before.is_null());
    CHECK(first->after["id"] == 1);
    REQUIRE(s.append_audit(
        {0, 200, "bob", "soc", "quarantine.create", "workload/vdi-001", nullptr, {{"w", 1}}}));
    REQUIRE(s.append_audit(
        {0, 300, "alice", "admin", "quarantine.delete", "workload/vdi-001", {{"w", 1}}, nullptr}));

    auto all = s.query_audit({});
    REQUIRE(all);
    REQUIRE(all->size() == 3);
    CHECK((*all)[0].at == 300);
    CHECK((*all)[0].after.is_null());
    CHECK((*all)[0].before["w"] == 1);
    CHECK(s.query_audit(make<AuditQuery>([&](auto& q) { q.from = 200; }))->size() == 2);
    CHECK(s.query_audit(make<AuditQuery>([&](auto& q) { q.to = 200; }))->size() == 1);
    CHECK(s.query_audit(make<AuditQuery>([&](auto& q) { q.actor = "alice"; }))->size() == 2);
    CHECK(s.query_audit(make<AuditQuery>([&](auto& q) { q.action = "quarantine.create"; }))
              ->at(0)
              .actor == "bob");
    CHECK(s.query_audit(make<AuditQuery>([&](auto& q) {
               q.from = 100;
               q.to = 300;
               q.actor = "alice";
               q.action = "policy.activate";
           }))->size() == 1);
    auto page = s.query_audit(make<AuditQuery>([&](auto& q) {
        q.before_id = (*all)[1].id;
        q.limit = 5;
    }));
    REQUIRE(page);
    REQUIRE(page->size() == 1);
    CHECK((*page)[0].id == first->id);
    CHECK(s.query_audit(make<AuditQuery>([&](auto& q) { q.limit = 1; }))->size() == 1);
}

TEST_CASE("store: settings are a small key/value table") {
    StoreFixture f;
    auto& s = *f.store;
    CHECK_FALSE(s.get_setting("generation")->has_value());
    REQUIRE(s.put_setting("generation", "1"));
    REQUIRE(s.put_setting("generation", "2"));
    CHECK(s.get_setting("generation")->value() == "2");
}

TEST_CASE("store: :memory: databases work on one connection") {
    auto opened = SqliteStore::open(":memory:");
    REQUIRE(opened);
    auto& s = **opened;
    REQUIRE(s.put_setting("k", "v"));
    CHECK(s.get_setting("k")->value() == "v");
    auto inserted = s.insert_events({make_event("hv1", 1, 1), make_event("hv1", 1, 1)});
    REQUIRE(inserted);
    CHECK(inserted->duplicates == 1);
    auto tx = s.in_transaction([&]() -> StoreResult<void> {
        if (auto r = s.put_setting("k", "w"); !r)
            return r;
        CHECK(s.get_setting("k")->value() == "w");
        return std::unexpected(StoreError{Kind::Invalid, "stop"});
    });
    CHECK_FALSE(tx);
    CHECK(s.get_setting("k")->value() == "v");
}
