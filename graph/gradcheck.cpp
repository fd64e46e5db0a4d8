// gradcheck: analytic gradients from the tape against central differences, in double.
#include "recur/gradcheck.hpp"

#include <cmath>
#include <cstring>
#include <random>
#include <sstream>

namespace recur {

namespace {

struct Run {
    xt::xarray<double> seed;  // upstream gradient s
    std::vector<xt::xarray<double>> input_grads;
    std::vector<xt::xarray<double>> param_grads;
    std::vector<Parameter<double>*> params;
};

// f(x) on a fresh epoch of `tape`, as a plain array of the seed's shape.
xt::xarray<double> evaluate(const GradcheckFn& f, Tape<double>& tape, const std::vector<xt::xarray<double>>& inputs,
                            const xt::xarray<double>& seed, std::uint64_t tape_seed) {
    tape.clear();
    tape.seed(tape_seed);
    std::vector<Var<double>> xs;
    for (const auto& x : inputs) xs.push_back(tape.constant(x));
    Var<double> y = f(tape, xs);
    y.check("gradcheck");
    if (y.shape() != seed.shape())
        throw shape_error("gradcheck: f's output changed shape from " + shape_str(seed.shape()) + " to " +
                          shape_str(y.shape()) + " between evaluations");
    return y.value();
}

// dL/dv for L = sum(f * s) by central differences. The outputs are differenced element by
// element before they are weighted, so outputs that do not depend on v add no rounding noise.
// v is an element of `owner`'s value when it is a Parameter's (each write marks it changed).
double numeric(const GradcheckFn& f, Tape<double>& tape, const std::vector<xt::xarray<double>>& inputs, double& v,
               const xt::xarray<double>& seed, const GradcheckOptions& o, Parameter<double>* owner = nullptr) {
    const double keep = v;
    auto set = [&](double x) {
        v = x;
        if (owner) (void)owner->value();  // a new version: copies derived from it are remade
    };
    set(keep + o.eps);
    const xt::xarray<double> up = evaluate(f, tape, inputs, seed, o.tape_seed);
    set(keep - o.eps);
    const xt::xarray<double> down = evaluate(f, tape, inputs, seed, o.tape_seed);
    set(keep);
    double d = 0;
    for (std::size_t k = 0; k < seed.size(); ++k) d += seed.data()[k] * (up.data()[k] - down.data()[k]);
    return d / (2 * o.eps);
}

// One forward and backward; parameter grads are measured from zero and then restored.
Run analytic(const GradcheckFn& f, Tape<double>& tape, const std::vector<xt::xarray<double>>& inputs,
             const GradcheckOptions& o, const xt::xarray<double>* seed) {
    Run r;
    tape.clear();
    tape.seed(o.tape_seed);
    std::vector<Var<double>> xs;
    for (const auto& x : inputs) xs.push_back(tape.variable(x));
    Var<double> y = f(tape, xs);
    y.check("gradcheck");
    if (seed) {
        r.seed = *seed;
    } else {
        std::mt19937_64 rng(o.seed);
        std::uniform_real_distribution<double> u(0.5, 1.5);
        std::bernoulli_distribution sign(0.5);
        r.seed.resize(y.shape());
        for (auto& s : r.seed) s = sign(rng) ? u(rng) : -u(rng);
    }
    r.params = tape.bound_parameters();
    std::vector<xt::xarray<double>> saved;
    for (auto* p : r.params) {
        saved.push_back(p->grad());
        p->zero_grad();
    }
    if (y.requires_grad()) tape.backward(y, r.seed);
    for (const auto& x : xs) r.input_grads.push_back(x.requires_grad() ? x.grad() : xt::zeros<double>(x.shape()));
    for (std::size_t k = 0; k < r.params.size(); ++k) {
        r.param_grads.push_back(r.params[k]->grad());
        r.params[k]->grad() = saved[k];
    }
    return r;
}

bool identical(const std::vector<xt::xarray<double>>& a, const std::vector<xt::xarray<double>>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t k = 0; k < a.size(); ++k) {
        if (a[k].shape() != b[k].shape()) return false;
        for (std::size_t e = 0; e < a[k].size(); ++e)
            // Bit for bit on purpose (-0 vs 0 and NaN payloads count as differences).
            // NOLINTNEXTLINE(bugprone-suspicious-memory-comparison)
            if (std::memcmp(&a[k].data()[e], &b[k].data()[e], sizeof(double)) != 0) return false;
    }
    return true;
}

}  // namespace

std::string GradcheckReport::summary() const {
    std::ostringstream s;
    s << (passed ? "gradcheck passed" : "gradcheck FAILED") << ": " << elements << " elements (" << parameters
      << " parameters), max relative error " << max_rel_error << ", max absolute error " << max_abs_error;
    if (!worst.empty()) s << "; worst at " << worst << ": analytic " << worst_analytic << ", numeric " << worst_numeric;
    if (!deterministic) s << "; two backward passes DIFFER";
    return s.str();
}

GradcheckReport gradcheck(const GradcheckFn& f, const std::vector<xt::xarray<double>>& inputs,
                          const GradcheckOptions& o) {
    if (!(o.eps > 0)) throw value_error("gradcheck: eps must be positive");
    Tape<double> tape;
    const Run first = analytic(f, tape, inputs, o, nullptr);
    const Run second = analytic(f, tape, inputs, o, &first.seed);

    GradcheckReport rep;
    rep.deterministic =
        identical(first.input_grads, second.input_grads) && identical(first.param_grads, second.param_grads);
    rep.parameters = first.params.size();

    auto compare = [&](double a, double n, const std::string& where) {
        const double abs_err = std::abs(a - n);
        const double rel = abs_err / std::max({std::abs(a), std::abs(n), o.floor});
        rep.max_abs_error = std::max(rep.max_abs_error, abs_err);
        if (rel > rep.max_rel_error || rep.worst.empty() || std::isnan(rel)) {
            rep.max_rel_error = std::isnan(rel) ? rel : std::max(rel, rep.max_rel_error);
            rep.worst = where;
            rep.worst_analytic = a;
            rep.worst_numeric = n;
        }
        ++rep.elements;
    };

    std::vector<xt::xarray<double>> xs = inputs;
    for (std::size_t i = 0; i < xs.size(); ++i)
        for (std::size_t e = 0; e < xs[i].size(); ++e)
            compare(first.input_grads[i].data()[e], numeric(f, tape, xs, xs[i].data()[e], first.seed, o),
                    "input " + std::to_string(i) + " " + shape_str(xs[i].shape()) + " flat " + std::to_string(e));
    if (o.check_parameters)
        for (std::size_t p = 0; p < first.params.size(); ++p) {
            auto& value = first.params[p]->value();
            for (std::size_t e = 0; e < value.size(); ++e)
                compare(
                    first.param_grads[p].data()[e],
                    numeric(f, tape, xs, value.data()[e], first.seed, o, first.params[p]),
                    "parameter " + std::to_string(p) + " " + shape_str(value.shape()) + " flat " + std::to_string(e));
        }
    rep.passed = rep.deterministic && !std::isnan(rep.max_rel_error) && rep.max_rel_error <= o.rtol;
    return rep;
}

}  // namespace recur
