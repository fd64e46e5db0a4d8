// Normalisation primitives: layer_norm over the last axis, as torch.nn.functional.layer_norm.
// One node: the forward keeps each row's mean and rstd, the backward is one fused pass
// (no node per mean, variance, division, scale and shift).
#include <string>
#include <vector>

#include "common.hpp"
#include "normalization.hpp"

namespace recur {

namespace {

// Rows (all axes but the last, N of them) in parallel above this many elements.
constexpr std::size_t layer_norm_grain = std::size_t(1) << 15;

// f(k) for every row k < rows of `width` elements; on OpenMP threads when large.
template <class F>
void each_row(std::size_t rows, std::size_t width, F f) {
    if (detail::threads_for(double(rows * width), layer_norm_grain) < 2) {
        for (std::size_t k = 0; k < rows; ++k) f(k);
        return;
    }
    const auto n = static_cast<std::ptrdiff_t>(rows);
#pragma omp parallel for schedule(static)
    for (std::ptrdiff_t k = 0; k < n; ++k) f(static_cast<std::size_t>(k));
}

// What a recorded layer_norm keeps: each row's mean and 1 / sqrt(var + eps).
template <class T>
struct LayerNormState {
    std::vector<T> mean, rstd;
    bool has_weight = false;
};

}  // namespace

// ---- layer_norm: y = (x - mean) / sqrt(var + eps) * w + b over the last axis (D) -------------
//   x̂ = (x - mean) rstd;  dw += Σ_rows g x̂;  db += Σ_rows g;
//   dx += rstd (g w - mean(g w) - x̂ mean(g w x̂))  (row by row)
template <class T>
static void layer_norm_backward(Tape<T>& t, std::uint32_t i) {
    const auto& st = t.template saved_state<LayerNormState<T>>(i);
    const std::uint32_t x = t.input(i, 0);
    const auto& xv = t.value(x);
    const std::size_t d = xv.shape().back(), rows = st.mean.size();
    const T* g = t.node(i).grad.data();
    const T* xp = xv.data();
    const std::uint32_t count = t.node(i).num_inputs;
    const T* w = st.has_weight ? t.value(t.input(i, 1)).data() : nullptr;
    if (t.needs_grad(x)) {
        auto r = t.grad_ref(x);
        const bool assign = r.beta() == T(0);
        T* dx = r.buffer().data();
        each_row(rows, d, [&](std::size_t k) {
            detail::layer_norm_row_backward(xp + k * d, static_cast<const T*>(nullptr), st.mean[k], st.rstd[k],
                                            g + k * d, w, d, dx + k * d, assign);
        });
    }
    if (st.has_weight && t.needs_grad(t.input(i, 1))) {
        T* dw = t.grad_ref(t.input(i, 1)).zeroed().data();
        for (std::size_t k = 0; k < rows; ++k) {
            const T *xr = xp + k * d, *gr = g + k * d;
            const T m = st.mean[k], r = st.rstd[k];
            for (std::size_t j = 0; j < d; ++j) dw[j] += gr[j] * ((xr[j] - m) * r);
        }
    }
    const std::uint32_t bias_input = st.has_weight ? 2 : 1;
    if (count > bias_input && t.needs_grad(t.input(i, bias_input))) {
        T* db = t.grad_ref(t.input(i, bias_input)).zeroed().data();
        for (std::size_t k = 0; k < rows; ++k)
            for (std::size_t j = 0; j < d; ++j) db[j] += g[k * d + j];
    }
}

template <class T>
Var<T> layer_norm(const Var<T>& x, std::size_t normalized_size, const Var<T>& weight, const Var<T>& bias,
                  Scalar<T> eps) {
    Tape<T>& t = detail::tape_of("layer_norm", x);
    if (weight.defined()) detail::tape_of("layer_norm", x, weight);
    if (bias.defined()) detail::tape_of("layer_norm", x, bias);
    const Shape xs = x.shape();
    auto shapes = [&] {
        std::string s = "x " + shape_str(xs);
        if (weight.defined()) s += ", weight " + shape_str(weight.shape());
        if (bias.defined()) s += ", bias " + shape_str(bias.shape());
        return s;
    };
    if (xs.empty() || normalized_size == 0 || xs.back() != normalized_size)
        throw shape_error("layer_norm: normalized_size " + std::to_string(normalized_size) +
                          " must be the (non-zero) last extent of x (" + shapes() + ")");
    if ((weight.defined() && weight.shape() != Shape{normalized_size}) ||
        (bias.defined() && bias.shape() != Shape{normalized_size}))
        throw shape_error("layer_norm: weight and bias must be (" + std::to_string(normalized_size) + ",) (" +
                          shapes() + ")");
    if (!(eps >= T(0))) throw value_error("layer_norm: eps must be >= 0, got " + std::to_string(eps));
    std::vector<std::uint32_t> inputs{x.index()};
    if (weight.defined()) inputs.push_back(weight.index());
    if (bias.defined()) inputs.push_back(bias.index());
    const std::uint32_t out = t.push("layer_norm", inputs, &layer_norm_backward<T>);
    const std::size_t d = normalized_size, rows = detail::numel(xs) / d;
    thread_local std::vector<T> unsaved_mean, unsaved_rstd;  // the statistics when not recorded
    std::vector<T>* mean = &unsaved_mean;
    std::vector<T>* rstd = &unsaved_rstd;
    if (t.needs_grad(out)) {
        auto& st = t.template state<LayerNormState<T>>(out);
        st.has_weight = weight.defined();
        mean = &st.mean;
        rstd = &st.rstd;
    }
    mean->resize(rows);
    rstd->resize(rows);
    T* y = t.output_value(out, xs).data();
    const T* xp = t.value(x.index()).data();
    const T* w = weight.defined() ? t.value(weight.index()).data() : nullptr;
    const T* b = bias.defined() ? t.value(bias.index()).data() : nullptr;
    T* m = mean->data();
    T* r = rstd->data();
    each_row(rows, d, [&](std::size_t k) { detail::layer_norm_row(xp + k * d, d, eps, w, b, y + k * d, m[k], r[k]); });
    return t.handle(out);
}

#define RECUR_NORMALIZATION(T) \
    template Var<T> layer_norm(const Var<T>&, std::size_t, const Var<T>&, const Var<T>&, Scalar<T>);
RECUR_INSTANTIATE_FOR(RECUR_NORMALIZATION)

}  // namespace recur
