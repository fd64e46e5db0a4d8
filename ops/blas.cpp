// Matrix products. Everything else calls detail::gemm, which picks the kernel:
// - float, small products (an RNN step at B = 1, H = 16, up to about S's sizes): recur's own
//   register-tiled kernel below (no call overhead: a BLAS call alone costs 200-500 ns here,
//   more than the whole product);
// - float, larger ones: oneDNN's dnnl_sgemm (row-major, plain operands). It picks its kernels
//   from the CPU it runs on (AVX-512 here), where Debian's OpenBLAS 0.3.21 does not know recent
//   Xeons (family 6 model 0xCF) and falls back to its SSE3 "Prescott" kernels: 25-31 GFLOP/s
//   against 117-163 for oneDNN at the M and L step sizes (benchmarks/gemm notes in the README);
// - double (gradient checks): OpenBLAS's cblas_dgemm.
// The only translation unit that includes OpenBLAS's <cblas.h> (xtensor-blas declares its own
// cblas prototypes, which clash with it).
#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>

#include <omp.h>
#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <mutex>

#include "src/threads.hpp"
#include "common.hpp"

namespace recur::detail {

// Threads: recur owns them. OpenBLAS runs every call on one thread (set once, before the
// first product), and a large product is split into row or column blocks of C, one per OpenMP
// thread of recur's (set_num_threads / OMP_NUM_THREADS). So there is one pool of threads:
// OpenBLAS's workers never compete with libgomp's for the cores (with both pools active, an
// LSTM step on 2 cores ran 2x slower than on one). Each block is a smaller product with the
// same K, so every element of C is summed in the same order whatever the split.

namespace {
blasint to_blas(std::size_t v) {
    if (v > static_cast<std::size_t>(std::numeric_limits<blasint>::max()))
        throw shape_error("gemm: extent " + std::to_string(v) + " exceeds the BLAS index range");
    return static_cast<blasint>(v);
}

void blas_on_one_thread() {
    static std::once_flag once;
    std::call_once(once, [] { openblas_set_num_threads(1); });
}

constexpr double split_flops = 4e6;  // ~40 us of work: below this, waking threads costs more
constexpr std::size_t split_align = 16;  // block edges on multiples of the kernels' tiles

// C (m x n) = op(A) op(B) + beta C through call(rows, cols, a, b, c) on blocks of C.
template <class T, class Call>
void split_product(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, const T* a, std::size_t lda,
                   const T* b, std::size_t ldb, T* c, std::size_t ldc, Call call) {
    const int threads = threads_for(2.0 * double(m) * double(n) * double(k), split_flops);
    const bool by_rows = m >= n;
    const std::size_t extent = by_rows ? m : n;
    const std::size_t blocks = extent / split_align;
    if (threads < 2 || blocks < 2) {
        call(m, n, a, b, c);
        return;
    }
    const auto parts = static_cast<std::size_t>(std::min<int>(threads, static_cast<int>(blocks)));
#pragma omp parallel num_threads(static_cast <int>(parts))
    {
        const auto p = static_cast<std::size_t>(omp_get_thread_num());
        const std::size_t lo = blocks * p / parts * split_align;
        const std::size_t hi = p + 1 == parts ? extent : blocks * (p + 1) / parts * split_align;
        if (by_rows)  // rows lo..hi of C: rows of op(A)
            call(hi - lo, n, trans_a ? a + lo : a + lo * lda, b, c + lo * ldc);
        else  // columns lo..hi of C: columns of op(B)
            call(m, hi - lo, a, trans_b ? b + lo * ldb : b + lo, c + lo);
    }
}
}  // namespace

// The checks, then split_product over `blas_gemm` (cblas_sgemm or cblas_dgemm).
template <class T, class BlasGemm>
void gemm_with(BlasGemm blas_gemm, bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, T alpha,
               const T* a, std::size_t lda, const T* b, std::size_t ldb, T beta, T* c, std::size_t ldc) {
    if (m == 0 || n == 0) return;
    blas_on_one_thread();
    const blasint K = to_blas(k), LDA = to_blas(std::max<std::size_t>(lda, 1)),
                  LDB = to_blas(std::max<std::size_t>(ldb, 1)), LDC = to_blas(std::max<std::size_t>(ldc, 1));
    to_blas(m), to_blas(n);  // checked here: nothing may throw inside the parallel region
    const auto ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
    split_product(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc,
                  [&](std::size_t rows, std::size_t cols, const T* pa, const T* pb, T* pc) {
                      blas_gemm(CblasRowMajor, ta, tb, static_cast<blasint>(rows), static_cast<blasint>(cols), K, alpha,
                                pa, LDA, pb, LDB, beta, pc, LDC);
                  });
}

namespace {

// ---- recur's small-product kernel ------------------------------------------------------------
// C (m x n) = alpha * A (m x k) B (k x n) + beta * C with B row-major (ldb), and A read as
// a(i, l) = a[i * a_row + l * a_col] (so A or A^T). Tiles of R rows x V SIMD vectors of C live
// in registers; each step of l broadcasts R elements of A and loads V vectors of B's row l.
// Every element of C is the fused multiply-add chain over l = 0..k-1 in order, whatever the
// tiling; beta = 0 never reads C.
template <std::size_t R, std::size_t V, class T>
void tile(std::size_t k, T alpha, const T* a, std::size_t a_row, std::size_t a_col, const T* b, std::size_t ldb, T beta,
          T* c, std::size_t ldc) {
    using batch = xsimd::batch<T>;
    constexpr std::size_t w = batch::size;
    batch acc[R][V];
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t v = 0; v < V; ++v) acc[r][v] = batch(T(0));
    for (std::size_t l = 0; l < k; ++l) {
        batch row[V];
        for (std::size_t v = 0; v < V; ++v) row[v] = batch::load_unaligned(b + l * ldb + v * w);
        for (std::size_t r = 0; r < R; ++r) {
            const batch x(a[r * a_row + l * a_col]);
            for (std::size_t v = 0; v < V; ++v) acc[r][v] = xsimd::fma(x, row[v], acc[r][v]);
        }
    }
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t v = 0; v < V; ++v) {
            T* out = c + r * ldc + v * w;
            batch y = acc[r][v] * batch(alpha);
            if (beta != T(0)) y = xsimd::fma(batch(beta), batch::load_unaligned(out), y);
            y.store_unaligned(out);
        }
}

// The columns past the last whole vector, one element at a time (same order of l).
template <class T>
void tail_columns(std::size_t m, std::size_t n0, std::size_t n, std::size_t k, T alpha, const T* a, std::size_t a_row,
                  std::size_t a_col, const T* b, std::size_t ldb, T beta, T* c, std::size_t ldc) {
    for (std::size_t i = 0; i < m; ++i)
        for (std::size_t j = n0; j < n; ++j) {
            T acc = T(0);
            for (std::size_t l = 0; l < k; ++l) acc = std::fma(a[i * a_row + l * a_col], b[l * ldb + j], acc);
            T& out = c[i * ldc + j];
            out = beta != T(0) ? std::fma(beta, out, alpha * acc) : alpha * acc;
        }
}

template <std::size_t R, class T>
void row_block(std::size_t n, std::size_t k, T alpha, const T* a, std::size_t a_row, std::size_t a_col, const T* b,
               std::size_t ldb, T beta, T* c, std::size_t ldc) {
    constexpr std::size_t w = xsimd::batch<T>::size, V = 4;
    std::size_t j = 0;
    for (; j + V * w <= n; j += V * w) tile<R, V>(k, alpha, a, a_row, a_col, b + j, ldb, beta, c + j, ldc);
    for (; j + w <= n; j += w) tile<R, 1>(k, alpha, a, a_row, a_col, b + j, ldb, beta, c + j, ldc);
    if (j < n) tail_columns(R, j, n, k, alpha, a, a_row, a_col, b, ldb, beta, c, ldc);
}

template <class T>
void small_gemm(std::size_t m, std::size_t n, std::size_t k, T alpha, const T* a, std::size_t a_row, std::size_t a_col,
                const T* b, std::size_t ldb, T beta, T* c, std::size_t ldc) {
    constexpr std::size_t R = 4;
    std::size_t i = 0;
    for (; i + R <= m; i += R) row_block<R>(n, k, alpha, a + i * a_row, a_row, a_col, b, ldb, beta, c + i * ldc, ldc);
    switch (m - i) {
        case 3:
            return row_block<3>(n, k, alpha, a + i * a_row, a_row, a_col, b, ldb, beta, c + i * ldc, ldc);
        case 2:
            return row_block<2>(n, k, alpha, a + i * a_row, a_row, a_col, b, ldb, beta, c + i * ldc, ldc);
        case 1:
            return row_block<1>(n, k, alpha, a + i * a_row, a_row, a_col, b, ldb, beta, c + i * ldc, ldc);
        default:
            return;
    }
}

// Products up to this many multiply-adds with B not transposed take the small kernel: where a
// library call's fixed cost (~190 ns for dnnl_sgemm) is a large share. Measured one thread:
// 1 x 64 x 16 (an XS step) 65 ns against 186 for dnnl_sgemm; at S's 16 x 256 x 64 they are
// close and at S's backward shapes oneDNN's packed kernels win (4-5 us against 15-18).
constexpr double small_product = 1 << 16;

void check_dnnl(dnnl_status_t status) {
    if (status != dnnl_success)
        throw shape_error("gemm: oneDNN's sgemm failed with status " + std::to_string(int(status)));
}

}  // namespace

template <>
void gemm<float>(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, float alpha, const float* a,
                 std::size_t lda, const float* b, std::size_t ldb, float beta, float* c, std::size_t ldc) {
    if (m == 0 || n == 0) return;
    if (!trans_b && double(m) * double(n) * double(k) <= small_product) {
        small_gemm(m, n, k, alpha, a, trans_a ? 1 : lda, trans_a ? lda : 1, b, ldb, beta, c, ldc);
        return;
    }
    const dnnl_dim_t K = static_cast<dnnl_dim_t>(k), LDA = static_cast<dnnl_dim_t>(std::max<std::size_t>(lda, 1)),
                     LDB = static_cast<dnnl_dim_t>(std::max<std::size_t>(ldb, 1)),
                     LDC = static_cast<dnnl_dim_t>(std::max<std::size_t>(ldc, 1));
    const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
    // One pool of threads: recur splits C across its OpenMP threads; inside that region
    // oneDNN runs each block on the calling thread. Errors are collected and thrown after it.
    std::atomic<int> failed{dnnl_success};
    split_product(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc,
                  [&](std::size_t rows, std::size_t cols, const float* pa, const float* pb, float* pc) {
                      const dnnl_status_t s =
                          dnnl_sgemm(ta, tb, static_cast<dnnl_dim_t>(rows), static_cast<dnnl_dim_t>(cols), K, alpha, pa,
                                     LDA, pb, LDB, beta, pc, LDC);
                      if (s != dnnl_success) failed.store(s, std::memory_order_relaxed);
                  });
    check_dnnl(static_cast<dnnl_status_t>(failed.load()));
}

template <>
void gemm<double>(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, double alpha,
                  const double* a, std::size_t lda, const double* b, std::size_t ldb, double beta, double* c,
                  std::size_t ldc) {
    gemm_with(cblas_dgemm, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

int blas_threads() { return openblas_get_num_threads(); }

void set_blas_threads(int n) { openblas_set_num_threads(n); }

}  // namespace recur::detail
