// What export and import share: ONNX's generated protobuf classes (Debian's libonnx-dev,
// built with ONNX_ML and namespace onnx) and the gate orders.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <vector>

#ifndef ONNX_NAMESPACE
#define ONNX_NAMESPACE onnx
#endif
#ifndef ONNX_ML
#define ONNX_ML 1
#endif
#include <onnx/onnx_pb.h>  // defines ONNX_API, then includes onnx-ml.pb.h

namespace recur::io::onnx_detail {

enum class CellKind { rnn, lstm, gru };

inline const char* op_type(CellKind kind) {
    return kind == CellKind::lstm ? "LSTM" : kind == CellKind::gru ? "GRU" : "RNN";
}
inline std::size_t gates(CellKind kind) { return kind == CellKind::lstm ? 4 : kind == CellKind::gru ? 3 : 1; }

/// For each ONNX gate block, the recur (PyTorch) gate block it holds:
///   LSTM: ONNX i, o, f, c  <- recur i, f, g, o
///   GRU:  ONNX z, r, h     <- recur r, z, n
///   RNN:  one block.
inline std::vector<std::size_t> onnx_gate_sources(CellKind kind) {
    if (kind == CellKind::lstm) return {0, 3, 1, 2};
    if (kind == CellKind::gru) return {1, 0, 2};
    return {0};
}

/// The recur gate block of each ONNX block's inverse: recur block k comes from ONNX block result[k].
inline std::vector<std::size_t> recur_gate_sources(CellKind kind) {
    const std::vector<std::size_t> to_onnx = onnx_gate_sources(kind);
    std::vector<std::size_t> back(to_onnx.size());
    for (std::size_t k = 0; k < to_onnx.size(); ++k) back[to_onnx[k]] = k;
    return back;
}

/// Rows of a (G*H, cols) matrix given as a flat row-major span, gate blocks reordered:
/// out block k = in block sources[k].
template <class T>
std::vector<T> permute_gate_rows(const T* in, std::size_t hidden, std::size_t cols,
                                 const std::vector<std::size_t>& sources) {
    std::vector<T> out(sources.size() * hidden * cols);
    for (std::size_t k = 0; k < sources.size(); ++k)
        for (std::size_t r = 0; r < hidden * cols; ++r) out[k * hidden * cols + r] = in[sources[k] * hidden * cols + r];
    return out;
}

}  // namespace recur::io::onnx_detail
