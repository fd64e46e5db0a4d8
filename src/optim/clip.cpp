// Gradient clipping by joint norm and by value (torch.nn.utils.clip_grad_norm_ / _value_).
#include <cmath>
#include <algorithm>
#include <limits>
#include <utility>

#include "src/optim/common.hpp"

namespace recur::optim {

namespace {

template <class T>
void check_params(const std::vector<Parameter<T>*>& params, const char* who) {
    for (std::size_t i = 0; i < params.size(); ++i)
        if (params[i] == nullptr) throw value_error(std::string(who) + ": parameter " + std::to_string(i) + " is null");
}

// One pass over every gradient: max |g| and the sum of squares in double (nan if some
// element is nan, inf if some element is inf). Four independent accumulators keep the
// additions from waiting on each other.
template <class T>
std::pair<double, double> scan(const std::vector<Parameter<T>*>& params) {
    double s[4] = {0, 0, 0, 0}, m[4] = {0, 0, 0, 0};
    for (const auto* q : params) {
        const T* g = q->grad().data();
        const std::size_t n = q->grad().size();
        std::size_t j = 0;
        for (; j + 4 <= n; j += 4)
            for (std::size_t k = 0; k < 4; ++k) {
                const auto x = static_cast<double>(g[j + k]);
                s[k] += x * x;
                const double a = std::fabs(x);
                m[k] = a > m[k] ? a : m[k];
            }
        for (; j < n; ++j) {
            const auto x = static_cast<double>(g[j]);
            s[0] += x * x;
            const double a = std::fabs(x);
            m[0] = a > m[0] ? a : m[0];
        }
    }
    return {std::max(std::max(m[0], m[1]), std::max(m[2], m[3])), (s[0] + s[1]) + (s[2] + s[3])};
}

// The p-norm of all gradients together (p > 0 or inf); nan if any element is nan.
template <class T>
double total_norm(const std::vector<Parameter<T>*>& params, double p) {
    const auto [amax, sumsq] = scan(params);
    if (std::isnan(sumsq)) return std::numeric_limits<double>::quiet_NaN();
    if (std::isinf(p) || amax == 0 || std::isinf(amax)) return amax;
    // The common case, the 2-norm of moderate values: the sum of squares has neither
    // overflowed nor underflowed. Otherwise sum powers of |g| / max |g|.
    if (p == 2 && amax > 1e-140 && amax < 1e140) return std::sqrt(sumsq);
    double s = 0;
    for (const auto* q : params) {
        const T* g = q->grad().data();
        for (std::size_t j = 0, n = q->grad().size(); j < n; ++j) {
            const double r = std::fabs(static_cast<double>(g[j])) / amax;
            s += p == 1 ? r : p == 2 ? r * r : std::pow(r, p);
        }
    }
    return amax * (p == 1 ? s : p == 2 ? std::sqrt(s) : std::pow(s, 1 / p));
}

}  // namespace

template <class T>
double clip_grad_norm(const std::vector<Parameter<T>*>& params, double max_norm, double norm_type,
                      bool error_if_nonfinite) {
    detail::require(max_norm >= 0, "clip_grad_norm", "max_norm", max_norm, "must be >= 0");
    detail::require(norm_type > 0, "clip_grad_norm", "norm_type", norm_type, "must be > 0 or inf");
    check_params(params, "clip_grad_norm");
    if (params.empty()) return 0;
    const double total = total_norm(params, norm_type);
    if (error_if_nonfinite && !std::isfinite(total))
        throw value_error("clip_grad_norm: the total norm of order " + number_str(norm_type) + " of the gradients is " +
                          number_str(total) + ", so it cannot be clipped (the gradients are unchanged)");
    // PyTorch: grads *= clamp(max_norm / (total + 1e-6), max = 1); a nan coefficient stays nan.
    const double coef = max_norm / (total + 1e-6);
    if (coef < 1 || std::isnan(coef)) {
        const auto c = static_cast<T>(coef);
        for (auto* q : params) {
            T* g = q->grad().data();
            for (std::size_t j = 0, n = q->grad().size(); j < n; ++j) g[j] = g[j] * c;
        }
    }
    return total;
}

template <class T>
void clip_grad_value(const std::vector<Parameter<T>*>& params, double clip_value) {
    detail::require(clip_value >= 0, "clip_grad_value", "clip_value", clip_value, "must be >= 0");
    check_params(params, "clip_grad_value");
    const auto hi = static_cast<T>(clip_value), lo = -hi;
    for (auto* q : params) {
        T* g = q->grad().data();
        for (std::size_t j = 0, n = q->grad().size(); j < n; ++j) {
            if (g[j] < lo)
                g[j] = lo;
            else if (g[j] > hi)
                g[j] = hi;  // nan stays nan
        }
    }
}

template double clip_grad_norm<float>(const std::vector<Parameter<float>*>&, double, double, bool);
template double clip_grad_norm<double>(const std::vector<Parameter<double>*>&, double, double, bool);
template void clip_grad_value<float>(const std::vector<Parameter<float>*>&, double);
template void clip_grad_value<double>(const std::vector<Parameter<double>*>&, double);

}  // namespace recur::optim
