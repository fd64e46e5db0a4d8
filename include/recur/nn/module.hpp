// recur/nn/module.hpp — the base of every layer: named parameters, train/eval, zero_grad.
#pragma once

#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "recur/tape.hpp"

namespace recur::nn {

template <class T>
using NamedParameter = std::pair<std::string, Parameter<T>*>;

/// A module owns Parameters (at stable addresses) and child modules, and lists them under
/// PyTorch state_dict names ("0.weight_ih_l0"). Modules are neither copyable nor movable:
/// tapes and optimizers hold pointers to their parameters; keep them in place or in a
/// std::unique_ptr.
template <class T>
class Module {
public:
    Module() = default;
    virtual ~Module() = default;
    Module(const Module&) = delete;
    Module& operator=(const Module&) = delete;

    /// Every parameter, own ones first (in registration order), then each child's under
    /// "child_name." prefixes.
    std::vector<NamedParameter<T>> named_parameters() {
        std::vector<NamedParameter<T>> out;
        collect(out, "");
        return out;
    }
    std::vector<Parameter<T>*> parameters() {
        std::vector<Parameter<T>*> out;
        for (auto& np : named_parameters()) out.push_back(np.second);
        return out;
    }
    /// Training mode (dropout active) for this module and its children.
    void train(bool on = true) {
        training_ = on;
        for (auto& c : children_) c.second->train(on);
    }
    void eval() { train(false); }
    bool training() const { return training_; }
    void zero_grad() {
        for (auto* p : parameters()) p->zero_grad();
    }

protected:
    /// Creates a parameter owned by this module; the reference stays valid for its lifetime.
    Parameter<T>& register_parameter(std::string name, xt::xarray<T> value) {
        storage_.emplace_back(std::move(value));
        own_.emplace_back(std::move(name), &storage_.back());
        return storage_.back();
    }
    /// Lists a child (a member of the derived class, or one it owns) under `name`; an empty
    /// name lists the child's parameters as this module's own (no "name." prefix).
    template <class M>
    M& register_module(std::string name, M& child) {
        children_.emplace_back(std::move(name), &child);
        return child;
    }

private:
    void collect(std::vector<NamedParameter<T>>& out, const std::string& prefix) {
        for (auto& [name, p] : own_) out.emplace_back(prefix + name, p);
        for (auto& [name, c] : children_) c->collect(out, name.empty() ? prefix : prefix + name + ".");
    }

    std::deque<Parameter<T>> storage_;
    std::vector<NamedParameter<T>> own_;
    std::vector<std::pair<std::string, Module<T>*>> children_;
    bool training_ = true;
};

}  // namespace recur::nn
