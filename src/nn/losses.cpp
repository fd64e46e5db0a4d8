// Loss functions composed from primitive ops, with torch.nn.functional's semantics.
#include "recur/nn/losses.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace recur::nn {

namespace {

/// A 0-d constant on `tape` (broadcasts against anything).
template <class T>
Var<T> scalar_constant(Tape<T>& tape, T v) {
    xt::xarray<T> a = xt::xarray<T>::from_shape(Shape{});
    a() = v;
    return tape.constant(std::move(a));
}

template <class T>
Var<T> reduce(const Var<T>& per_element, Reduction reduction) {
    switch (reduction) {
        case Reduction::mean:
            return mean(per_element);
        case Reduction::sum:
            return sum(per_element);
        case Reduction::none:
            break;
    }
    return per_element;
}

/// input and target: alive, on one tape, of one shape.
template <class T>
void check_pair(const char* loss, const char* what, const Var<T>& input, const Var<T>& target) {
    input.check(loss);
    target.check(loss);
    if (&input.tape() != &target.tape())
        throw tape_error(std::string(loss) + ": " + what + " and target belong to different tapes");
    if (input.shape() != target.shape())
        throw shape_error(std::string(loss) + ": " + what + " " + shape_str(input.shape()) + " and target " +
                          shape_str(target.shape()) + " must have the same shape");
}

/// max(log v, -100) elementwise, PyTorch's clamp in binary_cross_entropy. Where the clamp
/// bites (v = 0 included) the log is taken of 1 instead, so nothing is -inf or NaN and the
/// gradient there is 0.
template <class T>
Var<T> clamped_log(const Var<T>& v) {
    const xt::xarray<T>& values = v.value();
    xt::xarray<T> keep = xt::xarray<T>::from_shape(values.shape());
    bool all = true;
    for (std::size_t k = 0; k < values.size(); ++k) {
        const T x = values.data()[k];
        const bool ok = x > T(0) && std::log(x) >= T(-100);
        keep.data()[k] = ok ? T(1) : T(0);
        all = all && ok;
    }
    if (all) return log(v);
    Tape<T>& t = v.tape();
    Var<T> safe = recur::where(keep, v, scalar_constant(t, T(1)));
    return recur::where(keep, log(safe), scalar_constant(t, T(-100)));
}

/// targets must have shape scores.shape[:-1].
template <class T>
void check_targets_shape(const char* loss, const char* what, const Var<T>& scores, const Shape& ts) {
    const Shape& ss = scores.shape();
    if (ss.empty())
        throw shape_error(std::string(loss) + ": " + what + " must be (..., C) with the class axis last, got " +
                          shape_str(ss));
    const bool fits = ts.size() + 1 == ss.size() && std::equal(ts.begin(), ts.end(), ss.begin());
    if (!fits)
        throw shape_error(std::string(loss) + ": targets " + shape_str(ts) + " do not fit " + what + " " +
                          shape_str(ss) + " (expected targets of shape " + shape_str(Shape(ss.begin(), ss.end() - 1)) +
                          ", the class axis last)");
}

/// -log_probs[..., t] per target, log_probs (..., C), targets (...), class axis last.
/// The picked entries are gathered with the embedding op on log_probs viewed as (N*C, 1): an
/// exact gather whose backward scatters each gradient to its one entry.
template <class T>
Var<T> nll(const char* loss, const char* what, const Var<T>& log_probs, const xt::xarray<std::int64_t>& targets,
           Reduction reduction, std::int64_t ignore_index) {
    log_probs.check(loss);
    const Shape ts(targets.shape().begin(), targets.shape().end());
    check_targets_shape(loss, what, log_probs, ts);
    const Shape& ls = log_probs.shape();
    const std::size_t classes = ls.back();
    const std::size_t count = targets.size();

    // Flat position n * C + t of each target; ignored ones point one past the end.
    const auto ignored_row = static_cast<std::int64_t>(count * classes);
    xt::xarray<std::int64_t> rows = xt::xarray<std::int64_t>::from_shape(targets.shape());
    std::vector<std::int64_t> kept;
    kept.reserve(count);
    for (std::size_t n = 0; n < count; ++n) {
        const std::int64_t c = targets.data()[n];
        if (c == ignore_index) {
            rows.data()[n] = ignored_row;
            continue;
        }
        if (c < 0 || static_cast<std::size_t>(c) >= classes)
            throw index_error(std::string(loss) + ": target " + std::to_string(c) + " at flat position " +
                              std::to_string(n) + " of targets " + shape_str(ts) + " is not a class in [0, " +
                              std::to_string(classes) + ") nor ignore_index " + std::to_string(ignore_index));
        rows.data()[n] = static_cast<std::int64_t>(n * classes) + c;
        kept.push_back(rows.data()[n]);
    }

    Tape<T>& t = log_probs.tape();
    Var<T> flat = reshape(log_probs, {-1, 1});  // (N*C, 1)
    if (reduction == Reduction::none) {
        // An appended zero row is what ignored targets pick: their loss is exactly 0.
        if (kept.size() < count) {
            xt::xarray<T> zero = xt::xarray<T>::from_shape(Shape{1, 1});
            zero.fill(T(0));
            flat = concat<T>({flat, t.constant(std::move(zero))}, 0);
        }
        std::vector<std::ptrdiff_t> shape(ts.begin(), ts.end());
        return neg(reshape(embedding(flat, rows), shape));
    }
    if (kept.empty()) {
        // Nothing counted: 0 for sum, NaN for mean (0 / 0), as PyTorch; the gradient is 0.
        const T value = reduction == Reduction::sum ? T(0) : std::numeric_limits<T>::quiet_NaN();
        return affine(sum(log_probs), T(0), value);
    }
    xt::xarray<std::int64_t> ids = xt::xarray<std::int64_t>::from_shape(Shape{kept.size()});
    std::copy(kept.begin(), kept.end(), ids.data());
    Var<T> total = sum(embedding(flat, ids));
    if (reduction == Reduction::sum) return neg(total);
    return affine(total, T(-1) / static_cast<T>(kept.size()), T(0));
}

/// Float-valued class targets -> integers; index_error naming `loss` unless each is an integer.
template <class T>
xt::xarray<std::int64_t> integer_targets(const char* loss, const Var<T>& targets) {
    targets.check(loss);
    const xt::xarray<T>& v = targets.value();
    xt::xarray<std::int64_t> out = xt::xarray<std::int64_t>::from_shape(v.shape());
    constexpr T limit = T(9007199254740992.0);  // 2^53: beyond it floats skip integers
    for (std::size_t n = 0; n < v.size(); ++n) {
        const T c = v.data()[n];
        if (!(std::abs(c) <= limit && std::floor(c) == c))
            throw index_error(std::string(loss) + ": target " + number_str(c) + " at flat position " +
                              std::to_string(n) + " of targets " + shape_str(v.shape()) + " is not an integer class");
        out.data()[n] = static_cast<std::int64_t>(c);
    }
    return out;
}

}  // namespace

// ---- Regression ----------------------------------------------------------------------------

template <class T>
Var<T> mse_loss(const Var<T>& input, const Var<T>& target, Reduction reduction) {
    check_pair("mse_loss", "input", input, target);
    Var<T> d = input - target;
    return reduce(d * d, reduction);
}

template <class T>
Var<T> l1_loss(const Var<T>& input, const Var<T>& target, Reduction reduction) {
    check_pair("l1_loss", "input", input, target);
    return reduce(abs(input - target), reduction);
}

// ---- Binary classification -----------------------------------------------------------------

// -(y max(log p, -100) + (1 - y) max(log(1 - p), -100))
template <class T>
Var<T> binary_cross_entropy(const Var<T>& probabilities, const Var<T>& target, Reduction reduction) {
    check_pair("binary_cross_entropy", "probabilities", probabilities, target);
    const xt::xarray<T>& p = probabilities.value();
    for (std::size_t k = 0; k < p.size(); ++k)
        if (!(p.data()[k] >= T(0) && p.data()[k] <= T(1)))
            throw value_error("binary_cross_entropy: probability " + number_str(p.data()[k]) + " at flat position " +
                              std::to_string(k) + " of " + shape_str(p.shape()) + " is not in [0, 1]");
    Var<T> log_p = clamped_log(probabilities);
    Var<T> log_q = clamped_log(T(1) - probabilities);
    return reduce(-(target * log_p + (T(1) - target) * log_q), reduction);
}

// softplus(x) - x y with softplus(x) = max(x, 0) + log(1 + e^-|x|), nothing overflows. -|x| is
// written x - 2 max(x, 0), not with abs: abs'(0) = 0 would drop the log term's 1/2 at x = 0,
// while relu'(0) = 0 takes the left-hand derivative of both terms, so the gradient is
// sigmoid(x) - y everywhere, x = 0 included.
template <class T>
Var<T> binary_cross_entropy_with_logits(const Var<T>& logits, const Var<T>& target, Reduction reduction) {
    check_pair("binary_cross_entropy_with_logits", "logits", logits, target);
    Var<T> pos = relu(logits);  // max(x, 0)
    Var<T> minus_abs = logits - pos * T(2);  // -|x|
    return reduce(pos - logits * target + log(T(1) + exp(minus_abs)), reduction);
}

// ---- Multi-class classification ------------------------------------------------------------

template <class T>
Var<T> nll_loss(const Var<T>& log_probs, const xt::xarray<std::int64_t>& targets, Reduction reduction,
                std::int64_t ignore_index) {
    return nll("nll_loss", "log_probs", log_probs, targets, reduction, ignore_index);
}

template <class T>
Var<T> nll_loss(const Var<T>& log_probs, const Var<T>& targets, Reduction reduction, std::int64_t ignore_index) {
    return nll("nll_loss", "log_probs", log_probs, integer_targets("nll_loss", targets), reduction, ignore_index);
}

template <class T>
Var<T> cross_entropy(const Var<T>& logits, const xt::xarray<std::int64_t>& targets, Reduction reduction,
                     std::int64_t ignore_index) {
    logits.check("cross_entropy");
    const Shape ts(targets.shape().begin(), targets.shape().end());
    check_targets_shape("cross_entropy", "logits", logits, ts);
    return nll("cross_entropy", "logits", log_softmax(logits, -1), targets, reduction, ignore_index);
}

template <class T>
Var<T> cross_entropy(const Var<T>& logits, const Var<T>& targets, Reduction reduction, std::int64_t ignore_index) {
    return cross_entropy(logits, integer_targets("cross_entropy", targets), reduction, ignore_index);
}

#define RECUR_LOSSES(T)                                                                                     \
    template Var<T> mse_loss(const Var<T>&, const Var<T>&, Reduction);                                      \
    template Var<T> l1_loss(const Var<T>&, const Var<T>&, Reduction);                                       \
    template Var<T> binary_cross_entropy(const Var<T>&, const Var<T>&, Reduction);                          \
    template Var<T> binary_cross_entropy_with_logits(const Var<T>&, const Var<T>&, Reduction);              \
    template Var<T> nll_loss(const Var<T>&, const xt::xarray<std::int64_t>&, Reduction, std::int64_t);      \
    template Var<T> nll_loss(const Var<T>&, const Var<T>&, Reduction, std::int64_t);                        \
    template Var<T> cross_entropy(const Var<T>&, const xt::xarray<std::int64_t>&, Reduction, std::int64_t); \
    template Var<T> cross_entropy(const Var<T>&, const Var<T>&, Reduction, std::int64_t);
RECUR_LOSSES(float)
RECUR_LOSSES(double)
#undef RECUR_LOSSES

}  // namespace recur::nn
