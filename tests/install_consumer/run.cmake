# The install test: cmake --install a build of recur into a fresh prefix, then configure,
# build and run tests/install_consumer against that prefix only.
#
#   cmake -DRECUR_BUILD_DIR=... -DRECUR_SOURCE_DIR=... -DWORK_DIR=... -DGENERATOR=... \
#         -DCXX_COMPILER=... -DBUILD_TYPE=... [-DCONFIG_FLAGS=...] [-DCXX_FLAGS=...] \
#         [-DLINKER_FLAGS=...] [-DDISTRIBUTED=ON] -P run.cmake
# DISTRIBUTED=ON: the install has recur::distributed; the consumer also builds and runs a
# program that links it.
# CONFIG_FLAGS replaces the consumer's CMAKE_CXX_FLAGS_<BUILD_TYPE>, so it is compiled with
# the same optimisation flags as the build it installs.
cmake_minimum_required(VERSION 3.22)

foreach(var RECUR_BUILD_DIR RECUR_SOURCE_DIR WORK_DIR GENERATOR CXX_COMPILER BUILD_TYPE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run.cmake: -D${var}=... is required")
  endif()
endforeach()

set(prefix "${WORK_DIR}/prefix")
set(consumer_build "${WORK_DIR}/build")
file(REMOVE_RECURSE "${WORK_DIR}")  # a stale prefix could hide a missing install rule

function(step name)
  message(STATUS "install test: ${name}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "install test: ${name} failed (${rc}): ${ARGN}")
  endif()
endfunction()

step("install into ${prefix}" "${CMAKE_COMMAND}" --install "${RECUR_BUILD_DIR}" --prefix "${prefix}")

# The installed package must stand on its own: no path into the source or build tree.
file(GLOB_RECURSE package_files "${prefix}/*.cmake")
if(NOT package_files)
  message(FATAL_ERROR "install test: no CMake package files were installed under ${prefix}")
endif()
foreach(f ${package_files})
  file(READ "${f}" text)
  foreach(tree "${RECUR_SOURCE_DIR}" "${RECUR_BUILD_DIR}")
    string(FIND "${text}" "${tree}" at)
    if(NOT at EQUAL -1)
      message(FATAL_ERROR "install test: ${f} refers to ${tree}")
    endif()
  endforeach()
endforeach()

set(config_args "")
if(BUILD_TYPE)
  string(TOUPPER "${BUILD_TYPE}" config)
  set(config_args "-DCMAKE_CXX_FLAGS_${config}=${CONFIG_FLAGS}")
endif()
step("configure the consumer"
  "${CMAKE_COMMAND}" -S "${CMAKE_CURRENT_LIST_DIR}" -B "${consumer_build}" -G "${GENERATOR}"
  "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" "-DCMAKE_BUILD_TYPE=${BUILD_TYPE}"
  "-DCMAKE_PREFIX_PATH=${prefix}" ${config_args} "-DCMAKE_CXX_FLAGS=${CXX_FLAGS}" "-DCMAKE_EXE_LINKER_FLAGS=${LINKER_FLAGS}"
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF "-DRECUR_EXPECT_DISTRIBUTED=${DISTRIBUTED}")

# It must have found this prefix's recur, not another install on the machine.
file(STRINGS "${consumer_build}/CMakeCache.txt" recur_dir REGEX "^recur_DIR:")
string(REGEX REPLACE "^recur_DIR:[A-Z]*=" "" recur_dir "${recur_dir}")
file(REAL_PATH "${prefix}" real_prefix)
file(REAL_PATH "${recur_dir}" real_recur_dir)
string(FIND "${real_recur_dir}" "${real_prefix}/" at)
if(NOT at EQUAL 0)
  message(FATAL_ERROR "install test: the consumer found recur in ${recur_dir}, not under ${prefix}")
endif()

step("build the consumer" "${CMAKE_COMMAND}" --build "${consumer_build}")
step("run the consumer" "${consumer_build}/consumer")
if(DISTRIBUTED)
  step("run the recur::distributed consumer" "${consumer_build}/consumer_distributed")
endif()
