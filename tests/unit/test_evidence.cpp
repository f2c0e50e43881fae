// The tamper-evidence core: hash chains and the verifier's first broken record, Merkle
// roots and audit paths, Ed25519-signed checkpoints and their JSON lines.
#include "controller/evidence/checkpoint.hpp"
#include "controller/evidence/hash_chain.hpp"
#include "controller/evidence/merkle_tree.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <cctype>
#include <string>
#include <vector>

using namespace bulkhead::evidence;

namespace {

// A stored stream as a database would hold it: each record beside its link.
struct StoredRow {
    std::uint64_t sequence;
    Digest previous;
    Digest hash;
    std::string record;
};

std::vector<StoredRow> build_stream(Stream stream, int count) {
    ChainAppender appender(stream);
    std::vector<StoredRow> rows;
    for (int i = 1; i <= count; ++i) {
        std::string record = R"({"id":)" + std::to_string(i) + R"(,"src":"10.0.0.)" + std::to_string(i) + R"("})";
        auto link = appender.append(record);
        rows.push_back(StoredRow{link.sequence, link.previous, link.hash, std::move(record)});
    }
    return rows;
}

struct Verdict {
    std::optional<ChainBreak> broken;
    std::uint64_t verified = 0;
};

Verdict verify_rows(Stream stream, const std::vector<StoredRow>& rows, const std::vector<ChainHead>& checkpoints = {},
                    ChainHead start = {}) {
    ChainVerifier verifier(stream, start);
    for (const auto& head : checkpoints) {
        verifier.expect(head, "checkpoint at #" + std::to_string(head.sequence));
    }
    for (const auto& row : rows) {
        if (!verifier.feed(StoredRecord{row.sequence, row.previous, row.hash, row.record})) {
            break;
        }
    }
    return Verdict{verifier.finish(), verifier.verified()};
}

// Recomputes every link from `from` on, as an attacker with write access to the database
// (but not the signing key) would after changing a record.
void rebuild_chain_from(Stream stream, std::vector<StoredRow>& rows, std::size_t from) {
    Sha256 hasher;
    for (std::size_t i = from; i < rows.size(); ++i) {
        rows[i].previous = i == 0 ? Digest{} : rows[i - 1].hash;
        rows[i].hash = link_hash(hasher, stream, rows[i].sequence, rows[i].previous, rows[i].record);
    }
}

Digest digest_of(std::string_view text) { return Sha256::of(text); }

}  // namespace

TEST_CASE("evidence: the link hash is the documented byte layout (vectors computed with Python's hashlib)") {
    Sha256 hasher;
    const Digest first = link_hash(hasher, Stream::Drops, 1, Digest{}, R"({"a":1})");
    CHECK(to_hex(first) == "ec9227a82c4f38c9cf7145dd92afba3e86625858e207235a84e56c5a8bad6228");
    CHECK(to_hex(link_hash(hasher, Stream::Audit, 2, first, "second")) ==
          "63aa57d60ee3a02d000eeb520ffeb30d22bf185c17c02e5433f7d670b5e843f2");
    // The stream is part of the hash: the same record at the same place in another stream differs.
    CHECK(link_hash(hasher, Stream::Incidents, 1, Digest{}, R"({"a":1})") != first);
}

TEST_CASE("evidence: hex and stream names round-trip; malformed input is refused") {
    const Digest d = digest_of("x");
    CHECK(digest_from_hex(to_hex(d)) == d);
    std::string upper = to_hex(d);
    for (auto& c : upper) {
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    CHECK(digest_from_hex(upper) == d);
    CHECK_FALSE(digest_from_hex(to_hex(d).substr(1)));
    CHECK_FALSE(digest_from_hex(std::string(64, 'g')));
    for (auto stream : kStreams) {
        CHECK(stream_from_string(to_string(stream)) == stream);
    }
    CHECK_FALSE(stream_from_string("drop"));
}

TEST_CASE("evidence: an untouched chain verifies, from the start and from a range's first link") {
    auto rows = build_stream(Stream::Drops, 50);
    auto whole = verify_rows(Stream::Drops, rows, {ChainHead{20, rows[19].hash}, ChainHead{50, rows[49].hash}});
    CHECK_FALSE(whole.broken);
    CHECK(whole.verified == 50);

    std::vector<StoredRow> range(rows.begin() + 10, rows.begin() + 30);
    auto part = verify_rows(Stream::Drops, range, {}, ChainHead{10, rows[9].hash});
    CHECK_FALSE(part.broken);
    CHECK(part.verified == 20);
    // The same range from the wrong starting link does not.
    auto wrong_start = verify_rows(Stream::Drops, range, {}, ChainHead{10, rows[8].hash});
    REQUIRE(wrong_start.broken);
    CHECK(wrong_start.broken->kind == BreakKind::BrokenLink);
    CHECK(wrong_start.broken->sequence == 11);
}

TEST_CASE("evidence: a changed byte is named at its record") {
    auto rows = build_stream(Stream::Drops, 30);
    rows[16].record[8] = rows[16].record[8] == '1' ? '2' : '1';
    auto v = verify_rows(Stream::Drops, rows);
    REQUIRE(v.broken);
    CHECK(v.broken->kind == BreakKind::Altered);
    CHECK(v.broken->sequence == 17);
    CHECK(v.verified == 16);
    CHECK(describe(*v.broken).starts_with("drops #17: altered: "));
}

TEST_CASE("evidence: deleted records are named, one or several, in the middle") {
    auto rows = build_stream(Stream::Audit, 30);
    auto one = rows;
    one.erase(one.begin() + 9);  // sequence 10
    auto v = verify_rows(Stream::Audit, one);
    REQUIRE(v.broken);
    CHECK(v.broken->kind == BreakKind::Missing);
    CHECK(v.broken->sequence == 10);
    CHECK(v.broken->detail.find("record 10 is absent") != std::string::npos);

    auto several = rows;
    several.erase(several.begin() + 9, several.begin() + 12);  // 10, 11, 12
    v = verify_rows(Stream::Audit, several);
    REQUIRE(v.broken);
    CHECK(v.broken->sequence == 10);
    CHECK(v.broken->detail.find("records 10 to 12") != std::string::npos);
}

TEST_CASE("evidence: swapped records are found at the first of them") {
    auto rows = build_stream(Stream::Quarantines, 20);
    SUBCASE("the contents swapped, sequence numbers kept") {
        std::swap(rows[4].record, rows[5].record);
        auto v = verify_rows(Stream::Quarantines, rows);
        REQUIRE(v.broken);
        CHECK(v.broken->kind == BreakKind::Altered);
        CHECK(v.broken->sequence == 5);
    }
    SUBCASE("a row copied over its neighbour's place (a sequence number repeated)") {
        rows.insert(rows.begin() + 5, rows[4]);
        auto v = verify_rows(Stream::Quarantines, rows);
        REQUIRE(v.broken);
        CHECK(v.broken->kind == BreakKind::OutOfOrder);
        CHECK(v.broken->sequence == 5);
        CHECK(v.verified == 5);
    }
    SUBCASE("whole rows swapped and renumbered") {
        std::swap(rows[4], rows[5]);
        rows[4].sequence = 5;
        rows[5].sequence = 6;
        auto v = verify_rows(Stream::Quarantines, rows);
        REQUIRE(v.broken);
        CHECK(v.broken->kind == BreakKind::Altered);  // the sequence number is inside the hash
        CHECK(v.broken->sequence == 5);
    }
}

TEST_CASE("evidence: a record replaced with its own hash recomputed breaks the next link") {
    auto rows = build_stream(Stream::Incidents, 20);
    rows[7].record = R"({"id":8,"src":"10.9.9.9"})";
    Sha256 hasher;
    rows[7].hash = link_hash(hasher, Stream::Incidents, 8, rows[7].previous, rows[7].record);
    auto v = verify_rows(Stream::Incidents, rows);
    REQUIRE(v.broken);
    CHECK(v.broken->kind == BreakKind::BrokenLink);
    CHECK(v.broken->sequence == 9);
}

TEST_CASE("evidence: a chain rebuilt after a change is caught by a signed checkpoint, and the span named") {
    auto rows = build_stream(Stream::Drops, 40);
    const std::vector<ChainHead> checkpoints{{10, rows[9].hash}, {20, rows[19].hash}, {30, rows[29].hash}};
    rows[14].record = R"({"id":15,"src":"10.6.6.6"})";
    rebuild_chain_from(Stream::Drops, rows, 14);
    // Consistent in itself: without the outside copies nothing is wrong.
    CHECK_FALSE(verify_rows(Stream::Drops, rows).broken);
    auto v = verify_rows(Stream::Drops, rows, checkpoints);
    REQUIRE(v.broken);
    CHECK(v.broken->kind == BreakKind::CheckpointMismatch);
    CHECK(v.broken->sequence == 20);
    CHECK(v.broken->detail.find("from #11 to here") != std::string::npos);
}

TEST_CASE("evidence: records deleted from the end are a truncation against a checkpoint") {
    auto rows = build_stream(Stream::Drops, 40);
    const std::vector<ChainHead> checkpoints{{35, rows[34].hash}};
    rows.resize(30);
    CHECK_FALSE(verify_rows(Stream::Drops, rows).broken);  // nothing else can tell
    auto v = verify_rows(Stream::Drops, rows, checkpoints);
    REQUIRE(v.broken);
    CHECK(v.broken->kind == BreakKind::Truncated);
    CHECK(v.broken->sequence == 31);
    CHECK(v.verified == 30);
}

TEST_CASE("evidence: Merkle roots have RFC 6962's shape") {
    std::vector<Digest> leaves;
    for (int i = 0; i < 9; ++i) {
        leaves.push_back(digest_of("leaf " + std::to_string(i)));
    }
    Sha256 h;
    auto leaf = [&](int i) { return h.begin().add_byte(0).add(leaves[static_cast<std::size_t>(i)]).finish(); };
    auto node = [&](const Digest& l, const Digest& r) { return h.begin().add_byte(1).add(l).add(r).finish(); };
    CHECK(merkle_root({}) == digest_of(""));
    CHECK(merkle_root(std::span(leaves).first(1)) == leaf(0));
    CHECK(merkle_root(std::span(leaves).first(2)) == node(leaf(0), leaf(1)));
    CHECK(merkle_root(std::span(leaves).first(3)) == node(node(leaf(0), leaf(1)), leaf(2)));
    const Digest four = node(node(leaf(0), leaf(1)), node(leaf(2), leaf(3)));
    CHECK(merkle_root(std::span(leaves).first(4)) == four);
    CHECK(merkle_root(std::span(leaves).first(5)) == node(four, leaf(4)));
    CHECK(merkle_root(std::span(leaves).first(7)) ==
          node(four, node(node(leaf(4), leaf(5)), leaf(6))));
}

TEST_CASE("evidence: every leaf's audit path leads to the root; a changed leaf or path does not") {
    std::vector<Digest> leaves;
    for (int i = 0; i < 23; ++i) {
        leaves.push_back(digest_of("record " + std::to_string(i)));
    }
    for (std::size_t n = 1; n <= leaves.size(); ++n) {
        const auto some = std::span(leaves).first(n);
        const Digest root = merkle_root(some);
        for (std::size_t i = 0; i < n; ++i) {
            auto path = merkle_audit_path(some, i);
            CHECK(merkle_path_leads_to(some[i], i, n, path, root));
            CHECK_FALSE(merkle_path_leads_to(digest_of("forged"), i, n, path, root));
            if (!path.empty()) {
                path.back()[0] ^= 1;
                CHECK_FALSE(merkle_path_leads_to(some[i], i, n, path, root));
            }
        }
    }
    CHECK_FALSE(merkle_path_leads_to(leaves[0], 3, 3, {}, merkle_root(std::span(leaves).first(3))));
}

TEST_CASE("evidence: checkpoints are signed with Ed25519, round-trip as JSON lines, and changes are caught") {
    auto key = SigningKey::generate();
    REQUIRE(key);
    auto rows = build_stream(Stream::Drops, 5);
    Checkpoint c;
    c.controller = "controller-1";
    c.at_ms = 1'796'000'000'000;
    c.heads = {{Stream::Audit, ChainHead{3, digest_of("audit head")}}, {Stream::Drops, ChainHead{5, rows[4].hash}}};
    const auto signed_checkpoint = sign_checkpoint(c, *key);
    CHECK(checkpoint_valid(signed_checkpoint, key->public_key()));
    CHECK(signed_checkpoint.key_id == key_id(key->public_key()));
    CHECK(signed_checkpoint.key_id.size() == 16);
    // The signed bytes list the streams in a fixed order, whatever order they were given in.
    CHECK(signed_bytes(c).find("drops 5 ") < signed_bytes(c).find("audit 3 "));

    const std::string line = to_json_line(signed_checkpoint);
    CHECK(line.find('\n') == std::string::npos);
    auto read = checkpoint_from_json_line(line);
    REQUIRE(read);
    CHECK(checkpoint_valid(*read, key->public_key()));
    CHECK(read->checkpoint.heads.size() == 2);

    auto changed = *read;
    changed.checkpoint.heads[0].second.sequence = 4;
    CHECK_FALSE(checkpoint_valid(changed, key->public_key()));
    changed = *read;
    changed.checkpoint.at_ms += 1;
    CHECK_FALSE(checkpoint_valid(changed, key->public_key()));
    auto other = SigningKey::generate();
    REQUIRE(other);
    CHECK_FALSE(checkpoint_valid(*read, other->public_key()));

    // The key survives its PEM form: what the controller writes to its key file.
    auto reloaded = SigningKey::from_pem(key->private_pem());
    REQUIRE(reloaded);
    CHECK(reloaded->public_key() == key->public_key());
    CHECK(checkpoint_valid(sign_checkpoint(c, *reloaded), key->public_key()));
}

TEST_CASE("evidence: a malformed checkpoint line or key is refused with the member named") {
    auto key = SigningKey::generate();
    REQUIRE(key);
    Checkpoint c{"controller-1", 1000, {{Stream::Drops, ChainHead{1, digest_of("x")}}}};
    auto doc = nlohmann::json::parse(to_json_line(sign_checkpoint(c, *key)));
    auto error_of = [](const nlohmann::json& j) {
        auto r = checkpoint_from_json_line(j.dump());
        return r ? std::string("accepted") : r.error();
    };
    CHECK(checkpoint_from_json_line("{not json").error() == "not a JSON object");
    auto broken = doc;
    broken["type"] = "other";
    CHECK(error_of(broken).starts_with("/type: "));
    broken = doc;
    broken["heads"]["drop"] = broken["heads"]["drops"];
    CHECK(error_of(broken).starts_with("/heads/drop: "));
    broken = doc;
    broken["heads"]["drops"]["hash"] = "abc";
    CHECK(error_of(broken).starts_with("/heads/drops/hash: "));
    broken = doc;
    broken["heads"]["drops"]["sequence"] = -1;
    CHECK(error_of(broken).starts_with("/heads/drops/sequence: "));
    broken = doc;
    broken["signature"] = std::string(127, 'a');
    CHECK(error_of(broken).starts_with("/signature: "));
    broken = doc;
    broken["controller"] = "two words";
    CHECK(error_of(broken).starts_with("/controller: "));
    CHECK(error_of(doc) == "accepted");

    CHECK_FALSE(SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"));
}
