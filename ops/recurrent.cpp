// Fused recurrent cells. Two forms per cell:
//   *_pointwise: the gate math of one step from its two pre-activation parts (xg, hg);
//   *_step:      a whole step: the recurrent GEMM h W_hh^T + b_hh, the input part read in place
//                from step t of the hoisted projection (T, B, G) / (B, T, G), and the gate math.
// Each is one node (the LSTM's with two outputs, h' and c') instead of ~12 composed
// primitives. A recorded node keeps only the gate activations (FusedState) for backward, which
// then evaluates one tanh (of c', LSTM) and no other transcendental function; the gates'
// gradient lives in per-thread scratch, never per step. Unrecorded (inference), the gates live
// in per-thread scratch too. Rows run in parallel (OpenMP) above a grain
// size; each element of the gate math is computed the same way whatever the thread count.
// Letters: B batch, T time, H hidden width, H_out output width (H, or P with a projection),
// G gate width (4H LSTM, 3H GRU, H RNN).
#include <algorithm>
#include <array>
#include <type_traits>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "common.hpp"
#include "gate_product.hpp"
#include "normalization.hpp"
#include "packed_gemm.hpp"
#include "recurrent_rows.hpp"

namespace recur {

namespace {

// What a recorded fused node keeps for its backward.
template <class T>
struct FusedState {
    // LSTM (B, 4H) [i f g o]; GRU pointwise (B, 3H) [r z n], GRU step (B, 4H) [r z n hg_n]
    xt::xarray<T> gates;
    bool step_form = false;  // *_step (inputs xs, h, [c,] w_hh[, b_hh][, h_mask]) or *_pointwise
    bool has_mask = false;  // step form: the last input is a recurrent dropout mask (B, H_out)
    std::size_t time_axis = 0, step = 0;
};

// Rows of the gates' input part: row b starts at offset + b * stride (G elements).
struct GateRows {
    std::uint32_t node;
    std::size_t offset = 0;  // of row 0, in elements
    std::size_t stride = 0;  // between rows b and b + 1
    std::size_t step = 0;  // which time step (slice) of the sequence
    SliceLayout layout{};  // the sequence as slices (for its gradient)
};

// Step `step` of a projected sequence (T, B, G) for time axis 0 or (B, T, G) for 1.
template <class T>
GateRows sequence_rows(const Tape<T>& t, std::uint32_t xs, std::int64_t time_axis, std::int64_t step) {
    const auto& s = t.value(xs).shape();
    const std::size_t g = s[2], steps = s[time_axis], batch = s[1 - time_axis];
    const auto k = static_cast<std::size_t>(step);
    const std::size_t slice_step = time_axis == 0 ? batch * g : g, row_stride = time_axis == 0 ? g : steps * g;
    return {xs, k * slice_step, row_stride, k, {steps, slice_step, row_stride, batch, g}};
}

// The rows of a step-form node i's step in its sequence (input 0), from its state's time axis and
// step.
template <class T, class State>
GateRows step_rows(const Tape<T>& t, std::uint32_t i, const State& state) {
    return sequence_rows(t, t.input(i, 0), static_cast<std::int64_t>(state.time_axis),
                         static_cast<std::int64_t>(state.step));
}

// shape_error naming `op` and every input shape unless `ok` (the message is built only then).
struct ShapeCheck {
    const char* op;
    std::initializer_list<std::pair<const char*, const Shape*>> inputs;  // name, shape (null: absent)
    template <class... Parts>
    void require(bool ok, const Parts&... what) const {
        if (ok) return;
        std::string shapes;
        for (const auto& [name, shape] : inputs)
            if (shape) shapes += (shapes.empty() ? "" : ", ") + std::string(name) + " " + shape_str(*shape);
        throw shape_error((std::string(op) + ": " + ... + what) + " (" + shapes + ")");
    }
};

// Checks of a pointwise form: xg, hg (B, G) and a state (B, H); returns (B, H).
template <class T>
std::pair<std::size_t, std::size_t> check_pointwise(const char* op, std::size_t gates, const Var<T>& xg,
                                                    const Var<T>& hg, const Var<T>& state) {
    const Shape xs = xg.shape(), hs = hg.shape(), ss = state.shape();
    const ShapeCheck c{op, {{"xg", &xs}, {"hg", &hs}, {"state", &ss}}};
    c.require(ss.size() == 2, "the state must be (B, H)");
    const char* gh = gates == 4 ? "4H" : "3H";
    c.require(hs == Shape{ss[0], gates * ss[1]}, "hg must be (B, ", gh, ")");
    c.require(xs == Shape{ss[0], gates * ss[1]}, "xg must be (B, ", gh, ")");
    return {ss[0], ss[1]};
}

// Checks of a step form: xs (T, B, G) / (B, T, G) (or (T, B, I) / (B, T, I) for a sequence
// that projects its steps itself: x_width = I), h (B, H_out), the cell state c (B, H) (LSTM;
// the GRU's state is h), w (G, H_out), b (G) if defined; returns (B, H).
template <class T>
std::pair<std::size_t, std::size_t> check_step(const char* op, std::size_t gates, const Var<T>& xs,
                                               std::size_t time_axis, std::size_t step, const Var<T>& h,
                                               const Var<T>& c, const Var<T>& w, const Var<T>& b,
                                               std::size_t x_width = 0) {
    const Shape xsh = xs.shape(), hs = h.shape(), cs = c.shape(), ws = w.shape();
    const Shape bs = b.defined() ? b.shape() : Shape{};
    const bool lstm = gates == 4;  // the GRU passes h as its state
    const ShapeCheck k{
        op,
        {{"xs", &xsh}, {"h", &hs}, {"c", lstm ? &cs : nullptr}, {"w_hh", &ws}, {"b_hh", b.defined() ? &bs : nullptr}}};
    if (time_axis > 1)
        throw index_error(std::string(op) + ": time_axis must be 0 or 1, got " + std::to_string(time_axis));
    k.require(hs.size() == 2 && cs.size() == 2 && cs[0] == hs[0], "h must be (B, H_out) and the state (B, H)");
    const std::size_t batch = cs[0], hidden = cs[1], g = gates * hidden;
    const char* gh = gates == 4 ? "4H" : "3H";
    k.require(xsh.size() == 3 && xsh[1 - time_axis] == batch && xsh[2] == (x_width ? x_width : g), "xs must be ",
              time_axis == 0 ? "(T, B, " : "(B, T, ", x_width ? "I" : gh, ")");
    k.require(ws == Shape{g, hs[1]}, "w_hh must be (", gh, ", H_out)");
    k.require(!b.defined() || bs == Shape{g}, "b_hh must be (", gh, ",)");
    if (step >= xsh[time_axis])
        throw index_error(std::string(op) + ": step " + std::to_string(step) + " is out of range for " +
                          std::to_string(xsh[time_axis]) + " time steps");
    return {batch, hidden};
}

// Rows in parallel when the work is large enough to pay for waking the threads.
constexpr std::size_t parallel_grain = 1 << 15;  // elements

template <class F>
void for_rows(std::size_t rows, std::size_t row_elements, F f) {
    if (rows < 2 || detail::threads_for(double(rows * row_elements), parallel_grain) < 2) {
        for (std::size_t b = 0; b < rows; ++b) f(b);
        return;
    }
    const auto n = static_cast<std::ptrdiff_t>(rows);
#pragma omp parallel for schedule(static)
    for (std::ptrdiff_t b = 0; b < n; ++b) f(static_cast<std::size_t>(b));
}

using detail::scratch;

// dst = src (assign) or dst += src, n elements.
template <class T>
void add_row(T* dst, const T* src, std::size_t n, bool assign) {
    if (assign)
        std::copy(src, src + n, dst);
    else
        for (std::size_t j = 0; j < n; ++j) dst[j] += src[j];
}

// Adds g (B, width), row by row, into the gradient of node i: a (B, width) Var (rows = null)
// or the rows of one step of a sequence (a slice of its gradient: written, not added, when no
// other step wrote it yet, so the sequence's gradient is never zero-filled first).
template <class T>
void add_gate_grad(Tape<T>& t, std::uint32_t i, const GateRows* rows, const T* g, std::size_t batch,
                   std::size_t width) {
    if (!t.needs_grad(i)) return;
    if (rows == nullptr) {
        auto r = t.grad_ref(i);
        const bool assign = r.beta() == T(0);
        add_row(r.buffer().data(), g, batch * width, assign);
        return;
    }
    bool fresh = false;
    T* d = t.slice_grad(i, rows->layout, rows->step, fresh) + rows->offset;
    for (std::size_t b = 0; b < batch; ++b) add_row(d + b * rows->stride, g + b * width, width, fresh);
}

// The recurrent product's forward and backward, for a step form:
//   pre (B, G) = [x rows] + b + h w^T;  dh += dpre w;  dw += dpre^T h;  db += column sums of dpre
// The forward multiplies by w^T (H_out, G) and the backward by w, each made once per weight
// update, not once per step (weight_product below).
// pre (B, G) = rows of x (row r at x + r * stride) + bias (G, or null).
template <class T>
void rows_plus_bias(const T* x, std::size_t stride, const T* bias, T* pre, std::size_t batch, std::size_t g) {
    for (std::size_t r = 0; r < batch; ++r) {
        const T* xr = x + r * stride;
        T* p = pre + r * g;
        if (bias)
            for (std::size_t j = 0; j < g; ++j) p[j] = xr[j] + bias[j];
        else
            std::copy(xr, xr + g, p);
    }
}

// c (m x n) [+]= a (m x k, rows lda apart; k when 0) op(w) for node w of the tape: op(w) = w^T (w is n x k: the
// forward's h w_hh^T) or w (k x n: the backward's dpre w_hh). bf16: the packed weight (packed_gemm, packed once per
// weight update); f32: the same for large forward products, else detail::gemm (the small kernel or dnnl_sgemm) on the
// transposed copy (Tape::transposed); double: detail::gemm.
// With a bias (n, only without accumulate): c = a op(w) + bias on every row, through the packed
// matmul's bias argument where it runs (c written once), else c = the bias rows, then += a op(w).
template <class T>
void weight_product(Tape<T>& t, std::uint32_t w, bool transpose_w, std::size_t m, std::size_t n, std::size_t k,
                    const T* a, T* c, bool accumulate, std::size_t lda = 0, const T* bias = nullptr) {
    if (lda == 0) lda = k;  // a's rows are contiguous unless said otherwise
    if (detail::packed_weight_product(t, w, transpose_w, m, n, k, a, lda, accumulate, c, n, bias)) return;
    if (bias) {
        detail::bias_rows(c, m, n, n, bias);
        accumulate = true;
    }
    const T* b = transpose_w ? t.transposed(w).data() : t.value(w).data();
    detail::gemm<T>(false, false, m, n, k, T(1), a, lda, b, n, accumulate ? T(1) : T(0), c, n);
}

// The left operand of the recurrent product: h, or h ⊙ mask (recurrent dropout, mask (B, H_out))
// in scratch slot 1.
template <class T>
const T* masked_h(Tape<T>& t, std::uint32_t h, const std::uint32_t* mask) {
    const auto& hv = t.value(h);
    if (!mask) return hv.data();
    T* out = scratch<T, 1>(hv.size());
    const T* m = t.value(*mask).data();
    for (std::size_t k = 0; k < hv.size(); ++k) out[k] = hv.data()[k] * m[k];
    return out;
}

template <class T>
void recurrent_forward(Tape<T>& t, const GateRows& x, std::uint32_t h, std::uint32_t w, const std::uint32_t* b, T* pre,
                       std::size_t batch, std::size_t g, const std::uint32_t* mask = nullptr) {
    rows_plus_bias(t.value(x.node).data() + x.offset, x.stride, b ? t.value(*b).data() : static_cast<const T*>(nullptr),
                   pre, batch, g);
    const std::size_t hout = t.value(h).shape()[1];
    weight_product(t, w, true, batch, g, hout, masked_h(t, h, mask), pre, true);
}

// dw (g x n) = a^T b + beta dw, a (k x g, rows lda apart) and b (k x n): the recurrent weight's
// gradient; bf16 when the tape's policy and the product's size say so (bf16_weight_grad), else
// detail::gemm.
// Under bf16 the steps' rows are deferred (Tape::add_product_grad) and summed a few thousand
// rows at a time, rather than one product of B rows per step that reads and writes all of dw:
// measured one core, p10 of 30, bf16 training S LSTM 5.84 -> 5.49 ms, S GRU 4.79 -> 4.49; at M
// within the noise (LSTM 76.5 -> 76.8, GRU 57.4 -> 57.4). Not in f32: there the per-step
// product runs near the core's peak already and the copies cost more (S LSTM 6.82 -> 6.94 ms,
// M LSTM 156 -> 167).
template <class T>
void weight_grad_rows(Tape<T>& t, std::size_t g, std::size_t n, std::size_t k, const T* a, std::size_t lda, const T* b,
                      T beta, T* dw) {
    if (!detail::bf16_weight_grad(t, g, n, k, a, lda, b, n, beta != T(0), dw, n))
        detail::gemm<T>(true, false, g, n, k, T(1), a, lda, b, n, beta, dw, n);
}
// The same with a's rows contiguous: the product the tape runs over deferred rows (ProductGradFn).
template <class T>
void weight_grad_product(Tape<T>& t, std::size_t g, std::size_t n, std::size_t k, const T* a, const T* b, T beta,
                         T* dw) {
    weight_grad_rows(t, g, n, k, a, g, b, beta, dw);
}

// dpre (B, G): rows dpre_stride apart. With a mask m (recurrent dropout): dh += (dpre w) ⊙ m;
// dw += dpre^T (h ⊙ m).
template <class T>
void recurrent_backward(Tape<T>& t, std::uint32_t h, std::uint32_t w, const std::uint32_t* b, const T* dpre,
                        std::size_t dpre_stride, std::size_t batch, std::size_t g,
                        const std::uint32_t* mask = nullptr) {
    const auto& hv = t.value(h);
    const std::size_t hout = hv.shape()[1];
    if (t.needs_grad(h)) {
        auto r = t.grad_ref(h);
        const T beta = r.beta();
        if (!mask) {
            weight_product(t, w, false, batch, hout, g, dpre, r.buffer().data(), beta != T(0), dpre_stride);
        } else {
            T* dhm = scratch<T, 1>(batch * hout);
            weight_product(t, w, false, batch, hout, g, dpre, dhm, false, dpre_stride);
            const T* m = t.value(*mask).data();
            T* dh = r.buffer().data();
            for (std::size_t k = 0; k < batch * hout; ++k) dh[k] = (beta == T(0) ? T(0) : dh[k]) + dhm[k] * m[k];
        }
    }
    if (t.needs_grad(w)) {
        const T* hm = masked_h(t, h, mask);
        if (t.precision() == Precision::bf16) {  // summed over many steps' rows, in bf16
            t.add_product_grad(w, batch, dpre, dpre_stride, hm, hout, &weight_grad_product<T>);
        } else {
            auto r = t.grad_ref(w);
            const T beta = r.beta();
            weight_grad_rows(t, g, hout, batch, dpre, dpre_stride, hm, beta, r.buffer().data());
        }
    }
    if (b && t.needs_grad(*b)) {
        T* db = t.grad_ref(*b).zeroed().data();
        for (std::size_t r = 0; r < batch; ++r) add_row(db, dpre + r * dpre_stride, g, false);
    }
}

// Where a fused node's backward writes its input part's gradient dx (B, width): in the step
// form, straight into the step's rows of the sequence's gradient when no other node wrote them
// yet (slice_grad: fresh), so that no copy follows (copying dx in took 7% of a bf16 LSTM
// training step at M); else into `fallback` (rows width apart), which send_gate_grads adds in.
template <class T>
struct GateGradRows {
    T* rows;
    std::size_t stride;
    bool written;  // the rows are the sequence's gradient: nothing to add
};
template <class T>
GateGradRows<T> gate_grad_rows(Tape<T>& t, std::uint32_t i, const FusedState<T>& state, T* fallback,
                               std::size_t width) {
    if (state.step_form) {
        const GateRows rows = step_rows(t, i, state);
        if (t.needs_grad(rows.node)) {
            bool fresh = false;
            T* d = t.slice_grad(rows.node, rows.layout, rows.step, fresh) + rows.offset;
            if (fresh) return {d, rows.stride, true};
        }
    }
    return {fallback, width, false};
}

// Sends a fused node's gate gradients dx (input part) and dhg (recurrent part), each (B, width),
// on to its inputs. Pointwise form: inputs 0 and 1 are xg and hg. Step form: input 0 is the
// sequence xs (the step's rows get dx), input 1 is h, input w is w_hh and input w + 1, if
// present, b_hh (they get dhg through the recurrent product).
// dx's rows are dx.stride apart (already in xs's gradient when dx.written), dhg's dhg_stride.
template <class T>
void send_gate_grads(Tape<T>& t, std::uint32_t i, const FusedState<T>& state, const GateGradRows<T>& dx, const T* dhg,
                     std::size_t dhg_stride, std::size_t batch, std::size_t width, std::uint32_t w) {
    const auto& node = t.node(i);
    if (!state.step_form) {  // both in scratch, rows width apart
        add_gate_grad(t, t.input(i, 0), static_cast<const GateRows*>(nullptr), dx.rows, batch, width);
        add_gate_grad(t, t.input(i, 1), static_cast<const GateRows*>(nullptr), dhg, batch, width);
        return;
    }
    if (!dx.written) {
        const GateRows rows = step_rows(t, i, state);
        add_gate_grad(t, rows.node, &rows, dx.rows, batch, width);
    }
    const std::uint32_t inputs = node.num_inputs - (state.has_mask ? 1 : 0);  // without the mask
    const bool has_bias = inputs == w + 2;
    const std::uint32_t bias = has_bias ? t.input(i, w + 1) : 0;
    const std::uint32_t mask = state.has_mask ? t.input(i, inputs) : 0;
    recurrent_backward(t, t.input(i, 1), t.input(i, w), has_bias ? &bias : nullptr, dhg, dhg_stride, batch, width,
                       state.has_mask ? &mask : nullptr);
}

// ---- LSTM rows (the forward rows are in recurrent_rows.hpp) --------------------------------
// With dc' (dcn, may be null) and dh' (dh, may be null), dc'_total = dc' + dh' o (1 - tanh²c'):
//   out = [di df dg do] = [dc g i(1-i), dc c f(1-f), dc i (1-g²), dh' tanh(c') o(1-o)];  dc += dc'_total f
// The null cases are template flags, so the loop has no branch, and RECUR_SIMD_LOOP vectorises
// it: without it GCC's overlap check saw tc inside out and always ran the scalar loop (17% of a
// bf16 S LSTM training step; element j reads and writes only column j of each operand).
template <bool HasDh, bool HasDcn, bool HasDc, class T>
void lstm_backward_row(const T* a, const T* c, const T* cn, const T* dh, const T* dcn, T* out, T* dc,
                       std::size_t hidden) {
    const T *i = a, *f = a + hidden, *g = a + 2 * hidden, *o = a + 3 * hidden;
    T* tc = out + 3 * hidden;  // tanh(c') first, then overwritten by do element by element
    if constexpr (HasDh) activate(tc, cn, static_cast<const T*>(nullptr), hidden, tanh_fn);
    RECUR_SIMD_LOOP
    for (std::size_t j = 0; j < hidden; ++j) {
        T dct = T(0), dot = T(0);
        if constexpr (HasDcn) dct = dcn[j];
        if constexpr (HasDh) {
            dct += dh[j] * o[j] * (T(1) - tc[j] * tc[j]);
            dot = dh[j] * tc[j] * o[j] * (T(1) - o[j]);
        }
        out[j] = dct * g[j] * i[j] * (T(1) - i[j]);
        out[hidden + j] = dct * c[j] * f[j] * (T(1) - f[j]);
        out[2 * hidden + j] = dct * i[j] * (T(1) - g[j] * g[j]);
        out[3 * hidden + j] = dot;
        if constexpr (HasDc) dc[j] += dct * f[j];
    }
}

template <class T>
void lstm_backward_row(const T* a, const T* c, const T* cn, const T* dh, const T* dcn, T* out, T* dc,
                       std::size_t hidden) {
    const int which = (dh ? 4 : 0) | (dcn ? 2 : 0) | (dc ? 1 : 0);
    switch (which) {
        case 7:
            return lstm_backward_row<true, true, true>(a, c, cn, dh, dcn, out, dc, hidden);
        case 6:
            return lstm_backward_row<true, true, false>(a, c, cn, dh, dcn, out, dc, hidden);
        case 5:
            return lstm_backward_row<true, false, true>(a, c, cn, dh, dcn, out, dc, hidden);
        case 4:
            return lstm_backward_row<true, false, false>(a, c, cn, dh, dcn, out, dc, hidden);
        case 3:
            return lstm_backward_row<false, true, true>(a, c, cn, dh, dcn, out, dc, hidden);
        case 2:
            return lstm_backward_row<false, true, false>(a, c, cn, dh, dcn, out, dc, hidden);
        case 1:
            return lstm_backward_row<false, false, true>(a, c, cn, dh, dcn, out, dc, hidden);
        default:
            return lstm_backward_row<false, false, false>(a, c, cn, dh, dcn, out, dc, hidden);
    }
}

// ---- LSTM node --------------------------------------------------------------------------------
// One node, two outputs: output 0 h' (B, H), output 1 c' (B, H). Inputs: pointwise form xg, hg,
// c; step form xs, h, c, w_hh[, b_hh]. Its backward reads dh' and dc' (either may be absent).
template <class T>
void lstm_backward(Tape<T>& t, std::uint32_t i) {
    const auto& state = t.template saved_state<FusedState<T>>(i);
    const std::uint32_t c = t.input(i, 2);
    const auto& cv = t.value(c);
    const std::size_t batch = cv.shape()[0], hidden = cv.shape()[1], width = 4 * hidden;
    const T* act = state.gates.data();
    const T* cp = cv.data();
    const T* cn = t.value(t.output(i, 1)).data();
    const T* dh = t.output_grad(i, 0);  // dh' from the step's readers
    const T* dcn = t.output_grad(i, 1);  // dc' from the next step
    T* dc = t.needs_grad(c) ? t.grad_ref(c).zeroed().data() : nullptr;
    const GateGradRows<T> dgates = gate_grad_rows(t, i, state, scratch<T>(batch * width), width);
    for_rows(batch, width, [&](std::size_t b) {
        const std::size_t k = b * hidden;
        lstm_backward_row(act + b * width, cp + k, cn + k, dh ? dh + k : nullptr, dcn ? dcn + k : nullptr,
                          dgates.rows + b * dgates.stride, dc ? dc + k : nullptr, hidden);
    });
    send_gate_grads(t, i, state, dgates, dgates.rows, dgates.stride, batch, width, 3);  // dxg = dhg = dgates
}

// Pushes the node over `inputs`; `pre(act)` writes the pre-activations (B, 4H) into act.
template <class T, class Pre>
LSTMPointwise<T> lstm_node(const char* op, Tape<T>& t, const std::uint32_t* inputs, std::size_t count, bool step_form,
                           bool has_mask, std::size_t time_axis, std::size_t step, std::size_t batch,
                           std::size_t hidden, Pre pre) {
    const std::size_t width = 4 * hidden;
    const std::uint32_t i = t.push(op, inputs, count, &lstm_backward<T>, 2);
    t.backward_skips_input(i, 0);  // xg's / xs's gradient rows are written, its value never read
    if (!step_form) t.backward_skips_input(i, 1);  // hg likewise
    T* h = t.output_value(i, {batch, hidden}, 0).data();
    T* cn = t.output_value(i, {batch, hidden}, 1).data();
    T* act;
    if (t.needs_grad(i)) {
        auto& state = t.template state<FusedState<T>>(i);
        state.step_form = step_form;
        state.has_mask = has_mask;
        state.time_axis = time_axis;
        state.step = step;
        state.gates.resize({batch, width});
        act = state.gates.data();
    } else {
        act = scratch<T>(batch * width);
    }
    pre(act);
    const T* cp = t.value(inputs[2]).data();
    for_rows(batch, width, [&](std::size_t b) {
        const std::size_t k = b * hidden;
        lstm_forward_row(act + b * width, cp + k, cn + k, h + k, hidden);
    });
    return {t.handle(i, 0), t.handle(i, 1)};
}

// ---- GRU rows (the forward row is in recurrent_rows.hpp) --------------------------------------
// dn = dy (1 - z)(1 - n²), dz = dy (h - n) z(1 - z), dr = dn hg_n r(1 - r):
//   dx = [dr dz dn];  dhg = [dr dz dn r];  dh += dy z
template <bool HasDh, class T>
void gru_backward_row(const T* a, const T* hg_n, const T* hp, const T* dy, T* dx, T* dhg, T* dh, std::size_t hidden) {
    const T *r = a, *z = a + hidden, *n = a + 2 * hidden;
    // column j only (see lstm_backward_row)
    RECUR_SIMD_LOOP
    for (std::size_t j = 0; j < hidden; ++j) {
        const T dn = dy[j] * (T(1) - z[j]) * (T(1) - n[j] * n[j]);
        const T dr = dn * hg_n[j] * r[j] * (T(1) - r[j]);
        const T dz = dy[j] * (hp[j] - n[j]) * z[j] * (T(1) - z[j]);
        dx[j] = dhg[j] = dr;
        dx[hidden + j] = dhg[hidden + j] = dz;
        dx[2 * hidden + j] = dn;
        dhg[2 * hidden + j] = dn * r[j];
        if constexpr (HasDh) dh[j] += dy[j] * z[j];
    }
}

// ---- GRU node --------------------------------------------------------------------------------
// Inputs: pointwise form xg, hg, h (gates [r | z | n], B x 3H); step form xs, h, w_hh[, b_hh]
// (gates [r | z | n | hg_n], B x 4H).
template <class T>
void gru_backward(Tape<T>& t, std::uint32_t i) {
    const auto& node = t.node(i);
    const auto& state = t.template saved_state<FusedState<T>>(i);
    const bool step = state.step_form;
    const std::uint32_t h = t.input(i, step ? 1 : 2);
    const auto& hv = t.value(h);
    const std::size_t batch = hv.shape()[0], hidden = hv.shape()[1], width = 3 * hidden;
    const std::size_t saved_width = step ? 4 * hidden : width;
    const T* act = state.gates.data();
    const T* hg_n = step ? act + width : t.value(t.input(i, 1)).data() + 2 * hidden;  // row 0's hg_n
    const std::size_t hg_n_stride = step ? saved_width : width;
    const T* hp = hv.data();
    const T* dy = node.grad.data();
    T* dh = t.needs_grad(h) ? t.grad_ref(h).zeroed().data() : nullptr;
    T* dhg = scratch<T>(2 * batch * width);
    const GateGradRows<T> dx = gate_grad_rows(t, i, state, dhg + batch * width, width);
    for_rows(batch, width, [&](std::size_t b) {
        const std::size_t k = b * hidden;
        T* dx_row = dx.rows + b * dx.stride;
        if (dh)
            gru_backward_row<true>(act + b * saved_width, hg_n + b * hg_n_stride, hp + k, dy + k, dx_row,
                                   dhg + b * width, dh + k, hidden);
        else
            gru_backward_row<false>(act + b * saved_width, hg_n + b * hg_n_stride, hp + k, dy + k, dx_row,
                                    dhg + b * width, static_cast<T*>(nullptr), hidden);
    });
    send_gate_grads(t, i, state, dx, dhg, width, batch, width, 2);
}

// The gates buffer of a GRU node of `width` columns: kept in its state when recorded, else in
// per-thread scratch after `scratch_used` elements.
template <class T>
T* gru_gates(Tape<T>& t, std::uint32_t i, bool step_form, bool has_mask, std::size_t time_axis, std::size_t step,
             std::size_t batch, std::size_t width, std::size_t scratch_used) {
    if (!t.needs_grad(i)) return scratch<T>(scratch_used + batch * width) + scratch_used;
    auto& state = t.template state<FusedState<T>>(i);
    state.step_form = step_form;
    state.has_mask = has_mask;
    state.time_axis = time_axis;
    state.step = step;
    state.gates.resize({batch, width});
    return state.gates.data();
}

}  // namespace

// ---- LSTM ------------------------------------------------------------------------------------

template <class T>
LSTMPointwise<T> lstm_pointwise(const Var<T>& xg, const Var<T>& hg, const Var<T>& c) {
    Tape<T>& t = detail::tape_of("lstm_pointwise", xg, hg, c);
    const auto dims = check_pointwise("lstm_pointwise", 4, xg, hg, c);
    const std::size_t batch = dims.first, hidden = dims.second;
    const std::uint32_t x = xg.index(), y = hg.index();
    const std::array<std::uint32_t, 3> in{x, y, c.index()};
    return lstm_node("lstm_pointwise", t, in.data(), in.size(), false, false, 0, 0, batch, hidden, [&](T* act) {
        const T *xv = t.value(x).data(), *hv = t.value(y).data();
        for (std::size_t k = 0; k < batch * 4 * hidden; ++k) act[k] = xv[k] + hv[k];
    });
}

// A recurrent dropout mask: a constant of h's shape (or undefined).
template <class T>
void check_mask(const char* op, const Var<T>& mask, const Var<T>& h) {
    if (!mask.defined()) return;
    detail::tape_of(op, h, mask);
    if (mask.requires_grad())
        throw value_error(std::string(op) + ": h_mask must be a constant (no gradient flows to it)");
    if (mask.shape() != h.shape())
        throw shape_error(std::string(op) + ": h_mask must have h's shape " + shape_str(h.shape()) + ", got " +
                          shape_str(mask.shape()));
}

// The inputs of a step node: fixed ones, then b_hh and h_mask when defined; returns the count.
template <class T, std::size_t N>
std::size_t step_inputs(std::array<std::uint32_t, N>& in, std::size_t fixed, const Var<T>& b_hh, const Var<T>& h_mask) {
    std::size_t n = fixed;
    if (b_hh.defined()) in[n++] = b_hh.index();
    if (h_mask.defined()) in[n++] = h_mask.index();
    return n;
}

template <class T>
LSTMPointwise<T> lstm_step(const Var<T>& xs, std::size_t time_axis, std::size_t step, const Var<T>& h, const Var<T>& c,
                           const Var<T>& w_hh, const Var<T>& b_hh, const Var<T>& h_mask) {
    Tape<T>& t = b_hh.defined() ? detail::tape_of("lstm_step", xs, h, c, w_hh, b_hh)
                                : detail::tape_of("lstm_step", xs, h, c, w_hh);
    const auto dims = check_step("lstm_step", 4, xs, time_axis, step, h, c, w_hh, b_hh);
    check_mask("lstm_step", h_mask, h);
    const std::size_t batch = dims.first, hidden = dims.second;
    std::array<std::uint32_t, 6> in{xs.index(), h.index(), c.index(), w_hh.index(), 0, 0};
    const std::size_t count = step_inputs(in, 4, b_hh, h_mask);
    const std::uint32_t* bias = b_hh.defined() ? &in[4] : nullptr;
    const std::uint32_t* mask = h_mask.defined() ? &in[count - 1] : nullptr;
    const auto axis = static_cast<std::int64_t>(time_axis), k = static_cast<std::int64_t>(step);
    return lstm_node("lstm_step", t, in.data(), count, true, mask != nullptr, time_axis, step, batch, hidden,
                     [&](T* act) {
                         const GateRows rows = sequence_rows(t, in[0], axis, k);
                         recurrent_forward(t, rows, in[1], in[3], bias, act, batch, 4 * hidden, mask);
                     });
}

// ---- GRU -------------------------------------------------------------------------------------

template <class T>
Var<T> gru_pointwise(const Var<T>& xg, const Var<T>& hg, const Var<T>& h) {
    Tape<T>& t = detail::tape_of("gru_pointwise", xg, hg, h);
    const auto dims = check_pointwise("gru_pointwise", 3, xg, hg, h);
    const std::size_t batch = dims.first, hidden = dims.second;
    const std::size_t width = 3 * hidden;
    const std::uint32_t out = t.push("gru_pointwise", {xg.index(), hg.index(), h.index()}, &gru_backward<T>);
    t.backward_skips_input(out, 0);  // xg's value is never read (hg's n part is)
    T* act = gru_gates(t, out, false, false, 0, 0, batch, width, 0);
    auto& node = t.node(out);
    t.output_value(out, {batch, hidden});
    const T *x = t.value(xg.index()).data(), *hgv = t.value(hg.index()).data(), *hp = t.value(h.index()).data();
    T* y = node.value.data();
    for_rows(batch, width, [&](std::size_t b) {
        gru_forward_row(x + b * width, hgv + b * width, hp + b * hidden, act + b * width, y + b * hidden, hidden);
    });
    return t.handle(out);
}

template <class T>
Var<T> gru_step(const Var<T>& xs, std::size_t time_axis, std::size_t step, const Var<T>& h, const Var<T>& w_hh,
                const Var<T>& b_hh, const Var<T>& h_mask) {
    Tape<T>& t =
        b_hh.defined() ? detail::tape_of("gru_step", xs, h, w_hh, b_hh) : detail::tape_of("gru_step", xs, h, w_hh);
    const auto dims = check_step("gru_step", 3, xs, time_axis, step, h, h, w_hh, b_hh);
    check_mask("gru_step", h_mask, h);
    const std::size_t batch = dims.first, hidden = dims.second;
    const std::size_t width = 3 * hidden;
    std::array<std::uint32_t, 5> in{xs.index(), h.index(), w_hh.index(), 0, 0};
    const std::size_t count = step_inputs(in, 3, b_hh, h_mask);
    const std::uint32_t* mask = h_mask.defined() ? &in[count - 1] : nullptr;
    const std::uint32_t out = t.push("gru_step", in.data(), count, &gru_backward<T>);
    t.backward_skips_input(out, 0);  // the step's rows of xs get gradients; xs's value is never read
    const auto axis = static_cast<std::int64_t>(time_axis), k = static_cast<std::int64_t>(step);
    // hg = b_hh + h w_hh^T (B, 3H) at the start of scratch; its n part is kept with the gates.
    T* act = gru_gates(t, out, true, mask != nullptr, time_axis, step, batch, 4 * hidden, batch * width);
    T* hg = scratch<T>(batch * width);
    auto& node = t.node(out);
    t.output_value(out, {batch, hidden});
    const T* bias = b_hh.defined() ? t.value(in[3]).data() : nullptr;
    const auto& hv = t.value(in[1]);
    weight_product(t, in[2], true, batch, width, hidden, masked_h(t, in[1], mask), hg, false, 0, bias);
    const GateRows rows = sequence_rows(t, in[0], axis, k);
    const T* x = t.value(in[0]).data() + rows.offset;
    T* y = node.value.data();
    const T* hp = hv.data();
    for_rows(batch, width, [&](std::size_t b) {
        T* a = act + b * 4 * hidden;
        const T* hgr = hg + b * width;
        gru_forward_row(x + b * rows.stride, hgr, hp + b * hidden, a, y + b * hidden, hidden);
        std::copy(hgr + 2 * hidden, hgr + width, a + width);
    });
    return t.handle(out);
}

// ---- Whole layers for inference ---------------------------------------------------------------
// Per step t (in order, or reversed): pre (B, G) = [x_t w_ih^T or xs[t]'s rows] + b_ih + b_hh +
// h w_hh^T and the gate math into the next state (no node per step). f32 and double run it on
// gate_product (the products fused with the gate math, tile by tile in registers); bf16 makes
// h w_hh^T on the packed matmul, then each row's gate math.
// Without lengths, h' goes straight into the output and the next step's product reads it
// there (c' alternates between two buffers); with lengths, rows past their length keep their
// state and output 0, through per-call state buffers.

namespace {

// The run's checks and output nodes: one node, outputs (sequence, h[, c]), none recorded.
template <class T>
std::uint32_t sequence_node(const char* op, Tape<T>& t, const Var<T>& xs, std::size_t time_axis, std::size_t batch,
                            std::size_t hidden, std::size_t outputs, const std::vector<std::int64_t>& lengths) {
    if (t.recording())
        throw tape_error(std::string(op) +
                         ": inference only, for a tape that is not recording (TapeOptions::record "
                         "= false or a NoGradGuard); use the step ops to train");
    const Shape xsh = xs.shape();
    const std::size_t steps = xsh[time_axis];
    if (!lengths.empty()) {
        if (lengths.size() != batch)
            throw index_error(std::string(op) + ": " + std::to_string(lengths.size()) + " lengths for a batch of " +
                              std::to_string(batch));
        for (auto len : lengths)
            if (len < 1 || static_cast<std::size_t>(len) > steps)
                throw index_error(std::string(op) + ": length " + std::to_string(len) + " is outside [1, " +
                                  std::to_string(steps) + "]");
    }
    const std::uint32_t in = xs.index();
    const std::uint32_t i = t.push(op, &in, 1, nullptr, outputs);
    Shape ys = xsh;
    ys[2] = hidden;
    t.output_value(i, ys, 0);
    for (std::size_t k = 1; k < outputs; ++k) t.output_value(i, {batch, hidden}, k);
    return i;
}

// After step `step`: rows still inside their sequence take the new state (new_parts[k] into
// parts[k], each (B, H)) and write h' into the output (T, B, H) / (B, T, H); the others keep
// their state and output 0.
template <class T, std::size_t N>
void commit_step(T* y, std::size_t time_axis, std::size_t steps, std::size_t step, std::size_t batch,
                 std::size_t hidden, const std::vector<std::int64_t>& lengths, const std::array<T*, N>& parts,
                 const std::array<const T*, N>& new_parts) {
    for (std::size_t b = 0; b < batch; ++b) {
        const std::size_t k = b * hidden;
        T* out = y + (time_axis == 0 ? (step * batch + b) : (b * steps + step)) * hidden;
        if (lengths.empty() || static_cast<std::int64_t>(step) < lengths[b]) {
            for (std::size_t p = 0; p < N; ++p) std::copy(new_parts[p] + k, new_parts[p] + k + hidden, parts[p] + k);
            std::copy(new_parts[0] + k, new_parts[0] + k + hidden, out);
        } else {
            std::fill(out, out + hidden, T(0));
        }
    }
}

// Where a step without lengths writes h' (B, H): its rows of the output itself, block `step` of
// (T, B, H) (rows H apart) or rows b T + step of (B, T, H) (rows T H apart); the next step's
// product and gate pass read h there. No copy per step.
struct OutputRows {
    std::size_t time_axis, steps, batch, hidden;

    template <class T>
    T* rows(T* y, std::size_t step) const {
        return y + (time_axis == 0 ? step * batch : step) * hidden;
    }
    std::size_t stride() const { return time_axis == 0 ? hidden : steps * hidden; }
};

// to (B, H) = the rows of `from` (B rows of H, `stride` apart).
template <class T>
void copy_rows(const T* from, std::size_t stride, T* to, std::size_t batch, std::size_t hidden) {
    for (std::size_t b = 0; b < batch; ++b) std::copy(from + b * stride, from + b * stride + hidden, to + b * hidden);
}

// The sequences' recurrent product is made without accumulating (C = h w_hh^T), and the biases
// and input rows are added in the row's gate pass (lstm_inference_row, gru_inference_row), while
// the row is in cache: the same single rounding of (what C held) + h w_hh^T, without writing and
// rereading a (B, G) block per step first. An absent bias reads zeros (bias_or_zeros).
template <class T>
const T* bias_or_zeros(const T* bias, std::size_t g) {
    if (bias) return bias;
    thread_local std::vector<T> zeros;
    if (zeros.size() < g) zeros.assign(g, T(0));
    return zeros.data();
}

// The bias of a sequence's input rows, b_ih (G) or undefined (null): shape_error unless (G,),
// tape_error unless on xs's tape.
template <class T>
const T* input_bias(const char* op, const Var<T>& xs, const Var<T>& b_ih, std::size_t g) {
    if (!b_ih.defined()) return nullptr;
    (void)detail::tape_of(op, xs, b_ih);
    if (b_ih.shape() != Shape{g})
        throw shape_error(std::string(op) + ": b_ih must be (" + std::to_string(g) + ",), got " +
                          shape_str(b_ih.shape()));
    return b_ih.value().data();
}

// I for a sequence given its input projection w_ih: xs (..., I) is checked as such; 0 when w_ih
// is undefined (xs (..., G) is projected already).
template <class T>
std::size_t input_width(const Var<T>& xs, const Var<T>& w_ih) {
    const Shape xsh = xs.shape();
    return w_ih.defined() && !xsh.empty() ? xsh.back() : 0;
}

// w_ih, if defined, must be (G, I) for xs (..., I) and on xs's tape.
template <class T>
void check_input_weight(const char* op, const Var<T>& xs, const Var<T>& w_ih, std::size_t g) {
    if (!w_ih.defined()) return;
    (void)detail::tape_of(op, xs, w_ih);
    const Shape ws = w_ih.shape(), xsh = xs.shape();
    if (ws != Shape{g, xsh.back()})
        throw shape_error(std::string(op) + ": w_ih must be (" + std::to_string(g) + ", I) for xs (..., I), got w_ih " +
                          shape_str(ws) + " and xs " + shape_str(xsh));
}

// Whether a sequence given w_ih projects its steps' rows itself, a block of steps at a time
// (StepInputs), rather than all of xs first by linear: products (B x G x I per step) of at least
// 2^22 multiply-adds, on the packed matmul, in f32 (unless RECUR_F32_GEMM=plain; asked only where
// gate_product does not fuse the projection, fuses_input below: batches below a tile's rows) or bf16. Not
// for smaller products (at S, 16 x 256 x 64, the per-step products lost: bf16 inference 1.26 ->
// 1.44 ms) or double. Measured one core, p10 of 30: bf16 inference at M, LSTM 27.1 -> 21.7 ms,
// GRU 22.5 -> 16.5; f32 about 7% at M. The sums are the same but their order may differ from
// linear's one product over all T B rows (oneDNN picks its kernel by shape), so inference agrees
// with a recorded forward to rounding; for one shape and thread count the order is fixed, and
// repeated runs give the same bits.
template <class T>
bool projects_steps(const Tape<T>& t, std::size_t batch, std::size_t g, std::size_t in) {
    if constexpr (std::is_same_v<T, float>) {
        if (t.precision() == Precision::bf16) return double(batch) * double(g) * double(in) >= double(1 << 22);
        return !detail::plain_f32_product(batch, g, in, true);
    }
    return false;
}

// The input rows of a sequence's steps, in the order they run (s = 0, 1, ...: step s, or
// T - 1 - s reversed): xs's rows (G wide) where they are, or, with w_ih, xs's raw rows (I wide)
// projected (where projects_steps) a block of steps at a time into a buffer (up to 1 MiB: half
// of L2 here) just before those steps run. The projection (T B G values) is then never written
// to memory whole and read back one strided step at a time, and w_ih stays in cache over the
// block's products.
template <class T>
struct StepInputs {
    Tape<T>& t;
    std::uint32_t xs;
    std::size_t time_axis, steps, batch, g;
    bool reverse;
    const Var<T>& w_ih;  // undefined: xs is projected already
    T* buffer;  // buffer_size(...) elements
    std::size_t chunk = block_steps(steps, batch, g);

    // Steps per block: as many as fill 1 MiB, at least one (and all of them for an empty batch).
    static std::size_t block_steps(std::size_t steps, std::size_t batch, std::size_t g) {
        const std::size_t step_bytes = std::max<std::size_t>(batch * g * sizeof(T), 1);
        return std::clamp<std::size_t>((std::size_t(1) << 20) / step_bytes, 1, std::max<std::size_t>(steps, 1));
    }
    static std::size_t buffer_size(std::size_t steps, std::size_t batch, std::size_t g, bool projects) {
        return projects ? block_steps(steps, batch, g) * batch * g : 0;
    }
    // Row b of the s-th step to run is at rows + b * stride.
    const T* rows(std::size_t s, std::size_t& stride) const {
        if (!w_ih.defined()) {
            const GateRows r = located(s);
            stride = r.stride;
            return t.value(xs).data() + r.offset;
        }
        const std::size_t in = w_ih.shape()[1];
        if (s % chunk == 0)
            for (std::size_t j = s; j < std::min(s + chunk, steps); ++j) {
                const GateRows r = located(j);
                // rows of linear(xs, w_ih): where projects_steps, the packed matmul weight_product runs
                weight_product(t, w_ih.index(), true, batch, g, in, t.value(xs).data() + r.offset,
                               buffer + (j - s) * batch * g, false, r.stride);
            }
        stride = g;
        return buffer + (s % chunk) * batch * g;
    }

    // xs's own rows of the s-th step to run (I wide when w_ih is given).
    GateRows located(std::size_t s) const {
        const std::size_t step = reverse ? steps - 1 - s : s;
        return sequence_rows(t, xs, static_cast<std::int64_t>(time_axis), static_cast<std::int64_t>(step));
    }
};

// Whether a sequence's steps run on gate_product (its products fused with the gate math, and
// with the input projection when given w_ih): every tape but a bf16 one, whose products round
// their operands (packed_gemm).
template <class T>
bool fused_product(const Tape<T>& t) {
    return t.precision() != Precision::bf16;
}

// Whether a fused sequence given w_ih also takes x_t w_ih^T into its tiles, rather than adding
// rows projected by the packed matmul a block of steps at a time or by linear first: from a full
// tile of rows (gate_product::tile_rows) up, whatever the weights' size. With fewer rows each
// accumulator's chain is latency-bound, and I more links lengthen it (XS inference, B = 1, I = H
// = 16, ran 0.100 ms that way against 0.090 projected first). Fused, a step streams w_ih's panels
// with w_hh's, from L3 or memory when they do not fit in L2, but its multiply-adds per byte of
// weights (B per 4 bytes) are those of h w_hh^T alone. Measured one core, inference, p10, fused /
// block projection: L (64, 50, 512, 512) GRU 51.4 / 53.8 ms, LSTM 69.7 / 75.3 (weights of 6 and
// 8 MiB); LSTM (16, 50, 1024, 1024) 90.7 / 114.6; (64, 20, 1024, 1024, 32 MiB) level; two
// threads 7-10% faster. An earlier cap at 4 MiB rested on runs slowed by the host's transient
// (README: "Where recur still misses").
template <class T, std::size_t A>
bool fuses_input(std::size_t batch) {
    return batch >= gate_product::tile_rows<T, A>();
}

// w_ih (N H, I; undefined: I = 0) and w_hh (N H, H) packed into gate_product's panels: in f32
// cached per Parameter version (detail::gate_panels), else into scratch slot 2 per call ((I + H)
// N H elements copied, against T B N H (I + H) multiply-adds).
template <class T>
const T* pack_weights(Tape<T>& t, const Var<T>& w_ih, std::size_t in, const Var<T>& w_hh, std::size_t gates,
                      std::size_t hidden) {
    if constexpr (std::is_same_v<T, float>) {
        return detail::gate_panels(in ? detail::weight_ref(t, w_ih.index()) : detail::WeightRef{}, in,
                                   detail::weight_ref(t, w_hh.index()), gates, hidden);
    } else {
        T* buffer = scratch<T, 2>(gate_product::packed_size<T>(gates, hidden, in + hidden));
        const T* wi = in ? t.value(w_ih.index()).data() : nullptr;
        return gate_product::pack(wi, in, t.value(w_hh.index()).data(), gates, hidden, buffer);
    }
}

// A fused step's input: xs's raw rows (I wide) as the product's left operand when it fuses the
// projection, else the rows `inputs` gives (xs's own, G wide, or projected a block of steps at a
// time), added to the start of each tile.
template <class T>
struct FusedInput {
    gate_product::Rows<T> operand;
    const T* added = nullptr;
    std::size_t added_stride = 0;

    FusedInput(const StepInputs<T>& inputs, std::size_t s, bool projects, std::size_t in) {
        if (!projects) {
            added = inputs.rows(s, added_stride);
            return;
        }
        const GateRows r = inputs.located(s);
        operand = {inputs.t.value(inputs.xs).data() + r.offset, r.stride, in};
    }
};

// One fused step of N gates: h w_hh^T (and x_t w_ih^T when x fuses the projection) tile by
// tile, each tile started at the biases (and x's added rows), then finished by `gates`.
template <std::size_t N, class T, class Gates>
void fused_step(std::size_t batch, std::size_t hidden, const FusedInput<T>& x, const T* h, std::size_t h_stride,
                const T* packed, const T* x_bias, const T* bias, Gates gates) {
    gate_product::run<N, 4>(
        batch, hidden, x.operand, {h, h_stride, hidden}, packed,
        [&](std::size_t r0, std::size_t j0, auto lanes, auto& acc) {
            gate_tile_start<N>(acc, r0, j0, lanes, x.added, x.added_stride, x_bias, bias, hidden);
        },
        gates);
}

}  // namespace

template <class T>
SequenceRun<T> lstm_sequence(const Var<T>& xs, std::size_t time_axis, bool reverse, const Var<T>& h0, const Var<T>& c0,
                             const Var<T>& w_hh, const Var<T>& b_hh, const std::vector<std::int64_t>& lengths,
                             const Var<T>& b_ih, const Var<T>& w_ih) {
    Tape<T>& t = b_hh.defined() ? detail::tape_of("lstm_sequence", xs, h0, c0, w_hh, b_hh)
                                : detail::tape_of("lstm_sequence", xs, h0, c0, w_hh);
    const std::size_t x_width = input_width(xs, w_ih);
    const auto dims = check_step("lstm_sequence", 4, xs, time_axis, 0, h0, c0, w_hh, b_hh, x_width);
    const std::size_t batch = dims.first, hidden = dims.second, width = 4 * hidden;
    check_input_weight("lstm_sequence", xs, w_ih, width);
    const bool fused = fused_product(t);
    const bool fuse_x = fused && w_ih.defined() && fuses_input<T, 4>(batch);
    if (w_ih.defined() && !fuse_x && !projects_steps(t, batch, width, x_width))
        return lstm_sequence(linear(xs, w_ih), time_axis, reverse, h0, c0, w_hh, b_hh, lengths, b_ih);
    if (h0.shape()[1] != hidden)
        throw shape_error("lstm_sequence: h0 must be (B, H) (no projection), got " + shape_str(h0.shape()));
    const std::uint32_t i = sequence_node("lstm_sequence", t, xs, time_axis, batch, hidden, 3, lengths);
    const std::size_t steps = t.value(xs.index()).shape()[time_axis];
    T* y = t.node(i).value.data();
    T* h = t.node(t.output(i, 1)).value.data();
    T* c = t.node(t.output(i, 2)).value.data();
    std::copy(h0.value().data(), h0.value().data() + batch * hidden, h);
    std::copy(c0.value().data(), c0.value().data() + batch * hidden, c);
    const T* bias = bias_or_zeros(b_hh.defined() ? b_hh.value().data() : nullptr, width);
    const T* x_bias = bias_or_zeros(input_bias("lstm_sequence", xs, b_ih, width), width);
    // hw (B, 4H; bf16 only: gate_product keeps the pre-activations in registers) | h' (B, H) |
    // c' (B, H) | projected input rows, in scratch
    const std::size_t projected = fuse_x ? 0 : StepInputs<T>::buffer_size(steps, batch, width, w_ih.defined());
    const std::size_t hw_size = fused ? 0 : batch * width;
    T* hw = scratch<T>(hw_size + 2 * batch * hidden + projected);
    T* hn = hw + hw_size;
    T* cn = hn + batch * hidden;
    const StepInputs<T> inputs{t, xs.index(), time_axis, steps, batch, width, reverse, w_ih, cn + batch * hidden};
    const OutputRows out{time_axis, steps, batch, hidden};
    const T* h_now = h;  // the state: rows h_stride apart; without lengths h' is read from the output
    std::size_t h_stride = hidden;
    T* c_now = c;  // without lengths each step writes the other buffer
    const T* packed = fused ? pack_weights(t, w_ih, fuse_x ? x_width : 0, w_hh, 4, hidden) : nullptr;
    for (std::size_t s = 0; s < steps; ++s) {
        const std::size_t step = reverse ? steps - 1 - s : s;
        // This step's state (c_from) and where it writes the next (h_next, c_next): without
        // lengths, the output's rows and the other c buffer; with them, hn and cn, committed after.
        const bool direct = lengths.empty();
        T* h_next = direct ? out.rows(y, step) : hn;
        const std::size_t next_stride = direct ? out.stride() : hidden;
        const T* c_from = direct ? c_now : c;
        T* c_next = !direct ? cn : c_now == c ? cn : c;
        if (packed) {
            fused_step<4>(batch, hidden, FusedInput<T>(inputs, s, fuse_x, x_width), h_now, h_stride, packed, x_bias,
                          bias, [&](std::size_t r0, std::size_t j0, auto lanes, const auto& acc) {
                              lstm_tile_gates(acc, r0, j0, lanes, c_from, c_next, h_next, next_stride, hidden);
                          });
        } else {
            std::size_t x_stride = 0;
            const T* xv = inputs.rows(s, x_stride);
            weight_product(t, w_hh.index(), true, batch, width, hidden, h_now, hw, false, h_stride);  // h w_hh^T
            for_rows(batch, width, [&](std::size_t b) {
                const std::size_t k = b * hidden;
                lstm_inference_row(hw + b * width, xv + b * x_stride, x_bias, bias, c_from + k, c_next + k,
                                   h_next + b * next_stride, hidden);
            });
        }
        if (direct) {
            h_now = h_next;
            h_stride = next_stride;
            c_now = c_next;
        } else {
            commit_step<T, 2>(y, time_axis, steps, step, batch, hidden, lengths, {h, c}, {hn, cn});
        }
    }
    if (h_now != h) copy_rows(h_now, h_stride, h, batch, hidden);  // the final state
    if (c_now != c) std::copy(c_now, c_now + batch * hidden, c);
    return {t.handle(i, 0), t.handle(i, 1), t.handle(i, 2)};
}

template <class T>
SequenceRun<T> gru_sequence(const Var<T>& xs, std::size_t time_axis, bool reverse, const Var<T>& h0, const Var<T>& w_hh,
                            const Var<T>& b_hh, const std::vector<std::int64_t>& lengths, const Var<T>& b_ih,
                            const Var<T>& w_ih) {
    Tape<T>& t = b_hh.defined() ? detail::tape_of("gru_sequence", xs, h0, w_hh, b_hh)
                                : detail::tape_of("gru_sequence", xs, h0, w_hh);
    const std::size_t x_width = input_width(xs, w_ih);
    const auto dims = check_step("gru_sequence", 3, xs, time_axis, 0, h0, h0, w_hh, b_hh, x_width);
    const std::size_t batch = dims.first, hidden = dims.second, width = 3 * hidden;
    check_input_weight("gru_sequence", xs, w_ih, width);
    const bool fused = fused_product(t);
    const bool fuse_x = fused && w_ih.defined() && fuses_input<T, 4>(batch);
    if (w_ih.defined() && !fuse_x && !projects_steps(t, batch, width, x_width))
        return gru_sequence(linear(xs, w_ih), time_axis, reverse, h0, w_hh, b_hh, lengths, b_ih);
    const std::uint32_t i = sequence_node("gru_sequence", t, xs, time_axis, batch, hidden, 2, lengths);
    const std::size_t steps = t.value(xs.index()).shape()[time_axis];
    T* y = t.node(i).value.data();
    T* h = t.node(t.output(i, 1)).value.data();
    std::copy(h0.value().data(), h0.value().data() + batch * hidden, h);
    const T* bias = bias_or_zeros(b_hh.defined() ? b_hh.value().data() : nullptr, width);
    const T* x_bias = bias_or_zeros(input_bias("gru_sequence", xs, b_ih, width), width);
    // hw (B, 3H; bf16 only) | h' (B, H) | projected input rows, in scratch
    const std::size_t projected = fuse_x ? 0 : StepInputs<T>::buffer_size(steps, batch, width, w_ih.defined());
    const std::size_t hw_size = fused ? 0 : batch * width;
    T* hw = scratch<T>(hw_size + batch * hidden + projected);
    T* hn = hw + hw_size;
    const StepInputs<T> inputs{t, xs.index(), time_axis, steps, batch, width, reverse, w_ih, hn + batch * hidden};
    const OutputRows out{time_axis, steps, batch, hidden};
    const T* h_now = h;  // the state: rows h_stride apart; without lengths h' is read from the output
    std::size_t h_stride = hidden;
    const T* packed = fused ? pack_weights(t, w_ih, fuse_x ? x_width : 0, w_hh, 3, hidden) : nullptr;
    for (std::size_t s = 0; s < steps; ++s) {
        const std::size_t step = reverse ? steps - 1 - s : s;
        // Where h' goes: the output's rows without lengths, else hn, committed after.
        const bool direct = lengths.empty();
        T* h_next = direct ? out.rows(y, step) : hn;
        const std::size_t next_stride = direct ? out.stride() : hidden;
        if (packed) {
            fused_step<3>(batch, hidden, FusedInput<T>(inputs, s, fuse_x, x_width), h_now, h_stride, packed, x_bias,
                          bias, [&](std::size_t r0, std::size_t j0, auto lanes, const auto& acc) {
                              gru_tile_gates(acc, r0, j0, lanes, h_now, h_stride, h_next, next_stride);
                          });
        } else {
            std::size_t x_stride = 0;
            const T* xv = inputs.rows(s, x_stride);
            weight_product(t, w_hh.index(), true, batch, width, hidden, h_now, hw, false, h_stride);  // h w_hh^T
            for_rows(batch, width, [&](std::size_t b) {
                gru_inference_row(hw + b * width, xv + b * x_stride, x_bias, bias, h_now + b * h_stride,
                                  h_next + b * next_stride, hidden);
            });
        }
        if (direct) {
            h_now = h_next;
            h_stride = next_stride;
        } else {
            commit_step<T, 1>(y, time_axis, steps, step, batch, hidden, lengths, {h}, {hn});
        }
    }
    if (h_now != h) copy_rows(h_now, h_stride, h, batch, hidden);  // the final state
    return {t.handle(i, 0), t.handle(i, 1), Var<T>()};
}

#define RECUR_RECURRENT(T)                                                                                         \
    template LSTMPointwise<T> lstm_pointwise(const Var<T>&, const Var<T>&, const Var<T>&);                         \
    template LSTMPointwise<T> lstm_step(const Var<T>&, std::size_t, std::size_t, const Var<T>&, const Var<T>&,     \
                                        const Var<T>&, const Var<T>&, const Var<T>&);                              \
    template Var<T> gru_pointwise(const Var<T>&, const Var<T>&, const Var<T>&);                                    \
    template Var<T> gru_step(const Var<T>&, std::size_t, std::size_t, const Var<T>&, const Var<T>&, const Var<T>&, \
                             const Var<T>&);                                                                       \
    template SequenceRun<T> lstm_sequence(const Var<T>&, std::size_t, bool, const Var<T>&, const Var<T>&,          \
                                          const Var<T>&, const Var<T>&, const std::vector<std::int64_t>&,          \
                                          const Var<T>&, const Var<T>&);                                           \
    template SequenceRun<T> gru_sequence(const Var<T>&, std::size_t, bool, const Var<T>&, const Var<T>&,           \
                                         const Var<T>&, const std::vector<std::int64_t>&, const Var<T>&,           \
                                         const Var<T>&);
RECUR_INSTANTIATE_FOR(RECUR_RECURRENT)

// ---- Layer-normalised LSTM and GRU steps (Ba et al. 2016) -------------------------------------
// One node per step, like lstm_step / gru_step: the recurrent product h w_hh^T, its layer norm
// (per row over the G = 4H or 3H pre-activations, with gain γ_hh and shift β_hh), the gate math
// and, for the LSTM, the layer norm of c' (γ_c, β_c) before the output tanh. The input part xs
// is normalised for all steps at once before the loop (one layer_norm node over (T, B, G)), and
// read in place. A recorded node keeps the gate activations, the normalised product ĥ (B, G) and
// each row's mean and rstd; the backward is one pass per row plus the column sums of γ and β.

namespace {

template <class T>
struct LayerNormStepState {
    xt::xarray<T> gates;  // LSTM (B, 4H) [i f g o]; GRU (B, 4H) [r z n hg_n]
    xt::xarray<T> hhat;  // (B, G): LN(h w_hh^T) before γ_hh, β_hh
    xt::xarray<T> stats;  // (B, 4): mean and rstd of h w_hh^T, then of c' (LSTM)
    std::size_t time_axis = 0, step = 0;
    bool has_mask = false;  // the last input is a recurrent dropout mask (B, H)
};

// shape_error naming `op` unless each of the gains and shifts is (n,).
template <class T>
void check_norm_params(const char* op, std::initializer_list<std::pair<const char*, const Var<T>*>> params,
                       std::size_t n) {
    for (const auto& [name, p] : params)
        if (p->shape() != Shape{n})
            throw shape_error(std::string(op) + ": " + name + " must be (" + std::to_string(n) + ",), got " +
                              shape_str(p->shape()));
}

// The three buffers of a layer-normalised step node: kept in its state when recorded, else in
// per-thread scratch after `scratch_used` elements.
template <class T>
std::array<T*, 3> layer_norm_step_buffers(Tape<T>& t, std::uint32_t i, std::size_t time_axis, std::size_t step,
                                          bool has_mask, std::size_t batch, std::size_t hidden, std::size_t g,
                                          std::size_t scratch_used) {
    if (!t.needs_grad(i)) {
        T* s = scratch<T>(scratch_used + batch * (4 * hidden + g + 4)) + scratch_used;
        return {s, s + batch * 4 * hidden, s + batch * (4 * hidden + g)};
    }
    auto& state = t.template state<LayerNormStepState<T>>(i);
    state.time_axis = time_axis;
    state.step = step;
    state.has_mask = has_mask;
    state.gates.resize({batch, 4 * hidden});
    state.hhat.resize({batch, g});
    state.stats.resize({batch, 4});
    return {state.gates.data(), state.hhat.data(), state.stats.data()};
}

// hw (B, G) = (h ⊙ mask) w^T: the recurrent product of a step (weight_product: packed or
// transposed once per weight update, bf16 under that policy); no mask: h w^T.
template <class T>
void recurrent_product(Tape<T>& t, std::uint32_t h, std::uint32_t w, const std::uint32_t* mask, T* hw,
                       std::size_t batch, std::size_t g) {
    weight_product(t, w, true, batch, g, t.value(h).shape()[1], masked_h(t, h, mask), hw, false);
}

// The recurrent dropout mask of a layer-normalised step node (its last input), or null.
template <class T>
const std::uint32_t* step_mask(Tape<T>& t, std::uint32_t i, std::uint32_t& slot) {
    if (!t.template saved_state<LayerNormStepState<T>>(i).has_mask) return nullptr;
    slot = t.input(i, t.node(i).num_inputs - 1);
    return &slot;
}

// grad of node i (a (n,) gain or shift) += Σ_b a[b, j] (x̂[b, j] when xhat is given).
template <class T>
void add_column_sums(Tape<T>& t, std::uint32_t i, const T* a, const T* xhat, std::size_t batch, std::size_t n) {
    if (!t.needs_grad(i)) return;
    T* d = t.grad_ref(i).zeroed().data();
    for (std::size_t b = 0; b < batch; ++b) {
        const T* ar = a + b * n;
        if (xhat) {
            const T* xr = xhat + b * n;
            for (std::size_t j = 0; j < n; ++j) d[j] += ar[j] * xr[j];
        } else {
            for (std::size_t j = 0; j < n; ++j) d[j] += ar[j];
        }
    }
}

// LSTM. Inputs: xs, h, c, w_hh, γ_hh, β_hh, γ_c, β_c; outputs h', c'. Per row:
//   u = LN(c') γ_c + β_c, τ = tanh(u);  du = dh' o (1 - τ²), do = dh' τ o (1 - o)
//   dc'_total = dc' + LN'(du γ_c);  [di df dg] from dc'_total as in lstm_backward_row;  dc += dc'_total f
//   dxs[step] += da;  dhw = LN'(da γ_hh);  dγ_hh += Σ da ĥ, dβ_hh += Σ da, dγ_c += Σ du ĉ, dβ_c += Σ du
template <class T>
void layer_norm_lstm_backward(Tape<T>& t, std::uint32_t i) {
    const auto& state = t.template saved_state<LayerNormStepState<T>>(i);
    const std::uint32_t c = t.input(i, 2);
    const auto& cv = t.value(c);
    const std::size_t batch = cv.shape()[0], hidden = cv.shape()[1], width = 4 * hidden;
    const T *act = state.gates.data(), *hhat = state.hhat.data(), *stats = state.stats.data();
    const T* cp = cv.data();
    const T* cn = t.value(t.output(i, 1)).data();
    const T* gain_hh = t.value(t.input(i, 4)).data();
    const T* gain_c = t.value(t.input(i, 6)).data();
    const T* shift_c = t.value(t.input(i, 7)).data();
    const T* dh = t.output_grad(i, 0);
    const T* dcn = t.output_grad(i, 1);
    T* dc = t.needs_grad(c) ? t.grad_ref(c).zeroed().data() : nullptr;
    // da (B, 4H) | dhw (B, 4H) | du (B, H) | do (B, H) | dc'_total (B, H)
    T* da = scratch<T>(batch * (2 * width + 3 * hidden));
    T* dhw = da + batch * width;
    T* du = dhw + batch * width;
    T* dout = du + batch * hidden;
    T* dct = dout + batch * hidden;
    for_rows(batch, width, [&](std::size_t b) {
        const std::size_t k = b * hidden;
        const T* a = act + b * width;
        const T* st = stats + b * 4;
        T* tau = dout + k;  // τ, then do element by element
        for (std::size_t j = 0; j < hidden; ++j) tau[j] = (cn[k + j] - st[2]) * st[3] * gain_c[j] + shift_c[j];
        activate(tau, tau, static_cast<const T*>(nullptr), hidden, tanh_fn);
        for (std::size_t j = 0; j < hidden; ++j) {
            const T o = a[3 * hidden + j], g = dh ? dh[k + j] : T(0);
            du[k + j] = g * o * (T(1) - tau[j] * tau[j]);
            tau[j] = g * tau[j] * o * (T(1) - o);
        }
        detail::layer_norm_row_backward(cn + k, static_cast<const T*>(nullptr), st[2], st[3], du + k, gain_c, hidden,
                                        dct + k, true);
        if (dcn)
            for (std::size_t j = 0; j < hidden; ++j) dct[k + j] += dcn[k + j];
        T* dar = da + b * width;
        lstm_backward_row(a, cp + k, cn + k, static_cast<const T*>(nullptr), dct + k, dar, dc ? dc + k : nullptr,
                          hidden);
        std::copy(dout + k, dout + k + hidden, dar + 3 * hidden);
        detail::layer_norm_row_backward(static_cast<const T*>(nullptr), hhat + b * width, T(0), st[1], dar, gain_hh,
                                        width, dhw + b * width, true);
    });
    add_column_sums(t, t.input(i, 4), da, hhat, batch, width);
    add_column_sums(t, t.input(i, 5), da, static_cast<const T*>(nullptr), batch, width);
    if (t.needs_grad(t.input(i, 6))) {  // ĉ (B, H) into dct's buffer, now free
        for (std::size_t b = 0; b < batch; ++b)
            for (std::size_t j = 0; j < hidden; ++j)
                dct[b * hidden + j] = (cn[b * hidden + j] - stats[b * 4 + 2]) * stats[b * 4 + 3];
        add_column_sums(t, t.input(i, 6), du, dct, batch, hidden);
    }
    add_column_sums(t, t.input(i, 7), du, static_cast<const T*>(nullptr), batch, hidden);
    const GateRows rows = step_rows(t, i, state);
    add_gate_grad(t, rows.node, &rows, da, batch, width);
    std::uint32_t mask = 0;
    recurrent_backward(t, t.input(i, 1), t.input(i, 3), static_cast<const std::uint32_t*>(nullptr), dhw, width, batch,
                       width, step_mask(t, i, mask));
}

// GRU. Inputs: xs, h, w_hh, γ_hh, β_hh. hg = LN(h w_hh^T) γ_hh + β_hh, then gru_forward_row with
// xs[step] as xg; backward: gru_backward_row gives dxg and dhg, then dhw = LN'(dhg γ_hh).
template <class T>
void layer_norm_gru_backward(Tape<T>& t, std::uint32_t i) {
    const auto& state = t.template saved_state<LayerNormStepState<T>>(i);
    const std::uint32_t h = t.input(i, 1);
    const auto& hv = t.value(h);
    const std::size_t batch = hv.shape()[0], hidden = hv.shape()[1], width = 3 * hidden, saved = 4 * hidden;
    const T *act = state.gates.data(), *hhat = state.hhat.data(), *stats = state.stats.data();
    const T* gain = t.value(t.input(i, 3)).data();
    const T* dy = t.output_grad(i, 0);
    T* dh = t.needs_grad(h) ? t.grad_ref(h).zeroed().data() : nullptr;
    // dxg (B, 3H) | dhg (B, 3H) | dhw (B, 3H)
    T* dx = scratch<T>(3 * batch * width);
    T* dhg = dx + batch * width;
    T* dhw = dhg + batch * width;
    const T* hp = hv.data();
    for_rows(batch, width, [&](std::size_t b) {
        const std::size_t k = b * hidden, r = b * width;
        const T* a = act + b * saved;
        if (dh)
            gru_backward_row<true>(a, a + width, hp + k, dy + k, dx + r, dhg + r, dh + k, hidden);
        else
            gru_backward_row<false>(a, a + width, hp + k, dy + k, dx + r, dhg + r, static_cast<T*>(nullptr), hidden);
        detail::layer_norm_row_backward(static_cast<const T*>(nullptr), hhat + r, T(0), stats[b * 4 + 1], dhg + r, gain,
                                        width, dhw + r, true);
    });
    add_column_sums(t, t.input(i, 3), dhg, hhat, batch, width);
    add_column_sums(t, t.input(i, 4), dhg, static_cast<const T*>(nullptr), batch, width);
    const GateRows rows = step_rows(t, i, state);
    add_gate_grad(t, rows.node, &rows, dx, batch, width);
    std::uint32_t mask = 0;
    recurrent_backward(t, h, t.input(i, 2), static_cast<const std::uint32_t*>(nullptr), dhw, width, batch, width,
                       step_mask(t, i, mask));
}

}  // namespace

template <class T>
LSTMPointwise<T> layer_norm_lstm_step(const Var<T>& xs, std::size_t time_axis, std::size_t step, const Var<T>& h,
                                      const Var<T>& c, const Var<T>& w_hh, const Var<T>& gamma_hh,
                                      const Var<T>& beta_hh, const Var<T>& gamma_c, const Var<T>& beta_c, Scalar<T> eps,
                                      const Var<T>& h_mask) {
    const char* op = "layer_norm_lstm_step";
    Tape<T>& t = detail::tape_of(op, xs, h, c, w_hh, gamma_hh, beta_hh, gamma_c, beta_c);
    const auto dims = check_step(op, 4, xs, time_axis, step, h, c, w_hh, Var<T>());
    check_mask(op, h_mask, h);
    const std::size_t batch = dims.first, hidden = dims.second, width = 4 * hidden;
    check_norm_params<T>(op, {{"gamma_hh", &gamma_hh}, {"beta_hh", &beta_hh}}, width);
    check_norm_params<T>(op, {{"gamma_c", &gamma_c}, {"beta_c", &beta_c}}, hidden);
    std::array<std::uint32_t, 9> in{xs.index(),       h.index(),       c.index(),       w_hh.index(),
                                    gamma_hh.index(), beta_hh.index(), gamma_c.index(), beta_c.index()};
    const std::size_t count = step_inputs(in, 8, Var<T>(), h_mask);
    const std::uint32_t i = t.push(op, in.data(), count, &layer_norm_lstm_backward<T>, 2);
    t.backward_skips_input(i, 0);  // xs: only its shape
    T* hn = t.output_value(i, {batch, hidden}, 0).data();
    T* cn = t.output_value(i, {batch, hidden}, 1).data();
    const std::array<T*, 3> buffers =
        layer_norm_step_buffers(t, i, time_axis, step, h_mask.defined(), batch, hidden, width, 0);
    T *act = buffers[0], *hhat = buffers[1], *stats = buffers[2];  // (not a structured binding: lambdas capture them)
    recurrent_product(t, in[1], in[3], h_mask.defined() ? &in[count - 1] : nullptr, hhat, batch, width);
    const GateRows rows =
        sequence_rows(t, in[0], static_cast<std::int64_t>(time_axis), static_cast<std::int64_t>(step));
    const T* x = t.value(in[0]).data() + rows.offset;
    const T *cp = t.value(in[2]).data(), *gh = t.value(in[4]).data(), *bh = t.value(in[5]).data();
    const T *gc = t.value(in[6]).data(), *bc = t.value(in[7]).data();
    for_rows(batch, width, [&](std::size_t b) {
        const std::size_t k = b * hidden;
        T* a = act + b * width;
        T* hh = hhat + b * width;
        T* st = stats + b * 4;
        const T* xr = x + b * rows.stride;
        detail::layer_norm_row(hh, width, eps, static_cast<const T*>(nullptr), static_cast<const T*>(nullptr), hh,
                               st[0], st[1]);
        for (std::size_t j = 0; j < width; ++j) a[j] = xr[j] + hh[j] * gh[j] + bh[j];
        lstm_cell_row(a, cp + k, cn + k, hidden);
        detail::layer_norm_row(cn + k, hidden, eps, gc, bc, hn + k, st[2], st[3]);  // u = LN(c') γ_c + β_c
        activate(hn + k, hn + k, static_cast<const T*>(nullptr), hidden, tanh_fn);
        for (std::size_t j = 0; j < hidden; ++j) hn[k + j] *= a[3 * hidden + j];  // h' = o tanh(u)
    });
    return {t.handle(i, 0), t.handle(i, 1)};
}

template <class T>
Var<T> layer_norm_gru_step(const Var<T>& xs, std::size_t time_axis, std::size_t step, const Var<T>& h,
                           const Var<T>& w_hh, const Var<T>& gamma_hh, const Var<T>& beta_hh, Scalar<T> eps,
                           const Var<T>& h_mask) {
    const char* op = "layer_norm_gru_step";
    Tape<T>& t = detail::tape_of(op, xs, h, w_hh, gamma_hh, beta_hh);
    const auto dims = check_step(op, 3, xs, time_axis, step, h, h, w_hh, Var<T>());
    check_mask(op, h_mask, h);
    const std::size_t batch = dims.first, hidden = dims.second, width = 3 * hidden;
    check_norm_params<T>(op, {{"gamma_hh", &gamma_hh}, {"beta_hh", &beta_hh}}, width);
    std::array<std::uint32_t, 6> in{xs.index(), h.index(), w_hh.index(), gamma_hh.index(), beta_hh.index()};
    const std::size_t count = step_inputs(in, 5, Var<T>(), h_mask);
    const std::uint32_t i = t.push(op, in.data(), count, &layer_norm_gru_backward<T>);
    t.backward_skips_input(i, 0);  // xs: only its shape
    T* y = t.output_value(i, {batch, hidden}).data();
    // hg (B, 3H) at the start of scratch; the buffers after it when not recorded
    const std::array<T*, 3> buffers =
        layer_norm_step_buffers(t, i, time_axis, step, h_mask.defined(), batch, hidden, width, batch * width);
    T *act = buffers[0], *hhat = buffers[1], *stats = buffers[2];
    T* hg = scratch<T>(batch * width);
    recurrent_product(t, in[1], in[2], h_mask.defined() ? &in[count - 1] : nullptr, hhat, batch, width);
    const GateRows rows =
        sequence_rows(t, in[0], static_cast<std::int64_t>(time_axis), static_cast<std::int64_t>(step));
    const T* x = t.value(in[0]).data() + rows.offset;
    const T *hp = t.value(in[1]).data(), *gh = t.value(in[3]).data(), *bh = t.value(in[4]).data();
    for_rows(batch, width, [&](std::size_t b) {
        T* hh = hhat + b * width;
        T* hgr = hg + b * width;
        T* a = act + b * 4 * hidden;
        T* st = stats + b * 4;
        detail::layer_norm_row(hh, width, eps, static_cast<const T*>(nullptr), static_cast<const T*>(nullptr), hh,
                               st[0], st[1]);
        for (std::size_t j = 0; j < width; ++j) hgr[j] = hh[j] * gh[j] + bh[j];
        gru_forward_row(x + b * rows.stride, hgr, hp + b * hidden, a, y + b * hidden, hidden);
        std::copy(hgr + 2 * hidden, hgr + width, a + width);
    });
    return t.handle(i);
}

#define RECUR_LAYER_NORM_RECURRENT(T)                                                                          \
    template LSTMPointwise<T> layer_norm_lstm_step(const Var<T>&, std::size_t, std::size_t, const Var<T>&,     \
                                                   const Var<T>&, const Var<T>&, const Var<T>&, const Var<T>&, \
                                                   const Var<T>&, const Var<T>&, Scalar<T>, const Var<T>&);    \
    template Var<T> layer_norm_gru_step(const Var<T>&, std::size_t, std::size_t, const Var<T>&, const Var<T>&, \
                                        const Var<T>&, const Var<T>&, Scalar<T>, const Var<T>&);
RECUR_INSTANTIATE_FOR(RECUR_LAYER_NORM_RECURRENT)

}  // namespace recur
