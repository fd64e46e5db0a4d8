// recur/primitive.hpp — primitives of your own: a forward, and the backward it returns.
//
// A primitive is one node on the tape, like recur's built-in ops, so it follows the engine
// contract of recur/tape.hpp. You write its forward; the forward returns its backward, a
// callable that may capture whatever it needs (scalars, index lists, arrays computed in the
// forward): the backward carries its own data, typed, and the tape keeps it in the node.
//
//   Var<double> y = recur::primitive("softsign", {x}, [](OpContext<double>& op) {
//       const auto& in = op.input(0);
//       op.output(in.shape()) = in / (1.0 + xt::abs(in));    // y = x / (1 + |x|)
//       return [](OpContext<double>& back) {                  // dx += g / (1 + |x|)^2
//           back.add_input_grad(0, back.output_grad() / xt::square(1.0 + xt::abs(back.input(0))));
//       };
//   });
//
// Rules (the same as for built-in ops):
// - The forward writes every output through op.output(shape, k) (k < Outputs) and reads its
//   inputs through op.input(k). It may throw (a bad shape): nothing is recorded then.
// - The backward reads the outputs' gradients (op.output_grad(k); an output that received
//   none has has_output_grad(k) false, read it as zeros) and ADDS each input's share with
//   op.add_input_grad(k, e), e shaped exactly like input k. It never writes anything else.
// - The backward runs at most once per tape.backward(), after every node that used the
//   primitive's outputs. When nothing needs a gradient (an inference tape, or no input that
//   requires grad), the returned backward is dropped at once.
// - A captured value lives until the tape is cleared or destroyed: capture arrays by value,
//   never by reference to something of the forward's stack.
// - Optional, for memory: a forward may declare the values its backward never reads
//   (op.backward_skips_input(k), op.backward_skips_output(k)); see OpContext.
// Check it with gradcheck (recur/gradcheck.hpp), in double, like every built-in op.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xnoalias.hpp>

#include "recur/error.hpp"
#include "recur/tape.hpp"

namespace recur {

/// What a primitive's forward and backward see of their node: the inputs' values, the
/// outputs, and (in the backward) the outputs' gradients and the inputs' gradient sinks.
template <class T>
class OpContext {
public:
    /// For the backward of `node` (its inputs as the tape recorded them).
    OpContext(Tape<T>& tape, std::uint32_t node) : tape_(tape), node_(node) {}
    /// For the forward: a node that records nothing (no gradient needed) lists no inputs on
    /// the tape, so the forward reads them from `slots`.
    OpContext(Tape<T>& tape, std::uint32_t node, const std::uint32_t* slots, std::size_t count)
        : tape_(tape), node_(node), slots_(slots), count_(count) {}

    /// The op's name, as given to primitive().
    const char* name() const { return tape_.node(node_).op; }
    std::size_t num_inputs() const { return slots_ ? count_ : tape_.node(node_).num_inputs; }
    /// The value of input k.
    const xt::xarray<T>& input(std::size_t k) const { return unspent(input_slot(k)); }
    /// Whether input k wants a gradient (add_input_grad skips the others anyway).
    bool needs_grad(std::size_t k) const { return tape_.needs_grad(input_slot(k)); }

    /// Forward: output k, sized to `shape`, for the forward to write (its buffer is reused
    /// from step to step, so write every element).
    xt::xarray<T>& output(const Shape& shape, std::size_t k = 0) { return tape_.output_value(node_, shape, k); }
    /// Backward (or after the forward wrote it): the value of output k.
    const xt::xarray<T>& output_value(std::size_t k = 0) const { return unspent(tape_.output(node_, k)); }

    /// Forward, optional, for memory: the backward never reads input k's value (only its
    /// shape), or output k's. A value that no backward reads lends its buffer to its gradient
    /// during backward (the engine contract, recur/tape.hpp). Declare only what is true: a
    /// backward that reads a value it declared unread gets a tape_error naming the op.
    void backward_skips_input(std::size_t k) {
        (void)input_slot(k);  // index_error past the inputs
        tape_.backward_skips_input(node_, static_cast<std::uint32_t>(k));
    }
    void backward_skips_output(std::size_t k = 0) { tape_.backward_skips_output(node_, k); }

    /// Backward: whether output k received a gradient (one that did not counts as zeros).
    bool has_output_grad(std::size_t k = 0) const { return tape_.node(tape_.output(node_, k)).has_grad; }
    /// Backward: the gradient of output k, shaped like output k; tape_error if it received
    /// none (ask has_output_grad first when the primitive has several outputs).
    const xt::xarray<T>& output_grad(std::size_t k = 0) const {
        if (!has_output_grad(k))
            throw tape_error(std::string(name()) + ": output " + std::to_string(k) + " received no gradient");
        return tape_.node(tape_.output(node_, k)).grad;
    }
    /// Backward: input k's gradient += e, where e has input k's shape exactly (shape_error
    /// naming the op otherwise). Does nothing for an input that needs no gradient.
    template <class E>
    void add_input_grad(std::size_t k, const E& e) {
        const std::uint32_t in = input_slot(k);
        if (!tape_.needs_grad(in)) return;
        const Shape& expected = tape_.value(in).shape();
        const auto& got = e.shape();
        if (got.size() != expected.size() || !std::equal(got.begin(), got.end(), expected.begin()))
            throw shape_error(std::string(name()) + ": the gradient for input " + std::to_string(k) + " has shape " +
                              shape_str(got) + ", the input " + shape_str(expected));
        tape_.grad_ref(in).add(e);
    }

    /// Backward, optional, for distributed training: whether to report rows of input k's
    /// gradient as they are finished (input k is a Parameter this op reads last in the sweep,
    /// and a gradient reducer listens), and the report: rows [0, rows) of input k's gradient,
    /// along its first axis, are complete and nothing adds into them again. The reducer then
    /// starts sending them while the rest of this backward runs (Tape::grad_rows_final).
    bool reports_grad_rows(std::size_t k) const {
        (void)input_slot(k);  // index_error past the inputs
        return slots_ == nullptr && tape_.reports_grad_rows(node_, static_cast<std::uint32_t>(k));
    }
    void grad_rows_final(std::size_t k, std::size_t rows) {
        if (reports_grad_rows(k)) tape_.grad_rows_final(node_, static_cast<std::uint32_t>(k), rows);
    }

    /// The tape, for what the context does not cover (the op-author interface of Tape). Not
    /// Tape::state for this node: it holds the primitive's backward.
    Tape<T>& tape() { return tape_; }
    std::uint32_t node() const { return node_; }

private:
    const xt::xarray<T>& unspent(std::uint32_t slot) const {
        const auto& n = tape_.node(slot);
        if (n.value_spent) detail::spent_value_error(name(), n.op);
        return tape_.value(slot);
    }
    std::uint32_t input_slot(std::size_t k) const {
        if (k >= num_inputs())
            throw index_error(std::string(name()) + ": input " + std::to_string(k) + " of " +
                              std::to_string(num_inputs()));
        return slots_ ? slots_[k] : tape_.input(node_, static_cast<std::uint32_t>(k));
    }

    Tape<T>& tape_;
    std::uint32_t node_;
    const std::uint32_t* slots_ = nullptr;  // the forward's inputs
    std::size_t count_ = 0;
};

namespace detail {

/// A primitive's backward, kept in its node as the op's typed state.
template <class B>
struct CarriedBackward {
    std::optional<B> run;
};

template <class T, class B>
void run_carried_backward(Tape<T>& tape, std::uint32_t node) {
    auto& carried = tape.template saved_state<CarriedBackward<B>>(node);
    OpContext<T> op(tape, node);
    (*carried.run)(op);
}

}  // namespace detail

namespace detail {

template <std::size_t Outputs, class T, class Forward>
auto record_primitive(const char* name, const Var<T>* inputs, std::size_t count, Forward& forward) {
    static_assert(Outputs >= 1 && Outputs <= max_outputs, "a primitive has 1 to detail::max_outputs outputs");
    using Backward = std::decay_t<std::invoke_result_t<Forward&, OpContext<T>&>>;
    static_assert(std::is_invocable_v<Backward&, OpContext<T>&>,
                  "the forward must return the backward: a callable taking OpContext<T>&");
    if (count == 0) throw value_error(std::string(name) + ": a primitive needs at least one input");
    inputs[0].check(name);
    Tape<T>& tape = inputs[0].tape();
    constexpr std::size_t few = 8;  // no allocation for up to `few` inputs
    std::array<std::uint32_t, few> small{};
    std::vector<std::uint32_t> many(count > few ? count : 0);
    std::uint32_t* slots = count > few ? many.data() : small.data();
    for (std::size_t k = 0; k < count; ++k) {
        inputs[k].check(name);
        if (&inputs[k].tape() != &tape) throw tape_error(std::string(name) + ": inputs belong to different tapes");
        slots[k] = inputs[k].index();
    }
    const std::uint32_t node = tape.push(name, slots, count, &run_carried_backward<T, Backward>, Outputs);
    // Handles first: if the forward throws, they release the node on the way out.
    std::array<Var<T>, Outputs> outputs;
    for (std::size_t k = 0; k < Outputs; ++k) outputs[k] = tape.handle(node, k);
    OpContext<T> op(tape, node, slots, count);
    Backward backward = forward(op);
    if (tape.needs_grad(node)) tape.template state<CarriedBackward<Backward>>(node).run.emplace(std::move(backward));
    if constexpr (Outputs == 1)
        return std::move(outputs[0]);
    else
        return outputs;
}

}  // namespace detail

/// Records the primitive `name` over `inputs` (Vars of one tape, alive): runs `forward`
/// (OpContext<T>& -> its backward, a callable taking OpContext<T>&) and keeps the backward
/// for tape.backward(). Returns output 0, or all outputs as std::array<Var<T>, Outputs> when
/// Outputs > 1. tape_error naming `name` for an undefined or stale input, or inputs of
/// different tapes; value_error for no input.
template <std::size_t Outputs = 1, class T, class Forward>
auto primitive(const char* name, std::initializer_list<Var<T>> inputs, Forward&& forward) {
    return detail::record_primitive<Outputs>(name, inputs.begin(), inputs.size(), forward);
}
template <std::size_t Outputs = 1, class T, class Forward>
auto primitive(const char* name, const std::vector<Var<T>>& inputs, Forward&& forward) {
    return detail::record_primitive<Outputs>(name, inputs.data(), inputs.size(), forward);
}

}  // namespace recur
