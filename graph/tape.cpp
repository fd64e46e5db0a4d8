// The engine: node slots, bindings, and the backward sweep (one reverse loop).
#include "recur/tape.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <deque>
#include <functional>
#include <limits>
#include <mutex>
#include <string>

#include <xtensor/xstrides.hpp>

namespace recur {
namespace detail {

namespace {
// Stamps live in a deque that is never destroyed (a deque keeps element addresses stable), so
// a Var can read its stamp at any time, even during static destruction.
std::mutex stamp_mutex;
struct StampPool {
    std::deque<EpochStamp> stamps;
    std::vector<EpochStamp*> free;
};
StampPool& pool() {
    static auto* p = new StampPool;
    return *p;
}
}  // namespace

EpochStamp* acquire_stamp() {
    std::lock_guard<std::mutex> lock(stamp_mutex);
    auto& p = pool();
    if (p.free.empty()) return &p.stamps.emplace_back(0);
    EpochStamp* c = p.free.back();
    p.free.pop_back();
    return c;
}

void release_stamp(EpochStamp* stamp) {
    stamp->store(0, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(stamp_mutex);
    pool().free.push_back(stamp);
}

std::uint64_t next_version() {
    static std::atomic<std::uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
}

std::uint64_t next_tape_id() {
    static std::atomic<std::uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace detail

namespace {
// Live AnomalyMode guards; the engine reads it once per op (inlined here: one load and branch).
std::atomic<int> anomaly_guards{0};
inline bool anomaly_on() { return anomaly_guards.load(std::memory_order_relaxed) != 0; }
}  // namespace

// ---- Var ----------------------------------------------------------------------------------

namespace detail {
void spent_value_error(const char* what, const char* op) {
    throw tape_error(std::string(what) + ": the value of an '" + op +
                     "' result is gone: no backward reads it, so backward wrote its gradient into the value's "
                     "buffer; read it before backward(), or call retain_grad() on it to keep both");
}
}  // namespace detail

template <class T>
void Var<T>::check(const char* op) const {
    if (tape_ == nullptr) throw tape_error(std::string(op) + ": the Var is undefined (default-constructed)");
    const std::uint64_t current = stamp_->load(std::memory_order_relaxed);
    if (current == serial_) return;
    if ((current >> 32) == (serial_ >> 32))
        throw tape_error(std::string(op) + ": the Var belongs to a tape that was cleared after it was made");
    throw tape_error(std::string(op) + ": the Var's tape no longer exists");
}

template <class T>
const xt::xarray<T>& Var<T>::grad() const {
    check("Var::grad");
    auto& n = tape_->node(index_);
    tape_->settle_grad(n);
    if (!tape_->keeps_grad(index_))
        throw tape_error(std::string("Var::grad: the gradient of an intermediate result (op '") + n.op +
                         "') is not kept; call retain_grad() on it before backward, or make the tape with "
                         "TapeOptions::retain_grads = true");
    if (!n.has_grad) {
        n.grad = xt::zeros<T>(tape_->value(index_).shape());
        n.has_grad = true;
    }
    return n.grad;
}

template <class T>
void Var<T>::retain_grad() const {
    check("Var::retain_grad");
    tape_->node(index_).retain = true;
}

template <class T>
T Var<T>::item() const {
    const auto& v = value();
    if (v.size() != 1) throw shape_error("Var::item: needs one element, the Var has shape " + shape_str(v.shape()));
    return *v.data();
}

// ---- Parameter ----------------------------------------------------------------------------

template <class T>
Parameter<T>::Parameter(xt::xarray<T> value) : value_(std::move(value)), grad_(xt::zeros<T>(value_.shape())) {}

template <class T>
void Parameter<T>::assign(const xt::xarray<T>& value) {
    if (value.shape() != value_.shape())
        throw shape_error("Parameter::assign: new value has shape " + shape_str(value.shape()) +
                          ", the parameter has shape " + shape_str(value_.shape()));
    value_ = value;
}

template <class T>
void Parameter<T>::zero_grad() {
    if (grad_.shape() != value_.shape()) grad_.resize(value_.shape());
    grad_.fill(T(0));
}

// ---- Tape ---------------------------------------------------------------------------------

// ---- Storage handed from a destroyed tape to the next one its thread makes -------------------
// A fresh tape per training step (the shortest user code) then reuses the previous step's node
// objects and buffers exactly as a tape reused with clear() does.
namespace {
template <class T>
struct TapeStorage {
    std::vector<detail::Node<T>> nodes;
    std::vector<std::uint32_t> edges, free, bound;
    std::vector<xt::xarray<T>> grad_pool, value_pool;
    std::vector<detail::PartialGrad> partials;
    std::vector<detail::DeferredProducts<T>> deferred;
};
// The last destroyed tapes' storage on this thread (two: a training tape and an inference
// tape alive at once both reuse theirs).
template <class T>
struct StorageCache {
    static constexpr std::size_t slots = 2;
    std::vector<TapeStorage<T>> kept;
    ~StorageCache();
};
// Set once the thread's cache is destroyed (thread exit, static destruction): tapes destroyed
// after that free their storage. A plain bool needs no destructor, so it outlives the cache.
template <class T>
thread_local bool cache_gone = false;
template <class T>
StorageCache<T>::~StorageCache() {
    cache_gone<T> = true;
}
template <class T>
StorageCache<T>* storage_cache() {
    if (cache_gone<T>) return nullptr;
    thread_local StorageCache<T> cache;
    return &cache;
}
}  // namespace

template <class T>
void Tape<T>::take_storage() {
    auto* cache = storage_cache<T>();
    if (cache == nullptr || cache->kept.empty()) return;
    auto& s = cache->kept.back();
    nodes_ = std::move(s.nodes);
    edges_ = std::move(s.edges);
    free_ = std::move(s.free);
    bound_order_ = std::move(s.bound);
    grad_pool_ = std::move(s.grad_pool);
    value_pool_ = std::move(s.value_pool);
    partials_ = std::move(s.partials);
    partials_used_ = 0;
    deferred_ = std::move(s.deferred);
    deferred_used_ = 0;
    cache->kept.pop_back();
    edges_.clear();
    free_.clear();
    bound_order_.clear();
}

template <class T>
void Tape<T>::give_storage() {
    auto* cache = storage_cache<T>();
    if (cache == nullptr || nodes_.empty()) return;
    if (cache->kept.size() == StorageCache<T>::slots) {
        // keep the larger storage: a long graph's buffers are the costly ones to make again
        auto smallest = std::min_element(cache->kept.begin(), cache->kept.end(),
                                         [](const auto& a, const auto& b) { return a.nodes.size() < b.nodes.size(); });
        if (smallest->nodes.size() >= nodes_.size()) return;
        cache->kept.erase(smallest);
    }
    cache->kept.push_back({std::move(nodes_), std::move(edges_), std::move(free_), std::move(bound_order_),
                           std::move(grad_pool_), std::move(value_pool_), std::move(partials_), std::move(deferred_)});
}

void release_cached_tape_memory() {
    if (auto* c = storage_cache<float>()) c->kept.clear();
    if (auto* c = storage_cache<double>()) c->kept.clear();
}

// bf16 is a policy of float tapes; gradient checks (double) stay in double.
template <class T>
static void check_precision(Precision p) {
    if (std::is_same_v<T, double> && p == Precision::bf16)
        throw value_error("Tape<double>: Precision::bf16 applies to float tapes only (double runs in double)");
}

template <class T>
Tape<T>::Tape(TapeOptions options)
    : stamp_((check_precision<T>(options.precision), detail::acquire_stamp())),
      tape_id_(detail::next_tape_id()),
      serial_((tape_id_ << 32) | 1u),
      record_(options.record),
      accumulate_parameter_grads_(options.accumulate_parameter_grads),
      retain_grads_(options.retain_grads),
      precision_(options.precision),
      rng_(options.seed) {
    stamp_->store(serial_, std::memory_order_relaxed);
    take_storage();
}

template <class T>
Tape<T>::~Tape() {
    detail::release_stamp(stamp_);
    give_storage();
}

template <class T>
void Tape<T>::check_thread([[maybe_unused]] const char* what) {
#ifndef NDEBUG
    const std::thread::id me = std::this_thread::get_id();
    std::thread::id expected{};
    if (user_.compare_exchange_strong(expected, me, std::memory_order_relaxed) || expected == me) return;
    throw tape_error(std::string(what) +
                     ": this Tape is being used by another thread; a Tape is single-threaded (make one "
                     "tape per thread, or clear() it before another thread takes it over)");
#endif
}

template <class T>
void Tape<T>::clear() {
    top_ = 0;
    free_.clear();
    edges_.clear();
    bound_order_.clear();
    partials_used_ = 0;
    deferred_used_ = 0;
    transposed_used_ = 0;
    anomaly_pending_ = detail::no_node;
    ++serial_;
    stamp_->store(serial_, std::memory_order_relaxed);
    user_.store(std::thread::id{}, std::memory_order_relaxed);
}

template <class T>
std::uint32_t Tape<T>::new_slot(bool requires_grad) {
    std::uint32_t i;
    // A free slot may sit below nodes that were made after it, so only nodes that backward
    // never visits (no grad) may take one; recorded nodes always go on top.
    if (!requires_grad && !free_.empty()) {
        i = free_.back();
        free_.pop_back();
    } else {
        if (top_ == std::numeric_limits<std::uint32_t>::max()) throw tape_error("Tape: more than 2^32 - 1 nodes");
        if (top_ == nodes_.size()) nodes_.emplace_back();
        i = top_++;
    }
    auto& n = nodes_[i];
    n.state.reset();
    n.backward = nullptr;
    n.op = "";
    n.param = nullptr;
    n.external = nullptr;
    n.first_input = 0;
    n.num_inputs = 0;
    n.handles = 0;
    n.owner = detail::no_node;
    n.num_outputs = 1;
    n.partial = 0;
    n.deferred = 0;
    n.requires_grad = requires_grad;
    n.pinned = false;
    n.has_grad = false;
    n.live = true;
    n.retain = false;
    n.backward_reads = 1;  // its own backward, unless its op declares otherwise
    n.value_spent = false;
    n.first_reader = detail::no_node;
    n.rows_final = 0;
    return i;
}

template <class T>
std::uint32_t Tape<T>::finish_push(std::uint32_t i, const char* op, const std::uint32_t* in, std::size_t count,
                                   detail::BackwardFn<T> backward_fn) {
    auto& n = nodes_[i];
    n.op = op;
    if (n.requires_grad) {
        n.backward = backward_fn;
        n.pinned = true;
        n.first_input = static_cast<std::uint32_t>(edges_.size());
        n.num_inputs = static_cast<std::uint32_t>(count);
        for (std::size_t k = 0; k < count; ++k) {
            edges_.push_back(in[k]);
            auto& input = nodes_[in[k]];
            input.pinned = true;
            ++input.backward_reads;  // unless the op declares otherwise
            if (input.first_reader == detail::no_node) input.first_reader = i;  // recorded nodes go on top
        }
    }
    return i;
}

template <class T>
std::uint32_t Tape<T>::push(const char* op, std::initializer_list<std::uint32_t> inputs,
                            detail::BackwardFn<T> backward_fn) {
    return push(op, inputs.begin(), inputs.size(), backward_fn);
}

template <class T>
std::uint32_t Tape<T>::push(const char* op, const std::vector<std::uint32_t>& inputs,
                            detail::BackwardFn<T> backward_fn) {
    return push(op, inputs.data(), inputs.size(), backward_fn);
}

template <class T>
std::uint32_t Tape<T>::push(const char* op, const std::uint32_t* inputs, std::size_t count,
                            detail::BackwardFn<T> backward_fn, std::size_t outputs) {
    check_thread(op);
    if (outputs == 0 || outputs > detail::max_outputs)
        throw tape_error(std::string(op) + ": an op has 1 to " + std::to_string(detail::max_outputs) +
                         " outputs, not " + std::to_string(outputs));
    bool rg = false;
    for (std::size_t k = 0; k < count; ++k) {
        const auto& in = nodes_[inputs[k]];
        if (in.value_spent) detail::spent_value_error(op, in.op);
        rg = rg || (record_ && in.requires_grad);
    }
    const std::uint32_t i = new_slot(rg);
    // Extra outputs come right after the node when recorded (its backward, which reads their
    // gradients, then runs after every reader of any output); unrecorded, any free slot does.
    for (std::size_t k = 1; k < outputs; ++k) {
        const std::uint32_t o = new_slot(rg);
        auto& out = nodes_[o];
        out.owner = i;
        out.op = op;
        out.pinned = rg;
        nodes_[i].outputs[k - 1] = o;
    }
    nodes_[i].num_outputs = static_cast<std::uint8_t>(outputs);
    if (anomaly_on()) anomaly_pending_ = i;
    return finish_push(i, op, inputs, count, backward_fn);
}

template <class T>
Var<T> Tape<T>::handle(std::uint32_t i) {
    if (anomaly_on()) check_forward(i);
    ++nodes_[i].handles;
    return Var<T>(this, stamp_, serial_, i);
}

template <class T>
std::uint32_t Tape<T>::leaf(xt::xarray<T>&& value, bool requires_grad, const char* op) {
    check_thread(op);
    const std::uint32_t i = new_slot(requires_grad);
    auto& n = nodes_[i];
    n.value = std::move(value);
    n.op = op;
    n.pinned = requires_grad;
    return i;
}

template <class T>
std::uint32_t Tape<T>::leaf(const xt::xarray<T>& value, bool requires_grad, const char* op) {
    // A value of one of this tape's nodes would move while new_slot grows the node list: copy it first.
    const std::less<const void*> before;
    if (!nodes_.empty() && !before(&value, nodes_.data()) && before(&value, nodes_.data() + nodes_.size()))
        return leaf(xt::xarray<T>(value), requires_grad, op);
    const std::uint32_t i = new_slot(requires_grad);
    auto& v = output_value(i, value.shape());  // a kept buffer when one has the size
    std::copy(value.data(), value.data() + value.size(), v.data());
    auto& n = nodes_[i];
    n.op = op;
    n.pinned = requires_grad;
    return i;
}

// A variable requires grad even while recording is off, so that ops recorded after recording
// is switched back on still reach it.
template <class T>
Var<T> Tape<T>::variable(xt::xarray<T>&& value) {
    return handle(leaf(std::move(value), true, "variable"));
}

template <class T>
Var<T> Tape<T>::variable(const xt::xarray<T>& value) {
    return handle(leaf(value, true, "variable"));
}

template <class T>
Var<T> Tape<T>::constant(xt::xarray<T>&& value) {
    return handle(leaf(std::move(value), false, "constant"));
}

template <class T>
Var<T> Tape<T>::constant(const xt::xarray<T>& value) {
    return handle(leaf(value, false, "constant"));
}

template <class T>
Var<T> Tape<T>::zeros(const Shape& shape) {
    const std::uint32_t i = new_slot(false);
    output_value(i, shape).fill(T(0));
    auto& n = nodes_[i];
    n.op = "zeros";
    return handle(i);
}

template <class T>
Var<T> Tape<T>::view(const xt::xarray<T>& array) {
    const std::uint32_t i = new_slot(false);
    auto& n = nodes_[i];
    n.external = &array;
    n.op = "view";
    return handle(i);
}

template <class T>
Var<T> Tape<T>::bind(Parameter<T>& p) {
    for (std::uint32_t k : bound_order_)
        if (nodes_[k].param == &p) return handle(k);
    const std::uint32_t i = new_slot(true);
    auto& n = nodes_[i];
    n.op = "parameter";
    n.param = &p;  // n.value stays as it was (unused): no allocation per binding
    n.pinned = true;  // the binding refers to it for the rest of the epoch
    bound_order_.push_back(i);
    return handle(i);
}

template <class T>
std::vector<Parameter<T>*> Tape<T>::bound_parameters() const {
    std::vector<Parameter<T>*> ps;
    for (std::uint32_t k : bound_order_) ps.push_back(nodes_[k].param);
    return ps;
}

template <class T>
const xt::xarray<T>* Tape<T>::parameter_grad(const Parameter<T>& p) const {
    for (std::uint32_t k : bound_order_)
        if (nodes_[k].param == &p) return nodes_[k].has_grad ? &nodes_[k].grad : nullptr;
    return nullptr;
}

namespace {
// The transposed copy a node keeps (Tape::transposed) and what it was made from.
template <class T>
struct TransposedCopy {
    xt::xarray<T> value;
    const void* source = nullptr;  // the array transposed
    std::uint64_t version = 0;  // the Parameter's version, or the tape epoch's serial
};
}  // namespace

template <class T>
const xt::xarray<T>& Tape<T>::transposed(std::uint32_t i) {
    auto& n = nodes_[i];
    const auto& v = value(i);
    if (v.dimension() != 2)
        throw shape_error(std::string("transposed: needs a 2-D value, got ") + shape_str(v.shape()));
    const std::size_t rows = v.shape()[0], cols = v.shape()[1];
    auto transpose_into = [&](xt::xarray<T>& out) -> const xt::xarray<T>& {
        out.resize({cols, rows});
        const T* src = v.data();
        T* dst = out.data();
        for (std::size_t r = 0; r < rows; ++r)
            for (std::size_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
        return out;
    };
    if (n.param == nullptr) {  // the node's state is its op's: the copy lives in the tape, for this epoch
        for (std::size_t k = 0; k < transposed_used_; ++k)
            if (transposed_[k].first == i) return transposed_[k].second;
        if (transposed_used_ == transposed_.size()) transposed_.emplace_back();
        auto& entry = transposed_[transposed_used_++];
        entry.first = i;
        return transpose_into(entry.second);
    }
    // A bound Parameter's node has no op: its state keeps the copy across epochs, remade only
    // when the Parameter's value may have changed.
    auto& copy = n.state.template get<TransposedCopy<T>>();
    if (copy.source == &v && copy.version == n.param->version() && copy.value.storage().size() == v.size())
        return copy.value;
    transpose_into(copy.value);
    copy.source = &v;
    copy.version = n.param->version();
    return copy.value;
}

template <class T>
void Tape<T>::release(std::uint32_t i) {
    auto& n = nodes_[i];
    n.live = false;
    // A transposed copy of this node's value must not serve the node that takes its slot next.
    for (std::size_t k = 0; k < transposed_used_; ++k)
        if (transposed_[k].first == i) transposed_[k].first = detail::no_node;
    // Bounded by the slot count (a loop whose released sizes are never asked for again must not
    // grow it): past that, the buffer is freed.
    if (n.value.storage().size() != 0) {
        if (value_pool_.size() < nodes_.size())
            value_pool_.push_back(std::move(n.value));  // n.value keeps no storage
        else
            n.value = xt::xarray<T>();
    }
    free_.push_back(i);
}

// Takes a buffer of `size` elements from `pool` into `buffer` (most recently released first),
// giving the pool buffer's old storage in exchange; false when none has that size.
template <class T>
static bool take_from_pool(std::vector<xt::xarray<T>>& pool, xt::xarray<T>& buffer, std::size_t size) {
    for (std::size_t k = pool.size(); k-- > 0;) {
        if (pool[k].storage().size() != size) continue;
        std::swap(buffer, pool[k]);
        if (pool[k].storage().size() == 0) {  // nothing worth keeping came back
            pool[k] = std::move(pool.back());
            pool.pop_back();
        }
        return true;
    }
    return false;
}

template <class T>
xt::xarray<T>& Tape<T>::output_value(std::uint32_t i, const Shape& shape, std::size_t k) {
    auto& v = nodes_[output(i, k)].value;
    const std::size_t size = xt::compute_size(shape);
    if (v.storage().size() != size && !value_pool_.empty()) take_from_pool(value_pool_, v, size);
    // A buffer given to a pool keeps its shape but not its storage, so resize() alone could
    // leave it empty: allocate when no buffer of this size was found.
    if (v.storage().size() == size)
        v.resize(shape);
    else
        v = xt::xarray<T>::from_shape(shape);
    return v;
}

template <class T>
void Tape<T>::check_output(const Var<T>& output, const char* what) const {
    output.check(what);
    if (output.tape_ != this) throw tape_error(std::string(what) + ": the Var belongs to another tape");
    if (!nodes_[output.index_].requires_grad)
        throw tape_error(std::string(what) +
                         ": the output does not require grad (no variable or parameter reaches it, "
                         "or the tape was not recording)");
}

template <class T>
void Tape<T>::backward(const Var<T>& output) {
    check_output(output, "backward");
    auto& r = nodes_[output.index_];
    const auto& v = value(output.index_);
    if (v.size() != 1)
        throw shape_error("backward: the output has shape " + shape_str(v.shape()) +
                          "; a non-scalar output needs a seed gradient: backward(output, seed)");
    prepare_grad(r, v.shape(), false);  // reuses a buffer: no allocation per step
    r.grad.fill(T(1));
    sweep(output.index_);
}

template <class T>
void Tape<T>::backward(const Var<T>& output, const xt::xarray<T>& seed) {
    check_output(output, "backward");
    const std::uint32_t root = output.index_;
    if (seed.shape() != value(root).shape())
        throw shape_error("backward: seed has shape " + shape_str(seed.shape()) + ", the output has shape " +
                          shape_str(value(root).shape()));
    nodes_[root].grad = seed;
    sweep(root);
}

template <class T>
void Tape<T>::prepare_grad(detail::Node<T>& n, const Shape& shape, bool may_take_value) {
    const std::size_t size = xt::compute_size(shape);
    // A value no backward reads (an op's own output whose gradient is not kept: not a leaf's, a
    // Parameter's, a view's or a retained result's) is dead now: its buffer takes the gradient,
    // and gets it back after the node's backward.
    if (may_take_value && n.backward_reads == 0 && !keeps_grad(n) && n.value.storage().size() == size) {
        n.value.storage().swap(n.grad.storage());
        n.grad.resize(shape);
        n.value_spent = true;
        n.has_grad = true;
        return;
    }
    // Most recently released first: the buffer of a node of the same kind one step later.
    if (n.grad.storage().size() != size) take_from_pool(grad_pool_, n.grad, size);
    // A buffer given to the pool keeps its shape but not its storage, so resize() alone
    // would leave it empty: allocate when no buffer of this size was found.
    if (n.grad.storage().size() == size)
        n.grad.resize(shape);
    else
        n.grad = xt::xarray<T>::from_shape(shape);
    n.has_grad = true;
}

template <class T>
T* Tape<T>::slice_grad(std::uint32_t i, const SliceLayout& layout, std::size_t slice, bool& fresh) {
    auto& n = nodes_[i];
    if (n.partial) {
        const auto& p = partials_[n.partial - 1];
        const bool same_layout = p.written.size() == layout.slices && p.slice_step == layout.slice_step &&
                                 p.row_stride == layout.row_stride && p.rows == layout.rows && p.width == layout.width;
        if (!same_layout) finish_partial(n);  // another layout: the gradient becomes whole
    }
    if (!n.has_grad) {
        prepare_grad(n, value(i).shape());  // no zero fill: every slice starts unwritten
        if (partials_used_ == partials_.size()) partials_.emplace_back();
        auto& p = partials_[partials_used_++];  // kept across sweeps: no allocation once warm
        p.written.assign(layout.slices, 0);
        p.slice_step = layout.slice_step;
        p.row_stride = layout.row_stride;
        p.rows = layout.rows;
        p.width = layout.width;
        n.partial = static_cast<std::uint32_t>(partials_used_);
    }
    if (!n.partial) {
        fresh = false;
        return n.grad.data();
    }
    auto& written = partials_[n.partial - 1].written;
    fresh = !written[slice];
    written[slice] = 1;
    return n.grad.data();
}

template <class T>
void Tape<T>::finish_partial(detail::Node<T>& n) {
    const auto& p = partials_[n.partial - 1];
    T* g = n.grad.data();
    for (std::size_t t = 0; t < p.written.size(); ++t) {
        if (p.written[t]) continue;
        for (std::size_t r = 0; r < p.rows; ++r) {
            T* row = g + t * p.slice_step + r * p.row_stride;
            std::fill(row, row + p.width, T(0));
        }
    }
    n.partial = 0;
}

template <class T>
void Tape<T>::add_product_grad(std::uint32_t w, std::size_t rows, const T* a, std::size_t lda, const T* b,
                               std::size_t ldb, detail::ProductGradFn<T> product) {
    auto& n = nodes_[w];
    const Shape& shape = value(w).shape();
    if (shape.size() != 2)
        throw tape_error(std::string("add_product_grad: the gradient must be 2-D (m x n), got ") + shape_str(shape));
    const std::size_t m = shape[0], cols = shape[1];
    if (rows == 0) return;
    if (!n.deferred) {  // w's record for this sweep
        if (deferred_used_ == deferred_.size()) deferred_.emplace_back();
        auto& d = deferred_[deferred_used_++];  // kept across sweeps: no allocation once warm
        d.rows = 0;
        d.m = m;
        d.n = cols;
        d.product = product;
        n.deferred = static_cast<std::uint32_t>(deferred_used_);
    }
    auto& d = deferred_[n.deferred - 1];
    if (d.rows > 0 && ((d.rows + rows) * (m + cols) * sizeof(T) > deferred_bytes || d.product != product))
        sum_deferred(n);  // room for these rows, or another op's product
    d.product = product;
    if (d.a.size() < (d.rows + rows) * m) d.a.resize((d.rows + rows) * m);
    if (d.b.size() < (d.rows + rows) * cols) d.b.resize((d.rows + rows) * cols);
    for (std::size_t r = 0; r < rows; ++r) {
        std::copy(a + r * lda, a + r * lda + m, d.a.data() + (d.rows + r) * m);
        std::copy(b + r * ldb, b + r * ldb + cols, d.b.data() + (d.rows + r) * cols);
    }
    d.rows += rows;
}

template <class T>
void Tape<T>::sum_deferred(detail::Node<T>& n) {
    auto& d = deferred_[n.deferred - 1];  // n's for the rest of the sweep
    if (d.rows == 0) return;
    if (n.partial) finish_partial(n);
    T beta = T(1);
    if (!n.has_grad) {
        prepare_grad(n, Shape{d.m, d.n});
        beta = T(0);
    }
    const std::size_t k = d.rows;
    d.rows = 0;
    d.product(*this, d.m, d.n, k, d.a.data(), d.b.data(), beta, n.grad.data());
}

template <class T>
void Tape<T>::add_parameter_grad_rows(detail::Node<T>& n, std::size_t row_begin, std::size_t row_end) {
    auto& g = n.param->grad();
    const auto& shape = std::as_const(*n.param).value().shape();  // const: reading is no update (version)
    if (g.shape() != shape) g = xt::zeros<T>(shape);
    const std::size_t width = detail::row_width(shape);
    const T* src = n.grad.data() + row_begin * width;
    T* dst = g.data() + row_begin * width;
    for (std::size_t e = 0; e < (row_end - row_begin) * width; ++e) dst[e] += src[e];
}

template <class T>
void Tape<T>::grad_rows_final(std::uint32_t i, std::uint32_t k, std::size_t rows) {
    if (!reports_grad_rows(i, k)) return;
    auto& n = nodes_[input(i, k)];
    rows = std::min(rows, detail::row_count(std::as_const(*n.param).value().shape()));
    if (rows <= n.rows_final) return;
    settle_grad(n);
    if (!n.has_grad)
        throw tape_error(std::string(nodes_[i].op) + ": reported rows of a parameter gradient final before writing it");
    if (accumulate_parameter_grads_) add_parameter_grad_rows(n, n.rows_final, rows);
    const std::size_t begin = n.rows_final;
    n.rows_final = rows;
    grad_rows_final_(*n.param, begin, rows);
}

template <class T>
void Tape<T>::parameter_done(detail::Node<T>& n) {
    settle_grad(n);
    if (n.has_grad && accumulate_parameter_grads_)  // the rows not handed over early
        add_parameter_grad_rows(n, n.rows_final, detail::row_count(std::as_const(*n.param).value().shape()));
    if (grad_final_) grad_final_(*n.param, n.has_grad ? &n.grad : nullptr);
}

template <class T>
void Tape<T>::run_backward(std::uint32_t k, std::uint32_t root) {
    auto& n = nodes_[k];
    bool reached = false;
    for (std::size_t o = 0; o < n.num_outputs; ++o) {
        auto& out = nodes_[output(k, o)];
        settle_grad(out);
        reached = reached || out.has_grad;
    }
    if (!reached) return;
    n.backward(*this, k);
    if (anomaly_on()) check_backward(k);
    // Its inputs have their shares now: the buffers can serve nodes further down.
    for (std::size_t o = 0; o < n.num_outputs; ++o) {
        const std::uint32_t slot = output(k, o);
        auto& out = nodes_[slot];
        if (slot == root || keeps_grad(slot) || out.grad.storage().size() == 0) continue;
        if (out.value_spent) out.value.storage().swap(out.grad.storage());  // the lent buffer goes back
        if (out.grad.storage().size() != 0)
            grad_pool_.push_back(std::move(out.grad));  // leaves out.grad without storage
        out.has_grad = false;
    }
}

template <class T>
void Tape<T>::sweep(std::uint32_t root) {
    check_thread("backward");
    for (std::uint32_t k = 0; k < top_; ++k) {
        nodes_[k].has_grad = false;
        nodes_[k].partial = 0;
        nodes_[k].deferred = 0;
        nodes_[k].rows_final = 0;
    }
    partials_used_ = 0;
    deferred_used_ = 0;
    nodes_[root].has_grad = true;
    // Parameters bound after the root cannot reach it: final (and untouched) at once.
    for (std::size_t j = bound_order_.size(); j-- > 0;)
        if (bound_order_[j] > root) parameter_done(nodes_[bound_order_[j]]);
    // Creation order is topological: every input of node k has an index below k (and the node
    // of an extra output, e.g. a root, is below that output).
    for (std::uint32_t k = root + 1; k-- > 0;) {
        auto& n = nodes_[k];
        if (n.param != nullptr) {  // every reader of the parameter has run: its gradient is final
            parameter_done(n);
            continue;
        }
        if (n.backward != nullptr) run_backward(k, root);
    }
    for (std::uint32_t k = 0; k < top_; ++k) settle_grad(nodes_[k]);  // leaves written slice by slice or deferred
}

// ---- Anomaly mode -----------------------------------------------------------------------------

namespace {
template <class T>
const char* non_finite(const xt::xarray<T>& a) {
    for (const T *p = a.data(), *e = p + a.size(); p != e; ++p)
        if (!std::isfinite(*p)) return std::isnan(*p) ? "NaN" : "inf";
    return nullptr;
}
}  // namespace

AnomalyMode::AnomalyMode() { anomaly_guards.fetch_add(1, std::memory_order_relaxed); }
AnomalyMode::~AnomalyMode() { anomaly_guards.fetch_sub(1, std::memory_order_relaxed); }
bool AnomalyMode::enabled() { return anomaly_on(); }

// Only the node an op just pushed is checked (leaves and later handles of a node are not).
template <class T>
void Tape<T>::check_forward(std::uint32_t i) {
    const std::uint32_t owner = nodes_[i].owner == detail::no_node ? i : nodes_[i].owner;
    if (owner != anomaly_pending_) return;
    anomaly_pending_ = detail::no_node;
    const auto& n = nodes_[owner];
    for (std::size_t k = 0; k < n.num_outputs; ++k) {
        const auto& v = value(output(owner, k));
        const char* bad = non_finite(v);
        if (bad == nullptr) continue;
        std::string inputs;
        for (std::uint32_t e = 0; e < n.num_inputs; ++e)
            inputs += (e ? ", " : "") + shape_str(value(input(owner, e)).shape());
        throw value_error(std::string("anomaly mode: the forward of '") + n.op + "' produced " + bad + " in output " +
                          std::to_string(k) + " " + shape_str(v.shape()) +
                          (inputs.empty() ? std::string() : " from inputs " + inputs));
    }
}

// After node k's backward: the gradients it added into are checked whole (a slice-by-slice one
// is zero-filled first, so it is whole from here on).
template <class T>
void Tape<T>::check_backward(std::uint32_t k) {
    const auto& n = nodes_[k];
    for (std::uint32_t e = 0; e < n.num_inputs; ++e) {
        auto& in = nodes_[input(k, e)];
        settle_grad(in);
        if (!in.has_grad) continue;
        const char* bad = non_finite(in.grad);
        if (bad == nullptr) continue;
        throw value_error(std::string("anomaly mode: the backward of '") + n.op + "' produced " + bad +
                          " in the gradient of its input " + std::to_string(e) + " ('" + in.op + "', shape " +
                          shape_str(in.grad.shape()) + ") from the gradient of its output " +
                          shape_str(value(k).shape()));
    }
}

template class Var<float>;
template class Var<double>;
template class Parameter<float>;
template class Parameter<double>;
template class Tape<float>;
template class Tape<double>;

}  // namespace recur
