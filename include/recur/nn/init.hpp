// recur/nn/init.hpp — the global generator and parameter initialisers (torch.nn.init).
//
// Every initialiser fills a Parameter's value in place (its shape is kept) and takes the
// generator to draw from, global_generator() by default; manual_seed makes a run
// reproducible. The formulas, defaults and fan computations are PyTorch 1.13's; the draws
// themselves come from std::mt19937_64 and so differ from torch's.
//
// Fans: a weight of shape (out, in, k...) has fan_in = in * prod(k) and fan_out =
// out * prod(k), as torch computes them; recurrent weights (G, I), G the gate width
// (4H for an LSTM), have fan_in I and fan_out G. Initialisers that need fans raise
// shape_error for fewer than 2 dimensions.
//
// Typical recurrent use:
//     for (auto& [name, p] : lstm.named_parameters()) {
//         if (name.starts_with("weight_ih")) nn::init::xavier_uniform(*p);
//         else if (name.starts_with("weight_hh")) nn::init::orthogonal(*p);
//         else {                                           // bias_ih / bias_hh, (4H,)
//             nn::init::zeros(*p);
//             nn::init::constant_slice(*p, H, 2 * H, 0.5);  // gates i,f,g,o: forget = [H, 2H)
//         }
//     }
// (LSTM adds both biases, so 0.5 in each gives a forget-gate bias of 1.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>

#include "recur/tape.hpp"

namespace recur {

/// The generator layers draw their initial weights from (like torch.manual_seed).
std::mt19937_64& global_generator();
void manual_seed(std::uint64_t seed);

namespace nn::init {

/// Fills p with U(low, high) from `rng`. value_error unless low <= high, both finite.
template <class T>
void uniform(Parameter<T>& p, double low, double high, std::mt19937_64& rng = global_generator());

/// Fills p with N(mean, std^2) from `rng`. value_error unless std >= 0 and both finite.
template <class T>
void normal(Parameter<T>& p, double mean = 0.0, double stddev = 1.0, std::mt19937_64& rng = global_generator());

/// Fills p with v.
template <class T>
void constant(Parameter<T>& p, double v);

/// Sets elements [begin, end) of a 1-D p, or rows [begin, end) (along axis 0) of a p with
/// more dimensions, to v; the rest is unchanged. E.g. the forget-gate part [H, 2H) of an
/// LSTM bias (gates i, f, g, o). index_error unless begin <= end <= p.shape()[0];
/// shape_error for a 0-d p.
template <class T>
void constant_slice(Parameter<T>& p, std::size_t begin, std::size_t end, double v);

template <class T>
void zeros(Parameter<T>& p);
template <class T>
void ones(Parameter<T>& p);

/// The recommended gain for a nonlinearity, as torch.nn.init.calculate_gain: 1 for
/// "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d/2d/3d", "sigmoid"; 5/3 for
/// "tanh"; sqrt(2) for "relu"; sqrt(2 / (1 + slope^2)) for "leaky_relu" (param = negative
/// slope, default 0.01); 3/4 for "selu". value_error for any other name.
double calculate_gain(std::string_view nonlinearity, std::optional<double> param = std::nullopt);

/// {fan_in, fan_out} of a weight shape (see the top of this file); shape_error below 2-D.
std::pair<std::size_t, std::size_t> calculate_fan_in_and_fan_out(const Shape& shape);

/// Glorot: U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)).
template <class T>
void xavier_uniform(Parameter<T>& p, double gain = 1.0, std::mt19937_64& rng = global_generator());
/// Glorot: N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out)).
template <class T>
void xavier_normal(Parameter<T>& p, double gain = 1.0, std::mt19937_64& rng = global_generator());

enum class FanMode { fan_in, fan_out };

/// Options of the He initialisers; the defaults are PyTorch's (a = 0, fan_in, leaky_relu).
struct KaimingOptions {
    double a = 0;  // negative slope of a leaky_relu (used only for that nonlinearity)
    FanMode mode = FanMode::fan_in;
    std::string nonlinearity = "leaky_relu";
};

/// He: U(-b, b) with b = gain * sqrt(3 / fan), gain = calculate_gain(nonlinearity, a).
template <class T>
void kaiming_uniform(Parameter<T>& p, const KaimingOptions& options = {}, std::mt19937_64& rng = global_generator());
/// He: N(0, std^2) with std = gain / sqrt(fan).
template <class T>
void kaiming_normal(Parameter<T>& p, const KaimingOptions& options = {}, std::mt19937_64& rng = global_generator());

/// A (semi-)orthogonal matrix times gain, as torch.nn.init.orthogonal_: p (rows = shape[0],
/// cols = the product of the other extents) becomes gain * Q, where A = QR is the QR
/// factorisation of a rows x cols matrix of N(0, 1) draws (drawn in row-major order; of its
/// transpose when rows < cols) with Q's columns signed so that diag(R) > 0. Then
/// WᵀW = gain² I when rows >= cols, WWᵀ = gain² I otherwise. shape_error below 2-D.
template <class T>
void orthogonal(Parameter<T>& p, double gain = 1.0, std::mt19937_64& rng = global_generator());

// ---- Instantiations (src/nn/init.cpp) --------------------------------------------------------

extern template void uniform<float>(Parameter<float>&, double, double, std::mt19937_64&);
extern template void normal<float>(Parameter<float>&, double, double, std::mt19937_64&);
extern template void constant<float>(Parameter<float>&, double);
extern template void constant_slice<float>(Parameter<float>&, std::size_t, std::size_t, double);
extern template void zeros<float>(Parameter<float>&);
extern template void ones<float>(Parameter<float>&);
extern template void xavier_uniform<float>(Parameter<float>&, double, std::mt19937_64&);
extern template void xavier_normal<float>(Parameter<float>&, double, std::mt19937_64&);
extern template void kaiming_uniform<float>(Parameter<float>&, const KaimingOptions&, std::mt19937_64&);
extern template void kaiming_normal<float>(Parameter<float>&, const KaimingOptions&, std::mt19937_64&);
extern template void orthogonal<float>(Parameter<float>&, double, std::mt19937_64&);
extern template void uniform<double>(Parameter<double>&, double, double, std::mt19937_64&);
extern template void normal<double>(Parameter<double>&, double, double, std::mt19937_64&);
extern template void constant<double>(Parameter<double>&, double);
extern template void constant_slice<double>(Parameter<double>&, std::size_t, std::size_t, double);
extern template void zeros<double>(Parameter<double>&);
extern template void ones<double>(Parameter<double>&);
extern template void xavier_uniform<double>(Parameter<double>&, double, std::mt19937_64&);
extern template void xavier_normal<double>(Parameter<double>&, double, std::mt19937_64&);
extern template void kaiming_uniform<double>(Parameter<double>&, const KaimingOptions&, std::mt19937_64&);
extern template void kaiming_normal<double>(Parameter<double>&, const KaimingOptions&, std::mt19937_64&);
extern template void orthogonal<double>(Parameter<double>&, double, std::mt19937_64&);

}  // namespace nn::init
}  // namespace recur
