// What the fuzz targets share: the input as a file, the rule for errors, and checks.
//
// Every loader takes a path, so each input is written to an in-memory file (memfd) and
// opened through /proc/self/fd/N: the public functions are fuzzed exactly as users call them,
// with no disk I/O. The rule: hostile bytes may only make a loader throw recur::io_error
// naming the file. Any other exception escapes LLVMFuzzerTestOneInput and libFuzzer reports
// it (uncaught exception: abort), as it does for ASan/UBSan reports, allocations beyond
// -malloc_limit_mb and a failed RECUR_FUZZ_CHECK.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "recur/error.hpp"

#define RECUR_FUZZ_CHECK(condition)                                                            \
    do {                                                                                       \
        if (!(condition)) {                                                                    \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #condition); \
            std::abort();                                                                      \
        }                                                                                      \
    } while (0)

namespace recur::fuzz {

/// One in-memory file, rewritten with each input.
class InputFile {
public:
    explicit InputFile(const char* name) {
        fd_ = ::memfd_create(name, MFD_CLOEXEC);
        RECUR_FUZZ_CHECK(fd_ >= 0);
        path_ = "/proc/self/fd/" + std::to_string(fd_);
    }
    ~InputFile() { ::close(fd_); }
    InputFile(const InputFile&) = delete;
    InputFile& operator=(const InputFile&) = delete;

    /// Replaces the contents; returns the path to open.
    const std::string& write(const void* data, std::size_t size) {
        RECUR_FUZZ_CHECK(::ftruncate(fd_, 0) == 0);
        const auto* p = static_cast<const char*>(data);
        std::size_t done = 0;
        while (done < size) {
            const ssize_t r = ::pwrite(fd_, p + done, size - done, static_cast<off_t>(done));
            RECUR_FUZZ_CHECK(r > 0);
            done += static_cast<std::size_t>(r);
        }
        return path_;
    }
    const std::string& path() const { return path_; }

private:
    int fd_ = -1;
    std::string path_;
};

/// Runs load(); true if it succeeded, false if it refused the input with an io_error that
/// names `path` (anything else is a finding).
template <class F>
bool loads(const std::string& path, F&& load) {
    try {
        load();
        return true;
    } catch (const io_error& e) {
        RECUR_FUZZ_CHECK(std::strstr(e.what(), path.c_str()) != nullptr);
        return false;
    }
}

/// Every element read, so that ASan sees any that is out of bounds; NaN-safe bitwise sum.
template <class A>
std::uint64_t touch(const A& a) {
    std::uint64_t h = 0;
    for (std::size_t k = 0; k < a.size(); ++k) {
        std::uint64_t bits = 0;
        std::memcpy(&bits, a.data() + k, sizeof(a.data()[k]));
        h += bits;
    }
    return h;
}

}  // namespace recur::fuzz
