// Helpers shared by src/io/*.cpp (private).
#pragma once

#include <string>
#include <system_error>

namespace recur::io::detail {

inline std::string squote(const std::string& s) { return "'" + s + "'"; }

inline std::string errno_text(int e) { return std::error_code(e, std::generic_category()).message(); }

}  // namespace recur::io::detail
