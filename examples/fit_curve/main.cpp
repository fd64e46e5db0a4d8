// fit_curve — fits y = sin(x) on [-3, 3] with a one-hidden-layer tanh network.
//
// The smallest complete use of the engine: Parameters that live across steps, a fresh
// graph recorded on one Tape each step (tape.clear() keeps its buffers, so after the first
// step nothing is allocated), backward, and plain gradient descent written out by hand.
//
//   x (N, 1) -> linear(W1 (H, 1), b1 (H)) -> tanh -> linear(W2 (1, H), b2 (1)) -> y_hat (N, 1)
//   loss = mean((y_hat - sin x)^2)
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>

#include <xtensor/xbuilder.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xrandom.hpp>

#include <recur/recur.hpp>

using namespace recur;

namespace {

constexpr std::size_t N = 128;  // training points
constexpr std::size_t H = 16;  // hidden units
constexpr int steps = 5000;
constexpr int print_every = 500;
constexpr float learning_rate = 0.1f;

// U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the PyTorch default for a linear layer.
xt::xarray<float> uniform_init(const std::vector<std::size_t>& shape, std::size_t fan_in, std::mt19937& rng) {
    const float bound = 1.0f / std::sqrt(static_cast<float>(fan_in));
    std::uniform_real_distribution<float> u(-bound, bound);
    xt::xarray<float> a = xt::zeros<float>(shape);
    for (auto& v : a) v = u(rng);
    return a;
}

}  // namespace

int main() {
    std::mt19937 rng(42);
    Parameter<float> W1(uniform_init({H, 1}, 1, rng));
    Parameter<float> b1(uniform_init({H}, 1, rng));
    Parameter<float> W2(uniform_init({1, H}, H, rng));
    Parameter<float> b2(uniform_init({1}, H, rng));
    Parameter<float>* params[] = {&W1, &b1, &W2, &b2};

    // x (N, 1) evenly spaced on [-3, 3]; y = sin x.
    const xt::xarray<float> xs = xt::reshape_view(xt::linspace<float>(-3.0f, 3.0f, N), {N, std::size_t(1)});
    const xt::xarray<float> ys = xt::sin(xs);

    Tape<float> tape;
    float first_loss = 0, loss_value = 0;
    const auto start = std::chrono::steady_clock::now();
    for (int step = 0; step <= steps; ++step) {
        tape.clear();
        for (auto* p : params) p->zero_grad();

        Var<float> x = tape.constant(xs);
        Var<float> y = tape.constant(ys);
        Var<float> hidden = tanh(linear(x, tape.bind(W1), tape.bind(b1)));
        Var<float> y_hat = linear(hidden, tape.bind(W2), tape.bind(b2));
        Var<float> err = y_hat - y;
        Var<float> loss = mean(err * err);
        loss_value = loss.item();
        if (step == 0) first_loss = loss_value;
        if (step % print_every == 0) std::printf("step %5d  loss %.6f\n", step, static_cast<double>(loss_value));
        if (step == steps) break;  // report the loss of the final parameters, no update after

        tape.backward(loss);
        for (auto* p : params) p->value() -= learning_rate * p->grad();
    }
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

    // A few points of the fitted curve, from the Parameters' final values.
    {
        Tape<float> inference(TapeOptions{.record = false});
        xt::xarray<float> probe = {-3.0f, -1.5f, 0.0f, 1.5f, 3.0f};
        probe.reshape({5, 1});
        Var<float> fit = linear(tanh(linear(inference.constant(probe), inference.bind(W1), inference.bind(b1))),
                                inference.bind(W2), inference.bind(b2));
        for (std::size_t i = 0; i < probe.shape(0); ++i)
            std::printf("x % .2f  sin(x) % .4f  network % .4f\n", static_cast<double>(probe(i, 0)),
                        std::sin(static_cast<double>(probe(i, 0))), static_cast<double>(fit.value()(i, 0)));
    }
    std::printf("final loss %.6f (from %.6f) after %d steps of gradient descent, %.0f ms\n",
                static_cast<double>(loss_value), static_cast<double>(first_loss), steps, ms);
    // The smoke test runs this program: fail unless the fit is good.
    if (!(loss_value < 0.01f * first_loss)) {
        std::fprintf(stderr, "fit_curve: the loss did not fall below 1%% of its start\n");
        return EXIT_FAILURE;
    }
    return EXIT_SUCCESS;
}
