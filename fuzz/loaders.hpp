// The archive loaders, run on one file with their all-or-nothing checks. fuzz/npz.cpp and
// fuzz/checkpoint.cpp feed them raw bytes; fuzz/zip.cpp feeds them archives it builds.
#pragma once

#include <string>

#include "fuzz/fuzz.hpp"
#include "fuzz/models.hpp"
#include "recur/io.hpp"
#include "recur/train.hpp"

namespace recur::fuzz {

/// io::load into a module (a refused file leaves it bit-identical), io::load_npz of every
/// member as float, and of a chosen member as int64.
inline void module_loaders(const std::string& path) {
    static auto model = small_model<float>();
    const auto before = snapshot(*model);
    if (!loads(path, [&] { io::load(*model, path); })) RECUR_FUZZ_CHECK(identical(before, snapshot(*model)));
    loads(path, [&] {
        for (const auto& [name, a] : io::load_npz<float>(path)) (void)touch(a);
    });
    loads(path, [&] {
        for (const auto& [name, a] : io::load_npz<std::int64_t>(path, {"lengths"})) (void)touch(a);
    });
}

template <class Opt>
void resume_into(nn::Sequential<float>& model, Opt& optimizer, const std::string& path) {
    const auto before = snapshot<float>(model, &optimizer);
    if (loads(path, [&] { RECUR_FUZZ_CHECK(train::resume(path, model, optimizer) <= (std::size_t(1) << 53)); })) return;
    RECUR_FUZZ_CHECK(identical(before, snapshot<float>(model, &optimizer)));
}

/// train::resume into a model with Adam and one with SGD (momentum), all-or-nothing (a
/// refused file leaves weights and optimizer state bit-identical); then the arrays of the
/// file given to RMSprop's and ReduceLROnPlateau's load_state, which must refuse bad state
/// with a recur::error and change nothing.
inline void checkpoint_loaders(const std::string& path) {
    static auto adam_model = small_model<float>();
    static optim::Adam<float> adam(adam_model->parameters(), {.lr = 1e-3});
    static auto sgd_model = small_model<float>();
    static optim::SGD<float> sgd(sgd_model->parameters(), {.lr = 0.1, .momentum = 0.9});
    static optim::RMSprop<float> rmsprop(sgd_model->parameters(), {});
    static optim::ReduceLROnPlateau<float> plateau(rmsprop);

    resume_into(*adam_model, adam, path);
    resume_into(*sgd_model, sgd, path);

    optim::State<float> state;
    if (!loads(path, [&] { state = io::load_npz<float>(path); })) return;
    for (auto& [name, a] : state)  // checkpoint names -> optimizer state names
        if (name.rfind("optimizer.", 0) == 0) name = name.substr(10);
    const auto before = snapshot<float>(*sgd_model, &rmsprop);
    try {
        rmsprop.load_state(state);
    } catch (const error&) {
        RECUR_FUZZ_CHECK(identical(before, snapshot<float>(*sgd_model, &rmsprop)));
    }
    std::vector<xt::xarray<float>> plateau_before;
    for (const auto& [name, a] : plateau.state()) plateau_before.push_back(a);
    try {
        plateau.load_state(state);
    } catch (const error&) {
        std::vector<xt::xarray<float>> after;
        for (const auto& [name, a] : plateau.state()) after.push_back(a);
        RECUR_FUZZ_CHECK(identical(plateau_before, after));
    }
}

}  // namespace recur::fuzz
