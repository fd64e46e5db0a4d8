// recur/nn/layers.hpp — feed-forward layers, activations, a recurrent adapter and Sequential.
//
// Every layer here is a Layer<T>: forward(x, lengths) -> y. `lengths` are the per-sequence
// lengths of a padded batch (empty = every sequence is full length); only recurrent layers
// read them, the others pass x through their function. A Sequential runs layers in order
// and lists their parameters under PyTorch's nn.Sequential names ("0.weight_ih_l0",
// "4.weight"), so a state_dict moves between the two.
//
//   nn::Sequential<float> model;
//   model.add(nn::recurrent_layer(std::make_unique<nn::LSTM<float>>(nn::LSTMOptions{
//                 .input_size = 8, .hidden_size = 32, .batch_first = true}), nn::Return::last));
//   model.emplace<nn::Linear<float>>(32, 1);
//   Var<float> y = model(x, lengths);  // x (B, T, 8) -> y (B, 1)
//
// Letters: B batch, T time, I in_features, O out_features, V vocabulary, E embedding dim.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <xtensor/xarray.hpp>

#include "recur/nn/module.hpp"
#include "recur/nn/recurrent.hpp"
#include "recur/ops.hpp"

namespace recur::nn {

/// Anything a Sequential holds: a Module with forward(x, lengths).
template <class T>
class Layer : public Module<T> {
public:
    using value_type = T;

    /// x: the batch; lengths: per-sequence lengths of a padded batch, or empty. Layers that
    /// are not recurrent ignore lengths.
    virtual Var<T> forward(const Var<T>& x, const std::vector<std::int64_t>& lengths) = 0;
    Var<T> operator()(const Var<T>& x, const std::vector<std::int64_t>& lengths = {}) { return forward(x, lengths); }

    /// True for a layer that carries state from one call into the next (a stateful
    /// RecurrentLayer, or a Sequential holding one).
    virtual bool stateful() const { return false; }
    /// Forgets the carried state of every batch row (the next call starts from zeros).
    virtual void reset_states() {}
    /// Zeros the carried state of the given batch rows only (index_error for a row beyond it).
    virtual void reset_states(const std::vector<std::size_t>& rows) { (void)rows; }
};

// ---- Feed-forward layers ------------------------------------------------------------------

/// torch.nn.Linear: y = x W^T + b, x (..., I) -> (..., O). Parameters "weight" (O, I) and
/// "bias" (O), both U(-1/sqrt(I), 1/sqrt(I)) from the global generator (PyTorch's default).
template <class T>
class Linear : public Layer<T> {
public:
    Linear(std::size_t in_features, std::size_t out_features, bool bias = true);
    Var<T> forward(const Var<T>& x, const std::vector<std::int64_t>& lengths) override;

    std::size_t in_features() const { return in_; }
    std::size_t out_features() const { return out_; }
    Parameter<T>& weight() { return *weight_; }
    Parameter<T>* bias() { return bias_; }  // null without bias

private:
    std::size_t in_, out_;
    Parameter<T>* weight_;
    Parameter<T>* bias_ = nullptr;
};

/// torch.nn.Embedding: rows of "weight" (V, E), initialised N(0, 1) from the global
/// generator. ids of any shape -> ids.shape + (E). Ids arrive either as integers or, since
/// batches are float arrays, as a float Var whose values must be integers in [0, V)
/// (index_error naming Embedding otherwise). No gradient flows to ids.
template <class T>
class Embedding : public Layer<T> {
public:
    Embedding(std::size_t num_embeddings, std::size_t embedding_dim);
    using Layer<T>::operator();
    /// Float-valued ids; lengths are ignored.
    Var<T> forward(const Var<T>& ids, const std::vector<std::int64_t>& lengths) override;
    Var<T> forward(const Var<T>& ids) { return forward(ids, {}); }
    /// Integer ids, recorded on `tape`.
    Var<T> forward(Tape<T>& tape, const xt::xarray<std::int64_t>& ids);
    Var<T> operator()(Tape<T>& tape, const xt::xarray<std::int64_t>& ids) { return forward(tape, ids); }

    std::size_t num_embeddings() const { return num_; }
    std::size_t embedding_dim() const { return dim_; }
    Parameter<T>& weight() { return *weight_; }

private:
    std::size_t num_, dim_;
    Parameter<T>* weight_;
};

/// torch.nn.Dropout: inverted dropout with probability p in training() mode, the identity in
/// eval() mode. Masks come from the tape's generator.
template <class T>
class Dropout : public Layer<T> {
public:
    explicit Dropout(double p = 0.5);
    Var<T> forward(const Var<T>& x, const std::vector<std::int64_t>& lengths) override;
    double p() const { return p_; }

private:
    double p_;
};

// ---- Activations (no parameters) ----------------------------------------------------------

template <class T>
class ReLU : public Layer<T> {
public:
    Var<T> forward(const Var<T>& x, const std::vector<std::int64_t>& lengths) override;
};

template <class T>
class Tanh : public Layer<T> {
public:
    Var<T> forward(const Var<T>& x, const std::vector<std::int64_t>& lengths) override;
};

template <class T>
class Sigmoid : public Layer<T> {
public:
    Var<T> forward(const Var<T>& x, const std::vector<std::int64_t>& lengths) override;
};

/// Softmax along `axis` (default: the last, the feature axis).
template <class T>
class Softmax : public Layer<T> {
public:
    explicit Softmax(std::ptrdiff_t axis = -1) : axis_(axis) {}
    Var<T> forward(const Var<T>& x, const std::vector<std::int64_t>& lengths) override;
    std::ptrdiff_t axis() const { return axis_; }

private:
    std::ptrdiff_t axis_;
};

/// log(softmax(x)) along `axis`, computed stably (pairs with nll_loss).
template <class T>
class LogSoftmax : public Layer<T> {
public:
    explicit LogSoftmax(std::ptrdiff_t axis = -1) : axis_(axis) {}
    Var<T> forward(const Var<T>& x, const std::vector<std::int64_t>& lengths) override;
    std::ptrdiff_t axis() const { return axis_; }

private:
    std::ptrdiff_t axis_;
};

// ---- Recurrent modules as layers ----------------------------------------------------------

/// What a RecurrentLayer returns (Keras's return_sequences).
enum class Return {
    sequences,  // the whole output sequence: (T, B, D*H_out), or (B, T, D*H_out) if batch_first
    last,  // per sequence, the output at its own last step (its length): (B, D*H_out)
};

/// Adapts a recurrent module M (nn::RNN, nn::LSTM, nn::GRU or any nn::Recurrent<Cell>) to a
/// Layer. The module is owned and listed as a child without a name, so its parameters keep
/// PyTorch's names ("weight_ih_l0"; "0.weight_ih_l0" inside a Sequential). Every run starts
/// from a zero state, unless the layer is stateful.
///
/// Stateful (Keras's stateful = True): the final state of a call (h, and c for an LSTM; per
/// batch row, at each sequence's own last step with lengths) is the initial state of the
/// next call, row b continuing row b, so a long series can be fed in consecutive chunks.
/// The state is carried as a value, detached from the tape that computed it, so gradients
/// stop at the chunk boundary (truncated BPTT). The first call, and the first after
/// reset_states(), starts from zeros; reset_states(rows) zeros some rows only. A call whose
/// batch size differs from the carried state's raises value_error naming the layer and both
/// sizes. train::fit resets the states at the start of every epoch (see recur/train.hpp).
///
/// Return::last is the final hidden state of the last layer, h_n[-D:] of PyTorch: for a
/// bidirectional module, [forward h at the sequence's last step, reverse h at its first
/// step] joined as the module's merge_mode says (concat on the feature axis by default; sum,
/// mul, ave as in Keras). With lengths, each sequence's own last step is used.
template <class M>
class RecurrentLayer : public Layer<typename M::value_type> {
public:
    using T = typename M::value_type;

    explicit RecurrentLayer(std::unique_ptr<M> module, Return mode = Return::sequences, bool stateful = false)
        : module_(std::move(module)), mode_(mode), stateful_(stateful) {
        if (!module_) throw value_error("RecurrentLayer: no module given");
        this->register_module("", *module_);
    }

    Var<T> forward(const Var<T>& x, const std::vector<std::int64_t>& lengths) override;

    bool stateful() const override { return stateful_; }
    void reset_states() override { carried_.clear(); }
    void reset_states(const std::vector<std::size_t>& rows) override;
    /// The carried state: one array (L*D, B, size_k) per state part (h; h, c for an LSTM),
    /// empty before the first call and after reset_states().
    const std::vector<xt::xarray<T>>& states() const { return carried_; }

    M& module() { return *module_; }
    Return mode() const { return mode_; }

private:
    Var<T> output_of(const Sequence<T>& run) {
        if (mode_ == Return::sequences) return run.output;
        // state[0] is h_n (L*D, B, H_out); the last layer's entries are the final D.
        const Var<T>& h = run.state[0];
        const auto d = static_cast<std::ptrdiff_t>(module_->directions());
        const auto ld = static_cast<std::ptrdiff_t>(h.shape()[0]);
        if (d == 1) return select(h, 0, ld - 1);
        std::vector<Var<T>> parts;
        for (std::ptrdiff_t k = ld - d; k < ld; ++k) parts.push_back(select(h, 0, k));
        return module_->merge(parts);  // (B, 2*H_out) for concat, else (B, H_out)
    }
    std::string name() const;  // "RecurrentLayer(LSTM, stateful)" in messages

    std::unique_ptr<M> module_;
    Return mode_;
    bool stateful_;
    std::vector<xt::xarray<T>> carried_;
};

template <class M>
inline std::string RecurrentLayer<M>::name() const {
    std::string kind = "Recurrent";
    if constexpr (std::is_same_v<M, LSTM<T>>) kind = "LSTM";
    if constexpr (std::is_same_v<M, GRU<T>>) kind = "GRU";
    if constexpr (std::is_same_v<M, RNN<T>>) kind = "RNN";
    return "RecurrentLayer(" + kind + (stateful_ ? ", stateful)" : ")");
}

template <class M>
inline auto RecurrentLayer<M>::forward(const Var<T>& x, const std::vector<std::int64_t>& lengths) -> Var<T> {
    CellState<T> initial;
    if (stateful_ && !carried_.empty() && x.defined() && x.shape().size() == 3) {
        const std::size_t batch = x.shape()[module_->batch_first() ? 0 : 1], carried = carried_[0].shape()[1];
        if (batch != carried)
            throw value_error(name() + ": the carried state is for a batch of " + std::to_string(carried) +
                              " rows, but the input " + shape_str(x.shape()) + " has " + std::to_string(batch) +
                              " (give every call the same batch size, or call reset_states() first)");
        for (const auto& s : carried_) initial.push_back(x.tape().constant(s));  // detached: TBPTT
    }
    Sequence<T> run = module_->forward(x, initial, lengths);
    if (stateful_) {
        carried_.resize(run.state.size());
        for (std::size_t k = 0; k < run.state.size(); ++k) carried_[k] = run.state[k].value();
    }
    return output_of(run);
}

// Zeros rows b of every carried part (L*D, B, size_k).
template <class M>
inline void RecurrentLayer<M>::reset_states(const std::vector<std::size_t>& rows) {
    for (auto& s : carried_) {
        const std::size_t ld = s.shape()[0], batch = s.shape()[1], width = s.shape()[2];
        for (std::size_t b : rows) {
            if (b >= batch)
                throw index_error(name() + "::reset_states: row " + std::to_string(b) +
                                  " is out of range for a state of " + std::to_string(batch) + " rows");
            for (std::size_t k = 0; k < ld; ++k) std::fill_n(s.data() + (k * batch + b) * width, width, T(0));
        }
    }
}

/// RecurrentLayer<M> owning `module`: nn::recurrent_layer(std::make_unique<nn::GRU<float>>(o), Return::last).
template <class M>
std::unique_ptr<RecurrentLayer<M>> recurrent_layer(std::unique_ptr<M> module, Return mode = Return::sequences,
                                                   bool stateful = false) {
    return std::make_unique<RecurrentLayer<M>>(std::move(module), mode, stateful);
}

// ---- Sequential ---------------------------------------------------------------------------

/// torch.nn.Sequential: runs its layers in order, each on the previous one's output, passing
/// the same lengths to all. Layer k is the child "k", so parameter names are PyTorch's
/// ("0.weight_ih_l0", "4.weight"). train()/eval() and reset_states() reach every layer. A Sequential is itself
/// a Layer and may be nested.
template <class T>
class Sequential : public Layer<T> {
public:
    Sequential() = default;

    /// Appends a layer (value_error if null); returns it.
    Layer<T>& add(std::unique_ptr<Layer<T>> layer);
    /// Appends a layer made in place: emplace<Linear<float>>(16, 4).
    template <class L, class... Args>
    L& emplace(Args&&... args) {
        static_assert(std::is_base_of_v<Layer<T>, L>, "Sequential::emplace: L must derive from nn::Layer<T>");
        auto layer = std::make_unique<L>(std::forward<Args>(args)...);
        L& ref = *layer;
        add(std::move(layer));
        return ref;
    }

    Var<T> forward(const Var<T>& x, const std::vector<std::int64_t>& lengths) override;
    /// Any layer stateful; reset_states reaches every layer.
    bool stateful() const override;
    void reset_states() override;
    void reset_states(const std::vector<std::size_t>& rows) override;

    std::size_t size() const { return layers_.size(); }
    bool empty() const { return layers_.empty(); }
    /// Layer k (index_error if k >= size()).
    Layer<T>& operator[](std::size_t k);
    const Layer<T>& operator[](std::size_t k) const;

private:
    std::vector<std::unique_ptr<Layer<T>>> layers_;
};

extern template class Linear<float>;
extern template class Linear<double>;
extern template class Embedding<float>;
extern template class Embedding<double>;
extern template class Dropout<float>;
extern template class Dropout<double>;
extern template class ReLU<float>;
extern template class ReLU<double>;
extern template class Tanh<float>;
extern template class Tanh<double>;
extern template class Sigmoid<float>;
extern template class Sigmoid<double>;
extern template class Softmax<float>;
extern template class Softmax<double>;
extern template class LogSoftmax<float>;
extern template class LogSoftmax<double>;
extern template class RecurrentLayer<RNN<float>>;
extern template class RecurrentLayer<RNN<double>>;
extern template class RecurrentLayer<LSTM<float>>;
extern template class RecurrentLayer<LSTM<double>>;
extern template class RecurrentLayer<GRU<float>>;
extern template class RecurrentLayer<GRU<double>>;
extern template class Sequential<float>;
extern template class Sequential<double>;

// ---- Normalisation ------------------------------------------------------------------------

/// torch.nn.LayerNorm over the last axis: y = (x - mean) / sqrt(var + eps) * weight + bias for
/// each row of normalized_size elements (var biased), x (..., D) -> (..., D). With
/// elementwise_affine, parameters "weight" (D) = 1 and "bias" (D) = 0 (PyTorch's names and
/// init). One layer_norm node.
template <class T>
class LayerNorm : public Layer<T> {
public:
    explicit LayerNorm(std::size_t normalized_size, double eps = 1e-5, bool elementwise_affine = true);
    Var<T> forward(const Var<T>& x, const std::vector<std::int64_t>& lengths) override;

    std::size_t normalized_size() const { return size_; }
    double eps() const { return eps_; }
    Parameter<T>* weight() { return weight_; }  // null without elementwise_affine
    Parameter<T>* bias() { return bias_; }

private:
    std::size_t size_;
    double eps_;
    Parameter<T>* weight_ = nullptr;
    Parameter<T>* bias_ = nullptr;
};

extern template class LayerNorm<float>;
extern template class LayerNorm<double>;

}  // namespace recur::nn
