#!/usr/bin/env bash
# The report from the runs in $RUNS: scores the grading scripts on the validation data with the trained models
# (setting C for hw1_1.sh, DeepLabV3 for hw1_2.sh, when present), then writes report/REPORT.md with every table
# and figure (REPORT_DIR overrides the folder).
source "$(dirname "$0")/_launch.sh"
p1="$HW1_DATA/p1_data/office"
if [ -f "$RUNS/p1_C/best.pth" ]; then
  HW1_P1_CHECKPOINT="$RUNS/p1_C/best.pth" bash hw1_1.sh "$p1/val.csv" "$p1/val" "$RUNS/grading/pred_p1.csv" || true
  "$PYTHON" -m tools.report grade-p1 --pred "$RUNS/grading/pred_p1.csv" --labels "$p1/val.csv" -o "$RUNS/grading_p1.json"
fi
best_seg=""
for m in p2_deeplab p2_unet; do
  if [ -z "$best_seg" ] && [ -f "$RUNS/$m/best.pth" ]; then best_seg="$RUNS/$m/best.pth"; fi
done
if [ -n "$best_seg" ]; then
  HW1_P2_CHECKPOINT="$best_seg" bash hw1_2.sh "$HW1_DATA/p2_data/validation" "$RUNS/grading/p2_masks" || true
  "$PYTHON" -m tools.report grade-p2 --pred "$RUNS/grading/p2_masks" --labels "$HW1_DATA/p2_data/validation" \
    -o "$RUNS/grading_p2.json"
fi
"$PYTHON" -m tools.report "$RUNS" -o "${REPORT_DIR:-report}" "$@"
