// recur/nn/cells.hpp — RNN, LSTM and GRU cells, written only with primitive ops.
//
// A cell advances a state by one time step. Its state is a list of Vars, each (B, size);
// state[0] is the cell's output (h). Every cell here satisfies nn::HoistedCell: the input
// projection W_ih x + b_ih of all time steps is one matmul (project_input), and
// step_projected consumes one step of it. Parameter names and shapes follow PyTorch, with
// G the gate width (4H for an LSTM, 3H for a GRU, H for an RNN):
// weight_ih (G, I), weight_hh (G, H_out), bias_ih (G), bias_hh (G), weight_hr (P, H),
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
    std::size_t proj_size = 0;  // LSTM only: h = W_hr (o * tanh c), (P,)
    Nonlinearity nonlinearity = Nonlinearity::tanh;  // RNN only
    std::string suffix{};  // appended to parameter names
};

/// Shared parts of the gated cells: the four PyTorch parameters and the hoisted projection.
template <class T>
class GatedCell : public Module<T> {
public:
    using value_type = T;

    std::size_t input_size() const { return input_size_; }
    std::size_t hidden_size() const { return hidden_size_; }

    /// W_ih x + b_ih for x (..., I) -> (..., G): one GEMM for every time step.
    Var<T> project_input(const Var<T>& x);
    /// W_hh h + b_hh for h (B, H_out) -> (B, G).
    Var<T> project_hidden(const Var<T>& h);

    Parameter<T>& weight_ih() { return *weight_ih_; }
    Parameter<T>& weight_hh() { return *weight_hh_; }
    Parameter<T>* bias_ih() { return bias_ih_; }
    Parameter<T>* bias_hh() { return bias_hh_; }

protected:
    /// Registers weight_ih (G, I), weight_hh (G, H_out) and the biases, all U(-k, k),
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
    std::vector<std::size_t> state_sizes() const {
        return {proj_size_ ? proj_size_ : this->hidden_size_, this->hidden_size_};
    }
    CellState<T> step(const Var<T>& x, const CellState<T>& state);
    /// One step from xp (B, 4H): the fused gate math (lstm_pointwise).
    CellState<T> step_projected(const Var<T>& xp, const CellState<T>& state);
    /// One step reading step t of the projected sequence xs (T, B, 4H) / (B, T, 4H) in place,
    /// recurrent GEMM included (lstm_step); h_mask: a recurrent dropout mask (B, H_out) on h.
    CellState<T> step_at(const Var<T>& xs, std::size_t time_axis, std::size_t t, const CellState<T>& state,
                         const Var<T>& h_mask = {});
    /// The reference: the same step composed from primitives (tested equal to the fused one).
    CellState<T> step_composed(const Var<T>& xp, const CellState<T>& state);
    /// Inference: x's projection and every step in one call (lstm_sequence, which adds b_ih as
    /// it reads each step's rows); not with proj_size. x (T, B, I) / (B, T, I).
    bool runs_whole_sequences() const { return proj_size_ == 0; }
    std::pair<Var<T>, CellState<T>> run_sequence(const Var<T>& x, std::size_t time_axis, bool reverse,
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
    /// recurrent GEMM included (gru_step); h_mask: a recurrent dropout mask (B, H) on h in the product.
    CellState<T> step_at(const Var<T>& xs, std::size_t time_axis, std::size_t t, const CellState<T>& state,
                         const Var<T>& h_mask = {});
    /// The reference: the same step composed from primitives (tested equal to the fused one).
    CellState<T> step_composed(const Var<T>& xp, const CellState<T>& state);
    /// Inference: x's projection and every step in one call (gru_sequence, which adds b_ih as
    /// it reads each step's rows). x (T, B, I) / (B, T, I).
    bool runs_whole_sequences() const { return true; }
    std::pair<Var<T>, CellState<T>> run_sequence(const Var<T>& x, std::size_t time_axis, bool reverse,
                                                 const CellState<T>& state, const std::vector<std::int64_t>& lengths);
};

// ---- Layer-normalised cells (Ba et al. 2016, "Layer Normalization", section 3.1) -----------
//
// LN(v) normalises each row v of G elements: (v - mean) / sqrt(var + eps), var biased (as
// layer_norm). The input and the recurrent pre-activations are normalised separately, each with
// its own gain γ and shift β over all G = 4H (LSTM) or 3H (GRU) of them; the shifts take the
// place of the biases (there is no bias_ih / bias_hh). Parameters (suffix appended, e.g. "_l0"):
//   weight_ih (G, I), weight_hh (G, H)   U(-1/sqrt(H), 1/sqrt(H)), PyTorch's gate order
//   ln_weight_ih, ln_bias_ih (G)         γ_ih = 1, β_ih = 0
//   ln_weight_hh, ln_bias_hh (G)         γ_hh = 1, β_hh = 0
//   ln_weight_c, ln_bias_c (H)           LSTM only: γ_c = 1, β_c = 0
// The input part LN(x W_ih^T) γ_ih + β_ih is computed for all time steps at once
// (project_input: a linear and a layer_norm node), and each step is one fused node
// (layer_norm_lstm_step, layer_norm_gru_step: the recurrent product, its LN, the gate math and,
// for the LSTM, the LN of c').

struct LayerNormCellOptions {
    std::size_t input_size = 0;
    std::size_t hidden_size = 0;
    double eps = 1e-5;
    std::string suffix{};  // appended to parameter names
};

/// What the two layer-normalised cells share: the weights, the gains and shifts of the input
/// and recurrent parts, and the hoisted, normalised input projection.
template <class T>
class LayerNormGatedCell : public GatedCell<T> {
public:
    /// LN(x W_ih^T) γ_ih + β_ih for x (..., I) -> (..., G): for every time step at once.
    Var<T> project_input(const Var<T>& x);
    /// LN(h W_hh^T) γ_hh + β_hh for h (B, H) -> (B, G) (the composed reference's recurrent part).
    Var<T> project_hidden(const Var<T>& h);
    double eps() const { return eps_; }

protected:
    LayerNormGatedCell(const char* kind, std::size_t gates, const LayerNormCellOptions& o);
    /// A gain (ones) or a shift (zeros) of n elements named name + suffix.
    Parameter<T>* add_norm_parameter(const std::string& name, std::size_t n, T value);
    double eps_;
    std::size_t gates_;
    Parameter<T>* ln_weight_ih_;
    Parameter<T>* ln_bias_ih_;
    Parameter<T>* ln_weight_hh_;
    Parameter<T>* ln_bias_hh_;
};

/// Layer-normalised LSTM, gate order i, f, g, o. State {h (B, H), c (B, H)}:
///   a = LN(W_ih x) γ_ih + β_ih + LN(W_hh h) γ_hh + β_hh   (B, 4H)
///   c' = σ(a_f) c + σ(a_i) tanh(a_g),   h' = σ(a_o) tanh(LN(c') γ_c + β_c)
template <class T>
class LayerNormLSTMCell : public LayerNormGatedCell<T> {
public:
    explicit LayerNormLSTMCell(const LayerNormCellOptions& o);
    std::vector<std::size_t> state_sizes() const { return {this->hidden_size_, this->hidden_size_}; }
    CellState<T> step(const Var<T>& x, const CellState<T>& state);  // x (B, I)
    /// One step from xp (B, 4H), the normalised input part (project_input).
    CellState<T> step_projected(const Var<T>& xp, const CellState<T>& state);
    /// One step reading step t of the projected sequence xs (T, B, 4H) / (B, T, 4H) in place;
    /// h_mask: a recurrent dropout mask (B, H) on h in the product (layer_norm_lstm_step).
    CellState<T> step_at(const Var<T>& xs, std::size_t time_axis, std::size_t t, const CellState<T>& state,
                         const Var<T>& h_mask = {});
    /// The same step composed from primitives (linear, layer_norm, chunk, σ, tanh, ...): the
    /// reference the fused step is tested against.
    CellState<T> step_composed(const Var<T>& xp, const CellState<T>& state);

private:
    Parameter<T>* ln_weight_c_;
    Parameter<T>* ln_bias_c_;
};

/// Layer-normalised GRU, gate order r, z, n; β_hh's n part stays inside the reset product, as
/// PyTorch's b_hn. State {h (B, H)}. With xg = LN(W_ih x) γ_ih + β_ih, hg = LN(W_hh h) γ_hh + β_hh:
///   r = σ(xg_r + hg_r),  z = σ(xg_z + hg_z),  n = tanh(xg_n + r hg_n),  h' = (1 - z) n + z h
template <class T>
class LayerNormGRUCell : public LayerNormGatedCell<T> {
public:
    explicit LayerNormGRUCell(const LayerNormCellOptions& o);
    std::vector<std::size_t> state_sizes() const { return {this->hidden_size_}; }
    CellState<T> step(const Var<T>& x, const CellState<T>& state);
    CellState<T> step_projected(const Var<T>& xp, const CellState<T>& state);
    /// h_mask: a recurrent dropout mask (B, H) on h in the product only; the blend reads h.
    CellState<T> step_at(const Var<T>& xs, std::size_t time_axis, std::size_t t, const CellState<T>& state,
                         const Var<T>& h_mask = {});
    CellState<T> step_composed(const Var<T>& xp, const CellState<T>& state);
};

extern template class GatedCell<float>;
extern template class GatedCell<double>;
extern template class RNNCell<float>;
extern template class RNNCell<double>;
extern template class LSTMCell<float>;
extern template class LSTMCell<double>;
extern template class GRUCell<float>;
extern template class GRUCell<double>;
extern template class LayerNormGatedCell<float>;
extern template class LayerNormGatedCell<double>;
extern template class LayerNormLSTMCell<float>;
extern template class LayerNormLSTMCell<double>;
extern template class LayerNormGRUCell<float>;
extern template class LayerNormGRUCell<double>;

}  // namespace recur::nn
