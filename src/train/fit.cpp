// fit / evaluate / predict and the History they produce.
#include <array>
#include <chrono>
#include <cmath>
#include <span>
#include <sstream>
#include <tuple>

#include "progress.hpp"
#include "seeds.hpp"
#include "recur/data.hpp"
#include "recur/io.hpp"
#include "recur/metrics.hpp"
#include "recur/parallel.hpp"
#include "recur/train.hpp"

namespace recur::train {

// ---- Metrics ------------------------------------------------------------------------------

template <class T>
Metric<T> mae() {
    return {"mae", [](const xt::xarray<T>& p, const xt::xarray<T>& y) { return metrics::mae(p, y); }};
}
template <class T>
Metric<T> binary_accuracy(double threshold) {
    return {"binary_accuracy",
            [threshold](const xt::xarray<T>& p, const xt::xarray<T>& y) { return metrics::binary_accuracy(p, y, threshold); }};
}
template <class T>
Metric<T> categorical_accuracy(std::int64_t ignore_index) {
    return {"categorical_accuracy", [ignore_index](const xt::xarray<T>& p, const xt::xarray<T>& y) {
                return metrics::categorical_accuracy(p, y, ignore_index);
            }};
}

// ---- History ------------------------------------------------------------------------------

void History::append(std::size_t epoch, const std::vector<std::pair<std::string, double>>& values) {
    epochs_.push_back(epoch);
    for (const auto& [k, v] : values) {
        auto it = values_.find(k);
        if (it == values_.end()) {
            keys_.push_back(k);
            it = values_.emplace(k, std::vector<double>(epochs_.size() - 1, std::nan(""))).first;
        }
        it->second.push_back(v);
    }
    for (auto& [k, v] : values_)
        if (v.size() < epochs_.size()) v.push_back(std::nan(""));
}

const std::vector<double>& History::operator[](const std::string& key) const {
    auto it = values_.find(key);
    if (it == values_.end()) {
        std::string known;
        for (const auto& k : keys_) known += (known.empty() ? "" : ", ") + k;
        throw value_error("History: no values named '" + key + "' (has: " + known + ")");
    }
    return it->second;
}

void History::write_csv(const std::string& path) const {
    std::ostringstream s;
    s.precision(10);
    s << "epoch";
    for (const auto& k : keys_) s << ',' << k;
    s << '\n';
    for (std::size_t e = 0; e < epochs_.size(); ++e) {
        s << epochs_[e] + 1;
        for (const auto& k : keys_) s << ',' << values_.at(k)[e];
        s << '\n';
    }
    io::write_atomically(path, s.str());
}

// ---- Helpers ------------------------------------------------------------------------------

namespace {

// A seed for batch b of epoch e (splitmix64 of the three).
std::uint64_t mix(std::uint64_t seed, std::uint64_t epoch, std::uint64_t batch) {
    return detail::splitmix64(seed + detail::seed_weight_1 * (epoch + 1) + detail::seed_weight_2 * (batch + 1));
}

template <class T>
void check_finite(const char* fn, const char* what, const xt::xarray<T>& a) {
    const std::size_t per = a.dimension() == 0 || a.shape()[0] == 0 ? 1 : a.size() / a.shape()[0];
    for (std::size_t k = 0; k < a.size(); ++k)
        if (!std::isfinite(a.data()[k]))
            throw value_error(std::string(fn) + ": " + what + " has a non-finite value (" + std::to_string(a.data()[k]) +
                              ") in sample " + std::to_string(k / per));
}

template <class T>
void check_dataset(const char* fn, const Dataset<T>& d, const char* name) {
    if (d.x.dimension() == 0 || d.x.shape()[0] == 0) throw value_error(std::string(fn) + ": the " + name + " data is empty");
    if (d.y.dimension() == 0 || d.y.shape()[0] != d.x.shape()[0])
        throw shape_error(std::string(fn) + ": " + name + " x has shape " + shape_str(d.x.shape()) + " and y has shape " +
                          shape_str(d.y.shape()) + "; their first axes (samples) must be equal");
    if (!d.lengths.empty() && d.lengths.size() != d.x.shape()[0])
        throw shape_error(std::string(fn) + ": " + std::to_string(d.lengths.size()) + " lengths for " +
                          std::to_string(d.x.shape()[0]) + " samples");
    check_finite(fn, (std::string(name) + " x").c_str(), d.x);
    check_finite(fn, (std::string(name) + " y").c_str(), d.y);
}

template <class T>
std::vector<std::int64_t> take(const std::vector<std::int64_t>& lengths, const std::vector<std::size_t>& idx) {
    std::vector<std::int64_t> out;
    if (lengths.empty()) return out;
    for (auto i : idx) out.push_back(lengths[i]);
    return out;
}

template <class T>
Dataset<T> rows(const Dataset<T>& d, std::size_t begin, std::size_t end) {
    std::vector<std::size_t> idx;
    for (std::size_t i = begin; i < end; ++i) idx.push_back(i);
    return {data::gather_batch(d.x, idx), data::gather_batch(d.y, idx), take<T>(d.lengths, idx)};
}

// Restores a module's training flag on scope exit.
template <class T>
struct ModeGuard {
    nn::Module<T>& m;
    bool was;
    ModeGuard(nn::Module<T>& module, bool training) : m(module), was(module.training()) { m.train(training); }
    ~ModeGuard() { m.train(was); }
};

}  // namespace

// ---- evaluate / predict -------------------------------------------------------------------

template <class T>
std::map<std::string, double> evaluate(nn::Layer<T>& model, const LossFn<T>& loss, const Dataset<T>& d,
                                       std::size_t batch_size, const std::vector<Metric<T>>& metrics) {
    if (batch_size == 0) throw value_error("evaluate: batch_size must be positive");
    check_dataset("evaluate", d, "evaluation");
    ModeGuard<T> eval(model, false);
    Tape<T> tape({.record = false});
    const data::BatchIterator batches(d.size(), batch_size, false);
    double total = 0;
    std::vector<double> sums(metrics.size(), 0.0);
    for (const auto& idx : batches.epoch(0)) {
        tape.clear();
        const xt::xarray<T> xb = data::gather_batch(d.x, idx), yb = data::gather_batch(d.y, idx);
        Var<T> pred = model(tape.constant(xb), take<T>(d.lengths, idx));
        const double n = static_cast<double>(idx.size());
        total += n * static_cast<double>(loss(pred, tape.constant(yb)).item());
        for (std::size_t m = 0; m < metrics.size(); ++m) sums[m] += n * metrics[m].fn(pred.value(), yb);
    }
    std::map<std::string, double> out{{"loss", total / static_cast<double>(d.size())}};
    for (std::size_t m = 0; m < metrics.size(); ++m) out[metrics[m].name] = sums[m] / static_cast<double>(d.size());
    return out;
}

template <class T>
xt::xarray<T> predict(nn::Layer<T>& model, const xt::xarray<T>& x, std::size_t batch_size,
                      const std::vector<std::int64_t>& lengths, Precision precision) {
    if (batch_size == 0) throw value_error("predict: batch_size must be positive");
    if (x.dimension() == 0 || x.shape()[0] == 0) throw value_error("predict: x is empty");
    if (!lengths.empty() && lengths.size() != x.shape()[0])
        throw shape_error("predict: " + std::to_string(lengths.size()) + " lengths for " + std::to_string(x.shape()[0]) +
                          " samples");
    ModeGuard<T> eval(model, false);
    Tape<T> tape({.record = false, .precision = precision});
    const std::size_t n = x.shape()[0];
    xt::xarray<T> out;
    std::size_t row = 0, per = 0;
    for (const auto& idx : data::BatchIterator(n, batch_size, false).epoch(0)) {
        tape.clear();
        Var<T> pred = model(tape.constant(data::gather_batch(x, idx)), take<T>(lengths, idx));
        const auto& pv = pred.value();
        if (pv.dimension() == 0 || pv.shape()[0] != idx.size())
            throw shape_error("predict: the model returned shape " + shape_str(pv.shape()) + " for a batch of " +
                              std::to_string(idx.size()));
        if (row == 0) {
            Shape s = pv.shape();
            s[0] = n;
            out.resize(s);
            per = pv.size() / idx.size();
        }
        std::copy(pv.data(), pv.data() + pv.size(), out.data() + row * per);
        row += idx.size();
    }
    return out;
}

// ---- Across processes ---------------------------------------------------------------------

namespace {

// What every rank must agree on before training: options, sample counts, scalar type, and
// the shape of every parameter, as one list of numbers.
template <class T>
std::vector<std::uint64_t> describe(const std::vector<Parameter<T>*>& params, const FitOptions<T>& o, std::size_t n_train,
                                    std::size_t n_val) {
    std::vector<std::uint64_t> d{sizeof(T), o.epochs, o.batch_size, o.initial_epoch, o.seed, o.shuffle,
                                 n_train, n_val, params.size()};
    for (auto* p : params) {
        d.push_back(p->shape().size());
        d.insert(d.end(), p->shape().begin(), p->shape().end());
    }
    return d;
}
constexpr std::size_t described_options = 9;  // entries of describe() before the shapes

// The parameter shapes a description lists after its options.
std::vector<Shape> described_shapes(const std::vector<std::uint64_t>& d) {
    std::vector<Shape> out;
    for (std::size_t k = described_options; k < d.size(); k += 1 + d[k])
        out.emplace_back(d.begin() + static_cast<std::ptrdiff_t>(k + 1), d.begin() + static_cast<std::ptrdiff_t>(k + 1 + d[k]));
    return out;
}

// value_error naming both sides unless this rank's description equals rank 0's.
template <class T>
void check_same_as_rank0(distributed::Communicator& comm, nn::Layer<T>& model, const FitOptions<T>& o, std::size_t n_train,
                         std::size_t n_val) {
    const auto params = model.named_parameters();
    std::vector<Parameter<T>*> ps;
    for (auto& np : params) ps.push_back(np.second);
    const auto mine = describe(ps, o, n_train, n_val);
    std::uint64_t length = mine.size();
    comm.broadcast(std::as_writable_bytes(std::span(&length, 1)), 0);
    std::vector<std::uint64_t> rank0 = comm.rank() == 0 ? mine : std::vector<std::uint64_t>(length);
    comm.broadcast(std::as_writable_bytes(std::span(rank0)), 0);
    if (mine == rank0) return;
    const std::string who = "fit: rank " + std::to_string(comm.rank());
    static const char* option_names[described_options] = {"scalar bytes", "epochs", "batch_size", "initial_epoch", "seed",
                                                          "shuffle", "training samples", "validation samples",
                                                          "parameter count"};
    for (std::size_t k = 0; k + 1 < described_options && k < rank0.size(); ++k)
        if (mine[k] != rank0[k])
            throw value_error(who + " has " + option_names[k] + " " + std::to_string(mine[k]) + " but rank 0 has " +
                              std::to_string(rank0[k]) + "; every rank must call fit with the same options and data");
    const auto a = described_shapes(mine), b = described_shapes(rank0);
    for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i)
        if (a[i] != b[i])
            throw value_error(who + "'s model differs from rank 0's: parameter " + std::to_string(i) + " ('" +
                              params[i].first + "') has shape " + shape_str(a[i]) + " on rank " +
                              std::to_string(comm.rank()) + " and " + shape_str(b[i]) + " on rank 0");
    auto list = [](const std::vector<Shape>& shapes) {
        std::string s;
        for (const auto& x : shapes) s += (s.empty() ? "" : ", ") + shape_str(x);
        return s;
    };
    throw value_error(who + "'s model differs from rank 0's: " + std::to_string(a.size()) + " parameters of shapes " +
                      list(a) + " on rank " + std::to_string(comm.rank()) + ", " + std::to_string(b.size()) +
                      " of shapes " + list(b) + " on rank 0");
}

// Rank 0's parameters and optimizer state on every rank.
template <class T>
void broadcast_from_rank0(distributed::Communicator& comm, const std::vector<Parameter<T>*>& params,
                          optim::Optimizer<T>& optimizer) {
    for (auto* p : params) comm.broadcast(std::span<T>(p->value().data(), p->size()), 0);
    auto state = optimizer.state();
    for (auto& [name, a] : state) comm.broadcast(std::span<T>(a.data(), a.size()), 0);
    optimizer.load_state(state);
}

// Rank `rank`'s part [first, last) of a global batch of m samples cut for `size` ranks.
std::pair<std::size_t, std::size_t> rank_part(std::size_t m, int rank, int size) {
    const auto parts = DataParallel<double>::split(m, static_cast<std::size_t>(size));
    const auto r = static_cast<std::size_t>(rank);
    return r < parts.size() ? parts[r] : std::pair<std::size_t, std::size_t>{m, m};
}

}  // namespace

// ---- fit ----------------------------------------------------------------------------------

namespace {

template <class T>
History fit_here(nn::Layer<T>& model, const LossFn<T>& loss, optim::Optimizer<T>& optimizer, const Dataset<T>& data,
                 const FitOptions<T>& o) {
    if (o.batch_size == 0) throw value_error("fit: batch_size must be positive");
    if (o.threads == 0) throw value_error("fit: threads must be >= 1, got 0");
    if (!(o.validation_split >= 0 && o.validation_split < 1))
        throw value_error("fit: validation_split must be in [0, 1), got " + std::to_string(o.validation_split));
    check_dataset("fit", data, "training");
    if (o.validation_data) check_dataset("fit", *o.validation_data, "validation");

    // Keras: the validation split is the last samples, taken before any shuffling.
    const std::size_t n = data.size();
    const std::size_t n_val = o.validation_data ? 0 : static_cast<std::size_t>(static_cast<double>(n) * o.validation_split);
    if (n_val >= n) throw value_error("fit: validation_split leaves no training samples");
    const Dataset<T> train = n_val ? rows(data, 0, n - n_val) : Dataset<T>{};
    const Dataset<T>& tr = n_val ? train : data;
    const Dataset<T> split_val = n_val ? rows(data, n - n_val, n) : Dataset<T>{};
    const Dataset<T>* val = o.validation_data ? o.validation_data : (n_val ? &split_val : nullptr);

    const auto params = model.parameters();
    // Across processes: rank r of size ranks (one process: rank 0 of 1).
    distributed::Communicator* comm = o.communicator;
    const int rank = comm ? comm->rank() : 0, size = comm ? comm->size() : 1;
    std::optional<distributed::GradReducer<T>> reducer;
    Dataset<T> val_part;  // this rank's contiguous part of the validation data
    std::size_t val_first = 0, val_last = val ? val->size() : 0;
    if (comm) {
        check_same_as_rank0(*comm, model, o, tr.size(), val ? val->size() : 0);
        broadcast_from_rank0(*comm, params, optimizer);
        reducer.emplace(*comm, params, distributed::GradReducerOptions{.bucket_bytes = o.bucket_bytes});
        if (val) {
            std::tie(val_first, val_last) = rank_part(val->size(), rank, size);
            if (val_last > val_first) val_part = rows(*val, val_first, val_last);
        }
    }
    // Per step: each rank's n_r * loss, then each metric's sum over the rank's samples.
    std::vector<double> exchange(static_cast<std::size_t>(size) + o.metrics.size());

    const data::BatchIterator batches(tr.size(), o.batch_size * static_cast<std::size_t>(size), o.shuffle, o.seed);
    History history;
    TrainContext<T> ctx{model, optimizer, history};
    detail::Progress progress(rank == 0 ? o.verbose : 0);
    Tape<T> tape({.retain_grads = false, .precision = o.precision});  // gradient buffers reused within a sweep
    if (o.threads > 1 && o.precision != Precision::f32) throw value_error("fit: precision bf16 needs threads = 1");
    std::optional<DataParallel<T>> parallel;
    if (o.threads > 1) parallel.emplace(model, loss, DataParallelOptions{.threads = o.threads});
    else if (reducer) reducer->attach(tape);
    for (auto* cb : o.callbacks) cb->on_train_begin(ctx);
    for (std::size_t epoch = o.initial_epoch; epoch < o.epochs; ++epoch) {
        const auto start = std::chrono::steady_clock::now();
        if (reducer) reducer->reset_timers();
        model.train();
        const auto epoch_batches = batches.epoch(epoch);
        progress.epoch_begin(epoch, o.epochs, epoch_batches.size());
        double loss_sum = 0, seen = 0;
        std::vector<double> metric_sums(o.metrics.size(), 0.0);
        std::size_t skipped = 0;
        for (std::size_t b = 0; b < epoch_batches.size(); ++b) {
            const auto& global = epoch_batches[b];
            const auto [first, last] = rank_part(global.size(), rank, size);
            const std::vector<std::size_t> idx(global.begin() + static_cast<std::ptrdiff_t>(first),
                                               global.begin() + static_cast<std::ptrdiff_t>(last));
            const std::uint64_t seed = comm && size > 1 ? DataParallel<T>::shard_seed(mix(o.seed, epoch, b), rank)
                                                        : mix(o.seed, epoch, b);
            Var<T> pred, l;
            xt::xarray<T> yb;
            double lv = 0;
            if (!idx.empty()) {
                const xt::xarray<T> xb = data::gather_batch(tr.x, idx);
                yb = data::gather_batch(tr.y, idx);
                tape.clear();
                if (parallel) {
                    optimizer.zero_grad();
                    lv = parallel->step(xb, yb, take<T>(tr.lengths, idx), seed);  // adds no grad if not finite
                } else {
                    tape.seed(seed);
                    pred = model(tape.constant(xb), take<T>(tr.lengths, idx));
                    l = loss(pred, tape.constant(yb));
                    lv = static_cast<double>(l.item());
                }
            }
            // Metric sums over this rank's samples.
            const double n_local = static_cast<double>(idx.size());
            std::fill(exchange.begin(), exchange.end(), 0.0);
            for (std::size_t m = 0; m < o.metrics.size() && !idx.empty(); ++m) {
                double& sum = exchange[static_cast<std::size_t>(size) + m];
                if (parallel) {
                    for (std::size_t k = 0; k < parallel->shards().size(); ++k) {
                        const auto [f, e] = parallel->shards()[k];
                        sum += static_cast<double>(e - f) * o.metrics[m].fn(parallel->prediction(k), parallel->target(k));
                    }
                } else {
                    sum += n_local * o.metrics[m].fn(pred.value(), yb);
                }
            }
            const double bs = static_cast<double>(global.size());
            if (comm) {  // the global batch's loss: sum_r n_r L_r / n, added in rank order
                if (!idx.empty()) exchange[static_cast<std::size_t>(rank)] = n_local * lv;
                comm->allreduce_sum(std::span<double>(exchange));
                lv = 0;
                for (int r = 0; r < size; ++r) lv += exchange[static_cast<std::size_t>(r)];
                lv /= bs;
            }
            if (!std::isfinite(lv)) {
                std::string where;
                for (int r = 0; comm && size > 1 && r < size && where.empty(); ++r)
                    if (!std::isfinite(exchange[static_cast<std::size_t>(r)])) where = " on rank " + std::to_string(r);
                if (o.on_non_finite == NonFinite::stop)
                    throw value_error("fit: the loss is " + std::to_string(lv) + where + " at epoch " +
                                      std::to_string(epoch + 1) + ", batch " + std::to_string(b + 1) + " of " +
                                      std::to_string(epoch_batches.size()) +
                                      " (FitOptions::on_non_finite = NonFinite::skip_batch skips such batches)");
                ++skipped;
                continue;
            }
            if (!parallel) optimizer.zero_grad();
            if (reducer) reducer->begin(n_local / bs);
            if (!parallel && !idx.empty()) tape.backward(l);
            if (reducer) reducer->finish();
            if (o.clip_value) optim::clip_grad_value(params, *o.clip_value);
            if (o.clip_norm) optim::clip_grad_norm(params, *o.clip_norm);
            optimizer.step();
            loss_sum += bs * lv;
            seen += bs;
            detail::Logs running{{"loss", loss_sum / seen}};
            for (std::size_t m = 0; m < o.metrics.size(); ++m) {
                metric_sums[m] += exchange[static_cast<std::size_t>(size) + m];
                running.emplace_back(o.metrics[m].name, metric_sums[m] / seen);
            }
            progress.batch_end(b + 1, running);
        }
        detail::Logs logs{{"loss", seen ? loss_sum / seen : std::nan("")}};
        for (std::size_t m = 0; m < o.metrics.size(); ++m)
            logs.emplace_back(o.metrics[m].name, seen ? metric_sums[m] / seen : std::nan(""));
        if (val && comm) {  // each rank its part; sums weighted by part size, then over the ranks
            std::vector<double> sums(1 + o.metrics.size(), 0.0);
            if (val_last > val_first) {
                const auto v = evaluate(model, loss, val_part, o.batch_size, o.metrics);
                const double w = static_cast<double>(val_last - val_first);
                sums[0] = w * v.at("loss");
                for (std::size_t m = 0; m < o.metrics.size(); ++m) sums[1 + m] = w * v.at(o.metrics[m].name);
            }
            comm->allreduce_sum(std::span<double>(sums));
            const double nv = static_cast<double>(val->size());
            logs.emplace_back("val_loss", sums[0] / nv);
            for (std::size_t m = 0; m < o.metrics.size(); ++m) logs.emplace_back("val_" + o.metrics[m].name, sums[1 + m] / nv);
        } else if (val) {
            const auto v = evaluate(model, loss, *val, o.batch_size, o.metrics);
            logs.emplace_back("val_loss", v.at("loss"));
            for (const auto& m : o.metrics) logs.emplace_back("val_" + m.name, v.at(m.name));
        }
        if (skipped) logs.emplace_back("skipped_batches", static_cast<double>(skipped));
        double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        std::array<double, 3> timing{seconds, reducer ? reducer->comm_seconds() : 0.0, reducer ? reducer->wait_seconds() : 0.0};
        if (comm) comm->broadcast(std::span<double>(timing), 0);  // rank 0's, so that every History is the same
        seconds = timing[0];
        progress.epoch_end(logs, seconds);
        logs.emplace_back("lr", optimizer.lr());
        logs.emplace_back("seconds", seconds);
        if (comm) {
            logs.emplace_back("comm_seconds", timing[1]);
            logs.emplace_back("comm_wait_seconds", timing[2]);
        }
        history.append(epoch, logs);
        ctx.epoch = epoch;
        const std::map<std::string, double> log_map(logs.begin(), logs.end());
        for (auto* cb : o.callbacks)
            if (rank == 0 || dynamic_cast<ModelCheckpoint<T>*>(cb) == nullptr) cb->on_epoch_end(ctx, log_map);
        if (comm) {  // rank 0 decides whether to stop
            double stop = ctx.stop ? 1 : 0;
            comm->broadcast(std::span<double>(&stop, 1), 0);
            ctx.stop = stop != 0;
        }
        if (ctx.stop) break;
    }
    for (auto* cb : o.callbacks) cb->on_train_end(ctx);
    return history;
}

}  // namespace

template <class T>
History fit(nn::Layer<T>& model, const LossFn<T>& loss, optim::Optimizer<T>& optimizer, const Dataset<T>& data,
            const FitOptions<T>& o) {
    if (!o.communicator) return fit_here(model, loss, optimizer, data, o);
    History history;
    distributed::run_or_abort(*o.communicator, [&] { history = fit_here(model, loss, optimizer, data, o); });
    return history;
}

#define RECUR_TRAIN(T)                                                                                             \
    template Metric<T> mae<T>();                                                                                   \
    template Metric<T> binary_accuracy<T>(double);                                                                 \
    template Metric<T> categorical_accuracy<T>(std::int64_t);                                                      \
    template History fit(nn::Layer<T>&, const LossFn<T>&, optim::Optimizer<T>&, const Dataset<T>&,                 \
                         const FitOptions<T>&);                                                                    \
    template std::map<std::string, double> evaluate(nn::Layer<T>&, const LossFn<T>&, const Dataset<T>&, std::size_t, \
                                                    const std::vector<Metric<T>>&);                                \
    template xt::xarray<T> predict(nn::Layer<T>&, const xt::xarray<T>&, std::size_t, const std::vector<std::int64_t>&, Precision);
RECUR_TRAIN(float)
RECUR_TRAIN(double)

}  // namespace recur::train
