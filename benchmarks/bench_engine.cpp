// bench_engine — the engine's speed baseline (Google Benchmark).
//
//   1. Tape overhead per node on tiny tensors (target <= 200 ns/node): a chain of mixed ops
//      (mul, add, tanh, sigmoid, affine) on (1,) and (2, 2) tensors; forward only,
//      forward + backward, and forward on a no-grad tape. Counter: per_node.
//   2. matmul (64, 256) x (256, 1024) in float within 5% of a direct cblas_sgemm into a
//      preallocated buffer; forward, and forward + backward against three direct sgemms.
//      Counter: FLOPS.
//   3. tanh, sigmoid, add, mul on (64, 1024) floats, >= 1 G elements/s on one core; forward
//      and backward, with references into preallocated outputs: the xtensor expression, an
//      explicit xsimd batch loop, and a plain scalar loop.
//      Counter: elems (per second).
//   4. bmm (64, 10, 128) x (64, 128, 128) against a loop of select + matmul + stack.
//      Counter: FLOPS.
//
// Every tape benchmark reuses one tape and clear()s it each iteration, as a training loop does,
// so node buffers are reused. Run pinned and single-threaded: benchmarks/run_engine.sh.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <vector>

#include <xsimd/xsimd.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xnoalias.hpp>
#include <xtensor/xrandom.hpp>

#include "recur/ops.hpp"
#include "recur/tape.hpp"
#include "ref_sgemm.hpp"

namespace {

using recur::Parameter;
using recur::Shape;
using recur::Tape;
using recur::TapeOptions;
using recur::Var;

// ---- Counters -------------------------------------------------------------------------------

/// CPU time per node (inverted rate of `nodes` per iteration): shown as e.g. "60.2ns".
void count_per_node(benchmark::State& state, double nodes) {
    state.counters["per_node"] =
        benchmark::Counter(nodes, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

/// Floating-point operations per second of CPU time: shown as e.g. "90.1G/s".
void count_flops(benchmark::State& state, double flops) {
    state.counters["FLOPS"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
}

/// Elements per second of CPU time: shown as e.g. "2.95G/s".
void count_elems(benchmark::State& state, double elements) {
    state.counters["elems"] = benchmark::Counter(elements, benchmark::Counter::kIsIterationInvariantRate);
}

xt::xarray<float> uniform(const Shape& shape, float lo, float hi, std::uint64_t seed) {
    xt::random::seed(seed);
    return xt::random::rand<float>(shape, lo, hi);
}

Shape tiny_shape(std::int64_t elements) { return elements == 1 ? Shape{1} : Shape{2, 2}; }

// ---- 1. Tape overhead per node on tiny tensors ----------------------------------------------

constexpr int kBlocks = 20;  // blocks of the mixed chain per iteration
constexpr int kOpsPerBlock = 5;  // mul, add, tanh, sigmoid, affine
constexpr int kChainOps = kBlocks * kOpsPerBlock;

/// h <- affine(sigmoid(tanh(h * w + b))), kBlocks times: kChainOps nodes.
Var<float> mixed_chain(Var<float> h, const Var<float>& w, const Var<float>& b) {
    for (int k = 0; k < kBlocks; ++k) {
        h = recur::mul(h, w);
        h = recur::add(h, b);
        h = recur::tanh(h);
        h = recur::sigmoid(h);
        h = recur::affine(h, 0.9f, 0.05f);
    }
    return h;
}

// Forward of the chain on a recording tape (inputs are bound Parameters: the nodes require
// grad, are pinned and keep their edges), then clear(). Nodes counted: the chain's ops.
void BM_TapeOverhead_Forward(benchmark::State& state) {
    const Shape shape = tiny_shape(state.range(0));
    Parameter<float> w(uniform(shape, 0.5f, 1.0f, 1)), b(uniform(shape, -0.1f, 0.1f, 2));
    Parameter<float> x(uniform(shape, -1.0f, 1.0f, 3));
    Tape<float> tape;
    for (auto _ : state) {
        {
            Var<float> h = mixed_chain(tape.bind(x), tape.bind(w), tape.bind(b));
            benchmark::DoNotOptimize(h.value().data());
        }
        tape.clear();
    }
    count_per_node(state, kChainOps);
}
BENCHMARK(BM_TapeOverhead_Forward)->ArgName("elems")->Arg(1)->Arg(4);

// Forward, sum to a scalar, backward (into the Parameters' grads), clear(). Nodes counted: the
// chain's ops plus the sum (each node is visited once forward and once backward).
void BM_TapeOverhead_ForwardBackward(benchmark::State& state) {
    const Shape shape = tiny_shape(state.range(0));
    Parameter<float> w(uniform(shape, 0.5f, 1.0f, 1)), b(uniform(shape, -0.1f, 0.1f, 2));
    Parameter<float> x(uniform(shape, -1.0f, 1.0f, 3));
    Tape<float> tape;
    for (auto _ : state) {
        {
            Var<float> loss = recur::sum(mixed_chain(tape.bind(x), tape.bind(w), tape.bind(b)));
            tape.backward(loss);
            benchmark::DoNotOptimize(w.grad().data());
        }
        tape.clear();
    }
    count_per_node(state, kChainOps + 1);
}
BENCHMARK(BM_TapeOverhead_ForwardBackward)->ArgName("elems")->Arg(1)->Arg(4);

// Forward on an inference tape (TapeOptions{.record = false}): nothing is kept for backward and
// each intermediate's slot is released when its last Var dies, then reused.
void BM_TapeOverhead_NoGrad(benchmark::State& state) {
    const Shape shape = tiny_shape(state.range(0));
    Parameter<float> w(uniform(shape, 0.5f, 1.0f, 1)), b(uniform(shape, -0.1f, 0.1f, 2));
    Parameter<float> x(uniform(shape, -1.0f, 1.0f, 3));
    Tape<float> tape(TapeOptions{.record = false});
    for (auto _ : state) {
        {
            Var<float> h = mixed_chain(tape.bind(x), tape.bind(w), tape.bind(b));
            benchmark::DoNotOptimize(h.value().data());
        }
        tape.clear();
    }
    count_per_node(state, kChainOps);
}
BENCHMARK(BM_TapeOverhead_NoGrad)->ArgName("elems")->Arg(1)->Arg(4);

// Reference: the same arithmetic in plain loops on stack arrays (the math alone, no tape).
void BM_TapeOverhead_RawMath(benchmark::State& state) {
    const std::size_t n = static_cast<std::size_t>(state.range(0));
    const Shape shape = tiny_shape(state.range(0));
    const xt::xarray<float> w0 = uniform(shape, 0.5f, 1.0f, 1), b0 = uniform(shape, -0.1f, 0.1f, 2);
    const xt::xarray<float> x0 = uniform(shape, -1.0f, 1.0f, 3);
    float w[4], b[4], h[4];
    for (std::size_t e = 0; e < n; ++e) w[e] = w0.data()[e], b[e] = b0.data()[e];
    for (auto _ : state) {
        for (std::size_t e = 0; e < n; ++e) h[e] = x0.data()[e];
        for (int k = 0; k < kBlocks; ++k)
            for (std::size_t e = 0; e < n; ++e) {
                const float t = std::tanh(h[e] * w[e] + b[e]);
                h[e] = 0.9f * (1.0f / (1.0f + std::exp(-t))) + 0.05f;
            }
        benchmark::DoNotOptimize(h);
        benchmark::ClobberMemory();
    }
    count_per_node(state, kChainOps);
}
BENCHMARK(BM_TapeOverhead_RawMath)->ArgName("elems")->Arg(1)->Arg(4);

// ---- 2. matmul against a direct sgemm ----------------------------------------------------------

void gemm_args(benchmark::internal::Benchmark* b) { b->ArgNames({"M", "K", "N"})->Args({64, 256, 1024}); }

struct GemmSizes {
    std::size_t m, k, n;
    explicit GemmSizes(const benchmark::State& s)
        : m(static_cast<std::size_t>(s.range(0))),
          k(static_cast<std::size_t>(s.range(1))),
          n(static_cast<std::size_t>(s.range(2))) {}
    double flops() const { return 2.0 * static_cast<double>(m) * static_cast<double>(k) * static_cast<double>(n); }
};

// y = matmul(A, B) on a tape; A, B bound Parameters (no copy); clear() each iteration.
void BM_Matmul_Forward(benchmark::State& state) {
    const GemmSizes z(state);
    Parameter<float> a(uniform({z.m, z.k}, -1.0f, 1.0f, 11)), b(uniform({z.k, z.n}, -1.0f, 1.0f, 12));
    Tape<float> tape;
    for (auto _ : state) {
        {
            Var<float> y = recur::matmul(tape.bind(a), tape.bind(b));
            benchmark::DoNotOptimize(y.value().data());
            benchmark::ClobberMemory();
        }
        tape.clear();
    }
    count_flops(state, z.flops());
}
BENCHMARK(BM_Matmul_Forward)->Apply(gemm_args);

// Reference: one cblas_sgemm C = A B into a preallocated C.
void BM_Matmul_RawSgemm(benchmark::State& state) {
    const GemmSizes z(state);
    const xt::xarray<float> a = uniform({z.m, z.k}, -1.0f, 1.0f, 11), b = uniform({z.k, z.n}, -1.0f, 1.0f, 12);
    xt::xarray<float> c = xt::zeros<float>({z.m, z.n});
    const int m = static_cast<int>(z.m), k = static_cast<int>(z.k), n = static_cast<int>(z.n);
    for (auto _ : state) {
        recur::bench::ref_sgemm(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);
        benchmark::DoNotOptimize(c.data());
        benchmark::ClobberMemory();
    }
    count_flops(state, z.flops());
}
BENCHMARK(BM_Matmul_RawSgemm)->Apply(gemm_args);

// y = matmul(A, B); backward(y, seed) into both Parameters' grads; clear(). 3 GEMMs of FLOPs.
void BM_Matmul_ForwardBackward(benchmark::State& state) {
    const GemmSizes z(state);
    Parameter<float> a(uniform({z.m, z.k}, -1.0f, 1.0f, 11)), b(uniform({z.k, z.n}, -1.0f, 1.0f, 12));
    const xt::xarray<float> seed = uniform({z.m, z.n}, -1.0f, 1.0f, 13);
    Tape<float> tape;
    for (auto _ : state) {
        {
            Var<float> y = recur::matmul(tape.bind(a), tape.bind(b));
            tape.backward(y, seed);
            benchmark::DoNotOptimize(a.grad().data());
            benchmark::DoNotOptimize(b.grad().data());
            benchmark::ClobberMemory();
        }
        tape.clear();
    }
    count_flops(state, 3.0 * z.flops());
}
BENCHMARK(BM_Matmul_ForwardBackward)->Apply(gemm_args);

// Reference: C = A B, dA += G B^T, dB += A^T G as three direct sgemms (beta = 1 into the grads).
void BM_Matmul_RawSgemmForwardBackward(benchmark::State& state) {
    const GemmSizes z(state);
    const xt::xarray<float> a = uniform({z.m, z.k}, -1.0f, 1.0f, 11), b = uniform({z.k, z.n}, -1.0f, 1.0f, 12);
    const xt::xarray<float> g = uniform({z.m, z.n}, -1.0f, 1.0f, 13);
    xt::xarray<float> c = xt::zeros<float>({z.m, z.n});
    xt::xarray<float> da = xt::zeros<float>({z.m, z.k}), db = xt::zeros<float>({z.k, z.n});
    const int m = static_cast<int>(z.m), k = static_cast<int>(z.k), n = static_cast<int>(z.n);
    for (auto _ : state) {
        recur::bench::ref_sgemm(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);
        recur::bench::ref_sgemm(false, true, m, k, n, 1.0f, g.data(), n, b.data(), n, 1.0f, da.data(), k);
        recur::bench::ref_sgemm(true, false, k, n, m, 1.0f, a.data(), k, g.data(), n, 1.0f, db.data(), n);
        benchmark::DoNotOptimize(c.data());
        benchmark::DoNotOptimize(da.data());
        benchmark::DoNotOptimize(db.data());
        benchmark::ClobberMemory();
    }
    count_flops(state, 3.0 * z.flops());
}
BENCHMARK(BM_Matmul_RawSgemmForwardBackward)->Apply(gemm_args);

// ---- 3. Elementwise throughput --------------------------------------------------------------

void elem_args(benchmark::internal::Benchmark* b) { b->ArgNames({"rows", "cols"})->Args({64, 1024}); }

Shape elem_shape(const benchmark::State& s) {
    return {static_cast<std::size_t>(s.range(0)), static_cast<std::size_t>(s.range(1))};
}

const auto op_tanh = [](const Var<float>& x) { return recur::tanh(x); };
const auto op_sigmoid = [](const Var<float>& x) { return recur::sigmoid(x); };
const auto op_add = [](const Var<float>& a, const Var<float>& b) { return recur::add(a, b); };
const auto op_mul = [](const Var<float>& a, const Var<float>& b) { return recur::mul(a, b); };

// y = op(x) on a tape, x a bound Parameter; clear() each iteration.
template <class Op>
void BM_Unary_Forward(benchmark::State& state, Op op) {
    const Shape shape = elem_shape(state);
    Parameter<float> x(uniform(shape, -3.0f, 3.0f, 21));
    Tape<float> tape;
    for (auto _ : state) {
        {
            Var<float> y = op(tape.bind(x));
            benchmark::DoNotOptimize(y.value().data());
            benchmark::ClobberMemory();
        }
        tape.clear();
    }
    count_elems(state, static_cast<double>(x.size()));
}
BENCHMARK_CAPTURE(BM_Unary_Forward, tanh, op_tanh)->Apply(elem_args);
BENCHMARK_CAPTURE(BM_Unary_Forward, sigmoid, op_sigmoid)->Apply(elem_args);

// y = op(a, b) on a tape, a and b bound Parameters of the same shape; clear() each iteration.
template <class Op>
void BM_Binary_Forward(benchmark::State& state, Op op) {
    const Shape shape = elem_shape(state);
    Parameter<float> a(uniform(shape, -3.0f, 3.0f, 21)), b(uniform(shape, -3.0f, 3.0f, 22));
    Tape<float> tape;
    for (auto _ : state) {
        {
            Var<float> y = op(tape.bind(a), tape.bind(b));
            benchmark::DoNotOptimize(y.value().data());
            benchmark::ClobberMemory();
        }
        tape.clear();
    }
    count_elems(state, static_cast<double>(a.size()));
}
BENCHMARK_CAPTURE(BM_Binary_Forward, add, op_add)->Apply(elem_args);
BENCHMARK_CAPTURE(BM_Binary_Forward, mul, op_mul)->Apply(elem_args);

// The backward sweep alone, repeated on one recorded graph: x a variable leaf, y = op(x),
// backward(y, seed) each iteration (the seed copy into y's grad, then the op's backward).
template <class Op>
void BM_Unary_Backward(benchmark::State& state, Op op) {
    const Shape shape = elem_shape(state);
    const xt::xarray<float> seed = uniform(shape, -1.0f, 1.0f, 23);
    Tape<float> tape;
    Var<float> x = tape.variable(uniform(shape, -3.0f, 3.0f, 21));
    Var<float> y = op(x);
    for (auto _ : state) {
        tape.backward(y, seed);
        benchmark::DoNotOptimize(x.grad().data());
        benchmark::ClobberMemory();
    }
    count_elems(state, static_cast<double>(x.size()));
}
BENCHMARK_CAPTURE(BM_Unary_Backward, tanh, op_tanh)->Apply(elem_args);
BENCHMARK_CAPTURE(BM_Unary_Backward, sigmoid, op_sigmoid)->Apply(elem_args);

template <class Op>
void BM_Binary_Backward(benchmark::State& state, Op op) {
    const Shape shape = elem_shape(state);
    const xt::xarray<float> seed = uniform(shape, -1.0f, 1.0f, 23);
    Tape<float> tape;
    Var<float> a = tape.variable(uniform(shape, -3.0f, 3.0f, 21));
    Var<float> b = tape.variable(uniform(shape, -3.0f, 3.0f, 22));
    Var<float> y = op(a, b);
    for (auto _ : state) {
        tape.backward(y, seed);
        benchmark::DoNotOptimize(a.grad().data());
        benchmark::DoNotOptimize(b.grad().data());
        benchmark::ClobberMemory();
    }
    count_elems(state, static_cast<double>(a.size()));
}
BENCHMARK_CAPTURE(BM_Binary_Backward, add, op_add)->Apply(elem_args);
BENCHMARK_CAPTURE(BM_Binary_Backward, mul, op_mul)->Apply(elem_args);

// References without a tape, into preallocated outputs: the xtensor expression the ops use
// (xsimd), and a plain scalar loop over std:: functions.
template <class F>
void BM_Ref_Xtensor(benchmark::State& state, F f) {
    const Shape shape = elem_shape(state);
    const xt::xarray<float> a = uniform(shape, -3.0f, 3.0f, 21), b = uniform(shape, -3.0f, 3.0f, 22);
    xt::xarray<float> y = xt::zeros<float>(shape);
    for (auto _ : state) {
        f(y, a, b);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    count_elems(state, static_cast<double>(a.size()));
}
BENCHMARK_CAPTURE(BM_Ref_Xtensor, tanh, [](auto& y, const auto& a, const auto&) { xt::noalias(y) = xt::tanh(a); })
    -> Apply(elem_args);
BENCHMARK_CAPTURE(BM_Ref_Xtensor, sigmoid, [](auto& y, const auto& a, const auto&) {
    xt::noalias(y) = 1.0f / (1.0f + xt::exp(-a));
}) -> Apply(elem_args);
BENCHMARK_CAPTURE(BM_Ref_Xtensor, add, [](auto& y, const auto& a, const auto& b) { xt::noalias(y) = a + b; })
    -> Apply(elem_args);
BENCHMARK_CAPTURE(BM_Ref_Xtensor, mul, [](auto& y, const auto& a, const auto& b) { xt::noalias(y) = a * b; })
    -> Apply(elem_args);

template <class F>
void BM_Ref_Loop(benchmark::State& state, F f) {
    const Shape shape = elem_shape(state);
    const xt::xarray<float> a = uniform(shape, -3.0f, 3.0f, 21), b = uniform(shape, -3.0f, 3.0f, 22);
    xt::xarray<float> y = xt::zeros<float>(shape);
    const std::size_t n = a.size();
    for (auto _ : state) {
        float* __restrict yp = y.data();
        const float* __restrict ap = a.data();
        const float* __restrict bp = b.data();
        for (std::size_t e = 0; e < n; ++e) yp[e] = f(ap[e], bp[e]);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    count_elems(state, static_cast<double>(n));
}
BENCHMARK_CAPTURE(BM_Ref_Loop, tanh, [](float a, float) { return std::tanh(a); })->Apply(elem_args);
BENCHMARK_CAPTURE(BM_Ref_Loop, sigmoid, [](float a, float) { return 1.0f / (1.0f + std::exp(-a)); })->Apply(elem_args);
BENCHMARK_CAPTURE(BM_Ref_Loop, add, [](float a, float b) { return a + b; })->Apply(elem_args);
BENCHMARK_CAPTURE(BM_Ref_Loop, mul, [](float a, float b) { return a * b; })->Apply(elem_args);

// Explicit xsimd batch loop (what a hand-written kernel over raw pointers would do), including
// two cheaper tanh formulations to compare with xsimd::tanh:
//   tanh_expm1: e / (e + 2), e = expm1(2x), x clamped to [-9, 9] (tanh(9) rounds to 1 in float);
//   tanh_exp:   1 - 2 / (exp(2x) + 1), same clamp (loses relative accuracy near 0).
template <class F>
void BM_Ref_Xsimd(benchmark::State& state, F f) {
    using B = xsimd::batch<float>;
    const Shape shape = elem_shape(state);
    const xt::xarray<float> a = uniform(shape, -3.0f, 3.0f, 21), b = uniform(shape, -3.0f, 3.0f, 22);
    xt::xarray<float> y = xt::zeros<float>(shape);
    const std::size_t n = a.size();
    for (auto _ : state) {
        float* yp = y.data();
        const float* ap = a.data();
        const float* bp = b.data();
        std::size_t e = 0;
        for (; e + B::size <= n; e += B::size)
            f(B::load_unaligned(ap + e), B::load_unaligned(bp + e)).store_unaligned(yp + e);
        for (; e < n; ++e) yp[e] = f(ap[e], bp[e]);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    count_elems(state, static_cast<double>(n));
}
BENCHMARK_CAPTURE(BM_Ref_Xsimd, tanh, [](auto a, auto) { return xsimd::tanh(a); }) -> Apply(elem_args);
BENCHMARK_CAPTURE(BM_Ref_Xsimd, tanh_expm1, [](auto a, auto) {
    using V = decltype(a);
    const V e = xsimd::expm1(V(2) * xsimd::min(xsimd::max(a, V(-9)), V(9)));
    return e / (e + V(2));
}) -> Apply(elem_args);
BENCHMARK_CAPTURE(BM_Ref_Xsimd, tanh_exp, [](auto a, auto) {
    using V = decltype(a);
    return V(1) - V(2) / (xsimd::exp(V(2) * xsimd::min(xsimd::max(a, V(-9)), V(9))) + V(1));
}) -> Apply(elem_args);
BENCHMARK_CAPTURE(BM_Ref_Xsimd, sigmoid, [](auto a, auto) {
    using V = decltype(a);
    return V(1) / (V(1) + xsimd::exp(-a));
}) -> Apply(elem_args);

}  // namespace

// ---- Per-step versus merged weight gradients -------------------------------------------------
// dW_hh (G, H) = sum over T steps of dG_t^T h_t, dG_t (B, G), h_t (B, H): either T GEMMs with
// K = B accumulating into dW (what lstm_step does), or copying the T blocks into two packed
// arrays and one GEMM with K = T B (cuDNN's merged weight gradient). Args: B, T, H; G = 4 H.
void weight_grad_args(benchmark::internal::Benchmark* b) {
    b->ArgNames({"B", "T", "H"})->Args({64, 100, 256})->Args({16, 200, 64})->Unit(benchmark::kMillisecond);
}
struct WeightGradData {
    std::size_t b, t, h, g;
    std::vector<xt::xarray<float>> dgates, hs;
    xt::xarray<float> dw;
    explicit WeightGradData(const benchmark::State& s)
        : b(static_cast<std::size_t>(s.range(0))),
          t(static_cast<std::size_t>(s.range(1))),
          h(static_cast<std::size_t>(s.range(2))),
          g(4 * h),
          dw(xt::zeros<float>({g, h})) {
        for (std::size_t k = 0; k < t; ++k) {  // separate blocks, as separate tape nodes hold them
            dgates.push_back(uniform({b, g}, -1.0f, 1.0f, 100 + k));
            hs.push_back(uniform({b, h}, -1.0f, 1.0f, 500 + k));
        }
    }
    double flops() const { return 2.0 * double(b) * double(t) * double(g) * double(h); }
};
void BM_WeightGrad_PerStep(benchmark::State& state) {
    WeightGradData d(state);
    const int g = static_cast<int>(d.g), h = static_cast<int>(d.h), b = static_cast<int>(d.b);
    for (auto _ : state) {
        for (std::size_t k = 0; k < d.t; ++k)
            recur::bench::ref_sgemm(true, false, g, h, b, 1.0f, d.dgates[k].data(), g, d.hs[k].data(), h, 1.0f,
                                    d.dw.data(), h);
        benchmark::DoNotOptimize(d.dw.data());
    }
    count_flops(state, d.flops());
}
BENCHMARK(BM_WeightGrad_PerStep)->Apply(weight_grad_args);
void BM_WeightGrad_Merged(benchmark::State& state) {
    WeightGradData d(state);
    xt::xarray<float> packed_g = xt::zeros<float>({d.t * d.b, d.g}), packed_h = xt::zeros<float>({d.t * d.b, d.h});
    const int g = static_cast<int>(d.g), h = static_cast<int>(d.h), rows = static_cast<int>(d.t * d.b);
    for (auto _ : state) {
        for (std::size_t k = 0; k < d.t; ++k) {
            std::copy(d.dgates[k].begin(), d.dgates[k].end(), packed_g.data() + k * d.b * d.g);
            std::copy(d.hs[k].begin(), d.hs[k].end(), packed_h.data() + k * d.b * d.h);
        }
        recur::bench::ref_sgemm(true, false, g, h, rows, 1.0f, packed_g.data(), g, packed_h.data(), h, 1.0f,
                                d.dw.data(), h);
        benchmark::DoNotOptimize(d.dw.data());
    }
    count_flops(state, d.flops());
}
BENCHMARK(BM_WeightGrad_Merged)->Apply(weight_grad_args);

// ---- bmm against a loop of matmuls (attention scores) -------------------------------------------
// (B, M, K) x (B, K, N) at an attention size (B = 64 queries of M = 10 steps, K = N = 128): one
// bmm node against what a user writes without it, B select / matmul pairs and a stack.
void bmm_args(benchmark::internal::Benchmark* b) { b->ArgNames({"B", "M", "K", "N"})->Args({64, 10, 128, 128}); }

struct BmmData {
    std::size_t b, m, k, n;
    Parameter<float> x, y;
    xt::xarray<float> seed;
    explicit BmmData(const benchmark::State& s)
        : b(static_cast<std::size_t>(s.range(0))),
          m(static_cast<std::size_t>(s.range(1))),
          k(static_cast<std::size_t>(s.range(2))),
          n(static_cast<std::size_t>(s.range(3))),
          x(uniform({b, m, k}, -1.0f, 1.0f, 21)),
          y(uniform({b, k, n}, -1.0f, 1.0f, 22)),
          seed(uniform({b, m, n}, -1.0f, 1.0f, 23)) {}
    double flops() const { return 2.0 * double(b) * double(m) * double(k) * double(n); }
    Var<float> looped(Tape<float>& tape) {
        Var<float> xs = tape.bind(x), ys = tape.bind(y);
        std::vector<Var<float>> products;
        for (std::size_t p = 0; p < b; ++p) {
            const auto q = static_cast<std::ptrdiff_t>(p);
            products.push_back(recur::matmul(recur::select(xs, 0, q), recur::select(ys, 0, q)));
        }
        return recur::stack(products);
    }
};

template <bool Looped, bool Backward>
void BM_Bmm(benchmark::State& state) {
    BmmData d(state);
    Tape<float> tape;
    for (auto _ : state) {
        {
            Var<float> out = Looped ? d.looped(tape) : recur::bmm(tape.bind(d.x), tape.bind(d.y));
            if (Backward) tape.backward(out, d.seed);
            benchmark::DoNotOptimize(out.value().data());
            benchmark::ClobberMemory();
        }
        tape.clear();
    }
    count_flops(state, (Backward ? 3.0 : 1.0) * d.flops());
}
BENCHMARK_TEMPLATE(BM_Bmm, false, false)->Name("BM_Bmm_Forward")->Apply(bmm_args);
BENCHMARK_TEMPLATE(BM_Bmm, true, false)->Name("BM_Bmm_LoopOfMatmuls_Forward")->Apply(bmm_args);
BENCHMARK_TEMPLATE(BM_Bmm, false, true)->Name("BM_Bmm_ForwardBackward")->Apply(bmm_args);
BENCHMARK_TEMPLATE(BM_Bmm, true, true)->Name("BM_Bmm_LoopOfMatmuls_ForwardBackward")->Apply(bmm_args);

BENCHMARK_MAIN();
