// Elementwise primitives: broadcasting arithmetic, scalar arithmetic, unary functions.
// Every backward ACCUMULATES into its inputs' gradients (a value may feed many nodes).
// Forwards of large same-shaped arrays run on all OpenMP threads; backwards run on one.
#include <algorithm>
#include <array>
#include <cmath>

#include <omp.h>
#include <xtensor/xadapt.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>

#include "common.hpp"
#include "op_states.hpp"
#include "vector_math.hpp"

namespace recur {
using detail::accumulate;

namespace {

// Arrays at least this large are computed on all OpenMP threads (recur::set_num_threads).
constexpr std::size_t parallel_grain = std::size_t(1) << 16;  // elements
// Chunks start at multiples of this many elements, so every element is computed by the same
// SIMD or scalar code whatever the thread count: results do not depend on it.
constexpr std::size_t chunk_align = 64;

// part(lo, hi) over [0, n): in chunks on OpenMP threads when n is large.
template <class F>
void over_parts(std::size_t n, F part) {
    const int threads = detail::threads_for(double(n), parallel_grain);
    if (threads < 2) {
        part(std::size_t(0), n);
        return;
    }
    const std::size_t blocks = (n + chunk_align - 1) / chunk_align;
#pragma omp parallel num_threads(threads)
    {
        const auto k = static_cast<std::size_t>(omp_get_thread_num()),
                   m = static_cast<std::size_t>(omp_get_num_threads());
        const std::size_t lo = std::min(n, blocks * k / m * chunk_align),
                          hi = std::min(n, blocks * (k + 1) / m * chunk_align);
        if (lo < hi) part(lo, hi);
    }
}

// y = f(in...) for contiguous arrays of y's size, f an xtensor expression of its arguments.
template <class T, class F, class... In>
void map(xt::xarray<T>& y, F f, const In&... in) {
    if (detail::threads_for(double(y.size()), parallel_grain) < 2) {
        xt::noalias(y) = f(in...);
        return;
    }
    over_parts(y.size(), [&](std::size_t lo, std::size_t hi) {
        const std::array<std::size_t, 1> shape{hi - lo};
        auto part = xt::adapt(y.data() + lo, hi - lo, xt::no_ownership(), shape);
        xt::noalias(part) = f(xt::adapt(in.data() + lo, hi - lo, xt::no_ownership(), shape)...);
    });
}

// Forward of a broadcasting binary op: y = f(a, b), y has the broadcast shape.
template <class T, class F>
Var<T> binary(const char* op, const Var<T>& a, const Var<T>& b, detail::BackwardFn<T> backward, F f) {
    Tape<T>& t = detail::tape_of(op, a, b);
    const Shape shape = detail::broadcast_shapes(op, a.shape(), b.shape());
    const std::uint32_t out = t.push(op, {a.index(), b.index()}, backward);
    auto& y = t.output_value(out, shape);
    const auto& av = t.value(a.index());
    const auto& bv = t.value(b.index());
    if (av.shape() == bv.shape())
        map(y, f, av, bv);
    else
        xt::noalias(y) = f(av, bv);  // broadcasting: one thread
    return t.handle(out);
}

// Forward of a unary op: a node y shaped like x, filled by fill(y, x's value).
template <class T, class Fill>
Var<T> unary_node(const char* op, const Var<T>& x, detail::BackwardFn<T> backward, Fill fill) {
    Tape<T>& t = detail::tape_of(op, x);
    const std::uint32_t out = t.push(op, {x.index()}, backward);
    const auto& xv = t.value(x.index());
    fill(t.output_value(out, xv.shape()), xv);
    return t.handle(out);
}

// y = f(x), f an xtensor expression of x.
template <class T, class F>
Var<T> unary(const char* op, const Var<T>& x, detail::BackwardFn<T> backward, F f) {
    return unary_node(op, x, backward, [&](xt::xarray<T>& y, const xt::xarray<T>& xv) { map(y, f, xv); });
}

// y = act(x), act σ or tanh on SIMD vectors (vector_math.hpp): the fused cells' gate math kernels.
template <class T, class Act>
Var<T> activation(const char* op, const Var<T>& x, detail::BackwardFn<T> backward, Act act) {
    return unary_node(op, x, backward, [&](xt::xarray<T>& y, const xt::xarray<T>& xv) {
        over_parts(y.size(), [&](std::size_t lo, std::size_t hi) {
            activate(y.data() + lo, xv.data() + lo, static_cast<const T*>(nullptr), hi - lo, act);
        });
    });
}

}  // namespace

// ---- add: y = a + b;  da += g, db += g (summed over broadcast axes) ------------------------
template <class T>
static void add_backward(Tape<T>& t, std::uint32_t i) {
    const auto& g = t.node(i).grad;
    for (std::uint32_t k = 0; k < 2; ++k)
        if (t.needs_grad(t.input(i, k))) accumulate(t, t.input(i, k), g);
}
template <class T>
Var<T> add(const Var<T>& a, const Var<T>& b) {
    return binary("add", a, b, &add_backward<T>, [](const auto& x, const auto& y) { return x + y; });
}

// ---- sub: y = a - b;  da += g, db -= g ------------------------------------------------------
template <class T>
static void sub_backward(Tape<T>& t, std::uint32_t i) {
    const auto& g = t.node(i).grad;
    if (t.needs_grad(t.input(i, 0))) accumulate(t, t.input(i, 0), g);
    if (t.needs_grad(t.input(i, 1))) accumulate(t, t.input(i, 1), -g);
}
template <class T>
Var<T> sub(const Var<T>& a, const Var<T>& b) {
    return binary("sub", a, b, &sub_backward<T>, [](const auto& x, const auto& y) { return x - y; });
}

// ---- mul: y = a * b;  da += g * b, db += g * a ---------------------------------------------
template <class T>
static void mul_backward(Tape<T>& t, std::uint32_t i) {
    const auto& g = t.node(i).grad;
    const std::uint32_t a = t.input(i, 0), b = t.input(i, 1);
    if (t.needs_grad(a)) accumulate(t, a, g * t.value(b));
    if (t.needs_grad(b)) accumulate(t, b, g * t.value(a));
}
template <class T>
Var<T> mul(const Var<T>& a, const Var<T>& b) {
    return binary("mul", a, b, &mul_backward<T>, [](const auto& x, const auto& y) { return x * y; });
}

// ---- div: y = a / b;  da += g / b, db -= g * y / b -----------------------------------------
template <class T>
static void div_backward(Tape<T>& t, std::uint32_t i) {
    const auto& n = t.node(i);
    const std::uint32_t a = t.input(i, 0), b = t.input(i, 1);
    if (t.needs_grad(a)) accumulate(t, a, n.grad / t.value(b));
    if (t.needs_grad(b)) accumulate(t, b, -(n.grad * n.value) / t.value(b));
}
template <class T>
Var<T> div(const Var<T>& a, const Var<T>& b) {
    return binary("div", a, b, &div_backward<T>, [](const auto& x, const auto& y) { return x / y; });
}

// ---- neg: y = -x;  dx -= g ------------------------------------------------------------------
template <class T>
static void neg_backward(Tape<T>& t, std::uint32_t i) {
    t.grad_ref(t.input(i, 0)).add(-t.node(i).grad);
}
template <class T>
Var<T> neg(const Var<T>& x) {
    return unary("neg", x, &neg_backward<T>, [](const auto& v) { return -v; });
}

// ---- affine: y = s * x + c (s, c scalars);  dx += s * g ------------------------------------
template <class T>
static void affine_backward(Tape<T>& t, std::uint32_t i) {
    const T scale = t.template saved_state<AffineState<T>>(i).scale;
    t.grad_ref(t.input(i, 0)).add(scale * t.node(i).grad);
}
template <class T>
Var<T> affine(const Var<T>& x, Scalar<T> scale, Scalar<T> shift) {
    Var<T> y = unary("affine", x, &affine_backward<T>, [&](const auto& v) { return scale * v + shift; });
    y.tape().template state<AffineState<T>>(y.index()) = {scale, shift};
    return y;
}

// ---- rdiv: y = s / x;  dx -= g * y / x -----------------------------------------------------
template <class T>
static void rdiv_backward(Tape<T>& t, std::uint32_t i) {
    const auto& n = t.node(i);
    const std::uint32_t x = t.input(i, 0);
    t.grad_ref(x).add(-(n.grad * n.value) / t.value(x));
}
template <class T>
Var<T> rdiv(Scalar<T> s, const Var<T>& x) {
    return unary("rdiv", x, &rdiv_backward<T>, [&](const auto& v) { return s / v; });
}

// ---- pow: y = x^p (p scalar);  dx += g * p * x^(p-1) ---------------------------------------
template <class T>
static void pow_backward(Tape<T>& t, std::uint32_t i) {
    const std::uint32_t x = t.input(i, 0);
    const T p = t.template saved_state<PowState<T>>(i).exponent;
    t.grad_ref(x).add(t.node(i).grad * p * xt::pow(t.value(x), p - T(1)));
}
template <class T>
Var<T> pow(const Var<T>& x, Scalar<T> p) {
    Var<T> y = unary("pow", x, &pow_backward<T>, [&](const auto& v) { return xt::pow(v, p); });
    y.tape().template state<PowState<T>>(y.index()).exponent = p;
    return y;
}

// ---- exp: y = e^x;  dx += g * y ------------------------------------------------------------
template <class T>
static void exp_backward(Tape<T>& t, std::uint32_t i) {
    const auto& n = t.node(i);
    t.grad_ref(t.input(i, 0)).add(n.grad * n.value);
}
template <class T>
Var<T> exp(const Var<T>& x) {
    return unary("exp", x, &exp_backward<T>, [](const auto& v) { return xt::exp(v); });
}

// ---- log: y = ln x;  dx += g / x -----------------------------------------------------------
template <class T>
static void log_backward(Tape<T>& t, std::uint32_t i) {
    const std::uint32_t x = t.input(i, 0);
    t.grad_ref(x).add(t.node(i).grad / t.value(x));
}
template <class T>
Var<T> log(const Var<T>& x) {
    return unary("log", x, &log_backward<T>, [](const auto& v) { return xt::log(v); });
}

// ---- tanh: y = tanh x;  dx += g * (1 - y^2)  (reads the output) ----------------------------
template <class T>
static void tanh_backward(Tape<T>& t, std::uint32_t i) {
    const auto& n = t.node(i);
    t.grad_ref(t.input(i, 0)).add(n.grad * (T(1) - n.value * n.value));
}
template <class T>
Var<T> tanh(const Var<T>& x) {
    return activation("tanh", x, &tanh_backward<T>, tanh_fn);
}

// ---- sigmoid: y = 1 / (1 + e^-x);  dx += g * y * (1 - y)  (reads the output) ---------------
// For x -> -inf, e^-x overflows to inf and y is exactly 0: finite value and gradient.
template <class T>
static void sigmoid_backward(Tape<T>& t, std::uint32_t i) {
    const auto& n = t.node(i);
    t.grad_ref(t.input(i, 0)).add(n.grad * n.value * (T(1) - n.value));
}
template <class T>
Var<T> sigmoid(const Var<T>& x) {
    return activation("sigmoid", x, &sigmoid_backward<T>, sigmoid_fn);
}

// ---- relu: y = max(x, 0);  dx += g * [x > 0] -----------------------------------------------
template <class T>
static void relu_backward(Tape<T>& t, std::uint32_t i) {
    const auto& n = t.node(i);
    t.grad_ref(t.input(i, 0)).add(xt::where(n.value > T(0), n.grad, T(0)));
}
template <class T>
Var<T> relu(const Var<T>& x) {
    return unary("relu", x, &relu_backward<T>, [](const auto& v) { return xt::maximum(v, T(0)); });
}

// ---- abs: y = |x|;  dx += g * sign(x) ------------------------------------------------------
template <class T>
static void abs_backward(Tape<T>& t, std::uint32_t i) {
    const std::uint32_t x = t.input(i, 0);
    t.grad_ref(x).add(t.node(i).grad * xt::sign(t.value(x)));
}
template <class T>
Var<T> abs(const Var<T>& x) {
    return unary("abs", x, &abs_backward<T>, [](const auto& v) { return xt::abs(v); });
}

// ---- sqrt: y = x^(1/2);  dx += g / (2 y)  (reads the output; infinite at x = 0) -------------
template <class T>
static void sqrt_backward(Tape<T>& t, std::uint32_t i) {
    const auto& n = t.node(i);
    t.grad_ref(t.input(i, 0)).add(n.grad / (T(2) * n.value));
}
template <class T>
Var<T> sqrt(const Var<T>& x) {
    return unary("sqrt", x, &sqrt_backward<T>, [](const auto& v) { return xt::sqrt(v); });
}

// ---- clamp: y = min(max(x, lo), hi);  dx += g * [lo <= x <= hi] (torch.clamp's boundaries) --
template <class T>
static void clamp_backward(Tape<T>& t, std::uint32_t i) {
    const std::uint32_t x = t.input(i, 0);
    const auto [lo, hi] = t.template saved_state<ClampState<T>>(i);
    const auto& xv = t.value(x);
    t.grad_ref(x).add(xt::where(xv >= lo && xv <= hi, t.node(i).grad, T(0)));
}
template <class T>
Var<T> clamp(const Var<T>& x, Scalar<T> lo, Scalar<T> hi) {
    if (!(lo <= hi))
        throw value_error("clamp: lo (" + std::to_string(lo) + ") must not exceed hi (" + std::to_string(hi) + ")");
    Var<T> y =
        unary("clamp", x, &clamp_backward<T>, [&](const auto& v) { return xt::minimum(xt::maximum(v, lo), hi); });
    y.tape().template state<ClampState<T>>(y.index()) = {lo, hi};
    return y;
}

// ---- detach: y = x, no gradient ------------------------------------------------------------
template <class T>
Var<T> detach(const Var<T>& x) {
    Tape<T>& t = detail::tape_of("detach", x);
    const std::uint32_t out = t.push("detach", {}, nullptr);
    const auto& xv = t.value(x.index());
    auto& y = t.output_value(out, xv.shape());
    std::copy(xv.data(), xv.data() + xv.size(), y.data());
    return t.handle(out);
}

#define RECUR_ELEMENTWISE(T)                                     \
    template Var<T> add(const Var<T>&, const Var<T>&);           \
    template Var<T> sub(const Var<T>&, const Var<T>&);           \
    template Var<T> mul(const Var<T>&, const Var<T>&);           \
    template Var<T> div(const Var<T>&, const Var<T>&);           \
    template Var<T> neg(const Var<T>&);                          \
    template Var<T> affine(const Var<T>&, Scalar<T>, Scalar<T>); \
    template Var<T> rdiv(Scalar<T>, const Var<T>&);              \
    template Var<T> pow(const Var<T>&, Scalar<T>);               \
    template Var<T> exp(const Var<T>&);                          \
    template Var<T> log(const Var<T>&);                          \
    template Var<T> tanh(const Var<T>&);                         \
    template Var<T> sigmoid(const Var<T>&);                      \
    template Var<T> relu(const Var<T>&);                         \
    template Var<T> abs(const Var<T>&);                          \
    template Var<T> sqrt(const Var<T>&);                         \
    template Var<T> clamp(const Var<T>&, Scalar<T>, Scalar<T>);  \
    template Var<T> detach(const Var<T>&);
RECUR_INSTANTIATE_FOR(RECUR_ELEMENTWISE)

}  // namespace recur
