// The attention primitives' values and documented edge cases (their gradients are checked in
// test_op_gradients), their errors, and the attention modules (nn/attention.hpp).
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xview.hpp>
#include <xtensor-blas/xlinalg.hpp>

#include "recur/error.hpp"
#include "recur/gradcheck.hpp"
#include "recur/nn/attention.hpp"
#include "recur/ops.hpp"
#include "recur/tape.hpp"

#include "support.hpp"

namespace recur_attention_tests {

using namespace recur;
using Dims = std::vector<std::size_t>;
using recur::testing::raises;

/// Values in [-1, 1), seeded.
xt::xarray<double> rnd(const Dims& shape, std::uint64_t seed) { return recur::testing::uniform_array(shape, seed); }

using Vars = std::vector<Var<double>>;

/// gradcheck of attention(x[0] = query, x[1] = memory, lengths): context and weights both
/// reach the checked output; also checks the module's Parameters.
template <class Attention>
void check_gradients(Attention& attention, const xt::xarray<double>& query, const xt::xarray<double>& memory,
                     const std::vector<std::int64_t>& lengths) {
    const GradcheckReport rep = gradcheck(
        [&](Tape<double>&, const Vars& x) {
            auto out = attention(x[0], x[1], lengths);
            return sum(out.context * out.context) + sum(out.weights * out.weights);  // non-uniform
        },
        {query, memory});
    BOOST_TEST(rep.passed, rep.summary());
    BOOST_TEST(rep.parameters == attention.parameters().size());
}

/// After backward through the context: the weights past each row's length are exactly 0, and
/// so is the memory's gradient there.
template <class Attention>
void check_padding(Attention& attention, const xt::xarray<double>& query, const xt::xarray<double>& memory,
                   const std::vector<std::int64_t>& lengths) {
    Tape<double> t;
    auto q = t.variable(query);
    auto m = t.variable(memory);
    auto out = attention(q, m, lengths);
    t.backward(sum(out.context * out.context));
    const auto& w = out.weights.value();
    const std::size_t steps = memory.shape()[1], rows_per_batch = w.size() / (lengths.size() * steps);
    const auto& g = m.grad();
    for (std::size_t b = 0; b < lengths.size(); ++b)
        for (auto k = static_cast<std::size_t>(lengths[b]); k < steps; ++k) {
            for (std::size_t r = 0; r < rows_per_batch; ++r)
                BOOST_TEST(w.data()[(b * rows_per_batch + r) * steps + k] == 0.0);
            for (std::size_t h = 0; h < memory.shape()[2]; ++h) BOOST_TEST(g(b, k, h) == 0.0);
        }
}

bool all_finite(const xt::xarray<double>& a) {
    for (double v : a)
        if (!std::isfinite(v)) return false;
    return true;
}

}  // namespace recur_attention_tests

BOOST_AUTO_TEST_SUITE(attention)

using namespace recur_attention_tests;

// ---- Primitives ---------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(bmm_is_one_product_per_batch) {
    for (std::size_t k : {3u, 64u}) {  // a small and a larger product (other GEMM kernels)
        const xt::xarray<double> a = rnd({4, 5, k}, 1), b = rnd({4, k, 7}, 2);
        Tape<double> t;
        auto y = bmm(t.variable(a), t.variable(b));
        BOOST_TEST(y.shape() == (Shape{4, 5, 7}));
        for (std::size_t p = 0; p < 4; ++p) {
            const xt::xarray<double> ref = xt::linalg::dot(xt::view(a, p), xt::view(b, p));
            BOOST_TEST(xt::allclose(xt::view(y.value(), p), ref, 1e-12, 1e-12));
        }
    }
    // float (recur's small kernel and oneDNN) against the double result
    const xt::xarray<double> a = rnd({3, 10, 128}, 3), b = rnd({3, 128, 128}, 4);
    Tape<float> tf;
    Tape<double> td;
    auto yf =
        bmm(tf.constant(xt::xarray<float>(xt::cast<float>(a))), tf.constant(xt::xarray<float>(xt::cast<float>(b))));
    auto yd = bmm(td.constant(a), td.constant(b));
    BOOST_TEST(xt::allclose(xt::xarray<double>(xt::cast<double>(yf.value())), yd.value(), 1e-4, 1e-4));
}

BOOST_AUTO_TEST_CASE(masked_softmax_masked_positions_are_exactly_zero) {
    Tape<double> t;
    const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
    // Masked positions may hold anything, even NaN or inf.
    auto x = t.variable(xt::xarray<double>{{0.5, nan, -1.0, inf}, {2.0, 1.0, 0.0, -3.0}, {nan, nan, nan, nan}});
    const xt::xarray<double> mask = {{1, 0, 1, 0}, {1, 1, 1, 1}, {0, 0, 0, 0}};
    Var<double> y = masked_softmax(x, mask);
    const auto& v = y.value();
    BOOST_TEST(all_finite(v));
    BOOST_TEST(v(0, 1) == 0.0);
    BOOST_TEST(v(0, 3) == 0.0);
    BOOST_TEST(std::abs(v(0, 0) - 1.0 / (1.0 + std::exp(-1.5))) < 1e-15);
    BOOST_TEST(std::abs(v(0, 0) + v(0, 2) - 1.0) < 1e-15);
    // An unmasked row is plain softmax.
    Tape<double> t2;
    const xt::xarray<double> plain = softmax(t2.constant(xt::xarray<double>{2.0, 1.0, 0.0, -3.0}), -1).value();
    BOOST_TEST(xt::allclose(xt::view(v, 1), plain, 0.0, 1e-15));
    // A fully masked row: zeros, no NaN.
    for (std::size_t k = 0; k < 4; ++k) BOOST_TEST(v(2, k) == 0.0);

    t.backward(y, rnd({3, 4}, 5));
    const auto& g = x.grad();
    BOOST_TEST(all_finite(g));
    BOOST_TEST(g(0, 1) == 0.0);
    BOOST_TEST(g(0, 3) == 0.0);
    for (std::size_t k = 0; k < 4; ++k) BOOST_TEST(g(2, k) == 0.0);
    BOOST_TEST(g(0, 0) != 0.0);
}

BOOST_AUTO_TEST_CASE(masked_softmax_lengths_equal_the_mask) {
    const xt::xarray<double> x = rnd({2, 3, 5}, 6);
    const std::vector<std::int64_t> lengths{2, 0};
    xt::xarray<double> mask = xt::zeros<double>({2, 3, 5});
    xt::view(mask, 0, xt::all(), xt::range(0, 2)) = 1.0;
    Tape<double> t;
    const xt::xarray<double> by_lengths = masked_softmax(t.constant(x), lengths).value();
    const xt::xarray<double> by_mask = masked_softmax(t.constant(x), mask).value();
    BOOST_TEST(by_lengths == by_mask);
    BOOST_TEST(xt::sum(xt::view(by_lengths, 1))() == 0.0);
    // Per-row lengths (B, Tq).
    xt::xarray<std::int64_t> rows = {{5, 1, 3}, {2, 2, 4}};
    const xt::xarray<double> y = masked_softmax(t.constant(x), rows).value();
    for (std::size_t b = 0; b < 2; ++b)
        for (std::size_t q = 0; q < 3; ++q) {
            double total = 0;
            for (std::size_t k = 0; k < 5; ++k) {
                if (static_cast<std::int64_t>(k) >= rows(b, q)) BOOST_TEST(y(b, q, k) == 0.0);
                total += y(b, q, k);
            }
            BOOST_TEST(std::abs(total - 1.0) < 1e-14);
        }
}

BOOST_AUTO_TEST_CASE(masked_fill_values_and_gradient) {
    Tape<double> t;
    auto x = t.variable(xt::xarray<double>{{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}});
    Var<double> y = masked_fill(x, xt::xarray<double>{0, 1, 0}, -7.0);
    BOOST_TEST(y.value() == (xt::xarray<double>{{1.0, -7.0, 3.0}, {4.0, -7.0, 6.0}}));
    t.backward(sum(y * y));
    BOOST_TEST(x.grad() == (xt::xarray<double>{{2.0, 0.0, 6.0}, {8.0, 0.0, 12.0}}));
}

// Ties: the first index gets the value and the whole gradient (PyTorch's max(dim)).
BOOST_AUTO_TEST_CASE(max_min_ties_go_to_the_first_index) {
    Tape<double> t;
    auto x = t.variable(xt::xarray<double>{{1.0, 3.0, 3.0, 0.0}, {-2.0, -2.0, 5.0, -2.0}});
    Var<double> hi = max(x, 1), lo = min(x, 1);
    BOOST_TEST(hi.value() == (xt::xarray<double>{3.0, 5.0}));
    BOOST_TEST(lo.value() == (xt::xarray<double>{0.0, -2.0}));
    t.backward(sum(hi * 2.0 + lo));
    BOOST_TEST(x.grad() == (xt::xarray<double>{{0.0, 2.0, 0.0, 1.0}, {1.0, 0.0, 2.0, 0.0}}));
    BOOST_TEST(max(x, 0, true).shape() == (Shape{1, 4}));
    BOOST_TEST(argmax(x, 1) == (xt::xarray<std::int64_t>{1, 2}));
    BOOST_TEST(argmax(x, 0, true) == (xt::xarray<std::int64_t>{{0, 0, 1, 0}}));
    // NaN propagates, like PyTorch.
    auto n = t.constant(xt::xarray<double>{1.0, std::nan(""), 4.0});
    BOOST_TEST(std::isnan(max(n, 0).value()()));
    BOOST_TEST(argmax(n, 0)() == 1);
}

BOOST_AUTO_TEST_CASE(topk_values_indices_and_order) {
    Tape<double> t;
    auto x = t.variable(xt::xarray<double>{{0.5, 2.0, -1.0, 2.0, 7.0}, {3.0, 1.0, 4.0, 1.0, 5.0}});
    TopK<double> top = topk(x, 3, 1);
    BOOST_TEST(top.indices == (xt::xarray<std::int64_t>{{4, 1, 3}, {4, 2, 0}}));
    BOOST_TEST(top.values.value() == (xt::xarray<double>{{7.0, 2.0, 2.0}, {5.0, 4.0, 3.0}}));
    t.backward(sum(top.values));
    BOOST_TEST(x.grad() == (xt::xarray<double>{{0, 1, 0, 1, 1}, {1, 0, 1, 0, 1}}));
    BOOST_TEST(topk(x, 0, 1).values.shape() == (Shape{2, 0}));
    BOOST_TEST(topk(x, 2, 0).indices == (xt::xarray<std::int64_t>{{1, 0, 1, 0, 0}, {0, 1, 0, 1, 1}}));
}

// Repeated indices add their gradients (scatter-add), for gather and index_select.
BOOST_AUTO_TEST_CASE(gather_and_index_select_scatter_add) {
    Tape<double> t;
    auto x = t.variable(xt::xarray<double>{{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}});
    Var<double> g = gather(x, 1, xt::xarray<std::int64_t>{{2, 2, 0}, {1, 1, 1}});
    BOOST_TEST(g.value() == (xt::xarray<double>{{3.0, 3.0, 1.0}, {5.0, 5.0, 5.0}}));
    Var<double> s = index_select(x, 0, xt::xarray<std::int64_t>{1, 1, 0});
    BOOST_TEST(s.value() == (xt::xarray<double>{{4.0, 5.0, 6.0}, {4.0, 5.0, 6.0}, {1.0, 2.0, 3.0}}));
    t.backward(sum(g) + sum(s) * 10.0);
    BOOST_TEST(x.grad() == (xt::xarray<double>{{11.0, 10.0, 12.0}, {20.0, 23.0, 20.0}}));
}

// torch.clamp: the gradient passes at the boundaries too; 0 strictly outside.
BOOST_AUTO_TEST_CASE(clamp_and_sqrt) {
    Tape<double> t;
    auto x = t.variable(xt::xarray<double>{-2.0, -1.0, 0.0, 1.0, 2.0});
    Var<double> y = clamp(x, -1.0, 1.0);
    BOOST_TEST(y.value() == (xt::xarray<double>{-1.0, -1.0, 0.0, 1.0, 1.0}));
    t.backward(sum(y));
    BOOST_TEST(x.grad() == (xt::xarray<double>{0.0, 1.0, 1.0, 1.0, 0.0}));
    Tape<double> t2;
    auto p = t2.variable(xt::xarray<double>{4.0, 0.25});
    Var<double> r = sqrt(p);
    BOOST_TEST(r.value() == (xt::xarray<double>{2.0, 0.5}));
    t2.backward(sum(r));
    BOOST_TEST(p.grad() == (xt::xarray<double>{0.25, 1.0}));
}

// Braced lists compile for concat and stack.
BOOST_AUTO_TEST_CASE(concat_and_stack_take_braced_lists) {
    Tape<double> t;
    auto a = t.variable(xt::xarray<double>{{1.0, 2.0}});
    auto b = t.variable(xt::xarray<double>{{3.0, 4.0}});
    BOOST_TEST(concat({a, b}, -1).value() == (xt::xarray<double>{{1.0, 2.0, 3.0, 4.0}}));
    BOOST_TEST(concat({a, b, a}).shape() == (Shape{3, 2}));
    BOOST_TEST(stack({a, b}).shape() == (Shape{2, 1, 2}));
    BOOST_TEST(stack({a, b}, -1).shape() == (Shape{1, 2, 2}));
}

BOOST_AUTO_TEST_CASE(primitive_errors_name_the_op_and_shapes) {
    Tape<double> t;
    auto x = t.variable(rnd({2, 3}, 7));
    auto a = t.variable(rnd({2, 3, 4}, 8));
    BOOST_CHECK_EXCEPTION(bmm(a, t.variable(rnd({3, 4, 5}, 9))), error,
                          (raises<shape_error>({"bmm", "(2, 3, 4)", "(3, 4, 5)"})));
    BOOST_CHECK_EXCEPTION(bmm(a, t.variable(rnd({2, 3, 5}, 9))), error, (raises<shape_error>({"bmm", "(2, 3, 5)"})));
    BOOST_CHECK_EXCEPTION(bmm(x, x), error, (raises<shape_error>({"bmm", "(2, 3)"})));
    BOOST_CHECK_EXCEPTION(masked_softmax(x, xt::xarray<double>{1, 0}), error,
                          (raises<shape_error>({"masked_softmax", "(2,)", "(2, 3)"})));
    BOOST_CHECK_EXCEPTION(masked_softmax(x, xt::xarray<double>{1, 0, 1}, 2), error,
                          (raises<index_error>({"masked_softmax", "axis 2", "(2, 3)"})));
    BOOST_CHECK_EXCEPTION(masked_softmax(x, std::vector<std::int64_t>{1, 4}), error,
                          (raises<index_error>({"masked_softmax", "length 4", "(2, 3)"})));
    BOOST_CHECK_EXCEPTION(masked_softmax(x, std::vector<std::int64_t>{1, 2, 3}), error,
                          (raises<shape_error>({"masked_softmax", "(3,)", "(2, 3)"})));
    BOOST_CHECK_EXCEPTION(masked_fill(x, xt::xarray<double>(xt::ones<double>({3, 1})), 0.0), error,
                          (raises<shape_error>({"masked_fill", "(3, 1)", "(2, 3)"})));
    BOOST_CHECK_EXCEPTION(max(x, 2), error, (raises<index_error>({"max", "axis 2", "(2, 3)"})));
    BOOST_CHECK_EXCEPTION(min(t.variable(rnd({2, 0}, 1)), 1), error, (raises<shape_error>({"min", "(2, 0)", "empty"})));
    BOOST_CHECK_EXCEPTION(argmax(x, -3), error, (raises<index_error>({"argmax", "axis -3"})));
    BOOST_CHECK_EXCEPTION(topk(x, 4, 1), error, (raises<index_error>({"topk", "k = 4", "(2, 3)"})));
    BOOST_CHECK_EXCEPTION(gather(x, 1, xt::xarray<std::int64_t>{{0, 3}}), error,
                          (raises<index_error>({"gather", "index 3", "(2, 3)"})));
    BOOST_CHECK_EXCEPTION(gather(x, 1, xt::xarray<std::int64_t>{0, 1}), error,
                          (raises<shape_error>({"gather", "(2,)", "(2, 3)"})));
    BOOST_CHECK_EXCEPTION(gather(x, 0, xt::xarray<std::int64_t>{{0, 1, 0, 1}}), error,
                          (raises<shape_error>({"gather", "(1, 4)", "(2, 3)"})));
    BOOST_CHECK_EXCEPTION(index_select(x, 0, xt::xarray<std::int64_t>{0, -1}), error,
                          (raises<index_error>({"index_select", "index -1", "(2, 3)"})));
    BOOST_CHECK_EXCEPTION(index_select(x, 0, xt::xarray<std::int64_t>::from_shape({1, 1})), error,
                          (raises<shape_error>({"index_select", "1-D", "(1, 1)"})));
    BOOST_CHECK_EXCEPTION(clamp(x, 1.0, -1.0), error, (raises<value_error>({"clamp"})));
}

// ---- Modules ----------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(dot_attention_matches_a_direct_computation) {
    nn::DotAttention<double> attend({.query_size = 3});
    BOOST_TEST(attend.parameters().empty());
    const xt::xarray<double> query = rnd({2, 3}, 31), memory = rnd({2, 4, 3}, 32);
    const std::vector<std::int64_t> lengths{4, 2};
    Tape<double> t;
    auto out = attend(t.constant(query), t.constant(memory), lengths);
    BOOST_TEST(out.context.shape() == (Shape{2, 3}));
    BOOST_TEST(out.weights.shape() == (Shape{2, 4}));
    for (std::size_t b = 0; b < 2; ++b) {
        std::vector<double> e(4, 0.0);
        double total = 0;
        for (std::size_t k = 0; k < static_cast<std::size_t>(lengths[b]); ++k) {
            double s = 0;
            for (std::size_t h = 0; h < 3; ++h) s += query(b, h) * memory(b, k, h);
            e[k] = std::exp(s);
            total += e[k];
        }
        for (std::size_t h = 0; h < 3; ++h) {
            double c = 0;
            for (std::size_t k = 0; k < 4; ++k) c += e[k] / total * memory(b, k, h);
            BOOST_TEST(std::abs(out.context.value()(b, h) - c) < 1e-14);
        }
        for (std::size_t k = 0; k < 4; ++k) BOOST_TEST(std::abs(out.weights.value()(b, k) - e[k] / total) < 1e-15);
    }
}

BOOST_AUTO_TEST_CASE(dot_attention_gradients_with_lengths) {
    const std::vector<std::int64_t> lengths{3, 5, 1};
    nn::DotAttention<double> dot({.query_size = 4});
    check_gradients(dot, rnd({3, 4}, 41), rnd({3, 5, 4}, 42), lengths);  // one query per row
    check_gradients(dot, rnd({3, 2, 4}, 43), rnd({3, 5, 4}, 44), lengths);  // Tq = 2
    check_padding(dot, rnd({3, 2, 4}, 43), rnd({3, 5, 4}, 44), lengths);
    nn::DotAttention<double> general(
        {.query_size = 4, .key_size = 3, .score = nn::LuongScore::general, .scaled = true});
    BOOST_TEST(general.named_parameters().size() == 1u);
    BOOST_TEST(general.named_parameters()[0].first == "weight");
    BOOST_TEST(general.weight()->shape() == (Shape{4, 3}));
    check_gradients(general, rnd({3, 4}, 45), rnd({3, 5, 3}, 46), lengths);
    check_gradients(general, rnd({3, 3, 4}, 47), rnd({3, 5, 3}, 48), lengths);
    check_gradients(general, rnd({3, 3, 4}, 49), rnd({3, 5, 3}, 50), {});  // no lengths: every step
    check_padding(general, rnd({3, 3, 4}, 47), rnd({3, 5, 3}, 48), lengths);
}

BOOST_AUTO_TEST_CASE(additive_attention_gradients_with_lengths) {
    const std::vector<std::int64_t> lengths{2, 4};
    nn::AdditiveAttention<double> attend({.query_size = 3, .key_size = 2, .attention_size = 5});
    std::vector<std::string> names;
    for (auto& [name, p] : attend.named_parameters()) names.push_back(name);
    BOOST_TEST(
        names == (std::vector<std::string>{"Wa.weight", "Wa.bias", "Ua.weight", "Ua.bias", "Va.weight", "Va.bias"}),
        boost::test_tools::per_element());
    check_gradients(attend, rnd({2, 3}, 51), rnd({2, 4, 2}, 52), lengths);
    check_gradients(attend, rnd({2, 3, 3}, 53), rnd({2, 4, 2}, 54), lengths);
    check_padding(attend, rnd({2, 3, 3}, 53), rnd({2, 4, 2}, 54), lengths);
    // A zero-length row: zero weights, zero context, no NaN.
    Tape<double> t;
    auto out = attend(t.constant(rnd({2, 3}, 55)), t.constant(rnd({2, 4, 2}, 56)), {0, 4});
    BOOST_TEST(all_finite(out.context.value()));
    BOOST_TEST(xt::sum(xt::abs(xt::view(out.context.value(), 0)))() == 0.0);
    BOOST_TEST(std::abs(xt::sum(xt::view(out.weights.value(), 1))() - 1.0) < 1e-14);
}

BOOST_AUTO_TEST_CASE(attention_float_runs) {
    nn::DotAttention<float> attend({.query_size = 8, .score = nn::LuongScore::general});
    nn::AdditiveAttention<float> additive({.query_size = 8});
    Tape<float> t;
    auto q = t.constant(xt::xarray<float>(xt::ones<float>({2, 3, 8})));
    auto m = t.constant(xt::xarray<float>(xt::ones<float>({2, 5, 8})));
    BOOST_TEST(attend(q, m, {5, 2}).context.shape() == (Shape{2, 3, 8}));
    BOOST_TEST(additive(q, m, {5, 2}).weights.shape() == (Shape{2, 3, 5}));
}

BOOST_AUTO_TEST_CASE(attention_errors_name_the_module_and_shapes) {
    nn::DotAttention<double> dot({.query_size = 4});
    nn::AdditiveAttention<double> additive({.query_size = 4, .key_size = 3});
    Tape<double> t;
    auto q = t.constant(rnd({2, 4}, 61));
    auto m = t.constant(rnd({2, 5, 4}, 62));
    BOOST_CHECK_EXCEPTION(dot(q, t.constant(rnd({2, 5}, 63))), error,
                          (raises<shape_error>({"DotAttention", "memory", "(2, 5)"})));
    BOOST_CHECK_EXCEPTION(dot(t.constant(rnd({2, 3}, 64)), m), error,
                          (raises<shape_error>({"DotAttention", "query", "(2, 3)", "(2, 5, 4)"})));
    BOOST_CHECK_EXCEPTION(dot(t.constant(rnd({3, 4}, 65)), m), error,
                          (raises<shape_error>({"DotAttention", "(3, 4)", "(2, 5, 4)"})));
    BOOST_CHECK_EXCEPTION(dot(q, m, {5}), error, (raises<shape_error>({"DotAttention", "1 lengths", "(2, 5, 4)"})));
    BOOST_CHECK_EXCEPTION(dot(q, m, {5, 6}), error, (raises<index_error>({"DotAttention", "length 6", "(2, 5, 4)"})));
    BOOST_CHECK_EXCEPTION(additive(q, m), error, (raises<shape_error>({"AdditiveAttention", "(2, 5, 4)"})));
    BOOST_CHECK_EXCEPTION(nn::DotAttention<double>({.query_size = 4, .key_size = 3}), error,
                          (raises<value_error>({"DotAttention", "general"})));
    BOOST_CHECK_EXCEPTION(nn::AdditiveAttention<double>({}), error, (raises<value_error>({"AdditiveAttention"})));
}

BOOST_AUTO_TEST_SUITE_END()
