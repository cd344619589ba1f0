#!/usr/bin/env bash
# starkv.jar carries its native libraries: copied alone (with the sample's jar)
# into a clean folder, it runs samples/java/Generate with no library path set
# and prints the same greedy story as the CLI.
#   java_jar.sh JAVA JAR_TOOL STARKV_JAR SAMPLE_JAR CLI MODEL WORK_DIR
set -uo pipefail
java="$1" jartool="$2" jar="$3" sample="$4" cli="$5" model="$6" work="$7"
rm -rf "$work" && mkdir -p "$work/app" "$work/tmp"
listing=$("$jartool" tf "$jar") || { echo "FAIL: $jartool tf $jar"; exit 1; }
for f in ai/starkv/native/linux-x86_64/libstarkv.so.0 ai/starkv/native/linux-x86_64/libstarkv_jni.so ai/starkv/Model.class; do
  grep -q "$f" <<<"$listing" || { echo "FAIL: $f not in $(basename "$jar")"; exit 1; }
done
cp "$jar" "$sample" "$work/app/"
n=24 prompt="Once upon a time"
expected=$("$cli" run --model "$model" --prompt "$prompt" -n $n --temp 0 2>/dev/null)
cd "$work/app"
out=$(env -u LD_LIBRARY_PATH "$java" -Djava.io.tmpdir="$work/tmp" -cp "starkv.jar:$(basename "$sample")" Generate \
  "$model" "$prompt" $n 2>"$work/java.err") || { echo "FAIL: java exited $?"; cat "$work/java.err"; exit 1; }
[ "$out" = "$expected" ] || { echo "FAIL: java printed"; echo "$out"; echo "expected"; echo "$expected"; exit 1; }
echo "story: $out"
echo "1 passed, 0 failed"
