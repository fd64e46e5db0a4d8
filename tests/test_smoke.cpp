#include <boost/test/unit_test.hpp>

#include <recur/recur.hpp>

using namespace recur;

BOOST_AUTO_TEST_SUITE(smoke)

BOOST_AUTO_TEST_CASE(matmul_tanh_backward) {
    Tape<double> t;
    auto a = t.variable(xt::xarray<double>{{1.0, 2.0}, {3.0, 4.0}});
    auto b = t.variable(xt::xarray<double>{{0.5, 0.2}, {-1.0, 0.3}});
    auto y = sum(tanh(matmul(a, b)) * a);
    t.backward(y);
    BOOST_TEST(a.grad().shape() == a.shape());
    auto rep = gradcheck([](Tape<double>&, const std::vector<Var<double>>& x) { return tanh(matmul(x[0], x[1])); },
                         {a.value(), b.value()});
    BOOST_TEST(rep.passed, rep.summary());
}

BOOST_AUTO_TEST_SUITE_END()
