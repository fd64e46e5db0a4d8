// Products by a weight matrix kept packed: oneDNN's matmul primitive with its weights reordered
// once into the blocked layout the primitive prefers ("any"), in f32 or bf16, and cached per
// (Parameter, version, dtype, orientation), so a weight multiplied at every time step is packed
// (and, in bf16, rounded) once per optimizer update, not once per step. Small bf16 products
// (up to 2^19 multiply-adds) run on recur's own kernel instead (ops/bf16_kernel.hpp), over the
// weight packed in its pair layout, cached the same way. Defined in ops/packed_gemm.cpp.
// Internal to the library (not installed).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "recur/precision.hpp"
#include "recur/tape.hpp"

namespace recur::detail {

/// A weight operand W: `rows` x `cols`, row-major at `data`. `owner` identifies the Parameter
/// it is the value of (nullptr for any other array: then it is packed on every call), and
/// `version` that value (Parameter::version()).
struct WeightRef {
    const void* owner = nullptr;
    std::uint64_t version = 0;
    const float* data = nullptr;
    std::size_t rows = 0, cols = 0;
};

/// C (M x N, row stride ldc) = A (M x K, row stride lda) op(W) [+ C when accumulate] [+ bias],
/// with op(W) = W^T (W is N x K) when transpose_w, else W (K x N), and bias (N, or null) added to
/// every row (only without accumulate). f32: A and W in f32; bf16: A is rounded to bf16 per call
/// and W once per version (round to nearest even), the products are summed in f32 and C is f32.
/// The bias goes into oneDNN's matmul as its bias argument, so C is written once: filling C with
/// the bias rows and accumulating onto them read and wrote C twice more (a bf16 M GRU
/// projection, 6400 x 768 x 256, took 10.8-11.4 ms that way and 7.5-7.6 with the bias argument).
/// Throws value_error when the CPU's oneDNN has no kernel for it.
void packed_gemm(Precision precision, std::size_t m, std::size_t n, std::size_t k, const float* a, std::size_t lda,
                 const WeightRef& w, bool transpose_w, bool accumulate, float* c, std::size_t ldc,
                 const float* bias = nullptr);

/// Every row of c (m x n, rows ldc apart) = bias (n): a product's bias, where the product is
/// then accumulated onto it (the paths that cannot take it as an argument).
template <class T>
void bias_rows(T* c, std::size_t m, std::size_t n, std::size_t ldc, const T* bias) {
    for (std::size_t r = 0; r < m; ++r) std::copy(bias, bias + n, c + r * ldc);
}

/// Node w of tape t as a weight operand: keyed on its Parameter and version when it is a bound
/// Parameter, else packed on every call.
inline WeightRef weight_ref(const Tape<float>& t, std::uint32_t w) {
    const auto* p = t.node(w).param;
    const auto& v = t.value(w);
    return {p, p ? p->version() : 0, v.data(), v.shape()[0], v.shape()[1]};
}

/// C (M x N, ldc) [+]= A^T B with A (K x M, lda) and B (K x N, ldb) both rounded to bf16 per
/// call, summed in f32: the weight gradient dW += dpre^T h of a bf16 tape.
void bf16_gemm_tn(std::size_t m, std::size_t n, std::size_t k, const float* a, std::size_t lda, const float* b,
                  std::size_t ldb, bool accumulate, float* c, std::size_t ldc);

/// Under a bf16 float tape, for a product of at least 2^22 multiply-adds: c (m x n, ldc) [+]=
/// a^T b (a: k x m, b: k x n) by bf16_gemm_tn, and true; otherwise nothing and false. Smaller
/// ones stay f32: rounding and transposing both operands per call cost more than the product
/// gains there (an S training step ran 0.80-0.84x of f32 with them in bf16, 1.18-1.25x without).
/// A block of rows of a larger product passes the whole product's rows as `whole_m`, so that
/// every block gets the precision the whole would.
template <class T>
bool bf16_weight_grad(const Tape<T>& t, std::size_t m, std::size_t n, std::size_t k, const T* a, std::size_t lda,
                      const T* b, std::size_t ldb, bool accumulate, T* c, std::size_t ldc, std::size_t whole_m = 0) {
    if constexpr (std::is_same_v<T, float>) {
        const double macs = double(std::max(m, whole_m)) * double(n) * double(k);
        if (t.precision() == Precision::bf16 && macs >= double(1 << 22)) {
            bf16_gemm_tn(m, n, k, a, lda, b, ldb, accumulate, c, ldc);
            return true;
        }
    }
    return false;
}

/// Whether an f32 product of these sizes by a weight (op(w) = w^T when transpose_w) runs on
/// detail::gemm (recur's small-product kernel or dnnl_sgemm) instead of packed_gemm: where the
/// packed matmul was not measured faster (see packed_gemm.cpp).
bool plain_f32_product(std::size_t m, std::size_t n, std::size_t k, bool transpose_w);

/// c (m x n, ldc) [+]= a (m x k, lda) op(w) [+ bias] for node w (op and bias as in packed_gemm)
/// on the packed matmul, and true, where that serves: every product of a bf16 float tape, and
/// f32 products that plain_f32_product leaves to it when w is a bound Parameter (a weight with
/// no version to key on would be packed on every call); otherwise nothing and false (the caller
/// runs detail::gemm).
template <class T>
bool packed_weight_product(Tape<T>& t, std::uint32_t w, bool transpose_w, std::size_t m, std::size_t n, std::size_t k,
                           const T* a, std::size_t lda, bool accumulate, T* c, std::size_t ldc,
                           const T* bias = nullptr) {
    if constexpr (std::is_same_v<T, float>) {
        const bool bf16 = t.precision() == Precision::bf16;
        if (bf16 || (t.node(w).param != nullptr && !plain_f32_product(m, n, k, transpose_w))) {
            packed_gemm(t.precision(), m, n, k, a, lda, weight_ref(t, w), transpose_w, accumulate, c, ldc, bias);
            return true;
        }
    }
    return false;
}

/// w_ih (G x in, or none: in = 0) and w_hh (G x hidden, G = gates x hidden) packed into
/// gate_product's panels (ops/gate_product.hpp) for the f32 whole-layer kernels, cached per
/// thread on both weights' Parameters and versions like the packed matmul's weights, so that a
/// layer run one short sequence at a time (T = 1 per call) packs once per update, not per call.
/// Packed per call, into a per-thread buffer, when either is not a bound Parameter.
const float* gate_panels(const WeightRef& w_ih, std::size_t in, const WeightRef& w_hh, std::size_t gates,
                         std::size_t hidden);

/// Test hook: weight packings (reorders) made so far by this process.
std::uint64_t weight_packs();

/// x rounded to bf16 (round to nearest even; NaN stays NaN), as its 16 upper bits.
inline std::uint16_t to_bf16(float x) {
    std::uint32_t u;
    __builtin_memcpy(&u, &x, sizeof u);
    const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const std::uint32_t quiet_nan = (u >> 16) | 0x40u;
    return static_cast<std::uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);  // a select: vectorises
}

}  // namespace recur::detail
