#!/usr/bin/env bash
# `cmake --install` into a scratch prefix lays out exactly the public files, and
# samples/c + samples/cpp build against it from outside the source tree (CMake
# find_package and pkg-config) and print the same story as the installed CLI.
#   install_and_build_samples.sh BUILD_DIR SOURCE_DIR MODEL WORK_DIR
set -uo pipefail
build="$1" src="$2" model="$3" work="$4"
rm -rf "$work" && mkdir -p "$work"
prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 || { cat "$work/install.log"; exit 1; }

# The layout: nothing more, nothing less.
actual=$(cd "$prefix" && find . \( -type f -o -type l \) | sed 's|^\./||' | sed -E 's|^lib[^/]*/|LIB/|' | sort)
expected=$(sort <<'LIST'
bin/starkv
include/starkv/starkv.h
LIB/libstarkv.so
LIB/libstarkv.so.0
LIB/libstarkv.so.0.1.0
LIB/cmake/starkv/starkvConfig.cmake
LIB/cmake/starkv/starkvConfigVersion.cmake
LIB/cmake/starkv/starkvTargets.cmake
LIB/cmake/starkv/starkvTargets-release.cmake
LIB/pkgconfig/starkv.pc
LIST
)
# The CUDA backend installs beside the core when the build has it (nvcc found).
if [ -f "$build/libstarkv_cuda.so" ]; then expected=$(printf '%s\nLIB/libstarkv_cuda.so\n' "$expected" | sort); fi
if [ "$actual" != "$expected" ]; then
  echo "FAIL: installed files differ from the expected layout:"; diff <(echo "$expected") <(echo "$actual"); exit 1
fi
lib=$(find "$prefix" -name 'libstarkv.so.0.*' -type f)
soname=$(objdump -p "$lib" | awk '$1 == "SONAME" {print $2}')
[ "$soname" = libstarkv.so.0 ] || { echo "FAIL: SONAME is '$soname'"; exit 1; }

# find_package must refuse another major version.
mkdir -p "$work/major"
cat >"$work/major/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.16)
project(major LANGUAGES NONE)
find_package(starkv 1 QUIET)
if(starkv_FOUND)
  message(FATAL_ERROR "starkv 1 accepted from a 0.x install")
endif()
find_package(starkv 0.1 REQUIRED)
CM
cmake -S "$work/major" -B "$work/major/build" -DCMAKE_PREFIX_PATH="$prefix" >"$work/major.log" 2>&1 \
  || { echo "FAIL: version check of the CMake package"; cat "$work/major.log"; exit 1; }

. "$(dirname "$0")/build_samples.sh"
build_and_run_samples "$prefix" "$work/samples" "$src" "$model" || exit 1
echo "1 passed, 0 failed"
