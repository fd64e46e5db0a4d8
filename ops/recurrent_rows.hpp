// The forward gate math of one row of the fused cells (ops-private): shared by the fused ops
// in recurrent.cpp and the streaming stepper (src/nn/streaming.cpp), so both compute every
// element the same way. Raw pointers, no allocation; vector_math.hpp for σ and tanh.
// The row functions are [[gnu::flatten]]: everything they call, σ and tanh included, is inlined
// into their loops (GCC otherwise called xsimd's exp and tanh out of line per vector: ~30% of
// S LSTM inference went to the gate math that way).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>

#include <xsimd/xsimd.hpp>

#include "vector_math.hpp"

namespace recur {

// The cells' gate math runs in two passes over a row, a chunk of up to row_chunk lanes at a
// time: first the gates, which are independent of one another, then what depends on them
// (h' = o tanh(c') for the LSTM, n = tanh(x_n + r h_n) and y for the GRU). In one pass, each
// group of lanes chains two σ/tanh latencies end to end, and the out-of-order window holds
// about two such groups: the S LSTM's inference row ran 1.2x slower that way.
//
// The recorded rows and the inference rows below run the same lane functions, so an element
// goes through the same operations in each (the last bits may still differ with how each
// caller is compiled and inlined; tests/test_fused.cpp compares them to rounding).

// Lanes per chunk: a multiple of every SIMD width, so only a row's end has partial lanes.
inline constexpr std::size_t row_chunk = 256;

// f(lo, n) for the chunks [lo, lo + n) of a row of `hidden` lanes.
template <class F>
void over_chunks(std::size_t hidden, F f) {
    for (std::size_t lo = 0; lo < hidden; lo += row_chunk) f(lo, std::min(row_chunk, hidden - lo));
}

// LSTM gates: i, f, o = σ(pre), g = tanh(pre), c' = f c + i g. act (4H row) receives
// [i | f | g | o] when not null; o_out (lanes from j) receives o when not null.
template <class T, class Lanes>
void lstm_gate_lanes(std::size_t j, Lanes lanes, std::size_t hidden, const std::array<xsimd::batch<T>, 4>& pre,
                     const T* c, T* cn, T* act, T* o_out) {
    using V = xsimd::batch<T>;
    const V i = sigmoid_fn(pre[0]), f = sigmoid_fn(pre[1]), g = tanh_fn(pre[2]), o = sigmoid_fn(pre[3]);
    if (act) {
        store_lanes(act + j, i, lanes);
        store_lanes(act + hidden + j, f, lanes);
        store_lanes(act + 2 * hidden + j, g, lanes);
        store_lanes(act + 3 * hidden + j, o, lanes);
    }
    if (o_out) store_lanes(o_out + j, o, lanes);
    store_lanes(cn + j, V(f * load_lanes(c + j, lanes) + i * g), lanes);
}

// LSTM output: h' = o tanh(c'), lanes j of o, c' and h (h may be o).
template <class T, class Lanes>
void lstm_output_lanes(std::size_t j, Lanes lanes, const T* o, const T* cn, T* h) {
    store_lanes(h + j, xsimd::batch<T>(tanh_fn(load_lanes(cn + j, lanes)) * load_lanes(o + j, lanes)), lanes);
}

// GRU gates: r, z = σ(xg + hg) and n's argument x_n + r h_n, from xg = [x_r | x_z | x_n] and
// hg = [h_r | h_z | h_n]; r into r_out, z into z_out and the argument into n_out (lanes from j;
// r_out may be null).
template <class T, class Lanes>
void gru_gate_lanes(std::size_t j, Lanes lanes, const std::array<xsimd::batch<T>, 3>& xg,
                    const std::array<xsimd::batch<T>, 3>& hg, T* r_out, T* z_out, T* n_out) {
    using V = xsimd::batch<T>;
    const V r = sigmoid_fn(xg[0] + hg[0]);
    if (r_out) store_lanes(r_out + j, r, lanes);
    store_lanes(z_out + j, sigmoid_fn(V(xg[1] + hg[1])), lanes);
    store_lanes(n_out + j, V(xg[2] + r * hg[2]), lanes);
}

// GRU output: n = tanh(n's argument), y = n + z (hp - n); n_out (may be the argument's row)
// receives n when not null; y may be hp.
template <class T, class Lanes>
void gru_output_lanes(std::size_t j, Lanes lanes, const T* z, const T* n_arg, const T* hp, T* n_out, T* y) {
    using V = xsimd::batch<T>;
    const V n = tanh_fn(load_lanes(n_arg + j, lanes));
    if (n_out) store_lanes(n_out + j, n, lanes);
    store_lanes(y + j, V(n + load_lanes(z + j, lanes) * (load_lanes(hp + j, lanes) - n)), lanes);
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
        lstm_gate_lanes(j, lanes, hidden, gate_lanes<4>(a, hidden, j, lanes), c, cn, a, static_cast<T*>(nullptr));
    });
}

// The cell, then the output h' = o tanh(c'). cn may be c.
template <class T>
[[gnu::flatten]] void lstm_forward_row(T* a, const T* c, T* cn, T* h, std::size_t hidden) {
    over_chunks(hidden, [&](std::size_t lo, std::size_t n) {
        over_lanes<T>(n, [&](std::size_t j, auto lanes) {
            lstm_gate_lanes(lo + j, lanes, hidden, gate_lanes<4>(a, hidden, lo + j, lanes), c, cn, a,
                            static_cast<T*>(nullptr));
        });
        over_lanes<T>(n, [&](std::size_t j, auto lanes) { lstm_output_lanes(lo + j, lanes, a + 3 * hidden, cn, h); });
    });
}

// x = xg row, hg = hg row (3H), hp = h row:  r, z = σ(x + hg), n = tanh(x_n + r hg_n),
// y = n + z (h - n);  a = [r | z | n] out. y may be hp.
template <class T>
[[gnu::flatten]] void gru_forward_row(const T* x, const T* hg, const T* hp, T* a, T* y, std::size_t hidden) {
    T* const z = a + hidden;
    T* const n_slot = a + 2 * hidden;  // n's argument, then n
    over_chunks(hidden, [&](std::size_t lo, std::size_t n) {
        over_lanes<T>(n, [&](std::size_t j, auto lanes) {
            gru_gate_lanes(lo + j, lanes, gate_lanes<3>(x, hidden, lo + j, lanes),
                           gate_lanes<3>(hg, hidden, lo + j, lanes), a, z, n_slot);
        });
        over_lanes<T>(n, [&](std::size_t j, auto lanes) { gru_output_lanes(lo + j, lanes, z, n_slot, hp, n_slot, y); });
    });
}

// The inference rows of the whole-layer kernels (lstm_sequence, gru_sequence): the pre-activations
// are formed in registers and used at once, never stored, rounded as a recorded step rounds them
// (its product accumulated onto what C held: one rounding of h W_hh^T + that).

// LSTM. hw = h W_hh^T row, x = the input projection's row, x_bias = b_ih, bias = b_hh (all 4H;
// zeros for an absent bias), c = the cell row (H):  pre = hw + ((x + x_bias) + bias). cn may be c;
// h holds o between the passes, so it must not overlap the other rows.
template <class T>
[[gnu::flatten]] void lstm_inference_row(const T* hw, const T* x, const T* x_bias, const T* bias, const T* c, T* cn,
                                         T* h, std::size_t hidden) {
    over_chunks(hidden, [&](std::size_t lo, std::size_t n) {
        over_lanes<T>(n, [&](std::size_t j, auto lanes) {
            std::array<xsimd::batch<T>, 4> pre;
            for (std::size_t q = 0; q < 4; ++q) {
                const std::size_t k = q * hidden + lo + j;
                pre[q] = load_lanes(hw + k, lanes) +
                         ((load_lanes(x + k, lanes) + load_lanes(x_bias + k, lanes)) + load_lanes(bias + k, lanes));
            }
            lstm_gate_lanes(lo + j, lanes, hidden, pre, c, cn, static_cast<T*>(nullptr), h);
        });
        over_lanes<T>(n, [&](std::size_t j, auto lanes) { lstm_output_lanes(lo + j, lanes, h, cn, h); });
    });
}

// GRU. hw = h W_hh^T row, x = the input projection's row, x_bias = b_ih, bias = b_hh (all 3H;
// zeros for an absent bias), hp = h row (H):  xg = x + x_bias, hg = hw + bias. y may be hp.
template <class T>
[[gnu::flatten]] void gru_inference_row(const T* hw, const T* x, const T* x_bias, const T* bias, const T* hp, T* y,
                                        std::size_t hidden) {
    alignas(64) T z[row_chunk], n_arg[row_chunk];  // a chunk's z and n's argument, between the passes
    over_chunks(hidden, [&](std::size_t lo, std::size_t n) {
        over_lanes<T>(n, [&](std::size_t j, auto lanes) {
            std::array<xsimd::batch<T>, 3> xg, hg;
            for (std::size_t q = 0; q < 3; ++q) {
                const std::size_t k = q * hidden + lo + j;
                xg[q] = load_lanes(x + k, lanes) + load_lanes(x_bias + k, lanes);
                hg[q] = load_lanes(hw + k, lanes) + load_lanes(bias + k, lanes);
            }
            gru_gate_lanes(j, lanes, xg, hg, static_cast<T*>(nullptr), z, n_arg);
        });
        over_lanes<T>(n, [&](std::size_t j, auto lanes) {
            gru_output_lanes(j, lanes, z, n_arg, hp + lo, static_cast<T*>(nullptr), y + lo);
        });
    });
}

// The same inference gate math on a tile of gate_product::run (ops/gate_product.hpp): rows
// r0..r0+R-1 of the batch and units j0.. (lanes), the pre-activations in acc (R x 4 vectors:
// acc[r][q] holds gate q's units j0..), which *_tile_start starts and the products complete.
// Strides are between rows b and b + 1.

// The start of a tile of N gates: acc[r][q] = (x + x_bias) + bias for input rows x (N H,
// x_stride apart) already projected, else x_bias + bias (x null: the products add x_t w_ih^T).
// With A > N accumulators (the GRU: [r | z | n's input part | n's hidden part]) the last gate's
// input part and bias stay apart, in acc[r][N - 1] and acc[r][A - 1].
template <std::size_t N, class T, std::size_t A, std::size_t R, class Lanes>
void gate_tile_start(std::array<std::array<xsimd::batch<T>, A>, R>& acc, std::size_t r0, std::size_t j0, Lanes lanes,
                     const T* x, std::size_t x_stride, const T* x_bias, const T* bias, std::size_t hidden) {
    for (std::size_t q = 0; q < N; ++q) {
        const std::size_t k = q * hidden + j0;
        const auto xb = load_lanes(x_bias + k, lanes), b = load_lanes(bias + k, lanes);
        for (std::size_t r = 0; r < R; ++r) {
            const auto xv = x ? load_lanes(x + (r0 + r) * x_stride + k, lanes) + xb : xb;
            if (A > N && q + 1 == N)
                acc[r][q] = xv, acc[r][A - 1] = b;
            else
                acc[r][q] = xv + b;
        }
    }
}

// The LSTM's gates on a finished tile: c (rows H apart) -> cn; h (rows h_stride apart)
// receives o, then h'.
template <class T, std::size_t R, class Lanes>
void lstm_tile_gates(const std::array<std::array<xsimd::batch<T>, 4>, R>& acc, std::size_t r0, std::size_t j0,
                     Lanes lanes, const T* c, T* cn, T* h, std::size_t h_stride, std::size_t hidden) {
    for (std::size_t r = 0; r < R; ++r) {
        const std::size_t b = r0 + r;
        lstm_gate_lanes(j0, lanes, hidden, acc[r], c + b * hidden, cn + b * hidden, static_cast<T*>(nullptr),
                        h + b * h_stride);
    }
    for (std::size_t r = 0; r < R; ++r) {
        T* hr = h + (r0 + r) * h_stride;
        lstm_output_lanes(j0, lanes, hr, cn + (r0 + r) * hidden, hr);
    }
}

// The GRU's gates on a finished tile: r, z = σ, n = tanh(x_n + r h_n), y = n + z (hp - n); hp
// rows hp_stride apart, y rows y_stride apart.
template <class T, std::size_t R, class Lanes>
void gru_tile_gates(const std::array<std::array<xsimd::batch<T>, 4>, R>& acc, std::size_t r0, std::size_t j0,
                    Lanes lanes, const T* hp, std::size_t hp_stride, T* y, std::size_t y_stride) {
    using V = xsimd::batch<T>;
    constexpr std::size_t W = V::size;
    alignas(64) T z[R][W], n_arg[R][W];  // z and n's argument, between the passes
    for (std::size_t r = 0; r < R; ++r)
        gru_gate_lanes(0, lanes, std::array<V, 3>{acc[r][0], acc[r][1], acc[r][2]},
                       std::array<V, 3>{V(T(0)), V(T(0)), acc[r][3]}, static_cast<T*>(nullptr), z[r], n_arg[r]);
    for (std::size_t r = 0; r < R; ++r)
        gru_output_lanes(0, lanes, z[r], n_arg[r], hp + (r0 + r) * hp_stride + j0, static_cast<T*>(nullptr),
                         y + (r0 + r) * y_stride + j0);
}

}  // namespace recur
