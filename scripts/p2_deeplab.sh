#!/usr/bin/env bash
# Problem 2: DeepLabV3-ResNet101 at output stride 8 (model B; torchvision's COCO weights from the torch hub
# cache, downloaded there once; offline: --weights PATH), 100 epochs, batch 8, mask snapshots at epochs 1, 50 and
# 100. Writes $RUNS/p2_deeplab.
source "$(dirname "$0")/_launch.sh"
need "$HW1_DATA/p2_data/train" "satellite train folder"
SNAPSHOTS=${SNAPSHOTS:-1 50 100}
# shellcheck disable=SC2086
launch p2_deeplab.py --data-dir "$HW1_DATA/p2_data" --output-dir "$RUNS/p2_deeplab" \
  --snapshot-epochs $SNAPSHOTS --snapshot-images $SNAPSHOT_IMAGES "$@"
