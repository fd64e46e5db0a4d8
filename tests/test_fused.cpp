// The fused fast path equals the composed cells: lstm_pointwise / gru_pointwise against the
// same step written with primitives, single steps and whole unrolls (outputs, states and every
// gradient), in double to 1e-12 and in float to float rounding; bit-identical results for any
// OpenMP thread count; saturation; and the fused ops' input checks.
// (Their finite-difference gradient checks are in op_gradients.)
#include <boost/test/unit_test.hpp>

#include <array>
#include <cmath>
#include <random>

#include <omp.h>

#include <recur/recur.hpp>

#include "support.hpp"

using namespace recur;
using namespace recur::nn;

namespace {

template <class T>
xt::xarray<T> random_array(const Shape& shape, std::uint64_t seed, double scale = 1.0) {
    return recur::testing::uniform_array<T>(shape, seed, -scale, scale);
}

// max |a - b| / max(|a|, |b|, floor): relative, but absolute for values below floor.
template <class T>
double max_rel_diff(const xt::xarray<T>& a, const xt::xarray<T>& b, double floor = 1e-3) {
    BOOST_REQUIRE_MESSAGE(a.shape() == b.shape(), shape_str(a.shape()) + " vs " + shape_str(b.shape()));
    double m = 0;
    for (std::size_t k = 0; k < a.size(); ++k) {
        const double x = a.data()[k], y = b.data()[k];
        m = std::max(m, std::abs(x - y) / std::max({std::abs(x), std::abs(y), floor}));
    }
    return m;
}

// A cell that runs `Inner`'s composed reference step through the generic unroll (it is hoisted
// but has no step_at, so unroll selects each step and calls step_projected).
template <class Inner>
class Composed : public Module<typename Inner::value_type> {
public:
    using T = typename Inner::value_type;
    using value_type = T;
    explicit Composed(Inner& inner) : inner_(inner) {}
    std::size_t input_size() const { return inner_.input_size(); }
    std::vector<std::size_t> state_sizes() const { return inner_.state_sizes(); }
    CellState<T> step(const Var<T>& x, const CellState<T>& s) { return step_projected(project_input(x), s); }
    Var<T> project_input(const Var<T>& x) { return inner_.project_input(x); }
    CellState<T> step_projected(const Var<T>& xp, const CellState<T>& s) { return inner_.step_composed(xp, s); }

private:
    Inner& inner_;
};

// Everything one unroll produces: outputs, final state, and the gradients of the input, the
// initial state and every parameter for a loss that weights each output element differently.
template <class T>
struct RunResult {
    std::vector<xt::xarray<T>> values;
};

template <class Cell, class Runner>
RunResult<typename Cell::value_type> run(Cell& cell, Runner unroll_with, const Shape& xshape, bool batch_first,
                                         bool reverse) {
    using T = typename Cell::value_type;
    Tape<T> tape;
    cell.zero_grad();
    Var<T> x = tape.variable(random_array<T>(xshape, 11));
    const std::size_t batch = xshape[batch_first ? 0 : 1];
    CellState<T> init;
    for (std::size_t k = 0; k < cell.state_sizes().size(); ++k)
        init.push_back(tape.variable(random_array<T>({batch, cell.state_sizes()[k]}, 20 + k)));
    Sequence<T> seq = unroll_with(x, init, UnrollOptions{reverse, batch_first});
    Var<T> loss = sum(seq.output * tape.constant(random_array<T>(seq.output.shape(), 31)));
    for (auto& s : seq.state) loss = loss + sum(s * tape.constant(random_array<T>(s.shape(), 32)));
    tape.backward(loss);
    RunResult<T> r;
    r.values.push_back(seq.output.value());
    for (auto& s : seq.state) r.values.push_back(s.value());
    r.values.push_back(x.grad());
    for (auto& s : init) r.values.push_back(s.grad());
    for (auto& [name, p] : cell.named_parameters()) r.values.push_back(p->grad());
    return r;
}

// The fused cell (step_at through unroll) against its composed reference.
template <class Cell>
double fused_vs_composed(Cell& cell, const Shape& xshape, bool batch_first, bool reverse) {
    using T = typename Cell::value_type;
    Composed<Cell> reference(cell);
    auto fused = run(
        cell, [&](auto& x, auto& s, UnrollOptions o) { return unroll(cell, x, s, {}, o); }, xshape, batch_first,
        reverse);
    auto composed = run(
        cell, [&](auto& x, auto& s, UnrollOptions o) { return unroll(reference, x, s, {}, o); }, xshape, batch_first,
        reverse);
    BOOST_REQUIRE_EQUAL(fused.values.size(), composed.values.size());
    double worst = 0;
    for (std::size_t k = 0; k < fused.values.size(); ++k)
        worst = std::max(worst, max_rel_diff<T>(fused.values[k], composed.values[k]));
    return worst;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(fused)

BOOST_AUTO_TEST_CASE(lstm_unroll_equals_composed_in_double) {
    LSTMCell<double> cell({.input_size = 5, .hidden_size = 7});
    for (bool batch_first : {false, true})
        for (bool reverse : {false, true}) {
            const Shape xs = batch_first ? Shape{3, 6, 5} : Shape{6, 3, 5};
            const double d = fused_vs_composed(cell, xs, batch_first, reverse);
            BOOST_TEST(d < 1e-12, "batch_first " << batch_first << " reverse " << reverse << ": " << d);
        }
}

BOOST_AUTO_TEST_CASE(lstm_with_projection_equals_composed) {
    LSTMCell<double> cell({.input_size = 4, .hidden_size = 6, .proj_size = 3});
    BOOST_TEST(fused_vs_composed(cell, {5, 2, 4}, false, false) < 1e-12);
}

BOOST_AUTO_TEST_CASE(gru_unroll_equals_composed_in_double) {
    GRUCell<double> cell({.input_size = 5, .hidden_size = 7});
    for (bool batch_first : {false, true})
        for (bool reverse : {false, true}) {
            const Shape xs = batch_first ? Shape{3, 6, 5} : Shape{6, 3, 5};
            const double d = fused_vs_composed(cell, xs, batch_first, reverse);
            BOOST_TEST(d < 1e-12, "batch_first " << batch_first << " reverse " << reverse << ": " << d);
        }
}

BOOST_AUTO_TEST_CASE(fused_equals_composed_in_float_to_rounding) {
    // Widths that exercise both the SIMD body and the scalar tail of the kernels.
    LSTMCell<float> lstm({.input_size = 8, .hidden_size = 37});
    GRUCell<float> gru({.input_size = 8, .hidden_size = 37});
    const double dl = fused_vs_composed(lstm, {4, 20, 8}, true, false);
    const double dg = fused_vs_composed(gru, {4, 20, 8}, true, false);
    BOOST_TEST(dl < 2e-4, "lstm " << dl);  // 20 chained float steps: rounding, not a formula error (O(1))
    BOOST_TEST(dg < 2e-4, "gru " << dg);
    // More lanes than one chunk of the two-pass gate math (row_chunk = 256), with a partial tail.
    LSTMCell<float> wide_lstm({.input_size = 8, .hidden_size = 300});
    GRUCell<float> wide_gru({.input_size = 8, .hidden_size = 300});
    const double wl = fused_vs_composed(wide_lstm, {3, 6, 8}, true, false);
    const double wg = fused_vs_composed(wide_gru, {3, 6, 8}, true, false);
    // Gradients here sum 4H = 1200 terms per input element: float rounding reaches a few 1e-7
    // absolute on values below the 1e-3 floor of max_rel_diff (2.4e-4 under clang); a wrong
    // chunk or tail would be O(1).
    BOOST_TEST(wl < 1e-3, "lstm, H = 300: " << wl);
    BOOST_TEST(wg < 1e-3, "gru, H = 300: " << wg);
}

BOOST_AUTO_TEST_CASE(single_steps_equal_composed) {
    LSTMCell<double> lstm({.input_size = 3, .hidden_size = 4});
    GRUCell<double> gru({.input_size = 3, .hidden_size = 4});
    Tape<double> t;
    Var<double> x = t.variable(random_array<double>({2, 3}, 41));
    Var<double> h = t.variable(random_array<double>({2, 4}, 42));
    Var<double> c = t.variable(random_array<double>({2, 4}, 43));
    auto a = lstm.step(x, {h, c});
    auto b = lstm.step_composed(lstm.project_input(x), {h, c});
    BOOST_TEST(max_rel_diff(a[0].value(), b[0].value()) < 1e-13);
    BOOST_TEST(max_rel_diff(a[1].value(), b[1].value()) < 1e-13);
    auto g = gru.step(x, {h});
    auto r = gru.step_composed(gru.project_input(x), {h});
    BOOST_TEST(max_rel_diff(g[0].value(), r[0].value()) < 1e-13);
}

BOOST_AUTO_TEST_CASE(threaded_steps_agree_with_one_thread_and_repeat_exactly) {
    // Large enough to run the fused rows in parallel (B * 4H above the grain) and to split the
    // GEMMs. The fused kernels give identical elements for any thread count; a split GEMM may
    // not (OpenBLAS picks kernels by size), so 1 and 2 threads agree to float rounding, and two
    // runs on 2 threads agree exactly.
    LSTM<float> lstm({.input_size = 16, .hidden_size = 160, .batch_first = true});
    GRU<float> gru({.input_size = 16, .hidden_size = 160, .batch_first = true});
    const xt::xarray<float> x = random_array<float>({64, 4, 16}, 51);
    auto once = [&](int threads) {
        omp_set_num_threads(threads);
        std::vector<xt::xarray<float>> out;
        for (Module<float>* m : {static_cast<Module<float>*>(&lstm), static_cast<Module<float>*>(&gru)}) {
            Tape<float> t;
            m->zero_grad();
            Var<float> xv = t.variable(x);
            Var<float> y = m == &lstm ? lstm(xv).output : gru(xv).output;
            t.backward(sum(y * y));
            out.push_back(y.value());
            out.push_back(xv.grad());
            for (auto& [name, p] : m->named_parameters()) out.push_back(p->grad());
        }
        return out;
    };
    const auto one = once(1), two = once(2), again = once(2);
    omp_set_num_threads(1);
    BOOST_REQUIRE_EQUAL(one.size(), two.size());
    for (std::size_t k = 0; k < one.size(); ++k) {
        BOOST_TEST(max_rel_diff(one[k], two[k]) < 1e-4, "array " << k << ": " << max_rel_diff(one[k], two[k]));
        BOOST_TEST((two[k] == again[k]), "array " << k << " differs between two runs on 2 threads");
    }
}

// Live nodes of a per-step op (lstm_step, gru_step) on a tape.
template <class T>
std::size_t step_nodes(Tape<T>& t) {
    std::size_t n = 0;
    for (std::size_t i = 0; i < t.capacity(); ++i) {
        const auto& node = t.node(static_cast<std::uint32_t>(i));
        const std::string op = node.op;
        n += node.live && node.owner == recur::detail::no_node && (op == "lstm_step" || op == "gru_step");
    }
    return n;
}

// Inference runs a whole layer in one node (lstm_sequence / gru_sequence) instead of a node per
// step: the same results as a recorded forward, for stacks, both directions, lengths, both
// layouts, in double and float.
template <class T, class Module>
void inference_equals_recorded(Module& m, bool batch_first, double tol, double floor = 1e-3) {
    const std::size_t batch = 3, steps = 7;
    const Shape xs = batch_first ? Shape{batch, steps, 5} : Shape{steps, batch, 5};
    const xt::xarray<T> x = random_array<T>(xs, 71);
    const std::vector<std::int64_t> lengths{7, 2, 5};
    for (const auto& lens : {std::vector<std::int64_t>{}, lengths}) {
        release_cached_tape_memory();  // each tape starts empty: its nodes are all this forward's
        Tape<T> recorded;
        auto a = m.forward(recorded.constant(x), {}, lens);
        release_cached_tape_memory();
        Tape<T> inference({.record = false});
        auto b = m.forward(inference.constant(x), {}, lens);
        BOOST_TEST(max_rel_diff<T>(a.output.value(), b.output.value(), floor) <= tol);
        BOOST_TEST_REQUIRE(a.state.size() == b.state.size());
        for (std::size_t k = 0; k < a.state.size(); ++k)
            BOOST_TEST(max_rel_diff<T>(a.state[k].value(), b.state[k].value(), floor) <= tol);
        BOOST_TEST(step_nodes(recorded) == steps * (m.named_parameters().size() / 4));  // a node per step and cell
        BOOST_TEST(step_nodes(inference) == 0);  // no node per step
    }
}

BOOST_AUTO_TEST_CASE(inference_runs_whole_layers_with_the_recorded_results) {
    for (bool bf : {false, true}) {
        LSTM<double> lstm(
            {.input_size = 5, .hidden_size = 4, .num_layers = 2, .batch_first = bf, .bidirectional = true});
        GRU<double> gru({.input_size = 5, .hidden_size = 4, .num_layers = 2, .batch_first = bf, .bidirectional = true});
        // To rounding: both paths run the same lane code on the pre-activations, but inference
        // sums them in another order: x_t w_ih^T and h w_hh^T in one FMA chain per element, started
        // at the biases (ops/gate_product.hpp), where the recorded forward projects the whole
        // sequence, adds the biases and then accumulates h w_hh^T. So float values are compared
        // relative to max(|value|, 1) (they are O(1); 2 ulp of 1 is 2.4e-7), double ones relative.
        inference_equals_recorded<double>(lstm, bf, 1e-13);
        inference_equals_recorded<double>(gru, bf, 1e-13);
        LSTM<float> lstm_f({.input_size = 5, .hidden_size = 20, .batch_first = bf, .bidirectional = true});
        GRU<float> gru_f({.input_size = 5, .hidden_size = 20, .batch_first = bf});
        inference_equals_recorded<float>(lstm_f, bf, 1e-6, 1.0);
        inference_equals_recorded<float>(gru_f, bf, 1e-6, 1.0);
    }
    // Rows longer than one chunk of the two-pass row gate math (256 lanes), and a last tile of
    // 12 of its 16 lanes (300 = 18 x 16 + 12).
    LSTM<float> wide_lstm({.input_size = 5, .hidden_size = 300});
    GRU<float> wide_gru({.input_size = 5, .hidden_size = 300, .batch_first = true});
    inference_equals_recorded<float>(wide_lstm, false, 1e-6, 1.0);
    inference_equals_recorded<float>(wide_gru, true, 1e-6, 1.0);
    // With a projection the LSTM steps (no whole-layer kernel), with the same results.
    LSTM<double> projected({.input_size = 5, .hidden_size = 4, .proj_size = 3});
    {
        const xt::xarray<double> x = random_array<double>({7, 3, 5}, 72);
        Tape<double> recorded;
        Tape<double> inference({.record = false});
        BOOST_TEST(max_rel_diff<double>(projected(recorded.constant(x)).output.value(),
                                        projected(inference.constant(x)).output.value()) <= 1e-14);
    }
}

// b_ih given to the whole-layer kernels equals b_ih added to xs first, bit for bit (the layers'
// inference projects without the bias and passes it: one pass over (T, B, G) fewer).
BOOST_AUTO_TEST_CASE(whole_layer_kernels_add_the_input_bias_as_a_biased_projection_would) {
    Tape<double> t({.record = false});
    const xt::xarray<double> xv = random_array<double>({5, 2, 12}, 80), bv = random_array<double>({12}, 81);
    auto xs = t.constant(xv), b_ih = t.constant(bv);
    auto biased = t.constant(xt::xarray<double>(xv + bv));
    auto h = t.constant(random_array<double>({2, 3}, 82)), c = t.constant(random_array<double>({2, 3}, 83));
    auto w = t.constant(random_array<double>({12, 3}, 84)), b_hh = t.constant(random_array<double>({12}, 85));
    for (bool reverse : {false, true}) {
        auto a = lstm_sequence(xs, 0, reverse, h, c, w, b_hh, {}, b_ih);
        auto e = lstm_sequence(biased, 0, reverse, h, c, w, b_hh);
        BOOST_TEST(max_rel_diff<double>(a.output.value(), e.output.value()) == 0.0);
        BOOST_TEST(max_rel_diff<double>(a.c.value(), e.c.value()) == 0.0);
    }
    const xt::xarray<double> gv = random_array<double>({5, 2, 9}, 86), gb = random_array<double>({9}, 87);
    auto gs = t.constant(gv), g_ih = t.constant(gb), g_biased = t.constant(xt::xarray<double>(gv + gb));
    auto gw = t.constant(random_array<double>({9, 3}, 88)), g_hh = t.constant(random_array<double>({9}, 89));
    for (const auto& lengths : {std::vector<std::int64_t>{}, std::vector<std::int64_t>{5, 2}}) {
        auto a = gru_sequence(gs, 0, false, h, gw, g_hh, lengths, g_ih);
        auto e = gru_sequence(g_biased, 0, false, h, gw, g_hh, lengths);
        BOOST_TEST(max_rel_diff<double>(a.output.value(), e.output.value()) == 0.0);
        BOOST_TEST(max_rel_diff<double>(a.h.value(), e.h.value()) == 0.0);
    }
    BOOST_TEST(recur::testing::throws_with<shape_error>(
        [&] { (void)gru_sequence(gs, 0, false, h, gw, g_hh, {}, b_ih); }, {"gru_sequence", "b_ih", "(9,)", "(12,)"}));
}

void project_steps_as_linear_would(Precision precision) {
    Tape<float> t({.record = false, .precision = precision});
    // (B, I, H) and the tolerance, relative to max(|value|, 1) (the values are O(1)). f32 fuses the
    // projection into its tiles at the first two (the second with weights of 6 and 8 MiB). The
    // others have a batch below a tile's rows in every build (6 with AVX-512, 3 with 16 vector
    // registers): at the third the LSTM adds rows projected a block of steps at a time (B 4H I =
    // 2^22 multiply-adds per step) and the GRU projects by linear first, as both do at the fourth,
    // where inference and the reference make the same bits. bf16 projects a block of steps at a
    // time from 2^22 multiply-adds per step, else by linear.
    struct Size {
        std::size_t batch, in, hidden;
        double tol;
    };
    const std::array<Size, 4> sizes{{{64, 256, 128, 2e-6}, {8, 512, 512, 2e-6}, {2, 1024, 512, 2e-6}, {2, 5, 4, 0.0}}};
    for (const auto& [batch, in, hidden, tol] : sizes)
        for (const std::size_t time_axis : {std::size_t(0), std::size_t(1)}) {
            const std::size_t steps = 13;
            const Shape xs_shape = time_axis == 0 ? Shape{steps, batch, in} : Shape{batch, steps, in};
            // Weights at the layers' init scale (1 / sqrt(fan-in)): with uniform(-1, 1) weights of
            // 128 units the recurrence is chaotic and doubles any rounding difference every step.
            const double si = 1.0 / std::sqrt(double(in)), sh = 1.0 / std::sqrt(double(hidden));
            auto x = t.constant(random_array<float>(xs_shape, 90));
            auto h = t.constant(random_array<float>({batch, hidden}, 91));
            auto c = t.constant(random_array<float>({batch, hidden}, 92));
            auto lw_ih = t.constant(random_array<float>({4 * hidden, in}, 93, si));
            auto lw = t.constant(random_array<float>({4 * hidden, hidden}, 94, sh));
            auto lb = t.constant(random_array<float>({4 * hidden}, 95));
            auto gw_ih = t.constant(random_array<float>({3 * hidden, in}, 96, si));
            auto gw = t.constant(random_array<float>({3 * hidden, hidden}, 97, sh));
            auto gb = t.constant(random_array<float>({3 * hidden}, 98));
            std::vector<std::int64_t> lengths(batch, 13);
            lengths[1] = 4;
            for (bool reverse : {false, true})
                for (const auto& lens : {std::vector<std::int64_t>{}, lengths}) {
                    auto a = lstm_sequence(x, time_axis, reverse, h, c, lw, lb, lens, lb, lw_ih);
                    auto e = lstm_sequence(linear(x, lw_ih), time_axis, reverse, h, c, lw, lb, lens, lb);
                    BOOST_TEST(max_rel_diff<float>(a.output.value(), e.output.value(), 1.0) <= tol);
                    BOOST_TEST(max_rel_diff<float>(a.c.value(), e.c.value(), 1.0) <= tol);
                    auto again = lstm_sequence(x, time_axis, reverse, h, c, lw, lb, lens, lb, lw_ih);
                    BOOST_TEST((again.output.value() == a.output.value()));
                    auto ga = gru_sequence(x, time_axis, reverse, h, gw, gb, lens, gb, gw_ih);
                    auto ge = gru_sequence(linear(x, gw_ih), time_axis, reverse, h, gw, gb, lens, gb);
                    BOOST_TEST(max_rel_diff<float>(ga.output.value(), ge.output.value(), 1.0) <= tol);
                    BOOST_TEST(max_rel_diff<float>(ga.h.value(), ge.h.value(), 1.0) <= tol);
                }
        }
}

// w_ih given to the whole-layer kernels equals projecting xs by linear first, to float rounding
// where the kernels project the steps themselves: in f32 (and double) from a tile's rows up (6;
// the steps' products sum x_t w_ih^T and h w_hh^T in one chain, ops/gate_product.hpp), in bf16 at
// sizes whose steps are projected one block at a time (B G I >= 2^22: the packed matmul, 13
// steps = a full block and a partial one; the sums' order may differ from linear's). Bit for bit
// where they project by linear too (a batch of 2). Repeated runs give the same bits.
BOOST_AUTO_TEST_CASE(whole_layer_kernels_project_their_steps_as_linear_would) {
    for (const Precision precision : {Precision::f32, Precision::bf16}) project_steps_as_linear_would(precision);
    Tape<float> t({.record = false});
    auto x = t.constant(random_array<float>({4, 2, 5}, 99));
    auto h = t.zeros({2, 3});
    auto w = t.constant(random_array<float>({9, 3}, 100));
    auto w_ih = t.constant(random_array<float>({9, 6}, 101));
    BOOST_TEST(recur::testing::throws_with<shape_error>(
        [&] { (void)gru_sequence(x, 0, false, h, w, Var<float>(), {}, Var<float>(), w_ih); },
        {"gru_sequence", "w_ih must be (9, I)", "(9, 6)", "(4, 2, 5)"}));
}

BOOST_AUTO_TEST_CASE(whole_layer_kernels_are_inference_only_and_check_their_input) {
    Tape<double> t;
    auto xs = t.constant(random_array<double>({4, 2, 12}, 73));
    auto h = t.zeros({2, 3}), c = t.zeros({2, 3});
    auto w = t.variable(random_array<double>({12, 3}, 74));
    BOOST_TEST(recur::testing::throws_with<tape_error>(
        [&] { (void)lstm_sequence(xs, 0, false, h, c, w, Var<double>()); }, {"lstm_sequence", "inference only"}));
    Tape<double> inference({.record = false});
    auto xi = inference.constant(random_array<double>({4, 2, 9}, 75));
    auto hi = inference.zeros({2, 3});
    auto wi = inference.constant(random_array<double>({9, 3}, 76));
    BOOST_TEST(recur::testing::throws_with<index_error>(
        [&] {
            (void)gru_sequence(xi, 0, false, hi, wi, Var<double>(), {1, 5});
        },
        {"gru_sequence", "length 5"}));
    BOOST_TEST(recur::testing::throws_with<shape_error>(
        [&] { (void)gru_sequence(xi, 1, false, hi, wi, Var<double>()); }, {"gru_sequence", "xs must be"}));
}

BOOST_AUTO_TEST_CASE(saturated_gates_stay_finite) {
    Tape<float> t;
    const std::size_t b = 2, h = 20;
    xt::xarray<float> big = random_array<float>({b, 4 * h}, 61, 1e4);
    Var<float> xg = t.variable(big), hg = t.variable(-big), c = t.variable(random_array<float>({b, h}, 62));
    Var<float> xg3 = t.variable(random_array<float>({b, 3 * h}, 63, 1e4));
    Var<float> hg3 = t.variable(random_array<float>({b, 3 * h}, 64, 1e4));
    auto lstm = lstm_pointwise(xg * 2.0f, hg, c);  // pre-activations ±1e4
    Var<float> g = gru_pointwise(xg3, hg3, c);
    t.backward(sum(lstm.h) + sum(lstm.c) + sum(g));
    for (const auto* a :
         {&lstm.h.value(), &lstm.c.value(), &g.value(), &xg.grad(), &hg.grad(), &c.grad(), &xg3.grad(), &hg3.grad()})
        BOOST_TEST(xt::all(xt::isfinite(*a)));
}

BOOST_AUTO_TEST_CASE(bad_shapes_name_the_op_and_the_shapes) {
    using recur::testing::throws_with;
    Tape<float> t;
    auto v = [&](const Shape& s) { return t.variable(xt::xarray<float>::from_shape(s)); };
    BOOST_TEST(throws_with<shape_error>(
        [&] {
            lstm_pointwise(v({2, 12}), v({2, 12}), v({2, 4}));
        },
        {"lstm_pointwise", "(2, 12)", "(2, 4)"}));
    BOOST_TEST(throws_with<shape_error>(
        [&] {
            lstm_pointwise(v({2, 16}), v({3, 16}), v({2, 4}));
        },
        {"lstm_pointwise", "hg", "(3, 16)"}));
    BOOST_TEST(throws_with<shape_error>(
        [&] {
            gru_pointwise(v({2, 9}), v({2, 9}), v({2, 3, 1}));
        },
        {"gru_pointwise", "(2, 3, 1)"}));
    BOOST_TEST(throws_with<shape_error>(
        [&] {
            gru_step(v({5, 3, 9}), 1, 0, v({2, 3}), v({9, 3}));
        },
        {"gru_step", "(B, T, 3H)", "(5, 3, 9)"}));
    BOOST_TEST(throws_with<shape_error>(
        [&] {
            gru_step(v({5, 2, 9}), 0, 0, v({2, 3}), v({9, 4}));
        },
        {"gru_step", "w_hh", "(9, 4)"}));
    BOOST_TEST(throws_with<shape_error>(
        [&] {
            lstm_step(v({5, 2, 16}), 0, 0, v({2, 4}), v({2, 4}), v({16, 4}), v({12}));
        },
        {"lstm_step", "b_hh", "b_hh (12"}));
    BOOST_TEST(throws_with<shape_error>(
        [&] {
            lstm_step(v({5, 2, 16}), 0, 0, v({3, 4}), v({2, 4}), v({16, 4}));
        },
        {"lstm_step", "h (3, 4)", "c (2, 4)"}));
    BOOST_TEST(throws_with<index_error>(
        [&] {
            lstm_step(v({5, 2, 16}), 0, 5, v({2, 4}), v({2, 4}), v({16, 4}));
        },
        {"lstm_step", "step 5", "5 time steps"}));
    BOOST_TEST(throws_with<index_error>(
        [&] {
            gru_step(v({5, 2, 9}), 2, 0, v({2, 3}), v({9, 3}));
        },
        {"gru_step", "time_axis"}));
    Tape<float> other;
    Var<float> elsewhere = other.variable(xt::xarray<float>::from_shape({2, 4}));
    BOOST_TEST(throws_with<tape_error>(
        [&] {
            lstm_pointwise(v({2, 16}), v({2, 16}), elsewhere);
        },
        {"lstm_pointwise", "different tapes"}));
}

BOOST_AUTO_TEST_SUITE_END()
