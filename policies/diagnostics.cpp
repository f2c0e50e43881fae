#include "policies/diagnostics.hpp"

#include <nlohmann/json.hpp>

namespace bulkhead::policy {

std::string_view to_string(DiagnosticCode code) {
    switch (code) {
    case DiagnosticCode::Syntax: return "syntax";
    case DiagnosticCode::TooLarge: return "too-large";
    case DiagnosticCode::TooDeep: return "too-deep";
    case DiagnosticCode::DuplicateKey: return "duplicate-key";
    case DiagnosticCode::MissingField: return "missing-field";
    case DiagnosticCode::UnknownField: return "unknown-field";
    case DiagnosticCode::WrongType: return "wrong-type";
    case DiagnosticCode::InvalidValue: return "invalid-value";
    case DiagnosticCode::DuplicateName: return "duplicate-name";
    case DiagnosticCode::UnknownReference: return "unknown-reference";
    case DiagnosticCode::InvalidAddress: return "invalid-address";
    case DiagnosticCode::InvalidPort: return "invalid-port";
    case DiagnosticCode::ReversedRange: return "reversed-range";
    case DiagnosticCode::EmptySelector: return "empty-selector";
    case DiagnosticCode::Conflict: return "conflict";
    }
    return "unknown";
}

std::string pointer_append(std::string_view base, std::string_view token) {
    std::string out(base);
    out.push_back('/');
    for (char c : token) {
        if (c == '~') {
            out += "~0";
        } else if (c == '/') {
            out += "~1";
        } else {
            out.push_back(c);
        }
    }
    return out;
}

std::string pointer_append(std::string_view base, std::size_t index) {
    return pointer_append(base, std::to_string(index));
}

std::string format_diagnostic(const Diagnostic& d) {
    std::string out;
    if (!d.document.empty()) {
        out += d.document + ": ";
    }
    out += d.pointer.empty() ? std::string("(document root)") : d.pointer;
    out += ": ";
    out += to_string(d.code);
    out += ": ";
    out += d.message;
    return out;
}

nlohmann::json diagnostics_to_json(const std::vector<Diagnostic>& diagnostics) {
    auto out = nlohmann::json::array();
    for (const auto& d : diagnostics) {
        out.push_back({{"document", d.document},
                       {"pointer", d.pointer},
                       {"code", std::string(to_string(d.code))},
                       {"message", d.message}});
    }
    return out;
}

}  // namespace bulkhead::policy
