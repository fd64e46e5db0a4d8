// Layers, activations, the recurrent adapter and Sequential: gradient checks in double
// (inputs and every parameter), PyTorch state_dict names, train/eval, Return::last
// semantics, initialisation ranges and errors.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>

#include <recur/nn/layers.hpp>
#include <recur/recur.hpp>

#include "support.hpp"

namespace recur_layers_tests {

using namespace recur;
using namespace recur::nn;
using Vars = std::vector<Var<double>>;

using recur::testing::normal_array;

void check(const std::string& what, const std::vector<xt::xarray<double>>& inputs, const GradcheckFn& f,
           std::size_t min_parameters = 0) {
    const GradcheckReport rep = gradcheck(f, inputs);
    BOOST_TEST_INFO(what);
    BOOST_TEST(rep.passed, what << ": " << rep.summary());
    BOOST_TEST(rep.parameters >= min_parameters);
}

using recur::testing::raises;

constexpr std::size_t B = 3, T = 5, I = 3, H = 4;
const std::vector<std::int64_t> kLengths = {3, 5, 1};

}  // namespace recur_layers_tests

using namespace recur_layers_tests;

BOOST_AUTO_TEST_SUITE(layers)

// ---- Gradient checks --------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(linear_gradients) {
    manual_seed(1);
    Linear<double> with_bias(4, 3), without_bias(4, 2, false);
    BOOST_TEST(with_bias.named_parameters().size() == 2u);
    BOOST_TEST(without_bias.named_parameters().size() == 1u);
    BOOST_TEST(without_bias.bias() == nullptr);
    check(
        "Linear (B, I)", {normal_array({5, 4}, 2)}, [&](Tape<double>&, const Vars& x) { return with_bias(x[0]); }, 2);
    check(
        "Linear (B, T, I)", {normal_array({2, 3, 4}, 3)}, [&](Tape<double>&, const Vars& x) { return with_bias(x[0]); },
        2);
    check(
        "Linear no bias", {normal_array({5, 4}, 4)}, [&](Tape<double>&, const Vars& x) { return without_bias(x[0]); },
        1);
    // The same input twice through one layer: gradients accumulate into the shared parameters.
    check(
        "Linear reused", {normal_array({5, 4}, 5)},
        [&](Tape<double>&, const Vars& x) {
            Var<double> y = with_bias(x[0]);
            return y * with_bias(x[0] * 0.5);
        },
        2);
}

BOOST_AUTO_TEST_CASE(linear_matches_its_definition_and_pytorch_init) {
    manual_seed(2);
    Linear<float> lin(9, 70);
    const float bound = 1.0f / 3.0f;  // 1 / sqrt(9)
    for (auto* p : lin.parameters())
        for (float v : p->value()) {
            BOOST_TEST(v >= -bound);
            BOOST_TEST(v <= bound);
        }
    BOOST_TEST((lin.weight().shape() == Shape{70, 9}));
    BOOST_TEST((lin.bias()->shape() == Shape{70}));

    Linear<double> small(2, 2);
    small.weight().assign(xt::xarray<double>{{1, 2}, {3, 4}});
    small.bias()->assign(xt::xarray<double>{0.5, -0.5});
    Tape<double> tape;
    const auto y = small(tape.constant(xt::xarray<double>{{1, 1}, {2, -1}})).value();
    BOOST_TEST(y(0, 0) == 3.5);
    BOOST_TEST(y(0, 1) == 6.5);
    BOOST_TEST(y(1, 0) == 0.5);
    BOOST_TEST(y(1, 1) == 1.5);
}

BOOST_AUTO_TEST_CASE(embedding_gradients_and_values) {
    manual_seed(3);
    Embedding<double> emb(6, 3);
    // Ids repeat (1 twice, 4 three times): the scatter-add backward must sum their rows.
    const xt::xarray<std::int64_t> ids = {{1, 4, 4}, {0, 1, 4}};
    const xt::xarray<double> float_ids = xt::cast<double>(ids);
    check(
        "Embedding integer ids", {}, [&](Tape<double>& t, const Vars&) { return emb(t, ids); }, 1);
    check(
        "Embedding float ids times an input", {normal_array({3}, 4)},
        [&](Tape<double>& t, const Vars& x) { return emb(t.constant(float_ids)) * x[0]; }, 1);

    Tape<double> tape;
    Var<double> a = emb(tape.constant(float_ids)), b = emb(tape, ids);
    BOOST_TEST((a.shape() == Shape{2, 3, 3}));
    BOOST_TEST((a.value() == b.value()));
    for (std::size_t e = 0; e < 3; ++e) BOOST_TEST(a.value()(1, 2, e) == emb.weight().value()(4, e));
}

BOOST_AUTO_TEST_CASE(embedding_init_is_standard_normal) {
    manual_seed(4);
    Embedding<double> emb(200, 50);
    const auto& w = emb.weight().value();
    const double m = xt::mean(w)(), sd = std::sqrt(xt::variance(w)());
    BOOST_TEST(std::abs(m) < 0.03);
    BOOST_TEST(std::abs(sd - 1.0) < 0.03);
}

BOOST_AUTO_TEST_CASE(activation_gradients) {
    const auto x = normal_array({3, 4}, 5);
    ReLU<double> relu_layer;
    Tanh<double> tanh_layer;
    Sigmoid<double> sigmoid_layer;
    Softmax<double> softmax_last;
    Softmax<double> softmax_0(0);
    LogSoftmax<double> log_softmax_last;
    LogSoftmax<double> log_softmax_0(0);
    std::vector<std::pair<std::string, Layer<double>*>> cases = {
        {"ReLU", &relu_layer},
        {"Tanh", &tanh_layer},
        {"Sigmoid", &sigmoid_layer},
        {"Softmax(-1)", &softmax_last},
        {"Softmax(0)", &softmax_0},
        {"LogSoftmax(-1)", &log_softmax_last},
        {"LogSoftmax(0)", &log_softmax_0},
    };
    for (auto& [name, layer] : cases) {
        BOOST_TEST(layer->parameters().empty());
        check(name, {x},
              [&, l = layer](Tape<double>&, const Vars& v) { return (*l)(v[0]); });  // clang: no capture of a binding
    }
    Tape<double> tape;
    const auto s = softmax_last(tape.constant(x)).value();
    for (std::size_t r = 0; r < 3; ++r) {
        double total = 0;
        for (std::size_t c = 0; c < 4; ++c) total += s(r, c);
        BOOST_TEST(total == 1.0, boost::test_tools::tolerance(1e-12));
    }
    const auto ls = log_softmax_last(tape.constant(x)).value();
    for (std::size_t k = 0; k < s.size(); ++k)
        BOOST_TEST(std::exp(ls.data()[k]) == s.data()[k], boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(dropout_gradient_with_a_fixed_mask) {
    // gradcheck reseeds the tape before every evaluation, so the mask repeats.
    Dropout<double> drop(0.4);
    check("Dropout(0.4)", {normal_array({6, 5}, 6)}, [&](Tape<double>&, const Vars& x) { return drop(x[0]); });
}

// ---- Train / eval -----------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(train_and_eval_switch_dropout) {
    Dropout<float> drop(0.5);
    Tape<float> tape;
    xt::xarray<float> ones = xt::ones<float>({40, 50});
    BOOST_TEST(drop.training());
    const auto trained = drop(tape.constant(ones)).value();
    std::size_t zeros = 0;
    for (float v : trained) {
        BOOST_TEST((v == 0.0f || v == 2.0f));
        zeros += v == 0.0f ? 1 : 0;
    }
    BOOST_TEST(zeros > 800u);
    BOOST_TEST(zeros < 1200u);

    drop.eval();
    BOOST_TEST(!drop.training());
    BOOST_TEST((drop(tape.constant(ones)).value() == ones));

    // Through a Sequential, and into a recurrent module's dropout between its layers.
    Sequential<float> seq;
    auto& lstm_layer = seq.emplace<RecurrentLayer<LSTM<float>>>(
        std::make_unique<LSTM<float>>(LSTMOptions{.input_size = 2, .hidden_size = 3, .num_layers = 2, .dropout = 0.5}));
    auto& d = seq.emplace<Dropout<float>>(0.3);
    seq.eval();
    BOOST_TEST(!d.training());
    BOOST_TEST(!lstm_layer.module().training());
    BOOST_TEST(!lstm_layer.module().cell(1).training());
    seq.train();
    BOOST_TEST(d.training());
    BOOST_TEST(lstm_layer.module().training());

    BOOST_CHECK_EXCEPTION(Dropout<float>(1.0), value_error, raises<value_error>("Dropout", "[0, 1)"));
    BOOST_CHECK_EXCEPTION(Dropout<float>(-0.1), value_error, raises<value_error>("Dropout"));
}

// ---- Recurrent layers and Sequential ------------------------------------------------------------

BOOST_AUTO_TEST_CASE(sequential_state_dict_names_are_pytorchs) {
    // nn.Sequential(nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True),
    //               nn.Dropout(0.3), nn.LSTM(8, 5, batch_first=True), nn.Linear(5, 2),
    //               nn.ReLU(), nn.Linear(2, 1)).state_dict(), printed by torch 1.13.
    const std::vector<std::pair<std::string, Shape>> expected = {{"0.weight_ih_l0", {16, 3}},
                                                                 {"0.weight_hh_l0", {16, 4}},
                                                                 {"0.bias_ih_l0", {16}},
                                                                 {"0.bias_hh_l0", {16}},
                                                                 {"0.weight_ih_l0_reverse", {16, 3}},
                                                                 {"0.weight_hh_l0_reverse", {16, 4}},
                                                                 {"0.bias_ih_l0_reverse", {16}},
                                                                 {"0.bias_hh_l0_reverse", {16}},
                                                                 {"0.weight_ih_l1", {16, 8}},
                                                                 {"0.weight_hh_l1", {16, 4}},
                                                                 {"0.bias_ih_l1", {16}},
                                                                 {"0.bias_hh_l1", {16}},
                                                                 {"0.weight_ih_l1_reverse", {16, 8}},
                                                                 {"0.weight_hh_l1_reverse", {16, 4}},
                                                                 {"0.bias_ih_l1_reverse", {16}},
                                                                 {"0.bias_hh_l1_reverse", {16}},
                                                                 {"2.weight_ih_l0", {20, 8}},
                                                                 {"2.weight_hh_l0", {20, 5}},
                                                                 {"2.bias_ih_l0", {20}},
                                                                 {"2.bias_hh_l0", {20}},
                                                                 {"3.weight", {2, 5}},
                                                                 {"3.bias", {2}},
                                                                 {"5.weight", {1, 2}},
                                                                 {"5.bias", {1}}};

    Sequential<float> seq;
    seq.add(recurrent_layer(std::make_unique<LSTM<float>>(
        LSTMOptions{.input_size = 3, .hidden_size = 4, .num_layers = 2, .batch_first = true, .bidirectional = true})));
    seq.emplace<Dropout<float>>(0.3);
    seq.add(recurrent_layer(
        std::make_unique<LSTM<float>>(LSTMOptions{.input_size = 8, .hidden_size = 5, .batch_first = true}),
        Return::last));
    seq.emplace<Linear<float>>(5, 2);
    seq.emplace<ReLU<float>>();
    Linear<float>& head = seq.emplace<Linear<float>>(2, 1);

    const auto named = seq.named_parameters();
    BOOST_TEST_REQUIRE(named.size() == expected.size());
    for (std::size_t k = 0; k < named.size(); ++k) {
        BOOST_TEST(named[k].first == expected[k].first);
        BOOST_TEST((named[k].second->shape() == expected[k].second), named[k].first);
    }
    BOOST_TEST(seq.size() == 6u);
    BOOST_TEST(&seq[5] == static_cast<Layer<float>*>(&head));
    BOOST_TEST(named.back().second == head.bias());
    BOOST_CHECK_EXCEPTION((void)seq[6], index_error, raises<index_error>("Sequential", "6"));
    BOOST_CHECK_EXCEPTION(seq.add(nullptr), value_error, raises<value_error>("Sequential"));

    Tape<float> tape;
    const Var<float> y = seq(tape.constant(xt::zeros<float>({2, 7, 3})), {7, 4});
    BOOST_TEST((y.shape() == Shape{2, 1}));

    // Nested: names get both prefixes, as in PyTorch.
    Sequential<float> outer;
    auto& inner = outer.emplace<Sequential<float>>();
    inner.emplace<Linear<float>>(2, 2);
    outer.emplace<Linear<float>>(2, 1, false);
    std::vector<std::string> names;
    for (auto& [name, p] : outer.named_parameters()) names.push_back(name);
    BOOST_TEST((names == std::vector<std::string>{"0.0.weight", "0.0.bias", "1.weight"}));
}

BOOST_AUTO_TEST_CASE(return_last_is_each_sequences_own_last_step) {
    manual_seed(7);
    const auto x = normal_array({B, T, I}, 8);
    Tape<double> tape;
    Var<double> xv = tape.constant(x);

    // Unidirectional: output[b, len_b - 1].
    RecurrentLayer<GRU<double>> uni(std::make_unique<GRU<double>>(GRUOptions{
                                        .input_size = I, .hidden_size = H, .num_layers = 2, .batch_first = true}),
                                    Return::last);
    const auto last = uni(xv, kLengths).value();
    BOOST_TEST((last.shape() == Shape{B, H}));
    const auto seq = uni.module().forward(xv, {}, kLengths).output.value();
    for (std::size_t b = 0; b < B; ++b)
        for (std::size_t h = 0; h < H; ++h)
            BOOST_TEST(last(b, h) == seq(b, static_cast<std::size_t>(kLengths[b]) - 1, h));

    // Bidirectional: [forward h at the last step, reverse h at step 0] = concat(h_n[-2], h_n[-1]).
    RecurrentLayer<LSTM<double>> bi(std::make_unique<LSTM<double>>(LSTMOptions{.input_size = I,
                                                                               .hidden_size = H,
                                                                               .num_layers = 2,
                                                                               .batch_first = true,
                                                                               .bidirectional = true,
                                                                               .proj_size = 2}),
                                    Return::last);
    const auto blast = bi(xv, kLengths).value();
    BOOST_TEST((blast.shape() == Shape{B, 4}));
    const auto run = bi.module()(xv, {}, kLengths);
    const auto out = run.output.value();
    const auto hn = run.state.h.value();  // (4, B, 2)
    for (std::size_t b = 0; b < B; ++b)
        for (std::size_t h = 0; h < 2; ++h) {
            BOOST_TEST(blast(b, h) == hn(2, b, h));
            BOOST_TEST(blast(b, 2 + h) == hn(3, b, h));
            BOOST_TEST(blast(b, h) == out(b, static_cast<std::size_t>(kLengths[b]) - 1, h));
            BOOST_TEST(blast(b, 2 + h) == out(b, 0, 2 + h));
        }

    // Return::sequences is the module's output sequence.
    RecurrentLayer<RNN<double>> all(std::make_unique<RNN<double>>(RNNOptions{.input_size = I, .hidden_size = H}));
    BOOST_TEST((all.mode() == Return::sequences));
    const auto x_tm = normal_array({T, B, I}, 9);
    BOOST_TEST((all(tape.constant(x_tm)).value() == all.module()(tape.constant(x_tm)).output.value()));
}

BOOST_AUTO_TEST_CASE(sequential_with_recurrent_layers_gradients) {
    // Both Return modes, with lengths, bidirectional, dropout between and inside modules.
    manual_seed(10);
    Sequential<double> seq;
    seq.add(recurrent_layer(std::make_unique<LSTM<double>>(LSTMOptions{.input_size = I,
                                                                       .hidden_size = H,
                                                                       .num_layers = 2,
                                                                       .batch_first = true,
                                                                       .dropout = 0.3,
                                                                       .bidirectional = true}),
                            Return::sequences));
    seq.emplace<Dropout<double>>(0.25);
    seq.add(recurrent_layer(std::make_unique<GRU<double>>(GRUOptions{
                                .input_size = 2 * H, .hidden_size = 3, .batch_first = true, .bidirectional = true}),
                            Return::last));
    seq.emplace<Linear<double>>(6, 2);
    seq.emplace<Tanh<double>>();
    seq.train();
    check(
        "LSTM(seq) -> Dropout -> GRU(last) -> Linear -> Tanh", {normal_array({B, T, I}, 11)},
        [&](Tape<double>&, const Vars& x) { return seq(x[0], kLengths); }, seq.parameters().size());

    Sequential<double> seq2;
    seq2.add(
        recurrent_layer(std::make_unique<RNN<double>>(RNNOptions{.input_size = I, .hidden_size = H}), Return::last));
    seq2.emplace<Linear<double>>(H, 1);
    check(
        "RNN(last, time-major) -> Linear", {normal_array({T, B, I}, 12)},
        [&](Tape<double>&, const Vars& x) { return seq2(x[0], kLengths); }, 4 + 2);

    Sequential<double> seq3;
    seq3.add(recurrent_layer(
        std::make_unique<GRU<double>>(GRUOptions{.input_size = I, .hidden_size = H, .batch_first = true})));
    seq3.emplace<Linear<double>>(H, 2);
    seq3.emplace<LogSoftmax<double>>();
    check(
        "GRU(sequences) -> Linear -> LogSoftmax, lengths", {normal_array({B, T, I}, 13)},
        [&](Tape<double>&, const Vars& x) { return seq3(x[0], kLengths); }, 4 + 2);
}

BOOST_AUTO_TEST_CASE(embedding_in_a_sequential) {
    // Token ids as a float batch -> Embedding -> LSTM(last) -> Linear.
    manual_seed(14);
    Sequential<double> seq;
    seq.emplace<Embedding<double>>(7, 3);
    seq.add(recurrent_layer(
        std::make_unique<LSTM<double>>(LSTMOptions{.input_size = 3, .hidden_size = 4, .batch_first = true}),
        Return::last));
    seq.emplace<Linear<double>>(4, 2);
    const xt::xarray<double> ids = {{1, 2, 6, 0}, {5, 5, 0, 0}};
    check(
        "Embedding -> LSTM(last) -> Linear", {},
        [&](Tape<double>& t, const Vars&) {
            return seq(t.constant(ids), {4, 2});
        },
        1 + 4 + 2);
    std::vector<std::string> names;
    for (auto& [name, p] : seq.named_parameters()) names.push_back(name);
    BOOST_TEST(names.front() == "0.weight");
    BOOST_TEST(names.back() == "2.bias");
}

BOOST_AUTO_TEST_CASE(recurrent_layer_over_a_user_recurrent) {
    // Any Recurrent<Cell> works, not only the shipped modules.
    using Custom = Recurrent<GRUCell<double>>;
    manual_seed(15);
    auto module = std::make_unique<Custom>(
        "MyGRU", RecurrentOptions{.input_size = I, .num_layers = 1, .batch_first = true, .bidirectional = true},
        [](std::size_t in, const std::string& suffix) {
            return std::make_unique<GRUCell<double>>(CellOptions{in, 2, true, 0, Nonlinearity::tanh, suffix});
        });
    auto layer = recurrent_layer(std::move(module), Return::last);
    BOOST_TEST(layer->named_parameters().front().first == "weight_ih_l0");
    check(
        "RecurrentLayer<Recurrent<GRUCell>> last", {normal_array({B, T, I}, 16)},
        [&](Tape<double>&, const Vars& x) { return (*layer)(x[0], kLengths); }, 8);
}

// ---- Errors -----------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(embedding_errors) {
    Embedding<float> emb(10, 2);
    Tape<float> tape;
    BOOST_CHECK_EXCEPTION(emb(tape.constant(xt::xarray<float>{{1, 2.5f, 3}})), index_error,
                          raises<index_error>("Embedding", "2.5", "(1, 3)", "[0, 10)"));
    BOOST_CHECK_EXCEPTION(emb(tape.constant(xt::xarray<float>{4, -1})), index_error,
                          raises<index_error>("Embedding", "-1", "(2,)"));
    BOOST_CHECK_EXCEPTION(emb(tape.constant(xt::xarray<float>{10})), index_error,
                          raises<index_error>("Embedding", "10", "[0, 10)"));
    BOOST_CHECK_EXCEPTION(emb(tape.constant(xt::xarray<float>{std::nanf("")})), index_error,
                          raises<index_error>("Embedding", "nan"));
    BOOST_CHECK_EXCEPTION(emb(tape, xt::xarray<std::int64_t>{{0, 11}}), index_error,
                          raises<index_error>("Embedding", "11", "(1, 2)"));
    BOOST_CHECK_EXCEPTION(Embedding<float>(0, 3), value_error, raises<value_error>("Embedding"));
}

BOOST_AUTO_TEST_CASE(linear_and_recurrent_shape_errors) {
    Linear<float> lin(4, 2);
    Tape<float> tape;
    BOOST_CHECK_EXCEPTION(lin(tape.constant(xt::zeros<float>({3, 5}))), shape_error,
                          raises<shape_error>("Linear", "(..., 4)", "(3, 5)"));
    BOOST_CHECK_EXCEPTION(Linear<float>(0, 2), value_error, raises<value_error>("Linear"));
    auto rec =
        recurrent_layer(std::make_unique<GRU<float>>(GRUOptions{.input_size = 2, .hidden_size = 3}), Return::last);
    BOOST_CHECK_EXCEPTION((*rec)(tape.constant(xt::zeros<float>({4, 2, 2})), {1, 5}), index_error,
                          raises<index_error>("GRU", "5"));
    BOOST_CHECK_EXCEPTION((*rec)(tape.constant(xt::zeros<float>({4, 2, 3}))), shape_error,
                          raises<shape_error>("GRU", "(4, 2, 3)"));
}

BOOST_AUTO_TEST_SUITE_END()
