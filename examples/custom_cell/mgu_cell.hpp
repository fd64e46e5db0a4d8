// A user-defined recurrent cell: the minimal gated unit (Zhou et al., 2016), written in user
// code with recur's primitive ops only. Satisfying nn::RecurrentCell is all it takes to get
// unrolling, stacking, bidirectional use, variable lengths and gradient checks.
//
//   f  = σ(W_f x + U_f h + b_f)             forget gate        (B, H)
//   h~ = tanh(W_h x + U_h (f * h) + b_h)     candidate          (B, H)
//   h' = (1 - f) * h + f * h~                                   (B, H)
#pragma once

#include <cmath>
#include <string>

#include <recur/recur.hpp>

template <class T>
class MGUCell : public recur::nn::Module<T> {
public:
    using value_type = T;

    // `suffix` is what nn::Recurrent asks cells to append to their parameter names
    // ("_l0", "_l0_reverse", ...), so every layer and direction has distinct names.
    MGUCell(std::size_t input_size, std::size_t hidden_size, const std::string& suffix = "")
        : input_size_(input_size),
          hidden_size_(hidden_size),
          w_x_(
              this->register_parameter("weight_ih" + suffix, xt::xarray<T>::from_shape({2 * hidden_size, input_size}))),
          b_(this->register_parameter("bias" + suffix, xt::xarray<T>::from_shape({2 * hidden_size}))),
          u_f_(this->register_parameter("weight_hf" + suffix, xt::xarray<T>::from_shape({hidden_size, hidden_size}))),
          u_h_(this->register_parameter("weight_hh" + suffix, xt::xarray<T>::from_shape({hidden_size, hidden_size}))) {
        const double k = 1.0 / std::sqrt(static_cast<double>(hidden_size));
        for (auto* p : {&w_x_, &b_, &u_f_, &u_h_}) recur::nn::init::uniform(*p, -k, k);
    }

    std::size_t input_size() const { return input_size_; }
    std::vector<std::size_t> state_sizes() const { return {hidden_size_}; }

    // Optional: [W_f; W_h] x + [b_f; b_h] for every time step in one GEMM (x (..., I) -> (..., 2H)).
    recur::Var<T> project_input(const recur::Var<T>& x) {
        auto& tape = x.tape();
        return recur::linear(x, tape.bind(w_x_), tape.bind(b_));
    }

    // One step from the projected input xp (B, 2H).
    recur::nn::CellState<T> step_projected(const recur::Var<T>& xp, const recur::nn::CellState<T>& state) {
        using namespace recur;
        auto& tape = xp.tape();
        const Var<T>& h = state[0];
        const auto parts = chunk(xp, 2, 1);  // [W_f x + b_f | W_h x + b_h]
        Var<T> f = sigmoid(parts[0] + linear(h, tape.bind(u_f_)));
        Var<T> candidate = tanh(parts[1] + linear(f * h, tape.bind(u_h_)));
        return {h + f * (candidate - h)};  // (1 - f) h + f h~
    }

    // One step from the raw input x (B, I).
    recur::nn::CellState<T> step(const recur::Var<T>& x, const recur::nn::CellState<T>& state) {
        return step_projected(project_input(x), state);
    }

private:
    std::size_t input_size_, hidden_size_;
    recur::Parameter<T>& w_x_;
    recur::Parameter<T>& b_;
    recur::Parameter<T>& u_f_;
    recur::Parameter<T>& u_h_;
};

/// A stack of MGU layers: everything but the cell comes from nn::Recurrent.
template <class T>
recur::nn::Recurrent<MGUCell<T>> make_mgu(std::size_t input_size, std::size_t hidden_size,
                                          recur::nn::RecurrentOptions options) {
    options.input_size = input_size;
    return recur::nn::Recurrent<MGUCell<T>>("MGU", options, [hidden_size](std::size_t in, const std::string& suffix) {
        return std::make_unique<MGUCell<T>>(in, hidden_size, suffix);
    });
}
