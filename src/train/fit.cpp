// fit / evaluate / predict and the History they produce.
#include <chrono>
#include <cmath>
#include <sstream>

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
                      const std::vector<std::int64_t>& lengths) {
    if (batch_size == 0) throw value_error("predict: batch_size must be positive");
    if (x.dimension() == 0 || x.shape()[0] == 0) throw value_error("predict: x is empty");
    if (!lengths.empty() && lengths.size() != x.shape()[0])
        throw shape_error("predict: " + std::to_string(lengths.size()) + " lengths for " + std::to_string(x.shape()[0]) +
                          " samples");
    ModeGuard<T> eval(model, false);
    Tape<T> tape({.record = false});
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

// ---- fit ----------------------------------------------------------------------------------

template <class T>
History fit(nn::Layer<T>& model, const LossFn<T>& loss, optim::Optimizer<T>& optimizer, const Dataset<T>& data,
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
    const data::BatchIterator batches(tr.size(), o.batch_size, o.shuffle, o.seed);
    History history;
    TrainContext<T> ctx{model, optimizer, history};
    detail::Progress progress(o.verbose);
    Tape<T> tape({.retain_grads = false});  // intermediate gradient buffers are reused within a sweep
    std::optional<DataParallel<T>> parallel;
    if (o.threads > 1) parallel.emplace(model, loss, DataParallelOptions{.threads = o.threads});
    for (auto* cb : o.callbacks) cb->on_train_begin(ctx);
    for (std::size_t epoch = o.initial_epoch; epoch < o.epochs; ++epoch) {
        const auto start = std::chrono::steady_clock::now();
        model.train();
        const auto epoch_batches = batches.epoch(epoch);
        progress.epoch_begin(epoch, o.epochs, epoch_batches.size());
        double loss_sum = 0, seen = 0;
        std::vector<double> metric_sums(o.metrics.size(), 0.0);
        std::size_t skipped = 0;
        for (std::size_t b = 0; b < epoch_batches.size(); ++b) {
            const auto& idx = epoch_batches[b];
            const xt::xarray<T> xb = data::gather_batch(tr.x, idx), yb = data::gather_batch(tr.y, idx);
            tape.clear();
            Var<T> pred, l;
            double lv;
            if (parallel) {
                optimizer.zero_grad();
                lv = parallel->step(xb, yb, take<T>(tr.lengths, idx), mix(o.seed, epoch, b));  // adds no grad if not finite
            } else {
                tape.seed(mix(o.seed, epoch, b));
                pred = model(tape.constant(xb), take<T>(tr.lengths, idx));
                l = loss(pred, tape.constant(yb));
                lv = static_cast<double>(l.item());
            }
            if (!std::isfinite(lv)) {
                if (o.on_non_finite == NonFinite::stop)
                    throw value_error("fit: the loss is " + std::to_string(lv) + " at epoch " + std::to_string(epoch + 1) +
                                      ", batch " + std::to_string(b + 1) + " of " + std::to_string(epoch_batches.size()) +
                                      " (FitOptions::on_non_finite = NonFinite::skip_batch skips such batches)");
                ++skipped;
                continue;
            }
            if (!parallel) {
                optimizer.zero_grad();
                tape.backward(l);
            }
            if (o.clip_value) optim::clip_grad_value(params, *o.clip_value);
            if (o.clip_norm) optim::clip_grad_norm(params, *o.clip_norm);
            optimizer.step();
            const double bs = static_cast<double>(idx.size());
            loss_sum += bs * lv;
            seen += bs;
            detail::Logs running{{"loss", loss_sum / seen}};
            for (std::size_t m = 0; m < o.metrics.size(); ++m) {
                if (parallel) {
                    for (std::size_t k = 0; k < parallel->shards().size(); ++k) {
                        const auto [first, last] = parallel->shards()[k];
                        metric_sums[m] += static_cast<double>(last - first) *
                                          o.metrics[m].fn(parallel->prediction(k), parallel->target(k));
                    }
                } else {
                    metric_sums[m] += bs * o.metrics[m].fn(pred.value(), yb);
                }
                running.emplace_back(o.metrics[m].name, metric_sums[m] / seen);
            }
            progress.batch_end(b + 1, running);
        }
        detail::Logs logs{{"loss", seen ? loss_sum / seen : std::nan("")}};
        for (std::size_t m = 0; m < o.metrics.size(); ++m)
            logs.emplace_back(o.metrics[m].name, seen ? metric_sums[m] / seen : std::nan(""));
        if (val) {
            const auto v = evaluate(model, loss, *val, o.batch_size, o.metrics);
            logs.emplace_back("val_loss", v.at("loss"));
            for (const auto& m : o.metrics) logs.emplace_back("val_" + m.name, v.at(m.name));
        }
        if (skipped) logs.emplace_back("skipped_batches", static_cast<double>(skipped));
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        progress.epoch_end(logs, seconds);
        logs.emplace_back("lr", optimizer.lr());
        logs.emplace_back("seconds", seconds);
        history.append(epoch, logs);
        ctx.epoch = epoch;
        const std::map<std::string, double> log_map(logs.begin(), logs.end());
        for (auto* cb : o.callbacks) cb->on_epoch_end(ctx, log_map);
        if (ctx.stop) break;
    }
    for (auto* cb : o.callbacks) cb->on_train_end(ctx);
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
    template xt::xarray<T> predict(nn::Layer<T>&, const xt::xarray<T>&, std::size_t, const std::vector<std::int64_t>&);
RECUR_TRAIN(float)
RECUR_TRAIN(double)

}  // namespace recur::train
