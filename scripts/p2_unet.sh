#!/usr/bin/env bash
# Problem 2: the U-Net baseline (model A) and its ablation without skip connections (100 epochs each, batch 8),
# with mask snapshots at epochs 1, 50 and 100. Writes $RUNS/p2_unet and $RUNS/p2_unet_noskip.
source "$(dirname "$0")/_launch.sh"
need "$HW1_DATA/p2_data/train" "satellite train folder"
SNAPSHOTS=${SNAPSHOTS:-1 50 100}
IMAGES=${SNAPSHOT_IMAGES:-0018_sat.jpg 0065_sat.jpg 0109_sat.jpg}
# shellcheck disable=SC2086  # the two lists are word lists
launch p2_unet.py --data-dir "$HW1_DATA/p2_data" --output-dir "$RUNS/p2_unet" \
  --snapshot-epochs $SNAPSHOTS --snapshot-images $IMAGES "$@"
# shellcheck disable=SC2086
launch p2_unet.py --data-dir "$HW1_DATA/p2_data" --output-dir "$RUNS/p2_unet_noskip" --drop-skip ${DROP_SKIP:-0 1 2 3} \
  --snapshot-epochs $SNAPSHOTS --snapshot-images $IMAGES "$@"
