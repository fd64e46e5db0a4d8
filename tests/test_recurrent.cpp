// Recurrent layers against PyTorch 1.13 (fixtures from tests/fixtures/make_torch_fixtures.py)
// and their semantics: names, shapes, init, lengths, truncated BPTT, custom cells, errors.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include <xtensor/xmath.hpp>
#include <xtensor/xview.hpp>

#include <recur/io.hpp>
#include <recur/recur.hpp>

#include "support.hpp"

#include "examples/custom_cell/mgu_cell.hpp"

using namespace recur;
using namespace recur::nn;

namespace {

const std::string kFixtures = std::string(RECUR_TEST_DATA_DIR) + "/../fixtures/torch/";

struct FixtureCase {
    std::string name;
    std::map<std::string, std::string> opt;
    std::size_t get(const std::string& k) const { return static_cast<std::size_t>(std::stoul(opt.at(k))); }
};

std::vector<FixtureCase> manifest() {
    std::ifstream in(kFixtures + "manifest.txt");
    BOOST_REQUIRE_MESSAGE(in, "cannot open " + kFixtures + "manifest.txt");
    std::vector<FixtureCase> cases;
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        std::istringstream ss(line);
        FixtureCase c;
        ss >> c.name;
        std::string kv;
        while (ss >> kv) {
            const auto eq = kv.find('=');
            c.opt[kv.substr(0, eq)] = kv.substr(eq + 1);
        }
        cases.push_back(c);
    }
    return cases;
}

double max_abs_diff(const xt::xarray<double>& a, const xt::xarray<double>& b) {
    BOOST_REQUIRE_MESSAGE(a.shape() == b.shape(), "shape " + shape_str(a.shape()) + " vs " + shape_str(b.shape()));
    double m = 0;
    for (std::size_t k = 0; k < a.size(); ++k) m = std::max(m, std::abs(a.data()[k] - b.data()[k]));
    return m;
}

// One fixture: build the module, load torch's weights, run, backward, compare everything.
template <class M, class Run>
void compare_case(const FixtureCase& c, M& module, Run run) {
    // Every array but the int64 lengths, by name.
    std::vector<std::string> names = {"input", "output", "h_n", "w_output", "w_h_n", "grad_input"};
    const bool lstm = c.opt.at("mode") == "LSTM";
    if (lstm) names.insert(names.end(), {"c_n", "w_c_n"});
    if (c.get("init_state")) {
        names.insert(names.end(), {"h0", "grad_h0"});
        if (lstm) names.insert(names.end(), {"c0", "grad_c0"});
    }
    for (auto& [name, p] : module.named_parameters()) names.insert(names.end(), {name, "grad_" + name});
    auto arrays = io::load_npz<double>(kFixtures + c.name + ".npz", names);
    std::map<std::string, xt::xarray<double>> f(arrays.begin(), arrays.end());
    std::vector<std::int64_t> lengths;
    if (c.get("lengths")) {
        const auto ints = io::load_npz<std::int64_t>(kFixtures + c.name + ".npz", {"lengths"});
        lengths.assign(ints.at(0).second.begin(), ints.at(0).second.end());
    }
    std::size_t loaded = 0;
    for (auto& [name, p] : module.named_parameters()) {
        BOOST_REQUIRE_MESSAGE(f.count(name), c.name + ": torch has no parameter " + name);
        p->assign(f.at(name));
        p->zero_grad();
        ++loaded;
    }
    // PyTorch's parameter count: (2 weights [+ 2 biases] [+ weight_hr]) per layer and direction.
    const std::size_t per = 2 + (c.get("bias") ? 2 : 0) + (c.get("proj_size") ? 1 : 0);
    BOOST_TEST(loaded == per * c.get("num_layers") * (c.get("bidirectional") ? 2 : 1), c.name);

    Tape<double> tape;
    Var<double> x = tape.variable(f.at("input"));
    Var<double> h0, c0;
    if (c.get("init_state")) {
        h0 = tape.variable(f.at("h0"));
        if (f.count("c0")) c0 = tape.variable(f.at("c0"));
    }
    auto [output, h_n, c_n] = run(x, h0, c0, lengths);
    const double tol = 1e-9;
    BOOST_TEST(max_abs_diff(output.value(), f.at("output")) < tol, c.name << " output");
    BOOST_TEST(max_abs_diff(h_n.value(), f.at("h_n")) < tol, c.name << " h_n");
    Var<double> loss = sum(output * tape.constant(f.at("w_output"))) + sum(h_n * tape.constant(f.at("w_h_n")));
    if (c_n.defined()) {
        BOOST_TEST(max_abs_diff(c_n.value(), f.at("c_n")) < tol, c.name << " c_n");
        loss = loss + sum(c_n * tape.constant(f.at("w_c_n")));
    }
    tape.backward(loss);
    BOOST_TEST(max_abs_diff(x.grad(), f.at("grad_input")) < tol, c.name << " grad_input");
    if (h0.defined()) BOOST_TEST(max_abs_diff(h0.grad(), f.at("grad_h0")) < tol, c.name << " grad_h0");
    if (c0.defined()) BOOST_TEST(max_abs_diff(c0.grad(), f.at("grad_c0")) < tol, c.name << " grad_c0");
    for (auto& [name, p] : module.named_parameters())
        BOOST_TEST(max_abs_diff(p->grad(), f.at("grad_" + name)) < tol, c.name << " grad_" << name);
}

struct Outputs {
    Var<double> output, h, c;
};

using recur::testing::normal_array;

using recur::testing::throws_with;

}  // namespace

BOOST_AUTO_TEST_SUITE(recurrent)

BOOST_AUTO_TEST_CASE(matches_pytorch_fixtures) {
    const auto cases = manifest();
    BOOST_TEST(cases.size() >= 20u);
    for (const auto& c : cases) {
        const std::string mode = c.opt.at("mode");
        const std::size_t in = c.get("input_size"), hid = c.get("hidden_size"), layers = c.get("num_layers");
        const bool bias = c.get("bias"), bf = c.get("batch_first"), bidir = c.get("bidirectional");
        if (mode == "LSTM") {
            LSTM<double> m({in, hid, layers, bias, bf, 0.0, bidir, c.get("proj_size")});
            compare_case(c, m, [&](auto& x, auto& h0, auto& c0, auto& lengths) {
                auto r = m(x, {h0, c0}, lengths);
                return Outputs{r.output, r.state.h, r.state.c};
            });
        } else if (mode == "GRU") {
            GRU<double> m({in, hid, layers, bias, bf, 0.0, bidir});
            compare_case(c, m, [&](auto& x, auto& h0, auto&, auto& lengths) {
                auto r = m(x, h0, lengths);
                return Outputs{r.output, r.h, {}};
            });
        } else {
            const auto nl = mode == "RNN_RELU" ? Nonlinearity::relu : Nonlinearity::tanh;
            RNN<double> m({in, hid, layers, nl, bias, bf, 0.0, bidir});
            compare_case(c, m, [&](auto& x, auto& h0, auto&, auto& lengths) {
                auto r = m(x, h0, lengths);
                return Outputs{r.output, r.h, {}};
            });
        }
    }
}

BOOST_AUTO_TEST_CASE(default_init_is_uniform_within_one_over_sqrt_hidden) {
    manual_seed(3);
    LSTM<float> lstm({.input_size = 5, .hidden_size = 64, .num_layers = 2, .bidirectional = true, .proj_size = 16});
    const double k = 1.0 / 8.0;
    for (auto& [name, p] : lstm.named_parameters()) {
        const auto& v = p->value();
        const double mx = xt::amax(xt::abs(v))();
        BOOST_TEST(mx <= k, name);
        BOOST_TEST(mx > 0.9 * k, name);  // spread over the whole range
        BOOST_TEST(std::abs(xt::mean(v)()) < 0.1 * k, name);  // centred
    }
}

BOOST_AUTO_TEST_CASE(names_and_shapes_follow_pytorch) {
    LSTM<float> lstm({.input_size = 3, .hidden_size = 4, .num_layers = 2, .bidirectional = true, .proj_size = 2});
    std::vector<std::string> names;
    for (auto& [n, p] : lstm.named_parameters()) names.push_back(n + shape_str(p->shape()));
    const std::vector<std::string> expected = {"weight_ih_l0(16, 3)",
                                               "weight_hh_l0(16, 2)",
                                               "bias_ih_l0(16,)",
                                               "bias_hh_l0(16,)",
                                               "weight_hr_l0(2, 4)",
                                               "weight_ih_l0_reverse(16, 3)",
                                               "weight_hh_l0_reverse(16, 2)",
                                               "bias_ih_l0_reverse(16,)",
                                               "bias_hh_l0_reverse(16,)",
                                               "weight_hr_l0_reverse(2, 4)",
                                               "weight_ih_l1(16, 4)",
                                               "weight_hh_l1(16, 2)",
                                               "bias_ih_l1(16,)",
                                               "bias_hh_l1(16,)",
                                               "weight_hr_l1(2, 4)",
                                               "weight_ih_l1_reverse(16, 4)",
                                               "weight_hh_l1_reverse(16, 2)",
                                               "bias_ih_l1_reverse(16,)",
                                               "bias_hh_l1_reverse(16,)",
                                               "weight_hr_l1_reverse(2, 4)"};
    BOOST_TEST(names == expected, boost::test_tools::per_element());
    GRU<float> gru({.input_size = 3, .hidden_size = 4, .bias = false});
    std::vector<std::string> gnames;
    for (auto& [n, p] : gru.named_parameters()) gnames.push_back(n + shape_str(p->shape()));
    BOOST_TEST(gnames == (std::vector<std::string>{"weight_ih_l0(12, 3)", "weight_hh_l0(12, 4)"}),
               boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(lengths_zero_outputs_and_gradients_past_the_end) {
    manual_seed(4);
    GRU<double> gru({.input_size = 2, .hidden_size = 3, .batch_first = true, .bidirectional = true});
    Tape<double> t;
    Var<double> x = t.variable(normal_array({3, 5, 2}, 1));
    const std::vector<std::int64_t> lengths = {2, 5, 4};  // unsorted
    auto [y, h] = gru(x, {}, lengths);
    t.backward(sum(y * t.constant(normal_array({3, 5, 6}, 2))) + sum(h * t.constant(normal_array({2, 3, 3}, 3))));
    for (std::size_t b = 0; b < 3; ++b)
        for (std::size_t s = 0; s < 5; ++s) {
            const bool pad = static_cast<std::int64_t>(s) >= lengths[b];
            for (std::size_t k = 0; k < 6; ++k)
                if (pad) BOOST_TEST(y.value()(b, s, k) == 0.0);
            for (std::size_t k = 0; k < 2; ++k)
                if (pad)
                    BOOST_TEST(x.grad()(b, s, k) == 0.0);
                else
                    BOOST_TEST(x.grad()(b, s, k) != 0.0);
        }
    // A sequence run alone, unpadded, gives the same output and final state.
    Tape<double> t2;
    const auto& xv = x.value();
    xt::xarray<double> alone = xt::view(xv, xt::range(0, 1), xt::range(0, 2), xt::all());
    auto [y1, h1] = gru(t2.constant(alone));
    for (std::size_t s = 0; s < 2; ++s)
        for (std::size_t k = 0; k < 6; ++k)
            BOOST_TEST(y1.value()(0, s, k) == y.value()(0, s, k), boost::test_tools::tolerance(1e-14));
    for (std::size_t d = 0; d < 2; ++d)
        for (std::size_t k = 0; k < 3; ++k)
            BOOST_TEST(h1.value()(d, 0, k) == h.value()(d, 0, k), boost::test_tools::tolerance(1e-14));
}

BOOST_AUTO_TEST_CASE(truncated_bptt_carries_state_but_not_gradient) {
    manual_seed(5);
    LSTM<double> lstm({.input_size = 2, .hidden_size = 3});
    const auto xs = normal_array({8, 2, 2}, 4);
    // Whole sequence at once.
    Tape<double> whole;
    auto full = lstm(whole.constant(xs));
    // Two chunks of 4: the second starts from the detached final state of the first.
    Tape<double> t;
    Var<double> x1 = t.variable(xt::xarray<double>(xt::view(xs, xt::range(0, 4))));
    Var<double> x2 = t.variable(xt::xarray<double>(xt::view(xs, xt::range(4, 8))));
    auto first = lstm(x1);
    LSTMState<double> carried{detach(first.state.h), detach(first.state.c)};
    BOOST_TEST(!carried.h.requires_grad());
    auto second = lstm(x2, carried);
    for (std::size_t k = 0; k < second.output.size(); ++k)
        BOOST_TEST(second.output.value().data()[k] == full.output.value().data()[4 * 2 * 3 + k],
                   boost::test_tools::tolerance(1e-13));
    lstm.zero_grad();
    t.backward(sum(second.output * second.output));
    BOOST_TEST(xt::amax(xt::abs(x1.grad()))() == 0.0);  // the gradient stops at the chunk boundary
    BOOST_TEST(xt::amax(xt::abs(x2.grad()))() > 0.0);
}

BOOST_AUTO_TEST_CASE(dropout_between_layers_only_in_training) {
    manual_seed(6);
    LSTM<double> lstm({.input_size = 2, .hidden_size = 8, .num_layers = 2, .dropout = 0.5});
    const auto xs = normal_array({4, 3, 2}, 5);
    auto run = [&](std::uint64_t seed) {
        Tape<double> t({.seed = seed});
        return xt::xarray<double>(lstm(t.constant(xs)).output.value());
    };
    lstm.eval();
    BOOST_TEST(max_abs_diff(run(1), run(2)) == 0.0);
    lstm.train();
    BOOST_TEST(max_abs_diff(run(1), run(1)) == 0.0);  // reproducible for a seed
    BOOST_TEST(max_abs_diff(run(1), run(2)) > 1e-3);  // different masks for different seeds
    LSTM<double> single({.input_size = 2, .hidden_size = 8, .dropout = 0.5});  // no dropout after the last layer
    auto once = [&](std::uint64_t seed) {
        Tape<double> t({.seed = seed});
        return xt::xarray<double>(single(t.constant(xs)).output.value());
    };
    BOOST_TEST(max_abs_diff(once(1), once(2)) == 0.0);
}

BOOST_AUTO_TEST_CASE(custom_cell_gets_stacking_bidirectional_lengths_and_gradcheck) {
    manual_seed(7);
    auto net = make_mgu<double>(3, 4, {.num_layers = 2, .batch_first = true, .bidirectional = true});
    BOOST_TEST(net.named_parameters().size() == 16u);
    BOOST_TEST(net.output_size() == 8u);
    const std::vector<std::int64_t> lengths = {5, 2, 3};
    auto rep = gradcheck(
        [&](Tape<double>&, const std::vector<Var<double>>& in) {
            auto r = net.forward(in[0], {in[1]}, lengths);
            return concat<double>({reshape(r.output, {-1}), reshape(r.state[0], {-1})});
        },
        {normal_array({3, 5, 3}, 6), normal_array({4, 3, 4}, 7)});
    BOOST_TEST(rep.passed, rep.summary());
    BOOST_TEST(rep.parameters == 16u);
    // A cell without hoisting (step only) is unrolled the same way and gives the same result.
    struct StepOnly : Module<double> {
        using value_type = double;
        MGUCell<double>& inner;
        explicit StepOnly(MGUCell<double>& c) : inner(c) {}
        std::size_t input_size() const { return inner.input_size(); }
        std::vector<std::size_t> state_sizes() const { return inner.state_sizes(); }
        CellState<double> step(const Var<double>& x, const CellState<double>& s) { return inner.step(x, s); }
    };
    static_assert(RecurrentCell<StepOnly> && !HoistedCell<StepOnly> && HoistedCell<MGUCell<double>>);
    MGUCell<double> cell(3, 4);
    StepOnly plain(cell);
    Tape<double> t;
    Var<double> x = t.constant(normal_array({5, 3, 3}, 8));
    auto a = unroll(cell, x, {}, {5, 1, 3}, {.reverse = true});
    auto b = unroll(plain, x, {}, {5, 1, 3}, {.reverse = true});
    BOOST_TEST(max_abs_diff(a.output.value(), b.output.value()) < 1e-15);
}

BOOST_AUTO_TEST_CASE(bad_input_names_the_module_and_shapes) {
    LSTM<double> lstm({.input_size = 3, .hidden_size = 4, .num_layers = 2});
    Tape<double> t;
    Var<double> x = t.constant(xt::zeros<double>({5, 2, 3}));
    BOOST_TEST(throws_with<shape_error>(
        [&] {
            lstm(t.constant(xt::zeros<double>({5, 2, 4})));
        },
        {"LSTM", "(5, 2, 4)"}));
    BOOST_TEST(throws_with<shape_error>([&] { lstm(t.constant(xt::zeros<double>({5, 3}))); }, {"LSTM", "(5, 3)"}));
    BOOST_TEST(throws_with<index_error>([&] { lstm(x, {}, {0, 5}); }, {"LSTM", "length 0"}));
    BOOST_TEST(throws_with<index_error>([&] { lstm(x, {}, {6, 5}); }, {"LSTM", "length 6"}));
    BOOST_TEST(throws_with<shape_error>([&] { lstm(x, {}, {5}); }, {"LSTM", "1 lengths", "batch of 2"}));
    BOOST_TEST(throws_with<shape_error>(
        [&] {
            lstm(x, {t.constant(xt::zeros<double>({1, 2, 4})), {}});
        },
        {"LSTM", "(2, 2, 4)", "(1, 2, 4)"}));
    BOOST_TEST(throws_with<value_error>([&] { LSTM<double> bad({.input_size = 3, .hidden_size = 4, .proj_size = 4}); },
                                        {"proj_size"}));
    BOOST_TEST(
        throws_with<value_error>([&] { GRU<double> bad({.input_size = 3, .hidden_size = 0}); }, {"hidden_size"}));
    BOOST_TEST(throws_with<value_error>([&] { RNN<double> bad({.input_size = 3, .hidden_size = 2, .dropout = 1.0}); },
                                        {"RNN", "dropout"}));
}

BOOST_AUTO_TEST_SUITE_END()
