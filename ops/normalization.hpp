// Row kernels of layer normalisation, shared by the layer_norm primitive (ops/normalization.cpp)
// and the layer-normalised recurrent steps (ops/recurrent.cpp). Internal (not installed).
//
// One row x of D elements: mean = Σx / D, var = Σ(x - mean)² / D (biased), rstd = 1/sqrt(var + eps),
// x̂ = (x - mean) rstd, y = x̂ w + b (w, b optional, D each): torch.nn.functional.layer_norm.
#pragma once

#include <cmath>
#include <cstddef>

namespace recur::detail {

/// Forward of one row: y (may be x) = x̂ w + b; returns mean and rstd for the backward.
template <class T>
void layer_norm_row(const T* x, std::size_t d, T eps, const T* w, const T* b, T* y, T& mean, T& rstd) {
    T s = 0;
    for (std::size_t j = 0; j < d; ++j) s += x[j];
    const T m = s / static_cast<T>(d);
    T v = 0;
    for (std::size_t j = 0; j < d; ++j) v += (x[j] - m) * (x[j] - m);
    const T r = T(1) / std::sqrt(v / static_cast<T>(d) + eps);
    for (std::size_t j = 0; j < d; ++j) {
        const T n = (x[j] - m) * r;
        y[j] = (w ? n * w[j] : n) + (b ? b[j] : T(0));
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
    auto hat = [&](std::size_t j) { return xhat ? xhat[j] : (x[j] - mean) * rstd; };
    T s1 = 0, s2 = 0;
    for (std::size_t j = 0; j < d; ++j) {
        const T dn = w ? g[j] * w[j] : g[j];
        s1 += dn;
        s2 += dn * hat(j);
    }
    s1 /= static_cast<T>(d);
    s2 /= static_cast<T>(d);
    for (std::size_t j = 0; j < d; ++j) {
        const T dn = w ? g[j] * w[j] : g[j];
        const T v = rstd * (dn - s1 - hat(j) * s2);
        dx[j] = assign ? v : dx[j] + v;
    }
}

}  // namespace recur::detail
