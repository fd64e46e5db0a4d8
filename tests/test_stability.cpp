// Numerical stability in float: saturating and normalising ops on inputs up to +-1e4 give
// finite values and finite gradients, and the exact limits where they exist.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <xtensor/xarray.hpp>

#include "recur/ops.hpp"
#include "recur/tape.hpp"

namespace recur_stability_tests {

using namespace recur;

/// A random upstream gradient: +-[0.5, 1.5), so no output's gradient is hidden by a 0 or a 1.
xt::xarray<float> random_seed(const Shape& shape, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> u(0.5f, 1.5f);
    std::bernoulli_distribution sign(0.5);
    xt::xarray<float> s = xt::xarray<float>::from_shape(shape);
    for (std::size_t k = 0; k < s.size(); ++k) s.data()[k] = sign(rng) ? u(rng) : -u(rng);
    return s;
}

bool all_finite(const xt::xarray<float>& a) {
    for (std::size_t k = 0; k < a.size(); ++k)
        if (!std::isfinite(a.data()[k])) return false;
    return true;
}

/// 16 values (two rows of 8, so vectorised paths see them too): extremes, a mixture and zeros.
xt::xarray<float> extremes() {
    return xt::xarray<float>{{-1e4f, -1e3f, -100.0f, -20.0f, 0.0f, 20.0f, 100.0f, 1e4f},
                             {1e4f, 1e4f, -1e4f, -1e4f, 0.0f, 1e4f, -1e4f, 0.0f}};
}

/// Forward y = op(x), backward with a random seed; both must be finite.
template <class Op>
void check_finite(Op op, const xt::xarray<float>& input, std::uint64_t seed) {
    Tape<float> t;
    auto x = t.variable(input);
    auto y = op(x);
    BOOST_TEST(all_finite(y.value()));
    t.backward(y, random_seed(y.shape(), seed));
    BOOST_TEST(all_finite(x.grad()));
}

}  // namespace recur_stability_tests

BOOST_AUTO_TEST_SUITE(stability)

using namespace recur_stability_tests;

BOOST_AUTO_TEST_CASE(sigmoid_saturates_cleanly) {
    check_finite([](const Var<float>& x) { return sigmoid(x); }, extremes(), 1);
    Tape<float> t;
    auto x = t.variable(extremes());
    auto y = sigmoid(x);
    BOOST_TEST(y.value()(0, 0) == 0.0f);  // sigmoid(-1e4)
    BOOST_TEST(y.value()(0, 7) == 1.0f);  // sigmoid(1e4)
    BOOST_TEST(y.value()(0, 4) == 0.5f);  // sigmoid(0)
    for (std::size_t k = 0; k < y.size(); ++k) {
        BOOST_TEST(y.value().data()[k] >= 0.0f);
        BOOST_TEST(y.value().data()[k] <= 1.0f);
    }
    t.backward(y, random_seed(y.shape(), 2));
    BOOST_TEST(x.grad()(0, 0) == 0.0f);  // y (1 - y) = 0 at both ends
    BOOST_TEST(x.grad()(0, 7) == 0.0f);
}

BOOST_AUTO_TEST_CASE(softmax_of_huge_inputs) {
    for (std::ptrdiff_t axis : {0, 1, -1})
        check_finite([axis](const Var<float>& x) { return softmax(x, axis); }, extremes(), 3);

    Tape<float> t;
    auto x = t.variable(extremes());
    auto y = softmax(x, -1);
    for (std::size_t r = 0; r < 2; ++r) {
        float s = 0.0f;
        for (std::size_t c = 0; c < 8; ++c) s += y.value()(r, c);
        BOOST_TEST(s == 1.0f, boost::test_tools::tolerance(1e-6f));
    }
    // Row 0: the single largest input (1e4) takes everything.
    BOOST_TEST(y.value()(0, 7) == 1.0f);
    BOOST_TEST(y.value()(0, 0) == 0.0f);

    auto two = softmax(t.variable(xt::xarray<float>{1e4f, 1e4f}));
    BOOST_TEST(two.value()(0) == 0.5f);
    BOOST_TEST(two.value()(1) == 0.5f);

    auto mixture = softmax(t.variable(xt::xarray<float>{-1e4f, 0.0f, 1e4f}));
    BOOST_TEST(mixture.value()(0) == 0.0f);
    BOOST_TEST(mixture.value()(1) == 0.0f);
    BOOST_TEST(mixture.value()(2) == 1.0f);
}

BOOST_AUTO_TEST_CASE(log_softmax_of_huge_inputs) {
    for (std::ptrdiff_t axis : {0, 1, -1})
        check_finite([axis](const Var<float>& x) { return log_softmax(x, axis); }, extremes(), 4);

    Tape<float> t;
    auto a = log_softmax(t.variable(xt::xarray<float>{0.0f, -1e4f}));
    BOOST_TEST(a.value()(0) == 0.0f, boost::test_tools::tolerance(1e-6f));
    BOOST_TEST(a.value()(1) == -1e4f, boost::test_tools::tolerance(1e-6f));

    auto b = log_softmax(t.variable(xt::xarray<float>{-1e4f, 0.0f, 1e4f}));
    BOOST_TEST(b.value()(0) == -2e4f, boost::test_tools::tolerance(1e-6f));
    BOOST_TEST(b.value()(1) == -1e4f, boost::test_tools::tolerance(1e-6f));
    BOOST_TEST(b.value()(2) == 0.0f, boost::test_tools::tolerance(1e-6f));

    auto c = log_softmax(t.variable(xt::xarray<float>{1e4f, 1e4f}));
    BOOST_TEST(c.value()(0) == -std::log(2.0f), boost::test_tools::tolerance(1e-5f));
    BOOST_TEST(c.value()(1) == -std::log(2.0f), boost::test_tools::tolerance(1e-5f));
}

BOOST_AUTO_TEST_CASE(tanh_saturates_cleanly) {
    check_finite([](const Var<float>& x) { return tanh(x); }, extremes(), 5);
    Tape<float> t;
    auto x = t.variable(xt::xarray<float>{-1e4f, -100.0f, 100.0f, 1e4f, -1e4f, 1e4f, 0.0f, 1e4f});
    auto y = tanh(x);
    BOOST_TEST(y.value()(0) == -1.0f);
    BOOST_TEST(y.value()(1) == -1.0f);
    BOOST_TEST(y.value()(2) == 1.0f);
    BOOST_TEST(y.value()(3) == 1.0f);
    BOOST_TEST(y.value()(6) == 0.0f);
    t.backward(y, random_seed(y.shape(), 6));
    BOOST_TEST(all_finite(x.grad()));
    BOOST_TEST(x.grad()(0) == 0.0f);  // 1 - y^2 = 0
    BOOST_TEST(x.grad()(3) == 0.0f);
}

BOOST_AUTO_TEST_SUITE_END()
