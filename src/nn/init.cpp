// The global generator and the parameter initialisers (torch.nn.init, 1.13).
#include "recur/nn/init.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace recur {

std::mt19937_64& global_generator() {
    static std::mt19937_64 rng(0x7265637572ULL);
    return rng;
}

void manual_seed(std::uint64_t seed) { global_generator().seed(seed); }

namespace nn::init {

namespace {

template <class T>
void fill(Parameter<T>& p, double v) {
    p.value().fill(static_cast<T>(v));
}

// Fills p with mean + std * z, z ~ N(0, 1), in storage order.
template <class T>
void fill_normal(Parameter<T>& p, double mean, double stddev, std::mt19937_64& rng) {
    std::normal_distribution<double> n(0.0, 1.0);
    for (auto& v : p.value()) v = static_cast<T>(mean + stddev * n(rng));
}

double fan(const Shape& shape, FanMode mode, const char* who) {
    if (mode != FanMode::fan_in && mode != FanMode::fan_out) throw value_error(std::string(who) + ": unknown fan mode");
    const auto [in, out] = calculate_fan_in_and_fan_out(shape);
    return static_cast<double>(mode == FanMode::fan_in ? in : out);
}

// The thin QR factorisation of the m x n matrix `a` (row-major, m >= n) by Householder
// reflections: returns Q (m x n, row-major) with each column k multiplied by the sign of
// R[k][k] (+1 for 0), so that R's diagonal is non-negative.
std::vector<double> signed_q(std::vector<double> a, std::size_t m, std::size_t n) {
    // Reflector k is I - 2 v vᵀ / (vᵀv) on rows k..m-1, v stored in vs[k].
    std::vector<std::vector<double>> vs(n);
    std::vector<double> vnorm2(n, 0.0), sign(n, 1.0);
    for (std::size_t k = 0; k < n; ++k) {
        double norm2 = 0;
        for (std::size_t i = k; i < m; ++i) norm2 += a[i * n + k] * a[i * n + k];
        const double norm = std::sqrt(norm2);
        std::vector<double>& v = vs[k];
        v.assign(m - k, 0.0);
        if (norm == 0) continue;  // column already zero: no reflection, R[k][k] = 0
        const double x0 = a[k * n + k];
        const double alpha = x0 >= 0 ? -norm : norm;  // R[k][k]; v = x - alpha e1 avoids cancellation
        for (std::size_t i = k; i < m; ++i) v[i - k] = a[i * n + k];
        v[0] -= alpha;
        double vv = 0;
        for (double x : v) vv += x * x;
        vnorm2[k] = vv;
        for (std::size_t j = k; j < n; ++j) {
            double s = 0;
            for (std::size_t i = k; i < m; ++i) s += v[i - k] * a[i * n + j];
            const double f = 2 * s / vv;
            for (std::size_t i = k; i < m; ++i) a[i * n + j] -= f * v[i - k];
        }
        sign[k] = alpha < 0 ? -1.0 : 1.0;
    }
    // Q = H_0 H_1 ... H_{n-1} applied to the first n columns of the identity.
    std::vector<double> q(m * n, 0.0);
    for (std::size_t k = 0; k < n; ++k) q[k * n + k] = 1.0;
    for (std::size_t k = n; k-- > 0;) {
        if (vnorm2[k] == 0) continue;
        const std::vector<double>& v = vs[k];
        for (std::size_t j = 0; j < n; ++j) {
            double s = 0;
            for (std::size_t i = k; i < m; ++i) s += v[i - k] * q[i * n + j];
            const double f = 2 * s / vnorm2[k];
            for (std::size_t i = k; i < m; ++i) q[i * n + j] -= f * v[i - k];
        }
    }
    for (std::size_t i = 0; i < m; ++i)
        for (std::size_t j = 0; j < n; ++j) q[i * n + j] *= sign[j];
    return q;
}

}  // namespace

template <class T>
void uniform(Parameter<T>& p, double low, double high, std::mt19937_64& rng) {
    if (!(std::isfinite(low) && std::isfinite(high) && low <= high))
        throw value_error("init::uniform: the range [" + number_str(low) + ", " + number_str(high) +
                          ") must be finite with low <= high");
    std::uniform_real_distribution<double> u(low, high);
    for (auto& v : p.value()) v = static_cast<T>(u(rng));
}

template <class T>
void normal(Parameter<T>& p, double mean, double stddev, std::mt19937_64& rng) {
    if (!(std::isfinite(mean) && std::isfinite(stddev) && stddev >= 0))
        throw value_error("init::normal: mean " + number_str(mean) + " and std " + number_str(stddev) +
                          " must be finite, with std >= 0");
    fill_normal(p, mean, stddev, rng);
}

template <class T>
void constant(Parameter<T>& p, double v) {
    fill(p, v);
}

template <class T>
void constant_slice(Parameter<T>& p, std::size_t begin, std::size_t end, double v) {
    if (p.shape().empty()) throw shape_error("init::constant_slice: the parameter is 0-d; it has no rows");
    const std::size_t rows = p.shape()[0];
    if (begin > end || end > rows)
        throw index_error("init::constant_slice: rows [" + std::to_string(begin) + ", " + std::to_string(end) +
                          ") do not fit a parameter of shape " + shape_str(p.shape()));
    const std::size_t row = rows == 0 ? 0 : p.size() / rows;
    T* d = p.value().data();
    std::fill(d + begin * row, d + end * row, static_cast<T>(v));
}

template <class T>
void zeros(Parameter<T>& p) {
    fill(p, 0.0);
}

template <class T>
void ones(Parameter<T>& p) {
    fill(p, 1.0);
}

double calculate_gain(std::string_view nonlinearity, std::optional<double> param) {
    const auto& n = nonlinearity;
    if (n == "linear" || n == "conv1d" || n == "conv2d" || n == "conv3d" || n == "conv_transpose1d" ||
        n == "conv_transpose2d" || n == "conv_transpose3d" || n == "sigmoid")
        return 1.0;
    if (n == "tanh") return 5.0 / 3;
    if (n == "relu") return std::sqrt(2.0);
    if (n == "leaky_relu") {
        const double slope = param.value_or(0.01);
        if (!std::isfinite(slope))
            throw value_error("calculate_gain: negative_slope " + number_str(slope) + " is not a valid number");
        return std::sqrt(2.0 / (1 + slope * slope));
    }
    if (n == "selu") return 3.0 / 4;
    throw value_error("calculate_gain: unsupported nonlinearity '" + std::string(n) + "'");
}

std::pair<std::size_t, std::size_t> calculate_fan_in_and_fan_out(const Shape& shape) {
    if (shape.size() < 2)
        throw shape_error("init: fan in and fan out can not be computed for a parameter of shape " + shape_str(shape) +
                          " (fewer than 2 dimensions)");
    std::size_t receptive = 1;
    for (std::size_t d = 2; d < shape.size(); ++d) receptive *= shape[d];
    return {shape[1] * receptive, shape[0] * receptive};
}

template <class T>
void xavier_uniform(Parameter<T>& p, double gain, std::mt19937_64& rng) {
    const auto [in, out] = calculate_fan_in_and_fan_out(p.shape());
    if (p.size() == 0) return;
    const double a = gain * std::sqrt(6.0 / static_cast<double>(in + out));
    uniform(p, -a, a, rng);
}

template <class T>
void xavier_normal(Parameter<T>& p, double gain, std::mt19937_64& rng) {
    const auto [in, out] = calculate_fan_in_and_fan_out(p.shape());
    if (p.size() == 0) return;
    const double sd = gain * std::sqrt(2.0 / static_cast<double>(in + out));
    normal(p, 0.0, sd, rng);
}

template <class T>
void kaiming_uniform(Parameter<T>& p, const KaimingOptions& options, std::mt19937_64& rng) {
    if (p.size() == 0) return;  // PyTorch: a no-op on zero-element tensors
    const double sd = calculate_gain(options.nonlinearity, options.a) /
                      std::sqrt(fan(p.shape(), options.mode, "init::kaiming_uniform"));
    const double bound = std::sqrt(3.0) * sd;
    uniform(p, -bound, bound, rng);
}

template <class T>
void kaiming_normal(Parameter<T>& p, const KaimingOptions& options, std::mt19937_64& rng) {
    if (p.size() == 0) return;
    const double sd = calculate_gain(options.nonlinearity, options.a) /
                      std::sqrt(fan(p.shape(), options.mode, "init::kaiming_normal"));
    normal(p, 0.0, sd, rng);
}

template <class T>
void orthogonal(Parameter<T>& p, double gain, std::mt19937_64& rng) {
    if (p.shape().size() < 2)
        throw shape_error("init::orthogonal: only parameters with 2 or more dimensions are supported, got shape " +
                          shape_str(p.shape()));
    if (!std::isfinite(gain)) throw value_error("init::orthogonal: gain must be finite, got " + number_str(gain));
    if (p.size() == 0) return;
    const std::size_t rows = p.shape()[0], cols = p.size() / rows;
    // A: rows x cols of N(0, 1), row-major. M = A (rows >= cols) or Aᵀ (wide), m >= n.
    std::normal_distribution<double> normal01(0.0, 1.0);
    std::vector<double> a(rows * cols);
    for (auto& x : a) x = normal01(rng);
    const bool wide = rows < cols;
    const std::size_t m = wide ? cols : rows, n = wide ? rows : cols;
    std::vector<double> mat(m * n);
    for (std::size_t i = 0; i < rows; ++i)
        for (std::size_t j = 0; j < cols; ++j) (wide ? mat[j * n + i] : mat[i * n + j]) = a[i * cols + j];
    const std::vector<double> q = signed_q(std::move(mat), m, n);  // m x n
    T* w = p.value().data();
    for (std::size_t i = 0; i < rows; ++i)
        for (std::size_t j = 0; j < cols; ++j)
            w[i * cols + j] = static_cast<T>(gain * (wide ? q[j * n + i] : q[i * n + j]));
}

#define RECUR_INIT_INSTANTIATE(T)                                                             \
    template void uniform<T>(Parameter<T>&, double, double, std::mt19937_64&);                \
    template void normal<T>(Parameter<T>&, double, double, std::mt19937_64&);                 \
    template void constant<T>(Parameter<T>&, double);                                         \
    template void constant_slice<T>(Parameter<T>&, std::size_t, std::size_t, double);         \
    template void zeros<T>(Parameter<T>&);                                                    \
    template void ones<T>(Parameter<T>&);                                                     \
    template void xavier_uniform<T>(Parameter<T>&, double, std::mt19937_64&);                 \
    template void xavier_normal<T>(Parameter<T>&, double, std::mt19937_64&);                  \
    template void kaiming_uniform<T>(Parameter<T>&, const KaimingOptions&, std::mt19937_64&); \
    template void kaiming_normal<T>(Parameter<T>&, const KaimingOptions&, std::mt19937_64&);  \
    template void orthogonal<T>(Parameter<T>&, double, std::mt19937_64&);
RECUR_INIT_INSTANTIATE(float)
RECUR_INIT_INSTANTIATE(double)
#undef RECUR_INIT_INSTANTIATE

}  // namespace nn::init
}  // namespace recur
