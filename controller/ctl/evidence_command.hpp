// `bulkheadctl evidence verify`: checks the tamper evidence of a controller's store — every
// stream's hash chain, the signed checkpoints kept in the database and those given from
// outside (the checkpoint file, lines a SIEM kept) — and names the first broken record.
// Exit 0 only when everything verifies, 1 when something does not, 2 on usage or I/O errors.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace bulkhead::ctl {

struct EvidenceVerifyCommand {
    std::string data_dir = "/var/lib/bulkhead-controller";
    std::string database;            // default: <data_dir>/bulkhead.db
    std::string public_key;          // default: <data_dir>/evidence/signing-key.pem.pub
    std::vector<std::string> checkpoint_files;  // default: <data_dir>/evidence/checkpoints.jsonl if present
    std::string archive_dir;         // default: <data_dir>/archive
    bool json = false;
};

int evidence_verify(const EvidenceVerifyCommand& options, std::ostream& out, std::ostream& err);

// `bulkheadctl evidence query`: drop events of a time range from the database and the archive
// alike, one JSON object per line, oldest first. Exit 0, or 2 on usage or I/O errors.
struct EvidenceQueryCommand {
    std::string data_dir = "/var/lib/bulkhead-controller";
    std::string database;     // default: <data_dir>/bulkhead.db
    std::string archive_dir;  // default: <data_dir>/archive
    std::string from, to;     // RFC 3339 ("2026-12-07T10:00:00Z") or nanoseconds since the epoch
    std::string workload, address;
    std::size_t limit = 100'000;
};

int evidence_query(const EvidenceQueryCommand& options, std::ostream& out, std::ostream& err);

}  // namespace bulkhead::ctl
