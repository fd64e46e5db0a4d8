// The only translation unit that includes OpenBLAS's <cblas.h> (xtensor-blas declares its own
// cblas prototypes, which clash with it). Everything else calls detail::gemm.
#include <cblas.h>

#include <omp.h>

#include <algorithm>
#include <limits>
#include <mutex>

#include "blas_threads.hpp"
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
void split_product(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, const T* a,
                   std::size_t lda, const T* b, std::size_t ldb, T* c, std::size_t ldc, Call call) {
    const int threads = threads_for(2.0 * double(m) * double(n) * double(k), split_flops);
    const bool by_rows = m >= n;
    const std::size_t extent = by_rows ? m : n;
    const std::size_t blocks = extent / split_align;
    if (threads < 2 || blocks < 2) {
        call(m, n, a, b, c);
        return;
    }
    const auto parts = static_cast<std::size_t>(std::min<int>(threads, static_cast<int>(blocks)));
#pragma omp parallel num_threads(static_cast<int>(parts))
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
    const blasint K = to_blas(k), LDA = to_blas(std::max<std::size_t>(lda, 1)), LDB = to_blas(std::max<std::size_t>(ldb, 1)),
                  LDC = to_blas(std::max<std::size_t>(ldc, 1));
    to_blas(m), to_blas(n);  // checked here: nothing may throw inside the parallel region
    const auto ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
    split_product(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc,
                  [&](std::size_t rows, std::size_t cols, const T* pa, const T* pb, T* pc) {
                      blas_gemm(CblasRowMajor, ta, tb, static_cast<blasint>(rows), static_cast<blasint>(cols), K, alpha,
                                pa, LDA, pb, LDB, beta, pc, LDC);
                  });
}

template <>
void gemm<float>(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
                 const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c,
                 std::size_t ldc) {
    gemm_with(cblas_sgemm, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
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
