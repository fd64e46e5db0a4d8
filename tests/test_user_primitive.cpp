// User-written primitives (recur/primitive.hpp): forward, the backward it returns, several
// outputs, captured data, gradchecks in double, and the error paths.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <utility>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xview.hpp>

#include "recur/gradcheck.hpp"
#include "recur/ops.hpp"
#include "recur/primitive.hpp"
#include "recur/tape.hpp"
#include "support.hpp"

using namespace recur;
using recur::testing::raises;
using recur::testing::uniform_array;

namespace {

using Vars = std::vector<Var<double>>;

/// softsign(x) = x / (1 + |x|);  dx += g / (1 + |x|)^2
template <class T>
Var<T> softsign(const Var<T>& x) {
    return primitive("softsign", {x}, [](OpContext<T>& op) {
        const auto& v = op.input(0);
        op.output(v.shape()) = v / (T(1) + xt::abs(v));
        return [](OpContext<T>& back) {
            back.add_input_grad(0, back.output_grad() / xt::square(T(1) + xt::abs(back.input(0))));
        };
    });
}

/// Two outputs: (r, theta) of the points (x, y), elementwise.
///   dr = (x dx + y dy) / r,  dtheta = (x dy - y dx) / r^2
std::array<Var<double>, 2> polar(const Var<double>& x, const Var<double>& y) {
    return primitive<2>("polar", {x, y}, [](OpContext<double>& op) {
        const auto& px = op.input(0);
        const auto& py = op.input(1);
        op.output(px.shape(), 0) = xt::sqrt(px * px + py * py);
        op.output(px.shape(), 1) = xt::atan2(py, px);
        return [](OpContext<double>& back) {
            const auto& a = back.input(0);
            const auto& b = back.input(1);
            const xt::xarray<double> r2 = a * a + b * b;
            xt::xarray<double> ga = xt::zeros<double>(a.shape()), gb = xt::zeros<double>(a.shape());
            if (back.has_output_grad(0)) {
                const xt::xarray<double> gr = back.output_grad(0) / back.output_value(0);
                ga += gr * a;
                gb += gr * b;
            }
            if (back.has_output_grad(1)) {
                const xt::xarray<double> gt = back.output_grad(1) / r2;
                ga -= gt * b;
                gb += gt * a;
            }
            back.add_input_grad(0, ga);
            back.add_input_grad(1, gb);
        };
    });
}

/// y = x * w, with w drawn in the forward and carried by the backward (a fixed random mask,
/// as a dropout-like op of one's own would keep it): dx += g * w.
Var<double> scale_by_drawn(const Var<double>& x, std::uint64_t seed) {
    return primitive("scale_by_drawn", {x}, [seed](OpContext<double>& op) {
        xt::xarray<double> w = uniform_array(op.input(0).shape(), seed, 0.5, 1.5);
        op.output(w.shape()) = op.input(0) * w;
        return [w = std::move(w)](OpContext<double>& back) { back.add_input_grad(0, back.output_grad() * w); };
    });
}

}  // namespace

BOOST_AUTO_TEST_SUITE(user_primitive)

BOOST_AUTO_TEST_CASE(softsign_forward_and_gradcheck) {
    Tape<double> tape;
    const xt::xarray<double> v{{-2.0, -0.5, 0.0}, {0.25, 1.0, 3.0}};
    Var<double> x = tape.variable(v);
    Var<double> y = softsign(x);
    for (std::size_t k = 0; k < v.size(); ++k)
        BOOST_TEST(y.value().flat(k) == v.flat(k) / (1 + std::abs(v.flat(k))), boost::test_tools::tolerance(1e-15));
    tape.backward(sum(y));
    for (std::size_t k = 0; k < v.size(); ++k)
        BOOST_TEST(x.grad().flat(k) == 1 / std::pow(1 + std::abs(v.flat(k)), 2), boost::test_tools::tolerance(1e-15));

    const auto report =
        gradcheck([](Tape<double>&, const Vars& in) { return softsign(in[0] * in[1]); },
                  {uniform_array(std::vector<std::size_t>{3, 4}, 1), uniform_array(std::vector<std::size_t>{3, 4}, 2)});
    BOOST_TEST_INFO(report.summary());
    BOOST_TEST(report.passed);
    BOOST_TEST(report.max_rel_error < 1e-8);
}

BOOST_AUTO_TEST_CASE(two_outputs_each_alone_and_both) {
    const std::vector<xt::xarray<double>> inputs{uniform_array(std::vector<std::size_t>{2, 3}, 3, 0.3, 2.0),
                                                 uniform_array(std::vector<std::size_t>{2, 3}, 4, -2.0, 2.0)};
    for (int use = 0; use < 3; ++use) {  // r only, theta only, both
        const auto report = gradcheck(
            [use](Tape<double>&, const Vars& in) {
                auto [r, theta] = polar(in[0], in[1]);
                if (use == 0) return r * r;
                if (use == 1) return theta * theta;
                return r * theta;
            },
            inputs);
        BOOST_TEST_INFO("use " << use << ": " << report.summary());
        BOOST_TEST(report.passed);
        BOOST_TEST(report.max_rel_error < 1e-8);
    }
}

BOOST_AUTO_TEST_CASE(the_backward_carries_its_own_data) {
    const auto report = gradcheck([](Tape<double>&, const Vars& in) { return scale_by_drawn(tanh(in[0]), 11); },
                                  {uniform_array(std::vector<std::size_t>{4, 5}, 5)});
    BOOST_TEST_INFO(report.summary());
    BOOST_TEST(report.passed);
    BOOST_TEST(report.max_rel_error < 1e-8);

    // The captured mask is the one the forward drew: dx = w exactly.
    Tape<double> tape;
    Var<double> x = tape.variable(xt::xarray<double>(xt::ones<double>({2, 3})));
    Var<double> y = scale_by_drawn(x, 7);
    tape.backward(sum(y));
    BOOST_TEST(x.grad() == y.value());
}

BOOST_AUTO_TEST_CASE(reused_tape_and_inference_tape) {
    Tape<double> tape;
    for (int step = 0; step < 3; ++step) {  // the node's slot and its kept backward are reused
        tape.clear();
        Var<double> x = tape.variable(xt::xarray<double>{0.5 * step, -1.0});
        tape.backward(sum(softsign(x)));
        BOOST_TEST(x.grad()(1) == 0.25, boost::test_tools::tolerance(1e-15));
    }
    Tape<double> inference(TapeOptions{.record = false});
    Var<double> y = softsign(inference.constant(xt::xarray<double>{1.0, -3.0}));
    BOOST_TEST(y.value()(0) == 0.5);
    BOOST_TEST(y.value()(1) == -0.75);
    BOOST_TEST(!y.requires_grad());
}

BOOST_AUTO_TEST_CASE(errors_name_the_primitive) {
    Tape<double> a, b;
    Var<double> x = a.variable(xt::xarray<double>{1.0, 2.0});
    Var<double> z = b.variable(xt::xarray<double>{1.0, 2.0});
    BOOST_CHECK_EXCEPTION(polar(x, z), tape_error, raises<tape_error>("polar", "different tapes"));
    BOOST_CHECK_EXCEPTION(softsign(Var<double>()), tape_error, raises<tape_error>("softsign"));

    // A backward whose gradient does not have the input's shape.
    Var<double> bad = primitive("bad_grad", {x}, [](OpContext<double>& op) {
        op.output(op.input(0).shape()) = op.input(0);
        return [](OpContext<double>& back) { back.add_input_grad(0, xt::xarray<double>{1.0, 2.0, 3.0}); };
    });
    BOOST_CHECK_EXCEPTION(a.backward(sum(bad)), shape_error, raises<shape_error>("bad_grad", "(3,)", "(2,)"));

    // A forward that throws records nothing usable and leaves the tape working.
    BOOST_CHECK_THROW(primitive("throws", {x},
                                [](OpContext<double>& op) -> void (*)(OpContext<double>&) {
                                    throw shape_error(std::string(op.name()) + ": wrong input");
                                }),
                      shape_error);
    Tape<double> c;
    Var<double> w = c.variable(xt::xarray<double>{2.0});
    c.backward(sum(softsign(w)));
    BOOST_TEST(w.grad()(0) == 1.0 / 9.0, boost::test_tools::tolerance(1e-15));

    // Asking for a gradient an output did not receive, and an input that does not exist.
    Var<double> p = a.variable(xt::xarray<double>{3.0});
    Var<double> q = a.variable(xt::xarray<double>{4.0});
    auto [r, theta] = primitive<2>("only_r", {p, q}, [](OpContext<double>& op) {
        op.output(op.input(0).shape(), 0) = op.input(0);
        op.output(op.input(0).shape(), 1) = op.input(1);
        return [](OpContext<double>& back) { back.add_input_grad(1, back.output_grad(1)); };
    });
    BOOST_CHECK_EXCEPTION(a.backward(sum(r)), tape_error, raises<tape_error>("only_r", "output 1"));
    Var<double> s = primitive("input_out_of_range", {p}, [](OpContext<double>& op) {
        op.output(op.input(0).shape()) = op.input(0);
        return [](OpContext<double>& back) { back.add_input_grad(1, back.output_grad()); };
    });
    BOOST_CHECK_EXCEPTION(a.backward(sum(s)), index_error, raises<index_error>("input_out_of_range", "input 1 of 1"));
}

// y = 2x as a primitive whose backward reads neither x nor y. Fed by linear (whose backward never
// reads its own output), linear's output has no reader left in backward: its buffer takes its
// gradient. A backward that reads a value it declared unread gets a clear error, not garbage.
BOOST_AUTO_TEST_CASE(a_primitive_may_declare_the_values_its_backward_never_reads) {
    auto doubled = [](const Var<double>& v, bool reads_anyway) {
        return primitive("doubled", {v}, [reads_anyway](OpContext<double>& op) {
            op.output(op.input(0).shape()) = 2.0 * op.input(0);
            op.backward_skips_input(0);  // dx += 2 g
            op.backward_skips_output();
            return [reads_anyway](OpContext<double>& back) {
                back.add_input_grad(0, 2.0 * back.output_grad());
                if (reads_anyway) (void)back.input(0);  // x's buffer holds its gradient now
            };
        });
    };
    const xt::xarray<double> xv = uniform_array(std::vector<std::size_t>{3, 4}, 7),
                             wv = uniform_array(std::vector<std::size_t>{2, 4}, 8);
    Tape<double> t;
    Var<double> x = t.variable(xv), w = t.variable(wv);
    Var<double> y = linear(x, w);  // (3, 2)
    t.backward(sum(doubled(y, false)));
    for (std::size_t i = 0; i < 3; ++i)  // d/dx sum(2 x W^T) = 2 sum_j W(j, k)
        for (std::size_t k = 0; k < 4; ++k) BOOST_TEST(x.grad()(i, k) == 2.0 * (wv(0, k) + wv(1, k)));
    BOOST_CHECK_EXCEPTION((void)y.value(), tape_error, raises<tape_error>("Var::value", "'linear'"));
    Var<double> leaf = t.variable(xv);  // a leaf's value is the user's: never lent
    t.backward(sum(doubled(leaf, false)));
    BOOST_TEST(leaf.value() == xv);
    BOOST_TEST(leaf.grad()(0, 0) == 2.0);

    Tape<double> u;
    Var<double> x2 = u.variable(xv), w2 = u.variable(wv);
    BOOST_CHECK_EXCEPTION(u.backward(sum(doubled(linear(x2, w2), true))), tape_error,
                          raises<tape_error>("doubled", "'linear'"));
}

// y = w * x (elementwise, w a Parameter (4, 3)) whose backward makes dw in two halves of rows
// and reports each (as linear does for distributed training): the rows hook sees both, in order.
BOOST_AUTO_TEST_CASE(a_primitive_may_report_rows_of_a_parameter_gradient_final_early) {
    auto scaled = [](const Var<double>& w, const Var<double>& x) {
        return primitive("scaled", {w, x}, [](OpContext<double>& op) {
            op.output(op.input(0).shape()) = op.input(0) * op.input(1);
            return [](OpContext<double>& back) {  // dw += g x
                const bool report = back.reports_grad_rows(0);
                xt::xarray<double> dw = back.output_grad() * back.input(1);
                if (report) xt::view(dw, xt::range(2, 4), xt::all()) = 0.0;  // rows [0, 2) first
                back.add_input_grad(0, dw);
                back.grad_rows_final(0, 2);
                if (report) {
                    xt::xarray<double> rest = back.output_grad() * back.input(1);
                    xt::view(rest, xt::range(0, 2), xt::all()) = 0.0;
                    back.add_input_grad(0, rest);
                    back.grad_rows_final(0, 4);
                }
            };
        });
    };
    Parameter<double> w(uniform_array(std::vector<std::size_t>{4, 3}, 9));
    const xt::xarray<double> xv = uniform_array(std::vector<std::size_t>{4, 3}, 10);
    Tape<double> t;
    std::vector<std::pair<std::size_t, std::size_t>> rows;
    t.on_grad_rows_final(
        [&](Parameter<double>&, std::size_t begin, std::size_t end) { rows.emplace_back(begin, end); });
    t.backward(sum(scaled(t.bind(w), t.constant(xv))));
    BOOST_TEST((rows == std::vector<std::pair<std::size_t, std::size_t>>{{0, 2}, {2, 4}}));
    BOOST_TEST(w.grad() == xv);
    // Without a hook nothing is reported, and the primitive makes dw in one go.
    Tape<double> u;
    w.zero_grad();
    u.backward(sum(scaled(u.bind(w), u.constant(xv))));
    BOOST_TEST(w.grad() == xv);
    BOOST_TEST(rows.size() == 2u);
}

BOOST_AUTO_TEST_SUITE_END()
