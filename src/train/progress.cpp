#include "progress.hpp"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace recur::train::detail {

namespace {
std::string format_value(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, std::abs(v) >= 1e-3 || v == 0 ? "%.4f" : "%.4e", v);
    return buf;
}
std::string format_seconds(double s) {
    char buf[32];
    if (s >= 3600)
        std::snprintf(buf, sizeof buf, "%d:%02d:%02d", int(s) / 3600, int(s) / 60 % 60, int(s) % 60);
    else if (s >= 60)
        std::snprintf(buf, sizeof buf, "%d:%02d", int(s) / 60, int(s) % 60);
    else
        std::snprintf(buf, sizeof buf, "%ds", int(std::lround(s)));
    return buf;
}
}  // namespace

std::string format_logs(const Logs& logs) {
    std::string s;
    for (const auto& [k, v] : logs) s += " - " + k + ": " + format_value(v);
    return s;
}

Progress::Progress(int verbose) : verbose_(verbose), tty_(::isatty(STDERR_FILENO) == 1) {}

void Progress::epoch_begin(std::size_t epoch, std::size_t epochs, std::size_t batches) {
    epoch_ = epoch;
    epochs_ = epochs;
    batches_ = batches;
    start_ = last_draw_ = std::chrono::steady_clock::now();
    if (verbose_ == 1 && tty_) std::fprintf(stderr, "Epoch %zu/%zu\n", epoch + 1, epochs);
}

std::string Progress::bar(std::size_t done) const {
    const std::size_t width = 30;
    const std::size_t filled = batches_ ? done * width / batches_ : width;
    std::string b = "[";
    for (std::size_t k = 0; k < width; ++k) b += k < filled ? '=' : (k == filled && done < batches_ ? '>' : '.');
    return b + "]";
}

void Progress::batch_end(std::size_t done, const Logs& running) {
    if (verbose_ != 1 || !tty_) return;
    const auto now = std::chrono::steady_clock::now();
    if (done < batches_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double eta = done ? elapsed / double(done) * double(batches_ - done) : 0;
    const int digits = std::snprintf(nullptr, 0, "%zu", batches_);
    std::fprintf(stderr, "\r%*zu/%zu %s - %s %s%s\033[K", digits, done, batches_, bar(done).c_str(),
                 done < batches_ ? "ETA:" : "elapsed:", format_seconds(done < batches_ ? eta : elapsed).c_str(),
                 format_logs(running).c_str());
    std::fflush(stderr);
}

void Progress::epoch_end(const Logs& logs, double seconds) {
    if (verbose_ == 0) return;
    const double per_step = batches_ ? seconds / double(batches_) * 1e3 : 0;
    if (verbose_ == 1 && tty_) {
        std::fprintf(stderr, "\r%zu/%zu %s - %s %.0fms/step%s\033[K\n", batches_, batches_, bar(batches_).c_str(),
                     format_seconds(seconds).c_str(), per_step, format_logs(logs).c_str());
    } else {
        std::fprintf(stderr, "Epoch %zu/%zu - %.2fs - %.0fms/step%s\n", epoch_ + 1, epochs_, seconds, per_step,
                     format_logs(logs).c_str());
    }
    std::fflush(stderr);
}

}  // namespace recur::train::detail
