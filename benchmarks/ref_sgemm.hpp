// Direct OpenBLAS calls for the reference timings of bench_engine (no tape, no xtensor).
#pragma once

namespace recur::bench {

/// C (m, n) = alpha * op(A) * op(B) + beta * C, row-major, straight to cblas_sgemm.
void ref_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
               int ldb, float beta, float* c, int ldc);

}  // namespace recur::bench
