// Lane helpers for the optimizer kernels. A kernel is written once, as a generic lambda over
// V = xsimd::batch<T> (the body of the loop) or V = T (the tail), so one formula serves both.
// (A plain loop does not vectorise here: std::sqrt may set errno.)
#pragma once

#include <cmath>
#include <cstddef>
#include <type_traits>

#include <xsimd/xsimd.hpp>

namespace recur::optim::detail {

template <class V, class T>
V load(const T* p) {
    if constexpr (std::is_same_v<V, T>)
        return *p;
    else
        return xsimd::load_unaligned(p);
}

template <class V, class T>
void store(T* p, const V& v) {
    if constexpr (std::is_same_v<V, T>)
        *p = v;
    else
        xsimd::store_unaligned(p, v);
}

template <class V>
V sqrt(const V& x) {
    if constexpr (std::is_floating_point_v<V>)
        return std::sqrt(x);
    else
        return xsimd::sqrt(x);
}

/// torch.maximum: nan if either is nan.
template <class V>
V nan_max(const V& a, const V& b) {
    if constexpr (std::is_floating_point_v<V>)
        return std::isnan(a) || a >= b ? a : b;
    else
        return xsimd::select(xsimd::isnan(a) | (a >= b), a, b);
}

/// Calls f.template operator()<V>(j) for every element index j of [0, n): a batch of
/// xsimd::batch<T>::size elements at a time, then the rest one by one (V = T).
template <class T, class F>
void for_lanes(std::size_t n, F&& f) {
    using B = xsimd::batch<T>;
    std::size_t j = 0;
    for (; j + B::size <= n; j += B::size) f.template operator()<B>(j);
    for (; j < n; ++j) f.template operator()<T>(j);
}

}  // namespace recur::optim::detail
