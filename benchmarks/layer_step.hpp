// The recurrent layers and the training step that bench_layers times and step_memory measures:
// one-layer RNN (tanh), LSTM or GRU in float, batch_first, PyTorch's default init (fixed seed).
#pragma once

#include <cstddef>
#include <cstdint>

#include <xtensor/xarray.hpp>
#include <xtensor/xrandom.hpp>

#include "recur/nn/init.hpp"
#include "recur/nn/recurrent.hpp"
#include "recur/ops.hpp"
#include "recur/tape.hpp"

namespace recur::bench {

enum class Kind { rnn, lstm, gru };

/// Gate count G: one training step is 6 G B T H (I + H) FLOP (2 per multiply-add; forward,
/// weight-gradient and input-gradient GEMMs), the forward alone 2 G B T H (I + H).
inline double gates(Kind k) { return k == Kind::lstm ? 4.0 : k == Kind::gru ? 3.0 : 1.0; }

/// Batch B, time steps T, input size I, hidden size H.
struct LayerSizes {
    std::size_t b, t, i, h;
    double forward_flops(Kind k) const {
        return 2.0 * gates(k) * static_cast<double>(b) * static_cast<double>(t) * static_cast<double>(h) *
               static_cast<double>(i + h);
    }
};

inline xt::xarray<float> uniform(const Shape& shape, float lo, float hi, std::uint64_t seed) {
    xt::random::seed(seed);
    return xt::random::rand<float>(shape, lo, hi);
}

/// The input (B, T, I), uniform in [-1, 1].
inline xt::xarray<float> layer_input(const LayerSizes& z) { return uniform({z.b, z.t, z.i}, -1.0f, 1.0f, 31); }

/// The module of one kind and its forward's output.
template <Kind K>
struct Layer;

template <>
struct Layer<Kind::rnn> {
    nn::RNN<float> m;
    explicit Layer(const LayerSizes& z)
        : m(nn::RNNOptions{.input_size = z.i, .hidden_size = z.h, .batch_first = true}) {}
    Var<float> operator()(const Var<float>& x) { return m(x).output; }
};

template <>
struct Layer<Kind::lstm> {
    nn::LSTM<float> m;
    explicit Layer(const LayerSizes& z)
        : m(nn::LSTMOptions{.input_size = z.i, .hidden_size = z.h, .batch_first = true}) {}
    Var<float> operator()(const Var<float>& x) { return m(x).output; }
};

template <>
struct Layer<Kind::gru> {
    nn::GRU<float> m;
    explicit Layer(const LayerSizes& z)
        : m(nn::GRUOptions{.input_size = z.i, .hidden_size = z.h, .batch_first = true}) {}
    Var<float> operator()(const Var<float>& x) { return m(x).output; }
};

template <Kind K>
Layer<K> make_layer(const LayerSizes& z) {
    manual_seed(7);  // the initialisers draw from the global generator
    return Layer<K>(z);
}

// The loops bench_layers times, each one step of it. natural: the shortest user code (a fresh
// Tape each step, default options, the input through tape.constant, a copy). tuned: the README's
// loop (one Tape reused and clear()ed, retain_grads = false, the input read in place by
// tape.view). Inference: a tape that does not record (TapeOptions{.record = false}), fresh each
// step (natural) or reused (tuned).

/// The tape of the tuned training loop (as fit uses): intermediate gradients are not kept,
/// their buffers are reused within the sweep.
inline TapeOptions training_tape() { return TapeOptions{.retain_grads = false}; }

/// One natural training step: zero_grad, a fresh default Tape (of `precision`), loss = sum(layer(x)) with x a
/// constant (no grad), backward through time into the Parameters' grads.
template <Kind K>
void natural_train_step(Layer<K>& layer, const xt::xarray<float>& x, Precision precision = Precision::f32) {
    layer.m.zero_grad();
    Tape<float> tape({.precision = precision});
    Var<float> loss = sum(layer(tape.constant(x)));
    tape.backward(loss);
}

/// One tuned training step on `tape` (made with training_tape()): zero_grad, loss =
/// sum(layer(x)) with x read in place, backward, clear() (the tape keeps its buffers).
template <Kind K>
void tuned_train_step(Layer<K>& layer, Tape<float>& tape, const xt::xarray<float>& x) {
    layer.m.zero_grad();
    {
        Var<float> loss = sum(layer(tape.view(x)));  // x read in place, as PyTorch does
        tape.backward(loss);
    }
    tape.clear();
}

/// The tape of inference.
inline TapeOptions inference_tape() { return TapeOptions{.record = false}; }

/// One natural inference forward on a fresh non-recording tape (of `precision`); returns the output's first
/// value (so the work is observable).
template <Kind K>
float natural_infer_step(Layer<K>& layer, const xt::xarray<float>& x, Precision precision = Precision::f32) {
    TapeOptions options = inference_tape();
    options.precision = precision;
    Tape<float> tape(options);
    return layer(tape.constant(x)).value().data()[0];
}

/// One tuned inference forward on `tape` (made with inference_tape()), x read in place, then
/// clear(); returns the output's first value.
template <Kind K>
float tuned_infer_step(Layer<K>& layer, Tape<float>& tape, const xt::xarray<float>& x) {
    float first = 0;
    {
        Var<float> y = layer(tape.view(x));
        first = y.value().data()[0];
    }
    tape.clear();
    return first;
}

}  // namespace recur::bench
