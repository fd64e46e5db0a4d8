// σ and tanh on SIMD vectors, and the lane-wise loops that apply them to rows and arrays:
// the fused cells' gate math and the sigmoid and tanh ops (ops-private).
//
// double goes through xsimd's exp and tanh. float has its own branch-free kernels, about 1.4x
// faster: xsimd's float tanh evaluates both its small-|x| polynomial and exp(2x), behind two
// data-dependent branches, and its exp ends in two compare-and-selects for the range. The cells
// call σ three times and tanh twice per LSTM element.
//
// Both float kernels reduce y = n ln2 + r, n = round(y / ln2), |r| <= ln2 / 2, with ln2 in two
// parts (Cody and Waite) so r is exact, then e^r - 1 = r + r^2 P(r) with Cephes' degree-4
// minimax P for expf, and 2^n from n's bits. The input is clamped first, so that 2^n is a
// normal float (or inf, where e^y overflows); the clamps keep NaN (it is their second operand,
// which x86's min and max return when either is NaN). Over every float of [-30, 30] the worst
// errors against a double reference are 2.5 ulp for σ and 3.4 ulp for tanh (xsimd's: 2.4 and
// 1.3); tests/test_vector_math.cpp asserts the bounds on a sweep and the edge cases.
#pragma once

#include <cstddef>
#include <cstdint>

#include <xsimd/xsimd.hpp>

namespace recur::vector_math {

template <class A>
using floats = xsimd::batch<float, A>;

// For y in [-87.3, 88.7]: q = e^r - 1 and t = 2^n, so e^y = t (1 + q); y in [88.7, 88.75] gives
// n = 128 and t = inf.
template <class A>
void exp_parts(const floats<A>& y, floats<A>& q, floats<A>& t) {
    using V = floats<A>;
    using I = xsimd::batch<std::int32_t, A>;
    // Adding 1.5 * 2^23 rounds y / ln2 to an integer n held in the low bits of the sum.
    const V shifter(12582912.0f);
    const V big = xsimd::fma(y, V(1.44269504088896341f), shifter);
    const V n = big - shifter;
    V r = xsimd::fnma(n, V(0.693359375f), y);  // ln2's high part: 9 bits, so n * it is exact
    r = xsimd::fnma(n, V(-2.12194440e-4f), r);  // and the rest of ln2
    V p = xsimd::fma(V(1.3997796e-3f), r, V(8.3955629e-3f));
    p = xsimd::fma(p, r, V(4.1665401e-2f));
    p = xsimd::fma(p, r, V(1.6666277e-1f));
    p = xsimd::fma(p, r, V(5.0e-1f));
    q = xsimd::fma(p, r * r, r);
    // n's bits (two's complement in the sum's low mantissa bits) shifted to the exponent field.
    const I bits = (xsimd::bitwise_cast<I>(big) << 23) + I(0x3f800000);
    t = xsimd::bitwise_cast<V>(bits);
}

// NaN-keeping clamp of x to [lo, hi].
template <class A>
floats<A> clamp(const floats<A>& x, float lo, float hi) {
    return xsimd::min(floats<A>(hi), xsimd::max(floats<A>(lo), x));
}

// σ(x) = 1 / (1 + e^-x), e^-x = (1 + q) t (t a power of 2: one rounding, in 1 + q). Below
// x = -88.7 the clamp gives t = 2^128 = inf, so σ = 0, as float's e^-x overflows there too.
template <class A>
floats<A> sigmoid(const floats<A>& x) {
    using V = floats<A>;
    V q, t;
    exp_parts(clamp(-x, -87.0f, 88.75f), q, t);
    return V(1.0f) / ((q + V(1.0f)) * t + V(1.0f));
}

// tanh x = sign(x) tanh|x|, tanh|x| = (e^2|x| - 1) / (e^2|x| + 1) = m / (m + 2) with
// m = e^2|x| - 1 = t q + (t - 1): one rounding for m, so the relative error stays small near 0
// where m ~ 2|x|. Odd by construction, like tanh; |x| >= 9.5 gives exactly ±1, as tanh does in
// float beyond 9.01.
template <class A>
floats<A> tanh(const floats<A>& x) {
    using V = floats<A>;
    V q, t;
    const V a = xsimd::abs(x);
    exp_parts(xsimd::min(V(19.0f), V(a + a)), q, t);  // min keeps NaN, its second operand
    const V m = xsimd::fma(t, q, t - V(1.0f));
    return xsimd::bitofsign(x) ^ V(m / (m + V(2.0f)));
}

template <class A>
xsimd::batch<double, A> sigmoid(const xsimd::batch<double, A>& x) {
    using V = xsimd::batch<double, A>;
    return V(1) / (V(1) + xsimd::exp(-x));
}
template <class A>
xsimd::batch<double, A> tanh(const xsimd::batch<double, A>& x) {
    return xsimd::tanh(x);
}

}  // namespace recur::vector_math

namespace recur {

// Lane-wise loops. f(j, lanes) runs for j = 0, w, 2w, ... over n elements, w = the SIMD width of
// T; the last call covers the tail (n not a multiple of w) with partial lanes, padded with zeros
// and computed by the same vector code, so every element's value is the same wherever it falls
// in its row (the recorded steps, the whole-layer kernels and the streaming stepper agree).
struct FullLanes {};
struct PartialLanes {
    std::size_t count;  // < w
};

template <class T, class F>
void over_lanes(std::size_t n, F f) {
    constexpr std::size_t w = xsimd::batch<T>::size;
    std::size_t j = 0;
    for (; j + w <= n; j += w) f(j, FullLanes{});
    if (j < n) f(j, PartialLanes{n - j});
}

template <class T>
xsimd::batch<T> load_lanes(const T* p, FullLanes) {
    return xsimd::batch<T>::load_unaligned(p);
}
template <class T>
xsimd::batch<T> load_lanes(const T* p, PartialLanes lanes) {
    alignas(64) T padded[xsimd::batch<T>::size] = {};
    for (std::size_t l = 0; l < lanes.count; ++l) padded[l] = p[l];
    return xsimd::batch<T>::load_aligned(padded);
}
template <class T>
void store_lanes(T* p, const xsimd::batch<T>& v, FullLanes) {
    v.store_unaligned(p);
}
template <class T>
void store_lanes(T* p, const xsimd::batch<T>& v, PartialLanes lanes) {
    alignas(64) T padded[xsimd::batch<T>::size];
    v.store_aligned(padded);
    for (std::size_t l = 0; l < lanes.count; ++l) p[l] = padded[l];
}

// y[j] = act(a[j] + b[j]) (or act(a[j]) when b is null) for j < n, vectorised; y may be a or b.
template <class T, class Act>
[[gnu::flatten]] void activate(T* y, const T* a, const T* b, std::size_t n, Act act) {
    over_lanes<T>(n, [&](std::size_t j, auto lanes) {
        const auto v = b ? load_lanes(a + j, lanes) + load_lanes(b + j, lanes) : load_lanes(a + j, lanes);
        store_lanes(y + j, act(v), lanes);
    });
}

// σ and tanh as the functions the row and array loops take.
inline constexpr auto sigmoid_fn = [](auto x) { return vector_math::sigmoid(x); };
inline constexpr auto tanh_fn = [](auto x) { return vector_math::tanh(x); };

}  // namespace recur
