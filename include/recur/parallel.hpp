// recur/parallel.hpp — thread counts and data-parallel training.
//
//   recur::set_num_threads(2);                      // threads inside one op (OpenMP + BLAS)
//   train::DataParallel<float> dp(model, loss, {.threads = 2});
//   optimizer.zero_grad();
//   double l = dp.step(xb, yb);                     // the batch's loss; grads added to the params
//   optimizer.step();
//
// or simply train::fit(..., {.batch_size = 64, .threads = 2}).
//
// Two ways to use the cores, never both at once:
// - intra-op: one tape, and each op splits its own work (OpenBLAS threads inside a GEMM,
//   OpenMP threads inside recur's kernels). set_num_threads() sets both.
// - data-parallel: train::DataParallel cuts a batch into one contiguous shard per thread.
//   Each thread records its shard on its own Tape over the SHARED Parameters (modules bind
//   their parameters to whatever tape they are given), runs backward, and keeps its gradients
//   on its tape (TapeOptions::accumulate_parameter_grads = false). The shard gradients are
//   then added into Parameter::grad in a fixed order: grad += w_0 g_0 + w_1 g_1 + ... (shard
//   0 first), elementwise. Inside the parallel region every op is single-threaded (OpenBLAS
//   is set to one thread and restored afterwards), so the cores are not oversubscribed.
//
// The loss rule: the batch loss is L = sum_k w_k L_k over the shards, with
//   w_k = n_k / B  for LossReduction::mean (the default: the loss is a mean over the samples
//                  of the batch it is given, like mse_loss or cross_entropy without ignored
//                  targets), so L and its gradient are the full batch's, up to rounding;
//   w_k = 1        for LossReduction::sum (the loss is a sum over the samples).
// A loss that is a mean over something else (cross_entropy with ignore_index, a mean over
// valid time steps of padded sequences) is then a weighted mean of the shards' means, not
// exactly the full batch's.
//
// Determinism: the shard boundaries depend only on (batch size, threads), each shard has its
// own tape (and, when step() is given a seed, its own generator seeded from (seed, shard)),
// and the reduction adds the shards in shard order, so two runs with the same thread count
// are bit-identical whatever the OS scheduling. Different thread counts round differently
// (and draw different dropout masks).
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xarray.hpp>

#include "recur/nn/layers.hpp"
#include "recur/tape.hpp"
#include "recur/train.hpp"

namespace recur {

/// Threads one op may use (omp_set_num_threads, for the calling thread; the default comes
/// from OMP_NUM_THREADS, all cores when unset). recur's own kernels run on them above a grain
/// size, and a large matrix product is cut into blocks of its output, one per thread, each an
/// OpenBLAS call on one thread: recur sets OpenBLAS to one thread for the process, so one
/// pool of threads serves everything and OpenBLAS's and OpenMP's threads never compete for
/// the cores. value_error naming set_num_threads and n unless n >= 1.
void set_num_threads(int n);
/// The OpenMP thread count set_num_threads() last set for the calling thread
/// (omp_get_max_threads()).
int num_threads();
/// The processors available to the process (omp_get_num_procs()).
int num_procs();

}  // namespace recur

namespace recur::train {

/// How the shards' losses make the batch loss (see the top of this file).
enum class LossReduction {
    mean,  // the loss is a mean over the samples: shard k weighs n_k / B
    sum,  // the loss is a sum over the samples: every shard weighs 1
};

struct DataParallelOptions {
    /// Shards per batch, one thread each; a batch of B < threads samples is cut into B
    /// shards. At most num_procs() threads run at once (more shards take turns), so the
    /// results depend on this number only, never on the machine.
    std::size_t threads = 1;
    LossReduction reduction = LossReduction::mean;
};

/// Data-parallel forward and backward of `model` under `loss` (see the top of this file).
/// The tapes live as long as this object: clear() keeps their buffers, so steady-state steps
/// allocate no new nodes. Not copyable or movable; one step at a time.
template <class T>
class DataParallel {
public:
    /// value_error naming DataParallel unless o.threads >= 1, loss is set and the model has
    /// parameters. The parameters reduced are model.parameters() at construction.
    DataParallel(nn::Layer<T>& model, LossFn<T> loss, DataParallelOptions o = {});
    ~DataParallel();
    DataParallel(const DataParallel&) = delete;
    DataParallel& operator=(const DataParallel&) = delete;

    /// One forward and backward of the batch: x and y hold B samples on axis 0, lengths is
    /// empty or B per-sample lengths. Adds the batch's gradient into every parameter's grad
    /// (+=, as Tape::backward does: zero the grads first) and returns the batch loss
    /// sum_k w_k L_k. When that loss is NaN or infinite nothing is added (the caller decides).
    /// With a seed, shard k's tape generator (dropout masks) is reseeded from (seed, k)
    /// first; without, each tape's generator continues from its previous state.
    /// value_error / shape_error naming DataParallel::step for an empty batch, x and y with
    /// different sample counts, or a wrong number of lengths; errors thrown by the model or
    /// the loss in a shard are rethrown here (the lowest shard's first) and add nothing.
    double step(const xt::xarray<T>& x, const xt::xarray<T>& y, const std::vector<std::int64_t>& lengths = {},
                std::optional<std::uint64_t> seed = std::nullopt);

    std::size_t threads() const { return o_.threads; }
    const DataParallelOptions& options() const { return o_; }
    /// The shards of the last step, as sample ranges [first, second) of its batch.
    const std::vector<std::pair<std::size_t, std::size_t>>& shards() const { return shards_; }
    /// Shard k's prediction, target and loss from the last step (index_error for k >= shards().size()).
    const xt::xarray<T>& prediction(std::size_t k) const;
    const xt::xarray<T>& target(std::size_t k) const;
    double shard_loss(std::size_t k) const;
    /// Shard k's tape (created on first use).
    Tape<T>& tape(std::size_t k);

    /// How a batch of `batch` samples is cut for `threads` threads: min(threads, batch)
    /// contiguous ranges in sample order, sizes differing by at most one (the larger last).
    /// value_error naming DataParallel::split unless both are >= 1.
    static std::vector<std::pair<std::size_t, std::size_t>> split(std::size_t batch, std::size_t threads);
    /// The seed of shard k's tape for a step seeded with `seed` (splitmix64 of the two).
    static std::uint64_t shard_seed(std::uint64_t seed, std::size_t k);

private:
    struct Shard;
    void run_shard(std::size_t k, const xt::xarray<T>& x, const xt::xarray<T>& y,
                   const std::vector<std::int64_t>& lengths, std::optional<std::uint64_t> seed);
    void reduce(const std::vector<T>& weights);

    nn::Layer<T>& model_;
    LossFn<T> loss_;
    DataParallelOptions o_;
    std::vector<Parameter<T>*> params_;
    std::vector<std::unique_ptr<Shard>> state_;  // one per shard, kept across steps
    std::vector<std::pair<std::size_t, std::size_t>> shards_;
};

extern template class DataParallel<float>;
extern template class DataParallel<double>;

}  // namespace recur::train

namespace recur::distributed {

/// The processes of a data-parallel run (ranks 0..size()-1) and the collectives training
/// needs. recur::distributed's MpiCommunicator (recur/distributed.hpp) implements it over MPI;
/// other transports plug in by deriving from it. The core library only sees this interface.
///
/// Contract of every implementation:
/// - allreduce_sum leaves the elementwise sum over the ranks in `data` on every rank, the
///   same bits on every rank, and adds in an order fixed by (size, data.size()) alone, so
///   two runs with the same world size reduce bit-identically;
/// - every rank calls the same collectives in the same order with the same lengths;
/// - one thread at a time calls a communicator (GradReducer's thread and the training
///   thread take turns, never overlap), except set_busy_waiting, which any thread may call
///   at any time;
/// - abort ends every process of the run (the caller's message first goes to stderr).
class Communicator {
public:
    virtual ~Communicator() = default;
    virtual int rank() const = 0;
    virtual int size() const = 0;
    virtual void allreduce_sum(std::span<float> data) = 0;
    virtual void allreduce_sum(std::span<double> data) = 0;
    /// Copies root's `data` into every rank's (the same length on every rank).
    virtual void broadcast(std::span<float> data, int root) = 0;
    virtual void broadcast(std::span<double> data, int root) = 0;
    virtual void broadcast(std::span<std::byte> data, int root) = 0;
    virtual void barrier() = 0;
    /// A hint: true while the process has nothing to do but wait for the communication in
    /// progress (GradReducer::finish waiting for the last buckets), so a wait may poll more
    /// often; false when it computes again. The default ignores it.
    virtual void set_busy_waiting(bool /*busy*/) {}
    /// Writes "recur: rank R of N: <message>" to stderr and ends the whole run with `code`.
    [[noreturn]] virtual void abort(const std::string& message, int code = 1) = 0;
};

/// Runs fn(); if it throws, aborts the run through `comm` with this rank's message, so the
/// other ranks never wait for it (with one rank the exception propagates instead).
template <class Fn>
void run_or_abort(Communicator& comm, Fn&& fn) {
    try {
        fn();
    } catch (const std::exception& e) {
        if (comm.size() == 1) throw;
        comm.abort(e.what());
    }
}

struct GradReducerOptions {
    /// Gradients travel in buckets of at most about this many bytes (whole parameters, or a
    /// parameter larger than its bucket cut between rows; a row larger than a bucket travels
    /// alone). Smaller buckets start earlier in backward and pay the per-message latency more
    /// often. 1 MiB: the latency of a message (~50 us on 10 Gb/s Ethernet) stays below 10% of
    /// its transfer time from 10 Gb/s up.
    std::size_t bucket_bytes = std::size_t(1) << 20;
    /// The buckets reduced last are smaller: the last holds about this many bytes, each
    /// earlier one up to twice the next, up to bucket_bytes. What backward finishes at its very
    /// end (the first layer's input weights, reported in blocks of rows as linear's backward
    /// makes them: Tape::on_grad_rows_final) then leaves little to send once backward is done.
    /// 64 KiB: ~0.02 ms over shared memory, ~0.05 ms plus latency on 10 Gb/s.
    std::size_t last_bucket_bytes = std::size_t(1) << 16;
};

/// "How much of the allreduce time backward hid", measured per step and summarised over
/// steps with medians (GradReducer::overlap(); seconds). On rank r in step s,
/// W_r(s) = (when the communication thread ended the last bucket's reduction) - (when the
/// last bucket was handed to it: when backward reported the last parameter, or in finish()
/// for the parameters backward did not report), the reduction left once this rank's
/// gradients were all final. Measured so, it does not depend on which thread a shared core
/// runs first (the thread can reduce the last bucket before the training thread reaches
/// finish(), which then does not wait, though backward was delayed as long). A rank whose
/// gradients were final before the others' also waits for them: that is load imbalance, not
/// communication. The ranks end the last reduction within a message's latency of each other,
/// and the last rank to finish its gradients waits least, so min_r W_r(s) is the
/// communication left exposed after every rank's backward, and max_r - min_r the imbalance.
/// No clock is shared between machines: only durations are compared.
struct GradReducerOverlap {
    /// Steps measured: with the tape attached (backward reported parameters on some rank),
    /// and detached (every bucket reduced after backward).
    std::size_t steps = 0, detached_steps = 0;
    /// The reference: the time the reductions of every bucket take once all ranks are
    /// ready, each bucket handed to the communication thread after a barrier, as a detached
    /// step does after backward (median over the repeats of the minimum over the ranks).
    double allreduce = 0;
    /// Median over the attached steps of min_r W_r(s): the reduction not hidden by backward.
    double exposed = 0;
    /// Median over all the steps of max_r W_r(s) - min_r W_r(s): the first rank to end
    /// backward waiting for the last (load imbalance, reported apart from the reduction).
    double imbalance = 0;
    /// Median over the detached steps of min_r W_r(s) (0 without detached steps): the
    /// reference measured inside training steps, to check `allreduce`.
    double detached_exposed = 0;
    /// Median over the steps, mean over the ranks, of the communication thread's processor
    /// time per step (polls and naps included): on a machine whose cores all train, what
    /// the reduction takes from the computation even when its wait is hidden.
    double comm_cpu = 0;
    /// 1 - exposed / allreduce: the share of the reduction backward hid (negative when
    /// the wait after backward exceeds the reference; 0 without steps).
    double hidden() const { return allreduce > 0 && steps > 0 ? 1 - exposed / allreduce : 0; }
};

/// Sums parameter gradients over the ranks of a communicator, bucket by bucket, while the
/// backward sweep is still running. For a training loop of your own:
///
///   distributed::GradReducer<float> reducer(comm, model.parameters());
///   reducer.attach(tape);                  // the tape reports each Parameter's final gradient
///   optimizer.zero_grad();
///   reducer.begin(n_local / n_global);     // this rank's weight w_r
///   tape.backward(loss);                   // buckets are reduced as their gradients become final
///   reducer.finish();                      // p.grad() = sum_r w_r g_r on every rank
///   optimizer.step();
///
/// With the mean loss of n_r local samples and w_r = n_r / sum_r n_r, the result is the
/// gradient of the mean loss over the global batch. Buckets hold the parameters (or blocks of
/// their rows) in the order backward finishes them: the reverse of the given order for the
/// first step, then the order
/// rank 0's first backward reported (a parameter bound later on the tape is final earlier;
/// PyTorch's DDP rebuilds its buckets the same way; this is a collective of the first
/// finish()). Bucket k is reduced on a communication thread as soon as all it holds is
/// final (whole parameters on_grad_final, rows of one on_grad_rows_final) and buckets 0..k-1
/// are done, so every rank reduces the same buckets in the same order. finish() packs what
/// backward did not report (not bound on the tape, or no tape attached), waits for the last
/// bucket and writes the sums into p.grad(). The tape must add its parameter
/// gradients into Parameter::grad (TapeOptions::accumulate_parameter_grads, the default).
/// Buffers are made at construction: a step allocates nothing.
template <class T>
class GradReducer {
public:
    /// value_error naming GradReducer for no parameters or a zero bucket size.
    GradReducer(Communicator& comm, std::vector<Parameter<T>*> params, GradReducerOptions o = {});
    ~GradReducer();
    GradReducer(const GradReducer&) = delete;
    GradReducer& operator=(const GradReducer&) = delete;

    /// Installs the hooks (Tape::on_grad_final, Tape::on_grad_rows_final) that report final
    /// gradients to ready() and rows_ready().
    void attach(Tape<T>& tape);
    /// Removes them: every bucket is then reduced in finish(), after backward.
    void detach(Tape<T>& tape);
    /// Starts a step: this rank's gradients will count with weight w (n_local / n_global).
    void begin(double weight);
    /// p.grad() is final for this step: copy w * p.grad() into its bucket, and hand the bucket
    /// to the communication thread when it is complete. Parameters not reduced are ignored.
    void ready(Parameter<T>& p);
    /// Rows [0, rows) of p.grad() (along its first axis) are final for this step: pack the
    /// pieces of p they cover, and hand over the buckets that completes.
    void rows_ready(Parameter<T>& p, std::size_t rows);
    /// Waits for every bucket and writes the global sums into the parameters' grads.
    void finish();

    std::size_t buckets() const;
    /// The parameters in bucket order (bucket 0's first).
    const std::vector<Parameter<T>*>& parameter_order() const;
    /// Seconds since construction or reset_timers(): the communication thread's time in
    /// allreduce (waiting for other ranks included), and the time finish() waited for it.
    double comm_seconds() const { return comm_seconds_; }
    double wait_seconds() const { return wait_seconds_; }
    /// Sets both totals to zero and forgets the steps overlap() summarises.
    void reset_timers();
    /// How much of the allreduce backward hid in the steps since reset_timers() (the first
    /// 4096), the same
    /// figures on every rank (a collective: every rank calls it, between steps; see
    /// GradReducerOverlap). `repeats` reductions of the buckets measure the reference.
    GradReducerOverlap overlap(std::size_t repeats = 7);

private:
    struct State;
    void communicate();
    void layout(std::vector<Parameter<T>*> order);
    void learn_order();
    double reduce_all_buckets();
    std::unique_ptr<State> s_;
    double comm_seconds_ = 0, wait_seconds_ = 0;
    // Per step since reset_timers() (the first logged_steps of them): finish()'s wait, the
    // parameters backward reported, and the communication thread's processor seconds.
    static constexpr std::size_t logged_steps = 4096;
    std::vector<double> step_wait_, step_reported_, step_comm_cpu_;
};

extern template class GradReducer<float>;
extern template class GradReducer<double>;

}  // namespace recur::distributed
