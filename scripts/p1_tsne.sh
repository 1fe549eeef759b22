#!/usr/bin/env bash
# Problem 1, part III: t-SNE of setting C's second-last-layer features at its first and last epoch (one process).
# Needs $RUNS/p1_C/epoch_001.pth and the last epoch's checkpoint (p1_finetune.py writes both). Writes $RUNS/p1_tsne.
source "$(dirname "$0")/_launch.sh"
need "$RUNS/p1_C/epoch_001.pth" "setting C's first-epoch checkpoint (run scripts/p1_settings.sh first)"
last=$(ls "$RUNS"/p1_C/epoch_[0-9]*.pth | sort | tail -n 1)
n=$(basename "$last" .pth); n=$((10#${n#epoch_}))
"$PYTHON" p1_tsne.py --checkpoints "$RUNS/p1_C/epoch_001.pth" "$last" --titles "epoch 1" "epoch $n" \
  --csv "$HW1_DATA/p1_data/office/train.csv" --image-dir "$HW1_DATA/p1_data/office/train" \
  --output-dir "$RUNS/p1_tsne" "$@"
