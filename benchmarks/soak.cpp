// Soak test (a long run, not a unit test; benchmarks/soak.sh builds and runs it):
//     soak [STEPS]    (default 100000)
// STEPS training steps of an LSTM(8 -> 32) + Linear(32 -> 1) model with Adam, B = 16, T = 20,
// each on a fresh Tape (the natural loop), then STEPS no-grad inference steps (a Tape with
// record = false). The resident set size (RSS, /proc/self/statm) is sampled every 1,000
// steps; a phase's memory "stayed flat" when the RSS after its first tenth of the steps (the
// warm-up: pools and caches filled) and its last sample differ by at most 1 MiB. Prints the
// samples' summary per phase and exits 1 if either phase grew.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <recur/recur.hpp>

using namespace recur;

namespace {

constexpr long kSampleEvery = 1000;
constexpr long kFlatBytes = 1 << 20;

long rss_bytes() {
    std::ifstream statm("/proc/self/statm");
    long pages_total = 0, pages_resident = 0;
    statm >> pages_total >> pages_resident;
    return pages_resident * ::sysconf(_SC_PAGESIZE);
}

// Runs `step` `steps` times, sampling RSS; prints the phase's summary, returns true if flat.
template <class F>
bool phase(const char* name, long steps, F&& step) {
    std::vector<long> samples;
    for (long k = 1; k <= steps; ++k) {
        step();
        if (k % kSampleEvery == 0) samples.push_back(rss_bytes());
    }
    if (samples.empty()) samples.push_back(rss_bytes());
    const long warm = samples[samples.size() / 10], last = samples.back();
    long peak = 0;
    for (long s : samples) peak = std::max(peak, s);
    const bool flat = last - warm <= kFlatBytes;
    std::printf(
        "%-9s %ld steps, RSS every %ld: after warm-up %.1f MiB, last %.1f MiB, peak %.1f MiB, growth %+.3f MiB: %s\n",
        name, steps, kSampleEvery, double(warm) / (1 << 20), double(last) / (1 << 20), double(peak) / (1 << 20),
        double(last - warm) / (1 << 20), flat ? "flat" : "GREW");
    return flat;
}

}  // namespace

int main(int argc, char** argv) {
    const long steps = argc > 1 ? std::atol(argv[1]) : 100000;
    if (steps <= 0) {
        std::fprintf(stderr, "usage: soak [STEPS > 0]\n");
        return 2;
    }
    constexpr std::size_t B = 16, T = 20, I = 8, H = 32;
    manual_seed(1);
    nn::Sequential<float> model;
    model.add(nn::recurrent_layer(
        std::make_unique<nn::LSTM<float>>(nn::LSTMOptions{.input_size = I, .hidden_size = H, .batch_first = true}),
        nn::Return::last));
    model.emplace<nn::Linear<float>>(H, 1);
    optim::Adam<float> adam(model.parameters(), {.lr = 1e-3});

    std::mt19937 rng(2);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    xt::xarray<float> x = xt::xarray<float>::from_shape({B, T, I}), y = xt::xarray<float>::from_shape({B, 1});
    for (auto& v : x) v = normal(rng);
    for (auto& v : y) v = normal(rng);

    double last_loss = 0;
    const bool train_flat = phase("training", steps, [&] {
        Tape<float> tape;
        Var<float> loss = nn::mse_loss(model(tape.constant(x), {}), tape.constant(y));
        adam.zero_grad();
        tape.backward(loss);
        adam.step();
        last_loss = loss.item();
    });
    model.eval();
    double checksum = 0;
    const bool infer_flat = phase("inference", steps, [&] {
        Tape<float> tape({.record = false});
        checksum += model(tape.constant(x), {}).value()(0, 0);
    });
    std::printf("final loss %.6g, inference checksum %.6g\n", last_loss, checksum);
    std::printf("memory %s\n", train_flat && infer_flat ? "stayed flat" : "GREW");
    return train_flat && infer_flat ? 0 : 1;
}
