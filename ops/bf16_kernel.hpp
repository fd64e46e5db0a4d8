// recur's own bf16 kernel for small products by a weight: AMX tiles (tdpbf16ps) where usable,
// else AVX512_BF16's vdpbf16ps, with the weight rounded and laid out once per Parameter version
// (packed_gemm.cpp caches it) and the left operand rounded per call. At S's recurrent products
// (16 x 256 x 64) it took about 0.6x the time of a oneDNN matmul call (which costs 0.7 us even
// at 1 x 64 x 16, where this kernel takes 0.2). Compiled for
// those instructions by function attributes, so it exists in portable builds too, and used
// only when bf16_kernel_available(). Defined in ops/bf16_kernel.cpp. Internal (not installed).
#pragma once

#include <cstddef>
#include <cstdint>

namespace recur::detail {

/// Whether recur's kernel may run: the CPU has AVX512_BF16 and oneDNN itself runs bf16
/// natively (recur::bf16_native(); so DNNL_MAX_CPU_ISA below AVX512_CORE_BF16 turns it off
/// too, and bf16 falls back to oneDNN's emulation or error).
bool bf16_kernel_available();

/// Whether bf16_pair_gemm runs on AMX tiles (tdpbf16ps) rather than vdpbf16ps: the CPU has
/// AMX-BF16, oneDNN uses AMX too, Linux lets this process use it, and RECUR_BF16_KERNEL is not
/// "dot". (RECUR_BF16_KERNEL=onednn turns recur's kernel off altogether.)
bool bf16_tiles_available();

/// out[j] = a[j] rounded to bf16 for j < n, by vcvtneps2bf16 (round to nearest even, NaN kept
/// as a quiet NaN; f32 values below 2^-126 in magnitude become zero, as the bf16 products read
/// them anyway). Only when bf16_kernel_available(): several times faster than to_bf16 per value
/// (packed_gemm.hpp), whose integer rounding GCC vectorises into about 20 instructions per 32.
void round_to_bf16(const float* a, std::size_t n, std::uint16_t* out);

/// Row stride, in 32-bit pairs, of op(W) (k x n) in the pair layout: n rounded up to 16.
std::size_t bf16_pair_stride(std::size_t n);

/// Rows of op(W) (k x n) in the pair layout: ceil(k / 2) rounded up to 16 (whole AMX tiles).
std::size_t bf16_pair_rows(std::size_t k);

/// op(W) (k x n) rounded to bf16 (round to nearest even) in the pair layout vdpbf16ps reads:
/// out[p * bf16_pair_stride(n) + j] holds op(W)[2p][j] in its low 16 bits and op(W)[2p + 1][j]
/// in its high 16, for p < bf16_pair_rows(k); the halves past k and the columns past n are
/// zero. op(W) = W^T of a row-major W (n x k) when transposed, else W (k x n) itself. `out`
/// holds bf16_pair_rows(k) * bf16_pair_stride(n) values.
void pack_bf16_pairs(const float* w, bool transposed, std::size_t k, std::size_t n, std::uint32_t* out);

/// C (m x n, row stride ldc) [+ C when accumulate] = A (m x k, lda) op(W), op(W) packed by
/// pack_bf16_pairs: A is rounded to bf16 per call, the products of bf16 pairs are summed in
/// f32 (so equal to the f32 product of the rounded operands up to the order of the sums). As in
/// vdpbf16ps / tdpbf16ps (and oneDNN's bf16 kernels), operands below 2^-126 in magnitude count
/// as zero. Only when bf16_kernel_available().
void bf16_pair_gemm(std::size_t m, std::size_t n, std::size_t k, const float* a, std::size_t lda,
                    const std::uint32_t* w, bool accumulate, float* c, std::size_t ldc);

}  // namespace recur::detail
