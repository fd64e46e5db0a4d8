// Keras-style progress output on stderr (internal to src/train).
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace recur::train::detail {

using Logs = std::vector<std::pair<std::string, double>>;

/// verbose 0: nothing. 1: a bar redrawn in place when stderr is a terminal, otherwise one
/// line per epoch. 2: one line per epoch.
class Progress {
public:
    explicit Progress(int verbose);
    void epoch_begin(std::size_t epoch, std::size_t epochs, std::size_t batches);
    void batch_end(std::size_t done, const Logs& running);
    void epoch_end(const Logs& logs, double seconds);

private:
    std::string bar(std::size_t done) const;
    int verbose_;
    bool tty_;
    std::size_t epoch_ = 0, epochs_ = 0, batches_ = 0;
    std::chrono::steady_clock::time_point start_, last_draw_;
};

/// " - loss: 0.1234 - mae: 0.0567"
std::string format_logs(const Logs& logs);

}  // namespace recur::train::detail
