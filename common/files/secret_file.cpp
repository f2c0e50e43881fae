#include "common/files/secret_file.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace bulkhead::files {

std::expected<void, std::string> check_secret_file(const std::string& path, const std::string& what) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        return std::unexpected(what + " " + path + ": " + std::strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        return std::unexpected(what + " " + path + ": not a regular file");
    }
    const unsigned mode = st.st_mode & 07777U;
    char octal[8];
    std::snprintf(octal, sizeof octal, "%04o", mode);
    if ((mode & (S_IWGRP | S_IWOTH)) != 0) {
        return std::unexpected(what + " " + path + ": mode " + octal +
                               " lets other users change it; chmod 0600 (or 0640 for a service's group)");
    }
    if ((mode & (S_IROTH | S_IXOTH)) != 0) {
        return std::unexpected(what + " " + path + ": mode " + octal +
                               " lets every user read it; chmod 0600 (or 0640 for a service's group)");
    }
    return {};
}

}  // namespace bulkhead::files
