// Indexing and masking primitives: embedding (gather rows by id) and where (masked blend).
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
    if (ws.size() != 2)
        throw shape_error("embedding: weight must be (V, E), got " + shape_str(ws));
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

#define RECUR_INDEX(T)                                                                \
    template Var<T> embedding(const Var<T>&, const xt::xarray<std::int64_t>&);        \
    template Var<T> where(const xt::xarray<T>&, const Var<T>&, const Var<T>&);
RECUR_INSTANTIATE_FOR(RECUR_INDEX)

}  // namespace recur
