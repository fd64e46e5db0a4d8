// Reductions and axis-wise normalisations: sum, mean, softmax, log_softmax, masked_softmax,
// max, min (and the index-only argmax, topk).
// Around the reduced axis an array is viewed as (outer, n, inner), row-major.
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numeric>

#include <xtensor/xadapt.hpp>

#include "common.hpp"
#include "op_states.hpp"

namespace recur {

using detail::around;
using detail::AxisView;

// ---- sum / mean of all elements: y = c * sum(x), c = 1 or 1/numel;  dx += c * g -------------
template <class T>
static void reduce_all_backward(Tape<T>& t, std::uint32_t i) {
    const auto& n = t.node(i);
    const T gc = t.template saved_state<ReduceState<T>>(i).scale * *n.grad.data();
    auto& dx = t.grad_ref(t.input(i, 0)).zeroed();
    for (T *p = dx.data(), *e = p + dx.size(); p != e; ++p) *p += gc;
}
// The sum of n values: 64 running partial sums (partial j takes elements j, j + 64, j + 128,
// ...), then added pairwise. It vectorises (one running sum waits on each add: 4% of an S
// training step went to sum(output)) and is more accurate than one running sum (its error grows
// with log n rather than n, as in PyTorch's cascade sum). The order is fixed: the same bits
// every run.
template <class T>
static T sum_values(const T* p, std::size_t n) {
    constexpr std::size_t lanes = 64;
    T partial[lanes] = {};
    std::size_t k = 0;
    for (; k + lanes <= n; k += lanes)
        for (std::size_t j = 0; j < lanes; ++j) partial[j] += p[k + j];
    for (std::size_t j = 0; k + j < n; ++j) partial[j] += p[k + j];
    for (std::size_t w = lanes / 2; w > 0; w /= 2)
        for (std::size_t j = 0; j < w; ++j) partial[j] += partial[j + w];
    return partial[0];
}

template <class T>
static Var<T> reduce_all(const char* op, const Var<T>& x, bool mean) {
    Tape<T>& t = detail::tape_of(op, x);
    const std::uint32_t out = t.push(op, {x.index()}, &reduce_all_backward<T>);
    const auto& xv = t.value(x.index());
    const double c = mean ? 1.0 / static_cast<double>(xv.size()) : 1.0;
    t.template state<ReduceState<T>>(out).scale = static_cast<T>(c);
    auto& node = t.node(out);
    t.output_value(out, Shape{});
    *node.value.data() = static_cast<T>(c) * sum_values(xv.data(), xv.size());
    return t.handle(out);
}
template <class T>
Var<T> sum(const Var<T>& x) {
    return reduce_all("sum", x, false);
}
template <class T>
Var<T> mean(const Var<T>& x) {
    if (x.defined() && x.alive() && x.size() == 0) throw shape_error("mean: the input is empty");
    return reduce_all("mean", x, true);
}

// ---- sum / mean along an axis: y[o, j] = c * sum_k x[o, k, j];  dx[o, k, j] += c * g[o, j] ----
template <class T>
static void reduce_axis_backward(Tape<T>& t, std::uint32_t i) {
    const auto& node = t.node(i);
    const std::uint32_t x = t.input(i, 0);
    const auto& state = t.template saved_state<ReduceState<T>>(i);
    const AxisView v = around(t.value(x).shape(), state.axis);
    const T c = state.scale;
    T* dx = t.grad_ref(x).zeroed().data();
    const T* g = node.grad.data();
    for (std::size_t o = 0; o < v.outer; ++o)
        for (std::size_t k = 0; k < v.n; ++k)
            for (std::size_t j = 0; j < v.inner; ++j) dx[(o * v.n + k) * v.inner + j] += c * g[o * v.inner + j];
}
template <class T>
static Var<T> reduce_axis(const char* op, const Var<T>& x, std::ptrdiff_t axis, bool keepdim, bool mean) {
    Tape<T>& t = detail::tape_of(op, x);
    const Shape xs = x.shape();
    const std::size_t ax = detail::normalize_axis(op, axis, xs);
    if (mean && xs[ax] == 0)
        throw shape_error(std::string(op) + ": axis " + std::to_string(axis) + " of " + shape_str(xs) + " is empty");
    Shape ys;
    for (std::size_t k = 0; k < xs.size(); ++k)
        if (k != ax)
            ys.push_back(xs[k]);
        else if (keepdim)
            ys.push_back(1);
    const std::uint32_t out = t.push(op, {x.index()}, &reduce_axis_backward<T>);
    const T c = mean ? static_cast<T>(1.0 / static_cast<double>(xs[ax])) : T(1);
    t.template state<ReduceState<T>>(out) = {ax, c};
    auto& node = t.node(out);
    t.output_value(out, ys);
    const AxisView v = around(xs, ax);
    const T* xp = t.value(x.index()).data();
    T* yp = node.value.data();
    for (std::size_t o = 0; o < v.outer; ++o)
        for (std::size_t j = 0; j < v.inner; ++j) {
            T acc = T(0);
            for (std::size_t k = 0; k < v.n; ++k) acc += xp[(o * v.n + k) * v.inner + j];
            yp[o * v.inner + j] = c * acc;
        }
    return t.handle(out);
}
template <class T>
Var<T> sum(const Var<T>& x, std::ptrdiff_t axis, bool keepdim) {
    return reduce_axis("sum", x, axis, keepdim, false);
}
template <class T>
Var<T> mean(const Var<T>& x, std::ptrdiff_t axis, bool keepdim) {
    return reduce_axis("mean", x, axis, keepdim, true);
}

// ---- softmax along an axis: y = e^(x - max) / sum e^(x - max) ------------------------------
// dx += y * (g - sum_k g y)   (reads the output)
template <class T>
static void softmax_backward(Tape<T>& t, std::uint32_t i) {
    const auto& node = t.node(i);
    const std::uint32_t x = t.input(i, 0);
    const AxisView v = around(node.value.shape(), t.template saved_state<AxisState>(i).axis);
    const T* y = node.value.data();
    const T* g = node.grad.data();
    T* dx = t.grad_ref(x).zeroed().data();
    for (std::size_t o = 0; o < v.outer; ++o)
        for (std::size_t j = 0; j < v.inner; ++j) {
            const std::size_t base = o * v.n * v.inner + j;
            T dot = T(0);
            for (std::size_t k = 0; k < v.n; ++k) dot += g[base + k * v.inner] * y[base + k * v.inner];
            for (std::size_t k = 0; k < v.n; ++k) {
                const std::size_t p = base + k * v.inner;
                dx[p] += y[p] * (g[p] - dot);
            }
        }
}

// ---- log_softmax along an axis: y = x - max - log sum e^(x - max) ---------------------------
// dx += g - e^y * sum_k g   (reads the output)
template <class T>
static void log_softmax_backward(Tape<T>& t, std::uint32_t i) {
    const auto& node = t.node(i);
    const std::uint32_t x = t.input(i, 0);
    const AxisView v = around(node.value.shape(), t.template saved_state<AxisState>(i).axis);
    const T* y = node.value.data();
    const T* g = node.grad.data();
    T* dx = t.grad_ref(x).zeroed().data();
    for (std::size_t o = 0; o < v.outer; ++o)
        for (std::size_t j = 0; j < v.inner; ++j) {
            const std::size_t base = o * v.n * v.inner + j;
            T gsum = T(0);
            for (std::size_t k = 0; k < v.n; ++k) gsum += g[base + k * v.inner];
            for (std::size_t k = 0; k < v.n; ++k) {
                const std::size_t p = base + k * v.inner;
                dx[p] += g[p] - std::exp(y[p]) * gsum;
            }
        }
}

// keep(p) says whether flat position p takes part (masked_softmax); a masked position gets
// y = 0, and a row with none kept is all 0. Plain softmax keeps everything.
template <class T, class Keep>
static Var<T> normalise(const char* op, const Var<T>& x, std::size_t ax, bool log_space, detail::BackwardFn<T> backward,
                        Keep keep) {
    Tape<T>& t = x.tape();
    const Shape xs = x.shape();
    const std::uint32_t out = t.push(op, {x.index()}, backward);
    t.template state<AxisState>(out).axis = ax;
    auto& node = t.node(out);
    t.output_value(out, xs);
    const AxisView v = around(xs, ax);
    const T* xp = t.value(x.index()).data();
    T* yp = node.value.data();
    for (std::size_t o = 0; o < v.outer; ++o)
        for (std::size_t j = 0; j < v.inner; ++j) {
            const std::size_t base = o * v.n * v.inner + j;
            T mx = -std::numeric_limits<T>::infinity();
            bool any = false;
            for (std::size_t k = 0; k < v.n; ++k)
                if (keep(base + k * v.inner)) {
                    mx = std::max(mx, xp[base + k * v.inner]);
                    any = true;
                }
            if (!any) {  // every position masked: zeros
                for (std::size_t k = 0; k < v.n; ++k) yp[base + k * v.inner] = T(0);
                continue;
            }
            T s = T(0);
            for (std::size_t k = 0; k < v.n; ++k) {
                const std::size_t p = base + k * v.inner;
                yp[p] = keep(p) ? std::exp(xp[p] - mx) : T(0);
                s += yp[p];
            }
            if (log_space) {
                const T ls = std::log(s);
                for (std::size_t k = 0; k < v.n; ++k) {
                    const std::size_t p = base + k * v.inner;
                    yp[p] = xp[p] - mx - ls;
                }
            } else {
                const T inv = T(1) / s;
                for (std::size_t k = 0; k < v.n; ++k) yp[base + k * v.inner] *= inv;
            }
        }
    return t.handle(out);
}
namespace {
constexpr auto keep_all = [](std::size_t) { return true; };
}
template <class T>
Var<T> softmax(const Var<T>& x, std::ptrdiff_t axis) {
    detail::tape_of("softmax", x);
    return normalise("softmax", x, detail::normalize_axis("softmax", axis, x.shape()), false, &softmax_backward<T>,
                     keep_all);
}
template <class T>
Var<T> log_softmax(const Var<T>& x, std::ptrdiff_t axis) {
    detail::tape_of("log_softmax", x);
    return normalise("log_softmax", x, detail::normalize_axis("log_softmax", axis, x.shape()), true,
                     &log_softmax_backward<T>, keep_all);
}

// ---- masked_softmax: softmax over the kept positions, 0 elsewhere ----------------------------
// y = 0 at a masked position, so the softmax backward dx = y * (g - sum_k g y) gives it 0 too.
template <class T>
Var<T> masked_softmax(const Var<T>& x, const xt::xarray<T>& mask, std::ptrdiff_t axis) {
    detail::tape_of("masked_softmax", x);
    const Shape xs = x.shape();
    const std::size_t ax = detail::normalize_axis("masked_softmax", axis, xs);
    const std::vector<std::uint8_t> kept = detail::broadcast_flags("masked_softmax", mask, xs);
    return normalise("masked_softmax", x, ax, false, &softmax_backward<T>,
                     [&kept](std::size_t p) { return kept[p] != 0; });
}
template <class T>
Var<T> masked_softmax(const Var<T>& x, const xt::xarray<std::int64_t>& lengths) {
    detail::tape_of("masked_softmax", x);
    const Shape xs = x.shape();
    const Shape ls(lengths.shape().begin(), lengths.shape().end());
    if (xs.empty() || ls.size() >= xs.size() || !std::equal(ls.begin(), ls.end(), xs.begin()))
        throw shape_error("masked_softmax: lengths " + shape_str(ls) + " must have the leading extents of x " +
                          shape_str(xs) + " (without its last axis)");
    const std::size_t n = xs.back();
    for (std::size_t r = 0; r < lengths.size(); ++r) {
        const std::int64_t len = lengths.data()[r];
        if (len < 0 || static_cast<std::size_t>(len) > n)
            throw index_error("masked_softmax: length " + std::to_string(len) + " at flat position " +
                              std::to_string(r) + " of lengths " + shape_str(ls) + " is outside [0, " +
                              std::to_string(n) + "] for x " + shape_str(xs));
    }
    // Flat position p is in row p / n, which lies below lengths entry (p / n) / rows_per_length.
    const std::size_t rows_per_length = detail::numel(xs) / (n == 0 ? 1 : n) / std::max<std::size_t>(lengths.size(), 1);
    const std::int64_t* len = lengths.data();
    return normalise("masked_softmax", x, xs.size() - 1, false, &softmax_backward<T>,
                     [=](std::size_t p) { return static_cast<std::int64_t>(p % n) < len[p / n / rows_per_length]; });
}
template <class T>
Var<T> masked_softmax(const Var<T>& x, const std::vector<std::int64_t>& lengths) {
    const std::array<std::size_t, 1> shape{lengths.size()};
    return masked_softmax(
        x, xt::xarray<std::int64_t>(xt::adapt(lengths.data(), lengths.size(), xt::no_ownership(), shape)));
}

// ---- max / min along an axis: y[o, j] = x[o, a(o, j), j];  dx[o, a(o, j), j] += g[o, j] ------
// a(o, j) is the first index of the extreme value along the axis (a NaN counts as extreme).
namespace {
template <class T>
void arg_extreme(const T* x, const AxisView& v, bool largest, std::size_t* arg) {
    for (std::size_t o = 0; o < v.outer; ++o)
        for (std::size_t j = 0; j < v.inner; ++j) {
            const T* row = x + o * v.n * v.inner + j;
            std::size_t best = 0;
            for (std::size_t k = 1; k < v.n && !std::isnan(row[best * v.inner]); ++k) {
                const T c = row[k * v.inner], b = row[best * v.inner];
                if (std::isnan(c) || (largest ? c > b : c < b)) best = k;
            }
            arg[o * v.inner + j] = best;
        }
}
// x's shape without `axis`, or with extent 1 there.
Shape reduced_shape(const Shape& xs, std::size_t axis, bool keepdim) {
    Shape ys;
    for (std::size_t k = 0; k < xs.size(); ++k)
        if (k != axis)
            ys.push_back(xs[k]);
        else if (keepdim)
            ys.push_back(1);
    return ys;
}
std::size_t checked_axis(const char* op, std::ptrdiff_t axis, const Shape& xs) {
    const std::size_t ax = detail::normalize_axis(op, axis, xs);
    if (xs[ax] == 0)
        throw shape_error(std::string(op) + ": axis " + std::to_string(axis) + " of " + shape_str(xs) + " is empty");
    return ax;
}
}  // namespace

struct ArgState {
    std::size_t axis = 0;
    std::vector<std::size_t> arg;  // (outer * inner) indices along the axis
};
template <class T>
static void extreme_backward(Tape<T>& t, std::uint32_t i) {
    const std::uint32_t x = t.input(i, 0);
    const auto& s = t.template saved_state<ArgState>(i);
    const AxisView v = around(t.value(x).shape(), s.axis);
    T* dx = t.grad_ref(x).zeroed().data();
    const T* g = t.node(i).grad.data();
    for (std::size_t o = 0; o < v.outer; ++o)
        for (std::size_t j = 0; j < v.inner; ++j)
            dx[(o * v.n + s.arg[o * v.inner + j]) * v.inner + j] += g[o * v.inner + j];
}
template <class T>
static Var<T> extreme(const char* op, const Var<T>& x, std::ptrdiff_t axis, bool keepdim, bool largest) {
    Tape<T>& t = detail::tape_of(op, x);
    const Shape xs = x.shape();
    const std::size_t ax = checked_axis(op, axis, xs);
    const std::uint32_t out = t.push(op, {x.index()}, &extreme_backward<T>);
    auto& s = t.template state<ArgState>(out);
    const AxisView v = around(xs, ax);
    s.axis = ax;
    s.arg.resize(v.outer * v.inner);
    const T* xp = t.value(x.index()).data();
    arg_extreme(xp, v, largest, s.arg.data());
    T* yp = t.output_value(out, reduced_shape(xs, ax, keepdim)).data();
    for (std::size_t o = 0; o < v.outer; ++o)
        for (std::size_t j = 0; j < v.inner; ++j)
            yp[o * v.inner + j] = xp[(o * v.n + s.arg[o * v.inner + j]) * v.inner + j];
    return t.handle(out);
}
template <class T>
Var<T> max(const Var<T>& x, std::ptrdiff_t axis, bool keepdim) {
    return extreme("max", x, axis, keepdim, true);
}
template <class T>
Var<T> min(const Var<T>& x, std::ptrdiff_t axis, bool keepdim) {
    return extreme("min", x, axis, keepdim, false);
}

// ---- argmax / topk: indices along an axis (no node; topk's values are a gather) ---------------
template <class T>
xt::xarray<std::int64_t> argmax(const Var<T>& x, std::ptrdiff_t axis, bool keepdim) {
    x.check("argmax");
    const Shape xs = x.shape();
    const std::size_t ax = checked_axis("argmax", axis, xs);
    const AxisView v = around(xs, ax);
    std::vector<std::size_t> arg(v.outer * v.inner);
    arg_extreme(x.value().data(), v, true, arg.data());
    xt::xarray<std::int64_t> out = xt::xarray<std::int64_t>::from_shape(reduced_shape(xs, ax, keepdim));
    std::copy(arg.begin(), arg.end(), out.data());
    return out;
}
template <class T>
TopK<T> topk(const Var<T>& x, std::size_t k, std::ptrdiff_t axis) {
    x.check("topk");
    const Shape xs = x.shape();
    const std::size_t ax = detail::normalize_axis("topk", axis, xs);
    if (k > xs[ax])
        throw index_error("topk: k = " + std::to_string(k) + " exceeds the extent " + std::to_string(xs[ax]) +
                          " of axis " + std::to_string(axis) + " of " + shape_str(xs));
    const AxisView v = around(xs, ax);
    Shape is = xs;
    is[ax] = k;
    xt::xarray<std::int64_t> indices = xt::xarray<std::int64_t>::from_shape(is);
    const T* xp = x.value().data();
    std::vector<std::size_t> order(v.n);
    for (std::size_t o = 0; o < v.outer; ++o)
        for (std::size_t j = 0; j < v.inner; ++j) {
            const T* row = xp + o * v.n * v.inner + j;
            std::iota(order.begin(), order.end(), std::size_t(0));
            // Largest first; NaN counts as largest; ties keep the lower index first.
            std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
                const T va = row[a * v.inner], vb = row[b * v.inner];
                return (std::isnan(va) && !std::isnan(vb)) || va > vb;
            });
            for (std::size_t r = 0; r < k; ++r)
                indices.data()[(o * k + r) * v.inner + j] = static_cast<std::int64_t>(order[r]);
        }
    Var<T> values = gather(x, static_cast<std::ptrdiff_t>(ax), indices);
    return {std::move(values), std::move(indices)};
}

#define RECUR_REDUCE(T)                                                                  \
    template Var<T> sum(const Var<T>&);                                                  \
    template Var<T> sum(const Var<T>&, std::ptrdiff_t, bool);                            \
    template Var<T> mean(const Var<T>&);                                                 \
    template Var<T> mean(const Var<T>&, std::ptrdiff_t, bool);                           \
    template Var<T> softmax(const Var<T>&, std::ptrdiff_t);                              \
    template Var<T> log_softmax(const Var<T>&, std::ptrdiff_t);                          \
    template Var<T> masked_softmax(const Var<T>&, const xt::xarray<T>&, std::ptrdiff_t); \
    template Var<T> masked_softmax(const Var<T>&, const xt::xarray<std::int64_t>&);      \
    template Var<T> masked_softmax(const Var<T>&, const std::vector<std::int64_t>&);     \
    template Var<T> max(const Var<T>&, std::ptrdiff_t, bool);                            \
    template Var<T> min(const Var<T>&, std::ptrdiff_t, bool);                            \
    template xt::xarray<std::int64_t> argmax(const Var<T>&, std::ptrdiff_t, bool);       \
    template TopK<T> topk(const Var<T>&, std::size_t, std::ptrdiff_t);
RECUR_INSTANTIATE_FOR(RECUR_REDUCE)

}  // namespace recur
