// `bulkheadctl enforcer enroll`: enrols this host's bulkhead-enforcer with a controller in one
// command. It writes what the enforcer's unit reads — /etc/bulkhead/enforcer.json (the
// controller URL, this enforcer's id, the pinned CA, the token file), the CA certificate and
// the one-time token (0600) — then (re)starts bulkhead-enforcer.service and waits until the
// enforcer has stored its credential, i.e. the controller accepted the token over TLS
// verified against that CA. The enforcer itself does the enrollment (enforcer/agent).
#pragma once

#include <ostream>
#include <string>

namespace bulkhead::ctl {

struct EnrollOptions {
    std::string controller_url;   // https://HOST:PORT
    std::string ca_file;          // the controller's CA (PEM), copied to <config-dir>/controller-ca.pem
    std::string token;            // the token itself, or "" when token_file is given
    std::string token_file;       // a file holding it ("-": standard input)
    std::string enforcer_id;      // default: this host's name
    std::string config_dir = "/etc/bulkhead";
    std::string state_dir = "/var/lib/bulkhead-enforcer";
    bool start = true;            // systemctl enable + restart bulkhead-enforcer, wait for the credential
    int wait_seconds = 30;
};

int enroll_enforcer(const EnrollOptions& options, std::ostream& out, std::ostream& err);

}  // namespace bulkhead::ctl
