// recur/nn/init.hpp — the global generator and parameter initialisers.
#pragma once

#include <cstdint>
#include <random>

#include "recur/tape.hpp"

namespace recur {

/// The generator layers draw their initial weights from (like torch.manual_seed).
std::mt19937_64& global_generator();
void manual_seed(std::uint64_t seed);

namespace nn::init {

/// Fills p with U(low, high) from `rng`.
template <class T>
void uniform(Parameter<T>& p, double low, double high, std::mt19937_64& rng = global_generator());

}  // namespace nn::init
}  // namespace recur
