// Shared by the examples: command-line settings and plotting with gnuplot.
#pragma once

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <string>

namespace example {

/// "--name value" pairs from the command line, e.g. --epochs 2 for a quick smoke run.
class Args {
public:
    Args(int argc, char** argv) {
        for (int k = 1; k + 1 < argc; k += 2) {
            std::string key = argv[k];
            if (key.rfind("--", 0) != 0) throw std::invalid_argument("expected --name value, got " + key);
            values_[key.substr(2)] = argv[k + 1];
        }
    }
    long get(const std::string& name, long fallback) const {
        auto it = values_.find(name);
        return it == values_.end() ? fallback : std::stol(it->second);
    }
    double get_double(const std::string& name, double fallback) const {
        auto it = values_.find(name);
        return it == values_.end() ? fallback : std::stod(it->second);
    }
    std::string get_string(const std::string& name, const std::string& fallback) const {
        auto it = values_.find(name);
        return it == values_.end() ? fallback : it->second;
    }

private:
    std::map<std::string, std::string> values_;
};

/// Renders `script` with gnuplot when it is installed (its output file is named in the
/// script); otherwise says where the CSV data is. Returns whether a plot was made.
inline bool plot(const std::string& script_path, const std::string& script, const std::string& csv_hint) {
    {
        std::ofstream out(script_path);
        out << script;
    }
    if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
        std::cout << "gnuplot not found: the data is in " << csv_hint << " (plot script: " << script_path << ")\n";
        return false;
    }
    const int rc = std::system(("gnuplot " + script_path).c_str());
    if (rc != 0) std::cout << "gnuplot failed on " << script_path << "\n";
    return rc == 0;
}

}  // namespace example
