// Module checkpoints: save / load every parameter under its named_parameters() name.
#include <algorithm>
#include <map>
#include <set>

#include "recur/io.hpp"
#include "src/io/atomic_file.hpp"
#include "src/io/common.hpp"
#include "src/io/npz.hpp"

namespace recur::io {

namespace {

using detail::ArrayRef;
using detail::squote;

template <class T>
std::vector<ArrayRef<T>> module_arrays(nn::Module<T>& m, const std::string& ctx) {
    std::vector<ArrayRef<T>> refs;
    std::set<std::string> names;
    for (auto& [name, p] : m.named_parameters()) {
        if (!names.insert(name).second) throw io_error(ctx + ": the module has two parameters named " + squote(name));
        refs.emplace_back(name, &p->value());
    }
    return refs;
}

}  // namespace

template <class T>
void save(nn::Module<T>& m, const std::string& path) {
    const std::string ctx = "save " + path;
    detail::write_file_atomically(path, ctx, detail::npz_bytes(module_arrays(m, ctx), ctx));
}

template <class T>
void load(nn::Module<T>& m, const std::string& path) {
    const std::string ctx = "load " + path;
    // 1. Read and validate the whole file (nothing in the module changes yet).
    std::vector<NamedArray<T>> arrays = detail::read_npz<T>(path, ctx);
    std::map<std::string, std::size_t> in_file;
    for (std::size_t k = 0; k < arrays.size(); ++k) in_file.emplace(arrays[k].first, k);

    // 2. Match against the module; report every problem at once.
    std::vector<std::string> problems, missing, unexpected;
    const auto params = m.named_parameters();
    std::set<std::string> wanted;
    std::vector<std::size_t> source(params.size());
    for (std::size_t k = 0; k < params.size(); ++k) {
        const auto& [name, p] = params[k];
        if (!wanted.insert(name).second) throw io_error(ctx + ": the module has two parameters named " + squote(name));
        auto it = in_file.find(name);
        if (it == in_file.end()) {
            missing.push_back(squote(name) + " " + shape_str(p->shape()));
            continue;
        }
        const auto& a = arrays[it->second].second;
        if (a.shape() != p->shape())
            problems.push_back("parameter " + squote(name) + " has shape " + shape_str(a.shape()) +
                               " in the file, the module expects " + shape_str(p->shape()));
        source[k] = it->second;
    }
    for (const auto& [name, a] : arrays)
        if (!wanted.count(name)) unexpected.push_back(squote(name) + " " + shape_str(a.shape()));
    auto join = [](const std::vector<std::string>& v) {
        std::string out;
        for (const auto& x : v) out += (out.empty() ? "" : ", ") + x;
        return out;
    };
    if (missing.size() == 1) problems.push_back("parameter " + missing[0] + " is missing from the file");
    if (missing.size() > 1)
        problems.push_back(std::to_string(missing.size()) + " parameters are missing from the file: " + join(missing));
    if (unexpected.size() == 1)
        problems.push_back("the file has an array " + unexpected[0] + " that the module has no parameter for");
    if (unexpected.size() > 1)
        problems.push_back("the file has " + std::to_string(unexpected.size()) +
                           " arrays that the module has no parameter for: " + join(unexpected));
    if (!problems.empty()) {
        std::string msg = ctx + ": ";
        for (std::size_t k = 0; k < problems.size(); ++k) msg += (k ? "; " : "") + problems[k];
        throw io_error(msg);
    }

    // 3. Commit: copy into the parameters' existing buffers (same shapes, checked above):
    //    nothing is allocated, nothing can fail, and the buffers keep their addresses.
    for (std::size_t k = 0; k < params.size(); ++k) {
        const xt::xarray<T>& from = arrays[source[k]].second;
        std::copy(from.data(), from.data() + from.size(), params[k].second->value().data());
    }
}

template void save<float>(nn::Module<float>&, const std::string&);
template void save<double>(nn::Module<double>&, const std::string&);
template void load<float>(nn::Module<float>&, const std::string&);
template void load<double>(nn::Module<double>&, const std::string&);

}  // namespace recur::io
