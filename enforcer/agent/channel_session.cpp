#include "enforcer/agent/channel_session.hpp"

#include "policies/ruleset_diff.hpp"

#include <nlohmann/json.hpp>

namespace bulkhead::enforcer::agent {
namespace {

using nlohmann::json;

ChannelAction resync(std::string reason) {
    ChannelAction a;
    a.kind = ChannelAction::Kind::Resync;
    a.reason = std::move(reason);
    return a;
}

bool is_uint(const json& m, const char* key) { return m.contains(key) && m[key].is_number_unsigned(); }
bool is_string(const json& m, const char* key) { return m.contains(key) && m[key].is_string(); }

}  // namespace

ChannelAction ChannelSession::handle_line(std::string_view line) {
    auto message = json::parse(line, nullptr, false);
    if (message.is_discarded() || !message.is_object() || !is_string(message, "type")) {
        return resync("malformed channel line: " + std::string(line.substr(0, 120)));
    }
    const auto type = message["type"].get<std::string>();
    if (!greeted_) {
        if (type != "hello") {
            return resync("first channel message is \"" + type + "\", not hello");
        }
        greeted_ = true;
        ChannelAction a;
        a.kind = ChannelAction::Kind::Hello;
        a.heartbeat_interval_ms = 5000;
        if (message.contains("heartbeat_interval_ms") && message["heartbeat_interval_ms"].is_number_integer() &&
            message["heartbeat_interval_ms"].get<std::int64_t>() > 0) {
            a.heartbeat_interval_ms = message["heartbeat_interval_ms"].get<std::int64_t>();
        }
        a.controller_time_ms = message.value("controller_time_ms", std::int64_t{0});
        return a;
    }
    if (type == "heartbeat") {
        ChannelAction a;
        a.controller_time_ms = message.value("controller_time_ms", std::int64_t{0});
        return a;
    }
    if (type == "ruleset") {
        if (!is_uint(message, "generation") || !is_string(message, "hash") || !message.contains("ruleset")) {
            return resync("ruleset message without generation, hash or ruleset");
        }
        ChannelAction a;
        a.generation = message["generation"].get<std::uint64_t>();
        a.hash = message["hash"].get<std::string>();
        auto parsed = ruleset::ruleset_from_json(message["ruleset"]);
        if (!parsed) {
            a.kind = ChannelAction::Kind::Reject;
            a.reason = "ruleset generation " + std::to_string(a.generation) + ": " + parsed.error();
            return a;
        }
        if (parsed->enforcer != enforcer_id_) {
            a.kind = ChannelAction::Kind::Reject;
            a.reason = "ruleset generation " + std::to_string(a.generation) + " is for enforcer \"" +
                       parsed->enforcer + "\", this is \"" + enforcer_id_ + "\"";
            return a;
        }
        const auto hash = hash_of(*parsed);
        if (hash != a.hash) {
            a.kind = ChannelAction::Kind::Reject;
            a.reason = "ruleset generation " + std::to_string(a.generation) + " hashes to " + hash +
                       ", the message says " + a.hash;
            return a;
        }
        held_ = HeldRuleset{a.generation, hash, std::make_shared<const ruleset::Ruleset>(std::move(*parsed))};
        a.kind = ChannelAction::Kind::Apply;
        a.next = held_;
        return a;
    }
    if (type == "diff") {
        if (!is_uint(message, "base_generation") || !is_string(message, "base_hash") ||
            !is_uint(message, "generation") || !is_string(message, "hash") || !message.contains("diff")) {
            return resync("diff message without base_generation, base_hash, generation, hash or diff");
        }
        const auto base_hash = message["base_hash"].get<std::string>();
        const auto generation = message["generation"].get<std::uint64_t>();
        const auto hash = message["hash"].get<std::string>();
        if (!held_.ruleset || base_hash != held_.hash) {
            return resync("diff to generation " + std::to_string(generation) + " is based on " +
                          std::to_string(message["base_generation"].get<std::uint64_t>()) + "/" + base_hash +
                          ", this enforcer holds " + std::to_string(held_.generation) + "/" +
                          (held_.hash.empty() ? "nothing" : held_.hash));
        }
        auto applied = ruleset::apply_wire_diff(*held_.ruleset, message["diff"]);
        if (!applied) {
            return resync("diff to generation " + std::to_string(generation) + " does not apply: " + applied.error());
        }
        const auto result_hash = hash_of(*applied);
        if (result_hash != hash) {
            return resync("diff to generation " + std::to_string(generation) + " gives hash " + result_hash +
                          ", expected " + hash);
        }
        held_ = HeldRuleset{generation, result_hash, std::make_shared<const ruleset::Ruleset>(std::move(*applied))};
        ChannelAction a;
        a.kind = ChannelAction::Kind::Apply;
        a.from_diff = true;
        a.next = held_;
        return a;
    }
    return ChannelAction{};  // a newer controller's message: ignored
}

std::string ChannelSession::hash_of(const ruleset::Ruleset& ruleset) const {
    return hash_format_ == 1 ? ruleset::ruleset_hash_format1(ruleset) : ruleset::ruleset_hash(ruleset);
}

}  // namespace bulkhead::enforcer::agent
