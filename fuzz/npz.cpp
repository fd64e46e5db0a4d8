// .npz archives, raw bytes: io::load into a module, io::load_npz (fuzz/loaders.hpp).
#include "fuzz/loaders.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static recur::fuzz::InputFile file("fuzz.npz");
    recur::fuzz::module_loaders(file.write(data, size));
    return 0;
}
