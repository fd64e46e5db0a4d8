// The BLAS library's own thread count. Defined in ops/blas.cpp, the only translation unit
// that may include OpenBLAS's <cblas.h>. Internal to the library (not installed).
#pragma once

namespace recur::detail {

/// Threads OpenBLAS uses for one call (openblas_get_num_threads).
int blas_threads();
/// Sets them (openblas_set_num_threads); the caller checks n >= 1. Global to the process:
/// call it outside parallel regions.
void set_blas_threads(int n);

}  // namespace recur::detail
