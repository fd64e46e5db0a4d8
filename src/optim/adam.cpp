// Adam and AdamW (torch.optim.Adam / AdamW), with AMSGrad. One kernel serves both: Adam adds
// L2 weight decay to the gradient, AdamW scales the parameter by (1 - lr * weight_decay).
#include <cmath>

#include "src/optim/common.hpp"
#include "src/optim/simd.hpp"

namespace recur::optim {

namespace {

// Buffer slots, registered in this order.
constexpr std::size_t kExpAvg = 0, kExpAvgSq = 1, kMaxExpAvgSq = 2;

template <class O>
double checked_lr(const O& o, const char* who) {
    detail::require(std::isfinite(o.lr) && o.lr >= 0, who, "lr", o.lr, "must be finite and >= 0");
    detail::require(std::isfinite(o.eps) && o.eps >= 0, who, "eps", o.eps, "must be finite and >= 0");
    detail::require(o.beta1 >= 0 && o.beta1 < 1, who, "beta1", o.beta1, "must be in [0, 1)");
    detail::require(o.beta2 >= 0 && o.beta2 < 1, who, "beta2", o.beta2, "must be in [0, 1)");
    detail::require(std::isfinite(o.weight_decay) && o.weight_decay >= 0, who, "weight_decay", o.weight_decay,
                    "must be finite and >= 0");
    return o.lr;
}

// The per-step scalars, computed in double and rounded to T once.
template <class T>
struct AdamStep {
    T beta1, one_minus_beta1, beta2, one_minus_beta2;
    T neg_step_size;  // -lr / (1 - beta1^t)
    T bc2_sqrt;  // sqrt(1 - beta2^t)
    T eps;
    T l2;  // Adam: grad += l2 * p (when l2 != 0)
    T decay;  // AdamW: p *= decay (when decoupled)
    bool use_l2, decoupled;
};

template <class T>
AdamStep<T> adam_step(double lr, double beta1, double beta2, double eps, double weight_decay, bool decoupled,
                      std::int64_t t) {
    const auto td = static_cast<double>(t);
    const double bc1 = 1 - std::pow(beta1, td);
    const double bc2 = 1 - std::pow(beta2, td);
    AdamStep<T> s{};
    s.beta1 = static_cast<T>(beta1);
    s.one_minus_beta1 = static_cast<T>(1 - beta1);
    s.beta2 = static_cast<T>(beta2);
    s.one_minus_beta2 = static_cast<T>(1 - beta2);
    s.neg_step_size = static_cast<T>(-(lr / bc1));
    s.bc2_sqrt = static_cast<T>(std::sqrt(bc2));
    s.eps = static_cast<T>(eps);
    s.l2 = static_cast<T>(weight_decay);
    s.decay = static_cast<T>(1 - lr * weight_decay);
    s.use_l2 = !decoupled && weight_decay != 0;
    s.decoupled = decoupled;
    return s;
}

// p, g, m, v, v_max: n elements each; v_max is null without AMSGrad.
template <class T>
void adam_kernel(T* p, const T* g, T* m, T* v, T* v_max, std::size_t n, const AdamStep<T>& step) {
    const AdamStep<T> s = step;  // a local copy: the stores below cannot alias it
    detail::for_lanes<T>(n, [&]<class V>(std::size_t j) {
        V pj = detail::load<V>(p + j);
        if (s.decoupled) pj = pj * V(s.decay);
        V gj = detail::load<V>(g + j);
        if (s.use_l2) gj = gj + V(s.l2) * pj;
        const V mj = detail::load<V>(m + j) * V(s.beta1) + V(s.one_minus_beta1) * gj;
        V vj = detail::load<V>(v + j) * V(s.beta2) + V(s.one_minus_beta2) * gj * gj;
        detail::store(m + j, mj);
        detail::store(v + j, vj);
        if (v_max) {
            vj = detail::nan_max(detail::load<V>(v_max + j), vj);
            detail::store(v_max + j, vj);
        }
        const V denom = detail::sqrt(vj) / V(s.bc2_sqrt) + V(s.eps);
        detail::store(p + j, pj + V(s.neg_step_size) * mj / denom);
    });
}

// Shared step of Adam and AdamW; `buffer(slot, i)` gives the buffers of parameter i.
template <class T, class Buffers>
void run_adam(const std::vector<Parameter<T>*>& params, const AdamStep<T>& s, bool amsgrad, Buffers buffer) {
    for (std::size_t i = 0; i < params.size(); ++i)
        adam_kernel(params[i]->value().data(), params[i]->grad().data(), buffer(kExpAvg, i), buffer(kExpAvgSq, i),
                    amsgrad ? buffer(kMaxExpAvgSq, i) : static_cast<T*>(nullptr), params[i]->size(), s);
}

}  // namespace

template <class T>
Adam<T>::Adam(std::vector<Parameter<T>*> params, AdamOptions options)
    : Optimizer<T>("Adam", std::move(params), checked_lr(options, "Adam")), options_(options) {
    this->add_buffer("exp_avg");
    this->add_buffer("exp_avg_sq");
    if (options_.amsgrad) this->add_buffer("max_exp_avg_sq");
}

template <class T>
void Adam<T>::step() {
    const std::int64_t t = this->begin_step();
    const auto& o = options_;
    const auto s = adam_step<T>(this->lr(), o.beta1, o.beta2, o.eps, o.weight_decay, false, t);
    run_adam(this->parameters(), s, o.amsgrad,
             [this](std::size_t slot, std::size_t i) { return this->buffer(slot, i); });
}

template <class T>
AdamW<T>::AdamW(std::vector<Parameter<T>*> params, AdamWOptions options)
    : Optimizer<T>("AdamW", std::move(params), checked_lr(options, "AdamW")), options_(options) {
    this->add_buffer("exp_avg");
    this->add_buffer("exp_avg_sq");
    if (options_.amsgrad) this->add_buffer("max_exp_avg_sq");
}

template <class T>
void AdamW<T>::step() {
    const std::int64_t t = this->begin_step();
    const auto& o = options_;
    const auto s = adam_step<T>(this->lr(), o.beta1, o.beta2, o.eps, o.weight_decay, true, t);
    run_adam(this->parameters(), s, o.amsgrad,
             [this](std::size_t slot, std::size_t i) { return this->buffer(slot, i); });
}

template class Adam<float>;
template class Adam<double>;
template class AdamW<float>;
template class AdamW<double>;

}  // namespace recur::optim
