#include "common.hpp"

#include <xtensor/xbroadcast.hpp>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xoperation.hpp>

namespace recur::detail {

std::size_t normalize_axis(const char* op, std::ptrdiff_t axis, const Shape& shape, std::size_t extra) {
    const auto n = static_cast<std::ptrdiff_t>(shape.size() + extra);
    if (axis < -n || axis >= n)
        throw index_error(std::string(op) + ": axis " + std::to_string(axis) + " is out of range for " +
                          (extra ? "a new axis of inputs of shape " : "shape ") + shape_str(shape) +
                          " (valid: " + std::to_string(-n) + " to " + std::to_string(n - 1) + ")");
    return static_cast<std::size_t>(axis < 0 ? axis + n : axis);
}

Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b) {
    const std::size_t nd = std::max(a.size(), b.size());
    Shape out(nd);
    for (std::size_t k = 0; k < nd; ++k) {
        const std::size_t da = k < nd - a.size() ? 1 : a[k - (nd - a.size())];
        const std::size_t db = k < nd - b.size() ? 1 : b[k - (nd - b.size())];
        if (da != db && da != 1 && db != 1)
            throw shape_error(std::string(op) + ": shapes " + shape_str(a) + " and " + shape_str(b) +
                              " do not broadcast");
        out[k] = da == 1 ? db : da;
    }
    return out;
}

template <class T>
std::vector<std::uint8_t> broadcast_flags(const char* op, const xt::xarray<T>& mask, const Shape& shape) {
    const Shape ms(mask.shape().begin(), mask.shape().end());
    if (ms.size() > shape.size() || broadcast_shapes(op, shape, ms) != shape)
        throw shape_error(std::string(op) + ": mask " + shape_str(ms) + " does not broadcast to " + shape_str(shape));
    const xt::xarray<std::uint8_t> flags = xt::broadcast(xt::cast<std::uint8_t>(xt::not_equal(mask, T(0))), shape);
    return std::vector<std::uint8_t>(flags.begin(), flags.end());
}

template <class T>
xt::xarray<T> sum_to_shape(const xt::xarray<T>& g, const Shape& target) {
    // Walk g in row-major order; each element lands at the target position whose index is
    // g's index with broadcast axes (extent 1 in target, or missing in front) set to 0.
    const Shape& gs = g.shape();
    const std::size_t nd = gs.size(), lead = nd - target.size();
    std::vector<std::size_t> tstride(nd, 0);
    std::size_t stride = 1;
    for (std::size_t k = nd; k-- > lead;) {
        const std::size_t tk = target[k - lead];
        tstride[k] = tk == 1 ? 0 : stride;
        stride *= tk;
    }
    xt::xarray<T> r = xt::zeros<T>(target);
    std::vector<std::size_t> idx(nd, 0);
    std::size_t pos = 0;
    for (std::size_t e = 0; e < g.size(); ++e) {
        r.data()[pos] += g.data()[e];
        for (std::size_t k = nd; k-- > 0;) {  // increment the multi-index, update pos
            pos += tstride[k];
            if (++idx[k] < gs[k]) break;
            pos -= tstride[k] * gs[k];
            idx[k] = 0;
        }
    }
    return r;
}

template xt::xarray<float> sum_to_shape(const xt::xarray<float>&, const Shape&);
template xt::xarray<double> sum_to_shape(const xt::xarray<double>&, const Shape&);
template std::vector<std::uint8_t> broadcast_flags(const char*, const xt::xarray<float>&, const Shape&);
template std::vector<std::uint8_t> broadcast_flags(const char*, const xt::xarray<double>&, const Shape&);

}  // namespace recur::detail
