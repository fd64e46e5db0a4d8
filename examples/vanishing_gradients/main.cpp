// vanishing_gradients — how far back does the gradient reach? A vanilla (tanh) RNN, an LSTM
// and a GRU with the same hidden size read one long random sequence; the loss looks at the
// LAST output only, and we measure ||dLoss/dh_t|| for every step t.
//
// How: each cell is run step by step (cell.step), keeping the hidden output h_t of every step
// as its own Var. After tape.backward(loss), h_t.grad() is dLoss/dh_t — the signal BPTT
// carries from the loss back to step t. Each step back multiplies it by one step's Jacobian
// dh_{t+1}/dh_t. For the RNN that is diag(1 - h^2) W_hh: with PyTorch's default
// initialisation its norm is well below 1, so the gradient shrinks geometrically, and making
// W_hh larger instead makes it explode — the RNN has no knob that keeps it near 1.
// The LSTM's cell state is updated additively, c' = f * c + i * g, so the gradient along c is
// scaled by the forget gate f each step; the GRU's h' = (1 - z) * n + z * h is scaled by its
// update gate z. At the default initialisation these gates sit near sigmoid(0) = 0.5, so an
// untrained LSTM and GRU forget almost as fast as the RNN (the measurement shows it). But a
// gate is a knob: with a forget-gate (LSTM) or update-gate (GRU) bias of 3, i.e. a gate of
// sigmoid(3) = 0.95, the gradient crosses the whole sequence. Training can open these gates
// where the task needs memory; that is why gated cells learn long dependencies (see the
// simple_rnn example) and a tanh RNN does not.
//
// Everything runs in double: the RNN's gradient at t = 0 is far below float's range.
// Goal: the RNN's ||dL/dh_0|| is at least 1e4 times smaller than its ||dL/dh_{T-1}||, while
// the LSTM with forget-gate bias 3 keeps more than 1e-4 of its gradient.
// Output: a table every 10 steps, the ratios, vanishing_gradients.csv and, with gnuplot,
// vanishing_gradients.png (log scale).
//
//   vanishing_gradients [--steps 200] [--hidden 32] [--batch 4] [--seed 1] [--out .]
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <xtensor/xmath.hpp>

#include <recur/recur.hpp>

#include "../common/example.hpp"

using namespace recur;
using T = double;

namespace {

double norm(const xt::xarray<T>& a) {
    double s = 0;
    for (const T v : a) s += double(v) * double(v);
    return std::sqrt(s);
}

// Runs `cell` over x (T, B, I) one step at a time, puts a linear read-out and a squared error
// on the last output only, and returns ||dL/dh_t|| for t = 0..T-1.
template <class Cell>
std::vector<double> gradient_norms(Cell& cell, const xt::xarray<T>& x, const xt::xarray<T>& head,
                                   const xt::xarray<T>& target) {
    Tape<T> tape;
    const std::size_t steps = x.shape()[0];
    Var<T> xs = tape.constant(x);
    nn::CellState<T> state;  // starts at zero
    for (std::size_t k : cell.state_sizes()) state.push_back(tape.constant(xt::zeros<T>({x.shape()[1], k})));
    std::vector<Var<T>> h(steps);
    for (std::size_t t = 0; t < steps; ++t) {
        state = cell.step(select(xs, 0, static_cast<std::ptrdiff_t>(t)), state);
        h[t] = state[0];  // keep each step's output: its grad is dLoss/dh_t after backward
        h[t].retain_grad();  // an intermediate result keeps its gradient only when asked (as in PyTorch)
    }
    Var<T> y = linear(h[steps - 1], tape.constant(head));  // (B, 1), the last output only
    Var<T> err = y - tape.constant(target);
    Var<T> loss = mean(err * err);
    tape.backward(loss);
    std::vector<double> norms(steps);
    for (std::size_t t = 0; t < steps; ++t) norms[t] = norm(h[t].grad());
    return norms;
}

}  // namespace

int main(int argc, char** argv) {
    const example::Args args(argc, argv);
    const auto steps = static_cast<std::size_t>(args.get("steps", 200));
    const auto hidden = static_cast<std::size_t>(args.get("hidden", 32));
    const auto batch = static_cast<std::size_t>(args.get("batch", 4));
    const auto seed = static_cast<std::uint64_t>(args.get("seed", 1));
    const std::string out = args.get_string("out", ".");
    const std::size_t input = 4;
    if (steps < 2) {
        std::fprintf(stderr, "--steps must be at least 2\n");
        return 2;
    }

    // One random sequence x (T, B, I) ~ N(0, 1), a random read-out and target.
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    xt::xarray<T> x = xt::xarray<T>::from_shape({steps, batch, input});
    for (auto& v : x) v = normal(rng);
    xt::xarray<T> head = xt::xarray<T>::from_shape({1, hidden});
    for (auto& v : head) v = normal(rng) / std::sqrt(double(hidden));
    xt::xarray<T> target = xt::xarray<T>::from_shape({batch, 1});
    for (auto& v : target) v = normal(rng);

    // The cells, with PyTorch's default initialisation U(-1/sqrt(H), 1/sqrt(H)).
    manual_seed(seed);
    nn::CellOptions o;
    o.input_size = input;
    o.hidden_size = hidden;
    nn::RNNCell<T> rnn(o);
    nn::LSTMCell<T> lstm(o);
    nn::GRUCell<T> gru(o);
    nn::LSTMCell<T> lstm_fb(o);
    nn::GRUCell<T> gru_ub(o);
    // Gate bias 3: each cell adds bias_ih and bias_hh, so 1.5 in each. LSTM gates are
    // (i, f, g, o): the forget gate is rows [H, 2H). GRU gates are (r, z, n): the update gate
    // z is rows [H, 2H) too.
    for (auto* b : {lstm_fb.bias_ih(), lstm_fb.bias_hh(), gru_ub.bias_ih(), gru_ub.bias_hh()})
        nn::init::constant_slice(*b, hidden, 2 * hidden, 1.5);

    const std::vector<std::string> names = {"RNN (tanh)", "LSTM", "GRU", "LSTM, forget bias 3", "GRU, update bias 3"};
    std::vector<std::vector<double>> g = {gradient_norms(rnn, x, head, target), gradient_norms(lstm, x, head, target),
                                          gradient_norms(gru, x, head, target),
                                          gradient_norms(lstm_fb, x, head, target),
                                          gradient_norms(gru_ub, x, head, target)};

    std::printf("||dLoss/dh_t||, loss on the last output (t = %zu), T = %zu, B = %zu, H = %zu\n\n", steps - 1, steps,
                batch, hidden);
    std::printf("%6s", "t");
    for (const auto& n : names) std::printf("  %19s", n.c_str());
    std::printf("\n");
    std::ofstream csv(out + "/vanishing_gradients.csv");
    csv << "t,rnn,lstm,gru,lstm_forget_bias_3,gru_update_bias_3\n";
    csv.precision(6);
    for (std::size_t t = 0; t < steps; ++t) {
        csv << t;
        for (const auto& m : g) csv << ',' << m[t];
        csv << '\n';
        if (t % 10 == 0 || t == steps - 1) {
            std::printf("%6zu", t);
            for (const auto& m : g) std::printf("  %19.3e", m[t]);
            std::printf("\n");
        }
    }
    csv.close();

    std::printf("\nratio ||dL/dh_0|| / ||dL/dh_%zu||  (how much of the gradient reaches the first step)\n", steps - 1);
    std::vector<double> ratio(g.size());
    for (std::size_t m = 0; m < g.size(); ++m) {
        ratio[m] = g[m][0] / g[m][steps - 1];
        // Steps back until the gradient has fallen by 10x, from the average decay rate.
        const double per_step = std::pow(ratio[m], 1.0 / double(steps - 1));
        std::printf("  %-20s %10.3e   (x%.3f per step: 10x smaller every %.1f steps)\n", names[m].c_str(), ratio[m],
                    per_step, per_step < 1 ? std::log(0.1) / std::log(per_step) : INFINITY);
    }

    example::plot(out + "/vanishing_gradients.gp",
                  "set terminal pngcairo size 900,520\nset datafile separator ','\n"
                  "set output '" +
                      out +
                      "/vanishing_gradients.png'\n"
                      "set title 'Gradient reaching step t from a loss on the last output (T = " +
                      std::to_string(steps) + ", H = " + std::to_string(hidden) +
                      ")'\n"
                      "set xlabel 'time step t'\nset ylabel '||dLoss/dh_t||'\nset logscale y\nset format y '10^{%L}'\n"
                      "set key bottom right\nset grid\n"
                      "plot '" +
                      out +
                      "/vanishing_gradients.csv' every ::1 using 1:2 with lines lw 2 title 'RNN (tanh)', "
                      "'' every ::1 using 1:3 with lines lw 2 title 'LSTM', "
                      "'' every ::1 using 1:4 with lines lw 2 title 'GRU', "
                      "'' every ::1 using 1:5 with lines lw 2 dt 2 title 'LSTM, forget-gate bias 3', "
                      "'' every ::1 using 1:6 with lines lw 2 dt 2 title 'GRU, update-gate bias 3'\n",
                  out + "/vanishing_gradients.csv");

    const bool ok = ratio[0] < 1e-4 && ratio[3] > 1e-4;
    std::printf(
        "\n%s: the RNN's gradient at t = 0 is %.1f orders of magnitude below its gradient at t = %zu; "
        "the LSTM with forget-gate bias 3 loses %.1f\n",
        ok ? "PASS" : "FAIL", -std::log10(ratio[0]), steps - 1, -std::log10(ratio[3]));
    return ok ? 0 : 1;
}
