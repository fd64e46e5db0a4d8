// RMSprop, plain, centered and with momentum (torch.optim.RMSprop).
#include <cmath>

#include "src/optim/common.hpp"
#include "src/optim/simd.hpp"

namespace recur::optim {

namespace {

double checked_lr(const RMSpropOptions& o) {
    const char* who = "RMSprop";
    detail::require(std::isfinite(o.lr) && o.lr >= 0, who, "lr", o.lr, "must be finite and >= 0");
    detail::require(std::isfinite(o.eps) && o.eps >= 0, who, "eps", o.eps, "must be finite and >= 0");
    detail::require(std::isfinite(o.momentum) && o.momentum >= 0, who, "momentum", o.momentum,
                    "must be finite and >= 0");
    detail::require(std::isfinite(o.weight_decay) && o.weight_decay >= 0, who, "weight_decay", o.weight_decay,
                    "must be finite and >= 0");
    detail::require(std::isfinite(o.alpha) && o.alpha >= 0, who, "alpha", o.alpha, "must be finite and >= 0");
    return o.lr;
}

constexpr std::size_t kSquareAvg = 0;

}  // namespace

template <class T>
RMSprop<T>::RMSprop(std::vector<Parameter<T>*> params, RMSpropOptions options)
    : Optimizer<T>("RMSprop", std::move(params), checked_lr(options)), options_(options) {
    this->add_buffer("square_avg");
    if (options_.momentum > 0) momentum_slot_ = this->add_buffer("momentum_buffer");
    if (options_.centered) grad_avg_slot_ = this->add_buffer("grad_avg");
}

template <class T>
void RMSprop<T>::step() {
    this->begin_step();
    const auto& o = options_;
    const T neg_lr = static_cast<T>(-this->lr());
    const T alpha = static_cast<T>(o.alpha), one_minus_alpha = static_cast<T>(1 - o.alpha);
    const T eps = static_cast<T>(o.eps), wd = static_cast<T>(o.weight_decay), mom = static_cast<T>(o.momentum);
    const bool decay = o.weight_decay != 0, use_momentum = o.momentum > 0, centered = o.centered;
    const auto& params = this->parameters();
    for (std::size_t i = 0; i < params.size(); ++i) {
        T* p = params[i]->value().data();
        const T* g = params[i]->grad().data();
        T* sq = this->buffer(kSquareAvg, i);
        T* buf = use_momentum ? this->buffer(momentum_slot_, i) : nullptr;
        T* avg_g = centered ? this->buffer(grad_avg_slot_, i) : nullptr;
        const std::size_t n = params[i]->size();
        detail::for_lanes<T>(n, [&]<class V>(std::size_t j) {
            V gj = detail::load<V>(g + j);
            if (decay) gj = gj + V(wd) * detail::load<V>(p + j);
            const V s = detail::load<V>(sq + j) * V(alpha) + V(one_minus_alpha) * gj * gj;
            detail::store(sq + j, s);
            V avg;
            if (centered) {
                const V a = detail::load<V>(avg_g + j) * V(alpha) + V(one_minus_alpha) * gj;
                detail::store(avg_g + j, a);
                avg = detail::sqrt(s - a * a);
            } else {
                avg = detail::sqrt(s);
            }
            avg = avg + V(eps);
            if (use_momentum) {
                const V b = detail::load<V>(buf + j) * V(mom) + gj / avg;
                detail::store(buf + j, b);
                detail::store(p + j, detail::load<V>(p + j) + V(neg_lr) * b);
            } else {
                detail::store(p + j, detail::load<V>(p + j) + V(neg_lr) * gj / avg);
            }
        });
    }
}

template class RMSprop<float>;
template class RMSprop<double>;

}  // namespace recur::optim
