// Random primitives: dropout, with masks drawn from the tape's seeded generator.
#include <random>

#include "common.hpp"

namespace recur {

// ---- dropout (inverted): y = x * m, m = [u >= p] / (1 - p), u ~ U[0, 1);  dx += g * m --------
template <class T>
static void dropout_backward(Tape<T>& t, std::uint32_t i) {
    const auto& node = t.node(i);
    t.grad_ref(t.input(i, 0)).add(node.grad * node.saved);
}
template <class T>
Var<T> dropout(const Var<T>& x, Scalar<T> p, bool training) {
    Tape<T>& t = detail::tape_of("dropout", x);
    if (!(p >= T(0) && p < T(1)))
        throw value_error("dropout: probability must be in [0, 1), got " + std::to_string(p));
    if (!training || p == T(0)) return x;
    const std::uint32_t out = t.push("dropout", {x.index()}, &dropout_backward<T>);
    auto& node = t.node(out);
    const auto& xv = t.value(x.index());
    node.saved.resize(xv.shape());
    node.value.resize(xv.shape());
    const T keep = T(1) / (T(1) - p);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    auto& rng = t.generator();
    T* m = node.saved.data();
    for (std::size_t k = 0; k < node.saved.size(); ++k) m[k] = u(rng) >= static_cast<double>(p) ? keep : T(0);
    xt::noalias(node.value) = xv * node.saved;
    return t.handle(out);
}

#define RECUR_RANDOM(T) template Var<T> dropout(const Var<T>&, Scalar<T>, bool);
RECUR_INSTANTIATE_FOR(RECUR_RANDOM)

}  // namespace recur
