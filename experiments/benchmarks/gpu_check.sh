#!/usr/bin/env bash
# Every GPU-specific check of sdenet in one call (under 12 minutes on one GPU):
#
#   1. the device tests on CUDA: SDENET_TEST_DEVICE=cuda pytest tests/test_device.py, slow
#      ones included (bf16 autocast, channels-last, torch.compile of a training step, the
#      training loop's CUDA defaults, generators and time tensors on the GPU);
#   2. the default test-suite on the GPU machine (device "auto" picks CUDA there);
#   3. experiments/benchmarks/gpu_throughput.py on the CIFAR-10 subset, fp32 and bf16 +
#      channels-last (ResNet-56 and LM-ResNet-56, on-device pipeline against a DataLoader);
#   4. a 20-epoch ResNet-20 run on ../shared/data/cifar10-subset.npz (`sdenet train`), then
#      `sdenet plot` of its error curves;
#   5. experiments/transfer_resolution.py on the subset (tiny_resnet and resnet20, seed 0,
#      trained at 16x16, evaluated at 32x32 a trous, coarse to fine against direct 32x32).
#   6. the depth-transfer and multilevel experiments with the full-size networks
#      (experiments/transfer_depth.py --scale full: pre-activation ResNet-56, LM-ResNet-56,
#      Hamiltonian-74, stochastic-depth ResNet-56, plain and depth-robust, evaluated at
#      depth x0.5..x4, then experiments/depth_diagnostics.py on those networks (batch-norm
#      statistics recomputed per depth); experiments/multilevel_scale.py: LM-ResNet-56, L = 3, against direct
#      training), on $SDENET_CHECK_DATA (default the subset; point it at a full CIFAR-10
#      .npz where the machine has one). Their results (json, md, png) go to OUT; each step
#      has its own time limit and writes its results after every finished run, so a step cut
#      off by its limit still leaves what it finished.
#
# Results go to experiments/results/gpu_check-<device>-<UTC time>/ (or --out DIR): one log
# per step, hardware.txt, the throughput tables, the run's config/metrics and plots (its
# checkpoints are removed), and summary.md with each step's exit status and wall time.
# Each step runs under a time limit (110 + 165 + 35 + 35 + 70 + 30 + 90 s = 535 s, plus 90 + 90 s
# for step 6: 715 s in all), so the whole check ends within 12 minutes even when a step hangs.
# Exit status: 0 when every step passed, 1 when one failed, 2 for a usage error.
#
#   bash experiments/benchmarks/gpu_check.sh                        # on a CUDA machine
#   bash experiments/benchmarks/gpu_check.sh --quick --device cpu   # dry run: short versions
#
# --quick shortens every step (device tests without the slow ones, no full suite, 2 timed
# throughput steps of ResNet-20, 1 epoch on 256 images) so the script itself can be checked
# on a CPU in a few minutes; its figures say nothing about a GPU.
set -u

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "gpu_check: error: $*" >&2; exit 2; }

QUICK=0
DEVICE=cuda
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --device) [ $# -ge 2 ] || die "--device needs a value (cuda, cuda:N or cpu)"; DEVICE="$2"; shift ;;
    --device=*) DEVICE="${1#--device=}" ;;
    --out) [ $# -ge 2 ] || die "--out needs a folder"; OUT="$2"; shift ;;
    --out=*) OUT="${1#--out=}" ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || die "cannot enter the repository root"
PY="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
DATA="../shared/data/cifar10-subset.npz"
[ -f "$DATA" ] || die "$DATA not found (run from a checkout next to shared/data)"

case "$DEVICE" in
  cpu) KIND=cpu ;;
  cuda|cuda:[0-9]*) KIND=cuda
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
      || die "CUDA is not available here; for a dry run use: $0 --quick --device cpu" ;;
  *) die "--device must be cuda, cuda:N or cpu, got '$DEVICE'" ;;
esac
if [ "$KIND" = cpu ] && [ "$QUICK" = 0 ]; then
  die "the full check is for a GPU; on a CPU use --quick (a dry run of the script)"
fi

STAMP="$(date -u +%Y%m%d-%H%M%S)"
OUT="${OUT:-experiments/results/gpu_check-$KIND-$STAMP}"
mkdir -p "$OUT" || die "cannot create $OUT"
SUMMARY="$OUT/summary.md"
FAILED=0
T_ALL=$(date +%s)

{
  echo "# gpu_check: $([ "$QUICK" = 1 ] && echo "quick dry run" || echo "full check") on $DEVICE"
  echo
  echo "Started $(date -u '+%Y-%m-%d %H:%M:%S') UTC; commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (with local changes)')."
  echo "Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')."
  echo
  echo "| step | exit | seconds | log |"
  echo "|---|---|---|---|"
} > "$SUMMARY"

# hardware: the GPU (nvidia-smi), torch's view of it, the CPU
{
  "$PY" - "$DEVICE" <<'EOF'
import json, sys, torch
from sdenet.train.hardware import info
dev = torch.device(sys.argv[1])
print(json.dumps(info(dev), indent=1, default=str))
if dev.type == "cuda":
    p = torch.cuda.get_device_properties(dev)
    print(f"torch.cuda: {p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}, "
          f"bf16 {torch.cuda.is_bf16_supported()}, CUDA {torch.version.cuda}")
EOF
  command -v nvidia-smi >/dev/null && nvidia-smi
} > "$OUT/hardware.txt" 2>&1

# step NAME LIMIT_S COMMAND...: run with a time limit, log to OUT/NAME.log, record exit and time
step() {
  local name="$1" limit="$2"; shift 2
  local t0 rc
  echo "== $name (limit ${limit}s): $*" >&2
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  local secs=$(( $(date +%s) - t0 ))
  [ "$rc" = 0 ] || FAILED=1
  local note="$rc"; [ "$rc" = 124 ] && note="124 (time limit)"
  echo "| $name | $note | $secs | [$name.log]($name.log) |" >> "$SUMMARY"
  echo "   exit $note after ${secs}s; last lines:" >&2
  tail -n 3 "$OUT/$name.log" | sed 's/^/   | /' >&2
}

if [ "$QUICK" = 1 ]; then
  step tests-device 300 env SDENET_TEST_DEVICE="$DEVICE" "$PY" -m pytest -q -p no:cacheprovider tests/test_device.py
  step gpu-throughput 300 "$PY" experiments/benchmarks/gpu_throughput.py --device "$DEVICE" --dataset "$DATA" \
    --models resnet20 --steps 2 --warmup 1 --batch-size 32 --workers 1 --amp --channels-last --out "$OUT"
  step train-resnet20 300 "$PY" -m sdenet train --model resnet20 --dataset "$DATA" --epochs 1 \
    --limit-train 256 --limit-test 128 --batch-size 64 --device "$DEVICE" --quiet --out "$OUT/resnet20-run"
  step transfer-resolution 300 "$PY" experiments/transfer_resolution.py --device "$DEVICE" --dataset "$DATA" \
    --models tiny_resnet --seeds 0 --epochs16 1 --epochs32 1 --fine 1 --limit-train 256 --limit-test 128 \
    --runs "$OUT/transfer-runs" --out "$OUT/transfer"
else
  step tests-device 110 env SDENET_TEST_DEVICE="$DEVICE" "$PY" -m pytest -q -p no:cacheprovider \
    -m "slow or not slow" tests/test_device.py
  step tests-suite 165 "$PY" -m pytest -q -p no:cacheprovider -x
  step gpu-throughput-fp32 35 "$PY" experiments/benchmarks/gpu_throughput.py --device "$DEVICE" --dataset "$DATA" \
    --steps 100 --warmup 10 --batch-size 128 --workers 8 --out "$OUT/fp32"
  step gpu-throughput-bf16 35 "$PY" experiments/benchmarks/gpu_throughput.py --device "$DEVICE" --dataset "$DATA" \
    --steps 100 --warmup 10 --batch-size 128 --workers 8 --amp --channels-last --out "$OUT/bf16"
  step train-resnet20 70 "$PY" -m sdenet train --model resnet20 --dataset "$DATA" --epochs 20 \
    --device "$DEVICE" --quiet --out "$OUT/resnet20-run"
  step transfer-resolution 90 "$PY" experiments/transfer_resolution.py --device "$DEVICE" --dataset "$DATA" \
    --models tiny_resnet resnet20 --transfer-only --seeds 0 --threads 4 \
    --runs "$OUT/transfer-runs" --out "$OUT/transfer"
fi
rm -rf "$OUT/transfer-runs"  # run folders with checkpoints; the results are in $OUT/transfer
# 6. depth transfer and multilevel with the full-size networks (results after every run)
XDATA="${SDENET_CHECK_DATA:-$DATA}"
if [ "$QUICK" = 1 ]; then
  step transfer-depth 300 "$PY" experiments/transfer_depth.py --quick --families resnet --epochs 1 \
    --device "$DEVICE" --threads 1 --data "$XDATA" --runs "$OUT/runs-transfer" --out "$OUT"
  step depth-diagnostics 120 "$PY" experiments/depth_diagnostics.py --device "$DEVICE" --images 32 \
    --recalibrate 64 --data "$XDATA" --runs "$OUT/runs-transfer" --out "$OUT"
  step multilevel-scale 300 "$PY" experiments/multilevel_scale.py --quick --device "$DEVICE" --threads 1 \
    --data "$XDATA" --runs "$OUT/runs-multilevel" --out "$OUT"
else
  step transfer-depth 90 "$PY" experiments/transfer_depth.py --scale full --seeds 0 --epochs 8 \
    --device "$DEVICE" --data "$XDATA" --runs "$OUT/runs-transfer" --out "$OUT"
  step depth-diagnostics 45 "$PY" experiments/depth_diagnostics.py --device "$DEVICE" \
    --data "$XDATA" --runs "$OUT/runs-transfer" --out "$OUT"
  step multilevel-scale 90 "$PY" experiments/multilevel_scale.py --model lm_resnet56 --refine 1 \
    --levels 3 --overrides '{"stem_width": 8}' --epochs 8 --seeds 0 1 2 --device "$DEVICE" \
    --data "$XDATA" --runs "$OUT/runs-multilevel" --out "$OUT"
fi
rm -f "$OUT"/runs-*/*/*.pt "$OUT"/runs-*/*/*/*.pt  # checkpoints are not results
if [ -f "$OUT/resnet20-run/metrics.jsonl" ]; then
  step plot "$([ "$QUICK" = 1 ] && echo 120 || echo 30)" "$PY" -m sdenet plot "$OUT/resnet20-run" --out "$OUT/plots"
fi
rm -f "$OUT"/resnet20-run/*.pt  # checkpoints are not results; config and metrics stay

{
  echo
  if [ -f "$OUT/resnet20-run/metrics.json" ]; then
    "$PY" - "$OUT/resnet20-run/metrics.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"ResNet-20 on the CIFAR-10 subset: {m.get('epochs')} epochs, test error "
      f"{100 * m['test_error']:.2f}% (best {100 * m['best_test_error']:.2f}%), "
      f"{m.get('wall_time', float('nan')):.1f} s wall time.")
EOF
  fi
  for f in "$OUT"/gpu_throughput-*.md "$OUT"/*/gpu_throughput-*.md; do
    [ -f "$f" ] && echo "Throughput table: [${f#"$OUT"/}](${f#"$OUT"/})"
  done
  echo
  echo "Total $(( $(date +%s) - T_ALL )) s; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')."
  echo "Hardware: [hardware.txt](hardware.txt)."
  [ "$FAILED" = 0 ] && echo "Every step passed." || echo "**At least one step failed** (see its log)."
} >> "$SUMMARY"

echo "gpu_check: results in $OUT (summary.md)" >&2
exit "$FAILED"
