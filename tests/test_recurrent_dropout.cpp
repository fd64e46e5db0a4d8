// Variational (Gal and Ghahramani) dropout of nn::RNN, nn::LSTM and nn::GRU: input_dropout on
// x_t and recurrent_dropout on h, one mask per sequence, the same at every time step, training only.
#include <boost/test/unit_test.hpp>

#include <random>

#include <xtensor/xview.hpp>

#include <recur/recur.hpp>

#include "support.hpp"

using namespace recur;
using namespace recur::nn;
using recur::testing::raises;

namespace {

using recur::testing::normal_array;

bool same(const xt::xarray<double>& a, const xt::xarray<double>& b, double tol = 0.0) {
    return a.shape() == b.shape() && xt::allclose(a, b, tol, tol);
}

bool is_mask(const xt::xarray<double>& m, double p) {
    const double keep = 1.0 / (1.0 - p);
    for (double v : m)
        if (v != 0.0 && v != keep) return false;
    return xt::any(xt::equal(m, 0.0)) && xt::any(xt::equal(m, keep));
}

constexpr std::size_t I = 3, H = 4, T = 6, B = 5;

// A training forward of `module` (one layer) on xv that keeps its recurrent mask (checked to be a
// mask of probability p): the output, and on the same tape the layer's projected input xs and
// the mask m, for stepping the cell by hand.
struct MaskedForward {
    xt::xarray<double> y;
    Var<double> xs, m;
};
template <class Module>
MaskedForward masked_forward(Module& module, Tape<double>& tape, const xt::xarray<double>& xv, double p) {
    module.keep_masks(true);
    xt::xarray<double> y = module(tape.constant(xv)).output.value();
    const xt::xarray<double> mask = module.recurrent_masks().at(0);
    BOOST_TEST(is_mask(mask, p));
    return {std::move(y), module.cell(0).project_input(tape.constant(xv)), tape.constant(mask)};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(recurrent_dropout)

// An RNN with W_ih = 1, W_hh = 0 and no biases outputs tanh(x_t ⊙ m) at each step: with the
// same x at every step, every step's output is the same, and it shows the mask.
BOOST_AUTO_TEST_CASE(input_mask_is_the_same_at_every_step) {
    RNN<double> rnn({.input_size = H, .hidden_size = H, .input_dropout = 0.5});
    rnn.keep_masks(true);
    for (auto& [name, p] : rnn.named_parameters())
        p->assign(name == "weight_ih_l0" ? xt::xarray<double>(xt::eye<double>(H))
                                         : xt::xarray<double>(xt::zeros<double>(p->shape())));
    xt::xarray<double> x = xt::xarray<double>::from_shape({T, B, H});
    const xt::xarray<double> row = normal_array({1, B, H}, 1) + 3.0;  // nonzero
    for (std::size_t t = 0; t < T; ++t) xt::view(x, t) = xt::view(row, 0);
    Tape<double> tape;
    auto y = rnn(tape.constant(x)).output.value();
    BOOST_TEST_REQUIRE(rnn.input_masks().size() == 1u);
    const xt::xarray<double>& mask = rnn.input_masks()[0];
    BOOST_TEST((mask.shape() == Shape{1, B, H}));
    BOOST_TEST(is_mask(mask, 0.5));
    const xt::xarray<double> expected = xt::tanh(xt::view(row * mask, 0));
    for (std::size_t t = 0; t < T; ++t) BOOST_TEST(same(xt::view(y, t), expected, 1e-15));
}

// The fused LSTM step with its recurrent mask equals the step fed h ⊙ m (the same thing for an
// LSTM), with the one mask at every step; outputs and every gradient.
BOOST_AUTO_TEST_CASE(lstm_recurrent_mask_is_one_mask_for_all_steps) {
    LSTM<double> lstm({.input_size = I, .hidden_size = H, .recurrent_dropout = 0.4});
    lstm.keep_masks(true);
    const xt::xarray<double> xv = normal_array({T, B, I}, 2);
    Tape<double> tape;
    auto x = tape.variable(xv);
    auto fused = lstm(x).output;
    tape.backward(sum(fused * fused));
    BOOST_TEST_REQUIRE(lstm.recurrent_masks().size() == 1u);
    const xt::xarray<double> mask = lstm.recurrent_masks()[0];
    BOOST_TEST(is_mask(mask, 0.4));
    const xt::xarray<double> dx = x.grad(), dw = lstm.cell(0).weight_hh().grad();

    lstm.zero_grad();
    Tape<double> ref;
    auto x2 = ref.variable(xv);
    auto& cell = lstm.cell(0);
    Var<double> xs = cell.project_input(x2), m = ref.constant(mask);
    CellState<double> s{ref.zeros({B, H}), ref.zeros({B, H})};
    std::vector<Var<double>> outs;
    for (std::size_t t = 0; t < T; ++t) {
        s = cell.step_at(xs, 0, t, {s[0] * m, s[1]});
        outs.push_back(s[0]);
    }
    auto composed = stack(outs, 0);
    ref.backward(sum(composed * composed));
    BOOST_TEST(same(fused.value(), composed.value(), 1e-14));
    BOOST_TEST(same(dx, x2.grad(), 1e-13));
    BOOST_TEST(same(dw, cell.weight_hh().grad(), 1e-13));
}

// The GRU's mask enters only the product: hg = (h ⊙ m) W_hh^T + b_hh, the blend reads h.
BOOST_AUTO_TEST_CASE(gru_recurrent_mask_enters_the_product_only) {
    GRU<double> gru({.input_size = I, .hidden_size = H, .batch_first = true, .recurrent_dropout = 0.3});
    Tape<double> tape;
    const auto [y, xs, m] = masked_forward(gru, tape, normal_array({B, T, I}, 3), 0.3);
    Var<double> h = tape.zeros({B, H});
    for (std::size_t t = 0; t < T; ++t) {
        h = gru_pointwise(select(xs, 1, static_cast<std::ptrdiff_t>(t)), gru.cell(0).project_hidden(h * m), h);
        BOOST_TEST(same(xt::view(y, xt::all(), t), h.value(), 1e-14));
    }
}

// The layer-normalised LSTM takes the mask inside its step (layer_norm_lstm_step's h_mask): the
// same as stepping with h ⊙ m as the state, since h enters an LSTM step only through the product.
BOOST_AUTO_TEST_CASE(layer_norm_lstm_mask_enters_the_product) {
    LayerNormLSTM<double> lstm({.input_size = I, .hidden_size = H, .recurrent_dropout = 0.5});
    Tape<double> tape;
    const auto [y, xs, m] = masked_forward(lstm, tape, normal_array({T, B, I}, 14), 0.5);
    CellState<double> s{tape.zeros({B, H}), tape.zeros({B, H})};
    for (std::size_t t = 0; t < T; ++t) {
        s = lstm.cell(0).step_at(xs, 0, t, {s[0] * m, s[1]});
        BOOST_TEST(same(xt::view(y, t), s[0].value(), 1e-14));
    }
}

// The layer-normalised GRU's mask enters only the product, as the GRU's: hg = LN((h ⊙ m) W_hh^T)
// γ_hh + β_hh, while the blend (1 - z) n + z h reads the unmasked h.
BOOST_AUTO_TEST_CASE(layer_norm_gru_mask_enters_the_product_only) {
    LayerNormGRU<double> gru({.input_size = I, .hidden_size = H, .batch_first = true, .recurrent_dropout = 0.4});
    Tape<double> tape;
    const auto [y, xs, m] = masked_forward(gru, tape, normal_array({B, T, I}, 15), 0.4);
    auto& cell = gru.cell(0);
    Var<double> h = tape.zeros({B, H}), masked_state = h;
    for (std::size_t t = 0; t < T; ++t) {
        h = gru_pointwise(select(xs, 1, static_cast<std::ptrdiff_t>(t)), cell.project_hidden(h * m), h);
        BOOST_TEST(same(xt::view(y, xt::all(), t), h.value(), 1e-12));
        masked_state = cell.step_at(xs, 1, t, {masked_state * m})[0];  // the mask on the whole state
    }
    BOOST_TEST(!same(masked_state.value(), h.value(), 1e-6));  // differs: the blend reads h
}

BOOST_AUTO_TEST_CASE(eval_mode_and_zero_probability_draw_no_mask) {
    const xt::xarray<double> xv = normal_array({T, B, I}, 4);
    manual_seed(9);
    LSTM<double> plain({.input_size = I, .hidden_size = H, .num_layers = 2});
    manual_seed(9);
    LSTM<double> zero({.input_size = I, .hidden_size = H, .num_layers = 2, .input_dropout = 0, .recurrent_dropout = 0});
    manual_seed(9);
    LSTM<double> dropped(
        {.input_size = I, .hidden_size = H, .num_layers = 2, .input_dropout = 0.5, .recurrent_dropout = 0.5});
    dropped.keep_masks(true);
    Tape<double> t;
    const xt::xarray<double> y = plain(t.constant(xv)).output.value();
    BOOST_TEST(same(zero(t.constant(xv)).output.value(), y));  // p = 0: bit for bit
    BOOST_TEST(!same(dropped(t.constant(xv)).output.value(), y, 1e-6));
    BOOST_TEST(dropped.input_masks().size() == 2u);
    BOOST_TEST(dropped.recurrent_masks().size() == 2u);
    dropped.eval();
    BOOST_TEST(same(dropped(t.constant(xv)).output.value(), y));  // eval: no mask
    BOOST_TEST(dropped.input_masks().empty());
    BOOST_TEST(dropped.recurrent_masks().empty());
    Tape<double> infer({.record = false});
    BOOST_TEST(same(dropped(infer.constant(xv)).output.value(), y, 1e-15));
}

BOOST_AUTO_TEST_CASE(masks_follow_the_tape_seed) {
    GRU<double> gru({.input_size = I, .hidden_size = H, .input_dropout = 0.3, .recurrent_dropout = 0.3});
    const xt::xarray<double> xv = normal_array({T, B, I}, 5);
    auto run = [&](std::uint64_t seed) {
        Tape<double> t({.seed = seed});
        return xt::xarray<double>(gru(t.constant(xv)).output.value());
    };
    BOOST_TEST(same(run(17), run(17)));
    BOOST_TEST(!same(run(17), run(18), 1e-6));
}

// gradcheck reseeds the tape's generator before every evaluation: the masks are fixed.
BOOST_AUTO_TEST_CASE(gradcheck_with_fixed_masks) {
    LSTM<double> lstm({.input_size = I,
                       .hidden_size = H,
                       .num_layers = 2,
                       .batch_first = true,
                       .bidirectional = true,
                       .input_dropout = 0.3,
                       .recurrent_dropout = 0.4});
    const std::vector<std::int64_t> lengths{6, 2, 5, 1, 4};
    auto f = [&](Tape<double>&, const std::vector<Var<double>>& x) {
        auto r = lstm(x[0], {}, lengths);
        return concat<double>({reshape(r.output, {-1}), reshape(r.state.c, {-1})});
    };
    auto rep = gradcheck(f, {normal_array({B, T, I}, 6)});
    BOOST_TEST(rep.passed, rep.summary());
    BOOST_TEST(rep.parameters == 16u);

    GRU<double> gru({.input_size = I, .hidden_size = H, .input_dropout = 0.2, .recurrent_dropout = 0.5});
    RNN<double> rnn({.input_size = I, .hidden_size = H, .input_dropout = 0.2, .recurrent_dropout = 0.5});
    auto g = [&](Tape<double>&, const std::vector<Var<double>>& x) {
        return concat<double>({reshape(gru(x[0], x[1]).output, {-1}), reshape(rnn(x[0], x[1]).output, {-1})});
    };
    rep = gradcheck(g, {normal_array({T, B, I}, 7), normal_array({1, B, H}, 8, 0.5)});
    BOOST_TEST(rep.passed, rep.summary());
    LayerNormLSTM<double> ln_lstm({.input_size = I, .hidden_size = H, .recurrent_dropout = 0.5});
    LayerNormGRU<double> ln_gru({.input_size = I, .hidden_size = H, .bidirectional = true, .recurrent_dropout = 0.5});
    auto n = [&](Tape<double>&, const std::vector<Var<double>>& x) {
        return concat<double>({reshape(ln_lstm(x[0]).output, {-1}), reshape(ln_gru(x[0]).output, {-1})});
    };
    rep = gradcheck(n, {normal_array({T, B, I}, 9)});
    BOOST_TEST(rep.passed, rep.summary());
}

BOOST_AUTO_TEST_CASE(bad_probabilities_and_masks_are_refused) {
    BOOST_CHECK_EXCEPTION(LSTM<double>({.input_size = I, .hidden_size = H, .recurrent_dropout = 1.0}), value_error,
                          raises<value_error>("LSTM", "recurrent_dropout"));
    BOOST_CHECK_EXCEPTION(GRU<double>({.input_size = I, .hidden_size = H, .input_dropout = -0.1}), value_error,
                          raises<value_error>("GRU", "input_dropout"));
    Tape<double> t;
    auto xs = t.variable(normal_array({2, B, 4 * H}, 9));
    auto h = t.variable(normal_array({B, H}, 10));
    auto w = t.variable(normal_array({4 * H, H}, 11));
    BOOST_CHECK_EXCEPTION(lstm_step(xs, 0, 0, h, h, w, Var<double>(), t.variable(normal_array({B, H}, 12))),
                          value_error, raises<value_error>("lstm_step", "h_mask", "constant"));
    BOOST_CHECK_EXCEPTION(lstm_step(xs, 0, 0, h, h, w, Var<double>(), t.constant(normal_array({B, 2}, 13))),
                          shape_error, raises<shape_error>("lstm_step", "h_mask", "(5, 2)"));
}

BOOST_AUTO_TEST_SUITE_END()
