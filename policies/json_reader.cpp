#include "policies/json_reader.hpp"

#include <string>
#include <unordered_set>

namespace bulkhead::policy {
namespace {

struct Frame {
    bool is_object = false;
    bool has_key = false;  // an object before its first key names no member yet
    std::unordered_set<std::string> keys;
    std::string key;
    std::size_t index = 0;
};

struct TooDeep {};

std::string current_pointer(const std::vector<Frame>& frames) {
    std::string pointer;
    for (const auto& f : frames) {
        if (f.is_object && !f.has_key) {
            break;
        }
        pointer = f.is_object ? pointer_append(pointer, f.key) : pointer_append(pointer, f.index);
    }
    return pointer;
}

std::string line_and_column(std::string_view text, std::size_t byte) {
    std::size_t line = 1;
    std::size_t column = 1;
    for (std::size_t i = 0; i < byte && i < text.size(); ++i) {
        if (text[i] == '\n') {
            ++line;
            column = 1;
        } else {
            ++column;
        }
    }
    return "line " + std::to_string(line) + ", column " + std::to_string(column);
}

// Where `token` stands as a number: after ':', '[' or ',' (whitespace aside) and not
// followed by more number characters, so the same digits inside a string do not match.
std::size_t find_number_token(std::string_view text, std::string_view token) {
    if (token.empty()) {
        return std::string_view::npos;
    }
    for (auto at = text.find(token); at != std::string_view::npos; at = text.find(token, at + 1)) {
        auto before = at;
        while (before > 0 && (text[before - 1] == ' ' || text[before - 1] == '\t' ||
                              text[before - 1] == '\n' || text[before - 1] == '\r')) {
            --before;
        }
        const bool value_position =
            before > 0 && (text[before - 1] == ':' || text[before - 1] == '[' || text[before - 1] == ',');
        const auto end = at + token.size();
        const bool whole = end >= text.size() ||
                           std::string_view("0123456789.eE+-\"").find(text[end]) == std::string_view::npos;
        if (value_position && whole) {
            return at;
        }
    }
    return std::string_view::npos;
}

}  // namespace

std::expected<nlohmann::json, std::vector<Diagnostic>> read_json(std::string_view text,
                                                                 std::string_view document,
                                                                 JsonReadLimits limits) {
    DiagnosticSink sink{std::string(document)};
    if (text.size() > limits.max_bytes) {
        sink.add("", DiagnosticCode::TooLarge,
                 "document is " + std::to_string(text.size()) + " bytes, the limit is " +
                     std::to_string(limits.max_bytes));
        return std::unexpected(sink.take());
    }

    std::vector<Frame> frames;
    auto after_element = [&frames] {
        if (!frames.empty() && !frames.back().is_object) {
            ++frames.back().index;
        }
    };
    auto callback = [&](int /*depth*/, nlohmann::json::parse_event_t event,
                        nlohmann::json& parsed) -> bool {
        using Event = nlohmann::json::parse_event_t;
        switch (event) {
        case Event::object_start:
        case Event::array_start: {
            if (static_cast<int>(frames.size()) >= limits.max_depth) {
                throw TooDeep{};
            }
            Frame frame;
            frame.is_object = event == Event::object_start;
            frames.push_back(std::move(frame));
            break;
        }
        case Event::key: {
            auto& top = frames.back();
            top.key = parsed.get<std::string>();
            top.has_key = true;
            if (!top.keys.insert(top.key).second) {
                sink.add(current_pointer(frames), DiagnosticCode::DuplicateKey,
                         "key \"" + top.key + "\" appears more than once in this object");
            }
            break;
        }
        case Event::object_end:
        case Event::array_end:
            frames.pop_back();
            after_element();
            break;
        case Event::value:
            after_element();
            break;
        }
        return true;
    };

    nlohmann::json parsed;
    try {
        parsed = nlohmann::json::parse(text.begin(), text.end(), callback);
    } catch (const TooDeep&) {
        sink.add(current_pointer(frames), DiagnosticCode::TooDeep,
                 "nesting deeper than " + std::to_string(limits.max_depth) + " levels");
        return std::unexpected(sink.take());
    } catch (const nlohmann::json::parse_error& e) {
        std::string reason = e.what();
        // nlohmann prefixes "[json.exception.parse_error.101] parse error at line 1, column 2: "
        if (auto colon = reason.find(": "); colon != std::string::npos) {
            reason = reason.substr(colon + 2);
        }
        sink.add(current_pointer(frames), DiagnosticCode::Syntax,
                 "invalid JSON at " + line_and_column(text, e.byte == 0 ? 0 : e.byte - 1) + ": " +
                     reason);
        return std::unexpected(sink.take());
    } catch (const nlohmann::json::exception& e) {
        // A number too large for a double (1e400) surfaces as out_of_range, without a
        // byte offset: locate the quoted token in the text instead.
        std::string reason = e.what();
        if (auto bracket = reason.find("] "); bracket != std::string::npos) {
            reason = reason.substr(bracket + 2);
        }
        std::string where;
        const auto open = reason.find('\'');
        const auto close = reason.rfind('\'');
        if (open != std::string::npos && close > open) {
            const auto token = reason.substr(open + 1, close - open - 1);
            if (auto at = find_number_token(text, token); at != std::string_view::npos) {
                where = " at " + line_and_column(text, at);
            }
        }
        sink.add(current_pointer(frames), DiagnosticCode::Syntax,
                 "invalid JSON" + where + ": " + reason);
        return std::unexpected(sink.take());
    }
    if (!sink.empty()) {
        return std::unexpected(sink.take());
    }
    // nlohmann's lexer takes a NUL byte for the end of input, so text after a complete
    // document and a NUL would vanish unnoticed (rules appended after it, say).
    if (auto nul = text.find('\0'); nul != std::string_view::npos) {
        sink.add("", DiagnosticCode::Syntax,
                 "invalid JSON at " + line_and_column(text, nul) +
                     ": NUL byte after the document; nothing may follow it");
        return std::unexpected(sink.take());
    }
    return parsed;
}

}  // namespace bulkhead::policy
