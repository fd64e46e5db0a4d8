// Splits, row selection and mini-batch indices (see recur/data.hpp).
#include <algorithm>
#include <cmath>
#include <random>

#include "recur/data.hpp"
#include "src/data/common.hpp"

namespace recur::data {

namespace {

// floor(x) and ceil(x), except that an x within rounding error of an integer counts as
// that integer (0.29 * 100 is 28.999999999999996, and 0.1 * 30 is 3.0000000000000004).
double floor_robust(double x) {
    const double r = std::round(x);
    return std::abs(x - r) <= 1e-9 * std::max(1.0, std::abs(x)) ? r : std::floor(x);
}
double ceil_robust(double x) {
    const double r = std::round(x);
    return std::abs(x - r) <= 1e-9 * std::max(1.0, std::abs(x)) ? r : std::ceil(x);
}

std::string rows_str(std::size_t n) { return std::to_string(n) + (n == 1 ? " row" : " rows"); }

// Rows of `a` at `indices`; `fn` names the caller in messages.
template <class T>
xt::xarray<T> gather_rows(const xt::xarray<T>& a, const std::vector<std::size_t>& indices, const char* fn) {
    if (a.dimension() == 0)
        throw shape_error(std::string(fn) + ": expected an array with rows, got a scalar of shape ()");
    const std::size_t n = a.shape(0);
    Shape out_shape(a.shape().begin(), a.shape().end());
    out_shape[0] = indices.size();
    std::size_t row = 1;
    for (std::size_t d = 1; d < a.dimension(); ++d) row *= a.shape(d);
    xt::xarray<T> out = xt::xarray<T>::from_shape(out_shape);
    const T* src = a.data();
    T* dst = out.data();
    for (std::size_t k = 0; k < indices.size(); ++k) {
        if (indices[k] >= n)
            throw index_error(std::string(fn) + ": index " + std::to_string(indices[k]) + " at position " +
                              std::to_string(k) + " is out of range for an array of shape " + shape_str(a.shape()) +
                              " (" + rows_str(n) + ")");
        std::copy_n(src + indices[k] * row, row, dst + k * row);
    }
    return out;
}

}  // namespace

// ---- Splits -------------------------------------------------------------------------------

std::vector<IndexRange> split_sequential(std::size_t n, const std::vector<double>& fractions) {
    const std::string where = "split_sequential";
    if (fractions.size() < 2)
        throw value_error(where + ": needs at least two fractions (e.g. {0.8, 0.2}), got " +
                          detail::list_str(fractions));
    double sum = 0;
    for (std::size_t k = 0; k < fractions.size(); ++k) {
        if (!std::isfinite(fractions[k]) || !(fractions[k] > 0))
            throw value_error(where + ": fraction " + std::to_string(k) + " is " + number_str(fractions[k]) +
                              ", fractions must be > 0 (got " + detail::list_str(fractions) + ")");
        sum += fractions[k];
    }
    if (std::abs(sum - 1.0) > 1e-6)
        throw value_error(where + ": fractions " + detail::list_str(fractions) + " sum to " + number_str(sum) +
                          ", not 1");
    std::vector<IndexRange> parts(fractions.size());
    double cum = 0;
    std::size_t begin = 0;
    for (std::size_t k = 0; k < fractions.size(); ++k) {
        cum += fractions[k];
        std::size_t end = n;
        if (k + 1 < fractions.size())
            end = std::min(n, static_cast<std::size_t>(floor_robust(cum * static_cast<double>(n))));
        end = std::max(end, begin);
        if (end == begin)
            throw value_error(where + ": part " + std::to_string(k) + " of " + rows_str(n) + " split by fractions " +
                              detail::list_str(fractions) + " would be empty");
        parts[k] = {begin, end};
        begin = end;
    }
    return parts;
}

template <class T>
std::vector<xt::xarray<T>> split_sequential(const xt::xarray<T>& a, const std::vector<double>& fractions) {
    if (a.dimension() == 0)
        throw shape_error("split_sequential: expected an array with rows, got a scalar of shape ()");
    std::vector<xt::xarray<T>> out;
    for (const IndexRange& r : split_sequential(a.shape(0), fractions)) {
        std::vector<std::size_t> idx(r.size());
        for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = r.begin + i;
        out.push_back(gather_rows(a, idx, "split_sequential"));
    }
    return out;
}

template <class T>
xt::xarray<T> take_rows(const xt::xarray<T>& a, const std::vector<std::size_t>& indices) {
    return gather_rows(a, indices, "take_rows");
}

SplitIndices train_test_indices(std::size_t n, double test_fraction, std::uint64_t seed) {
    const std::string where = "train_test_split";
    if (!std::isfinite(test_fraction) || !(test_fraction > 0) || !(test_fraction < 1))
        throw value_error(where + ": test_fraction must be in (0, 1), got " + number_str(test_fraction));
    if (n == 0) throw value_error(where + ": no samples to split");
    const auto n_test = static_cast<std::size_t>(ceil_robust(test_fraction * static_cast<double>(n)));
    if (n_test >= n)
        throw value_error(where + ": test_fraction " + number_str(test_fraction) + " of " + rows_str(n) + " takes " +
                          std::to_string(n_test) + " test rows and leaves no training rows");
    std::mt19937_64 rng(seed);
    const std::vector<std::size_t> perm = detail::permutation(n, rng);
    SplitIndices s;
    s.test.assign(perm.begin(), perm.begin() + static_cast<std::ptrdiff_t>(n_test));
    s.train.assign(perm.begin() + static_cast<std::ptrdiff_t>(n_test), perm.end());
    return s;
}

template <class T>
TrainTestSplit<T> train_test_split(const xt::xarray<T>& X, const xt::xarray<T>& y, double test_fraction,
                                   std::uint64_t seed) {
    if (X.dimension() == 0 || y.dimension() == 0)
        throw shape_error("train_test_split: X and y need rows, got shapes " + shape_str(X.shape()) + " and " +
                          shape_str(y.shape()));
    if (X.shape(0) != y.shape(0))
        throw shape_error("train_test_split: X has " + rows_str(X.shape(0)) + " (shape " + shape_str(X.shape()) +
                          ") but y has " + std::to_string(y.shape(0)) + " (shape " + shape_str(y.shape()) + ")");
    const SplitIndices s = train_test_indices(X.shape(0), test_fraction, seed);
    return {gather_rows(X, s.train, "train_test_split"), gather_rows(X, s.test, "train_test_split"),
            gather_rows(y, s.train, "train_test_split"), gather_rows(y, s.test, "train_test_split")};
}

// ---- Mini-batches -------------------------------------------------------------------------

BatchIterator::BatchIterator(std::size_t n_samples, std::size_t batch_size, bool shuffle, std::uint64_t seed,
                             bool drop_last)
    : n_(n_samples), batch_size_(batch_size), shuffle_(shuffle), seed_(seed), drop_last_(drop_last) {
    if (batch_size == 0) throw value_error("BatchIterator: batch_size must be at least 1, got 0");
    if (n_samples == 0) throw value_error("BatchIterator: the dataset is empty (n_samples 0)");
    if (drop_last && n_samples < batch_size)
        throw value_error("BatchIterator: drop_last with " + std::to_string(n_samples) + " samples and batch_size " +
                          std::to_string(batch_size) + " leaves no batch");
}

std::size_t BatchIterator::num_batches() const {
    return drop_last_ ? n_ / batch_size_ : (n_ + batch_size_ - 1) / batch_size_;
}

std::vector<std::size_t> BatchIterator::order(std::size_t e) const {
    if (!shuffle_) {
        std::vector<std::size_t> o(n_);
        for (std::size_t i = 0; i < n_; ++i) o[i] = i;
        return o;
    }
    // The generator of epoch e depends only on (seed, e).
    std::mt19937_64 rng(detail::splitmix64(detail::splitmix64(seed_) + static_cast<std::uint64_t>(e)));
    return detail::permutation(n_, rng);
}

std::vector<std::vector<std::size_t>> BatchIterator::epoch(std::size_t e) const {
    const std::vector<std::size_t> o = order(e);
    std::vector<std::vector<std::size_t>> batches(num_batches());
    for (std::size_t b = 0; b < batches.size(); ++b) {
        const std::size_t begin = b * batch_size_, end = std::min(n_, begin + batch_size_);
        batches[b].assign(o.begin() + static_cast<std::ptrdiff_t>(begin), o.begin() + static_cast<std::ptrdiff_t>(end));
    }
    return batches;
}

template <class T>
xt::xarray<T> gather_batch(const xt::xarray<T>& X, const std::vector<std::size_t>& indices) {
    if (indices.empty()) throw value_error("gather_batch: empty index list (a batch needs at least one row)");
    return gather_rows(X, indices, "gather_batch");
}

#define RECUR_DATA_INSTANTIATE_SPLIT(T)                                                                                \
    template std::vector<xt::xarray<T>> split_sequential<T>(const xt::xarray<T>&, const std::vector<double>&);         \
    template xt::xarray<T> take_rows<T>(const xt::xarray<T>&, const std::vector<std::size_t>&);                        \
    template TrainTestSplit<T> train_test_split<T>(const xt::xarray<T>&, const xt::xarray<T>&, double, std::uint64_t); \
    template xt::xarray<T> gather_batch<T>(const xt::xarray<T>&, const std::vector<std::size_t>&);
RECUR_DATA_INSTANTIATE_SPLIT(float)
RECUR_DATA_INSTANTIATE_SPLIT(double)
RECUR_DATA_INSTANTIATE_SPLIT(std::int64_t)
#undef RECUR_DATA_INSTANTIATE_SPLIT

}  // namespace recur::data
