// The one benchmark file that includes OpenBLAS's <cblas.h> (and never xtensor-blas).
#include "ref_sgemm.hpp"

#include <cblas.h>

namespace recur::bench {

void ref_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
               int ldb, float beta, float* c, int ldc) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha,
                a, lda, b, ldb, beta, c, ldc);
}

}  // namespace recur::bench
