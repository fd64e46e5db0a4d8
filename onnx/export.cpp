// export_onnx: recur modules -> an ONNX ModelProto (see recur/onnx.hpp).
//
// Values flow through the graph with symbolic shapes: "batch" and "sequence" are the dynamic
// axes, every other extent is known. Recurrent layers run time-major inside (ONNX layout 0):
//   X (T, B, I) -> RNN/LSTM/GRU -> Y (T, D, B, H), Y_h (D, B, H)[, Y_c (D, B, H)]
//   next layer's X = Reshape(Transpose(Y, 0 2 1 3), [0, 0, -1])  (T, B, D*H)
#include "recur/onnx.hpp"

#include <cxxabi.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <typeinfo>

#include "onnx/proto.hpp"
#include "ops/op_states.hpp"
#include "recur/error.hpp"
#include "recur/io.hpp"
#include "recur/nn/recurrent.hpp"

namespace recur::io {
namespace {

using namespace onnx_detail;

/// An extent: a symbolic name ("batch", "sequence") or a known value.
struct Dim {
    std::string symbol;
    std::int64_t value = 0;
};
using Dims = std::vector<Dim>;

Dim known(std::size_t n) { return {"", static_cast<std::int64_t>(n)}; }
const Dim batch_dim{"batch", 0};
const Dim sequence_dim{"sequence", 0};

/// A tensor of the graph: its name and shape.
struct Value {
    std::string name;
    Dims dims;
};

/// The demangled C++ type of a layer, for error messages.
template <class T>
std::string type_name(const nn::Module<T>& m) {
    const char* mangled = typeid(m).name();
    int status = 0;
    char* plain = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
    std::string out = status == 0 && plain ? plain : mangled;
    std::free(plain);
    return out;
}

void set_dims(onnx::TypeProto_Tensor& t, const Dims& dims) {
    auto* shape = t.mutable_shape();
    for (const Dim& d : dims) {
        auto* dim = shape->add_dim();
        if (d.symbol.empty())
            dim->set_dim_value(d.value);
        else
            dim->set_dim_param(d.symbol);
    }
}

template <class T>
class Exporter {
public:
    explicit Exporter(const OnnxExportOptions& o) : o_(o), graph_(*model_.mutable_graph()) {
        if (o.opset < 14 || o.opset > 17)
            throw value_error("export_onnx: opset " + std::to_string(o.opset) + " is not supported (14 to 17)");
        model_.set_ir_version(o.opset <= 14 ? 7 : 8);
        model_.set_producer_name(o.producer_name);
        model_.set_producer_version(o.producer_version);
        if (!o.doc_string.empty()) model_.set_doc_string(o.doc_string);
        auto* opset = model_.add_opset_import();
        opset->set_domain("");
        opset->set_version(o.opset);
        for (const auto& [key, value] : o.metadata) {
            auto* entry = model_.add_metadata_props();
            entry->set_key(key);
            entry->set_value(value);
        }
        graph_.set_name(o.graph_name);
    }

    void export_model(nn::Module<T>& model) {
        if (o_.lengths && !o_.trace_input_shape.empty())
            throw value_error(
                "export_onnx: options.lengths and options.trace_input_shape exclude each other (a traced graph has a "
                "fixed length)");
        if (auto* rnn = dynamic_cast<nn::RNN<T>*>(&model)) return export_bare(*rnn, CellKind::rnn);
        if (auto* lstm = dynamic_cast<nn::LSTM<T>*>(&model)) return export_bare(*lstm, CellKind::lstm);
        if (auto* gru = dynamic_cast<nn::GRU<T>*>(&model)) return export_bare(*gru, CellKind::gru);
        auto* layer = dynamic_cast<nn::Layer<T>*>(&model);
        if (!layer)
            throw value_error("export_onnx: " + type_name(model) +
                              " is not supported: export a Sequential, one of its layers, or an RNN, LSTM or GRU "
                              "(a custom cell's nn::Recurrent traces inside an nn::RecurrentLayer)");
        std::vector<std::pair<std::string, nn::Layer<T>*>> layers;
        flatten(*layer, "", layers);
        Value x = graph_input(layers);
        for (auto& [prefix, l] : layers) x = emit_layer(*l, prefix, x);
        graph_output(x, "output");
    }

    std::string serialize() const {
        std::string bytes;
        if (!model_.SerializeToString(&bytes)) throw io_error("export_onnx: protobuf could not serialize the model");
        return bytes;
    }

private:
    // ---- Graph building ---------------------------------------------------------------------

    std::string fresh(const std::string& base) { return base + "_" + std::to_string(counter_++); }

    std::string float_initializer(const std::string& name, const std::vector<std::int64_t>& dims,
                                  const std::vector<T>& data) {
        auto* t = graph_.add_initializer();
        t->set_name(name);
        t->set_data_type(onnx::TensorProto::FLOAT);
        for (auto d : dims) t->add_dims(d);
        for (T v : data) t->add_float_data(static_cast<float>(v));
        return name;
    }

    /// A shared int64 constant (Reshape shapes).
    std::string int_constant(const std::vector<std::int64_t>& data) {
        auto found = int_constants_.find(data);
        if (found != int_constants_.end()) return found->second;
        std::string name = "shape";
        for (auto v : data) name += "_" + (v < 0 ? "m" + std::to_string(-v) : std::to_string(v));
        auto* t = graph_.add_initializer();
        t->set_name(name);
        t->set_data_type(onnx::TensorProto::INT64);
        t->add_dims(static_cast<std::int64_t>(data.size()));
        for (auto v : data) t->add_int64_data(v);
        int_constants_.emplace(data, name);
        return name;
    }

    /// A shared int64 scalar (Gather's index for select).
    std::string int_scalar(std::int64_t v) {
        auto found = int_scalars_.find(v);
        if (found != int_scalars_.end()) return found->second;
        std::string name = "index_" + (v < 0 ? "m" + std::to_string(-v) : std::to_string(v));
        auto* t = graph_.add_initializer();
        t->set_name(name);
        t->set_data_type(onnx::TensorProto::INT64);
        t->add_int64_data(v);
        int_scalars_.emplace(v, name);
        return name;
    }

    onnx::NodeProto& node(const std::string& op, const std::vector<std::string>& inputs,
                          const std::vector<std::string>& outputs) {
        auto* n = graph_.add_node();
        n->set_op_type(op);
        n->set_name(fresh(op));
        for (const auto& in : inputs) n->add_input(in);
        for (const auto& out : outputs) n->add_output(out);
        return *n;
    }
    static void attribute(onnx::NodeProto& n, const std::string& name, std::int64_t v) {
        auto* a = n.add_attribute();
        a->set_name(name);
        a->set_type(onnx::AttributeProto::INT);
        a->set_i(v);
    }
    static void attribute(onnx::NodeProto& n, const std::string& name, const std::vector<std::int64_t>& v) {
        auto* a = n.add_attribute();
        a->set_name(name);
        a->set_type(onnx::AttributeProto::INTS);
        for (auto x : v) a->add_ints(x);
    }
    static void attribute(onnx::NodeProto& n, const std::string& name, const std::string& v) {
        auto* a = n.add_attribute();
        a->set_name(name);
        a->set_type(onnx::AttributeProto::STRING);
        a->set_s(v);
    }
    static void attribute(onnx::NodeProto& n, const std::string& name, const std::vector<std::string>& v) {
        auto* a = n.add_attribute();
        a->set_name(name);
        a->set_type(onnx::AttributeProto::STRINGS);
        for (const auto& x : v) a->add_strings(x);
    }

    Value unary(const std::string& op, const Value& x) {
        Value y{fresh(op), x.dims};
        node(op, {x.name}, {y.name});
        return y;
    }
    Value transpose(const Value& x, const std::vector<std::int64_t>& perm) {
        Value y{fresh("transposed"), {}};
        for (auto p : perm) y.dims.push_back(x.dims[static_cast<std::size_t>(p)]);
        attribute(node("Transpose", {x.name}, {y.name}), "perm", perm);
        return y;
    }
    /// Reshape keeping the leading `keep` axes and joining the rest: [0, .., 0, -1].
    Value join_trailing(const Value& x, std::size_t keep) {
        std::vector<std::int64_t> shape(keep, 0);
        shape.push_back(-1);
        Value y{fresh("joined"), Dims(x.dims.begin(), x.dims.begin() + static_cast<std::ptrdiff_t>(keep))};
        std::int64_t width = 1;
        for (std::size_t k = keep; k < x.dims.size(); ++k) width *= x.dims[k].value;
        y.dims.push_back({"", width});
        node("Reshape", {x.name, int_constant(shape)}, {y.name});
        return y;
    }

    void graph_output(const Value& x, const std::string& name) {
        if (x.name == "input" || x.name == "sequence_lens") {  // nothing computed: an identity model
            node("Identity", {x.name}, {name});
        } else {
            for (auto& n : *graph_.mutable_node())
                for (auto& out : *n.mutable_output())
                    if (out == x.name) out = name;
            for (auto& n : *graph_.mutable_node())
                for (auto& in : *n.mutable_input())
                    if (in == x.name) in = name;
        }
        auto* out = graph_.add_output();
        out->set_name(name);
        auto* t = out->mutable_type()->mutable_tensor_type();
        t->set_elem_type(onnx::TensorProto::FLOAT);
        set_dims(*t, x.dims);
    }

    void add_graph_input(const std::string& name, int elem_type, const Dims& dims) {
        auto* in = graph_.add_input();
        in->set_name(name);
        auto* t = in->mutable_type()->mutable_tensor_type();
        t->set_elem_type(elem_type);
        set_dims(*t, dims);
    }

    // ---- Layers -----------------------------------------------------------------------------

    static void flatten(nn::Layer<T>& layer, const std::string& prefix,
                        std::vector<std::pair<std::string, nn::Layer<T>*>>& out) {
        if (auto* seq = dynamic_cast<nn::Sequential<T>*>(&layer)) {
            for (std::size_t k = 0; k < seq->size(); ++k) flatten((*seq)[k], prefix + std::to_string(k) + ".", out);
        } else {
            out.emplace_back(prefix, &layer);
        }
    }

    /// The module behind a RecurrentLayer of a shipped cell, or null.
    struct RecurrentInfo {
        CellKind kind;
        bool batch_first;
        std::size_t input_size;
    };
    static bool recurrent_info(nn::Layer<T>& l, RecurrentInfo& info) {
        if (auto* r = dynamic_cast<nn::RecurrentLayer<nn::RNN<T>>*>(&l)) {
            info = {CellKind::rnn, r->module().batch_first(), r->module().cell(0).input_size()};
        } else if (auto* m = dynamic_cast<nn::RecurrentLayer<nn::LSTM<T>>*>(&l)) {
            info = {CellKind::lstm, m->module().batch_first(), m->module().cell(0).input_size()};
        } else if (auto* g = dynamic_cast<nn::RecurrentLayer<nn::GRU<T>>*>(&l)) {
            info = {CellKind::gru, g->module().batch_first(), g->module().cell(0).input_size()};
        } else {
            return false;
        }
        return true;
    }

    /// Declares "input" (and "sequence_lens"): rank 3 in the first recurrent layer's layout,
    /// int64 ids when the model starts with an Embedding, (batch, features) without recurrence.
    Value graph_input(const std::vector<std::pair<std::string, nn::Layer<T>*>>& layers) {
        bool has_recurrent = false, batch_first = false;
        for (auto& entry : layers) {
            RecurrentInfo info{};
            if (recurrent_info(*entry.second, info)) {
                has_recurrent = true;
                batch_first = info.batch_first;
                break;
            }
        }
        const Dims outer = !has_recurrent ? Dims{batch_dim}
                           : batch_first  ? Dims{batch_dim, sequence_dim}
                                          : Dims{sequence_dim, batch_dim};
        Dims dims;
        int elem_type = onnx::TensorProto::FLOAT;
        for (auto& entry : layers) {
            nn::Layer<T>& l = *entry.second;
            RecurrentInfo info{};
            if (dynamic_cast<nn::Embedding<T>*>(&l)) {
                dims = has_recurrent ? outer : Dims{batch_dim, sequence_dim};
                elem_type = onnx::TensorProto::INT64;
            } else if (auto* linear = dynamic_cast<nn::Linear<T>*>(&l)) {
                dims = outer;
                dims.push_back(known(linear->in_features()));
            } else if (recurrent_info(l, info)) {
                dims = outer;
                dims.push_back(known(info.input_size));
            } else if (elementwise_layer(l)) {
                continue;
            } else if (o_.trace_input_shape.empty()) {
                refuse(l, where_of(l, entry.first));  // it cannot be exported: say why, first
            }
            break;
        }
        if (!o_.trace_input_shape.empty()) dims = traced_input_dims();
        if (dims.empty())
            throw value_error(
                "export_onnx: cannot tell the input's width: the model has no Embedding, Linear or recurrent layer "
                "(give options.trace_input_shape)");
        add_graph_input("input", elem_type, dims);
        if (o_.lengths) {
            if (!has_recurrent) throw value_error("export_onnx: options.lengths needs a recurrent layer in the model");
            add_graph_input("sequence_lens", onnx::TensorProto::INT32, {batch_dim});
        }
        return {"input", dims};
    }

    /// A layer that maps each element, or each row, without knowing the input's width.
    static bool elementwise_layer(nn::Layer<T>& l) {
        return dynamic_cast<nn::Dropout<T>*>(&l) || dynamic_cast<nn::ReLU<T>*>(&l) || dynamic_cast<nn::Tanh<T>*>(&l) ||
               dynamic_cast<nn::Sigmoid<T>*>(&l) || dynamic_cast<nn::Softmax<T>*>(&l) ||
               dynamic_cast<nn::LogSoftmax<T>*>(&l);
    }

    /// "export_onnx: layer '1' (recur::nn::Foo<float>)" for messages.
    static std::string where_of(nn::Layer<T>& l, const std::string& prefix) {
        return "export_onnx: layer '" + prefix.substr(0, prefix.empty() ? 0 : prefix.size() - 1) + "' (" +
               type_name(l) + ")";
    }

    /// The error for a layer with no ONNX form when tracing is off.
    [[noreturn]] static void refuse(nn::Layer<T>& l, const std::string& where) {
        if (type_name(l).find("RecurrentLayer") != std::string::npos)
            throw value_error(where +
                              " is not supported: a custom cell has no ONNX operator (only RNN, LSTM and GRU export; "
                              "set options.trace_input_shape to trace it into ONNX primitives)");
        throw value_error(where +
                          " is not supported: no ONNX form for this layer type (set options.trace_input_shape to trace "
                          "it into ONNX primitives)");
    }

    Value emit_layer(nn::Layer<T>& l, const std::string& prefix, const Value& x) {
        const std::string where = where_of(l, prefix);
        if (auto* linear = dynamic_cast<nn::Linear<T>*>(&l)) {
            // y = x W^T + b: MatMul(x, W^T (I, O)) then Add(b (O)).
            const std::size_t in = linear->in_features(), out = linear->out_features();
            const auto& w = linear->weight().value();
            std::vector<T> wt(in * out);
            for (std::size_t o = 0; o < out; ++o)
                for (std::size_t i = 0; i < in; ++i) wt[i * out + o] = w(o, i);
            Value y{fresh("linear"), x.dims};
            y.dims.back() = known(out);
            const std::string wname = float_initializer(
                prefix + "weight_t", {static_cast<std::int64_t>(in), static_cast<std::int64_t>(out)}, wt);
            if (Parameter<T>* b = linear->bias()) {
                const std::string product = fresh("matmul");
                node("MatMul", {x.name, wname}, {product});
                const std::string bname = float_initializer(prefix + "bias", {static_cast<std::int64_t>(out)},
                                                            std::vector<T>(b->value().begin(), b->value().end()));
                node("Add", {product, bname}, {y.name});
            } else {
                node("MatMul", {x.name, wname}, {y.name});
            }
            return y;
        }
        if (auto* emb = dynamic_cast<nn::Embedding<T>*>(&l)) {
            std::string ids = x.name;
            if (x.name != "input") {  // float ids from an earlier layer
                ids = fresh("ids");
                attribute(node("Cast", {x.name}, {ids}), "to", std::int64_t{onnx::TensorProto::INT64});
            }
            const auto& w = emb->weight().value();
            const std::string wname = float_initializer(
                prefix + "weight",
                {static_cast<std::int64_t>(emb->num_embeddings()), static_cast<std::int64_t>(emb->embedding_dim())},
                std::vector<T>(w.begin(), w.end()));
            Value y{fresh("embedded"), x.dims};
            y.dims.push_back(known(emb->embedding_dim()));
            node("Gather", {wname, ids}, {y.name});
            return y;
        }
        if (dynamic_cast<nn::Dropout<T>*>(&l)) return x;  // the identity at inference
        if (dynamic_cast<nn::ReLU<T>*>(&l)) return unary("Relu", x);
        if (dynamic_cast<nn::Tanh<T>*>(&l)) return unary("Tanh", x);
        if (dynamic_cast<nn::Sigmoid<T>*>(&l)) return unary("Sigmoid", x);
        if (auto* sm = dynamic_cast<nn::Softmax<T>*>(&l)) {
            Value y = unary("Softmax", x);
            attribute(graph_.mutable_node()->at(graph_.node_size() - 1), "axis", static_cast<std::int64_t>(sm->axis()));
            return y;
        }
        if (auto* lsm = dynamic_cast<nn::LogSoftmax<T>*>(&l)) {
            Value y = unary("LogSoftmax", x);
            attribute(graph_.mutable_node()->at(graph_.node_size() - 1), "axis",
                      static_cast<std::int64_t>(lsm->axis()));
            return y;
        }
        if (auto* r = dynamic_cast<nn::RecurrentLayer<nn::RNN<T>>*>(&l))
            return recurrent_layer(*r, CellKind::rnn, prefix, x, where);
        if (auto* m = dynamic_cast<nn::RecurrentLayer<nn::LSTM<T>>*>(&l))
            return recurrent_layer(*m, CellKind::lstm, prefix, x, where);
        if (auto* g = dynamic_cast<nn::RecurrentLayer<nn::GRU<T>>*>(&l))
            return recurrent_layer(*g, CellKind::gru, prefix, x, where);
        if (!o_.trace_input_shape.empty()) return trace_layer(l, prefix, x, where);
        refuse(l, where);
    }

    template <class M>
    Value recurrent_layer(nn::RecurrentLayer<M>& layer, CellKind kind, const std::string& prefix, const Value& x,
                          const std::string& where) {
        Stack stack = recurrent(layer.module(), kind, prefix, x, where, layer.mode() == nn::Return::sequences);
        if (layer.mode() == nn::Return::sequences) return stack.output;
        // Return::last: the last layer's Y_h (D, B, H) -> (B, D, H) -> (B, D*H).
        return join_trailing(transpose(stack.final_h.back(), {1, 0, 2}), 1);
    }

    /// A bare RNN / LSTM / GRU: outputs "output", "h_n" (L*D, B, H) and, for the LSTM, "c_n".
    template <class M>
    void export_bare(M& module, CellKind kind) {
        Dims dims = module.batch_first() ? Dims{batch_dim, sequence_dim} : Dims{sequence_dim, batch_dim};
        dims.push_back(known(module.cell(0).input_size()));
        add_graph_input("input", onnx::TensorProto::FLOAT, dims);
        if (o_.lengths) add_graph_input("sequence_lens", onnx::TensorProto::INT32, {batch_dim});
        Stack stack = recurrent(module, kind, "", {"input", dims}, "export_onnx: " + type_name(module), true);
        graph_output(stack.output, "output");
        graph_output(concat_states(stack.final_h), "h_n");
        if (kind == CellKind::lstm) graph_output(concat_states(stack.final_c), "c_n");
    }

    Value concat_states(const std::vector<Value>& parts) {
        if (parts.size() == 1) return parts[0];
        Value y{fresh("states"), parts[0].dims};
        std::int64_t rows = 0;
        std::vector<std::string> names;
        for (const auto& p : parts) {
            rows += p.dims[0].value;
            names.push_back(p.name);
        }
        y.dims[0] = {"", rows};
        attribute(node("Concat", names, {y.name}), "axis", std::int64_t{0});
        return y;
    }

    struct Stack {
        Value output;  // in the module's layout, (.., .., D*H)
        std::vector<Value> final_h;  // per layer, Y_h (D, B, H)
        std::vector<Value> final_c;  // per layer, Y_c (LSTM)
    };

    /// One ONNX operator per layer of `module` (see the top of this file).
    template <class M>
    Stack recurrent(M& module, CellKind kind, const std::string& prefix, const Value& x, const std::string& where,
                    bool want_output) {
        const std::size_t layers = module.num_layers(), dirs = module.directions();
        const auto d64 = static_cast<std::int64_t>(dirs);
        Value input = module.batch_first() ? transpose(x, {1, 0, 2}) : x;  // (T, B, I)
        Stack stack;
        for (std::size_t l = 0; l < layers; ++l) {
            std::vector<T> w, r, b;
            std::size_t hidden = 0, in = 0;
            bool bias = true;
            std::string activation = "Tanh";
            for (std::size_t d = 0; d < dirs; ++d) {
                auto& cell = module.cell(l, d == 1);
                if constexpr (requires { cell.weight_hr(); }) {
                    if (cell.weight_hr())
                        throw value_error(where +
                                          " is not supported: proj_size (an LSTM with projections) has no ONNX form");
                }
                if constexpr (requires { cell.nonlinearity(); }) {
                    if (cell.nonlinearity() == nn::Nonlinearity::relu) activation = "Relu";
                }
                hidden = cell.hidden_size();
                in = cell.input_size();
                const auto order = onnx_gate_sources(kind);
                auto append = [&](std::vector<T>& to, const xt::xarray<T>& from, std::size_t cols) {
                    std::vector<T> rows = permute_gate_rows(from.data(), hidden, cols, order);
                    to.insert(to.end(), rows.begin(), rows.end());
                };
                append(w, cell.weight_ih().value(), in);
                append(r, cell.weight_hh().value(), hidden);
                if (cell.bias_ih() && cell.bias_hh()) {
                    append(b, cell.bias_ih()->value(), 1);
                    append(b, cell.bias_hh()->value(), 1);
                } else {
                    bias = false;
                }
            }
            const auto g = static_cast<std::int64_t>(gates(kind) * hidden), h64 = static_cast<std::int64_t>(hidden);
            const std::string suffix = "_l" + std::to_string(l);
            std::vector<std::string> inputs{
                input.name, float_initializer(prefix + "W" + suffix, {d64, g, static_cast<std::int64_t>(in)}, w),
                float_initializer(prefix + "R" + suffix, {d64, g, h64}, r),
                bias ? float_initializer(prefix + "B" + suffix, {d64, 2 * g}, b) : std::string{}};
            if (o_.lengths) inputs.push_back("sequence_lens");
            Value y{fresh("Y"), {input.dims[0], known(dirs), input.dims[1], known(hidden)}};
            Value yh{fresh("Y_h"), {known(dirs), input.dims[1], known(hidden)}};
            std::vector<std::string> outputs{y.name, yh.name};
            Value yc{fresh("Y_c"), yh.dims};
            if (kind == CellKind::lstm) outputs.push_back(yc.name);
            auto& op = node(op_type(kind), inputs, outputs);
            attribute(op, "hidden_size", h64);
            attribute(op, "direction", std::string(dirs == 2 ? "bidirectional" : "forward"));
            if (kind == CellKind::rnn) attribute(op, "activations", std::vector<std::string>(dirs, activation));
            if (kind == CellKind::gru) attribute(op, "linear_before_reset", std::int64_t{1});
            stack.final_h.push_back(yh);
            if (kind == CellKind::lstm) stack.final_c.push_back(yc);
            if (l + 1 < layers) {
                input = join_trailing(transpose(y, {0, 2, 1, 3}), 2);  // (T, B, D*H)
            } else if (want_output) {
                stack.output = module.batch_first() ? join_trailing(transpose(y, {2, 0, 1, 3}), 2)  // (B, T, D*H)
                                                    : join_trailing(transpose(y, {0, 2, 1, 3}), 2);  // (T, B, D*H)
            }
        }
        return stack;
    }

    // ---- Tracing (options.trace_input_shape) --------------------------------------------------
    //
    // A layer without an ONNX form runs forward (eval mode) on a recording tape twice, for
    // batches of trace_batches[0] and [1] rows of the traced shape; the nodes reachable from its
    // output become ONNX primitives, one or a few per tape op. The two recordings must have
    // the same ops in the same order: the extents that differ between them are the batch
    // axis (kept dynamic: Reshape -1, ConstantOfShape of Shape(x)[batch axis]), and a constant
    // that differs between them was computed outside the tape from the input (an error).

    static constexpr std::size_t trace_batches[2] = {2, 3};

    /// The graph input's dims from options.trace_input_shape (one 0: the batch axis).
    Dims traced_input_dims() const {
        const auto& shape = o_.trace_input_shape;
        Dims dims;
        std::size_t zeros = 0;
        for (std::size_t d : shape) {
            dims.push_back(d == 0 ? batch_dim : known(d));
            zeros += d == 0 ? 1 : 0;
        }
        if (zeros != 1)
            throw value_error("export_onnx: options.trace_input_shape " + shape_str(Shape(shape.begin(), shape.end())) +
                              " must hold exactly one 0 (the batch axis)");
        return dims;
    }

    /// One recording of a layer: its tape, input and output nodes, and the nodes reachable
    /// from the output in creation (topological) order, with each node's position there.
    struct Recording {
        std::unique_ptr<Tape<T>> tape = std::make_unique<Tape<T>>();
        Var<T> x, y;
        std::vector<std::uint32_t> nodes;
        std::map<std::uint32_t, std::size_t> position;
        std::size_t batch = 0;
        const xt::xarray<T>& value(std::size_t p) const { return tape->value(nodes[p]); }
        const detail::Node<T>& node(std::size_t p) const { return tape->node(nodes[p]); }
        std::size_t input_position(std::size_t p, std::uint32_t k) const {
            return position.at(tape->input(nodes[p], k));
        }
        template <class S>
        S& state(std::size_t p) const {
            return tape->template saved_state<S>(nodes[p]);
        }
    };

    /// Runs l.forward on a variable of `dims` (batch extent `batch`, seeded uniform values)
    /// and collects what its output depends on.
    static void record(nn::Layer<T>& l, const Dims& dims, std::size_t batch, std::uint64_t seed, Recording& r,
                       const std::string& where) {
        Shape shape;
        for (const Dim& d : dims) {
            if (!d.symbol.empty() && d.symbol != batch_dim.symbol)
                throw value_error(where + " cannot be traced: its input's extent '" + d.symbol + "' is not known");
            shape.push_back(d.symbol.empty() ? static_cast<std::size_t>(d.value) : batch);
        }
        xt::xarray<T> values = xt::xarray<T>::from_shape(shape);
        std::mt19937_64 rng(seed);
        for (auto& v : values) v = static_cast<T>(static_cast<double>(rng() >> 11) * 0x1p-53 * 2.0 - 1.0);
        r.batch = batch;
        r.x = r.tape->variable(std::move(values));
        r.y = l.forward(r.x, {});
        std::vector<std::uint32_t> todo{r.y.index()};
        std::vector<bool> seen(r.tape->capacity(), false);
        while (!todo.empty()) {
            const std::uint32_t i = todo.back();
            todo.pop_back();
            if (seen[i]) continue;
            seen[i] = true;
            const auto& n = r.tape->node(i);
            if (n.owner != detail::no_node) todo.push_back(n.owner);  // output k >= 1 of a node
            for (std::uint32_t k = 0; k < n.num_inputs; ++k) todo.push_back(r.tape->input(i, k));
        }
        for (std::uint32_t i = 0; i < seen.size(); ++i)
            if (seen[i]) {
                r.position[i] = r.nodes.size();
                r.nodes.push_back(i);
            }
    }

    /// Sets and restores a layer's training mode (traced in eval mode).
    struct EvalScope {
        nn::Layer<T>& layer;
        bool was;
        explicit EvalScope(nn::Layer<T>& l) : layer(l), was(l.training()) { l.eval(); }
        ~EvalScope() { layer.train(was); }
        EvalScope(const EvalScope&) = delete;
        EvalScope& operator=(const EvalScope&) = delete;
    };

    Value trace_layer(nn::Layer<T>& l, const std::string& prefix, const Value& x, const std::string& where) {
        if (l.stateful())
            throw value_error(where + " cannot be traced: it is stateful (its carried state would become a constant)");
        Recording a, b;
        {
            EvalScope eval(l);
            record(l, x.dims, trace_batches[0], 1, a, where);
            record(l, x.dims, trace_batches[1], 2, b, where);
        }
        if (a.y.index() == a.x.index()) return x;  // the identity
        if (a.nodes.size() != b.nodes.size())
            throw value_error(where + " cannot be traced: its recorded graph changes with the batch size");
        for (std::size_t p = 0; p < a.nodes.size(); ++p) {
            const auto &na = a.node(p), &nb = b.node(p);
            bool same = std::strcmp(na.op, nb.op) == 0 && na.num_inputs == nb.num_inputs;
            for (std::uint32_t k = 0; same && k < na.num_inputs; ++k)
                same = a.input_position(p, k) == b.input_position(p, k);
            if (!same)
                throw value_error(where + " cannot be traced: its recorded graph changes with the batch size (at op '" +
                                  na.op + "')");
        }
        TraceEmitter emit{*this, a, b, prefix, x, where, {}, {}, {}};
        for (auto& [name, p] : l.named_parameters()) emit.parameter_names[p] = prefix + name;
        std::vector<std::string> names(a.nodes.size());
        for (std::size_t p = 0; p < a.nodes.size(); ++p) names[p] = emit.node(p, names);
        const std::size_t out = a.position.at(a.y.index());
        if (a.node(out).num_inputs == 0)
            throw value_error(where + " cannot be traced: its output does not depend on its input");
        return {names[out], emit.dims_of(out)};
    }

    /// Writes the ONNX nodes of one recording (a), checked against the other (b).
    struct TraceEmitter {
        Exporter& e;
        const Recording &a, &b;
        const std::string& prefix;
        const Value& x;
        const std::string& where;
        std::map<const Parameter<T>*, std::string> parameter_names;
        std::string batch_size;  // the 1-D int64 tensor [B] of x's batch axis, made when first needed
        std::map<std::string, std::string> transposed;  // W -> W^T (linear)

        [[noreturn]] void fail(std::size_t p, const std::string& why) const {
            throw value_error(where + " cannot be traced: op '" + a.node(p).op + "' " + why);
        }
        const Shape& shape(std::size_t p) const { return a.value(p).shape(); }
        const std::string& input(std::size_t p, std::uint32_t k, const std::vector<std::string>& names) const {
            return names[a.input_position(p, k)];
        }
        /// The axes of node p's output whose extent differs between the recordings.
        std::vector<std::size_t> batch_axes(std::size_t p) const {
            const Shape &sa = a.value(p).shape(), &sb = b.value(p).shape();
            if (sa.size() != sb.size()) fail(p, "has an output rank that changes with the batch size");
            std::vector<std::size_t> axes;
            for (std::size_t k = 0; k < sa.size(); ++k)
                if (sa[k] != sb[k]) axes.push_back(k);
            return axes;
        }
        Dims dims_of(std::size_t p) const {
            Dims dims;
            for (std::size_t d : shape(p)) dims.push_back(known(d));
            for (std::size_t k : batch_axes(p)) {
                const bool is_batch = shape(p)[k] == a.batch && b.value(p).shape()[k] == b.batch;
                dims[k] = is_batch ? batch_dim : Dim{"traced_" + std::to_string(k), 0};
            }
            return dims;
        }
        /// node p's op state, the same in both recordings (else the graph depends on the batch).
        template <class S, class Same>
        const S& state(std::size_t p, Same same) const {
            const S& s = a.template state<S>(p);
            if (!same(s, b.template state<S>(p))) fail(p, "has arguments that change with the batch size");
            return s;
        }
        std::string scalar(T v) { return e.float_initializer(e.fresh("scalar"), {}, {v}); }
        std::string emit(const std::string& op, const std::vector<std::string>& inputs) {
            std::string out = e.fresh(op);
            e.node(op, inputs, {out});
            return out;
        }
        std::string with_axis(const std::string& op, const std::vector<std::string>& inputs, std::size_t axis) {
            std::string out = e.fresh(op);
            attribute(e.node(op, inputs, {out}), "axis", static_cast<std::int64_t>(axis));
            return out;
        }

        /// The ONNX value of node p (given its inputs' names).
        std::string node(std::size_t p, const std::vector<std::string>& names) {
            const auto& n = a.node(p);
            const std::string op = n.op;
            if (a.nodes[p] == a.x.index()) return x.name;
            if (n.param) return parameter(*n.param);
            if (n.owner != detail::no_node || n.num_outputs > 1)
                fail(p, "has several outputs: the ONNX tracer does not know it");
            if (n.num_inputs == 0) return constant(p);
            auto in = [&](std::uint32_t k) -> const std::string& { return input(p, k, names); };
            static const std::map<std::string, std::string> elementwise{
                {"add", "Add"},   {"sub", "Sub"},         {"mul", "Mul"},      {"div", "Div"},   {"neg", "Neg"},
                {"exp", "Exp"},   {"log", "Log"},         {"tanh", "Tanh"},    {"relu", "Relu"}, {"abs", "Abs"},
                {"sqrt", "Sqrt"}, {"sigmoid", "Sigmoid"}, {"matmul", "MatMul"}};
            if (auto found = elementwise.find(op); found != elementwise.end()) {
                std::vector<std::string> inputs;
                for (std::uint32_t k = 0; k < n.num_inputs; ++k) inputs.push_back(in(k));
                return emit(found->second, inputs);
            }
            if (op == "affine") {  // y = s x + c
                const auto& s = state<AffineState<T>>(
                    p, [](const auto& u, const auto& v) { return u.scale == v.scale && u.shift == v.shift; });
                if (s.scale == T(-1))
                    return s.shift == T(0) ? emit("Neg", {in(0)}) : emit("Sub", {scalar(s.shift), in(0)});
                std::string y = s.scale == T(1) ? in(0) : emit("Mul", {in(0), scalar(s.scale)});
                if (s.shift != T(0)) y = emit("Add", {y, scalar(s.shift)});
                return y == in(0) ? emit("Identity", {y}) : y;
            }
            if (op == "pow") {
                const auto& s =
                    state<PowState<T>>(p, [](const auto& u, const auto& v) { return u.exponent == v.exponent; });
                return emit("Pow", {in(0), scalar(s.exponent)});
            }
            if (op == "clamp") {
                const auto& s =
                    state<ClampState<T>>(p, [](const auto& u, const auto& v) { return u.lo == v.lo && u.hi == v.hi; });
                return emit("Clip", {in(0), scalar(s.lo), scalar(s.hi)});
            }
            if (op == "linear") {  // y = x W^T (+ b)
                auto [found, first_use] = transposed.try_emplace(in(1));  // once per weight, not per step
                if (first_use) found->second = emit("Transpose", {in(1)});
                std::string y = emit("MatMul", {in(0), found->second});
                return n.num_inputs == 3 ? emit("Add", {y, in(2)}) : y;
            }
            if (op == "reshape") {  // the target shape, -1 on the batch axis
                const std::vector<std::size_t> varying = batch_axes(p);
                if (varying.size() > 1) fail(p, "makes several axes that depend on the batch size");
                std::vector<std::int64_t> target;
                for (std::size_t d : shape(p)) target.push_back(static_cast<std::int64_t>(d));
                if (!varying.empty()) target[varying[0]] = -1;
                return emit("Reshape", {in(0), e.int_constant(target)});
            }
            if (op == "permute") {  // y axis k = x axis perm[k]
                const auto& inverse =
                    state<PermuteState>(p, [](const auto& u, const auto& v) { return u.inverse == v.inverse; }).inverse;
                std::vector<std::int64_t> perm(inverse.size());
                for (std::size_t k = 0; k < inverse.size(); ++k) perm[inverse[k]] = static_cast<std::int64_t>(k);
                std::string y = e.fresh("Transpose");
                attribute(e.node("Transpose", {in(0)}, {y}), "perm", perm);
                return y;
            }
            if (op == "slice" || op == "select") {
                const auto& s = state<SliceState>(p, [](const auto& u, const auto& v) {
                    return u.axis == v.axis && u.start == v.start && u.count == v.count;
                });
                const auto axis = static_cast<std::int64_t>(s.axis), start = static_cast<std::int64_t>(s.start);
                if (op == "select") return with_axis("Gather", {in(0), e.int_scalar(start)}, s.axis);
                return emit("Slice",
                            {in(0), e.int_constant({start}),
                             e.int_constant({start + static_cast<std::int64_t>(s.count)}), e.int_constant({axis})});
            }
            if (op == "concat" || op == "stack") {
                const auto& s = state<JoinState>(
                    p, [](const auto& u, const auto& v) { return u.axis == v.axis && u.new_axis == v.new_axis; });
                std::vector<std::string> parts;
                for (std::uint32_t k = 0; k < n.num_inputs; ++k)
                    parts.push_back(
                        s.new_axis ? emit("Unsqueeze", {in(k), e.int_constant({static_cast<std::int64_t>(s.axis)})})
                                   : in(k));
                return with_axis("Concat", parts, s.axis);
            }
            if (op == "softmax" || op == "log_softmax")
                return with_axis(
                    op == "softmax" ? "Softmax" : "LogSoftmax", {in(0)},
                    state<AxisState>(p, [](const auto& u, const auto& v) { return u.axis == v.axis; }).axis);
            if (op == "sum" || op == "mean") {  // over one axis, or over all when the output is a scalar
                const auto& s = state<ReduceState<T>>(p, [](const auto& u, const auto& v) { return u.axis == v.axis; });
                const bool all = shape(p).empty(),
                           keep = shape(p).size() == a.value(a.input_position(p, 0)).dimension();
                std::string y = e.fresh(op == "sum" ? "ReduceSum" : "ReduceMean");
                std::vector<std::string> inputs{in(0)};
                if (op == "sum" && !all) inputs.push_back(e.int_constant({static_cast<std::int64_t>(s.axis)}));
                auto& r = e.node(op == "sum" ? "ReduceSum" : "ReduceMean", inputs, {y});
                attribute(r, "keepdims", std::int64_t{keep ? 1 : 0});
                if (op == "mean" && !all)
                    attribute(r, "axes", std::vector<std::int64_t>{static_cast<std::int64_t>(s.axis)});
                return y;
            }
            fail(p,
                 "has no ONNX form the tracer knows (add, sub, mul, div, neg, affine, pow, clamp, exp, log, tanh, "
                 "sigmoid, relu, abs, sqrt, matmul, linear, reshape, permute, transpose, slice, chunk, select, "
                 "concat, stack, softmax, log_softmax, sum, mean)");
        }

        /// A bound Parameter: an initializer under its state_dict name.
        std::string parameter(const Parameter<T>& param) {
            auto found = parameter_names.find(&param);
            if (found == parameter_names.end())
                throw value_error(where + " cannot be traced: it reads a Parameter that is not one of its own");
            const std::string& name = found->second;
            if (!e.initialized_.count(name)) {
                const auto& v = param.value();
                std::vector<std::int64_t> dims;
                for (std::size_t d : v.shape()) dims.push_back(static_cast<std::int64_t>(d));
                e.float_initializer(name, dims, std::vector<T>(v.begin(), v.end()));
                e.initialized_.insert(name);
            }
            return name;
        }

        /// A node computed without the input (a leaf, or ops on leaves only): an initializer,
        /// or for a batch-sized constant of one value (a zero initial state), ConstantOfShape.
        std::string constant(std::size_t p) {
            static const std::string outside =
                "makes a value that changes with the input outside the recorded graph (e.g. detach)";
            const auto &va = a.value(p), &vb = b.value(p);
            const std::vector<std::size_t> varying = batch_axes(p);
            if (varying.empty()) {
                if (!(va == vb)) fail(p, outside);
                std::vector<std::int64_t> dims;
                for (std::size_t d : va.shape()) dims.push_back(static_cast<std::int64_t>(d));
                return e.float_initializer(e.fresh("constant"), dims, std::vector<T>(va.begin(), va.end()));
            }
            const T fill = va.size() ? *va.begin() : T(0);
            bool uniform = true;
            for (std::size_t k : varying) uniform = uniform && va.shape()[k] == a.batch && vb.shape()[k] == b.batch;
            for (T v : va) uniform = uniform && v == fill;
            for (T v : vb) uniform = uniform && v == fill;
            if (!uniform)
                fail(p, outside + " (a constant of the batch's size must be one repeated value, as a zero state)");
            std::vector<std::string> extents;  // [B] on the batch axes, the known extents elsewhere
            for (std::size_t k = 0; k < va.dimension(); ++k) {
                const bool batch = std::find(varying.begin(), varying.end(), k) != varying.end();
                extents.push_back(batch ? batch_extent() : e.int_constant({static_cast<std::int64_t>(va.shape()[k])}));
            }
            std::string y = e.fresh("ConstantOfShape");
            auto& n = e.node("ConstantOfShape", {with_axis("Concat", extents, 0)}, {y});
            auto* attr = n.add_attribute();
            attr->set_name("value");
            attr->set_type(onnx::AttributeProto::TENSOR);
            auto* t = attr->mutable_t();
            t->set_data_type(onnx::TensorProto::FLOAT);
            t->add_dims(1);
            t->add_float_data(static_cast<float>(fill));
            return y;
        }

        /// [B]: Shape(x) at x's batch axis, made once per traced layer.
        const std::string& batch_extent() {
            if (batch_size.empty()) {
                std::size_t axis = 0;
                while (axis < x.dims.size() && x.dims[axis].symbol != batch_dim.symbol) ++axis;
                batch_size = with_axis("Gather",
                                       {emit("Shape", {x.name}), e.int_constant({static_cast<std::int64_t>(axis)})}, 0);
            }
            return batch_size;
        }
    };

    const OnnxExportOptions& o_;
    onnx::ModelProto model_;
    onnx::GraphProto& graph_;
    std::size_t counter_ = 0;
    std::map<std::vector<std::int64_t>, std::string> int_constants_;
    std::map<std::int64_t, std::string> int_scalars_;
    std::set<std::string> initialized_;  // parameters written by the tracer
};

}  // namespace

template <class T>
void export_onnx(nn::Module<T>& model, const std::string& path, const OnnxExportOptions& options) {
    Exporter<T> exporter(options);
    exporter.export_model(model);
    write_atomically(path, exporter.serialize(), "export_onnx");
}

template void export_onnx<float>(nn::Module<float>&, const std::string&, const OnnxExportOptions&);
template void export_onnx<double>(nn::Module<double>&, const std::string&, const OnnxExportOptions&);

}  // namespace recur::io
