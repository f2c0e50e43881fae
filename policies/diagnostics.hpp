// Located diagnostics shared by every stage of the policy pipeline
// (read -> validate -> resolve -> compile). The CLI and, later, the REST API report the
// very same objects, so an admin sees one message whichever way the policy arrived.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace bulkhead::policy {

// Stable codes: tooling and tests match on these, humans read the message.
enum class DiagnosticCode {
    Syntax,            // not JSON at all
    TooLarge,          // document over the size limit
    TooDeep,           // nesting over the depth limit
    DuplicateKey,      // the same key twice in one object
    MissingField,      // a required member is absent
    UnknownField,      // a member the schema does not define (typos must not pass silently)
    WrongType,         // e.g. a string where a number belongs
    InvalidValue,      // a value of the right type that the schema still rejects
    DuplicateName,     // two services/segments/rules/workloads with one name or id
    UnknownReference,  // reference to a service/segment/workload/enforcer that does not exist
    InvalidAddress,    // address or CIDR that does not parse
    InvalidPort,       // port outside 0..65535
    ReversedRange,     // "200-100"
    EmptySelector,     // a selector that would select nothing, or everything by accident
    Conflict,          // two objects claim the same unique thing (interface, MAC, address)
};

std::string_view to_string(DiagnosticCode code);

struct Diagnostic {
    std::string pointer;  // RFC 6901 JSON pointer into the offending document ("" = root)
    DiagnosticCode code;
    std::string message;
    std::string document;  // which input: "policy", "inventory", or a file name

    friend bool operator==(const Diagnostic&, const Diagnostic&) = default;
};

// Collects diagnostics for one document; stages append, nobody throws.
class DiagnosticSink {
public:
    explicit DiagnosticSink(std::string document = {}) : document_(std::move(document)) {}

    void add(std::string pointer, DiagnosticCode code, std::string message) {
        items_.push_back({std::move(pointer), code, std::move(message), document_});
    }
    void append(const std::vector<Diagnostic>& more) {
        items_.insert(items_.end(), more.begin(), more.end());
    }
    bool empty() const { return items_.empty(); }
    const std::vector<Diagnostic>& items() const { return items_; }
    std::vector<Diagnostic> take() { return std::move(items_); }

private:
    std::string document_;
    std::vector<Diagnostic> items_;
};

// Appends one reference token to a JSON pointer, escaping '~' and '/' per RFC 6901.
std::string pointer_append(std::string_view base, std::string_view token);
std::string pointer_append(std::string_view base, std::size_t index);

// "policy.json: /rules/3/to/0: unknown-reference: unknown segment \"x\""
std::string format_diagnostic(const Diagnostic& d);
nlohmann::json diagnostics_to_json(const std::vector<Diagnostic>& diagnostics);

}  // namespace bulkhead::policy
