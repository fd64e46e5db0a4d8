// custom_cell: a user-written recurrent cell (MGU, see mgu_cell.hpp) gets stacking,
// bidirectional use, variable lengths and a gradient check from recur with no extra code.
#include <iostream>
#include <random>

#include <recur/recur.hpp>

#include "mgu_cell.hpp"

using namespace recur;

int main() {
    // 1. Gradient check through BPTT in double: 2 layers, bidirectional, batch-first, lengths.
    manual_seed(1);
    auto net = make_mgu<double>(3, 4, {.num_layers = 2, .batch_first = true, .bidirectional = true});
    std::cout << "MGU parameters:";
    for (auto& [name, p] : net.named_parameters()) std::cout << ' ' << name << shape_str(p->shape());
    std::cout << '\n';

    std::mt19937_64 rng(7);
    std::normal_distribution<double> normal(0.0, 1.0);
    xt::xarray<double> x = xt::xarray<double>::from_shape({3, 6, 3});  // (B, T, I)
    for (auto& v : x) v = normal(rng);
    const std::vector<std::int64_t> lengths = {6, 2, 4};
    auto report = gradcheck(
        [&](Tape<double>&, const std::vector<Var<double>>& in) {
            auto run = net.forward(in[0], {}, lengths);
            return concat<double>({reshape(run.output, {-1}), reshape(run.state[0], {-1})});
        },
        {x});
    std::cout << report.summary() << '\n';

    // 2. Train it (float, plain SGD) to output the sum of each sequence's valid elements.
    manual_seed(2);
    auto model = make_mgu<float>(1, 8, {.batch_first = true});
    Parameter<float> head_w(xt::xarray<float>::from_shape({1, 8}));
    nn::init::uniform(head_w, -0.3, 0.3);
    Tape<float> tape;
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    std::uniform_int_distribution<std::int64_t> len(2, 10);
    float first = 0, last = 0;
    for (int step = 0; step < 300; ++step) {
        xt::xarray<float> xs = xt::zeros<float>({16, 10, 1});
        xt::xarray<float> target = xt::zeros<float>({16, 1});
        std::vector<std::int64_t> ls(16);
        for (std::size_t b = 0; b < 16; ++b) {
            ls[b] = len(rng);
            for (std::int64_t t = 0; t < ls[b]; ++t) {
                xs(b, t, 0) = u(rng);
                target(b, 0) += xs(b, t, 0) / 4;
            }
        }
        tape.clear();
        auto run = model.forward(tape.constant(xs), {}, ls);
        Var<float> y = linear(select(run.state[0], 0, 0), tape.bind(head_w));  // final h -> (B, 1)
        Var<float> diff = y - tape.constant(target);
        Var<float> loss = mean(diff * diff);
        model.zero_grad();
        head_w.zero_grad();
        tape.backward(loss);
        for (auto* p : model.parameters()) p->value() -= 0.5f * p->grad();
        head_w.value() -= 0.5f * head_w.grad();
        if (step == 0) first = loss.item();
        last = loss.item();
        if (step % 50 == 0) std::cout << "step " << step << " loss " << loss.item() << '\n';
    }
    std::cout << "loss " << first << " -> " << last << '\n';
    return report.passed && last < first / 4 ? 0 : 1;
}
