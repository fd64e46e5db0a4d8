// The thread policy's library-internal half (not installed), shared by ops/ and src/train/:
// the BLAS library's own thread count. The public half (recur::set_num_threads, the OpenMP
// threads one op may use) is in recur/parallel.hpp. Defined in ops/blas.cpp, the only
// translation unit that may include OpenBLAS's <cblas.h>.
#pragma once

namespace recur::detail {

/// Threads OpenBLAS uses for one call (openblas_get_num_threads).
int blas_threads();
/// Sets them (openblas_set_num_threads); the caller checks n >= 1. Global to the process:
/// call it outside parallel regions.
void set_blas_threads(int n);

}  // namespace recur::detail
