// recur/precision.hpp — the precision policy of float models (see README "Reduced precision").
//
// Precision::f32 (the default) runs everything in float. Precision::bf16 is mixed precision:
// the matrix products of the recurrent layers and of linear (the hoisted input projection,
// the recurrent product h W_hh^T, dense heads) read their operands rounded to bfloat16 and sum
// the products in float; everything else (master weights, gradients, optimizer state, gate
// math, losses, softmax, reductions) stays float. A tape takes it from TapeOptions::precision,
// train::fit from FitOptions::precision, train::predict from its precision argument. A double
// tape (gradient checks) refuses bf16 with a value_error.
#pragma once

#include <string>

#include "recur/error.hpp"

namespace recur {

enum class Precision { f32, bf16 };

inline const char* precision_name(Precision p) { return p == Precision::bf16 ? "bf16" : "f32"; }

/// "f32" / "float32" or "bf16" / "bfloat16"; value_error naming `what` otherwise.
inline Precision parse_precision(const std::string& name, const std::string& what = "precision") {
    if (name == "f32" || name == "float32") return Precision::f32;
    if (name == "bf16" || name == "bfloat16") return Precision::bf16;
    throw value_error(what + ": unknown precision '" + name + "' (f32 or bf16)");
}

/// Whether this CPU multiplies bf16 natively (AVX512_BF16 or AMX, as oneDNN sees it). Without
/// it, bf16 products run on oneDNN's emulation through AVX-512 (correct, slower), and a CPU
/// without AVX-512 raises value_error when a bf16 product is asked for.
bool bf16_native();

}  // namespace recur
