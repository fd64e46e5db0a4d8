// Losses against PyTorch 1.13 (values for every reduction and gradients, pasted from
// tests/fixtures/make_loss_references.py), gradient checks in double, ignore_index, float
// targets, stability at +-1e4 logits in float, errors; and the metrics.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <xtensor/xoperation.hpp>

#include <recur/metrics.hpp>
#include <recur/nn/losses.hpp>
#include <recur/recur.hpp>

#include "support.hpp"

namespace recur_losses_tests {

using namespace recur;
using namespace recur::nn;
using Vars = std::vector<Var<double>>;
using Ids = xt::xarray<std::int64_t>;

using recur::testing::normal_array;

xt::xarray<double> random_uniform(const Shape& shape, std::uint64_t seed, double low, double high) {
    return recur::testing::uniform_array(shape, seed, low, high);
}

/// Every element of `got` within 1e-12 (relative, absolute below 1) of `want`.
void expect_values(const xt::xarray<double>& got, const std::vector<double>& want, const std::string& what) {
    BOOST_TEST_INFO(what);
    BOOST_TEST_REQUIRE(got.size() == want.size());
    for (std::size_t k = 0; k < want.size(); ++k) {
        const double tol = 1e-12 * std::max(1.0, std::abs(want[k]));
        BOOST_TEST(std::abs(got.data()[k] - want[k]) <= tol,
                   what << " flat " << k << ": " << got.data()[k] << " vs torch " << want[k]);
    }
}

using recur::testing::raises;

using LossFn = std::function<Var<double>(const Vars&, Reduction)>;

/// One loss on fixed inputs, with torch 1.13's results.
struct Reference {
    std::string name;
    LossFn f;
    std::vector<xt::xarray<double>> inputs;
    std::vector<double> mean, sum, none;
    std::vector<std::pair<std::size_t, std::vector<double>>> grads;  // d(mean loss)/d(input k)
};

// The inputs of make_loss_references.py.
const xt::xarray<double> X23 = {{0.3, -1.2, 2.5}, {0.0, 0.7, -0.4}};
const xt::xarray<double> Y23 = {{0.1, -1.0, 1.5}, {0.5, 0.7, 0.4}};
const xt::xarray<double> P23 = {{0.2, 0.9, 0.5}, {0.01, 0.7, 0.999}};
const xt::xarray<double> T23 = {{0.0, 1.0, 1.0}, {0.0, 0.3, 1.0}};
const xt::xarray<double> P_CLAMP = {0.0, 1.0, 0.0, 1.0, 1e-50, 0.5};
const xt::xarray<double> T_CLAMP = {0.0, 1.0, 1.0, 0.0, 1.0, 1.0};
const xt::xarray<double> L23 = {{0.0, 3.0, -2.0}, {30.0, -30.0, 0.5}};
const xt::xarray<double> Z45 = {
    {0.5, -1.0, 2.0, 0.1, -0.3}, {1.5, 0.2, -0.7, 0.0, 0.9}, {-2.0, 1.0, 0.3, 0.4, 2.2}, {0.0, 0.0, 0.0, 0.0, 0.0}};
const Ids C4 = {1, 0, 4, -100};
const Ids C4_IGNORE2 = {1, 2, 4, 2};
const xt::xarray<double> Z234 = {{{0.1, 0.2, -0.3, 1.0}, {2.0, -1.0, 0.0, 0.5}, {0.3, 0.3, 0.3, -0.9}},
                                 {{-0.5, 1.5, 0.7, 0.2}, {1.1, -0.1, 0.4, 0.0}, {0.0, 2.5, -2.5, 0.6}}};
const Ids C23 = {{3, 0, -100}, {1, 1, 2}};
const xt::xarray<double> LP34 = {{-1.2, -0.3, -2.0, -0.9}, {-0.1, -3.0, -1.5, -0.7}, {-0.4, -0.6, -0.8, -1.0}};
const Ids C3 = {3, 0, -100};

std::vector<Reference> references() {
    // Pasted from: /usr/bin/python3 tests/fixtures/make_loss_references.py (torch 1.13, float64).
    return {
        {"mse_loss",
         [](const Vars& x, Reduction r) { return mse_loss(x[0], x[1], r); },
         {X23, Y23},
         {0.32833333333333337},
         {1.9700000000000002},
         {0.039999999999999994, 0.03999999999999998, 1.0, 0.25, 0.0, 0.6400000000000001},
         {{0,
           {0.06666666666666665, -0.06666666666666665, 0.3333333333333333, -0.16666666666666666, 0.0,
            -0.26666666666666666}},
          {1,
           {-0.06666666666666665, 0.06666666666666665, -0.3333333333333333, 0.16666666666666666, 0.0,
            0.26666666666666666}}}},
        {"l1_loss",
         [](const Vars& x, Reduction r) { return l1_loss(x[0], x[1], r); },
         {X23, Y23},
         {0.45},
         {2.7},
         {0.19999999999999998, 0.19999999999999996, 1.0, 0.5, 0.0, 0.8},
         {{0,
           {0.16666666666666666, -0.16666666666666666, 0.16666666666666666, -0.16666666666666666, 0.0,
            -0.16666666666666666}},
          {1,
           {-0.16666666666666666, 0.16666666666666666, -0.16666666666666666, 0.16666666666666666, -0.0,
            0.16666666666666666}}}},
        {"binary_cross_entropy",
         [](const Vars& x, Reduction r) { return binary_cross_entropy(x[0], x[1], r); },
         {P23, T23},
         {0.3304142549881402},
         {1.982485529928841},
         {0.2231435513142097, 0.10536051565782628, 0.6931471805599453, 0.01005033585350145, 0.9497834462097748,
          0.0010005003335835344},
         {{0,
           {0.2083333333333333, -0.1851851851851852, -0.3333333333333333, 0.16835016835016833, 0.3174603174603174,
            -0.1668335001668335}},
          {1,
           {0.23104906018664842, -0.3662040962227033, 0.0, 0.7658533083557649, -0.14121631006453392,
            -1.1511257964414254}}}},
        // log clamped at -100; torch's gradient there is +-1e12 (it divides by max(p(1-p), 1e-12)),
        // ours is 0 (documented), so only values are compared.
        {"binary_cross_entropy clamp",
         [](const Vars& x, Reduction r) { return binary_cross_entropy(x[0], x[1], r); },
         {P_CLAMP, T_CLAMP},
         {50.115524530093325},
         {300.69314718055995},
         {0.0, -0.0, 100.0, 100.0, 100.0, 0.6931471805599453},
         {}},
        {"binary_cross_entropy_with_logits",
         [](const Vars& x, Reduction r) { return binary_cross_entropy_with_logits(x[0], x[1], r); },
         {L23, T23},
         {7.057123254559492},
         {42.342739527356954},
         {0.6931471805599453, 0.048587351573741965, 2.1269280110429727, 30.000000000000092, 9.000000000000094,
          0.4740769841801067},
         {{0,
           {0.08333333333333333, -0.007904312196261106, -0.14679951299631375, 0.1666666666666511, -0.0499999999999844,
            -0.0629234447996909}},
          {1, {-0.0, -0.5, 0.3333333333333333, -5.0, 5.0, -0.08333333333333333}}}},
        {"cross_entropy (4, 5)",
         [](const Vars& x, Reduction r) { return cross_entropy(x[0], C4, r); },
         {Z45},
         {1.5592206711878305},
         {4.677662013563491},
         {3.420514424576177, 0.7679191364885162, 0.4892284524987986, 0.0},
         {{0,
           {0.04884385443371991,
            -0.3224347962712708,
            0.21890296856878594,
            0.0327410147525692,
            0.02194695851619573,
            -0.17867415385741953,
            0.04214954349173994,
            0.017136725555658292,
            0.034509127484885396,
            0.08487875732513592,
            0.003064592285348983,
            0.06155398150189305,
            0.03056680260368837,
            0.03378154129615536,
            -0.12896691768708574,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0}}}},
        {"cross_entropy (4, 5) ignore_index=2",
         [](const Vars& x, Reduction r) { return cross_entropy(x[0], C4_IGNORE2, r, 2); },
         {Z45},
         {1.954871438537488},
         {3.909742877074976},
         {3.420514424576177, 0.0, 0.4892284524987986, 0.0},
         {{0,
           {0.07326578165057987,
            -0.4836521944069062,
            0.32835445285317894,
            0.0491115221288538,
            0.0329204377742936,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.004596888428023475,
            0.09233097225283958,
            0.04585020390553256,
            0.050672311944233044,
            -0.19345037653062863,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0}}}},
        // torch: F.cross_entropy(z.permute(0, 2, 1), targets): recur's class axis is last.
        {"cross_entropy (2, 3, 4) class last",
         [](const Vars& x, Reduction r) { return cross_entropy(x[0], C23, r); },
         {Z234},
         {1.7774086066860062},
         {8.88704303343003},
         {0.7553848146038679, 0.342349582389822, 0.0, 0.6190678451281062, 1.9564273788107778, 5.213813412497457},
         {{0,
           {0.03820370696772099,
            0.04222162590340922,
            0.025608710613334803,
            -0.10603404348446503,
            -0.057980015422765145,
            0.007070758681749775,
            0.019220314838019444,
            0.03168894190299595,
            0.0,
            0.0,
            0.0,
            0.0,
            0.01457415160204089,
            -0.09231077621819986,
            0.048387887368463924,
            0.029348737247695024,
            0.09386804202254564,
            -0.17172748905927793,
            0.046613490164070626,
            0.031245956872661636,
            0.013256711520662157,
            0.1614998080392549,
            -0.19891182285306905,
            0.024155303293151974}}}},
        {"nll_loss (3, 4)",
         [](const Vars& x, Reduction r) { return nll_loss(x[0], C3, r); },
         {LP34},
         {0.5},
         {1.0},
         {0.9, 0.1, 0.0},
         {{0, {0.0, 0.0, 0.0, -0.5, -0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}}}},
    };
}

}  // namespace recur_losses_tests

using namespace recur_losses_tests;

BOOST_AUTO_TEST_SUITE(losses)

// ---- Against PyTorch --------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(values_and_gradients_match_pytorch) {
    for (const Reference& ref : references()) {
        const std::pair<Reduction, const std::vector<double>*> reductions[] = {
            {Reduction::mean, &ref.mean}, {Reduction::sum, &ref.sum}, {Reduction::none, &ref.none}};
        for (auto [reduction, want] : reductions) {
            Tape<double> tape;
            Vars xs;
            for (const auto& x : ref.inputs) xs.push_back(tape.constant(x));
            const Var<double> loss = ref.f(xs, reduction);
            const std::string what = ref.name + (reduction == Reduction::mean  ? " mean"
                                                 : reduction == Reduction::sum ? " sum"
                                                                               : " none");
            if (reduction != Reduction::none) BOOST_TEST(loss.dim() == 0u, what);
            expect_values(loss.value(), *want, what);
        }
        if (ref.grads.empty()) continue;
        Tape<double> tape;
        Vars xs;
        for (const auto& x : ref.inputs) xs.push_back(tape.variable(x));
        tape.backward(ref.f(xs, Reduction::mean));
        for (const auto& [k, want] : ref.grads)
            expect_values(xs[k].grad(), want, ref.name + " d(mean)/d(input " + std::to_string(k) + ")");
    }
}

BOOST_AUTO_TEST_CASE(none_reduction_shapes) {
    Tape<double> tape;
    BOOST_TEST((mse_loss(tape.constant(X23), tape.constant(Y23), Reduction::none).shape() == Shape{2, 3}));
    BOOST_TEST((cross_entropy(tape.constant(Z234), C23, Reduction::none).shape() == Shape{2, 3}));
    BOOST_TEST((cross_entropy(tape.constant(Z45), C4, Reduction::none).shape() == Shape{4}));
    // Unbatched: logits (C,), target () — row 0 of Z45 with class 1.
    Ids scalar_target = Ids::from_shape(Shape{});
    scalar_target() = 1;
    const Var<double> one =
        cross_entropy(tape.constant(xt::xarray<double>{0.5, -1.0, 2.0, 0.1, -0.3}), scalar_target, Reduction::none);
    BOOST_TEST(one.dim() == 0u);
    BOOST_TEST(one.item() == 3.420514424576177, boost::test_tools::tolerance(1e-14));
}

// ---- Gradient checks (double) -------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(gradchecks_of_every_loss_and_reduction) {
    const auto x = normal_array({3, 4}, 1), y = normal_array({3, 4}, 2);
    const auto p = random_uniform({3, 4}, 3, 0.05, 0.95), soft = random_uniform({3, 4}, 4, 0.0, 1.0);
    const auto logits = normal_array({3, 4}, 5, 2.0);
    const auto logits3 = normal_array({2, 3, 5}, 6);
    const Ids targets = {2, -100, 0};
    const Ids targets3 = {{4, 0, 1}, {3, -100, 3}};
    xt::xarray<double> log_probs = normal_array({3, 4}, 7);
    for (auto& v : log_probs) v = -std::abs(v);
    const xt::xarray<double> float_targets3 = {{4, 0, 1}, {3, 7, 3}};  // 7 ignored below

    const std::vector<std::pair<std::string, std::pair<std::vector<xt::xarray<double>>, LossFn>>> cases = {
        {"mse_loss", {{x, y}, [](const Vars& v, Reduction r) { return mse_loss(v[0], v[1], r); }}},
        {"l1_loss", {{x, y}, [](const Vars& v, Reduction r) { return l1_loss(v[0], v[1], r); }}},
        {"binary_cross_entropy",
         {{p, soft}, [](const Vars& v, Reduction r) { return binary_cross_entropy(v[0], v[1], r); }}},
        {"binary_cross_entropy_with_logits",
         {{logits, soft}, [](const Vars& v, Reduction r) { return binary_cross_entropy_with_logits(v[0], v[1], r); }}},
        {"cross_entropy (N, C)",
         {{logits}, [&](const Vars& v, Reduction r) { return cross_entropy(v[0], targets, r); }}},
        {"cross_entropy (B, T, C)",
         {{logits3}, [&](const Vars& v, Reduction r) { return cross_entropy(v[0], targets3, r); }}},
        {"cross_entropy float targets",
         {{logits3},
          [&](const Vars& v, Reduction r) { return cross_entropy(v[0], v[0].tape().constant(float_targets3), r, 7); }}},
        {"nll_loss", {{log_probs}, [&](const Vars& v, Reduction r) { return nll_loss(v[0], targets, r); }}},
        {"nll_loss(log_softmax)",
         {{logits}, [&](const Vars& v, Reduction r) { return nll_loss(log_softmax(v[0], -1), targets, r); }}},
    };
    for (const auto& [name, c] : cases)
        for (Reduction r : {Reduction::mean, Reduction::sum, Reduction::none}) {
            const LossFn& f = c.second;
            const GradcheckReport rep = gradcheck([&](Tape<double>&, const Vars& v) { return f(v, r); }, c.first);
            BOOST_TEST(rep.passed, name << " reduction " << static_cast<int>(r) << ": " << rep.summary());
        }
}

BOOST_AUTO_TEST_CASE(bce_with_logits_gradient_at_zero_is_sigmoid_minus_target) {
    // Writing -|x| with abs (gradient 0 at 0) would give -y here instead of 1/2 - y.
    Tape<double> tape;
    Var<double> x = tape.variable(xt::xarray<double>{0.0, 0.0, 0.0});
    Var<double> y = tape.constant(xt::xarray<double>{0.0, 0.25, 1.0});
    tape.backward(binary_cross_entropy_with_logits(x, y, Reduction::sum));
    BOOST_TEST(x.grad()(0) == 0.5);
    BOOST_TEST(x.grad()(1) == 0.25);
    BOOST_TEST(x.grad()(2) == -0.5);
}

// ---- ignore_index -----------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(ignore_index_handling) {
    // All ignored: mean is NaN (0 / 0) with zero gradient, sum is 0, none is zeros — as torch.
    const Ids all_ignored = {-100, -100, -100, -100};
    for (Reduction r : {Reduction::mean, Reduction::sum, Reduction::none}) {
        Tape<double> tape;
        Var<double> z = tape.variable(Z45);
        Var<double> loss = cross_entropy(z, all_ignored, r);
        if (r == Reduction::mean) BOOST_TEST(std::isnan(loss.item()));
        if (r == Reduction::sum) BOOST_TEST(loss.item() == 0.0);
        if (r == Reduction::none) BOOST_TEST((loss.value() == xt::zeros<double>({4})));
        tape.backward(r == Reduction::none ? sum(loss) : loss);
        BOOST_TEST((z.grad() == xt::zeros<double>({4, 5})));
    }
    // An ignored row gets exactly zero gradient even when its log-probabilities are -inf.
    Tape<double> tape;
    const double inf = std::numeric_limits<double>::infinity();
    Var<double> lp = tape.variable(xt::xarray<double>{{-0.5, -1.0}, {-inf, -inf}});
    Var<double> loss = nll_loss(lp, Ids{1, -100}, Reduction::none);
    BOOST_TEST(loss.value()(0) == 1.0);
    BOOST_TEST(loss.value()(1) == 0.0);
    tape.backward(sum(loss));
    BOOST_TEST(lp.grad()(0, 1) == -1.0);
    BOOST_TEST(lp.grad()(1, 0) == 0.0);
    BOOST_TEST(lp.grad()(1, 1) == 0.0);
    // ignore_index may be a real class; targets equal to it do not count.
    Tape<double> t2;
    const double with_ignore = cross_entropy(t2.constant(Z45), Ids{1, 2, 4, 2}, Reduction::mean, 2).item();
    const xt::xarray<double> rows_0_and_2 = {{0.5, -1.0, 2.0, 0.1, -0.3}, {-2.0, 1.0, 0.3, 0.4, 2.2}};
    const double only_kept = cross_entropy(t2.constant(rows_0_and_2), Ids{1, 4}, Reduction::mean, -100).item();
    BOOST_TEST(with_ignore == only_kept, boost::test_tools::tolerance(1e-14));
}

BOOST_AUTO_TEST_CASE(float_targets_equal_integer_targets) {
    Tape<double> tape;
    Var<double> z = tape.constant(Z234);
    const xt::xarray<double> float_targets = {{3, 0, -100}, {1, 1, 2}};
    for (Reduction r : {Reduction::mean, Reduction::sum, Reduction::none}) {
        BOOST_TEST((cross_entropy(z, tape.constant(float_targets), r).value() == cross_entropy(z, C23, r).value()));
        Var<double> lp = log_softmax(z, -1);
        BOOST_TEST((nll_loss(lp, tape.constant(float_targets), r).value() == nll_loss(lp, C23, r).value()));
    }
}

// ---- Stability (float) ------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(stable_at_huge_logits_in_float) {
    // torch 1.13 (float32): cross_entropy 10000.0, grad (0.5, -0.5, 0, 0, 0, 0);
    // bce_with_logits sum 20000.0, grad (1, -1, 0, 0).
    {
        Tape<float> tape;
        Var<float> x = tape.variable(xt::xarray<float>{{1e4f, -1e4f, 0.0f}, {-1e4f, 1e4f, 0.0f}});
        Var<float> loss = cross_entropy(x, Ids{1, 1});
        BOOST_TEST(loss.item() == 1e4f);
        tape.backward(loss);
        const xt::xarray<float> want = {{0.5f, -0.5f, 0.0f}, {0.0f, 0.0f, 0.0f}};
        BOOST_TEST((x.grad() == want));
        Var<float> lp = log_softmax(x, -1);
        Var<float> nll = nll_loss(lp, tape.constant(xt::xarray<float>{0, 2}), Reduction::none);
        BOOST_TEST(std::isfinite(nll.value()(0)));
        BOOST_TEST(std::isfinite(nll.value()(1)));
    }
    {
        Tape<float> tape;
        Var<float> x = tape.variable(xt::xarray<float>{1e4f, -1e4f, 1e4f, -1e4f});
        Var<float> y = tape.variable(xt::xarray<float>{0.0f, 1.0f, 1.0f, 0.0f});
        for (Reduction r : {Reduction::mean, Reduction::sum}) {
            Var<float> loss = binary_cross_entropy_with_logits(x, y, r);
            BOOST_TEST(loss.item() == (r == Reduction::sum ? 2e4f : 5e3f));
            tape.backward(loss);
            for (float g : x.grad()) BOOST_TEST(std::isfinite(g));
            for (float g : y.grad()) BOOST_TEST(std::isfinite(g));
        }
        tape.backward(binary_cross_entropy_with_logits(x, y, Reduction::sum));
        const xt::xarray<float> want = {1.0f, -1.0f, 0.0f, 0.0f};
        BOOST_TEST((x.grad() == want));
    }
    {
        // Probabilities that saturated to exactly 0 and 1: the clamped log keeps it finite.
        Tape<float> tape;
        Var<float> logits = tape.variable(xt::xarray<float>{1e4f, -1e4f, 1e4f, -1e4f});
        Var<float> loss = binary_cross_entropy(sigmoid(logits), tape.constant(xt::xarray<float>{1, 0, 0, 1}));
        BOOST_TEST(loss.item() == 50.0f);  // (0 + 0 + 100 + 100) / 4
        tape.backward(loss);
        for (float g : logits.grad()) BOOST_TEST(std::isfinite(g));
    }
}

// ---- Errors -----------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(shape_and_index_errors) {
    Tape<double> tape;
    Var<double> a = tape.constant(xt::zeros<double>({2, 3})), b = tape.constant(xt::zeros<double>({3, 2}));
    xt::xarray<double> halves = xt::xarray<double>::from_shape({2, 3});
    halves.fill(0.5);
    Var<double> half = tape.constant(halves);
    BOOST_CHECK_EXCEPTION(mse_loss(a, b), shape_error, raises<shape_error>("mse_loss", "(2, 3)", "(3, 2)"));
    BOOST_CHECK_EXCEPTION(l1_loss(a, b), shape_error, raises<shape_error>("l1_loss", "(2, 3)", "(3, 2)"));
    BOOST_CHECK_EXCEPTION(binary_cross_entropy(half, b), shape_error,
                          raises<shape_error>("binary_cross_entropy", "(2, 3)", "(3, 2)"));
    BOOST_CHECK_EXCEPTION(binary_cross_entropy_with_logits(a, b), shape_error,
                          raises<shape_error>("binary_cross_entropy_with_logits", "(2, 3)", "(3, 2)"));
    BOOST_CHECK_EXCEPTION(
        binary_cross_entropy(tape.constant(xt::xarray<double>{0.5, 1.5}), tape.constant(xt::xarray<double>{0, 1})),
        value_error, raises<value_error>("binary_cross_entropy", "1.5", "[0, 1]"));

    Var<double> z = tape.constant(Z45);
    BOOST_CHECK_EXCEPTION(cross_entropy(z, Ids{1, 2, 3}), shape_error,
                          raises<shape_error>("cross_entropy", "(3,)", "(4, 5)", "(4,)"));
    BOOST_CHECK_EXCEPTION(cross_entropy(z, Ids{{1, 2, 3, 4}}), shape_error,
                          raises<shape_error>("cross_entropy", "(1, 4)"));
    BOOST_CHECK_EXCEPTION(cross_entropy(z, Ids{1, 5, 0, 0}), index_error,
                          raises<index_error>("cross_entropy", "target 5", "[0, 5)"));
    BOOST_CHECK_EXCEPTION(cross_entropy(z, Ids{1, -1, 0, 0}), index_error, raises<index_error>("cross_entropy", "-1"));
    BOOST_CHECK_EXCEPTION(cross_entropy(z, tape.constant(xt::xarray<double>{1, 0.5, 0, 0})), index_error,
                          raises<index_error>("cross_entropy", "0.5", "(4,)"));
    BOOST_CHECK_EXCEPTION(nll_loss(z, Ids{1, 9, 0, 0}), index_error, raises<index_error>("nll_loss", "9"));
    BOOST_CHECK_EXCEPTION(nll_loss(z, tape.constant(xt::xarray<double>{1, std::nan(""), 0, 0})), index_error,
                          raises<index_error>("nll_loss", "nan"));
    BOOST_CHECK_EXCEPTION(nll_loss(z, Ids{1, 2}), shape_error, raises<shape_error>("nll_loss", "(2,)", "(4, 5)"));

    Tape<double> other;
    BOOST_CHECK_EXCEPTION(mse_loss(a, other.constant(xt::zeros<double>({2, 3}))), tape_error,
                          raises<tape_error>("mse_loss"));
}

// ---- Metrics ----------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(metrics_values) {
    BOOST_TEST(metrics::mae(X23, Y23) == 0.45, boost::test_tools::tolerance(1e-14));
    BOOST_TEST(metrics::mse(X23, Y23) == 0.32833333333333337, boost::test_tools::tolerance(1e-14));
    const xt::xarray<float> xf = xt::cast<float>(X23), yf = xt::cast<float>(Y23);
    BOOST_TEST(metrics::mae(xf, yf) == 0.45, boost::test_tools::tolerance(1e-6));

    const xt::xarray<double> prob = {0.9, 0.2, 0.5, 0.7, 0.51};
    const xt::xarray<double> label = {1, 0, 1, 0, 1};
    BOOST_TEST(metrics::binary_accuracy(prob, label) == 0.6);  // 0.5 is not above 0.5
    BOOST_TEST(metrics::binary_accuracy(prob, label, 0.95) == 0.4);
    const xt::xarray<double> logit = {2.0, -1.0, 0.0, 0.3, 0.01};
    BOOST_TEST(metrics::binary_accuracy(logit, label, 0.0) == 0.6);

    // Z45 argmax per row: 2, 0, 4, 0 (a tie goes to the lowest class).
    BOOST_TEST(metrics::categorical_accuracy(Z45, Ids{2, 0, 1, 0}) == 0.75);
    BOOST_TEST(metrics::categorical_accuracy(Z45, Ids{2, -100, 1, -100}) == 0.5);
    BOOST_TEST(metrics::categorical_accuracy(Z45, Ids{3, 3, 4, 3}, 3) == 1.0);
    BOOST_TEST(metrics::categorical_accuracy(Z45, xt::xarray<double>{2, 0, 4, 1}) == 0.75);
    // (B, T, C): Z234 argmax per step: 3, 0, 0 / 1, 0, 1.
    BOOST_TEST(metrics::categorical_accuracy(Z234, Ids{{3, 1, -100}, {1, 0, 2}}) == 0.6);
    BOOST_TEST(std::isnan(metrics::categorical_accuracy(Z45, Ids{-100, -100, -100, -100})));
}

BOOST_AUTO_TEST_CASE(metrics_errors) {
    BOOST_CHECK_EXCEPTION(metrics::mae(X23, xt::xarray<double>(xt::zeros<double>({3, 2}))), shape_error,
                          raises<shape_error>("mae", "(2, 3)", "(3, 2)"));
    BOOST_CHECK_EXCEPTION(metrics::mse(X23, xt::xarray<double>(xt::zeros<double>({6}))), shape_error,
                          raises<shape_error>("mse", "(6,)"));
    BOOST_CHECK_EXCEPTION(metrics::binary_accuracy(X23, xt::xarray<double>(xt::zeros<double>({2}))), shape_error,
                          raises<shape_error>("binary_accuracy"));
    BOOST_CHECK_EXCEPTION(metrics::categorical_accuracy(Z45, Ids{1, 2}), shape_error,
                          raises<shape_error>("categorical_accuracy", "(2,)", "(4, 5)"));
    BOOST_CHECK_EXCEPTION(metrics::categorical_accuracy(Z45, Ids{1, 2, 5, 0}), index_error,
                          raises<index_error>("categorical_accuracy", "5"));
    BOOST_CHECK_EXCEPTION(metrics::categorical_accuracy(Z45, xt::xarray<double>{1, 2, 0.5, 0}), index_error,
                          raises<index_error>("categorical_accuracy", "0.5"));
}

BOOST_AUTO_TEST_SUITE_END()
