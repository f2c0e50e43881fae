// Files that hold secrets (TLS keys, API and enrollment tokens, HMAC keys) are checked
// before they are read: a regular file, not writable by anyone but its owner and not
// readable by other users (0600, or 0640 for a service's group). A secret the whole machine
// can read is refused at start with the file, its mode and the fix, so that a copy made
// with the wrong umask is noticed at once rather than in an audit.
#pragma once

#include <expected>
#include <string>

namespace bulkhead::files {

// `what` names the file's role in the message ("TLS key", "enrollment token").
std::expected<void, std::string> check_secret_file(const std::string& path, const std::string& what);

}  // namespace bulkhead::files
