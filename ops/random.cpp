// Random primitives: dropout, with masks drawn from the tape's seeded generator.
#include <random>

#include "common.hpp"

namespace recur {

// ---- dropout (inverted): y = x * m, m = [u >= p] / (1 - p), u ~ U[0, 1);  dx += g * m --------
template <class T>
struct DropoutState {
    xt::xarray<T> mask;  // m, x's shape
};
template <class T>
static void dropout_backward(Tape<T>& t, std::uint32_t i) {
    t.grad_ref(t.input(i, 0)).add(t.node(i).grad * t.template saved_state<DropoutState<T>>(i).mask);
}
template <class T>
Var<T> dropout(const Var<T>& x, Scalar<T> p, bool training) {
    Tape<T>& t = detail::tape_of("dropout", x);
    if (!(p >= T(0) && p < T(1))) throw value_error("dropout: probability must be in [0, 1), got " + std::to_string(p));
    if (!training || p == T(0)) return x;
    const std::uint32_t out = t.push("dropout", {x.index()}, &dropout_backward<T>);
    auto& mask = t.template state<DropoutState<T>>(out).mask;
    auto& node = t.node(out);
    const auto& xv = t.value(x.index());
    mask.resize(xv.shape());
    t.output_value(out, xv.shape());
    const T keep = T(1) / (T(1) - p);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    auto& rng = t.generator();
    T* m = mask.data();
    for (std::size_t k = 0; k < mask.size(); ++k) m[k] = u(rng) >= static_cast<double>(p) ? keep : T(0);
    xt::noalias(node.value) = xv * mask;
    return t.handle(out);
}

#define RECUR_RANDOM(T) template Var<T> dropout(const Var<T>&, Scalar<T>, bool);
RECUR_INSTANTIATE_FOR(RECUR_RANDOM)

}  // namespace recur
