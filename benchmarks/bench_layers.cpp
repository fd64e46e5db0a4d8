// bench_layers — training steps of the recurrent layers, and the sgemm they are measured
// against (Google Benchmark).
//
// One-layer RNN (tanh), LSTM and GRU in float, batch_first, input (B, T, I):
//   1. Train: one training step = zero the parameter grads, forward through all T steps,
//      loss = sum(output), backward through time into the Parameters' grads, tape.clear().
//   2. Infer: the forward alone on an inference tape (TapeOptions{.record = false}).
//   3. Sgemm: one direct cblas_sgemm C (64, 512) = A (64, 2048) B (2048, 512) into a
//      preallocated C: the rate a training step's GEMMs can at best reach on this core.
// Sizes (B, T, I, H) of the performance targets: XS (1, 1000, 16, 16) and S (16, 200, 64, 64)
// (per-node overhead bound), M (64, 100, 256, 256) and L (64, 50, 512, 512) (GEMM bound). LSTM
// and GRU train at all four, RNN at XS and M; Infer at M. The input is handed to the tape as a
// constant each step (one copy of B*T*I floats, as data from a loader would be); it does not
// require grad.
//
// Counters: time per step in ms, and FLOPS by the usual count of one step's multiply-adds:
// training 24 B T H (I + H) for LSTM, 18 for GRU, 6 for RNN (forward, dW and dX GEMMs);
// forward alone a third of that. Elementwise work is not counted. nodes: the tape's node
// objects (high-water mark); grown: how many of them appeared after the warm-up step.
//
// One Tape is reused across iterations and clear()ed each step, as a training loop does, and
// one untimed warm-up step runs first (the first step on a tape allocates its node buffers).
// Run pinned and single-threaded next to PyTorch: benchmarks/compare_layers.sh.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <vector>

#include <xtensor/xarray.hpp>

#include "layer_step.hpp"
#include "recur/tape.hpp"
#include "ref_sgemm.hpp"

namespace {

using recur::Tape;
using recur::TapeOptions;
using recur::Var;
using recur::bench::Kind;
using recur::bench::Layer;
using recur::bench::LayerSizes;
using recur::bench::make_layer;
using recur::bench::train_step;
using recur::bench::uniform;

/// The benchmark's arguments (B, T, I, H).
LayerSizes sizes_of(const benchmark::State& s) {
    return {static_cast<std::size_t>(s.range(0)), static_cast<std::size_t>(s.range(1)),
            static_cast<std::size_t>(s.range(2)), static_cast<std::size_t>(s.range(3))};
}

/// Floating-point operations per second of CPU time: shown as e.g. "40.1G/s".
void count_flops(benchmark::State& state, double flops) {
    state.counters["FLOPS"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
}

/// Node objects the tape holds (its high-water mark: a step's node count on a recording tape),
/// and how many more than after the warm-up step (0 when steps reuse the nodes as they should).
void count_nodes(benchmark::State& state, const Tape<float>& tape, std::size_t warm_nodes) {
    state.counters["nodes"] = static_cast<double>(tape.capacity());
    state.counters["grown"] = static_cast<double>(tape.capacity() - warm_nodes);
}

// ---- 1. Training step (layer_step.hpp) -------------------------------------------------------

template <Kind K>
void BM_Train(benchmark::State& state) {
    const LayerSizes z = sizes_of(state);
    Layer<K> layer = make_layer<K>(z);
    const xt::xarray<float> x = recur::bench::layer_input(z);
    Tape<float> tape(recur::bench::training_tape());
    train_step(layer, tape, x);  // warm-up: the first step sizes the node buffers
    const std::size_t warm_nodes = tape.capacity();
    for (auto _ : state) {
        train_step(layer, tape, x);
        benchmark::DoNotOptimize(layer.m.parameters().front()->grad().data());
        benchmark::ClobberMemory();
    }
    count_flops(state, 3.0 * z.forward_flops(K));
    count_nodes(state, tape, warm_nodes);
}

// ---- 2. Inference forward -------------------------------------------------------------------

/// The output on a no-grad tape, then clear().
template <Kind K>
void infer_step(Layer<K>& layer, Tape<float>& tape, const xt::xarray<float>& x) {
    {
        Var<float> y = layer(tape.view(x));
        benchmark::DoNotOptimize(y.value().data());
        benchmark::ClobberMemory();
    }
    tape.clear();
}

template <Kind K>
void BM_Infer(benchmark::State& state) {
    const LayerSizes z = sizes_of(state);
    Layer<K> layer = make_layer<K>(z);
    const xt::xarray<float> x = recur::bench::layer_input(z);
    Tape<float> tape(TapeOptions{.record = false});
    infer_step(layer, tape, x);  // warm-up
    const std::size_t warm_nodes = tape.capacity();
    for (auto _ : state) infer_step(layer, tape, x);
    count_flops(state, z.forward_flops(K));
    count_nodes(state, tape, warm_nodes);
}

// ---- 3. The sgemm reference --------------------------------------------------------------

/// C = A B by one direct cblas_sgemm (row-major, no transposes) into a preallocated C.
void BM_Sgemm(benchmark::State& state) {
    const int m = static_cast<int>(state.range(0)), k = static_cast<int>(state.range(1)),
              n = static_cast<int>(state.range(2));
    const auto rows = static_cast<std::size_t>(m), inner = static_cast<std::size_t>(k),
               cols = static_cast<std::size_t>(n);
    const xt::xarray<float> a = uniform({rows, inner}, -1.0f, 1.0f, 11);
    const xt::xarray<float> b = uniform({inner, cols}, -1.0f, 1.0f, 12);
    std::vector<float> c(rows * cols);
    recur::bench::ref_sgemm(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);  // warm-up
    for (auto _ : state) {
        recur::bench::ref_sgemm(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);
        benchmark::DoNotOptimize(c.data());
        benchmark::ClobberMemory();
    }
    count_flops(state, 2.0 * m * k * n);
}

// The sizes (B, T, I, H) of the targets.
void size_xs(benchmark::internal::Benchmark* b) { b->Args({1, 1000, 16, 16}); }
void size_s(benchmark::internal::Benchmark* b) { b->Args({16, 200, 64, 64}); }
void size_m(benchmark::internal::Benchmark* b) { b->Args({64, 100, 256, 256}); }
void size_l(benchmark::internal::Benchmark* b) { b->Args({64, 50, 512, 512}); }

void step_units(benchmark::internal::Benchmark* b) {
    b->ArgNames({"B", "T", "I", "H"})->Unit(benchmark::kMillisecond);
}
void all_sizes(benchmark::internal::Benchmark* b) {
    step_units(b);
    size_xs(b);
    size_s(b);
    size_m(b);
    size_l(b);
}
void xs_and_m(benchmark::internal::Benchmark* b) {
    step_units(b);
    size_xs(b);
    size_m(b);
}
void m_only(benchmark::internal::Benchmark* b) {
    step_units(b);
    size_m(b);
}

BENCHMARK(BM_Train<Kind::lstm>)->Name("BM_Train/lstm")->Apply(all_sizes);
BENCHMARK(BM_Train<Kind::gru>)->Name("BM_Train/gru")->Apply(all_sizes);
BENCHMARK(BM_Train<Kind::rnn>)->Name("BM_Train/rnn")->Apply(xs_and_m);
BENCHMARK(BM_Infer<Kind::lstm>)->Name("BM_Infer/lstm")->Apply(m_only);
BENCHMARK(BM_Infer<Kind::gru>)->Name("BM_Infer/gru")->Apply(m_only);
BENCHMARK(BM_Infer<Kind::rnn>)->Name("BM_Infer/rnn")->Apply(m_only);
BENCHMARK(BM_Sgemm)->ArgNames({"M", "K", "N"})->Args({64, 2048, 512})->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
