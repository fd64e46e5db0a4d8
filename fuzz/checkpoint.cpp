// Checkpoints and optimizer state, raw bytes: train::resume, load_state (fuzz/loaders.hpp).
#include "fuzz/loaders.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static recur::fuzz::InputFile file("fuzz-checkpoint.npz");
    recur::fuzz::checkpoint_loaders(file.write(data, size));
    return 0;
}
