#include "controller/services/access_service.hpp"

#include "controller/core/access_policy.hpp"

namespace bulkhead::controller {

std::expected<void, std::string> AccessService::add_bootstrap_token(const std::string& name, Role role,
                                                                    const std::string& token) {
    if (token.size() < 16) {
        return std::unexpected("token of \"" + name + "\" is shorter than 16 characters");
    }
    ApiToken api_token;
    api_token.name = name;
    api_token.role = role;
    api_token.token_sha256 = sha256_hex(token);
    api_token.created_at = clock_();
    if (auto stored = credentials_.put_api_token(api_token); !stored) {
        return std::unexpected(stored.error().message);
    }
    return {};
}

std::expected<Caller, ServiceError> AccessService::authenticate(std::string_view bearer_token) {
    const auto unauthenticated = [] {
        return std::unexpected(
            service_error(ErrorKind::Unauthenticated, "unauthenticated", "a valid bearer token is required"));
    };
    if (bearer_token.empty() || bearer_token.size() > 512) {
        return unauthenticated();
    }
    auto found = credentials_.find_api_token(sha256_hex(bearer_token));
    if (!found) {
        return std::unexpected(from_store(found.error(), "authentication"));
    }
    if (!*found) {
        return unauthenticated();
    }
    return Caller{(*found)->name, (*found)->role, (*found)->enforcer};
}

}  // namespace bulkhead::controller
