#!/usr/bin/env bash
# Problem 1, part II: Office-Home settings A-E (default recipe: 100 epochs, batch 64). B/D start from DINO on
# ImageNet-1k (TAs provided): TA_BACKBONE, default p1_finetune.py's TA_BACKBONE (checkpoints/official_dino_model.pth);
# C/E from our DINO backbone (DINO_BACKBONE, default $RUNS/p1_dino/backbone.pth). SETTINGS="C E" runs a subset.
# Every backbone file is checked before the first setting starts. Writes $RUNS/p1_A ... p1_E.
source "$(dirname "$0")/_launch.sh"
SETTINGS=${SETTINGS:-A B C D E}
TA_BACKBONE=${TA_BACKBONE:-$("$PYTHON" -c 'import p1_finetune; print(p1_finetune.TA_BACKBONE)')}
DINO_BACKBONE=${DINO_BACKBONE:-$RUNS/p1_dino/backbone.pth}
need "$HW1_DATA/p1_data/office/train.csv" "Office-Home train csv"
for s in $SETTINGS; do
  case $s in
    A) ;;
    B|D) need "$TA_BACKBONE" "DINO on ImageNet-1k (TAs provided) for setting $s: the course's official_dino_model.pth" ;;
    C|E) need "$DINO_BACKBONE" "DINO backbone for setting $s (run scripts/p1_dino.sh first)" ;;
    *) echo "error: unknown setting '$s' (use A B C D E)" >&2; exit 2 ;;
  esac
done
for s in $SETTINGS; do
  case $s in A) bb=none ;; B|D) bb=$TA_BACKBONE ;; C|E) bb=$DINO_BACKBONE ;; esac
  echo "== setting $s (backbone: $bb)"
  launch p1_finetune.py --setting "$s" --backbone "$bb" --data-dir "$HW1_DATA/p1_data/office" \
    --output-dir "$RUNS/p1_$s" "$@"
done
