// RNN, LSTM and GRU cells composed from primitives; BPTT through them falls out of the tape.
#include "recur/nn/cells.hpp"

#include <cmath>

#include "recur/nn/init.hpp"

namespace recur::nn {

namespace {
void require(bool ok, const char* kind, const std::string& what) {
    if (!ok) throw value_error(std::string(kind) + ": " + what);
}
}  // namespace

// ---- GatedCell ----------------------------------------------------------------------------

template <class T>
GatedCell<T>::GatedCell(const char* kind, std::size_t gates, const CellOptions& o, std::size_t h_out)
    : input_size_(o.input_size), hidden_size_(o.hidden_size) {
    require(o.input_size > 0, kind, "input_size must be positive");
    require(o.hidden_size > 0, kind, "hidden_size must be positive");
    const std::size_t g = gates * o.hidden_size;
    const double k = 1.0 / std::sqrt(static_cast<double>(o.hidden_size));
    weight_ih_ = &this->register_parameter("weight_ih" + o.suffix, xt::xarray<T>::from_shape({g, o.input_size}));
    weight_hh_ = &this->register_parameter("weight_hh" + o.suffix, xt::xarray<T>::from_shape({g, h_out}));
    if (o.bias) {
        bias_ih_ = &this->register_parameter("bias_ih" + o.suffix, xt::xarray<T>::from_shape({g}));
        bias_hh_ = &this->register_parameter("bias_hh" + o.suffix, xt::xarray<T>::from_shape({g}));
    }
    for (auto* p : {weight_ih_, weight_hh_, bias_ih_, bias_hh_})
        if (p) init::uniform(*p, -k, k);
}

template <class T>
Var<T> GatedCell<T>::project_input(const Var<T>& x) {
    Tape<T>& t = x.tape();
    return bias_ih_ ? linear(x, t.bind(*weight_ih_), t.bind(*bias_ih_)) : linear(x, t.bind(*weight_ih_));
}

template <class T>
Var<T> GatedCell<T>::project_hidden(const Var<T>& h) {
    Tape<T>& t = h.tape();
    return bias_hh_ ? linear(h, t.bind(*weight_hh_), t.bind(*bias_hh_)) : linear(h, t.bind(*weight_hh_));
}

// ---- RNNCell: h' = act(xp + W_hh h + b_hh) -------------------------------------------------

template <class T>
RNNCell<T>::RNNCell(const CellOptions& o)
    : GatedCell<T>("RNNCell", 1, o, o.hidden_size), nonlinearity_(o.nonlinearity) {}

template <class T>
CellState<T> RNNCell<T>::step_projected(const Var<T>& xp, const CellState<T>& state) {
    Var<T> pre = xp + this->project_hidden(state[0]);
    return {nonlinearity_ == Nonlinearity::tanh ? tanh(pre) : relu(pre)};
}

template <class T>
CellState<T> RNNCell<T>::step(const Var<T>& x, const CellState<T>& state) {
    return step_projected(this->project_input(x), state);
}

// ---- LSTMCell ------------------------------------------------------------------------------

template <class T>
LSTMCell<T>::LSTMCell(const CellOptions& o)
    : GatedCell<T>("LSTMCell", 4, o, o.proj_size ? o.proj_size : o.hidden_size), proj_size_(o.proj_size) {
    if (proj_size_ > 0) {
        require(proj_size_ < o.hidden_size, "LSTMCell", "proj_size must be smaller than hidden_size");
        weight_hr_ =
            &this->register_parameter("weight_hr" + o.suffix, xt::xarray<T>::from_shape({proj_size_, o.hidden_size}));
        const double k = 1.0 / std::sqrt(static_cast<double>(o.hidden_size));
        init::uniform(*weight_hr_, -k, k);
    }
}

template <class T>
CellState<T> LSTMCell<T>::finish(LSTMPointwise<T> hc, Tape<T>& tape) {
    if (weight_hr_) hc.h = linear(hc.h, tape.bind(*weight_hr_));  // h W_hr^T (B, P)
    return {std::move(hc.h), std::move(hc.c)};
}

template <class T>
CellState<T> LSTMCell<T>::step_projected(const Var<T>& xp, const CellState<T>& state) {
    return finish(lstm_pointwise(xp, this->project_hidden(state[0]), state[1]), xp.tape());
}

template <class T>
CellState<T> LSTMCell<T>::step_at(const Var<T>& xs, std::size_t time_axis, std::size_t t, const CellState<T>& state,
                                  const Var<T>& h_mask) {
    Tape<T>& tape = xs.tape();
    return finish(lstm_step(xs, time_axis, t, state[0], state[1], tape.bind(this->weight_hh()),
                            this->bias_hh() ? tape.bind(*this->bias_hh()) : Var<T>(), h_mask),
                  tape);
}

template <class T>
std::pair<Var<T>, CellState<T>> LSTMCell<T>::run_sequence(const Var<T>& x, std::size_t time_axis, bool reverse,
                                                          const CellState<T>& state,
                                                          const std::vector<std::int64_t>& lengths) {
    Tape<T>& tape = x.tape();
    SequenceRun<T> run =
        lstm_sequence(x, time_axis, reverse, state[0], state[1], tape.bind(this->weight_hh()),
                      this->bias_hh() ? tape.bind(*this->bias_hh()) : Var<T>(), lengths,
                      this->bias_ih() ? tape.bind(*this->bias_ih()) : Var<T>(), tape.bind(this->weight_ih()));
    return {std::move(run.output), {std::move(run.h), std::move(run.c)}};
}

template <class T>
CellState<T> LSTMCell<T>::step_composed(const Var<T>& xp, const CellState<T>& state) {
    // gates (B, 4H) = [i | f | g | o]
    const auto gates = chunk(xp + this->project_hidden(state[0]), 4, 1);
    Var<T> i = sigmoid(gates[0]);
    Var<T> f = sigmoid(gates[1]);
    Var<T> g = tanh(gates[2]);
    Var<T> o = sigmoid(gates[3]);
    Var<T> c = f * state[1] + i * g;
    return finish({o * tanh(c), c}, xp.tape());
}

template <class T>
CellState<T> LSTMCell<T>::step(const Var<T>& x, const CellState<T>& state) {
    return step_projected(this->project_input(x), state);
}

// ---- GRUCell -------------------------------------------------------------------------------

template <class T>
GRUCell<T>::GRUCell(const CellOptions& o) : GatedCell<T>("GRUCell", 3, o, o.hidden_size) {}

template <class T>
CellState<T> GRUCell<T>::step_projected(const Var<T>& xp, const CellState<T>& state) {
    return {gru_pointwise(xp, this->project_hidden(state[0]), state[0])};
}

template <class T>
CellState<T> GRUCell<T>::step_at(const Var<T>& xs, std::size_t time_axis, std::size_t t, const CellState<T>& state,
                                 const Var<T>& h_mask) {
    Tape<T>& tape = xs.tape();
    return {gru_step(xs, time_axis, t, state[0], tape.bind(this->weight_hh()),
                     this->bias_hh() ? tape.bind(*this->bias_hh()) : Var<T>(), h_mask)};
}

template <class T>
std::pair<Var<T>, CellState<T>> GRUCell<T>::run_sequence(const Var<T>& x, std::size_t time_axis, bool reverse,
                                                         const CellState<T>& state,
                                                         const std::vector<std::int64_t>& lengths) {
    Tape<T>& tape = x.tape();
    SequenceRun<T> run =
        gru_sequence(x, time_axis, reverse, state[0], tape.bind(this->weight_hh()),
                     this->bias_hh() ? tape.bind(*this->bias_hh()) : Var<T>(), lengths,
                     this->bias_ih() ? tape.bind(*this->bias_ih()) : Var<T>(), tape.bind(this->weight_ih()));
    return {std::move(run.output), {std::move(run.h)}};
}

template <class T>
CellState<T> GRUCell<T>::step_composed(const Var<T>& xp, const CellState<T>& state) {
    const Var<T>& h = state[0];
    const auto gi = chunk(xp, 3, 1);  // W_i{r,z,n} x + b_i{r,z,n}
    const auto gh = chunk(this->project_hidden(h), 3, 1);  // W_h{r,z,n} h + b_h{r,z,n}
    Var<T> r = sigmoid(gi[0] + gh[0]);
    Var<T> z = sigmoid(gi[1] + gh[1]);
    Var<T> n = tanh(gi[2] + r * gh[2]);
    return {n + z * (h - n)};  // (1 - z) n + z h
}

template <class T>
CellState<T> GRUCell<T>::step(const Var<T>& x, const CellState<T>& state) {
    return step_projected(this->project_input(x), state);
}

// ---- Layer-normalised cells ----------------------------------------------------------------

template <class T>
LayerNormGatedCell<T>::LayerNormGatedCell(const char* kind, std::size_t gates, const LayerNormCellOptions& o)
    : GatedCell<T>(kind, gates, CellOptions{o.input_size, o.hidden_size, false, 0, Nonlinearity::tanh, o.suffix},
                   o.hidden_size),
      eps_(o.eps),
      gates_(gates) {
    require(o.eps >= 0, kind, "eps must be >= 0");
    const std::size_t g = gates * o.hidden_size;
    ln_weight_ih_ = add_norm_parameter("ln_weight_ih" + o.suffix, g, T(1));
    ln_bias_ih_ = add_norm_parameter("ln_bias_ih" + o.suffix, g, T(0));
    ln_weight_hh_ = add_norm_parameter("ln_weight_hh" + o.suffix, g, T(1));
    ln_bias_hh_ = add_norm_parameter("ln_bias_hh" + o.suffix, g, T(0));
}

template <class T>
Parameter<T>* LayerNormGatedCell<T>::add_norm_parameter(const std::string& name, std::size_t n, T value) {
    xt::xarray<T> v = xt::xarray<T>::from_shape({n});
    v.fill(value);
    return &this->register_parameter(name, std::move(v));
}

template <class T>
Var<T> LayerNormGatedCell<T>::project_input(const Var<T>& x) {
    Tape<T>& t = x.tape();
    return layer_norm(linear(x, t.bind(this->weight_ih())), gates_ * this->hidden_size_, t.bind(*ln_weight_ih_),
                      t.bind(*ln_bias_ih_), static_cast<T>(eps_));
}

template <class T>
Var<T> LayerNormGatedCell<T>::project_hidden(const Var<T>& h) {
    Tape<T>& t = h.tape();
    return layer_norm(linear(h, t.bind(this->weight_hh())), gates_ * this->hidden_size_, t.bind(*ln_weight_hh_),
                      t.bind(*ln_bias_hh_), static_cast<T>(eps_));
}

namespace {
// xp (B, G) as a sequence of one step (1, B, G), for the step ops.
template <class T>
Var<T> one_step(const Var<T>& xp) {
    const Shape s = xp.shape();
    return reshape(xp, {1, static_cast<std::ptrdiff_t>(s[0]), static_cast<std::ptrdiff_t>(s[1])});
}
}  // namespace

template <class T>
LayerNormLSTMCell<T>::LayerNormLSTMCell(const LayerNormCellOptions& o)
    : LayerNormGatedCell<T>("LayerNormLSTMCell", 4, o) {
    ln_weight_c_ = this->add_norm_parameter("ln_weight_c" + o.suffix, o.hidden_size, T(1));
    ln_bias_c_ = this->add_norm_parameter("ln_bias_c" + o.suffix, o.hidden_size, T(0));
}

template <class T>
CellState<T> LayerNormLSTMCell<T>::step_at(const Var<T>& xs, std::size_t time_axis, std::size_t t,
                                           const CellState<T>& state, const Var<T>& h_mask) {
    Tape<T>& tape = xs.tape();
    LSTMPointwise<T> r =
        layer_norm_lstm_step(xs, time_axis, t, state[0], state[1], tape.bind(this->weight_hh()),
                             tape.bind(*this->ln_weight_hh_), tape.bind(*this->ln_bias_hh_), tape.bind(*ln_weight_c_),
                             tape.bind(*ln_bias_c_), static_cast<T>(this->eps_), h_mask);
    return {std::move(r.h), std::move(r.c)};
}

template <class T>
CellState<T> LayerNormLSTMCell<T>::step_projected(const Var<T>& xp, const CellState<T>& state) {
    return step_at(one_step(xp), 0, 0, state);
}

template <class T>
CellState<T> LayerNormLSTMCell<T>::step(const Var<T>& x, const CellState<T>& state) {
    return step_projected(this->project_input(x), state);
}

template <class T>
CellState<T> LayerNormLSTMCell<T>::step_composed(const Var<T>& xp, const CellState<T>& state) {
    Tape<T>& t = xp.tape();
    const auto gates = chunk(xp + this->project_hidden(state[0]), 4, 1);  // [i | f | g | o]
    Var<T> c = sigmoid(gates[1]) * state[1] + sigmoid(gates[0]) * tanh(gates[2]);
    Var<T> u =
        layer_norm(c, this->hidden_size_, t.bind(*ln_weight_c_), t.bind(*ln_bias_c_), static_cast<T>(this->eps_));
    return {sigmoid(gates[3]) * tanh(u), c};
}

template <class T>
LayerNormGRUCell<T>::LayerNormGRUCell(const LayerNormCellOptions& o)
    : LayerNormGatedCell<T>("LayerNormGRUCell", 3, o) {}

template <class T>
CellState<T> LayerNormGRUCell<T>::step_at(const Var<T>& xs, std::size_t time_axis, std::size_t t,
                                          const CellState<T>& state, const Var<T>& h_mask) {
    Tape<T>& tape = xs.tape();
    return {layer_norm_gru_step(xs, time_axis, t, state[0], tape.bind(this->weight_hh()),
                                tape.bind(*this->ln_weight_hh_), tape.bind(*this->ln_bias_hh_),
                                static_cast<T>(this->eps_), h_mask)};
}

template <class T>
CellState<T> LayerNormGRUCell<T>::step_projected(const Var<T>& xp, const CellState<T>& state) {
    return step_at(one_step(xp), 0, 0, state);
}

template <class T>
CellState<T> LayerNormGRUCell<T>::step(const Var<T>& x, const CellState<T>& state) {
    return step_projected(this->project_input(x), state);
}

template <class T>
CellState<T> LayerNormGRUCell<T>::step_composed(const Var<T>& xp, const CellState<T>& state) {
    const Var<T>& h = state[0];
    const auto gi = chunk(xp, 3, 1);
    const auto gh = chunk(this->project_hidden(h), 3, 1);
    Var<T> r = sigmoid(gi[0] + gh[0]);
    Var<T> z = sigmoid(gi[1] + gh[1]);
    Var<T> n = tanh(gi[2] + r * gh[2]);
    return {n + z * (h - n)};
}

template class GatedCell<float>;
template class GatedCell<double>;
template class RNNCell<float>;
template class RNNCell<double>;
template class LSTMCell<float>;
template class LSTMCell<double>;
template class GRUCell<float>;
template class GRUCell<double>;
template class LayerNormGatedCell<float>;
template class LayerNormGatedCell<double>;
template class LayerNormLSTMCell<float>;
template class LayerNormLSTMCell<double>;
template class LayerNormGRUCell<float>;
template class LayerNormGRUCell<double>;

}  // namespace recur::nn
