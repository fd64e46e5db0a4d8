// The only translation unit that includes OpenBLAS's <cblas.h> (xtensor-blas declares its own
// cblas prototypes, which clash with it). Everything else calls detail::gemm.
#include <cblas.h>

#include <algorithm>
#include <limits>

#include "blas_threads.hpp"
#include "common.hpp"

namespace recur::detail {

namespace {
blasint to_blas(std::size_t v) {
    if (v > static_cast<std::size_t>(std::numeric_limits<blasint>::max()))
        throw shape_error("gemm: extent " + std::to_string(v) + " exceeds the BLAS index range");
    return static_cast<blasint>(v);
}
}  // namespace

template <>
void gemm<float>(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
                 const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c,
                 std::size_t ldc) {
    if (m == 0 || n == 0) return;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                to_blas(m), to_blas(n), to_blas(k), alpha, a, to_blas(std::max<std::size_t>(lda, 1)), b, to_blas(std::max<std::size_t>(ldb, 1)), beta, c, to_blas(std::max<std::size_t>(ldc, 1)));
}

template <>
void gemm<double>(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, double alpha,
                  const double* a, std::size_t lda, const double* b, std::size_t ldb, double beta, double* c,
                  std::size_t ldc) {
    if (m == 0 || n == 0) return;
    cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                to_blas(m), to_blas(n), to_blas(k), alpha, a, to_blas(std::max<std::size_t>(lda, 1)), b, to_blas(std::max<std::size_t>(ldb, 1)), beta, c, to_blas(std::max<std::size_t>(ldc, 1)));
}

int blas_threads() { return openblas_get_num_threads(); }

void set_blas_threads(int n) { openblas_set_num_threads(n); }

}  // namespace recur::detail
