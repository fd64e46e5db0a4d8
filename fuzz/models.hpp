// The models and optimizers the fuzz targets load into, and make_corpus saves from: small,
// so that the seed files stay small.
#pragma once

#include <cstring>
#include <memory>
#include <vector>

#include "recur/nn/layers.hpp"
#include "recur/nn/recurrent.hpp"
#include "recur/optim.hpp"

namespace recur::fuzz {

/// LSTM(3 -> 2) then Linear(2 -> 1): the parameters "0.weight_ih_l0", ..., "1.weight", "1.bias".
template <class T>
std::unique_ptr<nn::Sequential<T>> small_model() {
    auto m = std::make_unique<nn::Sequential<T>>();
    m->add(nn::recurrent_layer(std::make_unique<nn::LSTM<T>>(nn::LSTMOptions{.input_size = 3, .hidden_size = 2}),
                               nn::Return::last));
    m->template emplace<nn::Linear<T>>(2, 1);
    return m;
}

/// The arrays a load may change: parameters, then the optimizer's state (if any).
template <class T>
std::vector<xt::xarray<T>> snapshot(nn::Module<T>& model, const optim::Optimizer<T>* optimizer = nullptr) {
    std::vector<xt::xarray<T>> out;
    for (auto* p : model.parameters()) out.push_back(p->value());
    if (optimizer)
        for (const auto& [name, a] : optimizer->state()) out.push_back(a);
    return out;
}

/// Same shapes and bit-identical elements.
template <class T>
bool identical(const std::vector<xt::xarray<T>>& a, const std::vector<xt::xarray<T>>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t k = 0; k < a.size(); ++k)
        if (a[k].shape() != b[k].shape() ||
            (a[k].size() && std::memcmp(a[k].data(), b[k].data(), a[k].size() * sizeof(T)) != 0))
            return false;
    return true;
}

}  // namespace recur::fuzz
