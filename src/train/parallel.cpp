// Thread counts and data-parallel training: one tape per shard over the shared parameters,
// then a fixed-order reduction of the shards' gradients.
#include "recur/parallel.hpp"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <ctime>
#include <exception>
#include <limits>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "src/threads.hpp"
#include "seeds.hpp"

namespace recur {

void set_num_threads(int n) {
    if (n < 1) throw value_error("set_num_threads: the thread count must be >= 1, got " + std::to_string(n));
    omp_set_num_threads(n);  // OpenBLAS stays on one thread: recur splits large products itself
}

int num_threads() { return omp_get_max_threads(); }

int num_procs() { return omp_get_num_procs(); }

}  // namespace recur

namespace recur::train {

namespace {

// OpenBLAS on one thread for a scope (the shards' threads are the parallelism), then back.
class SingleThreadedBlas {
public:
    SingleThreadedBlas() : previous_(recur::detail::blas_threads()) {
        if (previous_ != 1) recur::detail::set_blas_threads(1);
    }
    ~SingleThreadedBlas() {
        if (previous_ != 1) recur::detail::set_blas_threads(previous_);
    }
    SingleThreadedBlas(const SingleThreadedBlas&) = delete;
    SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

private:
    int previous_;
};

// out = rows [begin, end) of a (B, ...) array (contiguous in row-major storage), in out's
// kept buffer: no allocation once the shard has seen a batch of this size.
template <class T>
void copy_rows(const xt::xarray<T>& a, std::size_t begin, std::size_t end, xt::xarray<T>& out) {
    Shape s = a.shape();
    const std::size_t per = a.shape()[0] == 0 ? 0 : a.size() / a.shape()[0];
    s[0] = end - begin;
    out.resize(s);
    std::copy(a.data() + begin * per, a.data() + end * per, out.data());
}

// Below this many parameter elements the reduction runs on the calling thread.
constexpr std::size_t reduce_grain = std::size_t(1) << 15;

}  // namespace

template <class T>
struct DataParallel<T>::Shard {
    Tape<T> tape{TapeOptions{.accumulate_parameter_grads = false, .retain_grads = false}};
    xt::xarray<T> x, y;  // the shard's rows of the batch, which its tape reads in place
    Var<T> prediction;
    Var<T> target;
    std::vector<std::int64_t> lengths;
    double loss = 0;
    std::exception_ptr error;
};

template <class T>
DataParallel<T>::DataParallel(nn::Layer<T>& model, LossFn<T> loss, DataParallelOptions o)
    : model_(model), loss_(std::move(loss)), o_(o) {
    if (o_.threads == 0) throw value_error("DataParallel: threads must be >= 1, got 0");
    if (!loss_) throw value_error("DataParallel: no loss function given");
    params_ = model_.parameters();
    if (params_.empty()) throw value_error("DataParallel: the model has no parameters");
}

template <class T>
DataParallel<T>::~DataParallel() = default;

template <class T>
std::vector<std::pair<std::size_t, std::size_t>> DataParallel<T>::split(std::size_t batch, std::size_t threads) {
    if (batch == 0 || threads == 0)
        throw value_error("DataParallel::split: batch and threads must be >= 1, got batch " + std::to_string(batch) +
                          " and threads " + std::to_string(threads));
    const std::size_t n = std::min(batch, threads);
    std::vector<std::pair<std::size_t, std::size_t>> out(n);
    for (std::size_t k = 0; k < n; ++k) out[k] = {k * batch / n, (k + 1) * batch / n};
    return out;
}

template <class T>
std::uint64_t DataParallel<T>::shard_seed(std::uint64_t seed, std::size_t k) {
    return detail::splitmix64(seed + detail::seed_weight_1 * (static_cast<std::uint64_t>(k) + 1));
}

template <class T>
Tape<T>& DataParallel<T>::tape(std::size_t k) {
    while (state_.size() <= k) state_.push_back(std::make_unique<Shard>());
    return state_[k]->tape;
}

template <class T>
const xt::xarray<T>& DataParallel<T>::prediction(std::size_t k) const {
    if (k >= shards_.size())
        throw index_error("DataParallel::prediction: shard " + std::to_string(k) + " of " +
                          std::to_string(shards_.size()));
    return state_[k]->prediction.value();
}

template <class T>
const xt::xarray<T>& DataParallel<T>::target(std::size_t k) const {
    if (k >= shards_.size())
        throw index_error("DataParallel::target: shard " + std::to_string(k) + " of " + std::to_string(shards_.size()));
    return state_[k]->target.value();
}

template <class T>
double DataParallel<T>::shard_loss(std::size_t k) const {
    if (k >= shards_.size())
        throw index_error("DataParallel::shard_loss: shard " + std::to_string(k) + " of " +
                          std::to_string(shards_.size()));
    return state_[k]->loss;
}

// Records shard k on its own tape and runs its backward; the gradients stay on the tape.
template <class T>
void DataParallel<T>::run_shard(std::size_t k, const xt::xarray<T>& x, const xt::xarray<T>& y,
                                const std::vector<std::int64_t>& lengths, std::optional<std::uint64_t> seed) {
    Shard& s = *state_[k];
    try {
        const auto [begin, end] = shards_[k];
        s.tape.clear();
        if (seed) s.tape.seed(shard_seed(*seed, k));
        s.lengths.clear();
        if (!lengths.empty())
            s.lengths.assign(lengths.begin() + static_cast<std::ptrdiff_t>(begin),
                             lengths.begin() + static_cast<std::ptrdiff_t>(end));
        copy_rows(x, begin, end, s.x);
        copy_rows(y, begin, end, s.y);
        s.prediction = model_(s.tape.view(s.x), s.lengths);
        s.target = s.tape.view(s.y);
        Var<T> l = loss_(s.prediction, s.target);
        if (l.size() != 1)
            throw shape_error("DataParallel::step: the loss must have one element, got shape " + shape_str(l.shape()));
        s.loss = static_cast<double>(l.item());
        if (std::isfinite(s.loss)) s.tape.backward(l);
    } catch (...) {
        s.error = std::current_exception();
    }
}

// grad += w_0 g_0 + w_1 g_1 + ... for every parameter, shard 0 first, elementwise. Threads
// take disjoint element ranges, so the order of the additions of every element is fixed.
template <class T>
void DataParallel<T>::reduce(const std::vector<T>& weights) {
    const std::size_t np = params_.size(), ns = shards_.size();
    std::vector<const T*> grads(np * ns, nullptr);
    std::vector<std::size_t> offset(np + 1, 0);
    for (std::size_t p = 0; p < np; ++p) {
        Parameter<T>& param = *params_[p];
        if (param.grad().shape() != param.value().shape()) param.grad() = xt::zeros<T>(param.value().shape());
        for (std::size_t k = 0; k < ns; ++k) {
            const xt::xarray<T>* g = state_[k]->tape.parameter_grad(param);
            grads[p * ns + k] = g ? g->data() : nullptr;
        }
        offset[p + 1] = offset[p] + param.size();
    }
    const std::size_t total = offset[np];
    auto add_range = [&](std::size_t lo, std::size_t hi) {  // flattened elements [lo, hi)
        for (std::size_t p = 0; p < np && lo < hi; ++p) {
            if (offset[p + 1] <= lo) continue;
            const std::size_t a = lo - offset[p], b = std::min(hi, offset[p + 1]) - offset[p];
            T* dst = params_[p]->grad().data();
            for (std::size_t k = 0; k < ns; ++k) {
                const T* src = grads[p * ns + k];
                if (src == nullptr) continue;
                const T w = weights[k];
                for (std::size_t e = a; e < b; ++e) dst[e] += w * src[e];
            }
            lo = offset[p] + b;
        }
    };
    const auto procs = static_cast<std::size_t>(std::max(1, omp_get_num_procs()));
    const std::size_t team = std::min({o_.threads, procs, std::max<std::size_t>(1, total / reduce_grain)});
    if (team <= 1) {
        add_range(0, total);
        return;
    }
#pragma omp parallel num_threads(static_cast <int>(team))
    {
        const auto m = static_cast<std::size_t>(omp_get_num_threads());
        const auto t = static_cast<std::size_t>(omp_get_thread_num());
        add_range(t * total / m, (t + 1) * total / m);
    }
}

template <class T>
double DataParallel<T>::step(const xt::xarray<T>& x, const xt::xarray<T>& y, const std::vector<std::int64_t>& lengths,
                             std::optional<std::uint64_t> seed) {
    const std::size_t batch = x.dimension() == 0 ? 0 : x.shape()[0];
    if (batch == 0)
        throw value_error("DataParallel::step: the batch is empty (x has shape " + shape_str(x.shape()) + ")");
    if (y.dimension() == 0 || y.shape()[0] != batch)
        throw shape_error("DataParallel::step: x has shape " + shape_str(x.shape()) + " and y has shape " +
                          shape_str(y.shape()) + "; their first axes (samples) must be equal");
    if (!lengths.empty() && lengths.size() != batch)
        throw shape_error("DataParallel::step: " + std::to_string(lengths.size()) + " lengths for " +
                          std::to_string(batch) + " samples");

    shards_ = split(batch, o_.threads);
    const std::size_t ns = shards_.size();
    tape(ns - 1);  // make the shards' state before any thread starts
    for (std::size_t k = 0; k < ns; ++k) state_[k]->error = nullptr;

    if (ns == 1) {
        run_shard(0, x, y, lengths, seed);
    } else {
        // More shards than processors run in turn on the team (the same results: they depend
        // on the shards, not on the team).
        const auto procs = static_cast<std::size_t>(std::max(1, omp_get_num_procs()));
        const int team = static_cast<int>(std::min(ns, procs));
        SingleThreadedBlas blas;
#pragma omp parallel num_threads(team)
        {
            omp_set_num_threads(1);  // ops inside a shard stay on its thread
            const auto m = static_cast<std::size_t>(omp_get_num_threads());
            for (auto k = static_cast<std::size_t>(omp_get_thread_num()); k < ns; k += m)
                run_shard(k, x, y, lengths, seed);
        }
    }
    for (std::size_t k = 0; k < ns; ++k)
        if (state_[k]->error) std::rethrow_exception(state_[k]->error);

    std::vector<T> weights(ns);
    double loss = 0;
    for (std::size_t k = 0; k < ns; ++k) {
        const double w = o_.reduction == LossReduction::mean
                             ? static_cast<double>(shards_[k].second - shards_[k].first) / static_cast<double>(batch)
                             : 1.0;
        weights[k] = static_cast<T>(w);
        loss += w * state_[k]->loss;
    }
    if (!std::isfinite(loss)) return loss;
    reduce(weights);
    return loss;
}

template class DataParallel<float>;
template class DataParallel<double>;

}  // namespace recur::train

namespace recur::distributed {

namespace {

// Processor seconds of the calling thread.
double thread_cpu_seconds() {
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

}  // namespace

// The reducer's buffers and its communication thread. Parameters are kept in bucket order
// (the reverse of the order given: backward finishes the last bound first); a parameter is one
// piece or, when it is larger than its bucket, several pieces of whole rows, by row.
template <class T>
struct GradReducer<T>::State {
    // Rows [row_begin, row_end) of the parameter at position `param`, at `offset` in `bucket`.
    struct Piece {
        std::size_t param = 0, row_begin = 0, row_end = 0, bucket = 0, offset = 0;
    };
    struct Bucket {
        std::vector<T> data;  // w * grad of its pieces, back to back
        std::size_t pieces = 0;  // how many pieces it holds
        std::size_t packed = 0;  // how many are in this step
        bool ready = false;  // handed to the communication thread
    };
    Communicator& comm;
    std::vector<Parameter<T>*> params;
    std::unordered_map<const Parameter<T>*, std::size_t> index;  // parameter -> position in params
    std::vector<Piece> pieces;  // in bucket order
    std::vector<std::size_t> first_piece;  // per position, and one past the end: its pieces
    std::vector<char> packed;  // per piece, this step
    std::vector<Bucket> buckets;
    std::size_t per_bucket = 1, last_bucket = 1;  // elements
    std::vector<std::size_t> observed;  // positions in the order the first step reported them
    std::vector<char> seen;  // per position: in observed
    bool learned = false;
    T weight = 1;
    bool active = false;

    std::mutex m;
    // The communication thread waits on to_thread for a ready bucket; finish() waits on
    // to_finish, told only when the last bucket is done (or failed): a wake-up per bucket
    // would let another process take the core on a machine whose cores are all busy.
    std::condition_variable to_thread, to_finish;
    std::size_t next = 0;  // the bucket the thread reduces next
    bool stop = false;
    double comm_seconds = 0, comm_cpu = 0;  // this step's, on the communication thread
    // This step's: when the last bucket was handed to the thread, and when it was reduced.
    std::chrono::steady_clock::time_point handed_over, done;
    std::exception_ptr error;
    std::thread thread;

    explicit State(Communicator& c) : comm(c) {}

    // Copies weight * (rows of the piece's grad) into its bucket; true when that completes
    // the bucket.
    bool pack(std::size_t j) {
        const Piece& piece = pieces[j];
        const Parameter<T>& p = *params[piece.param];
        packed[j] = 1;
        auto& bucket = buckets[piece.bucket];
        const std::size_t width = detail::row_width(p.shape()), count = (piece.row_end - piece.row_begin) * width;
        T* dst = bucket.data.data() + piece.offset;
        if (p.grad().shape() == p.value().shape()) {
            const T* src = p.grad().data() + piece.row_begin * width;
            for (std::size_t e = 0; e < count; ++e) dst[e] = weight * src[e];
        } else {  // no gradient yet: zeros
            std::fill(dst, dst + count, T(0));
        }
        return ++bucket.packed == bucket.pieces;
    }

    // Wakes the communication thread for the buckets handed over and waits (holding `lock` on
    // m) until it has reduced the last; the process has nothing else to do meanwhile, so the
    // communicator may poll more often.
    void await_last_bucket(std::unique_lock<std::mutex>& lock) {
        to_thread.notify_one();
        comm.set_busy_waiting(true);
        to_finish.wait(lock, [&] { return next == buckets.size(); });
        comm.set_busy_waiting(false);
    }

    // Packs the pieces of position i within rows [0, rows) not packed yet, and hands the
    // buckets that completes to the communication thread.
    void report(std::size_t i, std::size_t rows) {
        if (!learned && !seen[i]) {
            seen[i] = 1;
            observed.push_back(i);
        }
        bool handed = false;
        for (std::size_t j = first_piece[i]; j < first_piece[i + 1]; ++j) {
            if (packed[j] || pieces[j].row_end > rows || !pack(j)) continue;
            handed = true;
            std::lock_guard lock(m);
            buckets[pieces[j].bucket].ready = true;
        }
        if (handed) {
            handed_over = std::chrono::steady_clock::now();
            to_thread.notify_one();
        }
    }
};

template <class T>
GradReducer<T>::GradReducer(Communicator& comm, std::vector<Parameter<T>*> params, GradReducerOptions o)
    : s_(std::make_unique<State>(comm)) {
    if (params.empty()) throw value_error("GradReducer: no parameters to reduce");
    if (o.bucket_bytes == 0 || o.last_bucket_bytes == 0)
        throw value_error("GradReducer: bucket_bytes and last_bucket_bytes must be positive");
    State& s = *s_;
    for (std::size_t i = 0; i < params.size(); ++i) {
        Parameter<T>* p = params[i];
        if (p == nullptr || !s.index.emplace(p, i).second)
            throw value_error("GradReducer: parameter " + std::to_string(i) +
                              (p == nullptr ? " is null" : " is listed twice"));
    }
    s.per_bucket = std::max<std::size_t>(1, o.bucket_bytes / sizeof(T));
    s.last_bucket = std::clamp<std::size_t>(o.last_bucket_bytes / sizeof(T), 1, s.per_bucket);
    layout(std::vector<Parameter<T>*>(params.rbegin(), params.rend()));
    s.observed.reserve(params.size());
    s.seen.assign(params.size(), 0);
    for (auto* v : {&step_wait_, &step_reported_, &step_comm_cpu_}) v->reserve(logged_steps);
    s.thread = std::thread([this] { communicate(); });
}

// Cuts `order` into buckets and makes their buffers. Only while no step runs. The buckets are
// made from the last one back: the last holds about last_bucket elements, each earlier one up
// to twice the next, up to per_bucket, so what is left to send once backward ends is small.
// A parameter joins the bucket being filled when it fits; otherwise it starts the next one,
// and when it is larger than that too, its last rows fill it and the rest goes on (a row
// larger than a bucket is a piece of its own).
template <class T>
void GradReducer<T>::layout(std::vector<Parameter<T>*> order) {
    State& s = *s_;
    s.params = std::move(order);
    s.index.clear();
    std::vector<typename State::Piece> reversed;  // pieces from the last one back
    std::vector<std::size_t> bucket_size;  // from the last bucket back
    std::size_t capacity = s.last_bucket, fill = 0;
    const auto close_bucket = [&] {
        bucket_size.push_back(fill);
        fill = 0;
        capacity = std::min(2 * capacity, s.per_bucket);
    };
    for (std::size_t i = s.params.size(); i-- > 0;) {
        const Parameter<T>& p = *s.params[i];
        const std::size_t width = detail::row_width(p.shape());
        std::size_t end = detail::row_count(p.shape());
        do {
            std::size_t take = end;
            if (fill + end * width > capacity) {
                if (fill > 0) {
                    close_bucket();
                    continue;
                }
                take = std::min(end, std::max<std::size_t>(1, capacity / std::max<std::size_t>(1, width)));
            }
            reversed.push_back({i, end - take, end, bucket_size.size(), 0});
            fill += take * width;
            end -= take;
            if (end > 0 || fill >= capacity) close_bucket();
        } while (end > 0);
    }
    if (fill > 0 || bucket_size.empty()) close_bucket();
    // Bucket order and offsets: reversed, the pieces run by position and row.
    const std::size_t n_buckets = bucket_size.size();
    s.pieces.assign(reversed.rbegin(), reversed.rend());
    s.first_piece.assign(s.params.size() + 1, 0);
    std::vector<std::size_t> offset(n_buckets, 0);
    for (std::size_t j = 0; j < s.pieces.size(); ++j) {
        auto& piece = s.pieces[j];
        piece.bucket = n_buckets - 1 - piece.bucket;
        piece.offset = offset[piece.bucket];
        offset[piece.bucket] += (piece.row_end - piece.row_begin) * detail::row_width(s.params[piece.param]->shape());
        ++s.first_piece[piece.param + 1];
    }
    for (std::size_t i = 0; i < s.params.size(); ++i) {
        s.index.emplace(s.params[i], i);
        s.first_piece[i + 1] += s.first_piece[i];
    }
    std::lock_guard lock(s.m);
    s.buckets.clear();
    s.buckets.resize(n_buckets);
    for (std::size_t b = 0; b < n_buckets; ++b) s.buckets[b].data.assign(offset[b], T(0));
    for (const auto& piece : s.pieces) ++s.buckets[piece.bucket].pieces;
    s.packed.assign(s.pieces.size(), 0);
    s.next = s.buckets.size();  // idle until begin()
}

// After the first step: the buckets follow the order in which backward reported the
// parameters (rank 0's, so that every rank has the same buckets), then the unreported ones.
template <class T>
void GradReducer<T>::learn_order() {
    State& s = *s_;
    s.learned = true;
    std::vector<std::uint64_t> order;
    std::vector<char> seen(s.params.size(), 0);
    for (std::size_t i : s.observed) {
        order.push_back(i);
        seen[i] = 1;
    }
    for (std::size_t i = 0; i < s.params.size(); ++i)
        if (!seen[i]) order.push_back(i);
    s.comm.broadcast(std::as_writable_bytes(std::span(order)), 0);
    bool same = true;
    for (std::size_t k = 0; k < order.size(); ++k) same = same && order[k] == k;
    if (same) return;
    std::vector<Parameter<T>*> params;
    for (auto k : order) params.push_back(s.params[k]);
    layout(std::move(params));
}

template <class T>
GradReducer<T>::~GradReducer() {
    {
        std::lock_guard lock(s_->m);
        s_->stop = true;
    }
    s_->to_thread.notify_one();
    s_->thread.join();
}

// The communication thread: reduces bucket `next` once it is ready, in bucket order.
template <class T>
void GradReducer<T>::communicate() {
    State& s = *s_;
    std::unique_lock lock(s.m);
    for (;;) {
        s.to_thread.wait(lock, [&] { return s.stop || (s.next < s.buckets.size() && s.buckets[s.next].ready); });
        if (s.stop) return;
        auto& bucket = s.buckets[s.next];
        lock.unlock();
        const auto start = std::chrono::steady_clock::now();
        const double cpu_start = thread_cpu_seconds();
        try {
            s.comm.allreduce_sum(std::span<T>(bucket.data));
        } catch (...) {
            lock.lock();
            s.error = std::current_exception();
            s.next = s.buckets.size();
            s.to_finish.notify_one();
            continue;
        }
        const auto end = std::chrono::steady_clock::now();
        const double cpu = thread_cpu_seconds() - cpu_start;
        lock.lock();
        s.comm_seconds += std::chrono::duration<double>(end - start).count();
        s.comm_cpu += cpu;
        if (++s.next == s.buckets.size()) {
            s.done = end;
            s.to_finish.notify_one();
        }
    }
}

template <class T>
void GradReducer<T>::attach(Tape<T>& tape) {
    tape.on_grad_final([this](Parameter<T>& p, const xt::xarray<T>*) { ready(p); });
    tape.on_grad_rows_final([this](Parameter<T>& p, std::size_t, std::size_t rows) { rows_ready(p, rows); });
}

template <class T>
void GradReducer<T>::detach(Tape<T>& tape) {
    tape.on_grad_final({});
    tape.on_grad_rows_final({});
}

template <class T>
void GradReducer<T>::begin(double weight) {
    State& s = *s_;
    std::lock_guard lock(s.m);
    if (s.active) throw value_error("GradReducer::begin: the previous step was not finished (call finish())");
    s.weight = static_cast<T>(weight);
    std::fill(s.packed.begin(), s.packed.end(), 0);
    for (auto& b : s.buckets) {
        b.packed = 0;
        b.ready = false;
    }
    s.next = 0;
    s.active = true;
}

template <class T>
void GradReducer<T>::ready(Parameter<T>& p) {
    rows_ready(p, std::numeric_limits<std::size_t>::max());
}

template <class T>
void GradReducer<T>::rows_ready(Parameter<T>& p, std::size_t rows) {
    State& s = *s_;
    if (!s.active) return;
    const auto it = s.index.find(&p);
    if (it != s.index.end()) s.report(it->second, rows);
}

template <class T>
void GradReducer<T>::finish() {
    State& s = *s_;
    if (!s.active) throw value_error("GradReducer::finish: no step was begun (call begin(weight) first)");
    const bool learning = !s.learned;
    const bool log = step_wait_.size() < logged_steps;  // the log never grows: no allocation in a step
    if (log) step_reported_.push_back(static_cast<double>(std::count(s.packed.begin(), s.packed.end(), 1)));
    // The pieces backward did not report are packed first and their buckets handed over
    // together (a step without a tape attached reduces every bucket here).
    for (std::size_t j = 0; j < s.pieces.size(); ++j)
        if (!s.packed[j]) s.pack(j);
    const auto start = std::chrono::steady_clock::now();
    std::unique_lock lock(s.m);
    for (auto& b : s.buckets)
        if (!b.ready) {
            b.ready = true;
            s.handed_over = start;
        }
    s.await_last_bucket(lock);
    wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    comm_seconds_ += s.comm_seconds;
    // The step's W_r (GradReducerOverlap): from the last hand-over to the last reduction,
    // whichever of the two threads the core ran first when they share one.
    if (log && !s.error) {
        step_wait_.push_back(std::max(0.0, std::chrono::duration<double>(s.done - s.handed_over).count()));
        step_comm_cpu_.push_back(s.comm_cpu);
    } else if (log) {
        step_reported_.pop_back();
    }
    s.comm_seconds = s.comm_cpu = 0;
    s.active = false;
    if (s.error) {
        auto e = s.error;
        s.error = nullptr;
        std::rethrow_exception(e);
    }
    lock.unlock();
    for (const auto& piece : s.pieces) {
        Parameter<T>& p = *s.params[piece.param];
        if (p.grad().shape() != p.value().shape()) p.grad() = xt::zeros<T>(p.value().shape());
        const std::size_t width = detail::row_width(p.shape());
        const T* src = s.buckets[piece.bucket].data.data() + piece.offset;
        std::copy(src, src + (piece.row_end - piece.row_begin) * width, p.grad().data() + piece.row_begin * width);
    }
    if (learning) learn_order();
}

template <class T>
std::size_t GradReducer<T>::buckets() const {
    return s_->buckets.size();
}

template <class T>
const std::vector<Parameter<T>*>& GradReducer<T>::parameter_order() const {
    return s_->params;
}

template <class T>
void GradReducer<T>::reset_timers() {
    comm_seconds_ = wait_seconds_ = 0;
    step_wait_.clear();
    step_reported_.clear();
    step_comm_cpu_.clear();
}

// Hands every bucket (zeroed, so that repeating adds nothing up) to the communication thread
// at once, as finish() does in a step without a tape attached, and returns how long the
// reductions took from then on (until the thread ended the last one).
template <class T>
double GradReducer<T>::reduce_all_buckets() {
    State& s = *s_;
    for (auto& b : s.buckets) std::fill(b.data.begin(), b.data.end(), T(0));
    const auto start = std::chrono::steady_clock::now();
    std::unique_lock lock(s.m);
    for (auto& b : s.buckets) b.ready = true;
    s.next = 0;
    s.await_last_bucket(lock);  // waits as finish() does
    const double seconds = std::chrono::duration<double>(s.done - start).count();  // as W_r in finish()
    s.comm_seconds = s.comm_cpu = 0;
    if (s.error) {
        auto e = s.error;
        s.error = nullptr;
        std::rethrow_exception(e);
    }
    return seconds;
}

namespace {

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    const auto mid = v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2);
    std::nth_element(v.begin(), mid, v.end());
    if (v.size() % 2 == 1) return *mid;
    return 0.5 * (*mid + *std::max_element(v.begin(), mid));
}

}  // namespace

// Every rank's per-step records go through one allreduce of a (ranks x columns) table, each
// rank filling its own row (adding zeros is exact), then every rank takes the same medians.
template <class T>
GradReducerOverlap GradReducer<T>::overlap(std::size_t repeats) {
    State& s = *s_;
    if (s.active) throw value_error("GradReducer::overlap: a step is running (call finish() first)");
    const std::size_t steps = step_wait_.size(), ranks = static_cast<std::size_t>(s.comm.size()),
                      me = static_cast<std::size_t>(s.comm.rank());
    double count = static_cast<double>(steps);
    s.comm.allreduce_sum(std::span<double>(&count, 1));
    if (count != static_cast<double>(steps * ranks))
        throw value_error("GradReducer::overlap: the ranks measured different numbers of steps (" +
                          std::to_string(steps) + " on rank " + std::to_string(me) + ")");
    std::vector<double> calibration(repeats);
    for (auto& c : calibration) {
        s.comm.barrier();
        c = reduce_all_buckets();
    }
    // Row r: rank r's waits, reported counts, calibration times, and its median processor time.
    const std::size_t columns = 2 * steps + repeats + 1;
    std::vector<double> table(ranks * columns, 0.0);
    double* row = table.data() + me * columns;
    std::copy(step_wait_.begin(), step_wait_.end(), row);
    std::copy(step_reported_.begin(), step_reported_.end(), row + steps);
    std::copy(calibration.begin(), calibration.end(), row + 2 * steps);
    row[columns - 1] = median(step_comm_cpu_);
    s.comm.allreduce_sum(std::span<double>(table));
    auto column = [&](std::size_t c) {
        std::vector<double> v(ranks);
        for (std::size_t r = 0; r < ranks; ++r) v[r] = table[r * columns + c];
        return v;
    };
    GradReducerOverlap o;
    std::vector<double> exposed, imbalance, detached, reference;
    for (std::size_t k = 0; k < steps; ++k) {
        const auto waits = column(k), reported = column(steps + k);
        const auto [least, most] = std::minmax_element(waits.begin(), waits.end());
        imbalance.push_back(*most - *least);
        if (*std::max_element(reported.begin(), reported.end()) > 0) {
            exposed.push_back(*least);
        } else {
            detached.push_back(*least);
        }
    }
    for (std::size_t k = 0; k < repeats; ++k) {
        const auto times = column(2 * steps + k);
        reference.push_back(*std::min_element(times.begin(), times.end()));
    }
    o.steps = exposed.size();
    o.detached_steps = detached.size();
    o.allreduce = median(reference);
    o.exposed = median(exposed);
    o.imbalance = median(imbalance);
    o.detached_exposed = median(detached);
    for (double cpu : column(columns - 1)) o.comm_cpu += cpu / static_cast<double>(ranks);
    return o;
}

template class GradReducer<float>;
template class GradReducer<double>;

}  // namespace recur::distributed
