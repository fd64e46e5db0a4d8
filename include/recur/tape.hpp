// recur/tape.hpp — the autodiff engine: Tape, Var, Parameter.
//
// A Tape<T> is an append-only list of nodes in creation order. Creation order is a
// topological order, so backward is one reverse loop over the nodes: no recursion, no sort.
// A Var<T> is a small handle (tape, index). A Parameter<T> is a persistent leaf owned by a
// module; binding it to a tape makes a node that reads the parameter's value in place, and
// backward adds the node's gradient into the parameter's grad.
//
// Memory: clear() keeps every node object and its buffers, so a training loop that records
// the same graph each step reuses them and allocates nothing after its first step. A tape that
// is destroyed hands its nodes and buffers to the next tape its thread makes, so a fresh tape
// per step reuses them too. A node that backward does not need (recording off, or nothing that
// requires grad flows through it) is released as soon as its last Var handle dies, and its
// slot is reused. As in PyTorch, backward keeps the gradients of leaves (variables) and
// Parameters; an intermediate result keeps its gradient only when asked (Var::retain_grad(),
// or TapeOptions::retain_grads), and the buffers of the others are reused within the sweep.
//
// THE ENGINE CONTRACT (every primitive, built-in or user-written, follows it; no exceptions)
// - An op pushes ONE node. The node has one or more outputs: output 0 is the node's own slot,
//   output k >= 1 a slot of its own (output(i, k)) that has no backward and belongs to node i.
// - The node's backward reads only its own outputs' gradients (output_grad(i, k); null for an
//   output that received none) and its typed state (state<S>(i)), and ADDS each input's share
//   into that input's gradient (grad_ref(input(i, k)); slice_grad for part of it;
//   add_product_grad for a product a^T b, which the tape sums with the other such products
//   into that input as one product before anything reads its gradient). It never writes
//   anything else: a value may feed many nodes, so gradients accumulate.
// - Creation order is topological (an op's inputs exist before it), so backward is one reverse
//   loop; a node runs once every node that reads any of its outputs has run.
// - What an op keeps for backward is one value of a struct of its own (state<S>): scalars,
//   axes, saved tensors, index lists. It is kept across clear() and reused in the same slot.
// - An op may declare values its backward never reads: its own output's
//   (backward_skips_output) or an input's (backward_skips_input). A value that no backward
//   reads is dead after the forward, so backward writes that node's gradient into the value's
//   buffer instead of a new one; reading the value afterwards is a tape_error.
// - A Parameter's gradient is final when the sweep passes its node (on_grad_final). The op
//   that reads it last in the sweep may report rows of it final earlier (grad_rows_final,
//   on_grad_rows_final), so that their communication starts while its backward goes on.
// - A Tape is used by one thread at a time (a debug or sanitizer build checks it).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xnoalias.hpp>

#include "recur/error.hpp"
#include "recur/precision.hpp"

namespace recur {

template <class T = float>
class Tape;
template <class T = float>
class Var;
template <class T = float>
class Parameter;

namespace detail {

/// tape_error: `what` read the value of an `op` result after backward lent its buffer to the
/// gradient.
[[noreturn]] void spent_value_error(const char* what, const char* op);

// An epoch stamp holds the serial of the tape epoch it serves (a Var is alive while its
// stamp still shows the serial it was made in); stamps are pooled and never freed, so a Var
// can always read its stamp, even after its tape is gone.
// serial = (tape id << 32) | epoch; clear() starts a new epoch, a destroyed tape leaves 0.
using EpochStamp = std::atomic<std::uint64_t>;
EpochStamp* acquire_stamp();
void release_stamp(EpochStamp* stamp);
std::uint64_t next_tape_id();
std::uint64_t next_version();  // a process-wide counter for Parameter::version

// The rows of a gradient as Tape::grad_rows_final reports them: along the first axis (a 0-d
// array is one row), each row_width(shape) elements.
inline std::size_t row_count(const Shape& shape) { return shape.empty() ? 1 : shape[0]; }
inline std::size_t row_width(const Shape& shape) {
    std::size_t width = 1;
    for (std::size_t d = 1; d < shape.size(); ++d) width *= shape[d];
    return width;
}

template <class T>
using BackwardFn = void (*)(Tape<T>& tape, std::uint32_t node);
/// c (m x n) = a^T b + beta c, a (k x m) and b (k x n) row-major: how an op's deferred
/// products (Tape::add_product_grad) are summed into a gradient.
template <class T>
using ProductGradFn = void (*)(Tape<T>& tape, std::size_t m, std::size_t n, std::size_t k, const T* a, const T* b,
                               T beta, T* c);

/// An op's typed state (what it keeps for backward). A small trivially copyable struct lives
/// inside the node; any other type (one holding tensors or vectors) on the heap, made the
/// first time the slot holds that type and then kept across clear(), so a training loop that
/// records the same graph reuses it (and its buffers) without allocating.
class OpState {
public:
    OpState() = default;
    OpState(OpState&& other) noexcept = default;
    OpState& operator=(OpState&& other) noexcept = default;

    /// The state as S: value-initialised when the slot does not hold an S yet (inline types are
    /// value-initialised on every call: set every field), else the S kept from before.
    template <class S>
    S& get() {
        if constexpr (is_inline<S>) {
            type_ = &tag<S>;
            return *::new (static_cast<void*>(inline_)) S{};
        } else {
            if (heap_type_ != &tag<S>) {
                heap_ = std::make_unique<Holder<S>>();
                heap_type_ = &tag<S>;
            }
            type_ = &tag<S>;
            return static_cast<Holder<S>*>(heap_.get())->value;
        }
    }
    /// The state set by get<S>() for this node; tape_error if the node holds another type.
    template <class S>
    S& as(const char* op) {
        if (type_ != &tag<S>) throw tape_error(std::string(op) + ": the node holds another op's state");
        if constexpr (is_inline<S>)
            return *std::launder(reinterpret_cast<S*>(inline_));
        else
            return static_cast<Holder<S>*>(heap_.get())->value;
    }
    void reset() { type_ = nullptr; }

private:
    static constexpr std::size_t inline_size = 48;
    template <class S>
    // Trivially copyable implies a trivial destructor. The clauses differ per S:
    // NOLINTNEXTLINE(misc-redundant-expression)
    static constexpr bool is_inline = sizeof(S) <= inline_size &&
                                      alignof(S) <= alignof(std::max_align_t) && std::is_trivially_copyable_v<S>;
    template <class S>
    static constexpr char tag = 0;
    struct HolderBase {
        virtual ~HolderBase() = default;
    };
    template <class S>
    struct Holder : HolderBase {
        S value{};
    };
    alignas(std::max_align_t) unsigned char inline_[inline_size]{};
    const void* type_ = nullptr;  // the type this node's op set
    const void* heap_type_ = nullptr;  // the type heap_ holds
    std::unique_ptr<HolderBase> heap_;
};

inline constexpr std::uint32_t no_node = 0xffffffffu;
inline constexpr std::size_t max_outputs = 4;

template <class T>
struct Node {
    xt::xarray<T> value;  // output 0 (unused for a bound parameter or a view)
    xt::xarray<T> grad;  // valid only when has_grad
    OpState state;  // what the op keeps for backward (Tape::state)
    BackwardFn<T> backward = nullptr;
    const char* op = "";
    Parameter<T>* param = nullptr;
    const xt::xarray<T>* external = nullptr;  // a view's array (Tape::view), read in place
    std::uint32_t first_input = 0;  // range [first_input, first_input + num_inputs) in edges
    std::uint32_t num_inputs = 0;
    std::uint32_t handles = 0;  // live Var handles
    std::uint32_t owner = no_node;  // for output k >= 1 of a node: that node
    std::array<std::uint32_t, max_outputs - 1> outputs{};  // slots of outputs 1.. (num_outputs - 1)
    std::uint32_t partial = 0;  // 1 + index of its slice-by-slice record (Tape::slice_grad), or 0
    std::uint32_t deferred = 0;  // 1 + index of its deferred products (Tape::add_product_grad), or 0
    std::uint8_t num_outputs = 1;
    bool requires_grad = false;
    bool pinned = false;  // backward may need it: never released before clear()
    bool has_grad = false;
    bool live = false;
    bool retain = false;  // keep its gradient after its backward ran (Var::retain_grad)
    // Recorded backwards that may read this value: its own op's (1 unless the op declared
    // otherwise) and one per recorded reader that did not declare otherwise. At 0 the value is
    // dead once the forward is done, and backward lends its buffer to the gradient.
    std::uint32_t backward_reads = 0;
    bool value_spent = false;  // its buffer served the gradient: the value is gone
    // The recorded reader with the lowest index: the last backward of a sweep that adds into
    // this node's gradient (no_node while nothing recorded reads it).
    std::uint32_t first_reader = no_node;
    // A bound Parameter's: rows [0, rows_final) of its gradient were final early this sweep
    // (Tape::grad_rows_final) and are already handed over.
    std::size_t rows_final = 0;
};

// A gradient being written slice by slice: written[t] once slice t holds data; the other
// slices are zero-filled before anything reads the whole gradient.
struct PartialGrad {
    std::vector<std::uint8_t> written;
    std::size_t slice_step = 0, row_stride = 0, rows = 0, width = 0;
};

// Products a^T b deferred into one gradient (m x n): the rows of a and b given so far this
// sweep (Tape::add_product_grad), summed in one product when the gradient is read or the rows
// fill the record's share of memory.
template <class T>
struct DeferredProducts {
    std::vector<T> a, b;  // rows x m, rows x n
    std::size_t rows = 0, m = 0, n = 0;
    ProductGradFn<T> product = nullptr;
};

}  // namespace detail

/// A gradient seen as `slices` equal slices, slice t being `rows` rows of `width` elements at
/// t * slice_step + r * row_stride (e.g. the time steps of a (T, B, G) or (B, T, G) sequence).
struct SliceLayout {
    std::size_t slices = 0, slice_step = 0, row_stride = 0, rows = 0, width = 0;
};

/// Options of a tape. `record = false` makes an inference tape: nothing is kept for
/// backward, and intermediates die with their last Var.
struct TapeOptions {
    bool record = true;
    std::uint64_t seed = 0x5eed;  // seeds the tape's generator (dropout masks)
    /// false: backward leaves each bound Parameter's gradient on the tape (parameter_grad)
    /// instead of adding it into Parameter::grad. Data-parallel training uses this: every
    /// thread's tape holds its own share until one fixed-order reduction.
    bool accumulate_parameter_grads = true;
    /// true: every intermediate result keeps its gradient after backward (Var::grad() reads it).
    /// false (the default, PyTorch's): an intermediate's gradient buffer goes back to the
    /// tape's pool as soon as its backward has used it, and later nodes of the same sweep reuse
    /// it (lower peak memory); Var::retain_grad() keeps one result's gradient. Leaves and
    /// Parameters always keep theirs.
    bool retain_grads = false;
    /// The precision policy of the tape's matrix products (recur/precision.hpp); bf16 on a
    /// Tape<double> is a value_error.
    Precision precision = Precision::f32;
};

/// A handle to a node of a tape. Cheap to copy; ops take and return Vars.
template <class T>
class Var {
public:
    using value_type = T;

    Var() = default;
    Var(const Var& other);
    Var(Var&& other) noexcept;
    Var& operator=(const Var& other);
    Var& operator=(Var&& other) noexcept;
    ~Var();

    /// False for a default-constructed Var (e.g. "no initial state").
    bool defined() const { return tape_ != nullptr; }
    /// True while the tape epoch this Var was made in is alive (not cleared, not destroyed).
    bool alive() const { return tape_ != nullptr && stamp_->load(std::memory_order_relaxed) == serial_; }
    /// Throws tape_error naming `op` unless the Var is defined and alive.
    void check(const char* op) const;

    Tape<T>& tape() const;
    std::uint32_t index() const { return index_; }
    const xt::xarray<T>& value() const;
    /// Gradient from the tape's last backward; zeros if that backward did not reach this node.
    /// An intermediate result has one only if retain_grad() was called before backward (or the
    /// tape retains all gradients); otherwise this throws tape_error.
    const xt::xarray<T>& grad() const;
    /// Keep this intermediate result's gradient through backward (PyTorch's retain_grad).
    void retain_grad() const;
    /// A copy: a reference into node storage would dangle once more nodes are recorded.
    /// (The shape stays readable after backward lent the value's buffer to the gradient.)
    Shape shape() const { return stored("Var::shape").shape(); }
    std::size_t dim() const { return stored("Var::dim").dimension(); }
    std::size_t size() const { return stored("Var::size").size(); }
    /// The single element of a one-element Var.
    T item() const;
    bool requires_grad() const;

private:
    friend class Tape<T>;
    Var(Tape<T>* tape, const detail::EpochStamp* stamp, std::uint64_t serial, std::uint32_t index)
        : tape_(tape), stamp_(stamp), serial_(serial), index_(index) {}
    void drop();
    /// The node's value array (its shape always valid; its data gone once lent: value()).
    const xt::xarray<T>& stored(const char* op) const;

    Tape<T>* tape_ = nullptr;
    const detail::EpochStamp* stamp_ = nullptr;
    std::uint64_t serial_ = 0;
    std::uint32_t index_ = 0;
};

/// A persistent trainable array: value and gradient live across tapes.
template <class T>
class Parameter {
public:
    using value_type = T;

    Parameter() = default;
    explicit Parameter(xt::xarray<T> value);

    const xt::xarray<T>& value() const { return value_; }
    /// Mutable access for optimizers and initialisers; keep the shape (use assign to change it).
    /// Each call marks the value changed (version()): write through the reference it returns
    /// before the next forward, not through one kept from earlier.
    xt::xarray<T>& value() {
        version_ = detail::next_version();
        return value_;
    }
    /// Changes with every call that could change the value (value(), assign), and is never
    /// shared by two values of any Parameters: what the engine keys weights derived from it on
    /// (a transposed copy made once per optimizer update).
    std::uint64_t version() const { return version_; }
    const xt::xarray<T>& grad() const { return grad_; }
    xt::xarray<T>& grad() { return grad_; }
    const Shape& shape() const { return value_.shape(); }
    std::size_t size() const { return value_.size(); }

    /// Replaces the value; its shape must equal the current one (shape_error otherwise).
    void assign(const xt::xarray<T>& value);
    void zero_grad();

private:
    xt::xarray<T> value_;
    xt::xarray<T> grad_;
    std::uint64_t version_ = detail::next_version();
};

/// The recording of one computation. Not copyable or movable: Vars point at it.
template <class T>
class Tape {
public:
    using value_type = T;

    explicit Tape(TapeOptions options = {});
    ~Tape();
    Tape(const Tape&) = delete;
    Tape& operator=(const Tape&) = delete;

    /// A leaf whose gradient backward computes (when recording).
    Var<T> variable(xt::xarray<T>&& value);
    /// Copies `value` into the node's kept buffer (no allocation once the tape has warmed up).
    Var<T> variable(const xt::xarray<T>& value);
    /// A leaf without gradient.
    Var<T> constant(xt::xarray<T>&& value);
    Var<T> constant(const xt::xarray<T>& value);
    /// A constant of zeros of `shape`, in the slot's kept buffer (no allocation once warm).
    Var<T> zeros(const Shape& shape);
    /// A constant that reads `array` in place, without a copy. `array` must stay alive and
    /// unchanged until the tape is cleared or destroyed (backward may read it).
    Var<T> view(const xt::xarray<T>& array);
    /// The node of `p` on this tape (made on first use in this epoch, then reused). No copy.
    Var<T> bind(Parameter<T>& p);

    /// Backward from a one-element output (seed 1).
    void backward(const Var<T>& output);
    /// Backward from any output with the gradient `seed` of the output's shape.
    void backward(const Var<T>& output, const xt::xarray<T>& seed);

    /// Drops every node (their buffers are kept for reuse); all Vars of the tape go stale.
    void clear();

    bool recording() const { return record_; }
    bool retains_grads() const { return retain_grads_; }
    Precision precision() const { return precision_; }
    void set_recording(bool on) { record_ = on; }
    /// Nodes currently held (live).
    std::size_t size() const { return top_ - free_.size(); }
    /// Node objects kept for reuse (high-water mark).
    std::size_t capacity() const { return nodes_.size(); }
    /// The Parameters bound in this epoch, in binding order.
    std::vector<Parameter<T>*> bound_parameters() const;
    /// This tape's gradient of `p` from its last backward; nullptr if p is not bound in this
    /// epoch or that backward did not reach it.
    const xt::xarray<T>* parameter_grad(const Parameter<T>& p) const;
    std::mt19937_64& generator() { return rng_; }
    void seed(std::uint64_t s) { rng_.seed(s); }

    /// Called during backward once a bound Parameter's gradient on this tape is final: when
    /// the reverse sweep passes the Parameter's node, every node that reads it has run. `grad`
    /// is this tape's gradient of p (already added into p.grad() when the tape accumulates
    /// parameter gradients), or nullptr when the sweep did not reach p. Called once per bound
    /// Parameter per backward, in reverse binding order. Gradient reducers (distributed
    /// training) start communicating here while the rest of the sweep runs. Kept across
    /// clear(); an empty function removes it.
    using GradFinalHook = std::function<void(Parameter<T>& p, const xt::xarray<T>* grad)>;
    void on_grad_final(GradFinalHook hook) { grad_final_ = std::move(hook); }
    /// Called during backward when rows [row_begin, row_end) (along the first axis; a 0-d
    /// Parameter has one row) of a bound Parameter's gradient are final before the whole of it:
    /// the op that reads p last in the sweep reported them (grad_rows_final), e.g. linear's
    /// weight gradient, computed in row blocks while a hook listens. The rows are already added
    /// into p.grad() when the tape accumulates parameter gradients. Reports come in row order
    /// and extend each other; on_grad_final still fires for p afterwards. Kept across clear().
    using GradRowsFinalHook = std::function<void(Parameter<T>& p, std::size_t row_begin, std::size_t row_end)>;
    void on_grad_rows_final(GradRowsFinalHook hook) { grad_rows_final_ = std::move(hook); }

    // ---- Op-author interface (ops/ uses it; user-defined primitives may too) --------------
    //
    // An op calls push() first, then reads its inputs' values and writes the new node's
    // value (push may move node storage: take references after it). Its backward reads
    // node(i).grad and adds each input's share with grad_ref(input(i, k)).

    /// Appends (or reuses a free slot for) the node of `op` with `outputs` outputs (at most
    /// detail::max_outputs). The node requires grad when the tape records and any input
    /// requires grad; then `backward_fn` and the inputs are kept, and the inputs are pinned.
    std::uint32_t push(const char* op, std::initializer_list<std::uint32_t> inputs, detail::BackwardFn<T> backward_fn);
    std::uint32_t push(const char* op, const std::vector<std::uint32_t>& inputs, detail::BackwardFn<T> backward_fn);
    std::uint32_t push(const char* op, const std::uint32_t* inputs, std::size_t count,
                       detail::BackwardFn<T> backward_fn, std::size_t outputs = 1);
    /// A new handle to node i (output 0), or to output k of node i.
    Var<T> handle(std::uint32_t i);
    Var<T> handle(std::uint32_t i, std::size_t k) { return handle(output(i, k)); }
    /// The slot of output k of node i (k = 0: i itself).
    std::uint32_t output(std::uint32_t i, std::size_t k) const { return k == 0 ? i : nodes_[i].outputs[k - 1]; }
    /// Declares that node i's backward never reads the value of its output k (see the contract
    /// above: a value no backward reads lends its buffer to its gradient). No effect unrecorded.
    void backward_skips_output(std::uint32_t i, std::size_t k = 0) {
        if (nodes_[i].requires_grad) --nodes_[output(i, k)].backward_reads;
    }
    /// Declares that node i's backward never reads the value of its input k (only its shape).
    void backward_skips_input(std::uint32_t i, std::uint32_t k) {
        if (nodes_[i].requires_grad) --nodes_[input(i, k)].backward_reads;
    }
    /// Whether node i's backward should report the rows of input k's gradient as it finishes
    /// them (grad_rows_final): input k is a bound Parameter, node i is the last node of the
    /// sweep to add into its gradient (its first recorded reader), and a rows hook listens.
    bool reports_grad_rows(std::uint32_t i, std::uint32_t k) const {
        const auto& in = nodes_[input(i, k)];
        return grad_rows_final_ && in.param != nullptr && in.first_reader == i;
    }
    /// During node i's backward: rows [0, rows) of input k's gradient are complete, nothing
    /// adds into them again (each call extends the last). Hands the new rows to the hook of
    /// on_grad_rows_final; no effect unless reports_grad_rows(i, k).
    void grad_rows_final(std::uint32_t i, std::uint32_t k, std::size_t rows);
    /// Output k of node i sized to `shape`, for its forward to write: the slot's own buffer
    /// when its size matches, else a released node's buffer of that size, else a new one.
    xt::xarray<T>& output_value(std::uint32_t i, const Shape& shape, std::size_t k = 0);
    /// During node i's backward: the gradient of its output k, or nullptr when none reached it.
    const T* output_grad(std::uint32_t i, std::size_t k = 0) {
        auto& n = nodes_[output(i, k)];  // settled by run_backward
        return n.has_grad ? n.grad.data() : nullptr;
    }
    /// The op state of node i as S (see detail::OpState): set it in the forward, read it in
    /// the backward with state<S>(i) too (a heap-held S is kept; an inline S must be read
    /// with saved_state<S>(i), which does not reset it).
    template <class S>
    S& state(std::uint32_t i) {
        return nodes_[i].state.template get<S>();
    }
    template <class S>
    S& saved_state(std::uint32_t i) {
        return nodes_[i].state.template as<S>(nodes_[i].op);
    }
    /// The transpose (C, R) of node i's 2-D value (R, C), row-major, made once and kept: for a
    /// bound Parameter until its value changes (once per optimizer update, however many tapes
    /// and time steps read it), for any other node for this epoch. For an op that multiplies
    /// by W^T at every time step.
    const xt::xarray<T>& transposed(std::uint32_t i);

    detail::Node<T>& node(std::uint32_t i) { return nodes_[i]; }
    const detail::Node<T>& node(std::uint32_t i) const { return nodes_[i]; }
    const xt::xarray<T>& value(std::uint32_t i) const {
        const auto& n = nodes_[i];
        return n.param ? std::as_const(*n.param).value() : n.external ? *n.external : n.value;
    }
    /// Index of the k-th input of node i.
    std::uint32_t input(std::uint32_t i, std::uint32_t k) const { return edges_[nodes_[i].first_input + k]; }
    bool needs_grad(std::uint32_t i) const { return nodes_[i].requires_grad; }

    /// Accumulation target for the gradient of node i during backward.
    class GradRef {
    public:
        /// grad += e (or grad = e for the first contribution of this sweep).
        template <class E>
        void add(const E& e) {
            if (!n_.has_grad) {
                tape_.prepare_grad(n_, shape_);
                xt::noalias(n_.grad) = e;
            } else {
                xt::noalias(n_.grad) += e;
            }
        }
        /// The buffer, sized; returns the BLAS beta to use: 0 when it holds nothing yet, else 1.
        T beta() {
            if (n_.has_grad) return T(1);
            tape_.prepare_grad(n_, shape_);
            return T(0);
        }
        /// The buffer, zero-filled if it held nothing yet (for partial writes).
        xt::xarray<T>& zeroed() {
            if (!n_.has_grad) {
                tape_.prepare_grad(n_, shape_);
                n_.grad.fill(T(0));
            }
            return n_.grad;
        }
        xt::xarray<T>& buffer() { return n_.grad; }

    private:
        friend class Tape;
        GradRef(Tape& tape, detail::Node<T>& n, const Shape& shape) : tape_(tape), n_(n), shape_(shape) {}
        Tape& tape_;
        detail::Node<T>& n_;
        const Shape& shape_;
    };
    GradRef grad_ref(std::uint32_t i) {
        if (nodes_[i].partial) finish_partial(nodes_[i]);
        return GradRef(*this, nodes_[i], value(i).shape());
    }
    /// During a backward: adds a^T b into the gradient of node w (a 2-D m x n value), with a
    /// (rows x m, rows lda apart) and b (rows x n, ldb apart). The rows are copied aside and
    /// summed with those of the other add_product_grad calls for w as ONE product `product`
    /// (k = all their rows) before anything reads w's gradient, or when they fill
    /// deferred_bytes. A recurrent weight's gradient dW = sum over steps of dpre_t^T h_t so
    /// becomes a few products of thousands of rows instead of one thin product per step,
    /// each reading and writing the whole of dW. The sum's order differs from step by step
    /// (rounding); for one graph it is fixed, so repeated runs give the same bits.
    void add_product_grad(std::uint32_t w, std::size_t rows, const T* a, std::size_t lda, const T* b, std::size_t ldb,
                          detail::ProductGradFn<T> product);
    /// The memory each weight's deferred rows may fill before they are summed (a and b).
    static constexpr std::size_t deferred_bytes = std::size_t(4) << 20;
    /// Makes node n's gradient whole: zero-fills the slices nobody wrote (slice_grad) and sums
    /// its deferred products (add_product_grad) into it.
    void settle_grad(detail::Node<T>& n) {
        if (n.partial) finish_partial(n);
        if (n.deferred) sum_deferred(n);
    }
    /// Whether node i keeps its gradient after its backward (leaves, Parameters, retained).
    bool keeps_grad(std::uint32_t i) const { return keeps_grad(nodes_[i]); }
    bool keeps_grad(const detail::Node<T>& n) const {
        return retain_grads_ || n.retain || (n.backward == nullptr && n.owner == detail::no_node);
    }

    /// For an op that writes whole slices of node i's gradient (see SliceLayout): the buffer,
    /// and whether the slice is fresh (write it) or already holds data (add to it). The
    /// slices nobody wrote are zero-filled before the gradient is read as a whole, so a
    /// sequence written step by step is never zero-filled first.
    T* slice_grad(std::uint32_t i, const SliceLayout& layout, std::size_t slice, bool& fresh);
    /// Zero-fills the slices of a slice-by-slice gradient that nobody wrote; it is whole then.
    void finish_partial(detail::Node<T>& n);
    /// Runs node k's backward if any of its outputs has a gradient, then pools what it used.
    void run_backward(std::uint32_t k, std::uint32_t root);

    // Used by Var; not for ops.
    const detail::EpochStamp* stamp() const { return stamp_; }
    std::uint64_t serial() const { return serial_; }
    void add_handle(std::uint32_t i) { ++nodes_[i].handles; }
    void drop_handle(std::uint32_t i) {
        auto& n = nodes_[i];
        if (--n.handles == 0 && !n.pinned) release(i);
    }
    /// Debug and sanitizer builds: tape_error unless the calling thread is the one using the
    /// tape (the first to record on it since it was made or cleared). Free in release builds.
    void check_thread(const char* what);

private:
    std::uint32_t new_slot(bool requires_grad);
    std::uint32_t finish_push(std::uint32_t i, const char* op, const std::uint32_t* in, std::size_t count,
                              detail::BackwardFn<T> backward_fn);
    std::uint32_t leaf(xt::xarray<T>&& value, bool requires_grad, const char* op);
    std::uint32_t leaf(const xt::xarray<T>& value, bool requires_grad, const char* op);
    void release(std::uint32_t i);
    void check_output(const Var<T>& output, const char* what) const;
    void sweep(std::uint32_t root);  // the reverse loop from a seeded root
    /// Sizes n.grad to `shape` for a first contribution (the node's own value buffer when no
    /// backward reads the value and `may_take_value`, else from the pool when its own buffer
    /// has another size) and marks it held.
    void prepare_grad(detail::Node<T>& n, const Shape& shape, bool may_take_value = true);

    std::vector<detail::Node<T>> nodes_;  // [0, top_) in use this epoch; the rest kept for reuse
    std::uint32_t top_ = 0;
    std::vector<std::uint32_t> edges_;
    std::vector<std::uint32_t> free_;  // released slots below top_
    std::vector<std::uint32_t> bound_order_;  // bound parameter nodes in binding order (few: a scan finds one)
    detail::EpochStamp* stamp_;
    std::uint64_t tape_id_;
    std::uint64_t serial_;
    bool record_;
    bool accumulate_parameter_grads_;
    bool retain_grads_;
    Precision precision_;
    std::vector<xt::xarray<T>> grad_pool_;  // released gradient buffers (retain_grads = false)
    std::vector<detail::PartialGrad> partials_;  // slice-by-slice records; [0, partials_used_) this sweep
    std::vector<xt::xarray<T>> value_pool_;  // values of released nodes (inference), reused by size
    // Transposed copies of non-Parameter nodes (transposed()); [0, transposed_used_) this epoch.
    std::vector<std::pair<std::uint32_t, xt::xarray<T>>> transposed_;
    std::size_t transposed_used_ = 0;
    std::size_t partials_used_ = 0;
    std::vector<detail::DeferredProducts<T>> deferred_;  // [0, deferred_used_) this sweep
    std::size_t deferred_used_ = 0;
    void sum_deferred(detail::Node<T>& n);  // sums the rows n's record holds into its gradient
    std::mt19937_64 rng_;
    GradFinalHook grad_final_;
    GradRowsFinalHook grad_rows_final_;
    std::atomic<std::thread::id> user_{};  // the thread recording on it (debug builds check)
    void take_storage();  // from the thread's cache of a destroyed tape's storage
    void give_storage();  // to that cache
    void parameter_done(detail::Node<T>& n);  // adds into Parameter::grad, calls grad_final_
    // Adds rows [row_begin, row_end) of bound parameter node n's gradient into Parameter::grad.
    void add_parameter_grad_rows(detail::Node<T>& n, std::size_t row_begin, std::size_t row_end);
    // Anomaly mode (AnomalyMode): the node pushed last, checked when its first handle is made.
    std::uint32_t anomaly_pending_ = detail::no_node;
    void check_forward(std::uint32_t i);  // value_error if node i's outputs hold NaN or inf
    void check_backward(std::uint32_t k);  // value_error if node k's backward made a NaN or inf gradient
};

/// Frees the node storage that destroyed tapes left for the next tape of the calling thread
/// (a fresh tape per step reuses it instead of allocating again).
void release_cached_tape_memory();

/// Turns recording off on a tape for a scope (inference inside a training tape).
template <class T>
class NoGradGuard {
public:
    explicit NoGradGuard(Tape<T>& tape) : tape_(tape), previous_(tape.recording()) { tape.set_recording(false); }
    ~NoGradGuard() { tape_.set_recording(previous_); }
    NoGradGuard(const NoGradGuard&) = delete;
    NoGradGuard& operator=(const NoGradGuard&) = delete;

private:
    Tape<T>& tape_;
    bool previous_;
};

/// Anomaly mode, as torch.autograd.detect_anomaly: while at least one AnomalyMode object is
/// alive (in any thread; they nest), every tape checks each op as it runs. The first op whose
/// forward output, or whose backward's gradient for one of its inputs, holds a NaN or an inf
/// raises value_error naming the op (as given to Tape::push), the pass and the shapes. It costs
/// one load and branch per op when off, and a scan of every output and input gradient when on.
/// Leaves (variable, constant, view, parameter) are not checked; an op that makes an inf on
/// purpose (masked_fill with -inf) trips it: use masked_softmax instead.
///
///   { recur::AnomalyMode anomaly;  train_one_step(); }  // throws at the op that made the NaN
class AnomalyMode {
public:
    AnomalyMode();
    ~AnomalyMode();
    AnomalyMode(const AnomalyMode&) = delete;
    AnomalyMode& operator=(const AnomalyMode&) = delete;
    /// Whether anomaly mode is on (some AnomalyMode is alive).
    static bool enabled();
};

// ---- Var inline members --------------------------------------------------------------------

template <class T>
Var<T>::Var(const Var& other) : tape_(other.tape_), stamp_(other.stamp_), serial_(other.serial_), index_(other.index_) {
    if (alive()) tape_->add_handle(index_);
}

template <class T>
Var<T>::Var(Var&& other) noexcept
    : tape_(other.tape_), stamp_(other.stamp_), serial_(other.serial_), index_(other.index_) {
    other.tape_ = nullptr;
}

template <class T>
Var<T>& Var<T>::operator=(const Var& other) {
    if (this != &other) {
        Var copy(other);
        *this = std::move(copy);
    }
    return *this;
}

template <class T>
Var<T>& Var<T>::operator=(Var&& other) noexcept {
    if (this != &other) {
        drop();
        tape_ = other.tape_;
        stamp_ = other.stamp_;
        serial_ = other.serial_;
        index_ = other.index_;
        other.tape_ = nullptr;
    }
    return *this;
}

template <class T>
Var<T>::~Var() {
    drop();
}

template <class T>
void Var<T>::drop() {
    if (alive()) tape_->drop_handle(index_);
    tape_ = nullptr;
}

template <class T>
Tape<T>& Var<T>::tape() const {
    check("Var::tape");
    return *tape_;
}

template <class T>
const xt::xarray<T>& Var<T>::stored(const char* op) const {
    check(op);
    return tape_->value(index_);
}

template <class T>
const xt::xarray<T>& Var<T>::value() const {
    const auto& v = stored("Var::value");
    if (tape_->node(index_).value_spent) detail::spent_value_error("Var::value", tape_->node(index_).op);
    return v;
}

template <class T>
bool Var<T>::requires_grad() const {
    check("Var::requires_grad");
    return tape_->needs_grad(index_);
}

extern template class Var<float>;
extern template class Var<double>;
extern template class Parameter<float>;
extern template class Parameter<double>;
extern template class Tape<float>;
extern template class Tape<double>;

}  // namespace recur
