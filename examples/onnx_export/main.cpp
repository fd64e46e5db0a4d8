// onnx_export — train a small sine forecaster, export it to ONNX, and run it in ONNX Runtime.
//
// An LSTM(16) reads 20 scaled steps of a noisy sine and a Linear predicts the next value. The
// trained model goes to sine.onnx (io::export_onnx); the example writes windows.json (a few
// test windows) and predict.js, a 10-line Node script that runs sine.onnx on them with
// onnxruntime-node, and prints recur's predictions for the same windows.
//   onnx_export [--epochs 5] [--out .] [--onnxruntime DIR]
// With --onnxruntime (a node_modules directory holding onnxruntime-node), it also runs
// predict.js itself and exits non-zero unless ONNX Runtime's predictions equal recur's (1e-5).
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include <xtensor/xview.hpp>

#include <recur/data.hpp>
#include <recur/onnx.hpp>
#include <recur/recur.hpp>
#include <recur/train.hpp>

#include "../common/example.hpp"

using namespace recur;

// The script the example prints and writes: everything a serving team needs.
const char* const predict_js = R"(// Runs sine.onnx in ONNX Runtime:  npm install onnxruntime-node && node predict.js
const ort = require('onnxruntime-node');
const windows = require('./windows.json');  // B windows of T scaled values
(async () => {
  const session = await ort.InferenceSession.create(__dirname + '/sine.onnx');
  const [B, T] = [windows.length, windows[0].length];
  const input = new ort.Tensor('float32', Float32Array.from(windows.flat()), [B, T, 1]);
  const { output } = await session.run({ input });  // (B, 1): the next value of each window
  console.log(Array.from(output.data, (v) => v.toFixed(6)).join(' '));
})();
)";

int main(int argc, char** argv) {
    const example::Args args(argc, argv);
    const auto epochs = static_cast<std::size_t>(args.get("epochs", 5));
    const std::string out = args.get_string("out", ".");
    const std::string onnxruntime = args.get_string("onnxruntime", "");
    const std::size_t window = 20, samples = 400, shown = 4;
    manual_seed(42);

    // Data: a noisy sine scaled to [0, 1], windows of 20 steps -> the next value.
    const xt::xarray<float> series = data::noisy_sine<float>(samples, 0.0, 40.0, 0.05, 7);
    data::MinMaxScaler<float> scaler;
    scaler.fit(series);
    const auto [X, y] = data::make_windows<float>(scaler.transform(series), window);  // (M, 20, 1), (M, 1)
    const auto xs = data::split_sequential(X, {0.8, 0.2});
    const auto ys = data::split_sequential(y, {0.8, 0.2});

    nn::Sequential<float> model;
    model.add(nn::recurrent_layer(
        std::make_unique<nn::LSTM<float>>(nn::LSTMOptions{.input_size = 1, .hidden_size = 16, .batch_first = true}),
        nn::Return::last));
    model.emplace<nn::Linear<float>>(16, 1);
    optim::Adam<float> adam(model.parameters(), {.lr = 1e-2});
    const train::LossFn<float> mse = [](const Var<float>& p, const Var<float>& t) { return nn::mse_loss(p, t); };
    const auto history = train::fit<float>(model, mse, adam, {xs[0], ys[0]},
                                           {.epochs = epochs, .batch_size = 16, .verbose = 0, .seed = 1});
    std::cout << "trained " << epochs << " epochs, final loss " << history["loss"].back() << "\n";

    // Export, with the scaler in the metadata so that a server can undo the scaling.
    io::OnnxExportOptions options;
    options.metadata = {{"task", "one-step sine forecast"},
                        {"window", std::to_string(window)},
                        {"scaler_min", std::to_string(*scaler.data_min().begin())},
                        {"scaler_max", std::to_string(*scaler.data_max().begin())}};
    io::export_onnx(model, out + "/sine.onnx", options);

    // A few test windows for the script, and recur's predictions for them.
    const xt::xarray<float> some = xt::view(xs[1], xt::range(0, shown), xt::all(), xt::all());
    std::ostringstream json;
    json.precision(9);
    json << "[";
    for (std::size_t b = 0; b < shown; ++b) {
        json << (b ? ",\n [" : "[");
        for (std::size_t t = 0; t < window; ++t) json << (t ? "," : "") << some(b, t, 0);
        json << "]";
    }
    json << "]\n";
    std::ofstream(out + "/windows.json") << json.str();
    std::ofstream(out + "/predict.js") << predict_js;
    const xt::xarray<float> pred = train::predict(model, some);
    std::ostringstream mine;
    mine.setf(std::ios::fixed);
    mine.precision(6);
    for (std::size_t b = 0; b < shown; ++b) mine << (b ? " " : "") << pred(b, 0);
    std::cout << "wrote " << out << "/sine.onnx, windows.json and predict.js:\n\n" << predict_js << "\n";
    std::cout << "recur predicts (scaled):        " << mine.str() << "\n";
    if (onnxruntime.empty()) {
        std::cout << "run it: cd " << out << " && npm install onnxruntime-node && node predict.js\n";
        return 0;
    }

    // Run the script in ONNX Runtime and compare.
    const std::string command = "cd '" + out + "' && NODE_PATH='" + onnxruntime + "' node predict.js";
    FILE* pipe = ::popen(command.c_str(), "r");
    if (!pipe) return 1;
    std::string theirs;
    char buffer[256];
    while (std::fgets(buffer, sizeof buffer, pipe)) theirs += buffer;
    if (::pclose(pipe) != 0) {
        std::cerr << "node predict.js failed: " << theirs << "\n";
        return 1;
    }
    std::cout << "ONNX Runtime predicts (scaled): " << theirs;
    std::istringstream a(mine.str()), b(theirs);
    double u = 0, v = 0;
    std::size_t same = 0;
    while (a >> u && b >> v) same += std::abs(u - v) <= 1e-5 ? 1 : 0;
    std::cout << (same == shown ? "the same predictions\n" : "predictions differ\n");
    return same == shown ? 0 : 1;
}
