#!/usr/bin/env bash
# `make gpu-check`: builds the standalone GPU check with nvcc alone (no TensorFlow), runs it
# (correctness against the host reference, error paths, benchmark), then a quick run under
# compute-sanitizer memcheck and racecheck where the machine has it. Results go to
# $OUT (when set) or build/: gpu_check.json (the full run), gpu_check_memcheck.json,
# gpu_check_racecheck.json, their .log files, and gpu_check_summary.json (exit codes).
# Exits non-zero if the build or any stage fails. Budget: under 8 minutes on one GPU.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
BUILD=$ROOT/build/gpu-check
RESULTS=${OUT:-$ROOT/build}
NVCC=${NVCC:-nvcc}
mkdir -p "$BUILD" "$RESULTS"
die() { echo "gpu-check: $*" >&2; exit 1; }

command -v "$NVCC" >/dev/null || die "nvcc not found (set NVCC or put the CUDA toolkit on PATH)"
# The machine's GPU architecture: nvidia-smi's compute capability, else nvcc's own probe.
ARCH=""
if command -v nvidia-smi >/dev/null; then
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  [[ "$cap" =~ ^[0-9]+$ ]] && ARCH="-arch=sm_$cap"
fi
[ -n "$ARCH" ] || ARCH="-arch=native"
FLAGS=(-std=c++17 -O3 --fmad=false -lineinfo "$ARCH" -I"$ROOT/custom_ops")
echo "gpu-check: $("$NVCC" --version | tail -1); building with $ARCH"
start=$(date +%s)
"$NVCC" "${FLAGS[@]}" -c "$HERE/ev_gpu_table.cu" -o "$BUILD/ev_gpu_table.o" &
table_pid=$!
"$NVCC" "${FLAGS[@]}" -c "$HERE/ev_gpu_check.cu" -o "$BUILD/ev_gpu_check.o" || die "build failed"
wait $table_pid || die "build failed"
"$NVCC" "$ARCH" "$BUILD/ev_gpu_table.o" "$BUILD/ev_gpu_check.o" -o "$BUILD/ev_gpu_check" \
  || die "link failed"
echo "gpu-check: built in $(( $(date +%s) - start )) s"

timeout 270 "$BUILD/ev_gpu_check" --out "$RESULTS/gpu_check.json" 2>&1 | tee "$RESULTS/gpu_check.log"
check=${PIPESTATUS[0]}

SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer \
            /opt/nvidia/*/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)
memcheck=absent racecheck=absent
if [ -n "$SANITIZER" ]; then
  timeout 100 "$SANITIZER" --tool memcheck --leak-check full --error-exitcode 3 \
    "$BUILD/ev_gpu_check" --quick --no-bench --out "$RESULTS/gpu_check_memcheck.json" \
    >"$RESULTS/gpu_check_memcheck.log" 2>&1
  memcheck=$?
  timeout 70 "$SANITIZER" --tool racecheck --error-exitcode 3 \
    "$BUILD/ev_gpu_check" --quick --no-bench --out "$RESULTS/gpu_check_racecheck.json" \
    >"$RESULTS/gpu_check_racecheck.log" 2>&1
  racecheck=$?
  tail -3 "$RESULTS/gpu_check_memcheck.log" "$RESULTS/gpu_check_racecheck.log"
fi
q() { [[ "$1" =~ ^[0-9]+$ ]] && echo "$1" || echo "\"$1\""; }
cat >"$RESULTS/gpu_check_summary.json" <<JSON
{"arch": "$ARCH", "check_rc": $check, "memcheck_rc": $(q $memcheck), "racecheck_rc": $(q $racecheck), "seconds": $(( $(date +%s) - start ))}
JSON
cat "$RESULTS/gpu_check_summary.json"
ok=1
[ "$check" = 0 ] || ok=0
for rc in $memcheck $racecheck; do [ "$rc" = 0 ] || [ "$rc" = absent ] || ok=0; done
[ $ok = 1 ] || die "failed (see $RESULTS/gpu_check*.log)"
echo "gpu-check: OK"
