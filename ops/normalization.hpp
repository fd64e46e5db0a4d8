// Row kernels of layer normalisation, shared by the layer_norm primitive (ops/normalization.cpp)
// and the layer-normalised recurrent steps (ops/recurrent.cpp). Internal (not installed).
//
// One row x of D elements: mean = Σx / D, var = Σ(x - mean)² / D (biased), rstd = 1/sqrt(var + eps),
// x̂ = (x - mean) rstd, y = x̂ w + b (w, b optional, D each): torch.nn.functional.layer_norm.
// The sums run in SIMD lanes (xsimd), then across them: a float sum in one accumulator is one
// dependent add per element, which the compiler may not reorder (no -ffast-math).
#pragma once

#include <cmath>
#include <cstddef>

#include <xsimd/xsimd.hpp>

namespace recur::detail {

/// Σ_j f(j) over a row of d elements, where f(j) gives the batch of elements [j, j + lanes) and
/// tail(j) one element.
template <class T, class F, class Tail>
T row_sum(std::size_t d, F f, Tail tail) {
    using B = xsimd::batch<T>;
    B acc(T(0));
    std::size_t j = 0;
    for (; j + B::size <= d; j += B::size) acc += f(j);
    T s = xsimd::hadd(acc);
    for (; j < d; ++j) s += tail(j);
    return s;
}

/// Forward of one row: y (may be x) = x̂ w + b; returns mean and rstd for the backward.
template <class T>
void layer_norm_row(const T* x, std::size_t d, T eps, const T* w, const T* b, T* y, T& mean, T& rstd) {
    using B = xsimd::batch<T>;
    const auto n = static_cast<T>(d);
    const T m = row_sum<T>(
                    d, [&](std::size_t j) { return B::load_unaligned(x + j); }, [&](std::size_t j) { return x[j]; }) /
                n;
    const B mb(m);
    const T v = row_sum<T>(
        d,
        [&](std::size_t j) {
            const B c = B::load_unaligned(x + j) - mb;
            return c * c;
        },
        [&](std::size_t j) { return (x[j] - m) * (x[j] - m); });
    const T r = T(1) / std::sqrt(v / n + eps);
    const B rb(r);
    std::size_t j = 0;
    for (; j + B::size <= d; j += B::size) {
        B e = (B::load_unaligned(x + j) - mb) * rb;
        if (w) e *= B::load_unaligned(w + j);
        if (b) e += B::load_unaligned(b + j);
        e.store_unaligned(y + j);
    }
    for (; j < d; ++j) {
        const T e = (x[j] - m) * r;
        y[j] = (w ? e * w[j] : e) + (b ? b[j] : T(0));
    }
    mean = m;
    rstd = r;
}

/// Backward of one row through x̂ (for the gradient g of y, and w or null):
///   dx̂ = g w,  dx = rstd (dx̂ - mean(dx̂) - x̂ mean(dx̂ x̂)), written (assign) or added into dx.
/// x̂ is given directly (xhat) or, when xhat is null, recomputed from x, mean and rstd.
template <class T>
void layer_norm_row_backward(const T* x, const T* xhat, T mean, T rstd, const T* g, const T* w, std::size_t d, T* dx,
                             bool assign) {
    using B = xsimd::batch<T>;
    const B mb(mean), rb(rstd);
    auto hat = [&](std::size_t j) { return xhat ? B::load_unaligned(xhat + j) : (B::load_unaligned(x + j) - mb) * rb; };
    auto dn = [&](std::size_t j) {
        return w ? B::load_unaligned(g + j) * B::load_unaligned(w + j) : B::load_unaligned(g + j);
    };
    auto hat1 = [&](std::size_t j) { return xhat ? xhat[j] : (x[j] - mean) * rstd; };
    auto dn1 = [&](std::size_t j) { return w ? g[j] * w[j] : g[j]; };
    const auto n = static_cast<T>(d);
    const T s1 = row_sum<T>(d, dn, dn1) / n;
    const T s2 =
        row_sum<T>(
            d, [&](std::size_t j) { return dn(j) * hat(j); }, [&](std::size_t j) { return dn1(j) * hat1(j); }) /
        n;
    const B s1b(s1), s2b(s2);
    std::size_t j = 0;
    for (; j + B::size <= d; j += B::size) {
        const B v = rb * (dn(j) - s1b - hat(j) * s2b);
        (assign ? v : B::load_unaligned(dx + j) + v).store_unaligned(dx + j);
    }
    for (; j < d; ++j) {
        const T v = rstd * (dn1(j) - s1 - hat1(j) * s2);
        dx[j] = assign ? v : dx[j] + v;
    }
}

}  // namespace recur::detail
