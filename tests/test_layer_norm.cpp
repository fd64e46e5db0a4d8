// layer_norm (the primitive) and nn::LayerNorm against torch.nn.functional.layer_norm, and the
// layer-normalised LSTM and GRU cells.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xview.hpp>

#include "recur/gradcheck.hpp"
#include "recur/nn/layers.hpp"
#include "recur/nn/recurrent.hpp"
#include "recur/ops.hpp"
#include "support.hpp"

#include <random>

namespace {

using namespace recur;
using recur::testing::raises;

// The inputs of tests/fixtures: x (2, 3, 5), weight, bias (5,), upstream gradient u (2, 3, 5), by
// formula (the same in the Python that computed the expected values with PyTorch 1.13):
//   x[k] = 2 sin(0.7 k + 0.3) + 0.1 k,  w[j] = 0.5 + 0.25 j,  b[j] = 0.1 j - 0.2,  u[k] = cos(0.37 k).
template <class T>
xt::xarray<T> fixture_x() {
    xt::xarray<T> x = xt::xarray<T>::from_shape({2, 3, 5});
    for (std::size_t k = 0; k < x.size(); ++k) x.data()[k] = T(2 * std::sin(0.7 * double(k) + 0.3) + 0.1 * double(k));
    return x;
}
xt::xarray<double> fixture_w() { return {0.5, 0.75, 1.0, 1.25, 1.5}; }
xt::xarray<double> fixture_b() { return {-0.2, -0.1, 0.0, 0.1, 0.2}; }
xt::xarray<double> fixture_u() {
    xt::xarray<double> u = xt::xarray<double>::from_shape({2, 3, 5});
    for (std::size_t k = 0; k < u.size(); ++k) u.data()[k] = std::cos(0.37 * double(k));
    return u;
}

// torch.nn.functional.layer_norm(x, (5,), w, b, 1e-5) and the gradients of sum(y * u) (made by the
// script in the comment above, PyTorch 1.13, float64).
const std::vector<double> torch_affine_y{
    -0.75096502081387517, 0.39179657415028202,  1.2461675294159757,    0.6763120035562471,   -1.6915237842503994,
    -0.39842491845378469, -0.85635625141240124, -0.72932412726883533,  0.54359544590214892,  2.86965891400683,
    0.14437476400818139,  0.6803590044915262,   0.52590511939620699,   -0.61147263410488739, -2.3289328191760412,
    -0.76461985575577263, -0.79649214124953249, -0.19690548940101957,  1.040244163191135,    2.4539090880385497,
    0.4540576503817359,   0.56249074137000465,  0.0050309756734964141, -0.99851547169310972, -1.7764823313637303,
    -0.94775784846337019, -0.66794550554637411, 0.18790094059528756,   1.2570649029377918,   1.9088352620645765};
const std::vector<double> torch_affine_dx{
    0.25837100829243032,   0.079126512176891595,   -0.021946278518364754, -0.079971332446148846, -0.23557990950480881,
    0.52170885270793999,   -0.012246357975436273,  -0.29393372232554238,  -0.25538116833876201,  0.039852395931800566,
    -0.060003674213575775, 0.05465454913161194,    0.020318397359027851,  -0.046096472818484169, 0.031127200541420708,
    -0.13600767940655295,  0.043938811104696995,   0.1177156709344549,    0.068045318887179351,  -0.09369212151977846,
    -0.058143796657286861, -0.0039125485995226139, 0.092081936796092112,  0.090007701393703954,  -0.12003329293298703,
    0.095779427983739729,  -0.060479626436038103,  -0.13023942658193177,  -0.064406751058205092, 0.15934637609243529};
const std::vector<double> torch_affine_dw{-0.36936589829376326, 0.5465604791073243, 1.042931455166197,
                                          0.48646464175607418, -0.69196175091776868};
const std::vector<double> torch_affine_db{0.073138316538555626, -0.23368654784557508, -0.50888303425196346,
                                          -0.71520458925057862, -0.82472655827052821};
const std::vector<double> torch_plain_y{
    -1.1019300416277504,  0.6557287655337094,   1.2461675294159757,    0.46104960284499763,  -1.2610158561669329,
    -0.39684983690756942, -1.0084750018832016,  -0.72932412726883533,  0.35487635672171913,  1.7797726093378867,
    0.6887495280163628,   1.0404786726553683,   0.52590511939620699,   -0.56917810728390994, -1.6859552127840274,
    -1.1292397115115451,  -0.92865618833271002, -0.19690548940101957,  0.75219533055290799,  1.5026060586923664,
    1.3081153007634718,   0.88332098849333962,  0.0050309756734964141, -0.87881237735448781, -1.3176548875758203,
    -1.4955156969267405,  -0.75726067406183217, 0.18790094059528756,   0.92565192235023341,  1.1392235080430511};
const std::vector<double> torch_plain_dx{
    0.69818513351527034,   0.3286438384116539,    -0.047847671748391774, -0.3606239718934926,   -0.61835732828504064,
    0.39124242645537011,   -0.017166408790279197, -0.21563636830753385,  -0.18433865405143712,  0.025899004693880179,
    -0.29448405249847664,  0.079030848352853011,  0.17894140521657098,   0.078824536142083734,  -0.042312737213030305,
    -0.095641365077769325, 0.030663738843027755,  0.082347084786787095,  0.049589087907016771,  -0.066958546459062518,
    0.058838378145649406,  -0.058648799445270683, -0.029266879838685034, 0.030327126882164546,  -0.001249825743858346,
    0.070615539010329909,  -0.041566446207386254, -0.10058871881541886,  -0.054006738578262659, 0.12554636459073865};

bool close_to(const xt::xarray<double>& a, const std::vector<double>& b, double tol) {
    if (a.size() != b.size()) return false;
    for (std::size_t k = 0; k < b.size(); ++k)
        if (std::abs(a.data()[k] - b[k]) > tol * (1 + std::abs(b[k]))) {
            BOOST_TEST_MESSAGE("element " << k << ": " << a.data()[k] << " vs " << b[k]);
            return false;
        }
    return true;
}

// Every parameter of m set to N(0, scale) values, gains around 1 (so the checks see general values).
template <class M>
void randomise(M& m, std::uint64_t seed, double scale = 0.5) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> n(0.0, scale);
    for (auto& [name, p] : m.named_parameters()) {
        xt::xarray<double> v = p->value();
        const bool gain = name.find("ln_weight") == 0;
        for (auto& e : v) e = (gain ? 1.0 : 0.0) + n(rng);
        p->assign(v);
    }
}

using recur::testing::normal_array;

bool all_close(const xt::xarray<double>& a, const xt::xarray<double>& b, double tol) {
    return a.shape() == b.shape() && xt::allclose(a, b, tol, tol);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(layer_norm)

BOOST_AUTO_TEST_CASE(equals_torch_layer_norm_with_affine) {
    Tape<double> t;
    auto x = t.variable(fixture_x<double>());
    auto w = t.variable(fixture_w());
    auto b = t.variable(fixture_b());
    auto y = recur::layer_norm(x, 5, w, b);
    t.backward(sum(y * t.constant(fixture_u())));
    BOOST_TEST(close_to(y.value(), torch_affine_y, 1e-12));
    BOOST_TEST(close_to(x.grad(), torch_affine_dx, 1e-12));
    BOOST_TEST(close_to(w.grad(), torch_affine_dw, 1e-12));
    BOOST_TEST(close_to(b.grad(), torch_affine_db, 1e-12));
}

BOOST_AUTO_TEST_CASE(equals_torch_layer_norm_without_affine) {
    Tape<double> t;
    auto x = t.variable(fixture_x<double>());
    auto y = recur::layer_norm(x, 5);
    t.backward(sum(y * t.constant(fixture_u())));
    BOOST_TEST(close_to(y.value(), torch_plain_y, 1e-12));
    BOOST_TEST(close_to(x.grad(), torch_plain_dx, 1e-12));
}

BOOST_AUTO_TEST_CASE(float_matches_and_large_offsets_stay_normalised) {
    Tape<float> t;
    auto y = recur::layer_norm(t.variable(fixture_x<float>()), 5);
    BOOST_TEST(close_to(xt::xarray<double>(xt::cast<double>(y.value())), torch_plain_y, 2e-6));
    // Rows around 1e4 with a spread of ~2: the two-pass variance keeps the result (a one-pass
    // E[x²] - E[x]² in float would lose every digit here).
    xt::xarray<float> big = fixture_x<float>() + 1e4f;
    auto z = recur::layer_norm(t.variable(big), 5);
    BOOST_TEST(close_to(xt::xarray<double>(xt::cast<double>(z.value())), torch_plain_y, 2e-3));
}

BOOST_AUTO_TEST_CASE(not_recorded_gives_the_same_values) {
    Tape<double> t({.record = false});
    auto y = recur::layer_norm(t.constant(fixture_x<double>()), 5, t.constant(fixture_w()), t.constant(fixture_b()));
    BOOST_TEST(close_to(y.value(), torch_affine_y, 1e-12));
}

BOOST_AUTO_TEST_CASE(layer_module_has_pytorch_parameters) {
    nn::LayerNorm<double> ln(5);
    auto named = ln.named_parameters();
    BOOST_TEST_REQUIRE(named.size() == 2u);
    BOOST_TEST(named[0].first == "weight");
    BOOST_TEST(named[1].first == "bias");
    BOOST_TEST(xt::all(xt::equal(named[0].second->value(), 1.0)));
    BOOST_TEST(xt::all(xt::equal(named[1].second->value(), 0.0)));
    ln.weight()->assign(fixture_w());
    ln.bias()->assign(fixture_b());
    Tape<double> t;
    auto x = t.variable(fixture_x<double>());
    auto y = ln(x);
    t.backward(sum(y * t.constant(fixture_u())));
    BOOST_TEST(close_to(y.value(), torch_affine_y, 1e-12));
    BOOST_TEST(close_to(ln.weight()->grad(), torch_affine_dw, 1e-12));
    BOOST_TEST(close_to(ln.bias()->grad(), torch_affine_db, 1e-12));

    nn::LayerNorm<double> plain(5, 1e-5, false);
    BOOST_TEST(plain.parameters().empty());
    BOOST_TEST(plain.weight() == nullptr);
    BOOST_TEST(close_to(plain(t.variable(fixture_x<double>())).value(), torch_plain_y, 1e-12));
}

BOOST_AUTO_TEST_CASE(bad_shapes_name_the_op_and_the_shapes) {
    Tape<double> t;
    auto x = t.variable(fixture_x<double>());
    BOOST_CHECK_EXCEPTION(recur::layer_norm(x, 4), shape_error, raises<shape_error>("layer_norm", "(2, 3, 5)", "4"));
    BOOST_CHECK_EXCEPTION(recur::layer_norm(x, 5, t.variable(xt::xarray<double>{1.0, 2.0})), shape_error,
                          raises<shape_error>("layer_norm", "weight (2,)"));
    BOOST_CHECK_EXCEPTION(recur::layer_norm(x, 5, Var<double>(), Var<double>(), -1.0), value_error,
                          raises<value_error>("layer_norm", "eps"));
    nn::LayerNorm<double> ln(4);
    BOOST_CHECK_EXCEPTION(ln(x), shape_error, raises<shape_error>("LayerNorm", "(2, 3, 5)"));
    BOOST_CHECK_THROW(nn::LayerNorm<double>(0), value_error);
}

// ---- Layer-normalised cells -------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(cell_parameters_are_named_and_initialised) {
    nn::LayerNormLSTMCell<double> lstm({.input_size = 3, .hidden_size = 4, .suffix = "_l0"});
    std::vector<std::string> names;
    for (auto& [name, p] : lstm.named_parameters()) names.push_back(name);
    const std::vector<std::string> expected{"weight_ih_l0",    "weight_hh_l0",  "ln_weight_ih_l0", "ln_bias_ih_l0",
                                            "ln_weight_hh_l0", "ln_bias_hh_l0", "ln_weight_c_l0",  "ln_bias_c_l0"};
    BOOST_TEST(names == expected, boost::test_tools::per_element());
    auto params = lstm.named_parameters();
    BOOST_TEST((params[0].second->shape() == Shape{16, 3}));
    BOOST_TEST(xt::all(xt::equal(params[2].second->value(), 1.0)));
    BOOST_TEST(xt::all(xt::equal(params[5].second->value(), 0.0)));
    BOOST_TEST((params[6].second->shape() == Shape{4}));
    nn::LayerNormGRU<double> gru({.input_size = 3, .hidden_size = 4, .bidirectional = true});
    BOOST_TEST(gru.named_parameters().size() == 12u);
    BOOST_TEST(gru.named_parameters().back().first == "ln_bias_hh_l0_reverse");
    BOOST_TEST((gru.named_parameters()[2].second->shape() == Shape{12}));
}

// The fused steps equal the same cells composed from primitives: outputs, states and every gradient.
template <class Cell>
void check_fused_equals_composed(Cell& cell, std::size_t parts) {
    randomise(cell, 5);
    const std::size_t steps = 4, batch = 3;
    const xt::xarray<double> xv = normal_array({steps, batch, 3}, 6, 2.0);
    std::vector<xt::xarray<double>> values[2], grads[2];
    for (int composed = 0; composed < 2; ++composed) {
        cell.zero_grad();
        Tape<double> t;
        auto x = t.variable(xv);
        Var<double> xs = cell.project_input(x);
        nn::CellState<double> state;
        for (std::size_t k = 0; k < parts; ++k) state.push_back(t.variable(normal_array({batch, 4}, 7 + k)));
        const nn::CellState<double> initial = state;
        Var<double> loss;
        for (std::size_t s = 0; s < steps; ++s) {
            state = composed ? cell.step_composed(select(xs, 0, static_cast<std::ptrdiff_t>(s)), state)
                             : cell.step_at(xs, 0, s, state);
            Var<double> term = sum(state[0] * t.constant(normal_array({batch, 4}, 20 + s)));
            loss = loss.defined() ? loss + term : term;
        }
        for (auto& part : state) loss = loss + sum(part * part);
        t.backward(loss);
        for (auto& part : state) values[composed].push_back(part.value());
        grads[composed].push_back(x.grad());
        for (auto& part : initial) grads[composed].push_back(part.grad());
        for (auto* p : cell.parameters()) grads[composed].push_back(p->grad());
    }
    for (std::size_t k = 0; k < values[0].size(); ++k) BOOST_TEST(all_close(values[0][k], values[1][k], 1e-12));
    BOOST_TEST_REQUIRE(grads[0].size() == grads[1].size());
    for (std::size_t k = 0; k < grads[0].size(); ++k)
        BOOST_TEST(all_close(grads[0][k], grads[1][k], 1e-11), "gradient " << k);
}

BOOST_AUTO_TEST_CASE(fused_lstm_step_equals_composed) {
    nn::LayerNormLSTMCell<double> cell({.input_size = 3, .hidden_size = 4});
    check_fused_equals_composed(cell, 2);
}

BOOST_AUTO_TEST_CASE(fused_gru_step_equals_composed) {
    nn::LayerNormGRUCell<double> cell({.input_size = 3, .hidden_size = 4});
    check_fused_equals_composed(cell, 1);
}

BOOST_AUTO_TEST_CASE(gradcheck_two_layer_bidirectional_lstm_with_lengths) {
    nn::LayerNormLSTM<double> lstm(
        {.input_size = 3, .hidden_size = 4, .num_layers = 2, .batch_first = true, .bidirectional = true});
    randomise(lstm, 11);
    const std::vector<std::int64_t> lengths{3, 5, 1};
    auto f = [&](Tape<double>&, const std::vector<Var<double>>& x) {
        auto r = lstm(x[0], {x[1], x[2]}, lengths);
        return concat<double>({reshape(r.output, {-1}), reshape(r.state.h, {-1}), reshape(r.state.c, {-1})});
    };
    const auto rep =
        gradcheck(f, {normal_array({3, 5, 3}, 12), normal_array({4, 3, 4}, 13, 0.5), normal_array({4, 3, 4}, 14, 0.5)});
    BOOST_TEST(rep.passed, rep.summary());
    BOOST_TEST(rep.parameters == 32u);
    // Outputs past a sequence's end are zero (lengths work as for nn::LSTM).
    Tape<double> t;
    auto r = lstm(t.constant(normal_array({3, 5, 3}, 12)), {}, lengths);
    BOOST_TEST((r.output.shape() == Shape{3, 5, 8}));
    BOOST_TEST(xt::all(xt::equal(xt::view(r.output.value(), 2, xt::range(1, 5), xt::all()), 0.0)));
}

BOOST_AUTO_TEST_CASE(gradcheck_gru_stacked_with_lengths) {
    nn::LayerNormGRU<double> gru({.input_size = 3, .hidden_size = 4, .num_layers = 2, .eps = 1e-3});
    randomise(gru, 21);
    const std::vector<std::int64_t> lengths{2, 5, 4};
    auto f = [&](Tape<double>&, const std::vector<Var<double>>& x) {
        auto r = gru(x[0], x[1], lengths);
        return concat<double>({reshape(r.output, {-1}), reshape(r.h, {-1})});
    };
    const auto rep = gradcheck(f, {normal_array({5, 3, 3}, 22), normal_array({2, 3, 4}, 23, 0.5)});
    BOOST_TEST(rep.passed, rep.summary());
    BOOST_TEST(rep.parameters == 12u);
}

BOOST_AUTO_TEST_CASE(inference_equals_training_forward_and_float_runs) {
    nn::LayerNormLSTM<double> lstm({.input_size = 3, .hidden_size = 4, .bidirectional = true});
    randomise(lstm, 31);
    const xt::xarray<double> x = normal_array({5, 2, 3}, 32);
    Tape<double> train;
    auto a = lstm(train.variable(x));
    Tape<double> infer({.record = false});
    auto b = lstm(infer.constant(x));
    BOOST_TEST(all_close(a.output.value(), b.output.value(), 0.0));
    BOOST_TEST(all_close(a.state.c.value(), b.state.c.value(), 0.0));

    nn::LayerNormGRU<float> gru({.input_size = 3, .hidden_size = 4});
    Tape<float> t;
    auto y = gru(t.variable(xt::xarray<float>(xt::cast<float>(x))));
    t.backward(sum(y.output));
    BOOST_TEST(xt::all(xt::isfinite(gru.parameters()[0]->grad())));
}

BOOST_AUTO_TEST_CASE(step_ops_check_their_inputs) {
    Tape<double> t;
    auto xs = t.variable(normal_array({2, 3, 16}, 41));
    auto h = t.variable(normal_array({3, 4}, 42));
    auto w = t.variable(normal_array({16, 4}, 43));
    auto g16 = t.variable(normal_array({16}, 44)), g4 = t.variable(normal_array({4}, 45)),
         g5 = t.variable(normal_array({5}, 46));
    BOOST_CHECK_EXCEPTION(recur::layer_norm_lstm_step(xs, 0, 0, h, h, w, g16, g16, g5, g4), shape_error,
                          raises<shape_error>("layer_norm_lstm_step", "gamma_c", "(5,)"));
    BOOST_CHECK_EXCEPTION(recur::layer_norm_lstm_step(xs, 0, 2, h, h, w, g16, g16, g4, g4), index_error,
                          raises<index_error>("layer_norm_lstm_step", "step 2"));
    BOOST_CHECK_EXCEPTION(recur::layer_norm_gru_step(xs, 0, 0, h, w, g16, g16), shape_error,
                          raises<shape_error>("layer_norm_gru_step", "3H"));
}

BOOST_AUTO_TEST_SUITE_END()
