// Fused recurrent cell math: the whole pointwise part of an LSTM or GRU step in one node
// (two for the LSTM, whose step has two outputs), instead of ~12 composed primitives.
//
// The gates' input part xg is read in place: either a (B, G) Var, or step t of a projected
// sequence (T, B, G) / (B, T, G), so the hoisted input projection needs no per-step copy.
// Its gradient is written straight into that step's rows of the sequence's gradient.
//
// Forward keeps the gate activations (node.saved) so backward evaluates no transcendental
// function. Rows run in parallel (OpenMP) above a grain size; each element is computed the
// same way whatever the thread count, so results do not depend on it.
#include <algorithm>
#include <vector>

#include <omp.h>
#include <xsimd/xsimd.hpp>

#include "common.hpp"

namespace recur {

namespace {

// Rows of the gates' input part: row b starts at base + b * stride (G elements).
struct GateRows {
    std::uint32_t node;
    std::size_t offset = 0;  // of row 0, in elements
    std::size_t stride = 0;  // between rows b and b + 1
};

// Where the input part of step `step` lies: iargs[0] = time axis (-1: a (B, G) Var), iargs[1] = step.
template <class T>
GateRows gate_rows(const Tape<T>& t, std::uint32_t x, std::int64_t time_axis, std::int64_t step) {
    const auto& s = t.value(x).shape();
    if (time_axis < 0) return {x, 0, s[1]};
    const std::size_t g = s[2], steps = s[time_axis], batch = s[1 - time_axis];
    const auto k = static_cast<std::size_t>(step);
    return time_axis == 0 ? GateRows{x, k * batch * g, g} : GateRows{x, k * g, steps * g};
}

// Checks of a fused cell's inputs; returns (B, H). xg: (B, G*H), or (T, B, G*H) / (B, T, G*H)
// with a step; hg: (B, G*H); state: (B, H).
template <class T>
std::pair<std::size_t, std::size_t> check_cell(const char* op, std::size_t gates, const Var<T>& xg,
                                               std::ptrdiff_t time_axis, std::size_t step, const Var<T>& hg,
                                               const Var<T>& state) {
    const Shape xs = xg.shape(), hs = hg.shape(), ss = state.shape();
    auto fail = [&](const std::string& why) {
        throw shape_error(std::string(op) + ": " + why + " (xg " + shape_str(xs) + ", hg " + shape_str(hs) +
                          ", state " + shape_str(ss) + ")");
    };
    if (ss.size() != 2) fail("the state must be (B, H)");
    const std::size_t batch = ss[0], hidden = ss[1];
    if (hs != Shape{batch, gates * hidden}) fail("hg must be (B, " + std::to_string(gates) + "H)");
    if (time_axis < 0) {
        if (xs != Shape{batch, gates * hidden}) fail("xg must be (B, " + std::to_string(gates) + "H)");
    } else {
        if (time_axis > 1) throw index_error(std::string(op) + ": time_axis must be 0 or 1, got " + std::to_string(time_axis));
        if (xs.size() != 3 || xs[1 - time_axis] != batch || xs[2] != gates * hidden)
            fail(std::string("a sequence xg must be ") + (time_axis == 0 ? "(T, B, " : "(B, T, ") + std::to_string(gates) + "H)");
        if (step >= xs[time_axis])
            throw index_error(std::string(op) + ": step " + std::to_string(step) + " is out of range for " +
                              std::to_string(xs[time_axis]) + " time steps");
    }
    return {batch, hidden};
}

// Rows in parallel when the work is large enough to pay for waking the threads. The test is
// ours, not an OpenMP `if` clause: libgomp enters a region (~2 us, a futex call) even when the
// clause is false, which would dominate small steps.
constexpr std::size_t parallel_grain = 1 << 15;  // elements

template <class F>
void for_rows(std::size_t rows, std::size_t row_elements, F f) {
    if (rows < 2 || rows * row_elements < parallel_grain || omp_get_max_threads() < 2) {
        for (std::size_t b = 0; b < rows; ++b) f(b);
        return;
    }
    const auto n = static_cast<std::ptrdiff_t>(rows);
#pragma omp parallel for schedule(static)
    for (std::ptrdiff_t b = 0; b < n; ++b) f(static_cast<std::size_t>(b));
}

// y[j] = act(a[j] + b[j]) for j < n, vectorised. act takes and returns a batch or a scalar.
template <class T, class Act>
void activate(T* y, const T* a, const T* b, std::size_t n, Act act) {
    using batch = xsimd::batch<T>;
    constexpr std::size_t w = batch::size;
    std::size_t j = 0;
    for (; j + w <= n; j += w) act(batch::load_unaligned(a + j) + batch::load_unaligned(b + j)).store_unaligned(y + j);
    for (; j < n; ++j) y[j] = act(a[j] + b[j]);
}

// σ(x) = 1 / (1 + e^-x): saturates to 0 or 1 for large |x| without overflow trouble.
constexpr auto sigmoid_fn = [](auto x) { return decltype(x)(1) / (decltype(x)(1) + xsimd::exp(-x)); };
constexpr auto tanh_fn = [](auto x) { return xsimd::tanh(x); };

// Adds row `src` (n elements) into the gradient targets: hg's gradient (which it initialises
// on first touch: `assign`) and the rows of xg's gradient.
template <class T>
void add_row(T* dst, const T* src, std::size_t n, bool assign) {
    if (assign) std::copy(src, src + n, dst);
    else for (std::size_t j = 0; j < n; ++j) dst[j] += src[j];
}

// Writes the gates' gradient (B, G*H), produced row by row by `row_grad(b, out)`, into xg's
// and hg's gradients (whichever needs one). `rows` locates xg.
template <class T, class RowGrad>
void scatter_gate_grad(Tape<T>& t, const GateRows& rows, std::uint32_t hg, std::size_t batch, std::size_t width,
                       RowGrad row_grad) {
    T* xgd = nullptr;
    T* hgd = nullptr;
    bool hg_assign = false;
    if (t.needs_grad(rows.node)) xgd = t.grad_ref(rows.node).zeroed().data() + rows.offset;
    if (t.needs_grad(hg)) {
        auto r = t.grad_ref(hg);
        hg_assign = r.beta() == T(0);
        hgd = r.buffer().data();
    }
    for_rows(batch, width, [&](std::size_t b) {
        thread_local std::vector<T> row;
        row.resize(width);
        row_grad(b, row.data());
        if (xgd) add_row(xgd + b * rows.stride, row.data(), width, false);
        if (hgd) add_row(hgd + b * width, row.data(), width, hg_assign);
    });
}

}  // namespace

// ---- lstm_pointwise --------------------------------------------------------------------------
// a = xg + hg (B, 4H) = [i | f | g | o] pre-activations;  i, f, o = σ(.), g = tanh(.)
// c' = f c + i g;  h' = o tanh(c')
// Backward, with dh' and dc' from the consumers (dc' also gets dh' o (1 - tanh²c')):
//   do = dh' tanh(c') o (1 - o);  di = dc' g i (1 - i);  df = dc' c f (1 - f);  dg = dc' i (1 - g²)
//   dc += dc' f;  dxg += [di df dg do];  dhg += [di df dg do]
// Two nodes: S (c', with the activations in saved) and O (h', with tanh c' in saved). O's
// backward does the work for both and marks S done; S does it alone (dh' = 0) when nothing
// reached h'.
// S inputs: xg, hg, c; iargs: time axis, step, done. O inputs: S, xg, hg, c.

// dh: dh' and tanh c' from the output node, or null when nothing reached h'.
template <class T>
static void lstm_backward_both(Tape<T>& t, std::uint32_t s, const T* dh, const T* tc) {
    const auto& sn = t.node(s);
    const std::uint32_t xg = t.input(s, 0), hg = t.input(s, 1), c = t.input(s, 2);
    const auto& cv = t.value(c);
    const std::size_t batch = cv.shape()[0], hidden = cv.shape()[1], width = 4 * hidden;
    const T* act = sn.saved.data();
    const T* cp = cv.data();
    const T* dcn = sn.has_grad ? sn.grad.data() : nullptr;                   // dc' from later steps
    T* dc = t.needs_grad(c) ? t.grad_ref(c).zeroed().data() : nullptr;
    scatter_gate_grad(t, gate_rows(t, xg, sn.iargs[0], sn.iargs[1]), hg, batch, width, [&](std::size_t b, T* out) {
        const T* a = act + b * width;
        const T *i = a, *f = a + hidden, *g = a + 2 * hidden, *o = a + 3 * hidden;
        for (std::size_t j = 0; j < hidden; ++j) {
            const std::size_t k = b * hidden + j;
            T dct = dcn ? dcn[k] : T(0);
            T dot = T(0);
            if (dh) {
                dct += dh[k] * o[j] * (T(1) - tc[k] * tc[k]);
                dot = dh[k] * tc[k] * o[j] * (T(1) - o[j]);
            }
            out[j] = dct * g[j] * i[j] * (T(1) - i[j]);
            out[hidden + j] = dct * cp[k] * f[j] * (T(1) - f[j]);
            out[2 * hidden + j] = dct * i[j] * (T(1) - g[j] * g[j]);
            out[3 * hidden + j] = dot;
            if (dc) dc[k] += dct * f[j];
        }
    });
}
template <class T>
static void lstm_state_backward(Tape<T>& t, std::uint32_t s) {
    auto& done = t.node(s).iargs[2];
    if (done) {  // the output node did both
        done = 0;
        return;
    }
    lstm_backward_both<T>(t, s, nullptr, nullptr);
}
template <class T>
static void lstm_output_backward(Tape<T>& t, std::uint32_t o) {
    const std::uint32_t s = t.input(o, 0);
    lstm_backward_both(t, s, t.node(o).grad.data(), t.node(o).saved.data());
    auto& sn = t.node(s);
    if (sn.has_grad) sn.iargs[2] = 1;  // S runs next in this sweep and skips (clearing the mark)
}

template <class T>
static LSTMPointwise<T> lstm_impl(const Var<T>& xg, std::ptrdiff_t time_axis, std::size_t step, const Var<T>& hg,
                                  const Var<T>& c) {
    Tape<T>& t = detail::tape_of("lstm_pointwise", xg, hg, c);
    const auto [batch, hidden] = check_cell("lstm_pointwise", 4, xg, time_axis, step, hg, c);
    const std::size_t width = 4 * hidden;
    const std::uint32_t s = t.push("lstm_pointwise", {xg.index(), hg.index(), c.index()}, &lstm_state_backward<T>);
    {
        auto& n = t.node(s);
        n.iargs = {time_axis, static_cast<std::int64_t>(step), 0, 0};
        n.saved.resize({batch, width});
        n.value.resize({batch, hidden});
    }
    const std::uint32_t o =
        t.push("lstm_pointwise", {s, xg.index(), hg.index(), c.index()}, &lstm_output_backward<T>);
    auto& on = t.node(o);
    on.value.resize({batch, hidden});
    on.saved.resize({batch, hidden});
    auto& sn = t.node(s);
    const GateRows rows = gate_rows(t, xg.index(), time_axis, static_cast<std::int64_t>(step));
    const T* x = t.value(xg.index()).data() + rows.offset;
    const T* hp = t.value(hg.index()).data();
    const T* cp = t.value(c.index()).data();
    T *act = sn.saved.data(), *cn = sn.value.data(), *h = on.value.data(), *tc = on.saved.data();
    for_rows(batch, width, [&](std::size_t b) {
        const T* xr = x + b * rows.stride;
        const T* hr = hp + b * width;
        T* a = act + b * width;
        activate(a, xr, hr, 2 * hidden, sigmoid_fn);                                  // i, f
        activate(a + 2 * hidden, xr + 2 * hidden, hr + 2 * hidden, hidden, tanh_fn);  // g
        activate(a + 3 * hidden, xr + 3 * hidden, hr + 3 * hidden, hidden, sigmoid_fn);  // o
        for (std::size_t j = 0; j < hidden; ++j) {
            const std::size_t k = b * hidden + j;
            cn[k] = a[hidden + j] * cp[k] + a[j] * a[2 * hidden + j];
        }
        T* tcr = tc + b * hidden;
        using batch_t = xsimd::batch<T>;
        std::size_t j = 0;
        for (; j + batch_t::size <= hidden; j += batch_t::size)
            xsimd::tanh(batch_t::load_unaligned(cn + b * hidden + j)).store_unaligned(tcr + j);
        for (; j < hidden; ++j) tcr[j] = xsimd::tanh(cn[b * hidden + j]);
        for (j = 0; j < hidden; ++j) h[b * hidden + j] = a[3 * hidden + j] * tcr[j];
    });
    return {t.handle(o), t.handle(s)};
}

template <class T>
LSTMPointwise<T> lstm_pointwise(const Var<T>& xg, const Var<T>& hg, const Var<T>& c) {
    return lstm_impl(xg, -1, 0, hg, c);
}
template <class T>
LSTMPointwise<T> lstm_pointwise(const Var<T>& xs, std::size_t time_axis, std::size_t step, const Var<T>& hg,
                                const Var<T>& c) {
    return lstm_impl(xs, static_cast<std::ptrdiff_t>(std::min<std::size_t>(time_axis, 2)), step, hg, c);
}

// ---- gru_pointwise ---------------------------------------------------------------------------
// xg = W_i x + b_i, hg = W_h h + b_h (B, 3H) = [r | z | n] parts
// r = σ(xg_r + hg_r), z = σ(xg_z + hg_z), n = tanh(xg_n + r hg_n);  h' = n + z (h - n)
// Backward with dh':  dz = dh' (h - n) z (1 - z);  dn = dh' (1 - z) (1 - n²);  dr = dn hg_n r (1 - r)
//   dh += dh' z;  dxg += [dr dz dn];  dhg += [dr dz dn r]
// saved = [r | z | n]; inputs xg, hg, h; iargs: time axis, step.

template <class T>
static void gru_backward(Tape<T>& t, std::uint32_t i) {
    const auto& node = t.node(i);
    const std::uint32_t xg = t.input(i, 0), hg = t.input(i, 1), h = t.input(i, 2);
    const auto& hv = t.value(h);
    const std::size_t batch = hv.shape()[0], hidden = hv.shape()[1], width = 3 * hidden;
    const T* act = node.saved.data();
    const T* hgv = t.value(hg).data();
    const T* hp = hv.data();
    const T* dy = node.grad.data();
    T* dh = t.needs_grad(h) ? t.grad_ref(h).zeroed().data() : nullptr;
    const GateRows rows = gate_rows(t, xg, node.iargs[0], node.iargs[1]);
    // xg's and hg's gradients differ only in the n part (dn vs dn r): write hg's by hand.
    T* xgd = t.needs_grad(xg) ? t.grad_ref(xg).zeroed().data() + rows.offset : nullptr;
    T* hgd = nullptr;
    bool hg_assign = false;
    if (t.needs_grad(hg)) {
        auto r = t.grad_ref(hg);
        hg_assign = r.beta() == T(0);
        hgd = r.buffer().data();
    }
    for_rows(batch, width, [&](std::size_t b) {
        thread_local std::vector<T> row;
        row.resize(width);
        const T* a = act + b * width;
        const T *r = a, *z = a + hidden, *n = a + 2 * hidden;
        const T* hn = hgv + b * width + 2 * hidden;
        T* out = row.data();
        for (std::size_t j = 0; j < hidden; ++j) {
            const std::size_t k = b * hidden + j;
            const T dn = dy[k] * (T(1) - z[j]) * (T(1) - n[j] * n[j]);
            out[j] = dn * hn[j] * r[j] * (T(1) - r[j]);
            out[hidden + j] = dy[k] * (hp[k] - n[j]) * z[j] * (T(1) - z[j]);
            out[2 * hidden + j] = dn;
            if (dh) dh[k] += dy[k] * z[j];
        }
        if (xgd) add_row(xgd + b * rows.stride, out, width, false);
        if (hgd) {
            for (std::size_t j = 0; j < hidden; ++j) out[2 * hidden + j] *= r[j];
            add_row(hgd + b * width, out, width, hg_assign);
        }
    });
}

template <class T>
static Var<T> gru_impl(const Var<T>& xg, std::ptrdiff_t time_axis, std::size_t step, const Var<T>& hg,
                       const Var<T>& h) {
    Tape<T>& t = detail::tape_of("gru_pointwise", xg, hg, h);
    const auto [batch, hidden] = check_cell("gru_pointwise", 3, xg, time_axis, step, hg, h);
    const std::size_t width = 3 * hidden;
    const std::uint32_t out = t.push("gru_pointwise", {xg.index(), hg.index(), h.index()}, &gru_backward<T>);
    auto& node = t.node(out);
    node.iargs = {time_axis, static_cast<std::int64_t>(step), 0, 0};
    node.saved.resize({batch, width});
    node.value.resize({batch, hidden});
    const GateRows rows = gate_rows(t, xg.index(), time_axis, static_cast<std::int64_t>(step));
    const T* x = t.value(xg.index()).data() + rows.offset;
    const T* hgv = t.value(hg.index()).data();
    const T* hp = t.value(h.index()).data();
    T *act = node.saved.data(), *y = node.value.data();
    for_rows(batch, width, [&](std::size_t b) {
        const T* xr = x + b * rows.stride;
        const T* hr = hgv + b * width;
        T* a = act + b * width;
        activate(a, xr, hr, 2 * hidden, sigmoid_fn);  // r, z
        T* n = a + 2 * hidden;
        for (std::size_t j = 0; j < hidden; ++j) n[j] = a[j] * hr[2 * hidden + j];  // r hg_n
        activate(n, xr + 2 * hidden, n, hidden, tanh_fn);                           // tanh(xg_n + r hg_n)
        for (std::size_t j = 0; j < hidden; ++j) {
            const std::size_t k = b * hidden + j;
            y[k] = n[j] + a[hidden + j] * (hp[k] - n[j]);
        }
    });
    return t.handle(out);
}

template <class T>
Var<T> gru_pointwise(const Var<T>& xg, const Var<T>& hg, const Var<T>& h) {
    return gru_impl(xg, -1, 0, hg, h);
}
template <class T>
Var<T> gru_pointwise(const Var<T>& xs, std::size_t time_axis, std::size_t step, const Var<T>& hg, const Var<T>& h) {
    return gru_impl(xs, static_cast<std::ptrdiff_t>(std::min<std::size_t>(time_axis, 2)), step, hg, h);
}

#define RECUR_RECURRENT(T)                                                                                     \
    template LSTMPointwise<T> lstm_pointwise(const Var<T>&, const Var<T>&, const Var<T>&);                     \
    template LSTMPointwise<T> lstm_pointwise(const Var<T>&, std::size_t, std::size_t, const Var<T>&,           \
                                             const Var<T>&);                                                    \
    template Var<T> gru_pointwise(const Var<T>&, const Var<T>&, const Var<T>&);                                \
    template Var<T> gru_pointwise(const Var<T>&, std::size_t, std::size_t, const Var<T>&, const Var<T>&);
RECUR_INSTANTIATE_FOR(RECUR_RECURRENT)

}  // namespace recur
