// fit / evaluate / predict and the History they produce.
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <limits>
#include <optional>
#include <span>
#include <sstream>
#include <tuple>
#include <variant>

#include <xtensor/xarray.hpp>
#include <xtensor/xoperation.hpp>

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
    return {"binary_accuracy", [threshold](const xt::xarray<T>& p, const xt::xarray<T>& y) {
                return metrics::binary_accuracy(p, y, threshold);
            }};
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

namespace {

// A seed for batch b of epoch e (splitmix64 of the three).
std::uint64_t mix(std::uint64_t seed, std::uint64_t epoch, std::uint64_t batch) {
    return detail::splitmix64(seed + detail::seed_weight_1 * (epoch + 1) + detail::seed_weight_2 * (batch + 1));
}

}  // namespace

// ---- Inputs and Batch ---------------------------------------------------------------------

namespace {

template <class T>
Shape input_shape(const Input<T>& a) {
    return std::visit([](const auto& v) { return Shape(v.shape().begin(), v.shape().end()); }, a);
}

}  // namespace

template <class T>
Inputs<T>& Inputs<T>::add(std::string name, Input<T> array) {
    if (name.empty()) throw value_error("Inputs::add: an input needs a name");
    if (find(name)) throw value_error("Inputs::add: two inputs named '" + name + "'");
    if (input_shape(array).empty())
        throw shape_error("Inputs::add: input '" + name + "' has shape (); samples run along axis 0");
    inputs_.emplace_back(std::move(name), std::move(array));
    return *this;
}

template <class T>
std::size_t Inputs<T>::samples() const {
    return inputs_.empty() ? 0 : input_shape(inputs_[0].second)[0];
}

template <class T>
const std::string& Inputs<T>::name(std::size_t k) const {
    if (k >= inputs_.size())
        throw index_error("Inputs: input " + std::to_string(k) + " of " + std::to_string(inputs_.size()));
    return inputs_[k].first;
}

template <class T>
const Input<T>& Inputs<T>::operator[](std::size_t k) const {
    name(k);  // the range check
    return inputs_[k].second;
}

template <class T>
Input<T>& Inputs<T>::operator[](std::size_t k) {
    name(k);  // the range check
    return inputs_[k].second;
}

template <class T>
std::optional<std::size_t> Inputs<T>::find(std::string_view name) const {
    for (std::size_t k = 0; k < inputs_.size(); ++k)
        if (inputs_[k].first == name) return k;
    return std::nullopt;
}

template <class T>
const Input<T>& Inputs<T>::operator[](std::string_view name) const {
    if (auto k = find(name)) return inputs_[*k].second;
    std::string known;
    for (const auto& [n, a] : inputs_) known += (known.empty() ? "" : ", ") + n;
    throw index_error("Inputs: no input named '" + std::string(name) + "' (has: " + known + ")");
}

template <class T>
const xt::xarray<T>& Batch<T>::values(std::string_view name) const {
    const auto* a = std::get_if<xt::xarray<T>>(&(*rows_)[name]);
    if (!a)
        throw value_error("Batch: input '" + std::string(name) +
                          "' holds integer ids, not float values (read it with ids())");
    return *a;
}

template <class T>
Var<T> Batch<T>::var(std::string_view name) const {
    return tape_->constant(values(name));
}

template <class T>
Var<T> Batch<T>::var(std::size_t k) const {
    return var(rows_->name(k));
}

template <class T>
const xt::xarray<std::int64_t>& Batch<T>::ids(std::string_view name) const {
    const auto* a = std::get_if<xt::xarray<std::int64_t>>(&(*rows_)[name]);
    if (!a)
        throw value_error("Batch: input '" + std::string(name) +
                          "' holds float values, not integer ids (read it with var() or values())");
    return *a;
}

template <class T>
std::vector<std::int64_t> Batch<T>::lengths(std::string_view name) const {
    const auto& a = ids(name);
    if (a.dimension() != 1)
        throw shape_error("Batch::lengths: input '" + std::string(name) + "' has shape " + shape_str(a.shape()) +
                          "; lengths are one per sample, shape (B)");
    return {a.begin(), a.end()};
}

// ---- Tables: what fit, evaluate and predict read ------------------------------------------

namespace {

// A borrowed input or target array: float values or integer ids.
template <class T>
using Column = std::variant<const xt::xarray<T>*, const xt::xarray<std::int64_t>*>;

template <class T>
Column<T> borrow(const Input<T>& a) {
    return std::visit([](const auto& v) -> Column<T> { return &v; }, a);
}

template <class T>
Shape column_shape(const Column<T>& c) {
    return std::visit([](const auto* a) { return Shape(a->shape().begin(), a->shape().end()); }, c);
}

// Named input columns and the targets (borrowed), and the samples [first, first + count) of
// them along axis 0. A part (the validation split, one rank's share) is the same columns
// with another range: nothing is copied.
template <class T>
struct Table {
    std::vector<std::pair<std::string, Column<T>>> inputs;
    std::optional<Column<T>> y;
    std::size_t first = 0, count = 0;
    bool single = false;  // a Dataset's x (and lengths): messages say "x", not "input 'x'"

    Table part(std::size_t begin, std::size_t end) const {
        Table t = *this;
        t.first = first + begin;
        t.count = end - begin;
        return t;
    }
    std::string label(const std::string& name) const { return single ? name : "input '" + name + "'"; }
};

// The table of a single-input Dataset: "x", then "lengths" (as an id array it owns) if given.
template <class T>
struct DatasetTable {
    xt::xarray<std::int64_t> lengths;
    Table<T> table;

    DatasetTable(const xt::xarray<T>& x, const xt::xarray<T>* y, const std::vector<std::int64_t>& l) {
        table.single = true;
        table.count = x.dimension() == 0 ? 0 : x.shape()[0];
        table.inputs.emplace_back("x", &x);
        if (!l.empty()) {
            lengths = xt::xarray<std::int64_t>::from_shape({l.size()});
            std::copy(l.begin(), l.end(), lengths.begin());
            table.inputs.emplace_back("lengths", &lengths);
        }
        if (y) table.y = y;
    }
    DatasetTable(const DatasetTable&) = delete;
    DatasetTable& operator=(const DatasetTable&) = delete;
};

template <class T>
Table<T> multi_table(const Inputs<T>& x, const Input<T>* y) {
    Table<T> t;
    for (std::size_t k = 0; k < x.size(); ++k) t.inputs.emplace_back(x.name(k), borrow(x[k]));
    if (y) t.y = borrow(*y);
    t.count = x.samples();
    return t;
}

// shape_error unless every input and y hold count samples; value_error for no inputs, no
// samples, or integer targets that T cannot hold exactly.
template <class T>
void check_table(const char* fn, const Table<T>& t, const char* which) {
    const std::string head = std::string(fn) + ": " + (*which ? std::string(which) + " " : std::string());
    if (t.inputs.empty()) throw value_error(head + "data has no inputs");
    if (t.count == 0) throw value_error(head + "data is empty");
    const std::string& name0 = t.inputs[0].first;
    const Shape s0 = column_shape(t.inputs[0].second);
    auto check = [&](const std::string& label, const Column<T>& c) {
        const Shape s = column_shape(c);
        if (s.empty() || s[0] != s0[0])
            throw shape_error(head + label + " has shape " + shape_str(s) + " but " + t.label(name0) + " has shape " +
                              shape_str(s0) + "; every input and y must hold the same number of samples on axis 0");
    };
    for (std::size_t k = 1; k < t.inputs.size(); ++k) check(t.label(t.inputs[k].first), t.inputs[k].second);
    if (!t.y) return;
    check("y", *t.y);
    if (const auto* ids = std::get_if<const xt::xarray<std::int64_t>*>(&*t.y)) {
        constexpr auto exact = std::int64_t(1) << std::numeric_limits<T>::digits;
        for (std::size_t k = 0; k < (*ids)->size(); ++k)
            if ((*ids)->data()[k] > exact || (*ids)->data()[k] < -exact)
                throw value_error(head + "y holds the id " + std::to_string((*ids)->data()[k]) +
                                  ", which the model's scalar type cannot hold exactly");
    }
}

// value_error naming the array and the sample of the first NaN or infinity in a float input
// or y (inputs in order, then y).
template <class T>
void check_finite(const char* fn, const char* which, const Table<T>& t) {
    auto check = [&](const std::string& label, const Column<T>& c) {
        const auto* const* a = std::get_if<const xt::xarray<T>*>(&c);
        if (!a) return;
        const std::size_t per = (*a)->size() / (*a)->shape()[0];
        const T* data = (*a)->data() + t.first * per;
        for (std::size_t k = 0; k < t.count * per; ++k)
            if (!std::isfinite(data[k]))
                throw value_error(std::string(fn) + ": " + which + " " + label + " has a non-finite value (" +
                                  std::to_string(data[k]) + ") in sample " + std::to_string(k / per));
    };
    for (const auto& [name, c] : t.inputs) check(t.label(name), c);
    if (t.y) check("y", *t.y);
}

// Per sample of `t`: 1 if a float input or y holds a NaN or an infinity in it.
template <class T>
std::vector<char> non_finite_samples(const Table<T>& t) {
    std::vector<char> bad(t.count, 0);
    auto mark = [&](const Column<T>& c) {
        const auto* const* a = std::get_if<const xt::xarray<T>*>(&c);
        if (!a) return;
        const std::size_t per = (*a)->size() / (*a)->shape()[0];
        const T* data = (*a)->data() + t.first * per;
        for (std::size_t k = 0; k < t.count * per; ++k)
            if (!std::isfinite(data[k])) bad[k / per] = 1;
    };
    for (const auto& [name, c] : t.inputs) mark(c);
    if (t.y) mark(*t.y);
    return bad;
}

// The samples [begin, end) whose flag in `bad` is 0.
inline std::vector<std::size_t> finite_samples(const std::vector<char>& bad, std::size_t begin, std::size_t end) {
    std::vector<std::size_t> keep;
    for (std::size_t i = begin; i < end; ++i)
        if (!bad[i]) keep.push_back(i - begin);
    return keep;
}

// Rows first + idx[k] of a (N, ...) array into `out`, shaped (idx.size(), ...) (its buffer is
// reused when the size is the same: no allocation from one full batch to the next).
template <class V, class W>
void gather_rows(const xt::xarray<V>& a, std::size_t first, const std::vector<std::size_t>& idx, xt::xarray<W>& out) {
    Shape s(a.shape().begin(), a.shape().end());
    const std::size_t per = a.size() / s[0];
    s[0] = idx.size();
    out.resize(s);
    for (std::size_t k = 0; k < idx.size(); ++k) {
        const V* src = a.data() + (first + idx[k]) * per;
        std::transform(src, src + per, out.data() + k * per, [](V v) { return static_cast<W>(v); });
    }
}

template <class V>
xt::xarray<V> gather_rows(const xt::xarray<V>& a, std::size_t first, const std::vector<std::size_t>& idx) {
    xt::xarray<V> out;
    gather_rows(a, first, idx, out);
    return out;
}

// The batch `idx` (sample numbers within the table) of every input.
template <class T>
Inputs<T> gather_inputs(const Table<T>& t, const std::vector<std::size_t>& idx) {
    Inputs<T> out;
    for (const auto& [name, c] : t.inputs)
        out.add(name, std::visit([&](const auto* a) -> Input<T> { return gather_rows(*a, t.first, idx); }, c));
    return out;
}

// The same into `out`, reusing its buffers once it holds the table's inputs.
template <class T>
void gather_inputs(const Table<T>& t, const std::vector<std::size_t>& idx, Inputs<T>& out) {
    if (out.size() != t.inputs.size()) {
        out = gather_inputs(t, idx);
        return;
    }
    for (std::size_t k = 0; k < out.size(); ++k)
        std::visit(
            [&](const auto* a) {
                using V = typename std::decay_t<decltype(*a)>::value_type;
                gather_rows(*a, t.first, idx, std::get<xt::xarray<V>>(out[k]));
            },
            t.inputs[k].second);
}

// The batch `idx` of the targets, as T, into `out`.
template <class T>
void gather_targets(const Table<T>& t, const std::vector<std::size_t>& idx, xt::xarray<T>& out) {
    if (const auto* const* a = std::get_if<const xt::xarray<T>*>(&*t.y))
        gather_rows(**a, t.first, idx, out);
    else
        gather_rows(*std::get<const xt::xarray<std::int64_t>*>(*t.y), t.first, idx, out);
}

template <class T>
xt::xarray<T> gather_targets(const Table<T>& t, const std::vector<std::size_t>& idx) {
    xt::xarray<T> out;
    gather_targets(t, idx, out);
    return out;
}

// A single-input batch's lengths (its second input), or none.
template <class T>
std::vector<std::int64_t> lengths_of(const Inputs<T>& rows) {
    if (rows.size() < 2) return {};
    const auto& l = std::get<xt::xarray<std::int64_t>>(rows[1]);
    return {l.begin(), l.end()};
}

// The model: a Layer (x and optional lengths) or a Model (a Batch of named inputs).
template <class T>
struct Net {
    nn::Layer<T>* layer = nullptr;
    Model<T>* model = nullptr;

    nn::Module<T>& module() const {
        if (layer) return *layer;
        return *model;
    }
    bool stateful() const { return layer && layer->stateful(); }
    /// A stateful layer forgets its carried state (the start of an epoch, of an evaluation).
    void reset_states() const {
        if (stateful()) layer->reset_states();
    }
    Var<T> operator()(Tape<T>& tape, const Inputs<T>& rows) const {
        if (model) return (*model)(Batch<T>(tape, rows));
        return (*layer)(tape.constant(std::get<xt::xarray<T>>(rows[0])), lengths_of(rows));
    }
};

// shape_error / value_error naming fn unless d's x, y and lengths hold the same samples.
template <class T>
void check_dataset(const char* fn, const Dataset<T>& d, const char* name) {
    if (d.x.dimension() == 0 || d.x.shape()[0] == 0)
        throw value_error(std::string(fn) + ": the " + name + " data is empty");
    if (d.y.dimension() == 0 || d.y.shape()[0] != d.x.shape()[0])
        throw shape_error(std::string(fn) + ": " + name + " x has shape " + shape_str(d.x.shape()) +
                          " and y has shape " + shape_str(d.y.shape()) + "; their first axes (samples) must be equal");
    if (!d.lengths.empty() && d.lengths.size() != d.x.shape()[0])
        throw shape_error(std::string(fn) + ": " + std::to_string(d.lengths.size()) + " lengths for " +
                          std::to_string(d.x.shape()[0]) + " samples");
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

namespace {

// Loss and metrics over the table in eval mode, without recording; over the samples `keep`
// of it only, if given (NaN when it is empty).
template <class T>
std::map<std::string, double> evaluate_table(const Net<T>& net, const LossFn<T>& loss, const Table<T>& d,
                                             std::size_t batch_size, const std::vector<Metric<T>>& metrics,
                                             const std::vector<std::size_t>* keep = nullptr) {
    ModeGuard<T> eval(net.module(), false);
    net.reset_states();
    Tape<T> tape({.record = false});
    const std::size_t count = keep ? keep->size() : d.count;
    std::vector<std::vector<std::size_t>> batches;
    if (count) batches = data::BatchIterator(count, batch_size, false).epoch(0);
    double total = 0;
    std::vector<double> sums(metrics.size(), 0.0);
    for (auto& idx : batches) {
        if (keep)
            for (auto& i : idx) i = (*keep)[i];
        tape.clear();
        const Inputs<T> xb = gather_inputs(d, idx);
        const xt::xarray<T> yb = gather_targets(d, idx);
        Var<T> pred = net(tape, xb);
        const double n = static_cast<double>(idx.size());
        total += n * static_cast<double>(loss(pred, tape.constant(yb)).item());
        for (std::size_t m = 0; m < metrics.size(); ++m) sums[m] += n * metrics[m].fn(pred.value(), yb);
    }
    const double n = count ? static_cast<double>(count) : std::nan("");
    std::map<std::string, double> out{{"loss", total / n}};
    for (std::size_t m = 0; m < metrics.size(); ++m) out[metrics[m].name] = sums[m] / n;
    return out;
}

// The model's outputs for the table's inputs, batches joined on axis 0.
template <class T>
xt::xarray<T> predict_table(const Net<T>& net, const Table<T>& d, std::size_t batch_size, Precision precision) {
    ModeGuard<T> eval(net.module(), false);
    net.reset_states();
    Tape<T> tape({.record = false, .precision = precision});
    xt::xarray<T> out;
    std::size_t row = 0, per = 0;
    for (const auto& idx : data::BatchIterator(d.count, batch_size, false).epoch(0)) {
        tape.clear();
        Var<T> pred = net(tape, gather_inputs(d, idx));
        const auto& pv = pred.value();
        if (pv.dimension() == 0 || pv.shape()[0] != idx.size())
            throw shape_error("predict: the model returned shape " + shape_str(pv.shape()) + " for a batch of " +
                              std::to_string(idx.size()));
        if (row == 0) {
            Shape s = pv.shape();
            s[0] = d.count;
            out.resize(s);
            per = pv.size() / idx.size();
        }
        std::copy(pv.data(), pv.data() + pv.size(), out.data() + row * per);
        row += idx.size();
    }
    return out;
}

}  // namespace

template <class T>
std::map<std::string, double> evaluate(nn::Layer<T>& model, const LossFn<T>& loss, const Dataset<T>& d,
                                       std::size_t batch_size, const std::vector<Metric<T>>& metrics) {
    if (batch_size == 0) throw value_error("evaluate: batch_size must be positive");
    check_dataset("evaluate", d, "evaluation");
    const DatasetTable<T> t(d.x, &d.y, d.lengths);
    check_finite("evaluate", "evaluation", t.table);
    return evaluate_table(Net<T>{&model, nullptr}, loss, t.table, batch_size, metrics);
}

template <class T>
std::map<std::string, double> evaluate(Model<T>& model, const LossFn<T>& loss, const MultiDataset<T>& d,
                                       std::size_t batch_size, const std::vector<Metric<T>>& metrics) {
    if (batch_size == 0) throw value_error("evaluate: batch_size must be positive");
    const Table<T> t = multi_table(d.x, &d.y);
    check_table("evaluate", t, "evaluation");
    check_finite("evaluate", "evaluation", t);
    return evaluate_table(Net<T>{nullptr, &model}, loss, t, batch_size, metrics);
}

template <class T>
xt::xarray<T> predict(nn::Layer<T>& model, const xt::xarray<T>& x, std::size_t batch_size,
                      const std::vector<std::int64_t>& lengths, Precision precision) {
    if (batch_size == 0) throw value_error("predict: batch_size must be positive");
    if (x.dimension() == 0 || x.shape()[0] == 0) throw value_error("predict: x is empty");
    if (!lengths.empty() && lengths.size() != x.shape()[0])
        throw shape_error("predict: " + std::to_string(lengths.size()) + " lengths for " +
                          std::to_string(x.shape()[0]) + " samples");
    const DatasetTable<T> t(x, nullptr, lengths);
    return predict_table(Net<T>{&model, nullptr}, t.table, batch_size, precision);
}

template <class T>
xt::xarray<T> predict(Model<T>& model, const Inputs<T>& x, std::size_t batch_size, Precision precision) {
    if (batch_size == 0) throw value_error("predict: batch_size must be positive");
    const Table<T> t = multi_table<T>(x, nullptr);
    check_table("predict", t, "");
    return predict_table(Net<T>{nullptr, &model}, t, batch_size, precision);
}

// ---- Across processes ---------------------------------------------------------------------

namespace {

// What every rank must agree on before training: options, sample counts, scalar type, and
// the shape of every parameter, as one list of numbers.
template <class T>
std::vector<std::uint64_t> describe(const std::vector<Parameter<T>*>& params, const FitOptions<T>& o,
                                    std::size_t n_train, std::size_t n_val) {
    std::vector<std::uint64_t> d{sizeof(T), o.epochs, o.batch_size, o.initial_epoch, o.seed,
                                 o.shuffle, n_train,  n_val,        params.size()};
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
        out.emplace_back(d.begin() + static_cast<std::ptrdiff_t>(k + 1),
                         d.begin() + static_cast<std::ptrdiff_t>(k + 1 + d[k]));
    return out;
}

// value_error naming both sides unless this rank's description equals rank 0's.
template <class T>
void check_same_as_rank0(distributed::Communicator& comm, nn::Module<T>& model, const FitOptions<T>& o,
                         std::size_t n_train, std::size_t n_val) {
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
    static const char* option_names[described_options] = {
        "scalar bytes", "epochs",           "batch_size",         "initial_epoch",  "seed",
        "shuffle",      "training samples", "validation samples", "parameter count"};
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

// value_error naming fit for options it cannot run.
template <class T>
void check_options(const FitOptions<T>& o) {
    if (o.batch_size == 0) throw value_error("fit: batch_size must be positive");
    if (o.threads == 0) throw value_error("fit: threads must be >= 1, got 0");
    if (!(o.validation_split >= 0 && o.validation_split < 1))
        throw value_error("fit: validation_split must be in [0, 1), got " + std::to_string(o.validation_split));
}

// The fit loop over a checked table; `validation` given explicitly or null.
template <class T>
History fit_here(const Net<T>& net, const LossFn<T>& loss, optim::Optimizer<T>& optimizer, const Table<T>& data,
                 const Table<T>* validation, const FitOptions<T>& o) {
    // NonFinite::stop rejects data holding NaN or infinity up front; skip_batch skips the
    // training batches holding such a sample and validates on the finite samples only.
    const bool skip = o.on_non_finite == NonFinite::skip_batch;
    if (!skip) {
        check_finite("fit", "training", data);
        if (validation) check_finite("fit", "validation", *validation);
    }
    nn::Module<T>& model = net.module();

    // Keras: the validation split is the last samples, taken before any shuffling.
    const std::size_t n = data.count;
    const std::size_t n_val = validation ? 0 : static_cast<std::size_t>(static_cast<double>(n) * o.validation_split);
    if (n_val >= n) throw value_error("fit: validation_split leaves no training samples");
    const Table<T> tr = data.part(0, n - n_val);
    const Table<T> split_val = data.part(n - n_val, n);
    const Table<T>* val = validation ? validation : (n_val ? &split_val : nullptr);
    const std::vector<char> bad = skip ? non_finite_samples(data) : std::vector<char>{};
    const std::size_t bad_train =
        skip ? static_cast<std::size_t>(std::count(bad.begin(), bad.end() - static_cast<std::ptrdiff_t>(n_val), 1)) : 0;
    const std::vector<char> bad_val = skip && validation ? non_finite_samples(*validation) : std::vector<char>{};
    // Validation samples are those of the split (flags of `data`) or of the given data.
    auto val_flags = [&](std::size_t begin, std::size_t end) {
        return validation ? finite_samples(bad_val, begin, end)
                          : finite_samples(bad, n - n_val + begin, n - n_val + end);
    };

    const auto params = model.parameters();
    // Across processes: rank r of size ranks (one process: rank 0 of 1).
    distributed::Communicator* comm = o.communicator;
    const int rank = comm ? comm->rank() : 0, size = comm ? comm->size() : 1;
    std::optional<distributed::GradReducer<T>> reducer;
    Table<T> val_part;  // this rank's contiguous part of the validation data
    std::vector<std::size_t> val_keep;  // with skip_batch, its finite samples
    std::size_t val_first = 0, val_last = val ? val->count : 0;
    if (comm) {
        check_same_as_rank0(*comm, model, o, tr.count, val ? val->count : 0);
        broadcast_from_rank0(*comm, params, optimizer);
        reducer.emplace(
            *comm, params,
            distributed::GradReducerOptions{.bucket_bytes = o.bucket_bytes, .last_bucket_bytes = o.last_bucket_bytes});
        if (val) {
            std::tie(val_first, val_last) = rank_part(val->count, rank, size);
            val_part = val->part(val_first, val_last);
            if (skip) val_keep = val_flags(val_first, val_last);
        }
    }
    // Per step: each rank's n_r * loss, then each metric's sum over the rank's samples.
    std::vector<double> exchange(static_cast<std::size_t>(size) + o.metrics.size());

    const data::BatchIterator batches(tr.count, o.batch_size * static_cast<std::size_t>(size), o.shuffle, o.seed);
    History history;
    TrainContext<T> ctx{model, optimizer, history};
    detail::Progress progress(rank == 0 ? o.verbose : 0);
    Tape<T> tape({.retain_grads = false, .precision = o.precision});  // gradient buffers reused within a sweep
    if (o.threads > 1 && o.precision != Precision::f32) throw value_error("fit: precision bf16 needs threads = 1");
    std::optional<DataParallel<T>> parallel;
    if (o.threads > 1) {
        if (!net.layer)
            throw value_error(
                "fit: threads > 1 (data-parallel threads) trains single-input models (nn::Layer) only; "
                "train a multi-input train::Model with threads = 1, or across processes (communicator)");
        if (net.stateful())
            throw value_error(
                "fit: threads > 1 (data-parallel threads) cannot train a stateful model: its shards "
                "would share one carried state; use threads = 1");
        parallel.emplace(*net.layer, loss, DataParallelOptions{.threads = o.threads});
    } else if (reducer && size > 1) {  // one rank: nothing to overlap, every bucket goes in finish()
        reducer->attach(tape);
    }
    for (auto* cb : o.callbacks) cb->on_train_begin(ctx);
    Inputs<T> xb;  // a batch's rows, refilled in place step after step
    xt::xarray<T> yb;
    for (std::size_t epoch = o.initial_epoch; epoch < o.epochs; ++epoch) {
        const auto start = std::chrono::steady_clock::now();
        if (reducer) reducer->reset_timers();
        model.train();
        net.reset_states();  // a stateful model starts every epoch from zero states
        const auto epoch_batches = batches.epoch(epoch);
        progress.epoch_begin(epoch, o.epochs, epoch_batches.size());
        double loss_sum = 0, seen = 0;
        std::vector<double> metric_sums(o.metrics.size(), 0.0);
        std::size_t skipped = 0, skipped_non_finite = 0;
        for (std::size_t b = 0; b < epoch_batches.size(); ++b) {
            const auto& global = epoch_batches[b];
            if (skip && std::any_of(global.begin(), global.end(), [&](std::size_t i) { return bad[i] != 0; })) {
                ++skipped;  // every rank holds all the data, so every rank skips the same batches
                ++skipped_non_finite;
                continue;
            }
            const auto [first, last] = rank_part(global.size(), rank, size);
            const std::vector<std::size_t> idx(global.begin() + static_cast<std::ptrdiff_t>(first),
                                               global.begin() + static_cast<std::ptrdiff_t>(last));
            const std::uint64_t seed =
                comm && size > 1 ? DataParallel<T>::shard_seed(mix(o.seed, epoch, b), rank) : mix(o.seed, epoch, b);
            Var<T> pred, l;
            double lv = 0;
            if (!idx.empty()) {
                gather_inputs(tr, idx, xb);
                gather_targets(tr, idx, yb);
                tape.clear();
                if (parallel) {
                    optimizer.zero_grad();  // adds no grad if not finite:
                    lv = parallel->step(std::get<xt::xarray<T>>(xb[0]), yb, lengths_of(xb), seed);
                } else {
                    tape.seed(seed);
                    pred = net(tape, xb);
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
                        sum +=
                            static_cast<double>(e - f) * o.metrics[m].fn(parallel->prediction(k), parallel->target(k));
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
        detail::Logs logs{{"loss", seen > 0 ? loss_sum / seen : std::nan("")}};
        for (std::size_t m = 0; m < o.metrics.size(); ++m)
            logs.emplace_back(o.metrics[m].name, seen > 0 ? metric_sums[m] / seen : std::nan(""));
        if (val && comm) {  // each rank its part; sums weighted by part size, then over the ranks
            std::vector<double> sums(2 + o.metrics.size(), 0.0);  // loss, metrics, samples
            const double w = static_cast<double>(skip ? val_keep.size() : val_last - val_first);
            if (w > 0) {
                const auto v = evaluate_table(net, loss, val_part, o.batch_size, o.metrics, skip ? &val_keep : nullptr);
                sums[0] = w * v.at("loss");
                for (std::size_t m = 0; m < o.metrics.size(); ++m) sums[1 + m] = w * v.at(o.metrics[m].name);
            }
            sums.back() = w;
            comm->allreduce_sum(std::span<double>(sums));
            const double nv = sums.back() > 0 ? sums.back() : std::nan("");
            logs.emplace_back("val_loss", sums[0] / nv);
            for (std::size_t m = 0; m < o.metrics.size(); ++m)
                logs.emplace_back("val_" + o.metrics[m].name, sums[1 + m] / nv);
        } else if (val) {
            const std::vector<std::size_t> keep = skip ? val_flags(0, val->count) : std::vector<std::size_t>{};
            const auto v = evaluate_table(net, loss, *val, o.batch_size, o.metrics, skip ? &keep : nullptr);
            logs.emplace_back("val_loss", v.at("loss"));
            for (const auto& m : o.metrics) logs.emplace_back("val_" + m.name, v.at(m.name));
        }
        if (skipped) logs.emplace_back("skipped_batches", static_cast<double>(skipped));
        if (skipped_non_finite) {  // batches skipped for their data, and the training samples at fault
            logs.emplace_back("non_finite_batches", static_cast<double>(skipped_non_finite));
            logs.emplace_back("non_finite_samples", static_cast<double>(bad_train));
        }
        double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (comm) comm->broadcast(std::span<double>(&seconds, 1), 0);  // rank 0's, so that every History is the same
        // The same figures on every rank (GradReducerOverlap); without a tape attached
        // (threads > 1) every step reduces after backward.
        const auto overlap = reducer ? reducer->overlap() : distributed::GradReducerOverlap{};
        progress.epoch_end(logs, seconds);
        logs.emplace_back("lr", optimizer.lr());
        logs.emplace_back("seconds", seconds);
        if (comm) {
            logs.emplace_back("allreduce_seconds", overlap.allreduce);
            logs.emplace_back("exposed_seconds", overlap.steps > 0 ? overlap.exposed : overlap.detached_exposed);
            logs.emplace_back("imbalance_seconds", overlap.imbalance);
            logs.emplace_back("allreduce_hidden", overlap.hidden());
            logs.emplace_back("comm_cpu_seconds", overlap.comm_cpu);
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

// fn() on this process, or on every rank with a failing rank aborting the run.
template <class T, class Fn>
History on_every_rank(const FitOptions<T>& o, Fn&& fn) {
    if (!o.communicator) return fn();
    History history;
    distributed::run_or_abort(*o.communicator, [&] { history = fn(); });
    return history;
}

}  // namespace

template <class T>
History fit(nn::Layer<T>& model, const LossFn<T>& loss, optim::Optimizer<T>& optimizer, const Dataset<T>& data,
            const FitOptions<T>& o) {
    return on_every_rank(o, [&] {
        check_options(o);
        if (o.multi_validation_data)
            throw value_error("fit: multi_validation_data is for multi-input models; give validation_data");
        check_dataset("fit", data, "training");
        if (o.validation_data) check_dataset("fit", *o.validation_data, "validation");
        const DatasetTable<T> train(data.x, &data.y, data.lengths);
        std::optional<DatasetTable<T>> val;
        if (o.validation_data) val.emplace(o.validation_data->x, &o.validation_data->y, o.validation_data->lengths);
        return fit_here(Net<T>{&model, nullptr}, loss, optimizer, train.table, val ? &val->table : nullptr, o);
    });
}

template <class T>
History fit(Model<T>& model, const LossFn<T>& loss, optim::Optimizer<T>& optimizer, const MultiDataset<T>& data,
            const FitOptions<T>& o) {
    return on_every_rank(o, [&] {
        check_options(o);
        if (o.validation_data)
            throw value_error("fit: validation_data is for single-input models; give multi_validation_data");
        const Table<T> train = multi_table(data.x, &data.y);
        check_table("fit", train, "training");
        std::optional<Table<T>> val;
        if (o.multi_validation_data) {
            val = multi_table(o.multi_validation_data->x, &o.multi_validation_data->y);
            check_table("fit", *val, "validation");
            if (val->inputs.size() != train.inputs.size())
                throw value_error("fit: the validation data has " + std::to_string(val->inputs.size()) +
                                  " inputs and the training data " + std::to_string(train.inputs.size()));
        }
        return fit_here(Net<T>{nullptr, &model}, loss, optimizer, train, val ? &*val : nullptr, o);
    });
}

#define RECUR_TRAIN(T)                                                                                                 \
    template Metric<T> mae<T>();                                                                                       \
    template Metric<T> binary_accuracy<T>(double);                                                                     \
    template Metric<T> categorical_accuracy<T>(std::int64_t);                                                          \
    template History fit(nn::Layer<T>&, const LossFn<T>&, optim::Optimizer<T>&, const Dataset<T>&,                     \
                         const FitOptions<T>&);                                                                        \
    template std::map<std::string, double> evaluate(nn::Layer<T>&, const LossFn<T>&, const Dataset<T>&, std::size_t,   \
                                                    const std::vector<Metric<T>>&);                                    \
    template xt::xarray<T> predict(nn::Layer<T>&, const xt::xarray<T>&, std::size_t, const std::vector<std::int64_t>&, \
                                   Precision);                                                                         \
    template class Inputs<T>;                                                                                          \
    template class Batch<T>;                                                                                           \
    template History fit(Model<T>&, const LossFn<T>&, optim::Optimizer<T>&, const MultiDataset<T>&,                    \
                         const FitOptions<T>&);                                                                        \
    template std::map<std::string, double> evaluate(Model<T>&, const LossFn<T>&, const MultiDataset<T>&, std::size_t,  \
                                                    const std::vector<Metric<T>>&);                                    \
    template xt::xarray<T> predict(Model<T>&, const Inputs<T>&, std::size_t, Precision);
RECUR_TRAIN(float)
RECUR_TRAIN(double)

}  // namespace recur::train
