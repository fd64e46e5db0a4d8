// import_onnx: an ONNX ModelProto -> a Sequential (see recur/onnx.hpp).
//
// The graph is read by abstract interpretation in node order: every value gets a Val saying
// what it is (a constant, shape arithmetic, zeros, the data at some point of the chain, a
// recurrent operator's Y or Y_h in some axis order), and each node either maps Vals to Vals
// (glue: Transpose, Reshape, Squeeze, Gather of h_n[-1], ...) or appends a layer to the chain.
// Layout: "flipped" means the (T, B) axes are swapped relative to the graph input; the first
// recurrent operator (which wants time-major X) tells whether the input is batch-first.
#include "recur/onnx.hpp"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>

#include "onnx/proto.hpp"
#include "recur/error.hpp"
#include "recur/nn/recurrent.hpp"

namespace recur::io {
namespace {

using namespace onnx_detail;

/// A constant tensor, as double (floats) or int64 (integers).
struct Constant {
    std::vector<std::int64_t> dims;
    std::vector<double> values;
    bool integer = false;
    std::size_t size() const { return values.size(); }
};

enum class Kind {
    constant,  // an initializer or Constant output
    meta,  // computed from Shape: extents, shape vectors
    zeros,  // ConstantOfShape(0) and slices of it: a zero initial state
    lengths,  // the sequence_lens graph input
    data,  // the chain's data: ids, a sequence or a (B, F) matrix
    y,  // a recurrent operator's Y
    h,  // a recurrent operator's Y_h
    c,  // an LSTM's Y_c
    h_all,  // Y_h of every layer of a stack, concatenated on axis 0
};

/// Axis orders of Y: (T, D, B, H) as the operator writes it, (T, B, D, H), (B, T, D, H).
enum class YForm { tdbh, tbdh, btdh };

struct Val {
    Kind kind = Kind::data;
    Constant constant{};  // constant
    std::size_t stage = 0;  // data: how many layers produced it
    bool flipped = false;  // data: (T, B) swapped relative to the graph input
    bool from_y = false;  // data: the Y of layer stage - 1 (a recurrent layer)
    bool from_h = false;  // data: the final state of layer stage - 1
    bool linear = false;  // data: the output of a Linear without its bias yet
    std::size_t depth = 0;  // y, h, data from_y/from_h: layer of the recurrent stack
    YForm form = YForm::tdbh;  // y
    bool h_transposed = false;  // h: (B, D, H)
};

/// What a layer of the chain will become.
struct RecurrentSpec {
    CellKind kind;
    std::size_t input_size, hidden, dirs;
    nn::Nonlinearity nonlinearity = nn::Nonlinearity::tanh;
    struct Layer {
        Constant w, r;
        std::optional<Constant> b;
    };
    std::vector<Layer> layers;
    std::optional<nn::Return> mode;
};
struct LayerSpec {
    std::string op;  // Embedding, Linear, Relu, Tanh, Sigmoid, Softmax, LogSoftmax, Recurrent
    Constant weight{};
    std::optional<Constant> bias{};
    std::int64_t axis = -1;
    std::optional<RecurrentSpec> recurrent{};
};

std::string dims_str(const std::vector<std::int64_t>& dims) {
    std::vector<std::size_t> d;
    for (auto v : dims) d.push_back(static_cast<std::size_t>(v));
    return shape_str(d);
}

template <class T>
class Importer {
public:
    explicit Importer(std::string path) : path_(std::move(path)) {}

    std::unique_ptr<nn::Sequential<T>> run() {
        parse();
        const onnx::GraphProto& g = model_.graph();
        for (const auto& t : g.initializer())
            vals_[t.name()] = {Kind::constant, tensor(t, "initializer '" + t.name() + "'")};
        bool have_input = false;
        for (const auto& in : g.input()) {
            if (vals_.count(in.name())) continue;  // an initializer listed as an input (IR < 4)
            if (!have_input) {
                vals_[in.name()] = Val{};
                have_input = true;
            } else if (in.type().tensor_type().elem_type() == onnx::TensorProto::INT32) {
                vals_[in.name()] = {Kind::lengths};
            } else {
                fail("graph input '" + in.name() + "' is not supported: only the data and an int32 sequence_lens are");
            }
        }
        if (!have_input) fail("the graph has no input");
        for (int k = 0; k < g.node_size(); ++k) node(g.node(k), k);
        if (g.output_size() == 0) fail("the graph has no output");
        const Val& out = get(g.output(0).name(), "graph output '" + g.output(0).name() + "'");
        if (out.kind != Kind::data) fail("graph output '" + g.output(0).name() + "' is not the end of the layer chain");
        consume(out, "graph output '" + g.output(0).name() + "'");
        if (out.flipped)
            fail("graph output '" + g.output(0).name() + "' has its time and batch axes swapped relative to the input");
        try {
            return build();
        } catch (const io_error&) {
            throw;
        } catch (const error& e) {  // a module refusing what the file describes (a zero width, ...)
            fail(std::string("the layers described cannot be built: ") + e.what());
        }
    }

private:
    [[noreturn]] void fail(const std::string& why) const { throw io_error("import_onnx " + path_ + ": " + why); }

    void parse() {
        std::ifstream in(path_, std::ios::binary);
        if (!in) fail("cannot open the file");
        std::stringstream bytes;
        bytes << in.rdbuf();
        if (in.bad()) fail("cannot read the file");
        if (!model_.ParseFromString(bytes.str())) fail("not an ONNX model (malformed or truncated protobuf)");
        if (!model_.has_graph()) fail("not an ONNX model (no graph)");
        for (const auto& opset : model_.opset_import())
            if ((opset.domain().empty() || opset.domain() == "ai.onnx") &&
                (opset.version() < 13 || opset.version() > 21))
                fail("opset " + std::to_string(opset.version()) + " is not supported (13 to 21)");
    }

    Constant tensor(const onnx::TensorProto& t, const std::string& what) const {
        Constant c;
        if (t.data_location() == onnx::TensorProto::EXTERNAL) fail(what + ": external data is not supported");
        std::int64_t count = 1;
        for (auto d : t.dims()) {
            if (d < 0 || (d > 0 && count > std::numeric_limits<std::int32_t>::max() / d)) fail(what + ": bad dims");
            count *= d;
            c.dims.push_back(d);
        }
        const auto n = static_cast<std::size_t>(count);
        const std::string& raw = t.raw_data();
        auto from_raw = [&](auto tag, std::size_t field_size) {
            using R = decltype(tag);
            if (raw.size() != n * sizeof(R))
                fail(what + ": " + std::to_string(raw.size()) + " raw bytes for " + std::to_string(n) + " elements");
            c.values.resize(n);
            for (std::size_t k = 0; k < n; ++k) {
                R v;
                std::memcpy(&v, raw.data() + k * sizeof(R), sizeof(R));
                c.values[k] = static_cast<double>(v);
            }
            if (field_size != 0) fail(what + ": both raw_data and typed data");
        };
        auto from_field = [&](const auto& field) {
            if (static_cast<std::size_t>(field.size()) != n)
                fail(what + ": " + std::to_string(field.size()) + " values for dims " + dims_str(c.dims));
            for (auto v : field) c.values.push_back(static_cast<double>(v));
        };
        // The values from raw_data or from the typed field of R, never both.
        auto read = [&](auto tag, const auto& field) {
            if (t.has_raw_data())
                from_raw(tag, static_cast<std::size_t>(field.size()));
            else
                from_field(field);
        };
        switch (t.data_type()) {
            case onnx::TensorProto::FLOAT:
                read(float{}, t.float_data());
                break;
            case onnx::TensorProto::DOUBLE:
                read(double{}, t.double_data());
                break;
            case onnx::TensorProto::INT64:
                c.integer = true;
                read(std::int64_t{}, t.int64_data());
                break;
            case onnx::TensorProto::INT32:
                c.integer = true;
                read(std::int32_t{}, t.int32_data());
                break;
            default:
                fail(what + ": data type " + std::to_string(t.data_type()) +
                     " is not supported (float, double, int32, int64)");
        }
        return c;
    }

    const Val& get(const std::string& name, const std::string& who) const {
        auto found = vals_.find(name);
        if (found == vals_.end()) fail(who + " reads '" + name + "', which no earlier node or initializer produces");
        return found->second;
    }

    // ---- Nodes ------------------------------------------------------------------------------

    struct NodeContext {
        const onnx::NodeProto& n;
        std::string who;  // "node 'name' (Op)"
    };

    void node(const onnx::NodeProto& n, int index) {
        // Appended piece by piece: GCC 12 warns falsely (-Wrestrict) on "literal" + std::string&&.
        std::string who = "node '";
        if (n.name().empty())
            who += '#', who += std::to_string(index);
        else
            who += n.name();
        who += "' (";
        who += n.op_type();
        who += ')';
        if (!n.domain().empty() && n.domain() != "ai.onnx")
            fail(who + ": domain '" + n.domain() + "' is not supported");
        NodeContext ctx{n, who};
        const std::string& op = n.op_type();
        std::vector<Val> outs;
        if (op == "Constant")
            outs = {constant_node(ctx)};
        else if (op == "Identity" || op == "Dropout")
            outs = {input(ctx, 0)};
        else if (op == "Shape")
            outs = {Val{Kind::meta}};
        else if (op == "ConstantOfShape")
            outs = {constant_of_shape(ctx)};
        else if (op == "Expand")
            outs = {expand(ctx)};
        else if (op == "Unsqueeze" || op == "Concat" || op == "Cast" || op == "Slice" || op == "Gather" ||
                 op == "Squeeze")
            outs = {glue(ctx)};
        else if (op == "Transpose")
            outs = {transpose(ctx)};
        else if (op == "Reshape")
            outs = {reshape(ctx)};
        else if (op == "MatMul" || op == "Gemm")
            outs = {linear(ctx)};
        else if (op == "Add")
            outs = {add(ctx)};
        else if (op == "Relu" || op == "Tanh" || op == "Sigmoid" || op == "Softmax" || op == "LogSoftmax")
            outs = {activation(ctx)};
        else if (op == "LSTM")
            outs = recurrent(ctx, CellKind::lstm);
        else if (op == "GRU")
            outs = recurrent(ctx, CellKind::gru);
        else if (op == "RNN")
            outs = recurrent(ctx, CellKind::rnn);
        else
            fail(who + ": op type " + op + " is not supported by import_onnx");
        for (int k = 0; k < n.output_size() && static_cast<std::size_t>(k) < outs.size(); ++k)
            if (!n.output(k).empty()) vals_[n.output(k)] = outs[static_cast<std::size_t>(k)];
    }

    Val input(const NodeContext& ctx, int k) const {
        if (k >= ctx.n.input_size() || ctx.n.input(k).empty())
            fail(ctx.who + ": input " + std::to_string(k) + " is missing");
        return get(ctx.n.input(k), ctx.who);
    }
    std::optional<Val> optional_input(const NodeContext& ctx, int k) const {
        if (k >= ctx.n.input_size() || ctx.n.input(k).empty()) return std::nullopt;
        return get(ctx.n.input(k), ctx.who);
    }
    const onnx::AttributeProto* attribute(const NodeContext& ctx, const std::string& name) const {
        for (const auto& a : ctx.n.attribute())
            if (a.name() == name) return &a;
        return nullptr;
    }
    std::int64_t int_attribute(const NodeContext& ctx, const std::string& name, std::int64_t fallback) const {
        const auto* a = attribute(ctx, name);
        return a ? a->i() : fallback;
    }
    std::vector<std::int64_t> ints_attribute(const NodeContext& ctx, const std::string& name) const {
        std::vector<std::int64_t> out;
        if (const auto* a = attribute(ctx, name))
            for (auto v : a->ints()) out.push_back(v);
        return out;
    }
    std::vector<std::string> strings_attribute(const NodeContext& ctx, const std::string& name) const {
        std::vector<std::string> out;
        if (const auto* a = attribute(ctx, name))
            for (const auto& v : a->strings()) out.push_back(v);
        return out;
    }
    /// Integer values of a constant input (Squeeze axes, Reshape shapes, Gather indices).
    std::vector<std::int64_t> ints_of(const NodeContext& ctx, const Val& v, const std::string& what) const {
        if (v.kind != Kind::constant || !v.constant.integer)
            fail(ctx.who + ": " + what + " must be an integer constant");
        return {v.constant.values.begin(), v.constant.values.end()};
    }

    Val constant_node(const NodeContext& ctx) const {
        if (const auto* a = attribute(ctx, "value")) return {Kind::constant, tensor(a->t(), ctx.who)};
        Constant c;
        c.integer = true;
        if (const auto* a = attribute(ctx, "value_int")) {
            c.values = {static_cast<double>(a->i())};
        } else if (const auto* as = attribute(ctx, "value_ints")) {
            for (auto v : as->ints()) c.values.push_back(static_cast<double>(v));
            c.dims = {static_cast<std::int64_t>(c.values.size())};
        } else {
            fail(ctx.who + ": only value, value_int and value_ints are supported");
        }
        return {Kind::constant, c};
    }

    static bool all_zero(const Constant& c) {
        for (double v : c.values)
            if (v != 0) return false;
        return true;
    }

    Val constant_of_shape(const NodeContext& ctx) const {
        if (const auto* a = attribute(ctx, "value"))
            if (!all_zero(tensor(a->t(), ctx.who))) fail(ctx.who + ": only zeros are supported (initial states)");
        return {Kind::zeros};
    }

    Val expand(const NodeContext& ctx) const {
        const Val v = input(ctx, 0);
        if ((v.kind == Kind::constant && all_zero(v.constant)) || v.kind == Kind::zeros) return {Kind::zeros};
        fail(ctx.who + ": only expanding zeros (an initial state) is supported");
    }

    /// Shape arithmetic passes through as meta; zeros stay zeros; Gather of h_n[-1], Squeeze
    /// of a one-direction Y or Y_h, Cast of data, Gather of an embedding.
    Val glue(const NodeContext& ctx) {
        const std::string& op = ctx.n.op_type();
        bool any_data = false, any_meta = false, any_zeros = false;
        for (int k = 0; k < ctx.n.input_size(); ++k) {
            if (ctx.n.input(k).empty()) continue;
            const Kind kind = get(ctx.n.input(k), ctx.who).kind;
            any_meta = any_meta || kind == Kind::meta;
            any_zeros = any_zeros || kind == Kind::zeros;
            any_data = any_data || (kind != Kind::constant && kind != Kind::meta && kind != Kind::zeros);
        }
        if (op == "Gather") {
            const Val table = input(ctx, 0);
            const Val index = input(ctx, 1);
            if (table.kind == Kind::constant && index.kind == Kind::data) return embedding(ctx, table, index);
            if ((table.kind == Kind::h || table.kind == Kind::h_all) && index.kind == Kind::constant)
                return last_state(ctx, table, index);
        }
        if (op == "Squeeze") {
            const Val x = input(ctx, 0);
            if (x.kind == Kind::y || x.kind == Kind::h) return squeeze(ctx, x);
        }
        if (op == "Cast" && input(ctx, 0).kind == Kind::data) return input(ctx, 0);
        if (op == "Concat" && input(ctx, 0).kind == Kind::h) return concat_states(ctx);
        if (op == "Concat" && input(ctx, 0).kind == Kind::c) return {Kind::c};  // c_n of a bare LSTM: an extra output
        if (any_data) fail(ctx.who + ": this use of " + op + " on the model's data is not supported");
        if (any_meta) return {Kind::meta};
        if (any_zeros && (op == "Slice" || op == "Squeeze" || op == "Unsqueeze" || op == "Cast")) return {Kind::zeros};
        if (op == "Unsqueeze" || op == "Cast") return input(ctx, 0);  // constant folding of trivial cases
        fail(ctx.who + ": " + op + " of constants is not supported");
    }

    Val squeeze(const NodeContext& ctx, const Val& x) {
        std::vector<std::int64_t> axes = ints_attribute(ctx, "axes");
        if (auto a = optional_input(ctx, 1)) axes = ints_of(ctx, *a, "the axes");
        const RecurrentSpec& r = owner(ctx, x);
        if (r.dirs != 1) fail(ctx.who + ": squeezing a bidirectional output is not supported");
        if (x.kind == Kind::y && x.form == YForm::tdbh && axes == std::vector<std::int64_t>{1})
            return sequence(x, true);
        if (x.kind == Kind::h && !x.h_transposed && axes == std::vector<std::int64_t>{0}) return last(x);
        fail(ctx.who + ": unsupported axes");
    }

    Val last_state(const NodeContext& ctx, const Val& h, const Val& index) {
        const std::vector<std::int64_t> idx = ints_of(ctx, index, "the index");
        const RecurrentSpec& r = owner(ctx, h);
        if (int_attribute(ctx, "axis", 0) != 0 || idx.size() != 1 || !index.constant.dims.empty() || r.dirs != 1 ||
            h.h_transposed)
            fail(ctx.who + ": only h_n[-1] of a one-direction recurrent operator is supported");
        const auto rows = static_cast<std::int64_t>(h.kind == Kind::h_all ? r.layers.size() : 1);
        if (idx[0] != -1 && idx[0] != rows - 1) fail(ctx.who + ": only the last layer's state (h_n[-1]) is supported");
        return last(h);
    }

    Val concat_states(const NodeContext& ctx) {
        if (int_attribute(ctx, "axis", 0) != 0) fail(ctx.who + ": states must be joined on axis 0");
        const Val first = input(ctx, 0);
        const RecurrentSpec& r = owner(ctx, first);
        for (int k = 0; k < ctx.n.input_size(); ++k) {
            const Val v = input(ctx, k);
            if (v.kind != Kind::h || v.stage != first.stage || v.depth != static_cast<std::size_t>(k) || v.h_transposed)
                fail(ctx.who + ": only the final states of every layer of one stack, in order, can be joined");
        }
        if (static_cast<std::size_t>(ctx.n.input_size()) != r.layers.size())
            fail(ctx.who + ": not every layer's state is joined");
        Val v = first;
        v.kind = Kind::h_all;
        v.depth = r.layers.size() - 1;
        return v;
    }

    /// Data: the output sequence of Y's operator (time-major or batch-first).
    Val sequence(const Val& y, bool time_major) const {
        Val v;
        v.stage = y.stage;
        v.flipped = time_major == batch_first_.value_or(false);
        v.from_y = true;
        v.depth = y.depth;
        return v;
    }
    /// Data: the final state of the last layer (B, D*H).
    static Val last(const Val& h) {
        Val v;
        v.stage = h.stage;
        v.from_h = true;
        v.depth = h.depth;
        return v;
    }

    Val transpose(const NodeContext& ctx) {
        Val x = input(ctx, 0);
        const std::vector<std::int64_t> perm = ints_attribute(ctx, "perm");
        using P = std::vector<std::int64_t>;
        if (x.kind == Kind::data && perm == P{1, 0, 2}) {
            x.flipped = !x.flipped;
            return x;
        }
        if (x.kind == Kind::y && x.form == YForm::tdbh && perm == P{0, 2, 1, 3}) {
            x.form = YForm::tbdh;
            return x;
        }
        if (x.kind == Kind::y && x.form == YForm::tdbh && perm == P{2, 0, 1, 3}) {
            x.form = YForm::btdh;
            return x;
        }
        if (x.kind == Kind::h && !x.h_transposed && perm == P{1, 0, 2}) {
            x.h_transposed = true;
            return x;
        }
        if (x.kind == Kind::meta || x.kind == Kind::zeros) return x;
        fail(ctx.who + ": this transpose is not supported");
    }

    Val reshape(const NodeContext& ctx) {
        const Val x = input(ctx, 0);
        const std::vector<std::int64_t> shape = ints_of(ctx, input(ctx, 1), "the shape");
        if (x.kind == Kind::y && x.form != YForm::tdbh) {
            const RecurrentSpec& r = owner(ctx, x);
            const auto width = static_cast<std::int64_t>(r.dirs * r.hidden);
            if (shape.size() == 3 && shape[0] == 0 && shape[1] == 0 && (shape[2] == -1 || shape[2] == width))
                return sequence(x, x.form == YForm::tbdh);
        }
        if (x.kind == Kind::h && x.h_transposed) {
            const RecurrentSpec& r = owner(ctx, x);
            if (shape.size() == 2 && shape[0] == 0 &&
                (shape[1] == -1 || shape[1] == static_cast<std::int64_t>(r.dirs * r.hidden)))
                return last(x);
        }
        if (x.kind == Kind::meta || x.kind == Kind::zeros) return x;
        fail(ctx.who +
             ": only joining the direction and hidden axes of a recurrent output ([0, 0, -1] or [0, -1]) is supported");
    }

    // ---- Layers -----------------------------------------------------------------------------

    /// The recurrent layer a Y / Y_h value belongs to.
    RecurrentSpec& owner(const NodeContext& ctx, const Val& v) {
        if (v.stage == 0 || v.stage > layers_.size() || !layers_[v.stage - 1].recurrent)
            fail(ctx.who + ": internal: no recurrent owner");
        return *layers_[v.stage - 1].recurrent;
    }

    /// Checks that `v` is the end of the chain and settles the Return mode of a recurrent layer
    /// it comes from.
    void consume(const Val& v, const std::string& who) {
        if (v.kind != Kind::data) fail(who + ": reads a value that is not the model's data");
        if (v.stage != layers_.size())
            fail(who + ": the graph is not a chain (it reads the output of an earlier layer)");
        if (v.stage == 0 || !layers_.back().recurrent) return;
        RecurrentSpec& r = *layers_.back().recurrent;
        if (!v.from_y && !v.from_h) fail(who + ": internal: a recurrent layer's data without its origin");
        if (v.depth + 1 != r.layers.size()) fail(who + ": reads an output of a layer inside a recurrent stack");
        const nn::Return mode = v.from_y ? nn::Return::sequences : nn::Return::last;
        if (r.mode && *r.mode != mode) fail(who + ": a recurrent layer's sequence and final state are both used");
        r.mode = mode;
    }

    Val push(const NodeContext& ctx, const Val& x, LayerSpec layer) {
        consume(x, ctx.who);
        layers_.push_back(std::move(layer));
        Val v = x;
        v.stage = layers_.size();
        v.from_y = v.from_h = v.linear = false;
        return v;
    }

    Val embedding(const NodeContext& ctx, const Val& table, const Val& ids) {
        if (table.constant.dims.size() != 2 || table.constant.integer || int_attribute(ctx, "axis", 0) != 0)
            fail(ctx.who + ": an embedding table must be a float (V, E) constant gathered on axis 0");
        LayerSpec l{"Embedding", table.constant};
        return push(ctx, ids, std::move(l));
    }

    Val linear(const NodeContext& ctx) {
        const Val x = input(ctx, 0);
        const Val w = input(ctx, 1);
        if (x.kind != Kind::data || w.kind != Kind::constant || w.constant.dims.size() != 2 || w.constant.integer)
            fail(ctx.who + ": only data times a float 2-D constant (a Linear layer) is supported");
        const bool gemm = ctx.n.op_type() == "Gemm";
        const auto* alpha = attribute(ctx, "alpha");
        const auto* beta = attribute(ctx, "beta");
        if (gemm &&
            (int_attribute(ctx, "transA", 0) != 0 || (alpha && alpha->f() != 1.0f) || (beta && beta->f() != 1.0f)))
            fail(ctx.who + ": only Gemm with transA = 0, alpha = beta = 1 is supported");
        // Linear's weight is (O, I): MatMul and Gemm without transB hold W^T (I, O).
        const bool transposed = gemm && int_attribute(ctx, "transB", 0) == 1;
        LayerSpec l{"Linear"};
        l.weight = transposed ? w.constant : transpose2(w.constant);
        if (gemm) {
            if (auto b = optional_input(ctx, 2)) {
                if (b->kind != Kind::constant || b->constant.dims.size() != 1 ||
                    b->constant.dims[0] != l.weight.dims[0])
                    fail(ctx.who + ": the bias must be a constant of shape (" + std::to_string(l.weight.dims[0]) +
                         ",)");
                l.bias = b->constant;
            }
        }
        Val v = push(ctx, x, std::move(l));
        v.linear = !gemm;
        return v;
    }

    static Constant transpose2(const Constant& c) {
        Constant t{{c.dims[1], c.dims[0]}, std::vector<double>(c.values.size()), false};
        const auto rows = static_cast<std::size_t>(c.dims[0]), cols = static_cast<std::size_t>(c.dims[1]);
        for (std::size_t i = 0; i < rows; ++i)
            for (std::size_t j = 0; j < cols; ++j) t.values[j * rows + i] = c.values[i * cols + j];
        return t;
    }

    /// Add(MatMul output, bias) completes a Linear.
    Val add(const NodeContext& ctx) {
        Val a = input(ctx, 0), b = input(ctx, 1);
        if (a.kind == Kind::constant) std::swap(a, b);
        if (a.kind != Kind::data || !a.linear || a.stage != layers_.size() || b.kind != Kind::constant)
            fail(ctx.who + ": only adding a bias to a MatMul (a Linear layer) is supported");
        LayerSpec& l = layers_.back();
        if (b.constant.dims != std::vector<std::int64_t>{l.weight.dims[0]})
            fail(ctx.who + ": the bias has shape " + dims_str(b.constant.dims) + ", the Linear needs (" +
                 std::to_string(l.weight.dims[0]) + ",)");
        l.bias = b.constant;
        a.linear = false;
        return a;
    }

    Val activation(const NodeContext& ctx) {
        const Val x = input(ctx, 0);
        if (x.kind != Kind::data) fail(ctx.who + ": reads a value that is not the model's data");
        LayerSpec l{ctx.n.op_type()};
        l.axis = int_attribute(ctx, "axis", -1);
        return push(ctx, x, std::move(l));
    }

    std::vector<Val> recurrent(const NodeContext& ctx, CellKind kind) {
        const std::string direction = attribute(ctx, "direction") ? attribute(ctx, "direction")->s() : "forward";
        if (direction != "forward" && direction != "bidirectional")
            fail(ctx.who + ": direction '" + direction + "' is not supported (forward or bidirectional)");
        const std::size_t dirs = direction == "bidirectional" ? 2 : 1;
        if (int_attribute(ctx, "layout", 0) != 0) fail(ctx.who + ": layout 1 is not supported");
        if (attribute(ctx, "clip")) fail(ctx.who + ": clip has no recur equivalent");
        if (int_attribute(ctx, "input_forget", 0) != 0) fail(ctx.who + ": input_forget has no recur equivalent");
        if (kind == CellKind::gru && int_attribute(ctx, "linear_before_reset", 0) != 1)
            fail(ctx.who +
                 ": linear_before_reset = 0 has no recur equivalent (recur's GRU is PyTorch's, linear_before_reset = "
                 "1)");
        nn::Nonlinearity nonlinearity = nn::Nonlinearity::tanh;
        const std::vector<std::string> acts = strings_attribute(ctx, "activations");
        if (kind == CellKind::rnn) {
            for (const auto& a : acts)
                if (a != acts.front() || (a != "Tanh" && a != "Relu"))
                    fail(ctx.who + ": activations must be Tanh or Relu, the same for both directions");
            if (!acts.empty() && acts.front() == "Relu") nonlinearity = nn::Nonlinearity::relu;
        } else {
            const std::vector<std::string> standard = kind == CellKind::lstm
                                                          ? std::vector<std::string>{"Sigmoid", "Tanh", "Tanh"}
                                                          : std::vector<std::string>{"Sigmoid", "Tanh"};
            for (std::size_t k = 0; k < acts.size(); ++k)
                if (acts[k] != standard[k % standard.size()])
                    fail(ctx.who + ": only the default activations are supported");
        }
        if (attribute(ctx, "activation_alpha") || attribute(ctx, "activation_beta"))
            fail(ctx.who + ": activation_alpha/beta are not supported");
        const std::int64_t hidden = int_attribute(ctx, "hidden_size", 0);
        if (hidden <= 0) fail(ctx.who + ": hidden_size is missing");
        const auto g = static_cast<std::int64_t>(gates(kind)) * hidden, d = static_cast<std::int64_t>(dirs);

        const Val x = input(ctx, 0);
        const Val w = input(ctx, 1), r = input(ctx, 2);
        if (w.kind != Kind::constant || w.constant.dims.size() != 3 || w.constant.dims[0] != d ||
            w.constant.dims[1] != g || w.constant.integer)
            fail(ctx.who + ": W must be a float constant (" + std::to_string(d) + ", " + std::to_string(g) + ", I)");
        if (r.kind != Kind::constant || r.constant.dims != std::vector<std::int64_t>{d, g, hidden})
            fail(ctx.who + ": R must be a float constant (" + std::to_string(d) + ", " + std::to_string(g) + ", " +
                 std::to_string(hidden) + ")");
        RecurrentSpec::Layer weights{w.constant, r.constant, std::nullopt};
        if (auto b = optional_input(ctx, 3)) {
            if (b->kind != Kind::constant || b->constant.dims != std::vector<std::int64_t>{d, 2 * g})
                fail(ctx.who + ": B must be a float constant (" + std::to_string(d) + ", " + std::to_string(2 * g) +
                     ")");
            weights.b = b->constant;
        }
        if (auto lens = optional_input(ctx, 4); lens && lens->kind != Kind::lengths)
            fail(ctx.who + ": sequence_lens must be the graph's int32 input");
        for (int k = 5; k <= 6; ++k)
            if (auto init = optional_input(ctx, k);
                init && init->kind != Kind::zeros && !(init->kind == Kind::constant && all_zero(init->constant)))
                fail(ctx.who + ": only zero initial states are supported");
        if (optional_input(ctx, 7)) fail(ctx.who + ": peepholes (P) have no recur equivalent");

        if (x.kind != Kind::data) fail(ctx.who + ": X is not the model's data");
        if (!batch_first_) batch_first_ = x.flipped;  // time-major X from a swapped input: batch-first
        if (x.flipped != *batch_first_) fail(ctx.who + ": X is batch-first; only time-major X (layout 0) is supported");
        const auto input_size = static_cast<std::size_t>(w.constant.dims[2]);

        // Stack onto the previous layer when X is its Y and the operators match.
        bool stacked = false;
        if (x.from_y && x.stage == layers_.size() && x.stage > 0 && layers_.back().recurrent) {
            RecurrentSpec& prev = *layers_.back().recurrent;
            stacked = !prev.mode && prev.kind == kind && prev.hidden == static_cast<std::size_t>(hidden) &&
                      prev.dirs == dirs && prev.nonlinearity == nonlinearity && x.depth + 1 == prev.layers.size() &&
                      input_size == dirs * prev.hidden;
        }
        std::size_t depth = 0;
        if (stacked) {
            RecurrentSpec& prev = *layers_.back().recurrent;
            prev.layers.push_back(std::move(weights));
            depth = prev.layers.size() - 1;
        } else {
            LayerSpec l{"Recurrent"};
            l.recurrent = RecurrentSpec{kind,        input_size,   static_cast<std::size_t>(hidden),
                                        dirs,        nonlinearity, {std::move(weights)},
                                        std::nullopt};
            push(ctx, x, std::move(l));
        }
        Val y{Kind::y};
        y.stage = layers_.size();
        y.depth = depth;
        Val h = y;
        h.kind = Kind::h;
        Val c = y;
        c.kind = Kind::c;
        return {y, h, c};
    }

    // ---- Building the Sequential -------------------------------------------------------------

    void assign(Parameter<T>& p, const std::vector<double>& values, const std::string& what) const {
        xt::xarray<T>& v = p.value();
        if (v.size() != values.size())
            fail(what + ": " + std::to_string(values.size()) + " values for " + shape_str(v.shape()));
        for (std::size_t k = 0; k < values.size(); ++k) v.data()[k] = static_cast<T>(values[k]);
    }

    std::unique_ptr<nn::Sequential<T>> build() {
        auto s = std::make_unique<nn::Sequential<T>>();
        for (std::size_t k = 0; k < layers_.size(); ++k) {
            LayerSpec& l = layers_[k];
            const std::string what = "layer " + std::to_string(k) + " (" + l.op + ")";
            if (l.op == "Embedding") {
                auto& e = s->template emplace<nn::Embedding<T>>(static_cast<std::size_t>(l.weight.dims[0]),
                                                                static_cast<std::size_t>(l.weight.dims[1]));
                assign(e.weight(), l.weight.values, what);
            } else if (l.op == "Linear") {
                auto& lin =
                    s->template emplace<nn::Linear<T>>(static_cast<std::size_t>(l.weight.dims[1]),
                                                       static_cast<std::size_t>(l.weight.dims[0]), l.bias.has_value());
                assign(lin.weight(), l.weight.values, what);
                if (l.bias) assign(*lin.bias(), l.bias->values, what);
            } else if (l.op == "Relu") {
                s->template emplace<nn::ReLU<T>>();
            } else if (l.op == "Tanh") {
                s->template emplace<nn::Tanh<T>>();
            } else if (l.op == "Sigmoid") {
                s->template emplace<nn::Sigmoid<T>>();
            } else if (l.op == "Softmax") {
                s->template emplace<nn::Softmax<T>>(l.axis);
            } else if (l.op == "LogSoftmax") {
                s->template emplace<nn::LogSoftmax<T>>(l.axis);
            } else {
                RecurrentSpec& r = *l.recurrent;
                bool bias = false;
                for (const auto& layer : r.layers) bias = bias || layer.b.has_value();
                const nn::Return mode = r.mode.value_or(nn::Return::sequences);
                const bool bf = batch_first_.value_or(false);
                if (r.kind == CellKind::lstm) {
                    auto m = std::make_unique<nn::LSTM<T>>(nn::LSTMOptions{.input_size = r.input_size,
                                                                           .hidden_size = r.hidden,
                                                                           .num_layers = r.layers.size(),
                                                                           .bias = bias,
                                                                           .batch_first = bf,
                                                                           .bidirectional = r.dirs == 2});
                    load_recurrent(*m, r, bias, what);
                    s->add(nn::recurrent_layer(std::move(m), mode));
                } else if (r.kind == CellKind::gru) {
                    auto m = std::make_unique<nn::GRU<T>>(nn::GRUOptions{.input_size = r.input_size,
                                                                         .hidden_size = r.hidden,
                                                                         .num_layers = r.layers.size(),
                                                                         .bias = bias,
                                                                         .batch_first = bf,
                                                                         .bidirectional = r.dirs == 2});
                    load_recurrent(*m, r, bias, what);
                    s->add(nn::recurrent_layer(std::move(m), mode));
                } else {
                    auto m = std::make_unique<nn::RNN<T>>(nn::RNNOptions{.input_size = r.input_size,
                                                                         .hidden_size = r.hidden,
                                                                         .num_layers = r.layers.size(),
                                                                         .nonlinearity = r.nonlinearity,
                                                                         .bias = bias,
                                                                         .batch_first = bf,
                                                                         .bidirectional = r.dirs == 2});
                    load_recurrent(*m, r, bias, what);
                    s->add(nn::recurrent_layer(std::move(m), mode));
                }
            }
        }
        return s;
    }

    /// ONNX W (D, G*H, I), R (D, G*H, H), B (D, 2*G*H) -> each cell's PyTorch-order weights.
    template <class M>
    void load_recurrent(M& m, const RecurrentSpec& r, bool bias, const std::string& what) const {
        const auto order = recur_gate_sources(r.kind);
        const std::size_t g = gates(r.kind) * r.hidden;
        for (std::size_t l = 0; l < r.layers.size(); ++l) {
            const auto& layer = r.layers[l];
            const std::size_t in = static_cast<std::size_t>(layer.w.dims[2]);
            if (in != (l == 0 ? r.input_size : r.dirs * r.hidden))
                fail(what + ": layer " + std::to_string(l) + " has input size " + std::to_string(in));
            for (std::size_t d = 0; d < r.dirs; ++d) {
                auto& cell = m.cell(l, d == 1);
                assign(cell.weight_ih(), permute_gate_rows(layer.w.values.data() + d * g * in, r.hidden, in, order),
                       what);
                assign(cell.weight_hh(),
                       permute_gate_rows(layer.r.values.data() + d * g * r.hidden, r.hidden, r.hidden, order), what);
                if (!bias) continue;
                std::vector<double> zeros(2 * g, 0.0);
                const double* b = layer.b ? layer.b->values.data() + d * 2 * g : zeros.data();
                assign(*cell.bias_ih(), permute_gate_rows(b, r.hidden, 1, order), what);
                assign(*cell.bias_hh(), permute_gate_rows(b + g, r.hidden, 1, order), what);
            }
        }
    }

    std::string path_;
    onnx::ModelProto model_;
    std::map<std::string, Val> vals_;
    std::vector<LayerSpec> layers_;
    std::optional<bool> batch_first_;
};

}  // namespace

template <class T>
std::unique_ptr<nn::Sequential<T>> import_onnx(const std::string& path) {
    return Importer<T>(path).run();
}

template std::unique_ptr<nn::Sequential<float>> import_onnx<float>(const std::string&);
template std::unique_ptr<nn::Sequential<double>> import_onnx<double>(const std::string&);

}  // namespace recur::io
