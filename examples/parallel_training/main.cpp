// parallel_training — data-parallel training of an LSTM on 1..N threads (FitOptions::threads).
//
// Task: x (N, T, I) ~ N(0, 1); the target at every step is y_t = (x_t[0] + x_{t-1}[1]) / 2
// (x_{-1} = 0): one step of memory, learnable by the model. Its variance is 0.5, which is the
// loss of predicting 0.
// Model: LSTM(I -> H, one layer, batch_first, whole sequence) -> Linear(H -> 1), float32,
// Adam(lr), MSE, batch B. Defaults are the benchmarks' M size: B 64, T 100, I 256, H 256.
// For each thread count t = 1..N (N = the processors available), the same initial weights
// and data are trained with train::fit({.threads = t}): each batch is cut into t shards, one
// tape and one thread each, every op inside single-threaded. Then, for comparison, one tape
// with N threads inside each op (set_num_threads(N): BLAS and recur's kernels).
// Output: per run, seconds per epoch (the mean over epochs), speed-up over 1 thread, first
// and final epoch loss. The exit status is 0 when every run's loss fell below 80% of its
// first epoch's (or with a single epoch, when it ran).
//
//   parallel_training [--epochs 3] [--samples 512] [--threads N] [--batch 64] [--steps 100]
//                     [--input 256] [--hidden 256] [--lr 0.003]
#include <cstdio>
#include <iostream>
#include <random>
#include <string>

#include <recur/recur.hpp>

#include "../common/example.hpp"

using namespace recur;

namespace {

struct Run {
    std::string label;
    double seconds_per_epoch = 0;
    double first_loss = 0;
    double final_loss = 0;
};

}  // namespace

int main(int argc, char** argv) {
    const example::Args args(argc, argv);
    const auto epochs = static_cast<std::size_t>(args.get("epochs", 3));
    const auto samples = static_cast<std::size_t>(args.get("samples", 512));
    const auto max_threads = static_cast<std::size_t>(args.get("threads", num_procs()));
    const auto batch = static_cast<std::size_t>(args.get("batch", 64));
    const auto steps = static_cast<std::size_t>(args.get("steps", 100));
    const auto input = static_cast<std::size_t>(args.get("input", 256));
    const auto hidden = static_cast<std::size_t>(args.get("hidden", 256));
    const double lr = args.get_double("lr", 3e-3);
    if (epochs == 0 || samples == 0 || max_threads == 0 || batch == 0 || steps == 0 || input < 2 || hidden == 0) {
        std::cerr << "parallel_training: epochs, samples, threads, batch, steps and hidden must be >= 1, input >= 2\n";
        return 2;
    }

    // Data: y_t = (x_t[0] + x_{t-1}[1]) / 2.
    train::Dataset<float> data{xt::xarray<float>::from_shape({samples, steps, input}),
                               xt::xarray<float>::from_shape({samples, steps, std::size_t(1)}),
                               {}};
    std::mt19937_64 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto& v : data.x) v = normal(rng);
    for (std::size_t n = 0; n < samples; ++n)
        for (std::size_t t = 0; t < steps; ++t)
            data.y(n, t, 0) = 0.5f * (data.x(n, t, 0) + (t > 0 ? data.x(n, t - 1, 1) : 0.0f));

    std::printf(
        "LSTM(%zu -> %zu) -> Linear(%zu -> 1), float32, batch %zu, T %zu, %zu samples (%zu batches), "
        "%zu epochs, %d processors\n",
        input, hidden, hidden, batch, steps, samples, (samples + batch - 1) / batch, epochs, num_procs());

    auto train_once = [&](const std::string& label, std::size_t threads, int op_threads) {
        set_num_threads(op_threads);
        manual_seed(42);  // the same initial weights for every run
        nn::Sequential<float> model;
        model.add(nn::recurrent_layer(std::make_unique<nn::LSTM<float>>(nn::LSTMOptions{
                                          .input_size = input, .hidden_size = hidden, .batch_first = true}),
                                      nn::Return::sequences));
        model.emplace<nn::Linear<float>>(hidden, 1);
        optim::Adam<float> adam(model.parameters(), {.lr = lr});
        const train::LossFn<float> mse = [](const Var<float>& p, const Var<float>& t) { return nn::mse_loss(p, t); };
        const auto h =
            train::fit<float>(model, mse, adam, data,
                              {.epochs = epochs, .batch_size = batch, .verbose = 0, .seed = 1, .threads = threads});
        Run r{label, 0, h["loss"].front(), h["loss"].back()};
        for (double s : h["seconds"]) r.seconds_per_epoch += s / static_cast<double>(h.epochs());
        return r;
    };

    std::vector<Run> runs;
    std::printf("\n%-34s %9s %9s %11s %11s\n", "run", "s/epoch", "speed-up", "first loss", "final loss");
    auto print = [&](const Run& r) {
        std::printf("%-34s %9.3f %8.2fx %11.5f %11.5f\n", r.label.c_str(), r.seconds_per_epoch,
                    runs.front().seconds_per_epoch / r.seconds_per_epoch, r.first_loss, r.final_loss);
        std::fflush(stdout);
    };
    for (std::size_t t = 1; t <= max_threads; ++t) {
        runs.push_back(train_once("data-parallel, " + std::to_string(t) + " thread" + (t > 1 ? "s" : ""), t, 1));
        print(runs.back());
    }
    if (max_threads > 1) {
        runs.push_back(train_once("one tape, " + std::to_string(max_threads) + " threads inside ops", 1,
                                  static_cast<int>(max_threads)));
        print(runs.back());
    }

    bool learned = true;
    for (const auto& r : runs) learned = learned && (epochs == 1 || r.final_loss < 0.8 * r.first_loss);
    std::printf("\nthe loss of predicting 0 is 0.5; %s\n",
                learned ? "every run's loss fell" : "some run's loss did not fall below 80% of its first epoch's");
    return learned ? 0 : 1;
}
