#include "recur/nn/init.hpp"

namespace recur {

std::mt19937_64& global_generator() {
    static std::mt19937_64 rng(0x7265637572ULL);
    return rng;
}

void manual_seed(std::uint64_t seed) { global_generator().seed(seed); }

namespace nn::init {

template <class T>
void uniform(Parameter<T>& p, double low, double high, std::mt19937_64& rng) {
    std::uniform_real_distribution<double> u(low, high);
    for (auto& v : p.value()) v = static_cast<T>(u(rng));
}

template void uniform(Parameter<float>&, double, double, std::mt19937_64&);
template void uniform(Parameter<double>&, double, double, std::mt19937_64&);

}  // namespace nn::init
}  // namespace recur
