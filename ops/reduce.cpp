// Reductions and axis-wise normalisations: sum, mean, softmax, log_softmax.
// Around the reduced axis an array is viewed as (outer, n, inner), row-major.
#include <cmath>
#include <limits>

#include "common.hpp"

namespace recur {

using detail::around;
using detail::AxisView;

// What a reduction keeps: the reduced axis and the factor c (1 for sum, 1/n for mean).
template <class T>
struct ReduceState {
    std::size_t axis = 0;
    T scale = T(1);
};
// What softmax and log_softmax keep: the axis.
struct AxisState {
    std::size_t axis = 0;
};

// ---- sum / mean of all elements: y = c * sum(x), c = 1 or 1/numel;  dx += c * g -------------
template <class T>
static void reduce_all_backward(Tape<T>& t, std::uint32_t i) {
    const auto& n = t.node(i);
    const T gc = t.template saved_state<ReduceState<T>>(i).scale * *n.grad.data();
    auto& dx = t.grad_ref(t.input(i, 0)).zeroed();
    for (T* p = dx.data(), *e = p + dx.size(); p != e; ++p) *p += gc;
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
    T acc = T(0);
    for (const T* p = xv.data(), *e = p + xv.size(); p != e; ++p) acc += *p;
    *node.value.data() = static_cast<T>(c) * acc;
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
    if (mean && xs[ax] == 0) throw shape_error(std::string(op) + ": axis " + std::to_string(axis) + " of " + shape_str(xs) + " is empty");
    Shape ys;
    for (std::size_t k = 0; k < xs.size(); ++k)
        if (k != ax) ys.push_back(xs[k]);
        else if (keepdim) ys.push_back(1);
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

template <class T>
static Var<T> normalise(const char* op, const Var<T>& x, std::ptrdiff_t axis, bool log_space,
                        detail::BackwardFn<T> backward) {
    Tape<T>& t = detail::tape_of(op, x);
    const Shape xs = x.shape();
    const std::size_t ax = detail::normalize_axis(op, axis, xs);
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
            for (std::size_t k = 0; k < v.n; ++k) mx = std::max(mx, xp[base + k * v.inner]);
            T s = T(0);
            for (std::size_t k = 0; k < v.n; ++k) {
                const std::size_t p = base + k * v.inner;
                yp[p] = std::exp(xp[p] - mx);
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
template <class T>
Var<T> softmax(const Var<T>& x, std::ptrdiff_t axis) {
    return normalise("softmax", x, axis, false, &softmax_backward<T>);
}
template <class T>
Var<T> log_softmax(const Var<T>& x, std::ptrdiff_t axis) {
    return normalise("log_softmax", x, axis, true, &log_softmax_backward<T>);
}

#define RECUR_REDUCE(T)                                                    \
    template Var<T> sum(const Var<T>&);                                    \
    template Var<T> sum(const Var<T>&, std::ptrdiff_t, bool);              \
    template Var<T> mean(const Var<T>&);                                   \
    template Var<T> mean(const Var<T>&, std::ptrdiff_t, bool);             \
    template Var<T> softmax(const Var<T>&, std::ptrdiff_t);                \
    template Var<T> log_softmax(const Var<T>&, std::ptrdiff_t);
RECUR_INSTANTIATE_FOR(RECUR_REDUCE)

}  // namespace recur
