// MinMaxScaler and StandardScaler (see recur/data.hpp). Features are the last axis; every
// other axis indexes samples, so an array is viewed as rows (samples) x F (features).
#include <algorithm>
#include <cmath>
#include <limits>

#include "recur/data.hpp"
#include "src/data/common.hpp"

namespace recur::data {

namespace {

/// Number of features of `a` (last extent; 1 for a 1-D array). Rank 0: shape_error.
template <class T>
std::size_t features_of(const xt::xarray<T>& a, const std::string& where) {
    if (a.dimension() == 0)
        throw shape_error(where + ": expected an array of samples (N,) or (..., F), got a scalar of shape ()");
    return a.dimension() == 1 ? 1 : a.shape().back();
}

/// Rejects NaN and infinities, naming the first one's index.
template <class T>
void check_finite(const xt::xarray<T>& a, const std::string& where) {
    const T* p = a.data();
    for (std::size_t i = 0; i < a.size(); ++i)
        if (!std::isfinite(p[i]))
            throw value_error(where + ": " +
                              (std::isnan(p[i]) ? "NaN"
                               : p[i] > 0       ? "inf"
                                                : "-inf") +
                              " at index " + detail::index_str(a.shape(), i) + " of an array of shape " +
                              shape_str(a.shape()) + " (clean or drop non-finite values before scaling)");
}

/// out[i] = f(a[i], feature of i); feature = i mod F, or always `fixed` if given.
template <class T, class Fn>
xt::xarray<T> map_features(const xt::xarray<T>& a, std::size_t F, std::size_t fixed, Fn f) {
    xt::xarray<T> out = xt::xarray<T>::from_shape(a.shape());
    const T* x = a.data();
    T* o = out.data();
    const std::size_t n = a.size();
    if (fixed != std::numeric_limits<std::size_t>::max()) {
        for (std::size_t i = 0; i < n; ++i) o[i] = f(x[i], fixed);
    } else {
        for (std::size_t i = 0; i < n; ++i) o[i] = f(x[i], i % F);
    }
    return out;
}

// The min-max map of one feature, in double: (x - data_min) / data_range * width + range_min.
// Dividing by the range (rather than multiplying by scale_ = width / range and adding
// min_ = range_min - data_min * scale_, scikit-learn's equivalent form) keeps data_min and
// data_max exactly on the ends of the default range, with or without fused multiply-adds.
template <class T>
struct MinMaxMap {
    const T* dmin;
    const T* dmax;
    double rmin, width;
    double range(std::size_t f) const {
        const double r = static_cast<double>(dmax[f]) - static_cast<double>(dmin[f]);
        return r == 0 ? 1.0 : r;  // a constant feature: scikit-learn's _handle_zeros_in_scale
    }
    T forward(T x, std::size_t f) const {
        return static_cast<T>((static_cast<double>(x) - static_cast<double>(dmin[f])) / range(f) * width + rmin);
    }
    T backward(T x, std::size_t f) const {
        return static_cast<T>((static_cast<double>(x) - rmin) / width * range(f) + static_cast<double>(dmin[f]));
    }
};

constexpr std::size_t kEveryFeature = std::numeric_limits<std::size_t>::max();

/// Per-feature minima and maxima of a rows x F view (data already checked finite).
template <class T>
void min_max(const xt::xarray<T>& a, std::size_t F, std::vector<T>& lo, std::vector<T>& hi) {
    const T* x = a.data();
    const std::size_t rows = a.size() / F;
    lo.assign(x, x + F);
    hi.assign(x, x + F);
    for (std::size_t r = 1; r < rows; ++r)
        for (std::size_t f = 0; f < F; ++f) {
            lo[f] = std::min(lo[f], x[r * F + f]);
            hi[f] = std::max(hi[f], x[r * F + f]);
        }
}

template <class T>
xt::xarray<T> to_array(const std::vector<double>& v) {
    xt::xarray<T> a = xt::xarray<T>::from_shape({v.size()});
    for (std::size_t i = 0; i < v.size(); ++i) a(i) = static_cast<T>(v[i]);
    return a;
}

/// Checks done by fit: rank, features, samples, finiteness. Returns F.
template <class T>
std::size_t check_fit(const xt::xarray<T>& a, const std::string& where) {
    const std::size_t F = features_of(a, where);
    if (F == 0) throw shape_error(where + ": array of shape " + shape_str(a.shape()) + " has no features");
    if (a.size() == 0) throw value_error(where + ": no samples (array of shape " + shape_str(a.shape()) + ")");
    check_finite(a, where);
    return F;
}

// Checks that a scaler is fitted and that `a` has the features it was fitted on, naming
// "<scaler>::<fn>".
template <class T>
void check_fitted_input(const char* scaler, const char* fn, bool fitted, std::size_t n_features,
                        const xt::xarray<T>& a) {
    const std::string where = std::string(scaler) + "::" + fn;
    if (!fitted) throw value_error(where + ": the scaler is not fitted; call fit or fit_transform first");
    const std::size_t F = features_of(a, where);
    if (F != n_features)
        throw shape_error(where + ": array of shape " + shape_str(a.shape()) + " has " + std::to_string(F) +
                          " feature" + (F == 1 ? "" : "s") + ", the scaler was fitted on " +
                          std::to_string(n_features));
    check_finite(a, where);
}

}  // namespace

// ---- MinMaxScaler -------------------------------------------------------------------------

template <class T>
MinMaxScaler<T>::MinMaxScaler(T range_min, T range_max) : range_min_(range_min), range_max_(range_max) {
    if (!std::isfinite(range_min) || !std::isfinite(range_max) || !(range_min < range_max))
        throw value_error("MinMaxScaler: feature range (" + number_str(static_cast<double>(range_min)) + ", " +
                          number_str(static_cast<double>(range_max)) + ") must be finite with min < max");
}

// Checks that the scaler is fitted and fits the array given to `fn`.
template <class T>
void MinMaxScaler<T>::check(const xt::xarray<T>& a, const char* fn) const {
    check_fitted_input("MinMaxScaler", fn, fitted(), n_features_, a);
}

template <class T>
MinMaxScaler<T>& MinMaxScaler<T>::fit(const xt::xarray<T>& a) {
    const std::size_t F = check_fit(a, "MinMaxScaler::fit");
    std::vector<T> lo, hi;
    min_max(a, F, lo, hi);
    std::vector<double> range(F), scale(F), mn(F), dmin(F), dmax(F);
    const double width = static_cast<double>(range_max_) - static_cast<double>(range_min_);
    for (std::size_t f = 0; f < F; ++f) {
        dmin[f] = static_cast<double>(lo[f]);
        dmax[f] = static_cast<double>(hi[f]);
        range[f] = dmax[f] - dmin[f];
        // A constant feature divides by 1 instead of 0 (scikit-learn's _handle_zeros_in_scale).
        double s = width / (range[f] == 0 ? 1.0 : range[f]);
        if (!std::isfinite(s) || !std::isfinite(static_cast<T>(s))) s = width;
        scale[f] = s;
        mn[f] = static_cast<double>(range_min_) - dmin[f] * s;
    }
    data_min_ = to_array<T>(dmin);
    data_max_ = to_array<T>(dmax);
    data_range_ = to_array<T>(range);
    scale_ = to_array<T>(scale);
    min_ = to_array<T>(mn);
    n_features_ = F;
    n_samples_ = a.size() / F;
    return *this;
}

template <class T>
xt::xarray<T> MinMaxScaler<T>::transform(const xt::xarray<T>& a) const {
    check(a, "transform");
    const MinMaxMap<T> map{data_min_.data(), data_max_.data(), static_cast<double>(range_min_),
                           static_cast<double>(range_max_) - static_cast<double>(range_min_)};
    return map_features(a, n_features_, kEveryFeature, [&](T x, std::size_t f) { return map.forward(x, f); });
}

template <class T>
xt::xarray<T> MinMaxScaler<T>::fit_transform(const xt::xarray<T>& a) {
    fit(a);
    return transform(a);
}

template <class T>
xt::xarray<T> MinMaxScaler<T>::inverse_transform(const xt::xarray<T>& a) const {
    check(a, "inverse_transform");
    const MinMaxMap<T> map{data_min_.data(), data_max_.data(), static_cast<double>(range_min_),
                           static_cast<double>(range_max_) - static_cast<double>(range_min_)};
    return map_features(a, n_features_, kEveryFeature, [&](T x, std::size_t f) { return map.backward(x, f); });
}

namespace {
void check_feature(const std::string& where, std::size_t feature, std::size_t F) {
    if (feature >= F)
        throw index_error(where + ": feature " + std::to_string(feature) + " is out of range for a scaler fitted on " +
                          std::to_string(F) + " feature" + (F == 1 ? "" : "s"));
}

template <class T>
void check_any(const xt::xarray<T>& a, bool fitted, const std::string& where) {
    if (!fitted) throw value_error(where + ": the scaler is not fitted; call fit or fit_transform first");
    check_finite(a, where);
}
}  // namespace

template <class T>
xt::xarray<T> MinMaxScaler<T>::transform_feature(const xt::xarray<T>& a, std::size_t feature) const {
    check_any(a, fitted(), "MinMaxScaler::transform_feature");
    check_feature("MinMaxScaler::transform_feature", feature, n_features_);
    const MinMaxMap<T> map{data_min_.data(), data_max_.data(), static_cast<double>(range_min_),
                           static_cast<double>(range_max_) - static_cast<double>(range_min_)};
    return map_features(a, 1, feature, [&](T x, std::size_t f) { return map.forward(x, f); });
}

template <class T>
xt::xarray<T> MinMaxScaler<T>::inverse_transform_feature(const xt::xarray<T>& a, std::size_t feature) const {
    check_any(a, fitted(), "MinMaxScaler::inverse_transform_feature");
    check_feature("MinMaxScaler::inverse_transform_feature", feature, n_features_);
    const MinMaxMap<T> map{data_min_.data(), data_max_.data(), static_cast<double>(range_min_),
                           static_cast<double>(range_max_) - static_cast<double>(range_min_)};
    return map_features(a, 1, feature, [&](T x, std::size_t f) { return map.backward(x, f); });
}

namespace {
template <class T>
const xt::xarray<T>& fitted_stat(const xt::xarray<T>& v, bool fitted, const char* scaler, const char* name) {
    if (!fitted)
        throw value_error(std::string(scaler) + "::" + name +
                          ": the scaler is not fitted; call fit or fit_transform first");
    return v;
}
}  // namespace

template <class T>
const xt::xarray<T>& MinMaxScaler<T>::data_min() const {
    return fitted_stat(data_min_, fitted(), "MinMaxScaler", "data_min");
}
template <class T>
const xt::xarray<T>& MinMaxScaler<T>::data_max() const {
    return fitted_stat(data_max_, fitted(), "MinMaxScaler", "data_max");
}
template <class T>
const xt::xarray<T>& MinMaxScaler<T>::data_range() const {
    return fitted_stat(data_range_, fitted(), "MinMaxScaler", "data_range");
}
template <class T>
const xt::xarray<T>& MinMaxScaler<T>::scale() const {
    return fitted_stat(scale_, fitted(), "MinMaxScaler", "scale");
}
template <class T>
const xt::xarray<T>& MinMaxScaler<T>::min() const {
    return fitted_stat(min_, fitted(), "MinMaxScaler", "min");
}

// ---- StandardScaler -----------------------------------------------------------------------

template <class T>
StandardScaler<T>::StandardScaler(bool with_mean, bool with_std) : with_mean_(with_mean), with_std_(with_std) {}

template <class T>
void StandardScaler<T>::check(const xt::xarray<T>& a, const char* fn) const {
    check_fitted_input("StandardScaler", fn, fitted(), n_features_, a);
}

// Two passes in double: mean, then the mean of squared deviations (population variance).
template <class T>
StandardScaler<T>& StandardScaler<T>::fit(const xt::xarray<T>& a) {
    const std::size_t F = check_fit(a, "StandardScaler::fit");
    const std::size_t rows = a.size() / F;
    const T* x = a.data();
    std::vector<T> lo, hi;
    min_max(a, F, lo, hi);
    std::vector<double> mean(F, 0.0), var(F, 0.0), scale(F, 1.0);
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t f = 0; f < F; ++f) mean[f] += static_cast<double>(x[r * F + f]);
    for (std::size_t f = 0; f < F; ++f) mean[f] /= static_cast<double>(rows);
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t f = 0; f < F; ++f) {
            const double d = static_cast<double>(x[r * F + f]) - mean[f];
            var[f] += d * d;
        }
    for (std::size_t f = 0; f < F; ++f) {
        var[f] /= static_cast<double>(rows);
        if (lo[f] == hi[f]) {
            // Constant: exact statistics (a rounded mean would turn 0 into noise / tiny std).
            mean[f] = static_cast<double>(lo[f]);
            var[f] = 0.0;
        }
        const double s = std::sqrt(var[f]);
        scale[f] = (with_std_ && var[f] > 0 && std::isfinite(1.0 / s)) ? s : 1.0;
    }
    mean_ = to_array<T>(mean);
    var_ = to_array<T>(var);
    scale_ = to_array<T>(scale);
    n_features_ = F;
    n_samples_ = rows;
    return *this;
}

template <class T>
xt::xarray<T> StandardScaler<T>::transform(const xt::xarray<T>& a) const {
    check(a, "transform");
    const T* s = scale_.data();
    const T* m = mean_.data();
    const bool center = with_mean_;
    return map_features(a, n_features_, kEveryFeature,
                        [&](T x, std::size_t f) { return T((center ? x - m[f] : x) / s[f]); });
}

template <class T>
xt::xarray<T> StandardScaler<T>::fit_transform(const xt::xarray<T>& a) {
    fit(a);
    return transform(a);
}

template <class T>
xt::xarray<T> StandardScaler<T>::inverse_transform(const xt::xarray<T>& a) const {
    check(a, "inverse_transform");
    const T* s = scale_.data();
    const T* m = mean_.data();
    const bool center = with_mean_;
    return map_features(a, n_features_, kEveryFeature,
                        [&](T x, std::size_t f) { return T(center ? x * s[f] + m[f] : x * s[f]); });
}

template <class T>
xt::xarray<T> StandardScaler<T>::transform_feature(const xt::xarray<T>& a, std::size_t feature) const {
    check_any(a, fitted(), "StandardScaler::transform_feature");
    check_feature("StandardScaler::transform_feature", feature, n_features_);
    const T s = scale_(feature), m = with_mean_ ? mean_(feature) : T(0);
    return map_features(a, 1, feature, [&](T x, std::size_t) { return T((x - m) / s); });
}

template <class T>
xt::xarray<T> StandardScaler<T>::inverse_transform_feature(const xt::xarray<T>& a, std::size_t feature) const {
    check_any(a, fitted(), "StandardScaler::inverse_transform_feature");
    check_feature("StandardScaler::inverse_transform_feature", feature, n_features_);
    const T s = scale_(feature), m = with_mean_ ? mean_(feature) : T(0);
    return map_features(a, 1, feature, [&](T x, std::size_t) { return T(x * s + m); });
}

template <class T>
const xt::xarray<T>& StandardScaler<T>::mean() const {
    return fitted_stat(mean_, fitted(), "StandardScaler", "mean");
}
template <class T>
const xt::xarray<T>& StandardScaler<T>::var() const {
    return fitted_stat(var_, fitted(), "StandardScaler", "var");
}
template <class T>
const xt::xarray<T>& StandardScaler<T>::scale() const {
    return fitted_stat(scale_, fitted(), "StandardScaler", "scale");
}

template class MinMaxScaler<float>;
template class MinMaxScaler<double>;
template class StandardScaler<float>;
template class StandardScaler<double>;

}  // namespace recur::data
