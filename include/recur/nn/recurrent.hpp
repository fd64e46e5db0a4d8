// recur/nn/recurrent.hpp — the generic unroll and the recurrent modules.
//
// unroll(cell, x, ...) runs any cell over a sequence: time-major (T, B, I) or batch-first
// (B, T, I) input, optional initial state, optional per-sequence lengths, either direction.
// Recurrent<Cell> stacks layers of it, optionally bidirectional, with dropout between layers.
// RNN, LSTM and GRU are Recurrent over the shipped cells with PyTorch's options, names,
// shapes and results. A user cell gets all of this by satisfying RecurrentCell.
//
// Lengths mean what PyTorch's packed sequences mean: sequence b has lengths[b] valid steps;
// its outputs past the end are zero, its final state is its state at its own last step, the
// reverse direction starts at its own last step, and padded inputs get zero gradient. Here
// that is a mask per step (state' = where(m, new, old)), so BPTT still falls out of the tape.
#pragma once

#include <concepts>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "recur/nn/cells.hpp"
#include "recur/nn/module.hpp"
#include "recur/ops.hpp"

namespace recur::nn {

/// A cell: a Module with input_size(), state_sizes() (state[0] is the output) and
/// step(x_t (B, I), state) -> state.
template <class C>
concept RecurrentCell = requires {
    typename C::value_type;
}
&&std::derived_from<C, Module<typename C::value_type>>&& requires(C& c, const Var<typename C::value_type>& x,
                                                                  const CellState<typename C::value_type>& s) {
    { c.input_size() } -> std::convertible_to<std::size_t>;
    { c.state_sizes() } -> std::convertible_to<std::vector<std::size_t>>;
    { c.step(x, s) } -> std::same_as<CellState<typename C::value_type>>;
};

/// A cell whose input projection can be hoisted out of the time loop: project_input maps
/// x (..., I) -> (..., G) in one GEMM for all steps; step_projected takes one step of it.
template <class C>
concept HoistedCell = RecurrentCell<C> &&
    requires(C& c, const Var<typename C::value_type>& x, const CellState<typename C::value_type>& s) {
    { c.project_input(x) } -> std::same_as<Var<typename C::value_type>>;
    { c.step_projected(x, s) } -> std::same_as<CellState<typename C::value_type>>;
};

/// A hoisted cell that reads step t of the projected sequence in place:
/// step_at(xs, time_axis, t, state), xs (T, B, G) for time_axis 0 or (B, T, G) for 1.
template <class C>
concept SequenceCell = HoistedCell<C> &&
    requires(C& c, const Var<typename C::value_type>& x, const CellState<typename C::value_type>& s, std::size_t k) {
    { c.step_at(x, k, k, s) } -> std::same_as<CellState<typename C::value_type>>;
};

/// A sequence cell that can also run a whole sequence in one call when nothing is recorded
/// (inference): run_sequence(x, time_axis, reverse, state, lengths) from the layer's input x, its
/// input projection included; it returns false from runs_whole_sequences() for a configuration
/// it cannot (then unroll projects x and steps).
template <class C>
concept WholeSequenceCell = SequenceCell<C> &&
    requires(C& c, const Var<typename C::value_type>& x, const CellState<typename C::value_type>& s, std::size_t k,
             const std::vector<std::int64_t>& lengths) {
    { c.runs_whole_sequences() } -> std::same_as<bool>;
    {
        c.run_sequence(x, k, true, s, lengths)
        } -> std::same_as<std::pair<Var<typename C::value_type>, CellState<typename C::value_type>>>;
};

/// A sequence cell that takes a recurrent dropout mask inside its step: step_at(xs, time_axis, t,
/// state, h_mask), h_mask (B, size_0) multiplying h where the step multiplies it by W_hh (the
/// shipped LSTMCell and GRUCell, in their fused steps). For any other cell, unroll multiplies
/// state[0] by the mask before the step sees it (the same thing for cells whose step reads h
/// only through W_hh, as RNNCell and LayerNormLSTMCell).
template <class C>
concept MaskedSequenceCell = SequenceCell<C> &&
    requires(C& c, const Var<typename C::value_type>& x, const CellState<typename C::value_type>& s, std::size_t k) {
    { c.step_at(x, k, k, s, x) } -> std::same_as<CellState<typename C::value_type>>;
};

struct UnrollOptions {
    bool reverse = false;
    bool batch_first = false;
};

/// A run over a sequence: the output sequence and the final state.
template <class T>
struct Sequence {
    Var<T> output;  // (T, B, H_out) or (B, T, H_out)
    CellState<T> state;  // each (B, size_k) for unroll; (L*D, B, size_k) for Recurrent
};

namespace detail {
/// index_error naming `kind` unless lengths is empty or B values in [1, T].
void check_lengths(const std::string& kind, const std::vector<std::int64_t>& lengths, std::size_t batch,
                   std::size_t steps);
/// An inverted dropout mask of `shape` from the tape's generator: each element 1 / (1 - p) with
/// probability 1 - p, else 0 (the dropout op's draw).
template <class T>
xt::xarray<T> dropout_mask(Tape<T>& tape, const Shape& shape, double p);
}  // namespace detail

/// Runs `cell` over x. `state` holds one Var (B, size_k) per state component (undefined or
/// missing ones start at zero). recurrent_mask (B, size_0), if defined, is a constant recurrent
/// dropout mask applied to h at every step (see MaskedSequenceCell).
template <RecurrentCell Cell>
Sequence<typename Cell::value_type> unroll(Cell& cell, const Var<typename Cell::value_type>& x,
                                           CellState<typename Cell::value_type> state = {},
                                           const std::vector<std::int64_t>& lengths = {}, UnrollOptions o = {},
                                           const Var<typename Cell::value_type>& recurrent_mask = {}) {
    using T = typename Cell::value_type;
    x.check("unroll");
    Tape<T>& tape = x.tape();
    const Shape xs = x.shape();
    if (xs.size() != 3 || xs[2] != cell.input_size())
        throw shape_error("unroll: input must be " + std::string(o.batch_first ? "(B, T, " : "(T, B, ") +
                          std::to_string(cell.input_size()) + "), got " + shape_str(xs));
    const std::size_t time_axis = o.batch_first ? 1 : 0;
    const std::size_t steps = xs[time_axis], batch = xs[1 - time_axis];
    detail::check_lengths("unroll", lengths, batch, steps);

    const std::vector<std::size_t> sizes = cell.state_sizes();
    state.resize(sizes.size());
    for (std::size_t k = 0; k < sizes.size(); ++k) {
        if (!state[k].defined()) {
            state[k] = tape.zeros({batch, sizes[k]});
        } else if (state[k].shape() != Shape{batch, sizes[k]}) {
            throw shape_error("unroll: initial state " + std::to_string(k) + " must be (" + std::to_string(batch) +
                              ", " + std::to_string(sizes[k]) + "), got " + shape_str(state[k].shape()));
        }
    }

    if (recurrent_mask.defined() && recurrent_mask.shape() != Shape{batch, sizes[0]})
        throw shape_error("unroll: recurrent_mask must be (" + std::to_string(batch) + ", " + std::to_string(sizes[0]) +
                          "), got " + shape_str(recurrent_mask.shape()));

    if constexpr (WholeSequenceCell<Cell>) {
        if (!tape.recording() && !recurrent_mask.defined() &&
            cell.runs_whole_sequences()) {  // inference: no node per step
            auto [output, final_state] = cell.run_sequence(x, time_axis, o.reverse, state, lengths);
            return {std::move(output), std::move(final_state)};
        }
    }
    Var<T> source = x;
    if constexpr (HoistedCell<Cell>) source = cell.project_input(x);  // (.., G) for all steps at once

    Var<T> zeros;  // output rows past a sequence's end
    std::vector<Var<T>> outputs(steps);
    for (std::size_t s = 0; s < steps; ++s) {
        const std::size_t t = o.reverse ? steps - 1 - s : s;
        CellState<T> next;
        // What the step sees: the state, or for a cell without a masked step, h ⊙ mask as state[0].
        const CellState<T>* seen = &state;
        CellState<T> masked;
        if (recurrent_mask.defined() && !MaskedSequenceCell<Cell>) {
            masked = state;
            masked[0] = state[0] * recurrent_mask;
            seen = &masked;
        }
        if constexpr (MaskedSequenceCell<Cell>) {
            next = recurrent_mask.defined() ? cell.step_at(source, time_axis, t, state, recurrent_mask)
                                            : cell.step_at(source, time_axis, t, state);
        } else if constexpr (SequenceCell<Cell>) {
            next = cell.step_at(source, time_axis, t, *seen);
        } else {
            Var<T> xt_ = select(source, static_cast<std::ptrdiff_t>(time_axis), static_cast<std::ptrdiff_t>(t));
            if constexpr (HoistedCell<Cell>)
                next = cell.step_projected(xt_, *seen);
            else
                next = cell.step(xt_, *seen);
        }
        if (next.size() != sizes.size())
            throw shape_error("unroll: the cell returned " + std::to_string(next.size()) +
                              " state parts, its state_sizes() has " + std::to_string(sizes.size()));
        outputs[t] = next[0];
        if (!lengths.empty()) {  // rows whose sequence has ended keep their state; their output is 0
            xt::xarray<T> mask = xt::xarray<T>::from_shape({batch, 1});  // 1 inside the sequence
            bool all_active = true;
            for (std::size_t b = 0; b < batch; ++b) {
                const bool active = static_cast<std::int64_t>(t) < lengths[b];
                mask(b, 0) = active ? T(1) : T(0);
                all_active = all_active && active;
            }
            if (!all_active) {
                if (!zeros.defined()) zeros = tape.zeros({batch, sizes[0]});
                outputs[t] = recur::where(mask, next[0], zeros);
                for (std::size_t k = 0; k < next.size(); ++k) next[k] = recur::where(mask, next[k], state[k]);
            }
        }
        state = std::move(next);
    }
    return {stack(outputs, static_cast<std::ptrdiff_t>(time_axis)), std::move(state)};
}

/// How a bidirectional layer joins its two directions' outputs (Keras's Bidirectional
/// merge_mode): concat joins [forward, reverse] on the feature axis (PyTorch's, the default;
/// width 2 H); sum, mul and ave (their mean) combine them elementwise (width H). The final
/// states are not merged: they stay (L*D, B, size) per direction.
enum class MergeMode { concat, sum, mul, ave };

struct RecurrentOptions {
    std::size_t input_size = 0;
    std::size_t num_layers = 1;
    bool batch_first = false;
    double dropout = 0;  // between layers, not after the last; training mode only
    bool bidirectional = false;
    MergeMode merge_mode = MergeMode::concat;  // bidirectional only
    /// Variational (Gal and Ghahramani) dropout, training mode only, Keras's `dropout` and
    /// `recurrent_dropout`: per layer and direction, one mask per sequence drawn at the start of
    /// forward from the tape's generator (per batch row and feature, 1 / (1 - p) or 0), the same
    /// at every time step. input_dropout multiplies the layer's input x_t, recurrent_dropout
    /// multiplies h where the step multiplies it by W_hh.
    double input_dropout = 0;
    double recurrent_dropout = 0;
};

/// num_layers of a cell, each optionally bidirectional (outputs [forward, reverse] joined on
/// the feature axis), with dropout between layers. State parts are (L*D, B, size_k) in
/// PyTorch's order: layer 0 forward, layer 0 reverse, layer 1 forward, ...
template <RecurrentCell Cell>
class Recurrent : public Module<typename Cell::value_type> {
public:
    using T = typename Cell::value_type;
    using value_type = T;
    /// Makes the cell of one layer and direction, given its input size and the suffix its
    /// parameter names should end with ("_l0", "_l0_reverse", "_l1", ...).
    using CellFactory = std::function<std::unique_ptr<Cell>(std::size_t input_size, const std::string& suffix)>;

    Recurrent(std::string kind, const RecurrentOptions& o, const CellFactory& make) : kind_(std::move(kind)), o_(o) {
        if (o.num_layers == 0) throw value_error(kind_ + ": num_layers must be positive");
        if (!(o.dropout >= 0 && o.dropout < 1)) throw value_error(kind_ + ": dropout must be in [0, 1)");
        if (!(o.input_dropout >= 0 && o.input_dropout < 1))
            throw value_error(kind_ + ": input_dropout must be in [0, 1)");
        if (!(o.recurrent_dropout >= 0 && o.recurrent_dropout < 1))
            throw value_error(kind_ + ": recurrent_dropout must be in [0, 1)");
        std::size_t in = o.input_size;
        for (std::size_t l = 0; l < o.num_layers; ++l) {
            for (std::size_t d = 0; d < directions(); ++d) {
                cells_.push_back(make(in, "_l" + std::to_string(l) + (d ? "_reverse" : "")));
                if (cells_.back()->input_size() != in)
                    throw value_error(kind_ + ": the cell factory made a cell of input size " +
                                      std::to_string(cells_.back()->input_size()) + " for layer " + std::to_string(l) +
                                      ", expected " + std::to_string(in));
                this->register_module("", *cells_.back());
            }
            in = merged_size(cells_.back()->state_sizes()[0]);
        }
        std::vector<std::string> names;
        for (auto& [name, p] : this->named_parameters()) {
            for (auto& seen : names)
                if (seen == name)
                    throw value_error(kind_ + ": two parameters are named '" + name +
                                      "' (cells must append the suffix they are given)");
            names.push_back(name);
        }
    }

    std::size_t num_layers() const { return o_.num_layers; }
    std::size_t directions() const { return o_.bidirectional ? 2 : 1; }
    bool batch_first() const { return o_.batch_first; }
    /// Features of each output step: directions * state_sizes()[0] (concat), else state_sizes()[0].
    std::size_t output_size() const { return merged_size(cells_.back()->state_sizes()[0]); }
    MergeMode merge_mode() const { return o_.merge_mode; }
    Cell& cell(std::size_t layer, bool reverse = false) { return *cells_.at(layer * directions() + (reverse ? 1 : 0)); }

    /// x (T, B, I) or (B, T, I); initial: one Var (L*D, B, size_k) per state part, undefined
    /// or missing parts start at zero; lengths: empty (all T) or B values in [1, T].
    Sequence<T> forward(const Var<T>& x, const CellState<T>& initial = {},
                        const std::vector<std::int64_t>& lengths = {}) {
        x.check(kind_.c_str());
        const Shape xs = x.shape();
        if (xs.size() != 3 || xs[2] != o_.input_size)
            throw shape_error(kind_ + ": input must be " + (o_.batch_first ? "(B, T, " : "(T, B, ") +
                              std::to_string(o_.input_size) + "), got " + shape_str(xs));
        const std::size_t batch = xs[o_.batch_first ? 0 : 1];
        const std::size_t layers_dirs = o_.num_layers * directions();
        const std::vector<std::size_t> sizes = cells_.front()->state_sizes();
        if (initial.size() > sizes.size())
            throw shape_error(kind_ + ": " + std::to_string(initial.size()) +
                              " initial state parts given, the cell has " + std::to_string(sizes.size()));
        for (std::size_t k = 0; k < initial.size(); ++k)
            if (initial[k].defined() && initial[k].shape() != Shape{layers_dirs, batch, sizes[k]})
                throw shape_error(kind_ + ": initial state " + std::to_string(k) + " must be (" +
                                  std::to_string(layers_dirs) + ", " + std::to_string(batch) + ", " +
                                  std::to_string(sizes[k]) + "), got " + shape_str(initial[k].shape()));
        detail::check_lengths(kind_, lengths, batch, xs[o_.batch_first ? 1 : 0]);

        std::vector<std::vector<Var<T>>> finals(sizes.size());
        Var<T> input = x;
        Tape<T>& tape = x.tape();
        if (keep_masks_) {
            input_masks_.clear();
            recurrent_masks_.clear();
        }
        for (std::size_t l = 0; l < o_.num_layers; ++l) {
            std::vector<Var<T>> outs;
            const std::size_t width = input.shape()[2];
            for (std::size_t d = 0; d < directions(); ++d) {
                const std::size_t ld = l * directions() + d;
                CellState<T> init(sizes.size());
                for (std::size_t k = 0; k < initial.size(); ++k)
                    if (initial[k].defined()) init[k] = select(initial[k], 0, static_cast<std::ptrdiff_t>(ld));
                Var<T> layer_input = input, h_mask;
                if (this->training() && o_.input_dropout > 0) {  // x_t ⊙ m, m (B, I) the same at every t
                    Var<T> m = tape.constant(detail::dropout_mask(
                        tape, o_.batch_first ? Shape{batch, 1, width} : Shape{1, batch, width}, o_.input_dropout));
                    if (keep_masks_) input_masks_.push_back(m.value());
                    layer_input = input * m;
                }
                if (this->training() && o_.recurrent_dropout > 0) {
                    h_mask = tape.constant(detail::dropout_mask(tape, {batch, sizes[0]}, o_.recurrent_dropout));
                    if (keep_masks_) recurrent_masks_.push_back(h_mask.value());
                }
                Sequence<T> run =
                    unroll(*cells_[ld], layer_input, std::move(init), lengths, {d == 1, o_.batch_first}, h_mask);
                outs.push_back(run.output);
                for (std::size_t k = 0; k < sizes.size(); ++k) finals[k].push_back(run.state[k]);
            }
            input = merge(outs);
            if (l + 1 < o_.num_layers && o_.dropout > 0 && this->training())
                input = dropout(input, static_cast<T>(o_.dropout), true);
        }
        Sequence<T> result{input, {}};
        for (auto& parts : finals) result.state.push_back(stack(parts, 0));
        return result;
    }

    /// With keep_masks(true), each forward keeps copies of the variational dropout masks it drew
    /// (empty in eval mode or with p = 0), one per layer and direction in state order: input
    /// masks (1, B, I) / (B, 1, I), recurrent masks (B, H_out). For tests and inspection; off by
    /// default, since forward then writes the module (not with several threads at once).
    void keep_masks(bool on) { keep_masks_ = on; }
    const std::vector<xt::xarray<T>>& input_masks() const { return input_masks_; }
    const std::vector<xt::xarray<T>>& recurrent_masks() const { return recurrent_masks_; }

    /// One layer's output from its directions' outputs [forward, reverse] (see MergeMode);
    /// RecurrentLayer's Return::last joins the final hidden states the same way (Keras).
    Var<T> merge(const std::vector<Var<T>>& outs) const {
        if (outs.size() == 1) return outs[0];
        switch (o_.merge_mode) {
            case MergeMode::sum:
                return outs[0] + outs[1];
            case MergeMode::mul:
                return outs[0] * outs[1];
            case MergeMode::ave:
                return (outs[0] + outs[1]) * T(0.5);
            default:
                return concat(outs, -1);
        }
    }

protected:
    std::size_t merged_size(std::size_t h) const { return o_.merge_mode == MergeMode::concat ? directions() * h : h; }

    std::string kind_;
    RecurrentOptions o_;
    std::vector<std::unique_ptr<Cell>> cells_;  // layer-major: l0 forward, l0 reverse, l1 ...
    std::vector<xt::xarray<T>> input_masks_, recurrent_masks_;
    bool keep_masks_ = false;
};

// ---- The PyTorch modules ------------------------------------------------------------------

struct RNNOptions {
    std::size_t input_size = 0;
    std::size_t hidden_size = 0;
    std::size_t num_layers = 1;
    Nonlinearity nonlinearity = Nonlinearity::tanh;
    bool bias = true;
    bool batch_first = false;
    double dropout = 0;
    bool bidirectional = false;
    MergeMode merge_mode = MergeMode::concat;  // bidirectional: how the directions join
    double input_dropout = 0;  // variational dropout (RecurrentOptions; Keras's `dropout`)
    double recurrent_dropout = 0;  // (Keras's `recurrent_dropout`)
};

struct LSTMOptions {
    std::size_t input_size = 0;
    std::size_t hidden_size = 0;
    std::size_t num_layers = 1;
    bool bias = true;
    bool batch_first = false;
    double dropout = 0;
    bool bidirectional = false;
    std::size_t proj_size = 0;
    MergeMode merge_mode = MergeMode::concat;  // bidirectional: how the directions join
    double input_dropout = 0;  // variational dropout (RecurrentOptions; Keras's `dropout`)
    double recurrent_dropout = 0;  // (Keras's `recurrent_dropout`)
};

struct GRUOptions {
    std::size_t input_size = 0;
    std::size_t hidden_size = 0;
    std::size_t num_layers = 1;
    bool bias = true;
    bool batch_first = false;
    double dropout = 0;
    bool bidirectional = false;
    MergeMode merge_mode = MergeMode::concat;  // bidirectional: how the directions join
    double input_dropout = 0;  // variational dropout (RecurrentOptions; Keras's `dropout`)
    double recurrent_dropout = 0;  // (Keras's `recurrent_dropout`)
};

/// An RNN's or GRU's result: output sequence and h_n (L*D, B, H).
template <class T>
struct HiddenResult {
    Var<T> output;
    Var<T> h;
};

template <class T>
struct LSTMState {
    Var<T> h;  // (L*D, B, H_out)
    Var<T> c;  // (L*D, B, H)
};

template <class T>
struct LSTMResult {
    Var<T> output;
    LSTMState<T> state;
};

/// torch.nn.RNN: h' = act(W_ih x + b_ih + W_hh h + b_hh).
template <class T>
class RNN : public Recurrent<RNNCell<T>> {
public:
    explicit RNN(const RNNOptions& o);
    HiddenResult<T> operator()(const Var<T>& x, const Var<T>& h0 = {}, const std::vector<std::int64_t>& lengths = {});
};

/// torch.nn.LSTM, including proj_size.
template <class T>
class LSTM : public Recurrent<LSTMCell<T>> {
public:
    explicit LSTM(const LSTMOptions& o);
    LSTMResult<T> operator()(const Var<T>& x, const LSTMState<T>& initial = {},
                             const std::vector<std::int64_t>& lengths = {});
};

/// torch.nn.GRU.
template <class T>
class GRU : public Recurrent<GRUCell<T>> {
public:
    explicit GRU(const GRUOptions& o);
    HiddenResult<T> operator()(const Var<T>& x, const Var<T>& h0 = {}, const std::vector<std::int64_t>& lengths = {});
};

// ---- Layer-normalised LSTM and GRU (cells.hpp: LayerNormLSTMCell, LayerNormGRUCell) ----------

struct LayerNormLSTMOptions {
    std::size_t input_size = 0;
    std::size_t hidden_size = 0;
    std::size_t num_layers = 1;
    bool batch_first = false;
    double dropout = 0;  // between layers
    bool bidirectional = false;
    double eps = 1e-5;  // of every layer norm
    MergeMode merge_mode = MergeMode::concat;
    double input_dropout = 0;  // variational dropout (RecurrentOptions); LayerNormGRU: the
    double recurrent_dropout = 0;  // recurrent mask multiplies h as its step sees it (blend included)
};
using LayerNormGRUOptions = LayerNormLSTMOptions;

/// Stacked, optionally bidirectional layer-normalised LSTM (LayerNormLSTMCell), with nn::LSTM's
/// interface: state {h, c} (L*D, B, H); parameter names weight_ih_l0, ln_weight_ih_l0, ...,
/// ln_bias_c_l0_reverse.
template <class T>
class LayerNormLSTM : public Recurrent<LayerNormLSTMCell<T>> {
public:
    explicit LayerNormLSTM(const LayerNormLSTMOptions& o);
    LSTMResult<T> operator()(const Var<T>& x, const LSTMState<T>& initial = {},
                             const std::vector<std::int64_t>& lengths = {});
};

/// Stacked, optionally bidirectional layer-normalised GRU (LayerNormGRUCell), with nn::GRU's
/// interface.
template <class T>
class LayerNormGRU : public Recurrent<LayerNormGRUCell<T>> {
public:
    explicit LayerNormGRU(const LayerNormGRUOptions& o);
    HiddenResult<T> operator()(const Var<T>& x, const Var<T>& h0 = {}, const std::vector<std::int64_t>& lengths = {});
};

extern template class Recurrent<RNNCell<float>>;
extern template class Recurrent<RNNCell<double>>;
extern template class Recurrent<LSTMCell<float>>;
extern template class Recurrent<LSTMCell<double>>;
extern template class Recurrent<GRUCell<float>>;
extern template class Recurrent<GRUCell<double>>;
extern template class RNN<float>;
extern template class RNN<double>;
extern template class LSTM<float>;
extern template class LSTM<double>;
extern template class GRU<float>;
extern template class GRU<double>;
extern template class Recurrent<LayerNormLSTMCell<float>>;
extern template class Recurrent<LayerNormLSTMCell<double>>;
extern template class Recurrent<LayerNormGRUCell<float>>;
extern template class Recurrent<LayerNormGRUCell<double>>;
extern template class LayerNormLSTM<float>;
extern template class LayerNormLSTM<double>;
extern template class LayerNormGRU<float>;
extern template class LayerNormGRU<double>;

}  // namespace recur::nn
