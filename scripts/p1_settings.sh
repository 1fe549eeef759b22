#!/usr/bin/env bash
# Problem 1, part II: Office-Home settings A-E (default recipe: 100 epochs, batch 64). B/D start from the course's
# labeled backbone (SL_BACKBONE, default $HW1_DATA/p1_data/pretrain_model_SL.pt), C/E from our DINO backbone
# (DINO_BACKBONE, default $RUNS/p1_dino/backbone.pth). SETTINGS="C E" runs a subset. Writes $RUNS/p1_A ... p1_E.
source "$(dirname "$0")/_launch.sh"
SETTINGS=${SETTINGS:-A B C D E}
SL_BACKBONE=${SL_BACKBONE:-$HW1_DATA/p1_data/pretrain_model_SL.pt}
DINO_BACKBONE=${DINO_BACKBONE:-$RUNS/p1_dino/backbone.pth}
need "$HW1_DATA/p1_data/office/train.csv" "Office-Home train csv"
for s in $SETTINGS; do
  case $s in
    A) bb=none ;;
    B|D) bb=$SL_BACKBONE; need "$bb" "labeled backbone for setting $s" ;;
    C|E) bb=$DINO_BACKBONE; need "$bb" "DINO backbone for setting $s (run scripts/p1_dino.sh first)" ;;
    *) echo "error: unknown setting '$s' (use A B C D E)" >&2; exit 2 ;;
  esac
  echo "== setting $s (backbone: $bb)"
  launch p1_finetune.py --setting "$s" --backbone "$bb" --data-dir "$HW1_DATA/p1_data/office" \
    --output-dir "$RUNS/p1_$s" "$@"
done
