// recur/metrics.hpp — evaluation metrics on plain arrays (no tape, no gradient).
//
// Each returns a double: the mean over the counted elements. Arrays that should have one
// shape and do not raise shape_error naming the metric and both shapes; an empty count
// gives NaN (0 / 0).
#pragma once

#include <cstdint>

#include <xtensor/xarray.hpp>

namespace recur::metrics {

/// Mean absolute error: mean |pred - target|; pred and target have the same shape.
template <class T>
double mae(const xt::xarray<T>& pred, const xt::xarray<T>& target);

/// Mean squared error: mean (pred - target)^2; pred and target have the same shape.
template <class T>
double mse(const xt::xarray<T>& pred, const xt::xarray<T>& target);

/// Fraction of elements where (probability > threshold) equals (target > 0.5): `pred` holds
/// PROBABILITIES (e.g. sigmoid outputs) and `target` 0/1 labels of the same shape. For
/// logits pass threshold = 0 (sigmoid(x) > 0.5 exactly when x > 0).
template <class T>
double binary_accuracy(const xt::xarray<T>& pred, const xt::xarray<T>& target, double threshold = 0.5);

/// Fraction of targets whose class has the highest score. scores (..., C) — logits or
/// probabilities, the class axis last (argmax; ties go to the lowest class); targets (...)
/// integer classes. Targets equal to ignore_index are not counted; any other target outside
/// [0, C) raises index_error.
template <class T>
double categorical_accuracy(const xt::xarray<T>& scores, const xt::xarray<std::int64_t>& targets,
                            std::int64_t ignore_index = -100);
/// The same with float-valued targets (a batch's target array); each must be an integer
/// (index_error otherwise).
template <class T>
double categorical_accuracy(const xt::xarray<T>& scores, const xt::xarray<T>& targets,
                            std::int64_t ignore_index = -100);

}  // namespace recur::metrics
