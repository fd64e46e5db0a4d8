// Streaming inference: microseconds per time step of LSTM(1 -> 64) -> Linear(64, 1) at B = 1.
//   Streamer:   nn::Streamer stepping one step per call (state kept, no tape, no allocation);
//   ModuleStep: the module API, one step per call on a reused no-grad tape with the state
//               carried by hand (what a user writes without a Streamer).
// Each benchmark iteration is 10,000 steps; report the median over repetitions, per step:
//   OMP_NUM_THREADS=1 taskset -c 1 build/benchmarks/bench_streaming --benchmark_repetitions=10
//       --benchmark_report_aggregates_only=true   (one command line)
#include <benchmark/benchmark.h>

#include <cmath>
#include <vector>

#include <recur/recur.hpp>

using namespace recur;

namespace {

constexpr std::size_t steps = 10000, H = 64;

std::vector<float> series() {
    std::vector<float> s(steps);
    for (std::size_t t = 0; t < steps; ++t) s[t] = std::sin(0.05f * static_cast<float>(t));
    return s;
}

std::unique_ptr<nn::Sequential<float>> make_model() {
    manual_seed(1);
    auto m = std::make_unique<nn::Sequential<float>>();
    m->add(nn::recurrent_layer(std::make_unique<nn::LSTM<float>>(nn::LSTMOptions{.input_size = 1, .hidden_size = H})));
    m->emplace<nn::Linear<float>>(H, 1);
    m->eval();
    return m;
}

void Streamer(benchmark::State& state) {
    auto m = make_model();
    nn::Streamer<float> stream(*m);
    const auto xs = series();
    float sink = 0;
    for (auto _ : state) {
        stream.reset();
        for (std::size_t t = 0; t < steps; ++t) sink += stream.step(std::span<const float>(&xs[t], 1))[0];
    }
    benchmark::DoNotOptimize(sink);
    state.counters["us_per_step"] = benchmark::Counter(
        double(steps) * 1e-6, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(Streamer)->Unit(benchmark::kMillisecond)->UseRealTime();

void ModuleStep(benchmark::State& state) {
    auto m = make_model();
    auto& lstm = static_cast<nn::RecurrentLayer<nn::LSTM<float>>&>((*m)[0]).module();
    auto& linear = static_cast<nn::Linear<float>&>((*m)[1]);
    const auto xs = series();
    Tape<float> tape({.record = false});
    xt::xarray<float> x = xt::zeros<float>({std::size_t(1), std::size_t(1), std::size_t(1)});
    xt::xarray<float> h = xt::zeros<float>({std::size_t(1), std::size_t(1), H}), c = h;
    float sink = 0;
    for (auto _ : state) {
        h.fill(0);
        c.fill(0);
        for (std::size_t t = 0; t < steps; ++t) {
            tape.clear();
            x(0, 0, 0) = xs[t];
            auto run = lstm(tape.constant(x), {tape.constant(h), tape.constant(c)});
            sink += linear(run.output).value()(0);
            h = run.state.h.value();
            c = run.state.c.value();
        }
    }
    benchmark::DoNotOptimize(sink);
    state.counters["us_per_step"] = benchmark::Counter(
        double(steps) * 1e-6, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(ModuleStep)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
