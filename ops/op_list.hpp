// The one list of primitives. Each entry is an op with its forward and backward in ops/.
// tests/test_op_gradients.cpp is generated from this list: every entry must have gradient
// cases there (a missing one is a link error), so no op can be added without its check.
#pragma once

#define RECUR_PRIMITIVES(X)                                    \
    X(add)                                                     \
    X(sub)                                                     \
    X(mul)                                                     \
    X(div)                                                     \
    X(neg)                                                     \
    X(affine)                                                  \
    X(rdiv)                                                    \
    X(pow)                                                     \
    X(exp)                                                     \
    X(log)                                                     \
    X(tanh)                                                    \
    X(sigmoid)                                                 \
    X(relu)                                                    \
    X(abs)                                                     \
    X(softmax)                                                 \
    X(log_softmax)                                             \
    X(sum)                                                     \
    X(mean)                                                    \
    X(matmul)                                                  \
    X(linear)                                                  \
    X(reshape)                                                 \
    X(permute)                                                 \
    X(transpose)                                               \
    X(slice)                                                   \
    X(chunk)                                                   \
    X(concat)                                                  \
    X(stack)                                                   \
    X(select)                                                  \
    X(embedding)                                               \
    X(where)                                                   \
    X(dropout)                                                 \
    X(lstm_pointwise)                                          \
    X(lstm_step)                                               \
    X(gru_pointwise)                                           \
    X(gru_step)                                                \
    X(detach)                                                  \
    /* layer norm and the layer-normalised cells (issue 12) */ \
    X(layer_norm)                                              \
    X(layer_norm_lstm_step)                                    \
    X(layer_norm_gru_step)                                     \
    /* attention and indexing primitives (issue 12) */         \
    X(bmm)                                                     \
    X(masked_softmax)                                          \
    X(masked_fill)                                             \
    X(max)                                                     \
    X(min)                                                     \
    X(gather)                                                  \
    X(index_select)                                            \
    X(clamp)                                                   \
    X(sqrt)
