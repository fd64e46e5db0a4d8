// A forked child process for crash tests: it runs a function and reports to the parent
// through a pipe; the parent reads fixed-size messages and kills it (SIGKILL) when it likes.
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <functional>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace recur::testing {

class ChildProcess {
public:
    /// Forks; the child runs body(send) and leaves with _exit (0 when body returns, 3 when it
    /// throws): no destructor, atexit handler or test-framework code runs in the child.
    /// send(message) writes one message to the parent.
    using Send = std::function<void(const void* data, std::size_t size)>;
    explicit ChildProcess(const std::function<void(const Send&)>& body) {
        int fds[2];
        if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
        pid_ = ::fork();
        if (pid_ < 0) throw std::runtime_error("fork failed");
        if (pid_ == 0) {
            ::close(fds[0]);
            const int out = fds[1];
            const Send send = [out](const void* data, std::size_t size) {
                const auto* p = static_cast<const char*>(data);
                while (size > 0) {
                    const ssize_t r = ::write(out, p, size);
                    if (r < 0 && errno == EINTR) continue;
                    if (r <= 0) ::_exit(4);
                    p += r;
                    size -= static_cast<std::size_t>(r);
                }
            };
            try {
                body(send);
            } catch (...) {
                ::_exit(3);
            }
            ::_exit(0);
        }
        ::close(fds[1]);
        fd_ = fds[0];
    }
    ~ChildProcess() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            wait();
        }
        ::close(fd_);
    }
    ChildProcess(const ChildProcess&) = delete;
    ChildProcess& operator=(const ChildProcess&) = delete;

    /// Reads one message of type M (trivially copyable). False when the child has closed the
    /// pipe (it ended) before a whole message; throws after `timeout_ms` without one.
    template <class M>
    bool receive(M& message, int timeout_ms = 60000) {
        static_assert(std::is_trivially_copyable_v<M>);
        auto* p = reinterpret_cast<char*>(&message);
        std::size_t got = 0;
        while (got < sizeof(M)) {
            pollfd pfd{fd_, POLLIN, 0};
            const int ready = ::poll(&pfd, 1, timeout_ms);
            if (ready < 0 && errno == EINTR) continue;
            if (ready <= 0)
                throw std::runtime_error("the child process sent nothing for " + std::to_string(timeout_ms) + " ms");
            const ssize_t r = ::read(fd_, p + got, sizeof(M) - got);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) return false;
            got += static_cast<std::size_t>(r);
        }
        return true;
    }

    void kill() { ::kill(pid_, SIGKILL); }

    /// Waits for the child to end; returns its waitpid status.
    int wait() {
        int status = 0;
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        pid_ = -1;
        return status;
    }

private:
    pid_t pid_ = -1;
    int fd_ = -1;
};

/// True when a waitpid status says the process was killed by SIGKILL.
inline bool killed_by_sigkill(int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL; }

}  // namespace recur::testing
