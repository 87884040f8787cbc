#!/usr/bin/env bash
# The recorded CPU results in experiments/results/cifar10-subset-*: three sets, the same short
# schedule (quick preset, 3 epochs, batch 32, first 512 training images and first 512 test
# images of the real CIFAR-10 subset), 3 seeds each. Resume-safe: run it again after an
# interruption and finished runs are skipped. Usage:
#   nohup bash experiments/record_cifar10_subset.sh /work/shared/data/cifar10-subset.npz > record.log 2>&1 &
set -euo pipefail
DATA=${1:?usage: record_cifar10_subset.sh PATH/TO/cifar10-subset.npz}
cd "$(dirname "$0")/.."
NOTE="CPU runs of 3 epochs on 512 real CIFAR-10 training images (tested on 512 test images) on 2 cores shared with other jobs: they say little about the paper's 160-epoch numbers on 50,000 images, and differences smaller than a few points (or than the seeds' spread) are noise. Wall times include contention from other processes on the machine."
for SET in cifar10-subset-resnet20 cifar10-subset-sd56 cifar10-subset-dt-sweep; do
  python experiments/run.py --set "$SET" --dataset "$DATA" --epochs 3 --batch-size 32 \
    --limit-train 512 --limit-test 512 --seeds 0 1 2 --device cpu \
    --out "runs/experiments/$SET" --results "experiments/results/$SET" --note "$NOTE"
done
