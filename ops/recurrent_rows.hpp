// The forward gate math of one row of the fused cells (ops-private): shared by the fused ops
// in recurrent.cpp and the streaming stepper (src/nn/streaming.cpp), so both compute every
// element the same way. Raw pointers, no allocation; xsimd for the transcendental functions.
// The row functions are [[gnu::flatten]]: everything they call, xsimd's exp and tanh included,
// is inlined into one loop (GCC otherwise calls exp and tanh out of line per vector: ~30% of
// S LSTM inference went to the gate math that way).
#pragma once

#include <array>
#include <cstddef>

#include <xsimd/xsimd.hpp>

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

// σ(x) = 1 / (1 + e^-x): saturates to 0 or 1 for large |x| without overflow trouble.
inline constexpr auto sigmoid_fn = [](auto x) { return decltype(x)(1) / (decltype(x)(1) + xsimd::exp(-x)); };
inline constexpr auto tanh_fn = [](auto x) { return xsimd::tanh(x); };

// The cells' gate math on one group of lanes (j .. j + w of a row), from the pre-activations
// held in vectors. The recorded rows and the inference rows below both run these, so an element
// goes through the same operations in each (the last bits may still differ with how each
// caller is compiled and inlined; tests/test_fused.cpp compares them to rounding).

// LSTM: i, f, o = σ(pre), g = tanh(pre), c' = f c + i g, and h' = o tanh(c') when h is not null;
// act (4H row) receives [i | f | g | o] when not null.
template <class T, class Lanes>
void lstm_lanes(std::size_t j, Lanes lanes, std::size_t hidden, const std::array<xsimd::batch<T>, 4>& pre, const T* c,
                T* cn, T* h, T* act) {
    using V = xsimd::batch<T>;
    const V i = sigmoid_fn(pre[0]), f = sigmoid_fn(pre[1]), g = tanh_fn(pre[2]), o = sigmoid_fn(pre[3]);
    if (act) {
        store_lanes(act + j, i, lanes);
        store_lanes(act + hidden + j, f, lanes);
        store_lanes(act + 2 * hidden + j, g, lanes);
        store_lanes(act + 3 * hidden + j, o, lanes);
    }
    const V c_next = f * load_lanes(c + j, lanes) + i * g;
    store_lanes(cn + j, c_next, lanes);
    if (h) store_lanes(h + j, V(tanh_fn(c_next) * o), lanes);
}

// GRU: r, z = σ(xg + hg), n = tanh(xg_n + r hg_n), y = n + z (hp - n), from xg = [x_r | x_z | x_n]
// and hg = [h_r | h_z | h_n]; act (3H row) receives [r | z | n] when not null.
template <class T, class Lanes>
void gru_lanes(std::size_t j, Lanes lanes, std::size_t hidden, const std::array<xsimd::batch<T>, 3>& xg,
               const std::array<xsimd::batch<T>, 3>& hg, const T* hp, T* y, T* act) {
    using V = xsimd::batch<T>;
    const V r = sigmoid_fn(xg[0] + hg[0]), z = sigmoid_fn(xg[1] + hg[1]);
    const V n = tanh_fn(xg[2] + r * hg[2]);
    if (act) {
        store_lanes(act + j, r, lanes);
        store_lanes(act + hidden + j, z, lanes);
        store_lanes(act + 2 * hidden + j, n, lanes);
    }
    store_lanes(y + j, V(n + z * (load_lanes(hp + j, lanes) - n)), lanes);
}

// The 3 or 4 gate blocks of a row p (G = N H) at lanes j: p[j], p[H + j], ...
template <std::size_t N, class T, class Lanes>
std::array<xsimd::batch<T>, N> gate_lanes(const T* p, std::size_t hidden, std::size_t j, Lanes lanes) {
    std::array<xsimd::batch<T>, N> v;
    for (std::size_t q = 0; q < N; ++q) v[q] = load_lanes(p + q * hidden + j, lanes);
    return v;
}

// a = [i | f | g | o] pre-activations (4H) -> activations in place;  c' = f c + i g.
template <class T>
[[gnu::flatten]] void lstm_cell_row(T* a, const T* c, T* cn, std::size_t hidden) {
    over_lanes<T>(hidden, [&](std::size_t j, auto lanes) {
        lstm_lanes(j, lanes, hidden, gate_lanes<4>(a, hidden, j, lanes), c, cn, static_cast<T*>(nullptr), a);
    });
}

// The cell, then the output h' = o tanh(c').
template <class T>
[[gnu::flatten]] void lstm_forward_row(T* a, const T* c, T* cn, T* h, std::size_t hidden) {
    over_lanes<T>(hidden, [&](std::size_t j, auto lanes) {
        lstm_lanes(j, lanes, hidden, gate_lanes<4>(a, hidden, j, lanes), c, cn, h, a);
    });
}

// x = xg row, hg = hg row (3H), hp = h row:  r, z = σ(x + hg), n = tanh(x_n + r hg_n),
// y = n + z (h - n);  a = [r | z | n] out. y may be hp.
template <class T>
[[gnu::flatten]] void gru_forward_row(const T* x, const T* hg, const T* hp, T* a, T* y, std::size_t hidden) {
    over_lanes<T>(hidden, [&](std::size_t j, auto lanes) {
        gru_lanes(j, lanes, hidden, gate_lanes<3>(x, hidden, j, lanes), gate_lanes<3>(hg, hidden, j, lanes), hp, y, a);
    });
}

// The inference rows of the whole-layer kernels (lstm_sequence, gru_sequence): the pre-activations
// are formed in registers and used at once, never stored, rounded as a recorded step rounds them
// (its product accumulated onto what C held: one rounding of h W_hh^T + that).

// LSTM. hw = h W_hh^T row, x = the input projection's row, x_bias = b_ih, bias = b_hh (all 4H;
// zeros for an absent bias), c = the cell row (H):  pre = hw + ((x + x_bias) + bias).
template <class T>
[[gnu::flatten]] void lstm_inference_row(const T* hw, const T* x, const T* x_bias, const T* bias, const T* c, T* cn,
                                         T* h, std::size_t hidden) {
    over_lanes<T>(hidden, [&](std::size_t j, auto lanes) {
        std::array<xsimd::batch<T>, 4> pre;
        for (std::size_t q = 0; q < 4; ++q) {
            const std::size_t k = q * hidden + j;
            pre[q] = load_lanes(hw + k, lanes) +
                     ((load_lanes(x + k, lanes) + load_lanes(x_bias + k, lanes)) + load_lanes(bias + k, lanes));
        }
        lstm_lanes(j, lanes, hidden, pre, c, cn, h, static_cast<T*>(nullptr));
    });
}

// GRU. hw = h W_hh^T row, x = the input projection's row, x_bias = b_ih, bias = b_hh (all 3H;
// zeros for an absent bias), hp = h row (H):  xg = x + x_bias, hg = hw + bias.
template <class T>
[[gnu::flatten]] void gru_inference_row(const T* hw, const T* x, const T* x_bias, const T* bias, const T* hp, T* y,
                                        std::size_t hidden) {
    over_lanes<T>(hidden, [&](std::size_t j, auto lanes) {
        std::array<xsimd::batch<T>, 3> xg, hg;
        for (std::size_t q = 0; q < 3; ++q) {
            const std::size_t k = q * hidden + j;
            xg[q] = load_lanes(x + k, lanes) + load_lanes(x_bias + k, lanes);
            hg[q] = load_lanes(hw + k, lanes) + load_lanes(bias + k, lanes);
        }
        gru_lanes(j, lanes, hidden, xg, hg, hp, y, static_cast<T*>(nullptr));
    });
}

}  // namespace recur
