// Sliding windows over a series and the synthetic noisy sine (see recur/data.hpp).
#include <algorithm>
#include <cmath>
#include <random>

#include "recur/data.hpp"
#include "src/data/common.hpp"

namespace recur::data {

// series (N, F) or (N,) -> X (M, window, F), y (M, horizon); window m starts at m * stride.
template <class T>
Windows<T> make_windows(const xt::xarray<T>& series, std::size_t window, std::size_t horizon, std::size_t stride,
                        std::size_t target_column) {
    if (series.dimension() != 1 && series.dimension() != 2)
        throw shape_error("make_windows: series must be (N,) or (N, F), got shape " + shape_str(series.shape()));
    if (window == 0) throw value_error("make_windows: window must be at least 1, got 0");
    if (horizon == 0) throw value_error("make_windows: horizon must be at least 1, got 0");
    if (stride == 0) throw value_error("make_windows: stride must be at least 1, got 0");
    const std::size_t N = series.shape(0);
    const std::size_t F = series.dimension() == 2 ? series.shape(1) : 1;
    if (F == 0) throw shape_error("make_windows: series of shape " + shape_str(series.shape()) + " has no features");
    if (target_column >= F)
        throw index_error("make_windows: target_column " + std::to_string(target_column) + " is out of range for " +
                          std::to_string(F) + " feature" + (F == 1 ? "" : "s") + " (series shape " +
                          shape_str(series.shape()) + ")");
    if (N < window + horizon)
        throw value_error("make_windows: series of length " + std::to_string(N) + " is too short for window " +
                          std::to_string(window) + " + horizon " + std::to_string(horizon) + " (needs at least " +
                          std::to_string(window + horizon) + ")");

    const std::size_t M = (N - window - horizon) / stride + 1;
    Windows<T> w;
    w.X = xt::xarray<T>::from_shape({M, window, F});
    w.y = xt::xarray<T>::from_shape({M, horizon});
    const T* s = series.data();
    T* x = w.X.data();
    T* y = w.y.data();
    for (std::size_t m = 0; m < M; ++m) {
        const std::size_t start = m * stride;
        std::copy_n(s + start * F, window * F, x + m * window * F);
        for (std::size_t h = 0; h < horizon; ++h) y[m * horizon + h] = s[(start + window + h) * F + target_column];
    }
    return w;
}

template <class T>
xt::xarray<T> noisy_sine(std::size_t n_samples, double x_begin, double x_end, double noise_std, std::uint64_t seed) {
    if (n_samples == 0) throw value_error("noisy_sine: n_samples must be at least 1, got 0");
    if (!std::isfinite(x_begin) || !std::isfinite(x_end))
        throw value_error("noisy_sine: the interval [" + number_str(x_begin) + ", " + number_str(x_end) +
                          "] must be finite");
    if (!(noise_std >= 0) || !std::isfinite(noise_std))
        throw value_error("noisy_sine: noise_std must be finite and >= 0, got " + number_str(noise_std));
    xt::xarray<T> out = xt::xarray<T>::from_shape({n_samples});
    std::mt19937_64 rng(seed);
    detail::Normal normal;
    const double step = n_samples > 1 ? (x_end - x_begin) / static_cast<double>(n_samples - 1) : 0.0;
    T* o = out.data();
    for (std::size_t i = 0; i < n_samples; ++i) {
        // The last point is x_end exactly, as numpy.linspace makes it.
        const double x = (i + 1 == n_samples && n_samples > 1) ? x_end : x_begin + step * static_cast<double>(i);
        const double noise = noise_std > 0 ? noise_std * normal(rng) : 0.0;
        o[i] = static_cast<T>(std::sin(x) + noise);
    }
    return out;
}

#define RECUR_DATA_INSTANTIATE_WINDOWS(T) \
    template Windows<T> make_windows<T>(const xt::xarray<T>&, std::size_t, std::size_t, std::size_t, std::size_t);
RECUR_DATA_INSTANTIATE_WINDOWS(float)
RECUR_DATA_INSTANTIATE_WINDOWS(double)
RECUR_DATA_INSTANTIATE_WINDOWS(std::int64_t)
#undef RECUR_DATA_INSTANTIATE_WINDOWS

template xt::xarray<float> noisy_sine<float>(std::size_t, double, double, double, std::uint64_t);
template xt::xarray<double> noisy_sine<double>(std::size_t, double, double, double, std::uint64_t);

}  // namespace recur::data
