// The products of an inference step fused with its gate math (ops-private): the whole layers'
// kernels (lstm_sequence, gru_sequence) compute x_t w_ih^T + h w_hh^T tile by tile in registers
// and run each tile's gate math on it at once, so the (B, G) pre-activations are never stored
// and reread, the input projection (when fused) is never written to memory, and no library call
// is made per step.
//
// The weights, w_ih (G = N H, I) when given and w_hh (G, H), are packed (by pack: the callers
// cache f32 panels per Parameter version, detail::gate_panels, and pack double per call) into
// panels, one per W units of H (W = the SIMD width of T): panel p holds, for k = 0..I-1, the N
// gates' rows of w_ih for units pW..pW+W-1 side by side (N vectors of W, zero past H), then the
// same for w_hh's k = 0..H-1. A tile is R rows of the batch by one panel: R x A accumulator
// vectors, each started by the caller (the biases, or an input row already projected) and then
// the FMA chain over x_t's k in order, then h's (so every sum is the same whatever the tiling
// and the thread count), fed per k by N loads of the panel and R broadcasts. The LSTM has A = N
// = 4; the GRU's n gate keeps its input and hidden parts apart (n = tanh(x_n + r h_n)): A = 4
// for N = 3, w_hh's n rows going to the fourth accumulator. The tile's epilogue then has, in
// registers, every pre-activation of W units for R rows (recurrent_rows.hpp's lane functions).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "common.hpp"
#include "vector_math.hpp"

namespace recur::gate_product {

template <class T>
inline constexpr std::size_t width = xsimd::batch<T>::size;

// Rows per tile: 24 accumulators in AVX-512's 32 vector registers (the rest hold the N weight
// vectors and the broadcast), 12 in AVX2's 16. R = 6 for A = 4.
template <class T, std::size_t A>
constexpr std::size_t tile_rows() {
    constexpr std::size_t accumulators = sizeof(xsimd::batch<T>) >= 64 ? 24 : 12;
    return std::max<std::size_t>(1, accumulators / A);
}

inline std::size_t panels(std::size_t hidden, std::size_t w) { return (hidden + w - 1) / w; }

// Elements of the packed weights of a cell of N gates with I + H = k, plus room to align them
// to 64 bytes.
template <class T>
std::size_t packed_size(std::size_t gates, std::size_t hidden, std::size_t k) {
    return panels(hidden, width<T>) * k * gates * width<T> + 64 / sizeof(T);
}

// w_ih (N H, I; null when in = 0) and w_hh (N H, H), row-major, into panels at the first 64-byte
// boundary of `buffer` (packed_size(gates, hidden, in + hidden) elements); returns their start.
template <class T>
const T* pack(const T* w_ih, std::size_t in, const T* w_hh, std::size_t gates, std::size_t hidden, T* buffer) {
    constexpr std::size_t W = width<T>;
    const auto misalign = reinterpret_cast<std::uintptr_t>(buffer) % 64;
    T* out = buffer + (misalign ? (64 - misalign) / sizeof(T) : 0);
    const std::size_t stride = gates * W, k = in + hidden;  // between k and k + 1 in a panel
    // Panel by panel, so that the writes stay within one panel (k N W elements: 128 KiB for the
    // M LSTM) while the W units' rows are read in order. Column-wise over all panels, the first
    // version took 2 MiB of scattered writes per row of w and spent most of a call packing.
    for (std::size_t p = 0; p < panels(hidden, W); ++p) {
        T* panel = out + p * k * stride;
        std::fill(panel, panel + k * stride, T(0));
        for (std::size_t q = 0; q < gates; ++q)
            for (std::size_t u = p * W; u < std::min(hidden, (p + 1) * W); ++u) {
                T* to = panel + q * W + u % W;
                const T* x_row = w_ih + (q * hidden + u) * in;
                for (std::size_t l = 0; l < in; ++l) to[l * stride] = x_row[l];
                const T* h_row = w_hh + (q * hidden + u) * hidden;
                for (std::size_t l = 0; l < hidden; ++l) to[(in + l) * stride] = h_row[l];
            }
    }
    return out;
}

// v, kept in a register: the compiler may not fold the load that made it into each instruction
// that reads it. In tiles of fewer than 6 rows GCC 12 otherwise reloads each weight vector once
// per row, as the FMAs' memory operand: a 4-row tile of the GRU issued 16 loads per k for 12
// FMAs and ran 1.4x slower than with the weights held (150 against 200 GFLOP/s, one core). A batch
// of 64 ends in such a tile (60 + 4 rows), of 16 too (6 + 6 + 4): a step's product and gates ran
// 3-8% faster at M and L, 6-10% at S.
template <class V>
[[gnu::always_inline]] inline void in_register(V& v) {
#if defined(__GNUC__) && defined(__x86_64__)
    typename V::register_type r = v;
    asm("" : "+v"(r));
    v = r;
#else
    (void)v;
#endif
}

// acc[r][slot(q)] += Σ_l a[r lda + l] panel[l][q] over l = 0..k-1, continuing each FMA chain in
// order; slot(q) = q, but Last for the last gate.
template <std::size_t R, std::size_t N, std::size_t A, std::size_t Last, class T>
[[gnu::always_inline]] inline void tile_product(std::size_t k, const T* a, std::size_t lda, const T* panel,
                                                std::array<std::array<xsimd::batch<T>, A>, R>& acc) {
    using V = xsimd::batch<T>;
    constexpr std::size_t W = V::size;
    for (std::size_t l = 0; l < k; ++l) {
        std::array<V, N> w;
        for (std::size_t q = 0; q < N; ++q) {
            w[q] = V::load_aligned(panel + (l * N + q) * W);
            in_register(w[q]);
        }
        for (std::size_t r = 0; r < R; ++r) {
            const V x(a[r * lda + l]);
            for (std::size_t q = 0; q < N; ++q) {
                auto& s = acc[r][q + 1 == N ? Last : q];
                s = xsimd::fma(x, w[q], s);
            }
        }
    }
}

// f(integral_constant<rows>) for rows in 1..R, a run-time count.
template <std::size_t R, class F>
void with_rows(std::size_t rows, F&& f) {
    if constexpr (R > 1)
        if (rows < R) return with_rows<R - 1>(rows, f);
    f(std::integral_constant<std::size_t, R>{});
}

// A left operand: `k` columns of rows `stride` apart (k = 0: none).
template <class T>
struct Rows {
    const T* data = nullptr;
    std::size_t stride = 0, k = 0;
};

// Products (and work for threads) of at least this many multiply-adds run their panels on
// recur's OpenMP threads.
constexpr double parallel_macs = 1 << 18;

// For every tile (rows r0..r0+R-1 of the batch and units j0..j0+W-1 of H), with lanes FullLanes
// or, for the last units when W does not divide H, PartialLanes: init(r0, j0, lanes, acc) starts
// the R x A accumulators, then acc += x's rows times w_ih's panel and h's rows times w_hh's (the
// last gate into acc[r][A - 1]), then epilogue(r0, j0, lanes, acc). Panels run in parallel above
// parallel_macs; each writes only its own units.
template <std::size_t N, std::size_t A, class T, class Init, class Epilogue>
[[gnu::flatten]] void run(std::size_t batch, std::size_t hidden, Rows<T> x, Rows<T> h, const T* packed, Init init,
                          Epilogue epilogue) {
    using V = xsimd::batch<T>;
    constexpr std::size_t W = width<T>, R = tile_rows<T, A>();
    const std::size_t count = panels(hidden, W), k = x.k + h.k;
    const auto panel_of = [&](std::size_t p) {
        const std::size_t j0 = p * W;
        const T* panel = packed + p * k * N * W;
        for (std::size_t r0 = 0; r0 < batch; r0 += R)
            with_rows<R>(batch - r0 < R ? batch - r0 : R, [&](auto rows) {
                constexpr std::size_t Rn = decltype(rows)::value;
                const auto tile = [&](auto lanes) {
                    std::array<std::array<V, A>, Rn> acc;
                    init(r0, j0, lanes, acc);
                    tile_product<Rn, N, A, N - 1>(x.k, x.data + r0 * x.stride, x.stride, panel, acc);
                    tile_product<Rn, N, A, A - 1>(h.k, h.data + r0 * h.stride, h.stride, panel + x.k * N * W, acc);
                    epilogue(r0, j0, lanes, acc);
                };
                if (j0 + W <= hidden)
                    tile(FullLanes{});
                else
                    tile(PartialLanes{hidden - j0});
            });
    };
    const double macs = double(batch) * double(N * hidden) * double(k);
    if (count < 2 || detail::threads_for(macs, parallel_macs) < 2) {
        for (std::size_t p = 0; p < count; ++p) panel_of(p);
        return;
    }
    const auto n = static_cast<std::ptrdiff_t>(count);
#pragma omp parallel for schedule(static)
    for (std::ptrdiff_t p = 0; p < n; ++p) panel_of(static_cast<std::size_t>(p));
}

}  // namespace recur::gate_product
