// MpiCommunicator: MPI set-up, the fixed-order ring allreduce, broadcast, barrier, abort.
#include "recur/distributed.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <thread>

#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "recur/error.hpp"

namespace recur::distributed {

namespace {

// MPI for the life of the program: initialised on first use unless the program did it, and
// then finalised at exit.
struct MpiRuntime {
    bool ours = false;
    MpiRuntime() {
        int initialised = 0;
        MPI_Initialized(&initialised);
        if (initialised) return;
        int provided = 0;
        MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
        ours = true;
        if (provided < MPI_THREAD_SERIALIZED)
            throw error("MpiCommunicator: MPI gives thread level " + std::to_string(provided) +
                        ", recur needs MPI_THREAD_SERIALIZED (" + std::to_string(MPI_THREAD_SERIALIZED) + ")");
    }
    ~MpiRuntime() {
        int finalised = 0;
        MPI_Finalized(&finalised);
        if (ours && !finalised) MPI_Finalize();
    }
};

void start_mpi() { static MpiRuntime runtime; }

// Polls for this long before napping between polls: an exchange with a rank that is ready
// (both chunks of a 1 MiB bucket: ~0.15 ms over shared memory) completes within it, while a
// wait for a rank still computing (its backward, or a slower rank) costs a core for this long
// only (it was 2 ms: with 5 buckets a step, up to 10 ms of a core taken from backward on a
// machine whose cores all train). Naps then grow with the time waited, wait / 16, from the
// first to the last value: a message that arrives meanwhile waits at most one nap (MPI moves
// data only inside a poll, Testall), and a long wait costs ~8 us of processor time per nap
// (~8% of a core). The thread's timer slack is 1 us while it naps (Linux's default, 50 us,
// made a 20 us nap last ~75 us).
constexpr auto poll_before_napping = std::chrono::microseconds(200);
constexpr auto first_nap = std::chrono::microseconds(10), last_nap = std::chrono::microseconds(100);

// Lowers the calling thread's timer slack to 1 us while it lives (Linux; elsewhere nothing).
class AccurateNaps {
public:
    AccurateNaps() {
#ifdef __linux__
        const int old = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
        if (old > 0 && prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0) == 0) old_ = static_cast<unsigned long>(old);
#endif
    }
    ~AccurateNaps() {
#ifdef __linux__
        if (old_) prctl(PR_SET_TIMERSLACK, old_, 0, 0, 0);
#endif
    }
    AccurateNaps(const AccurateNaps&) = delete;
    AccurateNaps& operator=(const AccurateNaps&) = delete;

private:
    unsigned long old_ = 0;
};

}  // namespace

MpiCommunicator::MpiCommunicator() : MpiCommunicator((start_mpi(), MPI_COMM_WORLD)) {}

MpiCommunicator::MpiCommunicator(MPI_Comm comm) {
    int initialised = 0, level = 0;
    MPI_Initialized(&initialised);
    if (!initialised) throw error("MpiCommunicator: MPI is not initialised (use MpiCommunicator() or MPI_Init_thread)");
    MPI_Query_thread(&level);
    if (level < MPI_THREAD_SERIALIZED)
        throw error("MpiCommunicator: MPI was initialised with thread level " + std::to_string(level) +
                    "; recur needs MPI_THREAD_SERIALIZED (" + std::to_string(MPI_THREAD_SERIALIZED) + ") or more");
    check(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
}

MpiCommunicator::~MpiCommunicator() {
    int finalised = 0;
    MPI_Finalized(&finalised);
    if (!finalised && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiCommunicator::check(int rc, const char* call) const {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(rc, text, &length);
    throw error(std::string("MpiCommunicator: ") + call + " failed on rank " + std::to_string(rank_) + " of " +
                std::to_string(size_) + ": " + std::string(text, static_cast<std::size_t>(length)));
}

// Polls, then naps between polls (see poll_before_napping above).
void MpiCommunicator::wait(MPI_Request* requests, int count) {
    const auto start = std::chrono::steady_clock::now();
    std::optional<AccurateNaps> napping;
    for (;;) {
        int done = 0;
        check(MPI_Testall(count, requests, &done, MPI_STATUSES_IGNORE), "MPI_Testall");
        if (done) return;
        const auto waited = std::chrono::steady_clock::now() - start;
        if (waited < poll_before_napping) continue;
        if (!napping) napping.emplace();
        // Nothing else to do (set_busy_waiting): the naps stay at their shortest, so a message
        // is seen within ~15 us, and a rank sharing its core with others still sleeps.
        const auto nap =
            busy_waiting_.load(std::memory_order_relaxed)
                ? first_nap
                : std::clamp(std::chrono::duration_cast<std::chrono::microseconds>(waited / 16), first_nap, last_nap);
        std::this_thread::sleep_for(nap);
    }
}

// The fixed-order ring (see the top of recur/distributed.hpp).
template <class T>
void MpiCommunicator::ring_allreduce(std::span<T> data, MPI_Datatype type) {
    const int n_ranks = size_;
    if (n_ranks == 1 || data.empty()) return;
    const std::size_t n = data.size(), N = static_cast<std::size_t>(n_ranks);
    auto chunk_begin = [&](int k) { return static_cast<std::size_t>(k) * n / N; };
    auto chunk_size = [&](int k) { return chunk_begin(k + 1) - chunk_begin(k); };
    auto mod = [&](int k) { return ((k % n_ranks) + n_ranks) % n_ranks; };
    const int right = mod(rank_ + 1), left = mod(rank_ - 1);
    const std::size_t largest = (n + N - 1) / N;
    if (scratch_.size() < largest * sizeof(T)) scratch_.resize(largest * sizeof(T));
    T* received = reinterpret_cast<T*>(scratch_.data());
    constexpr int tag = 0x7265;  // "re"
    MPI_Request requests[2];
    // One step: send chunk `out` to the right, receive chunk `in` from the left into `into`.
    auto exchange = [&](int out, int in, T* into) {
        check(MPI_Irecv(into, static_cast<int>(chunk_size(in)), type, left, tag, comm_, &requests[0]), "MPI_Irecv");
        check(MPI_Isend(data.data() + chunk_begin(out), static_cast<int>(chunk_size(out)), type, right, tag, comm_,
                        &requests[1]),
              "MPI_Isend");
        wait(requests, 2);
    };
    for (int s = 0; s < n_ranks - 1; ++s) {  // reduce-scatter: partial sums travel right
        const int out = mod(rank_ - s), in = mod(rank_ - s - 1);
        exchange(out, in, received);
        T* own = data.data() + chunk_begin(in);
        for (std::size_t e = 0; e < chunk_size(in); ++e) own[e] = received[e] + own[e];
    }
    for (int s = 0; s < n_ranks - 1; ++s) {  // allgather: finished chunks travel right
        const int out = mod(rank_ + 1 - s), in = mod(rank_ - s);
        exchange(out, in, data.data() + chunk_begin(in));
    }
}

void MpiCommunicator::allreduce_sum(std::span<float> data) { ring_allreduce(data, MPI_FLOAT); }
void MpiCommunicator::allreduce_sum(std::span<double> data) { ring_allreduce(data, MPI_DOUBLE); }

// Broadcast and barrier are MPI's (no arithmetic, so no order to fix), started nonblocking
// and waited for with naps, so a waiting rank leaves its core to the others.
void MpiCommunicator::broadcast_typed(void* data, std::size_t count, MPI_Datatype type, int root) {
    MPI_Request request;
    check(MPI_Ibcast(data, static_cast<int>(count), type, root, comm_, &request), "MPI_Ibcast");
    wait(&request, 1);
}

void MpiCommunicator::broadcast(std::span<float> data, int root) {
    broadcast_typed(data.data(), data.size(), MPI_FLOAT, root);
}
void MpiCommunicator::broadcast(std::span<double> data, int root) {
    broadcast_typed(data.data(), data.size(), MPI_DOUBLE, root);
}
void MpiCommunicator::broadcast(std::span<std::byte> data, int root) {
    broadcast_typed(data.data(), data.size(), MPI_BYTE, root);
}

void MpiCommunicator::barrier() {
    MPI_Request request;
    check(MPI_Ibarrier(comm_, &request), "MPI_Ibarrier");
    wait(&request, 1);
}

void MpiCommunicator::abort(const std::string& message, int code) {
    std::fprintf(stderr, "recur: rank %d of %d: %s\n", rank_, size_, message.c_str());
    std::fflush(stderr);
    MPI_Abort(comm_ == MPI_COMM_NULL ? MPI_COMM_WORLD : comm_, code);
    std::_Exit(code);  // MPI_Abort does not return; this keeps [[noreturn]] true if it did
}

}  // namespace recur::distributed
