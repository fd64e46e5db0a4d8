// Shape primitives: reshape, permute (transpose), slice (chunk), select, concat, stack.
// Around an axis an array is (outer, n, inner) row-major (detail::around); slice, select, concat and
// stack all move blocks of `inner` contiguous elements between two such layouts (move_rows below).
#include <numeric>

#include <xtensor/xmanipulation.hpp>

#include "common.hpp"
#include "op_states.hpp"

namespace recur {

using detail::around;
using detail::AxisView;

namespace {

// For o < outer, k < count: dst[o, dst_off + k, :] (=|+=) src[o, src_off + k, :], rows of
// `inner` elements; src has src_n rows per outer index, dst has dst_n.
template <class T>
void move_rows(const T* src, std::size_t src_n, std::size_t src_off, T* dst, std::size_t dst_n, std::size_t dst_off,
               std::size_t outer, std::size_t count, std::size_t inner, bool accumulate) {
    for (std::size_t o = 0; o < outer; ++o) {
        const T* s = src + (o * src_n + src_off) * inner;
        T* d = dst + (o * dst_n + dst_off) * inner;
        const std::size_t len = count * inner;
        if (accumulate)
            for (std::size_t e = 0; e < len; ++e) d[e] += s[e];
        else
            std::copy(s, s + len, d);
    }
}

// Adds a contiguous gradient of the same number of elements into input i (reshape).
template <class T>
void add_flat(Tape<T>& t, std::uint32_t i, const T* g) {
    auto r = t.grad_ref(i);
    const bool first = r.beta() == T(0);
    T* d = r.buffer().data();
    const std::size_t n = r.buffer().size();
    if (first)
        std::copy(g, g + n, d);
    else
        for (std::size_t e = 0; e < n; ++e) d[e] += g[e];
}

}  // namespace

// ---- reshape: same elements, new shape;  dx += g (flat) ------------------------------------
template <class T>
static void reshape_backward(Tape<T>& t, std::uint32_t i) {
    add_flat(t, t.input(i, 0), t.node(i).grad.data());
}
template <class T>
Var<T> reshape(const Var<T>& x, const std::vector<std::ptrdiff_t>& shape) {
    Tape<T>& t = detail::tape_of("reshape", x);
    const Shape xs = x.shape();
    const std::size_t total = detail::numel(xs);
    Shape ys(shape.size());
    std::size_t known = 1;
    std::ptrdiff_t infer = -1;
    for (std::size_t k = 0; k < shape.size(); ++k) {
        if (shape[k] == -1 && infer < 0) {
            infer = static_cast<std::ptrdiff_t>(k);
        } else if (shape[k] < 0) {
            throw shape_error("reshape: invalid extent " + std::to_string(shape[k]) + " (only one -1 is allowed)");
        } else {
            ys[k] = static_cast<std::size_t>(shape[k]);
            known *= ys[k];
        }
    }
    if (infer >= 0) {
        if (known == 0 || total % known != 0)
            throw shape_error("reshape: cannot infer -1 to reshape " + shape_str(xs) + " (" + std::to_string(total) +
                              " elements)");
        ys[static_cast<std::size_t>(infer)] = total / known;
    }
    if (detail::numel(ys) != total)
        throw shape_error("reshape: cannot reshape " + shape_str(xs) + " (" + std::to_string(total) +
                          " elements) into " + shape_str(ys));
    const std::uint32_t out = t.push("reshape", {x.index()}, &reshape_backward<T>);
    auto& y = t.output_value(out, ys);
    const T* xp = t.value(x.index()).data();
    std::copy(xp, xp + total, y.data());
    return t.handle(out);
}

// ---- permute: y = x with axes reordered, y axis k = x axis dims[k];  dx += g permuted back ---
template <class T>
static void permute_backward(Tape<T>& t, std::uint32_t i) {
    const auto& inverse = t.template saved_state<PermuteState>(i).inverse;
    t.grad_ref(t.input(i, 0)).add(xt::transpose(t.node(i).grad, inverse));
}
template <class T>
Var<T> permute(const Var<T>& x, const std::vector<std::ptrdiff_t>& dims) {
    Tape<T>& t = detail::tape_of("permute", x);
    const Shape xs = x.shape();
    if (dims.size() != xs.size())
        throw shape_error("permute: " + std::to_string(dims.size()) + " axes given for an input of shape " +
                          shape_str(xs));
    std::vector<std::size_t> perm(dims.size());
    std::vector<bool> seen(dims.size(), false);
    for (std::size_t k = 0; k < dims.size(); ++k) {
        perm[k] = detail::normalize_axis("permute", dims[k], xs);
        if (seen[perm[k]]) throw index_error("permute: axis " + std::to_string(dims[k]) + " appears twice");
        seen[perm[k]] = true;
    }
    const std::uint32_t out = t.push("permute", {x.index()}, &permute_backward<T>);
    auto& inverse = t.template state<PermuteState>(out).inverse;
    inverse.resize(perm.size());
    for (std::size_t k = 0; k < perm.size(); ++k) inverse[perm[k]] = k;
    auto& node = t.node(out);
    Shape ys(xs.size());
    for (std::size_t k = 0; k < perm.size(); ++k) ys[k] = xs[perm[k]];
    t.output_value(out, ys);
    xt::noalias(node.value) = xt::transpose(t.value(x.index()), perm);
    return t.handle(out);
}
template <class T>
Var<T> transpose(const Var<T>& x, std::ptrdiff_t axis0, std::ptrdiff_t axis1) {
    x.check("transpose");
    const std::size_t nd = x.dim();
    std::vector<std::ptrdiff_t> dims(nd);
    std::iota(dims.begin(), dims.end(), std::ptrdiff_t(0));
    const Shape xs = x.shape();
    std::swap(dims[detail::normalize_axis("transpose", axis0, xs)],
              dims[detail::normalize_axis("transpose", axis1, xs)]);
    return permute(x, dims);
}

// ---- slice / select: y[o, k, j] = x[o, start + k, j];  dx[o, start + k, j] += g[o, k, j] -----
// select is a slice of one element whose axis is dropped.
template <class T>
static void slice_backward(Tape<T>& t, std::uint32_t i) {
    const auto& node = t.node(i);
    const std::uint32_t x = t.input(i, 0);
    const auto s = t.template saved_state<SliceState>(i);
    const AxisView v = around(t.value(x).shape(), s.axis);
    move_rows(node.grad.data(), s.count, 0, t.grad_ref(x).zeroed().data(), v.n, s.start, v.outer, s.count, v.inner,
              true);
}
template <class T>
static Var<T> take_rows(const char* op, Tape<T>& t, const Var<T>& x, std::size_t axis, std::size_t start,
                        std::size_t count, bool drop_axis) {
    const Shape xs = x.shape();
    Shape ys;
    for (std::size_t k = 0; k < xs.size(); ++k)
        if (k != axis)
            ys.push_back(xs[k]);
        else if (!drop_axis)
            ys.push_back(count);
    const std::uint32_t out = t.push(op, {x.index()}, &slice_backward<T>);
    t.template state<SliceState>(out) = {axis, start, count};
    auto& node = t.node(out);
    t.output_value(out, ys);
    const AxisView v = around(xs, axis);
    move_rows(t.value(x.index()).data(), v.n, start, node.value.data(), count, 0, v.outer, count, v.inner, false);
    return t.handle(out);
}
template <class T>
Var<T> slice(const Var<T>& x, std::ptrdiff_t axis, std::ptrdiff_t start, std::ptrdiff_t stop) {
    Tape<T>& t = detail::tape_of("slice", x);
    const std::size_t ax = detail::normalize_axis("slice", axis, x.shape());
    const auto n = static_cast<std::ptrdiff_t>(x.shape()[ax]);
    auto clamp = [n](std::ptrdiff_t v) { return std::clamp(v < 0 ? v + n : v, std::ptrdiff_t(0), n); };
    const std::ptrdiff_t b = clamp(start), e = std::max(clamp(stop), b);
    return take_rows("slice", t, x, ax, static_cast<std::size_t>(b), static_cast<std::size_t>(e - b), false);
}
template <class T>
Var<T> select(const Var<T>& x, std::ptrdiff_t axis, std::ptrdiff_t index) {
    Tape<T>& t = detail::tape_of("select", x);
    const std::size_t ax = detail::normalize_axis("select", axis, x.shape());
    const auto n = static_cast<std::ptrdiff_t>(x.shape()[ax]);
    if (index < -n || index >= n)
        throw index_error("select: index " + std::to_string(index) + " is out of range for axis " +
                          std::to_string(axis) + " of shape " + shape_str(x.shape()));
    return take_rows("select", t, x, ax, static_cast<std::size_t>(index < 0 ? index + n : index), 1, true);
}

// ---- chunk: n slices of ceil(d / n) along the axis (PyTorch: fewer if d is small) -----------
template <class T>
std::vector<Var<T>> chunk(const Var<T>& x, std::size_t n, std::ptrdiff_t axis) {
    x.check("chunk");
    if (n == 0) throw value_error("chunk: the number of chunks must be positive");
    const std::size_t ax = detail::normalize_axis("chunk", axis, x.shape());
    const std::size_t d = x.shape()[ax];
    const std::size_t size = std::max<std::size_t>(1, (d + n - 1) / n);
    std::vector<Var<T>> pieces;
    for (std::size_t b = 0; b < d; b += size)
        pieces.push_back(
            slice(x, axis, static_cast<std::ptrdiff_t>(b), static_cast<std::ptrdiff_t>(std::min(d, b + size))));
    return pieces;
}

// ---- concat / stack: y[o, off_k + m, j] = x_k[o, m, j];  dx_k[o, m, j] += g[o, off_k + m, j] --
// stack views each input as (outer, 1, inner) around the new axis.
template <class T>
static void join_backward(Tape<T>& t, std::uint32_t i) {
    const auto& node = t.node(i);
    const auto [axis, new_axis] = t.template saved_state<JoinState>(i);
    const AxisView out = around(node.value.shape(), axis);
    std::size_t offset = 0;
    for (std::uint32_t k = 0; k < node.num_inputs; ++k) {
        const std::uint32_t x = t.input(i, k);
        const std::size_t rows = new_axis ? 1 : t.value(x).shape()[axis];
        if (t.needs_grad(x))
            move_rows(node.grad.data(), out.n, offset, t.grad_ref(x).zeroed().data(), rows, 0, out.outer, rows,
                      out.inner, true);
        offset += rows;
    }
}
template <class T>
static Var<T> join(const char* op, const std::vector<Var<T>>& xs, std::ptrdiff_t axis, bool new_axis) {
    Tape<T>& t = detail::tape_of(op, xs);
    const Shape first = xs.front().shape();
    const std::size_t ax = detail::normalize_axis(op, axis, first, new_axis ? 1 : 0);
    Shape ys;
    for (std::size_t k = 0; k <= first.size(); ++k) {
        if (k == ax) ys.push_back(new_axis ? xs.size() : 0);
        if (k < first.size() && (k != ax || new_axis)) ys.push_back(first[k]);
    }
    std::vector<std::uint32_t> inputs;
    inputs.reserve(xs.size());
    for (const auto& x : xs) {
        const Shape& s = x.shape();
        bool ok = s.size() == first.size();
        for (std::size_t k = 0; ok && k < s.size(); ++k) ok = s[k] == first[k] || (!new_axis && k == ax);
        if (!ok) {
            std::string all;
            for (const auto& v : xs) all += (all.empty() ? "" : ", ") + shape_str(v.shape());
            throw shape_error(std::string(op) + ": inputs must have " +
                              (new_axis ? "equal shapes" : "equal shapes except along axis " + std::to_string(axis)) +
                              ", got " + all);
        }
        if (!new_axis) ys[ax] += s[ax];
        inputs.push_back(x.index());
    }
    const std::uint32_t out = t.push(op, inputs, &join_backward<T>);
    t.template state<JoinState>(out) = {ax, new_axis};
    auto& node = t.node(out);
    t.output_value(out, ys);
    const AxisView v = around(ys, ax);
    std::size_t offset = 0;
    for (const auto& x : xs) {
        const std::size_t rows = new_axis ? 1 : t.value(x.index()).shape()[ax];
        move_rows(t.value(x.index()).data(), rows, 0, node.value.data(), v.n, offset, v.outer, rows, v.inner, false);
        offset += rows;
    }
    return t.handle(out);
}
template <class T>
Var<T> concat(const std::vector<Var<T>>& xs, std::ptrdiff_t axis) {
    return join("concat", xs, axis, false);
}
template <class T>
Var<T> stack(const std::vector<Var<T>>& xs, std::ptrdiff_t axis) {
    return join("stack", xs, axis, true);
}

#define RECUR_SHAPE(T)                                                                    \
    template Var<T> reshape(const Var<T>&, const std::vector<std::ptrdiff_t>&);           \
    template Var<T> transpose(const Var<T>&, std::ptrdiff_t, std::ptrdiff_t);             \
    template Var<T> permute(const Var<T>&, const std::vector<std::ptrdiff_t>&);           \
    template Var<T> slice(const Var<T>&, std::ptrdiff_t, std::ptrdiff_t, std::ptrdiff_t); \
    template std::vector<Var<T>> chunk(const Var<T>&, std::size_t, std::ptrdiff_t);       \
    template Var<T> concat(const std::vector<Var<T>>&, std::ptrdiff_t);                   \
    template Var<T> stack(const std::vector<Var<T>>&, std::ptrdiff_t);                    \
    template Var<T> select(const Var<T>&, std::ptrdiff_t, std::ptrdiff_t);
RECUR_INSTANTIATE_FOR(RECUR_SHAPE)

}  // namespace recur
