#!/usr/bin/python3
"""Writes the PyTorch reference models of tests/test_onnx.cpp (run by hand, PyTorch 1.13):

    /usr/bin/python3 tests/onnx/make_torch_models.py tests/onnx/torch

For each model NAME: NAME.onnx (torch.onnx.export, opset 14, dynamic batch and sequence axes)
and NAME.npz with "input" (float32; integer-valued ids for embedding models) and "output",
PyTorch's result in eval mode. The models are nn.Sequential-style chains of the layers recur
imports; their submodules are named "0", "1", ... as in nn.Sequential.
"""
import os
import sys

import numpy as np
import onnx
import torch
from torch import nn


class Chain(nn.Module):
    """nn.Sequential that also holds recurrent modules: 'seq' keeps their output sequence,
    'last' their h_n[-1] (the last layer's final state, unidirectional)."""

    def __init__(self, *layers):
        super().__init__()
        for k, (layer, _) in enumerate(layers):
            self.add_module(str(k), layer)
        self.modes = [mode for _, mode in layers]

    def forward(self, x):
        for layer, mode in zip(self.children(), self.modes):
            if isinstance(layer, (nn.RNN, nn.LSTM, nn.GRU)):
                y, h = layer(x)
                if isinstance(h, tuple):
                    h = h[0]
                x = y if mode == "seq" else h[-1]
            else:
                x = layer(x)
        return x


def models():
    yield "lstm_bi_stack", Chain((nn.LSTM(4, 6, num_layers=2, batch_first=True, bidirectional=True), "seq"),
                                 (nn.Linear(12, 3), None)), (3, 5, 4), False
    yield "gru_last", Chain((nn.GRU(4, 7, batch_first=True), "last"), (nn.Linear(7, 2), None),
                            (nn.Sigmoid(), None)), (2, 6, 4), False
    yield "rnn_relu_time_major", Chain((nn.RNN(3, 5, nonlinearity="relu"), "seq"), (nn.Tanh(), None)), (4, 2, 3), False
    yield "embedding_lstm", Chain((nn.Embedding(10, 4), None), (nn.LSTM(4, 5, batch_first=True), "last"),
                                  (nn.Linear(5, 3), None), (nn.LogSoftmax(dim=-1), None)), (2, 7), True
    # Not importable: GELU exports as Div, Erf, Add, Mul (the test expects the error on Div).
    yield "unsupported_gelu", Chain((nn.GRU(3, 4, batch_first=True), "seq"), (nn.GELU(), None)), (2, 3, 3), False
    yield "gru_bi_stack_time_major", Chain((nn.GRU(3, 4, num_layers=2, bidirectional=True), "seq"),
                                           (nn.ReLU(), None), (nn.Linear(8, 2), None)), (5, 3, 3), False


def onnx_gru_linear_before_reset_0(path):
    """A GRU node as other exporters write it (linear_before_reset = 0): not PyTorch's GRU."""
    from onnx import TensorProto, helper
    w = helper.make_tensor("W", TensorProto.FLOAT, [1, 6, 3], [0.1] * 18)
    r = helper.make_tensor("R", TensorProto.FLOAT, [1, 6, 2], [0.1] * 12)
    node = helper.make_node("GRU", ["input", "W", "R"], ["Y", "Y_h"], name="gru_lbr0", hidden_size=2)
    squeeze_axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    squeeze = helper.make_node("Squeeze", ["Y", "axes"], ["output"], name="squeeze")
    graph = helper.make_graph([node, squeeze], "lbr0", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["T", "B", 3])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["T", "B", 2])],
                              initializer=[w, r, squeeze_axes])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), path)


def main(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(14)
    for name, model, shape, ids in models():
        model.eval()
        if ids:
            x = torch.randint(0, 10, shape)
        else:
            x = torch.randn(*shape)
        with torch.no_grad():
            y = model(x)
        axes = {"input": {0: "dim0", 1: "dim1"}}
        torch.onnx.export(model, (x,), os.path.join(out, name + ".onnx"), opset_version=14,
                          input_names=["input"], output_names=["output"], dynamic_axes=axes)
        np.savez(os.path.join(out, name + ".npz"), input=x.numpy().astype(np.float32),
                 output=y.numpy().astype(np.float32))
        print(name, tuple(x.shape), "->", tuple(y.shape))
    onnx_gru_linear_before_reset_0(os.path.join(out, "unsupported_gru_lbr0.onnx"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "torch"))
