// recur/distributed.hpp — data-parallel training across processes and machines over MPI
// (the target recur::distributed; the core library recur::recur never needs MPI).
//
//   recur::distributed::MpiCommunicator comm;       // MPI_COMM_WORLD (initialises MPI)
//   train::fit(model, loss, adam, data, {.batch_size = 64, .communicator = &comm});
//
//   mpirun -np 2 ./train                             # or: srun -n 64 ./train
//
// fit's rules across processes (data split, weighting, determinism, output, errors) are at
// the top of recur/train.hpp; the Communicator interface and the GradReducer for training
// loops of one's own are in recur/parallel.hpp.
//
// MpiCommunicator's allreduce_sum is not MPI_Allreduce, whose algorithm (and so the order of
// its additions) Open MPI picks by message size and world size. It is a ring written here
// with nonblocking point-to-point messages: the buffer is cut into `size` chunks
// [k n / N, (k + 1) n / N); in N - 1 steps rank r sends chunk (r - s) mod N to rank r + 1 and
// adds the chunk (r - s - 1) mod N it receives from rank r - 1 into its own (so chunk c is
// summed as ((g_c + g_{c+1}) + g_{c+2}) + ..., ranks taken from c on, wrapping); in N - 1 more
// steps the finished chunks travel around the ring unchanged. Every rank ends with the same
// bits, the order of the additions depends on (N, n) only, and each rank sends and receives
// 2 (N - 1) / N of the buffer, the optimum for bandwidth. While it waits for a message it
// polls for 0.2 ms, then sleeps in naps of wait / 16 (10 to 100 us) between polls instead of
// spinning (broadcast and barrier too: MPI's nonblocking ones), so a waiting thread does not
// take a core from the computation of its own or another rank; while set_busy_waiting(true)
// says the process has nothing else to do, the naps stay at 10 us (a message is seen within
// ~15 us; a spinning rank would take the core from others where ranks outnumber cores).
#pragma once

#include <mpi.h>

#include <atomic>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "recur/parallel.hpp"

namespace recur::distributed {

/// A Communicator over MPI.
class MpiCommunicator final : public Communicator {
public:
    /// MPI_COMM_WORLD. Initialises MPI (MPI_THREAD_SERIALIZED: the reducer's thread and the
    /// training thread take turns) unless the program already did; then MPI is finalised
    /// at exit. recur::error if MPI cannot give MPI_THREAD_SERIALIZED.
    MpiCommunicator();
    /// A communicator of the caller's (duplicated, so recur's messages never meet the
    /// caller's). MPI must be initialised with MPI_THREAD_SERIALIZED or more.
    explicit MpiCommunicator(MPI_Comm comm);
    ~MpiCommunicator() override;
    MpiCommunicator(const MpiCommunicator&) = delete;
    MpiCommunicator& operator=(const MpiCommunicator&) = delete;

    int rank() const override { return rank_; }
    int size() const override { return size_; }
    void allreduce_sum(std::span<float> data) override;
    void allreduce_sum(std::span<double> data) override;
    void broadcast(std::span<float> data, int root) override;
    void broadcast(std::span<double> data, int root) override;
    void broadcast(std::span<std::byte> data, int root) override;
    void barrier() override;
    void set_busy_waiting(bool busy) override { busy_waiting_.store(busy, std::memory_order_relaxed); }
    [[noreturn]] void abort(const std::string& message, int code = 1) override;

    /// The MPI communicator used (the duplicate).
    MPI_Comm comm() const { return comm_; }

private:
    template <class T>
    void ring_allreduce(std::span<T> data, MPI_Datatype type);
    void broadcast_typed(void* data, std::size_t count, MPI_Datatype type, int root);
    void wait(MPI_Request* requests, int count);
    void check(int rc, const char* call) const;

    MPI_Comm comm_ = MPI_COMM_NULL;
    int rank_ = 0, size_ = 1;
    std::vector<std::byte> scratch_;  // one received chunk, kept across calls
    std::atomic<bool> busy_waiting_{false};
};

}  // namespace recur::distributed
