// Engine semantics: the reverse loop, fan-out, handles, clear(), Parameters across backwards and
// tapes, detach, seeds, inference (no recording), dropout's generator, and gradcheck itself,
// including a user-written primitive (which also shows how users write one).
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>

#include "recur/error.hpp"
#include "recur/gradcheck.hpp"
#include "recur/ops.hpp"
#include "support.hpp"
#include "recur/tape.hpp"

namespace recur_tape_tests {

using namespace recur;
using Vars = std::vector<Var<double>>;
using Dims = std::vector<std::size_t>;

/// An array of `shape` filled with v.
xt::xarray<double> full(const Dims& shape, double v) {
    xt::xarray<double> a = xt::xarray<double>::from_shape(shape);
    a.fill(v);
    return a;
}

constexpr auto rnd = [](const Dims& shape, std::uint64_t seed, double lo = -1.0, double hi = 1.0) {
    return recur::testing::uniform_array(shape, seed, lo, hi);
};

bool same(const xt::xarray<double>& a, const xt::xarray<double>& b) {
    if (a.shape() != b.shape()) return false;
    for (std::size_t k = 0; k < a.size(); ++k)
        if (a.data()[k] != b.data()[k]) return false;
    return true;
}

bool close(const xt::xarray<double>& a, const xt::xarray<double>& b, double tol = 1e-12) {
    return a.shape() == b.shape() && xt::allclose(a, b, tol, tol);
}

// ---- A user-written primitive: y = x^2 -------------------------------------------------------
//
// The op-author interface: push() the output node with the inputs and a backward function,
// then (after push, which may move node storage) write the value. The backward reads the
// output's gradient with node(i).grad and ACCUMULATES each input's share with grad_ref().add.
// `Wrong` makes a deliberately wrong backward (dx += g x, missing the factor 2).
template <bool Wrong>
void square_backward(Tape<double>& t, std::uint32_t i) {
    const std::uint32_t x = t.input(i, 0);
    const double factor = Wrong ? 1.0 : 2.0;
    t.grad_ref(x).add(factor * t.node(i).grad * t.value(x));
}

template <bool Wrong>
Var<double> square(const Var<double>& x) {
    x.check("square");
    Tape<double>& t = x.tape();
    const std::uint32_t out = t.push("square", {x.index()}, &square_backward<Wrong>);
    auto& y = t.node(out).value;
    const auto& xv = t.value(x.index());
    y.resize(xv.shape());
    xt::noalias(y) = xv * xv;
    return t.handle(out);
}

// ---- A user-written op with two outputs and typed state: (r cos x, r sin x) -----------------
// One node: output 0 is u = r cos x, output 1 is v = r sin x (r a scalar kept in the op's
// state). Its backward reads both outputs' gradients (either may be absent) and adds
// dx += -gu v + gv u into the input.
struct PolarState {
    double radius;
};
void polar_backward(Tape<double>& t, std::uint32_t i) {
    const std::uint32_t x = t.input(i, 0);
    const auto& u = t.value(t.output(i, 0));
    const auto& v = t.value(t.output(i, 1));
    const double* gu = t.output_grad(i, 0);
    const double* gv = t.output_grad(i, 1);
    const double r = t.saved_state<PolarState>(i).radius;
    BOOST_TEST(r == 1.5);
    auto& dx = t.grad_ref(x).zeroed();
    for (std::size_t k = 0; k < dx.size(); ++k)
        dx.data()[k] += (gu ? -gu[k] * v.data()[k] : 0.0) + (gv ? gv[k] * u.data()[k] : 0.0);
}
std::pair<Var<double>, Var<double>> polar(const Var<double>& x, double radius) {
    x.check("polar");
    Tape<double>& t = x.tape();
    const std::uint32_t in = x.index();
    const std::uint32_t i = t.push("polar", &in, 1, &polar_backward, 2);
    t.state<PolarState>(i).radius = radius;
    const auto& xv = t.value(x.index());
    auto& u = t.output_value(i, xv.shape(), 0);
    auto& v = t.output_value(i, xv.shape(), 1);
    xt::noalias(u) = radius * xt::cos(xv);
    xt::noalias(v) = radius * xt::sin(xv);
    return {t.handle(i, 0), t.handle(i, 1)};
}

// ---- An op whose backward defers its weight gradient (Tape::add_product_grad) -----------------
// y = sum_r a_r^T W b_r for constant rows a (R x m) and b (R x n): dW += g A^T B, added as a
// deferred product (the rows of g A and of B), as a recurrent step adds dpre_t^T h_t.
int deferred_products_run = 0;  // how many times the tape summed deferred rows
void plain_product(Tape<double>&, std::size_t m, std::size_t n, std::size_t k, const double* a, const double* b,
                   double beta, double* c) {
    ++deferred_products_run;
    for (std::size_t i = 0; i < m; ++i)
        for (std::size_t j = 0; j < n; ++j) {
            double s = 0;
            for (std::size_t r = 0; r < k; ++r) s += a[r * m + i] * b[r * n + j];
            c[i * n + j] = s + beta * c[i * n + j];
        }
}
void bilinear_rows_backward(Tape<double>& t, std::uint32_t i) {
    const double g = t.output_grad(i)[0];
    const auto& a = t.value(t.input(i, 1));
    const auto& b = t.value(t.input(i, 2));
    const std::size_t rows = a.shape()[0], m = a.shape()[1], n = b.shape()[1];
    std::vector<double> ga(a.begin(), a.end());
    for (auto& v : ga) v *= g;
    t.add_product_grad(t.input(i, 0), rows, ga.data(), m, b.data(), n, &plain_product);
}
Var<double> bilinear_rows(const Var<double>& w, const Var<double>& a, const Var<double>& b) {
    Tape<double>& t = w.tape();
    const std::uint32_t i = t.push("bilinear_rows", {w.index(), a.index(), b.index()}, &bilinear_rows_backward);
    const auto &wv = t.value(w.index()), &av = t.value(a.index()), &bv = t.value(b.index());
    double y = 0;
    for (std::size_t r = 0; r < av.shape()[0]; ++r)
        for (std::size_t p = 0; p < wv.shape()[0]; ++p)
            for (std::size_t q = 0; q < wv.shape()[1]; ++q) y += av(r, p) * wv(p, q) * bv(r, q);
    t.output_value(i, {}) = xt::xarray<double>(y);
    return t.handle(i);
}
// A^T B, (m x n), by xtensor: the reference.
xt::xarray<double> at_b(const xt::xarray<double>& a, const xt::xarray<double>& b) {
    xt::xarray<double> c = xt::zeros<double>({a.shape()[1], b.shape()[1]});
    for (std::size_t r = 0; r < a.shape()[0]; ++r)
        for (std::size_t i = 0; i < a.shape()[1]; ++i)
            for (std::size_t j = 0; j < b.shape()[1]; ++j) c(i, j) += a(r, i) * b(r, j);
    return c;
}

}  // namespace recur_tape_tests

BOOST_AUTO_TEST_SUITE(tape)

using namespace recur_tape_tests;

// ---- The reverse loop ------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(backward_over_a_100000_node_chain_is_a_loop) {
    // h_{k+1} = tanh(1 * h_k + 0): 50,000 (affine, tanh) pairs, 100,000 op nodes. A recursive
    // backward would overflow the stack; the gradient is checked against the chain rule done
    // here step by step with std::tanh.
    const int steps = 50000;
    Tape<double> t;
    auto x = t.variable(xt::xarray<double>{0.5});
    Var<double> h = x;
    double ref = 0.5, dref = 1.0;
    for (int k = 0; k < steps; ++k) {
        h = tanh(affine(h, 1.0, 0.0));
        ref = std::tanh(ref);
        dref *= 1.0 - ref * ref;
    }
    BOOST_TEST(t.size() >= std::size_t(2 * steps + 1));
    BOOST_TEST(h.item() == ref, boost::test_tools::tolerance(1e-9));
    t.backward(h);
    BOOST_TEST(dref > 1e-9);  // the reference itself is not trivially 0
    BOOST_TEST(x.grad()(0) == dref, boost::test_tools::tolerance(1e-8));
}

BOOST_AUTO_TEST_CASE(fan_out_sums_gradients) {
    Tape<double> t;
    const xt::xarray<double> xv = rnd({2, 3}, 1);
    auto x = t.variable(xv);
    // L = sum(x * x + 3 x): dL/dx = 2 x + 3.
    t.backward(sum(x * x + x * 3.0));
    BOOST_TEST(close(x.grad(), xt::xarray<double>(2.0 * xv + 3.0)));
    // L = sum(concat(x, x, x)) + sum(x): every element is used 4 times.
    t.backward(sum(concat(Vars{x, x, x}, 0)) + sum(x));
    BOOST_TEST(close(x.grad(), xt::xarray<double>(full({2, 3}, 4.0)), 0.0));
}

// ---- Var handles -----------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(var_is_a_cheap_handle) {
    BOOST_TEST(sizeof(Var<double>) <= 4 * sizeof(void*));
    Tape<double> t;
    const xt::xarray<double> xv = rnd({3, 4}, 2);
    auto a = t.variable(xv);
    const std::size_t nodes = t.size();

    Var<double> b = a;  // copy: same node, no new node
    BOOST_TEST(b.index() == a.index());
    BOOST_TEST(same(b.value(), xv));
    BOOST_TEST(t.size() == nodes);

    Var<double> c = std::move(b);  // move: c takes over, b is empty
    BOOST_TEST(c.index() == a.index());
    BOOST_TEST(!b.defined());  // NOLINT(bugprone-use-after-move): checking the moved-from state
    BOOST_TEST(same(c.value(), xv));

    Var<double> d;
    BOOST_TEST(!d.defined());
    d = c;  // copy-assign
    BOOST_TEST(d.index() == a.index());
    auto e = tanh(a);
    d = e;  // re-assign to another node
    BOOST_TEST(d.index() == e.index());
    const Var<double>& alias = d;
    d = alias;  // self-assignment keeps the handle
    BOOST_TEST(d.defined());
    BOOST_TEST(same(d.value(), e.value()));
    d = std::move(c);  // move-assign
    BOOST_TEST(d.index() == a.index());
    BOOST_TEST(t.size() == nodes + 1);  // only tanh(a) was made
}

BOOST_AUTO_TEST_CASE(a_value_lives_while_any_handle_does) {
    Tape<double> t({.record = false});
    const xt::xarray<double> xv = rnd({2, 2}, 3);
    Var<double> keep;
    {
        auto x = t.constant(xv);
        auto y = exp(x);
        keep = y;
    }  // x and the original y handle die; keep still refers to exp(x)
    auto filler1 = t.constant(full({2, 2}, 0.0));  // may reuse a released slot
    auto filler2 = t.constant(full({2, 2}, 0.0));
    BOOST_TEST(same(keep.value(), xt::xarray<double>(xt::exp(xv))));
    BOOST_TEST(filler1.index() != keep.index());
    BOOST_TEST(filler2.index() != keep.index());
}

BOOST_AUTO_TEST_CASE(unneeded_nodes_are_released_when_their_last_handle_dies) {
    Tape<double> t;  // recording, but nothing here requires grad
    auto c = t.constant(rnd({3}, 4));
    const std::size_t before = t.size();
    {
        auto d = exp(c * 2.0);
        BOOST_TEST(!d.requires_grad());
        BOOST_TEST(t.size() == before + 1);  // the temporary c * 2 is gone already
    }
    BOOST_TEST(t.size() == before);
}

// ---- clear() -------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(clear_keeps_capacity_and_rerecording_does_not_grow) {
    Tape<double> t;
    Parameter<double> w(rnd({3, 4}, 5));
    const xt::xarray<double> xv = rnd({2, 3}, 6);
    auto record = [&] {
        auto x = t.constant(xv);
        auto h = tanh(matmul(x, t.bind(w)));
        auto loss = sum(softmax(h) * h);
        t.backward(loss);
        return loss.item();
    };
    const double first = record();
    const std::size_t cap = t.capacity();
    BOOST_TEST(cap > 0u);
    BOOST_TEST(t.size() > 0u);
    for (int step = 0; step < 5; ++step) {
        t.clear();
        BOOST_TEST(t.size() == 0u);
        BOOST_TEST(t.capacity() == cap);
        BOOST_TEST(t.bound_parameters().empty());
        BOOST_TEST(record() == first);
        BOOST_TEST(t.capacity() == cap);
    }
}

BOOST_AUTO_TEST_CASE(clear_makes_old_vars_stale) {
    Tape<double> t;
    auto x = t.variable(rnd({2}, 7));
    BOOST_TEST(x.alive());
    t.clear();
    BOOST_TEST(x.defined());
    BOOST_TEST(!x.alive());
    auto y = t.variable(rnd({2}, 8));  // the new epoch may reuse x's slot
    BOOST_TEST(y.alive());
    BOOST_CHECK_THROW(x.value(), tape_error);
}

// ---- Backward twice, Parameters ------------------------------------------------------------

BOOST_AUTO_TEST_CASE(backward_twice_same_var_grads_accumulating_parameter_grads) {
    Tape<double> t;
    Parameter<double> p(rnd({3, 2}, 9));
    BOOST_TEST(same(p.grad(), full({3, 2}, 0.0)));
    auto x = t.variable(rnd({4, 3}, 10));
    auto h = tanh(matmul(x, t.bind(p)));
    h.retain_grad();
    auto loss = sum(h * h);

    t.backward(loss);
    const xt::xarray<double> gx = x.grad(), gh = h.grad(), gp = p.grad();
    BOOST_TEST(!same(gp, full({3, 2}, 0.0)));

    t.backward(loss);
    BOOST_TEST(same(x.grad(), gx));  // Vars: the last backward's gradient
    BOOST_TEST(same(h.grad(), gh));
    BOOST_TEST(same(p.grad(), xt::xarray<double>(2.0 * gp)));  // Parameters: accumulated

    p.zero_grad();
    BOOST_TEST(same(p.grad(), full({3, 2}, 0.0)));
    t.backward(loss);
    BOOST_TEST(same(p.grad(), gp));
}

BOOST_AUTO_TEST_CASE(parameter_on_two_tapes_gets_both_contributions) {
    Parameter<double> p(rnd({2, 3}, 11));
    const xt::xarray<double> a = rnd({2, 3}, 12), b = rnd({2, 3}, 13);
    Tape<double> t1, t2;
    auto l1 = sum(t1.bind(p) * t1.constant(a));
    auto l2 = sum(t2.bind(p) * t2.constant(b));
    t1.backward(l1);
    BOOST_TEST(close(p.grad(), a, 0.0));
    t2.backward(l2);
    BOOST_TEST(close(p.grad(), xt::xarray<double>(a + b)));
}

BOOST_AUTO_TEST_CASE(binding_a_parameter_twice_gives_the_same_node) {
    Tape<double> t;
    Parameter<double> p(rnd({3}, 14));
    auto a = t.bind(p);
    auto b = t.bind(p);
    BOOST_TEST(a.index() == b.index());
    BOOST_TEST(t.bound_parameters().size() == 1u);
    BOOST_TEST(t.bound_parameters().front() == &p);
    BOOST_TEST(a.requires_grad());
    BOOST_TEST(same(a.value(), p.value()));
    // Used twice in one graph: L = sum(p * p), dL/dp = 2 p.
    t.backward(sum(a * b));
    BOOST_TEST(close(p.grad(), xt::xarray<double>(2.0 * p.value())));
    // The binding reads the parameter in place: a change shows through the node.
    p.value()(0) = 42.0;
    BOOST_TEST(a.value()(0) == 42.0);
}

BOOST_AUTO_TEST_CASE(grad_final_hook_fires_once_per_parameter_when_its_gradient_is_final) {
    // p1 feeds the first layer, p2 the second: the sweep finishes p2 before it reaches p1's
    // readers, so p2 is reported first, with its gradient complete; p3 is bound but unused.
    Parameter<double> p1(rnd({3, 3}, 31)), p2(rnd({3, 3}, 32)), p3(rnd({2}, 33));
    Tape<double> t;
    std::vector<std::pair<Parameter<double>*, bool>> seen;
    std::vector<std::size_t> nodes_left;  // how many nodes' backward had not run yet when fired
    t.on_grad_final([&](Parameter<double>& p, const xt::xarray<double>* g) {
        seen.emplace_back(&p, g != nullptr);
        if (g) BOOST_TEST(close(*g, p.grad(), 0.0));  // already added into p.grad()
    });
    auto x = t.constant(rnd({2, 3}, 34));
    auto h = tanh(matmul(x, t.bind(p1)));
    auto y = matmul(h, t.bind(p2));
    t.bind(p3);
    t.backward(sum(y * y));
    BOOST_TEST_REQUIRE(seen.size() == 3u);
    BOOST_TEST((seen[0].first == &p3 && !seen[0].second));
    BOOST_TEST((seen[1].first == &p2 && seen[1].second));
    BOOST_TEST((seen[2].first == &p1 && seen[2].second));
    // Kept across clear(); removed by an empty function.
    t.clear();
    seen.clear();
    p2.zero_grad();
    t.backward(sum(matmul(t.constant(rnd({1, 3}, 35)), t.bind(p2))));
    BOOST_TEST(seen.size() == 1u);
    t.on_grad_final({});
    t.clear();
    t.backward(sum(matmul(t.constant(rnd({1, 3}, 35)), t.bind(p2))));
    BOOST_TEST(seen.size() == 1u);
}

BOOST_AUTO_TEST_CASE(the_op_reading_a_parameter_last_reports_its_gradient_rows_final_in_order) {
    // linear's backward, under a rows hook, makes db first, then dW in blocks of rows
    // (40 rows: blocks of 8, 16, 8, 8), reporting each: the rows are final and already in p.grad().
    Parameter<double> w(rnd({40, 5}, 51)), b(rnd({40}, 52));
    const xt::xarray<double> x1 = rnd({6, 5}, 53), x2 = rnd({4, 5}, 54);
    // Reference, no hook: W read by two linears (the first pushed reads it last in the sweep).
    auto loss = [&](Tape<double>& t) {
        auto y1 = linear(t.constant(x1), t.bind(w), t.bind(b));
        auto y2 = linear(t.constant(x2), t.bind(w));
        return sum(y1 * y1) + sum(tanh(y2));
    };
    {
        Tape<double> t;
        t.backward(loss(t));
    }
    const xt::xarray<double> dw = w.grad(), db = b.grad();
    w.zero_grad();
    b.zero_grad();

    Tape<double> t;
    std::vector<std::tuple<Parameter<double>*, std::size_t, std::size_t>> rows;
    std::vector<Parameter<double>*> final;
    t.on_grad_rows_final([&](Parameter<double>& p, std::size_t begin, std::size_t end) {
        rows.emplace_back(&p, begin, end);
        const auto& expected = &p == &w ? dw : db;
        const std::size_t width = p.size() / p.shape()[0];
        for (std::size_t e = begin * width; e < end * width; ++e)
            BOOST_TEST(std::abs(p.grad().data()[e] - expected.data()[e]) < 1e-12);
    });
    t.on_grad_final([&](Parameter<double>& p, const xt::xarray<double>*) { final.push_back(&p); });
    t.backward(loss(t));
    BOOST_TEST(close(w.grad(), dw, 1e-12));  // every row added once
    BOOST_TEST(close(b.grad(), db, 1e-12));
    BOOST_TEST_REQUIRE(rows.size() == 1u + 4u);
    BOOST_TEST((rows[0] == std::tuple(&b, std::size_t(0), std::size_t(40))));
    for (std::size_t k = 1; k < rows.size(); ++k) {
        BOOST_TEST(std::get<0>(rows[k]) == &w);
        BOOST_TEST(std::get<1>(rows[k]) == (k == 1 ? 0u : std::get<2>(rows[k - 1])));
    }
    BOOST_TEST(std::get<2>(rows.back()) == 40u);
    BOOST_TEST(final.size() == 2u);  // and each is reported whole afterwards

    // An op with a lower index reading W too (a penalty recorded first): linear no longer reads
    // it last, so nothing is reported early, and the gradient is the same as without hooks.
    rows.clear();
    w.zero_grad();
    t.clear();
    auto penalized = [&](Tape<double>& tape, Parameter<double>& p) {
        auto penalty = sum(tape.bind(p) * tape.bind(p));  // recorded first
        return penalty + sum(linear(tape.constant(x1), tape.bind(p)));
    };
    t.backward(penalized(t, w));
    BOOST_TEST(rows.empty());
    Tape<double> plain;
    Parameter<double> w2(w.value());
    plain.backward(penalized(plain, w2));
    BOOST_TEST(close(w.grad(), w2.grad(), 0.0));

    // A tape that leaves parameter gradients on itself reports the rows and adds nothing.
    Tape<double> own({.accumulate_parameter_grads = false});
    own.on_grad_rows_final(
        [&](Parameter<double>& p, std::size_t begin, std::size_t end) { rows.emplace_back(&p, begin, end); });
    w.zero_grad();
    own.backward(sum(linear(own.constant(x1), own.bind(w))));
    BOOST_TEST(rows.size() == 4u);
    BOOST_TEST(close(w.grad(), xt::zeros<double>(w.shape()), 0.0));
}

BOOST_AUTO_TEST_CASE(deferred_product_gradients_are_summed_before_anyone_reads_them) {
    const xt::xarray<double> a1 = rnd({4, 5}, 61), b1 = rnd({4, 3}, 62), a2 = rnd({6, 5}, 63), b2 = rnd({6, 3}, 64),
                             c = rnd({5, 3}, 65);
    // dW = A1^T B1 + 2 A2^T B2 (deferred, one product) + C (added directly, between them)
    const xt::xarray<double> expected = at_b(a1, b1) + 2.0 * at_b(a2, b2) + c;
    auto loss = [&](Tape<double>& t, const Var<double>& w) {
        auto y1 = bilinear_rows(w, t.constant(a1), t.constant(b1));
        auto y2 = bilinear_rows(w, t.constant(a2), t.constant(b2));
        return y1 + sum(w * t.constant(c)) + 2.0 * y2;
    };
    {  // a Parameter: final in its hook and in grad()
        Parameter<double> w(rnd({5, 3}, 66));
        Tape<double> t;
        bool hooked = false;
        t.on_grad_final([&](Parameter<double>& p, const xt::xarray<double>* g) {
            hooked = &p == &w && g != nullptr && close(*g, expected);
        });
        deferred_products_run = 0;
        t.backward(loss(t, t.bind(w)));
        BOOST_TEST(hooked);
        BOOST_TEST(close(w.grad(), expected));
        BOOST_TEST(deferred_products_run == 1);  // both nodes' rows in one product
    }
    {  // a variable: Var::grad()
        Tape<double> t;
        auto w = t.variable(rnd({5, 3}, 66));
        t.backward(loss(t, w));
        BOOST_TEST(close(w.grad(), expected));
    }
    // Rows beyond Tape::deferred_bytes are summed as they come: 3 x 30000 rows of 8 doubles
    // (1.9 MB each) fill the 4 MiB once.
    const xt::xarray<double> big_a = rnd({30000, 5}, 67), big_b = rnd({30000, 3}, 68);
    Tape<double> t;
    auto w = t.variable(rnd({5, 3}, 69));
    auto big = [&] { return bilinear_rows(w, t.constant(big_a), t.constant(big_b)); };
    deferred_products_run = 0;
    t.backward(big() + big() + big());
    BOOST_TEST(deferred_products_run == 2);
    BOOST_TEST(close(w.grad(), 3.0 * at_b(big_a, big_b), 1e-10));
    // and the op passes gradcheck
    const auto report =
        gradcheck([&](Tape<double>& tape, const Vars& v) { return loss(tape, v[0]); }, {rnd({5, 3}, 70)});
    BOOST_TEST(report.passed, report.summary());
}

BOOST_AUTO_TEST_CASE(an_op_with_two_outputs_is_one_node_whose_backward_reads_both) {
    const xt::xarray<double> xv = rnd({2, 3}, 41), wu = rnd({2, 3}, 42), wv = rnd({2, 3}, 43);
    // Either output alone, and both, feeding later ops in either order.
    auto both = [&](Tape<double>& t, const std::vector<Var<double>>& in) {
        auto [u, v] = polar(in[0], 1.5);
        return sum(v * t.constant(wv)) + sum(tanh(u) * t.constant(wu));
    };
    auto only_u = [&](Tape<double>&, const std::vector<Var<double>>& in) {
        return sum(polar(in[0], 1.5).first * in[0]);
    };
    auto only_v = [&](Tape<double>&, const std::vector<Var<double>>& in) { return sum(polar(in[0], 1.5).second); };
    for (const auto& f : {GradcheckFn(both), GradcheckFn(only_u), GradcheckFn(only_v)}) {
        const auto report = gradcheck(f, {xv});
        BOOST_TEST(report.passed, report.summary());
    }
    // The second output is a slot of its own that belongs to the node; a backward from it runs
    // the node's backward.
    Tape<double> t;
    auto x = t.variable(xv);
    auto [u, v] = polar(x, 1.5);
    BOOST_TEST(v.index() != u.index());
    BOOST_TEST(t.output(u.index(), 1) == v.index());
    t.backward(v, xt::ones_like(xv));
    BOOST_TEST(close(x.grad(), xt::xarray<double>(u.value())));  // d(sum v)/dx = r cos x = u
    const std::uint32_t in = x.index();
    BOOST_TEST(recur::testing::throws_with<recur::tape_error>([&] { (void)t.push("five", &in, 1, &polar_backward, 5); },
                                                              {"five", "1 to 4 outputs"}));
}

#ifndef NDEBUG
BOOST_AUTO_TEST_CASE(a_tape_used_by_a_second_thread_is_a_clear_error) {
    // Debug and sanitizer builds check the recording thread (release builds do not pay for it).
    Tape<double> t;
    auto x = t.variable(rnd({2, 2}, 44));
    auto y = tanh(x);
    bool threw = false;
    std::thread other([&] {
        threw = recur::testing::throws_with<recur::tape_error>([&] { (void)exp(x); },
                                                               {"another thread", "single-threaded"});
    });
    other.join();
    BOOST_TEST(threw);
    t.clear();  // a cleared tape may be taken over by another thread
    std::thread next([&] {
        auto z = t.variable(rnd({2}, 45));
        t.backward(sum(z));
    });
    next.join();
}
#endif

BOOST_AUTO_TEST_CASE(a_transposed_copy_follows_its_node_not_its_slot) {
    // On an inference tape a released node's slot is reused: the next node there gets its own
    // transpose, not the one made for the node before it.
    Tape<double> t({.record = false});
    const xt::xarray<double> a = rnd({2, 3}, 46), b = rnd({2, 3}, 47);
    std::uint32_t slot = 0;
    {
        auto w = t.constant(a);
        slot = w.index();
        BOOST_TEST(same(t.transposed(slot), xt::xarray<double>(xt::transpose(a))));
    }
    auto w2 = t.constant(b);
    BOOST_TEST_REQUIRE(w2.index() == slot);  // the slot was reused
    BOOST_TEST(same(t.transposed(w2.index()), xt::xarray<double>(xt::transpose(b))));
    // A bound Parameter's copy is remade once its value may have changed.
    Parameter<double> p(a);
    auto pw = t.bind(p);
    BOOST_TEST(same(t.transposed(pw.index()), xt::xarray<double>(xt::transpose(a))));
    p.value() = b;
    BOOST_TEST(same(t.transposed(pw.index()), xt::xarray<double>(xt::transpose(b))));
}

BOOST_AUTO_TEST_CASE(detach_stops_the_gradient) {
    Tape<double> t;
    const xt::xarray<double> xv = rnd({2, 2}, 15);
    auto x = t.variable(xv);
    // L = sum(2 x + detach(x) * x): dL/dx = 2 + x (the detached factor is a constant).
    t.backward(sum(x * 2.0 + detach(x) * x));
    BOOST_TEST(close(x.grad(), xt::xarray<double>(2.0 + xv)));
    BOOST_TEST(!detach(x).requires_grad());
    BOOST_CHECK_THROW(t.backward(sum(detach(x))), tape_error);  // nothing requires grad
}

// ---- Seeds ---------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(backward_seed_rules) {
    Tape<double> t;
    const xt::xarray<double> xv = rnd({2, 3}, 16);
    auto x = t.variable(xv);
    auto y = tanh(x);
    BOOST_CHECK_THROW(t.backward(y), error);  // non-scalar without a seed
    BOOST_CHECK_THROW(t.backward(y, full({3, 2}, 1.0)), shape_error);
    BOOST_CHECK_THROW(t.backward(y, full({6}, 1.0)), shape_error);
    const xt::xarray<double> seed = rnd({2, 3}, 17);
    t.backward(y, seed);
    const xt::xarray<double> th = xt::tanh(xv);
    BOOST_TEST(close(x.grad(), xt::xarray<double>(seed * (1.0 - th * th))));
    // A one-element output of any rank needs no seed.
    auto s = reshape(sum(x), {1, 1});
    t.backward(s);
    BOOST_TEST(close(x.grad(), xt::xarray<double>(full({2, 3}, 1.0))));
}

BOOST_AUTO_TEST_CASE(intermediate_vars_expose_their_gradient) {
    Tape<double> t;
    const xt::xarray<double> xv = rnd({3, 2}, 18), wv = rnd({2, 2}, 19);
    auto x = t.variable(xv);
    auto w = t.variable(wv);
    auto h = tanh(matmul(x, w));
    auto unused = exp(x);  // not on the path to the loss
    auto loss = sum(h * h * 0.5);
    auto other = h * 2.0;  // not retained
    h.retain_grad();
    unused.retain_grad();
    t.backward(loss);
    BOOST_TEST(recur::testing::throws_with<recur::tape_error>([&] { (void)other.grad(); },
                                                              {"Var::grad", "intermediate result", "retain_grad()"}));
    BOOST_TEST(close(h.grad(), h.value()));  // dL/dh = h
    // dL/dx = (h * (1 - h^2)) w^T, by hand.
    const xt::xarray<double> hv = h.value();
    const xt::xarray<double> gz = hv * (1.0 - hv * hv);
    xt::xarray<double> gx = full({3, 2}, 0.0);
    for (std::size_t i = 0; i < 3; ++i)
        for (std::size_t k = 0; k < 2; ++k)
            for (std::size_t j = 0; j < 2; ++j) gx(i, k) += gz(i, j) * wv(k, j);
    BOOST_TEST(close(x.grad(), gx));
    BOOST_TEST(same(unused.grad(), full({3, 2}, 0.0)));  // not reached: zeros
}

// A hoisted projection xs = linear(x) read only by fused steps: no backward reads xs's value,
// so backward writes its gradient into the value's buffer (the LSTM's largest buffer, (T, B, 4H)),
// and reading the value afterwards is a clear error. The gradients are unchanged: against a tape
// that retains xs (no lending), to the last bit.
BOOST_AUTO_TEST_CASE(a_value_no_backward_reads_lends_its_buffer_to_the_gradient) {
    const xt::xarray<double> xv = rnd({3, 2, 5}, 40), wih = rnd({12, 5}, 41), whh = rnd({12, 3}, 42);
    auto run = [&](bool retain, xt::xarray<double>& dx, xt::xarray<double>& dw) {
        Tape<double> t;
        auto x = t.variable(xv);
        auto w = t.variable(wih);
        auto xs = linear(x, w);  // (T 3, B 2, 4H 12)
        if (retain) xs.retain_grad();
        const xt::xarray<double> before = xs.value();
        auto h = t.constant(full({2, 3}, 0.1)), c = t.constant(full({2, 3}, -0.2));
        auto u = t.variable(whh);
        Var<double> loss;
        for (std::size_t s = 0; s < 3; ++s) {
            auto step = lstm_step(xs, 0, s, h, c, u);
            h = step.h;
            c = step.c;
            loss = s == 0 ? sum(h) : loss + sum(h);
        }
        const double* buffer = xs.value().data();
        t.backward(loss);
        dx = x.grad();
        dw = w.grad();
        if (retain) {  // kept: value and gradient both readable
            BOOST_TEST(same(xs.value(), before));
            BOOST_TEST(xs.grad().data() != buffer);
        } else {
            BOOST_TEST(recur::testing::throws_with<recur::tape_error>([&] { (void)xs.value(); },
                                                                      {"Var::value", "'linear'", "retain_grad()"}));
            BOOST_TEST(recur::testing::throws_with<recur::tape_error>([&] { (void)(xs * 2.0); }, {"'linear'"}));
            BOOST_TEST((xs.shape() == Shape{3, 2, 12}));  // the shape stays readable
            BOOST_TEST(t.value(xs.index()).data() == buffer);  // the buffer is back in its slot
        }
    };
    xt::xarray<double> dx_lent, dw_lent, dx_kept, dw_kept;
    run(false, dx_lent, dw_lent);
    run(true, dx_kept, dw_kept);
    BOOST_TEST(same(dx_lent, dx_kept));
    BOOST_TEST(same(dw_lent, dw_kept));
    BOOST_TEST(xt::amax(xt::abs(dx_lent))() > 0.0);
}

BOOST_AUTO_TEST_CASE(a_view_reads_its_array_in_place) {
    Tape<double> t;
    const xt::xarray<double> xv = rnd({3, 2}, 21), wv = rnd({2, 2}, 22);
    auto x = t.view(xv);
    BOOST_TEST(x.value().data() == xv.data());  // no copy
    BOOST_TEST(!x.requires_grad());
    auto w = t.variable(wv);
    t.backward(sum(matmul(x, w)));
    // dL/dw[k, j] = sum_i x[i, k]
    for (std::size_t k = 0; k < 2; ++k)
        for (std::size_t j = 0; j < 2; ++j)
            BOOST_TEST(std::abs(w.grad()(k, j) - (xv(0, k) + xv(1, k) + xv(2, k))) < 1e-15);
    // The same array on another step: constant(const&) copies into the slot's kept buffer.
    t.clear();
    auto c = t.constant(xv);
    BOOST_TEST(c.value().data() != xv.data());
    BOOST_TEST(same(c.value(), xv));
}

BOOST_AUTO_TEST_CASE(without_retained_grads_leaves_and_parameters_get_the_same_gradients) {
    // A chain with fan-out and differently shaped intermediates, run on a default tape and on a
    // tape that pools intermediate gradient buffers; three sweeps each (buffers are reused).
    const xt::xarray<double> xv = rnd({3, 4}, 23), wv = rnd({4, 4}, 24);
    recur::Parameter<double> w(wv);
    auto run = [&](Tape<double>& t) {
        w.zero_grad();
        auto x = t.variable(xv);
        auto h = tanh(matmul(x, t.bind(w)));
        auto y = sum(h * h, 0) + sum(exp(matmul(h, t.bind(w))), 0);
        t.backward(sum(y * y));
        std::vector<xt::xarray<double>> out{x.grad(), w.grad()};
        if (!t.retains_grads())
            BOOST_TEST(
                recur::testing::throws_with<recur::tape_error>([&] { (void)h.grad(); }, {"Var::grad", "retain_grads"}));
        t.clear();
        return out;
    };
    Tape<double> keep, pool({.retain_grads = false});
    for (int k = 0; k < 3; ++k) {
        const auto a = run(keep), b = run(pool);
        BOOST_TEST(same(a[0], b[0]));
        BOOST_TEST(same(a[1], b[1]));
    }
}

BOOST_AUTO_TEST_CASE(pooled_gradients_survive_graphs_that_change_shape) {
    // Slots that held intermediates (whose buffers went to the pool) become roots and nodes of
    // other sizes in the next epochs; every sweep must still see correctly sized buffers.
    Tape<double> pool({.retain_grads = false}), keep;
    for (std::size_t n : {4u, 2u, 6u, 2u, 5u}) {
        const xt::xarray<double> xv = rnd({n, 3}, 30 + n);
        std::vector<xt::xarray<double>> grads;
        for (Tape<double>* t : {&pool, &keep}) {
            auto x = t->variable(xv);
            auto y = n % 2 ? sum(tanh(x) * x) : mean(exp(x * 0.5));
            t->backward(y);
            grads.push_back(x.grad());
            t->clear();
        }
        BOOST_TEST(same(grads[0], grads[1]));
    }
}

// ---- Inference -----------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(a_non_recording_tape_records_nothing) {
    Tape<double> t({.record = false});
    BOOST_TEST(!t.recording());
    auto x = t.variable(rnd({2, 3}, 20));
    auto w = t.variable(rnd({3, 3}, 21));
    auto y = tanh(matmul(x, w));
    BOOST_TEST(!y.requires_grad());
    BOOST_CHECK_THROW(t.backward(sum(y)), tape_error);
    Parameter<double> p(rnd({3}, 22));
    auto z = sum(y * t.bind(p));
    BOOST_TEST(!z.requires_grad());
    BOOST_CHECK_THROW(t.backward(z), tape_error);
    BOOST_TEST(same(p.grad(), full({3}, 0.0)));
}

BOOST_AUTO_TEST_CASE(no_grad_guard_records_nothing_and_restores_recording) {
    Tape<double> t;
    auto x = t.variable(rnd({2, 3}, 23));
    {
        NoGradGuard<double> guard(t);
        BOOST_TEST(!t.recording());
        auto y = sigmoid(x * x);
        BOOST_TEST(!y.requires_grad());
        BOOST_CHECK_THROW(t.backward(sum(y)), tape_error);
    }
    BOOST_TEST(t.recording());
    auto y = sigmoid(x * x);
    BOOST_TEST(y.requires_grad());
}

// h = tanh(h * w + x), the step of a tiny recurrent net.
template <class F>
std::size_t run_loop(Tape<double>& t, int steps, F&& observe) {
    auto w = t.variable(rnd({4}, 24, -0.9, 0.9));
    auto x = t.variable(rnd({4}, 25));
    Var<double> h = t.constant(full({4}, 0.0));
    std::size_t peak = t.size();
    for (int k = 0; k < steps; ++k) {
        h = tanh(h * w + x);
        peak = std::max(peak, t.size());
        observe(h);
    }
    return peak;
}

BOOST_AUTO_TEST_CASE(inference_keeps_no_intermediates_alive) {
    const int steps = 10000;
    auto nothing = [](const Var<double>&) {};
    release_cached_tape_memory();  // the tapes start empty, not with an earlier tape's nodes

    Tape<double> off({.record = false});
    const std::size_t peak_off = run_loop(off, steps, nothing);
    BOOST_TEST(peak_off <= 8u);
    BOOST_TEST(off.capacity() <= 8u);

    Tape<double> guarded;
    std::size_t peak_guarded = 0;
    {
        NoGradGuard<double> guard(guarded);
        peak_guarded = run_loop(guarded, steps, nothing);
    }
    BOOST_TEST(peak_guarded <= 8u);
    BOOST_TEST(guarded.capacity() <= 8u);

    Tape<double> on;
    Var<double> last;
    const std::size_t peak_on = run_loop(on, steps, [&](const Var<double>& h) { last = h; });
    BOOST_TEST(peak_on >= std::size_t(3 * steps));  // every step's nodes kept for backward
    BOOST_TEST(last.requires_grad());
}

BOOST_AUTO_TEST_CASE(recording_again_after_a_guard_still_reaches_parameters) {
    Tape<double> t;
    Parameter<double> p(rnd({2, 3}, 26));
    const xt::xarray<double> cv = rnd({2, 3}, 27);
    auto c = t.constant(cv);
    Var<double> pre;
    {
        NoGradGuard<double> guard(t);
        pre = t.bind(p) * c;  // bound under the guard: the binding still requires grad
        BOOST_TEST(!pre.requires_grad());
    }
    auto loss = sum(t.bind(p) * c + pre);
    BOOST_TEST(loss.requires_grad());
    t.backward(loss);
    BOOST_TEST(close(p.grad(), cv, 0.0));  // only the recorded product contributes
}

// ---- Dropout's generator ---------------------------------------------------------------------

xt::xarray<double> dropout_mask(std::uint64_t seed, std::size_t n) {
    Tape<double> t({.seed = seed});
    auto x = t.variable(full({n}, 1.0));
    return dropout(x, 0.3).value();
}

BOOST_AUTO_TEST_CASE(dropout_is_reproducible_per_seed) {
    BOOST_TEST(same(dropout_mask(7, 200), dropout_mask(7, 200)));
    BOOST_TEST(!same(dropout_mask(7, 200), dropout_mask(8, 200)));

    Tape<double> t;
    auto x = t.variable(full({200}, 1.0));
    t.seed(5);
    const xt::xarray<double> a = dropout(x, 0.5).value();
    const xt::xarray<double> b = dropout(x, 0.5).value();  // the generator moved on
    t.seed(5);
    const xt::xarray<double> c = dropout(x, 0.5).value();
    BOOST_TEST(!same(a, b));
    BOOST_TEST(same(a, c));
}

BOOST_AUTO_TEST_CASE(dropout_in_eval_returns_x) {
    Tape<double> t;
    const xt::xarray<double> xv = rnd({3, 4}, 28);
    auto x = t.variable(xv);
    auto y = dropout(x, 0.3, false);
    BOOST_TEST(y.index() == x.index());
    BOOST_TEST(same(y.value(), xv));
    auto z = dropout(x, 0.0);
    BOOST_TEST(same(z.value(), xv));
}

BOOST_AUTO_TEST_CASE(dropout_mask_values_and_kept_fraction) {
    const double p = 0.3;
    const std::size_t n = 100000;
    Tape<double> t({.seed = 2024});
    auto x = t.variable(full({n}, 1.0));
    auto y = dropout(x, p);
    const double keep = 1.0 / (1.0 - p);
    std::size_t kept = 0, bad = 0;
    for (std::size_t k = 0; k < n; ++k) {
        const double v = y.value()(k);
        if (v == keep)
            ++kept;
        else if (v != 0.0)
            ++bad;
    }
    BOOST_TEST(bad == 0u);
    BOOST_TEST(static_cast<double>(kept) / static_cast<double>(n) == 1.0 - p, boost::test_tools::tolerance(0.02));
    // The gradient is the same mask.
    t.backward(y, full({n}, 1.0));
    BOOST_TEST(same(x.grad(), y.value()));
}

// ---- gradcheck itself ----------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(gradcheck_passes_a_correct_user_primitive) {
    auto rep = gradcheck([](Tape<double>&, const Vars& x) { return square<false>(x[0]) * x[1]; },
                         {rnd({2, 3}, 29), rnd({3}, 30)});
    BOOST_TEST(rep.passed, rep.summary());
    BOOST_TEST(rep.deterministic);
    BOOST_TEST(rep.elements == 9u);
}

BOOST_AUTO_TEST_CASE(gradcheck_reports_a_wrong_backward) {
    auto rep = gradcheck([](Tape<double>&, const Vars& x) { return square<true>(x[0]); }, {rnd({2, 3}, 31, 0.5, 1.0)});
    BOOST_TEST(!rep.passed);
    BOOST_TEST(rep.deterministic);  // wrong, but consistently so
    BOOST_TEST(!rep.worst.empty());
    BOOST_TEST(rep.worst.find("input 0") != std::string::npos, rep.worst);
    BOOST_TEST(rep.max_rel_error == 0.5, boost::test_tools::tolerance(1e-6));  // analytic is half the truth
    BOOST_TEST(rep.worst_analytic == 0.5 * rep.worst_numeric, boost::test_tools::tolerance(1e-6));
    BOOST_TEST(rep.summary().find("FAILED") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(gradcheck_checks_parameters_bound_inside_f) {
    Parameter<double> w(rnd({3, 4}, 32)), b(rnd({4}, 33));
    const xt::xarray<double> w0 = w.value();
    auto rep = gradcheck([&](Tape<double>& t, const Vars& x) { return tanh(matmul(x[0], t.bind(w)) + t.bind(b)); },
                         {rnd({2, 3}, 34)});
    BOOST_TEST(rep.passed, rep.summary());
    BOOST_TEST(rep.parameters == 2u);
    BOOST_TEST(rep.elements == 6u + 12u + 4u);
    BOOST_TEST(same(w.value(), w0));  // perturbations undone
    BOOST_TEST(same(w.grad(), full({3, 4}, 0.0)));  // and the grad left as it was

    // A wrong backward that only the parameter sees is found there.
    Parameter<double> q(rnd({2, 2}, 35, 0.5, 1.0));
    auto bad =
        gradcheck([&](Tape<double>& t, const Vars& x) { return square<true>(t.bind(q)) + x[0]; }, {rnd({2, 2}, 36)});
    BOOST_TEST(!bad.passed);
    BOOST_TEST(bad.parameters == 1u);
    BOOST_TEST(bad.worst.find("parameter 0") != std::string::npos, bad.worst);
}

// The numeric derivative must resolve the change of the outputs x moves, not drown in the
// roundoff of outputs it does not touch: y = concat(x, c) with a constant c of magnitude 1e4
// has dL/dx = s exactly, and concat's backward is exact.
BOOST_AUTO_TEST_CASE(gradcheck_is_not_fooled_by_large_unrelated_outputs) {
    xt::xarray<double> c = rnd({16}, 37, 0.5, 1.0);
    c *= 1e4;
    auto rep = gradcheck(
        [c](Tape<double>& t, const Vars& x) {
            return concat(Vars{x[0], t.constant(c)}, 0);
        },
        {rnd({4}, 38)});
    BOOST_TEST(rep.passed, rep.summary());
}

BOOST_AUTO_TEST_SUITE_END()
