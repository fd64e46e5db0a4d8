// Indexing and masking primitives: embedding (gather rows by id), where (masked blend), gather,
// index_select (take along an axis), masked_fill.
#include "common.hpp"

namespace recur {

// ---- embedding: y[n, :] = W[ids[n], :];  dW[ids[n], :] += g[n, :] (repeated ids add up) ----
// W (V, E), ids any shape (N elements) -> y ids.shape + (E).
struct EmbeddingState {
    std::vector<std::size_t> ids;  // flat, checked in range
};
template <class T>
static void embedding_backward(Tape<T>& t, std::uint32_t i) {
    const auto& node = t.node(i);
    const std::uint32_t w = t.input(i, 0);
    const std::size_t e = t.value(w).shape()[1];
    T* dw = t.grad_ref(w).zeroed().data();
    const T* g = node.grad.data();
    const auto& ids = t.template saved_state<EmbeddingState>(i).ids;
    for (std::size_t n = 0; n < ids.size(); ++n) {
        T* row = dw + ids[n] * e;
        for (std::size_t c = 0; c < e; ++c) row[c] += g[n * e + c];
    }
}
template <class T>
Var<T> embedding(const Var<T>& weight, const xt::xarray<std::int64_t>& ids) {
    Tape<T>& t = detail::tape_of("embedding", weight);
    const Shape& ws = weight.shape();
    if (ws.size() != 2) throw shape_error("embedding: weight must be (V, E), got " + shape_str(ws));
    const std::size_t v = ws[0], e = ws[1];
    for (std::size_t n = 0; n < ids.size(); ++n) {
        const std::int64_t id = ids.data()[n];
        if (id < 0 || static_cast<std::size_t>(id) >= v)
            throw index_error("embedding: id " + std::to_string(id) + " at flat position " + std::to_string(n) +
                              " of ids " + shape_str(ids.shape()) + " is out of range for weight " + shape_str(ws));
    }
    Shape ys(ids.shape().begin(), ids.shape().end());
    ys.push_back(e);
    const std::uint32_t out = t.push("embedding", {weight.index()}, &embedding_backward<T>);
    t.template state<EmbeddingState>(out).ids.assign(ids.data(), ids.data() + ids.size());
    auto& node = t.node(out);
    t.output_value(out, ys);
    const T* wp = t.value(weight.index()).data();
    T* yp = node.value.data();
    for (std::size_t n = 0; n < ids.size(); ++n) {
        const T* row = wp + static_cast<std::size_t>(ids.data()[n]) * e;
        std::copy(row, row + e, yp + n * e);
    }
    return t.handle(out);
}

// ---- where: y = m * a + (1 - m) * b, m a constant mask (saved);  da += g m, db += g (1 - m) --
// m, a and b broadcast together (numpy rules); gradients are summed back to a's and b's shapes.
template <class T>
struct WhereState {
    xt::xarray<T> mask;
};
template <class T>
static void where_backward(Tape<T>& t, std::uint32_t i) {
    const auto& node = t.node(i);
    const auto& mask = t.template saved_state<WhereState<T>>(i).mask;
    const std::uint32_t a = t.input(i, 0), b = t.input(i, 1);
    if (t.needs_grad(a)) detail::accumulate(t, a, xt::xarray<T>(node.grad * mask));
    if (t.needs_grad(b)) detail::accumulate(t, b, xt::xarray<T>(node.grad * (T(1) - mask)));
}
template <class T>
Var<T> where(const xt::xarray<T>& mask, const Var<T>& a, const Var<T>& b) {
    Tape<T>& t = detail::tape_of("where", a, b);
    const Shape ms(mask.shape().begin(), mask.shape().end());
    const Shape ys = detail::broadcast_shapes("where", detail::broadcast_shapes("where", a.shape(), b.shape()), ms);
    const std::uint32_t out = t.push("where", {a.index(), b.index()}, &where_backward<T>);
    auto& kept = t.template state<WhereState<T>>(out).mask;
    kept.resize(mask.shape());  // the slot's kept buffer when the size matches
    std::copy(mask.data(), mask.data() + mask.size(), kept.data());
    auto& node = t.node(out);
    t.output_value(out, ys);
    xt::noalias(node.value) = mask * t.value(a.index()) + (T(1) - mask) * t.value(b.index());
    return t.handle(out);
}

// ---- gather / index_select: y[e] = x[src[e]];  dx[src[e]] += g[e] (repeats add up) ----------
// src is the flat position in x of each output element, worked out once in the forward.
struct TakeState {
    std::vector<std::size_t> source;  // (y.size()) flat positions in x
};
template <class T>
static void take_backward(Tape<T>& t, std::uint32_t i) {
    const auto& src = t.template saved_state<TakeState>(i).source;
    T* dx = t.grad_ref(t.input(i, 0)).zeroed().data();
    const T* g = t.node(i).grad.data();
    for (std::size_t e = 0; e < src.size(); ++e) dx[src[e]] += g[e];
}
// The node of y (shape ys) = x at positions source(state) filled in by `fill`.
template <class T, class Fill>
static Var<T> take(const char* op, Tape<T>& t, const Var<T>& x, const Shape& ys, Fill fill) {
    const std::uint32_t out = t.push(op, {x.index()}, &take_backward<T>);
    auto& src = t.template state<TakeState>(out).source;
    src.resize(detail::numel(ys));
    fill(src);
    const T* xp = t.value(x.index()).data();
    T* yp = t.output_value(out, ys).data();
    for (std::size_t e = 0; e < src.size(); ++e) yp[e] = xp[src[e]];
    return t.handle(out);
}
// index_error naming `op` unless every index is in [0, n).
static void check_indices(const char* op, const xt::xarray<std::int64_t>& index, std::size_t n, std::ptrdiff_t axis,
                          const Shape& xs) {
    for (std::size_t e = 0; e < index.size(); ++e) {
        const std::int64_t v = index.data()[e];
        if (v < 0 || static_cast<std::size_t>(v) >= n)
            throw index_error(std::string(op) + ": index " + std::to_string(v) + " at flat position " +
                              std::to_string(e) + " of index " + shape_str(index.shape()) +
                              " is out of range for axis " + std::to_string(axis) + " of " + shape_str(xs));
    }
}

template <class T>
Var<T> gather(const Var<T>& x, std::ptrdiff_t axis, const xt::xarray<std::int64_t>& index) {
    Tape<T>& t = detail::tape_of("gather", x);
    const Shape xs = x.shape();
    const std::size_t ax = detail::normalize_axis("gather", axis, xs);
    const Shape is(index.shape().begin(), index.shape().end());
    bool fits = is.size() == xs.size();
    for (std::size_t k = 0; fits && k < is.size(); ++k) fits = k == ax || is[k] <= xs[k];
    if (!fits)
        throw shape_error("gather: index " + shape_str(is) + " must have the rank of x " + shape_str(xs) +
                          " and extents no larger off axis " + std::to_string(axis));
    check_indices("gather", index, xs[ax], axis, xs);
    // Element e of y has multi-index m (in index's shape); its source is m with m[ax] = index[e],
    // in x's strides.
    return take("gather", t, x, is, [&](std::vector<std::size_t>& src) {
        std::vector<std::size_t> stride(xs.size(), 1), m(xs.size(), 0);
        for (std::size_t k = xs.size(); k-- > 1;) stride[k - 1] = stride[k] * xs[k];
        for (std::size_t e = 0; e < src.size(); ++e) {
            std::size_t pos = 0;
            for (std::size_t k = 0; k < xs.size(); ++k)
                pos += (k == ax ? static_cast<std::size_t>(index.data()[e]) : m[k]) * stride[k];
            src[e] = pos;
            for (std::size_t k = is.size(); k-- > 0;) {  // next multi-index
                if (++m[k] < is[k]) break;
                m[k] = 0;
            }
        }
    });
}

template <class T>
Var<T> index_select(const Var<T>& x, std::ptrdiff_t axis, const xt::xarray<std::int64_t>& index) {
    Tape<T>& t = detail::tape_of("index_select", x);
    const Shape xs = x.shape();
    const std::size_t ax = detail::normalize_axis("index_select", axis, xs);
    if (index.dimension() != 1) throw shape_error("index_select: index must be 1-D, got " + shape_str(index.shape()));
    check_indices("index_select", index, xs[ax], axis, xs);
    Shape ys = xs;
    ys[ax] = index.size();
    const detail::AxisView v = detail::around(xs, ax);
    return take("index_select", t, x, ys, [&](std::vector<std::size_t>& src) {
        std::size_t e = 0;
        for (std::size_t o = 0; o < v.outer; ++o)
            for (std::size_t r = 0; r < index.size(); ++r) {
                const std::size_t row = (o * v.n + static_cast<std::size_t>(index.data()[r])) * v.inner;
                for (std::size_t j = 0; j < v.inner; ++j) src[e++] = row + j;
            }
    });
}

// ---- masked_fill: y = m ? value : x, m a constant 0/1 mask;  dx += g * (1 - m) -----------------
struct FillState {
    std::vector<std::uint8_t> filled;  // (x.size()) broadcast mask
};
template <class T>
static void masked_fill_backward(Tape<T>& t, std::uint32_t i) {
    const auto& filled = t.template saved_state<FillState>(i).filled;
    T* dx = t.grad_ref(t.input(i, 0)).zeroed().data();
    const T* g = t.node(i).grad.data();
    for (std::size_t e = 0; e < filled.size(); ++e)
        if (!filled[e]) dx[e] += g[e];
}
template <class T>
Var<T> masked_fill(const Var<T>& x, const xt::xarray<T>& mask, Scalar<T> value) {
    Tape<T>& t = detail::tape_of("masked_fill", x);
    const Shape xs = x.shape();
    std::vector<std::uint8_t> flags = detail::broadcast_flags("masked_fill", mask, xs);
    const std::uint32_t out = t.push("masked_fill", {x.index()}, &masked_fill_backward<T>);
    auto& filled = t.template state<FillState>(out).filled;
    filled = std::move(flags);
    const T* xp = t.value(x.index()).data();
    T* yp = t.output_value(out, xs).data();
    for (std::size_t e = 0; e < filled.size(); ++e) yp[e] = filled[e] ? value : xp[e];
    return t.handle(out);
}

#define RECUR_INDEX(T)                                                                            \
    template Var<T> embedding(const Var<T>&, const xt::xarray<std::int64_t>&);                    \
    template Var<T> where(const xt::xarray<T>&, const Var<T>&, const Var<T>&);                    \
    template Var<T> gather(const Var<T>&, std::ptrdiff_t, const xt::xarray<std::int64_t>&);       \
    template Var<T> index_select(const Var<T>&, std::ptrdiff_t, const xt::xarray<std::int64_t>&); \
    template Var<T> masked_fill(const Var<T>&, const xt::xarray<T>&, Scalar<T>);
RECUR_INSTANTIATE_FOR(RECUR_INDEX)

}  // namespace recur
