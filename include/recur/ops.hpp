// recur/ops.hpp — the primitive ops. Each takes Vars and returns a Var on the same tape.
//
// Letters: B batch, T time, I input features, H hidden, N any leading extent.
// Axes may be negative (counted from the end), as in numpy and PyTorch.
// Binary arithmetic broadcasts like numpy; gradients are summed back to each input's shape.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <vector>

#include <xtensor/xarray.hpp>

#include "recur/tape.hpp"

namespace recur {

/// A scalar argument that takes the Var's type (so `x * 2.0` works for Var<float>).
template <class T>
using Scalar = std::type_identity_t<T>;

// ---- Elementwise arithmetic (numpy broadcasting) ------------------------------------------
template <class T>
Var<T> add(const Var<T>& a, const Var<T>& b);  // a + b
template <class T>
Var<T> sub(const Var<T>& a, const Var<T>& b);  // a - b
template <class T>
Var<T> mul(const Var<T>& a, const Var<T>& b);  // a * b
template <class T>
Var<T> div(const Var<T>& a, const Var<T>& b);  // a / b
template <class T>
Var<T> neg(const Var<T>& x);  // -x

// ---- Scalar arithmetic --------------------------------------------------------------------
template <class T>
Var<T> affine(const Var<T>& x, Scalar<T> scale, Scalar<T> shift);  // scale * x + shift
template <class T>
Var<T> rdiv(Scalar<T> s, const Var<T>& x);  // s / x
template <class T>
Var<T> pow(const Var<T>& x, Scalar<T> p);  // x^p (x > 0 unless p is an integer)

// ---- Unary functions ----------------------------------------------------------------------
template <class T>
Var<T> exp(const Var<T>& x);
template <class T>
Var<T> log(const Var<T>& x);
template <class T>
Var<T> tanh(const Var<T>& x);
template <class T>
Var<T> sigmoid(const Var<T>& x);  // 1 / (1 + e^-x), stable for any x
template <class T>
Var<T> relu(const Var<T>& x);  // max(x, 0); gradient 0 at 0
template <class T>
Var<T> abs(const Var<T>& x);  // |x|; gradient 0 at 0
template <class T>
Var<T> sqrt(const Var<T>& x);  // x^(1/2);  dx = g / (2 y): infinite at x = 0
/// min(max(x, lo), hi); gradient 1 where lo <= x <= hi (boundaries included, as torch.clamp),
/// else 0. value_error if lo > hi.
template <class T>
Var<T> clamp(const Var<T>& x, Scalar<T> lo, Scalar<T> hi);

// ---- Along an axis ------------------------------------------------------------------------
template <class T>
Var<T> softmax(const Var<T>& x, std::ptrdiff_t axis = -1);
template <class T>
Var<T> log_softmax(const Var<T>& x, std::ptrdiff_t axis = -1);
/// softmax over the positions of `axis` where `mask` (0/1, broadcasts to x's shape) is nonzero.
/// Masked positions get exactly 0 probability and 0 gradient, whatever x holds there (even
/// NaN or inf); a row with every position masked gives all zeros (not NaN) and 0 gradient.
template <class T>
Var<T> masked_softmax(const Var<T>& x, const xt::xarray<T>& mask, std::ptrdiff_t axis = -1);
/// softmax over the last axis of x (..., N) keeping positions k < lengths[r] of each row r.
/// lengths (integers in [0, N]) has the leading extents of x (e.g. (B) or (B, Tq) for x
/// (B, Tq, N)) and holds for every row below them. Masked positions and zero-length rows as above.
template <class T>
Var<T> masked_softmax(const Var<T>& x, const xt::xarray<std::int64_t>& lengths);
template <class T>
Var<T> masked_softmax(const Var<T>& x, const std::vector<std::int64_t>& lengths);

// ---- Reductions ---------------------------------------------------------------------------
template <class T>
Var<T> sum(const Var<T>& x);  // all elements, shape ()
template <class T>
Var<T> sum(const Var<T>& x, std::ptrdiff_t axis, bool keepdim = false);
template <class T>
Var<T> mean(const Var<T>& x);
template <class T>
Var<T> mean(const Var<T>& x, std::ptrdiff_t axis, bool keepdim = false);
/// Largest (smallest) element along `axis`. The gradient goes to the arg position only; on ties
/// that is the first (lowest) index, as PyTorch's max(dim) / min(dim). A NaN counts as the
/// extreme value (it propagates). The axis must not be empty.
template <class T>
Var<T> max(const Var<T>& x, std::ptrdiff_t axis, bool keepdim = false);
template <class T>
Var<T> min(const Var<T>& x, std::ptrdiff_t axis, bool keepdim = false);
/// Index of the largest element along `axis` (first on ties), std::int64_t, x's shape without
/// the axis (or with extent 1 there when keepdim). No gradient: a plain array.
template <class T>
xt::xarray<std::int64_t> argmax(const Var<T>& x, std::ptrdiff_t axis, bool keepdim = false);
/// The k largest elements along `axis`, largest first (on ties, the lower index first), and
/// their std::int64_t indices; both have x's shape with extent k on the axis. The indices carry
/// no gradient; values = gather(x, axis, indices), so the gradient reaches x through them.
template <class T>
struct TopK {
    Var<T> values;
    xt::xarray<std::int64_t> indices;
};
template <class T>
TopK<T> topk(const Var<T>& x, std::size_t k, std::ptrdiff_t axis = -1);

// ---- Linear algebra -----------------------------------------------------------------------
/// (M, K) x (K, N) -> (M, N); (B, M, K) x (K, N) -> (B, M, N).
template <class T>
Var<T> matmul(const Var<T>& a, const Var<T>& b);
/// x W^T + b, PyTorch's layout: x (..., I), W (O, I), b (O) -> (..., O).
template <class T>
Var<T> linear(const Var<T>& x, const Var<T>& weight);
template <class T>
Var<T> linear(const Var<T>& x, const Var<T>& weight, const Var<T>& bias);
/// Batched product: (B, M, K) x (B, K, N) -> (B, M, N), one GEMM per batch.
///   da[b] += g[b] b[b]^T,  db[b] += a[b]^T g[b]
template <class T>
Var<T> bmm(const Var<T>& a, const Var<T>& b);

// ---- Shape --------------------------------------------------------------------------------
/// Same elements in a new shape; one extent may be -1 (inferred).
template <class T>
Var<T> reshape(const Var<T>& x, const std::vector<std::ptrdiff_t>& shape);
/// Swaps two axes.
template <class T>
Var<T> transpose(const Var<T>& x, std::ptrdiff_t axis0, std::ptrdiff_t axis1);
/// Reorders axes: output axis k is input axis dims[k].
template <class T>
Var<T> permute(const Var<T>& x, const std::vector<std::ptrdiff_t>& dims);
/// Elements [start, stop) along `axis` (start, stop may be negative; stop is clamped).
template <class T>
Var<T> slice(const Var<T>& x, std::ptrdiff_t axis, std::ptrdiff_t start, std::ptrdiff_t stop);
/// `n` pieces along `axis`, as equal as PyTorch makes them (the last may be smaller).
template <class T>
std::vector<Var<T>> chunk(const Var<T>& x, std::size_t n, std::ptrdiff_t axis = 0);
/// Joins along an existing axis.
template <class T>
Var<T> concat(const std::vector<Var<T>>& xs, std::ptrdiff_t axis = 0);
/// Joins along a new axis.
template <class T>
Var<T> stack(const std::vector<Var<T>>& xs, std::ptrdiff_t axis = 0);
/// Braced lists: concat({a, b}, -1), stack({a, b}).
template <class T>
Var<T> concat(std::initializer_list<Var<T>> xs, std::ptrdiff_t axis = 0) {
    return concat(std::vector<Var<T>>(xs), axis);
}
template <class T>
Var<T> stack(std::initializer_list<Var<T>> xs, std::ptrdiff_t axis = 0) {
    return stack(std::vector<Var<T>>(xs), axis);
}
/// One index along `axis`; the axis is removed (e.g. time step t of (T, B, I) is (B, I)).
template <class T>
Var<T> select(const Var<T>& x, std::ptrdiff_t axis, std::ptrdiff_t index);

// ---- Indexing and masking -----------------------------------------------------------------
/// Rows of `weight` (V, E) picked by integer `ids` of any shape -> ids.shape + (E).
/// Backward scatter-adds: a repeated id gets the sum of its rows' gradients.
template <class T>
Var<T> embedding(const Var<T>& weight, const xt::xarray<std::int64_t>& ids);
/// mask * a + (1 - mask) * b with a constant mask (usually 0/1) that broadcasts to a and b.
template <class T>
Var<T> where(const xt::xarray<T>& mask, const Var<T>& a, const Var<T>& b);
/// torch.gather: y[..., i, ...] = x[..., index[..., i, ...], ...] along `axis`. index (std::int64_t,
/// values in [0, x extent on axis)) has x's rank and extents <= x's on the other axes; y has
/// index's shape. Backward scatter-adds: positions picked twice get both gradients.
template <class T>
Var<T> gather(const Var<T>& x, std::ptrdiff_t axis, const xt::xarray<std::int64_t>& index);
/// The entries index[0..n) of `axis` (1-D std::int64_t index, may repeat) -> x's shape with
/// extent n on the axis. Backward scatter-adds like gather.
template <class T>
Var<T> index_select(const Var<T>& x, std::ptrdiff_t axis, const xt::xarray<std::int64_t>& index);
/// value where the 0/1 `mask` (broadcasts to x's shape) is nonzero, else x; gradient 0 where filled.
template <class T>
Var<T> masked_fill(const Var<T>& x, const xt::xarray<T>& mask, Scalar<T> value);

// ---- Regularisation -----------------------------------------------------------------------
/// Inverted dropout: in training, zeroes each element with probability p and scales the rest
/// by 1 / (1 - p), with a mask drawn from the tape's generator; otherwise returns x.
template <class T>
Var<T> dropout(const Var<T>& x, Scalar<T> p, bool training = true);

// ---- Normalisation (layer norm, layer-normalised recurrent steps) --------------------------
/// torch.nn.functional.layer_norm over the last axis: for each row x of D = normalized_size
/// elements (the last extent of x, checked), y = (x - mean) / sqrt(var + eps) * weight + bias,
/// var biased (Σ(x - mean)² / D). weight and bias (D,) are optional (undefined: 1 and 0).
/// One node; it keeps each row's mean and rstd for a one-pass backward.
template <class T>
Var<T> layer_norm(const Var<T>& x, std::size_t normalized_size, const Var<T>& weight = {}, const Var<T>& bias = {},
                  Scalar<T> eps = Scalar<T>(1e-5));

// ---- Fused recurrent cells (the pointwise part of one time step in one node) ---------------
/// The two outputs of lstm_pointwise: h' and c', each (B, H).
template <class T>
struct LSTMPointwise {
    Var<T> h;
    Var<T> c;
};
/// LSTM gate math. Pre-activations a = xg + hg (B, 4H) in PyTorch's order [i | f | g | o]:
///   c' = σ(a_f) c + σ(a_i) tanh(a_g),  h' = σ(a_o) tanh(c').  c (B, H).
template <class T>
LSTMPointwise<T> lstm_pointwise(const Var<T>& xg, const Var<T>& hg, const Var<T>& c);
/// A whole LSTM step: gates = xs[step] + h w_hh^T + b_hh, then the gate math above. xs is the
/// hoisted input projection W_ih x + b_ih of every step, (T, B, 4H) for time_axis 0 or
/// (B, T, 4H) for 1, read in place; h (B, H_out), c (B, H), w_hh (4H, H_out), b_hh (4H) or
/// undefined (no bias). Keeps only the gate activations for backward. h_mask (B, H_out), if
/// defined, is a constant recurrent dropout mask: the product is (h ⊙ h_mask) w_hh^T (Gal and
/// Ghahramani's variational dropout; no gradient flows to the mask).
template <class T>
LSTMPointwise<T> lstm_step(const Var<T>& xs, std::size_t time_axis, std::size_t step, const Var<T>& h, const Var<T>& c,
                           const Var<T>& w_hh, const Var<T>& b_hh = {}, const Var<T>& h_mask = {});
/// GRU gate math with PyTorch's b_hn inside the reset product. xg = W_i x + b_i and
/// hg = W_h h + b_h (B, 3H) in order [r | z | n]:
///   r = σ(xg_r + hg_r), z = σ(xg_z + hg_z), n = tanh(xg_n + r hg_n),  h' = (1 - z) n + z h.
template <class T>
Var<T> gru_pointwise(const Var<T>& xg, const Var<T>& hg, const Var<T>& h);
/// A whole GRU step: hg = h w_hh^T + b_hh, xg = xs[step] (read in place, as lstm_step), then the
/// gate math above. h (B, H), w_hh (3H, H), b_hh (3H) or undefined. h_mask (B, H) as in
/// lstm_step: hg = (h ⊙ h_mask) w_hh^T + b_hh, while h' = (1 - z) n + z h blends the unmasked h.
template <class T>
Var<T> gru_step(const Var<T>& xs, std::size_t time_axis, std::size_t step, const Var<T>& h, const Var<T>& w_hh,
                const Var<T>& b_hh = {}, const Var<T>& h_mask = {});

/// A layer-normalised LSTM step (Ba et al. 2016), one node with outputs h', c' (B, H). xs is the
/// input part of every step, already normalised: LN(x W_ih^T) γ_ih + β_ih, (T, B, 4H) for
/// time_axis 0 or (B, T, 4H) for 1, read in place; h, c (B, H); w_hh (4H, H); gamma_hh,
/// beta_hh (4H); gamma_c, beta_c (H). LN normalises each row over its last axis (layer_norm):
///   a = xs[step] + LN(h w_hh^T) γ_hh + β_hh  in order [i | f | g | o]
///   c' = σ(a_f) c + σ(a_i) tanh(a_g),  h' = σ(a_o) tanh(LN(c') γ_c + β_c)
/// h_mask (B, H), if defined, is a constant recurrent dropout mask as in lstm_step: the product
/// is (h ⊙ h_mask) w_hh^T.
template <class T>
LSTMPointwise<T> layer_norm_lstm_step(const Var<T>& xs, std::size_t time_axis, std::size_t step, const Var<T>& h,
                                      const Var<T>& c, const Var<T>& w_hh, const Var<T>& gamma_hh,
                                      const Var<T>& beta_hh, const Var<T>& gamma_c, const Var<T>& beta_c,
                                      Scalar<T> eps = Scalar<T>(1e-5), const Var<T>& h_mask = {});
/// A layer-normalised GRU step, one node: xs as above with 3H = [r | z | n], h (B, H), w_hh (3H, H),
/// gamma_hh, beta_hh (3H); β_hh's n part stays inside the reset product (as PyTorch's b_hn):
///   hg = LN(h w_hh^T) γ_hh + β_hh;  r = σ(x_r + hg_r), z = σ(x_z + hg_z),
///   n = tanh(x_n + r hg_n),  h' = (1 - z) n + z h   (x = xs[step])
/// h_mask (B, H) as in gru_step: hg = LN((h ⊙ h_mask) w_hh^T) γ_hh + β_hh, while the blend reads
/// the unmasked h.
template <class T>
Var<T> layer_norm_gru_step(const Var<T>& xs, std::size_t time_axis, std::size_t step, const Var<T>& h,
                           const Var<T>& w_hh, const Var<T>& gamma_hh, const Var<T>& beta_hh,
                           Scalar<T> eps = Scalar<T>(1e-5), const Var<T>& h_mask = {});

// ---- Inference: a whole recurrent layer in one call (no gradient) ----------------------------
/// A run of lstm_step / gru_step over every step of xs, without a node per step: for a tape
/// that is not recording (inference); tape_error on a recording one. Outputs and final states
/// equal the steps' (same kernels). lengths (B values in [1, T], or empty) as in nn::unroll:
/// a row's state stops at its own last step, its outputs past it are 0, and reverse starts
/// there. output (T, B, H) or (B, T, H) like xs; h, c (B, H) (c undefined for the GRU).
template <class T>
struct SequenceRun {
    Var<T> output;
    Var<T> h;
    Var<T> c;
};
/// b_ih (G) or undefined: the input projection's bias, when xs was projected without it; each
/// step adds it to its rows of xs as it reads them (rounded as a projection with the bias:
/// (xs + b_ih) first), which saves the projection's pass over all of xs.
/// w_ih (G, I) or undefined: given, xs is the raw input (T, B, I) / (B, T, I), projected as
/// linear(xs, w_ih) would: where a step's product has at least 2^22 multiply-adds (f32 or bf16)
/// a block of steps at a time just before they run, on the packed matmul (the same values to
/// rounding: the sums may run in another order; see README "Inference without a node per
/// step"), else all of it first by linear (the same bits).
template <class T>
SequenceRun<T> lstm_sequence(const Var<T>& xs, std::size_t time_axis, bool reverse, const Var<T>& h0, const Var<T>& c0,
                             const Var<T>& w_hh, const Var<T>& b_hh, const std::vector<std::int64_t>& lengths = {},
                             const Var<T>& b_ih = {}, const Var<T>& w_ih = {});
template <class T>
SequenceRun<T> gru_sequence(const Var<T>& xs, std::size_t time_axis, bool reverse, const Var<T>& h0, const Var<T>& w_hh,
                            const Var<T>& b_hh, const std::vector<std::int64_t>& lengths = {}, const Var<T>& b_ih = {},
                            const Var<T>& w_ih = {});

// ---- Graph --------------------------------------------------------------------------------
/// The same value with the gradient stopped (the result does not require grad).
template <class T>
Var<T> detach(const Var<T>& x);

// ---- Operators ----------------------------------------------------------------------------
template <class T>
Var<T> operator+(const Var<T>& a, const Var<T>& b) {
    return add(a, b);
}
template <class T>
Var<T> operator-(const Var<T>& a, const Var<T>& b) {
    return sub(a, b);
}
template <class T>
Var<T> operator*(const Var<T>& a, const Var<T>& b) {
    return mul(a, b);
}
template <class T>
Var<T> operator/(const Var<T>& a, const Var<T>& b) {
    return div(a, b);
}
template <class T>
Var<T> operator-(const Var<T>& x) {
    return neg(x);
}
template <class T>
Var<T> operator+(const Var<T>& x, Scalar<T> s) {
    return affine(x, T(1), s);
}
template <class T>
Var<T> operator+(Scalar<T> s, const Var<T>& x) {
    return affine(x, T(1), s);
}
template <class T>
Var<T> operator-(const Var<T>& x, Scalar<T> s) {
    return affine(x, T(1), -s);
}
template <class T>
Var<T> operator-(Scalar<T> s, const Var<T>& x) {
    return affine(x, T(-1), s);
}
template <class T>
Var<T> operator*(const Var<T>& x, Scalar<T> s) {
    return affine(x, s, T(0));
}
template <class T>
Var<T> operator*(Scalar<T> s, const Var<T>& x) {
    return affine(x, s, T(0));
}
template <class T>
Var<T> operator/(const Var<T>& x, Scalar<T> s) {
    return affine(x, T(1) / s, T(0));
}
template <class T>
Var<T> operator/(Scalar<T> s, const Var<T>& x) {
    return rdiv(s, x);
}

}  // namespace recur
