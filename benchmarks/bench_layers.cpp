// bench_layers — training steps and inference forwards of the recurrent layers, and the sgemm
// they are measured against (Google Benchmark).
//
// One-layer RNN (tanh), LSTM and GRU in float, batch_first, input (B, T, I), each timed in two
// loops (layer_step.hpp):
//   natural: the shortest user code: a fresh Tape<float> each step, default options, the input
//            through tape.constant (one copy of B*T*I floats, as data from a loader would be);
//   tuned:   the README's loop: one Tape reused and clear()ed each step, retain_grads = false,
//            the input read in place through tape.view.
//   1. Train: one training step = zero the parameter grads, forward through all T steps,
//      loss = sum(output), backward through time into the Parameters' grads.
//   2. Infer: the forward alone on a tape that does not record (TapeOptions{.record = false}),
//      fresh each step (natural) or reused (tuned).
//   2b. TrainBf16 / InferBf16: the natural loops on a tape of Precision::bf16 (the README's
//      "Reduced precision (bf16)"), LSTM and GRU at every size.
//   3. Sgemm: one direct sgemm C (64, 512) = A (64, 2048) B (2048, 512) into a preallocated C,
//      by OpenBLAS's cblas_sgemm and by oneDNN's dnnl_sgemm: the faster of the two is the rate
//      a training step's GEMMs can at best reach on this core (Debian's OpenBLAS runs generic
//      SSE3 kernels on CPUs it does not know; oneDNN detects the ISA itself).
// Sizes (B, T, I, H) of the performance targets: XS (1, 1000, 16, 16) and S (16, 200, 64, 64)
// (per-node overhead bound), M (64, 100, 256, 256) and L (64, 50, 512, 512) (GEMM bound). LSTM
// and GRU train and infer at all four, RNN trains at XS and M and infers at M. The input does
// not require grad.
//
// Counters: time per step in ms, and FLOPS by the usual count of one step's multiply-adds:
// training 24 B T H (I + H) for LSTM, 18 for GRU, 6 for RNN (forward, dW and dX GEMMs);
// forward alone a third of that. Elementwise work is not counted. Tuned loops also count
// nodes: the tape's node objects (high-water mark); grown: how many of them appeared after the
// warm-up step (0 when steps reuse the nodes as they should).
//
// One untimed warm-up step runs first (on a tuned loop's tape it sizes the node buffers).
// Run pinned and single-threaded next to oneDNN and PyTorch: benchmarks/compare_layers.sh.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <memory>
#include <string>
#include <stdexcept>
#include <vector>

#include <xtensor/xarray.hpp>

#include "layer_step.hpp"
#include "recur/tape.hpp"
#include "ref_sgemm.hpp"

#include <oneapi/dnnl/dnnl.h>

namespace {

using recur::Tape;
using recur::bench::Kind;
using recur::bench::Layer;
using recur::bench::LayerSizes;
using recur::bench::make_layer;
using recur::bench::natural_infer_step;
using recur::bench::natural_train_step;
using recur::bench::tuned_infer_step;
using recur::bench::tuned_train_step;
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

/// Times step(layer, x) on the layer and input of the benchmark's sizes, after one untimed
/// warm-up step (on a reused tape it sizes the node buffers); `forwards`: the step's FLOP in
/// forwards (3 for a training step, 1 for inference); `tape`: the reused tape, if any, whose
/// nodes are counted.
template <Kind K, class Step>
void time_steps(benchmark::State& state, double forwards, const Tape<float>* tape, Step step) {
    const LayerSizes z = sizes_of(state);
    Layer<K> layer = make_layer<K>(z);
    const xt::xarray<float> x = recur::bench::layer_input(z);
    step(layer, x);
    const std::size_t warm_nodes = tape ? tape->capacity() : 0;
    for (auto _ : state) {
        benchmark::DoNotOptimize(step(layer, x));
        benchmark::ClobberMemory();
    }
    count_flops(state, forwards * z.forward_flops(K));
    if (tape) count_nodes(state, *tape, warm_nodes);
}

/// The first parameter's gradient (what a training step writes).
template <Kind K>
const float* first_grad(Layer<K>& layer) {
    return layer.m.parameters().front()->grad().data();
}

// ---- 1. Training step (layer_step.hpp) -------------------------------------------------------

template <Kind K>
void BM_TrainNatural(benchmark::State& state) {
    time_steps<K>(state, 3.0, nullptr, [](Layer<K>& layer, const xt::xarray<float>& x) {
        natural_train_step(layer, x);
        return first_grad(layer);
    });
}

template <Kind K>
void BM_TrainTuned(benchmark::State& state) {
    Tape<float> tape(recur::bench::training_tape());
    time_steps<K>(state, 3.0, &tape, [&tape](Layer<K>& layer, const xt::xarray<float>& x) {
        tuned_train_step(layer, tape, x);
        return first_grad(layer);
    });
}

// ---- 2. Inference forward -------------------------------------------------------------------

template <Kind K>
void BM_InferNatural(benchmark::State& state) {
    time_steps<K>(state, 1.0, nullptr,
                  [](Layer<K>& layer, const xt::xarray<float>& x) { return natural_infer_step(layer, x); });
}

template <Kind K>
void BM_InferTuned(benchmark::State& state) {
    Tape<float> tape(recur::bench::inference_tape());
    time_steps<K>(state, 1.0, &tape,
                  [&tape](Layer<K>& layer, const xt::xarray<float>& x) { return tuned_infer_step(layer, tape, x); });
}

// ---- 2b. The natural loops under the bf16 precision policy ----------------------------------

template <Kind K>
void BM_TrainBf16(benchmark::State& state) {
    time_steps<K>(state, 3.0, nullptr, [](Layer<K>& layer, const xt::xarray<float>& x) {
        natural_train_step(layer, x, recur::Precision::bf16);
        return first_grad(layer);
    });
}

template <Kind K>
void BM_InferBf16(benchmark::State& state) {
    time_steps<K>(state, 1.0, nullptr, [](Layer<K>& layer, const xt::xarray<float>& x) {
        return natural_infer_step(layer, x, recur::Precision::bf16);
    });
}

// ---- 3. The sgemm reference --------------------------------------------------------------

/// A row-major sgemm C = alpha op(A) op(B) + beta C (ref_sgemm's arguments).
using Sgemm = void (*)(bool, bool, int, int, int, float, const float*, int, const float*, int, float, float*, int);

/// oneDNN's dnnl_sgemm with ref_sgemm's arguments (row-major too).
void onednn_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
                  int ldb, float beta, float* c, int ldc) {
    if (dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) !=
        dnnl_success)
        throw std::runtime_error("bench_layers: dnnl_sgemm failed");
}

/// C = A B by one direct call of `gemm` (no transposes) into a preallocated C.
template <Sgemm gemm>
void BM_Sgemm(benchmark::State& state) {
    const int m = static_cast<int>(state.range(0)), k = static_cast<int>(state.range(1)),
              n = static_cast<int>(state.range(2));
    const auto rows = static_cast<std::size_t>(m), inner = static_cast<std::size_t>(k),
               cols = static_cast<std::size_t>(n);
    const xt::xarray<float> a = uniform({rows, inner}, -1.0f, 1.0f, 11);
    const xt::xarray<float> b = uniform({inner, cols}, -1.0f, 1.0f, 12);
    std::vector<float> c(rows * cols);
    gemm(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);  // warm-up
    for (auto _ : state) {
        gemm(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);
        benchmark::DoNotOptimize(c.data());
        benchmark::ClobberMemory();
    }
    count_flops(state, 2.0 * m * k * n);
}

// ---- 4. Layer-normalised LSTM (issue 12) -----------------------------------------------------
// The natural training step of nn::LayerNormLSTM (fused steps: layer_norm_lstm_step) and of the
// same cell with its step composed from primitives (LayerNormLSTMCell::step_composed: linear,
// layer_norm, chunk, sigmoid, tanh, mul, add; ~14 nodes per step), and of the same again with each
// layer norm composed from mean, sub, mul, pow (~30 nodes per step), beside BM_Train/lstm.

/// A LayerNormLSTMCell stepping through its composed reference instead of the fused node.
class ComposedLayerNormLSTMCell : public recur::nn::Module<float> {
public:
    using value_type = float;
    ComposedLayerNormLSTMCell(std::size_t in, std::size_t hidden, const std::string& suffix)
        : cell_({.input_size = in, .hidden_size = hidden, .suffix = suffix}) {
        this->register_module("", cell_);
    }
    std::size_t input_size() const { return cell_.input_size(); }
    std::vector<std::size_t> state_sizes() const { return cell_.state_sizes(); }
    recur::Var<float> project_input(const recur::Var<float>& x) { return cell_.project_input(x); }
    recur::nn::CellState<float> step_projected(const recur::Var<float>& xp, const recur::nn::CellState<float>& s) {
        return cell_.step_composed(xp, s);
    }
    recur::nn::CellState<float> step(const recur::Var<float>& x, const recur::nn::CellState<float>& s) {
        return step_projected(project_input(x), s);
    }

private:
    recur::nn::LayerNormLSTMCell<float> cell_;
};

/// LayerNormLSTMCell's step with every layer norm composed from elementwise primitives
/// (mean, sub, mul, pow), as a user without layer_norm writes it (issue 12's 3x slower cell).
class PrimitiveLayerNormLSTMCell : public recur::nn::Module<float> {
public:
    using value_type = float;
    PrimitiveLayerNormLSTMCell(std::size_t in, std::size_t hidden, const std::string& suffix)
        : cell_({.input_size = in, .hidden_size = hidden, .suffix = suffix}) {
        this->register_module("", cell_);
        for (auto& [name, p] : cell_.named_parameters()) p_.push_back(p);  // w_ih w_hh γ_ih β_ih γ_hh β_hh γ_c β_c
    }
    std::size_t input_size() const { return cell_.input_size(); }
    std::vector<std::size_t> state_sizes() const { return cell_.state_sizes(); }
    recur::Var<float> project_input(const recur::Var<float>& x) {
        auto& t = x.tape();
        return norm(linear(x, t.bind(*p_[0])), 2);
    }
    recur::nn::CellState<float> step_projected(const recur::Var<float>& xp, const recur::nn::CellState<float>& s) {
        auto& t = xp.tape();
        const auto g = recur::chunk(xp + norm(linear(s[0], t.bind(*p_[1])), 4), 4, 1);
        recur::Var<float> c = recur::sigmoid(g[1]) * s[1] + recur::sigmoid(g[0]) * recur::tanh(g[2]);
        return {recur::sigmoid(g[3]) * recur::tanh(norm(c, 6)), c};
    }
    recur::nn::CellState<float> step(const recur::Var<float>& x, const recur::nn::CellState<float>& s) {
        return step_projected(project_input(x), s);
    }

private:
    // (v - mean) (var + eps)^-1/2 γ + β over the last axis, with the gain and shift p_[k], p_[k + 1].
    recur::Var<float> norm(const recur::Var<float>& v, std::size_t k) {
        auto& t = v.tape();
        recur::Var<float> c = v - recur::mean(v, -1, true);
        return c * recur::pow(recur::mean(c * c, -1, true) + 1e-5f, -0.5f) * t.bind(*p_[k]) + t.bind(*p_[k + 1]);
    }
    recur::nn::LayerNormLSTMCell<float> cell_;
    std::vector<recur::Parameter<float>*> p_;
};

/// Times the natural training step (fresh tape, loss = sum(output), backward) of module m.
template <class M>
void time_module_training(benchmark::State& state, M& m) {
    const LayerSizes z = sizes_of(state);
    const xt::xarray<float> x = recur::bench::layer_input(z);
    auto step = [&] {
        m.zero_grad();
        Tape<float> tape;
        recur::Var<float> loss = recur::sum(m.forward(tape.constant(x)).output);
        tape.backward(loss);
    };
    step();
    for (auto _ : state) {
        step();
        benchmark::ClobberMemory();
    }
    count_flops(state, 3.0 * z.forward_flops(Kind::lstm));
}

void BM_TrainLayerNormLSTM(benchmark::State& state) {
    const LayerSizes z = sizes_of(state);
    recur::manual_seed(7);
    recur::nn::LayerNormLSTM<float> m({.input_size = z.i, .hidden_size = z.h, .batch_first = true});
    time_module_training(state, m);
}

void BM_TrainLayerNormLSTMComposed(benchmark::State& state) {
    const LayerSizes z = sizes_of(state);
    recur::manual_seed(7);
    recur::nn::Recurrent<ComposedLayerNormLSTMCell> m("ComposedLayerNormLSTM", {.input_size = z.i, .batch_first = true},
                                                      [&z](std::size_t in, const std::string& suffix) {
                                                          return std::make_unique<ComposedLayerNormLSTMCell>(in, z.h,
                                                                                                             suffix);
                                                      });
    time_module_training(state, m);
}

void BM_TrainLayerNormLSTMPrimitives(benchmark::State& state) {
    const LayerSizes z = sizes_of(state);
    recur::manual_seed(7);
    recur::nn::Recurrent<PrimitiveLayerNormLSTMCell> m(
        "PrimitiveLayerNormLSTM", {.input_size = z.i, .batch_first = true},
        [&z](std::size_t in, const std::string& suffix) {
            return std::make_unique<PrimitiveLayerNormLSTMCell>(in, z.h, suffix);
        });
    time_module_training(state, m);
}

// The sizes (B, T, I, H) of the targets.
void size_xs(benchmark::internal::Benchmark* b) { b->Args({1, 1000, 16, 16}); }
void size_s(benchmark::internal::Benchmark* b) { b->Args({16, 200, 64, 64}); }
void size_m(benchmark::internal::Benchmark* b) { b->Args({64, 100, 256, 256}); }
void size_l(benchmark::internal::Benchmark* b) { b->Args({64, 50, 512, 512}); }

void step_units(benchmark::internal::Benchmark* b) { b->ArgNames({"B", "T", "I", "H"})->Unit(benchmark::kMillisecond); }
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
void s_and_m(benchmark::internal::Benchmark* b) {
    step_units(b);
    size_s(b);
    size_m(b);
}
void m_only(benchmark::internal::Benchmark* b) {
    step_units(b);
    size_m(b);
}

BENCHMARK(BM_TrainNatural<Kind::lstm>)->Name("BM_Train/lstm/natural")->Apply(all_sizes);
BENCHMARK(BM_TrainTuned<Kind::lstm>)->Name("BM_Train/lstm/tuned")->Apply(all_sizes);
BENCHMARK(BM_TrainNatural<Kind::gru>)->Name("BM_Train/gru/natural")->Apply(all_sizes);
BENCHMARK(BM_TrainTuned<Kind::gru>)->Name("BM_Train/gru/tuned")->Apply(all_sizes);
BENCHMARK(BM_TrainNatural<Kind::rnn>)->Name("BM_Train/rnn/natural")->Apply(xs_and_m);
BENCHMARK(BM_TrainTuned<Kind::rnn>)->Name("BM_Train/rnn/tuned")->Apply(xs_and_m);
BENCHMARK(BM_InferNatural<Kind::lstm>)->Name("BM_Infer/lstm/natural")->Apply(all_sizes);
BENCHMARK(BM_InferTuned<Kind::lstm>)->Name("BM_Infer/lstm/tuned")->Apply(all_sizes);
BENCHMARK(BM_InferNatural<Kind::gru>)->Name("BM_Infer/gru/natural")->Apply(all_sizes);
BENCHMARK(BM_InferTuned<Kind::gru>)->Name("BM_Infer/gru/tuned")->Apply(all_sizes);
BENCHMARK(BM_InferNatural<Kind::rnn>)->Name("BM_Infer/rnn/natural")->Apply(m_only);
BENCHMARK(BM_InferTuned<Kind::rnn>)->Name("BM_Infer/rnn/tuned")->Apply(m_only);
BENCHMARK(BM_TrainLayerNormLSTM)->Name("BM_Train/ln_lstm/natural")->Apply(s_and_m);
BENCHMARK(BM_TrainLayerNormLSTMComposed)->Name("BM_Train/ln_lstm_composed/natural")->Apply(s_and_m);
BENCHMARK(BM_TrainLayerNormLSTMPrimitives)->Name("BM_Train/ln_lstm_primitives/natural")->Apply(s_and_m);
BENCHMARK(BM_TrainBf16<Kind::lstm>)->Name("BM_Train/lstm/bf16")->Apply(all_sizes);
BENCHMARK(BM_TrainBf16<Kind::gru>)->Name("BM_Train/gru/bf16")->Apply(all_sizes);
BENCHMARK(BM_InferBf16<Kind::lstm>)->Name("BM_Infer/lstm/bf16")->Apply(all_sizes);
BENCHMARK(BM_InferBf16<Kind::gru>)->Name("BM_Infer/gru/bf16")->Apply(all_sizes);
BENCHMARK(BM_Sgemm<recur::bench::ref_sgemm>)
    ->Name("BM_Sgemm")
    ->ArgNames({"M", "K", "N"})
    ->Args({64, 2048, 512})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Sgemm<onednn_sgemm>)
    ->Name("BM_SgemmOneDNN")
    ->ArgNames({"M", "K", "N"})
    ->Args({64, 2048, 512})
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
