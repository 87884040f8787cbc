#!/usr/bin/env bash
# The recorded CPU results under experiments/results/cifar10-subset/: three sets (ResNet-20 vs
# LM-ResNet-20, SD-ResNet-56 vs LM-SD-ResNet-56, a Δt sweep of tiny_sd_resnet), each with the
# same short schedule (quick preset, EPOCHS epochs, batch 32, the first NTRAIN training and
# first NTEST test images of the real CIFAR-10 subset), seeds 0, 1, 2, on the CPU.
# Resume-safe: run it again after an interruption and finished runs are skipped. Usage:
#   nohup bash experiments/record_cifar10_subset.sh PATH/cifar10-subset.npz [NTRAIN NTEST EPOCHS [SET ...]] > record.log 2>&1 &
# Results go to experiments/results/cifar10-subset/SET-nNTRAIN-eEPOCHS.
# Recorded: NTRAIN NTEST EPOCHS = 256 256 3 and 512 512 4 (torch's default 2 threads), and
# 5085 1017 3, the whole subset (with OMP_NUM_THREADS=1: on cores shared with other jobs two
# 2-thread processes slowed a ResNet-20 epoch from 7 s to 140 s); all three sets each time;
# and 5085 1017 15 for cifar10-subset-resnet20 alone.
set -uo pipefail
DATA=${1:?usage: record_cifar10_subset.sh PATH/TO/cifar10-subset.npz [NTRAIN NTEST EPOCHS [SET ...]]}
NTRAIN=${2:-256}
NTEST=${3:-256}
EPOCHS=${4:-3}
shift $(( $# < 4 ? $# : 4 ))
SETS=${*:-cifar10-subset-resnet20 cifar10-subset-sd56 cifar10-subset-dt-sweep}
cd "$(dirname "$0")/.."
NOTE="CPU runs of $EPOCHS epochs on $NTRAIN real CIFAR-10 training images (tested on $NTEST test images) on 2 cores shared with other jobs: they say little about the paper's 160-epoch numbers on 50,000 images, and differences smaller than a few points (or than the seeds' spread) are noise. Wall times include contention from other processes on the machine."
status=0
for SET in $SETS; do
  python experiments/run.py --set "$SET" --dataset "$DATA" --epochs "$EPOCHS" --batch-size 32 \
    --limit-train "$NTRAIN" --limit-test "$NTEST" --seeds 0 1 2 --device cpu \
    --out "runs/experiments/$SET-n$NTRAIN-e$EPOCHS" \
    --results "experiments/results/cifar10-subset/$SET-n$NTRAIN-e$EPOCHS" \
    --note "$NOTE" || status=$?
done
exit $status
