#!/usr/bin/env bash
# Problem 1, part I: DINO pre-training of ResNet-50 on Mini-ImageNet with the report's recipe (300 epochs, batch 32
# per GPU, lr 0.04 at batch 32, 2x128 + 6x64 crops), k-NN on Office-Home every epoch. Resumes when run again.
# Writes $RUNS/p1_dino (checkpoint.pth, log.jsonl, curves.png, backbone.pth). NGPUS=4 bash scripts/p1_dino.sh for 4 GPUs.
source "$(dirname "$0")/_launch.sh"
need "$HW1_DATA/p1_data/mini/train" "Mini-ImageNet train folder"
launch p1_ssl_pretrain.py --data-dir "$HW1_DATA/p1_data/mini/train" --output-dir "$RUNS/p1_dino" \
  --knn-train-csv "$HW1_DATA/p1_data/office/train.csv" --knn-train-dir "$HW1_DATA/p1_data/office/train" \
  --knn-val-csv "$HW1_DATA/p1_data/office/val.csv" --knn-val-dir "$HW1_DATA/p1_data/office/val" "$@"
