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

/// The tape of a training loop (as fit uses): intermediate gradients are not kept, their
/// buffers are reused within the sweep.
inline TapeOptions training_tape() { return TapeOptions{.retain_grads = false}; }

/// One training step: zero_grad, loss = sum(layer(x)) with x a constant (no grad), backward
/// through time into the Parameters' grads, clear() (the tape keeps its buffers for the next).
template <Kind K>
void train_step(Layer<K>& layer, Tape<float>& tape, const xt::xarray<float>& x) {
    layer.m.zero_grad();
    {
        Var<float> loss = sum(layer(tape.view(x)));  // x read in place, as PyTorch does
        tape.backward(loss);
    }
    tape.clear();
}

}  // namespace recur::bench
