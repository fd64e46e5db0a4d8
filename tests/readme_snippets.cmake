# The README's code is the tested code: README.md must hold, verbatim, the code between each
# pair of markers in tests/install_consumer/main.cpp (less its 4-space indent), which the
# install_consumer test compiles against an installed recur and runs.
#   cmake -DREADME=README.md -DSOURCE=tests/install_consumer/main.cpp -P readme_snippets.cmake
file(READ "${README}" readme)
file(READ "${SOURCE}" source)
foreach(marker TOUR PRIMITIVE)
  set(begin_line "    // ${marker} BEGIN\n")
  string(FIND "${source}" "${begin_line}" begin)
  string(FIND "${source}" "    // ${marker} END\n" end)
  if(begin EQUAL -1 OR end EQUAL -1 OR end LESS begin)
    message(FATAL_ERROR "readme_snippets: ${SOURCE} has no ${marker} BEGIN/END pair")
  endif()
  string(LENGTH "${begin_line}" skip)
  math(EXPR start "${begin} + ${skip}")
  math(EXPR length "${end} - ${start}")
  string(SUBSTRING "${source}" ${start} ${length} block)
  # Dedent: every line starts after a newline once one is prepended (CMake's ^ also matches
  # where a previous replacement ended, so it cannot anchor here).
  string(REPLACE "\n    " "\n" block "\n${block}")
  string(SUBSTRING "${block}" 1 -1 block)
  string(FIND "${readme}" "${block}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "readme_snippets: README.md does not hold the ${marker} code of ${SOURCE} "
                        "verbatim (dedented by 4); copy it from there:\n${block}")
  endif()
  message(STATUS "readme_snippets: ${marker} matches")
endforeach()
