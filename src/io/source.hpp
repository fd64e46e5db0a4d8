// Where .npy bytes come from: a file or a member of a zip archive (private to src/io/).
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "recur/error.hpp"
#include "src/io/common.hpp"

namespace recur::io::detail {

namespace fs = std::filesystem;

// Where a .npy stream comes from: a file or a zip member. read() returns fewer bytes than
// asked only at the end; errors throw io_error (already prefixed with the context).
class Source {
public:
    virtual ~Source() = default;
    std::size_t read(void* buf, std::size_t n) {
        std::size_t got = 0;
        auto* p = static_cast<unsigned char*>(buf);
        while (got < n) {
            const std::size_t r = read_some(p + got, n - got);
            if (r == 0) break;
            got += r;
        }
        return got;
    }
    // The stream's declared total size (file size, zip member size), if known.
    virtual std::optional<std::uint64_t> size() const = 0;

private:
    // Up to n bytes (0 only at the end); throws on errors.
    virtual std::size_t read_some(unsigned char* p, std::size_t n) = 0;
};

class FileSource final : public Source {
public:
    FileSource(const std::string& path, std::string ctx) : ctx_(std::move(ctx)) {
        fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);  // a FIFO must not block
        if (fd_ < 0) throw io_error(ctx_ + ": cannot open: " + errno_text(errno));
        struct stat st {};
        if (::fstat(fd_, &st) != 0) {
            int e = errno;
            ::close(fd_);
            throw io_error(ctx_ + ": cannot stat: " + errno_text(e));
        }
        if (!S_ISREG(st.st_mode)) {
            ::close(fd_);
            throw io_error(ctx_ + ": not a regular file");
        }
        size_ = static_cast<std::uint64_t>(st.st_size);
    }
    ~FileSource() override { ::close(fd_); }
    FileSource(const FileSource&) = delete;
    FileSource& operator=(const FileSource&) = delete;

    std::optional<std::uint64_t> size() const override { return size_; }

private:
    std::size_t read_some(unsigned char* p, std::size_t n) override {
        for (;;) {
            const ssize_t r = ::read(fd_, p, n);
            if (r >= 0) return static_cast<std::size_t>(r);
            if (errno != EINTR) throw io_error(ctx_ + ": read error: " + errno_text(errno));
        }
    }

    std::string ctx_;
    int fd_ = -1;
    std::uint64_t size_ = 0;
};

inline std::string zip_code_text(int code) {
    zip_error_t err;
    zip_error_init_with_code(&err, code);
    std::string s = zip_error_strerror(&err);
    zip_error_fini(&err);
    return s;
}

class ZipArchive {
public:
    ZipArchive(const std::string& path, const std::string& ctx) {
        {
            // libzip opens anything openable; say plainly when the path is not a file.
            std::error_code ec;
            auto st = fs::status(path, ec);
            if (!ec && fs::exists(st) && !fs::is_regular_file(st)) throw io_error(ctx + ": not a regular file");
        }
        int code = 0;
        za_ = zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &code);
        if (!za_) {
            if (code == ZIP_ER_NOZIP || code == ZIP_ER_INCONS)
                throw io_error(ctx + ": not a valid .npz (zip) archive: " + zip_code_text(code));
            throw io_error(ctx + ": cannot open: " + zip_code_text(code));
        }
    }
    ~ZipArchive() { zip_discard(za_); }
    ZipArchive(const ZipArchive&) = delete;
    ZipArchive& operator=(const ZipArchive&) = delete;
    zip_t* get() const { return za_; }

private:
    zip_t* za_ = nullptr;
};

class ZipMemberSource final : public Source {
public:
    ZipMemberSource(zip_t* za, zip_uint64_t index, std::string ctx) : ctx_(std::move(ctx)) {
        zip_stat_t st;
        zip_stat_init(&st);
        if (zip_stat_index(za, index, 0, &st) == 0 && (st.valid & ZIP_STAT_SIZE)) size_ = st.size;
        zf_ = zip_fopen_index(za, index, 0);
        if (!zf_) throw io_error(ctx_ + ": cannot open the archive member: " + zip_strerror(za));
    }
    ~ZipMemberSource() override { zip_fclose(zf_); }
    ZipMemberSource(const ZipMemberSource&) = delete;
    ZipMemberSource& operator=(const ZipMemberSource&) = delete;

    std::optional<std::uint64_t> size() const override { return size_; }

private:
    std::size_t read_some(unsigned char* p, std::size_t n) override {
        const zip_int64_t r = zip_fread(zf_, p, n);
        if (r < 0) throw io_error(ctx_ + ": corrupted archive member: " + zip_file_strerror(zf_));
        return static_cast<std::size_t>(r);
    }

    std::string ctx_;
    zip_file_t* zf_ = nullptr;
    std::optional<std::uint64_t> size_;
};

}  // namespace recur::io::detail
