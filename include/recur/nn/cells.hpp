// recur/nn/cells.hpp — RNN, LSTM and GRU cells, written only with primitive ops.
//
// A cell advances a state by one time step. Its state is a list of Vars, each (B, size);
// state[0] is the cell's output (h). Every cell here satisfies nn::HoistedCell: the input
// projection W_ih x + b_ih of all time steps is one matmul (project_input), and
// step_projected consumes one step of it. Parameter names and shapes follow PyTorch:
// weight_ih (G*H, I), weight_hh (G*H, H_out), bias_ih (G*H), bias_hh (G*H), weight_hr (P, H),
// with `suffix` appended ("_l0", "_l1_reverse", or "" for a standalone cell).
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "recur/nn/module.hpp"
#include "recur/ops.hpp"

namespace recur::nn {

template <class T>
using CellState = std::vector<Var<T>>;

enum class Nonlinearity { tanh, relu };

struct CellOptions {
    std::size_t input_size = 0;
    std::size_t hidden_size = 0;
    bool bias = true;
    std::size_t proj_size = 0;                     // LSTM only: h = W_hr (o * tanh c), (P,)
    Nonlinearity nonlinearity = Nonlinearity::tanh;  // RNN only
    std::string suffix{};                          // appended to parameter names
};

/// Shared parts of the gated cells: the four PyTorch parameters and the hoisted projection.
template <class T>
class GatedCell : public Module<T> {
public:
    using value_type = T;

    std::size_t input_size() const { return input_size_; }
    std::size_t hidden_size() const { return hidden_size_; }

    /// W_ih x + b_ih for x (..., I) -> (..., G*H): one GEMM for every time step.
    Var<T> project_input(const Var<T>& x);
    /// W_hh h + b_hh for h (B, H_out) -> (B, G*H).
    Var<T> project_hidden(const Var<T>& h);

    Parameter<T>& weight_ih() { return *weight_ih_; }
    Parameter<T>& weight_hh() { return *weight_hh_; }
    Parameter<T>* bias_ih() { return bias_ih_; }
    Parameter<T>* bias_hh() { return bias_hh_; }

protected:
    /// Registers weight_ih (G*H, I), weight_hh (G*H, H_out) and the biases, all U(-k, k),
    /// k = 1/sqrt(H) (PyTorch's default).
    GatedCell(const char* kind, std::size_t gates, const CellOptions& o, std::size_t h_out);
    std::size_t input_size_, hidden_size_;

private:
    Parameter<T>* weight_ih_;
    Parameter<T>* weight_hh_;
    Parameter<T>* bias_ih_ = nullptr;
    Parameter<T>* bias_hh_ = nullptr;
};

/// Elman RNN: h' = act(W_ih x + b_ih + W_hh h + b_hh), act = tanh or relu. State {h}.
template <class T>
class RNNCell : public GatedCell<T> {
public:
    explicit RNNCell(const CellOptions& o);
    std::vector<std::size_t> state_sizes() const { return {this->hidden_size_}; }
    CellState<T> step(const Var<T>& x, const CellState<T>& state);  // x (B, I)
    CellState<T> step_projected(const Var<T>& xp, const CellState<T>& state);  // xp (B, H)
    Nonlinearity nonlinearity() const { return nonlinearity_; }

private:
    Nonlinearity nonlinearity_;
};

/// LSTM (gate order i, f, g, o):
///   i = σ(.), f = σ(.), g = tanh(.), o = σ(.) of W_ih x + b_ih + W_hh h + b_hh (B, 4H)
///   c' = f * c + i * g,  h' = o * tanh(c')  [then h' = W_hr h' if proj_size > 0]
/// State {h (B, H_out), c (B, H)}, H_out = proj_size or H.
template <class T>
class LSTMCell : public GatedCell<T> {
public:
    explicit LSTMCell(const CellOptions& o);
    std::vector<std::size_t> state_sizes() const { return {proj_size_ ? proj_size_ : this->hidden_size_, this->hidden_size_}; }
    CellState<T> step(const Var<T>& x, const CellState<T>& state);
    /// One step from xp (B, 4H): the fused gate math (lstm_pointwise).
    CellState<T> step_projected(const Var<T>& xp, const CellState<T>& state);
    /// One step reading step t of the projected sequence xs (T, B, 4H) / (B, T, 4H) in place,
    /// recurrent GEMM included (lstm_step).
    CellState<T> step_at(const Var<T>& xs, std::size_t time_axis, std::size_t t, const CellState<T>& state);
    /// The reference: the same step composed from primitives (tested equal to the fused one).
    CellState<T> step_composed(const Var<T>& xp, const CellState<T>& state);
    /// Inference: every step of xs in one call (lstm_sequence); not with proj_size.
    bool runs_whole_sequences() const { return proj_size_ == 0; }
    std::pair<Var<T>, CellState<T>> run_sequence(const Var<T>& xs, std::size_t time_axis, bool reverse,
                                                 const CellState<T>& state, const std::vector<std::int64_t>& lengths);
    Parameter<T>* weight_hr() { return weight_hr_; }

private:
    CellState<T> finish(LSTMPointwise<T> hc, Tape<T>& tape);  // applies W_hr when proj_size > 0
    std::size_t proj_size_;
    Parameter<T>* weight_hr_ = nullptr;
};

/// GRU (gate order r, z, n), with b_hn inside the reset product:
///   r = σ(W_ir x + b_ir + W_hr h + b_hr),  z = σ(W_iz x + b_iz + W_hz h + b_hz)
///   n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h
/// State {h (B, H)}.
template <class T>
class GRUCell : public GatedCell<T> {
public:
    explicit GRUCell(const CellOptions& o);
    std::vector<std::size_t> state_sizes() const { return {this->hidden_size_}; }
    CellState<T> step(const Var<T>& x, const CellState<T>& state);
    /// One step from xp (B, 3H): the fused gate math (gru_pointwise).
    CellState<T> step_projected(const Var<T>& xp, const CellState<T>& state);
    /// One step reading step t of the projected sequence xs (T, B, 3H) / (B, T, 3H) in place,
    /// recurrent GEMM included (gru_step).
    CellState<T> step_at(const Var<T>& xs, std::size_t time_axis, std::size_t t, const CellState<T>& state);
    /// The reference: the same step composed from primitives (tested equal to the fused one).
    CellState<T> step_composed(const Var<T>& xp, const CellState<T>& state);
    /// Inference: every step of xs in one call (gru_sequence).
    bool runs_whole_sequences() const { return true; }
    std::pair<Var<T>, CellState<T>> run_sequence(const Var<T>& xs, std::size_t time_axis, bool reverse,
                                                 const CellState<T>& state, const std::vector<std::int64_t>& lengths);
};

extern template class GatedCell<float>;
extern template class GatedCell<double>;
extern template class RNNCell<float>;
extern template class RNNCell<double>;
extern template class LSTMCell<float>;
extern template class LSTMCell<double>;
extern template class GRUCell<float>;
extern template class GRUCell<double>;

}  // namespace recur::nn
