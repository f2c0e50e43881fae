// AccessService: owns API credentials: the bootstrap file's tokens (stored hashed) and the
// authentication of every request's bearer token. A store failure is reported as such, not
// as "unauthenticated": an operator must see that the controller cannot check credentials.
#pragma once

#include "controller/services/service_support.hpp"

namespace bulkhead::controller {

class AccessService {
  public:
    AccessService(CredentialRepository& credentials, Clock clock)
        : credentials_(credentials), clock_(std::move(clock)) {}

    std::expected<void, std::string> add_bootstrap_token(const std::string& name, Role role, const std::string& token);
    // The caller, or Unauthenticated, or Unavailable when the store cannot answer.
    std::expected<Caller, ServiceError> authenticate(std::string_view bearer_token);

  private:
    CredentialRepository& credentials_;
    Clock clock_;
};

}  // namespace bulkhead::controller
