// .npy files: io::load_npy as float, double and int64.
#include "fuzz/fuzz.hpp"
#include "recur/io.hpp"

namespace {

// A loaded array is consistent: its size is the product of its extents.
template <class T>
void check(const xt::xarray<T>& a) {
    std::size_t n = 1;
    for (std::size_t d : a.shape()) n *= d;
    RECUR_FUZZ_CHECK(a.size() == n);
    (void)recur::fuzz::touch(a);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static recur::fuzz::InputFile file("fuzz.npy");
    const std::string& path = file.write(data, size);
    recur::fuzz::loads(path, [&] { check(recur::io::load_npy<float>(path)); });
    recur::fuzz::loads(path, [&] { check(recur::io::load_npy<double>(path)); });
    recur::fuzz::loads(path, [&] { check(recur::io::load_npy<std::int64_t>(path)); });
    return 0;
}
