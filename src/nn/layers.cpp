// Feed-forward layers, activations and Sequential, composed from primitive ops.
#include "recur/nn/layers.hpp"

#include <algorithm>
#include <cmath>
#include <random>

#include <xtensor/xbuilder.hpp>

#include "recur/nn/init.hpp"

namespace recur::nn {

// ---- Linear: y = x W^T + b, x (..., I), W (O, I), b (O) -> (..., O) ------------------------

template <class T>
Linear<T>::Linear(std::size_t in_features, std::size_t out_features, bool bias) : in_(in_features), out_(out_features) {
    if (in_features == 0 || out_features == 0)
        throw value_error("Linear: in_features and out_features must be positive, got " + std::to_string(in_features) +
                          " and " + std::to_string(out_features));
    const double k = 1.0 / std::sqrt(static_cast<double>(in_features));
    weight_ = &this->register_parameter("weight", xt::xarray<T>::from_shape({out_features, in_features}));
    init::uniform(*weight_, -k, k);
    if (bias) {
        bias_ = &this->register_parameter("bias", xt::xarray<T>::from_shape({out_features}));
        init::uniform(*bias_, -k, k);
    }
}

template <class T>
Var<T> Linear<T>::forward(const Var<T>& x, const std::vector<std::int64_t>&) {
    x.check("Linear");
    const Shape& xs = x.shape();
    if (xs.empty() || xs.back() != in_)
        throw shape_error("Linear: input must be (..., " + std::to_string(in_) + "), got " + shape_str(xs));
    Tape<T>& t = x.tape();
    return bias_ ? linear(x, t.bind(*weight_), t.bind(*bias_)) : linear(x, t.bind(*weight_));
}

// ---- Embedding: y[n, :] = W[ids[n], :], W (V, E) -------------------------------------------

template <class T>
Embedding<T>::Embedding(std::size_t num_embeddings, std::size_t embedding_dim)
    : num_(num_embeddings), dim_(embedding_dim) {
    if (num_embeddings == 0 || embedding_dim == 0)
        throw value_error("Embedding: num_embeddings and embedding_dim must be positive, got " +
                          std::to_string(num_embeddings) + " and " + std::to_string(embedding_dim));
    weight_ = &this->register_parameter("weight", xt::xarray<T>::from_shape({num_embeddings, embedding_dim}));
    std::normal_distribution<double> normal(0.0, 1.0);
    auto& rng = global_generator();
    for (auto& v : weight_->value()) v = static_cast<T>(normal(rng));
}

template <class T>
Var<T> Embedding<T>::forward(const Var<T>& ids, const std::vector<std::int64_t>&) {
    ids.check("Embedding");
    const xt::xarray<T>& v = ids.value();
    xt::xarray<std::int64_t> as_int = xt::xarray<std::int64_t>::from_shape(v.shape());
    for (std::size_t n = 0; n < v.size(); ++n) {
        const T id = v.data()[n];
        if (!(id >= T(0) && id < static_cast<T>(num_) && std::floor(id) == id))
            throw index_error("Embedding: id " + number_str(id) + " at flat position " + std::to_string(n) +
                              " of ids " + shape_str(v.shape()) + " is not an integer in [0, " + std::to_string(num_) +
                              ")");
        as_int.data()[n] = static_cast<std::int64_t>(id);
    }
    return forward(ids.tape(), as_int);
}

template <class T>
Var<T> Embedding<T>::forward(Tape<T>& tape, const xt::xarray<std::int64_t>& ids) {
    for (std::size_t n = 0; n < ids.size(); ++n) {
        const std::int64_t id = ids.data()[n];
        if (id < 0 || static_cast<std::size_t>(id) >= num_)
            throw index_error("Embedding: id " + std::to_string(id) + " at flat position " + std::to_string(n) +
                              " of ids " + shape_str(ids.shape()) + " is not in [0, " + std::to_string(num_) + ")");
    }
    return embedding(tape.bind(*weight_), ids);
}

// ---- Dropout -------------------------------------------------------------------------------

template <class T>
Dropout<T>::Dropout(double p) : p_(p) {
    if (!(p >= 0 && p < 1)) throw value_error("Dropout: probability must be in [0, 1), got " + number_str(p));
}

template <class T>
Var<T> Dropout<T>::forward(const Var<T>& x, const std::vector<std::int64_t>&) {
    return dropout(x, static_cast<T>(p_), this->training());
}

// ---- Activations ---------------------------------------------------------------------------

template <class T>
Var<T> ReLU<T>::forward(const Var<T>& x, const std::vector<std::int64_t>&) {
    return relu(x);
}

template <class T>
Var<T> Tanh<T>::forward(const Var<T>& x, const std::vector<std::int64_t>&) {
    return tanh(x);
}

template <class T>
Var<T> Sigmoid<T>::forward(const Var<T>& x, const std::vector<std::int64_t>&) {
    return sigmoid(x);
}

template <class T>
Var<T> Softmax<T>::forward(const Var<T>& x, const std::vector<std::int64_t>&) {
    return softmax(x, axis_);
}

template <class T>
Var<T> LogSoftmax<T>::forward(const Var<T>& x, const std::vector<std::int64_t>&) {
    return log_softmax(x, axis_);
}

// ---- Sequential ----------------------------------------------------------------------------

template <class T>
Layer<T>& Sequential<T>::add(std::unique_ptr<Layer<T>> layer) {
    if (!layer) throw value_error("Sequential::add: null layer");
    layers_.push_back(std::move(layer));
    return this->register_module(std::to_string(layers_.size() - 1), *layers_.back());
}

template <class T>
Var<T> Sequential<T>::forward(const Var<T>& x, const std::vector<std::int64_t>& lengths) {
    Var<T> y = x;
    for (auto& layer : layers_) y = layer->forward(y, lengths);
    return y;
}

template <class T>
bool Sequential<T>::stateful() const {
    return std::any_of(layers_.begin(), layers_.end(), [](const auto& layer) { return layer->stateful(); });
}

template <class T>
void Sequential<T>::reset_states() {
    for (auto& layer : layers_) layer->reset_states();
}

template <class T>
void Sequential<T>::reset_states(const std::vector<std::size_t>& rows) {
    for (auto& layer : layers_) layer->reset_states(rows);
}

template <class T>
Layer<T>& Sequential<T>::operator[](std::size_t k) {
    if (k >= layers_.size())
        throw index_error("Sequential: index " + std::to_string(k) + " is out of range for " +
                          std::to_string(layers_.size()) + " layers");
    return *layers_[k];
}

template <class T>
const Layer<T>& Sequential<T>::operator[](std::size_t k) const {
    if (k >= layers_.size())
        throw index_error("Sequential: index " + std::to_string(k) + " is out of range for " +
                          std::to_string(layers_.size()) + " layers");
    return *layers_[k];
}

template class Linear<float>;
template class Linear<double>;
template class Embedding<float>;
template class Embedding<double>;
template class Dropout<float>;
template class Dropout<double>;
template class ReLU<float>;
template class ReLU<double>;
template class Tanh<float>;
template class Tanh<double>;
template class Sigmoid<float>;
template class Sigmoid<double>;
template class Softmax<float>;
template class Softmax<double>;
template class LogSoftmax<float>;
template class LogSoftmax<double>;
template class RecurrentLayer<RNN<float>>;
template class RecurrentLayer<RNN<double>>;
template class RecurrentLayer<LSTM<float>>;
template class RecurrentLayer<LSTM<double>>;
template class RecurrentLayer<GRU<float>>;
template class RecurrentLayer<GRU<double>>;
template class Sequential<float>;
template class Sequential<double>;

// ---- LayerNorm: y = x̂ w + b over the last axis (D) ----------------------------------------

template <class T>
LayerNorm<T>::LayerNorm(std::size_t normalized_size, double eps, bool elementwise_affine)
    : size_(normalized_size), eps_(eps) {
    if (normalized_size == 0) throw value_error("LayerNorm: normalized_size must be positive");
    if (!(eps >= 0)) throw value_error("LayerNorm: eps must be >= 0, got " + std::to_string(eps));
    if (elementwise_affine) {
        weight_ = &this->register_parameter("weight", xt::xarray<T>(xt::ones<T>({normalized_size})));
        bias_ = &this->register_parameter("bias", xt::xarray<T>(xt::zeros<T>({normalized_size})));
    }
}

template <class T>
Var<T> LayerNorm<T>::forward(const Var<T>& x, const std::vector<std::int64_t>&) {
    x.check("LayerNorm");
    if (x.dim() == 0 || x.shape().back() != size_)
        throw shape_error("LayerNorm: input must be (..., " + std::to_string(size_) + "), got " + shape_str(x.shape()));
    Tape<T>& t = x.tape();
    if (!weight_) return layer_norm(x, size_, Var<T>(), Var<T>(), static_cast<T>(eps_));
    return layer_norm(x, size_, t.bind(*weight_), t.bind(*bias_), static_cast<T>(eps_));
}

template class LayerNorm<float>;
template class LayerNorm<double>;

}  // namespace recur::nn
