// recur's bf16 small-product kernels (see bf16_kernel.hpp), on one packed layout of the weight:
// - AMX (tdpbf16ps), where the CPU and the OS allow it: C in 16 x 16 tiles, one configuration
//   for every shape (A's rows and k zero-padded to whole tiles);
// - else vdpbf16ps: tiles of R rows x V vectors of C (16 f32 each) in zmm registers; each step
//   p over the pairs of k loads V vectors of the weight's pair row p (32 bf16 each),
//   broadcasts A's pair (a[2p], a[2p+1]) for each of the R rows and adds
//   a[2p] w[2p][j] + a[2p+1] w[2p+1][j] into each column j.
// Measured one core (loaded machine) at 16 x 256 x 64: AMX 1.4-1.5 us, oneDNN's matmul (AMX)
// 2.0-2.7 us, vdpbf16ps 7-9 us (this Xeon issues about one vdpbf16ps per 2 cycles: oneDNN's
// own AVX512_BF16 matmul, capped by DNNL_MAX_CPU_ISA, took 12 us).
#include "bf16_kernel.hpp"

#include <cpuid.h>
#include <immintrin.h>
#include <oneapi/dnnl/dnnl.hpp>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "packed_gemm.hpp"
#include "recur/precision.hpp"

// The instructions this file needs, without -march (portable builds dispatch at run time).
#define RECUR_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define RECUR_AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16")))

namespace recur::detail {

namespace {

constexpr std::size_t lanes = 16;  // f32 lanes of a zmm register, and bf16 pairs
constexpr std::size_t max_rows = 4, max_vectors = 4;  // the register tile: 16 accumulators

std::size_t round_up(std::size_t v, std::size_t to) { return (v + to - 1) / to * to; }

// The first `count` lanes (all from 16 on).
__mmask16 first_lanes(std::size_t count) {
    return count >= lanes ? __mmask16(0xffff) : static_cast<__mmask16>((1u << count) - 1u);
}

// out[j] = a[j] rounded to bf16 (vcvtne2ps2bf16: nearest even) for j < n, and 0 for
// n <= j < padded: 32 values a step, masked loads past n and a masked store past padded only
// in the last steps.
RECUR_AVX512_BF16 void round_span(const float* a, std::size_t n, std::size_t padded, std::uint16_t* out) {
    std::size_t j = 0;
    for (; j + 2 * lanes <= n; j += 2 * lanes) {
        const __m512 low = _mm512_loadu_ps(a + j), high = _mm512_loadu_ps(a + j + lanes);
        _mm512_storeu_si512(out + j, (__m512i)_mm512_cvtne2ps_pbh(high, low));
    }
    for (; j < padded; j += 2 * lanes) {
        const std::size_t left = j < n ? n - j : 0, width = std::min(2 * lanes, padded - j);
        const __m512 low = _mm512_maskz_loadu_ps(first_lanes(left), a + j);
        const __m512 high =
            _mm512_maskz_loadu_ps(left > lanes ? first_lanes(left - lanes) : __mmask16(0), a + j + lanes);
        const __mmask32 store = width == 2 * lanes ? ~__mmask32(0) : static_cast<__mmask32>((1u << width) - 1u);
        _mm512_mask_storeu_epi16(out + j, store, (__m512i)_mm512_cvtne2ps_pbh(high, low));
    }
}

// A (m x k, lda) rounded to bf16 as pairs: row r of out (stride `stride` pairs, at least
// round_up(k, 32) / 2) holds a's row r, zeros past k.
RECUR_AVX512_BF16 void round_rows(const float* a, std::size_t m, std::size_t k, std::size_t lda, std::uint32_t* out,
                                  std::size_t stride) {
    for (std::size_t r = 0; r < m; ++r)
        round_span(a + r * lda, k, 2 * stride, reinterpret_cast<std::uint16_t*>(out + r * stride));
}

// C tile (R x V vectors, the last vector's lanes `last`) [+]= A rows (pairs, stride a_stride)
// times the packed weight's columns at w (stride w_stride), over `pairs` pairs.
template <std::size_t R, std::size_t V>
RECUR_AVX512_BF16 void tile(std::size_t pairs, const std::uint32_t* a, std::size_t a_stride, const std::uint32_t* w,
                            std::size_t w_stride, bool accumulate, float* c, std::size_t ldc, __mmask16 last) {
    __m512 acc[R][V];
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
    for (std::size_t p = 0; p < pairs; ++p) {
        __m512bh wv[V];
        for (std::size_t v = 0; v < V; ++v) wv[v] = (__m512bh)_mm512_loadu_si512(w + p * w_stride + v * lanes);
        for (std::size_t r = 0; r < R; ++r) {
            const __m512bh x = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[r * a_stride + p]));
            for (std::size_t v = 0; v < V; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], x, wv[v]);
        }
    }
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t v = 0; v < V; ++v) {
            const __mmask16 mask = v + 1 == V ? last : __mmask16(0xffff);
            float* out = c + r * ldc + v * lanes;
            __m512 y = acc[r][v];
            if (accumulate) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, out));
            _mm512_mask_storeu_ps(out, mask, y);
        }
}

// R rows of C, all n columns: tiles of max_vectors vectors, then the remaining 1-3.
template <std::size_t R>
RECUR_AVX512_BF16 void row_block(std::size_t n, std::size_t pairs, const std::uint32_t* a, std::size_t a_stride,
                                 const std::uint32_t* w, std::size_t w_stride, bool accumulate, float* c,
                                 std::size_t ldc) {
    const std::size_t vectors = (n + lanes - 1) / lanes;
    const __mmask16 full = 0xffff, last = first_lanes(n - (vectors - 1) * lanes);
    std::size_t v = 0;
    for (; v + max_vectors <= vectors; v += max_vectors)
        tile<R, max_vectors>(pairs, a, a_stride, w + v * lanes, w_stride, accumulate, c + v * lanes, ldc,
                             v + max_vectors == vectors ? last : full);
    const std::uint32_t* wv = w + v * lanes;
    float* cv = c + v * lanes;
    switch (vectors - v) {
        case 3:
            return tile<R, 3>(pairs, a, a_stride, wv, w_stride, accumulate, cv, ldc, last);
        case 2:
            return tile<R, 2>(pairs, a, a_stride, wv, w_stride, accumulate, cv, ldc, last);
        case 1:
            return tile<R, 1>(pairs, a, a_stride, wv, w_stride, accumulate, cv, ldc, last);
        default:
            return;
    }
}

// vdpbf16ps: C [+]= A op(W) with A already rounded (`ar`, stride a_stride pairs).
RECUR_AVX512_BF16 void dot_gemm(std::size_t m, std::size_t n, std::size_t pairs, const std::uint32_t* ar,
                                std::size_t a_stride, const std::uint32_t* w, bool accumulate, float* c,
                                std::size_t ldc) {
    const std::size_t w_stride = bf16_pair_stride(n);
    std::size_t i = 0;
    for (; i + max_rows <= m; i += max_rows)
        row_block<max_rows>(n, pairs, ar + i * a_stride, a_stride, w, w_stride, accumulate, c + i * ldc, ldc);
    switch (m - i) {
        case 3:
            return row_block<3>(n, pairs, ar + i * a_stride, a_stride, w, w_stride, accumulate, c + i * ldc, ldc);
        case 2:
            return row_block<2>(n, pairs, ar + i * a_stride, a_stride, w, w_stride, accumulate, c + i * ldc, ldc);
        case 1:
            return row_block<1>(n, pairs, ar + i * a_stride, a_stride, w, w_stride, accumulate, c + i * ldc, ldc);
        default:
            return;
    }
}

// ---- AMX: tdpbf16ps on 16 x 16 tiles of C --------------------------------------------------
// Tile registers: tmm0-3 hold up to 4 tiles of C (16 rows x 16 f32: 64 columns), tmm4 a tile
// of A (16 rows x 16 pairs: 32 of k), tmm5-7 tiles of the packed weight (16 pairs x 16
// columns) in turn. Every tile is 16 rows x 64 bytes (palette 1), so one configuration serves
// all: A is rounded into rows padded to 16 and k to 32 (zeros), the weight packed in whole
// tiles. GCC 12's tile intrinsics are asm without a memory clobber: `fence` orders memory
// around them.
constexpr std::size_t tile_rows = 16, tile_pairs = 16, group = 4;  // group: C tiles at once

inline void fence() { asm volatile("" ::: "memory"); }

struct alignas(64) TileConfig {
    std::uint8_t palette = 1, start_row = 0, reserved[14] = {};
    std::uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
    std::uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

// B tile C of a chunk (weight rows wq) into tmm5 + C % 3, then C tile C += A (tmm4) B. (GCC's
// tile macros paste their register numbers: literals only.)
template <int C>
RECUR_AMX inline void multiply_tile(const std::uint32_t* wq, std::size_t w_bytes) {
    const std::uint32_t* b = wq + C * lanes;
    if constexpr (C == 0) {
        _tile_loadd(5, b, w_bytes);
        _tile_dpbf16ps(0, 4, 5);
    } else if constexpr (C == 1) {
        _tile_loadd(6, b, w_bytes);
        _tile_dpbf16ps(1, 4, 6);
    } else if constexpr (C == 2) {
        _tile_loadd(7, b, w_bytes);
        _tile_dpbf16ps(2, 4, 7);
    } else {
        _tile_loadd(5, b, w_bytes);
        _tile_dpbf16ps(3, 4, 5);
    }
}

// NC (1-4) tiles of 16 rows into `out` (row stride out_bytes) = A's 16 rows (ar, a_stride
// pairs) times the weight's columns at w (w_stride pairs per row) over `chunks` of 16 pairs.
template <int NC>
RECUR_AMX void tile_group(std::size_t chunks, const std::uint32_t* ar, std::size_t a_stride, const std::uint32_t* w,
                          std::size_t w_stride, float* out, std::size_t out_bytes) {
    const std::size_t a_bytes = a_stride * 4, w_bytes = w_stride * 4;
    _tile_zero(0);
    if constexpr (NC > 1) _tile_zero(1);
    if constexpr (NC > 2) _tile_zero(2);
    if constexpr (NC > 3) _tile_zero(3);
    for (std::size_t q = 0; q < chunks; ++q) {
        const std::uint32_t* wq = w + q * tile_pairs * w_stride;
        _tile_loadd(4, ar + q * tile_pairs, a_bytes);
        multiply_tile<0>(wq, w_bytes);
        if constexpr (NC > 1) multiply_tile<1>(wq, w_bytes);
        if constexpr (NC > 2) multiply_tile<2>(wq, w_bytes);
        if constexpr (NC > 3) multiply_tile<3>(wq, w_bytes);
    }
    _tile_stored(0, out, out_bytes);
    if constexpr (NC > 1) _tile_stored(1, out + lanes, out_bytes);
    if constexpr (NC > 2) _tile_stored(2, out + 2 * lanes, out_bytes);
    if constexpr (NC > 3) _tile_stored(3, out + 3 * lanes, out_bytes);
    fence();
}

// C (m x n) [+]= A op(W), A rounded into `ar` (rows padded to 16, a_stride pairs, k padded to
// 32), the weight in whole tiles of 16 pairs (bf16_pair_rows). Without accumulate, tiles
// wholly inside C are stored to C itself; the others go through `edge` and (masked) adds (a
// tile load of C just written by the caller stalls: measured slower).
RECUR_AMX void tile_gemm(std::size_t m, std::size_t n, std::size_t pairs, const std::uint32_t* ar, std::size_t a_stride,
                         const std::uint32_t* w, bool accumulate, float* c, std::size_t ldc) {
    static const TileConfig config;
    alignas(64) float edge[tile_rows * group * lanes];
    const std::size_t w_stride = bf16_pair_stride(n), chunks = (pairs + tile_pairs - 1) / tile_pairs;
    // ldtilecfg costs about 200 ns: kept loaded across calls unless the thread's tile
    // configuration changed since (oneDNN's AMX kernels load their own).
    TileConfig current;
    _tile_storeconfig(&current);
    fence();
    if (std::memcmp(&current, &config, sizeof config) != 0) _tile_loadconfig(&config);
    for (std::size_t i = 0; i < m; i += tile_rows) {
        const std::uint32_t* ai = ar + i * a_stride;
        const std::size_t rows = std::min(tile_rows, m - i);
        for (std::size_t j = 0; j < w_stride; j += group * lanes) {
            const std::size_t tiles = std::min(group, (w_stride - j) / lanes), cols = std::min(n - j, tiles * lanes);
            const bool direct = !accumulate && rows == tile_rows && cols == tiles * lanes;
            float* out = direct ? c + i * ldc + j : edge;
            const std::size_t out_bytes = direct ? ldc * 4 : group * lanes * 4;
            switch (tiles) {
                case 4:
                    tile_group<4>(chunks, ai, a_stride, w + j, w_stride, out, out_bytes);
                    break;
                case 3:
                    tile_group<3>(chunks, ai, a_stride, w + j, w_stride, out, out_bytes);
                    break;
                case 2:
                    tile_group<2>(chunks, ai, a_stride, w + j, w_stride, out, out_bytes);
                    break;
                default:
                    tile_group<1>(chunks, ai, a_stride, w + j, w_stride, out, out_bytes);
                    break;
            }
            if (direct) continue;
            // edge's rows and columns that are C's: C [+]= them
            for (std::size_t r = 0; r < rows; ++r)
                for (std::size_t v = 0; v * lanes < cols; ++v) {
                    const __mmask16 mask = first_lanes(cols - v * lanes);
                    float* dst = c + (i + r) * ldc + j + v * lanes;
                    __m512 y = _mm512_load_ps(edge + r * group * lanes + v * lanes);
                    if (accumulate) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, dst));
                    _mm512_mask_storeu_ps(dst, mask, y);
                }
        }
    }
}

// Whether this process may use AMX: the CPU has AMX-BF16, oneDNN uses it too (so
// DNNL_MAX_CPU_ISA below AVX512_CORE_AMX turns the tiles off here as well) and Linux granted the
// tile data state (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA, as oneDNN asks).
bool tiles_usable() {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
    constexpr unsigned amx_bf16 = 1u << 22, amx_tile = 1u << 24;  // CPUID.(7, 0):EDX
    if ((edx & amx_tile) == 0 || (edx & amx_bf16) == 0) return false;
    if (dnnl::get_effective_cpu_isa() != dnnl::cpu_isa::avx512_core_amx) return false;
    constexpr long req_xcomp_perm = 0x1023, xtiledata = 18;
    return syscall(SYS_arch_prctl, req_xcomp_perm, xtiledata) == 0;
}

// RECUR_BF16_KERNEL (read once): "onednn" keeps every bf16 product on oneDNN, "dot" takes
// vdpbf16ps even where AMX is usable; for A/B runs and tests.
bool kernel_is(const char* name) {
    static const std::string chosen = [] {
        const char* v = std::getenv("RECUR_BF16_KERNEL");
        return std::string(v ? v : "");
    }();
    return chosen == name;
}

}  // namespace

bool bf16_kernel_available() {
    static const bool available = [] {
        __builtin_cpu_init();
        return !kernel_is("onednn") && __builtin_cpu_supports("avx512bf16") && bf16_native();
    }();
    return available;
}

bool bf16_tiles_available() {
    static const bool available = bf16_kernel_available() && !kernel_is("dot") && tiles_usable();
    return available;
}

void round_to_bf16(const float* a, std::size_t n, std::uint16_t* out) { round_span(a, n, n, out); }

std::size_t bf16_pair_stride(std::size_t n) { return round_up(n, lanes); }

std::size_t bf16_pair_rows(std::size_t k) { return round_up((k + 1) / 2, tile_pairs); }

void pack_bf16_pairs(const float* w, bool transposed, std::size_t k, std::size_t n, std::uint32_t* out) {
    const std::size_t stride = bf16_pair_stride(n);
    // op(W)[l][j], rounded; zero past k
    const auto at = [&](std::size_t l, std::size_t j) -> std::uint32_t {
        return l < k ? to_bf16(transposed ? w[j * k + l] : w[l * n + j]) : 0u;
    };
    for (std::size_t p = 0; p < bf16_pair_rows(k); ++p) {
        std::uint32_t* row = out + p * stride;
        for (std::size_t j = 0; j < n; ++j) row[j] = at(2 * p, j) | (at(2 * p + 1, j) << 16);
        std::fill(row + n, row + stride, 0u);
    }
}

void bf16_pair_gemm(std::size_t m, std::size_t n, std::size_t k, const float* a, std::size_t lda,
                    const std::uint32_t* w, bool accumulate, float* c, std::size_t ldc) {
    if (m == 0 || n == 0) return;
    // A rounded: rows of round_up(k, 32) / 2 pairs, zero past k; for AMX also zero rows up to a
    // multiple of 16.
    const std::size_t pairs = (k + 1) / 2, a_stride = round_up(k, 2 * lanes) / 2;
    const bool tiles = bf16_tiles_available();
    const std::size_t rows = tiles ? round_up(m, tile_rows) : m;
    thread_local std::vector<std::uint32_t> rounded;
    if (rounded.size() < rows * a_stride) rounded.resize(rows * a_stride);
    round_rows(a, m, k, lda, rounded.data(), a_stride);
    std::fill(rounded.data() + m * a_stride, rounded.data() + rows * a_stride, 0u);
    if (tiles)
        tile_gemm(m, n, pairs, rounded.data(), a_stride, w, accumulate, c, ldc);
    else
        dot_gemm(m, n, pairs, rounded.data(), a_stride, w, accumulate, c, ldc);
}

}  // namespace recur::detail
