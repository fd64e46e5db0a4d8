// Atomic files: a temporary file next to the target, fsync, rename; temporaries of writers
// that died are removed by the next save of the same path.
#include "src/io/atomic_file.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <filesystem>

#include "recur/io.hpp"
#include "src/io/common.hpp"

namespace recur::io {

namespace detail {

namespace {

namespace fs = std::filesystem;

// A save of <dir>/<name> writes <dir>/.<name>.tmp-<pid>-<counter>-<random>, fsyncs it and
// renames it over the target. The writer holds an exclusive flock() on its temporary file
// from creation to rename; the kernel drops the lock when the process dies (SIGKILL and
// power loss included), so a temporary file of <name> whose lock can be taken belongs to a
// dead writer, and every save of <name> first removes those: temporaries of killed writers
// do not pile up, and a live writer's file is never touched. (On a file system without
// flock, nothing is removed.)

std::string temporary_prefix(const std::string& name) { return "." + name + ".tmp-"; }

// Removes the temporary files of `name` in `dir` whose writers are gone. Best effort: any
// error just leaves a file in place.
void remove_stale_temporaries(const fs::path& dir, const std::string& name) {
    const std::string prefix = temporary_prefix(name);
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string entry = it->path().filename().string();
        if (entry.compare(0, prefix.size(), prefix) != 0) continue;
        const int fd = ::open(it->path().c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0) continue;
        struct stat held {
        }, named{};
        // Locked: no live writer. Same inode under the name: it was not replaced meanwhile.
        if (::flock(fd, LOCK_EX | LOCK_NB) == 0 && ::fstat(fd, &held) == 0 && S_ISREG(held.st_mode) &&
            ::lstat(it->path().c_str(), &named) == 0 && named.st_dev == held.st_dev && named.st_ino == held.st_ino)
            ::unlink(it->path().c_str());
        ::close(fd);
    }
}

// Creates this writer's temporary file for `name` in `dir`, locked; returns its descriptor.
int create_temporary(const fs::path& dir, const std::string& name, fs::path& tmp, const std::string& ctx) {
    static std::atomic<std::uint64_t> counter{0};
    const auto stamp = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    for (int attempt = 0;; ++attempt) {
        tmp = dir / (temporary_prefix(name) + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1)) +
                     "-" + std::to_string(stamp % 1000000007u));
        const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0)
            throw io_error(ctx + ": cannot create a temporary file in " + squote(dir.string()) + ": " +
                           errno_text(errno));
        // Between open and flock a cleaner may have taken the unheld lock and removed the
        // file: then the name no longer leads to our inode, and we start again.
        struct stat held {
        }, named{};
        if (::flock(fd, LOCK_EX) != 0 || (::fstat(fd, &held) == 0 && ::lstat(tmp.c_str(), &named) == 0 &&
                                          named.st_dev == held.st_dev && named.st_ino == held.st_ino))
            return fd;  // locked and ours (or flock unsupported: no cleaner removes it either)
        ::close(fd);
        if (attempt == 8) throw io_error(ctx + ": cannot keep a temporary file in " + squote(dir.string()));
    }
}

}  // namespace

void write_file_atomically(const std::string& path, const std::string& ctx, const void* data, std::size_t size) {
    const fs::path target(path);
    const std::string name = target.filename().string();
    if (name.empty() || name == "." || name == "..") throw io_error(ctx + ": not a file path");
    const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");

    remove_stale_temporaries(dir, name);
    fs::path tmp;
    const int fd = create_temporary(dir, name, tmp, ctx);
    auto fail = [&](const std::string& what, int e, bool close_fd) {
        ::unlink(tmp.c_str());
        if (close_fd) ::close(fd);
        return io_error(ctx + ": " + what + ": " + errno_text(e) + " (the previous file, if any, is unchanged)");
    };
    const auto* bytes = static_cast<const unsigned char*>(data);
    std::size_t done = 0;
    while (done < size) {
        const ssize_t r = ::write(fd, bytes + done, size - done);
        if (r < 0) {
            if (errno == EINTR) continue;
            throw fail("write failed", errno, true);
        }
        done += static_cast<std::size_t>(r);
    }
    if (::fsync(fd) != 0) throw fail("fsync failed", errno, true);
    // Rename while the lock is held, close after: the temporary name never exists unlocked
    // while its writer lives.
    if (::rename(tmp.c_str(), target.c_str()) != 0) throw fail("cannot replace the file", errno, true);
    ::close(fd);  // the data is on disk (fsync) and in place: nothing left to report
    // Make the rename durable; best effort.
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)::fsync(dfd);
        ::close(dfd);
    }
}

void write_file_atomically(const std::string& path, const std::string& ctx, const std::vector<unsigned char>& bytes) {
    write_file_atomically(path, ctx, bytes.data(), bytes.size());
}

}  // namespace detail

void write_atomically(const std::string& path, std::string_view contents, std::string_view who) {
    detail::write_file_atomically(path, std::string(who) + " " + path, contents.data(), contents.size());
}

}  // namespace recur::io
