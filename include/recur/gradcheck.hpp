// recur/gradcheck.hpp — checks a function's gradients against central finite differences.
//
//   auto report = gradcheck([](Tape<double>& t, const std::vector<Var<double>>& x) {
//       return tanh(matmul(x[0], x[1]));
//   }, {a, b});
//   if (!report.passed) std::cerr << report.summary();
//
// The output y of f is reduced to the scalar L = sum(y * s) with a fixed random upstream
// gradient s (never a plain sum, which would hide transposition errors). For each input
// element, dL/dx is compared with sum(s * (y(x + eps) - y(x - eps))) / (2 eps) (outputs are
// differenced before they are weighted, so outputs that do not depend on x add no rounding
// noise). Every Parameter that
// f binds is checked the same way. Work in double: float cannot resolve eps = 1e-6.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <xtensor/xarray.hpp>

#include "recur/tape.hpp"

namespace recur {

struct GradcheckOptions {
    double eps = 1e-6;  // finite-difference step
    double rtol = 1e-6;  // pass when every element's relative error is at most this
    // Magnitudes below `floor` are compared to it: with eps = 1e-6 the numeric derivative of a
    // double computation carries ~1e-9 of rounding noise, so tiny gradients are held to an
    // absolute bound of rtol * floor = 1e-8 instead of a meaningless relative one.
    double floor = 1e-2;
    bool check_parameters = true;  // also check every Parameter that f binds
    std::uint64_t seed = 1234;  // upstream gradient s
    std::uint64_t tape_seed = 99;  // the tape generator is reseeded before every evaluation
};

struct GradcheckReport {
    bool passed = false;
    bool deterministic = false;  // two backward passes gave bit-identical gradients
    double max_abs_error = 0;
    double max_rel_error = 0;  // |a - n| / max(|a|, |n|, floor)
    std::string worst;  // where max_rel_error occurs: "input 1 (2, 3) flat 4" / "parameter 0 ..."
    double worst_analytic = 0;
    double worst_numeric = 0;
    std::size_t elements = 0;  // how many elements were checked
    std::size_t parameters = 0;  // how many Parameters f bound
    std::string summary() const;
};

using GradcheckFn = std::function<Var<double>(Tape<double>&, const std::vector<Var<double>>&)>;

GradcheckReport gradcheck(const GradcheckFn& f, const std::vector<xt::xarray<double>>& inputs,
                          const GradcheckOptions& options = {});

}  // namespace recur
