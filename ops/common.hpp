// Helpers shared by the primitives: input checks, axes, broadcasting, BLAS.
// Internal to the library (not installed).
#pragma once

#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <string>
#include <vector>

#include <omp.h>
#include <xtensor/xarray.hpp>

#include "recur/ops.hpp"

namespace recur::detail {

/// The common tape of an op's inputs; throws tape_error naming `op` if a Var is undefined,
/// stale, or on another tape.
template <class T, class... Vs>
Tape<T>& tape_of(const char* op, const Var<T>& first, const Vs&... rest) {
    first.check(op);
    Tape<T>& t = first.tape();
    [[maybe_unused]] auto same = [&](const Var<T>& v) {
        v.check(op);
        if (&v.tape() != &t) throw tape_error(std::string(op) + ": inputs belong to different tapes");
    };
    (same(rest), ...);
    return t;
}

template <class T>
Tape<T>& tape_of(const char* op, const std::vector<Var<T>>& xs) {
    if (xs.empty()) throw value_error(std::string(op) + ": needs at least one input");
    Tape<T>& t = tape_of(op, xs.front());
    for (const auto& v : xs) tape_of(op, xs.front(), v);
    return t;
}

/// Axis of an array of `shape` (plus `extra` new axes, for stack) in [-ndim, ndim) ->
/// [0, ndim); index_error naming `op` and the shape otherwise.
std::size_t normalize_axis(const char* op, std::ptrdiff_t axis, const Shape& shape, std::size_t extra = 0);

/// numpy broadcast of two shapes; shape_error naming `op` if they do not broadcast.
Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b);

/// A 0/1 mask that broadcasts to `shape` (shape_error naming `op` otherwise) as one flag per
/// element of `shape`, row-major: 1 where the mask is nonzero.
template <class T>
std::vector<std::uint8_t> broadcast_flags(const char* op, const xt::xarray<T>& mask, const Shape& shape);

/// g summed over the axes that broadcasting expanded, so the result has `target`'s shape.
template <class T>
xt::xarray<T> sum_to_shape(const xt::xarray<T>& g, const Shape& target);

/// Adds the gradient expression `e` (shaped like the op's output) into input i's gradient,
/// summing over broadcast axes when the input was broadcast.
template <class T, class E>
void accumulate(Tape<T>& t, std::uint32_t i, const E& e) {
    auto r = t.grad_ref(i);
    const Shape& target = t.value(i).shape();
    const auto& es = e.shape();
    if (es.size() == target.size() && std::equal(es.begin(), es.end(), target.begin())) {
        r.add(e);
    } else {
        xt::xarray<T> full = e;
        r.add(sum_to_shape(full, target));
    }
}

/// An array viewed around one axis as (outer, n, inner), row-major: the layout every
/// axis-wise op (reductions, softmax, slice, concat, ...) walks.
struct AxisView {
    std::size_t outer = 1, n = 1, inner = 1;
};
inline AxisView around(const Shape& s, std::size_t axis) {
    AxisView v;
    for (std::size_t k = 0; k < axis; ++k) v.outer *= s[k];
    v.n = s[axis];
    for (std::size_t k = axis + 1; k < s.size(); ++k) v.inner *= s[k];
    return v;
}

/// Product of extents.
inline std::size_t numel(const Shape& s) {
    std::size_t n = 1;
    for (auto d : s) n *= d;
    return n;
}

/// OpenMP threads worth waking for `work` units when `grain` units pay for one region: 1
/// below the grain or inside a parallel region, else recur's thread count. Decided here, not
/// with an OpenMP `if` clause: libgomp enters a region (~2 us, a futex call) even when the
/// clause is false, which would dominate small steps.
inline int threads_for(double work, double grain) {
    if (work < grain || omp_in_parallel()) return 1;
    return omp_get_max_threads();
}

/// A per-thread buffer of at least n elements, kept for the thread's lifetime (no allocation
/// once warm). One user at a time: callers finish with it before calling anything that uses it
/// (a forward and a backward never overlap on one thread). The fused recurrent ops use slot 0
/// for a step's buffers, 1 for the masked h (recurrent dropout) while 0 is in use, 2 for the
/// whole layers' packed weights in double.
template <class T, int Slot = 0>
T* scratch(std::size_t n) {
    thread_local std::vector<T> buffer;
    if (buffer.size() < n) buffer.resize(n);
    return buffer.data();
}

/// C = alpha * op(A) * op(B) + beta * C, row-major, op = transpose when the flag is set.
/// A is M x K after op, B is K x N after op, C is M x N. Thin wrapper over cblas.
template <class T>
void gemm(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, T alpha, const T* a, std::size_t lda,
          const T* b, std::size_t ldb, T beta, T* c, std::size_t ldc);

}  // namespace recur::detail

// Explicit instantiation of one op template for float and double.
#define RECUR_INSTANTIATE_FOR(MACRO) \
    MACRO(float)                     \
    MACRO(double)

// Before a loop whose iteration j reads and writes only element j of each operand, though the
// operands may overlap as ranges (GCC's run-time overlap check then keeps the loop scalar):
// `omp simd` vectorises it under GCC, which builds the released library. Clang (the sanitizer
// and fuzz builds) treats a loop it cannot vectorise under the pragma as an error
// (-Wpass-failed), so it gets none.
#if defined(__clang__)
#define RECUR_SIMD_LOOP
#else
#define RECUR_SIMD_LOOP _Pragma("omp simd")
#endif
