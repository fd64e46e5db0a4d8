// The forward gate math of one row of the fused cells (ops-private): shared by the fused ops
// in recurrent.cpp and the streaming stepper (src/nn/streaming.cpp), so both compute every
// element the same way. Raw pointers, no allocation; xsimd for the transcendental functions.
#pragma once

#include <cstddef>

#include <xsimd/xsimd.hpp>

namespace recur {

// y[j] = act(a[j] + b[j]) (or act(a[j]) when b is null) for j < n, vectorised; y may be a or b.
template <class T, class Act>
void activate(T* y, const T* a, const T* b, std::size_t n, Act act) {
    using batch = xsimd::batch<T>;
    constexpr std::size_t w = batch::size;
    std::size_t j = 0;
    if (b) {
        for (; j + w <= n; j += w)
            act(batch::load_unaligned(a + j) + batch::load_unaligned(b + j)).store_unaligned(y + j);
        for (; j < n; ++j) y[j] = act(a[j] + b[j]);
    } else {
        for (; j + w <= n; j += w) act(batch::load_unaligned(a + j)).store_unaligned(y + j);
        for (; j < n; ++j) y[j] = act(a[j]);
    }
}

// σ(x) = 1 / (1 + e^-x): saturates to 0 or 1 for large |x| without overflow trouble.
inline constexpr auto sigmoid_fn = [](auto x) { return decltype(x)(1) / (decltype(x)(1) + xsimd::exp(-x)); };
inline constexpr auto tanh_fn = [](auto x) { return xsimd::tanh(x); };

// a = [i | f | g | o] pre-activations (4H) -> activations in place;  c' = f c + i g.
template <class T>
void lstm_cell_row(T* a, const T* c, T* cn, std::size_t hidden) {
    activate(a, a, static_cast<const T*>(nullptr), 2 * hidden, sigmoid_fn);  // i, f
    activate(a + 2 * hidden, a + 2 * hidden, static_cast<const T*>(nullptr), hidden, tanh_fn);  // g
    activate(a + 3 * hidden, a + 3 * hidden, static_cast<const T*>(nullptr), hidden, sigmoid_fn);  // o
    for (std::size_t j = 0; j < hidden; ++j) cn[j] = a[hidden + j] * c[j] + a[j] * a[2 * hidden + j];
}

// The cell, then the output h' = o tanh(c').
template <class T>
void lstm_forward_row(T* a, const T* c, T* cn, T* h, std::size_t hidden) {
    lstm_cell_row(a, c, cn, hidden);
    activate(h, cn, static_cast<const T*>(nullptr), hidden, tanh_fn);
    for (std::size_t j = 0; j < hidden; ++j) h[j] *= a[3 * hidden + j];
}

// x = xg row, hg = hg row (3H), hp = h row:  r, z = σ(x + hg), n = tanh(x_n + r hg_n),
// y = n + z (h - n);  a = [r | z | n] out.
template <class T>
void gru_forward_row(const T* x, const T* hg, const T* hp, T* a, T* y, std::size_t hidden) {
    activate(a, x, hg, 2 * hidden, sigmoid_fn);
    T* n = a + 2 * hidden;
    for (std::size_t j = 0; j < hidden; ++j) n[j] = a[j] * hg[2 * hidden + j];
    activate(n, x + 2 * hidden, n, hidden, tanh_fn);
    for (std::size_t j = 0; j < hidden; ++j) y[j] = n[j] + a[hidden + j] * (hp[j] - n[j]);
}

}  // namespace recur
