// SGD with momentum, dampening, Nesterov momentum and L2 weight decay (torch.optim.SGD).
#include <cmath>

#include "src/optim/common.hpp"
#include "src/optim/simd.hpp"

namespace recur::optim {

namespace {

double checked_lr(const SGDOptions& o) {
    if (!o.lr) throw value_error("SGD: lr is required (it has no default), e.g. SGD(params, {.lr = 0.1})");
    const double lr = *o.lr;
    detail::require(std::isfinite(lr) && lr >= 0, "SGD", "lr", lr, "must be finite and >= 0");
    detail::require(std::isfinite(o.momentum) && o.momentum >= 0, "SGD", "momentum", o.momentum,
                    "must be finite and >= 0");
    detail::require(std::isfinite(o.dampening), "SGD", "dampening", o.dampening, "must be finite");
    detail::require(std::isfinite(o.weight_decay) && o.weight_decay >= 0, "SGD", "weight_decay", o.weight_decay,
                    "must be finite and >= 0");
    if (o.nesterov && (o.momentum <= 0 || o.dampening != 0))
        throw value_error("SGD: Nesterov momentum requires a momentum > 0 and zero dampening, got momentum " +
                          number_str(o.momentum) + " and dampening " + number_str(o.dampening));
    return lr;
}

}  // namespace

template <class T>
SGD<T>::SGD(std::vector<Parameter<T>*> params, SGDOptions options)
    : Optimizer<T>("SGD", std::move(params), checked_lr(options)), options_(options) {
    if (options_.momentum != 0) momentum_slot_ = this->add_buffer("momentum_buffer");
}

template <class T>
void SGD<T>::step() {
    const bool first = this->begin_step() == 1;
    const T neg_lr = static_cast<T>(-this->lr());
    const T wd = static_cast<T>(options_.weight_decay);
    const T mom = static_cast<T>(options_.momentum);
    const T keep = static_cast<T>(1 - options_.dampening);
    const bool decay = options_.weight_decay != 0, use_momentum = options_.momentum != 0;
    const bool nesterov = options_.nesterov;
    const auto& params = this->parameters();
    for (std::size_t i = 0; i < params.size(); ++i) {
        T* p = params[i]->value().data();
        const T* g = params[i]->grad().data();
        const std::size_t n = params[i]->size();
        T* buf = use_momentum ? this->buffer(momentum_slot_, i) : nullptr;
        detail::for_lanes<T>(n, [&]<class V>(std::size_t j) {
            V d = detail::load<V>(g + j);
            if (decay) d = d + V(wd) * detail::load<V>(p + j);
            if (use_momentum) {
                // The buffer starts as the first step's d (PyTorch clones it).
                const V b = first ? d : detail::load<V>(buf + j) * V(mom) + V(keep) * d;
                detail::store(buf + j, b);
                d = nesterov ? d + V(mom) * b : b;
            }
            detail::store(p + j, detail::load<V>(p + j) + V(neg_lr) * d);
        });
    }
}

template class SGD<float>;
template class SGD<double>;

}  // namespace recur::optim
