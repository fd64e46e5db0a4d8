// Initialisers: PyTorch's gains and fans, bounds and statistics of the random fills,
// orthogonality (and that orthogonal is exactly the sign-corrected QR factor of its normal
// draws), constant slices, argument checks and reproducibility from a seed.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>

#include <recur/nn/init.hpp>

using namespace recur;

namespace {

template <class T = double>
Parameter<T> param(const Shape& shape) {
    return Parameter<T>(xt::xarray<T>(xt::zeros<T>(shape)));
}

struct Stats {
    double mean = 0, std = 0, min = 0, max = 0;
};

template <class T>
Stats stats(const Parameter<T>& p) {
    Stats s;
    s.min = s.max = static_cast<double>(p.value().data()[0]);
    double sum = 0, sum2 = 0;
    for (T v : p.value()) {
        const auto x = static_cast<double>(v);
        sum += x;
        s.min = std::min(s.min, x);
        s.max = std::max(s.max, x);
    }
    const auto n = static_cast<double>(p.size());
    s.mean = sum / n;
    for (T v : p.value()) sum2 += (static_cast<double>(v) - s.mean) * (static_cast<double>(v) - s.mean);
    s.std = std::sqrt(sum2 / (n - 1));
    return s;
}

// max |G - gain² I| where G = W Wᵀ (rows <= cols) or Wᵀ W (rows > cols), W = p as rows x cols.
template <class T>
double orthogonality_error(const Parameter<T>& p, double gain) {
    const std::size_t rows = p.shape()[0], cols = p.size() / rows;
    const T* w = p.value().data();
    const bool by_rows = rows <= cols;
    const std::size_t k = by_rows ? rows : cols, len = by_rows ? cols : rows;
    auto at = [&](std::size_t vec, std::size_t i) {
        return static_cast<double>(by_rows ? w[vec * cols + i] : w[i * cols + vec]);
    };
    double worst = 0;
    for (std::size_t a = 0; a < k; ++a)
        for (std::size_t b = 0; b < k; ++b) {
            double s = 0;
            for (std::size_t i = 0; i < len; ++i) s += at(a, i) * at(b, i);
            worst = std::max(worst, std::fabs(s - (a == b ? gain * gain : 0.0)));
        }
    return worst;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(init)

BOOST_AUTO_TEST_CASE(gains_are_pytorchs) {
    BOOST_TEST(nn::init::calculate_gain("linear") == 1.0);
    BOOST_TEST(nn::init::calculate_gain("conv2d") == 1.0);
    BOOST_TEST(nn::init::calculate_gain("conv_transpose3d") == 1.0);
    BOOST_TEST(nn::init::calculate_gain("sigmoid") == 1.0);
    BOOST_TEST(nn::init::calculate_gain("tanh") == 5.0 / 3);
    BOOST_TEST(nn::init::calculate_gain("relu") == std::sqrt(2.0));
    BOOST_TEST(nn::init::calculate_gain("leaky_relu") == std::sqrt(2.0 / (1 + 0.01 * 0.01)));
    BOOST_TEST(nn::init::calculate_gain("leaky_relu", 0.2) == std::sqrt(2.0 / 1.04));
    BOOST_TEST(nn::init::calculate_gain("selu") == 0.75);
    BOOST_CHECK_THROW(nn::init::calculate_gain("softplus"), value_error);
}

BOOST_AUTO_TEST_CASE(fans_are_pytorchs) {
    BOOST_TEST((nn::init::calculate_fan_in_and_fan_out({5, 3}) == std::pair<std::size_t, std::size_t>{3, 5}));
    BOOST_TEST((nn::init::calculate_fan_in_and_fan_out({4, 2, 3}) == std::pair<std::size_t, std::size_t>{6, 12}));
    BOOST_TEST((nn::init::calculate_fan_in_and_fan_out({16, 8, 3, 3}) == std::pair<std::size_t, std::size_t>{72, 144}));
    BOOST_CHECK_THROW(nn::init::calculate_fan_in_and_fan_out({7}), shape_error);
    BOOST_CHECK_THROW(nn::init::calculate_fan_in_and_fan_out({}), shape_error);
}

BOOST_AUTO_TEST_CASE(constant_zeros_ones_and_slices) {
    auto p = param({3, 4});
    nn::init::constant(p, 2.5);
    BOOST_TEST(xt::all(xt::equal(p.value(), 2.5)));
    nn::init::zeros(p);
    BOOST_TEST(xt::all(xt::equal(p.value(), 0.0)));
    nn::init::ones(p);
    BOOST_TEST(xt::all(xt::equal(p.value(), 1.0)));

    // Forget-gate bias of an LSTM with H = 3: gates i, f, g, o, forget = [3, 6).
    auto bias = param<float>({12});
    nn::init::zeros(bias);
    nn::init::constant_slice(bias, 3, 6, 1.0);
    for (std::size_t i = 0; i < 12; ++i) BOOST_TEST(bias.value()(i) == (i >= 3 && i < 6 ? 1.0f : 0.0f));

    // Rows of a matrix.
    auto w = param({4, 2});
    nn::init::constant_slice(w, 1, 3, -1.0);
    for (std::size_t r = 0; r < 4; ++r)
        for (std::size_t c = 0; c < 2; ++c) BOOST_TEST(w.value()(r, c) == (r == 1 || r == 2 ? -1.0 : 0.0));
    nn::init::constant_slice(w, 2, 2, 9.0);  // empty range: nothing
    BOOST_TEST(xt::sum(w.value())() == -4.0);

    BOOST_CHECK_THROW(nn::init::constant_slice(w, 3, 5, 1.0), index_error);
    BOOST_CHECK_THROW(nn::init::constant_slice(w, 3, 2, 1.0), index_error);
    Parameter<double> scalar(xt::xarray<double>(1.0));
    BOOST_CHECK_THROW(nn::init::constant_slice(scalar, 0, 0, 1.0), shape_error);
}

BOOST_AUTO_TEST_CASE(uniform_and_normal) {
    std::mt19937_64 rng(1);
    auto u = param({200, 300});
    nn::init::uniform(u, -0.5, 1.5, rng);
    const Stats su = stats(u);
    BOOST_TEST(su.min >= -0.5);
    BOOST_TEST(su.max < 1.5);
    BOOST_TEST(std::fabs(su.mean - 0.5) < 0.01);
    BOOST_TEST(std::fabs(su.std - 2.0 / std::sqrt(12.0)) < 0.01);

    auto n = param<float>({200, 300});
    nn::init::normal(n, 0.5, 2.0, rng);
    const Stats sn = stats(n);
    BOOST_TEST(std::fabs(sn.mean - 0.5) < 4 * 2.0 / std::sqrt(60000.0));
    BOOST_TEST(std::fabs(sn.std - 2.0) < 0.03);
    nn::init::normal(n, 3.0, 0.0, rng);
    BOOST_TEST(xt::all(xt::equal(n.value(), 3.0f)));

    BOOST_CHECK_THROW(nn::init::uniform(u, 1.0, 0.0, rng), value_error);
    BOOST_CHECK_THROW(nn::init::uniform(u, 0.0, std::numeric_limits<double>::infinity(), rng), value_error);
    BOOST_CHECK_THROW(nn::init::normal(u, 0.0, -1.0, rng), value_error);
    BOOST_CHECK_THROW(nn::init::normal(u, std::nan(""), 1.0, rng), value_error);
}

BOOST_AUTO_TEST_CASE(xavier) {
    std::mt19937_64 rng(2);
    auto w = param({64, 32});
    const double a = std::sqrt(6.0 / 96.0);
    nn::init::xavier_uniform(w, 1.0, rng);
    Stats s = stats(w);
    BOOST_TEST(s.min >= -a);
    BOOST_TEST(s.max <= a);
    BOOST_TEST(s.max > 0.97 * a);
    BOOST_TEST(s.min < -0.97 * a);
    nn::init::xavier_uniform(w, 2.0, rng);
    s = stats(w);
    BOOST_TEST(s.max <= 2 * a);
    BOOST_TEST(s.max > 0.97 * 2 * a);

    auto big = param({200, 300});
    nn::init::xavier_normal(big, nn::init::calculate_gain("tanh"), rng);
    s = stats(big);
    BOOST_TEST(std::fabs(s.std / (5.0 / 3 * std::sqrt(2.0 / 500.0)) - 1) < 0.02);
    BOOST_TEST(std::fabs(s.mean) < 0.01);

    auto v = param({5});
    BOOST_CHECK_THROW(nn::init::xavier_uniform(v), shape_error);
    BOOST_CHECK_THROW(nn::init::xavier_normal(v), shape_error);
}

BOOST_AUTO_TEST_CASE(kaiming) {
    std::mt19937_64 rng(3);
    auto w = param({50, 40});
    // Defaults: a = 0, fan_in, leaky_relu -> bound sqrt(6 / fan_in).
    nn::init::kaiming_uniform(w, {}, rng);
    Stats s = stats(w);
    const double bound = std::sqrt(6.0 / 40.0);
    BOOST_TEST(s.max <= bound);
    BOOST_TEST(s.min >= -bound);
    BOOST_TEST(s.max > 0.97 * bound);
    // fan_out, relu.
    nn::init::kaiming_uniform(w, {.mode = nn::init::FanMode::fan_out, .nonlinearity = "relu"}, rng);
    s = stats(w);
    BOOST_TEST(s.max <= std::sqrt(6.0 / 50.0));
    BOOST_TEST(s.max > 0.97 * std::sqrt(6.0 / 50.0));
    // leaky_relu with slope a = sqrt(5), as PyTorch's Linear default: bound 1 / sqrt(fan_in).
    nn::init::kaiming_uniform(w, {.a = std::sqrt(5.0)}, rng);
    s = stats(w);
    BOOST_TEST(s.max <= 1 / std::sqrt(40.0) * (1 + 1e-12));
    BOOST_TEST(s.max > 0.97 / std::sqrt(40.0));

    auto big = param({300, 200});
    nn::init::kaiming_normal(big, {}, rng);
    s = stats(big);
    BOOST_TEST(std::fabs(s.std / std::sqrt(2.0 / 200.0) - 1) < 0.02);
    BOOST_CHECK_THROW(nn::init::kaiming_normal(big, {.nonlinearity = "swish"}, rng), value_error);
    auto v = param({5});
    BOOST_CHECK_THROW(nn::init::kaiming_uniform(v), shape_error);
}

BOOST_AUTO_TEST_CASE(orthogonal_is_orthonormal) {
    for (const Shape& shape : std::vector<Shape>{{7, 4}, {5, 5}, {3, 8}, {4, 2, 3}, {1, 6}, {6, 1}, {64, 64}})
        for (double gain : {1.0, 1.5}) {
            std::mt19937_64 rng(4);
            auto p = param(shape);
            nn::init::orthogonal(p, gain, rng);
            BOOST_TEST(orthogonality_error(p, gain) < 1e-12, shape_str(shape) << " gain " << gain);
            auto f = param<float>(shape);
            nn::init::orthogonal(f, gain, rng);
            BOOST_TEST(orthogonality_error(f, gain) < 1e-5, shape_str(shape) << " gain " << gain << " (float)");
        }
    auto v = param({5});
    BOOST_CHECK_THROW(nn::init::orthogonal(v), shape_error);
}

// W must be Q of the QR factorisation A = QR of its N(0, 1) draws (rows x cols, row-major;
// transposed when wide) with diag(R) > 0: then R = QᵀA is upper triangular with a positive
// diagonal, which pins Q down uniquely.
BOOST_AUTO_TEST_CASE(orthogonal_is_the_sign_corrected_qr_factor) {
    for (const Shape& shape : std::vector<Shape>{{6, 4}, {4, 4}, {3, 5}}) {
        const std::size_t rows = shape[0], cols = shape[1];
        std::mt19937_64 rng(5), replay(5);
        auto p = param(shape);
        nn::init::orthogonal(p, 1.0, rng);
        std::normal_distribution<double> n01(0.0, 1.0);
        std::vector<double> a(rows * cols);
        for (auto& x : a) x = n01(replay);
        const bool wide = rows < cols;
        const std::size_t m = wide ? cols : rows, n = wide ? rows : cols;
        auto A = [&](std::size_t i, std::size_t j) { return wide ? a[j * cols + i] : a[i * cols + j]; };
        auto Q = [&](std::size_t i, std::size_t j) { return wide ? p.value()(j, i) : p.value()(i, j); };
        for (std::size_t r = 0; r < n; ++r)
            for (std::size_t c = 0; c < n; ++c) {
                double v = 0;
                for (std::size_t i = 0; i < m; ++i) v += Q(i, r) * A(i, c);
                if (r > c) BOOST_TEST(std::fabs(v) < 1e-12, shape_str(shape) << " R(" << r << "," << c << ")");
                if (r == c) BOOST_TEST(v > 0.0, shape_str(shape) << " R(" << r << "," << r << ")");
            }
    }
}

BOOST_AUTO_TEST_CASE(reproducible_from_a_seed) {
    auto p = param({4, 6}), q = param({4, 6});
    manual_seed(42);
    nn::init::orthogonal(p);
    nn::init::xavier_uniform(p);
    nn::init::normal(p, 0.0, 1.0);
    manual_seed(42);
    nn::init::orthogonal(q);
    nn::init::xavier_uniform(q);
    nn::init::normal(q, 0.0, 1.0);
    BOOST_TEST(xt::all(xt::equal(p.value(), q.value())));
    nn::init::normal(q, 0.0, 1.0);
    BOOST_TEST(!xt::all(xt::equal(p.value(), q.value())));
}

BOOST_AUTO_TEST_SUITE_END()
