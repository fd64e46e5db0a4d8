// Anomaly mode (recur::AnomalyMode): the first op whose forward output or backward input
// gradient holds a NaN or an inf raises value_error naming the op, the pass and the shapes.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <limits>

#include <xtensor/xarray.hpp>

#include "recur/error.hpp"
#include "recur/nn/layers.hpp"
#include "recur/ops.hpp"
#include "recur/tape.hpp"

#include "support.hpp"

BOOST_AUTO_TEST_SUITE(anomaly)

using namespace recur;
using recur::testing::raises;

BOOST_AUTO_TEST_CASE(off_by_default) {
    BOOST_TEST(!AnomalyMode::enabled());
    Tape<double> t;
    auto x = t.variable(xt::xarray<double>{-1.0, 0.0, 4.0});
    Var<double> y = log(x);  // NaN and -inf, unchecked
    BOOST_TEST(std::isnan(y.value()(0)));
    Var<double> s = sum(sqrt(x * x));
    BOOST_CHECK_NO_THROW(t.backward(s));  // d sqrt at 0 is inf times 0: NaN, unchecked
}

BOOST_AUTO_TEST_CASE(forward_nan_names_the_op_and_shapes) {
    Tape<double> t;
    auto x = t.variable(xt::xarray<double>{{1.0, 2.0, -1.0}, {3.0, 4.0, 5.0}});
    AnomalyMode anomaly;
    BOOST_TEST(AnomalyMode::enabled());
    auto y = tanh(x);  // finite: no error
    BOOST_CHECK_EXCEPTION(log(x), error, (raises<value_error>({"anomaly", "forward", "'log'", "NaN", "(2, 3)"})));
    // The same through an inference tape (nothing recorded): still checked.
    Tape<double> inference(TapeOptions{.record = false});
    auto c = inference.constant(xt::xarray<double>{0.0});
    BOOST_CHECK_EXCEPTION(log(c), error, (raises<value_error>({"'log'", "inf", "(1,)"})));
}

BOOST_AUTO_TEST_CASE(backward_inf_names_the_op) {
    Tape<double> t;
    auto x = t.variable(xt::xarray<double>{0.0, 1.0, 4.0});
    AnomalyMode anomaly;
    Var<double> y = sqrt(x);  // finite forward: sqrt(0) = 0
    Var<double> loss = sum(y * 3.0);  // upstream gradient 3 at x = 0: 3 / (2 * 0) = inf
    BOOST_CHECK_EXCEPTION(t.backward(loss), error,
                          (raises<value_error>({"anomaly", "backward", "'sqrt'", "inf", "input 0", "(3,)"})));
}

BOOST_AUTO_TEST_CASE(guards_nest_and_end) {
    {
        AnomalyMode outer;
        {
            AnomalyMode inner;
            BOOST_TEST(AnomalyMode::enabled());
        }
        BOOST_TEST(AnomalyMode::enabled());
    }
    BOOST_TEST(!AnomalyMode::enabled());
    Tape<double> t;
    auto x = t.variable(xt::xarray<double>{-1.0});
    BOOST_CHECK_NO_THROW(log(x));
}

// A clean training step raises nothing, and a leaf holding an inf is not checked; an op whose
// output holds one is (even adding a -inf mask: masked_softmax is the way to mask).
BOOST_AUTO_TEST_CASE(clean_graphs_and_leaves_pass) {
    AnomalyMode anomaly;
    Tape<float> t;
    nn::Linear<float> layer(3, 2);
    const float inf = std::numeric_limits<float>::infinity();
    auto x = t.constant(xt::xarray<float>{{1.f, 2.f, 3.f}});
    auto bound = t.constant(xt::xarray<float>{-inf, 2.f});  // a leaf: not checked
    Var<float> scores = layer(x) + clamp(bound, -5.f, 5.f);
    Var<float> loss =
        sum(masked_softmax(scores, xt::xarray<float>{1.f, 0.f}) * t.constant(xt::xarray<float>{1.f, 2.f}));
    BOOST_CHECK_NO_THROW(t.backward(loss));
    BOOST_CHECK_EXCEPTION(layer(x) + bound, error, (raises<value_error>({"'add'", "inf", "(1, 2)", "(2,)"})));
    BOOST_CHECK_EXCEPTION(masked_fill(x, xt::xarray<float>{1.f, 0.f, 0.f}, -inf), error,
                          (raises<value_error>({"'masked_fill'", "inf", "(1, 3)"})));
}

BOOST_AUTO_TEST_SUITE_END()
