// minerva: GCC 12's libstdc++ has no std::format (it arrived in GCC 13), which mlx-c's
// mlx/c/private/io.h uses for error messages. This header, passed with `-include` when
// scripts/setup-mlx.sh builds mlx-c, provides the subset those messages need: `{}` placeholders
// filled in order through an ostream. It steps aside when the library has the real thing.
#pragma once
#if defined(__cplusplus)
#include <version>
#if !defined(__cpp_lib_format)
#include <sstream>
#include <string>
#include <string_view>
#include <utility>

namespace std {
namespace minerva_format_detail {
inline void put(std::ostringstream& out, std::string_view& fmt) {
  out << fmt;
  fmt = {};
}
template <class T, class... Rest>
void put(std::ostringstream& out, std::string_view& fmt, T&& value, Rest&&... rest) {
  auto at = fmt.find("{}");
  if (at == std::string_view::npos) {
    out << fmt;
    fmt = {};
    return;
  }
  out << fmt.substr(0, at) << std::forward<T>(value);
  fmt.remove_prefix(at + 2);
  put(out, fmt, std::forward<Rest>(rest)...);
}
}  // namespace minerva_format_detail

template <class... Args>
std::string format(std::string_view fmt, Args&&... args) {
  std::ostringstream out;
  minerva_format_detail::put(out, fmt, std::forward<Args>(args)...);
  return out.str();
}
}  // namespace std
#endif
#endif
