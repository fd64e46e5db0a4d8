// recur/onnx.hpp — models out to ONNX and in from ONNX (the recur::onnx library).
//
// Built when Debian's libonnx-dev and libprotobuf-dev are found (CMake option RECUR_ONNX);
// link recur::onnx. Files are ONNX protobuf ModelProtos written through ONNX's own generated
// classes, float32 tensors.
//
// Export, export_onnx(model, path, options): a Sequential of Embedding, Linear, ReLU, Tanh,
// Sigmoid, Softmax, LogSoftmax, Dropout (the identity: an exported model is for inference)
// and RecurrentLayers of RNN (tanh or relu), LSTM (no proj_size: ONNX's LSTM has no
// projection) and GRU, in any stacking, direction, batch_first and Return mode; or one of
// those layers alone; or a bare nn::RNN / LSTM / GRU (outputs "output", "h_n" and, for
// the LSTM, "c_n", as PyTorch's). Recurrent layers become ONNX's own RNN / LSTM / GRU
// operators, one per layer, weights converted:
//   - LSTM gates: PyTorch/recur i, f, g, o -> ONNX i, o, f, c;
//   - GRU gates: r, z, n -> z, r, h with linear_before_reset = 1 (b_hn inside the reset
//     product, as PyTorch's);
//   - W (D, G, I), R (D, G, H), B (D, 2G) = [b_ih, b_hh] per direction (G the gate
//     width: 4H, 3H or H);
//   - time-major inside (layout 0; Y is (T, D, B, H)): batch_first layers get Transposes,
//     as torch.onnx.export writes them.
// The graph input "input" has dynamic axes "batch" and "sequence" (rank 3, or rank 2 ids
// (int64) when the model starts with an Embedding; (batch, features) for a model without a
// recurrent layer); the output is "output". With options.lengths, an int32 input
// "sequence_lens" (B) feeds every recurrent operator: pass the lengths you would pass to
// forward(x, lengths).
// A model that cannot be expressed (a custom cell, proj_size, another layer type) raises
// value_error naming the layer and the reason, and writes nothing. The file is written
// atomically (io::write_atomically).
//
// Tracing, for layers that have no ONNX operator (a RecurrentLayer of a user-written cell,
// any Layer built from recur's primitives), as torch.onnx traces Python code: with
// options.trace_input_shape (e.g. {0, T, I}: batch-first, fixed T, batch axis 0), such a
// layer runs forward in eval mode on a recording tape, and the ops its output depends on
// become ONNX primitives: add/sub/mul/div/neg -> Add/Sub/Mul/Div/Neg, scalar arithmetic
// (affine, `1 - f`) -> Mul/Add/Sub with scalar initializers, pow, clamp -> Pow, Clip,
// exp/log/tanh/sigmoid/relu/abs/sqrt -> the ONNX op of that name, matmul -> MatMul, linear ->
// MatMul(x, Transpose(W)) + Add(b), reshape -> Reshape, permute/transpose -> Transpose,
// slice/chunk -> Slice, select -> Gather, concat -> Concat, stack -> Unsqueeze + Concat,
// softmax/log_softmax -> Softmax/LogSoftmax, sum/mean -> ReduceSum/ReduceMean. Parameters
// are initializers under their state_dict names; the zero initial state is a
// ConstantOfShape of the batch size. Limits: T is fixed (the input's sequence extent is
// T, not dynamic); no lengths (options.lengths is a value_error); the state starts at zero
// (a stateful layer is a value_error); the batch stays dynamic (the layer is recorded for
// two batch sizes, and the extents that differ are the batch axis). Any other op raises
// value_error naming the layer and the op. import_onnx does not read traced graphs back.
//
// Import, import_onnx<T>(path): rebuilds a Sequential with the weights loaded, from what
// export_onnx writes and from what torch.onnx.export (PyTorch 1.13, opset 14) writes for
// nn.Sequential-style chains of those layers: its Transposes around batch_first, its
// Shape/Gather/Unsqueeze/Concat/ConstantOfShape/Slice glue for zero initial states, Squeeze
// of a one-direction Y, Gather of h_n[-1], MatMul+Add or Gemm for Linear. The graph must be
// a chain from its first input to its first output. Anything else raises io_error naming the
// file, the node, its op type and the reason; a malformed or truncated file raises io_error.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "recur/nn/layers.hpp"
#include "recur/nn/module.hpp"

namespace recur::io {

struct OnnxExportOptions {
    int opset = 14;  // 14 to 17 (what ONNX 1.12 knows)
    bool lengths = false;  // add the int32 input "sequence_lens" (B)
    /// Tracing (see the top of this file): the model's input shape with 0 on the batch axis,
    /// e.g. {0, T, I} for a batch-first (B, T, I) input, {T, 0, I} time-major. Layers with
    /// no ONNX operator (a RecurrentLayer of a user-written cell, ...) are then recorded for
    /// this fixed T and written as ONNX primitives. Empty: such a layer is a value_error.
    std::vector<std::size_t> trace_input_shape{};
    std::string producer_name = "recur";
    std::string producer_version = "0.1.0";
    std::string graph_name = "recur";
    std::string doc_string{};
    std::vector<std::pair<std::string, std::string>> metadata{};  // metadata_props, in order
};

/// Writes `model` to `path` as an ONNX model (see the top of this file).
template <class T>
void export_onnx(nn::Module<T>& model, const std::string& path, const OnnxExportOptions& options = {});

/// Reads an ONNX model into a Sequential with its weights (see the top of this file).
template <class T>
std::unique_ptr<nn::Sequential<T>> import_onnx(const std::string& path);

extern template void export_onnx<float>(nn::Module<float>&, const std::string&, const OnnxExportOptions&);
extern template void export_onnx<double>(nn::Module<double>&, const std::string&, const OnnxExportOptions&);
extern template std::unique_ptr<nn::Sequential<float>> import_onnx<float>(const std::string&);
extern template std::unique_ptr<nn::Sequential<double>> import_onnx<double>(const std::string&);

}  // namespace recur::io
