// The PyTorch recurrent modules: option translation and result shapes around Recurrent<Cell>.
#include "recur/nn/recurrent.hpp"

#include <random>

namespace recur::nn {

namespace detail {
void check_lengths(const std::string& kind, const std::vector<std::int64_t>& lengths, std::size_t batch,
                   std::size_t steps) {
    if (lengths.empty()) return;
    if (lengths.size() != batch)
        throw shape_error(kind + ": " + std::to_string(lengths.size()) + " lengths given for a batch of " +
                          std::to_string(batch));
    for (std::size_t b = 0; b < batch; ++b)
        if (lengths[b] < 1 || static_cast<std::size_t>(lengths[b]) > steps)
            throw index_error(kind + ": length " + std::to_string(lengths[b]) + " of sequence " + std::to_string(b) +
                              " is outside [1, " + std::to_string(steps) + "]");
}

template <class T>
xt::xarray<T> dropout_mask(Tape<T>& tape, const Shape& shape, double p) {
    xt::xarray<T> mask = xt::xarray<T>::from_shape(shape);
    const T keep = T(1) / (T(1) - static_cast<T>(p));
    std::uniform_real_distribution<double> u(0.0, 1.0);
    auto& rng = tape.generator();
    for (auto& m : mask) m = u(rng) >= p ? keep : T(0);
    return mask;
}
template xt::xarray<float> dropout_mask(Tape<float>&, const Shape&, double);
template xt::xarray<double> dropout_mask(Tape<double>&, const Shape&, double);
}  // namespace detail

namespace {
template <class Options>
RecurrentOptions stack_options(const Options& o) {
    return {o.input_size,    o.num_layers, o.batch_first,   o.dropout,
            o.bidirectional, o.merge_mode, o.input_dropout, o.recurrent_dropout};
}
}  // namespace

template <class T>
RNN<T>::RNN(const RNNOptions& o)
    : Recurrent<RNNCell<T>>("RNN", stack_options(o), [o](std::size_t in, const std::string& suffix) {
          return std::make_unique<RNNCell<T>>(CellOptions{in, o.hidden_size, o.bias, 0, o.nonlinearity, suffix});
      }) {}

template <class T>
HiddenResult<T> RNN<T>::operator()(const Var<T>& x, const Var<T>& h0, const std::vector<std::int64_t>& lengths) {
    Sequence<T> r = this->forward(x, {h0}, lengths);
    return {r.output, r.state[0]};
}

template <class T>
LSTM<T>::LSTM(const LSTMOptions& o)
    : Recurrent<LSTMCell<T>>("LSTM", stack_options(o), [o](std::size_t in, const std::string& suffix) {
          return std::make_unique<LSTMCell<T>>(
              CellOptions{in, o.hidden_size, o.bias, o.proj_size, Nonlinearity::tanh, suffix});
      }) {}

template <class T>
LSTMResult<T> LSTM<T>::operator()(const Var<T>& x, const LSTMState<T>& initial,
                                  const std::vector<std::int64_t>& lengths) {
    Sequence<T> r = this->forward(x, {initial.h, initial.c}, lengths);
    return {r.output, {r.state[0], r.state[1]}};
}

template <class T>
GRU<T>::GRU(const GRUOptions& o)
    : Recurrent<GRUCell<T>>("GRU", stack_options(o), [o](std::size_t in, const std::string& suffix) {
          return std::make_unique<GRUCell<T>>(CellOptions{in, o.hidden_size, o.bias, 0, Nonlinearity::tanh, suffix});
      }) {}

template <class T>
HiddenResult<T> GRU<T>::operator()(const Var<T>& x, const Var<T>& h0, const std::vector<std::int64_t>& lengths) {
    Sequence<T> r = this->forward(x, {h0}, lengths);
    return {r.output, r.state[0]};
}

template <class T>
LayerNormLSTM<T>::LayerNormLSTM(const LayerNormLSTMOptions& o)
    : Recurrent<LayerNormLSTMCell<T>>(
          "LayerNormLSTM", stack_options(o), [o](std::size_t in, const std::string& suffix) {
              return std::make_unique<LayerNormLSTMCell<T>>(LayerNormCellOptions{in, o.hidden_size, o.eps, suffix});
          }) {}

template <class T>
LSTMResult<T> LayerNormLSTM<T>::operator()(const Var<T>& x, const LSTMState<T>& initial,
                                           const std::vector<std::int64_t>& lengths) {
    Sequence<T> r = this->forward(x, {initial.h, initial.c}, lengths);
    return {r.output, {r.state[0], r.state[1]}};
}

template <class T>
LayerNormGRU<T>::LayerNormGRU(const LayerNormGRUOptions& o)
    : Recurrent<LayerNormGRUCell<T>>("LayerNormGRU", stack_options(o), [o](std::size_t in, const std::string& suffix) {
          return std::make_unique<LayerNormGRUCell<T>>(LayerNormCellOptions{in, o.hidden_size, o.eps, suffix});
      }) {}

template <class T>
HiddenResult<T> LayerNormGRU<T>::operator()(const Var<T>& x, const Var<T>& h0,
                                            const std::vector<std::int64_t>& lengths) {
    Sequence<T> r = this->forward(x, {h0}, lengths);
    return {r.output, r.state[0]};
}

template class Recurrent<RNNCell<float>>;
template class Recurrent<RNNCell<double>>;
template class Recurrent<LSTMCell<float>>;
template class Recurrent<LSTMCell<double>>;
template class Recurrent<GRUCell<float>>;
template class Recurrent<GRUCell<double>>;
template class RNN<float>;
template class RNN<double>;
template class LSTM<float>;
template class LSTM<double>;
template class GRU<float>;
template class GRU<double>;
template class Recurrent<LayerNormLSTMCell<float>>;
template class Recurrent<LayerNormLSTMCell<double>>;
template class Recurrent<LayerNormGRUCell<float>>;
template class Recurrent<LayerNormGRUCell<double>>;
template class LayerNormLSTM<float>;
template class LayerNormLSTM<double>;
template class LayerNormGRU<float>;
template class LayerNormGRU<double>;

}  // namespace recur::nn
