#include "common/files/durable_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace bulkhead::files {

std::expected<void, std::string> fsync_directory(const std::filesystem::path& directory) {
    const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return std::unexpected("open " + directory.string() + ": " + std::strerror(errno));
    }
    const int rc = ::fsync(fd);
    const int saved = errno;
    ::close(fd);
    if (rc != 0) {
        return std::unexpected("fsync " + directory.string() + ": " + std::strerror(saved));
    }
    return {};
}

std::expected<void, std::string> write_durably(const std::filesystem::path& path,
                                               std::string_view contents, mode_t mode) {
    const auto tmp = path.string() + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        return std::unexpected("open " + tmp + ": " + std::strerror(errno));
    }
    // The mode of an existing temporary file is not changed by open(); set it explicitly.
    if (::fchmod(fd, mode) != 0) {
        const auto error = "chmod " + tmp + ": " + std::strerror(errno);
        ::close(fd);
        return std::unexpected(error);
    }
    std::size_t done = 0;
    while (done < contents.size()) {
        const auto n = ::write(fd, contents.data() + done, contents.size() - done);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            const auto error = "write " + tmp + ": " + std::strerror(errno);
            ::close(fd);
            return std::unexpected(error);
        }
        done += static_cast<std::size_t>(n);
    }
    if (::fsync(fd) != 0) {
        const auto error = "fsync " + tmp + ": " + std::strerror(errno);
        ::close(fd);
        return std::unexpected(error);
    }
    ::close(fd);
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        return std::unexpected("rename " + tmp + ": " + std::strerror(errno));
    }
    const auto dir = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
    return fsync_directory(dir);
}

std::expected<std::optional<std::string>, std::string> read_small_file(const std::filesystem::path& path) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) {
        return std::optional<std::string>{};
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return std::unexpected("cannot read " + path.string());
    }
    std::ostringstream s;
    s << in.rdbuf();
    return std::optional<std::string>{s.str()};
}

}  // namespace bulkhead::files
