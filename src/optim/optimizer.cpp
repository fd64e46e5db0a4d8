// The Optimizer base: parameter list, learning rate, step counter, per-parameter buffers,
// and their state as named arrays.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <unordered_map>

#include "src/optim/common.hpp"

namespace recur::optim {

// ---- Scalars in state -------------------------------------------------------------------------

// T = double: {v}. T = float: three floats, v rounded to float, then the rounded remainder
// twice. Each remainder is exact in double, and a float's 24 bits three times cover a
// double's 53, so the sum of the three (in double, first to last) is v again.
template <class T>
xt::xarray<T> encode_scalar(double v) {
    if constexpr (std::is_same_v<T, double>) {
        xt::xarray<double> a = xt::xarray<double>::from_shape({1});
        a(0) = v;
        return a;
    } else {
        xt::xarray<T> a = xt::xarray<T>::from_shape({3});
        a.fill(T(0));
        const auto hi = static_cast<T>(v);
        a(0) = hi;
        if (!std::isfinite(v) || !std::isfinite(hi)) return a;
        const double r = v - static_cast<double>(hi);
        const auto mid = static_cast<T>(r);
        a(1) = mid;
        a(2) = static_cast<T>(r - static_cast<double>(mid));
        return a;
    }
}

template <class T>
double decode_scalar(const xt::xarray<T>& a, const std::string& what) {
    if (a.dimension() > 1 || a.size() < 1 || a.size() > 3)
        throw shape_error(what + ": a scalar is stored as a 0-d or 1-D array of 1 to 3 elements, got shape " +
                          shape_str(a.shape()));
    double v = 0;
    const T* d = a.data();
    for (std::size_t i = 0; i < a.size(); ++i) v += static_cast<double>(d[i]);
    return v;
}

// ---- Optimizer --------------------------------------------------------------------------------

template <class T>
Optimizer<T>::Optimizer(const char* name, std::vector<Parameter<T>*> params, double lr)
    : name_(name), params_(std::move(params)), lr_(lr) {
    const std::string who = name_;
    if (params_.empty()) throw value_error(who + ": got an empty parameter list");
    std::unordered_map<const Parameter<T>*, std::size_t> seen;
    for (std::size_t i = 0; i < params_.size(); ++i) {
        if (params_[i] == nullptr) throw value_error(who + ": parameter " + std::to_string(i) + " is null");
        auto [it, fresh] = seen.emplace(params_[i], i);
        if (!fresh)
            throw value_error(who + ": parameter " + std::to_string(i) + " is the same as parameter " +
                              std::to_string(it->second) + " (each parameter may appear once)");
    }
    detail::require(std::isfinite(lr) && lr >= 0, who, "lr", lr, "must be finite and >= 0");
}

template <class T>
void Optimizer<T>::zero_grad() {
    for (auto* p : params_) p->zero_grad();
}

template <class T>
void Optimizer<T>::set_lr(double lr) {
    detail::require(std::isfinite(lr) && lr >= 0, std::string(name_) + ".set_lr", "lr", lr, "must be finite and >= 0");
    lr_ = lr;
}

template <class T>
std::size_t Optimizer<T>::add_buffer(std::string name) {
    Buffer b{std::move(name), {}};
    b.arrays.reserve(params_.size());
    for (auto* p : params_) b.arrays.push_back(xt::zeros<T>(p->shape()));
    buffers_.push_back(std::move(b));
    return buffers_.size() - 1;
}

template <class T>
std::int64_t Optimizer<T>::begin_step() {
    for (std::size_t i = 0; i < params_.size(); ++i) {
        const Parameter<T>& p = *params_[i];
        if (p.grad().shape() != p.shape())
            throw shape_error(std::string(name_) + ".step: parameter " + std::to_string(i) + " has shape " +
                              shape_str(p.shape()) + " but its grad has shape " + shape_str(p.grad().shape()));
        for (const auto& b : buffers_)
            if (b.arrays[i].shape() != p.shape())
                throw shape_error(std::string(name_) + ".step: parameter " + std::to_string(i) + " has shape " +
                                  shape_str(p.shape()) + " but its " + b.name + " has shape " +
                                  shape_str(b.arrays[i].shape()) +
                                  " (the parameter changed shape after the optimizer was made)");
    }
    return ++step_;
}

template <class T>
State<T> Optimizer<T>::state() const {
    State<T> out;
    out.reserve(2 + params_.size() * buffers_.size());
    out.emplace_back("step", encode_scalar<T>(static_cast<double>(step_)));
    out.emplace_back("lr", encode_scalar<T>(lr_));
    for (std::size_t i = 0; i < params_.size(); ++i)
        for (const auto& b : buffers_) out.emplace_back(std::to_string(i) + "." + b.name, b.arrays[i]);
    return out;
}

template <class T>
void Optimizer<T>::load_state(const State<T>& state) {
    const std::string who = name_;
    std::vector<std::string> names = {"step", "lr"};
    for (std::size_t i = 0; i < params_.size(); ++i)
        for (const auto& b : buffers_) names.push_back(std::to_string(i) + "." + b.name);
    const auto entries = detail::index_state(state, names, who);

    // Check everything first.
    const std::int64_t step = detail::decode_count(*entries.at("step"), who, "step");
    const double lr = decode_scalar(*entries.at("lr"), who + ": load_state: 'lr'");
    if (!(std::isfinite(lr) && lr >= 0))
        throw value_error(who + ": load_state: 'lr' must be finite and >= 0, got " + number_str(lr));
    for (std::size_t i = 0; i < params_.size(); ++i)
        for (const auto& b : buffers_) {
            const std::string n = std::to_string(i) + "." + b.name;
            const auto& a = *entries.at(n);
            if (a.shape() != b.arrays[i].shape())
                throw shape_error(who + ": load_state: '" + n + "' has shape " + shape_str(a.shape()) + ", parameter " +
                                  std::to_string(i) + " has shape " + shape_str(b.arrays[i].shape()));
        }

    // Then commit (same shapes: plain copies, nothing can fail).
    step_ = step;
    lr_ = lr;
    for (std::size_t i = 0; i < params_.size(); ++i)
        for (auto& b : buffers_) {
            const auto& a = *entries.at(std::to_string(i) + "." + b.name);
            std::copy(a.data(), a.data() + a.size(), b.arrays[i].data());
        }
}

template xt::xarray<float> encode_scalar<float>(double);
template xt::xarray<double> encode_scalar<double>(double);
template double decode_scalar<float>(const xt::xarray<float>&, const std::string&);
template double decode_scalar<double>(const xt::xarray<double>&, const std::string&);
template class Optimizer<float>;
template class Optimizer<double>;

}  // namespace recur::optim
