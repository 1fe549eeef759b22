#!/usr/bin/env bash
# Problem 2: the U-Net baseline (model A) and the 2025 report's ablation, the same U-Net with ONE skip connection
# dropped (DROP_SKIP, default 0 = the shallowest, as the report; DROP_SKIP=random picks one with the seed and
# records it), 100 epochs each, batch 8, mask snapshots at epochs 1, 50 and 100.
# Writes $RUNS/p2_unet and $RUNS/p2_unet_drop_skip.
source "$(dirname "$0")/_launch.sh"
need "$HW1_DATA/p2_data/train" "satellite train folder"
SNAPSHOTS=${SNAPSHOTS:-1 50 100}
# shellcheck disable=SC2086  # the lists are word lists
launch p2_unet.py --data-dir "$HW1_DATA/p2_data" --output-dir "$RUNS/p2_unet" \
  --snapshot-epochs $SNAPSHOTS --snapshot-images $SNAPSHOT_IMAGES "$@"
# shellcheck disable=SC2086
launch p2_unet.py --data-dir "$HW1_DATA/p2_data" --output-dir "$RUNS/p2_unet_drop_skip" --drop-skip ${DROP_SKIP:-0} \
  --snapshot-epochs $SNAPSHOTS --snapshot-images $SNAPSHOT_IMAGES "$@"
