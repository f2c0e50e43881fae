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
    bool json = false;
};

int evidence_verify(const EvidenceVerifyCommand& options, std::ostream& out, std::ostream& err);

}  // namespace bulkhead::ctl
