// Linear algebra primitives: matmul and linear, on OpenBLAS through detail::gemm.
// Outputs are written in place by GEMM; gradients accumulate with beta = 1 (beta = 0 for the
// first contribution of a sweep); transposes are BLAS flags, never copies.
#include <algorithm>
#include <array>
#include <exception>

#include "common.hpp"
#include "packed_gemm.hpp"

namespace recur {
using detail::gemm;

// ---- matmul: y = a b ------------------------------------------------------------------------
// a (M, K) or (B, M, K) [rows R = M or B*M], b (K, N) -> y (M, N) or (B, M, N).
// da += g b^T  (R, K);  db += a^T g  (K, N)
template <class T>
static void matmul_backward(Tape<T>& t, std::uint32_t i) {
    const auto& g = t.node(i).grad;
    const std::uint32_t a = t.input(i, 0), b = t.input(i, 1);
    const auto& av = t.value(a);
    const auto& bv = t.value(b);
    const std::size_t k = bv.shape()[0], n = bv.shape()[1], rows = av.size() / k;
    if (t.needs_grad(a)) {
        auto r = t.grad_ref(a);
        const T beta = r.beta();
        gemm<T>(false, true, rows, k, n, T(1), g.data(), n, bv.data(), n, beta, r.buffer().data(), k);
    }
    if (t.needs_grad(b)) {
        auto r = t.grad_ref(b);
        const T beta = r.beta();
        gemm<T>(true, false, k, n, rows, T(1), av.data(), k, g.data(), n, beta, r.buffer().data(), n);
    }
}
template <class T>
Var<T> matmul(const Var<T>& a, const Var<T>& b) {
    Tape<T>& t = detail::tape_of("matmul", a, b);
    const Shape as = a.shape(), bs = b.shape();  // copies: push() below may move node storage
    if (bs.size() != 2 || (as.size() != 2 && as.size() != 3) || as.back() != bs[0])
        throw shape_error("matmul: expects (M, K) x (K, N) or (B, M, K) x (K, N), got " + shape_str(as) + " x " +
                          shape_str(bs));
    Shape ys = as;
    ys.back() = bs[1];
    const std::uint32_t out = t.push("matmul", {a.index(), b.index()}, &matmul_backward<T>);
    auto& y = t.output_value(out, ys);
    const auto& av = t.value(a.index());
    const auto& bv = t.value(b.index());
    const std::size_t k = bs[0], n = bs[1], rows = av.size() / k;
    gemm<T>(false, false, rows, n, k, T(1), av.data(), k, bv.data(), n, T(0), y.data(), n);
    return t.handle(out);
}

// ---- linear: y = x W^T + b ------------------------------------------------------------------
// x (..., I) [rows R], W (O, I), b (O) -> y (..., O).
// db += sum over rows of g  (O);  dW += g^T x  (O, I);  dx += g W  (R, I)
// When the sweep reports a bound weight's rows final early (Tape::reports_grad_rows: this node
// reads W last, and a hook listens, as distributed training's gradient reducer does), db comes
// first and dW is made in blocks of rows, each reported once written, so the reduction of one
// block overlaps the product of the next and dx. From the last back, the blocks have last_rows
// (O / 16, at least 8), last_rows, 2 last_rows, 4 last_rows, ... rows, the first what is left
// (O = 1024: 512, 256, 128, 64, 64): few products, and little left to send at the end. (The blocks
// give the same bits as one product: measured for f32 at the sizes of the benchmarks; a 1-row
// block would not, as BLAS runs it as a matrix-vector product.)
namespace {
constexpr std::size_t last_weight_block_divisor = 16, min_weight_block_rows = 8;
}  // namespace

template <class T>
static void linear_backward(Tape<T>& t, std::uint32_t i) {
    const auto& node = t.node(i);
    const auto& g = node.grad;
    const std::uint32_t x = t.input(i, 0), w = t.input(i, 1);
    const auto& xv = t.value(x);
    const auto& wv = t.value(w);
    const std::size_t o = wv.shape()[0], in = wv.shape()[1], rows = in == 0 ? 0 : xv.size() / in;
    if (node.num_inputs == 3 && t.needs_grad(t.input(i, 2))) {
        T* db = t.grad_ref(t.input(i, 2)).zeroed().data();
        const T* gp = g.data();
        for (std::size_t r = 0; r < rows; ++r)
            for (std::size_t c = 0; c < o; ++c) db[c] += gp[r * o + c];
        t.grad_rows_final(i, 2, o);
    }
    if (t.needs_grad(w)) {
        auto r = t.grad_ref(w);
        const T beta = r.beta();
        T* dw = r.buffer().data();
        // Rows [r0, r0 + n) of dW: g[:, r0 : r0 + n]^T x.
        const auto rows_of_dw = [&](std::size_t r0, std::size_t n) {
            if (!detail::bf16_weight_grad(t, n, in, rows, g.data() + r0, o, xv.data(), in, beta != T(0), dw + r0 * in,
                                          in, o))
                gemm<T>(true, false, n, in, rows, T(1), g.data() + r0, o, xv.data(), in, beta, dw + r0 * in, in);
        };
        if (t.reports_grad_rows(i, 1)) {
            const std::size_t last_rows =
                std::max(min_weight_block_rows, (o + last_weight_block_divisor - 1) / last_weight_block_divisor);
            std::array<std::size_t, 64> starts{};  // of the blocks, from the last back
            std::size_t blocks = 0;
            for (std::size_t end = o, size = last_rows; end > 0; size = blocks > 1 ? 2 * size : size) {
                std::size_t n = std::min(size, end);
                if (end - n < min_weight_block_rows) n = end;  // no block below the minimum first
                end -= n;
                starts[blocks++] = end;
            }
            for (std::size_t k = blocks; k-- > 0;) {
                const std::size_t end = k == 0 ? o : starts[k - 1];
                rows_of_dw(starts[k], end - starts[k]);
                t.grad_rows_final(i, 1, end);
            }
        } else {
            rows_of_dw(0, o);
        }
    }
    if (t.needs_grad(x)) {
        auto r = t.grad_ref(x);
        const T beta = r.beta();
        if (!detail::packed_weight_product(t, w, false, rows, in, o, g.data(), o, beta != T(0), r.buffer().data(), in))
            gemm<T>(false, false, rows, in, o, T(1), g.data(), o, wv.data(), in, beta, r.buffer().data(), in);
    }
}
template <class T>
static Var<T> linear_impl(const Var<T>& x, const Var<T>& weight, const Var<T>* bias) {
    Tape<T>& t = bias ? detail::tape_of("linear", x, weight, *bias) : detail::tape_of("linear", x, weight);
    const Shape xs = x.shape(), ws = weight.shape();  // copies: push() below may move node storage
    if (ws.size() != 2 || xs.empty() || xs.back() != ws[1])
        throw shape_error("linear: expects x (..., I) and weight (O, I), got x " + shape_str(xs) + " and weight " +
                          shape_str(ws));
    if (bias && (bias->dim() != 1 || bias->shape()[0] != ws[0]))
        throw shape_error("linear: bias must have shape (" + std::to_string(ws[0]) + ",) for weight " + shape_str(ws) +
                          ", got " + shape_str(bias->shape()));
    Shape ys = xs;
    ys.back() = ws[0];
    const std::uint32_t out = bias ? t.push("linear", {x.index(), weight.index(), bias->index()}, &linear_backward<T>)
                                   : t.push("linear", {x.index(), weight.index()}, &linear_backward<T>);
    t.backward_skips_output(out);  // dx = g W, dW = g^T x, db: y itself is never read
    auto& y = t.output_value(out, ys);
    const auto& xv = t.value(x.index());
    const auto& wv = t.value(weight.index());
    const std::size_t o = ws[0], in = ws[1], rows = detail::numel(ys) / (o == 0 ? 1 : o);
    const T* bp = bias ? t.value(bias->index()).data() : nullptr;
    // On the packed matmul (bf16: x and W rounded to bf16, W once per update, summed in f32; f32:
    // large products), with b as the matmul's bias argument: y is written once.
    if (detail::packed_weight_product(t, weight.index(), true, rows, o, in, xv.data(), in, false, y.data(), o, bp))
        return t.handle(out);
    T beta = T(0);
    if (bp) {  // y = broadcast b, then y += x W^T
        detail::bias_rows(y.data(), rows, o, o, bp);
        beta = T(1);
    }
    gemm<T>(false, true, rows, o, in, T(1), xv.data(), in, wv.data(), in, beta, y.data(), o);
    return t.handle(out);
}
template <class T>
Var<T> linear(const Var<T>& x, const Var<T>& weight) {
    return linear_impl<T>(x, weight, nullptr);
}
template <class T>
Var<T> linear(const Var<T>& x, const Var<T>& weight, const Var<T>& bias) {
    return linear_impl<T>(x, weight, &bias);
}

// ---- bmm: y[b] = a[b] b[b] --------------------------------------------------------------------
// a (B, M, K), b (B, K, N) -> y (B, M, N): one GEMM per batch on raw pointers, the batches
// spread over OpenMP threads when the whole product is large enough to pay for a region.
// da[b] += g[b] b[b]^T  (M, K);  db[b] += a[b]^T g[b]  (K, N)
namespace {
constexpr double bmm_parallel_flops = 4e6;  // as detail::gemm's split: ~40 us of work

// Runs product(b) for b < batches, on several threads when `flops` pays for it. gemm throws
// only on extents past the BLAS range (checked before) or a oneDNN failure: the first
// exception is rethrown after the region.
template <class Product>
void for_each_batch(std::size_t batches, double flops, Product product) {
    const int threads = detail::threads_for(flops, bmm_parallel_flops);
    if (threads < 2 || batches < 2) {
        for (std::size_t b = 0; b < batches; ++b) product(b);
        return;
    }
    std::exception_ptr failure;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (std::size_t b = 0; b < batches; ++b) {
        try {
            product(b);
        } catch (...) {
#pragma omp critical(recur_bmm_failure)
            if (!failure) failure = std::current_exception();
        }
    }
    if (failure) std::rethrow_exception(failure);
}
}  // namespace

template <class T>
static void bmm_backward(Tape<T>& t, std::uint32_t i) {
    const T* g = t.node(i).grad.data();
    const std::uint32_t a = t.input(i, 0), b = t.input(i, 1);
    const auto& av = t.value(a);
    const auto& bv = t.value(b);
    const std::size_t batches = av.shape()[0], m = av.shape()[1], k = av.shape()[2], n = bv.shape()[2];
    const double flops = 2.0 * double(batches) * double(m) * double(n) * double(k);
    if (t.needs_grad(a)) {
        auto r = t.grad_ref(a);
        const T beta = r.beta();
        T* da = r.buffer().data();
        for_each_batch(batches, flops, [&](std::size_t p) {
            gemm<T>(false, true, m, k, n, T(1), g + p * m * n, n, bv.data() + p * k * n, n, beta, da + p * m * k, k);
        });
    }
    if (t.needs_grad(b)) {
        auto r = t.grad_ref(b);
        const T beta = r.beta();
        T* db = r.buffer().data();
        for_each_batch(batches, flops, [&](std::size_t p) {
            gemm<T>(true, false, k, n, m, T(1), av.data() + p * m * k, k, g + p * m * n, n, beta, db + p * k * n, n);
        });
    }
}
template <class T>
Var<T> bmm(const Var<T>& a, const Var<T>& b) {
    Tape<T>& t = detail::tape_of("bmm", a, b);
    const Shape as = a.shape(), bs = b.shape();  // copies: push() below may move node storage
    if (as.size() != 3 || bs.size() != 3 || as[0] != bs[0] || as[2] != bs[1])
        throw shape_error("bmm: expects (B, M, K) x (B, K, N), got " + shape_str(as) + " x " + shape_str(bs));
    const std::size_t batches = as[0], m = as[1], k = as[2], n = bs[2];
    const std::uint32_t out = t.push("bmm", {a.index(), b.index()}, &bmm_backward<T>);
    auto& y = t.output_value(out, Shape{batches, m, n});
    const T* ap = t.value(a.index()).data();
    const T* bp = t.value(b.index()).data();
    T* yp = y.data();
    if (k == 0)
        std::fill(yp, yp + y.size(), T(0));  // an empty sum; gemm would leave y as it was
    else
        for_each_batch(batches, 2.0 * double(batches) * double(m) * double(n) * double(k), [&](std::size_t p) {
            gemm<T>(false, false, m, n, k, T(1), ap + p * m * k, k, bp + p * k * n, n, T(0), yp + p * m * n, n);
        });
    return t.handle(out);
}

#define RECUR_LINALG(T)                                                  \
    template Var<T> matmul(const Var<T>&, const Var<T>&);                \
    template Var<T> linear(const Var<T>&, const Var<T>&);                \
    template Var<T> linear(const Var<T>&, const Var<T>&, const Var<T>&); \
    template Var<T> bmm(const Var<T>&, const Var<T>&);
RECUR_INSTANTIATE_FOR(RECUR_LINALG)

}  // namespace recur
