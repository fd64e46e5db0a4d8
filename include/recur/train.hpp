// recur/train.hpp — the fit loop: fit / evaluate / predict, History, callbacks, checkpoints.
//
//   auto history = train::fit(model, loss, optimizer, {x, y}, {.epochs = 20, .batch_size = 32,
//                             .validation_split = 0.2, .metrics = {train::mae<float>()}});
//
// One epoch: the samples (minus the validation split) are shuffled with a generator seeded
// from (seed, epoch) and cut into batches; each batch is recorded on one reused tape (so
// steady-state steps allocate nothing), backward, optional clipping, optimizer step. Dropout
// masks come from the tape, reseeded from (seed, epoch, batch). Everything that decides the
// run is therefore a function of (weights, optimizer state, epoch), which is what a
// checkpoint stores: a run resumed from epoch k ends with the same weights as one that never
// stopped.
//
// Stateful models (nn::RecurrentLayer with stateful = true, alone or in a Sequential) train
// with truncated BPTT: with shuffle = false and batch_size B, batch k + 1 continues batch k
// row by row, so a long series cut into B parallel streams of consecutive chunks (sample
// k * B + b = chunk k of stream b) is learnt chunk after chunk, the gradient stopping at
// chunk boundaries. fit resets the states at the start of every epoch; evaluate and predict
// (and so the validation) reset them at their start and carry them across their batches.
// Every batch must then hold B samples (the carried state's size; value_error naming the
// layer otherwise), so N, and the validation samples, should be multiples of B. Keras's fit
// does not reset states by itself (keras#2849: users call reset_states() after each epoch,
// as Keras's stateful_lstm example does); recur does that reset for you. threads > 1 cannot
// train a stateful model (value_error).
//
// FitOptions::threads > 1 trains data-parallel (recur/parallel.hpp): each batch is cut into
// one contiguous shard per thread, each recorded on its own reused tape with its generator
// reseeded from (seed, epoch, batch, shard), and the shards' gradients are reduced in shard
// order, weighted by shard size / batch size (the loss is taken to be a mean over the
// batch's samples). The loss and the gradient are then the full batch's up to rounding, a run
// is bit-identical to another with the same thread count, and resume() works as above.
// Metrics are computed per shard and weighted by shard size. threads = 1 (the default) is the
// single-tape loop.
//
// Across processes (FitOptions::communicator, e.g. recur::distributed::MpiCommunicator): every
// rank calls fit with the same data, model architecture and options. batch_size is per rank:
// every epoch the global order comes from (seed, epoch) exactly as in one process, it is cut
// into global batches of batch_size * size samples (the last one may be shorter), and rank r
// takes the r-th of DataParallel::split(global batch, size), contiguous ranges in global
// order (a rank whose range is empty contributes nothing to that step). Before the first
// step fit checks that every rank has rank 0's parameter shapes and options (value_error
// naming both shapes otherwise) and broadcasts rank 0's parameters and optimizer state (so a
// resumed run continues from rank 0's). Gradients are summed over the ranks with weights
// n_r / n (distributed::GradReducer, buckets reduced while backward runs), so every step is
// the step of one process on the whole global batch, up to rounding; the loss and metrics of
// every step and the validation values are reduced the same way, so every rank holds the
// same History (its "seconds" are rank 0's; "allreduce_seconds", "exposed_seconds",
// "imbalance_seconds", "allreduce_hidden" and "comm_cpu_seconds" are the epoch's
// distributed::GradReducerOverlap: the reduction's time per step, the part backward did not
// hide, the ranks' skew, the share hidden, the communication thread's processor time). Dropout masks of rank r come
// from (seed, epoch, batch, rank): with more than one rank its tape is seeded with
// DataParallel::shard_seed(batch seed, r) (one rank: the batch seed, as without a
// communicator), and with threads > 1 its shards then from (that seed, shard). threads > 1 still works inside each rank
// (the gradient reduction across ranks then starts after the threads' reduction). Only rank 0 draws the progress bar
// and runs ModelCheckpoint callbacks; other callbacks run on every rank and rank 0's decision to stop holds for all. An
// exception on one rank (bad data, a NaN loss, a failed write) aborts every rank through Communicator::abort with that
// rank's message, instead of a hang.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <xtensor/xarray.hpp>

#include "recur/nn/layers.hpp"
#include "recur/optim.hpp"

namespace recur::distributed {
class Communicator;  // recur/parallel.hpp
}  // namespace recur::distributed

namespace recur::train {

/// loss(prediction, target) -> scalar Var (mean over the batch, usually).
template <class T>
using LossFn = std::function<Var<T>(const Var<T>& prediction, const Var<T>& target)>;

/// A metric computed on plain arrays per batch and averaged over samples.
template <class T>
struct Metric {
    std::string name;
    std::function<double(const xt::xarray<T>& prediction, const xt::xarray<T>& target)> fn;
};
template <class T>
Metric<T> mae();  // "mae"
template <class T>
Metric<T> binary_accuracy(double threshold = 0.5);  // "binary_accuracy"
template <class T>
Metric<T> categorical_accuracy(std::int64_t ignore_index = -100);  // "categorical_accuracy"

/// Samples along the first axis of x and y; lengths (optional) per sample.
template <class T>
struct Dataset {
    xt::xarray<T> x;
    xt::xarray<T> y;
    std::vector<std::int64_t> lengths{};
    std::size_t size() const { return x.dimension() == 0 ? 0 : x.shape()[0]; }
};

// ---- Models with several inputs -------------------------------------------------------------
//
// A model whose forward takes several arrays (source ids, source lengths, target ids, float
// features, ...) derives from train::Model and reads its inputs by name from a Batch:
//
//   struct Tagger : train::Model<float> {
//       nn::Embedding<float> embed{100, 16};
//       nn::LSTM<float> lstm{{.input_size = 16, .hidden_size = 32, .batch_first = true}};
//       nn::Linear<float> out{32, 5};
//       Tagger() { register_module("embed", embed); register_module("lstm", lstm); register_module("out", out); }
//       Var<float> forward(const train::Batch<float>& b) override {
//           Var<float> e = embed(b.tape(), b.ids("tokens"));                  // (B, T, 16)
//           return out(lstm(e, {}, b.lengths("lengths")).output);             // (B, T, 5)
//       }
//   };
//   train::Inputs<float> x{{"tokens", token_ids}, {"lengths", lengths}};   // (N, T), (N,) int64
//   train::fit(model, loss, adam, {x, tags}, {.epochs = 10});              // tags (N, T) int64
//
// Every input holds the same number of samples N along axis 0 (shape_error naming the input
// otherwise); a batch takes the same rows of every input and of the targets, so batching,
// shuffling, validation_split / validation data, checkpoints and resume, and training across
// processes (communicator) work exactly as for one input. Data-parallel threads
// (FitOptions::threads > 1) take single-input models only (value_error otherwise).

/// One input array: float values (B, ...) or integer ids (B, ...) such as token ids or lengths.
template <class T>
using Input = std::variant<xt::xarray<T>, xt::xarray<std::int64_t>>;

/// Named input arrays in order, samples along axis 0 of each.
template <class T>
class Inputs {
public:
    Inputs() = default;
    /// Inputs<float> x{{"src", src_ids}, {"src_len", src_lengths}, {"tgt", tgt_ids}}.
    Inputs(std::initializer_list<std::pair<std::string, Input<T>>> named) {
        for (const auto& [name, a] : named) add(name, a);
    }
    /// Appends an input; value_error for an empty or repeated name or a 0-d array.
    Inputs& add(std::string name, Input<T> array);

    /// Number of inputs.
    std::size_t size() const { return inputs_.size(); }
    bool empty() const { return inputs_.empty(); }
    /// Samples: the first extent of input 0 (0 without inputs).
    std::size_t samples() const;
    const std::string& name(std::size_t k) const;
    /// Input k or the input named `name` (index_error naming the known inputs otherwise).
    const Input<T>& operator[](std::size_t k) const;
    const Input<T>& operator[](std::string_view name) const;
    /// Input k, to refill in place (fit reuses its batch buffers from step to step).
    Input<T>& operator[](std::size_t k);
    /// The position of `name`, if present.
    std::optional<std::size_t> find(std::string_view name) const;

private:
    std::vector<std::pair<std::string, Input<T>>> inputs_;
};

/// The rows of one batch, on the tape the model records on; what Model::forward reads.
template <class T>
class Batch {
public:
    Batch(Tape<T>& tape, const Inputs<T>& rows) : tape_(&tape), rows_(&rows) {}
    Tape<T>& tape() const { return *tape_; }
    /// Samples in the batch (B).
    std::size_t size() const { return rows_->samples(); }
    const Inputs<T>& inputs() const { return *rows_; }
    /// A float input as a constant on the tape, (B, ...). value_error naming the input if it
    /// holds integer ids.
    Var<T> var(std::string_view name) const;
    Var<T> var(std::size_t k) const;
    /// A float input's values (value_error if it holds ids).
    const xt::xarray<T>& values(std::string_view name) const;
    /// An integer input, (B, ...) (value_error naming the input if it holds floats).
    const xt::xarray<std::int64_t>& ids(std::string_view name) const;
    /// A (B,) integer input as per-sequence lengths for the recurrent layers.
    std::vector<std::int64_t> lengths(std::string_view name) const;

private:
    Tape<T>* tape_;
    const Inputs<T>* rows_;
};

/// A model whose forward takes a Batch of several inputs.
template <class T>
class Model : public nn::Module<T> {
public:
    using value_type = T;
    virtual Var<T> forward(const Batch<T>& batch) = 0;
    Var<T> operator()(const Batch<T>& batch) { return forward(batch); }
};

/// Samples along axis 0 of every input and of y. y holds float targets or integer ids (class
/// indices; given to the loss as T, exactly: ids beyond 2^digits of T raise value_error).
template <class T>
struct MultiDataset {
    Inputs<T> x;
    Input<T> y;
    std::size_t size() const { return x.samples(); }
};

/// Per-epoch values: "loss", each metric, "val_loss", "val_<metric>", "lr", "seconds".
class History {
public:
    /// Appends one epoch's values (keys in first-seen order).
    void append(std::size_t epoch, const std::vector<std::pair<std::string, double>>& values);
    std::size_t epochs() const { return epochs_.size(); }
    const std::vector<std::size_t>& epoch_numbers() const { return epochs_; }
    const std::vector<std::string>& keys() const { return keys_; }
    bool has(const std::string& key) const { return values_.count(key) != 0; }
    /// The values of `key`, one per epoch (value_error naming the key if unknown).
    const std::vector<double>& operator[](const std::string& key) const;
    /// "epoch,loss,mae,val_loss,..." then a row per epoch; written atomically.
    void write_csv(const std::string& path) const;

private:
    std::vector<std::size_t> epochs_;
    std::vector<std::string> keys_;
    std::map<std::string, std::vector<double>> values_;
};

template <class T>
class Callback;

/// What to do with NaN or infinity in the data or in a batch's loss.
///   stop (the default): data holding a NaN or an infinity (in a float input or y) is
///     rejected up front (value_error naming the array and the sample), and a non-finite
///     loss ends training with a value_error naming the epoch and the batch.
///   skip_batch: a training batch holding such a sample, or whose loss is not finite, is
///     skipped (no step); validation runs on the finite samples only. History counts them
///     per epoch: "skipped_batches" (all skipped batches), "non_finite_batches" (those
///     skipped for their data) and "non_finite_samples" (the training samples at fault).
enum class NonFinite { stop, skip_batch };

template <class T>
struct FitOptions {
    std::size_t epochs = 1;
    std::size_t batch_size = 32;
    /// Keras: the last fraction of the samples (taken before shuffling) validates.
    double validation_split = 0;
    /// Validation data given explicitly (takes precedence over validation_split).
    const Dataset<T>* validation_data = nullptr;
    /// The same for a multi-input model (fit with a MultiDataset).
    const MultiDataset<T>* multi_validation_data = nullptr;
    std::optional<double> clip_norm{};  // clip_grad_norm(parameters, value) before each step
    std::optional<double> clip_value{};  // clip_grad_value(parameters, value)
    std::vector<Metric<T>> metrics{};
    std::vector<Callback<T>*> callbacks{};
    /// 0 silent; 1 a progress bar on stderr (one line per epoch when stderr is not a
    /// terminal); 2 one line per epoch.
    int verbose = 1;
    bool shuffle = true;
    std::uint64_t seed = 0;
    NonFinite on_non_finite = NonFinite::stop;
    /// Epoch to start from (a resumed run: see resume()).
    std::size_t initial_epoch = 0;
    /// Data-parallel threads (see the top of this file); 1 = one tape on the calling thread.
    std::size_t threads = 1;
    /// Data-parallel training across processes (see "Across processes" at the top of this
    /// file); nullptr = this process alone. The communicator must outlive fit().
    distributed::Communicator* communicator = nullptr;
    /// Bytes per gradient bucket of the reduction across processes, and of the last one
    /// (GradReducerOptions).
    std::size_t bucket_bytes = std::size_t(1) << 20;
    std::size_t last_bucket_bytes = std::size_t(1) << 16;
    /// The training tape's precision policy (recur/precision.hpp; bf16: float models, threads = 1).
    Precision precision = Precision::f32;
};

/// What callbacks see and may change.
template <class T>
struct TrainContext {
    nn::Module<T>& model;
    optim::Optimizer<T>& optimizer;
    History& history;
    std::size_t epoch = 0;  // the epoch that just ended (0-based)
    bool stop = false;  // a callback sets it to end training after this epoch
};

template <class T>
class Callback {
public:
    virtual ~Callback() = default;
    virtual void on_train_begin(TrainContext<T>&) {}
    /// After epoch ctx.epoch; `logs` holds that epoch's values.
    virtual void on_epoch_end(TrainContext<T>&, const std::map<std::string, double>& /*logs*/) {}
    virtual void on_train_end(TrainContext<T>&) {}
};

/// Trains `model` on `data`; returns the per-epoch history.
template <class T>
History fit(nn::Layer<T>& model, const LossFn<T>& loss, optim::Optimizer<T>& optimizer, const Dataset<T>& data,
            const FitOptions<T>& options = {});

/// Loss and metrics over `data` in eval mode without recording (returns "loss", metrics).
template <class T>
std::map<std::string, double> evaluate(nn::Layer<T>& model, const LossFn<T>& loss, const Dataset<T>& data,
                                       std::size_t batch_size = 32, const std::vector<Metric<T>>& metrics = {});

/// The model's outputs for x in eval mode without recording, batches joined on axis 0.
template <class T>
xt::xarray<T> predict(nn::Layer<T>& model, const xt::xarray<T>& x, std::size_t batch_size = 32,
                      const std::vector<std::int64_t>& lengths = {}, Precision precision = Precision::f32);

/// The same for a multi-input model: every input and y sliced along axis 0 consistently.
template <class T>
History fit(Model<T>& model, const LossFn<T>& loss, optim::Optimizer<T>& optimizer, const MultiDataset<T>& data,
            const FitOptions<T>& options = {});
template <class T>
std::map<std::string, double> evaluate(Model<T>& model, const LossFn<T>& loss, const MultiDataset<T>& data,
                                       std::size_t batch_size = 32, const std::vector<Metric<T>>& metrics = {});
template <class T>
xt::xarray<T> predict(Model<T>& model, const Inputs<T>& x, std::size_t batch_size = 32,
                      Precision precision = Precision::f32);

// ---- Callbacks ------------------------------------------------------------------------------

enum class Mode { min, max };

struct EarlyStoppingOptions {
    std::string monitor = "val_loss";
    double min_delta = 0;
    std::size_t patience = 0;
    Mode mode = Mode::min;
    bool restore_best_weights = false;
};

/// Stops when `monitor` has not improved by min_delta for `patience` epochs; optionally
/// puts back the weights of the best epoch.
template <class T>
class EarlyStopping : public Callback<T> {
public:
    explicit EarlyStopping(EarlyStoppingOptions o = {});
    void on_train_begin(TrainContext<T>&) override;
    void on_epoch_end(TrainContext<T>&, const std::map<std::string, double>& logs) override;
    void on_train_end(TrainContext<T>&) override;
    /// The epoch training stopped after, if it stopped early.
    std::optional<std::size_t> stopped_epoch() const { return stopped_; }
    std::size_t best_epoch() const { return best_epoch_; }

private:
    EarlyStoppingOptions o_;
    double best_ = 0;
    std::size_t best_epoch_ = 0, wait_ = 0;
    bool have_best_ = false;
    std::optional<std::size_t> stopped_;
    std::vector<xt::xarray<T>> best_weights_;
};

struct CheckpointOptions {
    std::string path;  // the .npz written (atomically)
    std::string monitor = "val_loss";
    Mode mode = Mode::min;
    bool save_best_only = false;  // false: after every epoch (the last); true: on improvement
};

/// Writes model weights, optimizer state and the next epoch to an .npz file after an epoch.
template <class T>
class ModelCheckpoint : public Callback<T> {
public:
    explicit ModelCheckpoint(CheckpointOptions o);
    void on_epoch_end(TrainContext<T>&, const std::map<std::string, double>& logs) override;

private:
    CheckpointOptions o_;
    std::optional<double> best_;
};

/// Reduce-on-plateau or step decay driven once per epoch.
template <class T>
class LRScheduler : public Callback<T> {
public:
    /// StepLR: step() after every epoch.
    explicit LRScheduler(optim::StepLR<T>& schedule);
    /// ReduceLROnPlateau: step(logs[monitor]) after every epoch.
    LRScheduler(optim::ReduceLROnPlateau<T>& schedule, std::string monitor = "val_loss");
    void on_epoch_end(TrainContext<T>&, const std::map<std::string, double>& logs) override;

private:
    optim::StepLR<T>* step_ = nullptr;
    optim::ReduceLROnPlateau<T>* plateau_ = nullptr;
    std::string monitor_;
};

/// Writes a checkpoint now (atomically): "model.<name>" arrays, "optimizer.<key>" arrays,
/// "epoch" (next_epoch, stored with optim::encode_scalar).
template <class T>
void save_checkpoint(const std::string& path, nn::Module<T>& model, const optim::Optimizer<T>& optimizer,
                     std::size_t next_epoch);
/// Loads a checkpoint into model and optimizer and returns the epoch to resume from
/// (FitOptions::initial_epoch). All-or-nothing: the parameters' names and shapes, the epoch
/// (a whole number in [0, 2^53]) and the optimizer's state (step, lr, buffers) are all
/// checked before anything changes; on any error (io_error naming the file, and the
/// parameter or entry) model and optimizer are as they were.
template <class T>
std::size_t resume(const std::string& path, nn::Module<T>& model, optim::Optimizer<T>& optimizer);

}  // namespace recur::train
