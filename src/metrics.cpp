// Evaluation metrics on plain arrays: raw loops over contiguous data, accumulated in double.
#include "recur/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "recur/error.hpp"

namespace recur::metrics {

namespace {

template <class T>
void check_same_shape(const char* metric, const xt::xarray<T>& pred, const xt::xarray<T>& target) {
    if (pred.shape() != target.shape())
        throw shape_error(std::string(metric) + ": pred " + shape_str(pred.shape()) + " and target " +
                          shape_str(target.shape()) + " must have the same shape");
}

}  // namespace

template <class T>
double mae(const xt::xarray<T>& pred, const xt::xarray<T>& target) {
    check_same_shape("mae", pred, target);
    double total = 0;
    for (std::size_t k = 0; k < pred.size(); ++k)
        total += std::abs(static_cast<double>(pred.data()[k]) - static_cast<double>(target.data()[k]));
    return total / static_cast<double>(pred.size());
}

template <class T>
double mse(const xt::xarray<T>& pred, const xt::xarray<T>& target) {
    check_same_shape("mse", pred, target);
    double total = 0;
    for (std::size_t k = 0; k < pred.size(); ++k) {
        const double d = static_cast<double>(pred.data()[k]) - static_cast<double>(target.data()[k]);
        total += d * d;
    }
    return total / static_cast<double>(pred.size());
}

template <class T>
double binary_accuracy(const xt::xarray<T>& pred, const xt::xarray<T>& target, double threshold) {
    check_same_shape("binary_accuracy", pred, target);
    std::size_t hits = 0;
    for (std::size_t k = 0; k < pred.size(); ++k) {
        const bool predicted = static_cast<double>(pred.data()[k]) > threshold;
        const bool actual = static_cast<double>(target.data()[k]) > 0.5;
        hits += predicted == actual ? 1 : 0;
    }
    return static_cast<double>(hits) / static_cast<double>(pred.size());
}

template <class T>
double categorical_accuracy(const xt::xarray<T>& scores, const xt::xarray<std::int64_t>& targets,
                            std::int64_t ignore_index) {
    const auto& ss = scores.shape();
    const auto& ts = targets.shape();
    if (ss.empty() || ts.size() + 1 != ss.size() || !std::equal(ts.begin(), ts.end(), ss.begin()))
        throw shape_error("categorical_accuracy: targets " + shape_str(ts) + " do not fit scores " + shape_str(ss) +
                          " (scores must be (..., C) with the class axis last, targets (...))");
    const std::size_t classes = ss.back();
    std::size_t hits = 0, counted = 0;
    for (std::size_t n = 0; n < targets.size(); ++n) {
        const std::int64_t c = targets.data()[n];
        if (c == ignore_index) continue;
        if (c < 0 || static_cast<std::size_t>(c) >= classes)
            throw index_error("categorical_accuracy: target " + std::to_string(c) + " at flat position " +
                              std::to_string(n) + " of targets " + shape_str(ts) + " is not a class in [0, " +
                              std::to_string(classes) + ") nor ignore_index " + std::to_string(ignore_index));
        const T* row = scores.data() + n * classes;
        const std::size_t best = static_cast<std::size_t>(std::max_element(row, row + classes) - row);
        hits += best == static_cast<std::size_t>(c) ? 1 : 0;
        ++counted;
    }
    return static_cast<double>(hits) / static_cast<double>(counted);
}

template <class T>
double categorical_accuracy(const xt::xarray<T>& scores, const xt::xarray<T>& targets, std::int64_t ignore_index) {
    xt::xarray<std::int64_t> ids = xt::xarray<std::int64_t>::from_shape(targets.shape());
    constexpr T limit = T(9007199254740992.0);  // 2^53
    for (std::size_t n = 0; n < targets.size(); ++n) {
        const T c = targets.data()[n];
        if (!(std::abs(c) <= limit && std::floor(c) == c))
            throw index_error("categorical_accuracy: target " + number_str(c) + " at flat position " +
                              std::to_string(n) + " of targets " + shape_str(targets.shape()) +
                              " is not an integer class");
        ids.data()[n] = static_cast<std::int64_t>(c);
    }
    return categorical_accuracy(scores, ids, ignore_index);
}

#define RECUR_METRICS(T)                                                                                       \
    template double mae(const xt::xarray<T>&, const xt::xarray<T>&);                                           \
    template double mse(const xt::xarray<T>&, const xt::xarray<T>&);                                           \
    template double binary_accuracy(const xt::xarray<T>&, const xt::xarray<T>&, double);                       \
    template double categorical_accuracy(const xt::xarray<T>&, const xt::xarray<std::int64_t>&, std::int64_t); \
    template double categorical_accuracy(const xt::xarray<T>&, const xt::xarray<T>&, std::int64_t);
RECUR_METRICS(float)
RECUR_METRICS(double)
#undef RECUR_METRICS

}  // namespace recur::metrics
