// ONNX export and import (recur::onnx), checked by independent clients: ONNX's own checker
// (python3-onnx) and ONNX Runtime (onnxruntime-node, run by tests/onnx/run.js), and against
// PyTorch's torch.onnx.export files (tests/onnx/torch/, made by make_torch_models.py).
// When recur::onnx is built, a missing node, onnxruntime-node or python3-onnx is a failure.
#include <boost/test/unit_test.hpp>

#ifndef RECUR_HAS_ONNX

BOOST_AUTO_TEST_SUITE(onnx)
BOOST_AUTO_TEST_CASE(skipped, *boost::unit_test::precondition([](boost::unit_test::test_unit_id) {
                         boost::test_tools::assertion_result r(false);
                         r.message() << "recur::onnx was not built (RECUR_ONNX off, or libonnx-dev / libprotobuf-dev "
                                        "missing): ONNX tests skipped";
                         return r;
                     })) {
    BOOST_TEST(false);
}
BOOST_AUTO_TEST_SUITE_END()

#else

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "recur/io.hpp"
#include "recur/nn/init.hpp"
#include "recur/nn/layers.hpp"
#include "recur/nn/recurrent.hpp"
#include "recur/nn/losses.hpp"
#include "recur/onnx.hpp"
#include "recur/optim.hpp"
#include "recur/train.hpp"
#include "support.hpp"
#include "../examples/custom_cell/mgu_cell.hpp"

namespace fs = std::filesystem;
using namespace recur;
using recur::testing::throws_with;

namespace {

using Outputs = std::map<std::string, xt::xarray<float> >;

/// Seeded data, uniform in [lo, hi).
xt::xarray<float> uniform_array(const std::vector<std::size_t>& shape, std::uint64_t seed, double lo = -1,
                                double hi = 1) {
    return recur::testing::uniform_array<float>(shape, seed, lo, hi);
}

/// A scratch directory, removed at the end of the test.
struct Scratch {
    fs::path dir;
    Scratch() {
        dir = fs::temp_directory_path() / ("recur_onnx_" + std::to_string(::getpid()));
        fs::remove_all(dir);
        fs::create_directories(dir);
    }
    ~Scratch() {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    std::string operator/(const std::string& name) const { return (dir / name).string(); }
};

/// Runs a shell command; its output goes to `log`. Returns the exit status.
int run(const std::string& command, const std::string& log) {
    const int status = std::system((command + " >" + log + " 2>&1").c_str());
    return status == -1 ? -1 : WEXITSTATUS(status);
}

std::string slurp(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

/// One input tensor for run.js.
struct Feed {
    std::string name, type;  // float32, int32, int64
    std::vector<std::size_t> dims;
    std::vector<double> values;
};

Feed float_feed(const std::string& name, const xt::xarray<float>& a, const std::string& type = "float32") {
    return {name, type, std::vector<std::size_t>(a.shape().begin(), a.shape().end()),
            std::vector<double>(a.begin(), a.end())};
}

/// Every (model, feeds) in one ONNX Runtime process; per job, its outputs by name.
std::vector<Outputs> onnx_runtime(const Scratch& scratch,
                                  const std::vector<std::pair<std::string, std::vector<Feed> > >& jobs) {
    std::string command = "node " RECUR_ONNX_RUNNER " " RECUR_ONNXRUNTIME_DIR;
    for (std::size_t j = 0; j < jobs.size(); ++j) {
        const std::string in = scratch / ("in" + std::to_string(j) + ".txt");
        std::ofstream f(in);
        f.precision(9);
        for (const Feed& feed : jobs[j].second) {
            f << feed.name << ' ' << feed.type << ' ' << feed.dims.size();
            for (auto d : feed.dims) f << ' ' << d;
            f << '\n';
            for (double v : feed.values) f << v << ' ';
            f << '\n';
        }
        command += " " + jobs[j].first + " " + in + " " + scratch / ("out" + std::to_string(j) + ".txt");
    }
    const std::string log = scratch / "node.log";
    const int status = run(command, log);
    BOOST_REQUIRE_MESSAGE(status == 0,
                          "ONNX Runtime (node tests/onnx/run.js, onnxruntime-node in " RECUR_ONNXRUNTIME_DIR
                          "; scripts/recur deps installs both) failed with status "
                              << status << ": " << slurp(log));
    std::vector<Outputs> results;
    for (std::size_t j = 0; j < jobs.size(); ++j) {
        std::ifstream f(scratch / ("out" + std::to_string(j) + ".txt"));
        Outputs outputs;
        std::string name, type;
        std::size_t rank = 0;
        while (f >> name >> type >> rank) {
            std::vector<std::size_t> dims(rank);
            std::size_t count = 1;
            for (auto& d : dims) {
                f >> d;
                count *= d;
            }
            xt::xarray<float> a = xt::xarray<float>::from_shape(dims);
            for (std::size_t k = 0; k < count; ++k) f >> a.data()[k];
            outputs[name] = std::move(a);
        }
        results.push_back(std::move(outputs));
    }
    return results;
}

/// onnx.checker.check_model(full_check=True) on each file, in one Python process.
void onnx_check(const Scratch& scratch, const std::vector<std::string>& files) {
    std::string command =
        "/usr/bin/python3 -c \"import sys, onnx\n"
        "for f in sys.argv[1:]: onnx.checker.check_model(onnx.load(f), full_check=True)\"";
    for (const auto& f : files) command += " " + f;
    const std::string log = scratch / "checker.log";
    const int status = run(command, log);
    BOOST_REQUIRE_MESSAGE(
        status == 0,
        "onnx.checker (python3-onnx; scripts/recur deps installs it) rejected a file or could not run: " << slurp(log));
}

/// What python3-onnx prints for `print(EXPR)` with the model in file loaded as m.
std::string python_print(const Scratch& scratch, const std::string& file, const std::string& expr) {
    const std::string log = scratch / "python.log";
    const int status =
        run("/usr/bin/python3 -c \"import sys, onnx\nm = onnx.load(sys.argv[1])\nprint(" + expr + ")\" " + file, log);
    BOOST_REQUIRE_MESSAGE(status == 0, "python3-onnx failed: " << slurp(log));
    return slurp(log);
}

double max_difference(const xt::xarray<float>& a, const xt::xarray<float>& b) {
    if (a.shape() != b.shape()) return INFINITY;
    double m = 0;
    for (std::size_t k = 0; k < a.size(); ++k) m = std::max(m, std::abs(double(a.data()[k]) - double(b.data()[k])));
    return m;
}

// ---- The exported configurations ----------------------------------------------------------

/// A model, how recur runs it, and what input it takes.
struct Case {
    std::string name;
    std::unique_ptr<nn::Module<float> > model;
    std::function<Outputs(const Var<float>& x, const std::vector<std::int64_t>& lengths)> run;
    bool batch_first = false;
    std::size_t width = 0;  // features of the input; 0 for ids
    std::size_t vocabulary = 0;
    bool lengths = false;
};

template <class M, class O>
std::unique_ptr<nn::RecurrentLayer<M> > rec(O o, nn::Return mode) {
    return nn::recurrent_layer(std::make_unique<M>(o), mode);
}

Case sequential(std::string name, std::unique_ptr<nn::Sequential<float> > s, bool batch_first, std::size_t width,
                bool lengths, std::size_t vocabulary = 0) {
    auto* model = s.get();
    return {std::move(name),
            std::move(s),
            [model](const Var<float>& x, const std::vector<std::int64_t>& l) {
                return Outputs{{"output", model->forward(x, l).value()}};
            },
            batch_first,
            width,
            vocabulary,
            lengths};
}

template <class M, class O>
Case bare(std::string name, O o, bool lengths) {
    auto m = std::make_unique<M>(o);
    auto* model = m.get();
    return {std::move(name),
            std::move(m),
            [model](const Var<float>& x, const std::vector<std::int64_t>& l) {
                auto run = model->forward(x, {}, l);
                Outputs out{{"output", run.output.value()}, {"h_n", run.state[0].value()}};
                if (run.state.size() > 1) out["c_n"] = run.state[1].value();  // the LSTM's
                return out;
            },
            o.batch_first,
            o.input_size,
            0,
            lengths};
}

std::vector<Case> export_cases() {
    manual_seed(1414);
    using nn::Return;
    std::vector<Case> cases;
    {
        auto s = std::make_unique<nn::Sequential<float> >();
        s->add(rec<nn::LSTM<float> >(nn::LSTMOptions{.input_size = 3, .hidden_size = 5}, Return::sequences));
        cases.push_back(sequential("lstm_time_major", std::move(s), false, 3, false));
    }
    {
        auto s = std::make_unique<nn::Sequential<float> >();
        s->add(rec<nn::LSTM<float> >(
            nn::LSTMOptions{
                .input_size = 4, .hidden_size = 6, .num_layers = 2, .batch_first = true, .bidirectional = true},
            Return::sequences));
        s->emplace<nn::Linear<float> >(12, 3);
        cases.push_back(sequential("lstm_bi_stack_linear", std::move(s), true, 4, false));
    }
    {
        auto s = std::make_unique<nn::Sequential<float> >();
        s->add(
            rec<nn::GRU<float> >(nn::GRUOptions{.input_size = 4, .hidden_size = 7, .batch_first = true}, Return::last));
        s->emplace<nn::Linear<float> >(7, 2);
        s->emplace<nn::Sigmoid<float> >();
        cases.push_back(sequential("gru_last_sigmoid", std::move(s), true, 4, false));
    }
    {
        auto s = std::make_unique<nn::Sequential<float> >();
        s->add(rec<nn::GRU<float> >(
            nn::GRUOptions{.input_size = 3, .hidden_size = 4, .num_layers = 2, .bidirectional = true},
            Return::sequences));
        cases.push_back(sequential("gru_bi_stack_lengths", std::move(s), false, 3, true));
    }
    {
        auto s = std::make_unique<nn::Sequential<float> >();
        s->add(rec<nn::RNN<float> >(nn::RNNOptions{.input_size = 3, .hidden_size = 5, .batch_first = true},
                                    Return::sequences));
        s->emplace<nn::Tanh<float> >();
        cases.push_back(sequential("rnn_tanh_batch_first", std::move(s), true, 3, false));
    }
    {
        auto s = std::make_unique<nn::Sequential<float> >();
        s->add(rec<nn::RNN<float> >(
            nn::RNNOptions{
                .input_size = 3, .hidden_size = 4, .nonlinearity = nn::Nonlinearity::relu, .bidirectional = true},
            Return::last));
        cases.push_back(sequential("rnn_relu_bi_last_lengths", std::move(s), false, 3, true));
    }
    {
        auto s = std::make_unique<nn::Sequential<float> >();
        s->add(rec<nn::LSTM<float> >(
            nn::LSTMOptions{.input_size = 4, .hidden_size = 5, .batch_first = true, .bidirectional = true},
            Return::last));
        s->emplace<nn::Linear<float> >(10, 3);
        s->emplace<nn::LogSoftmax<float> >();
        cases.push_back(sequential("lstm_bi_last_lengths_logsoftmax", std::move(s), true, 4, true));
    }
    {
        auto s = std::make_unique<nn::Sequential<float> >();
        s->emplace<nn::Embedding<float> >(11, 4);
        s->add(rec<nn::LSTM<float> >(nn::LSTMOptions{.input_size = 4, .hidden_size = 6, .batch_first = true},
                                     Return::last));
        s->emplace<nn::Dropout<float> >(0.3);
        s->emplace<nn::Linear<float> >(6, 3);
        s->emplace<nn::Softmax<float> >();
        cases.push_back(sequential("embedding_lstm_softmax", std::move(s), true, 0, false, 11));
    }
    {
        auto s = std::make_unique<nn::Sequential<float> >();
        s->emplace<nn::Linear<float> >(3, 5);
        s->emplace<nn::ReLU<float> >();
        s->add(
            rec<nn::GRU<float> >(nn::GRUOptions{.input_size = 5, .hidden_size = 4, .bias = false}, Return::sequences));
        s->emplace<nn::Linear<float> >(4, 2, false);
        cases.push_back(sequential("linear_gru_nobias", std::move(s), false, 3, false));
    }
    {
        auto s = std::make_unique<nn::Sequential<float> >();
        s->add(rec<nn::LSTM<float> >(
            nn::LSTMOptions{.input_size = 2, .hidden_size = 3, .num_layers = 3, .batch_first = true},
            Return::sequences));
        cases.push_back(sequential("lstm_stack3_lengths", std::move(s), true, 2, true));
    }
    cases.push_back(bare<nn::LSTM<float> >(
        "bare_lstm_bi_stack_lengths",
        nn::LSTMOptions{.input_size = 3, .hidden_size = 4, .num_layers = 2, .bidirectional = true}, true));
    cases.push_back(bare<nn::GRU<float> >(
        "bare_gru_batch_first", nn::GRUOptions{.input_size = 3, .hidden_size = 5, .batch_first = true}, false));
    cases.push_back(bare<nn::RNN<float> >("bare_rnn_stack",
                                          nn::RNNOptions{.input_size = 2, .hidden_size = 3, .num_layers = 2}, false));
    return cases;
}

/// The input of a case for batch B and length T (features uniform, ids in [0, V)).
xt::xarray<float> case_input(const Case& c, std::size_t batch, std::size_t steps, std::uint64_t seed) {
    std::vector<std::size_t> shape =
        c.batch_first ? std::vector<std::size_t>{batch, steps} : std::vector<std::size_t>{steps, batch};
    if (c.width == 0) {
        xt::xarray<float> ids = uniform_array(shape, seed, 0.0, double(c.vocabulary));
        for (auto& v : ids) v = std::floor(v);
        return ids;
    }
    shape.push_back(c.width);
    return uniform_array(shape, seed);
}

std::vector<std::int64_t> case_lengths(std::size_t batch, std::size_t steps) {
    std::vector<std::int64_t> lengths;
    for (std::size_t b = 0; b < batch; ++b)
        lengths.push_back(std::max<std::int64_t>(1, std::int64_t(steps) - 2 * std::int64_t(b)));
    return lengths;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(onnx)

// Every configuration: onnx.checker passes, and ONNX Runtime's outputs equal recur's within
// 1e-5 for two batch sizes and sequence lengths.
BOOST_AUTO_TEST_CASE(export_matches_onnx_runtime) {
    Scratch scratch;
    std::vector<Case> cases = export_cases();
    BOOST_REQUIRE_GE(cases.size(), 10u);
    const std::vector<std::pair<std::size_t, std::size_t> > sizes{{3, 5}, {2, 8}};
    std::vector<std::string> files;
    std::vector<std::pair<std::string, std::vector<Feed> > > jobs;
    std::vector<Outputs> expected;
    for (Case& c : cases) {
        c.model->eval();
        const std::string file = scratch / (c.name + ".onnx");
        io::OnnxExportOptions options;
        options.lengths = c.lengths;
        io::export_onnx(*c.model, file, options);
        files.push_back(file);
        std::uint64_t seed = 7;
        for (auto [batch, steps] : sizes) {
            xt::xarray<float> x = case_input(c, batch, steps, seed++);
            std::vector<std::int64_t> lengths = c.lengths ? case_lengths(batch, steps) : std::vector<std::int64_t>{};
            Tape<float> tape;
            expected.push_back(c.run(tape.constant(x), lengths));
            std::vector<Feed> feeds{float_feed("input", x, c.width == 0 ? "int64" : "float32")};
            if (c.lengths)
                feeds.push_back(
                    {"sequence_lens", "int32", {batch}, std::vector<double>(lengths.begin(), lengths.end())});
            jobs.emplace_back(file, std::move(feeds));
        }
    }
    onnx_check(scratch, files);
    std::vector<Outputs> got = onnx_runtime(scratch, jobs);
    BOOST_REQUIRE_EQUAL(got.size(), expected.size());
    for (std::size_t j = 0; j < jobs.size(); ++j) {
        const std::string what = cases[j / sizes.size()].name + " size " + std::to_string(j % sizes.size());
        BOOST_TEST(got[j].size() == expected[j].size(), what << ": " << got[j].size() << " outputs");
        for (auto& [name, value] : expected[j]) {
            BOOST_TEST_CONTEXT(what << " output " << name) {
                BOOST_REQUIRE(got[j].count(name) == 1);
                BOOST_TEST(max_difference(got[j].at(name), value) <= 1e-5);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(export_options_reach_the_file) {
    Scratch scratch;
    nn::Sequential<float> s;
    s.emplace<nn::Linear<float> >(3, 2);
    io::OnnxExportOptions o;
    o.opset = 17;
    o.producer_name = "recur-test";
    o.metadata = {{"task", "sine"}, {"author", "tests"}};
    const std::string file = scratch / "options.onnx";
    io::export_onnx(s, file, o);
    BOOST_TEST(python_print(scratch, file,
                            "m.producer_name, m.opset_import[0].version, *[p.key + '=' + p.value for p in "
                            "m.metadata_props]") == "recur-test 17 task=sine author=tests\n");
}

BOOST_AUTO_TEST_CASE(unsupported_models_name_the_layer_and_leave_no_file) {
    Scratch scratch;
    const std::string file = scratch / "bad.onnx";
    nn::Sequential<float> s;
    s.emplace<nn::Linear<float> >(3, 4);
    s.add(nn::recurrent_layer(
        std::make_unique<nn::LSTM<float> >(nn::LSTMOptions{.input_size = 4, .hidden_size = 5, .proj_size = 2})));
    BOOST_TEST(throws_with<value_error>([&] { io::export_onnx(s, file); }, {"layer '1'", "LSTM", "proj_size"}));
    BOOST_TEST(!fs::exists(file));

    nn::Sequential<float> only_activations;
    only_activations.emplace<nn::Tanh<float> >();
    BOOST_TEST(throws_with<value_error>([&] { io::export_onnx(only_activations, file); }, {"input's width"}));
    io::OnnxExportOptions old;
    old.opset = 11;
    nn::Linear<float> linear(2, 2);
    BOOST_TEST(throws_with<value_error>([&] { io::export_onnx(linear, file, old); }, {"opset 11"}));
    BOOST_TEST(!fs::exists(file));
}

// ---- Import --------------------------------------------------------------------------------

/// recur's output for x (a whole batch, eval mode).
xt::xarray<float> predict(nn::Sequential<float>& model, const xt::xarray<float>& x,
                          const std::vector<std::int64_t>& lengths = {}) {
    model.eval();
    Tape<float> tape;
    return model(tape.constant(x), lengths).value();
}

// torch.onnx.export files (PyTorch 1.13, opset 14) give PyTorch's outputs within 1e-5.
BOOST_AUTO_TEST_CASE(import_matches_pytorch) {
    for (std::string name :
         {"lstm_bi_stack", "gru_last", "rnn_relu_time_major", "embedding_lstm", "gru_bi_stack_time_major"}) {
        BOOST_TEST_CONTEXT(name) {
            const std::string base = std::string(RECUR_ONNX_DATA_DIR) + "/torch/" + name;
            auto model = io::import_onnx<float>(base + ".onnx");
            auto arrays = io::load_npz<float>(base + ".npz", {"input", "output"});
            const xt::xarray<float> y = predict(*model, arrays[0].second);
            BOOST_TEST(max_difference(y, arrays[1].second) <= 1e-5);
        }
    }
}

// recur -> ONNX -> recur: the same parameters, bit for bit, and the same outputs.
BOOST_AUTO_TEST_CASE(round_trip_is_exact) {
    Scratch scratch;
    for (Case& c : export_cases()) {
        BOOST_TEST_CONTEXT(c.name) {
            const std::string file = scratch / (c.name + ".onnx");
            io::OnnxExportOptions options;
            options.lengths = c.lengths;
            io::export_onnx(*c.model, file, options);
            auto back = io::import_onnx<float>(file);
            auto original = c.model->parameters();
            auto imported = back->parameters();
            BOOST_REQUIRE_EQUAL(original.size(), imported.size());
            for (std::size_t k = 0; k < original.size(); ++k) BOOST_TEST(original[k]->value() == imported[k]->value());
            c.model->eval();
            const xt::xarray<float> x = case_input(c, 3, 6, 99);
            const std::vector<std::int64_t> lengths = c.lengths ? case_lengths(3, 6) : std::vector<std::int64_t>{};
            Tape<float> tape;
            const xt::xarray<float> want = c.run(tape.constant(x), lengths).at("output");
            BOOST_TEST(predict(*back, x, lengths) == want);
        }
    }
}

// An imported model is an ordinary Sequential: fit trains it.
BOOST_AUTO_TEST_CASE(imported_model_trains) {
    auto model = io::import_onnx<float>(std::string(RECUR_ONNX_DATA_DIR) + "/torch/gru_last.onnx");
    const xt::xarray<float> x = uniform_array({32, 6, 4}, 5);
    xt::xarray<float> y = xt::xarray<float>::from_shape({32, 2});
    for (std::size_t b = 0; b < 32; ++b) {  // targets in (0, 1), as the Sigmoid gives
        y(b, 0) = x(b, 5, 0) > 0 ? 0.9f : 0.1f;
        y(b, 1) = 0.5f;
    }
    optim::Adam<float> adam(model->parameters(), {.lr = 0.02});
    train::LossFn<float> loss = [](const Var<float>& p, const Var<float>& t) { return nn::mse_loss(p, t); };
    auto history = train::fit(*model, loss, adam, {x, y}, {.epochs = 30, .batch_size = 8, .verbose = false});
    BOOST_TEST(history["loss"].back() < 0.5 * history["loss"].front());
}

BOOST_AUTO_TEST_CASE(unsupported_node_names_node_op_and_reason) {
    const std::string file = std::string(RECUR_ONNX_DATA_DIR) + "/torch/unsupported_gelu.onnx";
    BOOST_TEST(throws_with<io_error>([&] { io::import_onnx<float>(file); },
                                     {"unsupported_gelu.onnx", "/1/Div", "(Div)", "not supported"}));
    const std::string lbr0 = std::string(RECUR_ONNX_DATA_DIR) + "/torch/unsupported_gru_lbr0.onnx";
    BOOST_TEST(
        throws_with<io_error>([&] { io::import_onnx<float>(lbr0); }, {"gru_lbr0", "(GRU)", "linear_before_reset = 0"}));
}

// A double model is written as float32 and read back as double: the weights within float
// rounding, the outputs close.
BOOST_AUTO_TEST_CASE(double_models_round_trip_through_float32) {
    Scratch scratch;
    manual_seed(3);
    nn::Sequential<double> s;
    s.add(nn::recurrent_layer(
        std::make_unique<nn::GRU<double> >(nn::GRUOptions{.input_size = 3, .hidden_size = 4, .batch_first = true}),
        nn::Return::last));
    s.emplace<nn::Linear<double> >(4, 2);
    io::export_onnx(s, scratch / "double.onnx");
    auto back = io::import_onnx<double>(scratch / "double.onnx");
    auto a = s.parameters(), b = back->parameters();
    BOOST_REQUIRE_EQUAL(a.size(), b.size());
    for (std::size_t k = 0; k < a.size(); ++k)
        BOOST_TEST(xt::xarray<double>(xt::cast<float>(a[k]->value())) == b[k]->value());
    s.eval();
    back->eval();
    Tape<double> tape;
    xt::xarray<double> x = xt::cast<double>(uniform_array({2, 5, 3}, 4));
    const xt::xarray<double> ya = s(tape.constant(x)).value(), yb = (*back)(tape.constant(x)).value();
    BOOST_TEST(xt::amax(xt::abs(ya - yb))() < 1e-6);
}

// Truncated, corrupted and missing files raise io_error, never crash.
BOOST_AUTO_TEST_CASE(malformed_files_raise_io_error) {
    Scratch scratch;
    const std::string good = std::string(RECUR_ONNX_DATA_DIR) + "/torch/lstm_bi_stack.onnx";
    const std::string bytes = slurp(good);
    BOOST_REQUIRE_GT(bytes.size(), 1000u);
    const std::string bad = scratch / "bad.onnx";
    std::size_t raised = 0, cases = 0;
    for (std::size_t cut = 0; cut < bytes.size(); cut += 97) {
        std::ofstream(bad, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(cut));
        ++cases;
        try {
            io::import_onnx<float>(bad);
        } catch (const io_error&) {
            ++raised;
        }
    }
    BOOST_TEST(raised == cases);  // every prefix lacks the graph's output or its weights
    std::string flipped = bytes;
    for (std::size_t k = 40; k < flipped.size(); k += 13) flipped[k] = static_cast<char>(flipped[k] ^ 0x5a);
    std::ofstream(bad, std::ios::binary).write(flipped.data(), static_cast<std::streamsize>(flipped.size()));
    BOOST_TEST(throws_with<io_error>([&] { io::import_onnx<float>(bad); }, {"bad.onnx"}));
    BOOST_TEST(throws_with<io_error>([&] { io::import_onnx<float>(scratch / "missing.onnx"); },
                                     {"missing.onnx", "cannot open"}));
}

// ---- Tracing: layers without an ONNX operator (options.trace_input_shape) -----------------

using MGU = nn::Recurrent<MGUCell<float> >;

/// A RecurrentLayer of examples/custom_cell's MGU.
std::unique_ptr<nn::RecurrentLayer<MGU> > mgu_layer(std::size_t in, std::size_t hidden, nn::RecurrentOptions o,
                                                    nn::Return mode) {
    return nn::recurrent_layer(std::unique_ptr<MGU>(new MGU(make_mgu<float>(in, hidden, o))), mode);
}

/// A layer of assorted primitives, for the tracer's other ops: x (B, T, I) -> (B, 3 O + I).
class Mixer : public nn::Layer<float> {
public:
    Mixer(std::size_t in, std::size_t out)
        : out_(static_cast<std::ptrdiff_t>(out)),
          w_(register_parameter("w", uniform_array({out, in}, 3))),
          v_(register_parameter("v", uniform_array({in, out}, 4))) {}
    Var<float> forward(const Var<float>& x, const std::vector<std::int64_t>&) override {
        auto& tape = x.tape();
        Var<float> p = softmax(linear(x, tape.bind(w_)), -1) * 2.0f - 0.5f;  // (B, T, O)
        Var<float> q = matmul(tanh(x), tape.bind(v_)) / 3.0f;  // (B, T, O)
        Var<float> z = transpose(p + q, 0, 1);  // (T, B, O)
        Var<float> s = clamp(sum(z, 0), -1.0f, 1.0f);  // (B, O)
        Var<float> m = reshape(mean(z, 0, true), {-1, out_});  // (B, O)
        Var<float> r = pow(exp(-abs(m)), 2.0f) + sqrt(relu(m) + 1.0f) - log(sigmoid(s) + 1.0f);
        Var<float> l = log_softmax(select(slice(x, 1, 1, 3), 1, 0), -1);  // (B, I)
        return concat<float>({r + mean(r), s / (abs(r) + 1.0f), reshape(stack<float>({r, s}, 1), {-1, 2 * out_}), l},
                             -1);
    }

private:
    std::ptrdiff_t out_;
    Parameter<float>& w_;
    Parameter<float>& v_;
};

constexpr std::size_t traced_steps = 5;

std::vector<Case> traced_cases() {
    manual_seed(1415);
    using nn::Return;
    std::vector<Case> cases;
    {
        auto s = std::make_unique<nn::Sequential<float> >();
        s->add(mgu_layer(3, 4, {}, Return::sequences));
        cases.push_back(sequential("mgu_time_major", std::move(s), false, 3, false));
    }
    {
        auto s = std::make_unique<nn::Sequential<float> >();
        s->add(mgu_layer(3, 4, {.num_layers = 2, .batch_first = true}, Return::sequences));
        cases.push_back(sequential("mgu_stack_batch_first", std::move(s), true, 3, false));
    }
    {
        auto s = std::make_unique<nn::Sequential<float> >();
        s->add(mgu_layer(3, 4, {.num_layers = 2, .batch_first = true, .bidirectional = true}, Return::last));
        s->emplace<nn::Linear<float> >(8, 2);
        s->emplace<nn::Sigmoid<float> >();
        cases.push_back(sequential("mgu_bi_stack_last_linear", std::move(s), true, 3, false));
    }
    {
        auto s = std::make_unique<nn::Sequential<float> >();
        s->add(mgu_layer(3, 5, {.bidirectional = true}, Return::sequences));
        cases.push_back(sequential("mgu_bi_time_major", std::move(s), false, 3, false));
    }
    {
        auto s = std::make_unique<nn::Sequential<float> >();
        s->add(rec<nn::LSTM<float> >(nn::LSTMOptions{.input_size = 3, .hidden_size = 4}, Return::sequences));
        s->add(mgu_layer(4, 3, {}, Return::last));
        cases.push_back(sequential("lstm_then_mgu_last", std::move(s), false, 3, false));
    }
    {
        auto s = std::make_unique<nn::Sequential<float> >();
        s->emplace<Mixer>(3, 4);
        cases.push_back(sequential("mixer_ops", std::move(s), true, 3, false));
    }
    return cases;
}

io::OnnxExportOptions traced_options(const Case& c) {
    io::OnnxExportOptions o;
    o.trace_input_shape = c.batch_first ? std::vector<std::size_t>{0, traced_steps, c.width}
                                        : std::vector<std::size_t>{traced_steps, 0, c.width};
    return o;
}

// The MGU of examples/custom_cell (1 and 2 layers, bidirectional, batch_first both ways,
// Return::sequences and last, after a native LSTM) and a layer of assorted primitives,
// traced: onnx.checker passes, and ONNX Runtime's outputs equal recur's within 1e-5 for
// batches of 1 and 4 rows (the batch axis stays dynamic).
BOOST_AUTO_TEST_CASE(traced_export_matches_onnx_runtime) {
    Scratch scratch;
    std::vector<Case> cases = traced_cases();
    const std::vector<std::size_t> batches{1, 4};
    std::vector<std::string> files;
    std::vector<std::pair<std::string, std::vector<Feed> > > jobs;
    std::vector<Outputs> expected;
    for (Case& c : cases) {
        c.model->train();  // export traces in eval mode and restores the mode
        const std::string file = scratch / (c.name + ".onnx");
        io::export_onnx(*c.model, file, traced_options(c));
        BOOST_TEST(c.model->training());
        c.model->eval();
        files.push_back(file);
        std::uint64_t seed = 21;
        for (std::size_t batch : batches) {
            xt::xarray<float> x = case_input(c, batch, traced_steps, seed++);
            Tape<float> tape;
            expected.push_back(c.run(tape.constant(x), {}));
            jobs.emplace_back(file, std::vector<Feed>{float_feed("input", x)});
        }
    }
    onnx_check(scratch, files);
    std::vector<Outputs> got = onnx_runtime(scratch, jobs);
    BOOST_REQUIRE_EQUAL(got.size(), expected.size());
    for (std::size_t j = 0; j < jobs.size(); ++j) {
        BOOST_TEST_CONTEXT(cases[j / batches.size()].name << " batch " << batches[j % batches.size()]) {
            BOOST_REQUIRE(got[j].count("output") == 1);
            BOOST_TEST(max_difference(got[j].at("output"), expected[j].at("output")) <= 1e-5);
        }
    }
}

// The parameters of a traced layer are initializers under their state_dict names.
BOOST_AUTO_TEST_CASE(traced_parameters_keep_their_names) {
    Scratch scratch;
    nn::Sequential<float> s;
    s.emplace<nn::Linear<float> >(2, 3);
    s.add(mgu_layer(3, 4, {.bidirectional = true}, nn::Return::sequences));
    io::OnnxExportOptions o;
    o.trace_input_shape = {4, 0, 2};
    const std::string file = scratch / "names.onnx";
    io::export_onnx(s, file, o);
    BOOST_TEST(python_print(scratch, file, "*sorted(i.name for i in m.graph.initializer if i.name.startswith('1.'))") ==
               "1.bias_l0 1.bias_l0_reverse 1.weight_hf_l0 1.weight_hf_l0_reverse 1.weight_hh_l0 "
               "1.weight_hh_l0_reverse 1.weight_ih_l0 1.weight_ih_l0_reverse\n");
}

/// A layer with an op the tracer does not know (max).
class MaxLayer : public nn::Layer<float> {
public:
    Var<float> forward(const Var<float>& x, const std::vector<std::int64_t>&) override { return max(x, -1); }
};
/// A layer that computes a value from its input outside the recorded graph.
class DetachLayer : public nn::Layer<float> {
public:
    Var<float> forward(const Var<float>& x, const std::vector<std::int64_t>&) override { return x + detach(x * 2.0f); }
};

BOOST_AUTO_TEST_CASE(untraceable_layers_name_the_layer_and_op_and_leave_no_file) {
    Scratch scratch;
    const std::string file = scratch / "bad.onnx";
    nn::Sequential<float> mgu;
    mgu.add(mgu_layer(3, 4, {}, nn::Return::last));
    // Without trace_input_shape: the custom cell is refused, and the message says how to trace.
    BOOST_TEST(throws_with<value_error>([&] { io::export_onnx(mgu, file); },
                                        {"layer '0'", "custom cell", "trace_input_shape"}));
    io::OnnxExportOptions o;
    o.trace_input_shape = {5, 0, 3};
    nn::Sequential<float> with_max;
    with_max.emplace<nn::Linear<float> >(3, 3);
    with_max.emplace<MaxLayer>();
    BOOST_TEST(
        throws_with<value_error>([&] { io::export_onnx(with_max, file, o); }, {"layer '1'", "MaxLayer", "'max'"}));
    DetachLayer detached;
    BOOST_TEST(throws_with<value_error>([&] { io::export_onnx(detached, file, o); }, {"DetachLayer", "detach"}));
    MGU bare = make_mgu<float>(3, 4, {});
    BOOST_TEST(throws_with<value_error>([&] { io::export_onnx(bare, file, o); }, {"MGUCell", "nn::RecurrentLayer"}));
    o.trace_input_shape = {5, 3};
    BOOST_TEST(throws_with<value_error>([&] { io::export_onnx(mgu, file, o); }, {"trace_input_shape", "one 0"}));
    o.trace_input_shape = {5, 0, 3};
    o.lengths = true;
    BOOST_TEST(
        throws_with<value_error>([&] { io::export_onnx(mgu, file, o); }, {"lengths", "trace_input_shape", "exclude"}));
    BOOST_TEST(!fs::exists(file));
}

BOOST_AUTO_TEST_SUITE_END()

#endif  // RECUR_HAS_ONNX
