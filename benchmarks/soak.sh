#!/usr/bin/env bash
# Soak run: 100,000 training steps and 100,000 no-grad inference steps, RSS sampled every
# 1,000 steps; prints whether memory stayed flat (exit status 1 if it grew).
#
#   benchmarks/soak.sh [STEPS]     (after scripts/recur test or example has built build/)
#
# benchmarks/soak.cpp is built against recur installed from build/ into build/soak/prefix,
# through find_package(recur), like any user program (the same flags as build/).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
steps="${1:-100000}"
work="$root/build/soak"
[[ -f "$root/build/CMakeCache.txt" ]] || { echo "soak: build/ is not configured; run scripts/recur test first" >&2; exit 2; }

cmake --build "$root/build" --target recur -j"$(nproc)"
cmake --install "$root/build" --prefix "$work/prefix" >/dev/null
mkdir -p "$work/project"
cat >"$work/project/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.22)
project(recur_soak LANGUAGES CXX)
set(CMAKE_CXX_STANDARD 20)
find_package(recur REQUIRED)
add_executable(soak "$root/benchmarks/soak.cpp")
target_link_libraries(soak PRIVATE recur::recur)
CMAKE
cmake -S "$work/project" -B "$work/project/build" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_CXX_COMPILER="$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$root/build/CMakeCache.txt")" >/dev/null
cmake --build "$work/project/build" -j"$(nproc)"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" "$work/project/build/soak" "$steps"
