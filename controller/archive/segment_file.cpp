#include "controller/archive/segment_file.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace bulkhead::archive {

namespace {

std::string errno_text(std::string_view what, const std::filesystem::path& path) {
    return std::string(what) + " " + path.string() + ": " + std::strerror(errno);
}

class FileDescriptor {
public:
    explicit FileDescriptor(int fd) : fd_(fd) {}
    ~FileDescriptor() {
        if (fd_ >= 0) {
            ::close(fd_);
        }
    }
    FileDescriptor(const FileDescriptor&) = delete;
    FileDescriptor& operator=(const FileDescriptor&) = delete;
    int get() const { return fd_; }
    // close() reports write-back errors on some file systems: checked where it matters.
    bool close() {
        const int fd = fd_;
        fd_ = -1;
        return ::close(fd) == 0;
    }

private:
    int fd_;
};

class FileSource final : public SegmentSource {
public:
    FileSource(int fd, std::uint64_t size, std::filesystem::path path)
        : fd_(fd), size_(size), path_(std::move(path)) {}
    std::uint64_t size() const override { return size_; }
    std::expected<void, std::string> read_into(std::uint64_t offset, std::size_t length,
                                               std::string& out) const override {
        out.resize(length);
        std::size_t done = 0;
        while (done < length) {
            const ssize_t n = ::pread(fd_.get(), out.data() + done, length - done, static_cast<off_t>(offset + done));
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n < 0) {
                return std::unexpected(errno_text("read", path_));
            }
            if (n == 0) {
                return std::unexpected("read " + path_.string() + ": file shrank while open");
            }
            done += static_cast<std::size_t>(n);
        }
        return {};
    }

private:
    FileDescriptor fd_;
    std::uint64_t size_;
    std::filesystem::path path_;
};

class MemorySource final : public SegmentSource {
public:
    explicit MemorySource(std::string bytes) : bytes_(std::move(bytes)) {}
    std::uint64_t size() const override { return bytes_.size(); }
    std::expected<void, std::string> read_into(std::uint64_t offset, std::size_t length,
                                               std::string& out) const override {
        if (offset > bytes_.size() || length > bytes_.size() - offset) {
            return std::unexpected("read beyond the end of the segment");
        }
        out.assign(bytes_, static_cast<std::size_t>(offset), length);
        return {};
    }

private:
    std::string bytes_;
};

}  // namespace

std::expected<void, std::string> write_segment_file(const std::filesystem::path& path, std::string_view bytes) {
    std::filesystem::path temporary = path;
    temporary += ".tmp";
    FileDescriptor file(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (file.get() < 0) {
        return std::unexpected(errno_text("create", temporary));
    }
    std::size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = ::write(file.get(), bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            const auto error = errno_text("write", temporary);
            ::unlink(temporary.c_str());
            return std::unexpected(error);
        }
        done += static_cast<std::size_t>(n);
    }
    if (::fsync(file.get()) != 0 || !file.close()) {
        const auto error = errno_text("fsync", temporary);
        ::unlink(temporary.c_str());
        return std::unexpected(error);
    }
    // link() fails with EEXIST instead of replacing: a sealed segment is never rewritten.
    if (::link(temporary.c_str(), path.c_str()) != 0) {
        const auto error = errno == EEXIST ? "seal " + path.string() + ": a segment already exists there"
                                           : errno_text("link", path);
        ::unlink(temporary.c_str());
        return std::unexpected(error);
    }
    ::unlink(temporary.c_str());
    const auto directory = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
    FileDescriptor dir(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir.get() < 0 || ::fsync(dir.get()) != 0) {
        return std::unexpected(errno_text("fsync directory", directory));
    }
    return {};
}

std::expected<std::unique_ptr<SegmentSource>, std::string> open_segment_file(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return std::unexpected(errno_text("open", path));
    }
    struct stat info {};
    if (::fstat(fd, &info) != 0) {
        const auto error = errno_text("stat", path);
        ::close(fd);
        return std::unexpected(error);
    }
    return std::make_unique<FileSource>(fd, static_cast<std::uint64_t>(info.st_size), path);
}

std::unique_ptr<SegmentSource> memory_segment_source(std::string bytes) {
    return std::make_unique<MemorySource>(std::move(bytes));
}

}  // namespace bulkhead::archive
