// step_memory — peak memory of recur's training step, for benchmarks/compare_layers.sh.
//
//   step_memory lstm|gru|rnn B T I H [steps [natural|tuned]]
//
// Builds the one-layer module (float, batch_first) and its input (B, T, I) as bench_layers does,
// reads the resident set size, runs `steps` training steps (default 3; zero_grad, loss =
// sum(output), backward through time) of the natural loop (default: a fresh default Tape each
// step, the input through tape.constant) or the tuned one (one Tape with retain_grads = false,
// clear()ed after each step, the input through tape.view), and prints one JSON line:
// the RSS before the first step, the peak RSS over the steps (VmHWM of /proc/self/status) and
// their difference, the growth, in KiB. torch_layers.py --memory measures PyTorch the same way.
//
// Before that, one training step of a tiny module of the same kind (B = T = I = H = 2) pages in
// the code and the BLAS library's buffers, so the growth counts the step's data. The peak is
// reset to the current RSS just before the first step (writing 5 to /proc/self/clear_refs), so
// building the module does not count; "peak_reset": false says the kernel refused that, and the
// growth is then an upper bound.
#include <charconv>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <string_view>

#include <xtensor/xarray.hpp>

#include "layer_step.hpp"
#include "recur/tape.hpp"

namespace {

using recur::Tape;
using recur::bench::Kind;
using recur::bench::LayerSizes;

/// A "Name:   1234 kB" field of /proc/self/status, in KiB.
long status_kib(std::string_view field) {
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);) {
        if (!line.starts_with(field) || line.size() <= field.size() || line[field.size()] != ':') continue;
        const std::size_t digits = line.find_first_of("0123456789");
        long kib = 0;
        if (digits != std::string::npos) std::from_chars(line.data() + digits, line.data() + line.size(), kib);
        return kib;
    }
    throw std::runtime_error("no " + std::string(field) + " in /proc/self/status");
}

/// Resets VmHWM to the current RSS; false when the kernel does not allow it.
bool reset_peak_rss() {
    std::ofstream clear_refs("/proc/self/clear_refs");
    clear_refs << "5";
    clear_refs.flush();
    return static_cast<bool>(clear_refs);
}

/// `steps` training steps of the natural or the tuned loop.
template <Kind K>
void train(recur::bench::Layer<K>& layer, const xt::xarray<float>& x, int steps, bool tuned) {
    if (!tuned) {
        for (int s = 0; s < steps; ++s) recur::bench::natural_train_step(layer, x);
        return;
    }
    Tape<float> tape(recur::bench::training_tape());
    for (int s = 0; s < steps; ++s) recur::bench::tuned_train_step(layer, tape, x);
}

template <Kind K>
void warm_up_code(bool tuned) {
    const LayerSizes tiny{2, 2, 2, 2};
    auto layer = recur::bench::make_layer<K>(tiny);
    train(layer, recur::bench::layer_input(tiny), 1, tuned);
}

template <Kind K>
int measure(const char* kind_name, const LayerSizes& z, int steps, bool tuned) {
    warm_up_code<K>(tuned);
    auto layer = recur::bench::make_layer<K>(z);
    const xt::xarray<float> x = recur::bench::layer_input(z);
    const bool peak_reset = reset_peak_rss();
    const long rss_before = status_kib("VmRSS");
    train(layer, x, steps, tuned);
    const long peak = status_kib("VmHWM");
    std::printf(
        "{\"kind\": \"%s\", \"loop\": \"%s\", \"size\": [%zu, %zu, %zu, %zu], \"steps\": %d, "
        "\"rss_before_kib\": %ld, \"peak_kib\": %ld, \"growth_kib\": %ld, \"peak_reset\": %s}\n",
        kind_name, tuned ? "tuned" : "natural", z.b, z.t, z.i, z.h, steps, rss_before, peak, peak - rss_before,
        peak_reset ? "true" : "false");
    return 0;
}

std::size_t positive(const char* text) {
    const long value = std::strtol(text, nullptr, 10);
    if (value <= 0) throw std::invalid_argument(std::string("not a positive number: ") + text);
    return static_cast<std::size_t>(value);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 6 || argc > 8) {
        std::cerr << "usage: step_memory lstm|gru|rnn B T I H [steps [natural|tuned]]\n";
        return 2;
    }
    try {
        const std::string kind = argv[1];
        const LayerSizes z{positive(argv[2]), positive(argv[3]), positive(argv[4]), positive(argv[5])};
        const int steps = argc >= 7 ? static_cast<int>(positive(argv[6])) : 3;
        const std::string loop = argc == 8 ? argv[7] : "natural";
        if (loop != "natural" && loop != "tuned") {
            std::cerr << "step_memory: unknown loop " << loop << " (natural or tuned)\n";
            return 2;
        }
        const bool tuned = loop == "tuned";
        if (kind == "lstm") return measure<Kind::lstm>("lstm", z, steps, tuned);
        if (kind == "gru") return measure<Kind::gru>("gru", z, steps, tuned);
        if (kind == "rnn") return measure<Kind::rnn>("rnn", z, steps, tuned);
        std::cerr << "step_memory: unknown module " << kind << " (lstm, gru or rnn)\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "step_memory: " << e.what() << "\n";
        return 1;
    }
}
