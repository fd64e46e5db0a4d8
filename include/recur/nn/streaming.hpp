// recur/nn/streaming.hpp — streaming inference: one time step per call, for real-time use.
//
//   nn::Streamer<float> stream(model);          // model: a trained Sequential; B = 1
//   for (float sample : live_feed) {
//       std::span<const float> y = stream.step(std::span(&sample, 1));   // (B, O) of this step
//   }
//
// A Streamer runs a model one time step at a time at a fixed batch size B, keeping every
// recurrent layer's state (h, and c for an LSTM) between calls: after steps x_0 .. x_t its
// output is what the model returns for step t of the whole sequence x_0 .. x_t run in one
// call (Return::sequences at step t, or Return::last of that sequence), up to float
// rounding. It steps Sequentials (nested ones too) of
//   RecurrentLayer<LSTM | GRU | RNN> (any num_layers, one direction, no proj_size),
//   Linear, ReLU, Tanh, Sigmoid and Dropout (the identity: inference);
// any other layer, a bidirectional module or an LSTM with proj_size raises value_error
// naming the layer's position.
//
// Speed: no tape and no allocation per step. The weights are laid out once for the step's
// products (an LSTM or RNN layer as one (I + H, G) matrix [W_ih^T; W_hh^T] with the two biases
// summed; a GRU's W_ih^T and W_hh^T; a Linear's W^T), the products go to a one-row SIMD
// kernel at B = 1 (recur's small GEMM above) and the gate math is the fused cells' own row
// kernels (xsimd). A
// Parameter whose version() changed since (an optimizer step, io::load, assign) is laid out
// again before the next step, so a Streamer follows a model that keeps training.
//
// Not thread-safe: one Streamer per stream (each holds its own state); several Streamers may
// read one model concurrently while nobody writes its parameters.
#pragma once

#include <cstddef>
#include <memory>
#include <span>

#include <xtensor/xarray.hpp>

#include "recur/nn/layers.hpp"

namespace recur::nn {

template <class T>
class Streamer {
public:
    /// Lays out `model` (a Sequential, or one layer) for batches of `batch` rows, all states
    /// zero. value_error for batch 0, a layer it cannot step (naming its position), or a
    /// model that does not start with a known input width.
    explicit Streamer(Layer<T>& model, std::size_t batch = 1);
    ~Streamer();
    Streamer(const Streamer&) = delete;
    Streamer& operator=(const Streamer&) = delete;

    /// One time step: x holds B rows of I values (row b at x[b * I]); returns B rows of O
    /// values, valid until the next call. shape_error unless x.size() == B * I.
    std::span<const T> step(std::span<const T> x);
    /// The same for an array (B, I) or (I) at B = 1; returns (B, O) (allocates).
    xt::xarray<T> step(const xt::xarray<T>& x);

    /// Every row's state back to zero.
    void reset();
    /// Row b's state back to zero (index_error for b >= batch()).
    void reset(std::size_t row);

    std::size_t batch() const;
    std::size_t input_size() const;
    std::size_t output_size() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

extern template class Streamer<float>;
extern template class Streamer<double>;

}  // namespace recur::nn
