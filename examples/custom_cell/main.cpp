// custom_cell: a user-written recurrent cell (MGU, see mgu_cell.hpp) gets stacking,
// bidirectional use, variable lengths and a gradient check from recur with no extra code,
// and trains like any built-in layer (here on simple_rnn's "is the first element positive?").
//
//   custom_cell [--epochs 8] [--onnx FILE]
#include <iostream>
#include <random>

#include <recur/recur.hpp>
#ifdef CUSTOM_CELL_ONNX
#include <recur/onnx.hpp>
#endif

#include "../common/example.hpp"
#include "mgu_cell.hpp"

using namespace recur;

int main(int argc, char** argv) {
    const example::Args args(argc, argv);
    const long epochs = args.get("epochs", 8);
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

    // 3. The same cell through the training loop, on simple_rnn's task: "is the first element
    //    positive?" with N(0, 2^2) noise after it (T = 10) and a start flag in channel 1.
    auto task = [&rng](std::size_t n) {
        std::normal_distribution<float> noise(0.f, 2.f);
        std::bernoulli_distribution coin(0.5);
        train::Dataset<float> d{
            xt::zeros<float>({n, std::size_t(10), std::size_t(2)}), xt::zeros<float>({n, std::size_t(1)}), {}};
        for (std::size_t i = 0; i < n; ++i) {
            const bool positive = coin(rng);
            d.x(i, 0, 0) = positive ? 1.f : -1.f;
            d.x(i, 0, 1) = 1.f;
            for (std::size_t t = 1; t < 10; ++t) d.x(i, t, 0) = noise(rng);
            d.y(i, 0) = positive ? 1.f : 0.f;
        }
        return d;
    };
    const auto train_set = task(2000), test_set = task(500);
    manual_seed(3);
    nn::Sequential<float> classifier;
    classifier.add(nn::recurrent_layer(
        std::make_unique<nn::Recurrent<MGUCell<float>>>(
            "MGU", nn::RecurrentOptions{.input_size = 2, .batch_first = true},
            [](std::size_t in, const std::string& suffix) { return std::make_unique<MGUCell<float>>(in, 32, suffix); }),
        nn::Return::last));
    classifier.emplace<nn::Linear<float>>(32, 1);
    optim::Adam<float> adam(classifier.parameters(), {.lr = 3e-3});
    const train::LossFn<float> bce = [](const Var<float>& p, const Var<float>& t) {
        return nn::binary_cross_entropy_with_logits(p, t);
    };
    train::fit<float>(classifier, bce, adam, train_set,
                      {.epochs = static_cast<std::size_t>(epochs),
                       .batch_size = 32,
                       .validation_split = 0.2,
                       .clip_norm = 1.0,
                       .metrics = {train::binary_accuracy<float>(0.0)},
                       .verbose = 2});
    const double accuracy = train::evaluate<float>(classifier, bce, test_set, 100, {train::binary_accuracy<float>(0.0)})
                                .at("binary_accuracy");
    std::cout << "MGU test accuracy on 'is the first element positive?' (T = 10): " << accuracy << '\n';

    // 4. --onnx FILE: the classifier as ONNX, its MGU traced into ONNX primitives for T = 10
    //    (input (B, 10, 2), batch dynamic; output (B, 1) logits).
    if (const std::string path = args.get_string("onnx", ""); !path.empty()) {
#ifdef CUSTOM_CELL_ONNX
        io::export_onnx(classifier, path, {.trace_input_shape = {0, 10, 2}});
        std::cout << "wrote " << path << '\n';
#else
        std::cout << "--onnx: recur::onnx was not built\n";
#endif
    }
    return report.passed && last < first / 4 && (accuracy >= 0.9 || epochs < 8) ? 0 : 1;
}
