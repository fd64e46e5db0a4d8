// The typed states (Tape::state) of the shape, reduction and scalar ops, shared with the ONNX exporter's
// tracer (onnx/export.cpp), which reads a recorded node's axes, ranges and scalars from them.
// Internal to the library (not installed); an op's forward is still the only writer.
#pragma once

#include <cstddef>
#include <vector>

namespace recur {

/// permute: x axis k is y axis inverse[k].
struct PermuteState {
    std::vector<std::size_t> inverse;
};

/// slice and select: rows [start, start + count) of `axis` (select: count 1, axis dropped).
struct SliceState {
    std::size_t axis = 0, start = 0, count = 0;
};

/// concat and stack: the axis they join on; stack makes it a new axis.
struct JoinState {
    std::size_t axis = 0;
    bool new_axis = false;  // stack
};

/// sum and mean: the reduced axis (0 for all elements) and the factor c (1 for sum, 1/n for
/// mean).
template <class T>
struct ReduceState {
    std::size_t axis = 0;
    T scale = T(1);
};

/// softmax, log_softmax and masked_softmax: the axis.
struct AxisState {
    std::size_t axis = 0;
};

/// affine: y = scale * x + shift.
template <class T>
struct AffineState {
    T scale, shift;
};

/// pow: y = x^exponent.
template <class T>
struct PowState {
    T exponent;
};

/// clamp: y = min(max(x, lo), hi).
template <class T>
struct ClampState {
    T lo, hi;
};

}  // namespace recur
