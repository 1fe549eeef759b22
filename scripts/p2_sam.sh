#!/usr/bin/env bash
# Problem 2, part V: Segment Anything masks next to DeepLabV3's prediction and the ground truth (one process).
# Needs `pip install -r requirements-sam.txt` and SAM weights (SAM_CHECKPOINT, default
# checkpoints/sam_vit_h_4b8939.pth; SAM_MODEL_TYPE vit_h|vit_l|vit_b). Writes $RUNS/p2_sam.
source "$(dirname "$0")/_launch.sh"
SAM_CHECKPOINT=${SAM_CHECKPOINT:-checkpoints/sam_vit_h_4b8939.pth}
need "$SAM_CHECKPOINT" "SAM checkpoint (its links: docs/problem2.md, SAM)"
val="$HW1_DATA/p2_data/validation"
images=()
for name in $SNAPSHOT_IMAGES; do need "$val/$name" "image"; images+=("$val/$name"); done
seg=()
if [ -f "$RUNS/p2_deeplab/best.pth" ]; then seg=(--checkpoint "$RUNS/p2_deeplab/best.pth"); fi
"$PYTHON" p2_sam.py --images "${images[@]}" --sam-weights "$SAM_CHECKPOINT" --model-type "${SAM_MODEL_TYPE:-vit_h}" \
  "${seg[@]}" --masks-dir "$val" --output-dir "$RUNS/p2_sam" "$@"
