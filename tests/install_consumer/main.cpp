// Uses an installed recur: records a small graph, runs backward, and gradchecks a function
// of its own, and defines a primitive of its own. Returns nonzero on any failure. The code
// between the TOUR markers is README's tour, and between the PRIMITIVE markers its "Writing a
// primitive" (the readme_snippets test checks that README holds them verbatim).
#include <cmath>
#include <cstdio>
#include <exception>
#include <iostream>
#include <vector>

#include <xtensor/xio.hpp>  // operator<< for arrays

#include <recur/recur.hpp>

using namespace recur;

namespace {

bool run() {
    bool ok = true;
    auto expect = [&ok](bool condition, const char* what) {
        if (!condition) {
            std::fprintf(stderr, "install_consumer: FAILED: %s\n", what);
            ok = false;
        }
    };

    // README.md holds the code between the markers verbatim: no reformatting.
    // clang-format off
    // TOUR BEGIN
    Tape<double> tape;
    Var<double> x = tape.variable(xt::xarray<double>{{0.5, -1.0, 2.0}, {1.5, 0.3, -0.7}});  // (B=2, I=3)
    Parameter<double> W(xt::xarray<double>{{0.1, -0.2, 0.3}, {0.4, 0.5, -0.6}});             // (O=2, I=3)
    Parameter<double> b(xt::xarray<double>{0.01, -0.02});                                    // (O=2)

    Var<double> h = tanh(linear(x, tape.bind(W), tape.bind(b)));  // x W^T + b -> (2, 2)
    Var<double> loss = mean(h * h) + 0.5 * sum(sigmoid(x));        // a scalar
    tape.backward(loss);
    std::cout << "loss " << loss.item() << "\ndloss/dx\n" << x.grad() << "\ndloss/dW\n" << W.grad() << "\n";

    // A function of your own, written with primitives: softsign(x) = x / (1 + |x|), then a
    // linear map by W. gradcheck compares its backward with central differences, for the
    // input and for every Parameter it binds.
    auto softsign_linear = [&W](Tape<double>& t, const std::vector<Var<double>>& in) {
        Var<double> s = in[0] / (1.0 + abs(in[0]));
        return linear(s, t.bind(W));
    };
    GradcheckReport report = gradcheck(softsign_linear, {x.value()});
    std::cout << report.summary() << "\n";
    // TOUR END
    // clang-format on

    // README.md holds the code between the markers verbatim: no reformatting.
    // clang-format off
    // PRIMITIVE BEGIN
    // softsign(x) = x / (1 + |x|) as ONE node with a backward of its own: the forward writes
    // the output and returns the backward, which adds g / (1 + |x|)^2 into x's gradient.
    auto softsign = [](const Var<double>& v) {
        return primitive("softsign", {v}, [](OpContext<double>& op) {
            const xt::xarray<double>& in = op.input(0);
            op.output(in.shape()) = in / (1.0 + xt::abs(in));
            return [](OpContext<double>& back) {
                back.add_input_grad(0, back.output_grad() / xt::square(1.0 + xt::abs(back.input(0))));
            };
        });
    };
    GradcheckReport own = gradcheck([&](Tape<double>&, const std::vector<Var<double>>& in) { return softsign(in[0]); },
                                    {x.value()});
    std::cout << own.summary() << "\n";
    // PRIMITIVE END
    // clang-format on

    expect(x.grad().shape() == x.shape(), "x.grad() has x's shape");
    expect(W.grad().shape() == W.shape(), "W.grad() has W's shape");
    expect(b.grad().shape() == b.shape(), "b.grad() has b's shape");

    // d/dx of 0.5 * sum(sigmoid(x)) alone, by hand, on a fresh tape: 0.5 s (1 - s).
    {
        Tape<double> t;
        Var<double> v = t.variable(x.value());
        t.backward(0.5 * sum(sigmoid(v)));
        bool close = true;
        for (std::size_t i = 0; i < v.size(); ++i) {
            const double s = 1.0 / (1.0 + std::exp(-v.value().flat(i)));
            close = close && std::abs(v.grad().flat(i) - 0.5 * s * (1.0 - s)) < 1e-12;
        }
        expect(close, "gradient of 0.5 * sum(sigmoid(x)) matches 0.5 s (1 - s)");
    }

    expect(own.passed && own.max_rel_error < 1e-8, "gradcheck of the softsign primitive passed");
    expect(report.passed, "gradcheck of softsign_linear passed");
    expect(report.deterministic, "two backward passes agree");
    expect(report.parameters == 1, "gradcheck saw the one bound Parameter");
    expect(report.elements == x.size() + W.size(), "gradcheck checked every input and parameter element");
    return ok;
}

}  // namespace

int main() {
    try {
        if (!run()) return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "install_consumer: exception: %s\n", e.what());
        return 1;
    }
    std::puts("install_consumer: OK");
    return 0;
}
