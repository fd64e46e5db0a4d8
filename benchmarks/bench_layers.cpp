// bench_layers — training steps of the recurrent layers (Google Benchmark).
//
// One-layer RNN (tanh), LSTM and GRU in float, batch_first, input (B, T, I):
//   1. Train: one training step = zero the parameter grads, forward through all T steps,
//      loss = sum(output), backward through time into the Parameters' grads, tape.clear().
//   2. Infer: the forward alone on an inference tape (TapeOptions{.record = false}).
// at (B, T, I, H) = (64, 100, 256, 256) (GEMM-bound) and (1, 1000, 16, 16) (per-node overhead
// bound); Infer at the first size only. The input is handed to the tape as a constant each
// step (one copy of B*T*I floats, as data from a loader would be); it does not require grad.
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
#include <cstdint>

#include <xtensor/xarray.hpp>
#include <xtensor/xrandom.hpp>

#include "recur/nn/init.hpp"
#include "recur/nn/recurrent.hpp"
#include "recur/ops.hpp"
#include "recur/tape.hpp"

namespace {

using recur::Shape;
using recur::Tape;
using recur::TapeOptions;
using recur::Var;

enum class Kind { rnn, lstm, gru };

/// Gate count G: one training step is 6 G B T H (I + H) FLOP (2 per multiply-add; forward,
/// weight-gradient and input-gradient GEMMs), the forward alone 2 G B T H (I + H).
double gates(Kind k) { return k == Kind::lstm ? 4.0 : k == Kind::gru ? 3.0 : 1.0; }

struct Sizes {
    std::size_t b, t, i, h;
    explicit Sizes(const benchmark::State& s)
        : b(static_cast<std::size_t>(s.range(0))), t(static_cast<std::size_t>(s.range(1))),
          i(static_cast<std::size_t>(s.range(2))), h(static_cast<std::size_t>(s.range(3))) {}
    double forward_flops(Kind k) const {
        return 2.0 * gates(k) * static_cast<double>(b) * static_cast<double>(t) * static_cast<double>(h) *
               static_cast<double>(i + h);
    }
};

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

xt::xarray<float> uniform(const Shape& shape, float lo, float hi, std::uint64_t seed) {
    xt::random::seed(seed);
    return xt::random::rand<float>(shape, lo, hi);
}

/// The module of one kind (PyTorch's default init, fixed seed) and its forward's output.
template <Kind K>
struct Layer;

template <>
struct Layer<Kind::rnn> {
    recur::nn::RNN<float> m;
    explicit Layer(const Sizes& z)
        : m(recur::nn::RNNOptions{.input_size = z.i, .hidden_size = z.h, .batch_first = true}) {}
    Var<float> operator()(const Var<float>& x) { return m(x).output; }
};

template <>
struct Layer<Kind::lstm> {
    recur::nn::LSTM<float> m;
    explicit Layer(const Sizes& z)
        : m(recur::nn::LSTMOptions{.input_size = z.i, .hidden_size = z.h, .batch_first = true}) {}
    Var<float> operator()(const Var<float>& x) { return m(x).output; }
};

template <>
struct Layer<Kind::gru> {
    recur::nn::GRU<float> m;
    explicit Layer(const Sizes& z)
        : m(recur::nn::GRUOptions{.input_size = z.i, .hidden_size = z.h, .batch_first = true}) {}
    Var<float> operator()(const Var<float>& x) { return m(x).output; }
};

template <Kind K>
Layer<K> make_layer(const Sizes& z) {
    recur::manual_seed(7);  // the initialisers draw from the global generator
    return Layer<K>(z);
}

// ---- 1. Training step -----------------------------------------------------------------------

/// zero_grad, loss = sum(layer(x)), backward, clear().
template <Kind K>
void train_step(Layer<K>& layer, Tape<float>& tape, const xt::xarray<float>& x) {
    layer.m.zero_grad();
    {
        Var<float> loss = recur::sum(layer(tape.constant(x)));
        tape.backward(loss);
    }
    tape.clear();
}

template <Kind K>
void BM_Train(benchmark::State& state) {
    const Sizes z(state);
    Layer<K> layer = make_layer<K>(z);
    const xt::xarray<float> x = uniform({z.b, z.t, z.i}, -1.0f, 1.0f, 31);
    Tape<float> tape;
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
        Var<float> y = layer(tape.constant(x));
        benchmark::DoNotOptimize(y.value().data());
        benchmark::ClobberMemory();
    }
    tape.clear();
}

template <Kind K>
void BM_Infer(benchmark::State& state) {
    const Sizes z(state);
    Layer<K> layer = make_layer<K>(z);
    const xt::xarray<float> x = uniform({z.b, z.t, z.i}, -1.0f, 1.0f, 31);
    Tape<float> tape(TapeOptions{.record = false});
    infer_step(layer, tape, x);  // warm-up
    const std::size_t warm_nodes = tape.capacity();
    for (auto _ : state) infer_step(layer, tape, x);
    count_flops(state, z.forward_flops(K));
    count_nodes(state, tape, warm_nodes);
}

void big(benchmark::internal::Benchmark* b) {
    b->ArgNames({"B", "T", "I", "H"})->Args({64, 100, 256, 256})->Unit(benchmark::kMillisecond);
}
void both(benchmark::internal::Benchmark* b) { big(b); b->Args({1, 1000, 16, 16}); }

BENCHMARK(BM_Train<Kind::rnn>)->Name("BM_Train/rnn")->Apply(both);
BENCHMARK(BM_Train<Kind::lstm>)->Name("BM_Train/lstm")->Apply(both);
BENCHMARK(BM_Train<Kind::gru>)->Name("BM_Train/gru")->Apply(both);
BENCHMARK(BM_Infer<Kind::rnn>)->Name("BM_Infer/rnn")->Apply(big);
BENCHMARK(BM_Infer<Kind::lstm>)->Name("BM_Infer/lstm")->Apply(big);
BENCHMARK(BM_Infer<Kind::gru>)->Name("BM_Infer/gru")->Apply(big);

}  // namespace

BENCHMARK_MAIN();
