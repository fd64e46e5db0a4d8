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
#include <map>
#include <typeinfo>

#include "onnx/proto.hpp"
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
        if (auto* rnn = dynamic_cast<nn::RNN<T>*>(&model)) return export_bare(*rnn, CellKind::rnn);
        if (auto* lstm = dynamic_cast<nn::LSTM<T>*>(&model)) return export_bare(*lstm, CellKind::lstm);
        if (auto* gru = dynamic_cast<nn::GRU<T>*>(&model)) return export_bare(*gru, CellKind::gru);
        auto* layer = dynamic_cast<nn::Layer<T>*>(&model);
        if (!layer)
            throw value_error("export_onnx: " + type_name(model) +
                              " is not supported: export a Sequential, one of its layers, or an RNN, LSTM or GRU");
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
            } else {
                continue;
            }
            break;
        }
        if (dims.empty())
            throw value_error(
                "export_onnx: cannot tell the input's width: the model has no Embedding, Linear or recurrent layer");
        add_graph_input("input", elem_type, dims);
        if (o_.lengths) {
            if (!has_recurrent) throw value_error("export_onnx: options.lengths needs a recurrent layer in the model");
            add_graph_input("sequence_lens", onnx::TensorProto::INT32, {batch_dim});
        }
        return {"input", dims};
    }

    Value emit_layer(nn::Layer<T>& l, const std::string& prefix, const Value& x) {
        const std::string where = "export_onnx: layer '" + prefix.substr(0, prefix.empty() ? 0 : prefix.size() - 1) +
                                  "' (" + type_name(l) + ")";
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
        if (type_name(l).find("RecurrentLayer") != std::string::npos)
            throw value_error(where +
                              " is not supported: a custom cell has no ONNX operator (only RNN, LSTM and GRU export)");
        throw value_error(where + " is not supported: no ONNX form for this layer type");
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

    const OnnxExportOptions& o_;
    onnx::ModelProto model_;
    onnx::GraphProto& graph_;
    std::size_t counter_ = 0;
    std::map<std::vector<std::int64_t>, std::string> int_constants_;
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
