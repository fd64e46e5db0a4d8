// streaming — train on a series, then serve it one time step at a time.
//
// Data: a series of two sines plus N(0, 0.05) noise, the target being the next clean value.
// Training is truncated BPTT with a stateful LSTM: the first 80% of the series is cut into
// B = 8 parallel streams of consecutive chunks of 25 steps (sample k * B + b is chunk k of
// stream b), fit with shuffle = false and batch_size = B, the states reset every epoch.
// Serving: an nn::Streamer steps the trained model over the held-out 20%, one value per
// call at B = 1, keeping the LSTM's state, as a real-time service would.
// Output: microseconds per step (median of blocks of 1,000 steps), the largest difference to
// the whole-sequence run of the same model, and the forecast MAE against the next clean value
// (the noise is not predictable). Exit status 0 when the two runs agree to float rounding and
// the forecast beats repeating the last observation.
//
//   streaming [--epochs 15] [--length 12000] [--hidden 32]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <random>

#include <recur/recur.hpp>

#include "../common/example.hpp"

using namespace recur;

int main(int argc, char** argv) {
    const example::Args args(argc, argv);
    const auto epochs = static_cast<std::size_t>(args.get("epochs", 15));
    const auto length = static_cast<std::size_t>(args.get("length", 12000));
    const auto hidden = static_cast<std::size_t>(args.get("hidden", 32));
    const std::size_t streams = 8, chunk = 25;
    manual_seed(3);

    // clean[t] = sin(0.07 t) + 0.5 sin(0.23 t); observed = clean + noise.
    std::mt19937_64 rng(11);
    std::normal_distribution<float> noise(0.0f, 0.05f);
    std::vector<float> clean(length + 1), observed(length + 1);
    for (std::size_t t = 0; t <= length; ++t) {
        const double s = static_cast<double>(t);
        clean[t] = static_cast<float>(std::sin(0.07 * s) + 0.5 * std::sin(0.23 * s));
        observed[t] = clean[t] + noise(rng);
    }
    const std::size_t n_train = length * 8 / 10;

    // Training: stream b is observed[b * per, (b + 1) * per), cut into chunks of `chunk` steps.
    const std::size_t per = n_train / streams, chunks = per / chunk;
    xt::xarray<float> x = xt::zeros<float>({chunks * streams, chunk, std::size_t(1)}), y = x;
    for (std::size_t k = 0; k < chunks; ++k)
        for (std::size_t b = 0; b < streams; ++b)
            for (std::size_t t = 0; t < chunk; ++t) {
                const std::size_t at = b * per + k * chunk + t;
                x(k * streams + b, t, 0) = observed[at];
                y(k * streams + b, t, 0) = clean[at + 1];
            }

    nn::Sequential<float> model;
    model.add(nn::recurrent_layer(
        std::make_unique<nn::LSTM<float>>(nn::LSTMOptions{.input_size = 1, .hidden_size = hidden, .batch_first = true}),
        nn::Return::sequences, /*stateful=*/true));
    model.emplace<nn::Linear<float>>(hidden, 1);
    optim::Adam<float> adam(model.parameters(), {.lr = 1e-2});
    const train::LossFn<float> mse = [](const Var<float>& p, const Var<float>& t) { return nn::mse_loss(p, t); };
    const auto history = train::fit<float>(model, mse, adam, {x, y},
                                           {.epochs = epochs, .batch_size = streams, .verbose = 0, .shuffle = false});
    std::cout << "trained " << epochs << " epochs of truncated BPTT (" << chunks << " chunks of " << chunk
              << " steps x " << streams << " streams): loss " << history["loss"].front() << " -> "
              << history["loss"].back() << "\n";

    // Serving the held-out part one step at a time.
    model.reset_states();
    model.eval();
    const std::size_t n_test = length - n_train;
    nn::Streamer<float> stream(model);
    std::vector<float> served(n_test);
    std::vector<double> block_us;
    const std::size_t block = 1000;
    for (std::size_t t0 = 0; t0 < n_test; t0 += block) {
        const std::size_t t1 = std::min(n_test, t0 + block);
        const auto start = std::chrono::steady_clock::now();
        for (std::size_t t = t0; t < t1; ++t)
            served[t] = stream.step(std::span<const float>(&observed[n_train + t], 1))[0];
        const auto stop = std::chrono::steady_clock::now();
        block_us.push_back(std::chrono::duration<double, std::micro>(stop - start).count() /
                           static_cast<double>(t1 - t0));
    }
    std::sort(block_us.begin(), block_us.end());
    const double us = block_us[block_us.size() / 2];

    // The same model on the whole held-out sequence in one call.
    xt::xarray<float> whole_in = xt::zeros<float>({std::size_t(1), n_test, std::size_t(1)});
    for (std::size_t t = 0; t < n_test; ++t) whole_in(0, t, 0) = observed[n_train + t];
    model.reset_states();
    Tape<float> tape({.record = false});
    const xt::xarray<float> whole = model(tape.constant(whole_in)).value();
    double max_diff = 0, mae = 0, naive = 0;
    for (std::size_t t = 0; t < n_test; ++t) {
        max_diff = std::max(max_diff, static_cast<double>(std::abs(served[t] - whole(0, t, 0))));
        mae += std::abs(served[t] - clean[n_train + t + 1]) / static_cast<double>(n_test);
        naive += std::abs(observed[n_train + t] - clean[n_train + t + 1]) / static_cast<double>(n_test);
    }
    std::cout << "served " << n_test << " steps one at a time (B = 1, LSTM(" << hidden << ") -> Linear): " << us
              << " us per step (median of blocks of " << block << ")\n"
              << "largest difference to the whole-sequence run: " << max_diff << "\n"
              << "forecast MAE " << mae << " (repeating the last observation: " << naive << ")\n";
    const bool ok = max_diff < 1e-4 && mae < naive;
    std::cout << (ok ? "OK" : "FAILED") << "\n";
    return ok ? 0 : 1;
}
