# Sourced by the packaging tests. build_and_run_samples PREFIX WORK SRC MODEL
# builds samples/c and samples/cpp (copied out of the source tree into WORK)
# against the starkv installed under PREFIX, two ways (CMake find_package and
# pkg-config), runs the four programs greedily on MODEL and checks each prints
# exactly what the installed CLI prints (`starkv run --temp 0`).
build_and_run_samples() {
  local prefix="$1" work="$2" src="$3" model="$4"
  local n=24 prompt="Once upon a time"
  local libdir pcdir
  pcdir=$(dirname "$(find "$prefix" -name starkv.pc | head -n1)")
  [ -f "$pcdir/starkv.pc" ] || { echo "FAIL: no starkv.pc under $prefix"; return 1; }
  libdir=$(dirname "$pcdir")
  mkdir -p "$work"
  cp -r "$src/samples/c" "$work/c"
  cp -r "$src/samples/cpp" "$work/cpp"

  # Expected text: the installed CLI (no LD_LIBRARY_PATH: its rpath must find the library).
  local cli
  cli=$(find "$prefix" -path '*/bin/starkv' -type f | head -n1)
  [ -x "$cli" ] || { echo "FAIL: no bin/starkv under $prefix"; return 1; }
  "$cli" run --model "$model" --prompt "$prompt" -n $n --temp 0 >"$work/expected.txt" 2>"$work/cli.err" \
    || { echo "FAIL: installed CLI"; cat "$work/cli.err"; return 1; }
  local expected
  expected=$(cat "$work/expected.txt")
  [ ${#expected} -gt $((${#prompt} + 20)) ] || { echo "FAIL: the CLI printed no story: $expected"; return 1; }

  # 1. CMake: find_package(starkv) from the prefix only.
  local lang
  for lang in c cpp; do
    cmake -S "$work/$lang" -B "$work/$lang/build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF >"$work/$lang.cmake.log" 2>&1 \
      && cmake --build "$work/$lang/build" >>"$work/$lang.cmake.log" 2>&1 \
      || { echo "FAIL: CMake build of samples/$lang"; cat "$work/$lang.cmake.log"; return 1; }
  done
  # 2. pkg-config.
  local flags
  flags=$(PKG_CONFIG_PATH="$pcdir" PKG_CONFIG_LIBDIR="$pcdir" pkg-config --cflags --libs starkv) \
    || { echo "FAIL: pkg-config starkv"; return 1; }
  echo "pkg-config: $flags"
  # shellcheck disable=SC2086
  cc -std=c11 -O1 -o "$work/c/generate_pc" "$work/c/generate.c" $flags -Wl,-rpath,"$libdir" \
    || { echo "FAIL: cc with pkg-config"; return 1; }
  # shellcheck disable=SC2086
  c++ -std=c++17 -O1 -o "$work/cpp/generate_pc" "$work/cpp/generate.cpp" $flags -Wl,-rpath,"$libdir" \
    || { echo "FAIL: c++ with pkg-config"; return 1; }

  local exe out fail=0
  for exe in "$work/c/build/generate" "$work/cpp/build/generate_cpp" "$work/c/generate_pc" "$work/cpp/generate_pc"; do
    # The library must come from the prefix, not from the build tree. (ldd's output is
    # captured first: `ldd | grep -q` under pipefail fails when grep exits before ldd
    # has written everything, and ldd dies of SIGPIPE.)
    local libs
    libs=$(ldd "$exe")
    if ! grep -q "libstarkv.so.0 => $(readlink -f "$libdir")\|libstarkv.so.0 => $libdir" <<<"$libs"; then
      echo "FAIL: $exe does not load libstarkv from $libdir:"; grep starkv <<<"$libs"; fail=1; continue
    fi
    out=$("$exe" "$model" "$prompt" $n 2>/dev/null) || { echo "FAIL: $exe exited $?"; fail=1; continue; }
    if [ "$out" != "$expected" ]; then
      echo "FAIL: $exe printed"; echo "$out"; echo "expected (starkv run --temp 0)"; echo "$expected"; fail=1
    else
      echo "ok: ${exe#"$work"/}"
    fi
  done
  [ $fail = 0 ] && echo "story: $expected"
  return $fail
}
